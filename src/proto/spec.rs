//! What the host hands the supervisor for one task (sent over the channel, and kept by
//! the supervisor as `launch.json` in the task's state dir for `driver_exec`), and what
//! the supervisor reports at the end (on the channel, and as `exit.json`). Both sides of
//! the process boundary share these types.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use crate::proto::mounts::Step;

/// How long a supervisor that has said it is idle after its task waits to be taken back
/// (the host sends [`crate::proto::ToSupervisor::Keep`] when it destroys the
/// task) before it exits: 10 s, or `$EXECDRIVER_IDLE_UNCLAIMED_MS` of the host (for
/// tests).
pub fn idle_unclaimed_ms() -> u64 {
    std::env::var("EXECDRIVER_IDLE_UNCLAIMED_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
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
    /// How the root is built, step by step ([`crate::proto::mounts`]). Defaults to
    /// none: `driver_exec` reads the `launch.json` of tasks that earlier releases started,
    /// which has none, and only a start carries a plan out (it refuses an empty one).
    #[serde(default)]
    pub mounts: Vec<Step>,
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
    /// `caps` (docs/task.md "Isolation").
    pub raised: u64,
    /// Install the default seccomp filter ([`crate::supervisor::seccomp`]) before the exec.
    pub seccomp: bool,
    /// The network namespace to join (`network_isolation` mode `group`): a host path.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The supervisor was started in a network namespace of the task's own (mode
    /// `none`): the command brings its loopback up.
    #[serde(default)]
    pub new_net: bool,
    /// (st_dev, st_ino) of `root` and `alloc` as the host made them: a command process that
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
    /// argv; `argv[0]` is the path to exec (inside the task root for exec).
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
    /// The task's cgroups (to kill, read OOM and remove).
    pub cgroup: Option<crate::cgroup::TaskCgroup>,
    /// Instead of `cgroup`: the supervisor makes the task's cgroups itself (one that
    /// made them ahead renames them), and reports them in its start report.
    #[serde(default)]
    pub cgroup_request: Option<CgroupRequest>,
    pub log_dir: PathBuf,
    pub log_name: String,
    pub log_max_files: u32,
    pub log_max_bytes: u64,
    pub state_dir: PathBuf,
    /// Non-zero: the supervisor may run another task after this one (with
    /// `prestart_supervisor`: raw_exec, or an exec supervisor that prepares its tasks'
    /// command processes). Once it has tidied up after the exit it says
    /// [`crate::proto::ToHost::Idle`] and waits this many milliseconds to be taken back
    /// ([`crate::proto::ToSupervisor::Keep`]), then for the next spec on its channel (see
    /// [`crate::proto::chan`]).
    #[serde(default)]
    pub again_ms: u64,
    /// Random, one per start: the handle carries it too, so that a handle of an earlier
    /// task with the same id is told apart from this one (see `crate::host::recover`).
    #[serde(default)]
    pub nonce: String,
    /// The host's claim on the task dir (`<data_dir>/claims/<hash>`, see
    /// [`read_claim`]): released by the supervisor along with the rest of the start's
    /// record when the host goes away before the go ([`undo_record`]).
    #[serde(default)]
    pub claim: Option<PathBuf>,
}

impl Staging {
    /// A launch spec of the kind this supervisor takes, with every part filled in:
    /// parsed once by the staged command process while it waits, so that the parser's
    /// code is mapped in and the real spec's parse at the start does not fault it in page
    /// by page (~30 µs of a forked process's parse, against ~7 µs for the parse itself).
    pub fn sample_spec(&self) -> Vec<u8> {
        let bind = Bind {
            src: "/".into(),
            dst: "/".into(),
            readonly: true,
            file: false,
        };
        let bind = crate::proto::mounts::binds(&self.mounts)
            .next()
            .cloned()
            .unwrap_or(bind);
        let spec = LaunchSpec {
            task_id: "sample".into(),
            argv: vec!["/bin/true".into()],
            env: vec![("K".into(), "v \" \\ \u{e9}".into())],
            cwd: "/".into(),
            isolation: Some(Isolation {
                root: "/r".into(),
                alloc: "/a".into(),
                mounts: crate::proto::mounts::plan(vec![bind], vec![("/bin".into(), "usr/bin".into())]),
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
            again_ms: 1,
            nonce: "0123456789abcdef".into(),
            claim: Some("/c".into()),
        };
        let mut line = crate::proto::line(&crate::proto::ToSupervisor::Spec(Box::new(spec)));
        line.pop();
        line
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

/// The cgroups a host makes for a start while the supervisor it launched for it loads
/// (`execdriver-shim --owns <json>`): the supervisor owns them from its start, so that a
/// host that dies before its go line leaves none behind (the supervisor sees EOF and
/// removes them, empty as they are: never a cgroup with a process in it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Owned {
    pub layout: crate::cgroup::Layout,
    pub parent: String,
    pub name: String,
}

impl Owned {
    /// [`Owned::remove_empty`], tried again for up to `within` while a process there may
    /// still be dying.
    pub fn remove_empty_within(&self, within: std::time::Duration) {
        let Ok(c) = crate::cgroup::TaskCgroup::named(&self.layout, &self.parent, &self.name)
        else {
            return;
        };
        let deadline = std::time::Instant::now() + within;
        loop {
            c.remove_empty();
            if c.dirs.iter().all(|d| !d.exists()) || std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Removes the empty cgroups `<parent>/<name>` of the layout (any that exist).
    pub fn remove_empty(&self) {
        if let Ok(c) = crate::cgroup::TaskCgroup::named(&self.layout, &self.parent, &self.name) {
            c.remove_empty();
        }
    }
}

/// The host's second message, after the spec: the task's directories are made and its
/// artifacts are in place, so the command may start. The host sends the spec first, so
/// that the supervisor parses it (and makes the cgroups) while the host makes the
/// directories and fetches; EOF instead of this message means the start failed (the
/// supervisor then removes what it made and exits).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Go {
    /// The command's path, looked up in the task's root once its artifacts are there
    /// (the spec's `argv[0]` until then is the command as the task names it).
    #[serde(default)]
    pub command: Option<String>,
    /// [`Isolation::root_id`] and [`Isolation::alloc_id`]: known once the directories are.
    #[serde(default)]
    pub root_id: Option<(u64, u64)>,
    #[serde(default)]
    pub alloc_id: Option<(u64, u64)>,
    /// The go carries the write end of a pipe (`SCM_RIGHTS`), which the supervisor
    /// closes once it has sent the exit report: the host's `wait_fd` (the read end)
    /// then reads EOF.
    #[serde(default)]
    pub wait_pipe: bool,
}

impl Go {
    pub fn apply(&self, spec: &mut LaunchSpec) {
        if let (Some(c), Some(argv0)) = (&self.command, spec.argv.first_mut()) {
            argv0.clone_from(c);
        }
        if let Some(iso) = &mut spec.isolation {
            iso.root_id = self.root_id;
            iso.alloc_id = self.alloc_id;
        }
    }
}

/// What a prestarted exec supervisor prepares while it waits for a task
/// (`execdriver-shim --staged <json>`): its command process, in the task's cgroups (made
/// under the placeholder `name`, renamed at the start; v1 only, since cgroup2 dirs cannot
/// be renamed) and in a mount namespace with the `chroot_env` binds, /dev and /proc
/// made ready to attach.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Staging {
    pub layout: crate::cgroup::Layout,
    pub parent: String,
    pub name: String,
    /// The steps of the configuration's mount plan its command process makes ahead
    /// ([`crate::proto::mounts::ahead`]).
    pub mounts: Vec<Step>,
    /// The placeholder gets a freezer cgroup of its own ([`crate::cgroup::Limits::freezer`]:
    /// a supervisor for tasks without a pid namespace of their own).
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

/// The supervisor's own log in a task's state dir: its stderr once the task has started
/// (exit handling, clean-up, anything unexpected), and why a start failed.
pub const SUPERVISOR_LOG: &str = "supervisor.log";

/// The start of the names of a task's log files of `stream` (`stdout`, `stderr`):
/// `<name>.<stream>.<N>`, as Nomad's logmon names them.
pub fn log_prefix(name: &str, stream: &str) -> String {
    format!("{name}.{stream}.")
}

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
/// `launch.json` as the host writes it before the go line; the supervisor makes it
/// durable and gives it its name once the task runs ([`commit_launch`]).
const LAUNCH_TMP: &str = ".launch.json.tmp";
/// The exit status's room, reserved when the task starts ([`record_start`]) and rewritten
/// in place when it ends ([`write_exit`]), so that recording the status needs no new
/// block of a disk the task's logs may have filled.
const EXIT_RESERVED: &str = ".exit.reserved";
/// The size of [`EXIT_RESERVED`]; a status is cut to fit (only its `err` can be long).
const EXIT_ROOM: usize = 4096;

fn at(dir: &Path, name: &str, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", dir.join(name).display()))
}

/// Records a task in its state dir `dir` before it may start (the host, before the go
/// line): the launch spec (not yet durable) and the exit status's reserved room. An
/// error (a full disk, a read-only one) fails the start: a task that cannot be recorded
/// does not run. The error names the file.
pub fn record_start(dir: &Path, spec: &[u8]) -> std::io::Result<()> {
    write_new(dir, LAUNCH_TMP, spec)?;
    write_new(dir, EXIT_RESERVED, &[b' '; EXIT_ROOM])
}

/// Creates `dir/name` (replacing one left there) holding `bytes`.
fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(name))
        .map_err(|e| at(dir, name, e))?;
    std::io::Write::write_all(&mut f, bytes).map_err(|e| at(dir, name, e))
}

/// fsync of the directory `dir` (a rename in it made durable).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Makes the launch spec [`record_start`] wrote durable under its name (the supervisor,
/// off the start's path): fsync, rename, fsync of the directory. A crash leaves either
/// no `launch.json` or a whole one.
pub fn commit_launch(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir.join(LAUNCH_TMP))
        .and_then(|f| f.sync_all())
        .map_err(|e| at(dir, LAUNCH_TMP, e))?;
    std::fs::rename(dir.join(LAUNCH_TMP), dir.join(LAUNCH_FILE))
        .map_err(|e| at(dir, LAUNCH_FILE, e))?;
    sync_dir(dir).map_err(|e| at(dir, ".", e))
}

/// The launch spec of the task whose state dir is `dir`: `launch.json`, or when there is
/// none the one the host wrote before the supervisor gave it its name. A record that does
/// not parse is an `InvalidData` error; any other kind is the I/O error of the read.
pub fn read_launch(dir: &Path) -> std::io::Result<LaunchSpec> {
    let bytes = match std::fs::read(dir.join(LAUNCH_FILE)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::read(dir.join(LAUNCH_TMP)),
        r => r,
    }
    .map_err(|e| at(dir, LAUNCH_FILE, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        at(
            dir,
            LAUNCH_FILE,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })
}

/// Whether the task of the state dir `dir` is recorded for good: its supervisor got the
/// go and gave the launch spec its name ([`commit_launch`]). Until then the state dir is
/// a start's that may still be undone.
pub fn committed(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(LAUNCH_FILE)).is_ok()
}

/// Whether the task of the state dir `dir` has recorded its exit ([`read_exit`] finds
/// one, readable or not).
pub fn exit_recorded(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(EXIT_FILE)).is_ok() || reserved_exit(dir).is_some()
}

/// A shared lock on the state dir `dir`, held as long as the returned file is open. The
/// host holds one from when it makes the state dir until its start has returned, the
/// supervisor from the go until the task has ended: a state dir that is not
/// [`committed`] and that nobody holds belongs to a start whose owner died (the kernel
/// drops a dead process's locks), which [`take_over`] tells.
///
/// [`held`] probes with an exclusive lock it drops at once: a shared one refused meanwhile
/// is tried again for a moment (the probe's, not an owner's; a [`take_over`] holds its
/// lock only while it removes a dead start's dir).
pub fn hold(dir: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::File::open(dir)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
    loop {
        match crate::sys::try_flock(&f, false) {
            Err(e)
                if e.raw_os_error() == Some(libc::EWOULDBLOCK)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            r => return r.map(|()| f),
        }
    }
}

/// Whether someone [`hold`]s the state dir `dir` (false when it cannot be opened).
pub fn held(dir: &Path) -> bool {
    std::fs::File::open(dir).is_ok_and(|f| {
        crate::sys::try_flock(&f, true)
            .is_err_and(|e| e.raw_os_error() == Some(libc::EWOULDBLOCK))
    })
}

/// The state dir `dir` locked exclusively, when nobody [`hold`]s it: its owner is gone,
/// and no start can take it while the returned file is open. `None` when it is held, or
/// cannot be opened (it is gone).
pub fn take_over(dir: &Path) -> Option<std::fs::File> {
    let f = std::fs::File::open(dir).ok()?;
    crate::sys::try_flock(&f, true).ok()?;
    Some(f)
}

/// The start of the names of the host's staging dirs in a task dir, one per artifact
/// being fetched (`crate::host::fetch`).
pub const STAGING_PREFIX: &str = ".fetch-";

/// What a claim on a task dir holds: the id of the task that has it, and the task dir.
pub fn claim_text(id: &str, task_dir: &Path) -> Vec<u8> {
    let mut b = id.as_bytes().to_vec();
    b.push(b'\n');
    b.extend_from_slice(task_dir.as_os_str().as_encoded_bytes());
    b
}

/// The task id and the task dir of the claim file `claim` ([`claim_text`]; a claim made
/// by an earlier release holds the id alone). `None` when it cannot be read.
pub fn read_claim(claim: &Path) -> Option<(String, Option<PathBuf>)> {
    use std::os::unix::ffi::OsStrExt;
    let b = std::fs::read(claim).ok()?;
    let (id, dir) = match b.iter().position(|&c| c == b'\n') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (&b[..], None),
    };
    let id = String::from_utf8_lossy(id).trim().to_string();
    let dir = dir
        .filter(|d| d.first() == Some(&b'/'))
        .map(|d| PathBuf::from(std::ffi::OsStr::from_bytes(d)));
    Some((id, dir))
}

