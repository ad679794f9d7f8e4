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
    m.write_all(b"tty; stty size; id -u; echo term=$TERM; echo do\"ne\"1\n")
        .unwrap();
    let s = read_until(&mut m, &["done1"]);
    assert!(s.contains("term=xterm\r\n"), "TERM of a terminal: {s}");
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

    // The caller's terminal type.
    let r = exec(
        json!({"task_id": id, "command": "/bin/sh", "args": ["-c", "echo term=$TERM"],
        "tty": true, "term": "screen-256color"}),
    )
    .unwrap();
    let s = read_to_end(&mut take(&r, "tty_fd"));
    assert!(s.contains("term=screen-256color"), "{s}");
    exec_wait(r["exec_id"].as_str().unwrap(), 20_000).unwrap();

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
    for bad in [
        json!({"term": "xterm"}),
        json!({"tty": true, "term": "x term"}),
        json!({"tty": true, "term": ""}),
    ] {
        let mut req = json!({"task_id": id, "command": "true"});
        req.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let e = exec(req).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (execdriver::Code::InvalidRequest, Some("term"))
        );
    }
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

/// A tmux server of our own (its socket in a temp dir), killed on drop.
struct Tmux(std::path::PathBuf);

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.0)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// Polls the pane until `ok` holds of it (20 s at most).
    fn until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let p = self.pane();
            if ok(&p) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "the pane never showed {what}:\n{p}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The lines of `stty size` output in the pane ("ROWS COLS").
fn sizes(pane: &str) -> Vec<String> {
    pane.lines()
        .map(str::trim)
        .filter(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            w.len() == 2 && w.iter().all(|n| n.parse::<u16>().is_ok())
        })
        .map(String::from)
        .collect()
}

/// The `stty size` output on the line after the line `mark`.
fn size_after(pane: &str, mark: &str) -> Option<String> {
    let mut lines = pane.lines().map(str::trim).skip_while(|l| *l != mark);
    lines.next()?;
    sizes(lines.next()?).pop()
}

/// `harness exec -it HANDLE /bin/sh` in a real terminal (a tmux pane): typed keys reach
/// the shell, its output the pane, the pane's size is the shell's and follows a resize,
/// and the harness exits with the shell's exit code.
#[test]
fn harness_exec_it_in_tmux() {
    let _g = serial();
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        skip("tmux is not installed (test.sh installs it)");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let made = std::process::Command::new("make")
        .args(["-s", "-C"])
        .arg(root.join("examples-c"))
        .output()
        .expect("make runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let harness = root.join("examples-c/harness");
    let d = TempDir::new("ittmux");
    let driver = if exec_available() { "exec" } else { "raw_exec" };
    let job = d.path().join("job.json");
    std::fs::write(
        &job,
        json!({"name": "tm", "driver": driver, "alloc_dir": d.path().join("alloc"),
            "config": {"command": "/bin/sleep", "args": ["600"]}})
        .to_string(),
    )
    .unwrap();
    let (handle, rc) = (d.path().join("handle"), d.path().join("rc"));
    let env = [
        ("EXECDRIVER_LIB", built_lib()),
        (
            "EXECDRIVER_SHIM",
            env!("CARGO_BIN_EXE_execdriver-shim").into(),
        ),
        ("EXECDRIVER_DATA_DIR", d.path().join("data")),
    ];
    let harness_run = |args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(&harness)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "harness {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    harness_run(&["start".as_ref(), job.as_os_str(), handle.as_os_str()]);
    // Without a terminal: `-i` pipes stdin in and the output out, stdout and stderr apart.
    let mut child = std::process::Command::new(&harness)
        .args(["exec", "-i"])
        .arg(&handle)
        .args([
            "/bin/sh",
            "-c",
            "read l; echo got:$l; echo e:$l >&2; exit 5",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"x\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "got:x\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "e:x\n");
    let tmux = Tmux(d.path().join("tmux.sock"));
    let envs: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.display()))
        .collect();
    let shell = format!(
        "env {} '{}' exec -it '{}' /bin/sh; echo $? > '{}'",
        envs.join(" "),
        harness.display(),
        handle.display(),
        rc.display()
    );
    let o = tmux.cmd(&["new-session", "-d", "-x", "80", "-y", "24", &shell]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The shell's prompt: the session is up.
    tmux.until("a prompt", |p| {
        p.lines().any(|l| matches!(l.trim(), "$" | "#"))
    });
    tmux.cmd(&["send-keys", "echo hel\"\"lo; stty size", "Enter"]);
    tmux.until("hello and 24 80", |p| {
        p.lines().any(|l| l.trim() == "hello") && sizes(p).last().is_some_and(|s| s == "24 80")
    });
    // The pane's terminal type (tmux's `screen…` or `tmux…`) is the shell's.
    tmux.cmd(&["send-keys", "echo t\"\"=$TERM", "Enter"]);
    tmux.until("TERM of the pane", |p| {
        p.lines()
            .any(|l| l.trim().starts_with("t=screen") || l.trim().starts_with("t=tmux"))
    });
    // A resize reaches the shell through SIGWINCH, the harness, driver_exec_resize; each
    // `stty size` is read back before the next is typed.
    tmux.cmd(&["resize-window", "-x", "100", "-y", "30"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        // `m""k<i>` is typed, `mk<i>` printed: the size after it is this round's.
        let mark = format!("mk{i}");
        tmux.cmd(&["send-keys", &format!("echo m\"\"k{i}; stty size"), "Enter"]);
        let p = tmux.until(&mark, |p| size_after(p, &mark).is_some());
        if size_after(&p, &mark).as_deref() == Some("30 100") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the size never became 30 100:\n{p}"
        );
    }
    tmux.cmd(&["send-keys", "exit 3", "Enter"]);
    let t0 = Instant::now();
    let code = loop {
        if let Ok(c) = std::fs::read_to_string(&rc)
            && c.ends_with('\n')
        {
            break c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the harness never exited:\n{}",
            tmux.pane()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code.trim(), "3", "{}", tmux.pane());

    harness_run(&["-p".as_ref(), "destroy".as_ref(), handle.as_os_str()]);
}
