//! What an exec task's command process does before it execs: join its cgroups, its
//! network, build the task's root (`rootfs`), drop to the task user with its capabilities
//! (`privs`), install the seccomp filter. It runs in a process forked from the
//! (single-threaded) supervisor, never in a child of the host, so it may allocate: either
//! just forked for the task, or prepared ahead as a standby (`standby`).

use crate::supervisor::{net, privs, rootfs, seccomp};

use crate::error::{Code, Error, Result};
use crate::proto::spec::LaunchSpec;
use std::ffi::CString;
use std::os::fd::RawFd;

fn io_err(code: Code, step: &str, e: impl std::fmt::Display) -> Error {
    Error::new(code, format!("{step}: {e}"))
}

/// How the command's process came to be.
enum Setup<'a> {
    /// Just forked: joins its cgroups (but `joined`, a `cgroup.procs` it was cloned into)
    /// and builds the root.
    Fresh { joined: Option<&'a std::path::Path> },
    /// A spare's standby (`crate::supervisor`): in its cgroups, session and mount
    /// namespace already, with its mounts `staged` and its bounding set limited to
    /// `bounding`; execs once `go` gives a byte.
    Standby {
        staged: rootfs::Staged,
        go: std::fs::File,
        bounding: u64,
        /// The network namespace of `network_isolation` mode `group`, opened and checked
        /// when the standby took the task.
        netns: Option<std::fs::File>,
    },
}

/// Sets up the child and execs the command. Returns only on failure.
/// `joined`: a `cgroup.procs` file the process is already in (cloned into its cgroup).
pub fn exec_command(
    spec: &LaunchSpec,
    stdout: RawFd,
    stderr: RawFd,
    joined: Option<&std::path::Path>,
) -> Error {
    match prepare_and_exec(spec, stdout, stderr, Setup::Fresh { joined }) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// [`exec_command`] for a spare's standby process: attaches the `staged` mounts, drops
/// privileges, then waits for a byte on `go` (the supervisor has set the task's cgroups
/// up) before it execs. Returns only on failure.
pub fn exec_staged(
    spec: &LaunchSpec,
    stdout: RawFd,
    stderr: RawFd,
    staged: rootfs::Staged,
    go: std::fs::File,
    bounding: u64,
    netns: Option<std::fs::File>,
) -> Error {
    let setup = Setup::Standby {
        staged,
        go,
        bounding,
        netns,
    };
    match prepare_and_exec(spec, stdout, stderr, setup) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// The task's network: a group's namespace joined (by path, or as a standby opened it),
/// or the loopback of the namespace of its own brought up.
fn join_network(iso: &crate::proto::spec::Isolation, setup: &mut Setup<'_>) -> Result<()> {
    use std::os::fd::AsFd;
    if let Some(path) = &iso.netns {
        let f = match setup {
            Setup::Standby { netns, .. } => netns
                .take()
                .ok_or_else(|| std::io::Error::other("the standby did not open it")),
            Setup::Fresh { .. } => net::open_netns(path),
        }
        .map_err(|e| {
            Error::field(
                Code::Isolation,
                "network_isolation.path",
                format!("opening the network namespace {}: {e}", path.display()),
            )
        })?;
        net::join(f.as_fd()).map_err(|e| {
            Error::field(
                Code::Isolation,
                "network_isolation.path",
                format!("joining the network namespace {}: {e}", path.display()),
            )
        })?;
    }
    if iso.new_net {
        net::loopback_up()
            .map_err(|e| io_err(Code::Isolation, "bringing up the task's loopback", e))?;
    }
    Ok(())
}

fn prepare_and_exec(
    spec: &LaunchSpec,
    stdout: RawFd,
    stderr: RawFd,
    setup: Setup<'_>,
) -> Result<std::convert::Infallible> {
    if let Setup::Fresh { joined } = setup {
        join_cgroups(spec, joined)?;
        nix::unistd::setsid().map_err(|e| io_err(Code::Spawn, "setsid", e))?;
    }
    let (argv, envp, cwd) = exec_strings(spec)?;

    let bounding = match &setup {
        Setup::Standby { bounding, .. } => *bounding,
        Setup::Fresh { .. } => u64::MAX,
    };
    let mut setup = setup;
    if let Some(iso) = &spec.isolation {
        join_network(iso, &mut setup)?;
    }
    let go = enter_root(spec, setup)?;
    if let Some(iso) = &spec.isolation {
        privs::drop_to(iso, bounding)?;
    }
    privs::redirect_stdio(stdout, stderr)
        .map_err(|e| io_err(Code::Spawn, "setting up stdio", e))?;
    privs::reset_signals();
    nix::unistd::chdir(cwd.as_c_str()).map_err(|e| {
        Error::field(
            Code::Spawn,
            "config.work_dir",
            format!("cannot change to work_dir {}: {e}", spec.cwd),
        )
    })?;
    if spec.isolation.as_ref().is_some_and(|i| i.seccomp) {
        // Last of the set-up: nothing of ours runs under the filter but the wait for the
        // go byte (a read) and the exec. Before that wait, so that a standby installs it
        // (~0.15 ms, the kernel checks and compiles it) while the supervisor readies the
        // cgroups.
        let prog = seccomp::default_filter().map_err(|e| io_err(Code::Isolation, "seccomp", e))?;
        seccomp::install(prog).map_err(|e| io_err(Code::Isolation, "installing seccomp", e))?;
    }
    if let Some(go) = go {
        wait_for_go(go)?;
    }
    Err(exec(spec, &argv, &envp))
}

/// Joins the task's cgroups, but `joined` (a `cgroup.procs` the process was cloned into).
fn join_cgroups(spec: &LaunchSpec, joined: Option<&std::path::Path>) -> Result<()> {
    for f in spec
        .cgroup_procs
        .iter()
        .filter(|f| Some(f.as_path()) != joined)
    {
        std::fs::write(f, "0").map_err(|e| {
            io_err(
                Code::Isolation,
                &format!("joining cgroup {}", f.display()),
                e,
            )
        })?;
    }
    Ok(())
}

/// The command's argv, environment and work dir as C strings (a NUL byte is refused on
/// its field).
fn exec_strings(spec: &LaunchSpec) -> Result<(Vec<CString>, Vec<CString>, CString)> {
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| {
            CString::new(a.as_str()).map_err(|_| {
                Error::field(
                    Code::InvalidConfig,
                    "config.args",
                    "an argument contains a NUL byte",
                )
            })
        })
        .collect::<Result<_>>()?;
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| {
            CString::new(format!("{k}={v}")).map_err(|_| {
                Error::field(
                    Code::InvalidConfig,
                    format!("env.{k}"),
                    "a value contains a NUL byte",
                )
            })
        })
        .collect::<Result<_>>()?;
    let cwd = CString::new(spec.cwd.as_str()).map_err(|_| {
        Error::field(
            Code::InvalidConfig,
            "config.work_dir",
            "contains a NUL byte",
        )
    })?;
    Ok((argv, envp, cwd))
}

