//! What the supervisor's command child does between fork and exec: join cgroups, build
//! the task's root (`rootfs`), drop to the task user with its capabilities (`privs`).
//! This runs in our own freshly exec'd, single-threaded supervisor, never in a child of
//! the host, so it may allocate.

pub mod privs;
pub mod rootfs;

use crate::error::{Code, Error, Result};
use crate::launch::LaunchSpec;
use std::ffi::CString;
use std::os::fd::RawFd;

fn io_err(code: Code, step: &str, e: impl std::fmt::Display) -> Error {
    Error::new(code, format!("{step}: {e}"))
}

/// Sets up the child and execs the command. Returns only on failure.
/// `joined`: a `cgroup.procs` file the process is already in (cloned into its cgroup).
pub fn exec_command(
    spec: &LaunchSpec,
    stdout: RawFd,
    stderr: RawFd,
    joined: Option<&std::path::Path>,
) -> Error {
    match prepare_and_exec(spec, stdout, stderr, joined) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn prepare_and_exec(
    spec: &LaunchSpec,
    stdout: RawFd,
    stderr: RawFd,
    joined: Option<&std::path::Path>,
) -> Result<std::convert::Infallible> {
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
    nix::unistd::setsid().map_err(|e| io_err(Code::Spawn, "setsid", e))?;

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

    if let Some(iso) = &spec.isolation {
        rootfs::enter(iso)?;
        privs::drop_to(iso)?;
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
    let err = nix::unistd::execve(&argv[0], &argv, &envp).unwrap_err();
    let code = match err {
        nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => Code::CommandNotFound,
        _ => Code::Spawn,
    };
    Err(Error::field(
        code,
        "config.command",
        format!("cannot execute {}: {err}", spec.argv[0]),
    ))
}
