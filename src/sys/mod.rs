//! The syscall layer: the raw Linux calls std and nix do not wrap the way we need,
//! behind safe functions. With the C ABI (`crate::ffi`) the only home of `unsafe`, each
//! block with its reason.

pub mod bpf;
pub mod clone;
pub mod mount;
pub mod net;
pub mod privs;
pub mod process;
pub mod pty;
pub mod socket;
pub mod trampoline;

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

fn cvt(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `pidfd_open(2)`.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; the returned fd is new and owned by us.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// (st_dev, st_ino) of `path`.
pub fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// `flock(2)` of `file` without waiting: `exclusive` or shared. The lock belongs to the
/// open file description: it goes when the last fd of it is closed (a process that dies
/// releases it), never by itself otherwise.
pub fn try_flock(file: &std::fs::File, exclusive: bool) -> io::Result<()> {
    let op = libc::LOCK_NB | if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
    // SAFETY: flock on an fd we hold, integer flags; no memory is passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), op) };
    cvt(r as libc::c_long).map(drop)
}

/// Whether the mount table changed since `mounts` (this process's
/// `/proc/self/mountinfo`) was opened: the kernel flags a change with `POLLPRI`.
pub fn mounts_changed(mounts: &std::fs::File) -> bool {
    let mut p = libc::pollfd {
        fd: mounts.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r != 0
}

/// `pidfd_getfd(2)`: our own copy (close-on-exec) of the fd `fd` of the process `pidfd`
/// refers to (Linux 5.6+; needs ptrace rights over it, as a parent of the same user has).
pub fn pidfd_getfd(pidfd: &OwnedFd, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; the returned fd is new and owned by us.
    let got = cvt(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })?;
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

/// The mount namespace of the process `pidfd` refers to, as an fd
/// (`ioctl(PIDFD_GET_MNT_NAMESPACE)`, Linux 6.11+): no /proc lookup, and the pid is read
/// in the caller's own pid namespace.
pub fn pidfd_mnt_namespace(pidfd: &OwnedFd) -> io::Result<OwnedFd> {
    const PIDFD_GET_MNT_NAMESPACE: libc::c_ulong = 0xFF03; // _IO(PIDFS_IOCTL_MAGIC, 3)
    // SAFETY: an ioctl on an fd we own, without an argument; a success returns a new fd.
    let fd =
        cvt(unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_MNT_NAMESPACE as _, 0) }.into())?;
    // SAFETY: fd was just returned to us and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(2)` without siginfo.
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall; a NULL info pointer is allowed.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            ptr::null::<u8>(),
            0,
        )
    })
    .map(drop)
}

/// `pidfd_send_signal(2)` with an `SI_QUEUE` siginfo carrying `value` (the supervisor's
/// control channel: it tells our own commands apart from signals to forward).
pub fn pidfd_send_value(pidfd: &OwnedFd, sig: i32, value: i32) -> io::Result<()> {
    // SAFETY: siginfo_t is plain old data; zeroed is a valid starting value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    info.si_signo = sig;
    info.si_code = libc::SI_QUEUE;
    // SAFETY: layout of the SI_QUEUE member of siginfo_t on Linux: si_pid (i32) at offset
    // 16, si_uid (u32) at 20, si_value (union sigval, 8 bytes) at 24; we write inside the
    // struct's 128 bytes.
    unsafe {
        let base = &mut info as *mut libc::siginfo_t as *mut u8;
        *(base.add(16) as *mut i32) = libc::getpid();
        *(base.add(20) as *mut u32) = libc::getuid();
        *(base.add(24) as *mut i32) = value;
    }
    // SAFETY: info is a valid, initialised siginfo_t that outlives the call.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            &info as *const _,
            0,
        )
    })
    .map(drop)
}

