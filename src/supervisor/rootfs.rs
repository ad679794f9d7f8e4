//! The task's root: a private mount namespace in which the task dir is the root, the
//! `chroot_env` entries are read-only bind mounts (never copies), `/alloc` is shared,
//! `/secrets` a private tmpfs, `/dev` minimal and `/proc` fresh. Nothing propagates back
//! to the host: the namespace is made a slave of the host's before any mount.
//!
//! A fresh start `pivot_root`s into the task dir and detaches the host's tree. A prestarted supervisor's
//! command process leaves the host's tree while it waits ([`Staged::enter_skeleton`]):
//! at the start it mounts the task dir inside an empty skeleton root and `chroot`s.

use crate::error::{Code, Error, Result};
use crate::proto::spec::{Bind, Isolation};
use crate::sys::mount as mountapi;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
    let set = bind_attrs(readonly, extra.contains(MsFlags::MS_NOEXEC));
    if mountapi::set_attrs_at(dst, set).is_ok() {
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

/// The ATTR_* bits of a bind: nosuid, nodev, and read-only / noexec when asked.
fn bind_attrs(readonly: bool, noexec: bool) -> u64 {
    let mut set = mountapi::ATTR_NOSUID | mountapi::ATTR_NODEV;
    if readonly {
        set |= mountapi::ATTR_RDONLY;
    }
    if noexec {
        set |= mountapi::ATTR_NOEXEC;
    }
    set
}

fn mount_fs(fstype: &str, dst: &Path, flags: MsFlags, data: &str) -> Result<()> {
    mount(Some(fstype), dst, Some(fstype), flags, Some(data))
        .map_err(|e| err(&format!("mounting {fstype} at"), dst, e))
}

/// Mounts made ahead of a task, detached, by a prestarted supervisor's command process while
/// it waits in its own mount namespace (see [`stage`]): at the start each is attached
/// into the root with one `move_mount` instead of being built then.
pub struct Staged {
    /// The `chroot_env` binds, read-only, nosuid, nodev.
    binds: Vec<(Bind, OwnedFd)>,
    /// /dev (a tmpfs with its nodes and links), its devpts and its shm tmpfs.
    dev: [OwnedFd; 3],
    /// A procfs of our pid namespace.
    proc_fs: OwnedFd,
    /// The task's `/secrets`: a tmpfs of [`crate::proto::spec::SECRETS_SIZE`], 0700, given to
    /// the task user at the start (`fchownat` of its root).
    secrets: Option<OwnedFd>,
    /// Set once we sit in a skeleton root ([`Staged::enter_skeleton`]): a detached copy
    /// of the host's mount tree, where the task's host paths are looked up.
    host: Option<OwnedFd>,
}

/// Where a staged command process that sits in its skeleton root mounts the task root, then `chroot`s.
const SKELETON_ROOT: &str = "/root";

impl Staged {
    /// Leaves the host's mount tree ahead of the task, so that no old root is left to
    /// detach at the start: that detach waits for an RCU grace period, ~0.27 ms of an exec
    /// start back to back on two busy vCPUs (25 µs on an idle machine). Our namespace's
    /// root becomes a small empty tmpfs holding only [`SKELETON_ROOT`]; the old root is
    /// detached now. At the start the task dir is mounted there from `host` (a detached
    /// copy of the host's mount tree, made in our namespace before this call; the
    /// supervisor takes its own reference to it, so that its dissolution waits for no one
    /// on the start's path), and the command is `chroot`ed into it. A `chroot` escape (CAP_SYS_CHROOT) then only reaches
    /// the empty tmpfs: nothing of the host is left in the namespace.
    pub fn enter_skeleton(&mut self, host: OwnedFd) -> Result<()> {
        let slash = Path::new("/");
        let skel = mountapi::new_fs(
            "tmpfs",
            &["mode=755", "size=64k"],
            mountapi::ATTR_NOSUID | mountapi::ATTR_NODEV | mountapi::ATTR_NOEXEC,
        )
        .map_err(|e| err("creating the skeleton root for", slash, e))?;
        attach(&skel, slash)?;
        nix::unistd::fchdir(&skel).map_err(|e| err("entering the skeleton root on", slash, e))?;
        nix::unistd::pivot_root(".", ".")
            .map_err(|e| err("pivot_root to the skeleton on", slash, e))?;
        umount2(".", MntFlags::MNT_DETACH)
            .map_err(|e| err("detaching the host's root from", slash, e))?;
        nix::unistd::chdir("/").map_err(|e| err("chdir to", slash, e))?;
        std::fs::create_dir(SKELETON_ROOT)
            .map_err(|e| err("creating", Path::new(SKELETON_ROOT), e))?;
        self.host = Some(host);
        Ok(())
    }
}

impl Staged {
    /// Opens the host file `path` for reading, looked up where this command process finds the
    /// host's paths (in its copy of the host's mount tree once it left it).
    pub fn open_host(&self, path: &Path) -> std::io::Result<std::fs::File> {
        let flags = libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK;
        match &self.host {
            Some(h) => mountapi::open_in_with(h.as_fd(), path, flags).map(std::fs::File::from),
            None => {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                    .open(path)
            }
        }
    }
}

/// `stat` of `path` looked up in `host`.
fn stat_in(host: BorrowedFd<'_>, path: &Path) -> std::io::Result<nix::sys::stat::FileStat> {
    mountapi::open_in(host, path)
        .and_then(|fd| nix::sys::stat::fstat(&fd).map_err(std::io::Error::from))
}

/// Checks that `path` looked up in `host` is the directory the host made (`id`).
fn same_dir(host: BorrowedFd<'_>, path: &Path, id: Option<(u64, u64)>) -> Result<()> {
    let found = stat_in(host, path)
        .map(|st| (st.st_dev, st.st_ino))
        .map_err(|e| err("looking up", path, e))?;
    if id.is_some_and(|id| id != found) {
        return Err(err(
            "looking up",
            path,
            "not the directory the host made (its mounts changed since the supervisor was prepared)",
        ));
    }
    Ok(())
}

/// Where the task's host paths (its dir, the alloc dir, `chroot_env` sources) are found.
#[derive(Clone, Copy)]
enum Host<'a> {
    /// In our mount namespace, by path.
    Here,
    /// In a detached copy of the host's mount tree ([`Staged::enter_skeleton`]).
    Via(BorrowedFd<'a>),
}

impl Host<'_> {
    /// [`bind`] of the host path `src` at `dst`.
    fn bind(self, src: &Path, dst: &Path, readonly: bool, extra: MsFlags) -> Result<()> {
        match self {
            Host::Here => bind(src, dst, readonly, extra),
            Host::Via(h) => {
                let fd =
                    mountapi::clone_in(h, src).map_err(|e| err("cloning the mount", src, e))?;
                let set = bind_attrs(readonly, extra.contains(MsFlags::MS_NOEXEC));
                mountapi::set_attrs_fd(fd.as_fd(), set)
                    .map_err(|e| err("setting flags of the clone of", src, e))?;
                attach(&fd, dst)
            }
        }
    }
}

