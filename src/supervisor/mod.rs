//! The per-task supervisor: a small process of ours, exec'd by the host library for each
//! task. It receives the launch spec on its stdout, a socket to the host ([`crate::proto::chan`]),
//! starts the command (through [`crate::supervisor::launcher`]), reports the start there, then forwards
//! signals, pumps logs, reaps, and when the command ends takes down everything left of
//! the task, reports the exit and writes `exit.json`.
//!
//! For `exec` with a private pid namespace it is the namespace's pid 1 (the command is
//! pid 2, never init); otherwise it is a child subreaper for the task's tree.

pub mod exec;
pub mod launcher;
pub mod logs;
pub mod mountapi;
pub mod net;
pub mod privs;
pub mod rootfs;
pub mod seccomp;

use crate::cgroup::TaskCgroup;
use crate::error::{Code, Error};
use crate::proto::spec::{self as launch, ExitStatus, LaunchSpec};
use crate::proto::{self, ToHost, ToSupervisor};
use launcher::{reuse, standby, trampoline, vfork};
use logs::RotatingLog;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Entry point of the supervisor binary. Its stdout is the channel socket to the host
/// ([`crate::proto::chan`]): the launch spec arrives on it, the reports go back on it. `warm`
/// (a spare exec supervisor, `--warm <json>`): what to prepare while the spec is awaited
/// ([`crate::proto::spec::Warm`], [`standby`]).
///
/// `owns` (`--owns <json>`, [`crate::proto::spec::Owned`]): the cgroups the host makes for the
/// first task while we load; removed should the host go away before its go line.
pub fn main(warm: Option<&std::ffi::OsStr>, owns: Option<&std::ffi::OsStr>) -> i32 {
    // Everything blocked first: signals are read from a signalfd later, and a SIGPIPE must
    // never end us before that.
    let _ = SigSet::all().thread_block();
    // Nothing of the host but fds 0-2 may stay open.
    // SAFETY: closes only fds above 2 of this fresh process.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // The channel moves off fd 1 (which becomes /dev/null), so that nothing the command
    // inherits refers to it.
    // (Not through std::io::stdout(), which would set up Rust's buffered stdout for it.)
    // SAFETY: fd 1 is open for the whole of this call (the host gave it to us as stdout).
    let fd1 = unsafe { std::os::fd::BorrowedFd::borrow_raw(1) };
    let Ok(chan) = fd1.try_clone_to_owned() else {
        return 1;
    };
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // SAFETY: dup2 onto our own stdout.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    let warm = warm.and_then(|w| {
        serde_json::from_slice::<crate::proto::spec::Warm>(w.as_encoded_bytes()).ok()
    });
    let owns = owns.and_then(|o| {
        serde_json::from_slice::<crate::proto::spec::Owned>(o.as_encoded_bytes()).ok()
    });
    let mut own = prepare_self();
    let mut first = true;
    loop {
        if warm.is_some() {
            crate::sys::set_idle_priority(true);
        }
        let standby = warm
            .as_ref()
            .and_then(|w| standby::Standby::prepare(w, standby_fds(&own, &chan)?));
        // With a standby, the spec comes through it (it reads the channel); without one,
        // or when it has none (it is then already reaped, its cgroups removed), from the
        // channel.
        let (standby, forwarded) = match standby.map(|sb| sb.receive_spec(&chan)) {
            Some(standby::Received::Spec(sb, bytes)) => (sb, bytes),
            Some(standby::Received::MountsChanged) => {
                if !standby::mounts_settled(&chan) {
                    // Quiet again: a new standby, with copies of the mounts as they are.
                    continue;
                }
                (None, vec![])
            }
            None => (None, vec![]),
        };
        let spec = if !forwarded.is_empty() {
            forwarded
        } else {
            match crate::proto::chan::read_line(&chan, crate::proto::MAX_LINE) {
                Ok(b) if !b.is_empty() => b,
                // The host gave up on this start (or the spare) before sending a spec, or
                // went away: what it made for the start goes.
                r => {
                    if first && let Some(o) = &owns {
                        o.remove_empty();
                    }
                    return if r.is_ok() { 0 } else { 1 };
                }
            }
        };
        if warm.is_some() {
            crate::sys::set_idle_priority(false);
        }
        if !first {
            // Signals sent to the previous task's supervisor before the host took us
            // back are still queued: none of them is for this task.
            if let Ok(sfd) = &own.sfd {
                while let Ok(Some(_)) = sfd.read_signal() {}
            }
        }
        first = false;
        let start_time = own.start_time;
        let mut reported = false;
        let unclaimed_ms = match run(&spec, &chan, own, standby, &mut reported) {
            Ok(0) => return 0,
            Ok(ms) => ms,
            Err(e) => {
                if !reported {
                    let _ = proto::send_to_host(&chan, &ToHost::Failed((&e).into()));
                }
                return 1;
            }
        };
        // Another task, if the host takes us back: fresh fds, made while idle.
        own = OwnSetup::fds(start_time);
        if !reuse::claimed(&chan, unclaimed_ms) {
            return 0;
        }
    }
}