/// Reaps the child behind `pidfd` without blocking. Ok(None): still running or not our
/// child (ECHILD: e.g. a recovered task, or SIGCHLD ignored by the host).
pub fn pidfd_reap(pidfd: &OwnedFd) -> io::Result<Option<(i32, i32)>> {
    // SAFETY: siginfo_t is plain data; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // P_PIDFD = 3
    // SAFETY: waitid with a valid pointer to info; P_PIDFD waits only on that process,
    // never on the host's other children.
    let r = unsafe {
        libc::waitid(
            3 as libc::idtype_t,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ECHILD) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    // SAFETY: after a successful waitid the si_pid/si_status fields are valid.
    let (pid, status, code) = unsafe { (info.si_pid(), info.si_status(), info.si_code) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some((code, status)))
}

/// Polls one fd for readability. Returns true when readable (or hung up) within
/// `timeout_ms` (negative: forever).
pub fn poll_readable(fd: RawFd, timeout_ms: i64) -> io::Result<bool> {
    Ok(poll_any(&[fd], timeout_ms)?[0])
}

/// Polls `fds` for readability until one is readable (or hung up) or `timeout_ms` passed
/// (negative: forever); says which are.
pub fn poll_any(fds: &[RawFd], timeout_ms: i64) -> io::Result<Vec<bool>> {
    let fds: Vec<(RawFd, libc::c_short)> = fds.iter().map(|&fd| (fd, libc::POLLIN)).collect();
    poll_events(&fds, timeout_ms)
}

/// [`poll_any`] for the given events of each fd (`POLLPRI` for a mount table change).
pub fn poll_events(fds: &[(RawFd, libc::c_short)], timeout_ms: i64) -> io::Result<Vec<bool>> {
    let deadline = (timeout_ms >= 0)
        .then(|| std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms as u64));
    loop {
        let wait = match deadline {
            None => -1,
            Some(d) => d
                .saturating_duration_since(std::time::Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
        };
        let mut p: Vec<libc::pollfd> = fds
            .iter()
            .map(|&(fd, events)| libc::pollfd {
                fd,
                events,
                revents: 0,
            })
            .collect();
        // SAFETY: p is a valid array of pollfd for its length.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, wait) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(p.iter().map(|p| p.revents != 0).collect());
    }
}

/// Runs `spawn` (which starts a thread) with every signal blocked on the calling thread,
/// so that the new thread starts with all of them blocked and no handler of the host's can
/// ever run on it; the caller's mask is restored afterwards.
fn with_signals_blocked<R>(spawn: impl FnOnce() -> R) -> R {
    // SAFETY: sigset_t values are plain data initialised by sigfillset/pthread_sigmask;
    // only this thread's mask changes, and it is restored right after the spawn.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let r = spawn();
    // SAFETY: restores this thread's previous mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut()) };
    r
}

/// Runs `f` on a detached short-lived thread started with every signal blocked. False
/// when the thread could not be started.
pub fn background(name: &str, f: impl FnOnce() + Send + 'static) -> bool {
    background_with_stack(name, 256 << 10, f)
}

/// [`background`] with a stack of `stack` bytes (a thread that runs the host's code).
pub fn background_with_stack(name: &str, stack: usize, f: impl FnOnce() + Send + 'static) -> bool {
    with_signals_blocked(|| {
        std::thread::Builder::new()
            .name(name.into())
            .stack_size(stack)
            .spawn(f)
            .is_ok()
    })
}

/// Puts the calling process in (`idle`) or out of the `SCHED_IDLE` class: a prestarted supervisor
/// prepares its next task's command process in it, so that the work only gets CPU time
/// nothing else wants (back to back, it would otherwise compete with the start under
/// way); a task's processes leave it as soon as its spec arrives.
pub fn set_idle_priority(idle: bool) {
    set_idle_priority_of(0, idle);
}

/// [`set_idle_priority`] of process `pid` (0: ourselves).
pub fn set_idle_priority_of(pid: i32, idle: bool) {
    let param = libc::sched_param { sched_priority: 0 };
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    // SAFETY: sched_setscheduler(2) with a valid parameter; fails harmlessly for a pid
    // that is gone.
    unsafe { libc::sched_setscheduler(pid, policy, &param) };
}

/// Signals the host ignored stay ignored across exec (handlers do not; the shim has
/// none): sets every ignored one (`SigIgn` of `/proc/self/status`) back to default, so
/// that what the shim starts begins with default dispositions everywhere. Both shim entry
/// points call it first thing.
pub fn reset_ignored_signals() {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(mask) = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
    {
        for sig in 1..=64 {
            if mask & (1u64 << (sig - 1)) != 0 {
                set_default_disposition(sig);
            }
        }
    }
}

/// Sets signal `sig` to its default disposition with the raw `rt_sigaction` syscall: the
/// libc wrapper refuses the signals glibc reserves (32, 33), which a host may still have
/// set to ignored.
fn set_default_disposition(sig: i32) {
    // The kernel's struct sigaction (x86_64 and aarch64 layout: handler, flags, restorer,
    // mask); all zero is SIG_DFL with no flags and an empty mask.
    #[repr(C)]
    struct KSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let act = KSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: a valid kernel sigaction for the duration of the call; no old action asked.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &act as *const KSigaction,
            std::ptr::null_mut::<KSigaction>(),
            8usize,
        )
    };
}

