//! A raw_exec supervisor runs another task after its own (`LaunchSpec::again_ms`): taken
//! back as a spare when its task is destroyed. One the host does not take back (a task
//! never destroyed) exits by itself after a while. Its own test binary: it shortens that
//! while through `$EXECDRIVER_IDLE_UNCLAIMED_MS`, which the library reads at each start.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.chars().next()
}

fn spares() -> Vec<i32> {
    execdriver::host::pool::settle();
    execdriver::host::pool::spare_pids()
        .into_iter()
        .filter(|(f, _)| *f == 0)
        .map(|(_, p)| p)
        .collect()
}

#[test]
fn unclaimed_supervisor_exits_and_a_claimed_one_stays() {
    init();
    // SAFETY: set before this binary's only test starts anything.
    unsafe { std::env::set_var("EXECDRIVER_IDLE_UNCLAIMED_MS", "300") };
    let d = TempDir::new("recycle");

    // Waited for but not destroyed: its supervisor says idle, is not taken back, and
    // exits (a zombie until the destroy reaps it).
    let r = start(raw_task("u", d.path(), "exit 4")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    let sup = r["pid"].as_i64().unwrap() as i32;
    assert_eq!(wait(&id, 30_000).unwrap()["exit_code"], 4);
    let deadline = Instant::now() + Duration::from_secs(20);
    while state_of(sup) != Some('Z') {
        assert!(Instant::now() < deadline, "supervisor {sup} still idle");
        std::thread::sleep(Duration::from_millis(10));
    }
    destroy(&id);
    assert_eq!(state_of(sup), None, "reaped by the destroy");
    assert!(!spares().contains(&sup));

    // Destroyed at once: taken back, and it stays, idle, well past that while.
    let r = start(raw_task("c", d.path(), "exit 0")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    let sup = r["pid"].as_i64().unwrap() as i32;
    wait(&id, 30_000).unwrap();
    destroy(&id);
    assert!(spares().contains(&sup), "{sup} not among {:?}", spares());
    // (The thing tested is that a timeout does not fire: nothing to wait for instead.)
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        state_of(sup),
        Some('S'),
        "the spare {sup} is still there, idle"
    );
    // And the spares work (the newest takes the start: this one, or one started ahead
    // that was added after it).
    let pool = spares();
    let r = start(raw_task("again", d.path(), "echo again")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    assert_eq!(r["pid"], *pool.last().unwrap());
    assert_eq!(wait(&id, 30_000).unwrap()["exit_code"], 0);
    assert_eq!(stdout_of(d.path(), "again"), "again\n");
    destroy(&id);

    // A task whose configuration changed while it ran (driver_configure): its supervisor
    // is not taken back, it ends with its task.
    let r = start(raw_task("cfg", d.path(), "exec sleep 60")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    let sup = r["pid"].as_i64().unwrap() as i32;
    op(execdriver::driver::configure, serde_json::json!({})).unwrap();
    op(
        execdriver::driver::stop,
        serde_json::json!({"task_id": id, "timeout_ms": 5000}),
    )
    .unwrap();
    destroy(&id);
    assert_eq!(state_of(sup), None, "the supervisor ended with its task");
    assert!(!spares().contains(&sup));
}
