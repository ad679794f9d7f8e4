//! What the host hands the supervisor for one task (sent over the channel, and kept by
//! the supervisor as `launch.json` in the task's state dir for `driver_exec`), and what
//! the supervisor reports at the end (on the channel, and as `exit.json`). Both sides of
//! the process boundary share these types.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Signal value that marks a signal from the driver as the "kill the whole task now"
/// command rather than a signal to forward (sent with `SI_QUEUE`).
pub const KILL_ALL_MAGIC: i32 = 0x6b69_6c6c;
/// How long a supervisor that has said `{"idle":true}` after its task waits to be taken
/// back as a spare (the host sends [`KEEP`] when it destroys the task) before it exits:
/// 10 s, or `$EXECDRIVER_IDLE_UNCLAIMED_MS` of the host (for tests).
pub fn idle_unclaimed_ms() -> u64 {
    std::env::var("EXECDRIVER_IDLE_UNCLAIMED_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// What the host sends a supervisor it takes back as a spare (a line of its own).
pub const KEEP: &[u8] = b"keep";

/// Base of the value that asks the supervisor to forward signal `value - base` to the
/// command (used for every signal, so SIGKILL and SIGSTOP never hit the supervisor itself).
pub const FORWARD_MAGIC: i32 = 0x7369_0000;
/// The realtime signal that carries driver commands to the supervisor.
pub fn control_signal() -> i32 {
    libc::SIGRTMIN() + 3
}

/// A bind mount into the task root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bind {
    /// Host path.
    pub src: PathBuf,
    /// Path inside the task root (absolute, e.g. `/usr`).
    pub dst: PathBuf,
    pub readonly: bool,
    /// Not a directory (its mount point is then an empty file).
    #[serde(default)]
    pub file: bool,
}

/// Isolation for `exec` tasks (absent for `raw_exec`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Isolation {
    /// Host path of the task root (`<alloc_dir>/<task>`).
    pub root: PathBuf,
    /// Host path of the shared alloc dir (`<alloc_dir>/alloc`).
    pub alloc: PathBuf,
    pub binds: Vec<Bind>,
    /// Top-level symlinks to recreate in the root (dst in root, link target).
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    pub pid_ns: bool,
    pub ipc_ns: bool,
    pub no_pivot_root: bool,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The task's capability set (bit N = capability N): its bounding set.
    pub caps: u64,
    /// The capabilities the command holds in its permitted, effective, inheritable and
    /// ambient sets: for a non-root user only those named in `cap_add`, for root all of
    /// `caps` (SPEC §3).
    pub raised: u64,
    /// Install the default seccomp filter ([`crate::isolate::seccomp`]) before the exec.
    pub seccomp: bool,
    /// The network namespace to join (`network_isolation` mode `group`): a host path.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The supervisor was started in a network namespace of the task's own (mode
    /// `none`): the command brings its loopback up.
    #[serde(default)]
    pub new_net: bool,
    /// Size of the /secrets tmpfs in bytes.
    pub secrets_size: u64,
    /// (st_dev, st_ino) of `root` and `alloc` as the host made them: a standby that
    /// looks them up in its copy of the host's mount tree checks it finds those.
    #[serde(default)]
    pub root_id: Option<(u64, u64)>,
    #[serde(default)]
    pub alloc_id: Option<(u64, u64)>,
}

