//! Host-side preparation of a task before its supervisor starts: directories,
//! the command's path, the bind mounts of its root.

use crate::config::{PluginConfig, TaskRequest};
use crate::error::{Code, Error, Result};
use crate::proto::mounts::Step;
use crate::proto::spec::Bind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Directories `driver_start` created: removed again when dropped, unless the start
/// [`Created::commit`]s (a failed start, or one that panicked and was caught at the C
/// boundary, leaves none of them behind); and the lock on the task's state dir, held
/// until the start has returned ([`crate::proto::spec::hold`]).
#[derive(Default)]
pub struct Created {
    dirs: Vec<PathBuf>,
    state_lock: Option<std::fs::File>,
}

impl Drop for Created {
    fn drop(&mut self) {
        self.undo();
    }
}

impl Created {
    /// The start has committed: what it made stays.
    pub fn commit(mut self) {
        self.dirs.clear();
    }

    /// Releases the lock on the task's state dir: a start that failed before its go,
    /// about to let its supervisor go.
    pub fn let_go_of_state(&mut self) {
        self.state_lock = None;
    }

    /// Removes, newest first, everything created (with all content put in since).
    fn undo(&mut self) {
        while let Some(d) = self.dirs.pop() {
            match std::fs::symlink_metadata(&d) {
                Ok(m) if m.is_dir() => {
                    let _ = std::fs::remove_dir_all(&d);
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(&d);
                }
                Err(_) => {}
            }
        }
    }
}

/// Creates `path` with exactly `mode`; true when this call made it, false when it was
/// there already (made by someone else, maybe another start at the same moment: not ours
/// to undo). A missing parent is created too (and never undone: shared parents such as
/// the alloc dir hold other tasks). One `mkdir` in the common case.
fn mkdir(path: &Path, mode: u32) -> Result<bool> {
    let fail =
        |e: std::io::Error| Error::new(Code::Spawn, format!("creating {}: {e}", path.display()));
    let mut r = std::fs::DirBuilder::new().mode(mode).create(path);
    if let Err(e) = &r
        && e.kind() == std::io::ErrorKind::NotFound
        && let Some(parent) = path.parent()
    {
        // 0755 whatever the umask: a missing parent made writable by others would let
        // another user swap the private dirs below it for links.
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(parent)
            .map_err(|e| Error::new(Code::Spawn, format!("creating {}: {e}", parent.display())))?;
        r = std::fs::DirBuilder::new().mode(mode).create(path);
    }
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return match std::fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => Ok(false),
                _ => Err(Error::new(
                    Code::Spawn,
                    format!("{} exists and is not a directory", path.display()),
                )),
            };
        }
        Err(e) => return Err(fail(e)),
    }
    // The umask must not weaken or strengthen the modes of the layout.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    Ok(true)
}

/// [`mkdir`] of a directory of this task's own, recorded for undo when made here.
fn mkdir_own(path: &Path, mode: u32, created: &mut Created) -> Result<()> {
    if mkdir(path, mode)? {
        created.dirs.push(path.to_path_buf());
    }
    Ok(())
}

/// Makes `dir` (and its parent, the data dir: see
/// [`crate::host::plugin::make_data_dir`]) when missing, and makes sure it is a directory
/// of ours that only we can enter (`0700`, not a symlink): the root of the tasks' state,
/// which supervisors read back and no task may see or change, or of the default alloc
/// dirs, which no other host user may reach.
pub fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                crate::host::plugin::make_data_dir(parent)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() || m.uid() != crate::sys::euid() {
        return Err(std::io::Error::other(format!(
            "{} must be a directory owned by us",
            dir.display()
        )));
    }
    if m.mode() & 0o7777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Host paths of one task.
pub struct Dirs {
    pub alloc_dir: PathBuf,
    pub task_dir: PathBuf,
    pub state_dir: PathBuf,
    /// The claim on the task dir (see `claim_task_dir`): `<data_dir>/claims/<sha256 of
    /// the task dir's path>`, holding the id of the task that has it.
    pub claim: PathBuf,
    /// `<data_dir>/alloc` when the alloc dir is a default one in it: made `0700` (see
    /// [`make_private_dir`]) before the alloc dir.
    pub allocs: Option<PathBuf>,
}

