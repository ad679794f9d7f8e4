//! The command child of a raw_exec task: a [`Program`] prepared from the launch spec
//! before the clone, so that the child, which shares our memory, runs only system calls
//! (see [`crate::sys::trampoline`]); its failure record turned into the task's error.

use crate::error::{Code, Error, Result};
use crate::sys::trampoline::{Failure, Program, Step};
use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

/// What the child does, prepared.
pub struct Prepared(Program);

fn cstring(s: &str, field: &str) -> Result<CString> {
    CString::new(s).map_err(|_| {
        Error::field(
            Code::InvalidConfig,
            field,
            format!("{field} contains a NUL byte"),
        )
    })
}

impl Prepared {
    /// Prepares the child of `spec` (a raw_exec task); `stdin` is an fd of /dev/null.
    pub fn new(
        spec: &crate::proto::spec::LaunchSpec,
        stdin: RawFd,
        stdout: RawFd,
        stderr: RawFd,
        sync: RawFd,
    ) -> Result<Prepared> {
        let argv = spec
            .argv
            .iter()
            .map(|a| cstring(a, "config.args"))
            .collect::<Result<Vec<_>>>()?;
        let envp = spec
            .env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}"), &format!("env.{k}")))
            .collect::<Result<Vec<_>>>()?;
        let path = |p: &std::path::Path| cstring(&p.to_string_lossy(), "cgroup");
        let join = spec
            .cgroup_procs
            .iter()
            .map(|p| path(p))
            .collect::<Result<_>>()?;
        let clone_into_procs = spec
            .clone_into
            .as_ref()
            .map(|d| path(&d.join("cgroup.procs")))
            .transpose()?;
        let cwd = cstring(&spec.cwd, "config.work_dir")?;
        Ok(Prepared(Program::new(
            argv,
            envp,
            cwd,
            join,
            clone_into_procs,
            [stdin, stdout, stderr],
            sync,
        )))
    }

    /// Starts the child (see [`crate::sys::clone::spawn`]), in the cgroup2 dir `cgroup`
    /// when the kernel allows it; its pid once it has exec'd or failed.
    pub fn spawn(&self, cgroup: Option<RawFd>) -> std::io::Result<i32> {
        crate::sys::clone::spawn(cgroup, &self.0)
    }

    /// The error a [`Failure`] of this child stands for.
    pub fn error(&self, f: Failure) -> Error {
        let errno = nix::errno::Errno::from_raw(f.errno);
        let path = |c: &CStr| c.to_string_lossy().into_owned();
        match f.step {
            Step::Join => Error::new(
                Code::Isolation,
                format!("joining the task's cgroup: {errno}"),
            ),
            Step::Chdir => Error::field(
                Code::Spawn,
                "config.work_dir",
                format!("cannot change to work_dir {}: {errno}", path(&self.0.cwd)),
            ),
            Step::Exec => {
                let code = match errno {
                    nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => Code::CommandNotFound,
                    _ => Code::Spawn,
                };
                Error::field(
                    code,
                    "config.command",
                    format!("cannot execute {}: {errno}", path(&self.0.argv[0])),
                )
            }
            Step::Session | Step::Stdio => Error::new(
                Code::Spawn,
                format!("setting up the command's process: {errno}"),
            ),
        }
    }
}
