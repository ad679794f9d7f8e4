//! A spare exec supervisor's command process ("standby"), made while the spare waits for
//! a task (`execdriver-shim --staged <json>`, see [`crate::proto::spec::Staging`]). It does ahead
//! what costs most in an exec start and does not depend on the task:
//! - it joins the task's v1 cgroups, made under a placeholder name (mkdir in five
//!   hierarchies: ~0.3 ms);
//! - it makes its own mount namespace and prepares the `chroot_env` binds, /dev and
//!   /proc as detached mounts ([`rootfs::stage`]).
//!
//! When the task arrives, the supervisor (the channel's one reader) passes the launch
//! spec on to the standby at once, which decides whether it takes the task ([`fits`])
//! while the supervisor parses it too. Taking it, the supervisor renames the placeholder
//! cgroups to the task's id and writes its limits while the host makes the task's
//! directories, then passes on the host's go; the standby attaches its mounts into the
//! task root, drops its privileges and waits for the go byte to exec the command. A
//! standby that failed to prepare exits; one that does not take the task exits after its
//! verdict: the supervisor then starts the task the usual way.
//!
//! Pipes, all close-on-exec: `feed` (supervisor → standby: the spec's line, then the
//! go's; EOF: give up), `verdict` (standby → supervisor: one [`Verdict`] byte; EOF
//! before it: the standby is gone), `go` (supervisor → standby: one byte, the task's
//! cgroups are ready; EOF: give up). Errors of the standby after its verdict come back on
//! the supervisor's sync pipe, as for any command child.

use crate::cgroup::{CgroupGuard, TaskCgroup};
use crate::error::{Code, Error, Result};
use crate::proto::chan::{Channel, Line};
use crate::proto::spec::{Go, LaunchSpec, Staging};
use crate::proto::{self, ToSupervisor, Verdict};
use crate::supervisor::rootfs;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::io::{BufRead, Read, Write};
use std::os::fd::RawFd;

pub struct Standby {
    pub pid: Pid,
    feed: std::fs::File,
    verdict: std::fs::File,
    go: std::fs::File,
    /// The placeholder cgroups it is in (none on pure v2: cgroup2 dirs cannot be renamed).
    cgroup: Option<TaskCgroup>,
    /// Our `/proc/self/mountinfo`, opened before the standby copied the host's mounts:
    /// `POLLPRI` says they changed (see [`Standby::receive_spec`]).
    mounts: Option<std::fs::File>,
    /// The fd number at which the standby keeps a detached copy of the host's mount tree,
    /// which it looks the task's paths up in from its skeleton root
    /// (`rootfs::Staged::enter_skeleton`). We hold it open (on /dev/null) so that the
    /// number is free for that in the standby; see [`Standby::take_host_tree`].
    host_slot: Option<std::fs::File>,
}

/// What [`Standby::receive_spec`] got (one at a time, on the stack: its size is no matter).
#[allow(clippy::large_enum_variant)]
pub enum Received {
    /// The launch spec's line (empty: the host closed the channel first), and the
    /// standby if it has it.
    Spec(Option<Standby>, Vec<u8>),
    /// The host's mounts changed while the standby waited: it has been ended.
    MountsChanged,
}

/// After [`Received::MountsChanged`]: waits until the host's mount table has been quiet
/// for a quarter of a second (so that a busy host does not have standbys made and
/// ended over and over), or until the host writes on `chan`. True in the second case:
/// the spec is there, and the task starts without a standby.
pub fn mounts_settled(chan: &Channel) -> bool {
    use std::os::fd::AsRawFd;
    loop {
        if chan.buffered() {
            return true;
        }
        // A fresh open: POLLPRI then says a change since now.
        let Ok(m) = std::fs::File::open("/proc/self/mountinfo") else {
            return false;
        };
        let fds = [
            (chan.fd.as_raw_fd(), libc::POLLIN),
            (m.as_raw_fd(), libc::POLLPRI),
        ];
        match crate::sys::poll_events(&fds, 250) {
            Ok(r) if r[0] => return true,
            Ok(r) if r[1] => continue,
            _ => return false,
        }
    }
}