/// Waits up to `ms` for the process behind `pidfd` to exit, SIGKILLs it if it has not,
/// and reaps it; returns what [`pidfd_reap`] gives.
pub fn pidfd_reap_within(pidfd: &OwnedFd, ms: i64) -> Option<(i32, i32)> {
    if !poll_readable(pidfd.as_raw_fd(), ms).unwrap_or(false) {
        let _ = pidfd_send_signal(pidfd, libc::SIGKILL);
        let _ = poll_readable(pidfd.as_raw_fd(), -1);
    }
    pidfd_reap(pidfd).ok().flatten()
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/<pid>/stat`):
/// with the pid it names one process for the life of the machine.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    stat_start_time(&format!("/proc/{pid}/stat"))
}

/// [`proc_start_time`] of the calling process, through `/proc/self` (right also in a pid
/// namespace of our own, whose pid 1 we may be, while `/proc` is the host's).
pub fn self_start_time() -> Option<u64> {
    stat_start_time("/proc/self/stat")
}

fn stat_start_time(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Everything the host's clone child needs, prepared before the clone so that the child
/// only makes async-signal-safe syscalls on it.
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    errno: i32,
}

extern "C" fn clone_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg points at the ChildArgs the parent keeps alive (the parent is suspended
    // by CLONE_VFORK until we exec or exit). Only dup2, execve and _exit are called: all
    // async-signal-safe, on data prepared before the clone.
    unsafe {
        let a = &mut *(arg as *mut ChildArgs);
        if libc::dup2(a.stdin, 0) < 0 || libc::dup2(a.stdout, 1) < 0 || libc::dup2(a.stderr, 2) < 0
        {
            a.errno = *libc::__errno_location();
            libc::_exit(127);
        }
        libc::execve(a.path, a.argv, a.envp);
        a.errno = *libc::__errno_location();
        libc::_exit(127)
    }
}

/// A process started by [`spawn`]: a pidfd, and the read end of its stdout.
pub struct Spawned {
    pub pidfd: OwnedFd,
    pub stdout: std::fs::File,
}

fn fd_above_2(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd we own.
    let n = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) } as libc::c_long)?;
    // SAFETY: n is a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n as RawFd) })
}

/// [`spawn_with`] with a fresh pipe as stdout, whose read end is returned.
pub fn spawn(
    path: &CStr,
    args: &[CString],
    env: &[CString],
    ns_flags: libc::c_int,
) -> io::Result<Spawned> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: pipe2 returned two fresh fds we own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let r = fd_above_2(r)?;
    let (_, pidfd) = spawn_with(path, args, env, ns_flags, w)?;
    Ok(Spawned {
        pidfd,
        stdout: std::fs::File::from(r),
    })
}

/// Starts `path` with `args` and exactly `env` as a child of this process with
/// `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD | ns_flags)`: the posix_spawn technique, so
/// the host's memory is not copied, plus namespaces and a pidfd from the same call. stdin
/// and stderr are /dev/null, stdout is `stdout` (consumed: the host's copy is closed once
/// the child exec'd). The child only dup2s and execs; all signals stay blocked across the
/// clone so no host handler can run in it. Host fds without CLOEXEC do reach the new
/// process; the supervisor closes every fd above 2 first thing. Returns pid and pidfd.
pub fn spawn_with(
    path: &CStr,
    args: &[CString],
    env: &[CString],
    ns_flags: libc::c_int,
    stdout: OwnedFd,
) -> io::Result<(i32, OwnedFd)> {
    let devnull = fd_above_2(OwnedFd::from(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?,
    ))?;
    let w = fd_above_2(stdout)?;

    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(ptr::null());
    let mut child = ChildArgs {
        path: path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        stdin: devnull.as_raw_fd(),
        stdout: w.as_raw_fd(),
        stderr: devnull.as_raw_fd(),
        errno: 0,
    };
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the top of our stack buffer, aligned down to 16 bytes as the ABI requires.
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) };
    let top = ((top as usize) & !15) as *mut libc::c_void;
    let mut pidfd: libc::c_int = -1;

    // SAFETY: sigset_t values are plain data initialised by sigfillset/pthread_sigmask.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; only this thread's mask changes, and it is restored below.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | ns_flags | libc::SIGCHLD;
    // SAFETY: clone_child only touches `child` (alive until after this call returns: with
    // CLONE_VFORK we resume only after the child exec'd or exited), runs on its own stack,
    // and pidfd receives the new pidfd (CLONE_PIDFD uses the parent_tid argument).
    let pid = unsafe {
        libc::clone(
            clone_child,
            top,
            flags,
            &mut child as *mut ChildArgs as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    let clone_err = io::Error::last_os_error();
    // SAFETY: restores this thread's previous mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(clone_err);
    }
    // SAFETY: CLONE_PIDFD stored a fresh fd that we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(w);
    if child.errno != 0 {
        // The child could not exec; reap it so it leaves no zombie.
        let _ = poll_readable(pidfd.as_raw_fd(), -1);
        let _ = pidfd_reap(&pidfd);
        return Err(io::Error::from_raw_os_error(child.errno));
    }
    Ok((pid, pidfd))
}

/// `n` random bytes from the kernel (`getrandom(2)`), for keys.
pub fn random_bytes(n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: the rest of buf is valid for writing n - filled bytes.
        let got = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr() as *mut libc::c_void,
                n - filled,
                0,
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += got as usize;
    }
    Ok(buf)
}

/// `n` random bytes from the kernel as hex (task ids, placeholder names); unique, not
/// secret: the clock stands in should the kernel refuse.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // SAFETY: buf is valid for n bytes.
    let got = unsafe { libc::getrandom(buf.as_mut_ptr() as *mut libc::c_void, n, 0) };
    if got != n as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (t.as_nanos() >> (i % 16 * 8)) as u8);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The parent pid of `pid` (`/proc/<pid>/stat` field 4), as this process's pid namespace
/// numbers it.
pub fn proc_parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after its last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// How many CPUs the host has online (`/sys/devices/system/cpu/online`, read once; the
/// count of `sched_getaffinity` when that file cannot be read).
pub fn online_cpus() -> u64 {
    static N: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|s| count_cpu_list(&s))
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .map(|n| n.get() as u64)
            })
            .unwrap_or(1)
    })
}

/// The number of CPUs in a list such as `0-3,8`.
fn count_cpu_list(s: &str) -> Option<u64> {
    let mut n = 0u64;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u64>().ok()?.checked_sub(a.parse::<u64>().ok()?)? + 1,
            None => part.parse::<u64>().map(|_| 1).ok()?,
        };
    }
    (n > 0).then_some(n)
}

/// Whether the calling process has a single thread (false when that cannot be read).
pub fn single_threaded() -> bool {
    thread_count() == Some(1)
}

/// The number of threads of the calling process (`/proc/self/stat` field 20); `None`
/// where our `/proc` cannot be read (a process that has entered another pid namespace's
/// root is not in its `/proc`).
pub fn thread_count() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    rest.split_whitespace().nth(17)?.parse().ok()
}

/// `geteuid()`.
pub fn euid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// Owned C string from a Rust one; NUL bytes are an error naming `what`.
pub fn cstring(s: &str, what: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// Writes `data` to the file whose path is the concatenation of `parts`, without
/// allocating: the path is assembled in a stack buffer.
pub fn write_noalloc_parts(parts: &[&[u8]], data: &[u8]) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    let mut len = 0;
    for p in parts {
        if len + p.len() >= buf.len() || p.contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        buf[len..len + p.len()].copy_from_slice(p);
        len += p.len();
    }
    // SAFETY: buf is NUL-terminated (zero-filled past the copied bytes).
    let fd = unsafe { libc::open(buf.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is open; data is a valid slice.
    let r = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let res = if r < 0 {
        Err(io::Error::last_os_error())
    } else if r as usize != data.len() {
        Err(io::Error::from_raw_os_error(libc::EIO))
    } else {
        Ok(())
    };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    res
}

/// The path of the loaded object (library or executable) `addr` lies in, canonical.
/// `addr` is only looked up, never read.
pub fn object_path_of(addr: usize) -> Option<std::path::PathBuf> {
    // SAFETY: Dl_info is plain data; dladdr fills it for an address inside our object.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only looks `addr` up; info is valid for writing.
    if unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) } == 0
        || info.dli_fname.is_null()
    {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let p = std::path::PathBuf::from(std::ffi::OsStr::new(
        std::str::from_utf8(name.to_bytes()).ok()?,
    ));
    std::fs::canonicalize(p).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_process_is_not_single_threaded() {
        // The test harness runs tests on threads of their own.
        let t = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        assert!(!single_threaded());
        t.join().unwrap();
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-3,8\n"), Some(5));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert!(online_cpus() >= 1);
    }

    #[test]
    fn pidfd_mnt_namespace_is_the_processes() {
        use std::os::unix::fs::MetadataExt;
        let me = pidfd_open(std::process::id() as i32).unwrap();
        let ns = match pidfd_mnt_namespace(&me) {
            Ok(ns) => ns,
            Err(e) => {
                eprintln!("SKIP: no PIDFD_GET_MNT_NAMESPACE on this kernel ({e})");
                return;
            }
        };
        let got = std::fs::File::from(ns).metadata().unwrap();
        let want = std::fs::metadata("/proc/self/ns/mnt").unwrap();
        assert_eq!((got.dev(), got.ino()), (want.dev(), want.ino()));
    }

    fn sig_blk() -> String {
        std::fs::read_to_string("/proc/thread-self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:").map(|v| v.trim().to_string()))
            .unwrap()
    }

    #[test]
    fn background_threads_block_every_signal() {
        let before = sig_blk();
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(background("sigtest", move || {
            // SAFETY: plain syscall.
            let tid = unsafe { libc::gettid() };
            let _ = tx.send((sig_blk(), tid));
        }));
        let (helper_mask, helper_tid) = rx.recv().unwrap();
        // SAFETY: plain syscall.
        assert_ne!(
            helper_tid,
            unsafe { libc::gettid() },
            "it ran on this thread"
        );
        // Every signal but SIGKILL and SIGSTOP (never blockable) and glibc's own 32 and
        // 33 (its sigfillset leaves them out).
        assert_eq!(
            u64::from_str_radix(&helper_mask, 16).unwrap()
                | (1 << 8)
                | (1 << 18)
                | (1 << 31)
                | (1 << 32),
            u64::MAX,
            "{helper_mask}"
        );
        assert_eq!(sig_blk(), before, "the calling thread's mask changed");
    }
}
