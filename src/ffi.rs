//! The C ABI (docs/api.md). Thin: pointers in, `&str` to [`crate::host::driver`], JSON and a
//! status out. Every export catches panics and returns `DRIVER_INTERNAL`.

use crate::error::{Error, Status};
use crate::host::driver;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Status codes returned by every `driver_<op>` function.
#[allow(non_camel_case_types)]
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverStatus {
    /// Success; the response holds the result.
    DRIVER_OK = 0,
    /// invalid_json, invalid_request, invalid_config.
    DRIVER_INVALID = 1,
    /// task_not_found.
    DRIVER_NOT_FOUND = 2,
    /// timeout: the task is still running.
    DRIVER_TIMEOUT = 3,
    /// unsupported (e.g. exec without root or cgroups).
    DRIVER_UNSUPPORTED = 4,
    /// artifact_download, artifact_checksum, artifact_unpack, artifact_limit, artifact_denied.
    DRIVER_ARTIFACT = 5,
    /// command_not_found, user_not_found, isolation, spawn.
    DRIVER_START = 6,
    /// task_exists, task_running.
    DRIVER_CONFLICT = 7,
    /// internal: a caught panic or a bug.
    DRIVER_INTERNAL = 8,
}

impl From<Status> for DriverStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Ok => DriverStatus::DRIVER_OK,
            Status::Invalid => DriverStatus::DRIVER_INVALID,
            Status::NotFound => DriverStatus::DRIVER_NOT_FOUND,
            Status::Timeout => DriverStatus::DRIVER_TIMEOUT,
            Status::Unsupported => DriverStatus::DRIVER_UNSUPPORTED,
            Status::Artifact => DriverStatus::DRIVER_ARTIFACT,
            Status::Start => DriverStatus::DRIVER_START,
            Status::Conflict => DriverStatus::DRIVER_CONFLICT,
            Status::Internal => DriverStatus::DRIVER_INTERNAL,
        }
    }
}

/// Levels of the library's own log (`level` of driver_set_log_callback() and of its
/// callback; `log_level` of driver_configure() by name). Each includes those before it.
#[allow(non_camel_case_types)]
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverLogLevel {
    /// Nothing (as a callback's level: no callback).
    DRIVER_LOG_OFF = 0,
    /// A failure nothing else reports: a lost supervisor, a caught panic.
    DRIVER_LOG_ERROR = 1,
    /// A failed start, a grace period that ran out, a clean-up left undone.
    DRIVER_LOG_WARN = 2,
    /// Configuration; each task's start, signals, stop, exit, recovery, destruction.
    DRIVER_LOG_INFO = 3,
    /// Each step of a start; requests that failed.
    DRIVER_LOG_DEBUG = 4,
    /// Every call: operation, status, time taken.
    DRIVER_LOG_TRACE = 5,
}

/// A host's receiver of the library's log records (driver_set_log_callback()):
/// `user_data` as given, the record's level (a DriverLogLevel), and its text: one line,
/// no newline, valid only during the call. Called on one thread of the library's own
/// (started with the first callback, all signals blocked), one record at a time, in the
/// order they were logged, shortly after: never on the host's threads, never while the
/// library holds a lock. It must not unwind. It may call `driver_<op>` functions (their
/// records are not delivered, to it or to `log_path`), but not driver_set_log_callback()
/// (which then returns DRIVER_INVALID). Records wait in a queue of 4096; a callback
/// slower than that loses the excess, and is told how many with its next record.
pub type DriverLogCallback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: i32, message: *const c_char)>;

type Op = fn(Option<&str>) -> crate::Result<serde_json::Value>;

/// Stores `text` as a new C string in `*out` (when `out` is not NULL).
fn respond(out: *mut *mut c_char, text: String) {
    if out.is_null() {
        return;
    }
    let c = CString::new(text).unwrap_or_else(|_| {
        c"{\"error\":{\"code\":\"internal\",\"message\":\"response contained NUL\"}}".to_owned()
    });
    // SAFETY: out is non-NULL and, per the contract, points at writable storage for a pointer.
    unsafe { *out = c.into_raw() };
}