/// Everything the supervisor needs; the host resolved it all (user, command path,
/// environment) so the supervisor does no lookups of its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LaunchSpec {
    pub task_id: String,
    /// argv; argv[0] is the path to exec (inside the task root for exec).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub isolation: Option<Isolation>,
    /// The files the command process writes `"0"` to before it execs, to join its cgroups
    /// (`TaskCgroup::self_join_files`: v1 `tasks`, the cgroup2 `cgroup.procs`).
    pub cgroup_procs: Vec<PathBuf>,
    /// cgroup2 dir the command is cloned into (`CLONE_INTO_CGROUP`); its `cgroup.procs`
    /// is then not written (that write waits for an RCU grace period on an idle host).
    #[serde(default)]
    pub clone_into: Option<PathBuf>,
    /// The task's cgroups, serialized (used to kill, read OOM and remove).
    pub cgroup: Option<serde_json::Value>,
    /// Instead of `cgroup`: the supervisor makes the task's cgroups itself (a spare that
    /// made them ahead renames them), and reports them in its start report.
    #[serde(default)]
    pub cgroup_request: Option<CgroupRequest>,
    pub log_dir: PathBuf,
    pub log_name: String,
    pub log_max_files: u32,
    pub log_max_bytes: u64,
    pub state_dir: PathBuf,
    /// Non-zero: the supervisor may run another task after this one (with
    /// `prestart_supervisor`: raw_exec, or an exec spare that prepares its tasks' command
    /// processes). Once it has tidied up after the exit it says
    /// `{"idle":true}` and waits this many milliseconds to be taken back as a spare
    /// ([`KEEP`]), then for the next spec on its channel (see [`crate::chan`]).
    #[serde(default)]
    pub recycle: u64,
}

impl Warm {
    /// A launch spec of the kind this spare takes, with every part filled in: parsed
    /// once by the standby while it waits, so that the parser's code is mapped in and
    /// the real spec's parse at the start does not fault it in page by page (~30 µs of a
    /// forked standby's parse, against ~7 µs for the parse itself).
    pub fn sample_spec(&self) -> Vec<u8> {
        let bind = self.binds.first().cloned().unwrap_or(Bind {
            src: "/".into(),
            dst: "/".into(),
            readonly: true,
            file: false,
        });
        let spec = LaunchSpec {
            task_id: "sample".into(),
            argv: vec!["/bin/true".into()],
            env: vec![("K".into(), "v \" \\ \u{e9}".into())],
            cwd: "/".into(),
            isolation: Some(Isolation {
                root: "/r".into(),
                alloc: "/a".into(),
                binds: vec![bind],
                symlinks: vec![("/bin".into(), "usr/bin".into())],
                pid_ns: true,
                ipc_ns: true,
                no_pivot_root: false,
                uid: 65534,
                gid: 65534,
                groups: vec![65534],
                caps: 1,
                raised: 1,
                seccomp: true,
                netns: Some("/n".into()),
                new_net: false,
                secrets_size: SECRETS_SIZE,
                root_id: Some((1, 2)),
                alloc_id: Some((3, 4)),
            }),
            cgroup_procs: vec!["/c".into()],
            clone_into: None,
            cgroup: None,
            cgroup_request: Some(CgroupRequest {
                layout: self.layout.clone(),
                parent: self.parent.clone(),
                limits: crate::cgroup::Limits {
                    cpu_mhz: 100,
                    memory_bytes: 1 << 20,
                    ..Default::default()
                },
                tracking: false,
            }),
            log_dir: "/l".into(),
            log_name: "n".into(),
            log_max_files: 1,
            log_max_bytes: 1,
            state_dir: "/s".into(),
            recycle: 1,
        };
        serde_json::to_vec(&spec).unwrap_or_default()
    }
}

/// The cgroups a supervisor makes for its task: `<parent>/<task_id>` in every hierarchy
/// of `layout`, with `limits`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CgroupRequest {
    pub layout: crate::cgroup::Layout,
    pub parent: String,
    pub limits: crate::cgroup::Limits,
    /// Only to track and kill the task's processes (raw_exec): one cgroup2 directory
    /// without controllers or limits, when the host has a cgroup2 hierarchy
    /// ([`crate::cgroup::TaskCgroup::create_tracking`]); none is no error.
    #[serde(default)]
    pub tracking: bool,
}

