//! The task's network (`network_isolation`, SPEC §2): the host's (nothing to do), a
//! namespace of the task's own (the supervisor is started in a new one; the command
//! brings its loopback up), or a group's namespace the host agent made, joined by path.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

/// `statfs` type of the nsfs files (`/proc/<pid>/ns/*` and their bind mounts).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Checks that `fd` is a network namespace (an nsfs file of type `CLONE_NEWNET`).
pub fn check_netns(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fs = nix::sys::statfs::fstatfs(fd).map_err(io::Error::from)?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(io::Error::other("it is not a namespace file"));
    }
    if crate::sys::net::namespace_type(fd)? != libc::CLONE_NEWNET {
        return Err(io::Error::other("it is a namespace of another type"));
    }
    Ok(())
}

/// The network namespace file at `path`, opened without following a last symlink and
/// without opening anything that is not a namespace file (it is looked at through an
/// `O_PATH` fd first: no FIFO, device or other file is ever opened for reading), and
/// checked ([`check_netns`]).
pub fn open_netns(path: &Path) -> io::Result<std::fs::File> {
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    let not_ns = || io::Error::other("it is not a network namespace");
    let at = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|_| not_ns())?;
    let fs = nix::sys::statfs::fstatfs(at.as_fd()).map_err(|_| not_ns())?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(not_ns());
    }
    // Reopened for reading through the O_PATH fd: the same file, now known to be nsfs.
    let f =
        std::fs::File::open(format!("/proc/self/fd/{}", at.as_raw_fd())).map_err(|_| not_ns())?;
    check_netns(f.as_fd()).map_err(|_| not_ns())?;
    Ok(f)
}

/// Checks a task's `network_isolation.path` (host side): under one of the plugin's
/// `netns_dirs`, without `.` or `..`, and a network namespace ([`open_netns`]). One
/// message for every refusal, so that it tells nothing of the host's files.
pub fn check_netns_path(path: &Path, dirs: &[String]) -> io::Result<std::fs::File> {
    let under = crate::host::handle::plain_absolute(path)
        && dirs
            .iter()
            .any(|d| path.starts_with(d) && path != Path::new(d));
    let refused = || {
        io::Error::other(format!(
            "network_isolation.path {} is not a network namespace in the plugin's netns_dirs ({})",
            path.display(),
            dirs.join(", ")
        ))
    };
    if !under {
        return Err(refused());
    }
    open_netns(path).map_err(|_| refused())
}

/// Moves the calling process into the network namespace `fd` (checked first).
pub fn join(fd: BorrowedFd<'_>) -> io::Result<()> {
    check_netns(fd)?;
    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// `struct ifreq` with the flags member, as `SIOCGIFFLAGS`/`SIOCSIFFLAGS` use it.
pub use crate::sys::net::loopback_up;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_files_are_told_apart() {
        assert!(
            open_netns(Path::new("/proc/self/ns/net")).is_err(),
            "a magic link is not followed"
        );
        let me = format!("/proc/{}/ns", std::process::id());
        let dirs = vec![me.clone()];
        let netns = format!("{me}/net");
        // Under /proc the ns entries are magic links: refused as such by open_netns, and a
        // path outside netns_dirs is refused before anything is opened.
        assert!(check_netns_path(Path::new(&netns), &dirs).is_err());
        for bad in ["/etc/hostname", "/nonexistent", "relative/x"] {
            let e = check_netns_path(Path::new(bad), &dirs).unwrap_err();
            assert!(
                e.to_string().contains("is not a network namespace in"),
                "{e}"
            );
        }
        let e = check_netns_path(Path::new(&format!("{me}/../ns/net")), &dirs).unwrap_err();
        assert!(e.to_string().contains("netns_dirs"), "{e}");
    }
}
