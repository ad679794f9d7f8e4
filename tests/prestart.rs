//! Prestarted ("spare") supervisors (`prestart_supervisor`, on by default): after a start,
//! one idle supervisor of that kind waits for the next start of the kind, which takes it;
//! an exec spare also prepares its command process (cgroups, mount namespace).
//!
//! The plugin configuration and the spares are process-wide: every test takes [`LOCK`]
//! first, so that no other start in this process takes a spare between two of its checks,
//! and sets the configuration it needs itself (`driver_configure` ends every spare and the
//! fork server, so each starts from none, whatever ran before); one that sets another
//! than the default puts the default back when it ends.

mod common;
use common::*;
use serde_json::json;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Held by every test of this file for its whole run.
static LOCK: Mutex<()> = Mutex::new(());

fn configure(req: serde_json::Value) {
    op(execdriver::driver::configure, req).unwrap();
}

/// Puts the default plugin configuration back on drop (which ends the spares).
struct DefaultConfig;

impl Drop for DefaultConfig {
    fn drop(&mut self) {
        let _ = op(execdriver::driver::configure, json!({}));
    }
}

/// The idle raw_exec spares, once no spare is still being started in the background.
fn spares() -> Vec<i32> {
    spares_of(|flags| flags == 0)
}

/// The idle exec spares.
fn exec_spares() -> Vec<i32> {
    spares_of(|flags| flags != 0)
}

fn spares_of(kind: impl Fn(i32) -> bool) -> Vec<i32> {
    execdriver::host::pool::settle();
    execdriver::host::pool::spare_pids()
        .into_iter()
        .filter(|(f, _)| kind(*f))
        .map(|(_, p)| p)
        .collect()
}

fn ppid_of(pid: i32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(") ")
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

fn gone(pid: i32) -> bool {
    // A zombie keeps its /proc entry: gone means exited and reaped.
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn supervisor_pid(r: &serde_json::Value) -> i32 {
    r["pid"].as_i64().unwrap() as i32
}

/// Starts `req`, waits for it, destroys it; returns (supervisor pid, exit code, stdout).
fn run_task(req: serde_json::Value, d: &Path) -> (i32, i64, String) {
    let name = req["name"].as_str().unwrap().to_string();
    let r = start(req).unwrap_or_else(|e| panic!("start failed: {e}"));
    let id = r["task_id"].as_str().unwrap().to_string();
    let w = wait(&id, 30_000).unwrap();
    // The spare the start asked for is made before the destroy takes this supervisor
    // back (else it may find that one there and make none): the same order every run.
    execdriver::host::pool::settle();
    destroy(&id);
    (
        supervisor_pid(&r),
        w["exit_code"].as_i64().unwrap(),
        stdout_of(d, &name),
    )
}

/// Tasks that keep running, destroyed on drop: none is left behind by a test that fails
/// before it destroys them itself.
#[derive(Default)]
struct Held(Vec<String>);

impl Held {
    /// [`hold`], the task destroyed when `self` is dropped.
    fn hold(&mut self, d: &Path, name: &str) -> (String, i32) {
        let h = hold(d, name);
        self.0.push(h.0.clone());
        h
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for id in &self.0 {
            destroy(id);
        }
    }
}

/// Where the raw_exec tests start from: the default configuration (no spare, no fork
/// server), then one raw_exec task run, which leaves two spares, the one its start had
/// made by the fork server and its own supervisor taken back. Returns (that supervisor,
/// the spares oldest first).
fn two_raw_spares() -> (i32, Vec<i32>) {
    configure(json!({}));
    let d = TempDir::new("pre-first");
    let (first, code, out) = run_task(raw_task("first", d.path(), "echo one"), d.path());
    assert_eq!((code, out.as_str()), (0, "one\n"));
    let s = spares();
    assert_eq!(s.len(), 2, "the spare and the first supervisor: {s:?}");
    assert!(s.contains(&first), "{s:?}");
    (first, s)
}

/// The first start launches its own supervisor and leaves a spare of its kind, made by
/// the supervisors' fork server; after the task, its supervisor is taken back as a second
/// spare.
#[test]
fn the_first_start_leaves_a_spare_made_by_the_fork_server() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    init();
    configure(json!({}));
    assert!(spares().is_empty(), "no spare before the first start");
    let shim = std::fs::canonicalize(env!("CARGO_BIN_EXE_execdriver-shim")).unwrap();

    let d = TempDir::new("pre-a");
    let (first, code, out) = run_task(raw_task("a", d.path(), "echo one"), d.path());
    assert_eq!((code, out.as_str()), (0, "one\n"));
    let s = spares();
    assert_eq!(s.len(), 2, "the spare and the first supervisor: {s:?}");
    assert!(
        s.contains(&first),
        "the first task's supervisor, taken back: {s:?}"
    );
    let spare = *s.iter().find(|p| **p != first).unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{spare}/exe")).unwrap(),
        shim,
        "the spare runs the supervisor binary"
    );
    let ppid = ppid_of(spare);
    assert_eq!(ppid, std::process::id(), "the spare is our child");
    // It shows as the supervisor, not as the fork server it was cloned from.
    let cmdline = std::fs::read(format!("/proc/{spare}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    assert_eq!(args.len(), 1, "{:?}", String::from_utf8_lossy(&cmdline));
    // It was made by the supervisors' fork server, itself our child running the shim.
    let mother = execdriver::host::pool::fork_server_pid().expect("a fork server");
    assert_eq!(
        std::fs::read_link(format!("/proc/{mother}/exe")).unwrap(),
        shim
    );
    assert_eq!(ppid_of(mother), std::process::id());
    assert!(
        std::fs::read_to_string(format!("/proc/{mother}/environ"))
            .unwrap()
            .contains("EXECDRIVER_SHIM_MODE=fork-server")
    );
    let comm = |p: i32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap();
    assert_eq!(comm(mother), "execdriver-fork\n");
    assert_eq!(comm(spare), "execdriver-shim\n");
}

/// The next start takes the newest spare (either, depending on which was ready first),
/// which runs this task (its own logs, exit code and state) and is taken back after it:
/// back to back, no supervisor is started or ended.
#[test]
fn the_next_start_takes_the_newest_spare_and_gives_it_back() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (_, s) = two_raw_spares();
    let (older, newest) = (s[0], s[1]);
    let d = TempDir::new("pre-b");
    let r = start(raw_task("b", d.path(), "echo two; exit 3")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    let w = wait(&id, 30_000).unwrap();
    let state_dir = Path::new(r["handle"]["state_dir"].as_str().unwrap()).to_path_buf();
    // Written just after the exit report that ends the wait.
    until(|| state_dir.join("exit.json").exists());
    let exit_json = std::fs::read_to_string(state_dir.join("exit.json")).unwrap();
    destroy(&id);
    assert_eq!(supervisor_pid(&r), newest);
    assert_eq!(w["exit_code"], 3);
    assert!(exit_json.contains("\"exit_code\":3"), "{exit_json}");
    assert_eq!(stdout_of(d.path(), "b"), "two\n");
    assert_eq!(spares(), vec![older, newest]);
}

/// The handle of a task whose supervisor was taken back as a spare, recovered after the
/// destroy, is an ended task, not the live supervisor.
#[test]
fn a_recycled_supervisors_old_handle_recovers_as_an_ended_task() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (_, s) = two_raw_spares();
    let newest = s[1];
    let d = TempDir::new("pre-b");
    let r = start(raw_task("b", d.path(), "echo two; exit 3")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    wait(&id, 30_000).unwrap();
    let state_dir = Path::new(r["handle"]["state_dir"].as_str().unwrap()).to_path_buf();
    until(|| state_dir.join("exit.json").exists());
    destroy(&id);
    assert_eq!(supervisor_pid(&r), newest);
    recycled_supervisor_not_recovered_as_the_task(&r["handle"], newest);
}

/// A signal queued for a supervisor after its task ended is not passed on to its next
/// task.
#[test]
fn a_signal_queued_after_a_task_ended_is_not_forwarded_to_the_next() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    two_raw_spares();
    // One more task: the newest spare is then a supervisor whose task has just ended.
    let d = TempDir::new("pre-b");
    let (sup, code, _) = run_task(raw_task("b", d.path(), "true"), d.path());
    assert_eq!(code, 0);
    assert_eq!(
        spares().last(),
        Some(&sup),
        "taken back as the newest spare"
    );
    stale_signal_not_forwarded(sup);
}

/// Two tasks that keep running hold both spares: the second start finds none left and
/// has one made by the fork server.
#[test]
fn a_start_that_finds_no_spare_left_has_one_made_by_the_fork_server() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (first, two) = two_raw_spares();
    let spare = *two.iter().find(|p| **p != first).unwrap();
    let (older, newest) = (two[0], two[1]);
    let d = TempDir::new("pre-h");
    let mut held = Held::default();
    let h1 = held.hold(d.path(), "h1");
    let h2 = held.hold(d.path(), "h2");
    assert_eq!((h1.1, h2.1), (newest, older), "newest first");
    let s = spares();
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(s[0] != first && s[0] != spare);
}

