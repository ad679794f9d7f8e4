//! The red-team suite, as a caller of the ABI: identifiers that try to become paths,
//! forged and altered handles, a failed start beside a running sibling, a killed
//! supervisor, timeouts that overflow, resources out of range. Each asserts the outcome:
//! a clear error naming the field, and nothing read, written, deleted or left running.

mod common;
mod escape;
use common::*;
use serde_json::{Value, json};
use std::path::Path;

fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        init();
        op(
            execdriver::driver::configure,
            json!({"denied_host_uids": "", "max_kill_timeout_ms": 2000,
                   "allow_host_pid_mode": true}),
        )
        .unwrap();
    });
}

fn data_dir() -> std::path::PathBuf {
    execdriver::host::plugin::data_dir(&execdriver::host::plugin::current())
}

/// The entries of `dir` (empty when it does not exist).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn identifiers_never_become_paths() {
    setup();
    let data = data_dir();
    let allocs = listing(&data.join("alloc"));
    let tasks = listing(&data.join("tasks"));
    let long = "x".repeat(129);
    let wide = "é".repeat(101); // 101 characters, 202 bytes
    let cases: Vec<(&str, Value)> = vec![
        ("alloc_id", json!("..")),
        ("alloc_id", json!(".")),
        ("alloc_id", json!("a/b")),
        ("alloc_id", json!("../../etc")),
        ("alloc_id", json!("a\u{0}b")),
        ("name", json!("alloc")),
        ("name", json!("..")),
        ("name", json!(".")),
        ("name", json!("x/y")),
        ("name", json!("")),
        ("name", json!("tab\tname")),
        ("id", json!("..")),
        ("id", json!("a/b")),
        ("id", json!("line\nbreak")),
        ("id", json!(long)),
        ("id", json!(wide)),
    ];
    for (field, value) in cases {
        for driver in ["raw_exec", "exec"] {
            let mut req =
                json!({"name": "t", "driver": driver, "config": {"command": "/bin/true"}});
            req[field] = value.clone();
            let e = start(req).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref()),
                (execdriver::Code::InvalidConfig, Some(field)),
                "{field}={value}: {e}"
            );
        }
    }
    let e = start(
        json!({"name": "t", "driver": "raw_exec", "alloc_dir": "/tmp/../etc",
                         "config": {"command": "/bin/true"}}),
    )
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("alloc_dir"), "{e}");
    assert_eq!(
        listing(&data.join("alloc")),
        allocs,
        "an alloc dir was made"
    );
    assert_eq!(listing(&data.join("tasks")), tasks, "a state dir was made");
    // A long name still gives an id that is an identifier.
    let d = TempDir::new("longname");
    let r = start(
        json!({"name": "n".repeat(128), "driver": "raw_exec", "alloc_dir": d.path(),
                         "config": {"command": "/bin/true"}}),
    )
    .unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    assert!(id.chars().count() <= 128, "{id}");
    wait(&id, 30_000).unwrap();
    destroy(&id);
}

/// Starts a sleeping raw_exec task; returns (id, handle).
fn sleeper(d: &Path, name: &str) -> (String, Value) {
    let r = start(raw_task(name, d, "sleep 600")).unwrap();
    (
        r["task_id"].as_str().unwrap().to_string(),
        r["handle"].clone(),
    )
}

fn recover(handle: &Value) -> Result<Value, execdriver::Error> {
    op(execdriver::driver::recover, json!({"handle": handle}))
}

