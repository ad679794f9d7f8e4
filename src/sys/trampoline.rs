//! A child that shares its parent's memory (`CLONE_VM`, see [`crate::sys::clone`]) and
//! runs only system calls on data prepared before the clone ([`Program`]): no
//! allocation, no lock, no Rust that could leave the parent's heap half-changed if the
//! child were killed (an OOM kill in its cgroup, say). A failure is reported as a
//! fixed-size record ([`Failure`]) on the sync pipe.

use std::ffi::CString;
use std::os::fd::RawFd;

/// What the child does: join cgroups, a new session, its stdio, cwd, execve.
pub struct Program {
    pub argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// Owns the strings `envp_ptrs` points to.
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    pub cwd: CString,
    /// The cgroup files the child writes "0" to (v1 `tasks`, the cgroup2 `cgroup.procs`);
    /// `clone_into_procs` is skipped when the child was cloned into that cgroup.
    join: Vec<CString>,
    clone_into_procs: Option<CString>,
    /// stdin, stdout, stderr.
    stdio: [RawFd; 3],
    sync: RawFd,
}

/// The step at which the child failed, and its errno: 8 bytes on the sync pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub step: Step,
    pub errno: i32,
}

/// A step of the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Join = 1,
    Session = 2,
    Stdio = 3,
    Chdir = 4,
    Exec = 5,
}

/// Size of a [`Failure`] record; anything else on the sync pipe is a JSON error.
pub const FAILURE_LEN: usize = 8;

impl Failure {
    pub fn to_bytes(self) -> [u8; FAILURE_LEN] {
        let mut b = [0u8; FAILURE_LEN];
        b[..4].copy_from_slice(&(self.step as u32).to_le_bytes());
        b[4..].copy_from_slice(&self.errno.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Failure> {
        if b.len() != FAILURE_LEN || b[0] == b'{' {
            return None;
        }
        let step = match u32::from_le_bytes([b[0], b[1], b[2], b[3]]) {
            1 => Step::Join,
            2 => Step::Session,
            3 => Step::Stdio,
            4 => Step::Chdir,
            5 => Step::Exec,
            _ => return None,
        };
        Some(Failure {
            step,
            errno: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

fn ptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

impl Program {
    /// `argv[0]` is the path executed; `stdio`: stdin, stdout, stderr.
    pub fn new(
        argv: Vec<CString>,
        envp: Vec<CString>,
        cwd: CString,
        join: Vec<CString>,
        clone_into_procs: Option<CString>,
        stdio: [RawFd; 3],
        sync: RawFd,
    ) -> Program {
        Program {
            argv_ptrs: ptrs(&argv),
            argv,
            envp_ptrs: ptrs(&envp),
            _envp: envp,
            cwd,
            join,
            clone_into_procs,
            stdio,
            sync,
        }
    }

    /// The child's work. Runs in the `CLONE_VM` child: system calls only, on the
    /// prepared data. Returns only to exit (127) after reporting the failure.
    pub fn run(&self, in_cgroup: bool) -> i32 {
        let fail = |step: Step| -> i32 {
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
                    return fail(Step::Join);
                }
                libc::close(fd);
            }
        }
        // SAFETY: system calls on our own fds and prepared, NUL-terminated data; execve
        // gets arrays ending in NULL that outlive the call.
        unsafe {
            if libc::setsid() < 0 {
                return fail(Step::Session);
            }
            for (to, from) in self.stdio.iter().enumerate() {
                if libc::dup2(*from, to as RawFd) < 0 {
                    return fail(Step::Stdio);
                }
            }
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) < 0
            {
                return fail(Step::Stdio);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            if libc::chdir(self.cwd.as_ptr()) < 0 {
                return fail(Step::Chdir);
            }
            libc::execve(
                self.argv[0].as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            );
        }
        fail(Step::Exec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_records_round_trip_and_are_told_from_json() {
        let f = Failure {
            step: Step::Exec,
            errno: libc::ENOENT,
        };
        assert_eq!(Failure::from_bytes(&f.to_bytes()), Some(f));
        assert_eq!(Failure::from_bytes(b"{\"error\"}"), None);
        assert_eq!(Failure::from_bytes(b"{\"e\":1}"), None);
    }
}
