//! Soak benchmark (not a test): N start/wait/destroy cycles in one host process, printing
//! what a leak would show, before and after: the host's fds, threads and RSS, zombie
//! children, mounts, cgroups under the driver's parent; and the cycle time at the start
//! and at the end (a slowdown is a leak too). Each idle spare supervisor holds 2 of the
//! host's fds (its pidfd and its channel); their number is printed beside.
//!
//! `cargo run --release --example soak [N] [exec|raw_exec|both]` (default 10000, both where
//! exec is available). Work files under `$BENCH_DIR` (default the system's temp dir).

mod common;
use serde_json::json;
use std::time::Instant;

fn count_dir(p: &str) -> usize {
    std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0)
}

fn status_field(k: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

fn zombies() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| {
            let rest = s.rsplit(") ").next().unwrap_or("");
            let mut f = rest.split(' ');
            f.next() == Some("Z") && f.next() == Some(me.as_str())
        })
        .count()
}

fn cgroups() -> usize {
    let Ok(l) = execdriver::cgroup::detect() else {
        return 0;
    };
    l.mounts()
        .iter()
        .map(|m| count_dir(m.join("execdriver").to_str().unwrap_or("")))
        .sum()
}

fn snapshot() -> String {
    format!(
        "fds {:>4} (spares {})  threads {:>3}  RSS {:>10}  zombies {}  mounts {:>4}  cgroup entries {:>4}",
        count_dir("/proc/self/fd"),
        execdriver::host::pool::spare_pids().len(),
        status_field("Threads:"),
        status_field("VmRSS:"),
        zombies(),
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|s| s.lines().count())
            .unwrap_or(0),
        cgroups()
    )
}

fn call(
    f: fn(Option<&str>) -> execdriver::Result<serde_json::Value>,
    v: serde_json::Value,
) -> serde_json::Value {
    f(Some(&v.to_string())).unwrap_or_else(|e| panic!("{e}"))
}

fn main() {
    common::use_build_shim();
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let exec_ok =
        execdriver::driver::fingerprint(None).unwrap()["attributes"]["driver.exec"] == "1";
    let drivers: Vec<&str> = match args.get(2).map(String::as_str) {
        Some("exec") => vec!["exec"],
        Some("raw_exec") => vec!["raw_exec"],
        _ if exec_ok => vec!["raw_exec", "exec"],
        _ => vec!["raw_exec"],
    };
    let base = std::env::var("BENCH_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().to_string_lossy().into_owned());
    let work = std::path::Path::new(&base).join(format!("execdriver-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    // SAFETY: set before any other thread of this program exists.
    unsafe { std::env::set_var("EXECDRIVER_DATA_DIR", work.join("data")) };
    for driver in drivers {
        // A first cycle, so that the spares and the fork server exist in both snapshots.
        let cycle = |i: usize| {
            let alloc = work.join(format!("a{}", i % 64));
            let r = call(
                execdriver::driver::start,
                json!({"name": "s", "driver": driver, "alloc_dir": alloc, "config": {"command": "/bin/true"}}),
            );
            let id = r["task_id"].as_str().unwrap().to_string();
            call(execdriver::driver::wait, json!({"task_id": id}));
            call(execdriver::driver::destroy, json!({"task_id": id}));
        };
        cycle(0);
        execdriver::host::pool::settle();
        let before = snapshot();
        let window = (n / 20).clamp(1, 500);
        let mut first = 0.0;
        let mut last = 0.0;
        let t0 = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            cycle(i);
            let us = t.elapsed().as_secs_f64() * 1e6;
            if i < window {
                first += us;
            }
            if i >= n - window {
                last += us;
            }
        }
        execdriver::host::pool::settle();
        let after = snapshot();
        println!(
            "{driver}: {n} cycles in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        println!("  before  {before}");
        println!("  after   {after}");
        println!(
            "  cycle time: first {window} {:.0} us, last {window} {:.0} us (mean)",
            first / window as f64,
            last / window as f64
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}
