//! Prestarted ("spare") supervisors (`prestart_supervisor`, on by default): after a
//! raw_exec start, one idle supervisor waits for the next raw_exec start, which takes it. One test function, so that no other start in this process takes a spare
//! between two of its checks.

mod common;
use common::*;
use serde_json::json;
use std::path::Path;

fn configure(req: serde_json::Value) {
    op(execdriver::driver::configure, req).unwrap();
}

/// The idle spares, once no spare is still being started in the background.
fn spares() -> Vec<i32> {
    execdriver::spawn::settle();
    execdriver::spawn::spare_pid().into_iter().collect()
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

    // The first start launches its own supervisor and leaves a spare of its kind.
    let d = TempDir::new("pre-a");
    let (first, code, out) = run_task(raw_task("a", d.path(), "echo one"), d.path());
    assert_eq!((code, out.as_str()), (0, "one\n"));
    let s = spares();
    assert_eq!(s.len(), 1, "one spare after a start: {s:?}");
    let spare = s[0];
    assert_ne!(spare, first);
    assert_eq!(
        std::fs::read_link(format!("/proc/{spare}/exe")).unwrap(),
        shim,
        "the spare runs the supervisor binary"
    );
    let ppid = std::fs::read_to_string(format!("/proc/{spare}/stat")).unwrap();
    let ppid: u32 = ppid
        .rsplit(") ")
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, std::process::id(), "the spare is our child");

    // The next start of the same kind takes it, and a new spare replaces it.
    let d = TempDir::new("pre-b");
    let (pid, code, out) = run_task(raw_task("b", d.path(), "echo two"), d.path());
    assert_eq!((pid, code, out.as_str()), (spare, 0, "two\n"));
    let s = spares();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_ne!(s[0], spare);

    // A spare killed while idle is not used: the start launches a supervisor of its own.
    let killed = s[0];
    // SAFETY: kill(2) of our own idle child.
    unsafe { libc::kill(killed, libc::SIGKILL) };
    let d = TempDir::new("pre-c");
    let (pid, code, out) = run_task(raw_task("c", d.path(), "echo three"), d.path());
    assert_eq!((code, out.as_str()), (0, "three\n"));
    assert_ne!(pid, killed);
    assert!(gone(killed), "the killed spare was reaped");

    // A start that fails after taking the spare leaves no process (and no new spare).
    let taken = spares()[0];
    let d = TempDir::new("pre-d");
    let mut bad = raw_task("d", d.path(), "");
    bad["config"] = json!({"command": "/nonexistent/cmd"});
    let e = start(bad).unwrap_err();
    assert_eq!(e.code, execdriver::Code::CommandNotFound, "{e}");
    assert!(gone(taken), "the spare the failed start took was reaped");
    assert!(spares().is_empty());

    exec_starts_use_no_spare();

    // Turned off: driver_configure ends the spares (reaped), and starts leave none.
    let d = TempDir::new("pre-e");
    run_task(raw_task("e", d.path(), "true"), d.path());
    let before = spares();
    assert!(!before.is_empty());
    configure(json!({"prestart_supervisor": false}));
    assert!(spares().is_empty());
    for p in &before {
        assert!(gone(*p), "spare {p} still there after driver_configure");
    }
    let (pid, code, _) = run_task(raw_task("f", d.path(), "true"), d.path());
    assert_eq!(code, 0);
    assert!(!before.contains(&pid));
    assert!(
        spares().is_empty(),
        "no spare with prestart_supervisor false"
    );
    configure(json!({}));
}

/// exec supervisors are never prestarted (their start is bound by the task's cgroups,
/// not by the supervisor's launch): an exec start neither takes nor leaves a spare.
fn exec_starts_use_no_spare() {
    let f = execdriver::driver::fingerprint(None).unwrap();
    if f["attributes"]["driver.exec"] != "1" {
        eprintln!(
            "SKIP exec part: exec unavailable here: {}",
            f["health_description"]
        );
        return;
    }
    let d = TempDir::new("pre-x");
    let (_, code, out) = run_task(
        json!({"name": "x", "driver": "exec", "alloc_dir": d.path(),
               "config": {"command": "/bin/echo", "args": ["isolated"]}}),
        d.path(),
    );
    assert_eq!((code, out.as_str()), (0, "isolated\n"));
    assert!(spares().is_empty(), "an exec start left a spare");
}
