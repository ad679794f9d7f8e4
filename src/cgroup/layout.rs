//! Where and how cgroups are mounted: detection from /proc/self/mountinfo, fake roots
//! for tests, and the usability probe behind the fingerprint.

use super::*;
/// The v1 controllers a task cgroup is created in, in the order its procs files are written.
pub const V1_CONTROLLERS: [&str; 7] = [
    "cpuset", "cpu", "cpuacct", "memory", "pids", "freezer", "devices",
];

/// Controllers without which a task cgroup cannot carry the task's limits.
pub const REQUIRED_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// v1 controllers an exec task needs besides [`REQUIRED_CONTROLLERS`]: `devices` holds its
/// device allowlist (on v2 a BPF program does, see [`super::devices`]).
pub const REQUIRED_V1_CONTROLLERS: [&str; 1] = ["devices"];

/// How cgroups are mounted. Serializable so it can travel in a JSON message (e.g. to a
/// prestarted supervisor); the JSON names the kind the way [`Layout::name`] does:
/// `{"kind":"hybrid","controllers":{"cpu":"/sys/fs/cgroup/cpu",…},"unified":"/sys/fs/cgroup/unified"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Layout {
    /// Only v1: controller name → mount point (co-mounted controllers share a mount point).
    V1 {
        controllers: BTreeMap<String, PathBuf>,
    },
    /// Only the unified hierarchy, mounted at `root`, which carries the controllers.
    V2 { root: PathBuf },
    /// v1 controllers for limits plus a cgroup2 mount (`unified`) used for tracking and
    /// `cgroup.kill`, whatever controllers it has.
    Hybrid {
        controllers: BTreeMap<String, PathBuf>,
        unified: PathBuf,
    },
}

/// [`detect`], remembered by this process after the first success: starts should not
/// parse mountinfo each time, and cgroup hierarchies are not remounted under a running
/// agent. (The fingerprint calls [`detect`] itself, so a host that rechecks sees changes.)
pub fn detect_cached() -> Result<Layout> {
    static CACHE: once_cell::sync::OnceCell<Layout> = once_cell::sync::OnceCell::new();
    CACHE.get_or_try_init(detect).cloned()
}

/// Detects the layout from `/proc/self/mountinfo`.
pub fn detect() -> Result<Layout> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(|e| {
        Error::new(
            Code::Unsupported,
            format!("cannot read /proc/self/mountinfo: {e}"),
        )
    })?;
    Layout::from_mountinfo(&text)
}

