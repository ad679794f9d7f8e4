//! Median cost of one `driver_stats` call on a running task (issue 5: a host's sampling
//! loop must be cheap). Run: `cargo run --release --example stats_bench [N]`.

mod common;
use serde_json::json;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = std::env::temp_dir().join(format!("execdriver-stats-bench-{}", std::process::id()));
    // SAFETY: set before any other thread exists.
    unsafe { std::env::set_var("EXECDRIVER_DATA_DIR", dir.join("data")) };
    common::use_build_shim();
    let driver = if unsafe { libc::geteuid() } == 0 {
        "exec"
    } else {
        "raw_exec"
    };
    let req = json!({"name": "s", "driver": driver, "alloc_dir": dir.join("alloc"), "config": {"command": "/bin/sleep", "args": ["600"]}});
    let r = execdriver::driver::start(Some(&req.to_string())).expect("start");
    let id = r["task_id"].as_str().unwrap().to_string();
    let sreq = json!({"task_id": id}).to_string();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = std::time::Instant::now();
        let s = execdriver::driver::stats(Some(&sreq)).expect("stats");
        times.push(t0.elapsed());
        std::hint::black_box(s);
    }
    times.sort();
    println!(
        "driver_stats ({driver} task, {n} calls): median {:?}, p90 {:?}",
        times[n / 2],
        times[n * 9 / 10]
    );
    let _ = execdriver::driver::destroy(Some(&json!({"task_id": id, "force": true}).to_string()));
    let _ = std::fs::remove_dir_all(&dir);
}
