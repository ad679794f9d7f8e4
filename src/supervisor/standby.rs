//! A spare exec supervisor's command process ("standby"), made while the spare waits for
//! a task (`execdriver-shim --warm <json>`, see [`crate::launch::Warm`]). It does ahead
//! what costs most in an exec start and does not depend on the task:
//! - it joins the task's v1 cgroups, made under a placeholder name (the first write to a
//!   `cgroup.procs` after an idle spell waits for an RCU grace period);
//! - it makes its own mount namespace and prepares the `chroot_env` binds, /dev and
//!   /proc as detached mounts ([`rootfs::stage`]).
//!
//! When the task arrives the supervisor hands it the launch spec; while the standby
//! attaches its mounts into the task root and drops its privileges, the supervisor
//! renames the cgroups to the task's id and writes the task's limits; the "go" byte then
//! lets the standby exec the command. A standby that failed to prepare is reaped and the
//! supervisor starts the task the usual way ([`super::vfork`]).
//!
//! Pipes, all close-on-exec: `ready` (standby → supervisor: one byte once prepared; EOF
//! means it failed), `spec` (supervisor → standby: the launch spec, to EOF), `go`
//! (supervisor → standby: one byte; EOF means give up). Errors after `ready` come back on
//! the supervisor's sync pipe, as for any command child.

use crate::cgroup::TaskCgroup;
use crate::error::{Code, Error, Result};
use crate::isolate::rootfs;
use crate::launch::{LaunchSpec, Warm};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::RawFd;

pub struct Standby {
    pub pid: Pid,
    ready: std::fs::File,
    /// Taken (closed) once the spec is written: the standby reads it to EOF.
    spec: Option<std::fs::File>,
    go: std::fs::File,
    /// The placeholder cgroups it is in (none on pure v2: cgroup2 dirs cannot be renamed).
    cgroup: Option<TaskCgroup>,
}

fn pipe() -> std::io::Result<(std::fs::File, std::fs::File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((r.into(), w.into()))
}

/// The command's stdio and the sync pipe, as the standby inherits them.
pub struct ChildFds {
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub sync: RawFd,
    /// The supervisor's own fds, closed in the standby.
    pub close: Vec<RawFd>,
}

impl Standby {
    /// Makes the placeholder cgroups and forks the standby. `None` when anything fails:
    /// the task then starts the usual way.
    pub fn prepare(warm: &Warm, fds: &ChildFds) -> Option<Standby> {
        let made = (|| -> std::io::Result<_> { Ok((pipe()?, pipe()?, pipe()?)) })();
        let Ok(((ready_r, ready_w), (spec_r, spec_w), (go_r, go_w))) = made else {
            return None;
        };
        // Forked first: it prepares its mounts while we make its cgroups.
        // SAFETY: the supervisor is single-threaded; the child runs `standby_main` and
        // leaves with `_exit`.
        let pid = match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                for fd in &fds.close {
                    // SAFETY: closing fds of the supervisor in our own copy of its table.
                    unsafe { libc::close(*fd) };
                }
                drop((ready_r, spec_w, go_w));
                let code = standby_main(warm, ready_w, spec_r, go_r, fds);
                // SAFETY: leave without running the supervisor's destructors.
                unsafe { libc::_exit(code) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => child,
            Err(_) => return None,
        };
        // The task's cgroups under the placeholder name, the standby moved in (the first
        // cgroup.procs write after an idle spell waits for an RCU grace period: here, not
        // in a start). If that fails they are made for the task at its start instead.
        let layout = warm.layout.for_exec();
        let cgroup = match layout {
            crate::cgroup::Layout::V2 { .. } => None,
            _ => TaskCgroup::create(
                &layout,
                &warm.parent,
                &warm.name,
                &crate::cgroup::Limits::default(),
            )
            .ok()
            .and_then(|cg| match cg.join(pid.as_raw()) {
                Ok(()) => Some(cg),
                Err(_) => {
                    let _ = cg.remove();
                    None
                }
            }),
        };
        Some(Standby {
            pid,
            ready: ready_r,
            spec: Some(spec_w),
            go: go_w,
            cgroup,
        })
    }

