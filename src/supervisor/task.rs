//! One task of the supervisor, from its spec to its exit: its command started (through
//! the [`Launcher`]), the start reported, its logs opened and its launch record made
//! durable, then watched ([`super::watch`]) until it has ended, and the exit reported and
//! recorded.

use super::OwnSetup;
use super::launcher::{CommandFds, Incoming, Launched, Launcher};
use super::watch::{self, Pump, kill_everything};
use crate::cgroup::TaskCgroup;
use crate::error::{Code, Error};
use crate::proto::chan::Channel;
use crate::proto::spec::{self as launch, ExitStatus, LaunchSpec};
use crate::proto::{self, ToHost, ToSupervisor};
use crate::supervisor::logs::RotatingLog;
use crate::sys::process::Ended;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::waitpid;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

/// How a task ended for its supervisor.
pub enum Outcome {
    /// It ran and ended, and its exit was reported: another may follow.
    Ran(Box<LaunchSpec>),
    /// The host gave up on it before its go: nothing ran.
    Abandoned,
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::new(Code::Spawn, format!("supervisor: {what}: {e}"))
}

/// The spec of an incoming task.
fn parse(line: &[u8]) -> Result<LaunchSpec, Error> {
    match proto::parse::<ToSupervisor>(line) {
        Ok(ToSupervisor::Spec(spec)) => Ok(*spec),
        Ok(other) => Err(internal(
            "expected a launch spec, got",
            &format!("{other:?}"),
        )),
        Err(e) => Err(internal("reading the launch spec", &e)),
    }
}

/// Runs the task `incoming`. An error before its start report is reported by the caller
/// (`reported` is set once the report went out).
pub fn run(
    incoming: Incoming,
    chan: &mut Channel,
    own: OwnSetup,
    launcher: &mut Launcher,
    reported: &mut bool,
) -> Result<Outcome, Error> {
    let mut parsed = parse(&incoming.line);
    let sfd = own.sfd.map_err(|e| internal("signalfd", &e))?;
    let [(out_r, out_w), (err_r, err_w), (sync_r, sync_w)] =
        own.pipes.map_err(|e| internal("pipe", &e))?;
    let fds = CommandFds {
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        sync: sync_w.as_raw_fd(),
        close: vec![],
    };
    let spec = parsed.as_mut().map_err(|e| e.clone());
    let Some(mut launched) = launcher.launch(incoming, spec, chan, &fds)? else {
        return Ok(Outcome::Abandoned);
    };
    let mut spec = parsed?;
    if let Some(cg) = &launched.cgroup {
        spec.cgroup = Some(cg.clone());
        spec.cgroup_procs = cg.self_join_files();
        spec.clone_into = cg.v2_dir();
    }
    drop((out_w, err_w, sync_w));
    // The task's state is ours from the go until the task has ended, taken over from the
    // host before it lets go of it (once it has the start report): see `launch::hold`.
    let state_lock = launch::hold(&spec.state_dir).ok();
    let is_init = std::process::id() == 1;
    if let Err(e) = started(&launched, sync_r, own.start_time, &chan.fd, is_init) {
        log_to_state_dir(&spec);
        note(format_args!("task {} did not start: {}", spec.task_id, e.message));
        return Err(e);
    }
    *reported = true;
    // Off the start's path: from here our stderr is the task's supervisor.log.
    log_to_state_dir(&spec);
    note(format_args!(
        "task {} started: {} (command pid {})",
        spec.task_id,
        spec.argv.first().map_or("", String::as_str),
        launched.pid
    ));
    // The command's mount namespace, kept open until the exit report is sent, so that
    // the command's exit does not wait for the namespace's mounts to be torn down. (A
    // command that has already exited has taken it down.)
    let mount_ns = spec
        .isolation
        .as_ref()
        .and_then(|_| mount_namespace(&launched));
    let ran = to_the_end(&spec, &mut launched, [out_r, err_r], &sfd, &chan.fd, is_init);
    drop(mount_ns);
    drop(launched);
    drop(state_lock);
    Ok(match ran {
        true => Outcome::Ran(Box::new(spec)),
        false => Outcome::Abandoned,
    })
}