#[test]
fn forged_and_altered_handles_touch_nothing() {
    setup();
    let d = TempDir::new("forge");
    let (id, handle) = sleeper(d.path(), "f");
    // A directory and a file the forged handles aim at.
    let victim = TempDir::new("victim");
    std::fs::write(victim.path().join("precious"), b"keep").unwrap();
    let v = victim.path().to_str().unwrap().to_string();
    let mut forgeries: Vec<(&str, Value)> = vec![];
    let mut h = handle.clone();
    h["state_dir"] = json!(v);
    forgeries.push(("state_dir changed", h));
    let mut h = handle.clone();
    h["task_dir"] = json!(v);
    forgeries.push(("task_dir changed", h));
    let mut h = handle.clone();
    h["cgroup"] = json!({"layout": "v1", "dirs": [v], "v1": {}, "v2": null,
                         "v2_controllers": false, "procs": [format!("{v}/precious")],
                         "kill": null, "shared": []});
    forgeries.push(("cgroup changed", h));
    let mut h = handle.clone();
    h["pid"] = json!(1);
    forgeries.push(("pid changed", h));
    let mut h = handle.clone();
    h.as_object_mut().unwrap().remove("mac");
    forgeries.push(("mac removed", h));
    let mut h = handle.clone();
    h["mac"] = json!("00".repeat(32));
    forgeries.push(("mac replaced", h));
    let mut h = handle.clone();
    h["task_id"] = json!("other");
    forgeries.push(("task_id changed", h));
    for (what, h) in forgeries {
        let e = recover(&h).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (execdriver::Code::InvalidRequest, Some("handle")),
            "{what}: {e}"
        );
        // And nothing it named was touched: destroying the real task after the attempt
        // leaves the victim as it was.
        assert_eq!(
            std::fs::read(victim.path().join("precious")).unwrap(),
            b"keep",
            "{what}"
        );
    }
    // The genuine handle still works.
    recover(&handle).unwrap();
    destroy(&id);
    assert_eq!(
        std::fs::read(victim.path().join("precious")).unwrap(),
        b"keep"
    );
}

/// A handle key that a task could read, or that is not ours, is not used.
#[test]
fn the_handle_key_is_private() {
    setup();
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("key");
    let (id, _) = sleeper(d.path(), "k");
    let key = data_dir().join(execdriver::host::handle::KEY_FILE);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    let tasks = std::fs::metadata(data_dir().join("tasks")).unwrap();
    assert_eq!(tasks.permissions().mode() & 0o777, 0o700);
    destroy(&id);
}

/// A start that fails after it made the alloc dir, while a sibling of the same alloc
/// started meanwhile and runs in it: the sibling keeps its root and its logs.
#[test]
fn a_failed_start_leaves_its_siblings_alone() {
    setup();
    let d = TempDir::new("siblings");
    let alloc = d.path().join("alloc-1");
    // An artifact server that answers only when told to, then 404.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (asked_tx, asked_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        asked_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        let _ = s
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    let failing = json!({"name": "b", "driver": "raw_exec", "alloc_dir": alloc,
        "artifacts": [{"source": format!("http://127.0.0.1:{port}/missing")}],
        "config": {"command": "/bin/true"}});
    let b = std::thread::spawn(move || start(failing));
    // B made the alloc dir and waits for its artifact; A starts in the same alloc.
    asked_rx.recv().unwrap();
    let a = start(raw_task("a", &alloc, "echo started; exec sleep 600")).unwrap();
    let a_id = a["task_id"].as_str().unwrap().to_string();
    wait_for_output(&alloc, "a", "started");
    go_tx.send(()).unwrap();
    let e = b.join().unwrap().unwrap_err();
    server.join().unwrap();
    assert_eq!(e.code, execdriver::Code::ArtifactDownload, "{e}");
    // B's own directory is gone; A's root, the alloc dir and A's logs are not.
    assert!(!alloc.join("b").exists());
    assert!(
        alloc.join("a/local").is_dir(),
        "the sibling's root vanished"
    );
    assert_eq!(stdout_of(&alloc, "a"), "started\n");
    let w = wait(&a_id, 0);
    assert!(w.is_err(), "the sibling stopped: {w:?}");
    destroy(&a_id);
}

/// A root task that shares the host's pid namespace kills its supervisor: `stop` still
/// ends every process of the task (through its cgroup), and the wait result says what
/// happened.
#[test]
fn a_killed_supervisor_does_not_free_the_task() {
    setup();
    if !common::exec_available() {
        return;
    }
    let d = TempDir::new("killsup");
    let local = d.path().join("k/local");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::copy(escape::probe(), local.join("probe")).unwrap();
    let r = start(json!({"name": "k", "driver": "exec", "alloc_dir": d.path(), "user": "root",
        "config": {"command": "/local/probe", "args": ["await=/local/go", "kill-parent", "sleep"], "pid_mode": "host"}}))
    .unwrap();
    std::fs::write(local.join("go"), b"").unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    let sup = r["pid"].as_i64().unwrap() as i32;
    let cg: execdriver::cgroup::TaskCgroup =
        serde_json::from_value(r["handle"]["cgroup"].clone()).unwrap();
    // The supervisor dies (it is our child: a zombie until reaped).
    let t0 = std::time::Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{sup}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.rsplit(") ").next().unwrap().starts_with('Z') {
            break;
        }
        assert!(t0.elapsed().as_secs() < 20, "the supervisor was not killed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let left = cg.pids();
    assert!(
        !left.is_empty(),
        "the task's probe should outlive its supervisor"
    );
    let w = op(
        execdriver::driver::stop,
        json!({"task_id": id, "timeout_ms": 100}),
    )
    .unwrap();
    assert!(
        cg.pids().is_empty(),
        "left running after stop: {:?}",
        cg.pids()
    );
    for p in left {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists()
                || std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .unwrap_or_default()
                    .contains(") Z"),
            "process {p} still runs"
        );
    }
    assert!(
        w["err"].as_str().is_some_and(|e| e.contains("supervisor")),
        "{w}"
    );
    destroy(&id);
}