/// Whether the standby can take the task `spec`: an isolated one; not once the host's
/// mounts changed since it was prepared (`mounts`: the supervisor's
/// `/proc/self/mountinfo`, opened before the standby copied them); nor when its
/// placeholder cgroups cannot become the cgroups the task asks for (it pins cores: the
/// placeholder has no cpuset directory of its own; or it wants a freezer cgroup the
/// placeholder lacks, or has one it does not want). The task then starts the usual way.
fn fits(
    spec: &LaunchSpec,
    placeholder: Option<&TaskCgroup>,
    freezer: bool,
    mounts: Option<&std::fs::File>,
) -> bool {
    if spec.isolation.is_none() {
        return false;
    }
    // Its copy of the host's mounts is a snapshot: not used once they changed.
    if mounts.is_some_and(crate::sys::mounts_changed) {
        return false;
    }
    match (&spec.cgroup_request, placeholder) {
        (Some(r), Some(_)) => r.limits.cores == 0 && r.limits.freezer == freezer,
        // Its placeholder would be left to nobody.
        (None, Some(_)) => false,
        _ => true,
    }
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
    /// The supervisor's own fds (the channel among them), closed in the standby.
    pub close: Vec<RawFd>,
    /// Where the standby puts its copy of the host tree ([`Standby::prepare`] sets it).
    pub host_tree: Option<RawFd>,
}

impl Standby {
    /// Makes the placeholder cgroups and forks the standby. `None` when anything fails:
    /// the task then starts the usual way.
    pub fn prepare(staging: &Staging, mut fds: ChildFds) -> Option<Standby> {
        // Without it the standby builds the root from the host's tree (no skeleton root).
        let host_slot = std::fs::File::open("/dev/null").ok();
        let mounts = std::fs::File::open("/proc/self/mountinfo").ok();
        fds.host_tree = host_slot.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        let fds = &fds;
        let made = (|| -> std::io::Result<_> { Ok((pipe()?, pipe()?, pipe()?)) })();
        let Ok(((feed_r, feed_w), (verdict_r, verdict_w), (go_r, go_w))) = made else {
            return None;
        };
        // The task's cgroups under the placeholder name, made first: the standby joins
        // them itself, single-threaded, by the `tasks` files, which does not wait for the
        // RCU grace period a `cgroup.procs` write by pid waits for after an idle spell
        // (see `TaskCgroup::self_join_files`). Made for the task at its start instead if
        // this fails (or on pure v2, where cgroup2 dirs cannot be renamed).
        let layout = staging.layout.for_exec();
        if let crate::cgroup::Layout::V2 { .. } = layout {
            // The task's cgroup is made at the start there: its device program ready.
            crate::cgroup::devices::prime();
        }
        let cgroup = CgroupGuard::new(match layout {
            crate::cgroup::Layout::V2 { .. } => None,
            // At the kernel's default cpu weight until the task's limits are written (with
            // `cpu_mhz` 0 it would get shares 2, and its start would wait behind any busy
            // sibling task).
            _ => TaskCgroup::create(
                &layout,
                &staging.parent,
                &staging.name,
                &crate::cgroup::Limits {
                    cpu_mhz: crate::cgroup::DEFAULT_CPU_SHARES,
                    freezer: staging.freezer,
                    ..Default::default()
                },
            )
            .ok(),
        });
        let supervisor = nix::unistd::getpid();
        use crate::sys::process::{self as process, Forked};
        let pid = match process::fork() {
            Ok(Forked::Child) => {
                // It lives and dies with its supervisor: a spare killed while idle takes
                // its standby (and the standby's hold on its cgroups) along.
                process::set_parent_death_signal(libc::SIGKILL);
                if nix::unistd::getppid() != supervisor {
                    // The supervisor died before the prctl.
                    process::exit_now(1);
                }
                for fd in &fds.close {
                    process::close_raw(*fd);
                }
                drop((feed_w, verdict_r, go_w));
                let pipes = Pipes {
                    feed: feed_r,
                    verdict: verdict_w,
                    go: go_r,
                };
                let code = standby_main(staging, cgroup.get(), mounts.as_ref(), pipes, fds);
                process::exit_now(code);
            }
            Ok(Forked::Parent(child)) => Pid::from_raw(child),
            Err(_) => return None,
        };
        Some(Standby {
            pid,
            feed: feed_w,
            verdict: verdict_r,
            go: go_w,
            cgroup: cgroup.disarm(),
            mounts,
            host_slot,
        })
    }