    /// Waits until the standby is prepared. `None` when it failed (it is reaped and its
    /// cgroups are removed).
    pub fn ready(mut self) -> Option<Standby> {
        let mut b = [0u8; 1];
        let alive = || {
            matches!(
                waitpid(self.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
                Ok(nix::sys::wait::WaitStatus::StillAlive)
            )
        };
        if matches!(self.ready.read(&mut b), Ok(1)) && alive() {
            return Some(self);
        }
        self.discard();
        None
    }

    /// Hands the standby the launch spec (which it parses while we parse ours). `None`
    /// when it is gone (it is reaped and its cgroups are removed).
    pub fn send_spec(mut self, spec_bytes: &[u8]) -> Option<Standby> {
        let sent = self
            .spec
            .take()
            .is_some_and(|mut f| write_nosig(&mut f, spec_bytes));
        if sent {
            return Some(self);
        }
        self.discard();
        None
    }

    /// Hands the task over: the cgroups renamed to the task's id (or made for it, on
    /// pure v2, and the standby moved in) with the task's limits, then the go byte. On
    /// failure the standby is killed and reaped and the cgroups are removed. Returns the
    /// task's cgroups.
    pub fn hand_over(mut self, spec: &LaunchSpec) -> Result<Option<TaskCgroup>> {
        let placeholder = self.cgroup.take();
        let r = (|| -> Result<Option<TaskCgroup>> {
            let Some(req) = &spec.cgroup_request else {
                return Ok(None);
            };
            let cg = match placeholder {
                Some(mut cg) => {
                    let r = cg
                        .rename(&spec.task_id)
                        .and_then(|()| cg.apply_limits(&req.limits));
                    if let Err(e) = r {
                        let _ = cg.remove();
                        return Err(e);
                    }
                    cg
                }
                None => {
                    let cg = TaskCgroup::create(
                        &req.layout.for_exec(),
                        &req.parent,
                        &spec.task_id,
                        &req.limits,
                    )?;
                    if let Err(e) = cg.join(self.pid.as_raw()) {
                        let _ = cg.remove();
                        return Err(Error::new(
                            Code::Isolation,
                            format!("cgroup: moving the command process in: {e}"),
                        ));
                    }
                    cg
                }
            };
            Ok(Some(cg))
        })();
        match r {
            Ok(cg) => {
                // A standby that died meanwhile has said why on the sync pipe.
                write_nosig(&mut self.go, b"g");
                Ok(cg)
            }
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }

    /// Kills and reaps the standby and removes its placeholder cgroups (the spare was
    /// not used, or the start failed).
    pub fn discard(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
        if let Some(c) = self.cgroup.take() {
            let _ = c.remove();
        }
    }
}

/// Writes to a pipe of the standby. When the standby is gone the write fails with
/// EPIPE and raises SIGPIPE, which (blocked here) would wait in our signalfd and be
/// forwarded to the task as if someone had sent it: it is taken off the queue.
fn write_nosig(f: &mut std::fs::File, bytes: &[u8]) -> bool {
    match f.write_all(bytes) {
        Ok(()) => true,
        Err(e) => {
            if e.raw_os_error() == Some(libc::EPIPE) {
                // SAFETY: an initialised signal set and a zero timeout; only dequeues a
                // pending SIGPIPE of this (single-threaded) process.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGPIPE);
                    let zero = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
                }
            }
            false
        }
    }
}

/// The standby process: prepares, waits for its spec and the go byte, execs the command.
fn standby_main(
    warm: &Warm,
    ready: std::fs::File,
    mut spec: std::fs::File,
    go: std::fs::File,
    fds: &ChildFds,
) -> i32 {
    let prepared = (|| -> Result<rootfs::Staged> {
        nix::unistd::setsid().map_err(|e| Error::new(Code::Spawn, format!("setsid: {e}")))?;
        rootfs::private_namespace()?;
        rootfs::stage(&warm.binds)
    })();
    let Ok(staged) = prepared else {
        // EOF on `ready`: the supervisor starts the task the usual way.
        return 1;
    };
    // fork did not copy the page tables of our binary's file mappings.
    super::populate_our_binary(std::os::fd::AsFd::as_fd(&spec));
    let mut ready = ready;
    if ready.write_all(b"r").is_err() {
        return 1;
    }
    drop(ready);
    let mut bytes = vec![];
    if spec.read_to_end(&mut bytes).is_err() || bytes.is_empty() {
        return 1;
    }
    let e = match serde_json::from_slice::<LaunchSpec>(&bytes) {
        Ok(s) => crate::isolate::exec_staged(&s, fds.stdout, fds.stderr, staged, go),
        Err(e) => Error::new(
            Code::Spawn,
            format!("standby: parsing the launch spec: {e}"),
        ),
    };
    let msg = e.to_json().to_string();
    // SAFETY: write(2) of our own buffer to the sync pipe.
    unsafe { libc::write(fds.sync, msg.as_ptr().cast(), msg.len()) };
    127
}
