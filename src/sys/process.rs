//! Our own process: its fds, name, death signal, children made by fork, and the small
//! calls on raw fds and pids that nix does not offer in the form we need.
//!
//! The processes that fork here (the supervisor, the fork server, the exec shim) are
//! single-threaded: the shim asserts it at entry (`crate::sys::single_threaded`). A child
//! of [`fork`] is a full copy, free to run ordinary Rust, and leaves with [`exit_now`].

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Which side of a [`fork`] we are on.
pub enum Forked {
    Child,
    Parent(i32),
}

/// fork(2). For single-threaded callers only (see the module doc): checked in debug
/// builds ([`assert_forkable`]).
pub fn fork() -> io::Result<Forked> {
    assert_forkable();
    // SAFETY: the caller is single-threaded, so the child's copy of every lock is free.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// The precondition of a fork whose child runs ordinary Rust ([`fork`],
/// [`crate::sys::clone::fork_into`], [`crate::sys::clone::fork_with`]): a single thread,
/// so that no lock the child may take (the allocator's, stdio's) is held by a thread the
/// child does not have. The shim refuses to start with more than one
/// (`crate::supervisor::shim_main`) and starts none; debug builds, every test run of the
/// shim among them, check it again at each fork where our `/proc` can be read (a read of
/// `/proc/self/stat`, kept off release builds' start path; `driver_exec`'s shim forks
/// from inside the task's root, where the entry's check stands alone). The library's own
/// unit tests fork from the harness's threads with children that only return or exec,
/// which need no such precondition.
pub fn assert_forkable() {
    debug_assert!(
        cfg!(test) || crate::sys::thread_count().is_none_or(|n| n == 1),
        "a fork with a child running ordinary code, from a process with more than one thread"
    );
}

/// Leaves the process at once with `code`, running no destructor and flushing nothing:
/// how a forked child ends (the parent's buffers and temporary files are not its own).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) is always sound.
    unsafe { libc::_exit(code) }
}

/// Closes every fd above 2: a fresh process of ours keeps nothing its parent left open.
pub fn close_fds_above_2() {
    // SAFETY: close_range(2) on our own fd table; nothing above 2 is in use yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

/// Takes our stdout: a copy of fd 1 (close-on-exec) is returned and fd 1 becomes
/// /dev/null, so that nothing a child inherits refers to what the parent gave us there.
/// (Not through `std::io::stdout()`, which would set up Rust's buffered stdout for it.)
pub fn take_stdout() -> io::Result<OwnedFd> {
    // SAFETY: fd 1 is open for the whole of this call (our parent gave it to us).
    let fd1 = unsafe { BorrowedFd::borrow_raw(1) };
    let ours = fd1.try_clone_to_owned()?;
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        dup2(null.as_raw_fd(), 1)?;
    }
    Ok(ours)
}

/// Marks every fd above 2 close-on-exec: only 0-2 reach the program exec'd next.
pub fn mark_fds_above_2_cloexec() -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our own fds.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An empty signal mask for this thread.
pub fn clear_signal_mask() {
    // SAFETY: an empty set, then set as the mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// dup2(2): `to` becomes a copy of `from` (not close-on-exec).
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on fds of our own table; `to` is replaced, as the caller intends.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts a close-on-exec copy of `fd` at the number `slot`, an fd of ours that nothing
/// else uses (it is replaced), and returns it owned.
pub fn dup_onto(fd: BorrowedFd<'_>, slot: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: dup3 onto `slot`, which the caller reserved for this.
    if unsafe { libc::dup3(fd.as_raw_fd(), slot, libc::O_CLOEXEC) } != slot {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `slot` now holds our new copy, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(slot) })
}

/// Closes the fd numbered `fd` in our table (a forked child dropping its copies of the
/// parent's fds, which no object of the child owns).
pub fn close_raw(fd: RawFd) {
    // SAFETY: close(2); no owner in this process refers to `fd`.
    unsafe { libc::close(fd) };
}

