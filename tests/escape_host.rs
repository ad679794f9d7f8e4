//! The red-team suite, as a caller of the ABI: identifiers and alloc dirs that try to
//! become paths of the driver's own, forged and altered handles, a failed start beside a
//! running sibling, timeouts that overflow, resources out of range. Each asserts the
//! outcome: a clear error naming the field, and nothing read, written, deleted or left
//! running. (A killed supervisor is tried on both start paths: `tests/escape/mod.rs`.)

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
    // An alloc dir that would make a task's root (or its /alloc) the data dir, hold it or
    // lie in it: the task would read other tasks' launch specs (their secrets) and could
    // rewrite them. Also through a symlink.
    execdriver::host::plugin::make_data_dir(&data).unwrap();
    let parent = data.parent().unwrap();
    let base = data.file_name().unwrap().to_str().unwrap();
    let links = TempDir::new("datalink");
    let link = links.path().join("to-data");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    for (alloc_dir, name) in [
        (data.clone(), "tasks"),
        (data.clone(), "t"),
        (data.join("tasks"), "t"),
        (data.join("alloc"), "t"),
        (parent.to_path_buf(), base),
        (
            parent.parent().unwrap().to_path_buf(),
            parent.file_name().unwrap().to_str().unwrap(),
        ),
        (link.clone(), "tasks"),
        (link.join("claims"), "t"),
    ] {
        for driver in ["raw_exec", "exec"] {
            let e = start(
                json!({"name": name, "driver": driver, "alloc_dir": alloc_dir,
                                 "config": {"command": "/bin/true"}}),
            )
            .unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref()),
                (execdriver::Code::InvalidConfig, Some("alloc_dir")),
                "{} / {name}: {e}",
                alloc_dir.display()
            );
        }
    }
    // The default layout's shape is the one allowed inside it.
    let own = data
        .join("alloc")
        .join(format!("given-{}", std::process::id()));
    let (w, _) = run(raw_task("t", &own, "true"));
    assert_eq!(w["exit_code"], 0, "{w}");
    let _ = std::fs::remove_dir_all(&own);
    // (Other tests of this process start tasks meanwhile, with names of their own: their
    // ids, `<name>-<16 hex>`, do not count.)
    let others = ["f", "k", "c", "r", "n", "web", "a", "b"];
    let theirs = |e: &str| {
        e.rsplit_once('-').is_some_and(|(name, hex)| {
            others.contains(&name) && hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
    };
    let ours = |dir: &Path, before: &[String]| -> Vec<String> {
        listing(dir)
            .into_iter()
            .filter(|e| !before.contains(e) && !theirs(e))
            .collect()
    };
    assert_eq!(
        ours(&data.join("alloc"), &allocs),
        [] as [String; 0],
        "an alloc dir was made"
    );
    assert_eq!(
        ours(&data.join("tasks"), &tasks),
        [] as [String; 0],
        "a state dir was made"
    );
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

/// A task destroyed (forced) when the test ends, passed or not: a failed assertion leaves
/// no task running and no cgroup behind.
struct Task(String);

impl Drop for Task {
    fn drop(&mut self) {
        destroy(&self.0);
    }
}

/// Starts a sleeping raw_exec task; returns (id, handle).
fn sleeper(d: &Path, name: &str) -> (String, Value) {
    let r = start(raw_task(name, d, "sleep 600")).unwrap();
    (
        r["task_id"].as_str().unwrap().to_string(),
        r["handle"].clone(),
    )
}

/// `handle` changed by `edit` and signed again with the data dir's key, as only the
/// driver (or whoever holds that root-only key) can.
fn resign(handle: &Value, edit: impl FnOnce(&mut execdriver::host::handle::Handle)) -> Value {
    let mut v = handle.clone();
    v.as_object_mut().unwrap().remove("mac");
    let mut t: execdriver::host::handle::Handle = serde_json::from_value(v).unwrap();
    edit(&mut t);
    t.signed(&execdriver::host::handle::Key::of(&data_dir()).unwrap())
}

fn recover(handle: &Value) -> Result<Value, execdriver::Error> {
    op(execdriver::driver::recover, json!({"handle": handle}))
}

#[test]
fn forged_and_altered_handles_touch_nothing() {
    setup();
    let mut drivers = vec!["raw_exec"];
    if common::exec_available() {
        drivers.push("exec");
    }
    for driver in drivers {
        let d = TempDir::new("forge");
        let r = start(json!({"name": "f", "driver": driver, "alloc_dir": d.path(),
                             "config": {"command": "/bin/sleep", "args": ["600"]}}))
        .unwrap();
        let task = Task(r["task_id"].as_str().unwrap().to_string());
        forgeries_touch_nothing(&task.0, &r["handle"], driver);
    }
}

/// Each forgery of `handle` (of the running task `id`) is refused, and nothing it names
/// is touched; the genuine handle still works.
fn forgeries_touch_nothing(id: &str, handle: &Value, driver: &str) {
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
    // Authentic (signed again with the key) but naming cgroups outside cgroup_parent: a
    // victim cgroup with a process in it, which destroy would kill and remove.
    let victims = handle["cgroup"]["dirs"]
        .as_array()
        .filter(|d| !d.is_empty())
        .map(|_| VictimCgroups::new(handle, id));
    if let Some(vc) = &victims {
        forgeries.push((
            "re-signed with cgroups outside cgroup_parent",
            vc.forged.clone(),
        ));
    } else {
        assert_eq!(driver, "raw_exec", "an exec task without cgroups");
    }
    for (what, h) in forgeries {
        let e = recover(&h).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (execdriver::Code::InvalidRequest, Some("handle")),
            "{driver}, {what}: {e}"
        );
        // And nothing it named was touched.
        assert_eq!(
            std::fs::read(victim.path().join("precious")).unwrap(),
            b"keep",
            "{what}"
        );
    }
    // The genuine handle still works, and destroying the task touches no victim.
    recover(handle).unwrap();
    op(
        execdriver::driver::destroy,
        json!({"task_id": id, "force": true}),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(victim.path().join("precious")).unwrap(),
        b"keep"
    );
    if let Some(vc) = victims {
        vc.assert_untouched();
    }
}

/// Cgroups outside `cgroup_parent`, one in each hierarchy of a task, all holding one
/// process of this test's; and the task's handle re-signed to name them. Removed on drop.
struct VictimCgroups {
    dirs: Vec<std::path::PathBuf>,
    process: std::process::Child,
    forged: Value,
}

impl VictimCgroups {
    fn new(handle: &Value, id: &str) -> VictimCgroups {
        let name = format!("escape-victim-{}", std::process::id());
        let own = format!("/execdriver/{id}");
        let dirs: Vec<std::path::PathBuf> = handle["cgroup"]["dirs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let d = d.as_str().unwrap();
                assert!(d.ends_with(&own), "{d}");
                std::path::PathBuf::from(d.replace(&own, &format!("/{name}")))
            })
            .collect();
        let mut made = VictimCgroups {
            dirs: vec![],
            process: std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .unwrap(),
            forged: Value::Null,
        };
        for d in &dirs {
            std::fs::create_dir(d).unwrap();
            made.dirs.push(d.clone());
            std::fs::write(d.join("cgroup.procs"), made.process.id().to_string()).unwrap();
        }
        made.forged = resign(handle, |h| {
            let text = serde_json::to_string(&h.cgroup)
                .unwrap()
                .replace(&own, &format!("/{name}"));
            h.cgroup = serde_json::from_str(&text).unwrap();
        });
        made
    }

    fn assert_untouched(mut self) {
        assert!(
            self.process.try_wait().unwrap().is_none(),
            "the victim cgroup's process was killed"
        );
        for d in &self.dirs {
            assert!(d.is_dir(), "{} was removed", d.display());
        }
    }
}

