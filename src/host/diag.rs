//! The library's own log, for the operator: what it did (configuration, each task's
//! start, signals, stops, exits, recovery) and what went wrong where no response says so
//! (a lost supervisor, a spare that could not be started, a caught panic). Two sinks,
//! each with its own level: the file of `driver_configure`'s `log_path` (`log_level`),
//! and a callback of the host (`driver_set_log_callback`). With neither, a log call
//! costs one atomic load.
//!
//! A record is one line of text: no newline inside (escaped), never a task's
//! environment or a request body (secrets live there), task ids as `task <id>`.

use crate::config::LogLevel;
use crate::error::{Code, Error, Result};
use std::cell::Cell;
use std::io::Write;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// A host's receiver of records: the level and the message (no time, no newline).
pub type Callback = Box<dyn Fn(LogLevel, &str) + Send + Sync>;

struct Sinks {
    file: Option<(LogLevel, std::fs::File)>,
    callback: Option<(LogLevel, Callback)>,
}

static SINKS: RwLock<Sinks> = RwLock::new(Sinks {
    file: None,
    callback: None,
});

/// The most verbose level any sink takes (0: none), read without the lock.
static MAX: AtomicU8 = AtomicU8::new(0);

thread_local! {
    /// This thread is in the callback: what it calls in the library logs nothing (no
    /// record about the record's own delivery, and no lock taken twice).
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Logs a record if a sink takes its level: `diag!(Info, "task {id}: started")`.
macro_rules! diag {
    ($level:ident, $($arg:tt)+) => {
        if $crate::host::diag::enabled($crate::config::LogLevel::$level) {
            $crate::host::diag::emit($crate::config::LogLevel::$level, format_args!($($arg)+));
        }
    };
}
pub(crate) use diag;

/// Whether a record of this level would reach a sink.
pub fn enabled(level: LogLevel) -> bool {
    level != LogLevel::Off && level as u8 <= MAX.load(Ordering::Relaxed)
}

fn sinks() -> std::sync::RwLockReadGuard<'static, Sinks> {
    SINKS.read().unwrap_or_else(|p| p.into_inner())
}

/// Resets [`INSIDE`] however the sinks return.
struct Inside;

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.set(false);
    }
}

/// Delivers a record to each sink that takes its level. A file that cannot be written
/// (a full disk) loses the record; nothing else notices.
pub fn emit(level: LogLevel, args: std::fmt::Arguments) {
    if INSIDE.get() || !enabled(level) {
        return;
    }
    let mut msg = args.to_string();
    if msg.contains(['\n', '\r']) {
        msg = msg.replace('\n', "\\n").replace('\r', "\\r");
    }
    let s = sinks();
    INSIDE.set(true);
    let _inside = Inside;
    if let Some((max, f)) = &s.file
        && level <= *max
    {
        let line = format!(
            "{} {:<5} {msg}\n",
            crate::proto::spec::rfc3339_now(),
            level.as_str()
        );
        // One write of the whole line: O_APPEND keeps lines of concurrent writers whole.
        let _ = (&*f).write_all(line.as_bytes());
    }
    if let Some((max, cb)) = &s.callback
        && level <= *max
    {
        cb(level, &msg);
    }
}

/// After each `driver_<op>` call: a failure the host may overlook (a start's, an internal
/// error) as a warning or error, other failed requests at debug, every call at trace.
pub fn call_done(op: &str, began: std::time::Instant, err: Option<&Error>) {
    use crate::error::Status;
    let Some(e) = err else {
        diag!(Trace, "driver_{op}: ok in {:.3} ms", ms(began));
        return;
    };
    let status = e.status();
    let level = match status {
        Status::Internal => LogLevel::Error,
        Status::Start | Status::Artifact => LogLevel::Warn,
        // A wait's timeout is how a host polls: only at trace.
        Status::Timeout => LogLevel::Trace,
        _ => LogLevel::Debug,
    };
    if enabled(level) {
        let field = e.field.as_deref().map(|f| format!(" (field {f})")).unwrap_or_default();
        emit(
            level,
            format_args!(
                "driver_{op}: {}{field}: {} in {:.3} ms",
                e.code.as_str(),
                e.message,
                ms(began)
            ),
        );
    }
}