impl Layout {
    /// Parses mountinfo text (the format of `/proc/self/mountinfo`).
    pub fn from_mountinfo(text: &str) -> Result<Layout> {
        let mut controllers: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut unified: Option<PathBuf> = None;
        for line in text.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let mount_point = PathBuf::from(unescape_mountinfo(pre[4]));
            match post[0] {
                "cgroup2" => {
                    unified.get_or_insert(mount_point);
                }
                "cgroup" => {
                    for opt in post[2].split(',') {
                        if V1_CONTROLLERS.contains(&opt) && !controllers.contains_key(opt) {
                            controllers.insert(opt.to_string(), mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        match (controllers.is_empty(), unified) {
            (false, Some(unified)) => Ok(Layout::Hybrid {
                controllers,
                unified,
            }),
            (false, None) => Ok(Layout::V1 { controllers }),
            (true, Some(root)) => Ok(Layout::V2 { root }),
            (true, None) => Err(Error::new(
                Code::Unsupported,
                "no cgroup filesystem is mounted",
            )),
        }
    }

    /// A v1 layout with every controller of [`V1_CONTROLLERS`] at `<root>/<controller>`
    /// (for tests against a fake cgroupfs directory).
    #[cfg(any(test, feature = "testing"))]
    pub fn v1_at(root: &Path) -> Layout {
        Layout::V1 {
            controllers: Self::v1_map(root),
        }
    }

    /// A hybrid layout: v1 controllers at `<root>/<controller>`, unified at `<root>/unified`.
    #[cfg(any(test, feature = "testing"))]
    pub fn hybrid_at(root: &Path) -> Layout {
        Layout::Hybrid {
            controllers: Self::v1_map(root),
            unified: root.join("unified"),
        }
    }

    /// A v2 layout rooted at `root`.
    #[cfg(any(test, feature = "testing"))]
    pub fn v2_at(root: &Path) -> Layout {
        Layout::V2 {
            root: root.to_path_buf(),
        }
    }

    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn v1_map(root: &Path) -> BTreeMap<String, PathBuf> {
        V1_CONTROLLERS
            .iter()
            .map(|c| (c.to_string(), root.join(c)))
            .collect()
    }

    /// The layout an exec task's cgroup is created with: on hybrid the v1 hierarchies
    /// alone, otherwise `self`. On hybrid the v1 hierarchies hold every controller exec
    /// needs (limits, stats, and the freezer that `kill_all` uses), so a cgroup2 directory
    /// without controllers adds nothing but cost: one more `cgroup.procs` write per start,
    /// and a cgroup2 migration takes a global rwsem whose write side waits for an RCU grace
    /// period, which on an idle host is milliseconds. (raw_exec, which has no v1 limits,
    /// keeps its unified tracking directory through [`TaskCgroup::create_tracking`].)
    pub fn for_exec(&self) -> Layout {
        match self {
            Layout::Hybrid { controllers, .. } => Layout::V1 {
                controllers: controllers.clone(),
            },
            other => other.clone(),
        }
    }

    /// Every mount point of the layout (v1 controllers, then the unified hierarchy).
    pub fn mounts(&self) -> Vec<&Path> {
        let (v1, unified) = match self {
            Layout::V1 { controllers } => (Some(controllers), None),
            Layout::V2 { root } => (None, Some(root)),
            Layout::Hybrid {
                controllers,
                unified,
            } => (Some(controllers), Some(unified)),
        };
        let mut out: Vec<&Path> = Vec::new();
        for p in v1.into_iter().flat_map(|c| c.values()).chain(unified) {
            if !out.contains(&p.as_path()) {
                out.push(p);
            }
        }
        out
    }

    /// `"v1"`, `"v2"` or `"hybrid"` (the fingerprint's `driver.exec.cgroup`).
    pub fn name(&self) -> &'static str {
        match self {
            Layout::V1 { .. } => "v1",
            Layout::V2 { .. } => "v2",
            Layout::Hybrid { .. } => "hybrid",
        }
    }

    /// Whether a task cgroup with memory, pids and cpu limits can be created: the
    /// controllers are there and a probe cgroup can be made (and is removed at once) in
    /// each hierarchy used. The error says what is missing.
    pub fn usable(&self) -> std::result::Result<(), String> {
        let mut mounts: Vec<&Path> = Vec::new();
        match self {
            Layout::V1 { controllers } | Layout::Hybrid { controllers, .. } => {
                for c in REQUIRED_CONTROLLERS.iter().chain(&REQUIRED_V1_CONTROLLERS) {
                    if !controllers.contains_key(*c) {
                        return Err(format!("cgroup v1 controller {c} is not mounted"));
                    }
                }
                for c in V1_CONTROLLERS {
                    if let Some(m) = controllers.get(c)
                        && !mounts.contains(&m.as_path())
                    {
                        mounts.push(m);
                    }
                }
                if let Layout::Hybrid { unified, .. } = self {
                    mounts.push(unified);
                }
            }
            Layout::V2 { root } => {
                let avail = fs::read_to_string(root.join("cgroup.controllers")).map_err(|e| {
                    format!(
                        "cannot read {}: {e}",
                        root.join("cgroup.controllers").display()
                    )
                })?;
                for c in REQUIRED_CONTROLLERS {
                    if !avail.split_whitespace().any(|a| a == c) {
                        return Err(format!(
                            "cgroup2 controller {c} is not available at {}",
                            root.display()
                        ));
                    }
                }
                mounts.push(root);
            }
        }
        self.probe(mounts)
    }

    /// [`Layout::usable`], and on pure v2 also what a start under `parent` (the plugin's
    /// `cgroup_parent`) needs: the controllers enabled down to it (as a start enables
    /// them). One that cannot be delegated there (the mount root does not offer it, or a
    /// process sits in a parent directory, which the kernel then refuses to delegate
    /// from) is named in the error.
    pub fn usable_under(&self, parent: &str) -> std::result::Result<(), String> {
        self.usable()?;
        if let Layout::V2 { root } = self {
            ensure_parent(root, parent).map_err(|e| e.message)?;
            super::v2::enable_controllers(root, parent, false).map_err(|e| e.message)?;
        }
        Ok(())
    }

    /// The controllers this layout offers: the v1 hierarchies mounted, or the cgroup2
    /// root's `cgroup.controllers`.
    pub fn controllers(&self) -> Vec<String> {
        match self {
            Layout::V1 { controllers } | Layout::Hybrid { controllers, .. } => {
                controllers.keys().cloned().collect()
            }
            Layout::V2 { root } => fs::read_to_string(root.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }

    /// Makes (and removes at once) a probe cgroup in each of `mounts`.
    fn probe(&self, mounts: Vec<&Path>) -> std::result::Result<(), String> {
        let probe = format!("execdriver-probe-{}-{}", std::process::id(), next_seq());
        for m in mounts {
            let dir = m.join(&probe);
            fs::create_dir(&dir)
                .map_err(|e| format!("cannot create a cgroup in {}: {e}", m.display()))?;
            let _ = fs::remove_dir(&dir);
        }
        Ok(())
    }
}

pub(crate) fn next_seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Octal escapes (`\040` for a space, …) of mountinfo paths.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