/// Two running tasks holding the two spares of [`two_raw_spares`]: one spare left, made
/// by the fork server.
fn spares_taken(d: &Path, held: &mut Held) -> Vec<i32> {
    held.hold(d, "h1");
    held.hold(d, "h2");
    let s = spares();
    assert_eq!(s.len(), 1, "{s:?}");
    s
}

/// A fork server killed while idle: the next spare comes from a new one, and works.
#[test]
fn a_fork_server_killed_while_idle_is_replaced() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    two_raw_spares();
    let d = TempDir::new("pre-h");
    let mut held = Held::default();
    let s = spares_taken(d.path(), &mut held);
    let mother = execdriver::host::pool::fork_server_pid().expect("a fork server");
    // SAFETY: kill(2) of our own idle child.
    unsafe { libc::kill(mother, libc::SIGKILL) };
    let h3 = held.hold(d.path(), "h3");
    assert_eq!(h3.1, s[0]);
    let s = spares();
    assert_eq!(s.len(), 1, "{s:?}");
    let mother2 = execdriver::host::pool::fork_server_pid().expect("a new fork server");
    assert_ne!(mother2, mother);
    assert!(gone(mother), "the killed fork server was reaped");
    let h4 = held.hold(d.path(), "h4");
    assert_eq!(h4.1, s[0]);
    assert_eq!(spares().len(), 1, "made by the new fork server");
}

/// A fork server that does not answer (stopped) is given 2 s: the spare is then executed
/// directly and works, and the stuck fork server is killed and reaped.
#[test]
fn a_stuck_fork_server_is_killed_and_the_spare_executed_directly() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    two_raw_spares();
    let d = TempDir::new("pre-h");
    let mut held = Held::default();
    spares_taken(d.path(), &mut held);
    let mother = execdriver::host::pool::fork_server_pid().expect("a fork server");
    // SAFETY: kill(2) of our own idle child.
    unsafe { libc::kill(mother, libc::SIGSTOP) };
    held.hold(d.path(), "h5");
    let s = spares();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(ppid_of(s[0]), std::process::id());
    assert!(gone(mother), "the stuck fork server was killed and reaped");
    assert_eq!(execdriver::host::pool::fork_server_pid(), None);
    let h6 = held.hold(d.path(), "h6");
    assert_eq!(h6.1, s[0]);
}

