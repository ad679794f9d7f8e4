//! The library's own log: `driver_configure`'s `log_path`/`log_level` and
//! `driver_set_log_callback`, through the C ABI. One test: the sinks are process-wide.

mod common;
use common::*;
use execdriver::ffi;
use serde_json::{Value, json};
use std::ffi::{CStr, CString, c_char, c_void};
use std::sync::Mutex;

static GOT: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

unsafe extern "C" fn collect(user_data: *mut c_void, level: i32, message: *const c_char) {
    assert_eq!(user_data as usize, 0x5eed);
    // SAFETY: the library passes a NUL-terminated string valid for the call.
    let m = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    GOT.lock().unwrap().push((level, m));
}

/// A callback that calls back into the library, which must neither deadlock nor log it.
unsafe extern "C" fn reenter(_: *mut c_void, level: i32, message: *const c_char) {
    // SAFETY: as above.
    let m = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    let status = unsafe { ffi::driver_set_log_callback(0, None, std::ptr::null_mut()) };
    let (_, fp) = call(ffi::driver_fingerprint, "{}");
    // A record about a task, read back while the library may be busy with that task:
    // the callback runs under none of its locks.
    if let Some(id) = m.strip_prefix("task ").and_then(|r| r.split(':').next()) {
        call(ffi::driver_inspect, &json!({"task_id": id}).to_string());
    }
    GOT.lock()
        .unwrap()
        .push((level, format!("{m} / set={status} fp={}", fp["health"])));
}

type Export = unsafe extern "C" fn(*const c_char, *mut *mut c_char) -> i32;

fn call(f: Export, req: &str) -> (i32, Value) {
    let c = CString::new(req).unwrap();
    let mut out: *mut c_char = std::ptr::null_mut();
    // SAFETY: a valid C string and out pointer.
    let rc = unsafe { f(c.as_ptr(), &mut out) };
    // SAFETY: the library returned a NUL-terminated string, freed once below.
    let text = unsafe { CStr::from_ptr(out) }.to_str().unwrap().to_string();
    // SAFETY: as above.
    unsafe { ffi::driver_free(out) };
    (rc, serde_json::from_str(&text).unwrap())
}

fn set_callback(level: i32, f: execdriver::ffi::DriverLogCallback) -> i32 {
    // SAFETY: `collect`/`reenter` may be called from any thread with this user_data.
    unsafe { ffi::driver_set_log_callback(level, f, 0x5eed as *mut c_void) }
}