    /// Waits for the task: the launch spec's line from `chan`, passed on to the standby
    /// ([`Received::Spec`], with no standby when it has gone: failed to prepare, or
    /// died; it is then reaped and its cgroups removed). Whether the standby takes the
    /// task comes after ([`Standby::takes`]): it decides while we parse the spec too.
    ///
    /// A standby holds copies of host mounts (its `chroot_env` binds, its copy of the
    /// host's tree): while it waits, a filesystem the host unmounts would stay alive in
    /// them. So when the host's mount table changes, it is ended at once
    /// ([`Received::MountsChanged`]; the caller prepares another once the mounts are
    /// quiet, see [`mounts_settled`]).
    ///
    /// It prepares at idle priority (see [`crate::sys::set_idle_priority`]). The host
    /// moves us out of it when it sends the spec; we then move the standby out of it, so
    /// that a start never waits for CPU time nothing else wants (on a busy node).
    pub fn receive_spec(mut self, chan: &mut Channel) -> Received {
        use std::os::fd::AsRawFd;
        let mut fds = vec![
            (self.verdict.as_raw_fd(), libc::POLLIN),
            (chan.fd.as_raw_fd(), libc::POLLIN),
        ];
        if let Some(m) = &self.mounts {
            fds.push((m.as_raw_fd(), libc::POLLPRI));
        }
        let ready = match chan.buffered() {
            true => None,
            false => crate::sys::poll_events(&fds, -1).ok(),
        };
        let spec_there = ready.as_ref().is_none_or(|r| r[1]);
        // (The poll took the change note: the standby could not see it any more.)
        if ready.as_ref().is_some_and(|r| r.get(2) == Some(&true)) {
            self.discard();
            return match spec_there {
                true => Received::Spec(None, vec![]),
                false => Received::MountsChanged,
            };
        }
        if !spec_there {
            // The verdict pipe before any spec: the standby is gone.
            self.discard();
            return Received::Spec(None, vec![]);
        }
        crate::sys::set_idle_priority_of(self.pid.as_raw(), false);
        let mut line = match chan.line(true, proto::MAX_LINE) {
            Ok(Line::Complete(b)) => b,
            _ => {
                self.discard();
                return Received::Spec(None, vec![]);
            }
        };
        line.push(b'\n');
        let passed = write_nosig(&mut self.feed, &line);
        line.pop();
        if !passed {
            self.discard();
            return Received::Spec(None, line);
        }
        Received::Spec(Some(self), line)
    }

    /// Whether the standby takes the task (see [`fits`]): it says so once it has parsed
    /// the spec. Not taking it, it is reaped and its cgroups are removed.
    pub fn takes(&mut self) -> bool {
        let mut b = [0u8; 1];
        let verdict = matches!(self.verdict.read(&mut b), Ok(1)).then_some(b[0]);
        let takes = verdict.map(Verdict::from_byte) == Some(Verdict::Takes);
        if !takes {
            self.discard();
        }
        takes
    }