/// Makes the calling process's mount namespace private (a slave of the host's): nothing
/// it mounts later propagates back to the host.
pub fn private_namespace() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| err("unshare mount namespace", Path::new("/"), e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| err("making mounts private at", Path::new("/"), e))
}

/// Prepares, detached, what every exec task's root has: the `binds` (the plugin's
/// `chroot_env`), /dev and /proc. Call in a [`private_namespace`], in the pid namespace
/// the command will run in (procfs shows the pid namespace of its creator).
pub fn stage(binds: &[Bind]) -> Result<Staged> {
    let mut staged = vec![];
    for b in binds {
        let fd = mountapi::clone_tree(&b.src).map_err(|e| err("cloning the mount", &b.src, e))?;
        mountapi::set_attrs_fd(fd.as_fd(), bind_attrs(b.readonly, false))
            .map_err(|e| err("setting flags of the clone of", &b.src, e))?;
        staged.push((b.clone(), fd));
    }
    let fs = |t: &str, opts: &[&str], attrs: u64| {
        mountapi::new_fs(t, opts, attrs)
            .map_err(|e| err(&format!("creating a {t} for"), Path::new("/dev"), e))
    };
    let (nosuid, nodev, noexec) = (
        mountapi::ATTR_NOSUID,
        mountapi::ATTR_NODEV,
        mountapi::ATTR_NOEXEC,
    );
    let dev = fs("tmpfs", &DEV_OPTS, nosuid | noexec)?;
    populate_dev(dev.as_fd(), Path::new("/dev"))?;
    // Read-only once populated (nothing is attached below it yet: pts and shm are
    // attached at the start and stay writable).
    mountapi::set_attrs_fd(dev.as_fd(), mountapi::ATTR_RDONLY)
        .map_err(|e| err("making read-only", Path::new("/dev"), e))?;
    let pts = fs("devpts", &PTS_OPTS, nosuid | noexec)?;
    let shm = fs("tmpfs", &SHM_OPTS, nosuid | nodev | noexec)?;
    let proc_fs = mountapi::new_fs("proc", &[PROC_HIDEPID], nosuid | nodev | noexec)
        .map_err(|e| err("creating a procfs for", Path::new("/proc"), e))?;
    let size = format!("size={}", crate::proto::spec::SECRETS_SIZE);
    let secrets = mountapi::new_fs("tmpfs", &[&size, "mode=0700"], nosuid | nodev | noexec)
        .map_err(|e| err("creating a tmpfs for", Path::new("/secrets"), e))?;
    Ok(Staged {
        binds: staged,
        dev: [dev, pts, shm],
        proc_fs,
        secrets: Some(secrets),
        host: None,
    })
}

