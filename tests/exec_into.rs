//! driver_exec: a command inside a running task's isolation.

mod common;
use common::*;
use serde_json::json;

fn exec(req: serde_json::Value) -> Result<serde_json::Value, execdriver::Error> {
    op(execdriver::driver::exec, req)
}

#[test]
fn exec_sees_task_world_and_timeout_kills_only_it() {
    let d = TempDir::new("into");
    let driver = if is_root() { "exec" } else { "raw_exec" };
    // One task first, so that the one below starts from the spare it leaves (whose command
    // process sits in a root of its own inside the mount namespace).
    let first = start(
        json!({"name": "first", "driver": driver, "alloc_dir": d.path(),
        "config": {"command": "/bin/true"}}),
    )
    .unwrap();
    let first = first["task_id"].as_str().unwrap().to_string();
    wait(&first, 30_000).unwrap();
    destroy(&first);
    execdriver::host::pool::settle();
    let r = start(json!({"name": "x", "driver": driver, "alloc_dir": d.path(),
        "config": {"command": "/bin/sh", "args": ["-c", "echo secret-42 > $NOMAD_TASK_DIR/f; echo ready; exec sleep 600"]}})).unwrap();
    let id = r["task_id"].as_str().unwrap();
    wait_for_output(d.path(), "x", "ready");
    let f = if driver == "exec" {
        "/local/f".to_string()
    } else {
        d.path().join("x/local/f").to_string_lossy().into_owned()
    };
    let out = exec(json!({"task_id": id, "command": "/bin/cat", "args": [f]})).unwrap();
    assert_eq!(out["stdout"], "secret-42\n", "{out}");
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["truncated"], false, "{out}");
    // Output past 1 MiB a stream is dropped, and the response says so.
    let out = exec(json!({"task_id": id, "command": "/bin/sh",
        "args": ["-c", "head -c 1048577 /dev/zero | tr '\\0' x; echo small >&2"]}))
    .unwrap();
    assert_eq!(out["stdout"].as_str().unwrap().len(), 1 << 20);
    assert_eq!(
        (&out["stderr"], &out["truncated"]),
        (&json!("small\n"), &json!(true))
    );
    if driver == "exec" {
        let out = exec(json!({"task_id": id, "command": "id", "args": ["-u"]})).unwrap();
        assert_eq!(out["stdout"], "65534\n", "{out}");
        let out =
            exec(json!({"task_id": id, "command": "cat", "args": ["/proc/self/cgroup"]})).unwrap();
        assert!(
            out["stdout"].as_str().unwrap().contains(id),
            "exec not in the task's cgroup: {out}"
        );
        let out = exec(
            json!({"task_id": id, "command": "sh", "args": ["-c", "ls /proc | grep -c '^[0-9]'"]}),
        )
        .unwrap();
        assert!(
            out["stdout"]
                .as_str()
                .unwrap()
                .trim()
                .parse::<u32>()
                .unwrap()
                <= 5,
            "not in the task's pid namespace: {out}"
        );
    }
    // This test process ignores SIGPIPE (and 32); the exec'd command must not inherit that.
    let out = exec(json!({"task_id": id, "command": "grep",
        "args": ["-E", "^(SigIgn|SigBlk)", "/proc/self/status"]}))
    .unwrap();
    let status = out["stdout"].as_str().unwrap();
    assert!(status.contains("SigIgn:\t0000000000000000"), "{out}");
    assert!(status.contains("SigBlk:\t0000000000000000"), "{out}");
    let t0 = std::time::Instant::now();
    let out =
        exec(json!({"task_id": id, "command": "/bin/sleep", "args": ["30"], "timeout_ms": 200}))
            .unwrap();
    assert!(t0.elapsed().as_secs() < 10);
    assert_eq!(out["signal"], 9, "{out}");
    assert_eq!(
        wait(id, 0).unwrap_err().code,
        execdriver::Code::Timeout,
        "the task died with the exec"
    );
    let e = exec(json!({"task_id": "nope", "command": "true"})).unwrap_err();
    assert_eq!(e.code, execdriver::Code::TaskNotFound);
    op(
        execdriver::driver::stop,
        json!({"task_id": id, "timeout_ms": 100}),
    )
    .unwrap();
    let e = exec(json!({"task_id": id, "command": "true"})).unwrap_err();
    assert_eq!(e.code, execdriver::Code::TaskNotFound);
    destroy(id);
}

/// A bare command name is found in the task's `local/` whatever the task's `work_dir`
/// (raw_exec: the task dir's `local/` on the host, not `<work_dir>/local`).
#[test]
fn raw_exec_exec_finds_a_local_command_with_a_work_dir() {
    let d = TempDir::new("execwd");
    let r = start(json!({"name": "w", "driver": "raw_exec", "alloc_dir": d.path(),
        "config": {"command": "/bin/sh", "work_dir": "/tmp",
            "args": ["-c", "printf '#!/bin/sh\\necho tool-ran\\n' > ${NOMAD_TASK_DIR}/tool; chmod 755 ${NOMAD_TASK_DIR}/tool; echo ready; exec sleep 60"]}}))
    .unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    wait_for_output(d.path(), "w", "ready");
    let out = exec(json!({"task_id": id, "command": "tool"})).unwrap();
    destroy(&id);
    assert_eq!(out["stdout"], "tool-ran\n", "{out}");
}