fn ms(began: std::time::Instant) -> f64 {
    began.elapsed().as_secs_f64() * 1e3
}

fn update_max(s: &Sinks) {
    let level = |x: &Option<(LogLevel, _)>| x.as_ref().map_or(LogLevel::Off, |(l, _)| *l);
    let max = level(&s.file).max(s.callback.as_ref().map_or(LogLevel::Off, |(l, _)| *l));
    MAX.store(max as u8, Ordering::Relaxed);
}

/// Opens `log_path` for [`set_file`], before the configuration takes effect: a path that
/// cannot be written fails `driver_configure` (`invalid_config`, field `log_path`) and
/// changes nothing.
pub fn open_file(path: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |why: String| Error::field(Code::InvalidConfig, "log_path", why);
    if !path.starts_with('/') {
        return Err(bad(format!("log_path must be an absolute path: {path:?}")));
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| bad(format!("log_path {path} cannot be opened for appending: {e}")))
}

/// The file sink of the configuration now in force (`None`: none).
pub fn set_file(level: LogLevel, file: Option<std::fs::File>) {
    let mut s = SINKS.write().unwrap_or_else(|p| p.into_inner());
    s.file = file.map(|f| (level, f));
    update_max(&s);
}

/// The callback sink (`None`: none). Returns once no call of the previous callback is
/// running, so a host may free what it gave it afterwards. Refused from inside the
/// callback, where it would wait for itself.
pub fn set_callback(level: LogLevel, cb: Option<Callback>) -> Result<()> {
    if INSIDE.get() {
        return Err(Error::new(
            Code::InvalidRequest,
            "driver_set_log_callback was called from inside the log callback",
        ));
    }
    let mut s = SINKS.write().unwrap_or_else(|p| p.into_inner());
    s.callback = cb.map(|c| (level, c));
    update_max(&s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    // One test: the sinks are process-wide.
    #[test]
    fn records_reach_the_sinks_that_take_their_level() {
        let got = Arc::new(Mutex::new(vec![]));
        let g = got.clone();
        set_callback(
            LogLevel::Info,
            Some(Box::new(move |l, m| g.lock().unwrap().push((l, m.to_string())))),
        )
        .unwrap();
        diag!(Debug, "not this one");
        diag!(Warn, "task {}: two\nlines", "t1");
        assert_eq!(
            *got.lock().unwrap(),
            [(LogLevel::Warn, "task t1: two\\nlines".to_string())]
        );

        // Nested: the callback calls back into what logs, and tries to replace itself.
        let inner = Arc::new(Mutex::new(None));
        let i = inner.clone();
        set_callback(
            LogLevel::Trace,
            Some(Box::new(move |_, _| {
                diag!(Error, "from inside");
                *i.lock().unwrap() = Some(set_callback(LogLevel::Off, None).is_err());
            })),
        )
        .unwrap();
        diag!(Info, "outer");
        assert_eq!(*inner.lock().unwrap(), Some(true));

        let path = std::env::temp_dir().join(format!("ed-diag-{}.log", std::process::id()));
        let f = open_file(path.to_str().unwrap()).unwrap();
        set_callback(LogLevel::Off, None).unwrap();
        set_file(LogLevel::Warn, Some(f));
        diag!(Info, "quiet");
        diag!(Error, "loud");
        set_file(LogLevel::Off, None);
        assert!(!enabled(LogLevel::Error));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].ends_with(" ERROR loud"), "{text}");
        assert!(lines[0].starts_with("20") && lines[0].contains('T'), "{text}");

        assert_eq!(
            open_file("relative.log").unwrap_err().field.as_deref(),
            Some("log_path")
        );
    }
}
