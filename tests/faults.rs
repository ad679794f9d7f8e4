//! Faults that must lose nothing: a host SIGKILLed at points of a start (while it
//! fetches an artifact, between the spec and the go line before and after it recorded
//! the task, right after the start report), on the cold and the prestarted path, for exec
//! and raw_exec. Afterwards nothing of the start is left (no process, cgroup, mount,
//! state dir, claim or staging dir: the supervisor removes them when the host goes before
//! the go) and the task starts again, or the task runs on and is recovered from its
//! handle. Also: a killed supervisor, killed spares and fork server, a stale handle, a
//! torn exit status, and the sweep at `driver_configure`.

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
            starts_again(&id, "f", driver, d.path());
        }
    }
}

/// After a host died in the middle of starting `id` (named `name`) in `alloc`: the same
/// task starts, with its id and with a new one.
fn starts_again(id: &str, name: &str, driver: &str, alloc: &std::path::Path) {
    for id in [json!(id), json!(null)] {
        let r = start(
            json!({"id": id, "name": name, "driver": driver, "alloc_dir": alloc,
            "config": {"command": "/bin/sh", "args": ["-c", "exit 3"]}}),
        )
        .unwrap_or_else(|e| panic!("{driver} {id}: {e}"));
        let id = r["task_id"].as_str().unwrap();
        assert_eq!(wait(id, 30_000).unwrap()["exit_code"], 3, "{driver}");
        destroy(id);
    }
}

/// A child host paused at the start's test point `point` (see `src/host/start.rs`), then
/// killed, for each driver on the cold and the prestarted path: nothing of the start is
/// left, the command never ran, and the same task starts again. `paused` checks the
/// state dir of the task (its id) while the host is paused there.
fn killed_at(point: &str, tag: &str, paused: impl Fn(&std::path::Path) -> Result<(), String>) {
    for driver in drivers() {
        for prestart in [false, true] {
            let d = TempDir::new(&format!("fault-{tag}"));
            let id = format!("fault-{tag}-{driver}-{prestart}-{}", std::process::id());
            let marker = d.path().join("paused");
            let task = json!({"id": id, "name": "g", "driver": driver, "alloc_dir": d.path(),
                "config": {"command": "/bin/sh", "args": ["-c", "echo ran > /local/ran; sleep 600"]}});
            let before = placeholders();
            let host = Host::start(
                &task,
                prestart,
                &[("FAULT_PAUSE", format!("{point}={}", marker.display()))],
            );
            until("the host never reached its pause", || marker.exists());
            if let Err(e) = paused(&data_dir().join("tasks").join(&id)) {
                host.kill();
                panic!("{driver} prestart {prestart}: {e}");
            }
            let below = host.kill();
            assert_nothing_left(&id, &below, d.path(), &before);
            assert!(
                !d.path().join("g/local/ran").exists(),
                "{driver}: the command ran without its go line"
            );
            starts_again(&id, "g", driver, d.path());
        }
    }
}

/// Killed before the task is recorded: the spec sent, the cgroups and directories made.
#[test]
fn host_killed_between_spec_and_go() {
    killed_at("EXECDRIVER_TEST_PAUSE_BEFORE_GO", "go", |_| Ok(()));
}

