//! cgroup v1, v2 and hybrid management for tasks.
//!
//! # Where task cgroups land
//!
//! A task cgroup is `<mount>/<parent>/<name>` at the *root of each controller mount*, as
//! Nomad does (`/sys/fs/cgroup/<controller>/nomad/<id>` on v1, `/sys/fs/cgroup/nomad.slice/…`
//! on v2). It is deliberately **not** placed below the cgroup the host process happens to be
//! in (`/proc/self/cgroup`): a task must not be charged to, or killed with, its host, and a
//! recovered host may sit in a different cgroup than the one that started the task. On this
//! machine (hybrid layout) with `cgroup_parent = "execdriver"` a task `t` gets:
//!
//! ```text
//! /sys/fs/cgroup/{cpuset,cpu,cpuacct,memory,pids,freezer}/execdriver/t   (v1: limits, stats, freezer)
//! /sys/fs/cgroup/unified/execdriver/t                                    (v2: tracking, cgroup.kill)
//! ```
//!
//! `blkio` and `name=systemd` are not used. Co-mounted v1 controllers (e.g.
//! `cpu,cpuacct`) share one directory.
//!
//! # What is ours
//!
//! Only the leaf `<name>` directories are ours: [`TaskCgroup::create`] refuses a leaf that
//! already exists (it never adopts a foreign cgroup), and [`TaskCgroup::remove`] only ever
//! removes the leaves it recorded. Parent directories are created when missing and never
//! removed (they are shared by all tasks). The only writes outside the leaves are: v1
//! `cpuset.cpus`/`cpuset.mems` of a parent directory *when they are empty* (a v1 cpuset
//! cannot hold tasks otherwise), and on pure v2 adding the needed controllers to
//! `cgroup.subtree_control` of the mount root and of each parent directory (required for
//! the leaf to have them; only additions, never removals).
//!
//! # Made ahead, renamed later
//!
//! A cgroup can be created before its task is known, under a placeholder name and with
//! `Limits::default()`, then [`TaskCgroup::rename`]d to the task's name and given the
//! task's limits with [`TaskCgroup::apply_limits`]; processes already inside stay inside.
//! Only v1 directories can be renamed (cgroup2 refuses `rename(2)` with EPERM), which is
//! why exec tasks on hybrid use [`Layout::for_exec`] (the v1 hierarchies alone).
//! [`TaskCgroup::named`] describes the directories of a name without creating anything,
//! so a host can remove what a dead owner left behind.
//!
//! # Limits
//!
//! - cpu: v1 `cpu.shares = clamp(cpu_mhz, 2, 262144)` (Nomad's clamp, so `cpu_mhz` 0 gives 2);
//!   v2 `cpu.weight = 1 + ((shares - 2) * 9999) / 262142` (runc's conversion).
//! - cpuset: with `cores = N > 0`, the first N cpus of the parent's effective set (v1
//!   `cpuset.effective_cpus`, v2 `cpuset.cpus.effective`); more cores than the parent has is
//!   an error. With 0, v1 inherits the parent's set (copied, as the kernel requires) and v2
//!   leaves `cpuset.cpus` empty (= the parent's).
//! - memory: `memory_bytes > 0` sets the hard limit (v1 `memory.limit_in_bytes`, v2
//!   `memory.max`). Swap is off: v1 `memory.memsw.limit_in_bytes = limit` when that file
//!   exists and `memory.swappiness = 0`; v2 `memory.swap.max = 0` when that file exists.
//! - pids: `pids_max > 0` sets `pids.max`.
//!
//! Resources are written through cgroups-rs controllers. Directories are made with
//! `std::fs::create_dir` (cgroups-rs's `create` silently ignores mkdir errors and would
//! adopt an existing cgroup), and everything a supervisor or a recovered host needs
//! (`join`, `pids`, `kill_all`, `oom_killed`, `stats`, `remove`) is plain file I/O on the
//! paths serialized in [`TaskCgroup`], so it works without a [`Layout`].