/// The task's paths: `alloc_dir` (given, else `<data_dir>/alloc/<alloc_id or id>`), the
/// task dir in it, the state dir under `data_dir`. Nothing is made here: see
/// [`make_dirs`]. A given `alloc_dir` whose task dir or shared `alloc/` would be, hold or
/// lie in the data dir (but for the default layout) is `invalid_config` on `alloc_dir`.
pub fn paths(task: &TaskRequest, id: &str, cfg: &PluginConfig) -> Result<Dirs> {
    let data = crate::host::plugin::data_dir(cfg);
    let allocs = data.join("alloc");
    let (alloc_dir, default) = match &task.alloc_dir {
        Some(d) => (PathBuf::from(d), false),
        None if task.alloc_id.is_empty() => (allocs.join(id), true),
        None => (allocs.join(&task.alloc_id), true),
    };
    let task_dir = alloc_dir.join(&task.name);
    if !default {
        outside_data_dir(&alloc_dir, &task.name, &data)?;
    }
    Ok(Dirs {
        claim: claim_path(&data, &task_dir),
        task_dir,
        state_dir: data.join("tasks").join(id),
        alloc_dir,
        allocs: default.then_some(allocs),
    })
}

/// Refuses a given alloc dir that would show a task the driver's own state: its task dir
/// (`<alloc_dir>/<name>`, the root of an exec task) or shared `alloc/` may not be the
/// data dir, hold it, or lie in it, except in the shape of a default alloc dir
/// (`<data_dir>/alloc/<a>/<name>`, `<data_dir>/alloc/<a>/alloc`), where the task sees
/// only its alloc. The paths are compared as they resolve (symlinks followed as far as
/// they exist), so a link to the data dir is seen through.
fn outside_data_dir(alloc_dir: &Path, name: &str, data: &Path) -> Result<()> {
    let data = resolved(data);
    for (dir, what) in [
        (alloc_dir.join(name), "task dir"),
        (alloc_dir.join("alloc"), "shared alloc dir"),
    ] {
        let real = resolved(&dir);
        let default_shape = real
            .strip_prefix(data.join("alloc"))
            .is_ok_and(|rest| rest.components().count() == 2);
        if (real.starts_with(&data) && !default_shape) || data.starts_with(&real) {
            return Err(Error::field(
                Code::InvalidConfig,
                "alloc_dir",
                format!(
                    "alloc_dir {} makes the {what} {} overlap the driver's data_dir {} (its task state): choose an alloc_dir outside it, or leave alloc_dir out for the default <data_dir>/alloc/<alloc_id>",
                    alloc_dir.display(),
                    dir.display(),
                    data.display()
                ),
            ));
        }
    }
    Ok(())
}

/// `p` with symlinks resolved as far as it exists, the rest (plain names: a request's
/// paths have no `.` or `..`) appended.
fn resolved(p: &Path) -> PathBuf {
    let mut existing = p;
    let mut rest = vec![];
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |acc, c| acc.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Nomad's layout: the alloc dir, then `make_alloc_dirs` and `make_task_dirs`. Only the
/// task's own directories are recorded in `created`: the alloc dir and its `alloc/` are
/// shared with sibling tasks, which may be starting or running, and stay.
pub fn make_dirs(
    dirs: &Dirs,
    owner: Option<(u32, u32)>,
    root: Option<RootView<'_>>,
    created: &mut Created,
) -> Result<()> {
    if let Some(allocs) = &dirs.allocs {
        make_private_dir(allocs)
            .map_err(|e| Error::new(Code::Spawn, format!("creating {}: {e}", allocs.display())))?;
    }
    mkdir(&dirs.alloc_dir, 0o700)?;
    // The state dir (held) before the claim: a claim's owner then always has a state dir
    // that tells whether it lives (see `claim_task_dir`).
    make_state_dir(dirs, created)?;
    claim_task_dir(dirs, created)?;
    make_alloc_dirs(dirs)?;
    make_task_dirs(dirs, owner, root, created)
}

/// Where the claim on `task_dir` is kept: in the root-only data dir, named by a hash of
/// the path (no task can see or change it, and no task name can collide with it).
pub fn claim_path(data_dir: &Path, task_dir: &Path) -> PathBuf {
    use sha2::Digest;
    let h = sha2::Sha256::digest(task_dir.as_os_str().as_encoded_bytes());
    data_dir.join("claims").join(hex::encode(h))
}

/// Claims the task dir for this task (its id and the task dir in [`Dirs::claim`], made
/// exclusively): two live tasks never share one (each would read the other's files and
/// write its logs). A claim of a task that is not live any more is taken over; one of a
/// live task is `task_exists`.
fn claim_task_dir(dirs: &Dirs, created: &mut Created) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let id = dirs
        .state_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(claims) = dirs.claim.parent() {
        make_private_dir(claims)
            .map_err(|e| Error::new(Code::Spawn, format!("creating {}: {e}", claims.display())))?;
    }
    for _ in 0..3 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&dirs.claim)
        {
            Ok(mut f) => {
                created.dirs.push(dirs.claim.clone());
                let text = crate::proto::spec::claim_text(&id, &dirs.task_dir);
                return f.write_all(&text).map_err(|e| {
                    Error::new(
                        Code::Spawn,
                        format!("writing {}: {e}", dirs.claim.display()),
                    )
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = crate::proto::spec::read_claim(&dirs.claim)
                    .map(|(o, _)| o)
                    .unwrap_or_default();
                // (An earlier task with this id is over: its state dir is this start's.)
                let live = owner != id && claim_is_live(dirs, &owner);
                if live || crate::host::task::running_in(&dirs.task_dir, &id).is_some() {
                    return Err(Error::field(
                        Code::TaskExists,
                        "name",
                        format!(
                            "the task dir {} is in use by the live task {owner:?}; stop it first or choose another name",
                            dirs.task_dir.display(),
                        ),
                    ));
                }
                let _ = std::fs::remove_file(&dirs.claim);
            }
            Err(e) => {
                return Err(Error::new(
                    Code::Spawn,
                    format!("creating {}: {e}", dirs.claim.display()),
                ));
            }
        }
    }
    Err(Error::new(
        Code::Spawn,
        format!(
            "claiming {}: another start took it meanwhile",
            dirs.task_dir.display()
        ),
    ))
}

