//! The command child of a raw_exec task: everything it needs is prepared before the
//! clone ([`Prepared`]), so that the child, which shares our memory (`CLONE_VM`, see
//! [`super::vfork`]), runs only system calls on that data: no allocation, no lock, no
//! Rust that could leave our heap half-changed if the child were killed (an OOM kill in
//! its cgroup, say). A failure is reported as a fixed-size record ([`Failure`]) on the
//! sync pipe, which the supervisor turns into the error.

use crate::error::{Code, Error, Result};
use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

/// What the child does, prepared.
pub struct Prepared {
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// Owns the strings `envp_ptrs` points to.
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    /// The cgroup files the child writes "0" to (v1 `tasks`, the cgroup2 `cgroup.procs`);
    /// `clone_into`'s is skipped when the child was cloned into that cgroup.
    join: Vec<CString>,
    clone_into_procs: Option<CString>,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    sync: RawFd,
}

/// The step at which the child failed, and its errno: 8 bytes on the sync pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub step: u32,
    pub errno: i32,
}

const JOIN: u32 = 1;
const SESSION: u32 = 2;
const STDIO: u32 = 3;
const CHDIR: u32 = 4;
const EXEC: u32 = 5;

/// Size of a [`Failure`] record; anything else on the sync pipe is a JSON error.
pub const FAILURE_LEN: usize = 8;

impl Failure {
    pub fn to_bytes(self) -> [u8; FAILURE_LEN] {
        let mut b = [0u8; FAILURE_LEN];
        b[..4].copy_from_slice(&self.step.to_le_bytes());
        b[4..].copy_from_slice(&self.errno.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Failure> {
        (b.len() == FAILURE_LEN && b[0] != b'{').then(|| Failure {
            step: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            errno: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

fn cstring(s: &str, field: &str) -> Result<CString> {
    CString::new(s).map_err(|_| {
        Error::field(
            Code::InvalidConfig,
            field,
            format!("{field} contains a NUL byte"),
        )
    })
}

fn ptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
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
        Ok(Prepared {
            argv_ptrs: ptrs(&argv),
            argv,
            envp_ptrs: ptrs(&envp),
            _envp: envp,
            cwd: cstring(&spec.cwd, "config.work_dir")?,
            join: spec
                .cgroup_procs
                .iter()
                .map(|p| path(p))
                .collect::<Result<_>>()?,
            clone_into_procs: spec
                .clone_into
                .as_ref()
                .map(|d| path(&d.join("cgroup.procs")))
                .transpose()?,
            stdin,
            stdout,
            stderr,
            sync,
        })
    }

    /// The child's work. Runs in the `CLONE_VM` child: system calls only, on the
    /// prepared data. Returns only to exit (127) after reporting the failure.
    pub fn run(&self, in_cgroup: bool) -> i32 {
        let fail = |step: u32| -> i32 {
            // SAFETY: __errno_location is the calling thread's errno: read, no allocation.
            let errno = unsafe { *libc::__errno_location() };
            let b = Failure { step, errno }.to_bytes();
            // SAFETY: write(2) of a stack buffer to the sync pipe.
            unsafe { libc::write(self.sync, b.as_ptr().cast(), b.len()) };
            127
        };
        for f in &self.join {
            if in_cgroup && self.clone_into_procs.as_ref() == Some(f) {
                continue;
            }
            // SAFETY: open/write/close of a prepared NUL-terminated path and a static byte.
            unsafe {
                let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return fail(JOIN);
                }
                libc::close(fd);
            }
        }
        // SAFETY: system calls on our own fds and prepared, NUL-terminated data; execve
        // gets arrays ending in NULL that outlive the call.
        unsafe {
            if libc::setsid() < 0 {
                return fail(SESSION);
            }
            for (from, to) in [(self.stdin, 0), (self.stdout, 1), (self.stderr, 2)] {
                if libc::dup2(from, to) < 0 {
                    return fail(STDIO);
                }
            }
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) < 0
            {
                return fail(STDIO);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            if libc::chdir(self.cwd.as_ptr()) < 0 {
                return fail(CHDIR);
            }
            libc::execve(
                self.argv[0].as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            );
        }
        fail(EXEC)
    }

    /// The error a [`Failure`] of this child stands for.
    pub fn error(&self, f: Failure) -> Error {
        let errno = nix::errno::Errno::from_raw(f.errno);
        let path = |c: &CStr| c.to_string_lossy().into_owned();
        match f.step {
            JOIN => Error::new(
                Code::Isolation,
                format!("joining the task's cgroup: {errno}"),
            ),
            CHDIR => Error::field(
                Code::Spawn,
                "config.work_dir",
                format!("cannot change to work_dir {}: {errno}", path(&self.cwd)),
            ),
            EXEC => {
                let code = match errno {
                    nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => Code::CommandNotFound,
                    _ => Code::Spawn,
                };
                Error::field(
                    code,
                    "config.command",
                    format!("cannot execute {}: {errno}", path(&self.argv[0])),
                )
            }
            _ => Error::new(
                Code::Spawn,
                format!("setting up the command's process: {errno}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_records_round_trip_and_are_told_from_json() {
        let f = Failure {
            step: EXEC,
            errno: libc::ENOENT,
        };
        assert_eq!(Failure::from_bytes(&f.to_bytes()), Some(f));
        assert_eq!(Failure::from_bytes(b"{\"error\"}"), None);
        assert_eq!(Failure::from_bytes(b"{\"e\":1}"), None);
    }
}
