//! Faults that must lose nothing: a host SIGKILLed at points of a start (while it
//! fetches an artifact, between the spec and the go line, right after the start report),
//! on the cold and the prestarted path, for exec and raw_exec. Afterwards nothing of the
//! start is left (no cgroup, process or mount; a stale staging dir goes with the next
//! start in the task dir), or the task runs on and is recovered from its handle.

mod common;
mod fault_host;
use common::*;
use fault_host::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn fault_child_host() {
    child_host_main();
}

/// A loopback server that takes one request and never answers while it lives.
fn stalling_server() -> (String, std::sync::mpsc::Receiver<()>, std::net::TcpListener) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/artifact.bin", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let l2 = l.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut held = vec![];
        while let Ok((mut s, _)) = l2.accept() {
            use std::io::Read;
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = tx.send(());
            held.push(s);
        }
    });
    (url, rx, l)
}

#[test]
fn host_killed_while_fetching() {
    for driver in drivers() {
        for prestart in [false, true] {
            let d = TempDir::new("fault-fetch");
            let id = format!("fault-fetch-{driver}-{prestart}-{}", std::process::id());
            let (url, asked, _server) = stalling_server();
            let task = json!({"id": id, "name": "f", "driver": driver, "alloc_dir": d.path(),
                "artifacts": [{"source": url}], "config": {"command": "/bin/true"}});
            let before = placeholders();
            let host = Host::start(&task, prestart, &[]);
            asked
                .recv_timeout(Duration::from_secs(30))
                .expect("the host never fetched");
            let below = host.kill();
            assert_nothing_left(&id, &below, d.path(), &before);
            // A stale staging dir goes with the next start in the task dir.
            let e = start(
                json!({"name": "f", "driver": "raw_exec", "alloc_dir": d.path(),
                "artifacts": [{"source": "http://127.0.0.1:1/none", "options": {}}],
                "config": {"command": "/bin/true"}}),
            );
            assert!(e.is_err());
            let stale: Vec<_> = std::fs::read_dir(d.path().join("f"))
                .map(|r| {
                    r.flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with(".fetch-"))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default();
            assert!(stale.is_empty(), "{driver} prestart {prestart}: {stale:?}");
        }
    }
}

#[test]
fn host_killed_between_spec_and_go() {
    for driver in drivers() {
        for prestart in [false, true] {
            let d = TempDir::new("fault-go");
            let id = format!("fault-go-{driver}-{prestart}-{}", std::process::id());
            let marker = d.path().join("paused");
            let task = json!({"id": id, "name": "g", "driver": driver, "alloc_dir": d.path(),
                "config": {"command": "/bin/sh", "args": ["-c", "echo ran > /local/ran; sleep 600"]}});
            let before = placeholders();
            let host = Host::start(
                &task,
                prestart,
                &[(
                    "EXECDRIVER_TEST_PAUSE_BEFORE_GO",
                    marker.to_str().unwrap().to_string(),
                )],
            );
            until("the host never reached the go line", || marker.exists());
            let below = host.kill();
            assert_nothing_left(&id, &below, d.path(), &before);
            assert!(
                !d.path().join("g/local/ran").exists(),
                "{driver}: the command ran without its go line"
            );
        }
    }
}

#[test]
fn host_killed_after_the_start_is_recovered() {
    for driver in drivers() {
        for prestart in [false, true] {
            let d = TempDir::new("fault-after");
            let id = format!("fault-after-{driver}-{prestart}-{}", std::process::id());
            let task = json!({"id": id, "name": "a", "driver": driver, "alloc_dir": d.path(),
                "config": {"command": "/bin/sh", "args": ["-c", "echo up; exec sleep 600"]}});
            let before = placeholders();
            let host = Host::start(&task, prestart, &[]);
            let handle = host.handle();
            host.kill();
            wait_for_output(d.path(), "a", "up");
            let r = op(execdriver::driver::recover, json!({"handle": handle})).unwrap();
            assert_eq!(r["state"], "running", "{driver} prestart {prestart}: {r}");
            let w = op(
                execdriver::driver::stop,
                json!({"task_id": id, "timeout_ms": 1000}),
            )
            .unwrap();
            assert!(w["signal"].as_i64().unwrap() > 0, "{w}");
            op(execdriver::driver::destroy, json!({"task_id": id})).unwrap();
            until("the recovered task's cgroups are left", || {
                cgroups_of(&id).is_empty()
            });
            until("a spare's placeholder cgroup is left", || {
                placeholders().iter().all(|p| before.contains(p))
            });
        }
    }
}