/// Tasks stopped, whatever made their supervisors (taken spares, spares made by a fork
/// server, by a new one after the first was killed, executed directly with the fork
/// server stuck): two supervisors are taken back; the others end.
#[test]
fn stopped_tasks_give_back_two_supervisors_and_the_others_end() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    two_raw_spares();
    let d = TempDir::new("pre-h");
    let mut held = Held::default();
    // Each start after the spare it asked for is made (`spares` waits for that), as a
    // host's starts one by one.
    let h1 = held.hold(d.path(), "h1");
    let h2 = held.hold(d.path(), "h2");
    assert_eq!(spares().len(), 1);
    let mother = execdriver::host::pool::fork_server_pid().expect("a fork server");
    // SAFETY: kill(2) of our own idle child.
    unsafe { libc::kill(mother, libc::SIGKILL) };
    let h3 = held.hold(d.path(), "h3");
    assert_eq!(spares().len(), 1);
    let h4 = held.hold(d.path(), "h4");
    assert_eq!(spares().len(), 1);
    let mother2 = execdriver::host::pool::fork_server_pid().expect("a new fork server");
    assert_ne!(mother2, mother);
    // SAFETY: kill(2) of our own idle child.
    unsafe { libc::kill(mother2, libc::SIGSTOP) };
    let h5 = held.hold(d.path(), "h5");
    assert_eq!(spares().len(), 1);
    assert!(gone(mother2), "the stuck fork server was killed and reaped");
    let h6 = held.hold(d.path(), "h6");
    let held = [h1, h2, h3, h4, h5, h6];
    for (id, _) in &held {
        let w = stop(id, "SIGTERM");
        assert_eq!(w["signal"], 15, "{w}");
        destroy(id);
    }
    let s = spares();
    assert_eq!(s.len(), 2, "{s:?}");
    for (_, pid) in &held {
        assert!(
            s.contains(pid) || gone(*pid),
            "{pid} neither a spare nor gone"
        );
    }
}

/// A spare killed while idle is not used: the start takes another.
#[test]
fn a_spare_killed_while_idle_is_not_used() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (_, s) = two_raw_spares();
    let killed = *s.last().unwrap();
    // SAFETY: kill(2) of our own idle child.
    unsafe { libc::kill(killed, libc::SIGKILL) };
    let d = TempDir::new("pre-c");
    let (pid, code, out) = run_task(raw_task("c", d.path(), "echo three"), d.path());
    assert_eq!((code, out.as_str()), (0, "three\n"));
    assert_ne!(pid, killed);
    assert!(gone(killed), "the killed spare was reaped");
}

/// A start that fails after taking the spare leaves no process (and no new spare).
#[test]
fn a_start_failing_after_taking_a_spare_leaves_no_process() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    two_raw_spares();
    let before = spares();
    let taken = *before.last().unwrap();
    let d = TempDir::new("pre-d");
    let mut bad = raw_task("d", d.path(), "");
    bad["config"] = json!({"command": "/nonexistent/cmd"});
    let e = start(bad).unwrap_err();
    assert_eq!(e.code, execdriver::Code::CommandNotFound, "{e}");
    assert!(gone(taken), "the spare the failed start took was reaped");
    assert_eq!(spares(), before[..before.len() - 1]);
}

/// One that fails after its spec went to the spare (the directories are made after the
/// spec is sent, and `alloc/logs` is a file here): the supervisor is reaped, the cgroup
/// it made for the task (as root) removed, the directories made removed.
#[test]
fn a_start_failing_after_its_spec_went_to_the_spare_leaves_nothing() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    two_raw_spares();
    let d = TempDir::new("pre-d2");
    let before = spares();
    let taken = *before.last().unwrap();
    let id = format!("pred2-{}", std::process::id());
    let e = start(broken_dirs(raw_task("d2", d.path(), "true"), d.path(), &id)).unwrap_err();
    assert_eq!(e.code, execdriver::Code::Spawn, "{e}");
    assert!(e.message.contains("alloc/logs"), "{e}");
    assert!(gone(taken), "the spare the failed start took was reaped");
    assert_eq!(spares(), before[..before.len() - 1]);
    assert_no_cgroup_named(&id);
    assert!(
        !d.path().join("d2").exists(),
        "the task dir was left behind"
    );
}

/// Turned off: driver_configure ends the spares (reaped) and the fork server, and starts
/// leave none.
#[test]
fn prestart_supervisor_false_ends_the_spares_and_starts_leave_none() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    configure(json!({}));
    let _default = DefaultConfig;
    let d = TempDir::new("pre-e");
    run_task(raw_task("e", d.path(), "true"), d.path());
    let before = spares();
    assert!(!before.is_empty());
    let mother = execdriver::host::pool::fork_server_pid().expect("a fork server");
    configure(json!({"prestart_supervisor": false}));
    assert!(spares().is_empty());
    for p in &before {
        assert!(gone(*p), "spare {p} still there after driver_configure");
    }
    assert!(gone(mother), "the fork server ends with driver_configure");
    assert_eq!(execdriver::host::pool::fork_server_pid(), None);
    let (pid, code, _) = run_task(raw_task("f", d.path(), "true"), d.path());
    assert_eq!(code, 0);
    assert!(!before.contains(&pid));
    assert!(
        spares().is_empty(),
        "no spare with prestart_supervisor false"
    );
    configure(json!({}));
}

/// `req` with task id `id`, in an alloc dir whose `alloc/logs` is a file: the start fails
/// when it makes the directories, which it does after sending the spec.
fn broken_dirs(mut req: serde_json::Value, d: &Path, id: &str) -> serde_json::Value {
    std::fs::create_dir_all(d.join("alloc")).unwrap();
    std::fs::write(d.join("alloc/logs"), "").unwrap();
    req["id"] = json!(id);
    req
}

