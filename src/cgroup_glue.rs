//! The task's cgroup as the host keeps it in the handle (serialized
//! [`crate::cgroup::TaskCgroup`]): kill and removal from that JSON alone.

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

/// Removes the task's cgroups (idempotent).
pub fn remove(v: &Value) {
    if let Some(c) = parse(v) {
        let _ = c.remove();
    }
}