pub mod devices;
mod layout;
pub(crate) mod stats;
mod v1;
mod v2;

use crate::{Code, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use layout::*;

/// A task's resource limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// cpu shares (v1) / weight (v2) are derived from this, clamped to 2..=262144.
    pub cpu_mhz: u64,
    /// Number of cores to pin (the first N of the parent's set); 0 = no pinning.
    pub cores: u64,
    /// Hard memory limit in bytes, swap off; 0 = no limit.
    pub memory_bytes: u64,
    /// Maximum number of processes and threads; 0 = no limit.
    pub pids_max: u64,
    /// v1: a freezer cgroup of the task's own, so that [`TaskCgroup::kill_all`] can freeze
    /// the task's processes before it kills them. Wanted when they are not all in a pid
    /// namespace of the task's own (whose init kills them all with `kill(-1)`); without
    /// it the task joins the parent's freezer directory.
    #[serde(default)]
    pub freezer: bool,
}

/// The kernel's default v1 `cpu.shares` (v2 `cpu.weight` 100): the weight of a cgroup
/// that gets no task limits, such as a prestarted supervisor's placeholder.
pub const DEFAULT_CPU_SHARES: u64 = 1024;

/// Nomad's clamp of cpu shares.
pub fn cpu_shares(cpu_mhz: u64) -> u64 {
    cpu_mhz.clamp(2, 262_144)
}

/// runc's conversion of v1 cpu shares to a v2 cpu weight.
pub fn cpu_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// A task's cgroups, as plain paths: serializable into the task handle and usable by a
/// supervisor or a recovered host without a [`Layout`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TaskCgroup {
    /// `"v1"`, `"v2"` or `"hybrid"`.
    pub layout: String,
    /// Every directory created for the task, in creation order ([`TaskCgroup::remove`]
    /// takes them in reverse). Never a parent directory.
    pub dirs: Vec<PathBuf>,
    /// v1 controller name → the task's directory in that controller's hierarchy
    /// (co-mounted controllers map to the same directory). Empty on pure v2.
    pub v1: BTreeMap<String, PathBuf>,
    /// The task's directory in the unified (v2) hierarchy, on v2 and hybrid.
    pub v2: Option<PathBuf>,
    /// Whether the v2 directory carries the memory/cpu/pids controllers (pure v2) or only
    /// tracks processes (hybrid).
    pub v2_controllers: bool,
    /// The `cgroup.procs` files a process writes its pid to (or `0`) to join, v2 first.
    pub procs: Vec<PathBuf>,
    /// The v2 `cgroup.kill` file, when the kernel has it.
    pub kill: Option<PathBuf>,
    /// v1 directories the task joins without one of its own: `<parent>` in the cpuset
    /// hierarchy when it pins no cores, in the freezer hierarchy when
    /// [`Limits::freezer`] is off. So the task leaves the host's cpuset and freezer
    /// cgroups without the cost of a directory per task (a mkdir, a rename and an rmdir
    /// each, ~60 µs of CPU). Shared with other tasks: never listed, killed or removed.
    #[serde(default)]
    pub shared: Vec<PathBuf>,
}

/// A task's cgroups made on the way to its start: removed (killing what is in them) when
/// dropped, unless [`CgroupGuard::disarm`]ed once the start has succeeded. Every early
/// return of the start, and a panic, leaves none behind without a hand-written
/// `remove` on each path.
#[must_use]
pub struct CgroupGuard(Option<TaskCgroup>);

impl CgroupGuard {
    /// Guards `made` (`None`: nothing was made, and nothing is removed).
    pub fn new(made: Option<TaskCgroup>) -> CgroupGuard {
        CgroupGuard(made)
    }

    pub fn get(&self) -> Option<&TaskCgroup> {
        self.0.as_ref()
    }

    pub fn get_mut(&mut self) -> Option<&mut TaskCgroup> {
        self.0.as_mut()
    }

    /// The start succeeded: the cgroups are the task's, and stay.
    pub fn disarm(mut self) -> Option<TaskCgroup> {
        self.0.take()
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            let _ = cg.remove();
        }
    }
}

