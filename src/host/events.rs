//! A task's events, as Nomad shows them in `nomad alloc status`: what happened to it and
//! when (`driver_inspect`'s `events`). Kept in memory (the last `KEPT`) and in the
//! task's state dir (`events.jsonl`, one JSON object a line), so that a recovered task
//! has its history. The file is written once the start is done (every event so far in
//! one write, replacing an earlier task's of that id) and appended to afterwards; past
//! `FILE_MAX` bytes new events stay in memory only.

use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;

/// The events file in a task's state dir.
pub const FILE: &str = "events.jsonl";
/// At most this many events are kept in memory (the oldest go first).
const KEPT: usize = 256;
/// The events file grows no further than this.
const FILE_MAX: u64 = 1 << 20;

/// What happened. The names are the `type` of an event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// The start was asked for.
    Received,
    DownloadingArtifacts,
    ArtifactsDownloaded,
    /// The command runs.
    Started,
    /// `driver_signal`.
    Signaled,
    /// `driver_stop`'s signal, or its SIGKILL of every process after the grace period.
    Killing,
    /// The task ended (its code, signal, OOM kill).
    Exited,
    /// Its supervisor ended without saying how the task did.
    SupervisorLost,
    /// A host process took the task over from its handle.
    Recovered,
}

impl Kind {
    /// The level of its record in the library's log.
    fn log_level(self) -> crate::config::LogLevel {
        use crate::config::LogLevel;
        match self {
            Kind::Received | Kind::DownloadingArtifacts | Kind::ArtifactsDownloaded => {
                LogLevel::Debug
            }
            Kind::SupervisorLost => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Received => "received",
            Kind::DownloadingArtifacts => "downloading_artifacts",
            Kind::ArtifactsDownloaded => "artifacts_downloaded",
            Kind::Started => "started",
            Kind::Signaled => "signaled",
            Kind::Killing => "killing",
            Kind::Exited => "exited",
            Kind::SupervisorLost => "supervisor_lost",
            Kind::Recovered => "recovered",
        }
    }
}

/// A task's events.
#[derive(Default)]
pub struct Events {
    list: Vec<Value>,
    /// The file is this task's: new events are appended to it.
    on_disk: bool,
}

impl Events {
    /// Records an event (appended to the file once there is one in `state_dir`).
    /// Each is also a record of the library's log ([`crate::host::diag`]).
    pub fn push(&mut self, state_dir: &Path, task_id: &str, kind: Kind, message: impl Into<String>) {
        let message = message.into();
        let level = kind.log_level();
        if crate::host::diag::enabled(level) {
            let sep = if message.is_empty() { "" } else { ": " };
            crate::host::diag::emit(
                level,
                format_args!("task {task_id}: {}{sep}{message}", kind.as_str()),
            );
        }
        let e = json!({"time": crate::proto::spec::rfc3339_now(), "type": kind.as_str(),
                       "message": message});
        if self.on_disk {
            let _ = write(state_dir, std::slice::from_ref(&e), false);
        }
        if self.list.len() >= KEPT {
            self.list.remove(0);
        }
        self.list.push(e);
    }

    /// Writes the events so far to `state_dir` (made by now), replacing what an earlier
    /// task of this id left; later ones are appended.
    pub fn persist(&mut self, state_dir: &Path) {
        self.on_disk = write(state_dir, &self.list, true).is_ok();
    }

    /// The events a host process recorded for a task it started, read back from
    /// `state_dir` (a recovered task); later ones are appended.
    pub fn load(state_dir: &Path) -> Events {
        let text = std::fs::File::open(state_dir.join(FILE))
            .and_then(|f| {
                use std::io::Read;
                let mut s = String::new();
                f.take(FILE_MAX).read_to_string(&mut s).map(|_| s)
            })
            .unwrap_or_default();
        let mut list: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let drop = list.len().saturating_sub(KEPT);
        list.drain(..drop);
        Events {
            list,
            on_disk: true,
        }
    }

    pub fn last_kind(&self) -> Option<&str> {
        self.list.last()?["type"].as_str()
    }

    pub fn to_json(&self) -> Value {
        Value::Array(self.list.clone())
    }
}

/// The event of a task's end, from its wait result.
pub fn of_exit(exit: &Value) -> (Kind, String) {
    let code = exit["exit_code"].as_i64().unwrap_or(-1);
    let signal = exit["signal"].as_i64().unwrap_or(0);
    let mut m = if exit["oom_killed"] == true {
        format!("OOM killed (exit code {code})")
    } else if signal > 0 {
        format!("killed by signal {signal} (exit code {code})")
    } else {
        format!("exit code {code}")
    };
    match exit["err"].as_str() {
        Some(err) if code == -1 => {
            m = err.to_string();
            (Kind::SupervisorLost, m)
        }
        _ => (Kind::Exited, m),
    }
}

fn write(state_dir: &Path, events: &[Value], replace: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if replace {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    let mut f = o.open(state_dir.join(FILE))?;
    if !replace && f.metadata()?.len() > FILE_MAX {
        return Ok(());
    }
    let mut buf = vec![];
    for e in events {
        serde_json::to_writer(&mut buf, e)?;
        buf.push(b'\n');
    }
    f.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_persist_append_and_load_back() {
        let d = std::env::temp_dir().join(format!("ed-events-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(FILE), "{\"type\":\"an earlier task's\"}\n").unwrap();
        let mut e = Events::default();
        e.push(&d, "t", Kind::Received, "");
        e.persist(&d);
        e.push(&d, "t", Kind::Started, "pid 7");
        let back = Events::load(&d);
        let kinds: Vec<_> = back.list.iter().map(|v| v["type"].clone()).collect();
        assert_eq!(kinds, [json!("received"), json!("started")]);
        assert_eq!(back.list[1]["message"], "pid 7");
        assert_eq!(back.last_kind(), Some("started"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_end_reads_as_its_event() {
        let k = |v: Value| of_exit(&v);
        assert_eq!(k(json!({"exit_code": 0, "signal": 0})), (Kind::Exited, "exit code 0".into()));
        assert_eq!(
            k(json!({"exit_code": 137, "signal": 9, "oom_killed": true})).1,
            "OOM killed (exit code 137)"
        );
        assert_eq!(
            k(json!({"exit_code": 143, "signal": 15})).1,
            "killed by signal 15 (exit code 143)"
        );
        assert_eq!(
            k(json!({"exit_code": -1, "signal": 0, "err": "the task's supervisor is gone"})),
            (Kind::SupervisorLost, "the task's supervisor is gone".into())
        );
    }
}
