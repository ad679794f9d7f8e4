//! The supervisors' fork server (`execdriver-shim` with `EXECDRIVER_SHIM_MODE=fork-server` in its
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
//! per supervisor: the namespace flags (`i32`, little endian) then the `--staged` JSON (may
//! be empty), with the new supervisor's channel attached (`SCM_RIGHTS`). The reply is one
//! `i32`: the new supervisor's pid, or `-errno`. EOF: the host is gone; exit.
//!
//! The clone is `clone3(CLONE_PARENT | namespaces)`: the supervisor is the *host's*
//! child (the host reaps it and holds its pidfd exactly as for one it executed), and pid 1
//! of its pid namespace when asked for one. The clone has fork semantics (no new stack),
//! so the child goes on with a copy of this single-threaded process, as after `fork`: it
//! then runs [`crate::supervisor::main`] with the channel on its stdout.

use std::os::fd::{AsRawFd, OwnedFd};

/// The namespace flags a request may ask for.
const ALLOWED: libc::c_int =
    libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET;

pub fn main() -> i32 {
    let _ = nix::sys::signal::SigSet::all().thread_block();
    crate::sys::process::set_name(c"execdriver-fork");
    // Not the host's working directory (see `supervisor::main`).
    let _ = nix::unistd::chdir("/");
    crate::sys::process::close_fds_above_2();
    let Ok(ctl) = crate::sys::process::take_stdout() else {
        return 1;
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let (n, chan) = match crate::proto::chan::recv_with_fd(&ctl, &mut buf) {
            Ok(r) => r,
            Err(_) => return 1,
        };
        if n == 0 {
            return 0;
        }
        let reply = match (chan, crate::proto::ForkRequest::decode(&buf[..n])) {
            (Some(chan), Some((flags, staging))) if flags & !ALLOWED == 0 => {
                spawn(flags, staging, chan)
            },
            _ => -libc::EINVAL,
        };
        if crate::proto::chan::send_all(&ctl, &crate::proto::fork_reply(reply)).is_err() {
            return 1;
        }
    }
}

/// Clones the new supervisor; in the parent returns its pid (or `-errno`), in the child
/// never returns.
fn spawn(flags: libc::c_int, staging: &[u8], chan: OwnedFd) -> i32 {
    // With CLONE_PARENT the new supervisor is the host's child, not ours.
    match crate::sys::clone::fork_with(libc::CLONE_PARENT | flags) {
        Ok(0) => crate::sys::process::exit_now(child(staging, chan)),
        Ok(pid) => pid,
        Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// The new supervisor: its channel onto stdout, then the supervisor's own `main`.
fn child(staging: &[u8], chan: OwnedFd) -> i32 {
    // The channel onto fd 1 (close-on-exec cleared by dup2); our copy of the control
    // socket is closed by `main`'s close_range (and never dropped here: the child leaves
    // with `exit_now`).
    if crate::sys::process::dup2(chan.as_raw_fd(), 1).is_err() {
        return 1;
    }
    drop(chan);
    crate::sys::process::set_name(c"execdriver-shim");
    crate::supervisor::main(super::Start::staged(staging))
}
