//! A child host for fault tests: this test binary again, running `fault_child_host`,
//! which a test kills at a chosen point of a start; and the checks that nothing of the
//! start is left.
#![allow(dead_code)]

use crate::common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The child host (call it from a test named `fault_child_host`): configures with
/// `$FAULT_CONFIG` (which runs the configure sweep), then
/// - with `$FAULT_RECOVER` (a handle): recovers it, waits for the task, destroys it and
///   prints `WAIT <wait object>` or `ERROR <error>`, and exits;
/// - with `$FAULT_TASK`: starts it (after a warm-up task that leaves a spare, with
///   `$FAULT_WARM`; with `$FAULT_PAUSE=<var>=<file>`, the start's pause point set for it
///   alone), prints `HANDLE <handle>` or `ERROR <error>`, then waits to be killed;
/// - else prints `CONFIGURED` and exits.
///
/// Returns at once in the parent test process.
pub fn child_host_main() {
    let Ok(cfg) = std::env::var("FAULT_CONFIG") else {
        return;
    };
    init();
    let cfg: Value = serde_json::from_str(&cfg).unwrap();
    if let Err(e) = op(execdriver::driver::configure, cfg) {
        println!("ERROR {e}");
        return;
    }
    if let Ok(handle) = std::env::var("FAULT_RECOVER") {
        let handle: Value = serde_json::from_str(&handle).unwrap();
        let r = op(execdriver::driver::recover, json!({"handle": handle}))
            .and_then(|_| wait(handle["task_id"].as_str().unwrap(), 60_000));
        match r {
            Ok(w) => {
                destroy(handle["task_id"].as_str().unwrap());
                println!("WAIT {w}");
            }
            Err(e) => println!("ERROR {e}"),
        }
        return;
    }
    let Ok(task) = std::env::var("FAULT_TASK") else {
        println!("CONFIGURED");
        return;
    };
    if std::env::var_os("FAULT_WARM").is_some() {
        let mut warm: Value = serde_json::from_str(&task).unwrap();
        warm["id"] = json!(format!("{}-warm", warm["id"].as_str().unwrap()));
        warm["name"] = json!("warm");
        warm.as_object_mut().unwrap().remove("artifacts");
        warm["config"] = json!({"command": "/bin/true"});
        let id = start(warm).unwrap()["task_id"]
            .as_str()
            .unwrap()
            .to_string();
        wait(&id, 30_000).unwrap();
        execdriver::host::pool::settle();
        destroy(&id);
        execdriver::host::pool::settle();
    }
    if let Some((var, file)) = std::env::var("FAULT_PAUSE")
        .ok()
        .as_deref()
        .and_then(|p| p.split_once('='))
    {
        // SAFETY: no other thread of this host reads the environment now: the warm-up's
        // spare is started (settled) and nothing else runs.
        unsafe { std::env::set_var(var, file) };
    }
    match start(serde_json::from_str(&task).unwrap()) {
        Ok(r) => println!("HANDLE {}", r["handle"]),
        Err(e) => println!("ERROR {e}"),
    }
    loop {
        std::thread::park();
    }
}

/// The child host's command with this process's data dir (so that a handle it prints is
/// ours to recover, and what it sweeps is ours).
fn child_command(prestart: bool) -> Command {
    init();
    let data = execdriver::host::plugin::data_dir(&execdriver::host::plugin::current());
    let cfg = json!({"data_dir": data, "prestart_supervisor": prestart});
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "fault_child_host",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("FAULT_CONFIG", cfg.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    cmd
}

/// Runs a child host to its end with `env` (see [`child_host_main`]) and returns the line
/// it printed after `tag` (`WAIT `, `CONFIGURED`), failing on `ERROR `.
pub fn child_host_says(env: &[(&str, String)], tag: &str) -> String {
    let mut cmd = child_command(false);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines() {
        assert!(!l.contains("ERROR "), "{l}");
        if let Some((_, rest)) = l.split_once(tag) {
            return rest.to_string();
        }
    }
    panic!("the child host did not say {tag:?}: {text}");
}

/// A new host process that configures (the sweep, on a data dir that may be full),
/// recovers `handle`, waits for its task and destroys it: the wait object.
pub fn recovered_in_a_new_host(handle: &Value) -> Value {
    let w = child_host_says(&[("FAULT_RECOVER", handle.to_string())], "WAIT ");
    serde_json::from_str(&w).unwrap()
}

pub struct Host {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Host {
    /// Starts the child host with this process's data dir (so that a handle it prints is
    /// ours to recover).
    pub fn start(task: &Value, prestart: bool, env: &[(&str, String)]) -> Host {
        let mut cmd = child_command(prestart);
        cmd.env("FAULT_TASK", task.to_string());
        if prestart {
            cmd.env("FAULT_WARM", "1");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Host { child, lines }
    }

    /// The handle the child host printed.
    pub fn handle(&self) -> Value {
        let t0 = Instant::now();
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .expect("the child host printed no handle");
            if let Some(h) = l.split_once("HANDLE ").map(|(_, h)| h) {
                return serde_json::from_str(h).unwrap();
            }
            assert!(!l.contains("ERROR "), "{l}");
            assert!(t0.elapsed().as_secs() < 30);
        }
    }

    /// Every process below the child host (its supervisors, their commands), then SIGKILL
    /// of the host alone, as a crash takes it.
    pub fn kill(mut self) -> Vec<i32> {
        let below = descendants(self.child.id() as i32);
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        below
    }
}

/// The processes below `pid`: the children of each of its threads (a child is listed
/// under the thread that made it), theirs, and so on.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = vec![];
    let kids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    for k in kids {
        out.push(k);
        out.extend(descendants(k));
    }
    out
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(") ").next().unwrap_or("").starts_with('Z'))
}