/// The host's go (see [`launch::Go`]); `None` when it closed the channel instead (the
/// start failed on its side, or it went away).
fn read_go(chan: &OwnedFd) -> Option<launch::Go> {
    match proto::read_from_host(chan) {
        Ok(Some(ToSupervisor::Go(g))) => Some(g),
        _ => None,
    }
}

/// The fds a standby inherits: the command's stdio and sync pipe, the channel, and ours
/// to close.
fn standby_fds(own: &OwnSetup, chan: &OwnedFd) -> Option<standby::ChildFds> {
    let (sfd, pipes) = (own.sfd.as_ref().ok()?, own.pipes.as_ref().ok()?);
    Some(standby::ChildFds {
        stdout: pipes[0].1.as_raw_fd(),
        stderr: pipes[1].1.as_raw_fd(),
        sync: pipes[2].1.as_raw_fd(),
        chan: chan.as_raw_fd(),
        close: vec![
            sfd.as_raw_fd(),
            pipes[0].0.as_raw_fd(),
            pipes[1].0.as_raw_fd(),
            pipes[2].0.as_raw_fd(),
        ],
        host_tree: None,
    })
}

struct Pump {
    fd: Option<OwnedFd>,
    log: RotatingLog,
}

impl Pump {
    /// Moves what is readable now into the log; false at EOF.
    fn pump(&mut self, buf: &mut Vec<u8>) -> bool {
        let Some(fd) = &self.fd else { return false };
        // Read into the spare capacity, never zeroed: only the pages that data lands in
        // are touched (a zeroed 64 KiB stack buffer cost 16 page faults per task, even for
        // a task that writes nothing).
        buf.clear();
        let room = buf.spare_capacity_mut();
        // SAFETY: read(2) into `room`, writable memory of `room.len()` bytes that we own.
        let r = unsafe { libc::read(fd.as_raw_fd(), room.as_mut_ptr().cast(), room.len()) };
        match nix::errno::Errno::result(r).map(|n| n as usize) {
            Ok(0) => {
                self.fd = None;
                false
            }
            Ok(n) => {
                // SAFETY: the kernel initialized the first n bytes of the spare capacity.
                unsafe { buf.set_len(n) };
                let _ = self.log.write(buf);
                true
            }
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => true,
            Err(_) => {
                self.fd = None;
                false
            }
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// What the supervisor does for itself while the host is still preparing the task (it
/// has not sent the spec yet), so that none of it is on the start's critical path.
struct OwnSetup {
    /// Our start time (`/proc/self/stat` field 22), for the host's handle.
    start_time: Option<u64>,
    /// Every signal stays blocked (since main) and is read from this signalfd.
    sfd: nix::Result<SignalFd>,
    /// The command's stdout and stderr pipes and the CLOEXEC sync pipe.
    pipes: std::io::Result<[(OwnedFd, OwnedFd); 3]>,
}

fn prepare_self() -> OwnSetup {
    // An ignored SIGCHLD would also make the kernel reap the command for us.
    crate::sys::reset_ignored_signals();
    // The command must not inherit the host's OOM score adjustment; it inherits ours.
    let _ = std::fs::write("/proc/self/oom_score_adj", "0");
    // Own session: the host's terminal and process group signals do not reach us.
    let _ = nix::unistd::setsid();
    // Not the host's working directory: a filesystem the host unmounts must not stay
    // busy because of us.
    let _ = nix::unistd::chdir("/");
    if std::process::id() != 1 {
        // Orphans of the task come to us (as the pid namespace's init they do anyway).
        // SAFETY: prctl on ourselves with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    crate::supervisor::privs::prime();
    reuse::note_host_names();
    OwnSetup::fds(crate::sys::self_start_time())
}

impl OwnSetup {
    /// The signalfd and pipes of one task.
    fn fds(start_time: Option<u64>) -> OwnSetup {
        OwnSetup {
            start_time,
            sfd: SignalFd::with_flags(
                &SigSet::all(),
                SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
            ),
            pipes: (|| Ok([pipe()?, pipe()?, pipe()?]))(),
        }
    }
}

/// Runs one task. Returns [`LaunchSpec::recycle`] when this supervisor may now run
/// another, else 0.
fn run(
    spec_bytes: &[u8],
    chan: &OwnedFd,
    own: OwnSetup,
    standby: Option<standby::Standby>,
    reported: &mut bool,
) -> Result<u64, Error> {
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        Error::new(Code::Spawn, format!("supervisor: {what}: {e}"))
    };
    let parsed = match proto::parse::<ToSupervisor>(spec_bytes) {
        Ok(ToSupervisor::Spec(spec)) => Ok(*spec),
        Ok(other) => Err(internal(
            "expected a launch spec, got",
            &format!("{other:?}"),
        )),
        Err(e) => Err(internal("reading the launch spec", &e)),
    };
    // A standby that takes the task (it decides while we parse).
    let standby = match (&parsed, standby) {
        (Ok(_), Some(mut sb)) => sb.takes().then_some(sb),
        (_, Some(mut sb)) => {
            sb.discard();
            None
        }
        (_, None) => None,
    };
    let mut spec = parsed?;
    // The task's cgroups, parsed once for the kills, the OOM check and the removal.
    let given: Option<TaskCgroup> = spec.cgroup.clone();

    let sfd = own.sfd.map_err(|e| internal("signalfd", &e))?;
    let is_init = std::process::id() == 1;
    let [(out_r, out_w), (err_r, err_w), (sync_r, sync_w)] =
        own.pipes.map_err(|e| internal("pipe", &e))?;

    // A standby's copy of the host tree, kept until the end of the task (see
    // `Standby::take_host_tree`): dropping it dissolves it, which waits for an RCU grace
    // period, so it goes when nothing is waiting for us.
    let mut host_tree = None;
    // A raw_exec child's prepared data: it turns a failure record into the error.
    let mut raw_child: Option<trampoline::Prepared> = None;
    let started_at;
    let (child, cgroup) = match standby {
        Some(mut sb) => {
            // It reads the host's go line itself, and builds the root meanwhile.
            started_at = launch::rfc3339_now();
            host_tree = sb.take_host_tree();
            let pid = sb.pid;
            (pid, sb.hand_over(&spec)?)
        }
        None => {
            // The cgroups the host asked us to make (it made `given` itself otherwise),
            // while it makes the task's directories.
            let made = match (&given, &spec.cgroup_request) {
                (None, Some(req)) => req.make(&spec.task_id)?,
                _ => None,
            };
            let Some(go) = read_go(chan) else {
                // The start failed on the host's side, or the host went away: what we
                // made goes, and what it made (empty: the command has not started).
                if let Some(cg) = &made {
                    let _ = cg.remove();
                }
                if let Some(cg) = &given {
                    cg.remove_empty();
                }
                return Ok(0);
            };
            go.apply(&mut spec);
            started_at = launch::rfc3339_now();
            if let Some(cg) = &made {
                spec.cgroup_procs = cg.self_join_files();
                spec.clone_into = cg.v2_dir();
            }
            let cgroup_dir = spec
                .clone_into
                .as_deref()
                .and_then(|d| std::fs::File::open(d).ok());
            let (out_fd, err_fd, sync_fd) =
                (out_w.as_raw_fd(), err_w.as_raw_fd(), sync_w.as_raw_fd());
            let cgroup_fd = cgroup_dir.as_ref().map(|f| f.as_raw_fd());
            let spawned = match &spec.isolation {
                // An exec task's child builds its root: ordinary Rust, so fork semantics.
                Some(_) => vfork::fork_into(cgroup_fd, &mut |in_cgroup| {
                    // Already in the cgroup2 dir (CLONE_INTO_CGROUP): no write to its cgroup.procs.
                    let skip = in_cgroup
                        .then(|| spec.clone_into.as_ref().map(|d| d.join("cgroup.procs")))
                        .flatten();
                    let e = crate::supervisor::launcher::exec_command(
                        &spec,
                        out_fd,
                        err_fd,
                        skip.as_deref(),
                    );
                    let msg = serde_json::to_vec(&proto::Failure::from(&e)).unwrap_or_default();
                    // SAFETY: write(2) of our own buffer to the sync pipe (the child's copy of it).
                    unsafe { libc::write(sync_fd, msg.as_ptr().cast(), msg.len()) };
                    127
                }),
                // A raw_exec task's: system calls on data prepared here, in our memory.
                None => {
                    let null = std::fs::File::open("/dev/null")
                        .map_err(|e| internal("opening /dev/null", &e))?;
                    let prepared = trampoline::Prepared::new(
                        &spec,
                        null.as_raw_fd(),
                        out_fd,
                        err_fd,
                        sync_fd,
                    )?;
                    let r = vfork::spawn(cgroup_fd, &mut |in_cgroup| prepared.run(in_cgroup));
                    raw_child = Some(prepared);
                    r
                }
            };
            let pid = match spawned {
                Ok(pid) => Pid::from_raw(pid),
                Err(e) => {
                    if let Some(cg) = &made {
                        let _ = cg.remove();
                    }
                    return Err(internal("starting the command", &e));
                }
            };
            (pid, made.or(given))
        }
    };
    // Made by us (not the host): removed by us if the start fails.
    let ours = spec.cgroup.is_none();
    if let Some(cg) = &cgroup {
        spec.cgroup = Some(cg.clone());
        spec.cgroup_procs = cg.self_join_files();
        spec.clone_into = cg.v2_dir();
    }
    drop(out_w);
    drop(err_w);
    drop(sync_w);
    // The start report, made while the command process may still be setting up (one
    // write: the host reads the line in one go).
    let host_pid = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<i32>().ok()));
    let report = proto::line(&ToHost::Started(Box::new(proto::Started {
        pid: child.as_raw(),
        start_time: own.start_time,
        started_at: started_at.clone(),
        cgroup: if ours { cgroup.clone() } else { None },
    })));
    // The child has exec'd (or failed): the sync pipe says which.
    let mut failure = vec![];
    let _ = std::fs::File::from(sync_r).read_to_end(&mut failure);
    if !failure.is_empty() {
        kill_everything(cgroup.as_ref(), Some(child), is_init);
        let _ = waitpid(child, None);
        if ours && let Some(cg) = &cgroup {
            let _ = cg.remove();
        }
        return Err(
            match (trampoline::Failure::from_bytes(&failure), &raw_child) {
                (Some(f), Some(p)) => p.error(f),
                _ => failure_of(&failure),
            },
        );
    }
    // What follows the report (the log files, launch.json) waits for nothing, but the
    // host, woken by the report, and the command, just exec'd, do: it runs in SCHED_IDLE,
    // so that either takes this CPU at once (a CPU running only SCHED_IDLE work counts as
    // idle when the scheduler places a woken task), instead of waiting for it or waking
    // an idle one. Back to normal before the loop that forwards signals and pumps logs.
    crate::sys::set_idle_priority(true);
    let _ = crate::proto::chan::send_all(chan, &report);
    *reported = true;
    // The command's mount namespace, kept open until the exit report is sent, so that
    // the command's exit does not wait for the namespace's mounts to be torn down. (A
    // command that has already exited has taken it down.)
    let mount_ns = spec.isolation.as_ref().and_then(|_| {
        crate::sys::pidfd_open(child.as_raw())
            .and_then(|p| crate::sys::pidfd_mnt_namespace(&p))
            .ok()
            .or_else(|| {
                // Before Linux 6.11: through /proc, which is the host's (our pid
                // namespace's numbers are not its).
                host_pid
                    .and_then(only_child)
                    .and_then(|c| std::fs::File::open(format!("/proc/{c}/ns/mnt")).ok())
                    .map(OwnedFd::from)
            })
    });

    // Off the start's critical path: the log files (the command's output waits in the
    // pipes meanwhile), and launch.json (for `driver_exec` of a host that recovers the
    // task), which the host wrote before the go line, made durable. A failure here ends
    // the task, reported as its exit with the reason.
    let opened = (|| -> Result<_, Error> {
        let [out_log, err_log] = RotatingLog::open_streams(
            &spec.log_dir,
            &spec.log_name,
            ["stdout", "stderr"],
            spec.log_max_files,
            spec.log_max_bytes,
        )
        .map_err(|e| internal("logs", &e))?;
        launch::commit_launch(&spec.state_dir)
            .map_err(|e| internal("recording launch.json", &e))?;
        Ok((out_log, err_log))
    })();
    let (out_log, err_log) = match opened {
        Ok(l) => l,
        Err(e) => {
            kill_everything(cgroup.as_ref(), Some(child), is_init);
            let _ = waitpid(child, None);
            let exit = ExitStatus {
                exit_code: -1,
                signal: 0,
                oom_killed: false,
                err: Some(e.message.clone()),
                started_at,
                finished_at: launch::rfc3339_now(),
            };
            finish(&spec, cgroup.as_ref(), chan, &exit);
            return Ok(0);
        }
    };

    crate::sys::set_idle_priority(false);
    let mut pumps = [
        Pump {
            fd: Some(out_r),
            log: out_log,
        },
        Pump {
            fd: Some(err_r),
            log: err_log,
        },
    ];
    let status = supervise(cgroup.as_ref(), child, is_init, &sfd, &mut pumps);
    // A command that exited 0 was not killed by the OOM killer (and the read of the
    // memory cgroup's counters is one of the slower calls of an exit).
    let clean = matches!(status, Some(WaitStatus::Exited(_, 0)));
    let oom = !clean && cgroup.as_ref().is_some_and(|c| c.oom_killed());
    let (exit_code, signal) = match status {
        Some(WaitStatus::Exited(_, c)) => (c, 0),
        Some(WaitStatus::Signaled(_, s, _)) => (128 + s as i32, s as i32),
        _ => (-1, 0),
    };
    let exit = ExitStatus {
        exit_code,
        signal,
        oom_killed: oom,
        err: status
            .is_none()
            .then(|| "the command's status was lost".to_string()),
        started_at,
        finished_at: launch::rfc3339_now(),
    };
    // Every process of the task is gone and the logs are drained.
    finish(&spec, cgroup.as_ref(), chan, &exit);
    drop(mount_ns);
    drop(host_tree);
    // Nothing of the task is left (its processes, cgroup, pipes and log files are gone):
    // we may run another.
    let reusable = spec.recycle > 0
        && match &spec.isolation {
            None => !is_init,
            Some(iso) => reuse::renew_namespaces(iso).is_ok(),
        };
    Ok(if reusable { spec.recycle } else { 0 })
}

/// The error a command child (an exec task's, or a standby) wrote on the sync pipe.
fn failure_of(bytes: &[u8]) -> Error {
    proto::parse::<proto::Failure>(bytes)
        .map(Error::from)
        .unwrap_or_else(|e| Error::internal(format!("the command's process failed and said {e}")))
}

/// Hands back the pages of our binary mapped so far. Start-up code and data (the spec
/// parser, the command's set-up, relocation tables) are most of them, the kernel maps file
/// pages 64 KiB at a time, and a supervisor may sit beside its task for months. Only
/// read-only mappings of our binary with no private (copied-on-write) page are dropped:
/// their pages refault unchanged from the page cache. They are then marked
/// `MADV_RANDOM`, which makes the loop's refaults map less around each faulting page
/// (measured, static build: 328 KiB of text back in instead of 424 KiB).
fn drop_startup_pages() {
    // All at once, after the parsing: the parser's own code is not faulted back in.
    for (a, b) in clean_mappings_of_our_binary() {
        // SAFETY: a read-only private file mapping of our binary without a single
        // private page: after MADV_DONTNEED its pages refault with the same contents.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED);
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_RANDOM);
        }
    }
}

