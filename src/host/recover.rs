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
    /// Return a `wait_fd`, as `driver_start` does ([`wait_fd`]).
    #[serde(default)]
    wait_fd: bool,
}

/// Recovers the task of `handle`. Recovering a registered task is not an error. The
/// handle is checked first ([`crate::host::handle::Handle::verify`]): a forged or altered one,
/// or one naming paths that are not the task's, is refused before anything is touched.
pub fn recover(text: &str) -> Result<Value> {
    let r: Req = crate::config::parse(text, Code::InvalidRequest, "")?;
    let cfg = crate::host::plugin::current();
    let h = crate::host::handle::Handle::verify(&r.handle, &cfg)?;
    if let Ok(t) = task::get(&h.task_id) {
        // Started by this process: its supervisor may outlive it (kept for reuse), so
        // its pidfd is no wait fd; the start's own `wait_fd` is.
        if r.wait_fd && t.state() != task::State::Exited && t.lock().spec.is_some() {
            return Err(crate::error::Error::field(
                Code::InvalidRequest,
                "wait_fd",
                "this process started the task: ask driver_start for its wait_fd",
            ));
        }
        return reply(&t, r.wait_fd);
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
    // A record that is gone or does not parse is not this start's; one that cannot
    // be read (EMFILE, EIO) says nothing either way: an error, the task untouched.
    let ours = match crate::proto::spec::read_launch(&task.state_dir) {
        Ok(l) => l.nonce == h.nonce,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
            ) =>
        {
            false
        }
        Err(e) => {
            return Err(crate::error::Error::new(
                Code::Internal,
                format!("reading the task's launch record: {e}"),
            ));
        }
    };
    if !ours {
        task.set_superseded(started_at, r.handle);
        task::insert(task.clone())?;
        return reply(&task, r.wait_fd);
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
        !task.state_dir.is_dir() || crate::proto::spec::exit_recorded(&task.state_dir);
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
    reply(&task, r.wait_fd)
}

/// The response, with a wait fd when asked for.
fn reply(t: &Task, want_fd: bool) -> Result<Value> {
    let mut v = json!({"task_id": t.id, "recovered": true, "state": t.state().as_str()});
    if want_fd {
        let fd = wait_fd(t)
            .map_err(|e| crate::error::Error::new(Code::Internal, format!("wait_fd: {e}")))?;
        // Handed over: the caller closes it.
        v["wait_fd"] = json!(std::os::fd::IntoRawFd::into_raw_fd(fd));
    }
    Ok(v)
}

/// A recovered task's wait fd: a pidfd of its supervisor, which ends once it has recorded
/// the task's exit (no host is there to take it back); for a task known to be over, the
/// read end of a pipe whose write end is closed. Readable either way once the exit is
/// known.
fn wait_fd(t: &Task) -> std::io::Result<std::os::fd::OwnedFd> {
    let pidfd = t.lock().pidfd.clone();
    match pidfd {
        Some(fd) if t.state() != task::State::Exited => fd.try_clone(),
        _ => nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map(|(r, _)| r)
            .map_err(std::io::Error::from),
    }
}