/// No cgroup directory named `name` under any parent in any hierarchy.
fn assert_no_cgroup_named(name: &str) {
    let mut roots = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        roots.push(h.path());
    }
    for root in roots {
        for parent in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let p = parent.path().join(name);
            assert!(!p.exists(), "{} left behind", p.display());
        }
    }
}

/// Starts `sleep 60` as raw_exec: (task id, supervisor pid).
fn hold(d: &Path, name: &str) -> (String, i32) {
    let r = start(raw_task(name, d, "exec sleep 60")).unwrap();
    (
        r["task_id"].as_str().unwrap().to_string(),
        supervisor_pid(&r),
    )
}

fn stop(id: &str, sig: &str) -> serde_json::Value {
    op(
        execdriver::driver::stop,
        json!({"task_id": id, "signal": sig, "timeout_ms": 10_000}),
    )
    .unwrap()
}

/// `handle` is of a destroyed task whose supervisor (`sup`) was taken back as a spare:
/// recovering it gives an ended task (its state dir is gone), and stopping that does not
/// touch the supervisor.
fn recycled_supervisor_not_recovered_as_the_task(handle: &serde_json::Value, sup: i32) {
    assert_eq!(handle["pid"], sup);
    let r = op(execdriver::driver::recover, json!({"handle": handle})).unwrap();
    assert_eq!(r["state"], "exited", "{r}");
    let id = handle["task_id"].as_str().unwrap();
    let w = stop(id, "SIGKILL");
    assert_eq!(w["exit_code"], -1, "no exit status left: {w}");
    destroy(id);
    assert!(!gone(sup));
    assert!(spares().contains(&sup));
}

/// A forwarded SIGTERM queued at supervisor `sup` (as by a stop of its task that came
/// late) while it is idle: its next task, which it runs, does not get it (it is stopped
/// by the SIGINT sent after its start instead; the queued signal would come first).
fn stale_signal_not_forwarded(sup: i32) {
    let fd = execdriver::sys::pidfd_open(sup).unwrap();
    execdriver::proto::Control::Forward(libc::SIGTERM)
        .send(&fd)
        .unwrap();
    let d = TempDir::new("pre-sig");
    let (id, pid) = hold(d.path(), "sig");
    assert_eq!(pid, sup, "the newest spare took the start");
    let w = stop(&id, "SIGINT");
    assert_eq!(w["signal"], libc::SIGINT, "{w}");
    destroy(&id);
}

/// Polls `cond` (every millisecond, for up to 10 s), which a spare makes true on its own
/// time: whether it came true.
fn poll(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (bounded) for `cond`, which a spare makes true on its own time.
#[track_caller]
fn until(cond: impl FnMut() -> bool) {
    assert!(poll(cond), "timed out");
}

/// The children of a spare supervisor, once it has forked its command process (it does
/// that while idle, after making its cgroups; polled with a deadline).
fn children(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = vec![];
    poll(|| {
        v = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        !v.is_empty()
    });
    v
}

/// Whether the host has cgroup v1 controllers (else a pure cgroup2 hierarchy, as in the
/// v2 suite's VM). On v1 an exec spare makes the next task's cgroups ahead, under a
/// placeholder name it renames at the start; cgroup2 dirs cannot be renamed, so on pure v2
/// its command process waits in its supervisor's cgroup and is moved into the task's,
/// made at the start.
fn v1() -> bool {
    Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists()
}

/// The placeholder cgroups `n` idle exec spares have: one each on v1, none on pure v2.
fn placeholders(n: usize) -> usize {
    if v1() { n } else { 0 }
}

/// The task cgroup dirs under `parent`: v1 the memory hierarchy's (any would do: they are
/// made in all), pure v2 the cgroup2 ones.
fn task_cgroups(parent: &str) -> Vec<String> {
    let dir = if v1() {
        format!("/sys/fs/cgroup/memory/{parent}")
    } else {
        format!("/sys/fs/cgroup/{parent}")
    };
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The scheduling policy of `pid` (`/proc/<pid>/stat` field 41).
fn policy_of(pid: i32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(") ")
        .next()
        .and_then(|r| r.split(' ').nth(38))
        .and_then(|p| p.parse().ok())
        .unwrap_or(u32::MAX)
}

/// The cgroup of `pid` as /proc/<pid>/cgroup names it: v1 its memory cgroup, pure v2 its
/// cgroup2 one.
fn cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.split_once(CGROUP_LINE[usize::from(v1())])
                .map(|(_, p)| p.to_string())
        })
        .unwrap_or_default()
}

/// What precedes the path in the line of /proc/<pid>/cgroup that [`cgroup_of`] reads:
/// pure v2, v1.
const CGROUP_LINE: [&str; 2] = ["0::", ":memory:"];

// Exec spares: the supervisor of one waits idle with one child, the command process to
// be, already in cgroups named `spare-*` under the plugin's `cgroup_parent`; the next exec
// start takes it, its command runs in those cgroups renamed to the task's id; a spare
// killed while idle, or whose command process died, is not used and leaves no cgroup;
// `driver_configure` ends the spare and removes its cgroups.

/// The configuration of an exec test: `cgroup_parent` a dir of its own, set on creation.
/// On drop the default configuration is back (which ends the spares, and so removes their
/// cgroups) and the parent dirs are removed: the driver never removes them, the test does.
struct ExecParent(String);

impl ExecParent {
    /// None, having said why, where exec spares cannot be checked: exec unavailable (a
    /// failure in CI).
    fn new(tag: &str) -> Option<ExecParent> {
        init();
        let f = execdriver::driver::fingerprint(None).unwrap();
        if f["attributes"]["driver.exec"] != "1" {
            skip(&format!(
                "exec part: exec unavailable here: {}",
                f["health_description"]
            ));
            return None;
        }
        let parent = format!("edtest-prestart-{}-{tag}", std::process::id());
        configure(json!({"cgroup_parent": parent}));
        Some(ExecParent(parent))
    }
}

