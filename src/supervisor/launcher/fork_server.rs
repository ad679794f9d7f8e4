//! The supervisors' fork server (`execdriver-shim` with `EXECDRIVER_SHIM_MODE=mother` in its
//! environment, so that the supervisors cloned from it show the plain command line of
//! one the host executed; its process name is `execdriver-fork`, theirs
//! `execdriver-shim`): one idle process per host,
//! started by the library once, that makes each prestarted supervisor (a "spare") by
//! cloning itself instead of the host executing the shim again. A fresh exec of the
//! static shim costs ~0.45 ms of CPU on these machines, about a third of it glibc's
//! `cpuid`-based feature and cache detection (each `cpuid` traps to the hypervisor); the
//! clone of this already set up process costs a fraction of that.
//!
//! Protocol, on the `SOCK_SEQPACKET` socket that is its stdout: the host sends one message
//! per supervisor: the namespace flags (`i32`, little endian) then the `--warm` JSON (may
//! be empty), with the new supervisor's channel attached (`SCM_RIGHTS`). The reply is one
//! `i32`: the new supervisor's pid, or `-errno`. EOF: the host is gone; exit.
//!
//! The clone is `clone3(CLONE_PARENT | namespaces)`: the supervisor is the *host's*
//! child (the host reaps it and holds its pidfd exactly as for one it executed), and pid 1
//! of its pid namespace when asked for one. The clone has fork semantics (no new stack),
//! so the child goes on with a copy of this single-threaded process, as after `fork`: it
//! then runs [`super::main`] with the channel on its stdout.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// The namespace flags a request may ask for.
const ALLOWED: libc::c_int =
    libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET;

/// Sets this process's name (`comm`, what `ps -o comm` and `/proc/<pid>/stat` show).
fn set_name(name: &std::ffi::CStr) {
    // SAFETY: prctl on ourselves with a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

pub fn main() -> i32 {
    let _ = nix::sys::signal::SigSet::all().thread_block();
    set_name(c"execdriver-fork");
    // Not the host's working directory (see `supervisor::main`).
    let _ = nix::unistd::chdir("/");
    // SAFETY: closes only fds above 2 of this fresh process.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // SAFETY: fd 1 is open for the whole of this call (the host gave it to us as stdout).
    let fd1 = unsafe { std::os::fd::BorrowedFd::borrow_raw(1) };
    let Ok(ctl) = fd1.try_clone_to_owned() else {
        return 1;
    };
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto our own stdout.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let (n, chan) = match crate::proto::chan::recv_with_fd(&ctl, &mut buf) {
            Ok(r) => r,
            Err(_) => return 1,
        };
        if n == 0 {
            return 0;
        }
        let reply = match (chan, crate::proto::SpareRequest::decode(&buf[..n])) {
            (Some(chan), Some((flags, warm))) if flags & !ALLOWED == 0 => spawn(flags, warm, chan),
            _ => -libc::EINVAL,
        };
        if crate::proto::chan::send_all(&ctl, &crate::proto::spare_reply(reply)).is_err() {
            return 1;
        }
    }
}

/// Clones the new supervisor; in the parent returns its pid (or `-errno`), in the child
/// never returns.
fn spawn(flags: libc::c_int, warm: &[u8], chan: OwnedFd) -> i32 {
    // No stack (fork semantics); with CLONE_PARENT the exit signal must be 0: the child's
    // is ours (SIGCHLD, to the host).
    let args = super::vfork::CloneArgs {
        flags: (libc::CLONE_PARENT | flags) as u64,
        ..Default::default()
    };
    // SAFETY: clone3 with fork semantics (no stack: the child runs on a copy of ours) in
    // this single-threaded process; the child only runs `child` below and leaves with
    // `_exit`, as after fork.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const super::vfork::CloneArgs,
            std::mem::size_of::<super::vfork::CloneArgs>(),
        )
    };
    if pid == 0 {
        let code = child(warm, chan);
        // SAFETY: leave without running this process's destructors.
        unsafe { libc::_exit(code) }
    }
    if pid < 0 {
        return -std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
    }
    pid as i32
}

/// The new supervisor: its channel onto stdout, then the supervisor's own `main`.
fn child(warm: &[u8], chan: OwnedFd) -> i32 {
    // SAFETY: dup2 of the channel onto fd 1 (close-on-exec cleared by dup2); our copy of
    // the control socket is closed by `main`'s close_range (and never dropped here: the
    // child leaves with `_exit`).
    if unsafe { libc::dup2(chan.as_raw_fd(), 1) } < 0 {
        return 1;
    }
    drop(chan);
    set_name(c"execdriver-shim");
    let warm = (!warm.is_empty()).then(|| std::ffi::OsStr::from_bytes(warm));
    crate::supervisor::main(warm, None)
}
