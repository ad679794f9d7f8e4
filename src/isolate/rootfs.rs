//! The task's root: a private mount namespace in which the task dir is the root, the
//! `chroot_env` entries are read-only bind mounts (never copies), `/alloc` is shared,
//! `/secrets` a private tmpfs, `/dev` minimal and `/proc` fresh. Nothing propagates back
//! to the host: the namespace is made a slave of the host's before any mount.

use crate::error::{Code, Error, Result};
use crate::launch::Isolation;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

fn err(step: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(Code::Isolation, format!("{step} {}: {e}", path.display()))
}

/// `root` joined with the absolute in-task path `p`.
fn inside(root: &Path, p: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in p.components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    out
}

/// Creates `root/rel` (a dir, or an empty file when `file`), refusing to follow any
/// symlink below `root`: the task dir is the task's to write, and a planted link must not
/// redirect a mount.
fn make_mountpoint(root: &Path, rel: &Path, file: bool) -> Result<PathBuf> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        let last = i + 1 == comps.len();
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(err(
                    "refusing to mount over a symlink at",
                    &cur,
                    "the task dir holds a symlink where a mount point belongs",
                ));
            }
            Ok(_) => {}
            Err(_) if last && file => {
                std::fs::write(&cur, b"").map_err(|e| err("creating mount point", &cur, e))?;
            }
            Err(_) => {
                std::fs::create_dir(&cur).map_err(|e| err("creating mount point", &cur, e))?;
            }
        }
    }
    Ok(cur)
}

/// Bind-mounts `src` (recursively) at `dst`, nosuid and nodev, read-only when asked, plus
/// `extra` (only `MS_NOEXEC` is used). One `mount_setattr(AT_RECURSIVE)` sets the flags on
/// the whole tree, submounts included; kernels before 5.12 get a remount of the top mount.
fn bind(src: &Path, dst: &Path, readonly: bool, extra: MsFlags) -> Result<()> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| err("bind-mounting", src, e))?;
    if set_attrs_recursive(dst, readonly, extra.contains(MsFlags::MS_NOEXEC)).is_ok() {
        return Ok(());
    }
    let mut flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | extra;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, dst, None::<&str>, flags, None::<&str>)
        .map_err(|e| err("remounting", dst, e))?;
    Ok(())
}

/// nosuid, nodev (and read-only, noexec when asked) on the mount at `dst` and every mount
/// below it, with `mount_setattr` (Linux 5.12+).
fn set_attrs_recursive(dst: &Path, readonly: bool, noexec: bool) -> std::io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const MOUNT_ATTR_NOEXEC: u64 = 0x8;
    const AT_RECURSIVE: u32 = 0x8000;
    let path = std::ffi::CString::new(dst.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if readonly {
        set |= MOUNT_ATTR_RDONLY;
    }
    if noexec {
        set |= MOUNT_ATTR_NOEXEC;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: valid C string and attr struct alive across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn mount_fs(fstype: &str, dst: &Path, flags: MsFlags, data: &str) -> Result<()> {
    mount(Some(fstype), dst, Some(fstype), flags, Some(data))
        .map_err(|e| err(&format!("mounting {fstype} at"), dst, e))
}

/// Builds the root and enters it. Called in the command child after fork.
pub fn enter(iso: &Isolation) -> Result<()> {
    let root = &iso.root;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| err("unshare mount namespace for", root, e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| err("making mounts private at", Path::new("/"), e))?;
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| err("bind-mounting task root", root, e))?;

    for (dst, target) in &iso.symlinks {
        let at = inside(root, dst);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(&at).ok().as_deref() != Some(target.as_path()) {
                    return Err(err(
                        "unexpected symlink at",
                        &at,
                        "it does not match the host's",
                    ));
                }
            }
            Ok(_) => {
                return Err(err(
                    "expected a symlink at",
                    &at,
                    "found a file or directory",
                ));
            }
            Err(_) => std::os::unix::fs::symlink(target, &at)
                .map_err(|e| err("creating symlink", &at, e))?,
        }
    }
    for b in &iso.binds {
        let is_file = std::fs::metadata(&b.src)
            .map(|m| !m.is_dir())
            .unwrap_or(false);
        let at = make_mountpoint(root, &b.dst, is_file)?;
        bind(&b.src, &at, b.readonly, MsFlags::empty())?;
    }

    // /alloc shared and writable, its logs read-only.
    let alloc = make_mountpoint(root, Path::new("alloc"), false)?;
    bind(&iso.alloc, &alloc, false, MsFlags::empty())?;
    let logs = alloc.join("logs");
    if logs.is_dir() {
        bind(&logs, &logs, true, MsFlags::MS_NOEXEC)?;
    }

    // /secrets: small private tmpfs, noexec, 0700, owned by the task user.
    let secrets = make_mountpoint(root, Path::new("secrets"), false)?;
    mount_fs(
        "tmpfs",
        &secrets,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        &format!(
            "size={},mode=0700,uid={},gid={}",
            iso.secrets_size, iso.uid, iso.gid
        ),
    )?;

    let tmp = make_mountpoint(root, Path::new("tmp"), false)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| err("chmod", &tmp, e))?;

    build_dev(root)?;

    let proc_dir = make_mountpoint(root, Path::new("proc"), false)?;
    mount_fs(
        "proc",
        &proc_dir,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        "",
    )?;

    if iso.no_pivot_root {
        nix::unistd::chroot(root).map_err(|e| err("chroot to", root, e))?;
    } else {
        nix::unistd::chdir(root).map_err(|e| err("chdir to", root, e))?;
        nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root to", root, e))?;
        umount2(".", MntFlags::MNT_DETACH)
            .map_err(|e| err("detaching the old root of", root, e))?;
    }
    nix::unistd::chdir("/").map_err(|e| err("chdir to", Path::new("/"), e))?;
    Ok(())
}

/// A minimal /dev: a tmpfs with nodes of the harmless character devices, a
/// private devpts, a shm tmpfs and the usual links.
fn build_dev(root: &Path) -> Result<()> {
    let dev = make_mountpoint(root, Path::new("dev"), false)?;
    mount_fs(
        "tmpfs",
        &dev,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "mode=755,size=65536k",
    )?;
    // The harmless character devices, as nodes with the host's numbers and modes (we are
    // root in the host's user namespace; one mknod instead of a bind and a remount each).
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(name);
        let Ok(m) = std::fs::metadata(&host) else {
            continue;
        };
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if !m.file_type().is_char_device() {
            continue;
        }
        let at = dev.join(name);
        nix::sys::stat::mknod(
            &at,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(m.mode() & 0o777),
            m.rdev(),
        )
        .map_err(|e| err("creating device", &at, e))?;
        // mknod applied our umask.
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(m.mode() & 0o777))
            .map_err(|e| err("chmod", &at, e))?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(|e| err("creating", &pts, e))?;
    mount_fs(
        "devpts",
        &pts,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(|e| err("creating", &shm, e))?;
    mount_fs(
        "tmpfs",
        &shm,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        "mode=1777,size=65536k",
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(|e| err("creating link", &dev.join(link), e))?;
    }
    Ok(())
}