/// The read-only mappings of our binary that hold no private (copied-on-write) page.
fn clean_mappings_of_our_binary() -> Vec<(usize, usize)> {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return vec![];
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return vec![];
    };
    let mut current: Option<(usize, usize)> = None;
    let mut ranges = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let perms = f.next().unwrap_or("");
            let ours = f.nth(3).map(std::path::Path::new) == Some(exe.as_path());
            current = (ours && !perms.contains('w')).then_some((a, b));
            continue;
        }
        if first == "Anonymous:"
            && let Some(r) = current.take()
            && f.next() == Some("0")
        {
            ranges.push(r);
        }
    }
    ranges
}

/// Tells the host how the task ended, then tidies up: cgroups removed, `exit.json`
/// written (the host waits for our exit before it removes anything).
fn finish(spec: &LaunchSpec, cgroup: Option<&TaskCgroup>, chan: &OwnedFd, exit: &ExitStatus) {
    // The tidying up in SCHED_IDLE, as after the start report: the host, woken by this
    // report, takes the CPU at once.
    crate::sys::set_idle_priority(true);
    let _ = proto::send_to_host(chan, &ToHost::Exited(exit.clone()));
    if let Some(cg) = cgroup {
        let _ = cg.remove();
    }
    if let Err(e) = launch::write_exit(&spec.state_dir, exit) {
        // No host may be there to learn it otherwise; our stderr is the host's choice.
        eprintln!(
            "execdriver-shim: recording the exit status of {}: {e}",
            spec.task_id
        );
    }
    crate::sys::set_idle_priority(false);
}

