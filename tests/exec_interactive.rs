//! The interactive form of driver_exec: pipes (`stream`, `stdin`) and a pty (`tty`)
//! handed to the caller, driver_exec_wait, driver_exec_resize.

mod common;
use common::*;
use serde_json::{Value, json};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

/// One test at a time: they count this process's fds.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn exec(req: Value) -> Result<Value, execdriver::Error> {
    op(execdriver::driver::exec, req)
}

fn exec_wait(id: &str, timeout_ms: i64) -> Result<Value, execdriver::Error> {
    op(
        execdriver::driver::exec_wait,
        json!({"exec_id": id, "timeout_ms": timeout_ms}),
    )
}

fn resize(id: &str, rows: u16, cols: u16) -> Result<Value, execdriver::Error> {
    op(
        execdriver::driver::exec_resize,
        json!({"exec_id": id, "rows": rows, "cols": cols}),
    )
}

/// Takes ownership of the fd the response names under `key`.
fn take(v: &Value, key: &str) -> File {
    let fd = v[key].as_i64().unwrap_or_else(|| panic!("no {key} in {v}")) as i32;
    // SAFETY: the library handed this fd over to us; nothing else owns it.
    unsafe { File::from_raw_fd(fd) }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Reads `f` until what was read contains every one of `needles` (20 s at most).
fn read_until(f: &mut File, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    loop {
        let s = String::from_utf8_lossy(&got).into_owned();
        if needles.iter().all(|n| s.contains(n)) {
            return s;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "never read {needles:?}; got {s:?}");
        let mut p = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
        let mut buf = [0u8; 4096];
        match f.read(&mut buf) {
            Ok(0) | Err(_) => panic!("EOF before {needles:?}; got {s:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads `f` to its end: EOF, or EIO from a pty master whose slave is gone.
fn read_to_end(f: &mut File) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A running task of `driver` in a fresh alloc dir; its id.
fn running(d: &TempDir, driver: &str) -> String {
    let r = start(
        json!({"name": "it", "driver": driver, "alloc_dir": d.path(),
        "config": {"command": "/bin/sh", "args": ["-c", "echo ready; exec sleep 600"]}}),
    )
    .unwrap();
    wait_for_output(d.path(), "it", "ready");
    execdriver::host::pool::settle();
    r["task_id"].as_str().unwrap().to_string()
}

/// Pipes: stdin to the command, stdout and stderr apart, the exit code from exec_wait;
/// no fd of the library's left once waited for.
fn pipes(driver: &str) {
    let d = TempDir::new("itpipes");
    let id = running(&d, driver);
    let before = open_fds();
    let r = exec(json!({"task_id": id, "command": "/bin/sh", "stdin": true,
        "args": ["-c", "read l; echo out:$l; id -u; cat /proc/self/cgroup; echo err:$l >&2; exit 7"]}))
    .unwrap();
    assert!(
        r["exec_id"].is_string() && r["pid"].as_i64() > Some(0),
        "{r}"
    );
    let (mut i, mut o, mut e) = (
        take(&r, "stdin_fd"),
        take(&r, "stdout_fd"),
        take(&r, "stderr_fd"),
    );
    for f in [&i, &o, &e] {
        // SAFETY: fcntl F_GETFD on an fd we own.
        let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(
            flags & libc::FD_CLOEXEC,
            libc::FD_CLOEXEC,
            "not close-on-exec"
        );
    }
    let exec_id = r["exec_id"].as_str().unwrap().to_string();
    assert_eq!(
        exec_wait(&exec_id, 0).unwrap_err().code,
        execdriver::Code::Timeout,
        "it waits for its stdin"
    );
    i.write_all(b"hi\n").unwrap();
    drop(i);
    let out = read_to_end(&mut o);
    let err = read_to_end(&mut e);
    assert!(out.starts_with("out:hi\n"), "{out}");
    assert_eq!(err, "err:hi\n");
    if driver == "exec" {
        assert!(out.contains("\n65534\n"), "not the task's user: {out}");
        assert!(out.contains(&id), "not in the task's cgroup: {out}");
    }
    let w = exec_wait(&exec_id, 20_000).unwrap();
    assert_eq!(
        (&w["exit_code"], &w["signal"]),
        (&json!(7), &json!(0)),
        "{w}"
    );
    assert_eq!(
        exec_wait(&exec_id, 0).unwrap_err().code,
        execdriver::Code::TaskNotFound,
        "waited for once"
    );
    drop((o, e));
    assert_eq!(open_fds(), before, "fds leaked");

    // `stream` alone: no stdin pipe (the command's is /dev/null), no output cap.
    let r = exec(json!({"task_id": id, "command": "/bin/sh", "stream": true,
        "args": ["-c", "cat; head -c 2000000 /dev/zero"]}))
    .unwrap();
    assert!(r.get("stdin_fd").is_none(), "{r}");
    let (mut o, mut e) = (take(&r, "stdout_fd"), take(&r, "stderr_fd"));
    assert_eq!(read_to_end(&mut o).len(), 2_000_000);
    assert_eq!(read_to_end(&mut e), "");
    let w = exec_wait(r["exec_id"].as_str().unwrap(), -1).unwrap();
    assert_eq!(w["exit_code"], 0, "{w}");

    // timeout_ms kills it, as the buffered form does.
    let r = exec(
        json!({"task_id": id, "command": "/bin/sleep", "args": ["30"],
        "stream": true, "timeout_ms": 200}),
    )
    .unwrap();
    let t0 = Instant::now();
    let w = exec_wait(r["exec_id"].as_str().unwrap(), 20_000).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(
        (&w["exit_code"], &w["signal"]),
        (&json!(137), &json!(9)),
        "{w}"
    );
    drop((take(&r, "stdout_fd"), take(&r, "stderr_fd")));
    destroy(&id);
}

#[test]
fn pipes_raw_exec() {
    let _g = serial();
    pipes("raw_exec");
}

#[test]
fn pipes_exec() {
    let _g = serial();
    if exec_available() {
        pipes("exec");
    }
}

/// A tty: the shell's prompt and echo through the master, `tty` names the task's
/// devpts, `stty size` follows the resizes, the exit code from exec_wait.
fn tty(driver: &str) {
    let d = TempDir::new("ittty");
    let id = running(&d, driver);
    let before = open_fds();
    let r = exec(json!({"task_id": id, "command": "/bin/sh", "args": ["-i"],
        "tty": true, "rows": 24, "cols": 80}))
    .unwrap();
    let exec_id = r["exec_id"].as_str().unwrap().to_string();
    let mut m = take(&r, "tty_fd");
    m.write_all(b"tty; stty size; id -u; echo do\"ne\"1\n")
        .unwrap();
    let s = read_until(&mut m, &["done1"]);
    assert!(s.contains("/dev/pts/"), "{s}");
    assert!(s.contains("24 80"), "{s}");
    if driver == "exec" {
        assert!(s.contains("\n65534"), "not the task's user: {s}");
    }
    resize(&exec_id, 30, 100).unwrap();
    m.write_all(b"stty size; echo do\"ne\"2\n").unwrap();
    let s = read_until(&mut m, &["done2"]);
    assert!(s.contains("30 100"), "{s}");
    assert_eq!(
        exec_wait(&exec_id, 0).unwrap_err().code,
        execdriver::Code::Timeout
    );
    m.write_all(b"exit 3\n").unwrap();
    read_to_end(&mut m);
    let w = exec_wait(&exec_id, 20_000).unwrap();
    assert_eq!(w["exit_code"], 3, "{w}");
    assert_eq!(
        resize(&exec_id, 10, 10).unwrap_err().code,
        execdriver::Code::TaskNotFound
    );
    drop(m);
    assert_eq!(open_fds(), before, "fds leaked");

    // The caller closing the master hangs the terminal up: the shell gets SIGHUP.
    let r = exec(json!({"task_id": id, "command": "/bin/sh", "tty": true})).unwrap();
    drop(take(&r, "tty_fd"));
    let w = exec_wait(r["exec_id"].as_str().unwrap(), 20_000).unwrap();
    assert_eq!(w["signal"], libc::SIGHUP, "{w}");

    // Destroying the task ends its sessions: the command is killed.
    let r = exec(json!({"task_id": id, "command": "/bin/sleep", "args": ["600"], "tty": true}))
        .unwrap();
    let mut m = take(&r, "tty_fd");
    destroy(&id);
    read_to_end(&mut m);
    assert_eq!(
        exec_wait(r["exec_id"].as_str().unwrap(), 0)
            .unwrap_err()
            .code,
        execdriver::Code::TaskNotFound
    );
}

#[test]
fn tty_raw_exec() {
    let _g = serial();
    tty("raw_exec");
}

#[test]
fn tty_exec() {
    let _g = serial();
    if exec_available() {
        tty("exec");
    }
}

#[test]
fn bad_requests() {
    let _g = serial();
    let d = TempDir::new("itbad");
    let id = running(&d, "raw_exec");
    let e = exec(json!({"task_id": id, "command": "true", "rows": 10, "cols": 10})).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (execdriver::Code::InvalidRequest, Some("rows"))
    );
    let e = exec(json!({"task_id": id, "command": "true", "tty": true, "rows": 10})).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (execdriver::Code::InvalidRequest, Some("cols"))
    );
    let e = exec(json!({"task_id": id, "command": "/nonexistent", "tty": true})).unwrap_err();
    assert_eq!(e.code, execdriver::Code::CommandNotFound, "{e}");
    let r = exec(json!({"task_id": id, "command": "true", "stream": true})).unwrap();
    let e = resize(r["exec_id"].as_str().unwrap(), 10, 10).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (execdriver::Code::InvalidRequest, Some("exec_id"))
    );
    drop((take(&r, "stdout_fd"), take(&r, "stderr_fd")));
    let w = exec_wait(r["exec_id"].as_str().unwrap(), -1).unwrap();
    assert_eq!(w["exit_code"], 0);
    let e = exec_wait("exec-nope", 0).unwrap_err();
    assert_eq!(e.code, execdriver::Code::TaskNotFound);
    destroy(&id);
}