    /// Our own copy of the standby's host tree, taken before the go byte: the caller keeps
    /// it until the task has ended. Dropping the last copy dissolves the tree, which waits
    /// for an RCU grace period; with ours alive, the standby's copy closing at its exec is
    /// not the last, so the command does not wait for it.
    pub fn take_host_tree(&mut self) -> Option<std::os::fd::OwnedFd> {
        let slot = std::os::fd::AsRawFd::as_raw_fd(self.host_slot.as_ref()?);
        let pidfd = crate::sys::pidfd_open(self.pid.as_raw()).ok()?;
        crate::sys::pidfd_getfd(&pidfd, slot).ok()
    }

    /// The task's cgroups: the placeholder's renamed to the task's id (or made for it,
    /// on pure v2, and the standby moved in) with the task's limits, removed unless the
    /// caller disarms them once the command has its go. On failure the standby is killed
    /// and reaped and the cgroups are removed.
    pub fn adopt_cgroups(&mut self, spec: &LaunchSpec) -> Result<CgroupGuard> {
        let placeholder = CgroupGuard::new(self.cgroup.take());
        let r = self.task_cgroups(placeholder, spec);
        if r.is_err() {
            self.discard();
        }
        r
    }

    /// [`Standby::adopt_cgroups`] but for the discarding.
    fn task_cgroups(&self, placeholder: CgroupGuard, spec: &LaunchSpec) -> Result<CgroupGuard> {
        // (Without a request there is no placeholder: `fits` declines then.)
        let Some(req) = &spec.cgroup_request else {
            return Ok(placeholder);
        };
        let mut cg = placeholder;
        match cg.get_mut() {
            Some(p) => {
                p.rename(&spec.task_id)?;
                p.apply_limits(&req.limits)?;
            }
            None => {
                cg = CgroupGuard::new(Some(TaskCgroup::create(
                    &req.layout.for_exec(),
                    &req.parent,
                    &spec.task_id,
                    &req.limits,
                )?));
                if let Some(made) = cg.get() {
                    made.join(self.pid.as_raw()).map_err(|e| {
                        Error::new(
                            Code::Isolation,
                            format!("cgroup: moving the command process in: {e}"),
                        )
                    })?;
                }
            }
        }
        Ok(cg)
    }

    /// Passes on the host's go (the task's directories are made), then the go byte (its
    /// cgroups are ready). A standby that died meanwhile has said why on the sync pipe.
    pub fn go(mut self, go: &Go) {
        if write_nosig(&mut self.feed, &proto::line(&ToSupervisor::Go(go.clone()))) {
            write_nosig(&mut self.go, &[proto::GO]);
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
                crate::sys::process::discard_pending(libc::SIGPIPE);
            }
            false
        }
    }
}

/// The standby's ends of its pipes (see the module doc).
struct Pipes {
    feed: std::fs::File,
    verdict: std::fs::File,
    go: std::fs::File,
}

/// The standby's work ahead of a task (see the module doc).
fn prepare(staging: &Staging, cgroup: Option<&TaskCgroup>, fds: &ChildFds) -> Result<rootfs::Staged> {
    if let Some(cg) = cgroup {
        cg.join_self()
            .map_err(|e| Error::new(Code::Isolation, format!("joining cgroups: {e}")))?;
    }
    nix::unistd::setsid().map_err(|e| Error::new(Code::Spawn, format!("setsid: {e}")))?;
    rootfs::private_namespace()?;
    let mut staged = rootfs::stage(&staging.mounts)?;
    // What no task of this configuration may have goes now, not at the start.
    crate::supervisor::privs::limit_bounding(staging.caps)?;
    // The parsers' code mapped in now (see `Staging::sample_spec`).
    let sample = staging.sample_spec();
    let _ = std::hint::black_box(proto::parse::<ToSupervisor>(&sample));
    let _ = std::hint::black_box(proto::parse::<ToSupervisor>(b"{\"go\":{}}"));
    // A copy of the host's tree made in our own namespace (the kernel clones from a
    // detached tree only in the namespace it came from), at the number the supervisor
    // reserved, so that it can take a copy of the fd.
    if let Some(slot) = fds.host_tree
        && let Ok(tree) = crate::sys::mount::clone_tree(std::path::Path::new("/"))
        && crate::sys::mount::can_clone_in(std::os::fd::AsFd::as_fd(&tree))
        // `slot`: our copy of the supervisor's /dev/null, which nothing here uses.
        && let Ok(host) = crate::sys::process::dup_onto(std::os::fd::AsFd::as_fd(&tree), slot)
    {
        drop(tree);
        staged.enter_skeleton(host)?;
    }
    Ok(staged)
}