/// Whether task `owner`, which holds a claim, is live: a task whose state records no
/// exit and that was recorded for good (its launch record committed), or whose start
/// is under way or running on (its state dir is held, by the host that starts it or by
/// its supervisor: [`crate::proto::spec::hold`]). A claim whose owner died before the go
/// is not live: its next start takes it over.
pub fn claim_is_live(dirs: &Dirs, owner: &str) -> bool {
    use crate::proto::spec;
    if owner.is_empty() || crate::config::check_identifier("id", owner).is_err() {
        return false;
    }
    let state = dirs
        .state_dir
        .parent()
        .unwrap_or(Path::new("/"))
        .join(owner);
    if !state.is_dir() || spec::exit_recorded(&state) {
        return false;
    }
    spec::committed(&state) || spec::held(&state)
}

/// Releases the claim of task `id` on its task dir (when it still holds it).
pub fn release_task_dir(claim: &Path, id: &str) {
    crate::proto::spec::release_claim(claim, id, false);
}

/// `<alloc_dir>/alloc/{data,logs,tmp}`.
fn make_alloc_dirs(dirs: &Dirs) -> Result<()> {
    let a = &dirs.alloc_dir;
    mkdir(&a.join("alloc"), 0o755)?;
    mkdir(&a.join("alloc/data"), 0o777)?;
    mkdir(&a.join("alloc/logs"), 0o755)?;
    mkdir(&a.join("alloc/tmp"), 0o777)?;
    Ok(())
}

/// The task's state dir `<data_dir>/tasks/<id>`, in the root-only `<data_dir>/tasks`. A
/// leftover of a task that ended (it holds `exit.json`) or of a start that never
/// recorded its task (no `launch.json`) is replaced; one that may belong to a live task
/// not recovered yet is refused.
fn make_state_dir(dirs: &Dirs, created: &mut Created) -> Result<()> {
    let s = &dirs.state_dir;
    if let Some(tasks) = s.parent() {
        make_private_dir(tasks)
            .map_err(|e| Error::new(Code::Spawn, format!("creating {}: {e}", tasks.display())))?;
    }
    if std::fs::symlink_metadata(s).is_ok() {
        refuse_live_state(dirs)?;
        let _ = std::fs::remove_dir_all(s);
    }
    mkdir_own(s, 0o700, created)?;
    let lock = crate::proto::spec::hold(s)
        .map_err(|e| Error::new(Code::Spawn, format!("locking {}: {e}", s.display())))?;
    created.state_lock = Some(lock);
    Ok(())
}

