//! An exec task's mount plan: what is mounted or made where in its root, in order, as
//! data. The host computes it from the plugin's `chroot_env` ([`plan`]), makes the
//! mount points it names (`host::prepare`) and sends it in the launch spec; the
//! supervisor's command process carries it out step by step (`supervisor::rootfs`).
//!
//! A prestarted command process makes the steps that are the same for every task of a
//! configuration ([`Step::ahead`]; the host gives it them, [`ahead`]) as detached mounts
//! while it waits, and at the start attaches each of those instead of making it: the
//! same plan, carried out the same way, with part of the work done early.

use super::spec::Bind;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Size of a task's `/secrets` tmpfs.
pub const SECRETS_SIZE: u64 = 1 << 20;

/// One step of building a task's root. Every path is inside the root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The task dir bound as the root, writable, nosuid and nodev. First: every other
    /// step is inside it.
    Root,
    /// A top-level link (`/bin -> usr/bin`), where the host has one in `chroot_env`:
    /// checked where the host made it, made where missing.
    Symlink { at: PathBuf, target: PathBuf },
    /// A `chroot_env` entry: a host path bound read-only, nosuid, nodev.
    Bind(Bind),
    /// The alloc dir, shared and writable at `/alloc`; its `logs/` read-only and noexec.
    Alloc,
    /// `/secrets`: a private tmpfs of `size` bytes, 0700, the task user's, holding a copy
    /// of what the host put in the task dir's `secrets/`.
    Secrets { size: u64 },
    /// `/tmp`: a directory of the root, 1777.
    Tmp,
    /// `/dev`: a read-only tmpfs of harmless device nodes, a private devpts, a shm tmpfs.
    Dev,
    /// `/proc`: a procfs of the task's pid namespace, `hidepid=2`.
    Proc,
    /// `/proc`'s kernel interfaces made read-only or masked. After [`Step::Dev`] and
    /// [`Step::Proc`]: the task's `/dev/null` is bound over the masked files.
    MaskProc,
}

impl Step {
    /// Whether the step is the same for every task of a configuration (it names no
    /// task's path or user), so that a command process may make it before the task is
    /// known, as a detached mount. The ownership of `/secrets` and the copy of the
    /// task's secrets are done at the start all the same.
    pub fn ahead(&self) -> bool {
        matches!(
            self,
            Step::Bind(_) | Step::Secrets { .. } | Step::Dev | Step::Proc
        )
    }

    /// The directory of the root the step mounts on, if it mounts on one.
    pub fn mount_point(&self) -> Option<&Path> {
        match self {
            Step::Bind(b) if !b.file => Some(&b.dst),
            Step::Alloc => Some(Path::new("/alloc")),
            Step::Secrets { .. } => Some(Path::new("/secrets")),
            Step::Dev => Some(Path::new("/dev")),
            Step::Proc => Some(Path::new("/proc")),
            _ => None,
        }
    }
}

/// The plan of an exec task's root whose `chroot_env` gives `binds` (parents before
/// children) and top-level `symlinks` (at, target). The one place that orders it.
pub fn plan(binds: Vec<Bind>, symlinks: Vec<(PathBuf, PathBuf)>) -> Vec<Step> {
    let mut steps = vec![Step::Root];
    steps.extend(
        symlinks
            .into_iter()
            .map(|(at, target)| Step::Symlink { at, target }),
    );
    steps.extend(binds.into_iter().map(Step::Bind));
    steps.extend([
        Step::Alloc,
        Step::Secrets { size: SECRETS_SIZE },
        Step::Tmp,
        Step::Dev,
        Step::Proc,
        Step::MaskProc,
    ]);
    steps
}

/// The steps of `plan` a command process may make ahead ([`Step::ahead`]), in order.
pub fn ahead(plan: &[Step]) -> Vec<Step> {
    plan.iter().filter(|s| s.ahead()).cloned().collect()
}

/// The `chroot_env` binds of `plan`.
pub fn binds(plan: &[Step]) -> impl Iterator<Item = &Bind> {
    plan.iter().filter_map(|s| match s {
        Step::Bind(b) => Some(b),
        _ => None,
    })
}

/// The top-level links of `plan` (at, target).
pub fn symlinks(plan: &[Step]) -> impl Iterator<Item = (&Path, &Path)> {
    plan.iter().filter_map(|s| match s {
        Step::Symlink { at, target } => Some((at.as_path(), target.as_path())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(dst: &str) -> Bind {
        Bind {
            src: dst.into(),
            dst: dst.into(),
            readonly: true,
            file: false,
        }
    }

    #[test]
    fn the_root_comes_first_and_proc_is_masked_last() {
        let p = plan(
            vec![bind("/usr"), bind("/etc")],
            vec![("/bin".into(), "usr/bin".into())],
        );
        assert_eq!(p.first(), Some(&Step::Root));
        assert_eq!(p.last(), Some(&Step::MaskProc));
        let pos = |s: &Step| p.iter().position(|x| x == s).unwrap();
        assert!(pos(&Step::Dev) < pos(&Step::MaskProc) && pos(&Step::Proc) < pos(&Step::MaskProc));
        assert_eq!(binds(&p).count(), 2);
        assert_eq!(
            symlinks(&p).collect::<Vec<_>>(),
            [(Path::new("/bin"), Path::new("usr/bin"))]
        );
    }

    #[test]
    fn only_task_independent_steps_are_made_ahead() {
        let p = plan(vec![bind("/usr")], vec![("/bin".into(), "usr/bin".into())]);
        assert_eq!(
            ahead(&p),
            [
                Step::Bind(bind("/usr")),
                Step::Secrets { size: SECRETS_SIZE },
                Step::Dev,
                Step::Proc
            ]
        );
        // Survives the trip through the launch spec.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Step>>(&json).unwrap(), p);
    }
}
