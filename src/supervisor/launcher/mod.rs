//! How a supervisor gets its task and starts its command process: the one place on the
//! supervisor's side that knows it may have been prestarted. A prestarted exec
//! supervisor prepares the command process ahead (a standby, `standby`) while it waits;
//! one made by the fork server ([`fork_server`]) is a clone of it; a supervisor may run
//! another task after its own (`reuse`). The supervisor's loop sees only [`Launcher`]:
//! the next task, its start ([`Launched`]), and whether another may follow.
//!
//! The command process of an exec task is made with fork semantics and runs
//! [`command`]; a raw_exec task's shares our memory and runs only `trampoline`'s
//! system calls ([`crate::sys::clone`]).

pub mod command;
pub mod fork_server;
mod reuse;
mod standby;
mod trampoline;

use crate::cgroup::{CgroupGuard, TaskCgroup};
use crate::error::{Code, Error, Result};
use crate::proto::chan::{Channel, Line};
use crate::proto::spec::{Go, LaunchSpec, Owned, Staging};
use crate::proto::{self, ToSupervisor};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The fds of a task's command process, made by the supervisor while it waits: its
/// stdout and stderr, the sync pipe it reports a failed set-up on (close-on-exec: EOF
/// when it has exec'd), and the supervisor's own fds it must not keep.
pub struct CommandFds {
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub sync: RawFd,
    pub close: Vec<RawFd>,
}

/// What starts this supervisor's tasks.
pub struct Launcher {
    /// What to prepare ahead of a task (an exec supervisor started ahead).
    staging: Option<Staging>,
    /// The cgroups the host makes for the first task (see [`Owned`]).
    owns: Option<Owned>,
    first: bool,
}

/// What a supervisor is told at its start, for its [`Launcher`]: its arguments
/// (`--staged <json>`, `--owns <json>`), or the fork server's request.
#[derive(Default)]
pub struct Start {
    staging: Option<Staging>,
    owns: Option<Owned>,
}

impl Start {
    /// A supervisor started ahead that prepares what `json` (a [`Staging`]) says; an
    /// ordinary one when it is empty or not one.
    pub fn staged(json: &[u8]) -> Start {
        Start {
            staging: serde_json::from_slice(json).ok(),
            owns: None,
        }
    }

    /// A supervisor launched for one start, owning the cgroups `json` (an [`Owned`])
    /// names.
    fn owning(json: &[u8]) -> Start {
        Start {
            staging: None,
            owns: serde_json::from_slice(json).ok(),
        }
    }
}

/// The supervisor's side of `execdriver-shim` (all but `driver_exec`'s `--exec`): the
/// fork server, or a supervisor as its arguments say.
pub fn entry(args: &[std::ffi::OsString]) -> i32 {
    match args {
        // The mode in the environment, not the arguments: the supervisors cloned from the
        // fork server keep its command line, which is then a supervisor's.
        [_] if std::env::var_os("EXECDRIVER_SHIM_MODE").is_some_and(|m| m == "fork-server") => {
            fork_server::main()
        }
        [_] => super::main(Start::default()),
        [_, flag, json] if flag == "--staged" => super::main(Start::staged(json.as_encoded_bytes())),
        [_, flag, json] if flag == "--owns" => super::main(Start::owning(json.as_encoded_bytes())),
        _ => {
            note!("usage: execdriver-shim (started by libexecdriver)");
            2
        }
    }
}

/// A task the host sent, not started yet.
pub struct Incoming {
    /// The spec's line ([`ToSupervisor::Spec`]).
    pub line: Vec<u8>,
    /// The command process prepared for it, if any.
    standby: Option<standby::Standby>,
}

/// A started command process.
pub struct Launched {
    pub pid: Pid,
    /// The task's cgroups (made by us, or by the host: see `ours`).
    pub cgroup: Option<TaskCgroup>,
    /// We made the cgroups (the host did not): we remove them should the start fail.
    pub ours: bool,
    pub started_at: String,
    /// A raw_exec child's prepared data: it turns a failure record into the error.
    raw: Option<trampoline::Prepared>,
    /// A standby's copy of the host's mount tree, kept until the task has ended: its
    /// dissolution waits for an RCU grace period, so it goes when nothing waits for us.
    _host_tree: Option<OwnedFd>,
    /// The host's wait pipe ([`Go::wait_pipe`]): closed once the exit report is sent.
    pub wait_pipe: Option<OwnedFd>,
}

