//! The task's cgroup as carried in launch.json and the handle (serialized
//! [`crate::cgroup::TaskCgroup`]): kill, OOM and removal from that JSON alone.

use crate::cgroup::TaskCgroup;
use serde_json::Value;

fn parse(v: &Value) -> Option<TaskCgroup> {
    serde_json::from_value(v.clone()).ok()
}

/// Kills every process in the task's cgroups.
pub fn kill_all(v: &Value) {
    if let Some(c) = parse(v) {
        let _ = c.kill_all();
    }
}

/// Whether the task's memory cgroup OOM-killed a process.
pub fn oom_killed(v: &Value) -> bool {
    parse(v).is_some_and(|c| c.oom_killed())
}

/// Removes the task's cgroups (idempotent).
pub fn remove(v: &Value) {
    if let Some(c) = parse(v) {
        let _ = c.remove();
    }
}
