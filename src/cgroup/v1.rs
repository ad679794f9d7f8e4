//! cgroup v1: one directory per controller hierarchy, limits through cgroups-rs.

use super::{
    Limits, REQUIRED_CONTROLLERS, REQUIRED_V1_CONTROLLERS, TaskCgroup, V1_CONTROLLERS, cg_err,
    cpu_shares, isolation, make_task_dir, read,
};
use crate::{Code, Error, Result};
use cgroups_rs::MaxValue;
use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuset::CpuSetController;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Makes the task's directory in every mounted hierarchy of [`V1_CONTROLLERS`] but two
/// that only need one when the task asks for it: cpuset (`cores > 0`) and freezer
/// ([`Limits::freezer`]). In those the task joins `<parent>` instead
/// ([`TaskCgroup::shared`]). A cpuset directory, the task's or the parent, gets its
/// parent's cpus and mems (a v1 cpuset takes no task without them). Then applies `limits`.
pub(super) fn create(
    tcg: &mut TaskCgroup,
    controllers: &BTreeMap<String, PathBuf>,
    parent: &str,
    name: &str,
    limits: &Limits,
) -> Result<()> {
    for c in REQUIRED_CONTROLLERS.iter().chain(&REQUIRED_V1_CONTROLLERS) {
        if !controllers.contains_key(*c) {
            return Err(Error::new(
                Code::Isolation,
                format!("cgroup: create: the v1 {c} controller is not mounted"),
            ));
        }
    }
    if limits.cores > 0 && !controllers.contains_key("cpuset") {
        return Err(Error::new(
            Code::Isolation,
            "cgroup: create: cores requested but the v1 cpuset controller is not mounted",
        ));
    }
    let own = |c: &str| match c {
        "cpuset" => limits.cores > 0,
        "freezer" => limits.freezer,
        _ => true,
    };
    let mut mine = controllers.clone();
    mine.retain(|c, _| own(c));
    place(tcg, &mine, |tcg, mount| {
        make_task_dir(tcg, mount, parent, name)
    })?;
    for c in ["cpuset", "freezer"] {
        if let Some(mount) = controllers.get(c)
            && !own(c)
            && !tcg.v1.values().any(|d| d.starts_with(mount))
        {
            let dir = super::ensure_parent(mount, parent)?;
            if c == "cpuset" {
                init_cpuset(mount, parent, None)?;
            }
            if !tcg.shared.contains(&dir) {
                tcg.shared.push(dir);
            }
        }
    }
    if let Some(dir) = tcg.v1.get("cpuset").cloned() {
        init_cpuset(&controllers["cpuset"], parent, Some(&dir))?;
    }
    super::devices::v1_restrict(&dir_of(tcg, "devices")?)?;
    // No swapping, ever (a file that exists only with swap accounting).
    let swappiness = dir_of(tcg, "memory")?.join("memory.swappiness");
    write_if_present(&swappiness, "0")?;
    write_limits(tcg, limits, true)
}

/// Writes `value` to a control file that the kernel may not have (its controller option
/// off): absent, it is not an error.
fn write_if_present(file: &Path, value: &str) -> Result<()> {
    match super::write_existing(file, value) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(isolation("set", file, e)),
        _ => Ok(()),
    }
}

/// Fills `tcg.v1` with the task's directory for each mounted controller of
/// [`V1_CONTROLLERS`], asking `dir_in` for one directory per mount: co-mounted controllers
/// (e.g. cpu,cpuacct) share one directory.
pub(super) fn place(
    tcg: &mut TaskCgroup,
    controllers: &BTreeMap<String, PathBuf>,
    mut dir_in: impl FnMut(&mut TaskCgroup, &Path) -> Result<PathBuf>,
) -> Result<()> {
    let mut made: Vec<(PathBuf, PathBuf)> = Vec::new();
    for c in V1_CONTROLLERS {
        let Some(mount) = controllers.get(c) else {
            continue;
        };
        let dir = match made.iter().find(|(m, _)| m == mount) {
            Some((_, d)) => d.clone(),
            None => {
                let d = dir_in(tcg, mount)?;
                made.push((mount.clone(), d.clone()));
                d
            }
        };
        tcg.v1.insert(c.to_string(), dir);
    }
    Ok(())
}

/// The task's directory for controller `c`, which [`create`] always makes.
fn dir_of(tcg: &TaskCgroup, c: &str) -> Result<PathBuf> {
    tcg.v1.get(c).cloned().ok_or_else(|| {
        Error::new(
            Code::Isolation,
            format!("cgroup: apply limits: the task has no v1 {c} cgroup"),
        )
    })
}

/// Writes `limits` to the task's v1 directories: cores pinning, memory (swap off),
/// cpu shares, pids. A zero field writes nothing, leaving what the directory has (a new
/// one: no limit, the parent's cpus).
pub(super) fn apply_limits(tcg: &TaskCgroup, limits: &Limits) -> Result<()> {
    write_limits(tcg, limits, false)
}