impl Launched {
    /// The error the command process reported on the sync pipe (`bytes`: not empty).
    pub fn failure(&self, bytes: &[u8]) -> Error {
        match (
            crate::sys::trampoline::Failure::from_bytes(bytes),
            &self.raw,
        ) {
            (Some(f), Some(p)) => p.error(f),
            _ => proto::parse::<proto::Failure>(bytes)
                .map(Error::from)
                .unwrap_or_else(|e| {
                    Error::internal(format!("the command's process failed and said {e}"))
                }),
        }
    }
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::new(Code::Spawn, format!("supervisor: {what}: {e}"))
}

impl Launcher {
    pub fn new(how: Start) -> Launcher {
        reuse::note_host_names();
        Launcher {
            staging: how.staging,
            owns: how.owns,
            first: true,
        }
    }

    /// Waits for the next task on `chan`, preparing its command process meanwhile where
    /// this supervisor was started ahead. `None`: the host closed the channel (it gave up
    /// on the start, or went away): what it made for the first task is removed.
    pub fn next_task(&mut self, chan: &mut Channel, fds: &CommandFds) -> Option<Incoming> {
        loop {
            if self.staging.is_some() {
                crate::sys::set_idle_priority(true);
            }
            let sb = self.staging.as_ref().and_then(|w| {
                standby::Standby::prepare(
                    w,
                    standby::ChildFds {
                        stdout: fds.stdout,
                        stderr: fds.stderr,
                        sync: fds.sync,
                        close: fds
                            .close
                            .iter()
                            .copied()
                            .chain([chan.fd.as_raw_fd()])
                            .collect(),
                        host_tree: None,
                    },
                )
            });
            // The spec from the channel; with a standby, passed on to it at once.
            let (standby, line) = match sb.map(|sb| sb.receive_spec(chan)) {
                Some(standby::Received::Spec(sb, line)) => (sb, line),
                Some(standby::Received::MountsChanged) => {
                    if !standby::mounts_settled(chan) {
                        // Quiet again: a new standby, with copies of the mounts as they are.
                        continue;
                    }
                    (None, vec![])
                }
                None => (None, vec![]),
            };
            let line = if line.is_empty() {
                match chan.line(true, proto::MAX_LINE) {
                    Ok(Line::Complete(b)) => b,
                    _ => {
                        if self.first
                            && let Some(o) = &self.owns
                        {
                            o.remove_empty();
                        }
                        return None;
                    }
                }
            } else {
                line
            };
            if self.staging.is_some() {
                crate::sys::set_idle_priority(false);
            }
            self.first = false;
            return Some(Incoming { line, standby });
        }
    }

    /// Starts the command process of `spec` (parsed from `incoming`'s line, or why not).
    /// `Ok(None)`: the host closed the channel before its go (it gave up on the start):
    /// what was made for the task is removed.
    pub fn launch(
        &mut self,
        incoming: Incoming,
        spec: Result<&mut LaunchSpec>,
        chan: &mut Channel,
        fds: &CommandFds,
    ) -> Result<Option<Launched>> {
        // A standby takes the task or not (it decided while we parsed the spec).
        let standby = match (&spec, incoming.standby) {
            (Ok(_), Some(mut sb)) => sb.takes().then_some(sb),
            (_, Some(mut sb)) => {
                sb.discard();
                None
            }
            (_, None) => None,
        };
        let spec = spec?;
        match standby {
            Some(mut sb) => {
                // Its cgroups become the task's while the host makes the directories.
                let host_tree = sb.take_host_tree();
                let pid = sb.pid;
                let cgroup = sb.adopt_cgroups(spec)?;
                let Some((go, wait_pipe)) = read_go(chan) else {
                    sb.discard();
                    abandon(spec, cgroup);
                    return Ok(None);
                };
                go.apply(spec);
                let started_at = crate::proto::spec::rfc3339_now();
                sb.go(&go);
                Ok(Some(Launched {
                    pid,
                    ours: spec.cgroup.is_none(),
                    cgroup: cgroup.disarm(),
                    started_at,
                    raw: None,
                    _host_tree: host_tree,
                    wait_pipe,
                }))
            }
            None => fresh(spec, chan, fds),
        }
    }