impl Drop for ExecParent {
    fn drop(&mut self) {
        let _ = op(execdriver::driver::configure, json!({}));
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&self.0));
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(h.path().join(&self.0));
        }
    }
}

fn exec_task(name: &str, d: &Path, script: &str) -> serde_json::Value {
    json!({"name": name, "driver": "exec", "alloc_dir": d,
           "config": {"command": "/bin/sh", "args": ["-c", script]}})
}

/// The task's command prints its cgroup (the line [`cgroup_of`] reads) and its scheduling
/// policy (the normal one, SCHED_OTHER, 0), last.
fn cat_cgroup() -> String {
    format!(
        "grep '{}' /proc/self/cgroup; cut -d' ' -f41 /proc/self/stat",
        CGROUP_LINE[usize::from(v1())]
    )
}

/// The end of [`cat_cgroup`]'s output for task `id` under `parent`.
fn in_task_cgroup(parent: &str, id: &str) -> String {
    format!("{}/{parent}/{id}\n0", CGROUP_LINE[usize::from(v1())])
}

/// Waits until each of the exec spares `s` has its command process in its placeholder
/// cgroups under `parent` (v1), or in its supervisor's cgroup (pure v2).
fn prepared(parent: &str, s: &[i32]) {
    for &p in s {
        waits_prepared(parent, p);
    }
    until(|| task_cgroups(parent).len() == placeholders(s.len()));
}

/// Waits until the exec spare `spare` has its one command process in its placeholder
/// cgroups under `parent` (v1), or in its supervisor's cgroup (pure v2).
fn waits_prepared(parent: &str, spare: i32) {
    let kids = children(spare);
    assert_eq!(kids.len(), 1, "spare {spare}'s command process: {kids:?}");
    if v1() {
        until(|| cgroup_of(kids[0]).starts_with(&format!("/{parent}/spare-")));
    } else {
        assert_eq!(
            cgroup_of(kids[0]),
            cgroup_of(spare),
            "spare {spare}'s command process"
        );
    }
}

/// Two exec tasks run under `parent`'s configuration (the first cold, the second on the
/// spare the first left): two exec spares, prepared, oldest first.
fn two_exec_spares(parent: &str) -> Vec<i32> {
    let d = TempDir::new("pre-warm-up");
    for name in ["x", "y"] {
        let (_, code, out) = run_task(exec_task(name, d.path(), "echo isolated"), d.path());
        assert_eq!((code, out.as_str()), (0, "isolated\n"));
    }
    let s = exec_spares();
    assert_eq!(s.len(), 2, "{s:?}");
    prepared(parent, &s);
    s
}

/// The first exec start is cold and leaves an exec spare with its command process, in
/// placeholder cgroups, at idle priority.
#[test]
fn an_exec_spare_prepares_its_command_process_in_placeholder_cgroups() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("prepare") else {
        return;
    };
    let parent = env.0.clone();
    let d = TempDir::new("pre-x");
    let (_, code, out) = run_task(exec_task("x", d.path(), "echo isolated"), d.path());
    assert_eq!((code, out.as_str()), (0, "isolated\n"));
    let s = exec_spares();
    assert_eq!(s.len(), 1, "one exec spare: {s:?}");
    let spare = s[0];
    let kids = children(spare);
    assert_eq!(kids.len(), 1, "the spare's command process: {kids:?}");
    // The supervisor makes them before it forks the command process.
    until(|| task_cgroups(&parent).len() == placeholders(1));
    if v1() {
        placeholder_cgroups(&parent, kids[0]);
    } else {
        assert_eq!(
            cgroup_of(kids[0]),
            cgroup_of(spare),
            "it waits in its supervisor's"
        );
    }
    // The spare and its command process prepare at idle priority (SCHED_IDLE, 5).
    assert_eq!(policy_of(spare), 5);
    until(|| policy_of(kids[0]) == 5);
}

/// v1: the placeholder cgroups under `parent` that the spare's command process `cmd` waits
/// in.
fn placeholder_cgroups(parent: &str, cmd: i32) {
    let placeholder = task_cgroups(parent);
    assert!(placeholder[0].starts_with("spare-"), "{placeholder:?}");
    // At the kernel's default cpu weight (not the shares 2 of cpu_mhz 0) until a task's
    // limits are written.
    let shares = Path::new("/sys/fs/cgroup/cpu")
        .join(parent)
        .join(&placeholder[0])
        .join("cpu.shares");
    if shares.exists() {
        let v = std::fs::read_to_string(&shares).unwrap();
        assert_eq!(v.trim(), "1024", "{shares:?}");
    }
    // It joins them itself, first thing.
    let want = format!(":memory:/{parent}/{}\n", placeholder[0]);
    let cgroup = || std::fs::read_to_string(format!("/proc/{cmd}/cgroup")).unwrap();
    poll(|| cgroup().contains(&want));
    let cg = cgroup();
    assert!(
        cg.contains(&want),
        "the command process waits in the spare's cgroups: {cg}"
    );
}

/// The next exec start takes the spare: its command runs in the cgroups, renamed to the
/// id. Its supervisor is taken back: a spare again (the oldest of two is taken first), it
/// prepares its next command process the same way.
#[test]
fn the_next_exec_start_runs_in_the_spares_cgroups_renamed_to_its_id() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("rename") else {
        return;
    };
    let parent = env.0.clone();
    let d = TempDir::new("pre-x");
    let (_, code, out) = run_task(exec_task("x", d.path(), "echo isolated"), d.path());
    assert_eq!((code, out.as_str()), (0, "isolated\n"));
    let s = exec_spares();
    assert_eq!(s.len(), 1, "one exec spare: {s:?}");
    prepared(&parent, &s);
    let spare = s[0];

    let d = TempDir::new("pre-y");
    let id = format!("prey-{}", std::process::id());
    let mut req = exec_task("y", d.path(), &cat_cgroup());
    req["id"] = json!(id);
    let (pid, code, out) = run_task(req, d.path());
    assert_eq!(pid, spare, "the start used the spare");
    assert_eq!(code, 0);
    assert!(
        out.trim_end().ends_with(&in_task_cgroup(&parent, &id)),
        "{out}"
    );
    assert!(
        !task_cgroups(&parent).contains(&id),
        "the task's cgroups are gone"
    );
    let s = exec_spares();
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[1], spare);
    waits_prepared(&parent, spare);
}

