//! The task's root, built by carrying out its mount plan ([`crate::proto::mounts`]) in a
//! private mount namespace: the task dir is the root, the `chroot_env` entries are
//! read-only bind mounts (never copies), `/alloc` is shared, `/secrets` a private tmpfs,
//! `/dev` minimal and `/proc` fresh. Nothing propagates back to the host: the namespace
//! is made a slave of the host's before any mount.
//!
//! Each step is carried out in one place (`carry_out`): with what was made for it
//! ahead when there is one ([`stage`]: a prestarted command process makes the
//! task-independent steps as detached mounts while it waits), else made there and then.
//! A fresh start `pivot_root`s into the task dir and detaches the host's tree. A prestarted
//! command process leaves the host's tree while it waits ([`Staged::enter_skeleton`]): at
//! the start it mounts the task dir inside an empty skeleton root and `chroot`s.

use crate::error::{Code, Error, Result};
use crate::proto::mounts::Step;
use crate::proto::spec::Isolation;
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
/// the whole tree, submounts included; kernels before 5.12 get a remount of each mount of
/// the tree ([`remount_tree`]).
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
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | extra;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    remount_tree(dst, flags)
}

/// Adds `flags` to the mount at `dst` and to every mount below it (a bind remount sets
/// one mount's flags only: a submount of a `chroot_env` source would keep its setuid
/// files and devices). Each keeps the flags it had. A mount that cannot be remounted
/// fails the start.
fn remount_tree(dst: &Path, flags: MsFlags) -> Result<()> {
    let top = std::fs::canonicalize(dst).map_err(|e| err("resolving", dst, e))?;
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| err("reading the mount table for", dst, e))?;
    let mut tree: Vec<(PathBuf, MsFlags)> = table
        .lines()
        .filter_map(mountinfo_entry)
        .filter(|(at, _)| at.starts_with(&top))
        .collect();
    if tree.is_empty() {
        tree.push((top, MsFlags::empty()));
    }
    for (at, had) in tree {
        let all = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | had;
        mount(None::<&str>, &at, None::<&str>, all, None::<&str>)
            .map_err(|e| err("remounting", &at, e))?;
    }
    Ok(())
}

/// The mount point of a `/proc/self/mountinfo` line and the per-mount flags a bind
/// remount sets (so that it keeps them).
fn mountinfo_entry(line: &str) -> Option<(PathBuf, MsFlags)> {
    let mut fields = line.split(' ');
    let at = fields.nth(4)?;
    let opts = fields.next()?;
    let mut had = MsFlags::empty();
    for o in opts.split(',') {
        had |= match o {
            "ro" => MsFlags::MS_RDONLY,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            _ => MsFlags::empty(),
        };
    }
    Some((PathBuf::from(unescape_octal(at)), had))
}

/// A mountinfo path: the kernel writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
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

/// Steps of the mount plan made ahead of a task, detached, by a prestarted command process
/// while it waits in its own mount namespace (see [`stage`]): at the start each is
/// attached into the root with one `move_mount` instead of being made then.
pub struct Staged {
    /// Each step made ahead, with what it made.
    made: Vec<(Step, Made)>,
    /// Set once we sit in a skeleton root ([`Staged::enter_skeleton`]): a detached copy
    /// of the host's mount tree, where the task's host paths are looked up.
    host: Option<OwnedFd>,
}

/// What a step made ahead: detached mounts, attached at the start.
enum Made {
    /// A bind (its flags set), a tmpfs or a procfs.
    Mount(OwnedFd),
    /// `/dev` (read-only once populated), its devpts and its shm tmpfs: attached one
    /// below the other.
    Dev {
        dev: OwnedFd,
        pts: OwnedFd,
        shm: OwnedFd,
    },
}