impl CgroupRequest {
    /// Makes the cgroups `<parent>/<name>` asked for (none for tracking when the host has
    /// no cgroup2 hierarchy, or when that fails: the task is still a tree of its
    /// supervisor's).
    pub fn make(&self, name: &str) -> crate::error::Result<Option<crate::cgroup::TaskCgroup>> {
        use crate::cgroup::TaskCgroup;
        if self.tracking {
            return Ok(
                TaskCgroup::create_tracking(&self.layout, &self.parent, name)
                    .ok()
                    .flatten(),
            );
        }
        TaskCgroup::create(&self.layout.for_exec(), &self.parent, name, &self.limits).map(Some)
    }
}

/// The host's second line, after the spec: the task's directories are made and its
/// artifacts are in place, so the command may start. The host sends the spec before it
/// makes the directories when nothing in the spec depends on them (no artifacts), so that
/// the supervisor parses it and makes the cgroups meanwhile; EOF instead of this line
/// means the start failed (the supervisor then removes what it made and exits).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Go {
    /// [`Isolation::root_id`] and [`Isolation::alloc_id`]: known once the directories are.
    #[serde(default)]
    pub root_id: Option<(u64, u64)>,
    #[serde(default)]
    pub alloc_id: Option<(u64, u64)>,
}

impl Go {
    pub fn apply(&self, spec: &mut LaunchSpec) {
        if let Some(iso) = &mut spec.isolation {
            iso.root_id = self.root_id;
            iso.alloc_id = self.alloc_id;
        }
    }
}

/// What a spare exec supervisor prepares while it waits for a task
/// (`execdriver-shim --warm <json>`): its command process, in the task's cgroups (made
/// under the placeholder `name`, renamed at the start; v1 only, since cgroup2 dirs cannot
/// be renamed) and in a mount namespace with the `chroot_env` binds, /dev and /proc
/// made ready to attach.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Warm {
    pub layout: crate::cgroup::Layout,
    pub parent: String,
    pub name: String,
    pub binds: Vec<Bind>,
    /// The placeholder gets a freezer cgroup of its own ([`crate::cgroup::Limits::freezer`]:
    /// a spare for tasks without a pid namespace of their own).
    #[serde(default)]
    pub freezer: bool,
    /// The bounding set the command process keeps while it waits
    /// ([`crate::caps::ceiling`] of `allow_caps`); all of them when absent.
    #[serde(default = "all_caps")]
    pub caps: u64,
}

fn all_caps() -> u64 {
    u64::MAX
}

/// Size of a task's `/secrets` tmpfs.
pub const SECRETS_SIZE: u64 = 1 << 20;

/// The supervisor's report when the task has ended (`exit.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitStatus {
    pub exit_code: i32,
    pub signal: i32,
    pub oom_killed: bool,
    pub err: Option<String>,
    pub started_at: String,
    pub finished_at: String,
}

pub const LAUNCH_FILE: &str = "launch.json";
pub const EXIT_FILE: &str = "exit.json";

/// Writes `bytes` to `dir/name` atomically (temp file, fsync-free rename).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// RFC 3339 UTC timestamp with nanoseconds.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

/// Formats seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(super::rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            super::rfc3339(1_709_210_096, 5),
            "2024-02-29T12:34:56.000000005Z"
        );
    }

    #[test]
    fn a_spares_sample_spec_parses_with_every_part() {
        let warm = super::Warm {
            layout: crate::cgroup::Layout::V2 {
                root: "/sys/fs/cgroup".into(),
            },
            parent: "p".into(),
            name: "spare-x".into(),
            binds: vec![],
            freezer: false,
            caps: 1,
        };
        let s: super::LaunchSpec = serde_json::from_slice(&warm.sample_spec()).unwrap();
        let iso = s.isolation.expect("isolation");
        assert!(!iso.binds.is_empty() && !iso.symlinks.is_empty() && iso.root_id.is_some());
        assert!(s.cgroup_request.is_some() && !s.env.is_empty());
    }
}
