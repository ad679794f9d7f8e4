//! Shared helpers of the integration tests: a unique temp dir per test, the supervisor
//! path, and calls into the driver's Rust API.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static N: AtomicU32 = AtomicU32::new(0);

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "execdriver-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Points the library at the freshly built supervisor (once per test process).
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: set once before any test thread reads the environment through us.
        unsafe { std::env::set_var("EXECDRIVER_SHIM", env!("CARGO_BIN_EXE_execdriver-shim")) };
        // Each test process has its own; those of processes that have ended go now
        // (a process cannot remove its own at exit).
        sweep_data_dirs();
        let data =
            std::env::temp_dir().join(format!("execdriver-test-data-{}", std::process::id()));
        unsafe { std::env::set_var("EXECDRIVER_DATA_DIR", &data) };
    });
}

/// Whether exec isolation can be tried here (root and cgroups); says why not (a failure
/// in CI, which is root: see [`skip`]).
pub fn exec_available() -> bool {
    init();
    let f = execdriver::driver::fingerprint(None).unwrap();
    if f["attributes"]["driver.exec"] == "1" {
        return true;
    }
    skip(&format!(
        "exec unavailable here: {}",
        f["health_description"]
    ));
    false
}

/// Removes the data dirs of test processes that are gone.
fn sweep_data_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("execdriver-test-data-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this is a CI run: `CI` set and not empty (`.ci/run` and, inside the cgroup v2
/// VM, `tests/vm/inside.sh` set `CI=1`).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The test cannot run here for want of something CI has (root, usable cgroups, exec, a
/// tool `.ci/run` installs), named by `reason`: under CI that fails the test (panics with
/// "required in CI: {reason}"); elsewhere it prints `SKIP: {reason}` and the caller
/// returns. What depends on the kind of host (hybrid or pure cgroup2, which v1 hierarchies
/// are mounted) is not for this: the same suites run on a pure cgroup2 VM with `CI=1`, so
/// those print `SKIP: ...` and return everywhere.
#[track_caller]
pub fn skip(reason: &str) {
    if in_ci() {
        panic!("required in CI: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// A committed generated file (`rel` below the crate) must be `now`, else the test fails
/// with the command that regenerates it: `cargo test --test {test}` with `{var}=1` set,
/// which rewrites the file instead.
pub fn committed_is_up_to_date(rel: &str, now: &str, var: &str, test: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if std::env::var_os(var).is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, now).unwrap();
        eprintln!("rewrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != now {
        let first = committed
            .lines()
            .zip(now.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(now.lines().count()));
        panic!(
            "{rel} is stale (first difference at line {}).\n\
             Regenerate it with:  {var}=1 cargo test --test {test}\n\
             and commit the result.",
            first + 1
        );
    }
}

/// Calls a driver operation with a JSON value; Ok(response) or Err(error object).
pub fn op(
    f: fn(Option<&str>) -> execdriver::Result<Value>,
    req: Value,
) -> Result<Value, execdriver::Error> {
    init();
    f(Some(&req.to_string()))
}

pub fn start(req: Value) -> Result<Value, execdriver::Error> {
    op(execdriver::driver::start, req)
}

pub fn wait(id: &str, timeout_ms: i64) -> Result<Value, execdriver::Error> {
    op(
        execdriver::driver::wait,
        json!({"task_id": id, "timeout_ms": timeout_ms}),
    )
}

pub fn destroy(id: &str) {
    let _ = op(
        execdriver::driver::destroy,
        json!({"task_id": id, "force": true}),
    );
}

/// A raw_exec task running `sh -c script` in a fresh alloc dir.
pub fn raw_task(name: &str, alloc: &Path, script: &str) -> Value {
    json!({"name": name, "driver": "raw_exec", "alloc_dir": alloc, "config": {"command": "/bin/sh", "args": ["-c", script]}})
}

/// Everything the task wrote to stdout so far.
pub fn stdout_of(alloc: &Path, name: &str) -> String {
    std::fs::read_to_string(alloc.join(format!("alloc/logs/{name}.stdout.0"))).unwrap_or_default()
}

/// Runs a task to completion and returns (wait object, stdout).
pub fn run(req: Value) -> (Value, String) {
    let name = req["name"].as_str().unwrap().to_string();
    let alloc = PathBuf::from(req["alloc_dir"].as_str().unwrap());
    let r = start(req).unwrap_or_else(|e| panic!("start failed: {e}"));
    let id = r["task_id"].as_str().unwrap().to_string();
    let w = wait(&id, 60_000).unwrap();
    destroy(&id);
    (w, stdout_of(&alloc, &name))
}

/// Pids of live processes whose command line contains `needle`.
pub fn pids_matching(needle: &str) -> Vec<i32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
        {
            continue;
        }
        if String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

/// Waits (up to 20 s) until the task's stdout contains `needle`: the task tells us it is
/// ready (a trap installed, a child started) through its log.
pub fn wait_for_output(alloc: &Path, name: &str, needle: &str) {
    let t0 = std::time::Instant::now();
    while !stdout_of(alloc, name).contains(needle) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "task never printed {needle:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The freshly built cdylib: `cargo test` rebuilds `target/<profile>/deps/libexecdriver.so`
/// but only `cargo build` copies it up to `target/<profile>/`, so take the newer of the two.
pub fn built_lib() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_execdriver-shim"))
        .parent()
        .unwrap();
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let up = dir.join("libexecdriver.so");
    let deps = dir.join("deps/libexecdriver.so");
    match (mtime(&up), mtime(&deps)) {
        (Some(a), Some(b)) if b > a => deps,
        (None, Some(_)) => deps,
        _ => up,
    }
}

/// Runs `python3 -m unittest discover -s <suite> -v` from the repository root against the
/// freshly built library and supervisor, with its own data dir (and `PYTHONPATH`, when
/// given). `None` when python3 is not installed (the caller skips, saying so).
pub fn python_unittest(suite: &str, pythonpath: Option<&Path>) -> Option<std::process::Output> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        return None;
    }
    let data = TempDir::new("python");
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-m", "unittest", "discover", "-s", suite, "-v"])
        .current_dir(root)
        .env("EXECDRIVER_LIB", built_lib())
        .env("EXECDRIVER_SHIM", env!("CARGO_BIN_EXE_execdriver-shim"))
        .env("EXECDRIVER_DATA_DIR", data.path())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if let Some(p) = pythonpath {
        cmd.env("PYTHONPATH", p);
    }
    Some(cmd.output().expect("python3 runs"))
}