impl Staged {
    /// What was made ahead for `step`, if it was (once).
    fn take(&mut self, step: &Step) -> Option<Made> {
        let i = self.made.iter().position(|(s, _)| s == step)?;
        Some(self.made.swap_remove(i).1)
    }
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

/// Makes the task-independent steps of a mount plan ([`Step::ahead`]; others are left
/// for the start), detached. Call in a [`private_namespace`], in the pid namespace the
/// command will run in (procfs shows the pid namespace of its creator).
pub fn stage(steps: &[Step]) -> Result<Staged> {
    let mut made = vec![];
    for step in steps.iter().filter(|s| s.ahead()) {
        if let Some(m) = make_ahead(step)? {
            made.push((step.clone(), m));
        }
    }
    Ok(Staged { made, host: None })
}

/// `step` made as detached mounts (see [`stage`]); `None` for a step that is not.
fn make_ahead(step: &Step) -> Result<Option<Made>> {
    let (nosuid, nodev, noexec) = (
        mountapi::ATTR_NOSUID,
        mountapi::ATTR_NODEV,
        mountapi::ATTR_NOEXEC,
    );
    let fs = |t: &str, opts: &[&str], attrs: u64, at: &str| {
        mountapi::new_fs(t, opts, attrs)
            .map_err(|e| err(&format!("creating a {t} for"), Path::new(at), e))
    };
    let made = match step {
        Step::Bind(b) => {
            let fd =
                mountapi::clone_tree(&b.src).map_err(|e| err("cloning the mount", &b.src, e))?;
            mountapi::set_attrs_fd(fd.as_fd(), bind_attrs(b.readonly, false))
                .map_err(|e| err("setting flags of the clone of", &b.src, e))?;
            Made::Mount(fd)
        }
        Step::Secrets { size } => {
            let size = format!("size={size}");
            let opts = [size.as_str(), "mode=0700"];
            Made::Mount(fs("tmpfs", &opts, nosuid | nodev | noexec, "/secrets")?)
        }
        Step::Dev => {
            let dev = fs("tmpfs", &DEV_OPTS, nosuid | noexec, "/dev")?;
            populate_dev(dev.as_fd(), Path::new("/dev"))?;
            // Read-only once populated (nothing is attached below it yet: pts and shm are
            // attached at the start and stay writable).
            mountapi::set_attrs_fd(dev.as_fd(), mountapi::ATTR_RDONLY)
                .map_err(|e| err("making read-only", Path::new("/dev"), e))?;
            Made::Dev {
                dev,
                pts: fs("devpts", &PTS_OPTS, nosuid | noexec, "/dev/pts")?,
                shm: fs("tmpfs", &SHM_OPTS, nosuid | nodev | noexec, "/dev/shm")?,
            }
        }
        Step::Proc => Made::Mount(fs("proc", &[PROC_HIDEPID], nosuid | nodev | noexec, "/proc")?),
        _ => return Ok(None),
    };
    Ok(Some(made))
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

/// Builds the task's root, carrying out its mount plan step by step, and enters it.
fn build(iso: &Isolation, mut staged: Option<Staged>) -> Result<()> {
    let host_tree = staged.as_mut().and_then(|s| s.host.take());
    let host = match &host_tree {
        Some(fd) => Host::Via(fd.as_fd()),
        None => Host::Here,
    };
    let mut root = None;
    for step in &iso.mounts {
        let ready = staged.as_mut().and_then(|s| s.take(step));
        match (step, root) {
            (Step::Root, None) => root = Some(mount_root(iso, host)?),
            (_, Some(root)) if *step != Step::Root => {
                carry_out(step, root, iso, host, ready)?;
            }
            _ => return Err(plan_error(step)),
        }
    }
    let root = root.ok_or_else(|| plan_error(&Step::Root))?;
    // A skeleton root holds nothing of the host to pivot away from: it is `chroot`ed.
    enter_root(root, iso.no_pivot_root || host_tree.is_some())
}

/// A plan that does not start with its one [`Step::Root`]: the host never makes one.
fn plan_error(step: &Step) -> Error {
    Error::new(
        Code::Internal,
        format!("mount plan: {step:?} out of place (the root comes first, once)"),
    )
}

/// Carries out one step of the plan (any but [`Step::Root`]) inside `root`: with what
/// was made for it ahead (`ready`), else making it now.
fn carry_out(
    step: &Step,
    root: &Path,
    iso: &Isolation,
    host: Host<'_>,
    ready: Option<Made>,
) -> Result<()> {
    match (step, ready) {
        (Step::Root, _) => Err(plan_error(step)),
        (Step::Symlink { at, target }, _) => make_symlink(root, at, target),
        (Step::Bind(b), ready) => {
            let at = make_mountpoint(root, &b.dst, b.file)?;
            match ready {
                Some(Made::Mount(fd)) => attach(&fd, &at),
                _ => host.bind(&b.src, &at, b.readonly, MsFlags::empty()),
            }
        }
        (Step::Alloc, _) => mount_alloc(root, &iso.alloc, host),
        (Step::Secrets { size }, ready) => mount_secrets(root, *size, iso, ready),
        (Step::Tmp, _) => make_tmp(root),
        (Step::Dev, Some(Made::Dev { dev, pts, shm })) => {
            let at = make_mountpoint(root, Path::new("dev"), false)?;
            attach(&dev, &at)?;
            attach(&pts, &at.join("pts"))?;
            attach(&shm, &at.join("shm"))
        }
        (Step::Dev, _) => build_dev(&make_mountpoint(root, Path::new("dev"), false)?),
        (Step::Proc, ready) => {
            let at = make_mountpoint(root, Path::new("proc"), false)?;
            match ready {
                Some(Made::Mount(fd)) => attach(&fd, &at),
                _ => mount_fs(
                    "proc",
                    &at,
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    PROC_HIDEPID,
                ),
            }
        }
        (Step::MaskProc, _) => mask_proc(&root.join("proc"), &root.join("dev")),
    }
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

/// A top-level link of the root (`/bin -> usr/bin`): checked where the host made it,
/// made where missing; anything else in its place is an error.
fn make_symlink(root: &Path, dst: &Path, target: &Path) -> Result<()> {
    // One readlink where the host made the link (`prepare::make_task_dirs`).
    let at = inside(root, dst);
    match std::fs::read_link(&at) {
        Ok(t) if t == target => Ok(()),
        Ok(_) => Err(err(
            "unexpected symlink at",
            &at,
            "it does not match the host's",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::os::unix::fs::symlink(target, &at).map_err(|e| err("creating symlink", &at, e))
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(err(
            "expected a symlink at",
            &at,
            "found a file or directory",
        )),
        Err(e) => Err(err("reading the symlink at", &at, e)),
    }
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
fn mount_secrets(root: &Path, size: u64, iso: &Isolation, ready: Option<Made>) -> Result<()> {
    let secrets = make_mountpoint(root, Path::new("secrets"), false)?;
    // What the host put there, before the tmpfs covers it.
    let source = crate::supervisor::secrets::open_source(&secrets)
        .map_err(|e| err("opening", &secrets, e))?;
    // Made ahead (the same options), or now; given to the task user by a chown of its
    // root either way (no uid= option: the two look alike in mountinfo).
    let owner = (
        Some(nix::unistd::Uid::from_raw(iso.uid)),
        Some(nix::unistd::Gid::from_raw(iso.gid)),
    );
    let chowned = match ready {
        Some(Made::Mount(fd)) => {
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
        _ => {
            mount_fs(
                "tmpfs",
                &secrets,
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                &format!("size={size},mode=0700"),
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
