//! Host side of starting a supervisor: clone+exec it ahead of its spec (see
//! [`crate::sys::spawn_with`]), later hand it the spec over the channel
//! ([`crate::chan`]) and read its start report: the command started, or why not. Also
//! `driver_exec`'s one-shot `execdriver-shim --exec`.

use crate::chan::{HostEnd, Line};
use crate::config::PluginConfig;
use crate::error::{Code, Error, Result};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

pub struct Started {
    pub pid: i32,
    /// The supervisor's start time as it read it itself (`/proc/<pid>/stat` field 22).
    pub start_time: Option<u64>,
    pub pidfd: OwnedFd,
    pub started_at: String,
    /// The channel, kept for the exit report.
    pub chan: HostEnd,
}

/// A supervisor started ahead of its launch spec: it loads while the host prepares the
/// task (directories, cgroup, artifacts). Dropped without [`Pending::start`], it closes
/// the channel, the supervisor sees EOF and exits having done nothing, and is reaped.
pub struct Pending {
    pid: i32,
    pidfd: Option<OwnedFd>,
    chan: Option<OwnedFd>,
    shim: std::path::PathBuf,
}

/// Starts the supervisor in new namespaces `ns_flags`; it waits for its launch spec.
pub fn launch_supervisor(cfg: &PluginConfig, ns_flags: libc::c_int) -> Result<Pending> {
    let shim = crate::plugin::shim_path(cfg)?;
    let c = |s: &str, what: &str| {
        crate::sys::cstring(s, what).map_err(|e| Error::new(Code::Spawn, e.to_string()))
    };
    let path = c(&shim.to_string_lossy(), "shim_path")?;
    let args = [c("execdriver-shim", "argv")?];
    let env = [c(
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "env",
    )?];
    let spawn_err = |e: std::io::Error| {
        let code = if e.raw_os_error() == Some(libc::EPERM) {
            Code::Isolation
        } else {
            Code::Spawn
        };
        Error::new(
            code,
            format!("starting the supervisor {}: {e}", shim.display()),
        )
    };
    let (mine, theirs) = crate::chan::socketpair().map_err(spawn_err)?;
    let (pid, pidfd) =
        crate::sys::spawn_with(&path, &args, &env, ns_flags, theirs).map_err(spawn_err)?;
    Ok(Pending {
        pid,
        pidfd: Some(pidfd),
        chan: Some(mine),
        shim,
    })
}

impl Pending {
    /// Hands the supervisor its launch spec and returns once the command has exec'd (or
    /// failed to).
    pub fn start(mut self, spec: &[u8]) -> Result<Started> {
        let chan = self.chan.take().expect("channel");
        let pidfd = self.pidfd.take().expect("pidfd");
        let mut host = HostEnd::new(chan);
        let sent = crate::chan::send_all(&host.fd, spec);
        crate::chan::shutdown_write(&host.fd);
        let line = match (sent, host.next_line(true)) {
            (Ok(()), Ok(Line::Line(l))) => l,
            _ => String::new(),
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["ok"] == serde_json::Value::Bool(true) {
            return Ok(Started {
                pid: self.pid,
                start_time: v["start_time"].as_u64(),
                pidfd,
                started_at: v["started_at"].as_str().unwrap_or_default().to_string(),
                chan: host,
            });
        }
        // Failed: the supervisor exits by itself; reap it so it leaves nothing behind.
        drop(host);
        let status = crate::sys::pidfd_reap_within(&pidfd, 5000);
        if v.get("error").is_some() {
            return Err(Error::from_json(&v));
        }
        Err(Error::new(
            Code::Spawn,
            format!(
                "the supervisor {} exited without a report (status {status:?})",
                self.shim.display()
            ),
        ))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Closing our end is the supervisor's cue to exit without doing anything.
        drop(self.chan.take());
        if let Some(fd) = self.pidfd.take() {
            crate::sys::pidfd_reap_within(&fd, 5000);
        }
    }
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