/// write(2) of `bytes` to `fd`, once, the result ignored: a forked child's last word on
/// a pipe whose reader treats EOF as the answer when this fails.
pub fn write_raw(fd: RawFd, bytes: &[u8]) {
    // SAFETY: write(2) of a buffer we own.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// One read(2) from `fd` into `buf`'s unused capacity (never zeroed: only the pages the
/// data lands in are touched), replacing its contents. `Ok(0)` at EOF.
pub fn read_into(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let room = buf.spare_capacity_mut();
    // SAFETY: read(2) into `room`, writable memory of `room.len()` bytes that we own.
    let r = unsafe { libc::read(fd.as_raw_fd(), room.as_mut_ptr().cast(), room.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialized the first r bytes of the unused capacity.
    unsafe { buf.set_len(r as usize) };
    Ok(r as usize)
}

/// kill(2) of `pid` with `sig`; errors ignored (the caller's child, which may be gone).
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(pid, sig) };
}

/// Sets this process's name (`comm`, what `ps -o comm` and `/proc/<pid>/stat` show).
pub fn set_name(name: &CStr) {
    // SAFETY: prctl on ourselves with a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// The signal we get when our parent dies (0: none).
pub fn set_parent_death_signal(sig: i32) {
    // SAFETY: prctl on ourselves with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) };
}

/// Makes us a child subreaper: orphans of our descendants come to us.
pub fn set_child_subreaper() {
    // SAFETY: prctl on ourselves with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Takes a pending `sig` (blocked) off this single-threaded process's queue, so that
/// our signalfd never reads it.
pub fn discard_pending(sig: i32) {
    // SAFETY: an initialised signal set and a zero timeout; only dequeues.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
    }
}

/// setdomainname(2) in our uts namespace.
pub fn set_domainname(name: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`.
    if unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's clock ticks per second (`USER_HZ`, the unit of `/proc` CPU times).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf with a valid name.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// The CPUs online now (at least 1).
pub fn online_cpus() -> u64 {
    // SAFETY: sysconf with a valid name.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 { n as u64 } else { 1 }
}

/// The page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf with a valid name.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// poll(2) over `fds` for up to `timeout_ms` (-1: no limit); the number ready, 0 on
/// timeout or interruption.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> usize {
    // SAFETY: a valid pollfd array of its length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    n.max(0) as usize
}

/// Hands back the pages of our binary mapped so far. Start-up code and data (the spec
/// parser, the command's set-up, relocation tables) are most of them, the kernel maps file
/// pages 64 KiB at a time, and a supervisor may sit beside its task for months. Only
/// read-only mappings of our binary with no private (copied-on-write) page are dropped:
/// their pages refault unchanged from the page cache. They are then marked
/// `MADV_RANDOM`, which makes the loop's refaults map less around each faulting page
/// (measured, static build: 328 KiB of text back in instead of 424 KiB).
pub fn drop_startup_pages() {
    // All at once, after the parsing: the parser's own code is not faulted back in.
    for (a, b) in clean_mappings_of_our_binary() {
        // SAFETY: a read-only private file mapping of our binary without a single
        // private page: after MADV_DONTNEED its pages refault with the same contents.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED);
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_RANDOM);
        }
    }
}

/// The read-only mappings of our binary that hold no private (copied-on-write) page.
fn clean_mappings_of_our_binary() -> Vec<(usize, usize)> {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return vec![];
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return vec![];
    };
    let mut current: Option<(usize, usize)> = None;
    let mut ranges = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let perms = f.next().unwrap_or("");
            let ours = f.nth(3).map(std::path::Path::new) == Some(exe.as_path());
            current = (ours && !perms.contains('w')).then_some((a, b));
            continue;
        }
        if first == "Anonymous:"
            && let Some(r) = current.take()
            && f.next() == Some("0")
        {
            ranges.push(r);
        }
    }
    ranges
}

/// How a child ended. Any signal number, real-time ones too (nix's `WaitStatus` cannot
/// hold those, and would turn a task killed by `SIGRTMIN+n` into an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl Ended {
    /// The exit code as a shell reports it (128 + the signal) and the signal (0: none).
    pub fn code_and_signal(self) -> (i32, i32) {
        match self {
            Ended::Exited(c) => (c, 0),
            Ended::Signaled(s) => (128 + s, s),
        }
    }
}

/// Reaps the child `pid` (`None`: any child) that has ended: its pid and how. With
/// `block` false, `Ok(None)` when none has ended yet. `ECHILD`: no such child left.
pub fn reap(pid: Option<i32>, block: bool) -> io::Result<Option<(i32, Ended)>> {
    let mut st = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: waitpid(2) with a valid status pointer.
        let r = unsafe { libc::waitpid(pid.unwrap_or(-1), &mut st, flags) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        let how = if libc::WIFSIGNALED(st) {
            Ended::Signaled(libc::WTERMSIG(st))
        } else {
            Ended::Exited(libc::WEXITSTATUS(st))
        };
        return Ok(Some((r, how)));
    }
}