/// `task_exists` when the task's state dir holds the state of a task with this id that
/// may still run (started by an earlier host process, not recovered yet), or of a start
/// of this id under way in another process (it holds the state dir). Checked first
/// thing at a start, before anything is made, and again when the state dir is made.
pub fn refuse_live_state(dirs: &Dirs) -> Result<()> {
    use crate::proto::spec;
    let s = &dirs.state_dir;
    let live = match spec::committed(s) {
        true => !spec::exit_recorded(s),
        // A start of this id under way in another process.
        false => spec::held(s),
    };
    if live {
        return Err(Error::field(
            Code::TaskExists,
            "id",
            format!(
                "{} holds the state of a task with this id that may still run: recover it (driver_recover) and destroy it, or choose another id",
                s.display()
            ),
        ));
    }
    Ok(())
}

/// `<alloc_dir>/<task>/{local,secrets,tmp}`, `local` and `secrets` owned by `owner`.
/// For exec also the top level of its root (`root`: the `chroot_env` binds and links):
/// the mount points of the binds and of `/alloc`, `/dev` and `/proc`, and the links. The
/// command process makes whatever is missing, and checks all of it, but this runs while
/// the supervisor reads the spec, off the start's path. Only single names directly in the
/// task dir, with calls that follow no link there (`mkdir`, `symlink`); a name that
/// exists is left as it is.
fn make_task_dirs(
    dirs: &Dirs,
    owner: Option<(u32, u32)>,
    root: Option<RootView<'_>>,
    created: &mut Created,
) -> Result<()> {
    let t = &dirs.task_dir;
    mkdir_own(t, 0o755, created)?;
    // `local` is the task user's own (0755, not 0777): no other user writes there.
    mkdir_own(&t.join("local"), 0o755, created)?;
    mkdir_own(&t.join("secrets"), 0o700, created)?;
    mkdir_own(&t.join("tmp"), 0o1777, created)?;
    if let Some((uid, gid)) = owner {
        for d in ["local", "secrets"] {
            let _ = std::os::unix::fs::lchown(t.join(d), Some(uid), Some(gid));
        }
    }
    if let Some(plan) = root {
        let top = |p: &Path| match p.components().collect::<Vec<_>>()[..] {
            [Component::RootDir, Component::Normal(n)] => Some(t.join(n)),
            _ => None,
        };
        // `/secrets` and `/tmp` are made above, with their own modes.
        for d in plan.iter().filter_map(|s| s.mount_point()).filter_map(top) {
            let _ = std::fs::DirBuilder::new().mode(0o755).create(d);
        }
        for (dst, target) in crate::proto::mounts::symlinks(plan) {
            if let Some(at) = top(dst) {
                let _ = std::os::unix::fs::symlink(target, at);
            }
        }
    }
    Ok(())
}

/// The mount plan of an exec task's root ([`crate::proto::mounts`]), from `chroot_env`
/// as the host has it: a directory or file is bound (missing host paths skipped); a
/// top-level host path that is a symlink, such as `/bin -> usr/bin`, is recreated as the
/// same symlink.
pub fn root_plan(cfg: &PluginConfig) -> Vec<Step> {
    let mut binds = vec![];
    let mut links = vec![];
    for (src, dst) in &cfg.chroot_env {
        let src = PathBuf::from(src);
        let Ok(meta) = std::fs::symlink_metadata(&src) else {
            continue;
        };
        let dst = PathBuf::from(dst);
        if meta.file_type().is_symlink()
            && dst.components().count() == 2
            && let Ok(target) = std::fs::read_link(&src)
        {
            links.push((dst, target));
            continue;
        }
        if let Ok(m) = std::fs::metadata(&src) {
            binds.push(Bind {
                src,
                dst,
                readonly: true,
                file: !m.is_dir(),
            });
        }
    }
    // Parents before children.
    binds.sort_by_key(|b| b.dst.components().count());
    crate::proto::mounts::plan(binds, links)
}

/// Maps a path inside an exec task's root to the host path that will be visible there.
pub fn host_view(inner: &Path, task_dir: &Path, plan: &[Step], depth: u32) -> Option<PathBuf> {
    if depth > 8 {
        return None;
    }
    for (dst, target) in crate::proto::mounts::symlinks(plan) {
        if let Ok(rest) = inner.strip_prefix(dst) {
            let t = if target.is_absolute() {
                target.to_path_buf()
            } else {
                dst.parent().unwrap_or(Path::new("/")).join(target)
            };
            return host_view(&t.join(rest), task_dir, plan, depth + 1);
        }
    }
    let best = crate::proto::mounts::binds(plan)
        .filter(|b| inner.starts_with(&b.dst))
        .max_by_key(|b| b.dst.components().count());
    match best {
        // (A bind's own path joined with nothing would gain a `/`, which a file bind's
        // source does not take.)
        Some(b) => match inner.strip_prefix(&b.dst).ok()? {
            rest if rest.as_os_str().is_empty() => Some(b.src.clone()),
            rest => Some(b.src.join(rest)),
        },
        None => {
            let mut p = task_dir.to_path_buf();
            for c in inner.components() {
                match c {
                    Component::Normal(n) => p.push(n),
                    Component::ParentDir => return None,
                    _ => {}
                }
            }
            Some(p)
        }
    }
}

