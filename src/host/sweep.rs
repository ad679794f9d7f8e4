//! The sweep at `driver_configure`: what starts of hosts that died left behind, when
//! their supervisors could not remove it themselves (a supervisor that sees the host go
//! before its go removes the start's record, claim and staging dirs, and the cgroups it
//! owns: [`crate::proto::spec::undo_record`]; this is for a supervisor killed with its
//! host, or gone before the spec reached it).
//!
//! - State dirs (`<data_dir>/tasks/<id>`) of starts that never got their go: no committed
//!   launch record, and nobody holds the dir ([`crate::proto::spec::hold`]: the host that
//!   makes it holds it until its start returns, the supervisor from the go on), unchanged
//!   for [`QUIET`] (a start takes its lock right after its `mkdir`).
//! - Claims on task dirs whose owner has no committed launch record and holds no state
//!   dir, with the staging dirs of the fetches in the claimed task dir.
//! - Empty cgroups under the cgroup parent, in every hierarchy of the layout: those named
//!   after a state dir removed here, and, once they have been there a while ([`QUIET`]),
//!   the placeholder cgroups of prestarted supervisors killed with their host (named
//!   with [`crate::host::pool::PLACEHOLDER_PREFIX`], which only the driver makes, of no
//!   task of this process). Never a cgroup of a task
//!   with a committed launch record (live or recoverable), never one with a process in it
//!   (the kernel refuses to remove it), and never another name: the cgroup parent may be
//!   shared with other hosts of other data dirs (whose tasks this host does not know) or
//!   with Nomad itself (`nomad.slice`, whose `share.slice` and `reserve.slice` are empty on
//!   an idle client). An empty cgroup of a start whose host and supervisor both died
//!   before the host made the task's state dir is left (the supervisor, alone, removes
//!   it).

use crate::config::PluginConfig;
use crate::proto::spec;
use std::path::Path;
use std::time::Duration;

/// How long a state dir nobody holds, or a cgroup that no task with state names, is left
/// alone: a start holds its state dir right after it makes it, makes it right after its
/// cgroups, and a prestarted supervisor's command process joins its placeholder cgroup
/// as soon as it is made.
pub const QUIET: Duration = Duration::from_secs(60);

/// Sweeps the data dir and the cgroup parent of `cfg` (see the module doc).
pub fn sweep(cfg: &PluginConfig) {
    let data = crate::host::plugin::data_dir(cfg);
    let tasks = data.join("tasks");
    let states = state_dirs(&tasks);
    let claims = claims(&data.join("claims"), &tasks);
    let cgroups = cgroups(cfg, &tasks, &states);
    if states.len() + claims + cgroups > 0 {
        crate::host::diag::diag!(
            Info,
            "removed what dead starts left: {} state dirs, {claims} claims, {cgroups} cgroups",
            states.len()
        );
    }
}

/// Whether `id` names a task of this process (starting, running or exited).
fn ours(id: &str) -> bool {
    crate::host::task::get(id).is_ok()
}

/// Removes the state dirs in `tasks` of starts whose owner died before the go; returns
/// their ids.
fn state_dirs(tasks: &Path) -> Vec<String> {
    let mut gone = vec![];
    for e in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        let (dir, Some(id)) = (e.path(), e.file_name().to_str().map(str::to_string)) else {
            continue;
        };
        if ours(&id)
            || spec::committed(&dir)
            || !e.file_type().is_ok_and(|t| t.is_dir())
            || !quiet(&dir)
        {
            continue;
        }
        // Held by nobody, and by us while we remove it.
        let Some(_lock) = spec::take_over(&dir) else {
            continue;
        };
        if !spec::committed(&dir) && std::fs::remove_dir_all(&dir).is_ok() {
            gone.push(id);
        }
    }
    gone
}

/// Removes the claims in `claims` whose owner is gone without a committed launch record,
/// and the staging dirs in their task dirs; returns how many.
fn claims(claims: &Path, tasks: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(claims).into_iter().flatten().flatten() {
        let Some((owner, _)) = spec::read_claim(&e.path()) else {
            continue;
        };
        // (A claim without an owner is being written by a start, or torn: it goes with
        // the next start of its task dir.)
        if owner.is_empty()
            || crate::config::check_identifier("id", &owner).is_err()
            || ours(&owner)
        {
            continue;
        }
        let state = tasks.join(&owner);
        if spec::committed(&state) || spec::held(&state) {
            continue;
        }
        spec::release_claim(&e.path(), &owner, true);
        n += 1;
    }
    n
}

/// Removes the empty cgroups under the cgroup parent that are no task's (see the module
/// doc); `stale`: the ids of the state dirs removed just now. Returns how many.
fn cgroups(cfg: &PluginConfig, tasks: &Path, stale: &[String]) -> usize {
    if crate::sys::euid() != 0 {
        return 0;
    }
    let Ok(layout) = crate::cgroup::detect_cached() else {
        return 0;
    };
    let parent = cfg.cgroup_parent.trim_end_matches('/');
    let mut n = 0;
    for mount in layout.mounts() {
        let under = mount.join(parent);
        for e in std::fs::read_dir(&under).into_iter().flatten().flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let dir = e.path();
            let leftover = stale.contains(&name)
                || (name.starts_with(crate::host::pool::PLACEHOLDER_PREFIX)
                    && !ours(&name)
                    && !tasks.join(&name).exists()
                    && quiet(&dir));
            // rmdir of a cgroup with a process (or a cgroup) in it fails: never busy ones.
            if leftover
                && e.file_type().is_ok_and(|t| t.is_dir())
                && std::fs::remove_dir(&dir).is_ok()
            {
                n += 1;
            }
        }
    }
    n
}

/// Whether the directory `dir` has not changed for [`QUIET`] (its mtime; a cgroup dir's is
/// when it was made, or the current time for an inode cgroupfs had to drop from its
/// cache, which errs on the side of keeping it).
fn quiet(dir: &Path) -> bool {
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= QUIET))
}
