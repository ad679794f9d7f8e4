//! Recovery: a separate host process (Python over ctypes) starts tasks, prints their
//! handles and exits (or is SIGKILLed); this process recovers them and gets the true exit
//! status, can stop them, and gets their stats.

mod common;
use common::*;
use serde_json::{Value, json};

const CHILD_HOST: &str = r#"
import ctypes, json, os, sys
lib = ctypes.CDLL(sys.argv[1])
lib.driver_start.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
lib.driver_free.argtypes = [ctypes.c_void_p]
out = ctypes.c_void_p()
rc = lib.driver_start(sys.argv[2].encode(), ctypes.byref(out))
print(json.dumps({"rc": rc, "resp": json.loads(ctypes.string_at(out.value).decode())}), flush=True)
lib.driver_free(out)
if sys.argv[3] == "kill":
    os.kill(os.getpid(), 9)
"#;

fn lib_path() -> std::path::PathBuf {
    built_lib()
}

/// Starts `task` from a separate host process that exits (or dies) right after.
fn start_in_child_host(task: &Value, how: &str) -> Value {
    init();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            CHILD_HOST,
            lib_path().to_str().unwrap(),
            &task.to_string(),
            how,
        ])
        .output()
        .expect("python3");
    let line = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
        panic!(
            "child host said {line:?} {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["rc"], 0, "{v}");
    v["resp"]["handle"].clone()
}

/// `handle` changed by `edit` and signed again with the data dir's key, as only the
/// driver (or whoever holds that root-only key) can.
fn resign(handle: &Value, edit: impl FnOnce(&mut execdriver::host::handle::Handle)) -> Value {
    let mut v = handle.clone();
    v.as_object_mut().unwrap().remove("mac");
    let mut t: execdriver::host::handle::Handle = serde_json::from_value(v).unwrap();
    edit(&mut t);
    let data = execdriver::host::plugin::data_dir(&execdriver::host::plugin::current());
    t.signed(&execdriver::host::handle::Key::of(&data).unwrap())
}

fn recover(handle: &Value) -> Result<Value, execdriver::Error> {
    op(execdriver::driver::recover, json!({"handle": handle}))
}

