//! The per-task supervisor: a small process of ours, exec'd by the host library for each
//! task. It receives the launch spec on its stdout, a socket to the host ([`crate::proto::chan`]),
//! starts the command (through [`crate::supervisor::launcher`]), reports the start there, then forwards
//! signals, pumps logs, reaps, and when the command ends takes down everything left of
//! the task, reports the exit and writes `exit.json`.
//!
//! For `exec` with a private pid namespace it is the namespace's pid 1 (the command is
//! pid 2, never init); otherwise it is a child subreaper for the task's tree.

/// A line on our stderr, whatever becomes of it: that stderr is a file of the host's
/// (`supervisor.log` in the task's state dir, on a disk the task's logs may have filled)
/// or a pipe nobody reads any more, and a supervisor that died of a failed write (as
/// `eprintln!` panics) would lose the task's exit status and leave its command running.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub mod exec;
pub mod launcher;
pub mod logs;
pub mod net;
pub mod privs;
pub mod rootfs;
pub mod seccomp;
mod secrets;
mod task;
mod watch;

use crate::proto::{self, ToHost};
use launcher::{CommandFds, Launcher};
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsRawFd, OwnedFd};

/// The `execdriver-shim` executable (see [`crate::shim_main`]).
pub fn shim_main(args: &[std::ffi::OsString]) -> i32 {
    // Every child it makes relies on this: a process that forks may run any code in the
    // child only when it has a single thread.
    if !crate::sys::single_threaded() {
        note!("execdriver-shim: started with more than one thread");
        return 2;
    }
    seccomp::test_hook();
    match args {
        [_, flag, req] if flag == "--exec" => exec::main(req.as_ref()),
        _ => launcher::entry(args),
    }
}

/// Entry point of the supervisor binary. Its stdout is the channel socket to the host
/// ([`crate::proto::chan`]): the launch spec arrives on it, the reports go back on it.
/// `how`: what its [`Launcher`] knows from its start ([`launcher::entry`]).
pub fn main(how: launcher::Start) -> i32 {
    // Everything blocked first: signals are read from a signalfd later, and a SIGPIPE must
    // never end us before that.
    let _ = SigSet::all().thread_block();
    // Nothing of the host but fds 0-2 may stay open.
    crate::sys::process::close_fds_above_2();
    // The channel moves off fd 1 (which becomes /dev/null), so that nothing the command
    // inherits refers to it.
    let Ok(chan) = crate::sys::process::take_stdout() else {
        return 1;
    };
    let mut chan = proto::chan::Channel::new(chan);
    let mut launcher = Launcher::new(how);
    let mut own = prepare_self();
    let mut first = true;
    loop {
        let Some(fds) = own.command_fds() else {
            return 1;
        };
        let Some(incoming) = launcher.next_task(&mut chan, &fds) else {
            return 0;
        };
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
        let spec = match task::run(incoming, &mut chan, own, &mut launcher, &mut reported) {
            Ok(task::Outcome::Ran(spec)) => spec,
            Ok(task::Outcome::Abandoned) => return 0,
            Err(e) => {
                if !reported {
                    let _ = proto::send_to_host(&chan.fd, &ToHost::Failed((&e).into()));
                }
                return 1;
            }
        };
        // Nothing of the task is left (its processes, cgroup, pipes and log files are
        // gone): another, if the launcher may: fresh fds, made while idle.
        own = OwnSetup::fds(start_time);
        // Our stderr was that task's supervisor.log: nothing more of ours goes there.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null")
            && let Ok(fd) = crate::sys::process::dup_onto(std::os::fd::AsFd::as_fd(&null), 2)
        {
            let _ = std::os::fd::IntoRawFd::into_raw_fd(fd);
        }
        if !launcher.another(&spec, &mut chan, std::process::id() == 1) {
            return 0;
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// What the supervisor does for itself while the host is still preparing the task (it
/// has not sent the spec yet), so that none of it is on the start's critical path.
pub(crate) struct OwnSetup {
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
        crate::sys::process::set_child_subreaper();
    }
    crate::supervisor::privs::prime();
    OwnSetup::fds(crate::sys::self_start_time())
}

impl OwnSetup {
    /// The command process's ends of the pipes, and the fds of ours it must close.
    fn command_fds(&self) -> Option<CommandFds> {
        let (sfd, pipes) = (self.sfd.as_ref().ok()?, self.pipes.as_ref().ok()?);
        Some(CommandFds {
            stdout: pipes[0].1.as_raw_fd(),
            stderr: pipes[1].1.as_raw_fd(),
            sync: pipes[2].1.as_raw_fd(),
            close: vec![
                sfd.as_raw_fd(),
                pipes[0].0.as_raw_fd(),
                pipes[1].0.as_raw_fd(),
                pipes[2].0.as_raw_fd(),
            ],
        })
    }

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
