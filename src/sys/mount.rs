//! The fd-based mount API (Linux 5.2+; `mount_setattr` 5.12+) behind safe wrappers:
//! detached mounts made ahead and attached into a task's root later (see
//! [`crate::supervisor::rootfs::Staged`]), and mount attributes set on a whole tree.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

pub const ATTR_RDONLY: u64 = 0x1;
pub const ATTR_NOSUID: u64 = 0x2;
pub const ATTR_NODEV: u64 = 0x4;
pub const ATTR_NOEXEC: u64 = 0x8;

const AT_RECURSIVE: u32 = 0x8000;
const AT_EMPTY_PATH: u32 = 0x1000;
const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const FSOPEN_CLOEXEC: u32 = 1;
const FSMOUNT_CLOEXEC: u32 = 1;
const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstr(s: impl AsRef<std::ffi::OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A syscall's result as an fd (>= 0) or the OS error.
fn fd_result(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

fn unit_result(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `set` on the mount at `dirfd`/`path` (`path` empty: the mount `dirfd` refers
/// to) and on every mount below it.
fn setattr(dirfd: i32, path: &CString, extra: u32, set: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: valid C string and attr struct alive across the call.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            AT_RECURSIVE | extra,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
}

/// `set` (ATTR_* bits) on the mount at `path` and every mount below it.
pub fn set_attrs_at(path: &Path, set: u64) -> io::Result<()> {
    setattr(libc::AT_FDCWD, &cstr(path)?, 0, set)
}

/// `set` on the detached (or attached) mount `fd` and every mount below it.
pub fn set_attrs_fd(fd: BorrowedFd<'_>, set: u64) -> io::Result<()> {
    setattr(fd.as_raw_fd(), &cstr("")?, AT_EMPTY_PATH, set)
}

/// A detached recursive copy of the mount tree at `path` (a bind mount not attached
/// anywhere yet); it vanishes when the fd is closed unless attached with [`move_to`].
pub fn clone_tree(path: &Path) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: valid C string; the flags ask for a new close-on-exec fd.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | AT_RECURSIVE,
        )
    })
}

/// [`clone_tree`] of the host path `path` looked up in `host`, a detached copy of the
/// host's mount tree (see [`crate::supervisor::rootfs::Staged::enter_skeleton`]): `host` is the root
/// of the lookup, for `..` and absolute symlinks too (`openat2`, `RESOLVE_IN_ROOT`).
pub fn clone_in(host: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    clone_fd(&open_in(host, path)?, AT_RECURSIVE)
}

/// Whether [`clone_in`] works here (`openat2` is Linux 5.6+, and not every kernel lets a
/// detached tree be cloned from): tried on the top mount of `host` alone.
pub fn can_clone_in(host: BorrowedFd<'_>) -> bool {
    open_in(host, Path::new("/"))
        .and_then(|at| clone_fd(&at, 0))
        .is_ok()
}

/// A detached copy of the mount `at` refers to (`extra`: `AT_RECURSIVE` for the mounts
/// below it too).
fn clone_fd(at: &OwnedFd, extra: u32) -> io::Result<OwnedFd> {
    let empty = cstr("")?;
    // SAFETY: `at` is our fd; empty path with AT_EMPTY_PATH; a new close-on-exec fd.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            at.as_raw_fd(),
            empty.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | AT_EMPTY_PATH | extra,
        )
    })
}

/// An `O_PATH` fd of the host path `path` looked up in `host` (see [`clone_in`]).
pub fn open_in(host: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    open_in_with(host, path, libc::O_PATH)
}

/// [`open_in`] opened with `flags` (close-on-exec is added).
pub fn open_in_with(host: BorrowedFd<'_>, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    const RESOLVE_IN_ROOT: u64 = 0x10;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT,
    };
    let p = cstr(path)?;
    // SAFETY: openat2(2) with our fd, a valid C string and a valid open_how of its size.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            host.as_raw_fd(),
            p.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })
}

/// Attaches the detached mount `fd` at `dst`.
pub fn move_to(fd: BorrowedFd<'_>, dst: &Path) -> io::Result<()> {
    let empty = cstr("")?;
    let d = cstr(dst)?;
    // SAFETY: valid C strings and fds for the duration of the call.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            d.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

/// A new detached filesystem of type `fstype` with `options` (`key` or `key=value`),
/// mounted with the `attrs` ATTR_* bits.
pub fn new_fs(fstype: &str, options: &[&str], attrs: u64) -> io::Result<OwnedFd> {
    let t = cstr(fstype)?;
    // SAFETY: valid C string; asks for a new close-on-exec fd.
    let ctx = fd_result(unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), FSOPEN_CLOEXEC) })?;
    // The source shown in mountinfo, as mount(2) with `fstype` as its source shows it.
    let source = format!("source={fstype}");
    for o in std::iter::once(source.as_str()).chain(options.iter().copied()) {
        let (cmd, k, v) = match o.split_once('=') {
            Some((k, v)) => (FSCONFIG_SET_STRING, cstr(k)?, Some(cstr(v)?)),
            None => (FSCONFIG_SET_FLAG, cstr(o)?, None),
        };
        let vp = v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: ctx is our fs context fd; key and value are valid C strings or NULL.
        unit_result(unsafe {
            libc::syscall(libc::SYS_fsconfig, ctx.as_raw_fd(), cmd, k.as_ptr(), vp, 0)
        })?;
    }
    // SAFETY: ctx is our fs context fd; no key or value for this command.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    // SAFETY: ctx is a created fs context; asks for a new close-on-exec mount fd.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attrs as libc::c_uint,
        )
    })
}
