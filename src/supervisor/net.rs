//! The task's network (`network_isolation`, docs/task.md "Isolation"): the host's (nothing to do), a
//! namespace of the task's own (the supervisor is started in a new one; the command
//! brings its loopback up), or a group's namespace the host agent made, joined by path.

use std::io;
use std::os::fd::BorrowedFd;

pub use crate::sys::net::open_netns;

/// Moves the calling process into the network namespace `fd` (checked first).
pub fn join(fd: BorrowedFd<'_>) -> io::Result<()> {
    crate::sys::net::check_netns(fd)?;
    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Brings `lo` up in our network namespace (a new one has it down).
pub use crate::sys::net::loopback_up;