/// Removes the claim `claim` when task `id` holds it; with `staging`, first the staging
/// dirs in the claimed task dir (the claim's owner died while it fetched: as long as the
/// claim is there, nobody else fetches into that task dir).
pub fn release_claim(claim: &Path, id: &str, staging: bool) {
    let Some((owner, task_dir)) = read_claim(claim) else {
        return;
    };
    if owner != id {
        return;
    }
    if staging && let Some(t) = task_dir {
        remove_staging(&t);
    }
    let _ = std::fs::remove_file(claim);
}

/// Removes the staging dirs in `task_dir`.
fn remove_staging(task_dir: &Path) {
    for e in std::fs::read_dir(task_dir).into_iter().flatten().flatten() {
        if e.file_name().as_encoded_bytes().starts_with(STAGING_PREFIX.as_bytes())
            && e.file_type().is_ok_and(|t| t.is_dir())
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes what a start recorded of `spec`'s task (its state dir, the claim on its task
/// dir, the staging dirs there) when the host went away before the go: the supervisor
/// calls it when it reads EOF instead. Only when nothing was committed, only this
/// start's (a launch record of another start stays), and only once nobody holds the
/// state dir: a dying host's lock goes a moment after its channel, a sweep or a start's
/// check holds it for a moment; one held longer (a start of this id under way in another
/// process) is left alone.
pub fn undo_record(spec: &LaunchSpec) {
    let dir = &spec.state_dir;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let lock = loop {
        let f = match std::fs::File::open(dir) {
            Ok(f) => f,
            // Never made, or removed already: the claim may be left.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break None,
            Err(_) => return,
        };
        match crate::sys::try_flock(&f, true) {
            Ok(()) => break Some(f),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(_) => return,
        }
    };
    if lock.is_some() {
        if committed(dir) {
            return;
        }
        if let Ok(b) = std::fs::read(dir.join(LAUNCH_TMP))
            && let Ok(other) = serde_json::from_slice::<LaunchSpec>(&b)
            && other.nonce != spec.nonce
        {
            return;
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Some(claim) = &spec.claim {
        release_claim(claim, &spec.task_id, true);
    }
}

/// The status as its file holds it: compact JSON padded with spaces to the reserved room,
/// `err` cut so that it fits.
fn exit_bytes(exit: &ExitStatus) -> Vec<u8> {
    let mut exit = exit.clone();
    loop {
        let mut b = serde_json::to_vec(&exit).unwrap_or_default();
        if b.len() <= EXIT_ROOM {
            b.resize(EXIT_ROOM, b' ');
            return b;
        }
        let err = exit.err.take().unwrap_or_default();
        let keep = err.len().saturating_sub(b.len() - EXIT_ROOM + 8);
        let mut cut = keep;
        while !err.is_char_boundary(cut) {
            cut -= 1;
        }
        exit.err = Some(format!("{}…", &err[..cut]));
    }
}

/// Writes the exit status as `exit.json` in the state dir `dir` (the supervisor, when
/// the task has ended): into the room reserved at the start, in place, then fsync,
/// rename, fsync of the directory. Without that room (a state dir of an older start), a
/// new file the same way.
pub fn write_exit(dir: &Path, exit: &ExitStatus) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let bytes = exit_bytes(exit);
    let reserved = dir.join(EXIT_RESERVED);
    let from = match std::fs::OpenOptions::new().write(true).open(&reserved) {
        Ok(f) => {
            f.write_all_at(&bytes, 0)
                .map_err(|e| at(dir, EXIT_RESERVED, e))?;
            f.sync_all().map_err(|e| at(dir, EXIT_RESERVED, e))?;
            reserved
        }
        Err(_) => {
            let tmp = dir.join(".exit.json.tmp");
            std::fs::write(&tmp, &bytes).map_err(|e| at(dir, ".exit.json.tmp", e))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            tmp
        }
    };
    std::fs::rename(from, dir.join(EXIT_FILE)).map_err(|e| at(dir, EXIT_FILE, e))?;
    sync_dir(dir).map_err(|e| at(dir, ".", e))
}

/// The exit status in the state dir `dir`: `None` when there is none; an error when the
/// file is there but cannot be read or parsed (torn), which the caller reports as such,
/// never as an exit code. Without `exit.json`, a whole status in the reserved room counts
/// (the supervisor wrote it in place and made it durable, and died before the rename).
pub fn read_exit(dir: &Path) -> Option<Result<ExitStatus, String>> {
    match std::fs::read(dir.join(EXIT_FILE)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => reserved_exit(dir).map(Ok),
        Err(e) => Some(Err(format!("{}: {e}", dir.join(EXIT_FILE).display()))),
        Ok(b) => Some(
            serde_json::from_slice(&b)
                .map_err(|e| format!("{} is unreadable: {e}", dir.join(EXIT_FILE).display())),
        ),
    }
}

/// The status in the reserved room of `dir` when it holds a whole one. The room as
/// reserved (spaces) or a torn write does not parse: a status is written in one `pwrite`
/// at offset 0, so what parses is all of it.
fn reserved_exit(dir: &Path) -> Option<ExitStatus> {
    let b = std::fs::read(dir.join(EXIT_RESERVED)).ok()?;
    if b.len() != EXIT_ROOM {
        return None;
    }
    serde_json::from_slice(&b).ok()
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
    /// A new directory of this test's own.
    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "execdriver-{tag}-{}-{}",
            std::process::id(),
            crate::sys::random_hex(4)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(super::rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            super::rfc3339(1_709_210_096, 5),
            "2024-02-29T12:34:56.000000005Z"
        );
    }

    fn status(err: Option<String>) -> super::ExitStatus {
        super::ExitStatus {
            exit_code: 7,
            signal: 0,
            oom_killed: false,
            err,
            started_at: "s".into(),
            finished_at: "f".into(),
        }
    }

    /// The exit status goes into the room reserved at the start (its inode stays: no new
    /// file), a long `err` is cut to fit, and a torn file reads as an error, not a code.
    #[test]
    fn exit_status_fills_its_reserved_room() {
        use std::os::unix::fs::MetadataExt;
        let dir = scratch("exit");
        assert!(super::read_exit(&dir).is_none());
        super::record_start(&dir, b"{}").unwrap();
        let ino = std::fs::metadata(dir.join(super::EXIT_RESERVED))
            .unwrap()
            .ino();
        let long = "é".repeat(5000);
        super::write_exit(&dir, &status(Some(long))).unwrap();
        let m = std::fs::metadata(dir.join(super::EXIT_FILE)).unwrap();
        assert_eq!((m.ino(), m.len()), (ino, super::EXIT_ROOM as u64));
        let back = super::read_exit(&dir).unwrap().unwrap();
        assert_eq!(back.exit_code, 7);
        assert!(back.err.unwrap().ends_with('…'));
        std::fs::write(dir.join(super::EXIT_FILE), b"{\"exit_code\":7,\"sig").unwrap();
        let e = super::read_exit(&dir).unwrap().unwrap_err();
        assert!(e.contains("unreadable"), "{e}");
        // Without a reserved room (an older state dir), a new file.
        std::fs::remove_file(dir.join(super::EXIT_FILE)).unwrap();
        super::write_exit(&dir, &status(None)).unwrap();
        assert_eq!(super::read_exit(&dir).unwrap().unwrap().exit_code, 7);
        // The launch spec: not yet named, read all the same; then committed.
        let e = super::read_launch(&dir).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{{}} is not a spec: {e}");
        assert!(!super::committed(&dir));
        super::commit_launch(&dir).unwrap();
        assert!(dir.join(super::LAUNCH_FILE).exists() && !dir.join(super::LAUNCH_TMP).exists());
        assert!(super::committed(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A whole status in the reserved room (written in place, not renamed: a crash in
    /// between) is the task's; the room as reserved, or torn, is no status.
    #[test]
    fn a_status_not_renamed_yet_is_read_from_its_room() {
        use std::os::unix::fs::FileExt;
        let dir = scratch("room");
        super::record_start(&dir, b"{}").unwrap();
        assert!(super::read_exit(&dir).is_none() && !super::exit_recorded(&dir));
        let room = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(super::EXIT_RESERVED))
            .unwrap();
        let bytes = super::exit_bytes(&status(None));
        room.write_all_at(&bytes[..20], 0).unwrap();
        assert!(super::read_exit(&dir).is_none(), "a torn write is no status");
        room.write_all_at(&bytes, 0).unwrap();
        assert_eq!(super::read_exit(&dir).unwrap().unwrap().exit_code, 7);
        assert!(super::exit_recorded(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_claim_names_its_task_and_task_dir() {
        let dir = scratch("claim");
        let task_dir = dir.join("alloc/web");
        std::fs::create_dir_all(task_dir.join(".fetch-1-2-3-4")).unwrap();
        let claim = dir.join("claim");
        std::fs::write(&claim, super::claim_text("t-1", &task_dir)).unwrap();
        assert_eq!(
            super::read_claim(&claim),
            Some(("t-1".to_string(), Some(task_dir.clone())))
        );
        // Another task's claim stays; the owner's goes, with the staging dirs.
        super::release_claim(&claim, "t-2", true);
        assert!(claim.exists() && task_dir.join(".fetch-1-2-3-4").exists());
        super::release_claim(&claim, "t-1", true);
        assert!(!claim.exists() && !task_dir.join(".fetch-1-2-3-4").exists());
        // A claim of an earlier release: the id alone.
        std::fs::write(&claim, b"t-1").unwrap();
        assert_eq!(super::read_claim(&claim), Some(("t-1".to_string(), None)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A state dir held (by a start under way or a supervisor) cannot be taken over; one
    /// whose holder let go (or died) can.
    #[test]
    fn a_held_state_dir_is_not_taken_over() {
        let dir = scratch("held");
        let a = super::hold(&dir).unwrap();
        let b = super::hold(&dir).unwrap();
        assert!(super::held(&dir) && super::take_over(&dir).is_none());
        drop((a, b));
        assert!(!super::held(&dir));
        let mine = super::take_over(&dir).unwrap();
        assert!(super::hold(&dir).is_err());
        drop(mine);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!super::held(&dir) && super::take_over(&dir).is_none());
    }

    #[test]
    fn a_sample_spec_parses_with_every_part() {
        let staging = super::Staging {
            layout: crate::cgroup::Layout::V2 {
                root: "/sys/fs/cgroup".into(),
            },
            parent: "p".into(),
            name: "ahead-x".into(),
            mounts: vec![],
            freezer: false,
            caps: 1,
        };
        let Ok(crate::proto::ToSupervisor::Spec(s)) = crate::proto::parse(&staging.sample_spec())
        else {
            panic!("not a spec");
        };
        let iso = s.isolation.expect("isolation");
        assert!(crate::proto::mounts::binds(&iso.mounts).count() == 1);
        assert!(crate::proto::mounts::symlinks(&iso.mounts).count() == 1 && iso.root_id.is_some());
        assert!(s.cgroup_request.is_some() && !s.env.is_empty());
    }
}
