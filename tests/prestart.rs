//! Prestarted ("spare") supervisors (`prestart_supervisor`, on by default): after a start,
//! one idle supervisor of that kind waits for the next start of the kind, which takes it;
//! an exec spare also prepares its command process (cgroups, mount namespace). One test
//! function, so that no other start in this process takes a spare between two of its
//! checks.

mod common;
use common::*;
use serde_json::json;
use std::path::Path;

fn configure(req: serde_json::Value) {
    op(execdriver::driver::configure, req).unwrap();
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

#[test]
fn prestarted_supervisors() {
    init();
    configure(json!({}));
    assert!(spares().is_empty(), "no spare before the first start");
    let shim = std::fs::canonicalize(env!("CARGO_BIN_EXE_execdriver-shim")).unwrap();

    // The first start launches its own supervisor and leaves a spare of its kind; after
    // the task, its supervisor is taken back as a second spare.
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
            .contains("EXECDRIVER_SHIM_MODE=mother")
    );
    let comm = |p: i32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap();
    assert_eq!(comm(mother), "execdriver-fork\n");
    assert_eq!(comm(spare), "execdriver-shim\n");

    // The next start takes the newest spare (either, depending on which was ready
    // first), which runs this task (its own logs, exit code and state) and is taken back
    // after it: back to back, no supervisor is started or ended.
    let (older, newest) = (s[0], s[1]);
    let d = TempDir::new("pre-b");
    let r = start(raw_task("b", d.path(), "echo two; exit 3")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    let w = wait(&id, 30_000).unwrap();
    let state_dir = Path::new(r["handle"]["state_dir"].as_str().unwrap()).to_path_buf();
    // Written just after the exit report that ends the wait.
    until(|| state_dir.join("exit.json").exists());
    let exit_json = std::fs::read_to_string(state_dir.join("exit.json")).unwrap();
    let handle_b = r["handle"].clone();
    destroy(&id);
    assert_eq!(supervisor_pid(&r), newest);
    assert_eq!(w["exit_code"], 3);
    assert!(exit_json.contains("\"exit_code\":3"), "{exit_json}");
    assert_eq!(stdout_of(d.path(), "b"), "two\n");
    assert_eq!(spares(), vec![older, newest]);
    // Its handle, recovered after the destroy, is an ended task, not the live supervisor.
    recycled_supervisor_not_recovered_as_the_task(&handle_b, newest);
    // A signal queued for it after its task ended is not passed on to its next task.
    stale_signal_not_forwarded(newest);

    // Two tasks that keep running hold both spares: the second start finds none left
    // and has one made by the fork server.
    let d = TempDir::new("pre-h");
    let h1 = hold(d.path(), "h1");
    let h2 = hold(d.path(), "h2");
    assert_eq!((h1.1, h2.1), (newest, older), "newest first");
    let s = spares();
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(s[0] != first && s[0] != spare);

    // A fork server killed while idle: the next spare comes from a new one, and works.
    // SAFETY: kill(2) of our own idle child.
    unsafe { libc::kill(mother, libc::SIGKILL) };
    let h3 = hold(d.path(), "h3");
    assert_eq!(h3.1, s[0]);
    let s = spares();
    assert_eq!(s.len(), 1, "{s:?}");
    let mother2 = execdriver::host::pool::fork_server_pid().expect("a new fork server");
    assert_ne!(mother2, mother);
    assert!(gone(mother), "the killed fork server was reaped");
    let h4 = hold(d.path(), "h4");
    assert_eq!(h4.1, s[0]);
    assert_eq!(spares().len(), 1, "made by the new fork server");

    // A fork server that does not answer (stopped) is given 2 s: the spare is then
    // executed directly and works, and the stuck fork server is killed and reaped.
    // SAFETY: kill(2) of our own idle child.
    unsafe { libc::kill(mother2, libc::SIGSTOP) };
    let h5 = hold(d.path(), "h5");
    let s = spares();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(ppid_of(s[0]), std::process::id());
    assert!(gone(mother2), "the stuck fork server was killed and reaped");
    assert_eq!(execdriver::host::pool::fork_server_pid(), None);
    let h6 = hold(d.path(), "h6");
    assert_eq!(h6.1, s[0]);
    // Stopped, two of them are taken back; the others end.
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

    // A spare killed while idle is not used: the start takes another.
    let killed = *s.last().unwrap();
    // SAFETY: kill(2) of our own idle child.
    unsafe { libc::kill(killed, libc::SIGKILL) };
    let d = TempDir::new("pre-c");
    let (pid, code, out) = run_task(raw_task("c", d.path(), "echo three"), d.path());
    assert_eq!((code, out.as_str()), (0, "three\n"));
    assert_ne!(pid, killed);
    assert!(gone(killed), "the killed spare was reaped");

    // A start that fails after taking the spare leaves no process (and no new spare).
    let before = spares();
    let taken = *before.last().unwrap();
    let d = TempDir::new("pre-d");
    let mut bad = raw_task("d", d.path(), "");
    bad["config"] = json!({"command": "/nonexistent/cmd"});
    let e = start(bad).unwrap_err();
    assert_eq!(e.code, execdriver::Code::CommandNotFound, "{e}");
    assert!(gone(taken), "the spare the failed start took was reaped");
    assert_eq!(spares(), before[..before.len() - 1]);

    // One that fails after its spec went to the spare (the directories are made after
    // the spec is sent, and `alloc/logs` is a file here): the supervisor is reaped, the
    // cgroup it made for the task (as root) removed, the directories made removed.
    let ok = TempDir::new("pre-ok");
    run_task(raw_task("ok", ok.path(), "true"), ok.path());
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

    exec_spares_prepare_the_command_process();

    // Turned off: driver_configure ends the spares (reaped), and starts leave none.
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

/// Waits (bounded) for `cond`, which a spare makes true on its own time.
fn until(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The children of a spare supervisor, once it has forked its command process (it does
/// that while idle, after making its cgroups; polled with a deadline).
fn children(pid: i32) -> Vec<i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v: Vec<i32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        if !v.is_empty() || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The v1 memory cgroup dirs under `parent` (any hierarchy would do: they are made in all).
fn memory_cgroups(parent: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/sys/fs/cgroup/memory/{parent}"))
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

/// The memory cgroup of `pid` (v1), as /proc/<pid>/cgroup names it.
fn memory_cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .unwrap_or_default()
}

/// An exec spare: its supervisor waits idle with one child, the command process to be,
/// already in cgroups named `spare-*` under the plugin's `cgroup_parent`; the next exec
/// start takes it, its command runs in those cgroups renamed to the task's id; a spare
/// killed while idle, or whose command process died, is not used and leaves no cgroup;
/// `driver_configure` ends the spare and removes its cgroups.
fn exec_spares_prepare_the_command_process() {
    let f = execdriver::driver::fingerprint(None).unwrap();
    if f["attributes"]["driver.exec"] != "1" {
        eprintln!(
            "SKIP exec part: exec unavailable here: {}",
            f["health_description"]
        );
        return;
    }
    if !std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() {
        eprintln!("SKIP exec part: no v1 memory hierarchy (the placeholders are v1 only)");
        return;
    }
    let parent = format!("edtest-prestart-{}", std::process::id());
    configure(json!({"cgroup_parent": parent}));
    let exec_task = |name: &str, d: &Path, script: &str| {
        json!({"name": name, "driver": "exec", "alloc_dir": d,
               "config": {"command": "/bin/sh", "args": ["-c", script]}})
    };
    // The task's command runs at the normal priority (SCHED_OTHER, 0), and says so last.
    let cat_cgroup = "grep memory /proc/self/cgroup; cut -d' ' -f41 /proc/self/stat";

    // The first exec start is cold and leaves an exec spare with its command process.
    let d = TempDir::new("pre-x");
    let (_, code, out) = run_task(exec_task("x", d.path(), "echo isolated"), d.path());
    assert_eq!((code, out.as_str()), (0, "isolated\n"));
    let s = exec_spares();
    assert_eq!(s.len(), 1, "one exec spare: {s:?}");
    let spare = s[0];
    let kids = children(spare);
    assert_eq!(kids.len(), 1, "the spare's command process: {kids:?}");
    // The supervisor makes them before it forks the command process.
    until(|| memory_cgroups(&parent).len() == 1);
    let placeholder = memory_cgroups(&parent);
    assert!(placeholder[0].starts_with("spare-"), "{placeholder:?}");
    // At the kernel's default cpu weight (not the shares 2 of cpu_mhz 0) until a task's
    // limits are written.
    let shares = Path::new("/sys/fs/cgroup/cpu")
        .join(&parent)
        .join(&placeholder[0])
        .join("cpu.shares");
    if shares.exists() {
        let v = std::fs::read_to_string(&shares).unwrap();
        assert_eq!(v.trim(), "1024", "{shares:?}");
    }
    // It joins them itself, first thing.
    let want = format!(":memory:/{parent}/{}\n", placeholder[0]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut cg = String::new();
    while !cg.contains(&want) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
        cg = std::fs::read_to_string(format!("/proc/{}/cgroup", kids[0])).unwrap();
    }
    assert!(
        cg.contains(&want),
        "the command process waits in the spare's cgroups: {cg}"
    );
    // The spare and its command process prepare at idle priority (SCHED_IDLE, 5).
    assert_eq!(policy_of(spare), 5);
    until(|| policy_of(kids[0]) == 5);

    // The next exec start takes it: its command runs in the cgroups, renamed to the id.
    let d = TempDir::new("pre-y");
    let id = format!("prey-{}", std::process::id());
    let mut req = exec_task("y", d.path(), cat_cgroup);
    req["id"] = json!(id);
    let (pid, code, out) = run_task(req, d.path());
    assert_eq!(pid, spare, "the start used the spare");
    assert_eq!(code, 0);
    assert!(
        out.trim_end()
            .ends_with(&format!(":memory:/{parent}/{id}\n0")),
        "{out}"
    );
    assert!(
        !memory_cgroups(&parent).contains(&id),
        "the task's cgroups are gone"
    );
    // Its supervisor was taken back: a spare again (the oldest of two is taken first), it
    // prepares its next command process the same way.
    let s = exec_spares();
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[1], spare);
    let kids = children(spare);
    assert_eq!(kids.len(), 1, "its next command process: {kids:?}");
    until(|| memory_cgroup_of(kids[0]).starts_with(&format!("/{parent}/spare-")));

    // Two tasks in a row on one such supervisor (every other start, as the two spares
    // take turns): the second gets fresh ipc and uts namespaces, without the first one's
    // IPC objects, and the host's name.
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

    // A spare killed while idle: not used, reaped, its cgroups removed by the host.
    let s = exec_spares();
    let killed = s[0];
    let killed_cg = [memory_cgroup_of(children(killed)[0])];
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
        assert!(!memory_cgroups(&parent).contains(c), "{c} left behind");
    }

    // A spare whose command process died: the start falls back to a fresh one.
    let s = exec_spares();
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
    let mut req = exec_task("w", d.path(), cat_cgroup);
    req["id"] = json!(id);
    let (pid, code, out) = run_task(req, d.path());
    assert_eq!((pid, code), (s[0], 0), "the spare's supervisor started it");
    assert!(
        out.trim_end()
            .ends_with(&format!(":memory:/{parent}/{id}\n0")),
        "{out}"
    );

    // A task started by a spare's prepared command process sees the same root, mounts
    // and devices as one started the usual way.
    let view = "awk '{for (i = 7; i <= NF; i++) if ($i == \"-\") print $5, $6, $(i+1), $(i+2), $(i+3)}' /proc/self/mountinfo | sort; \
        ls -ln /dev | awk '{print $1, $3, $4, $5, $6, $9, $10, $11}'; \
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
    until(|| memory_cgroups(&parent).len() == 1);
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

    // A spare's command process limited its bounding set to `allow_caps` while it
    // waited: a task's own capability sets are exact all the same.
    let s = exec_spares();
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

    // A spare's command process takes the task's dirs from its own copy of the host's
    // mounts: once the host's mounts changed, the spare's supervisor starts the task the
    // usual way (a new command process), and the task still sees its files.
    let s = exec_spares();
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

    // A start that fails after its spec went to a spare: the spare's supervisor and its
    // command process (which took the task and was waiting for the host's go line) are
    // reaped, the cgroups renamed for the task removed, the directories made removed; the
    // next start works.
    let s = exec_spares();
    let taken = s[0];
    let standby = children(taken);
    assert_eq!(standby.len(), 1);
    until(|| memory_cgroups(&parent).len() == s.len());
    let d = TempDir::new("pre-broken");
    let id = format!("prebroken-{}", std::process::id());
    let e = start(broken_dirs(exec_task("b", d.path(), "true"), d.path(), &id)).unwrap_err();
    assert_eq!(e.code, execdriver::Code::Spawn, "{e}");
    assert!(e.message.contains("alloc/logs"), "{e}");
    assert!(gone(taken), "the spare's supervisor was reaped");
    assert!(gone(standby[0]), "its command process too");
    assert_no_cgroup_named(&id);
    assert_eq!(
        memory_cgroups(&parent).len(),
        s.len() - 1,
        "only the other spare's"
    );
    assert!(!d.path().join("b").exists(), "the task dir was left behind");
    let d = TempDir::new("pre-after");
    let (_, code, out) = run_task(exec_task("after", d.path(), "echo fine"), d.path());
    assert_eq!((code, out.as_str()), (0, "fine\n"));
    run_task(exec_task("after", d.path(), "true"), d.path());

    // driver_configure ends the exec spares and their cgroups go.
    let s = exec_spares();
    assert_eq!(s.len(), 2, "{s:?}");
    until(|| memory_cgroups(&parent).len() == 2);
    configure(json!({}));
    for p in &s {
        assert!(gone(*p));
    }
    assert!(exec_spares().is_empty());
    assert!(
        memory_cgroups(&parent).is_empty(),
        "{:?}",
        memory_cgroups(&parent)
    );
    // Without spares the supervisor makes the cgroups while the host makes the
    // directories: a start that fails at those leaves none either.
    configure(json!({"cgroup_parent": parent, "prestart_supervisor": false}));
    let d = TempDir::new("pre-broken-cold");
    let id = format!("prebrokencold-{}", std::process::id());
    let e = start(broken_dirs(exec_task("b", d.path(), "true"), d.path(), &id)).unwrap_err();
    assert_eq!(e.code, execdriver::Code::Spawn, "{e}");
    assert_no_cgroup_named(&id);
    assert!(memory_cgroups(&parent).is_empty());
    configure(json!({}));

    // The shared parent dirs are never removed by the driver: the test does.
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join(&parent));
    }
}