impl Drop for VictimCgroups {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A handle key that a task could read, or that is not ours, is not used.
#[test]
fn the_handle_key_is_private() {
    setup();
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("key");
    let _task = Task(sleeper(d.path(), "k").0);
    let key = data_dir().join(execdriver::host::handle::KEY_FILE);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    let tasks = std::fs::metadata(data_dir().join("tasks")).unwrap();
    assert_eq!(tasks.permissions().mode() & 0o777, 0o700);
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
        (
            json!({"pids_max": execdriver::config::MAX_PIDS + 1}),
            "resources.pids_max",
        ),
        (json!({"pids_max": u64::MAX}), "resources.pids_max"),
        (json!({"pids_max": 1u64 << 63}), "resources.pids_max"),
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
    // And it works: a task with network_isolation none is in a namespace of its own.
    let d = TempDir::new("fpnet");
    let (w, out) = run(json!({"name": "n", "driver": "exec", "alloc_dir": d.path(),
        "network_isolation": {"mode": "none"},
        "config": {"command": "/bin/readlink", "args": ["/proc/self/ns/net"]}}));
    assert_eq!(w["exit_code"], 0, "{w}");
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(out.starts_with("net:["), "{out}");
    assert_ne!(
        out.trim(),
        host.to_str().unwrap(),
        "the task shares the host's network"
    );
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
