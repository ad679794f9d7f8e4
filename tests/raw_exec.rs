//! raw_exec end to end through the driver's Rust API: start, wait, exit codes, signals,
//! stop semantics, logs, environment, no leftovers.

mod common;
use common::*;
use serde_json::json;

#[test]
fn exit_code_and_stdout() {
    let d = TempDir::new("exit");
    let (w, out) = run(raw_task("t", d.path(), "echo hello; echo err >&2; exit 3"));
    assert_eq!(w["exit_code"], 3, "{w}");
    assert_eq!(w["signal"], 0);
    assert_eq!(out, "hello\n");
    assert_eq!(
        std::fs::read_to_string(d.path().join("alloc/logs/t.stderr.0")).unwrap(),
        "err\n"
    );
}

#[test]
fn signal_death_reports_128_plus_n() {
    let d = TempDir::new("sig");
    let (w, _) = run(raw_task("t", d.path(), "kill -11 $$$$"));
    assert_eq!(w["signal"], 11, "{w}");
    assert_eq!(w["exit_code"], 139);
}

/// A real-time signal (34 and up) is a status like any other: the task does not hang,
/// and the number comes back exactly, for the task and for a command run in it.
#[test]
fn real_time_signal_death_is_reported_exactly() {
    let d = TempDir::new("rtsig");
    let (w, _) = run(raw_task("t", d.path(), "kill -40 $$$$"));
    assert_eq!(
        (w["signal"].as_i64(), w["exit_code"].as_i64()),
        (Some(40), Some(168)),
        "{w}"
    );

    let r = start(raw_task("s", d.path(), "exec sleep 60")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    let out = op(
        execdriver::driver::exec,
        json!({"task_id": id, "command": "/bin/sh", "args": ["-c", "kill -36 $$"]}),
    )
    .unwrap();
    assert_eq!(
        (out["signal"].as_i64(), out["exit_code"].as_i64()),
        (Some(36), Some(164)),
        "{out}"
    );
    op(
        execdriver::driver::signal,
        json!({"task_id": id, "signal": "SIGRTMIN+1"}),
    )
    .unwrap();
    let w = wait(&id, 10_000).unwrap();
    let rt1 = libc::SIGRTMIN() as i64 + 1;
    assert_eq!(w["signal"].as_i64(), Some(rt1), "{w}");
    assert_eq!(w["exit_code"].as_i64(), Some(128 + rt1));
    destroy(&id);
}

#[test]
fn env_is_built_not_inherited() {
    let d = TempDir::new("env");
    // SAFETY: a variable only this test looks for.
    unsafe { std::env::set_var("EXECDRIVER_TEST_SECRET", "leak") };
    let mut req = raw_task(
        "web",
        d.path(),
        "echo $NOMAD_TASK_NAME $GREETING ${EXECDRIVER_TEST_SECRET:-none} $NOMAD_META_owner",
    );
    req["env"] = json!({"GREETING": "hi-from-${NOMAD_TASK_NAME}"});
    req["meta"] = json!({"owner": "team-a"});
    let (w, out) = run(req);
    assert_eq!(w["exit_code"], 0);
    assert_eq!(out, "web hi-from-web none team-a\n");
}

#[test]
fn stop_sends_signal_to_handlerless_sleep() {
    let d = TempDir::new("stop");
    let r = start(json!({"name": "s", "driver": "raw_exec", "alloc_dir": d.path(), "config": {"command": "/bin/sleep", "args": ["600"]}})).unwrap();
    let id = r["task_id"].as_str().unwrap();
    assert_eq!(wait(id, 0).unwrap_err().code, execdriver::Code::Timeout);
    let t0 = std::time::Instant::now();
    let w = op(
        execdriver::driver::stop,
        json!({"task_id": id, "signal": "SIGTERM", "timeout_ms": 10000}),
    )
    .unwrap();
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(w["signal"], 15, "{w}");
    assert_eq!(w["exit_code"], 143);
    destroy(id);
}

#[test]
fn stop_kills_term_ignoring_task_after_grace() {
    let d = TempDir::new("ignore");
    let marker = format!("sleep {}", 700_000 + std::process::id() % 1000);
    let r = start(raw_task(
        "i",
        d.path(),
        &format!("trap '' TERM; {marker} & echo ready; wait"),
    ))
    .unwrap();
    let id = r["task_id"].as_str().unwrap();
    // The trap must be in place before the stop, or SIGTERM ends the shell at once.
    wait_for_output(d.path(), "i", "ready");
    let w = op(
        execdriver::driver::stop,
        json!({"task_id": id, "signal": "SIGTERM", "timeout_ms": 300}),
    )
    .unwrap();
    assert_eq!(w["signal"], 9, "{w}");
    assert!(pids_matching(&marker).is_empty());
    destroy(id);
}

#[test]
fn background_children_die_with_the_command() {
    let d = TempDir::new("bg");
    let marker = format!("{}", 600_000 + std::process::id() % 1000);
    let (w, _) = run(raw_task(
        "bg",
        d.path(),
        &format!("sleep {marker} & exit 0"),
    ));
    assert_eq!(w["exit_code"], 0);
    assert!(
        pids_matching(&format!("sleep {marker}")).is_empty(),
        "a background sleep survived"
    );
}

#[test]
fn many_waiters_get_the_same_result() {
    let d = TempDir::new("waiters");
    let r = start(raw_task("w", d.path(), "read x < /dev/null; exit 7")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let id = id.clone();
            std::thread::spawn(move || wait(&id, 30_000).unwrap())
        })
        .collect();
    let results: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        results
            .iter()
            .all(|w| w == &results[0] && w["exit_code"] == 7)
    );
    assert_eq!(wait(&id, 0).unwrap(), results[0]);
    destroy(&id);
}