#[test]
fn log_file_and_callback_carry_what_the_driver_did() {
    init();
    let d = TempDir::new("hostlog");
    let path = d.path().join("driver.log");

    // A log_path that cannot be opened is refused, naming the field, and changes nothing.
    let (rc, before) = call(ffi::driver_configure, "{}");
    assert_eq!(rc, 0);
    let missing = d.path().join("no/such/dir/driver.log");
    let (rc, r) = call(
        ffi::driver_configure,
        &json!({"log_path": missing}).to_string(),
    );
    assert_eq!(rc, 1, "{r}");
    assert_eq!(r["error"]["field"], "log_path", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("No such file"),
        "{r}"
    );
    let (_, now) = call(ffi::driver_configure, "null");
    assert_eq!(now["log_path"], before["log_path"]);
    let (rc, r) = call(ffi::driver_configure, r#"{"log_level": "loud"}"#);
    assert_eq!(
        (rc, r["error"]["field"].as_str()),
        (1, Some("log_level")),
        "{r}"
    );

    let (rc, r) = call(
        ffi::driver_configure,
        &json!({"log_path": path, "log_level": "debug"}).to_string(),
    );
    assert_eq!(rc, 0, "{r}");
    assert_eq!(r["log_level"], "debug");
    assert_eq!(set_callback(5, Some(collect)), 0);
    assert_eq!(set_callback(6, Some(collect)), 1, "a level past trace");
    assert_eq!(set_callback(-1, None), 1);

    // A task's life, and a start that fails.
    let task = raw_task("logged", d.path(), "exit 3");
    let (rc, r) = call(ffi::driver_start, &task.to_string());
    assert_eq!(rc, 0, "{r}");
    let id = r["task_id"].as_str().unwrap().to_string();
    let (rc, w) = call(
        ffi::driver_wait,
        &json!({"task_id": id, "timeout_ms": 30_000}).to_string(),
    );
    assert_eq!((rc, w["exit_code"].as_i64()), (0, Some(3)), "{w}");
    let (rc, _) = call(ffi::driver_destroy, &json!({"task_id": id}).to_string());
    assert_eq!(rc, 0);
    let mut bad = raw_task("unfound", d.path(), "");
    bad["config"]["command"] = json!("/no/such/command");
    let (rc, _) = call(ffi::driver_start, &bad.to_string());
    assert_eq!(rc, 6);

    // Replaced by one that calls back into the library from inside.
    assert_eq!(set_callback(3, Some(reenter)), 0);
    let (rc, _) = call(
        ffi::driver_configure,
        &json!({"log_path": path}).to_string(),
    );
    assert_eq!(rc, 0);
    let (rc, r) = call(
        ffi::driver_start,
        &raw_task("again", d.path(), "exit 4").to_string(),
    );
    assert_eq!(rc, 0, "{r}");
    let again = r["task_id"].as_str().unwrap().to_string();
    call(
        ffi::driver_wait,
        &json!({"task_id": again, "timeout_ms": 30_000}).to_string(),
    );
    call(ffi::driver_destroy, &json!({"task_id": again}).to_string());
    assert_eq!(set_callback(0, None), 0);
    let (rc, _) = call(ffi::driver_configure, "{}");
    assert_eq!(rc, 0);

    let got = std::mem::take(&mut *GOT.lock().unwrap());
    let has = |level: i32, needle: &str| got.iter().any(|(l, m)| *l == level && m.contains(needle));
    let all = format!("{got:#?}");
    assert!(
        has(3, &format!("task {id}: started: supervisor pid")),
        "{all}"
    );
    assert!(has(3, &format!("task {id}: exited: exit code 3")), "{all}");
    assert!(has(3, &format!("task {id}: destroyed")), "{all}");
    assert!(
        has(4, &format!("task {id}: received: raw_exec task \"logged\"")),
        "{all}"
    );
    assert!(
        has(2, "driver_start: command_not_found (field config.command)"),
        "{all}"
    );
    assert!(has(5, "driver_wait: ok in "), "{all}");
    // From inside the callback: set refused (1), fingerprint answered, nothing logged.
    assert!(has(3, "configured: data_dir "), "{all}");
    assert!(
        got.iter().any(|(_, m)| m.contains("/ set=1 fp=\"")),
        "{all}"
    );
    assert!(!all.contains("driver_fingerprint"), "{all}");
    assert!(
        has(3, &format!("task {again}: exited: exit code 4")),
        "{all}"
    );
    assert!(got.iter().all(|(_, m)| !m.contains('\n')));

    // The file has the same at its level (debug: no trace), one record a line, and is
    // the host's alone (0600).
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(&format!("INFO  task {id}: exited: exit code 3")),
        "{text}"
    );
    assert!(
        text.contains(&format!("DEBUG task {id}: received")),
        "{text}"
    );
    assert!(
        text.contains("WARN  driver_start: command_not_found"),
        "{text}"
    );
    assert!(!text.contains("TRACE"), "{text}");
    assert!(
        text.lines()
            .all(|l| l.starts_with("20") && l.contains("Z ")),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The last configuration has no log_path: the file is closed and grows no more.
    let len = text.len();
    let (_, _) = call(ffi::driver_fingerprint, "{}");
    call(ffi::driver_start, &bad.to_string());
    assert_eq!(std::fs::read_to_string(&path).unwrap().len(), len);
}