    /// After a task (all of it gone): whether this supervisor runs another. Only where
    /// the host asked for it ([`LaunchSpec::again_ms`]), after new namespaces for an exec
    /// task's next one, and once the host has taken us back.
    pub fn another(&mut self, spec: &LaunchSpec, chan: &mut Channel, is_init: bool) -> bool {
        let renewed = spec.again_ms > 0
            && match &spec.isolation {
                None => !is_init,
                Some(iso) => reuse::renew_namespaces(iso).is_ok(),
            };
        renewed && reuse::claimed(chan, spec.again_ms)
    }
}

/// The host's go (see [`Go`]) and its wait pipe, if it sent one; `None` when it closed
/// the channel instead.
fn read_go(chan: &mut Channel) -> Option<(Go, Option<OwnedFd>)> {
    match proto::read_from_host(chan) {
        Ok(Some(ToSupervisor::Go(g))) => {
            let pipe = if g.wait_pipe { chan.take_fd() } else { None };
            // Nothing else comes with a go.
            while chan.take_fd().is_some() {}
            Some((g, pipe))
        }
        _ => None,
    }
}

/// The start failed on the host's side, or the host went away before its go: what we
/// `made` goes, and the empty cgroups the host made (`spec.cgroup`: the command has not
/// started); and, when the host is gone, what it recorded of the task
/// ([`crate::proto::spec::undo_record`]: a host that lives undoes that itself).
fn abandon(spec: &LaunchSpec, made: CgroupGuard) {
    drop(made);
    if let Some(cg) = &spec.cgroup {
        cg.remove_empty();
    }
    crate::proto::spec::undo_record(spec);
}

/// A command process made for the task now: its cgroups (when the host asked us to make
/// them, while it made the directories), the go, then the process.
fn fresh(spec: &mut LaunchSpec, chan: &mut Channel, fds: &CommandFds) -> Result<Option<Launched>> {
    let given = spec.cgroup.clone();
    // Removed on every way out but the command's start.
    let made = CgroupGuard::new(match (&given, &spec.cgroup_request) {
        (None, Some(req)) => req.make(&spec.task_id)?,
        _ => None,
    });
    let Some((go, wait_pipe)) = read_go(chan) else {
        abandon(spec, made);
        return Ok(None);
    };
    go.apply(spec);
    let started_at = crate::proto::spec::rfc3339_now();
    if let Some(cg) = made.get() {
        spec.cgroup_procs = cg.self_join_files();
        spec.clone_into = cg.v2_dir();
    }
    let cgroup_dir = spec
        .clone_into
        .as_deref()
        .and_then(|d| std::fs::File::open(d).ok());
    let cgroup_fd = cgroup_dir.as_ref().map(|f| f.as_raw_fd());
    let mut raw = None;
    let spawned = match &spec.isolation {
        // An exec task's child builds its root: ordinary Rust, so fork semantics.
        Some(_) => crate::sys::clone::fork_into(cgroup_fd, &mut |in_cgroup| {
            // Already in the cgroup2 dir (CLONE_INTO_CGROUP): no write to its cgroup.procs.
            let skip = in_cgroup
                .then(|| spec.clone_into.as_ref().map(|d| d.join("cgroup.procs")))
                .flatten();
            let e = command::exec_command(spec, fds.stdout, fds.stderr, skip.as_deref());
            let msg = serde_json::to_vec(&proto::Failure::from(&e)).unwrap_or_default();
            crate::sys::process::write_raw(fds.sync, &msg);
            127
        }),
        // A raw_exec task's: system calls on data prepared here, in our memory.
        None => {
            let null =
                std::fs::File::open("/dev/null").map_err(|e| internal("opening /dev/null", &e))?;
            let prepared = trampoline::Prepared::new(
                spec,
                null.as_raw_fd(),
                fds.stdout,
                fds.stderr,
                fds.sync,
            )?;
            let r = prepared.spawn(cgroup_fd);
            raw = Some(prepared);
            r
        }
    };
    let pid = Pid::from_raw(spawned.map_err(|e| internal("starting the command", &e))?);
    let made = made.disarm();
    Ok(Some(Launched {
        pid,
        ours: made.is_some(),
        cgroup: made.or(given),
        started_at,
        raw,
        _host_tree: None,
        wait_pipe,
    }))
}
