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
                ".fetch-{}-{}-{nanos:x}",
                std::process::id(),
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

/// Removes the staging directories in `task_dir` that a host left when it died while
/// fetching (`.fetch-<pid>-…` of a pid no process has): the next start of a task
/// there (a restart reuses its directory) finds none.
fn sweep_stale(task_dir: &Path) {
    let Ok(entries) = fs::read_dir(task_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(".fetch-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // (A pid reused by another process keeps a stale dir until the next sweep.)
        let alive = pid == std::process::id() as i32
            || std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir_all(e.path());
        }
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
