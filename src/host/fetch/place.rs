//! The staging directory inside the task dir, and moving a verified result into the
//! destination (merging into an existing directory) without following symlinks.

use super::plan::Plan;
use super::safe;
use crate::config::ArtifactMode;
use crate::error::{Code, Error, Result};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The staging directory inside the task dir; removed when dropped.
pub(super) struct Staging {
    pub(super) path: PathBuf,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Staging {
    pub(super) fn new(task_dir: &Path) -> Result<Staging> {
        fs::create_dir_all(task_dir).map_err(|e| {
            Error::internal(format!(
                "creating task directory {}: {e}",
                task_dir.display()
            ))
        })?;
        sweep_stale(task_dir);
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = task_dir.join(format!(
                "{}{}-{}-{}-{nanos:x}",
                crate::proto::spec::STAGING_PREFIX,
                std::process::id(),
                own_start_time(),
                STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Staging { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(Error::internal(format!(
                        "creating staging directory in {}: {e}",
                        task_dir.display()
                    )));
                }
            }
        }
    }
}

/// This process's start time (`/proc/self/stat` field 22), which with its pid names its
/// staging dirs: a pid alone is reused, and a host in a container often has the same pid
/// each time it runs.
fn own_start_time() -> u64 {
    static AT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *AT.get_or_init(|| crate::sys::self_start_time().unwrap_or(0))
}

/// Removes the staging directories in `task_dir` that a host left when it died while
/// fetching (`.fetch-<pid>-<start time>-…` of a process that has ended: no process
/// with that pid, or one that started at another time): the next start of a task there
/// (a restart reuses its directory) finds none. (A dir of a host killed before the go
/// goes earlier, with its supervisor or the next `driver_configure`:
/// [`crate::proto::spec::release_claim`].)
fn sweep_stale(task_dir: &Path) {
    let Ok(entries) = fs::read_dir(task_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(crate::proto::spec::STAGING_PREFIX))
            .and_then(staging_owner)
        else {
            continue;
        };
        if !owner_runs(owner) && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The owner of a staging dir from its name after the prefix: (pid, start time), the
/// start time `None` in the names of earlier releases (`<pid>-<counter>-<nanos>`).
fn staging_owner(rest: &str) -> Option<(i32, Option<u64>)> {
    let parts: Vec<&str> = rest.split('-').collect();
    let pid = parts.first()?.parse().ok()?;
    match parts.len() {
        4 => Some((pid, Some(parts[1].parse().ok()?))),
        3 => Some((pid, None)),
        _ => None,
    }
}

/// Whether the process that made a staging dir runs: its pid names a process that
/// started when it did (without a start time in the name: a process with that pid).
fn owner_runs((pid, start): (i32, Option<u64>)) -> bool {
    if pid == std::process::id() as i32 && start.is_none_or(|s| s == own_start_time()) {
        return true;
    }
    match start {
        Some(s) => crate::sys::proc_start_time(pid) == Some(s),
        None => Path::new(&format!("/proc/{pid}")).exists(),
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

pub(super) enum Staged {
    Dir(PathBuf),
    File(PathBuf),
    /// A zip spooled into the staging dir, not yet verified or opened.
    Spool(fs::File),
}

pub(super) fn mkdir(p: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(p)
        .map_err(|e| Error::internal(format!("creating {}: {e}", p.display())))
}

/// Moves a verified staging result into the destination.
pub(super) fn commit(plan: &Plan, task_dir: &Path, staged: Staged) -> Result<()> {
    let denied = |why: String| {
        Error::field(
            Code::ArtifactDenied,
            format!("{}.destination", plan.field),
            format!("destination: {why}"),
        )
    };
    let unpack = |why: String| Error::new(Code::ArtifactUnpack, why);
    let staged = match (staged, plan.mode) {
        (Staged::Dir(root), ArtifactMode::File) => {
            let mut files = Vec::new();
            collect_files(&root, &mut files).map_err(|e| unpack(e.to_string()))?;
            let regular =
                files.len() == 1 && fs::symlink_metadata(&files[0]).is_ok_and(|m| m.is_file());
            if !regular {
                return Err(unpack(format!(
                    "mode \"file\" needs an archive with exactly one regular file, this one has {} non-directory entries",
                    files.len()
                )));
            }
            Staged::File(files.remove(0))
        }
        (s, _) => s,
    };
    match staged {
        Staged::Spool(_) => Err(Error::internal("an unopened zip reached the destination")),
        Staged::Dir(root) => {
            let dest = safe::ensure_dirs(task_dir, &plan.dest).map_err(denied)?;
            safe::check_merge(&root, &dest).map_err(unpack)?;
            safe::merge(&root, &dest)
                .map_err(|e| Error::internal(format!("moving the artifact into place: {e}")))
        }
        Staged::File(path) => {
            let target = if plan.mode == ArtifactMode::File {
                let (last, parents) = plan.dest.split_last().expect("checked in Plan::new");
                safe::ensure_dirs(task_dir, parents)
                    .map_err(denied)?
                    .join(last)
            } else {
                safe::ensure_dirs(task_dir, &plan.dest)
                    .map_err(denied)?
                    .join(&plan.file_name)
            };
            if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                return Err(unpack(format!(
                    "{} is a directory in the destination",
                    target.display()
                )));
            }
            let mode = if plan.executable {
                0o755
            } else if plan.kind.is_some_and(|k| !k.is_single()) {
                fs::symlink_metadata(&path)
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0o644)
            } else {
                0o644
            };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::internal(format!("setting the mode: {e}")))?;
            fs::rename(&path, &target)
                .map_err(|e| Error::internal(format!("moving the artifact into place: {e}")))
        }
    }
}

/// Regular files under `dir`; anything else that is not a directory (a symlink) makes
/// the count wrong on purpose, so mode "file" never moves a symlink out of its place.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            collect_files(&e.path(), out)?;
        } else {
            out.push(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A staging dir is stale when its owner does not run: another process with its pid
    /// (another start time) does not keep it; this process's stay.
    #[test]
    fn staging_dirs_of_a_process_that_does_not_run_go() {
        let dir = std::env::temp_dir().join(format!(
            "execdriver-staging-{}-{}",
            std::process::id(),
            crate::sys::random_hex(4)
        ));
        let (pid, start) = (std::process::id(), super::own_start_time());
        let names = [
            (format!(".fetch-{pid}-{start}-0-0"), true),
            (format!(".fetch-{pid}-{}-0-0", start + 1), false),
            (format!(".fetch-{pid}-0-0"), true),
            (".fetch-2147483647-0-0".to_string(), false),
            (".fetch-2147483647-1-0-0".to_string(), false),
            ("local".to_string(), true),
        ];
        for (n, _) in &names {
            std::fs::create_dir_all(dir.join(n)).unwrap();
        }
        super::sweep_stale(&dir);
        for (n, stays) in &names {
            assert_eq!(dir.join(n).exists(), *stays, "{n}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
