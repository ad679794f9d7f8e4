//! While a task runs: forwarding signals and the driver's commands to it, pumping its
//! output into its logs, reaping, and taking down everything left of it when its command
//! ends.

use crate::cgroup::TaskCgroup;
use crate::proto;
use crate::supervisor::logs::RotatingLog;
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::SignalFd;
use crate::sys::process::Ended;
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// One of the command's output pipes and its log.
pub struct Pump {
    pub fd: Option<OwnedFd>,
    pub log: RotatingLog,
}

impl Pump {
    /// Moves what is readable now into the log; false at EOF.
    fn pump(&mut self, buf: &mut Vec<u8>) -> bool {
        let Some(fd) = &self.fd else { return false };
        // Read into the unused capacity, never zeroed: only the pages that data lands in
        // are touched (a zeroed 64 KiB stack buffer cost 16 page faults per task, even for
        // a task that writes nothing).
        match crate::sys::process::read_into(fd.as_fd(), buf) {
            Ok(0) => {
                self.fd = None;
                false
            }
            Ok(_) => {
                let _ = self.log.write(buf);
                true
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) => true,
            Err(_) => {
                self.fd = None;
                false
            }
        }
    }
}

/// Kills every process of the task except the supervisor. `child`: the command's
/// process while it is not reaped; once reaped its pid (and maybe its process group's
/// number) is free and may already be another process's, so nothing is killed by it:
/// the cgroup and our descendants (a subreaper's: every process the task left) cover
/// the rest.
pub fn kill_everything(cgroup: Option<&TaskCgroup>, child: Option<Pid>, is_init: bool) {
    if let Some(c) = child {
        let _ = kill(c, Signal::SIGKILL);
    }
    if is_init {
        // From a pid namespace's init, kill(-1) reaches every other process in it, and
        // every process of the task is in it (`driver_exec` enters it too): no need to
        // walk the cgroup (the processes die before we see ECHILD; fork cannot race
        // kill(-1), which signals under the lock fork takes to add a process).
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        return;
    }
    if let Some(cg) = cgroup {
        let _ = cg.kill_all();
    }
    if let Some(c) = child {
        let _ = kill(Pid::from_raw(-c.as_raw()), Signal::SIGKILL);
    }
    kill_descendants();
}

/// The host pid of our only child (`host_pid`: ours): our /proc is the host's, which
/// numbers processes as the host's pid namespace does, not as ours does.
pub fn only_child(host_pid: i32) -> Option<i32> {
    let text =
        std::fs::read_to_string(format!("/proc/{host_pid}/task/{host_pid}/children")).ok()?;
    match text.split_whitespace().collect::<Vec<_>>()[..] {
        [one] => one.parse().ok(),
        _ => None,
    }
}

/// SIGKILLs our children (orphans of the task are reparented to us, the subreaper).
fn kill_descendants() {
    let me = std::process::id();
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{me}/children")) else {
        return;
    };
    for pid in text
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Runs until the command has exited, every other process of the task is gone and the
/// log pipes are drained. Returns the command's status.
pub fn supervise(
    cgroup: Option<&TaskCgroup>,
    child: Pid,
    is_init: bool,
    sfd: &SignalFd,
    pumps: &mut [Pump; 2],
) -> Option<Ended> {
    let mut w = Watch {
        cgroup,
        child,
        is_init,
        status: None,
        children_gone: false,
    };
    let mut drain_deadline: Option<Instant> = None;
    // The start-up pages go back once the task has run a second: off the start's path,
    // and not at all for short tasks.
    let mut drop_pages_at = Some(Instant::now() + Duration::from_secs(1));
    let mut buf: Vec<u8> = Vec::with_capacity(65536);
    loop {
        if drop_pages_at.is_some_and(|at| Instant::now() >= at) {
            crate::sys::process::drop_startup_pages();
            drop_pages_at = None;
        }
        w.reap();
        if w.status.is_some() && w.children_gone {
            if pumps.iter().all(|p| p.fd.is_none()) {
                return w.status;
            }
            // Something outside our tree holds a log pipe: drain briefly, then stop.
            let d = *drain_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(2));
            if Instant::now() >= d {
                return w.status;
            }
        }
        let mut fds = poll_set(sfd, pumps);
        let timeout = match (w.status.is_some(), drop_pages_at) {
            (true, _) => 100,
            (false, Some(at)) => {
                at.saturating_duration_since(Instant::now()).as_millis() as i32 + 1
            }
            (false, None) => -1,
        };
        if crate::sys::process::poll(&mut fds, timeout) == 0 {
            continue;
        }
        for (i, p) in pumps.iter_mut().enumerate() {
            if fds[i + 1].revents != 0 {
                p.pump(&mut buf);
            }
        }
        if fds[0].revents != 0 {
            w.dispatch_signals(sfd);
        }
    }
}

/// What [`supervise`] knows of the task between two polls.
struct Watch<'a> {
    cgroup: Option<&'a TaskCgroup>,
    child: Pid,
    is_init: bool,
    /// The command's status once it is reaped.
    status: Option<Ended>,
    /// No child of ours is left (ECHILD).
    children_gone: bool,
}

impl Watch<'_> {
    /// Reaps whatever has exited; once the command has, takes down the rest of the task.
    fn reap(&mut self) {
        loop {
            match crate::sys::process::reap(None, false) {
                Ok(None) => break,
                Ok(Some((pid, how))) => {
                    if pid == self.child.as_raw() {
                        self.status = Some(how);
                        kill_everything(self.cgroup, None, self.is_init);
                    }
                }
                Err(_) => {
                    self.children_gone = true;
                    break;
                }
            }
        }
        if self.status.is_some() && !self.children_gone && !self.is_init {
            kill_descendants();
        }
    }

    /// Acts on every signal queued on `sfd`: the driver's [`proto::Control`]s, and any
    /// other (but SIGCHLD, which only wakes the poll) forwarded to the command while it
    /// runs.
    fn dispatch_signals(&self, sfd: &SignalFd) {
        let running = self.status.is_none();
        while let Ok(Some(si)) = sfd.read_signal() {
            let signo = si.ssi_signo as i32;
            if signo == libc::SIGCHLD {
                continue;
            }
            match proto::Control::from_signal(signo, si.ssi_code, si.ssi_int) {
                Some(proto::Control::KillAll) => {
                    kill_everything(self.cgroup, running.then_some(self.child), self.is_init);
                }
                Some(proto::Control::Forward(sig)) if running => {
                    crate::sys::process::kill(self.child.as_raw(), sig);
                }
                Some(proto::Control::Forward(_)) => {}
                None if running => crate::sys::process::kill(self.child.as_raw(), signo),
                None => {}
            }
        }
    }
}

/// What [`supervise`] polls: the signalfd first, then each pump's pipe (-1 once it is
/// closed, which poll skips), in the order of `pumps`.
fn poll_set(sfd: &SignalFd, pumps: &[Pump; 2]) -> [libc::pollfd; 3] {
    let entry = |fd: i32| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let pipe = |p: &Pump| entry(p.fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1));
    [entry(sfd.as_raw_fd()), pipe(&pumps[0]), pipe(&pumps[1])]
}
