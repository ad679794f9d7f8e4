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
    use crate::cgroup::stats::group;
    json!({
        "timestamp_ns": now_ns(),
        "memory": group(&[("rss_bytes", Some(rss)), ("cache_bytes", None), ("swap_bytes", None),
                          ("usage_bytes", Some(rss)), ("max_usage_bytes", None)]),
        "cpu": group(&[("user_ns", Some(user)), ("system_ns", Some(sys)), ("total_ns", Some(user + sys)),
                       ("throttled_periods", None), ("throttled_ns", None)]),
        "pids": group(&[("current", Some(pids.len() as u64))]),
    })
}

/// CPU counters at one moment (ns).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub at_ns: u64,
    pub user: u64,
    pub system: u64,
    pub total: u64,
}

impl Sample {
    /// A task's counters when it starts.
    pub fn at_start() -> Sample {
        Sample {
            at_ns: now_ns(),
            user: 0,
            system: 0,
            total: 0,
        }
    }

    /// The counters of a `driver_stats` response, if its CPU time was measured.
    fn of(stats: &Value) -> Option<Sample> {
        let cpu = &stats["cpu"];
        let measured = |k: &str| cpu["measured"].as_array()?.iter().any(|m| m == k).then_some(());
        measured("total_ns")?;
        let n = |k: &str| cpu[k].as_u64().unwrap_or(0);
        Some(Sample {
            at_ns: stats["timestamp_ns"].as_u64()?,
            user: n("user_ns"),
            system: n("system_ns"),
            total: n("total_ns"),
        })
    }
}

/// Adds to `stats` (a [`collect`] response) the CPU use since `prev` as Nomad reports it:
/// `percent` (of one core: 250 is two and a half cores), `user_percent`,
/// `system_percent`, and `total_ticks` (the percent of one core's clock, in MHz: what
/// Nomad's `cpu` resource counts). Each is listed in `cpu.measured` only when computed
/// (a measured CPU time, a previous sample). Returns the sample to keep for the next call:
/// this one, unless `prev` is less than [`MIN_WINDOW_NS`] old, when the next call measures
/// from `prev` again.
///
/// The kernel charges a running process's CPU time in steps (at ticks and switches, a few
/// ms at once), so a rate over a window of a fraction of a ms can read ten cores' worth:
/// windows are at least [`MIN_WINDOW_NS`] long where the calls allow, and no rate exceeds
/// what the host's online CPUs can give.
pub fn rates(stats: &mut Value, prev: Option<Sample>) -> Option<Sample> {
    let now = Sample::of(stats);
    let cap = 100.0 * crate::sys::process::online_cpus() as f64;
    let pct =
        |a: u64, b: u64, dt: u64| (a.saturating_sub(b) as f64 * 100.0 / dt as f64).min(cap);
    let computed = match (now, prev) {
        (Some(n), Some(p)) if n.at_ns > p.at_ns => {
            let dt = n.at_ns - p.at_ns;
            Some((
                pct(n.total, p.total, dt),
                pct(n.user, p.user, dt),
                pct(n.system, p.system, dt),
            ))
        }
        _ => None,
    };
    let cpu = &mut stats["cpu"];
    let (total, user, system) = computed.unwrap_or_default();
    let ticks = core_mhz().map(|mhz| total / 100.0 * mhz);
    cpu["percent"] = json!(total);
    cpu["user_percent"] = json!(user);
    cpu["system_percent"] = json!(system);
    cpu["total_ticks"] = json!(ticks.filter(|_| computed.is_some()).unwrap_or(0.0));
    if let Some(m) = cpu["measured"].as_array_mut()
        && computed.is_some()
    {
        m.extend(["percent", "user_percent", "system_percent"].map(Value::from));
        if ticks.is_some() {
            m.push("total_ticks".into());
        }
    }
    match (now, prev) {
        (Some(n), Some(p)) if n.at_ns.saturating_sub(p.at_ns) < MIN_WINDOW_NS => Some(p),
        _ => now.or(prev),
    }
}

/// The shortest window the next call's rates are measured over, when calls come faster.
pub const MIN_WINDOW_NS: u64 = 100_000_000;

/// One core's clock in MHz, as Nomad counts CPU: its maximum frequency (cpufreq), else
/// what `/proc/cpuinfo` says; `None` when neither tells.
fn core_mhz() -> Option<f64> {
    static MHZ: once_cell::sync::Lazy<Option<f64>> = once_cell::sync::Lazy::new(|| {
        let max_khz = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok());
        if let Some(khz) = max_khz.filter(|k| *k > 0.0) {
            return Some(khz / 1000.0);
        }
        let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        let mhz: Vec<f64> = info
            .lines()
            .filter(|l| l.starts_with("cpu MHz"))
            .filter_map(|l| l.split(':').nth(1)?.trim().parse().ok())
            .collect();
        (!mhz.is_empty()).then(|| mhz.iter().sum::<f64>() / mhz.len() as f64)
    });
    *MHZ
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Fields of `/proc/<pid>/stat` after the command name (index 0 is the state).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_at(at_ns: u64, total_ms: u64) -> Value {
        json!({"timestamp_ns": at_ns, "cpu": {"measured": ["user_ns", "system_ns", "total_ns"],
               "user_ns": total_ms * 1_000_000, "system_ns": 0, "total_ns": total_ms * 1_000_000}})
    }

    #[test]
    fn rates_need_a_window_and_stay_within_the_hosts_cpus() {
        let start = Sample { at_ns: 1_000_000_000, user: 0, system: 0, total: 0 };
        // 250 ms of CPU in 500 ms: half a core.
        let mut s = stats_at(1_500_000_000, 250);
        let kept = rates(&mut s, Some(start)).unwrap();
        assert_eq!(s["cpu"]["percent"], 50.0);
        assert_eq!(kept.at_ns, 1_500_000_000);
        // 4 ms charged at once, 0.4 ms later: not a rate of its own (the base stays), and
        // never more than the CPUs there are.
        let mut s = stats_at(1_500_400_000, 254);
        let kept2 = rates(&mut s, Some(kept)).unwrap();
        assert_eq!(kept2, kept);
        let cap = 100.0 * crate::sys::process::online_cpus() as f64;
        assert!(s["cpu"]["percent"].as_f64().unwrap() <= cap, "{s}");
        // The next call, past the window, measures from the kept base.
        let mut s = stats_at(1_700_000_000, 256);
        assert_eq!(rates(&mut s, Some(kept2)).unwrap().at_ns, 1_700_000_000);
        assert!((s["cpu"]["percent"].as_f64().unwrap() - 3.0).abs() < 1e-9, "{s}");
    }
}
