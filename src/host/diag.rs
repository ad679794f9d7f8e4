//! The library's own log, for the operator: what it did (configuration, each task's
//! start, signals, stops, exits, recovery) and what went wrong where no response says so
//! (a lost supervisor, a supervisor that could not be started ahead, a caught panic).
//! Two sinks, each with its own level: the file of `driver_configure`'s `log_path`
//! (`log_level`), and a callback of the host (`driver_set_log_callback`). With neither,
//! a log call costs one atomic load.
//!
//! A record is one line of text (control characters escaped), tasks named `task <id>`.
//! It never carries a request body or a task's environment (secrets live there): only
//! what the code puts in, and a failed call's error (a refused request's without its
//! message, which may quote the value at fault).

use crate::config::LogLevel;
use crate::error::{Code, Error, Result};
use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock, mpsc};

/// A host's receiver of records: the level and the message (no time, no newline).
pub type Callback = Box<dyn Fn(LogLevel, &str) + Send>;

/// The file sink: written by the thread that logs, one `write` a record.
static FILE: RwLock<Option<(LogLevel, std::fs::File)>> = RwLock::new(None);
static FILE_LEVEL: AtomicU8 = AtomicU8::new(0);

/// The callback sink, called only on the delivery thread ([`deliver`]), which holds this
/// lock for each call: so the host's callback never runs under a lock of the library's
/// (a task's, the task table's) and may call back into it, and one that is replaced has
/// finished its last call when [`set_callback`] returns.
static CALLBACK: Mutex<Option<Callback>> = Mutex::new(None);
static CALLBACK_LEVEL: AtomicU8 = AtomicU8::new(0);

/// Records waiting for the delivery thread (started with the first callback).
static QUEUE: OnceLock<mpsc::SyncSender<Queued>> = OnceLock::new();
/// Records dropped since the last delivered one because the queue was full (a callback
/// slower than the records come).
static DROPPED: AtomicU64 = AtomicU64::new(0);
const QUEUE_LEN: usize = 4096;

enum Queued {
    Record(LogLevel, String),
    /// Every record before it has been delivered: tell the sender.
    Barrier(mpsc::SyncSender<()>),
}