/// A task started by an exec spare runs in its own cgroup with its limits, whether the
/// spare made it ahead (v1) or the start made it and moved the command process in (v2).
#[test]
fn a_task_of_an_exec_spare_runs_in_its_cgroup_with_its_limits() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("limits") else {
        return;
    };
    let s = two_exec_spares(&env.0);
    let mut held = Held::default();
    let d = TempDir::new("pre-limits");
    let mut req = exec_task("l", d.path(), "echo up; exec sleep 60");
    req["resources"] = json!({"memory_mb": 48, "cpu_mhz": 500, "pids_max": 16});
    let r = start(req).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    held.0.push(id.clone());
    assert!(s.contains(&supervisor_pid(&r)), "a spare ran it");
    wait_for_output(d.path(), "l", "up");
    let cmd = children(supervisor_pid(&r));
    assert_eq!(cmd.len(), 1, "{cmd:?}");
    assert_eq!(cgroup_of(cmd[0]), format!("/{}/{id}", env.0));
    let read = |dir: &str, f: &str| {
        let p = Path::new("/sys/fs/cgroup")
            .join(dir)
            .join(&env.0)
            .join(&id)
            .join(f);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    };
    let (memory, cpu, pids) = if v1() {
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (48u64 << 20).to_string()
        );
        assert_eq!(read("cpu", "cpu.shares"), "500");
        ("memory", "cpu", "pids")
    } else {
        assert_eq!(read("", "memory.max"), (48u64 << 20).to_string());
        // runc's conversion of 500 shares.
        assert_eq!(read("", "cpu.weight"), "19");
        ("", "", "")
    };
    assert_eq!(read(pids, "pids.max"), "16");
    for dir in [memory, cpu, pids] {
        let procs = read(dir, "cgroup.procs");
        assert!(
            procs.lines().any(|p| p == cmd[0].to_string()),
            "{dir}: {procs}"
        );
    }
}

/// Two tasks in a row on one such supervisor (every other start, as the two spares take
/// turns): the second gets fresh ipc and uts namespaces, without the first one's IPC
/// objects, and the host's name.
#[test]
fn a_supervisors_next_exec_task_gets_fresh_ipc_and_uts_namespaces() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("ipc") else {
        return;
    };
    two_exec_spares(&env.0);
    let ns =
        "readlink /proc/self/ns/ipc /proc/self/ns/uts; hostname; ipcs -m | grep -c '^0x' || true";
    let d = TempDir::new("pre-ipc");
    let (p1, code, first) = run_task(
        exec_task("i", d.path(), &format!("ipcmk -M 4096 >/dev/null; {ns}")),
        d.path(),
    );
    assert_eq!(code, 0, "{first}");
    let (p2, _, _) = run_task(exec_task("j", d.path(), "true"), d.path());
    let (p3, code, third) = run_task(exec_task("k", d.path(), ns), d.path());
    assert_eq!(code, 0, "{third}");
    assert_eq!(p1, p3, "one supervisor ran both");
    assert_ne!(p1, p2);
    let (a, b): (Vec<&str>, Vec<&str>) = (first.lines().collect(), third.lines().collect());
    assert_eq!((a.len(), b.len()), (4, 4), "{first}{third}");
    assert_ne!(a[0], b[0], "a new ipc namespace");
    assert_ne!(a[1], b[1], "a new uts namespace");
    let host = nix::unistd::gethostname().unwrap();
    assert_eq!(b[2], host.to_str().unwrap());
    assert_eq!((a[3], b[3]), ("1", "0"), "the first task's segment is gone");
}

/// A spare killed while idle: not used, reaped, its cgroups removed by the host.
#[test]
fn an_exec_spare_killed_while_idle_is_not_used_and_leaves_no_cgroup() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("killed") else {
        return;
    };
    let parent = env.0.clone();
    let s = two_exec_spares(&parent);
    let killed = s[0];
    let killed_cg = [cgroup_of(children(killed)[0])];
    let killed_cg: Vec<String> = killed_cg
        .iter()
        .map(|c| c.rsplit('/').next().unwrap().to_string())
        .collect();
    // SAFETY: kill(2) of our own idle child.
    unsafe { libc::kill(killed, libc::SIGKILL) };
    let d = TempDir::new("pre-z");
    let (pid, code, out) = run_task(exec_task("z", d.path(), "echo z"), d.path());
    assert_eq!((code, out.as_str()), (0, "z\n"));
    assert_ne!(pid, killed);
    assert!(gone(killed));
    for c in &killed_cg {
        assert!(!task_cgroups(&parent).contains(c), "{c} left behind");
    }
}