/// Whether the standby takes the task of the spec `line` (see [`fits`]), and the group's
/// network namespace it then enters.
fn decide(
    line: &[u8],
    staging: &Staging,
    cgroup: Option<&TaskCgroup>,
    mounts: Option<&std::fs::File>,
    staged: &rootfs::Staged,
) -> (Option<LaunchSpec>, Option<std::fs::File>) {
    let spec = match proto::parse::<ToSupervisor>(line) {
        Ok(ToSupervisor::Spec(s)) => Some(*s),
        _ => None,
    }
    .filter(|s| fits(s, cgroup, staging.freezer, mounts));
    // A group's network namespace, found where this standby sees the host's paths (in
    // its copy of the host's tree, which resolves no /proc magic link): one it cannot
    // open there is not taken, and the supervisor starts the task the usual way.
    let netns = spec
        .as_ref()
        .and_then(|s| s.isolation.as_ref())
        .and_then(|i| i.netns.as_ref())
        .map(|p| {
            staged.open_host(p).and_then(|f| {
                crate::sys::net::check_netns(std::os::fd::AsFd::as_fd(&f)).map(|()| f)
            })
        });
    let spec = spec.filter(|_| !matches!(netns, Some(Err(_))));
    let netns = netns.and_then(Result::ok);
    (spec, netns)
}

/// The standby process: prepares; reads the spec its supervisor passes on and gives its
/// verdict ([`fits`]); reads the host's go (the task's directories are made), builds the
/// root, waits for the go byte, execs the command.
fn standby_main(
    staging: &Staging,
    cgroup: Option<&TaskCgroup>,
    mounts: Option<&std::fs::File>,
    pipes: Pipes,
    fds: &ChildFds,
) -> i32 {
    let prepared = prepare(staging, cgroup, fds);
    let Ok(staged) = prepared else {
        // EOF on `verdict`: the supervisor starts the task the usual way.
        return 1;
    };
    let Pipes {
        feed,
        mut verdict,
        go,
    } = pipes;
    let mut feed = std::io::BufReader::new(feed);
    let mut line = vec![];
    if !matches!(feed.read_until(b'\n', &mut line), Ok(n) if n > 0) {
        // The spare was ended.
        return 0;
    }
    line.pop();
    let (spec, netns) = decide(&line, staging, cgroup, mounts, &staged);
    let said = if spec.is_some() {
        Verdict::Takes
    } else {
        Verdict::Declines
    };
    if verdict.write_all(&[said.byte()]).is_err() {
        return 1;
    }
    drop(verdict);
    let Some(mut spec) = spec else {
        // The supervisor starts the task the usual way (and reads the go line).
        return 0;
    };
    // The task's command from here on: it outlives its supervisor as any command does.
    crate::sys::process::set_parent_death_signal(0);
    // The host's go: its directories are made (EOF: it gave up on the start).
    line.clear();
    let from_host = match feed.read_until(b'\n', &mut line) {
        Ok(n) if n > 0 => proto::parse::<ToSupervisor>(&line[..n - 1]).ok(),
        _ => None,
    };
    drop(feed);
    let e = match from_host {
        Some(ToSupervisor::Go(g)) => {
            g.apply(&mut spec);
            super::command::exec_staged(&spec, fds.stdout, fds.stderr, staged, go, staging.caps, netns)
        }
        _ => Error::new(Code::Spawn, "the host gave up on the start"),
    };
    let msg = serde_json::to_vec(&proto::Failure::from(&e)).unwrap_or_default();
    crate::sys::process::write_raw(fds.sync, &msg);
    127
}
