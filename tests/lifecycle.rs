//! Long-run hygiene and stats: many start/stop cycles leave nothing behind; stats follow
//! the task; destroy with purge.

mod common;
use common::*;
use serde_json::json;

/// The tests of this file count process-wide resources: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn count_dir(p: &str) -> usize {
    std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0)
}

fn zombies_of_me() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let s = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let f: Vec<&str> = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            f.first() == Some(&"Z") && f.get(1) == Some(&me.as_str())
        })
        .count()
}

fn mounts_mentioning(s: &str) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(s))
        .count()
}

#[test]
fn many_cycles_leave_nothing_behind() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let d = TempDir::new("cycles");
    let driver = if is_root() { "exec" } else { "raw_exec" };
    let n: usize = std::env::var("EXECDRIVER_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // Staging up once so lazily created process-wide state is not counted.
    run(
        json!({"name": "w", "driver": driver, "alloc_dir": d.path().join("w"), "config": {"command": "/bin/true"}}),
    );
    // Counted without spares and the fork server (each holds fds of ours; how many spares
    // there are depends on how the starts and destroys interleave): ended here and at the
    // end.
    execdriver::host::pool::settle();
    execdriver::host::pool::drop_idle();
    let fds = count_dir("/proc/self/fd");
    let threads = count_dir("/proc/self/task");
    let name = format!("cyc{}", std::process::id());
    let ours = || {
        std::fs::read_dir("/sys/fs/cgroup/memory/execdriver")
            .map(|r| {
                r.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
                    .count()
            })
            .unwrap_or(0)
    };
    let tag = d.path().to_string_lossy().into_owned();
    for i in 0..n {
        let alloc = d.path().join("a");
        let r = start(json!({"name": name, "driver": driver, "alloc_dir": alloc, "config": {"command": "/bin/sleep", "args": ["60"]}}))
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        let id = r["task_id"].as_str().unwrap().to_string();
        let w = op(
            execdriver::driver::stop,
            json!({"task_id": id, "signal": "SIGKILL", "timeout_ms": 1000}),
        )
        .unwrap();
        assert_eq!(w["signal"], 9, "cycle {i}: {w}");
        op(execdriver::driver::destroy, json!({"task_id": id})).unwrap();
    }
    execdriver::host::pool::settle();
    execdriver::host::pool::drop_idle();
    assert_eq!(count_dir("/proc/self/fd"), fds, "fds leaked");
    assert_eq!(count_dir("/proc/self/task"), threads, "threads leaked");
    assert_eq!(ours(), 0, "cgroups leaked");
    assert_eq!(zombies_of_me(), 0, "zombies left");
    assert_eq!(mounts_mentioning(&tag), 0, "mounts visible on the host");
}

#[test]
fn stats_follow_memory_and_children() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let d = TempDir::new("stats");
    let driver = if is_root() { "exec" } else { "raw_exec" };
    // Three children first; then a process holding ~40 MB.
    let r = start(json!({"name": "s", "driver": driver, "alloc_dir": d.path(), "resources": {"memory_mb": 300},
        "config": {"command": "/bin/sh", "args": ["-c", "sleep 60 & sleep 60 & sleep 60 & echo ready; while [ ! -e $NOMAD_TASK_DIR/go ]; do sleep 0.01; done; x=$(head -c 40000000 /dev/zero | tr '\\0' a); echo big; sleep 60"]}}))
        .unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    wait_for_output(d.path(), "s", "ready");
    let stats = || op(execdriver::driver::stats, json!({"task_id": id})).unwrap();
    let s1 = stats();
    assert!(s1["pids"]["current"].as_u64().unwrap() >= 4, "{s1}");
    std::fs::write(d.path().join("s/local/go"), "").unwrap();
    wait_for_output(d.path(), "s", "big");
    let s2 = stats();
    let mem = |s: &serde_json::Value| {
        s["memory"]["usage_bytes"]
            .as_u64()
            .unwrap()
            .max(s["memory"]["rss_bytes"].as_u64().unwrap())
    };
    assert!(
        mem(&s2) > mem(&s1) + 30_000_000,
        "memory did not grow: {s1} -> {s2}"
    );
    assert!(s2["cpu"]["total_ns"].as_u64().unwrap() > 0);
    op(
        execdriver::driver::stop,
        json!({"task_id": id, "timeout_ms": 100}),
    )
    .unwrap();
    op(
        execdriver::driver::destroy,
        json!({"task_id": id, "purge": true}),
    )
    .unwrap();
    assert!(!d.path().join("s").exists(), "purge left the task dir");
    assert!(
        d.path().join("alloc/logs").exists(),
        "the alloc dir belongs to the host"
    );
}