/// chmod u+rwx,go+rx (setuid/setgid/sticky cleared) of a regular file, by fd, refusing links.
fn make_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    f.set_permissions(std::fs::Permissions::from_mode(
        (meta.permissions().mode() & 0o777) | 0o755,
    ))
}

/// An exec task's root, as its mount plan makes it.
pub type RootView<'a> = &'a [Step];

/// Looks the command up as docs/task.md "Command lookup" says: as given when it contains `/`, else in `/local`,
/// `/usr/local/bin`, `/usr/bin`, `/bin` of the task's root (exec) or of the host with
/// `/local` being the task's local dir (raw_exec). Returns (path to exec, host path).
/// A found file under the task dir without exec bits gets them.
pub fn lookup_command(
    cmd: &str,
    task_dir: &Path,
    root: Option<RootView<'_>>,
    work_dir: &str,
) -> Result<(String, PathBuf)> {
    let candidates: Vec<String> = if cmd.contains('/') {
        if cmd.starts_with('/') {
            vec![cmd.to_string()]
        } else {
            vec![format!("{}/{cmd}", work_dir.trim_end_matches('/'))]
        }
    } else {
        ["/local", "/usr/local/bin", "/usr/bin", "/bin"]
            .iter()
            .map(|d| format!("{d}/{cmd}"))
            .collect()
    };
    for c in &candidates {
        let inner = Path::new(c);
        let host = match root {
            Some(plan) => host_view(inner, task_dir, plan, 0),
            None => match inner.strip_prefix("/local") {
                Ok(rest) => Some(task_dir.join("local").join(rest)),
                Err(_) => Some(inner.to_path_buf()),
            },
        };
        let Some(host) = host else { continue };
        let Ok(meta) = std::fs::metadata(&host) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if meta.permissions().mode() & 0o111 == 0 {
            // Only a regular file that really lies in the task dir (a link planted in
            // /local must not make us chmod a host file as root), changed through an fd
            // opened without following links.
            let real = std::fs::canonicalize(&host).ok();
            let td = std::fs::canonicalize(task_dir).ok();
            if let (Some(real), Some(td)) = (real, td)
                && real.starts_with(&td)
            {
                make_executable(&real).map_err(|e| {
                    Error::field(
                        Code::Spawn,
                        "config.command",
                        format!("making {c} executable: {e}"),
                    )
                })?;
            } else {
                continue;
            }
        }
        let exec_path = if root.is_some() {
            c.clone()
        } else {
            host.to_string_lossy().into_owned()
        };
        return Ok((exec_path, host));
    }
    Err(Error::field(
        Code::CommandNotFound,
        "config.command",
        format!(
            "command {cmd:?} not found in the task (looked in {})",
            candidates.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a start made goes when its [`Created`] is dropped (a failed start, or a panic
    /// unwinding to the C boundary), content and all, newest first; a directory that was
    /// there before stays, and after `commit` everything does.
    #[test]
    fn created_dirs_go_when_dropped_unless_committed() {
        let base = std::env::temp_dir().join(format!("ed-created-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("before")).unwrap();
        {
            let mut c = Created::default();
            mkdir_own(&base.join("a"), 0o755, &mut c).unwrap();
            mkdir_own(&base.join("a/b"), 0o700, &mut c).unwrap();
            mkdir_own(&base.join("before"), 0o755, &mut c).unwrap();
            std::fs::write(base.join("a/b/f"), "x").unwrap();
        }
        assert!(!base.join("a").exists());
        assert!(base.join("before").is_dir(), "not ours to remove");
        let p = base.join("p");
        let r = std::panic::catch_unwind(move || {
            let mut c = Created::default();
            mkdir_own(&p, 0o755, &mut c).unwrap();
            panic!("a bug in the start");
        });
        assert!(r.is_err());
        assert!(!base.join("p").exists());
        let mut c = Created::default();
        mkdir_own(&base.join("k"), 0o755, &mut c).unwrap();
        c.commit();
        assert!(base.join("k").is_dir());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
