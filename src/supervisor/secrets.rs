//! What the task dir's `secrets/` held when the task started (artifacts fetched there, or
//! files the host agent put there, as Nomad's templates do), copied into the task's
//! `/secrets` tmpfs, which is mounted over it: in an exec task the host's copy is hidden,
//! and the secrets the task sees never touch a disk from then on.
//!
//! The source is treated as hostile (it may come from an artifact): only regular files
//! and directories are copied, nothing is followed (`O_NOFOLLOW` at every step, through
//! directory fds opened before the mount), the depth is bounded, and the tmpfs's own size
//! bounds the total; each copy is owned by the task user, with its mode but no set-id bit.

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Directories below `secrets/` followed at most.
const MAX_DEPTH: usize = 16;

/// The host's `secrets/` (at `dir`), opened before the tmpfs covers it.
pub fn open_source(dir: &std::path::Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Copies the tree below `from` into `to` (the new tmpfs), owned by `owner`.
pub fn copy(from: BorrowedFd<'_>, to: BorrowedFd<'_>, owner: (u32, u32)) -> io::Result<()> {
    copy_dir(from, to, owner, 0)
}

fn open_at(dir: BorrowedFd<'_>, name: &std::ffi::CStr, flags: OFlag) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

fn copy_dir(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    owner: (u32, u32),
    depth: usize,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other("directories nested too deep"));
    }
    let listing = nix::dir::Dir::from_fd(nix::unistd::dup(from)?)?;
    let mut names: Vec<std::ffi::CString> = vec![];
    for entry in listing.into_iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    for name in &names {
        let name = name.as_c_str();
        // Opened without following, then looked at: a link or a device is skipped.
        let Ok(src) = open_at(from, name, OFlag::O_RDONLY | OFlag::O_NONBLOCK) else {
            continue;
        };
        let st = fstat(src.as_fd())?;
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let mode = Mode::from_bits_truncate(st.st_mode & 0o777);
        if kind == SFlag::S_IFDIR {
            nix::sys::stat::mkdirat(to, name, Mode::from_bits_truncate(0o700))?;
            let dst = open_at(to, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
            copy_dir(src.as_fd(), dst.as_fd(), owner, depth + 1)?;
            give(dst.as_fd(), owner, mode)?;
        } else if kind == SFlag::S_IFREG {
            let dst = open_at(to, name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL)?;
            let mut r = std::fs::File::from(src);
            let mut w = std::fs::File::from(dst);
            std::io::copy(&mut r, &mut w)?;
            give(w.as_fd(), owner, mode)?;
        }
    }
    Ok(())
}

fn give(fd: BorrowedFd<'_>, owner: (u32, u32), mode: Mode) -> io::Result<()> {
    nix::unistd::fchown(
        fd,
        Some(nix::unistd::Uid::from_raw(owner.0)),
        Some(nix::unistd::Gid::from_raw(owner.1)),
    )?;
    nix::sys::stat::fchmod(fd, mode)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_files_and_dirs_and_skips_links_and_fifos() {
        let base = std::env::temp_dir().join(format!("execdriver-secrets-{}", std::process::id()));
        let (src, dst) = (base.join("src"), base.join("dst"));
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(src.join("token"), "s3cret").unwrap();
        std::fs::set_permissions(src.join("token"), std::fs::Permissions::from_mode(0o4750))
            .unwrap();
        std::fs::write(src.join("d/e/deep"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", src.join("link")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let from = open_source(&src).unwrap();
        let to = open_source(&dst).unwrap();
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        copy(from.as_fd(), to.as_fd(), me).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.join("token")).unwrap(),
            "s3cret"
        );
        let mode = std::fs::metadata(dst.join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o750, "no set-id bit: {mode:o}");
        assert_eq!(std::fs::read_to_string(dst.join("d/e/deep")).unwrap(), "x");
        assert!(std::fs::symlink_metadata(dst.join("link")).is_err());
        assert!(std::fs::symlink_metadata(dst.join("fifo")).is_err());
        // A link as the top directory itself is refused.
        std::os::unix::fs::symlink(&src, base.join("ln")).unwrap();
        assert!(open_source(&base.join("ln")).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