/// From the start report on: the logs and the launch record ([`record`]), the task
/// watched until every process of it is gone and its logs are drained, then its exit
/// reported and recorded ([`finish`]). False when it could not be recorded (it was killed
/// then, and its exit says why).
fn to_the_end(
    spec: &LaunchSpec,
    launched: &mut Launched,
    [out_r, err_r]: [OwnedFd; 2],
    sfd: &SignalFd,
    chan: &OwnedFd,
    is_init: bool,
) -> bool {
    let wait_pipe = launched.wait_pipe.take();
    let cgroup = launched.cgroup.as_ref();
    let child = launched.pid;
    let (out_log, err_log) = match record(spec) {
        Ok(l) => l,
        Err(e) => {
            kill_everything(cgroup, Some(child), is_init);
            let _ = waitpid(child, None);
            let exit = ExitStatus {
                exit_code: -1,
                signal: 0,
                oom_killed: false,
                err: Some(e.message.clone()),
                started_at: launched.started_at.clone(),
                finished_at: launch::rfc3339_now(),
            };
            finish(spec, cgroup, chan, &exit, wait_pipe);
            return false;
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
    let status = watch::supervise(cgroup, child, is_init, sfd, &mut pumps);
    let exit = exit_of(status, cgroup, &launched.started_at);
    note(format_args!(
        "task {} ended: exit code {}, signal {}{}{}",
        spec.task_id,
        exit.exit_code,
        exit.signal,
        if exit.oom_killed { ", OOM killed" } else { "" },
        exit.err.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
    ));
    // Every process of the task is gone and the logs are drained.
    finish(spec, cgroup, chan, &exit, wait_pipe);
    true
}

/// Waits for the command process to exec (the sync pipe's EOF) or fail, and reports the
/// start. A failure takes down what was started and is returned (the caller reports it).
fn started(
    launched: &Launched,
    sync_r: OwnedFd,
    start_time: Option<u64>,
    chan: &OwnedFd,
    is_init: bool,
) -> Result<(), Error> {
    // The report, made while the command process may still be setting up (one write: the
    // host reads the line in one go).
    let report = proto::line(&ToHost::Started(Box::new(proto::Started {
        pid: launched.pid.as_raw(),
        start_time,
        started_at: launched.started_at.clone(),
        cgroup: if launched.ours {
            launched.cgroup.clone()
        } else {
            None
        },
    })));
    let mut failure = vec![];
    let _ = std::fs::File::from(sync_r).read_to_end(&mut failure);
    if !failure.is_empty() {
        kill_everything(launched.cgroup.as_ref(), Some(launched.pid), is_init);
        let _ = waitpid(launched.pid, None);
        if launched.ours
            && let Some(cg) = &launched.cgroup
        {
            let _ = cg.remove();
        }
        return Err(launched.failure(&failure));
    }
    // What follows the report (the log files, launch.json) waits for nothing, but the
    // host, woken by the report, and the command, just exec'd, do: it runs in SCHED_IDLE,
    // so that either takes this CPU at once (a CPU running only SCHED_IDLE work counts as
    // idle when the scheduler places a woken task), instead of waiting for it or waking
    // an idle one. Back to normal before the loop that forwards signals and pumps logs.
    crate::sys::set_idle_priority(true);
    let _ = crate::proto::chan::send_all(chan, &report);
    Ok(())
}

/// The mount namespace of the command process.
fn mount_namespace(launched: &Launched) -> Option<OwnedFd> {
    crate::sys::pidfd_open(launched.pid.as_raw())
        .and_then(|p| crate::sys::pidfd_mnt_namespace(&p))
        .ok()
        .or_else(|| {
            // Before Linux 6.11: through /proc, which is the host's (our pid namespace's
            // numbers are not its).
            std::fs::read_link("/proc/self")
                .ok()
                .and_then(|p| p.to_str().and_then(|s| s.parse::<i32>().ok()))
                .and_then(watch::only_child)
                .and_then(|c| std::fs::File::open(format!("/proc/{c}/ns/mnt")).ok())
                .map(OwnedFd::from)
        })
}

/// Off the start's critical path: the log files (the command's output waits in the pipes
/// meanwhile), and launch.json (for `driver_exec` of a host that recovers the task), which
/// the host wrote before the go, made durable. A failure here ends the task, reported as
/// its exit with the reason.
fn record(spec: &LaunchSpec) -> Result<(RotatingLog, RotatingLog), Error> {
    let [out_log, err_log] = RotatingLog::open_streams(
        &spec.log_dir,
        &spec.log_name,
        ["stdout", "stderr"],
        spec.log_max_files,
        spec.log_max_bytes,
    )
    .map_err(|e| internal("logs", &e))?;
    launch::commit_launch(&spec.state_dir).map_err(|e| internal("recording launch.json", &e))?;
    Ok((out_log, err_log))
}

/// The exit status of a command that ended with `status`.
fn exit_of(
    status: Option<Ended>,
    cgroup: Option<&TaskCgroup>,
    started_at: &str,
) -> ExitStatus {
    // A command that exited 0 was not killed by the OOM killer (and the read of the
    // memory cgroup's counters is one of the slower calls of an exit).
    let clean = status == Some(Ended::Exited(0));
    let oom = !clean && cgroup.is_some_and(|c| c.oom_killed());
    let (exit_code, signal) = status.map_or((-1, 0), Ended::code_and_signal);
    ExitStatus {
        exit_code,
        signal,
        oom_killed: oom,
        err: status
            .is_none()
            .then(|| "the command's status was lost".to_string()),
        started_at: started_at.to_string(),
        finished_at: launch::rfc3339_now(),
    }
}

/// Makes `<state_dir>/supervisor.log` our stderr (appended to: a reused supervisor moves
/// on to its next task's). Best effort: without it, stderr stays where it was.
fn log_to_state_dir(spec: &LaunchSpec) {
    use std::os::fd::{AsFd, IntoRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(spec.state_dir.join(launch::SUPERVISOR_LOG));
    if let Ok(f) = log
        && let Ok(fd) = crate::sys::process::dup_onto(f.as_fd(), 2)
    {
        // Fd 2 is stderr for good: not closed when this goes.
        let _ = fd.into_raw_fd();
    }
}

/// A line of our log: time, who, what (never failing: see `note!`).
fn note(what: std::fmt::Arguments<'_>) {
    note!(
        "{} execdriver-shim[{}]: {what}",
        launch::rfc3339_now(),
        std::process::id()
    );
}

/// Tells the host how the task ended, then tidies up: cgroups removed, `exit.json`
/// written (the host waits for our exit before it removes anything).
/// `wait_pipe` (the host's wait fd's other end) is closed right after the report: its
/// EOF tells a host that polls the wait fd that the report is there.
fn finish(
    spec: &LaunchSpec,
    cgroup: Option<&TaskCgroup>,
    chan: &OwnedFd,
    exit: &ExitStatus,
    wait_pipe: Option<OwnedFd>,
) {
    // The tidying up in SCHED_IDLE, as after the start report: the host, woken by this
    // report, takes the CPU at once.
    crate::sys::set_idle_priority(true);
    let _ = proto::send_to_host(chan, &ToHost::Exited(exit.clone()));
    drop(wait_pipe);
    if let Some(cg) = cgroup {
        let _ = cg.remove();
    }
    if let Err(e) = launch::write_exit(&spec.state_dir, exit) {
        // No host may be there to learn it otherwise; our stderr is the host's choice.
        note(format_args!(
            "recording the exit status of {}: {e}",
            spec.task_id
        ));
    }
    crate::sys::set_idle_priority(false);
}