/// A spare whose command process died: the start falls back to a fresh one.
#[test]
fn an_exec_spare_whose_command_process_died_starts_a_fresh_one() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("died") else {
        return;
    };
    let parent = env.0.clone();
    let s = two_exec_spares(&parent);
    let kids = children(s[0]);
    assert_eq!(kids.len(), 1);
    // SAFETY: kill(2) of a process of our own spare.
    unsafe { libc::kill(kids[0], libc::SIGKILL) };
    // Dead (a zombie, or already reaped by its supervisor) before the start: one killed
    // during the start is the task's process killed, reported as the task's death by
    // SIGKILL.
    until(
        || match std::fs::read_to_string(format!("/proc/{}/stat", kids[0])) {
            Ok(st) => st.rsplit(") ").next().unwrap().starts_with('Z'),
            Err(_) => true,
        },
    );
    let d = TempDir::new("pre-w");
    let id = format!("prew-{}", std::process::id());
    let mut req = exec_task("w", d.path(), &cat_cgroup());
    req["id"] = json!(id);
    let (pid, code, out) = run_task(req, d.path());
    assert_eq!((pid, code), (s[0], 0), "the spare's supervisor started it");
    assert!(
        out.trim_end().ends_with(&in_task_cgroup(&parent, &id)),
        "{out}"
    );
}

/// A task started by a spare's prepared command process sees the same root, mounts and
/// devices as one started the usual way; and so does one of a supervisor taken back
/// after a task.
#[test]
fn a_prepared_command_process_gives_the_task_the_usual_root() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("root") else {
        return;
    };
    let parent = env.0.clone();
    let view = "awk '{for (i = 7; i <= NF; i++) if ($i == \"-\") print $5, $6, $(i+1), $(i+2), $(i+3)}' /proc/self/mountinfo | sort; \
        stat -c '%A %u %g %t:%T %N' /dev/*; \
        stat -c '%n %a %u %g' / /secrets /tmp /local /alloc /alloc/logs; \
        grep -E '^(Cap|NoNewPrivs|Uid|Gid|Groups)' /proc/self/status; ls /";
    let root_view = |tag: &str| {
        let d = TempDir::new(tag);
        let (_, code, out) = run_task(exec_task("v", d.path(), view), d.path());
        assert_eq!(code, 0, "{out}");
        out
    };
    configure(json!({"cgroup_parent": parent, "prestart_supervisor": false}));
    let cold = root_view("pre-cold");
    configure(json!({"cgroup_parent": parent}));
    root_view("pre-first");
    let s = exec_spares();
    assert_eq!(s.len(), 1);
    prepared(&parent, &s);
    let d = TempDir::new("pre-warm");
    let (pid, code, warm) = run_task(exec_task("v", d.path(), view), d.path());
    assert_eq!((pid, code), (s[0], 0), "{warm}");
    assert_eq!(cold, warm, "the prepared root differs from the usual one");
    assert!(
        cold.contains("/dev/pts") && cold.contains("/proc"),
        "{cold}"
    );
    // And from a supervisor taken back after a task (the two spares take turns).
    run_task(exec_task("v", d.path(), "true"), d.path());
    let d = TempDir::new("pre-again");
    let (again_pid, code, again) = run_task(exec_task("v", d.path(), view), d.path());
    assert_eq!((again_pid, code), (pid, 0), "{again}");
    assert_eq!(
        cold, again,
        "the root of a supervisor's second task differs"
    );
}

/// A spare's command process limited its bounding set to `allow_caps` while it waited: a
/// task's own capability sets are exact all the same.
#[test]
fn a_task_of_an_exec_spare_has_exactly_its_own_capabilities() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("caps") else {
        return;
    };
    let s = two_exec_spares(&env.0);
    let d = TempDir::new("pre-caps");
    let mut req = exec_task(
        "c",
        d.path(),
        "grep -E '^Cap(Bnd|Eff|Amb)' /proc/self/status",
    );
    req["config"]["cap_drop"] = json!(["all"]);
    req["config"]["cap_add"] = json!(["net_bind_service"]);
    let (pid, code, out) = run_task(req, d.path());
    assert_eq!(code, 0, "{out}");
    assert!(s.contains(&pid), "a spare ran it");
    assert_eq!(out.lines().count(), 3, "{out}");
    for l in out.lines() {
        assert!(l.ends_with("0000000000000400"), "{out}");
    }
}

/// A spare's command process takes the task's dirs from its own copy of the host's
/// mounts: once the host's mounts changed, the spare's supervisor starts the task the
/// usual way (a new command process), and the task still sees its files.
#[test]
fn once_the_hosts_mounts_changed_a_spare_starts_a_new_command_process() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("mounts") else {
        return;
    };
    let s = two_exec_spares(&env.0);
    let mut held = Held::default();
    let standby = children(s[0]);
    assert_eq!(standby.len(), 1);
    let mnt = TempDir::new("pre-mnt");
    nix::mount::mount(
        Some("tmpfs"),
        mnt.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    nix::mount::umount(mnt.path()).unwrap();
    let d = TempDir::new("pre-moved");
    let r = start(exec_task(
        "m",
        d.path(),
        "echo here > /local/f; exec sleep 60",
    ))
    .unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    held.0.push(id.clone());
    assert_eq!(supervisor_pid(&r), s[0]);
    let cmd = children(s[0]);
    assert_eq!(cmd.len(), 1);
    assert_ne!(cmd, standby, "the prepared command process was not used");
    // Its shell has written the file before it is stopped.
    let f = d.path().join("m/local/f");
    until(|| std::fs::read_to_string(&f).is_ok_and(|t| t == "here\n"));
    op(
        execdriver::driver::stop,
        json!({"task_id": id, "timeout_ms": 5000}),
    )
    .unwrap();
    destroy(&id);
}

