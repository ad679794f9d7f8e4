//! Starting the command's process the way posix_spawn does, plus `CLONE_INTO_CGROUP`:
//! `clone3(CLONE_VM | CLONE_VFORK [| CLONE_INTO_CGROUP])` on a stack of its own. The
//! child shares our memory while we are suspended (until it execs or exits), so no page
//! tables are copied and no copy-on-write faults follow: on these machines a plain fork
//! of the supervisor plus the child's first steps cost ~0.25 ms of every start.
//!
//! The child shares our memory, so it runs only system calls on data prepared before the
//! clone ([`crate::sys::trampoline`]): no allocation, no lock (a child killed in the middle of
//! `malloc`, by an OOM kill in the task's cgroup say, would leave our heap locked). A child
//! that must run ordinary Rust (an exec task's, which builds its root) is made with fork
//! semantics instead ([`fork_into`]). `clone3` has no libc wrapper that takes a function,
//! so a few lines of assembly switch the child onto its stack (x86_64; other targets
//! fork).

use crate::sys::trampoline::Program;
use std::io;
use std::os::fd::RawFd;

/// The kernel's `struct clone_args` (`clone3(2)`); zero fields mean "not used".
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".globl execdriver_clone3_call",
    ".hidden execdriver_clone3_call",
    ".type execdriver_clone3_call, @function",
    "execdriver_clone3_call:",
    // rdi = &CloneArgs, rsi = size, rdx = entry fn, rcx = its argument
    "push r12",
    "push r13",
    "mov r12, rdx",
    "mov r13, rcx",
    "mov eax, 435", // SYS_clone3
    "syscall",
    "test rax, rax",
    "jnz 2f",
    // The child, on its own stack (16-byte aligned top, set by the kernel).
    "xor ebp, ebp",
    "mov rdi, r13",
    "call r12",
    "mov edi, eax",
    "mov eax, 231", // SYS_exit_group
    "syscall",
    "ud2",
    "2:",
    "pop r13",
    "pop r12",
    "ret",
    ".size execdriver_clone3_call, .-execdriver_clone3_call",
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    /// Returns the child's pid, or `-errno`; the child runs `entry(arg)` and exits with
    /// its result.
    fn execdriver_clone3_call(
        args: *mut CloneArgs,
        size: usize,
        entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
        arg: *mut libc::c_void,
    ) -> libc::c_long;
}

struct Job<'a> {
    f: &'a mut dyn FnMut(bool) -> i32,
    in_cgroup: bool,
}

extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Job` on the suspended parent's stack, alive until we exec or
    // exit (CLONE_VFORK).
    let job = unsafe { &mut *(arg as *mut Job<'_>) };
    let in_cgroup = job.in_cgroup;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.f)(in_cgroup))).unwrap_or(127)
}

/// Runs `program` ([`Program::run`]) in a new process that shares our memory (see the
/// module doc) and returns its pid once it has exec'd or failed. With `cgroup` (an fd of a
/// cgroup2 dir) the child starts in that cgroup when the kernel allows it. The child runs
/// only the program's system calls on data it holds: what a child sharing our memory may
/// do, in a process of any number of threads.
pub fn spawn(cgroup: Option<RawFd>, program: &Program) -> io::Result<i32> {
    clone_vm(cgroup, &mut |in_cgroup| program.run(in_cgroup))
}

/// Runs `child(in_cgroup)` in a new process that shares our memory and returns its pid
/// once it has exec'd or exited; `in_cgroup` tells the child whether it started in
/// `cgroup`. `child` must make only system calls on data prepared before (no allocation,
/// no lock) and end in `execve` or return an exit code: [`spawn`]'s [`Program`], or a
/// test's.
#[cfg(target_arch = "x86_64")]
fn clone_vm(cgroup: Option<RawFd>, child: &mut dyn FnMut(bool) -> i32) -> io::Result<i32> {
    // 64 KiB of stack for a few system calls, 16-byte aligned; not zeroed (a stack needs
    // no initial contents).
    let mut stack: Vec<std::mem::MaybeUninit<u128>> = Vec::with_capacity((64 << 10) / 16);
    let mut attempts = vec![];
    if let Some(fd) = cgroup {
        attempts.push(Some(fd));
    }
    attempts.push(None);
    let mut last = io::Error::from_raw_os_error(libc::ENOSYS);
    for cg in attempts {
        let mut args = CloneArgs {
            flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64
                | if cg.is_some() { CLONE_INTO_CGROUP } else { 0 },
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: libc::SIGCHLD as u64,
            stack: stack.as_mut_ptr() as u64,
            stack_size: (stack.capacity() * 16) as u64,
            tls: 0,
            set_tid: 0,
            set_tid_size: 0,
            cgroup: cg.map(|fd| fd as u64).unwrap_or(0),
        };
        let mut job = Job {
            f: &mut *child,
            in_cgroup: cg.is_some(),
        };
        // SAFETY: args, the stack and job stay alive and untouched by us until the call
        // returns, which with CLONE_VFORK is after the child exec'd or exited; the child
        // runs `entry` on that stack and never returns into our frames.
        let r = unsafe {
            execdriver_clone3_call(
                &mut args,
                std::mem::size_of::<CloneArgs>(),
                entry,
                &mut job as *mut Job<'_> as *mut libc::c_void,
            )
        };
        if r > 0 {
            return Ok(r as i32);
        }
        last = io::Error::from_raw_os_error(-r as i32);
        // Without CLONE_INTO_CGROUP support (old kernel, a cgroup that refuses it) the
        // child joins by writing cgroup.procs instead; anything else is final.
        if cg.is_none()
            || !matches!(
                -r as i32,
                libc::EINVAL
                    | libc::EBUSY
                    | libc::EOPNOTSUPP
                    | libc::ENOSYS
                    | libc::E2BIG
                    | libc::EBADF
            )
        {
            break;
        }
    }
    drop(stack);
    if last.raw_os_error() == Some(libc::ENOSYS) {
        // No clone3 at all (Linux < 5.3).
        return fork(child);
    }
    Err(last)
}

/// Other targets: a plain fork (below).
#[cfg(not(target_arch = "x86_64"))]
fn clone_vm(_cgroup: Option<RawFd>, child: &mut dyn FnMut(bool) -> i32) -> io::Result<i32> {
    fork(child)
}

/// Runs `child(in_cgroup)` in a new process with fork semantics (a copy of our memory:
/// the supervisor is single-threaded, so the child may run any code; checked in debug
/// builds, [`crate::sys::process::assert_forkable`]), started in the cgroup2 dir `cgroup`
/// when the kernel allows it (`clone3(CLONE_INTO_CGROUP)`). Returns its pid at once.
pub fn fork_into(cgroup: Option<RawFd>, child: &mut dyn FnMut(bool) -> i32) -> io::Result<i32> {
    crate::sys::process::assert_forkable();
    if let Some(fd) = cgroup {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd as u64,
            ..Default::default()
        };
        match clone3_fork(&args) {
            Ok(0) => crate::sys::process::exit_now(child(true)),
            Ok(pid) => return Ok(pid),
            // Without clone3 or CLONE_INTO_CGROUP: a fork, the child joining by writing.
            Err(_) => {}
        }
    }
    fork(child)
}

/// clone3 with fork semantics (no stack: the child runs on a copy of ours): 0 in the
/// child, its pid in the parent. For single-threaded callers, as fork.
fn clone3_fork(args: &CloneArgs) -> io::Result<i32> {
    // SAFETY: clone3 without a stack in a single-threaded process, as fork; `args` lives
    // across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as i32)
}

/// clone3 with fork semantics and `flags` (namespaces, `CLONE_PARENT`; the exit signal
/// then 0, as `CLONE_PARENT` wants). Like [`crate::sys::process::fork`]: for
/// single-threaded callers (checked in debug builds); the child (0 returned) leaves with
/// `exit_now`.
pub fn fork_with(flags: libc::c_int) -> io::Result<i32> {
    crate::sys::process::assert_forkable();
    clone3_fork(&CloneArgs {
        flags: flags as u64,
        ..Default::default()
    })
}

/// A plain fork, the child joining its cgroups by writing `cgroup.procs`: [`fork_into`]'s
/// (single-threaded callers, checked there), or [`clone_vm`]'s without clone3 (a child of
/// system calls only).
fn fork(child: &mut dyn FnMut(bool) -> i32) -> io::Result<i32> {
    // SAFETY: single-threaded process; the child only runs `child` and exits.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let code = child(false);
            // SAFETY: leave without running the parent's destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(pid: i32) -> i32 {
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        st
    }

    // The children here only return or execve with data prepared before: the test
    // process is multithreaded, unlike the supervisor.
    #[test]
    fn child_exit_code_and_exec() {
        let pid = clone_vm(None, &mut |in_cgroup| if in_cgroup { 1 } else { 7 }).unwrap();
        let st = wait(pid);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 7, "{st:#x}");

        let path = c"/bin/sh";
        let argv = [
            c"sh".as_ptr(),
            c"-c".as_ptr(),
            c"exit 5".as_ptr(),
            std::ptr::null(),
        ];
        let envp = [std::ptr::null()];
        let pid = clone_vm(None, &mut |_| {
            // SAFETY: valid NUL-terminated arrays prepared above.
            unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            127
        })
        .unwrap();
        let st = wait(pid);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 5, "{st:#x}");
    }

    #[test]
    fn fork_into_without_a_cgroup() {
        let pid = fork_into(None, &mut |in_cgroup| if in_cgroup { 1 } else { 4 }).unwrap();
        let st = wait(pid);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 4, "{st:#x}");
        let dir = std::fs::File::open("/").unwrap();
        use std::os::fd::AsRawFd;
        let pid = fork_into(Some(dir.as_raw_fd()), &mut |in_cgroup| {
            if in_cgroup { 1 } else { 6 }
        })
        .unwrap();
        let st = wait(pid);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 6, "{st:#x}");
    }

    #[test]
    fn fork_fallback() {
        let pid = fork(&mut |in_cgroup| if in_cgroup { 1 } else { 9 }).unwrap();
        let st = wait(pid);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 9, "{st:#x}");
    }

    #[test]
    fn a_bad_cgroup_fd_falls_back_to_no_cgroup() {
        // Not a cgroup2 directory: clone3 refuses CLONE_INTO_CGROUP, the child starts
        // without it and is told so.
        let dir = std::fs::File::open("/").unwrap();
        use std::os::fd::AsRawFd;
        let pid = clone_vm(Some(dir.as_raw_fd()), &mut |in_cgroup| {
            if in_cgroup { 1 } else { 3 }
        })
        .unwrap();
        let st = wait(pid);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 3, "{st:#x}");
    }
}
