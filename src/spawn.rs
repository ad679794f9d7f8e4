//! Host side of starting a supervisor: clone+exec it (see [`crate::sys::spawn`]) and read
//! its one-line report from the sync pipe: the command started, or why not.

use crate::config::PluginConfig;
use crate::error::{Code, Error, Result};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

pub struct Started {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub started_at: String,
}

/// Starts the supervisor for the task whose `launch.json` is in `state_dir`, in new
/// namespaces `ns_flags`, and returns once the command has exec'd (or failed to).
pub fn start_supervisor(
    cfg: &PluginConfig,
    state_dir: &Path,
    ns_flags: libc::c_int,
) -> Result<Started> {
    let shim = crate::plugin::shim_path(cfg)?;
    let path = crate::sys::cstring(&shim.to_string_lossy(), "shim_path")
        .map_err(|e| Error::new(Code::Spawn, e.to_string()))?;
    let args = [
        crate::sys::cstring("execdriver-shim", "argv")
            .map_err(|e| Error::new(Code::Spawn, e.to_string()))?,
        crate::sys::cstring(&state_dir.to_string_lossy(), "state_dir")
            .map_err(|e| Error::new(Code::Spawn, e.to_string()))?,
    ];
    let env = [crate::sys::cstring(
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "env",
    )
    .map_err(|e| Error::new(Code::Spawn, e.to_string()))?];
    let sp = crate::sys::spawn(&path, &args, &env, ns_flags).map_err(|e| {
        let code = if e.raw_os_error() == Some(libc::EPERM) {
            Code::Isolation
        } else {
            Code::Spawn
        };
        Error::new(
            code,
            format!("starting the supervisor {}: {e}", shim.display()),
        )
    })?;
    let mut report = String::new();
    let mut out = sp.stdout;
    let _ = out.read_to_string(&mut report);
    let line = report.lines().next().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    if v["ok"] == serde_json::Value::Bool(true) {
        return Ok(Started {
            pid: sp.pid,
            pidfd: sp.pidfd,
            started_at: v["started_at"].as_str().unwrap_or_default().to_string(),
        });
    }
    // Failed: the supervisor exits by itself; reap it so it leaves nothing behind.
    let _ = crate::sys::poll_readable(sp.pidfd.as_raw_fd(), 5000);
    let status = crate::sys::pidfd_reap(&sp.pidfd).ok().flatten();
    if v.get("error").is_some() {
        return Err(Error::from_json(&v));
    }
    Err(Error::new(
        Code::Spawn,
        format!(
            "the supervisor {} exited without a report (status {status:?})",
            shim.display()
        ),
    ))
}

/// Runs `execdriver-shim --exec <state_dir> <request>` for `driver_exec` and returns its
/// one-line JSON result.
pub fn run_exec(cfg: &PluginConfig, state_dir: &Path, request: &Path) -> Result<serde_json::Value> {
    let shim = crate::plugin::shim_path(cfg)?;
    let c = |s: &str| {
        crate::sys::cstring(s, "argument").map_err(|e| Error::new(Code::Spawn, e.to_string()))
    };
    let path = c(&shim.to_string_lossy())?;
    let args = [
        c("execdriver-shim")?,
        c("--exec")?,
        c(&state_dir.to_string_lossy())?,
        c(&request.to_string_lossy())?,
    ];
    let env = [c(
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )?];
    let sp = crate::sys::spawn(&path, &args, &env, 0)
        .map_err(|e| Error::new(Code::Spawn, format!("starting {}: {e}", shim.display())))?;
    let mut report = String::new();
    let mut out = sp.stdout;
    let _ = out.read_to_string(&mut report);
    let _ = crate::sys::poll_readable(sp.pidfd.as_raw_fd(), -1);
    let _ = crate::sys::pidfd_reap(&sp.pidfd);
    let v: serde_json::Value = serde_json::from_str(report.trim()).map_err(|_| {
        Error::new(
            Code::Spawn,
            format!("driver_exec: the shim gave no result ({report:?})"),
        )
    })?;
    if v.get("error").is_some() {
        return Err(Error::from_json(&v));
    }
    Ok(v)
}