/// Runs one operation behind the panic boundary.
fn call(name: &'static str, op: Op, req: *const c_char, out: *mut *mut c_char) -> i32 {
    let began = std::time::Instant::now();
    if !out.is_null() {
        // SAFETY: out is non-NULL and points at a writable pointer (contract).
        unsafe { *out = std::ptr::null_mut() };
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        let text = if req.is_null() {
            None
        } else {
            // SAFETY: req is non-NULL and, per the contract, NUL-terminated and valid for the call.
            match unsafe { CStr::from_ptr(req) }.to_str() {
                Ok(s) => Some(s),
                Err(e) => {
                    return Err(Error::new(
                        crate::Code::InvalidJson,
                        format!("request_json is not valid UTF-8: {e}"),
                    ));
                }
            }
        };
        op(text)
    }));
    let (status, body) = match result {
        Ok(Ok(v)) => {
            crate::host::diag::call_done(name, began, None);
            (Status::Ok, v.to_string())
        }
        Ok(Err(e)) => {
            crate::host::diag::call_done(name, began, Some(&e));
            (e.status(), e.to_json().to_string())
        }
        Err(p) => {
            let e = Error::from_panic(&*p);
            crate::host::diag::call_done(name, began, Some(&e));
            (Status::Internal, e.to_json().to_string())
        }
    };
    respond(out, body);
    status as i32
}

/// The version of this C ABI, also `EXECDRIVER_ABI_VERSION` in the header.
pub const ABI_VERSION: u32 = 1;

/// Version of this C ABI: 1 for this contract. Never fails; safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn driver_abi_version() -> u32 {
    ABI_VERSION
}

/// A short English text for a status code (`DRIVER_OK` → "ok"), for logs: a static
/// NUL-terminated string owned by the library, never NULL. Never free it. An unknown
/// value gives "unknown status". Safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn driver_status_str(status: i32) -> *const c_char {
    let s: &'static CStr = match status {
        0 => c"ok",
        1 => c"invalid request or configuration",
        2 => c"task not found",
        3 => c"timed out",
        4 => c"not supported here",
        5 => c"artifact failed",
        6 => c"start failed",
        7 => c"conflict with the task's state",
        8 => c"internal error",
        _ => c"unknown status",
    };
    s.as_ptr()
}

/// The library version, e.g. "0.1.0": a static NUL-terminated string owned by the
/// library. Never free it.
#[unsafe(no_mangle)]
pub extern "C" fn driver_version() -> *const c_char {
    static V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"0",
        };
    V.as_ptr()
}

/// Frees a response returned in `*response_json` by any `driver_<op>` function.
/// NULL is accepted and ignored. Never pass a pointer twice, nor one from elsewhere.
///
/// # Safety
/// `response_json` is NULL or a pointer this library returned and not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_free(response_json: *mut c_char) {
    if response_json.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: the caller passes a pointer produced by CString::into_raw in `respond`.
        drop(unsafe { CString::from_raw(response_json) });
    });
}

// The exports below are written out one by one (not generated by a macro) so that
// cbindgen, which does not expand macros, puts every one of them in the header.

/// Sets the plugin configuration for tasks started afterwards (all fields optional)
/// and returns the effective configuration. NULL returns the current one.
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_configure(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call("configure", driver::configure, request_json, response_json)
}

/// Reports health and attributes (`driver.exec`, `driver.raw_exec`, …). Never blocks.
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_fingerprint(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call(
        "fingerprint",
        driver::fingerprint,
        request_json,
        response_json,
    )
}

/// Starts a task (docs/api.md; what it sees: docs/task.md): fetches artifacts, builds
/// the environment and isolation, starts the command; returns `{task_id, pid, task_dir,
/// started_at, handle}`. Blocks the calling thread while it fetches.
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_start(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call("start", driver::start, request_json, response_json)
}

/// Waits for a task to exit, up to `timeout_ms` (absent or negative: forever; 0:
/// poll). `DRIVER_TIMEOUT` while it runs. Any number of threads may wait on a task.
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_wait(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call("wait", driver::wait, request_json, response_json)
}

/// Sends the stop signal, waits up to the timeout, then kills every process of the
/// task; returns the wait object once none remains. Blocks the calling thread.
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_stop(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call("stop", driver::stop, request_json, response_json)
}