const DEV_OPTS: [&str; 2] = ["mode=755", "size=65536k"];
const PTS_OPTS: [&str; 3] = ["newinstance", "ptmxmode=0666", "mode=0620"];
const SHM_OPTS: [&str; 2] = ["mode=1777", "size=65536k"];

/// Builds the root and enters it. Called in the command child after fork.
pub fn enter(iso: &Isolation) -> Result<()> {
    private_namespace()?;
    build(iso, None)
}

/// [`enter`] for a process that made its [`private_namespace`] and [`stage`]d mounts
/// ahead: those are attached instead of built (any bind not staged is made as usual).
pub fn enter_staged(iso: &Isolation, staged: Staged) -> Result<()> {
    build(iso, Some(staged))
}

fn attach(fd: &OwnedFd, at: &Path) -> Result<()> {
    mountapi::move_to(fd.as_fd(), at).map_err(|e| err("attaching a prepared mount at", at, e))
}

/// Builds the task's root, one stage of its mount plan after the other, and enters it.
fn build(iso: &Isolation, mut staged: Option<Staged>) -> Result<()> {
    let host_tree = staged.as_mut().and_then(|s| s.host.take());
    let host = match &host_tree {
        Some(fd) => Host::Via(fd.as_fd()),
        None => Host::Here,
    };
    let root = mount_root(iso, host)?;
    make_symlinks(root, &iso.symlinks)?;
    mount_binds(root, &iso.binds, host, &mut staged)?;
    mount_alloc(root, &iso.alloc, host)?;
    mount_secrets(root, iso, &mut staged)?;
    make_tmp(root)?;
    let (dev, proc_dir) = mount_dev_proc(root, staged.as_ref())?;
    mask_proc(&proc_dir, &dev)?;
    // A skeleton root holds nothing of the host to pivot away from: it is `chroot`ed.
    enter_root(root, iso.no_pivot_root || host_tree.is_some())
}

