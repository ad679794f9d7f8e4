//! The shim's entry: every child it makes with fork semantics runs ordinary Rust, which
//! is sound only in a single-threaded process, so it refuses to start with a second
//! thread. A library preloaded into it (`LD_PRELOAD`) starts one before `main`.

mod common;
use common::*;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

/// A shared object whose constructor starts a thread that idles for ever.
const THREAD_SO: &str = r#"
#include <pthread.h>
#include <unistd.h>
static void *idle(void *arg) { (void)arg; for (;;) pause(); return 0; }
__attribute__((constructor)) static void start_thread(void) {
    pthread_t t;
    pthread_create(&t, 0, idle, 0);
}
"#;

/// Runs the shim with `args` (and `preload`), its exit code and stderr; killed if it
/// does not exit within 10 s.
fn run_shim(args: &[&str], preload: Option<&std::path::Path>) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_execdriver-shim"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = preload {
        cmd.env("LD_PRELOAD", p);
    }
    let mut child = cmd.spawn().unwrap();
    let pidfd = execdriver::sys::pidfd_open(child.id() as i32).unwrap();
    if !execdriver::sys::poll_readable(pidfd.as_raw_fd(), 10_000).unwrap() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

#[test]
fn the_shim_refuses_to_start_with_a_second_thread() {
    let dir = TempDir::new("shim-thread");
    let src = dir.path().join("thread.c");
    let so = dir.path().join("thread.so");
    std::fs::write(&src, THREAD_SO).unwrap();
    let built = Command::new("gcc")
        .args(["-shared", "-fPIC", "-pthread", "-o"])
        .arg(&so)
        .arg(&src)
        .status();
    if !built.is_ok_and(|s| s.success()) {
        skip("gcc, to build a preloaded library");
        return;
    }
    // Arguments no mode takes: with one thread the shim gets to them and says so.
    let args = ["--no-such-mode"];
    let (code, err) = run_shim(&args, None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("usage"), "{err}");
    // With a second thread it stops before anything else.
    let (code, err) = run_shim(&args, Some(&so));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("started with more than one thread"), "{err}");
    assert!(!err.contains("usage"), "{err}");
}
