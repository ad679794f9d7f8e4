//! `driver_recover`: re-register a task started by an earlier host process from the
//! handle `driver_start` returned.

use crate::config::DriverKind;
use crate::error::{Code, Error, Result};
use crate::task::{self, Task};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Req {
    handle: Value,
}

#[derive(Deserialize)]
struct Handle {
    version: u64,
    task_id: String,
    name: String,
    driver: DriverKind,
    pid: i32,
    start_time: Option<u64>,
    state_dir: PathBuf,
    task_dir: PathBuf,
    alloc_dir: PathBuf,
    #[serde(default)]
    cgroup: Option<Value>,
    kill_signal: i32,
    kill_timeout_ms: u64,
    #[serde(default)]
    started_at: Option<String>,
}

/// Recovers the task of `handle`. Recovering a registered task is not an error.
pub fn recover(text: &str) -> Result<Value> {
    let r: Req = crate::config::parse(text, Code::InvalidRequest, "")?;
    let version = r.handle.get("version").and_then(Value::as_u64);
    if version != Some(crate::driver::HANDLE_VERSION) {
        return Err(Error::field(
            Code::InvalidRequest,
            "handle.version",
            format!(
                "handle format {version:?} is not supported by this library (it reads version {})",
                crate::driver::HANDLE_VERSION
            ),
        ));
    }
    let h: Handle = crate::config::parse_value(r.handle.clone(), Code::InvalidRequest, "handle")?;
    debug_assert_eq!(h.version, crate::driver::HANDLE_VERSION);
    if let Ok(t) = task::get(&h.task_id) {
        return Ok(json!({"task_id": t.id, "recovered": true, "state": t.state().as_str()}));
    }
    let task = Task::new(
        h.task_id.clone(),
        h.name,
        h.driver,
        h.task_dir,
        h.alloc_dir,
        h.state_dir,
        h.kill_signal,
        h.kill_timeout_ms,
    );
    let started_at = h.started_at.unwrap_or_default();
    // The pid names our supervisor only if its start time matches: a recycled pid never
    // passes. The check is repeated after the pidfd is open, closing the race.
    let ours =
        |pid: i32| h.start_time.is_some() && crate::sys::proc_start_time(pid) == h.start_time;
    // The supervisor may have gone on to run another task
    // ([`crate::launch::LaunchSpec::recycle`]), always after writing this one's exit.json;
    // a destroyed task has no state dir. Either way this task is over.
    let over = !task.state_dir.is_dir() || task.state_dir.join(crate::launch::EXIT_FILE).exists();
    let pidfd = if h.pid > 0 && !over && ours(h.pid) {
        crate::sys::pidfd_open(h.pid).ok().filter(|_| ours(h.pid))
    } else {
        None
    };
    match pidfd {
        Some(fd) => task.set_running(h.pid, fd, started_at, r.handle, h.cgroup, None),
        None => task.set_gone(started_at, r.handle, h.cgroup),
    }
    task::insert(task.clone())?;
    Ok(json!({"task_id": task.id, "recovered": true, "state": task.state().as_str()}))
}