pub fn until(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The task's cgroup directories that exist (in every hierarchy, under the default
/// parent).
pub fn cgroups_of(id: &str) -> Vec<PathBuf> {
    let Ok(l) = execdriver::cgroup::detect() else {
        return vec![];
    };
    l.mounts()
        .iter()
        .map(|m| m.join("execdriver").join(id))
        .filter(|d| d.exists())
        .collect()
}

/// Spare placeholder cgroups (`spare-*`) under the default parent that no standby is in:
/// a live spare's has its standby in it (but for a moment while it is made).
pub fn placeholders() -> Vec<PathBuf> {
    let Ok(l) = execdriver::cgroup::detect() else {
        return vec![];
    };
    l.mounts()
        .iter()
        .flat_map(|m| {
            std::fs::read_dir(m.join("execdriver"))
                .into_iter()
                .flatten()
        })
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("spare-"))
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("cgroup.procs")).is_ok_and(|s| s.trim().is_empty())
        })
        .collect()
}

pub fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .map(str::to_string)
        .collect()
}

/// The data dir of this process (and of its child hosts).
pub fn data_dir() -> PathBuf {
    init();
    execdriver::host::plugin::data_dir(&execdriver::host::plugin::current())
}

/// The claims in the data dir that task `id` holds.
pub fn claims_of(id: &str) -> Vec<PathBuf> {
    std::fs::read_dir(data_dir().join("claims"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| execdriver::proto::spec::read_claim(p).is_some_and(|(o, _)| o == id))
        .collect()
}

/// The fetches' staging dirs in the task dirs of `alloc`.
pub fn staging_in(alloc: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(alloc)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|t| std::fs::read_dir(t.path()).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".fetch-"))
        .map(|e| e.path())
        .collect()
}

/// After the host's death: its processes end, and nothing of the start is left: no
/// process, cgroup (nor a spare's placeholder), mount, state dir, claim or staging dir.
pub fn assert_nothing_left(id: &str, below: &[i32], alloc: &Path, before_placeholders: &[PathBuf]) {
    until("a process of the dead host's start lives on", || {
        below.iter().all(|p| !alive(*p))
    });
    until("the start's cgroups are left", || cgroups_of(id).is_empty());
    until("a spare's placeholder cgroup is left", || {
        placeholders()
            .iter()
            .all(|p| before_placeholders.contains(p))
    });
    assert!(mounts_under(alloc).is_empty(), "{:?}", mounts_under(alloc));
    // Removed by the start's supervisor before it exited (not left to a sweep).
    let state = data_dir().join("tasks").join(id);
    assert!(
        !state.exists(),
        "the start's state dir {} is left: {:?}",
        state.display(),
        std::fs::read_dir(&state).map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    assert!(
        claims_of(id).is_empty(),
        "{id}: the start's claim is left: {:?}",
        claims_of(id)
            .iter()
            .map(|c| std::fs::read_to_string(c).unwrap_or_default())
            .collect::<Vec<_>>()
    );
    assert!(staging_in(alloc).is_empty(), "{:?}", staging_in(alloc));
}

pub fn exec_here() -> bool {
    init();
    execdriver::driver::fingerprint(None).unwrap()["attributes"]["driver.exec"] == "1"
}

pub fn drivers() -> Vec<&'static str> {
    if exec_here() {
        vec!["exec", "raw_exec"]
    } else {
        skip("exec part: exec unavailable here");
        vec!["raw_exec"]
    }
}