#[test]
fn bad_input_leaves_nothing() {
    let d = TempDir::new("bad");
    let alloc = d.path().join("a");
    let e = start(json!({"name": "x", "driver": "raw_exec", "alloc_dir": alloc, "config": {"command": "/nonexistent/cmd"}})).unwrap_err();
    assert_eq!(e.code, execdriver::Code::CommandNotFound, "{e}");
    // The task's own directory is gone; the alloc dir, shared with its siblings, stays.
    assert!(!alloc.join("x").exists(), "task dir left behind");
    let e = start(json!({"name": "x", "config": {"comand": "x"}})).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("config.comand"));
}

#[test]
fn duplicate_id_conflicts() {
    let d = TempDir::new("dup");
    let id = format!("dup-{}", std::process::id());
    let mut req = raw_task("d", d.path(), "sleep 5");
    req["id"] = json!(id);
    start(req.clone()).unwrap();
    let e = start(req).unwrap_err();
    assert_eq!(e.code, execdriver::Code::TaskExists);
    let e = op(execdriver::driver::destroy, json!({"task_id": id})).unwrap_err();
    assert_eq!(e.code, execdriver::Code::TaskRunning);
    destroy(&id);
    assert_eq!(
        wait(&id, 0).unwrap_err().code,
        execdriver::Code::TaskNotFound
    );
}

#[test]
fn raw_exec_as_root_is_tracked_in_a_cgroup2_dir() {
    if !is_root() {
        skip("raw_exec tracking in a cgroup2 dir needs root");
        return;
    }
    if !std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
        && !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        // A v1-only host: no cgroup2 mount to track raw_exec tasks in.
        eprintln!("SKIP: no cgroup2 mount here (a v1-only host)");
        return;
    }
    let d = TempDir::new("track");
    let r = start(raw_task("tr", d.path(), "cat /proc/self/cgroup")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    wait(&id, 30_000).unwrap();
    destroy(&id);
    let out = stdout_of(d.path(), "tr");
    assert!(
        out.lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&format!("/{id}"))),
        "{out}"
    );
}

#[test]
fn lookup_sets_exec_bit_only_inside_the_task_dir() {
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("lookup");
    let outside = TempDir::new("lookup-outside");
    let host_file = outside.path().join("host-file");
    std::fs::write(&host_file, "#!/bin/sh\necho pwned\n").unwrap();
    std::fs::set_permissions(&host_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let local = d.path().join("t/local");
    std::fs::create_dir_all(&local).unwrap();
    std::os::unix::fs::symlink(&host_file, local.join("evil")).unwrap();
    std::fs::write(local.join("good"), "#!/bin/sh\necho good\n").unwrap();
    std::fs::set_permissions(local.join("good"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut req = raw_task("t", d.path(), "");
    req["config"] = json!({"command": "evil"});
    let e = start(req).unwrap_err();
    assert_eq!(e.code, execdriver::Code::CommandNotFound, "{e}");
    let mode = std::fs::metadata(&host_file).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode, 0o644,
        "a host file behind a link in /local was chmodded"
    );

    let mut req = raw_task("t", d.path(), "");
    req["config"] = json!({"command": "good"});
    let (w, out) = run(req);
    assert_eq!((w["exit_code"].as_i64(), out.as_str()), (Some(0), "good\n"));
}

#[test]
fn unopenable_log_file_ends_the_task_with_the_reason() {
    // The supervisor opens the log files after reporting the start; here stdout's file
    // name is taken by a directory, so the task is killed and its wait result says why.
    let d = TempDir::new("badlog");
    std::fs::create_dir_all(d.path().join("alloc/logs/bl.stdout.0")).unwrap();
    let marker = format!("sleep {}", 710_000 + std::process::id() % 1000);
    let (w, _) = run(raw_task("bl", d.path(), &format!("{marker}; exit 0")));
    assert_eq!(w["exit_code"], -1, "{w}");
    assert!(
        w["err"]
            .as_str()
            .unwrap_or("")
            .contains("opening stdout log"),
        "{w}"
    );
    assert!(pids_matching(&marker).is_empty(), "the command survived");
}

#[test]
fn command_starts_with_default_signal_dispositions_and_empty_mask() {
    // This test process ignores SIGPIPE (Rust's runtime does, as Python does); ignored
    // dispositions survive exec, so the supervisor must reset them for the command.
    let d = TempDir::new("sigs");
    let (w, out) = run(raw_task(
        "s",
        d.path(),
        "grep -E '^(SigIgn|SigBlk)' /proc/self/status",
    ));
    assert_eq!(w["exit_code"], 0, "{w}");
    assert!(out.contains("SigIgn:\t0000000000000000"), "{out}");
    assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
}

/// KiB resident in the supervisor's read-only mappings of its own binary.
fn shim_readonly_rss_kib(pid: i32) -> u64 {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut ours, mut total) = (false, 0);
    for line in smaps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first()
            .is_some_and(|a| a.contains('-') && !a.ends_with(':'))
        {
            ours = f.get(5).map(std::path::Path::new) == Some(exe.as_path()) && !f[1].contains('w');
        } else if ours && f.first() == Some(&"Rss:") {
            total += f[1].parse::<u64>().unwrap();
        }
    }
    total
}