/// Builds the task's root (an exec task), attaching a standby's staged mounts. Returns
/// a standby's go pipe.
fn enter_root(spec: &LaunchSpec, setup: Setup<'_>) -> Result<Option<std::fs::File>> {
    Ok(match (setup, &spec.isolation) {
        (Setup::Fresh { .. }, Some(iso)) => {
            rootfs::enter(iso)?;
            None
        }
        (Setup::Standby { staged, go, .. }, Some(iso)) => {
            rootfs::enter_staged(iso, staged)?;
            Some(go)
        }
        (Setup::Standby { go, .. }, None) => Some(go),
        (Setup::Fresh { .. }, None) => None,
    })
}

/// Waits for the supervisor's go byte; EOF means it gave up on the start.
fn wait_for_go(mut go: std::fs::File) -> Result<()> {
    let mut b = [0u8; 1];
    if !matches!(std::io::Read::read(&mut go, &mut b), Ok(1)) {
        return Err(io_err(
            Code::Spawn,
            "waiting for the supervisor",
            "it gave up on the start",
        ));
    }
    Ok(())
}

/// Execs the command; returns only its failure.
fn exec(spec: &LaunchSpec, argv: &[CString], envp: &[CString]) -> Error {
    let err = nix::unistd::execve(&argv[0], argv, envp).unwrap_err();
    let code = match err {
        nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => Code::CommandNotFound,
        _ => Code::Spawn,
    };
    Error::field(
        code,
        "config.command",
        format!("cannot execute {}: {err}", spec.argv[0]),
    )
}
