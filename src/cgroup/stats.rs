//! `driver_stats` from a task's cgroup files (plain reads, no Layout needed).
//!
//! | field | v1 | v2 |
//! |---|---|---|
//! | memory.rss_bytes | memory.stat `total_rss` (else `rss`) | memory.stat `anon` |
//! | memory.cache_bytes | memory.stat `total_cache` (else `cache`) | memory.stat `file` |
//! | memory.swap_bytes | memory.stat `total_swap` (else `swap`) | memory.swap.current |
//! | memory.usage_bytes | memory.usage_in_bytes | memory.current |
//! | memory.max_usage_bytes | memory.max_usage_in_bytes | memory.peak (kernel ≥ 5.19) |
//! | cpu.user_ns/system_ns/total_ns | cpuacct.usage_user/usage_sys/usage (else cpuacct.stat ticks) | cpu.stat `user_usec`/`system_usec`/`usage_usec` × 1000 |
//! | cpu.throttled_periods/ns | cpu.stat `nr_throttled`/`throttled_time` | cpu.stat `nr_throttled`/`throttled_usec` × 1000 |
//! | pids.current | pids.current | pids.current |
//!
//! On hybrid, memory/cpu/pids come from v1; cpu falls back to the unified cgroup's
//! `cpu.stat` (present without controllers) when cpuacct is not mounted. Missing files
//! read as 0; pids.current falls back to counting `cgroup.procs`.

use super::{TaskCgroup, read};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The value of `key` in a flat-keyed file (`key value` per line).
pub(super) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        if it.next()? == key {
            it.next()?.parse().ok()
        } else {
            None
        }
    })
}

fn read_u64(p: &Path) -> Option<u64> {
    read(p)?.trim().parse().ok()
}

/// v1 `memory.oom_control`: `oom_kill N` (kernel ≥ 4.13), else `under_oom 1`.
pub(super) fn v1_oom_killed(oom_control: &str) -> bool {
    match keyed(oom_control, "oom_kill") {
        Some(n) => n > 0,
        None => keyed(oom_control, "under_oom").is_some_and(|n| n > 0),
    }
}

/// v2 `memory.events`: `oom_kill N`.
pub(super) fn v2_oom_killed(events: &str) -> bool {
    keyed(events, "oom_kill").is_some_and(|n| n > 0)
}

/// Each counter: `None` when its source is missing (reported as 0 and left out of the
/// group's `measured` list, so that "not measured" differs from 0).
#[derive(Default)]
struct Mem {
    rss: Option<u64>,
    cache: Option<u64>,
    swap: Option<u64>,
    usage: Option<u64>,
    max: Option<u64>,
}

#[derive(Default)]
struct Cpu {
    user: Option<u64>,
    system: Option<u64>,
    total: Option<u64>,
    throttled_periods: Option<u64>,
    throttled_ns: Option<u64>,
}

/// A group of counters as JSON: each by name (0 when not measured), and `measured`, the
/// names of those that are.
pub(crate) fn group(counters: &[(&str, Option<u64>)]) -> Value {
    let mut g = serde_json::Map::new();
    for (name, v) in counters {
        g.insert((*name).into(), json!(v.unwrap_or(0)));
    }
    let measured: Vec<&str> = counters
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| *n)
        .collect();
    g.insert("measured".into(), json!(measured));
    Value::Object(g)
}

pub(super) fn collect(t: &TaskCgroup) -> Value {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let v2 = t.v2.as_deref();
    let v2c = if t.v2_controllers { v2 } else { None };

    let mut m = Mem::default();
    if let Some(d) = t.v1.get("memory") {
        let st = read(&d.join("memory.stat")).unwrap_or_default();
        let pick = |k: &str| keyed(&st, &format!("total_{k}")).or_else(|| keyed(&st, k));
        m.rss = pick("rss");
        m.cache = pick("cache");
        m.swap = pick("swap");
        m.usage = read_u64(&d.join("memory.usage_in_bytes"));
        m.max = read_u64(&d.join("memory.max_usage_in_bytes"));
    } else if let Some(d) = v2c {
        let st = read(&d.join("memory.stat")).unwrap_or_default();
        m.rss = keyed(&st, "anon");
        m.cache = keyed(&st, "file");
        m.swap = read_u64(&d.join("memory.swap.current"));
        m.usage = read_u64(&d.join("memory.current"));
        m.max = read_u64(&d.join("memory.peak"));
    }

    let mut c = Cpu::default();
    let v1_acct =
        t.v1.get("cpuacct")
            .filter(|d| d.join("cpuacct.usage").exists());
    if let Some(d) = v1_acct {
        c.total = read_u64(&d.join("cpuacct.usage"));
        match (
            read_u64(&d.join("cpuacct.usage_user")),
            read_u64(&d.join("cpuacct.usage_sys")),
        ) {
            (Some(u), Some(s)) => {
                c.user = Some(u);
                c.system = Some(s);
            }
            _ => {
                let st = read(&d.join("cpuacct.stat")).unwrap_or_default();
                let ns = 1_000_000_000 / crate::sys::process::clock_ticks();
                c.user = keyed(&st, "user").map(|v| v * ns);
                c.system = keyed(&st, "system").map(|v| v * ns);
            }
        }
    } else if let Some(d) = v2 {
        let st = read(&d.join("cpu.stat")).unwrap_or_default();
        c.total = keyed(&st, "usage_usec").map(|v| v * 1000);
        c.user = keyed(&st, "user_usec").map(|v| v * 1000);
        c.system = keyed(&st, "system_usec").map(|v| v * 1000);
    }
    if let Some(d) = t.v1.get("cpu") {
        let st = read(&d.join("cpu.stat")).unwrap_or_default();
        c.throttled_periods = keyed(&st, "nr_throttled");
        c.throttled_ns = keyed(&st, "throttled_time");
    } else if let Some(d) = v2c {
        let st = read(&d.join("cpu.stat")).unwrap_or_default();
        c.throttled_periods = keyed(&st, "nr_throttled");
        c.throttled_ns = keyed(&st, "throttled_usec").map(|v| v * 1000);
    }

    let pids_dir = t.v1.get("pids").map(|p| p.as_path()).or(v2c);
    let pids = pids_dir
        .and_then(|d| read_u64(&d.join("pids.current")))
        .unwrap_or_else(|| t.pids().len() as u64);

    json!({
        "timestamp_ns": ts,
        "memory": group(&[("rss_bytes", m.rss), ("cache_bytes", m.cache), ("swap_bytes", m.swap),
                          ("usage_bytes", m.usage), ("max_usage_bytes", m.max)]),
        "cpu": group(&[("user_ns", c.user), ("system_ns", c.system), ("total_ns", c.total),
                       ("throttled_periods", c.throttled_periods), ("throttled_ns", c.throttled_ns)]),
        "pids": group(&[("current", Some(pids))]),
    })
}