#[test]
fn supervisor_hands_back_its_startup_pages_once_the_task_runs() {
    let d = TempDir::new("pages");
    let r = start(raw_task("p", d.path(), "sleep 30")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    let pid = r["pid"].as_i64().unwrap() as i32;
    let at_start = shim_readonly_rss_kib(pid);
    // It does so after the task's first second; poll for it rather than guess the moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut now = at_start;
    while now + 256 > at_start && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        now = shim_readonly_rss_kib(pid);
    }
    op(
        execdriver::driver::stop,
        json!({"task_id": id, "timeout_ms": 2000}),
    )
    .unwrap();
    destroy(&id);
    assert!(
        now + 256 <= at_start,
        "read-only pages of the supervisor's binary: {at_start} KiB at start, still {now} KiB"
    );
}

/// A task id whose state dir holds a task that may still run (started by an earlier host
/// process, not recovered yet) is `task_exists`, found before anything is made: no task
/// dir, no cgroup.
#[test]
fn an_id_with_live_state_from_an_earlier_host_is_task_exists() {
    init();
    let d = TempDir::new("earlier");
    let alloc = d.path().join("a");
    let id = format!("earlier-{}", std::process::id());
    let cfg = execdriver::host::plugin::current();
    let state = execdriver::host::plugin::data_dir(&cfg)
        .join("tasks")
        .join(&id);
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("launch.json"), "{}").unwrap();
    let e = start(
        json!({"id": id, "name": "x", "driver": "raw_exec", "alloc_dir": alloc,
        "config": {"command": "/bin/true"}}),
    )
    .unwrap_err();
    let cgroups = std::process::Command::new("find")
        .args(["/sys/fs/cgroup", "-name", &id])
        .output()
        .unwrap()
        .stdout;
    std::fs::remove_dir_all(&state).unwrap();
    assert_eq!(e.code, execdriver::Code::TaskExists, "{e}");
    assert_eq!(e.field.as_deref(), Some("id"));
    assert!(!alloc.join("x").exists(), "task dir made");
    assert!(
        cgroups.is_empty(),
        "cgroup made: {}",
        String::from_utf8_lossy(&cgroups)
    );
}

/// Bad input names its field with `invalid_config`, whether in the plugin configuration
/// (an absolute `cgroup_parent` is refused at configure, not at every start later) or in
/// the task (`kill_signal`); a refused configuration changes nothing.
#[test]
fn bad_configuration_fields_are_invalid_config() {
    init();
    let before = execdriver::host::plugin::current();
    for parent in ["/nomad", "", "a/../b", "a//b"] {
        let e = op(
            execdriver::driver::configure,
            json!({"cgroup_parent": parent}),
        )
        .unwrap_err();
        assert_eq!(e.code, execdriver::Code::InvalidConfig, "{parent:?}: {e}");
        assert_eq!(e.field.as_deref(), Some("cgroup_parent"), "{parent:?}");
    }
    assert!(std::sync::Arc::ptr_eq(
        &before,
        &execdriver::host::plugin::current()
    ));
    let d = TempDir::new("badsig");
    let mut req = raw_task("t", d.path(), "true");
    req["kill_signal"] = json!("SIGNOPE");
    let e = start(req).unwrap_err();
    assert_eq!(e.code, execdriver::Code::InvalidConfig, "{e}");
    assert_eq!(e.field.as_deref(), Some("kill_signal"));
}