pub(crate) fn isolation(step: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(
        Code::Isolation,
        format!("cgroup: {step} {}: {e}", path.display()),
    )
}

/// A cgroups-rs error as text: its cause (the OS error) when it has one.
pub(crate) fn cg_err(e: cgroups_rs::error::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(s) => format!("{s} ({})", e.kind()),
        None => e.to_string(),
    }
}

fn check_component(what: &str, c: &str) -> std::result::Result<(), String> {
    if c.is_empty() {
        return Err(format!("{what} has an empty path component"));
    }
    if c == "." || c == ".." {
        return Err(format!("{what} may not contain '.' or '..' components"));
    }
    if c.chars().any(|ch| ch.is_control()) {
        return Err(format!("{what} may not contain control characters"));
    }
    Ok(())
}

/// `parent` is a relative path (`a` or `a/b`), `name` one path component.
fn validate(parent: &str, name: &str) -> Result<()> {
    validate_parent(parent)?;
    validate_name(name)
}

/// The plugin's `cgroup_parent`: a non-empty relative path of ordinary components.
pub fn validate_parent(parent: &str) -> Result<()> {
    if parent.is_empty() || parent.starts_with('/') {
        return Err(Error::field(
            Code::InvalidConfig,
            "cgroup_parent",
            format!(
                "cgroup_parent {parent:?} must be a non-empty relative path such as \"execdriver\""
            ),
        ));
    }
    for c in parent.split('/') {
        check_component("cgroup_parent", c).map_err(|m| {
            Error::field(
                Code::InvalidConfig,
                "cgroup_parent",
                format!("{m}: {parent:?}"),
            )
        })?;
    }
    Ok(())
}

/// `name` is one path component.
fn validate_name(name: &str) -> Result<()> {
    if name.contains('/') {
        return Err(Error::new(
            Code::InvalidConfig,
            format!("cgroup name {name:?} may not contain '/'"),
        ));
    }
    check_component("cgroup name", name)
        .map_err(|m| Error::new(Code::InvalidConfig, format!("{m}: {name:?}")))
}

/// Makes `<mount>/<parent>/<name>`: the parent with `create_dir_all` (shared, kept), the
/// leaf with `create_dir` (must not exist yet). Records the leaf in `tcg.dirs`.
pub(crate) fn make_task_dir(
    tcg: &mut TaskCgroup,
    mount: &Path,
    parent: &str,
    name: &str,
) -> Result<PathBuf> {
    let pdir = mount.join(parent);
    let dir = pdir.join(name);
    let mut attempt = 0;
    loop {
        // The parent usually exists: try the task's dir first, make the parent on ENOENT.
        match fs::create_dir(&dir) {
            Ok(()) => break,
            // No parent yet, or another process removed an empty one in between.
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 3 => {
                attempt += 1;
                ensure_parent(mount, parent)?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(isolation(
                    "create",
                    &dir,
                    "it already exists (refusing to adopt a cgroup that is not ours)",
                ));
            }
            Err(e) => return Err(isolation("create", &dir, e)),
        }
    }
    #[cfg(test)]
    fake::after_mkdir(mount, &dir);
    tcg.dirs.push(dir.clone());
    Ok(dir)
}