/// Kills every process of the task except the supervisor. `child`: the command's
/// process while it is not reaped; once reaped its pid (and maybe its process group's
/// number) is free and may already be another process's, so nothing is killed by it:
/// the cgroup and our descendants (a subreaper's: every process the task left) cover
/// the rest.
fn kill_everything(cgroup: Option<&TaskCgroup>, child: Option<Pid>, is_init: bool) {
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
fn only_child(host_pid: i32) -> Option<i32> {
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
fn supervise(
    cgroup: Option<&TaskCgroup>,
    child: Pid,
    is_init: bool,
    sfd: &SignalFd,
    pumps: &mut [Pump; 2],
) -> Option<WaitStatus> {
    let mut status: Option<WaitStatus> = None;
    let mut children_gone = false;
    let mut drain_deadline: Option<Instant> = None;
    // The start-up pages go back once the task has run a second: off the start's path,
    // and not at all for short tasks.
    let mut drop_pages_at = Some(Instant::now() + Duration::from_secs(1));
    let mut buf: Vec<u8> = Vec::with_capacity(65536);
    loop {
        if drop_pages_at.is_some_and(|at| Instant::now() >= at) {
            drop_startup_pages();
            drop_pages_at = None;
        }
        // Reap whatever has exited.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(ws) => {
                    if ws.pid() == Some(child) {
                        status = Some(ws);
                        kill_everything(cgroup, None, is_init);
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
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
        // SAFETY: fds is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n <= 0 {
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
                            // SAFETY: plain kill(2) of our own child.
                            unsafe { libc::kill(child.as_raw(), sig) };
                        }
                        continue;
                    }
                    None => {}
                }
                if status.is_none() {
                    // SAFETY: plain kill(2) of our own child with the received signal number.
                    unsafe { libc::kill(child.as_raw(), signo) };
                }
            }
        }
    }
}