/// Killed once the task is recorded in its state dir (`.launch.json.tmp` and the exit's
/// room), before the go: the supervisor removes the record, the claim and the state dir,
/// and the task dir is free for the same task again.
#[test]
fn host_killed_after_recording_the_task() {
    killed_at("EXECDRIVER_TEST_PAUSE_AFTER_RECORD", "rec", |state| {
        let recorded =
            state.join(".launch.json.tmp").is_file() && state.join(".exit.reserved").is_file();
        match recorded {
            true => Ok(()),
            false => Err(format!(
                "not recorded: {:?}",
                std::fs::read_dir(state)
                    .map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            )),
        }
    });
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
            let below = host.kill();
            // The task's supervisor and command run on; the spares and the fork server
            // see the host go and exit.
            let sup = handle["pid"].as_i64().unwrap() as i32;
            let task_procs: Vec<i32> = std::iter::once(sup).chain(descendants(sup)).collect();
            let others: Vec<i32> = below
                .iter()
                .copied()
                .filter(|p| !task_procs.contains(p))
                .collect();
            if prestart {
                assert!(!others.is_empty(), "{driver}: no spare or fork server");
            }
            until(
                &format!("{driver}: a spare or the fork server outlived its host: {others:?}"),
                || others.iter().all(|p| !alive(*p)),
            );
            assert!(
                alive(sup),
                "{driver}: the task's supervisor died with the host"
            );
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

/// Kills that landed (the process ran when it was killed), while no start was under way
/// and while one was (a spare it may be taking, or one made for it).
#[derive(Default)]
struct Kills {
    idle: std::sync::atomic::AtomicUsize,
    during_start: std::sync::atomic::AtomicUsize,
}

/// The killer: SIGKILLs every spare and the fork server, again and again, until `stop`;
/// counts the kills that landed in `kills` (`starting`: starts under way).
fn killer(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    starting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    kills: std::sync::Arc<Kills>,
) -> std::thread::JoinHandle<()> {
    use std::sync::atomic::Ordering::SeqCst;
    std::thread::spawn(move || {
        while !stop.load(SeqCst) {
            let mut pids: Vec<i32> = execdriver::host::pool::spare_pids()
                .into_iter()
                .map(|(_, p)| p)
                .collect();
            pids.extend(execdriver::host::pool::fork_server_pid());
            for p in pids {
                let under_way = starting.load(SeqCst) > 0;
                // SAFETY: SIGKILL of a spare or the fork server, our children (not reaped
                // before the pool drops them, so the pid is still theirs).
                let landed = alive(p) && unsafe { libc::kill(p, libc::SIGKILL) } == 0;
                if landed {
                    let n = if under_way || starting.load(SeqCst) > 0 {
                        &kills.during_start
                    } else {
                        &kills.idle
                    };
                    n.fetch_add(1, SeqCst);
                }
            }
            std::thread::sleep(Duration::from_millis(3));
        }
    })
}

/// Spares and the fork server killed while idle and while starts take them: every start
/// still succeeds (a new supervisor takes it), and no spare's cgroup is left. The kills
/// are counted: both kinds must have landed.
#[test]
fn killed_spares_and_fork_server_do_not_fail_starts() {
    use std::sync::atomic::Ordering::SeqCst;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let starting = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let kills = std::sync::Arc::new(Kills::default());
    let before = placeholders();
    let k = killer(stop.clone(), starting.clone(), kills.clone());
    let mut threads = vec![];
    for driver in drivers() {
        let (starting, kills) = (starting.clone(), kills.clone());
        threads.push(std::thread::spawn(move || {
            let enough = || kills.idle.load(SeqCst) >= 3 && kills.during_start.load(SeqCst) >= 3;
            let mut i = 0;
            while i < 25 || (!enough() && i < 300) {
                i += 1;
                let d = TempDir::new("fault-spares");
                starting.fetch_add(1, SeqCst);
                let r = start(json!({"name": "k", "driver": driver, "alloc_dir": d.path(),
                    "config": {"command": "/bin/sh", "args": ["-c", "echo ok"]}}));
                starting.fetch_sub(1, SeqCst);
                // The start never fails; the killer may still hit the supervisor of a
                // task it just started (a spare taken between its look and its kill):
                // then the wait result says so.
                let id = r.unwrap_or_else(|e| panic!("{driver} {i}: {e}"))["task_id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let w = wait(&id, 30_000).unwrap();
                let out = stdout_of(d.path(), "k");
                destroy(&id);
                let killed = w["err"]
                    .as_str()
                    .is_some_and(|e| e.contains("supervisor was killed"));
                assert!(
                    killed || (w["exit_code"].as_i64(), out.as_str()) == (Some(0), "ok\n"),
                    "{driver} {i}: {w}"
                );
                // Now and then a pause, for the spares to be idle a while.
                if i % 4 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    stop.store(true, SeqCst);
    k.join().unwrap();
    let (idle, during) = (kills.idle.load(SeqCst), kills.during_start.load(SeqCst));
    eprintln!("kills that landed: {idle} idle, {during} while a start was under way");
    assert!(
        idle >= 1 && during >= 1,
        "{idle} idle, {during} during a start"
    );
    // One more start of each kind notices the spares killed last (they are dropped,
    // their cgroups removed); then every placeholder left belongs to a live spare (its
    // standby is in it).
    for driver in drivers() {
        let d = TempDir::new("fault-spares");
        run(json!({"name": "k", "driver": driver, "alloc_dir": d.path(),
            "config": {"command": "/bin/true"}}));
    }
    execdriver::host::pool::settle();
    until("a killed spare's cgroup was left", || {
        placeholders().iter().all(|p| before.contains(p))
    });
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

/// The exit status of a task that ended while no host ran, read back by a host that
/// recovers it: a torn `exit.json` is reported in `err` (exit code -1), never as a wrong
/// code; a whole status still in the reserved room (the supervisor died between its
/// in-place write and the rename) is the task's.
#[test]
fn a_torn_exit_status_is_an_error_and_a_reserved_one_counts() {
    for (how, id_tag) in [("torn", "torn"), ("unrenamed", "unren")] {
        let d = TempDir::new("fault-exit");
        let id = format!("fault-{id_tag}-{}", std::process::id());
        let task = json!({"id": id, "name": "x", "driver": "raw_exec", "alloc_dir": d.path(),
            "config": {"command": "/bin/sh", "args": ["-c", "exit 7"]}});
        let host = Host::start(&task, false, &[]);
        let handle = host.handle();
        host.kill();
        let state = std::path::Path::new(handle["state_dir"].as_str().unwrap()).to_path_buf();
        let sup = handle["pid"].as_i64().unwrap() as i32;
        until("the task's supervisor never ended", || !alive(sup));
        let exit = state.join("exit.json");
        let whole = std::fs::read(&exit).unwrap();
        match how {
            "torn" => std::fs::write(&exit, &whole[..whole.len().min(20)]).unwrap(),
            _ => std::fs::rename(&exit, state.join(".exit.reserved")).unwrap(),
        }
        let r = op(execdriver::driver::recover, json!({"handle": handle})).unwrap();
        assert_eq!(r["state"], "exited", "{how}: {r}");
        let w = wait(&id, 0).unwrap();
        match how {
            "torn" => {
                assert_eq!(w["exit_code"], -1, "{w}");
                assert!(
                    w["err"].as_str().is_some_and(
                        |e| e.contains("cannot be read") && e.contains(exit.to_str().unwrap())
                    ),
                    "{w}"
                );
            }
            _ => assert_eq!(
                (&w["exit_code"], &w["err"]),
                (&json!(7), &json!(null)),
                "{w}"
            ),
        }
        destroy(&id);
    }
}

/// What dead starts left where their supervisors could not remove it (killed with their
/// host), removed by the next host's `driver_configure`: a state dir without a committed
/// launch record that nobody holds, the claim of its task and the staging dir in that
/// task dir, its empty cgroups, and a dead spare's placeholder that has been there a
/// while. A committed task's state, claim and cgroups stay, as do a state dir a start
/// holds, one made just now (a start takes its lock right after), and a placeholder made
/// just now.
#[test]
fn the_configure_sweep_removes_what_dead_starts_left() {
    use execdriver::proto::spec;
    let d = TempDir::new("fault-sweep");
    let pid = std::process::id();
    let tasks = data_dir().join("tasks");
    let claims = data_dir().join("claims");
    std::fs::create_dir_all(&tasks).unwrap();
    std::fs::create_dir_all(&claims).unwrap();
    let [dead, recorded, held] = ["dead", "recorded", "held"].map(|k| format!("sweep-{k}-{pid}"));
    for id in [&dead, &recorded, &held] {
        std::fs::create_dir(tasks.join(id)).unwrap();
        let task_dir = d.path().join(id);
        std::fs::create_dir_all(task_dir.join(format!(".fetch-1-2-3-{id}"))).unwrap();
        let claim = execdriver::host::prepare::claim_path(&data_dir(), &task_dir);
        std::fs::write(&claim, spec::claim_text(id, &task_dir)).unwrap();
    }
    std::fs::write(tasks.join(&dead).join(".launch.json.tmp"), b"{}").unwrap();
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for id in [&dead, &recorded, &held] {
        let dir = std::fs::File::open(tasks.join(id)).unwrap();
        dir.set_modified(long_ago).unwrap();
    }
    std::fs::write(tasks.join(&recorded).join("launch.json"), b"{}").unwrap();
    let hold = spec::hold(&tasks.join(&held)).unwrap();
    let young = format!("sweep-young-{pid}");
    std::fs::create_dir(tasks.join(&young)).unwrap();
    // Cgroups (as root): the dead start's and the recorded task's, empty; two spare
    // placeholders, one made long ago.
    let mounts: Vec<std::path::PathBuf> = match (is_root(), execdriver::cgroup::detect()) {
        (true, Ok(l)) => l.mounts().iter().map(|m| m.join("execdriver")).collect(),
        _ => {
            skip("the cgroup part needs root and cgroups");
            vec![]
        }
    };
    let (old_spare, new_spare) = (
        format!("spare-sweep-old-{pid}"),
        format!("spare-sweep-new-{pid}"),
    );
    // And one of another's under the same parent (another data dir's task, or Nomad's
    // own share.slice under nomad.slice), empty and old: not the sweep's.
    let foreign = format!("sweep-foreign-{pid}.slice");
    for m in &mounts {
        for name in [&dead, &recorded, &old_spare, &new_spare, &foreign] {
            std::fs::create_dir_all(m.join(name)).unwrap();
        }
        for name in [&old_spare, &foreign] {
            std::fs::File::open(m.join(name))
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
    }
    child_host_says(&[], "CONFIGURED");
    assert!(!tasks.join(&dead).exists(), "the dead start's state dir");
    assert!(claims_of(&dead).is_empty(), "the dead start's claim");
    assert!(
        staging_in(d.path())
            .iter()
            .all(|s| !s.starts_with(d.path().join(&dead)))
    );
    assert!(tasks.join(&recorded).is_dir() && tasks.join(&held).is_dir());
    assert!(tasks.join(&young).is_dir());
    assert_eq!(claims_of(&recorded).len() + claims_of(&held).len(), 2);
    assert_eq!(staging_in(d.path()).len(), 2, "{:?}", staging_in(d.path()));
    for m in &mounts {
        assert!(
            !m.join(&dead).exists() && !m.join(&old_spare).exists(),
            "{}",
            m.display()
        );
        assert!(
            m.join(&recorded).exists() && m.join(&new_spare).exists(),
            "{}",
            m.display()
        );
        assert!(m.join(&foreign).exists(), "{}", m.display());
        for name in [&recorded, &new_spare, &foreign] {
            std::fs::remove_dir(m.join(name)).unwrap();
        }
    }
    drop(hold);
    for id in [&recorded, &held, &young] {
        std::fs::remove_dir_all(tasks.join(id)).unwrap();
        for c in claims_of(id) {
            std::fs::remove_file(c).unwrap();
        }
    }
}

/// A launch record that cannot be read (here a directory in its place: EISDIR, as an
/// EMFILE or EIO would be) fails `driver_recover` with the error and touches nothing: the
/// live task is not taken for a later task's (superseded), and recovers once it can be
/// read.
#[test]
fn an_unreadable_launch_record_fails_recovery_and_supersedes_nothing() {
    let d = TempDir::new("fault-launch");
    let id = format!("fault-launch-{}", std::process::id());
    let task = json!({"id": id, "name": "l", "driver": "raw_exec", "alloc_dir": d.path(),
        "config": {"command": "/bin/sh", "args": ["-c", "echo up; exec sleep 600"]}});
    let host = Host::start(&task, false, &[]);
    let handle = host.handle();
    host.kill();
    wait_for_output(d.path(), "l", "up");
    let state = std::path::Path::new(handle["state_dir"].as_str().unwrap()).to_path_buf();
    let launch = state.join("launch.json");
    until("the launch record was never committed", || launch.is_file());
    std::fs::rename(&launch, state.join("launch.json.away")).unwrap();
    std::fs::create_dir(&launch).unwrap();
    let e = op(execdriver::driver::recover, json!({"handle": handle})).unwrap_err();
    assert!(e.message.contains(launch.to_str().unwrap()), "{e}");
    assert!(
        execdriver::host::task::get(&id).is_err(),
        "registered all the same"
    );
    std::fs::remove_dir(&launch).unwrap();
    std::fs::rename(state.join("launch.json.away"), &launch).unwrap();
    let r = op(execdriver::driver::recover, json!({"handle": handle})).unwrap();
    assert_eq!(r["state"], "running", "{r}");
    op(
        execdriver::driver::stop,
        json!({"task_id": id, "timeout_ms": 0}),
    )
    .unwrap();
    destroy(&id);
}
