//! Whole-driver behaviour: artifacts fetched by driver_start (the seed's form and the
//! list), fingerprint, the host process left untouched, concurrency.

mod common;
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;

/// Serves `body` for every request on 127.0.0.1 until `n` requests were answered.
fn serve(body: Vec<u8>, n: usize) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    (format!("http://{addr}"), h)
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn seed_artifact_source_runs_as_nomad_task_dir_binary() {
    let d = TempDir::new("seed");
    let script = b"#!/bin/sh\necho seeded $1\n".to_vec();
    let sum = sha256_hex(&script);
    let (url, h) = serve(script, 1);
    let driver = if is_root() { "exec" } else { "raw_exec" };
    let req = json!({"name": "seed", "driver": driver, "alloc_dir": d.path(),
        "config": {"command": "$NOMAD_TASK_DIR/binary.bin", "args": ["${NOMAD_TASK_NAME}"],
                   "artifact_source": format!("{url}/binary.bin"), "checksum": format!("sha256:{sum}")}});
    let (w, out) = run(req);
    h.join().unwrap();
    assert_eq!(w["exit_code"], 0, "{w}");
    assert_eq!(out, "seeded seed\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.path().join("seed/local/binary.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn checksum_mismatch_fails_start_and_leaves_nothing() {
    let d = TempDir::new("badsum");
    let alloc = d.path().join("a");
    let (url, h) = serve(b"data".to_vec(), 1);
    let req = json!({"name": "x", "driver": "raw_exec", "alloc_dir": alloc,
        "artifacts": [{"source": format!("{url}/f.txt"), "options": {"checksum": format!("sha256:{}", "0".repeat(64))}}],
        "config": {"command": "/bin/true"}});
    let e = start(req).unwrap_err();
    h.join().unwrap();
    assert_eq!(e.code, execdriver::Code::ArtifactChecksum, "{e}");
    assert_eq!(e.status() as i32, 5);
    // The task's own directory is gone; the alloc dir, shared with its siblings, stays.
    assert!(!alloc.join("x").exists());
    assert!(alloc.join("alloc").is_dir());
}

#[test]
fn inspect_shows_artifacts_and_unsupported_scheme_fails() {
    let d = TempDir::new("insp");
    let (url, h) = serve(b"x".to_vec(), 1);
    let r = start(json!({"name": "i", "driver": "raw_exec", "alloc_dir": d.path(),
        "artifacts": [{"source": format!("{url}/a.txt?token=secret")}], "config": {"command": "/bin/cat", "args": ["${NOMAD_TASK_DIR}/a.txt"]}})).unwrap();
    h.join().unwrap();
    let id = r["task_id"].as_str().unwrap();
    wait(id, 30_000).unwrap();
    let i = op(execdriver::driver::inspect, json!({"task_id": id})).unwrap();
    assert_eq!(i["state"], "exited");
    assert_eq!(i["artifacts"][0]["state"], "done", "{i}");
    assert_eq!(i["artifacts"][0]["bytes"], 1);
    assert!(!i.to_string().contains("secret"), "{i}");
    assert_eq!(stdout_of(d.path(), "i"), "x");
    destroy(id);

    let e = start(json!({"name": "g", "driver": "raw_exec", "alloc_dir": d.path().join("g"),
        "artifacts": [{"source": "git::https://example.com/repo.git"}], "config": {"command": "/bin/true"}})).unwrap_err();
    assert_eq!(e.status() as i32, 5);
    assert!(e.message.contains("unsupported"), "{e}");
}

#[test]
fn fingerprint_is_honest() {
    init();
    let f = execdriver::driver::fingerprint(None).unwrap();
    assert_eq!(f["attributes"]["driver.raw_exec"], "1");
    if is_root() && std::path::Path::new("/sys/fs/cgroup").exists() {
        assert_eq!(f["health"], "healthy", "{f}");
        assert_eq!(f["attributes"]["driver.exec"], "1");
        let kind = f["attributes"]["driver.exec.cgroup"].as_str().unwrap();
        let controllers: Vec<&str> = f["attributes"]["driver.exec.cgroup.controllers"]
            .as_str()
            .unwrap()
            .split(',')
            .collect();
        let mut sorted = controllers.clone();
        sorted.sort();
        assert_eq!(controllers, sorted, "{f}");
        for c in ["cpu", "memory", "pids"] {
            assert!(controllers.contains(&c), "{c}: {f}");
        }
        if std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() {
            assert!(["v1", "hybrid"].contains(&kind), "{f}");
        } else {
            // A pure cgroup2 hierarchy (the v2 suite's VM).
            assert!(std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists());
            assert_eq!(kind, "v2", "{f}");
        }
    } else {
        assert_ne!(f["health"], "healthy");
        assert!(f["attributes"].get("driver.exec").is_none());
    }
}

fn proc_status_field(field: &str) -> String {
    // This thread's own status: other test threads starting tasks at the same moment
    // briefly block signals in themselves, which /proc/self (the leader) could show.
    let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .unwrap_or("")
        .to_string()
}

#[test]
fn host_process_is_untouched() {
    let d = TempDir::new("host");
    let before = (
        proc_status_field("SigCgt:"),
        proc_status_field("SigBlk:"),
        std::env::current_dir().unwrap(),
    );
    // SAFETY: prctl query of our own subreaper flag.
    let sub = |_: ()| {
        let mut v: libc::c_int = 0;
        unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut v as *mut libc::c_int) };
        v
    };
    // A child of the host that exits during the task: the driver must not reap it.
    let mut own = std::process::Command::new("/bin/sh")
        .args(["-c", "exit 42"])
        .spawn()
        .unwrap();
    let (w, _) = run(raw_task("h", d.path(), "exit 0"));
    assert_eq!(w["exit_code"], 0);
    assert_eq!(
        own.wait().unwrap().code(),
        Some(42),
        "the host's own child was reaped by the driver"
    );
    assert_eq!(sub(()), 0, "the host became a subreaper");
    let after = (
        proc_status_field("SigCgt:"),
        proc_status_field("SigBlk:"),
        std::env::current_dir().unwrap(),
    );
    assert_eq!(
        before, after,
        "signal handlers, mask or cwd of the host changed"
    );
}

