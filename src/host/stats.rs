//! `driver_stats`: resource usage of a task's processes only.

use serde_json::{Value, json};

/// Usage from the task's cgroups when it has them, else summed over the supervisor's
/// descendants in /proc (raw_exec without root).
pub fn collect(cgroup: Option<&crate::cgroup::TaskCgroup>, supervisor: Option<i32>) -> Value {
    if let Some(cg) = cgroup {
        return cg.stats();
    }
    let pids = supervisor.map(descendants).unwrap_or_default();
    let tick_ns = 1_000_000_000u64 / crate::sys::process::clock_ticks();
    let page = crate::sys::process::page_size();
    let (mut rss, mut user, mut sys) = (0u64, 0u64, 0u64);
    for pid in &pids {
        if let Ok(statm) = std::fs::read_to_string(format!("/proc/{pid}/statm")) {
            rss += statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * page;
        }
        if let Some(f) = stat_fields(*pid) {
            user += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * tick_ns;
            sys += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * tick_ns;
        }
    }
    json!({
        "timestamp_ns": now_ns(),
        "memory": {"rss_bytes": rss, "cache_bytes": 0, "swap_bytes": 0, "usage_bytes": rss, "max_usage_bytes": 0},
        "cpu": {"user_ns": user, "system_ns": sys, "total_ns": user + sys, "throttled_periods": 0, "throttled_ns": 0},
        "pids": {"current": pids.len()},
    })
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Fields of /proc/<pid>/stat after the command name (index 0 is the state).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        s[s.rfind(')')? + 2..]
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// Every descendant of `root` (not `root` itself).
fn descendants(root: i32) -> Vec<i32> {
    let mut out = vec![];
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}