/// Binds the task dir as the root (nosuid, nodev) and returns where it is mounted: in
/// place, or at [`SKELETON_ROOT`] once its identity in the host's tree is checked.
fn mount_root<'a>(iso: &'a Isolation, host: Host<'_>) -> Result<&'a Path> {
    // The root, like every writable mount of the task, is nosuid and nodev: a setuid
    // file or a device node the task makes there is inert, for the task and for the host
    // (the task dir is a host directory).
    match host {
        Host::Here => {
            bind(&iso.root, &iso.root, false, MsFlags::empty())?;
            Ok(&iso.root)
        }
        Host::Via(h) => {
            // Before anything is written there: the host's mounts may have changed since
            // the copy was made (the supervisor checks too, and then starts the task the
            // usual way).
            same_dir(h, &iso.root, iso.root_id)?;
            same_dir(h, &iso.alloc, iso.alloc_id)?;
            host.bind(&iso.root, Path::new(SKELETON_ROOT), false, MsFlags::empty())?;
            Ok(Path::new(SKELETON_ROOT))
        }
    }
}

/// The root's top-level links (`/bin -> usr/bin`): checked where the host made them,
/// made where missing; anything else in their place is an error.
fn make_symlinks(root: &Path, symlinks: &[(PathBuf, PathBuf)]) -> Result<()> {
    for (dst, target) in symlinks {
        // One readlink where the host made the link (`prepare::make_task_dirs`).
        let at = inside(root, dst);
        match std::fs::read_link(&at) {
            Ok(t) if t == *target => {}
            Ok(_) => {
                return Err(err(
                    "unexpected symlink at",
                    &at,
                    "it does not match the host's",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::os::unix::fs::symlink(target, &at)
                    .map_err(|e| err("creating symlink", &at, e))?
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(err(
                    "expected a symlink at",
                    &at,
                    "found a file or directory",
                ));
            }
            Err(e) => return Err(err("reading the symlink at", &at, e)),
        }
    }
    Ok(())
}

/// The `chroot_env` binds: attached where `staged` holds them, else bound now.
fn mount_binds(
    root: &Path,
    binds: &[Bind],
    host: Host<'_>,
    staged: &mut Option<Staged>,
) -> Result<()> {
    for b in binds {
        let at = make_mountpoint(root, &b.dst, b.file)?;
        let ready = staged.as_mut().and_then(|s| {
            s.binds
                .iter()
                .position(|(sb, _)| sb == b)
                .map(|i| s.binds.swap_remove(i).1)
        });
        match ready {
            Some(fd) => attach(&fd, &at)?,
            None => host.bind(&b.src, &at, b.readonly, MsFlags::empty())?,
        }
    }
    Ok(())
}

/// /alloc shared and writable, its logs read-only.
fn mount_alloc(root: &Path, alloc_src: &Path, host: Host<'_>) -> Result<()> {
    let alloc = make_mountpoint(root, Path::new("alloc"), false)?;
    host.bind(alloc_src, &alloc, false, MsFlags::empty())?;
    let logs = alloc.join("logs");
    if logs.is_dir() {
        bind(&logs, &logs, true, MsFlags::MS_NOEXEC)?;
    }
    Ok(())
}

/// /secrets: small private tmpfs, noexec, 0700, owned by the task user, holding a copy of
/// what the host's `secrets/` held (see [`crate::supervisor::secrets`]).
fn mount_secrets(root: &Path, iso: &Isolation, staged: &mut Option<Staged>) -> Result<()> {
    let secrets = make_mountpoint(root, Path::new("secrets"), false)?;
    // What the host put there, before the tmpfs covers it.
    let source = crate::supervisor::secrets::open_source(&secrets)
        .map_err(|e| err("opening", &secrets, e))?;
    // Made ahead by a staged command process (the same options), or now; given to the task user by a
    // chown of its root either way (no uid= option: the two look alike in mountinfo).
    let ready = staged
        .as_mut()
        .and_then(|s| s.secrets.take())
        .filter(|_| iso.secrets_size == crate::proto::spec::SECRETS_SIZE);
    let owner = (
        Some(nix::unistd::Uid::from_raw(iso.uid)),
        Some(nix::unistd::Gid::from_raw(iso.gid)),
    );
    let chowned = match ready {
        Some(fd) => {
            let r = nix::unistd::fchownat(
                fd.as_fd(),
                "",
                owner.0,
                owner.1,
                nix::fcntl::AtFlags::AT_EMPTY_PATH,
            );
            attach(&fd, &secrets)?;
            r
        }
        None => {
            mount_fs(
                "tmpfs",
                &secrets,
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                &format!("size={},mode=0700", iso.secrets_size),
            )?;
            nix::unistd::chown(&secrets, owner.0, owner.1)
        }
    };
    chowned.map_err(|e| err("giving the task user", &secrets, e))?;
    let copied = crate::supervisor::secrets::open_source(&secrets).and_then(|to| {
        crate::supervisor::secrets::copy(source.as_fd(), to.as_fd(), (iso.uid, iso.gid))
    });
    copied.map_err(|e| err("copying the task's secrets into", &secrets, e))
}

/// /tmp: a directory of the root, 1777.
fn make_tmp(root: &Path) -> Result<()> {
    let tmp = make_mountpoint(root, Path::new("tmp"), false)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| err("chmod", &tmp, e))
}

/// /dev and /proc: attached from `staged`, else built now. Returns their paths.
fn mount_dev_proc(root: &Path, staged: Option<&Staged>) -> Result<(PathBuf, PathBuf)> {
    let dev = make_mountpoint(root, Path::new("dev"), false)?;
    let proc_dir = make_mountpoint(root, Path::new("proc"), false)?;
    match staged {
        Some(s) => {
            attach(&s.dev[0], &dev)?;
            attach(&s.dev[1], &dev.join("pts"))?;
            attach(&s.dev[2], &dev.join("shm"))?;
            attach(&s.proc_fs, &proc_dir)?;
        }
        None => {
            build_dev(&dev)?;
            mount_fs(
                "proc",
                &proc_dir,
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                PROC_HIDEPID,
            )?;
        }
    }
    Ok((dev, proc_dir))
}

/// Makes `root` the process's root: `chroot` when `chroot` is set, else `pivot_root`
/// with the old root detached; then `chdir("/")`.
fn enter_root(root: &Path, chroot: bool) -> Result<()> {
    if chroot {
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

/// A minimal /dev at `dev`: a tmpfs with nodes of the harmless character devices, a
/// private devpts, a shm tmpfs and the usual links.
fn build_dev(dev: &Path) -> Result<()> {
    mount_fs(
        "tmpfs",
        dev,
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        &DEV_OPTS.join(","),
    )?;
    let dir = std::fs::File::open(dev).map_err(|e| err("opening", dev, e))?;
    populate_dev(dir.as_fd(), dev)?;
    mount_fs(
        "devpts",
        &dev.join("pts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        &PTS_OPTS.join(","),
    )?;
    mount_fs(
        "tmpfs",
        &dev.join("shm"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        &SHM_OPTS.join(","),
    )?;
    // Read-only once populated (this mount only: pts and shm stay writable).
    remount_ro(dev, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)
}

/// Makes the mount at `at` read-only, keeping `keep` (its other flags: a remount sets
/// them all). Only that mount, not those below it.
fn remount_ro(at: &Path, keep: MsFlags) -> Result<()> {
    mount(
        None::<&str>,
        at,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep,
        None::<&str>,
    )
    .map_err(|e| err("remounting read-only", at, e))
}

/// The parts of `/proc` a task has no business with, as runc leaves them: read-only
/// (`sys`: kernel tunables such as `core_pattern`; `sysrq-trigger`, `irq`, `bus`, `fs`)
/// or masked (the files of [`PROC_MASKED_FILES`]: the task's `/dev/null` bound over them;
/// the dirs of [`PROC_MASKED_DIRS`]: an empty read-only tmpfs). A path this kernel lacks is
/// skipped.
pub fn mask_proc(proc_dir: &Path, dev: &Path) -> Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let missing = |e: &nix::errno::Errno| *e == nix::errno::Errno::ENOENT;
    for name in PROC_READONLY {
        let p = proc_dir.join(name);
        match mount(
            Some(&p),
            &p,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Err(e) if missing(&e) => continue,
            r => r.map_err(|e| err("bind-mounting", &p, e))?,
        }
        remount_ro(&p, flags)?;
    }
    let null = dev.join("null");
    for name in PROC_MASKED_FILES {
        let p = proc_dir.join(name);
        match mount(
            Some(&null),
            &p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            Err(e) if missing(&e) => {}
            r => r.map_err(|e| err("masking", &p, e))?,
        }
    }
    for name in PROC_MASKED_DIRS {
        let p = proc_dir.join(name);
        match mount(
            Some("tmpfs"),
            &p,
            Some("tmpfs"),
            flags | MsFlags::MS_RDONLY,
            Some("mode=555"),
        ) {
            Err(e) if missing(&e) => {}
            r => r.map_err(|e| err("masking", &p, e))?,
        }
    }
    Ok(())
}

/// The task's procfs shows only its user's processes: the supervisor (root, pid 1 of a
/// private pid namespace) and its host mount table stay out of a non-root task's sight.
const PROC_HIDEPID: &str = "hidepid=2";

/// `/proc` entries made read-only ([`mask_proc`]).
pub const PROC_READONLY: [&str; 5] = ["sys", "sysrq-trigger", "irq", "bus", "fs"];
/// `/proc` files masked with `/dev/null`.
pub const PROC_MASKED_FILES: [&str; 7] = [
    "kcore",
    "keys",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "latency_stats",
    "interrupts",
];
/// `/proc` directories masked with an empty tmpfs.
pub const PROC_MASKED_DIRS: [&str; 3] = ["acpi", "asound", "scsi"];

/// Fills the fresh tmpfs `dir` (shown as `shown` in errors) of a /dev: the harmless
/// character devices as nodes with the host's numbers and modes (we are root in the
/// host's user namespace; one mknod instead of a bind and a remount each), the `pts` and
/// `shm` mount points and the usual links.
fn populate_dev(dir: BorrowedFd<'_>, shown: &Path) -> Result<()> {
    use nix::sys::stat::{Mode, SFlag, makedev, mkdirat, mknodat};
    // The kernel's fixed numbers for these (Documentation/admin-guide/devices.txt), all
    // 0666 as runc makes them. The umask is cleared meanwhile so that the modes are
    // exact without a chmod per node (this process's own umask: the supervisor's child).
    let old = nix::sys::stat::umask(Mode::empty());
    let made = (|| -> Result<()> {
        for (name, major, minor) in [
            ("null", 1, 3),
            ("zero", 1, 5),
            ("full", 1, 7),
            ("random", 1, 8),
            ("urandom", 1, 9),
            ("tty", 5, 0),
        ] {
            let mode = Mode::from_bits_truncate(0o666);
            mknodat(dir, name, SFlag::S_IFCHR, mode, makedev(major, minor))
                .map_err(|e| err("creating device", &shown.join(name), e))?;
        }
        for d in ["pts", "shm"] {
            mkdirat(dir, d, Mode::from_bits_truncate(0o755))
                .map_err(|e| err("creating", &shown.join(d), e))?;
        }
        Ok(())
    })();
    nix::sys::stat::umask(old);
    made?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        nix::unistd::symlinkat(target, dir, link)
            .map_err(|e| err("creating link", &shown.join(link), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory looked up in a detached copy of a mount tree is checked against the
    /// (st_dev, st_ino) the host saw; a mismatch is an error, before anything is mounted.
    #[test]
    fn same_dir_checks_identity_in_a_detached_copy() {
        if crate::sys::euid() != 0 {
            eprintln!("SKIP: open_tree needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("execdriver-samedir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let copy = mountapi::clone_tree(&dir).unwrap();
        let id = crate::sys::file_id(&dir.join("sub"));
        assert!(id.is_some());
        // Looked up with the copy as the root: "/sub" is dir/sub.
        same_dir(copy.as_fd(), Path::new("/sub"), id).unwrap();
        same_dir(copy.as_fd(), Path::new("/sub"), None).unwrap();
        let e = same_dir(copy.as_fd(), Path::new("/sub"), Some((1, 1))).unwrap_err();
        assert!(e.message.contains("not the directory the host made"), "{e}");
        assert!(same_dir(copy.as_fd(), Path::new("/missing"), id).is_err());
        drop(copy);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