/// Kill timeouts beyond the plugin's maximum (even past i64) are clamped: a task that
/// ignores its kill signal is SIGKILLed after `max_kill_timeout_ms`.
#[test]
fn kill_timeouts_are_clamped() {
    setup();
    let d = TempDir::new("clamp");
    for (task_timeout, stop_timeout) in
        [(u64::MAX, None), (1u64 << 63, None), (1000, Some(i64::MAX))]
    {
        let mut req = raw_task(
            "c",
            d.path(),
            "trap '' TERM; echo ready; while :; do sleep 1; done",
        );
        req["kill_signal"] = json!("SIGTERM");
        req["kill_timeout_ms"] = json!(task_timeout);
        let id = start(req).unwrap()["task_id"].as_str().unwrap().to_string();
        wait_for_output(d.path(), "c", "ready");
        let mut stop = json!({"task_id": id});
        if let Some(t) = stop_timeout {
            stop["timeout_ms"] = json!(t);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(op(execdriver::driver::stop, stop)));
        let w = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("stop never returned: the timeout was not clamped")
            .unwrap();
        assert_eq!(w["signal"], 9, "{w}");
        destroy(&id);
        let _ = std::fs::remove_file(d.path().join("alloc/logs/c.stdout.0"));
    }
}

#[test]
fn resources_out_of_range_are_invalid_on_the_field() {
    setup();
    let d = TempDir::new("res");
    let cpus = execdriver::sys::online_cpus();
    for (res, field) in [
        (json!({"cores": cpus + 1}), "resources.cores"),
        (
            json!({"memory_mb": 300, "memory_max_mb": 100}),
            "resources.memory_max_mb",
        ),
    ] {
        for driver in ["exec", "raw_exec"] {
            let e = start(json!({"name": "r", "driver": driver, "alloc_dir": d.path(),
                                 "resources": res, "config": {"command": "/bin/true"}}))
            .unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref()),
                (execdriver::Code::InvalidConfig, Some(field)),
                "{res}: {e}"
            );
            assert!(!e.message.contains("/sys/fs/cgroup"), "{e}");
        }
    }
    assert!(listing(d.path()).is_empty(), "{:?}", listing(d.path()));
}

#[test]
fn the_fingerprint_names_net_where_it_works() {
    setup();
    let f = execdriver::driver::fingerprint(None).unwrap();
    if f["attributes"]["driver.exec"] != "1" {
        skip(&format!(
            "exec unavailable here: {}",
            f["health_description"]
        ));
        return;
    }
    let ns = f["attributes"]["driver.exec.namespaces"].as_str().unwrap();
    assert!(ns.split(',').any(|n| n == "net"), "{f}");
    assert!(Path::new("/proc/self/ns/net").exists());
}

/// Two live tasks never share a task dir: a start with the name of a running task of the
/// same alloc is `task_exists` (it would read the other's files and write its logs); once
/// that task is destroyed the name is free again.
#[test]
fn a_live_tasks_dir_is_not_shared() {
    setup();
    let d = TempDir::new("sharedir");
    let (victim, _) = sleeper(d.path(), "web");
    let e = start(raw_task("web", d.path(), "cat local/* 2>/dev/null")).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (execdriver::Code::TaskExists, Some("name")),
        "{e}"
    );
    destroy(&victim);
    let (next, _) = sleeper(d.path(), "web");
    destroy(&next);
}
