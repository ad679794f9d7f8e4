//! Network syscalls: a namespace file's type, network namespace files opened and
//! checked, the loopback interface.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `ioctl(NS_GET_NSTYPE)`: the `CLONE_NEW*` type of a namespace file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The `CLONE_NEW*` type of the namespace file `fd`.
pub fn namespace_type(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: an ioctl without an argument on an fd we hold.
    let t = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if t < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

/// `statfs` type of the nsfs files (`/proc/<pid>/ns/*` and their bind mounts).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Checks that `fd` is a network namespace (an nsfs file of type `CLONE_NEWNET`).
pub fn check_netns(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fs = nix::sys::statfs::fstatfs(fd).map_err(io::Error::from)?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(io::Error::other("it is not a namespace file"));
    }
    if namespace_type(fd)? != libc::CLONE_NEWNET {
        return Err(io::Error::other("it is a namespace of another type"));
    }
    Ok(())
}

/// The network namespace file at `path`, opened without following a last symlink and
/// without opening anything that is not a namespace file (it is looked at through an
/// `O_PATH` fd first: no FIFO, device or other file is ever opened for reading), and
/// checked ([`check_netns`]).
pub fn open_netns(path: &Path) -> io::Result<std::fs::File> {
    use std::os::fd::AsFd;
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
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
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