/// Releases a task (cgroups, state). A running task needs `"force": true`.
/// `"purge": true` also removes the task's directory.
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_destroy(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call("destroy", driver::destroy, request_json, response_json)
}

/// Describes a task: state, pid, exit, handle, artifact progress.
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_inspect(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call("inspect", driver::inspect, request_json, response_json)
}

/// Resource usage of a task from its cgroups.
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_stats(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call("stats", driver::stats, request_json, response_json)
}

/// Sends a signal (name with or without SIG, or number) to the task's command.
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_signal(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call("signal", driver::signal, request_json, response_json)
}

/// Re-registers a task from the handle `driver_start` returned.
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_recover(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call("recover", driver::recover, request_json, response_json)
}

/// Runs a command inside a running task's isolation and returns its output. With
/// `"tty": true`, `"stdin": true` or `"stream": true` it starts the command and returns
/// at once: `{exec_id, pid, tty_fd}` (a pty master) or `{exec_id, pid, stdin_fd,
/// stdout_fd, stderr_fd}` (pipes; `stdin_fd` only with `"stdin": true`). Those fds are
/// the caller's: close-on-exec, closed by the caller, never touched by the library again.
/// Wait for the command with driver_exec_wait().
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_exec(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call("exec", driver::exec, request_json, response_json)
}

/// Waits for the command of an interactive driver_exec (`{exec_id, timeout_ms}`; absent
/// or negative: forever, 0: poll) and returns `{exec_id, exit_code, signal}`;
/// `DRIVER_TIMEOUT` while it runs. Once it has returned the exit, the session is gone
/// (`DRIVER_NOT_FOUND` afterwards).
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_exec_wait(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call("exec_wait", driver::exec_wait, request_json, response_json)
}

/// Sets the window size of an interactive driver_exec's terminal (`{exec_id, rows,
/// cols}`, a session started with `"tty": true`); the command gets SIGWINCH. Returns
/// once the size is set.
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_exec_resize(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call(
        "exec_resize",
        driver::exec_resize,
        request_json,
        response_json,
    )
}

/// Reads a task's stdout or stderr as one stream across its rotated files, from a byte
/// offset (from the start or back from the end), waiting up to `follow_ms` for more.
/// Calling convention and safety: see the top of this header.
///
/// # Safety
/// As for every `driver_<op>` (see the top of this header).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_logs(
    request_json: *const c_char,
    response_json: *mut *mut c_char,
) -> i32 {
    call("logs", driver::logs, request_json, response_json)
}

/// Sets (or, with a NULL `callback`, removes) the host's receiver of the library's own
/// log records of `level` (a DriverLogLevel) and more severe. This is besides the file
/// of driver_configure()'s `log_path`, which has its own `log_level`. When it returns,
/// every record logged before the call has been delivered to the previous callback and
/// none of its calls is running any more: its `user_data` may be freed (call it with
/// NULL before unloading the library, or to flush).
/// Returns DRIVER_OK, or DRIVER_INVALID for a `level` outside 0–5 or a call from
/// inside the callback (nothing changes then).
///
/// # Safety
/// `callback` is NULL or a function that may be called as DriverLogCallback describes
/// with this `user_data`, from a thread of the library's, until a later
/// driver_set_log_callback() returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn driver_set_log_callback(
    level: i32,
    callback: DriverLogCallback,
    user_data: *mut c_void,
) -> i32 {
    let result = catch_unwind(|| {
        let Some(level) = crate::config::LogLevel::from_i32(level) else {
            return Status::Invalid;
        };
        // Carried across threads as a number: only the host's callback reads it.
        let user_data = user_data as usize;
        let sink = callback.map(|f| -> crate::host::diag::Callback {
            Box::new(move |l, msg| {
                let text = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
                // SAFETY: the host gave `f` and `user_data` to be called from any thread
                // with a record that lives for the call, until it replaces them.
                unsafe { f(user_data as *mut c_void, l as i32, text.as_ptr()) }
            })
        });
        match crate::host::diag::set_callback(level, sink) {
            Ok(()) => Status::Ok,
            Err(e) => e.status(),
        }
    });
    DriverStatus::from(result.unwrap_or(Status::Internal)) as i32
}
