//! cgroup v2: one directory in the unified hierarchy. On pure v2 it carries the limits
//! (through cgroups-rs controllers); on hybrid it only tracks processes and gives
//! `cgroup.kill`.

use super::{
    Limits, REQUIRED_CONTROLLERS, TaskCgroup, cg_err, cpu_shares, cpu_weight, ensure_parent,
    isolation, make_task_dir, read, write_existing,
};
use crate::Result;
use cgroups_rs::MaxValue;
use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuset::CpuSetController;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use std::path::Path;

/// Makes the task's directory in the unified hierarchy. With `controllers` (pure v2) first
/// enables them down to the parent, and then applies `limits`; without, the directory
/// only tracks processes.
pub(super) fn create(
    tcg: &mut TaskCgroup,
    root: &Path,
    parent: &str,
    name: &str,
    limits: &Limits,
    controllers: bool,
) -> Result<()> {
    if controllers {
        ensure_parent(root, parent)?;
        enable_controllers(root, parent, limits.cores > 0)?;
    }
    let dir = make_task_dir(tcg, root, parent, name)?;
    tcg.v2 = Some(dir.clone());
    tcg.v2_controllers = controllers;
    let kill = dir.join("cgroup.kill");
    if kill.exists() {
        tcg.kill = Some(kill);
    }
    if !controllers {
        return Ok(());
    }
    // (The unit tests' fake cgroupfs is plain directories, which take no program.)
    #[cfg(test)]
    let real = super::fake::is_cgroupfs(&dir);
    #[cfg(not(test))]
    let real = true;
    if real {
        super::devices::v2_attach(&dir)?;
    }
    apply_limits(&dir, limits)
}

/// Writes `limits` to the task's cgroup2 directory `dir`: memory (swap off), cpu weight,
/// pids, cores pinning. A zero field writes nothing, leaving what the directory has (a
/// new one: no limit, the parent's cpus). The controllers must be enabled in the parent.
pub(super) fn apply_limits(dir: &Path, limits: &Limits) -> Result<()> {
    let dir = dir.to_path_buf();
    let mem = MemController::new(dir.clone(), true);
    if limits.memory_bytes > 0 {
        let limit = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
        mem.set_limit(limit)
            .map_err(|e| isolation("set", &dir.join("memory.max"), cg_err(e)))?;
    }
    // memory.swap.max exists only with swap accounting.
    if dir.join("memory.swap.max").exists() {
        mem.set_memswap_limit(0)
            .map_err(|e| isolation("set", &dir.join("memory.swap.max"), cg_err(e)))?;
    }

    CpuController::new(dir.clone(), true)
        .set_shares(cpu_weight(cpu_shares(limits.cpu_mhz)))
        .map_err(|e| isolation("set", &dir.join("cpu.weight"), cg_err(e)))?;

    if limits.pids_max > 0 {
        let max = i64::try_from(limits.pids_max).unwrap_or(i64::MAX);
        PidController::new(dir.clone(), true)
            .set_pid_max(MaxValue::Value(max))
            .map_err(|e| isolation("set", &dir.join("pids.max"), cg_err(e)))?;
    }

    if limits.cores > 0 {
        // The parent's effective set; should it read empty, the nearest ancestor's (up to
        // the mount root, past which no directory has the file).
        let avail = dir
            .ancestors()
            .skip(1)
            .find_map(|a| read(&a.join("cpuset.cpus.effective")).filter(|s| !s.trim().is_empty()))
            .unwrap_or_default();
        let pick = super::v1::pick_cpus(&avail, limits.cores)
            .map_err(|m| isolation("pin cores in", &dir, m))?;
        CpuSetController::new(dir.clone(), true)
            .set_cpus(&pick)
            .map_err(|e| isolation("set", &dir.join("cpuset.cpus"), cg_err(e)))?;
    }
    Ok(())
}

/// Adds cpu, memory, pids (and cpuset when available) to `cgroup.subtree_control` of the
/// root and of every parent directory down to `<root>/<parent>`, where not yet enabled.
pub(super) fn enable_controllers(root: &Path, parent: &str, need_cpuset: bool) -> Result<()> {
    let mut chain = vec![root.to_path_buf()];
    let mut p = root.to_path_buf();
    for c in parent.split('/') {
        p.push(c);
        chain.push(p.clone());
    }
    for d in &chain {
        let avail_path = d.join("cgroup.controllers");
        let avail = read(&avail_path)
            .ok_or_else(|| isolation("read", &avail_path, "cannot read the file"))?;
        let avail: Vec<&str> = avail.split_whitespace().collect();
        let mut wanted: Vec<&str> = REQUIRED_CONTROLLERS.to_vec();
        if need_cpuset || avail.contains(&"cpuset") {
            wanted.push("cpuset");
        }
        for c in &wanted {
            if !avail.contains(c) {
                return Err(isolation(
                    "enable controllers in",
                    d,
                    format!("the {c} controller is not available there"),
                ));
            }
        }
        let ctl_path = d.join("cgroup.subtree_control");
        let enabled = read(&ctl_path).unwrap_or_default();
        let enabled: Vec<&str> = enabled
            .split_whitespace()
            .map(|s| s.trim_start_matches('+'))
            .collect();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|c| !enabled.contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if !missing.is_empty() {
            write_existing(&ctl_path, &missing.join(" ")).map_err(|e| {
                isolation(
                    &format!(
                        "the {} controller(s) cannot be delegated below {}: writing {:?} to",
                        missing.join(" ").replace('+', ""),
                        d.display(),
                        missing.join(" ")
                    ),
                    &ctl_path,
                    e,
                )
            })?;
        }
    }
    Ok(())
}