/// A start that fails after its spec went to a spare: the spare's supervisor and its
/// command process (which took the task and was waiting for the host's go line) are
/// reaped, the cgroups renamed for the task removed, the directories made removed; the
/// next start works.
#[test]
fn an_exec_start_failing_after_its_spec_went_to_a_spare_leaves_nothing() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("broken") else {
        return;
    };
    let parent = env.0.clone();
    let s = two_exec_spares(&parent);
    let taken = s[0];
    let standby = children(taken);
    assert_eq!(standby.len(), 1);
    until(|| task_cgroups(&parent).len() == placeholders(s.len()));
    let d = TempDir::new("pre-broken");
    let id = format!("prebroken-{}", std::process::id());
    let e = start(broken_dirs(exec_task("b", d.path(), "true"), d.path(), &id)).unwrap_err();
    assert_eq!(e.code, execdriver::Code::Spawn, "{e}");
    assert!(e.message.contains("alloc/logs"), "{e}");
    assert!(gone(taken), "the spare's supervisor was reaped");
    assert!(gone(standby[0]), "its command process too");
    assert_no_cgroup_named(&id);
    assert_eq!(
        task_cgroups(&parent).len(),
        placeholders(s.len() - 1),
        "only the other spare's"
    );
    assert!(!d.path().join("b").exists(), "the task dir was left behind");
    let d = TempDir::new("pre-after");
    let (_, code, out) = run_task(exec_task("after", d.path(), "echo fine"), d.path());
    assert_eq!((code, out.as_str()), (0, "fine\n"));
}

/// driver_configure ends the exec spares and their cgroups go. Without spares the
/// supervisor makes the cgroups while the host makes the directories: a start that fails
/// at those leaves none either.
#[test]
fn driver_configure_ends_the_exec_spares_and_their_cgroups() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("configure") else {
        return;
    };
    let parent = env.0.clone();
    let s = two_exec_spares(&parent);
    assert_eq!(s.len(), 2, "{s:?}");
    until(|| task_cgroups(&parent).len() == placeholders(2));
    configure(json!({}));
    for p in &s {
        assert!(gone(*p));
    }
    assert!(exec_spares().is_empty());
    assert!(
        task_cgroups(&parent).is_empty(),
        "{:?}",
        task_cgroups(&parent)
    );
    configure(json!({"cgroup_parent": parent, "prestart_supervisor": false}));
    let d = TempDir::new("pre-broken-cold");
    let id = format!("prebrokencold-{}", std::process::id());
    let e = start(broken_dirs(exec_task("b", d.path(), "true"), d.path(), &id)).unwrap_err();
    assert_eq!(e.code, execdriver::Code::Spawn, "{e}");
    assert_no_cgroup_named(&id);
    assert!(task_cgroups(&parent).is_empty());
    configure(json!({}));
}

/// The mount table of a root, as the task sees it: per mount its place, its own options,
/// its filesystem type and the filesystem's options (not ids, devices or sources, which
/// differ between two tasks), sorted.
fn mount_table(mountinfo: &str) -> Vec<String> {
    let mut t: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| {
            let (mine, fs) = l.split_once(" - ")?;
            let f: Vec<&str> = mine.split(' ').collect();
            let g: Vec<&str> = fs.split(' ').collect();
            Some(format!(
                "{} {} {} {}",
                f.get(4)?,
                f.get(5)?,
                g.first()?,
                g.get(2)?
            ))
        })
        .collect();
    t.sort();
    t
}

/// One mount plan, two ways of carrying it out: a root whose task-independent steps a
/// spare's command process made ahead has the mount table of one made wholly at the
/// start (no spare).
#[test]
fn a_root_made_ahead_has_the_mount_table_of_one_made_at_the_start() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("table") else {
        return;
    };
    let s = two_exec_spares(&env.0);
    let standby = children(s[0]);
    assert_eq!(standby.len(), 1);
    let mut held = Held::default();
    let d = TempDir::new("pre-table");
    let script = "cat /proc/self/mountinfo; echo end; exec sleep 60";
    let r = start(exec_task("ahead", d.path(), script)).unwrap();
    held.0.push(r["task_id"].as_str().unwrap().to_string());
    assert_eq!(supervisor_pid(&r), s[0]);
    assert_eq!(
        children(s[0]),
        standby,
        "the prepared command process ran it"
    );
    let mut ahead = String::new();
    until(|| {
        ahead = stdout_of(d.path(), "ahead");
        ahead.ends_with("end\n")
    });
    drop(held);
    configure(json!({"cgroup_parent": env.0, "prestart_supervisor": false}));
    let (_, code, fresh) = run_task(
        exec_task("fresh", d.path(), "cat /proc/self/mountinfo"),
        d.path(),
    );
    assert_eq!(code, 0, "{fresh}");
    let (ahead, fresh) = (mount_table(&ahead), mount_table(&fresh));
    assert!(
        ahead.iter().any(|l| l.starts_with("/dev/pts ")),
        "{ahead:#?}"
    );
    assert_eq!(ahead, fresh);
}

/// A start whose id names a busy cgroup under the parent that is not its own (another
/// host's task of that id, under the same `cgroup_parent`, with another data dir): the
/// spare refuses to take it over, the start fails, and what runs there is not killed.
#[test]
fn an_exec_start_on_a_spare_never_kills_a_foreign_cgroup_of_its_id() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(env) = ExecParent::new("foreign") else {
        return;
    };
    let s = two_exec_spares(&env.0);
    let id = format!("preforeign-{}", std::process::id());
    let root = if v1() {
        "/sys/fs/cgroup/memory"
    } else {
        "/sys/fs/cgroup"
    };
    let foreign = Path::new(root).join(&env.0).join(&id);
    std::fs::create_dir_all(&foreign).unwrap();
    let mut other = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    std::fs::write(foreign.join("cgroup.procs"), other.id().to_string()).unwrap();
    let d = TempDir::new("pre-foreign");
    let mut req = exec_task("f", d.path(), "true");
    req["id"] = json!(id);
    let r = start(req);
    let alive = other.try_wait().unwrap().is_none();
    let _ = other.kill();
    let _ = other.wait();
    let _ = std::fs::remove_dir(&foreign);
    assert_no_cgroup_named(&id);
    let e = r.expect_err("a start into another's cgroup");
    eprintln!("refused: {e}");
    assert!(alive, "the other task's process was killed ({e})");
    assert!(!s.is_empty());
}
