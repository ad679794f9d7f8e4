//! The task's network (`network_isolation`, SPEC §2): the host's (nothing to do), a
//! namespace of the task's own (the supervisor is started in a new one; the command
//! brings its loopback up), or a group's namespace the host agent made, joined by path.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// `statfs` type of the nsfs files (`/proc/<pid>/ns/*` and their bind mounts).
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `ioctl(NS_GET_NSTYPE)`: the `CLONE_NEW*` type of a namespace file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Checks that `fd` is a network namespace (an nsfs file of type `CLONE_NEWNET`).
pub fn check_netns(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fs = nix::sys::statfs::fstatfs(fd).map_err(io::Error::from)?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(io::Error::other("it is not a namespace file"));
    }
    // SAFETY: an ioctl without an argument on an fd we hold.
    let t = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if t < 0 {
        return Err(io::Error::last_os_error());
    }
    if t != libc::CLONE_NEWNET {
        return Err(io::Error::other("it is a namespace of another type"));
    }
    Ok(())
}

/// Opens `path` and checks it is a network namespace ([`check_netns`]).
pub fn check_netns_path(path: &Path) -> io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    check_netns(f.as_fd())?;
    Ok(f)
}

/// Moves the calling process into the network namespace `fd` (checked first).
pub fn join(fd: BorrowedFd<'_>) -> io::Result<()> {
    check_netns(fd)?;
    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// `struct ifreq` with the flags member, as `SIOCGIFFLAGS`/`SIOCSIFFLAGS` use it.
#[repr(C)]
struct IfreqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Brings `lo` up in the calling process's network namespace (a new one has it down).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned by the OwnedFd below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
    let mut req = IfreqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: SIOCGIFFLAGS with a valid, writable ifreq of the kernel's size.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if req.flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.flags |= libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS with a valid ifreq of the kernel's size.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_files_are_told_apart() {
        assert!(check_netns_path(Path::new("/proc/self/ns/net")).is_ok());
        let e = check_netns_path(Path::new("/proc/self/ns/mnt")).unwrap_err();
        assert!(e.to_string().contains("another type"), "{e}");
        let e = check_netns_path(Path::new("/etc/hostname")).unwrap_err();
        assert!(e.to_string().contains("not a namespace"), "{e}");
        assert!(check_netns_path(Path::new("/nonexistent")).is_err());
    }
}
