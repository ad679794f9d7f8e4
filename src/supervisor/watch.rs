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
        // Read into the spare capacity, never zeroed: only the pages that data lands in
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
    let mut status: Option<Ended> = None;
    let mut children_gone = false;
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
        // Reap whatever has exited.
        loop {
            match crate::sys::process::reap(None, false) {
                Ok(None) => break,
                Ok(Some((pid, how))) => {
                    if pid == child.as_raw() {
                        status = Some(how);
                        kill_everything(cgroup, None, is_init);
                    }
                }
                Err(_) => {
                    children_gone = true;
                    break;
                }
            }
        }
        if status.is_some() && !children_gone && !is_init {
            kill_descendants();
        }
        let pipes_open = pumps.iter().any(|p| p.fd.is_some());
        if status.is_some() && children_gone {
            if !pipes_open {
                return status;
            }
            // Something outside our tree holds a log pipe: drain briefly, then stop.
            let d = *drain_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(2));
            if Instant::now() >= d {
                return status;
            }
        }
        let mut fds = vec![libc::pollfd {
            fd: sfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for p in pumps.iter() {
            fds.push(libc::pollfd {
                fd: p.fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = match (status.is_some(), drop_pages_at) {
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
            while let Ok(Some(si)) = sfd.read_signal() {
                let signo = si.ssi_signo as i32;
                if signo == libc::SIGCHLD {
                    continue;
                }
                match proto::Control::from_signal(signo, si.ssi_code, si.ssi_int) {
                    Some(proto::Control::KillAll) => {
                        kill_everything(cgroup, status.is_none().then_some(child), is_init);
                        continue;
                    }
                    Some(proto::Control::Forward(sig)) => {
                        if status.is_none() {
                            crate::sys::process::kill(child.as_raw(), sig);
                        }
                        continue;
                    }
                    None => {}
                }
                if status.is_none() {
                    crate::sys::process::kill(child.as_raw(), signo);
                }
            }
        }
    }
}