thread_local! {
    /// This is the delivery thread: what the callback calls in the library logs nothing
    /// (no record about a record's own delivery).
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

fn takes(sink: &AtomicU8, level: LogLevel) -> bool {
    level != LogLevel::Off && level as u8 <= sink.load(Ordering::Relaxed)
}

/// Whether a record of this level would reach a sink.
pub fn enabled(level: LogLevel) -> bool {
    takes(&FILE_LEVEL, level) || takes(&CALLBACK_LEVEL, level)
}

/// Writes a record to the file and queues it for the callback, as their levels say.
/// Never blocks on the callback: a full queue drops the record (and says so later). A
/// file that cannot be written (a full disk) loses the record; nothing else notices.
pub fn emit(level: LogLevel, args: std::fmt::Arguments) {
    if INSIDE.get() || !enabled(level) {
        return;
    }
    let msg = one_line(args.to_string());
    if takes(&FILE_LEVEL, level)
        && let Some((max, f)) = &*FILE.read().unwrap_or_else(|p| p.into_inner())
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
    if takes(&CALLBACK_LEVEL, level)
        && let Some(q) = QUEUE.get()
        && q.try_send(Queued::Record(level, msg)).is_err()
    {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// The delivery thread: hands each queued record to the callback in force, in order.
fn deliver(rx: mpsc::Receiver<Queued>) {
    INSIDE.set(true);
    for q in rx {
        match q {
            Queued::Record(level, msg) => {
                let cb = CALLBACK.lock().unwrap_or_else(|p| p.into_inner());
                let Some(cb) = &*cb else { continue };
                let dropped = DROPPED.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    cb(
                        LogLevel::Warn,
                        &format!("{dropped} log records were dropped: the log callback was too slow"),
                    );
                }
                if level as u8 <= CALLBACK_LEVEL.load(Ordering::Relaxed) {
                    cb(level, &msg);
                }
            }
            Queued::Barrier(done) => {
                let _ = done.send(());
            }
        }
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
        // A refused request's message may quote the value at fault (serde's "invalid
        // type: string ..."), which may be a secret put in the wrong place: the code
        // and the field say enough.
        let message = if status == Status::Invalid { "" } else { e.message.as_str() };
        let sep = if message.is_empty() { "" } else { ": " };
        emit(
            level,
            format_args!(
                "driver_{op}: {}{field}{sep}{message} in {:.3} ms",
                e.code.as_str(),
                ms(began)
            ),
        );
    }
}

fn ms(began: std::time::Instant) -> f64 {
    began.elapsed().as_secs_f64() * 1e3
}

/// Characters that would make a record read as more than one line, or other than it
/// is: control characters (a command name can carry terminal escapes), Unicode line
/// and paragraph separators, and the invisible format characters (bidirectional
/// overrides, zero-width ones) a name can hide a forged record behind.
fn hides(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}')
}

/// The record as one line of plain text: what [`hides`] something written as escapes.
fn one_line(msg: String) -> String {
    if !msg.chars().any(hides) {
        return msg;
    }
    let mut out = String::with_capacity(msg.len() + 8);
    for c in msg.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hides(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
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
    // O_NONBLOCK: a FIFO there fails (ENXIO without a reader) or is refused below,
    // rather than blocking driver_configure, or every later record once it is full.
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| bad(format!("log_path {path} cannot be opened for appending: {e}")))?;
    // The log is the host's: a file someone else owns or may write to could be read by
    // them or carry their forged records.
    use std::os::unix::fs::MetadataExt;
    let m = f
        .metadata()
        .map_err(|e| bad(format!("log_path {path}: {e}")))?;
    let me = nix::unistd::geteuid().as_raw();
    if !m.file_type().is_file() {
        return Err(bad(format!("log_path {path} is not a regular file")));
    }
    if m.uid() != me || m.mode() & 0o022 != 0 {
        return Err(bad(format!(
            "log_path {path} belongs to uid {} with mode {:o}: it must be this process's \
             (uid {me}) and writable by it alone",
            m.uid(),
            m.mode() & 0o7777
        )));
    }
    Ok(f)
}

/// The file sink of the configuration now in force (`None`: none).
pub fn set_file(level: LogLevel, file: Option<std::fs::File>) {
    let mut f = FILE.write().unwrap_or_else(|p| p.into_inner());
    let level = if file.is_some() { level } else { LogLevel::Off };
    *f = file.map(|f| (level, f));
    FILE_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The callback sink (`None`: none). Returns once every record logged before the call
/// has been delivered to the previous callback and its last call has returned, so a
/// host may free what it gave it afterwards. Refused from inside the callback, where
/// it would wait for itself.
pub fn set_callback(level: LogLevel, cb: Option<Callback>) -> Result<()> {
    if INSIDE.get() {
        return Err(Error::new(
            Code::InvalidRequest,
            "driver_set_log_callback was called from inside the log callback",
        ));
    }
    let queue = match QUEUE.get() {
        Some(q) => Some(q),
        None if cb.is_some() => Some(start_delivery()?),
        None => None,
    };
    if let Some(q) = queue {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if q.send(Queued::Barrier(done_tx)).is_ok() {
            let _ = done_rx.recv();
        }
    }
    let mut slot = CALLBACK.lock().unwrap_or_else(|p| p.into_inner());
    let level = if cb.is_some() { level } else { LogLevel::Off };
    *slot = cb;
    CALLBACK_LEVEL.store(level as u8, Ordering::Relaxed);
    Ok(())
}

/// Starts the delivery thread (once per process; it then waits for records for as long
/// as the library is loaded).
fn start_delivery() -> Result<&'static mpsc::SyncSender<Queued>> {
    static START: Mutex<()> = Mutex::new(());
    let _one = START.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(q) = QUEUE.get() {
        return Ok(q);
    }
    let (tx, rx) = mpsc::sync_channel(QUEUE_LEN);
    // A host's callback may need a deep stack (an interpreter's frames).
    if !crate::sys::background_with_stack("execdriver-log", 2 << 20, move || deliver(rx)) {
        return Err(Error::internal("cannot start the log callback's thread"));
    }
    Ok(QUEUE.get_or_init(|| tx))
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
        diag!(Warn, "task {}: two\nlines \x1b[2J\u{2028}\u{202e}é", "t1");
        // Delivered by the time the callback is replaced.
        let inner = Arc::new(Mutex::new(vec![]));
        let i = inner.clone();
        set_callback(
            LogLevel::Trace,
            Some(Box::new(move |_, m| {
                // From inside: logs nothing, and may not replace the callback.
                diag!(Error, "from inside");
                let refused = set_callback(LogLevel::Off, None).is_err();
                i.lock().unwrap().push(format!("{m} refused={refused}"));
            })),
        )
        .unwrap();
        assert_eq!(
            *got.lock().unwrap(),
            [(
                LogLevel::Warn,
                "task t1: two\\nlines \\u{1b}[2J\\u{2028}\\u{202e}é".to_string()
            )]
        );
        diag!(Info, "outer");
        set_callback(LogLevel::Off, None).unwrap();
        assert_eq!(*inner.lock().unwrap(), ["outer refused=true"]);

        let path = std::env::temp_dir().join(format!("ed-diag-{}.log", std::process::id()));
        let f = open_file(path.to_str().unwrap()).unwrap();
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
        // Not a file of its own: a FIFO, a directory, one others may write.
        let dir = std::env::temp_dir().join(format!("ed-diag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let shared = dir.join("shared.log");
        std::fs::write(&shared, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o666)).unwrap();
        for p in [&fifo, &dir, &shared] {
            let e = open_file(p.to_str().unwrap()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("log_path"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