/// Makes each missing directory of `<mount>/<parent>` (shared by tasks; never removed).
pub(crate) fn ensure_parent(mount: &Path, parent: &str) -> Result<PathBuf> {
    let mut p = mount.to_path_buf();
    for c in parent.split('/') {
        p.push(c);
        match fs::create_dir(&p) {
            Ok(()) => {
                #[cfg(test)]
                fake::after_mkdir(mount, &p);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(isolation("create parent", &p, e)),
        }
    }
    Ok(p)
}

/// Reads a small control file; missing or unreadable files read as `None`.
pub(crate) fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// Writes a control file that must already exist (never creates files in a cgroupfs).
pub(crate) fn write_existing(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(value.as_bytes())
}

impl TaskCgroup {
    fn empty(layout: &Layout) -> TaskCgroup {
        TaskCgroup {
            layout: layout.name().to_string(),
            dirs: Vec::new(),
            v1: BTreeMap::new(),
            v2: None,
            v2_controllers: false,
            procs: Vec::new(),
            kill: None,
            shared: Vec::new(),
        }
    }

    /// Creates `<parent>/<name>` in every relevant hierarchy and applies limits. On any
    /// failure removes what it created and returns an `isolation` error naming the step and
    /// path (`invalid_config` for a bad `parent` or `name`).
    pub fn create(
        layout: &Layout,
        parent: &str,
        name: &str,
        limits: &Limits,
    ) -> Result<TaskCgroup> {
        validate(parent, name)?;
        let parent = parent.trim_end_matches('/');
        TaskCgroup::made(layout, |tcg| {
            match layout {
                Layout::V1 { controllers } => v1::create(tcg, controllers, parent, name, limits),
                Layout::V2 { root } => v2::create(tcg, root, parent, name, limits, true),
                Layout::Hybrid {
                    controllers,
                    unified,
                } => v1::create(tcg, controllers, parent, name, limits)
                    .and_then(|()| v2::create(tcg, unified, parent, name, limits, false)),
            }?;
            tcg.set_procs();
            Ok(())
        })
    }

    /// The description `make` fills in from an empty one of `layout`, creating
    /// directories as it goes; what it created is removed if it fails.
    fn made(
        layout: &Layout,
        make: impl FnOnce(&mut TaskCgroup) -> Result<()>,
    ) -> Result<TaskCgroup> {
        let mut guard = CgroupGuard::new(Some(TaskCgroup::empty(layout)));
        if let Some(tcg) = guard.get_mut() {
            make(tcg)?;
        }
        Ok(guard.disarm().unwrap_or_else(|| TaskCgroup::empty(layout)))
    }

    /// The `cgroup.procs` files of the task's directories, v2 first, then the v1 ones in
    /// [`V1_CONTROLLERS`] order (once per directory).
    fn set_procs(&mut self) {
        let mut procs = Vec::new();
        if let Some(d) = &self.v2 {
            procs.push(d.join("cgroup.procs"));
        }
        for c in V1_CONTROLLERS {
            if let Some(d) = self.v1.get(c) {
                let p = d.join("cgroup.procs");
                if !procs.contains(&p) {
                    procs.push(p);
                }
            }
        }
        self.procs = procs;
    }

    /// Writes `limits` to the task's directories, as [`TaskCgroup::create`] does after
    /// making them: for a cgroup created ahead of its task (with `Limits::default()`)
    /// that gets the task's limits once the task is known. A zero field writes nothing,
    /// so it leaves the current setting (on a cgroup created with defaults: no limit, the
    /// parent's cpus) rather than lifting a limit set before. Does nothing on a
    /// tracking-only cgroup (cgroup2 without controllers, no v1 directories).
    pub fn apply_limits(&self, limits: &Limits) -> Result<()> {
        if !self.v1.is_empty() {
            v1::apply_limits(self, limits)?;
        }
        if self.v2_controllers
            && let Some(d) = &self.v2
        {
            v2::apply_limits(d, limits)?;
        }
        Ok(())
    }

    /// Renames every directory of the task to a sibling called `name` (the same parent):
    /// a cgroup created ahead of its task under a placeholder name takes the task's name.
    /// The processes inside stay inside (a rename is not a migration), and so do the
    /// limits. v1 only: the kernel refuses to rename a cgroup2 directory (EPERM), so a
    /// cgroup with one is refused up front. A target that exists is refused with the
    /// kernel's EEXIST (never adopt a foreign cgroup; a check before the rename would
    /// race), and ENOTEMPTY (what a plain directory gives, e.g. the unit tests' fake) is
    /// taken the same way. On a failure part-way the directories already renamed are
    /// renamed back; either way `self` then describes the directories as they are.
    pub fn rename(&mut self, name: &str) -> Result<()> {
        validate_name(name)?;
        if let Some(d) = &self.v2 {
            return Err(isolation(
                "rename",
                d,
                "a cgroup2 directory cannot be renamed (the kernel refuses it)",
            ));
        }
        let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut failure = None;
        for dir in &self.dirs {
            let to = dir.with_file_name(name);
            if &to == dir {
                continue;
            }
            let step = format!("rename {} to", dir.display());
            match fs::rename(dir, &to) {
                Ok(()) => moved.push((dir.clone(), to)),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                    failure = Some(isolation(
                        &step,
                        &to,
                        "it already exists (refusing to adopt a cgroup that is not ours)",
                    ));
                    break;
                }
                Err(e) => {
                    failure = Some(isolation(&step, &to, e));
                    break;
                }
            }
        }
        let Some(mut err) = failure else {
            self.relocate(&moved);
            return Ok(());
        };
        // Undo, newest first; what cannot be undone stays where it is, and is described so.
        let mut stuck = Vec::new();
        for (from, to) in moved.into_iter().rev() {
            if let Err(e) = fs::rename(&to, &from) {
                err.message.push_str(&format!(
                    "; renaming {} back failed ({e}), it stays there",
                    to.display()
                ));
                stuck.push((from, to));
            }
        }
        self.relocate(&stuck);
        Err(err)
    }

    /// Rewrites every recorded path at or below a moved directory `from` to `to`.
    fn relocate(&mut self, moved: &[(PathBuf, PathBuf)]) {
        let map = |p: &mut PathBuf| {
            for (from, to) in moved {
                if let Ok(rest) = p.strip_prefix(from) {
                    *p = if rest.as_os_str().is_empty() {
                        to.clone()
                    } else {
                        to.join(rest)
                    };
                    return;
                }
            }
        };
        self.dirs.iter_mut().for_each(map);
        self.v1.values_mut().for_each(map);
        self.procs.iter_mut().for_each(map);
        self.kill.iter_mut().for_each(map);
    }

    /// Describes the directories [`TaskCgroup::create`] would make for `parent`/`name`
    /// with `layout`, without touching them: its [`TaskCgroup::remove`] then removes
    /// those that exist (killing what is inside), e.g. for a host cleaning up after a
    /// cgroup made ahead of its task whose owner died. Whatever is at those paths is
    /// taken as ours, so use it only for names this host hands out.
    pub fn named(layout: &Layout, parent: &str, name: &str) -> Result<TaskCgroup> {
        validate(parent, name)?;
        let parent = parent.trim_end_matches('/');
        let mut tcg = TaskCgroup::empty(layout);
        let leaf = |tcg: &mut TaskCgroup, mount: &Path| {
            let d = mount.join(parent).join(name);
            tcg.dirs.push(d.clone());
            Ok(d)
        };
        let unified = match layout {
            Layout::V1 { controllers } => {
                v1::place(&mut tcg, controllers, leaf)?;
                None
            }
            Layout::V2 { root } => Some((root, true)),
            Layout::Hybrid {
                controllers,
                unified,
            } => {
                v1::place(&mut tcg, controllers, leaf)?;
                Some((unified, false))
            }
        };
        if let Some((root, controllers)) = unified {
            let d = leaf(&mut tcg, root)?;
            let kill = d.join("cgroup.kill");
            if kill.exists() {
                tcg.kill = Some(kill);
            }
            tcg.v2 = Some(d);
            tcg.v2_controllers = controllers;
        }
        tcg.set_procs();
        Ok(tcg)
    }

    /// A cgroup only to track and kill a task's processes (raw_exec): the cgroup2
    /// hierarchy alone, no limits. None where there is no cgroup2 mount (v1-only hosts,
    /// where the supervisor's subreaper sweep does the job).
    pub fn create_tracking(
        layout: &Layout,
        parent: &str,
        name: &str,
    ) -> Result<Option<TaskCgroup>> {
        validate(parent, name)?;
        let parent = parent.trim_end_matches('/');
        let root = match layout {
            Layout::V1 { .. } => return Ok(None),
            Layout::V2 { root } => root,
            Layout::Hybrid { unified, .. } => unified,
        };
        TaskCgroup::made(layout, |tcg| {
            v2::create(tcg, root, parent, name, &Limits::default(), false)?;
            tcg.procs = tcg.v2.iter().map(|d| d.join("cgroup.procs")).collect();
            Ok(())
        })
        .map(Some)
    }

    /// Whether every path of this description is the task's own in `layout`: its
    /// directories `<mount>/<parent>/<name>`, the shared `<mount>/<parent>`, and their
    /// `cgroup.procs` and `cgroup.kill` files (a handle read back from a host is checked
    /// with this before anything it names is written, killed or removed).
    pub fn confined_to(&self, layout: &Layout, parent: &str, name: &str) -> bool {
        if validate(parent, name).is_err() {
            return false;
        }
        let parent = parent.trim_end_matches('/');
        let mounts = layout.mounts();
        let leaves: Vec<PathBuf> = mounts.iter().map(|m| m.join(parent).join(name)).collect();
        let parents: Vec<PathBuf> = mounts.iter().map(|m| m.join(parent)).collect();
        let leaf = |p: &Path| leaves.iter().any(|l| l == p);
        let file_in = |f: &Path, file: &str, dirs: &dyn Fn(&Path) -> bool| {
            f.file_name().is_some_and(|n| n == file) && f.parent().is_some_and(dirs)
        };
        self.dirs.iter().all(|d| leaf(d))
            && self.v1.values().all(|d| leaf(d))
            && self.v2.iter().all(|d| leaf(d))
            && self.shared.iter().all(|d| parents.contains(d))
            && self
                .procs
                .iter()
                .all(|f| file_in(f, "cgroup.procs", &|d| leaf(d)))
            && self
                .kill
                .iter()
                .all(|f| file_in(f, "cgroup.kill", &|d| leaf(d)))
    }

    /// The cgroup2 directory of the task, which a child can be cloned straight into
    /// (`CLONE_INTO_CGROUP`) without the write to `cgroup.procs`.
    pub fn v2_dir(&self) -> Option<PathBuf> {
        self.v2.clone()
    }

    /// The files a single-threaded process writes `"0"` to in order to join, before it
    /// execs the command: the cgroup2 `cgroup.procs`, and each v1 directory's `tasks`.
    ///
    /// A v1 `tasks` write of `"0"` moves only the calling thread, so the kernel skips the
    /// global `cgroup_threadgroup_rwsem` write lock that every `cgroup.procs` write (and
    /// every write naming a pid) takes. That lock waits for an RCU grace period when it was
    /// not taken in the last one or so: 5-25 ms on an idle host, all the while holding the
    /// global `cgroup_mutex`, so every other cgroup operation on the host (mkdir, rmdir,
    /// `CLONE_INTO_CGROUP`) waits too. The `tasks` write takes ~20 µs. For a
    /// single-threaded process, moving its one thread is moving the process.
    /// The [`TaskCgroup::shared`] directories come last.
    pub fn self_join_files(&self) -> Vec<PathBuf> {
        let v2 = self.v2.as_ref().map(|d| d.join("cgroup.procs"));
        self.procs
            .iter()
            .map(|f| {
                if Some(f) == v2.as_ref() {
                    f.clone()
                } else {
                    f.with_file_name("tasks")
                }
            })
            .chain(self.shared.iter().map(|d| d.join("tasks")))
            .collect()
    }

    /// Moves the calling process, which must be single-threaded (a freshly forked child),
    /// into every hierarchy of the task, by [`TaskCgroup::self_join_files`].
    /// Allocation-free (plain `open`/`write` on stack buffers), so it may be called in a
    /// child between `fork` and `exec`.
    pub fn join_self(&self) -> io::Result<()> {
        let v2 = self.v2.as_deref();
        for f in &self.procs {
            match f.parent() {
                Some(dir) if Some(dir) != v2 => write_noalloc_at(dir, b"tasks", b"0")?,
                _ => write_noalloc(f, b"0")?,
            }
        }
        for dir in &self.shared {
            write_noalloc_at(dir, b"tasks", b"0")?;
        }
        Ok(())
    }

    /// Moves process `pid` (all its threads) into every hierarchy of the task, by its
    /// `cgroup.procs` files (which waits for the lock [`TaskCgroup::self_join_files`]
    /// avoids). Allocation-free (plain `open`/`write` on a stack buffer).
    pub fn join(&self, pid: i32) -> io::Result<()> {
        let mut num = [0u8; 12];
        let n = format_i32(pid, &mut num);
        for f in &self.procs {
            write_noalloc(f, &num[..n])?;
        }
        for dir in &self.shared {
            write_noalloc_at(dir, b"cgroup.procs", &num[..n])?;
        }
        Ok(())
    }

    /// The pids of the task's processes (the union over every hierarchy), sorted.
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for f in &self.procs {
            if let Some(text) = read(f) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|s| s.parse::<i32>().ok()),
                );
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kills every process of the task and returns once none is left (bounded: about 3 s).
    /// v2: `cgroup.kill`; otherwise (or if that leaves survivors) freeze, SIGKILL every pid,
    /// thaw, repeat until empty. Never signals the calling process or pids ≤ 1.
    pub fn kill_all(&self) -> io::Result<()> {
        if let Some(k) = &self.kill
            && write_existing(k, "1").is_ok()
            && self.wait_empty(Duration::from_secs(1))
        {
            return Ok(());
        }
        let me = std::process::id() as i32;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut delay = Duration::from_millis(1);
        loop {
            if self.pids().iter().all(|&p| p == me) {
                return Ok(());
            }
            let frozen = self.freeze(true);
            for p in self.pids() {
                if p > 1 && p != me {
                    crate::sys::process::kill(p, libc::SIGKILL);
                }
            }
            if frozen {
                self.freeze(false);
            }
            if Instant::now() >= deadline {
                let left = self.pids().into_iter().filter(|&p| p != me).count();
                if left == 0 {
                    return Ok(());
                }
                return Err(io::Error::other(format!(
                    "{left} process(es) of the cgroup survived SIGKILL"
                )));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }

    /// Freezes (or thaws) the task with the v1 freezer or v2 `cgroup.freeze`; true when a
    /// freezer was written. Waits (bounded) for a freeze to complete.
    fn freeze(&self, on: bool) -> bool {
        if let Some(d) = self.v1.get("freezer") {
            let state = d.join("freezer.state");
            if write_existing(&state, if on { "FROZEN" } else { "THAWED" }).is_err() {
                return false;
            }
            if on {
                let until = Instant::now() + Duration::from_millis(100);
                while Instant::now() < until && read(&state).is_some_and(|s| s.trim() == "FREEZING")
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            return true;
        }
        if let Some(d) = &self.v2 {
            return write_existing(&d.join("cgroup.freeze"), if on { "1" } else { "0" }).is_ok();
        }
        false
    }

    fn wait_empty(&self, timeout: Duration) -> bool {
        let me = std::process::id() as i32;
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_micros(200);
        loop {
            if self.pids().iter().all(|&p| p == me) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(10));
        }
    }

    /// Whether the task's memory cgroup OOM-killed a process: v2 `memory.events` `oom_kill`,
    /// v1 `memory.oom_control` `oom_kill` (kernel ≥ 4.13; older kernels: `under_oom`).
    /// Read it before [`TaskCgroup::remove`]; afterwards it is false.
    pub fn oom_killed(&self) -> bool {
        if let Some(d) = self.v1.get("memory") {
            return read(&d.join("memory.oom_control")).is_some_and(|t| stats::v1_oom_killed(&t));
        }
        if self.v2_controllers
            && let Some(d) = &self.v2
        {
            return read(&d.join("memory.events")).is_some_and(|t| stats::v2_oom_killed(&t));
        }
        false
    }

    /// The `driver_stats` object (docs/api.md) for the task's cgroups.
    pub fn stats(&self) -> serde_json::Value {
        stats::collect(self)
    }

    /// Removes the task's directories that are empty, newest first, and nothing else: no
    /// process is killed, a busy directory stays (for a cleanup that must never touch a
    /// cgroup with a process in it).
    pub fn remove_empty(&self) {
        for dir in self.dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }

    /// Removes every directory of the task (after killing its processes if one is busy;
    /// nested cgroups inside a task directory are removed too). Idempotent; never removes a
    /// parent directory. Returns the first error after trying every directory.
    pub fn remove(&self) -> io::Result<()> {
        let mut first_err: Option<io::Error> = None;
        let mut killed = false;
        for dir in self.dirs.iter().rev() {
            let mut delay = Duration::from_millis(5);
            let mut attempt = 0;
            loop {
                match remove_tree(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 8 => {
                        if !killed {
                            killed = true;
                            let _ = self.kill_all();
                        } else {
                            std::thread::sleep(delay);
                            delay *= 2;
                        }
                        attempt += 1;
                    }
                    Err(e) => {
                        first_err.get_or_insert(io::Error::new(
                            e.kind(),
                            format!("cgroup: remove {}: {e}", dir.display()),
                        ));
                        break;
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// rmdir of a cgroup directory and, depth first, of any cgroup nested in it.
fn remove_tree(dir: &Path) -> io::Result<()> {
    // Usually a leaf: rmdir alone (listing a cgroup dir costs more than removing it: the
    // kernel makes an inode for each of its control files). On a real cgroupfs a nested
    // cgroup makes it fail with EBUSY; then nested dirs go first.
    match fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    match fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&e.path())?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    #[cfg(test)]
    fake::before_rmdir(dir);
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn format_i32(v: i32, buf: &mut [u8; 12]) -> usize {
    let mut tmp = [0u8; 12];
    let mut n = 0;
    let neg = v < 0;
    let mut u = (v as i64).unsigned_abs();
    loop {
        tmp[n] = b'0' + (u % 10) as u8;
        n += 1;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    let mut len = 0;
    if neg {
        buf[0] = b'-';
        len = 1;
    }
    for i in (0..n).rev() {
        buf[len] = tmp[i];
        len += 1;
    }
    len
}

/// `open(path, O_WRONLY)` + one `write`, with the path copied to a stack buffer: no heap.
fn write_noalloc(path: &Path, data: &[u8]) -> io::Result<()> {
    crate::sys::write_noalloc_parts(&[path.as_os_str().as_bytes()], data)
}

/// [`write_noalloc`] of `dir/name`.
fn write_noalloc_at(dir: &Path, name: &[u8], data: &[u8]) -> io::Result<()> {
    crate::sys::write_noalloc_parts(&[dir.as_os_str().as_bytes(), b"/", name], data)
}

/// A fake kernel for unit tests against a cgroupfs made of plain directories: a new cgroup
/// directory gets a copy of the files in `<mount>/.template/`, and a directory's plain
/// files are deleted before it is removed (on a real cgroupfs rmdir does both).
#[cfg(test)]
pub(crate) mod fake {
    use std::fs;
    use std::path::Path;

    pub fn is_cgroupfs(p: &Path) -> bool {
        nix::sys::statfs::statfs(p).is_ok_and(|s| {
            let t = s.filesystem_type();
            t == nix::sys::statfs::CGROUP_SUPER_MAGIC || t == nix::sys::statfs::CGROUP2_SUPER_MAGIC
        })
    }

    pub fn after_mkdir(mount: &Path, dir: &Path) {
        if is_cgroupfs(dir) {
            return;
        }
        if let Ok(entries) = fs::read_dir(mount.join(".template")) {
            for e in entries.flatten() {
                let _ = fs::copy(e.path(), dir.join(e.file_name()));
            }
        }
    }

    pub fn before_rmdir(dir: &Path) {
        if is_cgroupfs(dir) {
            return;
        }
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