#[test]
fn concurrent_starts_from_many_threads() {
    let d = TempDir::new("conc");
    let hs: Vec<_> = (0..8)
        .map(|i| {
            let alloc = d.path().join(format!("a{i}"));
            std::thread::spawn(move || {
                let (w, out) = run(raw_task("c", &alloc, &format!("echo {i}")));
                assert_eq!(w["exit_code"], 0);
                assert_eq!(out, format!("{i}\n"));
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

/// What the task dir's `secrets/` holds at the start (an artifact fetched there, a file
/// the host put there) is in the task's `/secrets`, which for exec is a tmpfs mounted over
/// it; a link placed there is not followed into the copy.
#[test]
fn secrets_placed_before_the_start_reach_the_task() {
    let exec = is_root()
        && execdriver::driver::fingerprint(None).unwrap()["attributes"]["driver.exec"] == "1";
    let driver = if exec { "exec" } else { "raw_exec" };
    // Twice: the first start may be cold, the second takes a prestarted supervisor.
    for round in 0..2 {
        let d = TempDir::new("secrets");
        let task_secrets = d.path().join("s/secrets");
        std::fs::create_dir_all(&task_secrets).unwrap();
        std::fs::write(task_secrets.join("placed"), "by-host").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", task_secrets.join("link")).unwrap();
        let (url, h) = serve(b"from-artifact".to_vec(), 1);
        let dir = if exec {
            "/secrets"
        } else {
            "${NOMAD_SECRETS_DIR}"
        };
        let script = format!("cat {dir}/token {dir}/placed; test -e {dir}/link && echo link");
        let (w, out) = run(json!({"name": "s", "driver": driver, "alloc_dir": d.path(),
            "artifacts": [{"source": format!("{url}/token"), "destination": "secrets/"}],
            "config": {"command": "/bin/sh", "args": ["-c", script]}}));
        h.join().unwrap();
        assert_eq!(
            w["exit_code"],
            if exec { 1 } else { 0 },
            "round {round}: {w} {out}"
        );
        let want = if exec {
            "from-artifactby-host"
        } else {
            "from-artifactby-hostlink\n"
        };
        assert_eq!(out, want, "round {round}");
    }
}