/// The exact exit status of a task that ended while no host ran, whose host exited or was
/// SIGKILLed, for both drivers (exec as root).
#[test]
fn exit_status_of_a_task_that_ended_while_no_host_ran() {
    let drivers: &[&str] = if is_root() {
        &["raw_exec", "exec"]
    } else {
        &["raw_exec"]
    };
    for driver in drivers {
        for how in ["exit", "kill"] {
            let d = TempDir::new("rec-ended");
            let mut task = raw_task("e", d.path(), "echo one; echo two; exit 7");
            task["driver"] = json!(driver);
            let h = start_in_child_host(&task, how);
            let id = h["task_id"].as_str().unwrap();
            // Let it finish before we recover: its exit.json appears.
            let exit = std::path::Path::new(h["state_dir"].as_str().unwrap()).join("exit.json");
            let t0 = std::time::Instant::now();
            while !exit.exists() {
                assert!(t0.elapsed().as_secs() < 20, "{driver}, host {how}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            recover(&h).unwrap();
            recover(&h).unwrap(); // twice is fine
            let w = wait(id, 10_000).unwrap();
            assert_eq!(
                (w["exit_code"].as_i64(), w["signal"].as_i64()),
                (Some(7), Some(0)),
                "{driver}, host {how}: {w}"
            );
            assert!(w["err"].is_null(), "{driver}, host {how}: {w}");
            assert_eq!(
                stdout_of(d.path(), "e"),
                "one\ntwo\n",
                "{driver}, host {how}: log lines written without a host"
            );
            destroy(id);
        }
    }
}

#[test]
fn running_task_recovered_after_host_sigkill_can_be_stopped() {
    let d = TempDir::new("rec-run");
    let driver = if is_root() { "exec" } else { "raw_exec" };
    let mut task = json!({"name": "r", "driver": driver, "alloc_dir": d.path(),
        "config": {"command": "/bin/sh", "args": ["-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.01; done"]}});
    if driver == "exec" {
        task["network_isolation"] = json!({"mode": "none"});
    }
    let h = start_in_child_host(&task, "kill");
    let id = h["task_id"].as_str().unwrap();
    // With a wait fd: its supervisor's pidfd, readable once the task has ended.
    let r = op(
        execdriver::driver::recover,
        json!({"handle": h, "wait_fd": true}),
    )
    .unwrap();
    // SAFETY: the library handed this fd over to us.
    let wait_fd = unsafe {
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(
            r["wait_fd"].as_i64().unwrap() as i32,
        )
    };
    let readable = |ms: u16| {
        use std::os::fd::AsFd;
        let mut p = [nix::poll::PollFd::new(
            wait_fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut p, nix::poll::PollTimeout::from(ms)).unwrap() == 1
    };
    assert!(!readable(0));
    assert_eq!(wait(id, 0).unwrap_err().code, execdriver::Code::Timeout);
    wait_for_output(d.path(), "r", "tick 5");
    let s = op(execdriver::driver::stats, json!({"task_id": id})).unwrap();
    assert!(s["pids"]["current"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        s["memory"]["usage_bytes"].as_u64().unwrap() > 0
            || s["memory"]["rss_bytes"].as_u64().unwrap() > 0,
        "{s}"
    );
    // Its logs, found from the launch.json the supervisor wrote.
    let l = op(
        execdriver::driver::logs,
        json!({"task_id": id, "limit_bytes": 7, "encoding": "text"}),
    )
    .unwrap();
    assert_eq!(l["data"], "tick 0\n", "{l}");
    // driver_exec of a recovered task: this host never had its spec in memory, so the
    // exec shim reads the launch.json the supervisor wrote.
    let out = op(
        execdriver::driver::exec,
        json!({"task_id": id, "command": "/bin/sh", "args": ["-c", "echo via-$((40+2))"]}),
    )
    .unwrap();
    assert_eq!(out["stdout"], "via-42\n", "{out}");
    if driver == "exec" {
        // In the task's isolation, as its user: not the host's network or mounts.
        let out = op(
            execdriver::driver::exec,
            json!({"task_id": id, "command": "/bin/sh",
                   "args": ["-c", "id -u; readlink /proc/self/ns/net /proc/self/ns/mnt"]}),
        )
        .unwrap();
        let text = out["stdout"].as_str().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0], "65534", "{out}");
        for (line, ns) in lines[1..].iter().zip(["net", "mnt"]) {
            let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
            assert!(line.starts_with(&format!("{ns}:[")), "{out}");
            assert_ne!(
                *line,
                host.to_str().unwrap(),
                "the host's {ns} namespace: {out}"
            );
        }
    }
    let w = op(
        execdriver::driver::stop,
        json!({"task_id": id, "signal": "SIGTERM", "timeout_ms": 5000}),
    )
    .unwrap();
    assert_eq!(w["signal"], 15, "{w}");
    assert!(
        readable(10_000),
        "the wait fd of a recovered task is not readable at its end"
    );
    // The history the first host recorded, then this one's.
    let i = op(execdriver::driver::inspect, json!({"task_id": id})).unwrap();
    let kinds: Vec<&str> = i["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["received", "started", "recovered", "killing", "exited"],
        "{i}"
    );
    // The ticks are in order.
    let out = stdout_of(d.path(), "r");
    let ticks: Vec<u64> = out.lines().map(|l| l[5..].parse().unwrap()).collect();
    assert!(
        ticks.windows(2).all(|p| p[1] == p[0] + 1),
        "log out of order"
    );
    destroy(id);
}

#[test]
fn recycled_pid_is_not_taken_for_the_supervisor() {
    let d = TempDir::new("rec-pid");
    let h = start_in_child_host(&raw_task("p", d.path(), "exit 0"), "exit");
    let id = h["task_id"].as_str().unwrap().to_string();
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    // The handle as the driver itself would sign it with another process's pid (a
    // recycled one): authentic, and still not taken for the supervisor.
    let forged = resign(&h, |t| t.pid = other.id() as i32);
    // Remove the status file as if the task left none.
    let exit = std::path::Path::new(h["state_dir"].as_str().unwrap()).join("exit.json");
    let t0 = std::time::Instant::now();
    while !exit.exists() && t0.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::fs::remove_file(&exit).unwrap();
    recover(&forged).unwrap();
    let w = wait(&id, 1000).unwrap();
    assert_eq!(w["exit_code"], -1, "{w}");
    assert!(w["err"].is_string());
    other.kill().unwrap();
    other.wait().unwrap();
    destroy(&id);
}

#[test]
fn unknown_handle_version_is_refused() {
    let e = recover(&json!({"version": 99, "task_id": "x"})).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (execdriver::Code::InvalidRequest, Some("handle.version"))
    );
}

/// `driver_exec` of a recovered exec task reads its launch spec back from the state dir:
/// one that does not agree with the task's authenticated handle (no isolation, so the
/// command would run as root in the host's namespaces; another user or capabilities;
/// another task's) is refused, and nothing runs.
#[test]
fn driver_exec_refuses_an_altered_launch_spec() {
    if !exec_available() {
        return;
    }
    let d = TempDir::new("rec-spec");
    let task = json!({"name": "s", "driver": "exec", "alloc_dir": d.path(),
        "config": {"command": "/bin/sleep", "args": ["600"]}});
    let h = start_in_child_host(&task, "kill");
    let id = h["task_id"].as_str().unwrap();
    // Destroyed however the test ends (a recovered task's destroy needs only its handle).
    struct Destroy(Value);
    impl Drop for Destroy {
        fn drop(&mut self) {
            let _ = op(execdriver::driver::recover, json!({"handle": self.0}));
            destroy(self.0["task_id"].as_str().unwrap_or_default());
        }
    }
    let _end = Destroy(h.clone());
    let launch = std::path::Path::new(h["state_dir"].as_str().unwrap()).join("launch.json");
    let t0 = std::time::Instant::now();
    while !launch.exists() {
        assert!(t0.elapsed().as_secs() < 20, "no {}", launch.display());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    recover(&h).unwrap();
    let original = std::fs::read(&launch).unwrap();
    let spec: Value = serde_json::from_slice(&original).unwrap();
    let marker = d.path().join("s/local/ran");
    let cmd =
        json!({"task_id": id, "command": "/bin/sh", "args": ["-c", "touch /local/ran; id -u"]});
    for (at, value) in [
        ("/isolation", Value::Null),
        ("/isolation/uid", json!(0)),
        ("/isolation/raised", spec["isolation"]["caps"].clone()),
        ("/isolation/seccomp", json!(false)),
        ("/task_id", json!("another")),
    ] {
        let mut altered = spec.clone();
        *altered.pointer_mut(at).unwrap() = value.clone();
        assert_ne!(altered, spec, "{at}");
        std::fs::write(&launch, altered.to_string()).unwrap();
        let e = op(execdriver::driver::exec, cmd.clone()).unwrap_err();
        assert_eq!(e.code, execdriver::Code::Isolation, "{at} = {value}: {e}");
        assert!(!marker.exists(), "{at} = {value}: the command ran");
    }
    std::fs::write(&launch, &original).unwrap();
    let out = op(execdriver::driver::exec, cmd).unwrap();
    assert_eq!(out["stdout"], "65534\n", "{out}");
}