/// [`apply_limits`]; `fresh`: the directories were just made, so a value equal to the
/// kernel's default (cpu shares 1024) needs no write.
fn write_limits(tcg: &TaskCgroup, limits: &Limits, fresh: bool) -> Result<()> {
    if limits.cores > 0 {
        let dir = tcg.v1.get("cpuset").ok_or_else(|| {
            Error::new(
                Code::Isolation,
                "cgroup: apply limits: cores requested but the task has no v1 cpuset cgroup",
            )
        })?;
        pin_cores(dir, limits.cores)?;
    }

    let dir = dir_of(tcg, "memory")?;
    let mem = MemController::new(dir.clone(), false);
    if limits.memory_bytes > 0 {
        let limit = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
        // memsw exists only with swap accounting; limit == memsw means no swap at all.
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        let set_memsw = || write_if_present(&memsw, &limit.to_string());
        // The kernel wants limit <= memsw at every step: memsw goes first when it is
        // below the new limit (only on a cgroup limited before; a new one has no limit).
        let memsw_first = read(&memsw)
            .and_then(|s| s.trim().parse::<i64>().ok())
            .is_some_and(|cur| cur < limit);
        if memsw_first {
            set_memsw()?;
        }
        mem.set_limit(limit)
            .map_err(|e| isolation("set", &dir.join("memory.limit_in_bytes"), cg_err(e)))?;
        if !memsw_first {
            set_memsw()?;
        }
    }

    let shares = cpu_shares(limits.cpu_mhz);
    if !(fresh && shares == super::DEFAULT_CPU_SHARES) {
        let dir = dir_of(tcg, "cpu")?;
        CpuController::new(dir.clone(), false)
            .set_shares(shares)
            .map_err(|e| isolation("set", &dir.join("cpu.shares"), cg_err(e)))?;
    }

    if limits.pids_max > 0 {
        let dir = dir_of(tcg, "pids")?;
        let max = i64::try_from(limits.pids_max).unwrap_or(i64::MAX);
        PidController::new(dir.clone(), false)
            .set_pid_max(MaxValue::Value(max))
            .map_err(|e| isolation("set", &dir.join("pids.max"), cg_err(e)))?;
    }
    Ok(())
}

/// A v1 cpuset with empty `cpuset.cpus`/`cpuset.mems` cannot take tasks, and the kernel
/// leaves both empty in a new directory: copy them down from the mount root through every
/// parent directory that has them empty.
fn init_cpuset(mount: &Path, parent: &str, dir: Option<&Path>) -> Result<()> {
    let mut chain = Vec::new();
    let mut p = mount.to_path_buf();
    for c in parent.split('/') {
        p.push(c);
        chain.push(p.clone());
    }
    chain.extend(dir.map(Path::to_path_buf));
    for d in &chain {
        let up = d.parent().unwrap_or(mount);
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if !read(&d.join(f)).unwrap_or_default().trim().is_empty() {
                continue;
            }
            let val = read(&up.join(f)).unwrap_or_default().trim().to_string();
            if val.is_empty() {
                return Err(isolation("copy", &up.join(f), "it is empty"));
            }
            let ctl = CpuSetController::new(d.clone(), false);
            let r = if f == "cpuset.cpus" {
                ctl.set_cpus(&val)
            } else {
                ctl.set_mems(&val)
            };
            r.map_err(|e| isolation("set", &d.join(f), cg_err(e)))?;
        }
    }
    Ok(())
}

/// Pins `dir` to the first `cores` cpus of its parent's effective set.
fn pin_cores(dir: &Path, cores: u64) -> Result<()> {
    let up = dir.parent().unwrap_or(dir);
    let avail = read(&up.join("cpuset.effective_cpus"))
        .filter(|s| !s.trim().is_empty())
        .or_else(|| read(&up.join("cpuset.cpus")))
        .unwrap_or_default();
    let pick = pick_cpus(&avail, cores).map_err(|m| isolation("pin cores in", dir, m))?;
    CpuSetController::new(dir.to_path_buf(), false)
        .set_cpus(&pick)
        .map_err(|e| isolation("set", &dir.join("cpuset.cpus"), cg_err(e)))
}

/// Parses a cpu list such as `0-3,8,10-11`.
pub(super) fn parse_cpu_list(s: &str) -> std::result::Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("malformed cpu list {:?}", s.trim());
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u32 = a.parse().map_err(|_| bad())?;
                let b: u32 = b.parse().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The first `n` cpus of `avail`, as a cpu list.
pub(super) fn pick_cpus(avail: &str, n: u64) -> std::result::Result<String, String> {
    let cpus = parse_cpu_list(avail)?;
    if (cpus.len() as u64) < n {
        return Err(format!(
            "{n} cores requested but only {} cpus ({}) are available",
            cpus.len(),
            avail.trim()
        ));
    }
    Ok(cpus[..n as usize]
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(","))
}
