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

/// A supervisor killed under its running task: `wait` says so in `err`, `stop` ends the
/// task's processes through its cgroup, `destroy` leaves nothing.
#[test]
fn a_killed_supervisor_is_reported_and_its_task_ended() {
    for driver in drivers() {
        let d = TempDir::new("fault-sup");
        let id = format!("fault-sup-{driver}-{}", std::process::id());
        let marker = format!("sleep {}", 870_000 + std::process::id() % 1000);
        let r = start(
            json!({"id": id, "name": "s", "driver": driver, "alloc_dir": d.path(),
            "config": {"command": "/bin/sh", "args": ["-c", format!("{marker} & echo up; wait")]}}),
        )
        .unwrap();
        wait_for_output(d.path(), "s", "up");
        let sup = r["pid"].as_i64().unwrap() as i32;
        // SAFETY: SIGKILL of our own child, the task's supervisor.
        unsafe { libc::kill(sup, libc::SIGKILL) };
        let w = wait(&id, 30_000).unwrap();
        assert!(
            w["err"].as_str().is_some_and(|e| e.contains("supervisor")),
            "{driver}: {w}"
        );
        // Its log says how far it got, and the wait object names it.
        let log =
            std::path::Path::new(r["handle"]["state_dir"].as_str().unwrap()).join("supervisor.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.contains(&format!("task {id} started")),
            "{driver}: {text:?}"
        );
        assert!(
            w["err"].as_str().unwrap().contains(log.to_str().unwrap()),
            "{driver}: {w}"
        );
        if cgroups_of(&id).is_empty() {
            // raw_exec without a cgroup (no cgroup2 here): the orphans are the host's to
            // see; nothing to check through a cgroup.
            assert!(driver == "raw_exec", "{driver}: no cgroup");
        } else {
            op(
                execdriver::driver::stop,
                json!({"task_id": id, "timeout_ms": 100}),
            )
            .unwrap();
            let t0 = std::time::Instant::now();
            while !pids_matching(&marker).is_empty() {
                if t0.elapsed() > Duration::from_secs(5) {
                    for p in pids_matching(&marker) {
                        eprintln!(
                            "left: {p} {:?} cg {:?}",
                            std::fs::read_to_string(format!("/proc/{p}/stat")),
                            std::fs::read_to_string(format!("/proc/{p}/cgroup"))
                        );
                    }
                    panic!("{driver}: the task's processes outlived stop");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        op(execdriver::driver::destroy, json!({"task_id": id})).unwrap();
        until("the task's cgroups outlived destroy", || {
            cgroups_of(&id).is_empty()
        });
    }
}

/// Spares and the fork server killed while idle and while starts take them: every start
/// still succeeds (a new supervisor takes it), and no spare's cgroup is left.
#[test]
fn killed_spares_and_fork_server_do_not_fail_starts() {
    let mut threads = vec![];
    for driver in drivers() {
        threads.push(std::thread::spawn(move || {
            let before = placeholders();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s2 = stop.clone();
            // The killer: SIGKILLs every spare and the fork server, again and again.
            let killer = std::thread::spawn(move || {
                while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut pids: Vec<i32> = execdriver::host::pool::spare_pids()
                        .into_iter()
                        .map(|(_, p)| p)
                        .collect();
                    pids.extend(execdriver::host::pool::fork_server_pid());
                    for p in pids {
                        // SAFETY: SIGKILL of a spare or the fork server, our children.
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                    std::thread::sleep(Duration::from_millis(3));
                }
            });
            for i in 0..25 {
                let d = TempDir::new("fault-spares");
                // The start never fails; the killer may still hit the supervisor of a
                // task it just started (a spare taken between its look and its kill):
                // then the wait result says so.
                let (w, out) = run(json!({"name": "k", "driver": driver, "alloc_dir": d.path(),
                    "config": {"command": "/bin/sh", "args": ["-c", "echo ok"]}}));
                let killed = w["err"]
                    .as_str()
                    .is_some_and(|e| e.contains("supervisor was killed"));
                assert!(
                    killed || (w["exit_code"].as_i64(), out.as_str()) == (Some(0), "ok\n"),
                    "{driver} {i}: {w}"
                );
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            killer.join().unwrap();
            // One more start notices the spares killed last (they are dropped, their
            // cgroups removed); then every placeholder left belongs to a live spare (its
            // standby is in it).
            let d = TempDir::new("fault-spares");
            run(json!({"name": "k", "driver": driver, "alloc_dir": d.path(),
                "config": {"command": "/bin/true"}}));
            execdriver::host::pool::settle();
            until("a killed spare's cgroup was left", || {
                placeholders().iter().all(|p| before.contains(p))
            });
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
}

/// A handle of an earlier task, authentic but stale: its id is a later task's now. It is
/// recovered as gone, and stopping and destroying it touches nothing of the later task.
#[test]
fn a_stale_handle_touches_nothing_of_a_later_task() {
    for driver in drivers() {
        let id = format!("fault-stale-{driver}-{}", std::process::id());
        let d1 = TempDir::new("fault-stale-a");
        let r = start(
            json!({"id": id, "name": "a", "driver": driver, "alloc_dir": d1.path(),
            "config": {"command": "/bin/true"}}),
        )
        .unwrap();
        let stale = r["handle"].clone();
        wait(&id, 30_000).unwrap();
        op(execdriver::driver::destroy, json!({"task_id": id})).unwrap();
        // The later task with the same id, in another host.
        let d2 = TempDir::new("fault-stale-b");
        let later = json!({"id": id, "name": "b", "driver": driver, "alloc_dir": d2.path(),
            "config": {"command": "/bin/sh", "args": ["-c", "echo up; exec sleep 600"]}});
        let host = Host::start(&later, false, &[]);
        let fresh = host.handle();
        wait_for_output(d2.path(), "b", "up");
        let r = op(execdriver::driver::recover, json!({"handle": stale})).unwrap();
        assert_eq!(r["state"], "exited", "{r}");
        let w = wait(&id, 0).unwrap();
        assert!(
            w["err"].as_str().is_some_and(|e| e.contains("no record")),
            "{w}"
        );
        op(
            execdriver::driver::stop,
            json!({"task_id": id, "timeout_ms": 0}),
        )
        .unwrap();
        op(
            execdriver::driver::destroy,
            json!({"task_id": id, "purge": true}),
        )
        .unwrap();
        let sup = fresh["pid"].as_i64().unwrap() as i32;
        assert!(alive(sup), "{driver}: the later task's supervisor was hit");
        let state = std::path::Path::new(fresh["state_dir"].as_str().unwrap());
        assert!(
            state.join("launch.json").exists() || state.is_dir(),
            "{driver}: its state went"
        );
        assert!(d2.path().join("b/local").is_dir());
        // The later task goes on, and is recovered and ended with its own handle.
        host.kill();
        let r = op(execdriver::driver::recover, json!({"handle": fresh})).unwrap();
        assert_eq!(r["state"], "running", "{r}");
        op(
            execdriver::driver::stop,
            json!({"task_id": id, "timeout_ms": 0}),
        )
        .unwrap();
        op(execdriver::driver::destroy, json!({"task_id": id})).unwrap();
    }
}