/// `driver_stats` in Nomad's shape: CPU `percent` (of one core) and `total_ticks` (MHz)
/// since the previous call (the first: since the start), and per group the counters that
/// were measured: one left out reads 0 but is not listed.
#[test]
fn stats_give_cpu_percent_ticks_and_what_was_measured() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let d = TempDir::new("stats-pct");
    let driver = if is_root() { "exec" } else { "raw_exec" };
    let r = start(json!({"name": "p", "driver": driver, "alloc_dir": d.path(),
        "config": {"command": "/bin/sh", "args": ["-c",
            "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo spun; exec sleep 60"]}}))
    .unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    wait_for_output(d.path(), "p", "spun");
    let stats = || op(execdriver::driver::stats, json!({"task_id": id})).unwrap();
    let measured = |s: &serde_json::Value, group: &str| -> Vec<String> {
        s[group]["measured"]
            .as_array()
            .unwrap_or_else(|| panic!("no {group}.measured: {s}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let busy = stats();
    let cpu = measured(&busy, "cpu");
    assert!(
        cpu.contains(&"total_ns".into()) && cpu.contains(&"percent".into()),
        "{busy}"
    );
    assert!(
        busy["cpu"]["percent"].as_f64().unwrap() > 1.0,
        "spun since the start: {busy}"
    );
    if cpu.contains(&"total_ticks".into()) {
        assert!(busy["cpu"]["total_ticks"].as_f64().unwrap() > 0.0, "{busy}");
    }
    assert!(
        measured(&busy, "pids").contains(&"current".into()),
        "{busy}"
    );
    // Every counter listed is a key of its group; one not listed reads 0.
    for group in ["memory", "cpu", "pids"] {
        let g = busy[group].as_object().unwrap();
        for m in measured(&busy, group) {
            assert!(g.contains_key(&m), "{group}.{m} listed but absent: {busy}");
        }
        for (k, v) in g {
            if k != "measured" && !measured(&busy, group).contains(k) {
                assert_eq!(
                    v.as_f64(),
                    Some(0.0),
                    "{group}.{k} not measured but not 0: {busy}"
                );
            }
        }
    }
    if driver == "exec" {
        assert!(
            measured(&busy, "memory").contains(&"rss_bytes".into()),
            "{busy}"
        );
    }
    // Since the last call the task only slept (what it spent on exec'ing `sleep` aside):
    // a window of its own, as a host's stats ticker gives.
    let _ = wait(&id, 300);
    let idle = stats();
    assert!(
        idle["cpu"]["percent"].as_f64().unwrap() < 50.0,
        "{busy} then {idle}"
    );
    op(
        execdriver::driver::stop,
        json!({"task_id": id, "timeout_ms": 100}),
    )
    .unwrap();
    destroy(&id);
}

/// `driver_inspect`'s events, as Nomad shows a task's: each step of its life with a time,
/// a type and a message, in order.
#[test]
fn inspect_lists_the_tasks_events() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let d = TempDir::new("events");
    let r = start(raw_task(
        "e",
        d.path(),
        "trap 'echo hup' HUP; echo ready; while :; do sleep 0.05; done",
    ))
    .unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    wait_for_output(d.path(), "e", "ready");
    op(
        execdriver::driver::signal,
        json!({"task_id": id, "signal": "SIGHUP"}),
    )
    .unwrap();
    wait_for_output(d.path(), "e", "hup");
    op(
        execdriver::driver::stop,
        json!({"task_id": id, "signal": "SIGUSR1", "timeout_ms": 2000}),
    )
    .unwrap();
    let i = op(execdriver::driver::inspect, json!({"task_id": id})).unwrap();
    let events = i["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["received", "started", "signaled", "killing", "exited"],
        "{i}"
    );
    assert_eq!(events[2]["message"], "signal 1");
    assert!(
        events[3]["message"]
            .as_str()
            .unwrap()
            .starts_with("signal 10;"),
        "{i}"
    );
    assert_eq!(
        events[4]["message"], "killed by signal 10 (exit code 138)",
        "{i}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z')))
    );
    // The supervisor's own log: its stderr once the task started.
    let log =
        std::fs::read_to_string(i["supervisor_log"].as_str().expect("a supervisor log")).unwrap();
    assert!(
        log.contains(&format!("task {id} started: /bin/sh")),
        "{log}"
    );
    assert!(
        log.contains(&format!("task {id} ended: exit code 138, signal 10")),
        "{log}"
    );
    destroy(&id);
}
