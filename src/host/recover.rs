//! `driver_recover`: re-register a task started by an earlier host process from the
//! handle `driver_start` returned.

use crate::error::{Code, Result};
use crate::host::task::{self, Task};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Req {
    handle: Value,
}

/// Recovers the task of `handle`. Recovering a registered task is not an error. The
/// handle is checked first ([`crate::host::handle::Handle::verify`]): a forged or altered one,
/// or one naming paths that are not the task's, is refused before anything is touched.
pub fn recover(text: &str) -> Result<Value> {
    let r: Req = crate::config::parse(text, Code::InvalidRequest, "")?;
    let cfg = crate::host::plugin::current();
    let h = crate::host::handle::Handle::verify(&r.handle, &cfg)?;
    if let Ok(t) = task::get(&h.task_id) {
        return Ok(json!({"task_id": t.id, "recovered": true, "state": t.state().as_str()}));
    }
    let task = Task::new(
        h.task_id.clone(),
        h.name,
        h.driver,
        h.task_dir,
        h.state_dir,
        h.kill_signal,
        h.kill_timeout_ms.min(cfg.max_kill_timeout_ms),
    );
    let started_at = h.started_at;
    // The state dir must still be this start's (its launch record has the handle's
    // nonce): a handle of an earlier task with the same id touches nothing of a later one.
    let ours = crate::proto::spec::read_launch(&task.state_dir).is_ok_and(|l| l.nonce == h.nonce);
    if !ours {
        task.set_superseded(started_at, r.handle);
        task::insert(task.clone())?;
        return Ok(json!({"task_id": task.id, "recovered": true, "state": task.state().as_str()}));
    }
    task.lock().events = crate::host::events::Events::load(&task.state_dir);
    task.event(crate::host::events::Kind::Recovered, "from its handle");
    let cgroup = h.cgroup;
    // The pid names our supervisor only if its start time matches: a reused pid never
    // passes. The check is repeated after the pidfd is open, closing the race.
    let ours =
        |pid: i32| h.start_time.is_some() && crate::sys::proc_start_time(pid) == h.start_time;
    // The supervisor may have gone on to run another task
    // ([`crate::proto::spec::LaunchSpec::again_ms`]), always after writing this one's exit.json;
    // a destroyed task has no state dir. Either way this task is over.
    let over =
        !task.state_dir.is_dir() || task.state_dir.join(crate::proto::spec::EXIT_FILE).exists();
    let pidfd = if h.pid > 0 && !over && ours(h.pid) {
        crate::sys::pidfd_open(h.pid).ok().filter(|_| ours(h.pid))
    } else {
        None
    };
    match pidfd {
        Some(fd) => task.set_running(h.pid, fd, started_at, r.handle, cgroup, None),
        None => task.set_gone(started_at, r.handle, cgroup),
    }
    task::insert(task.clone())?;
    Ok(json!({"task_id": task.id, "recovered": true, "state": task.state().as_str()}))
}
