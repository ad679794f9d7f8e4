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
    /// Whether the supervisor is still there, waiting for its spec.
    fn alive(&self) -> bool {
        self.pidfd
            .as_ref()
            .is_some_and(|fd| matches!(crate::sys::poll_readable(fd.as_raw_fd(), 0), Ok(false)))
    }

    /// Hands the supervisor its launch spec; [`Sent::report`] then waits for the start.
    pub fn send(mut self, spec: &[u8]) -> Sent {
        let chan = self.chan.take().expect("channel");
        let pidfd = self.pidfd.take().expect("pidfd");
        let host = HostEnd::new(chan);
        let sent = crate::chan::send_all(&host.fd, spec).is_ok();
        crate::chan::shutdown_write(&host.fd);
        Sent {
            pid: self.pid,
            pidfd,
            host,
            sent,
            shim: std::mem::take(&mut self.shim),
        }
    }

    /// [`Pending::send`] then [`Sent::report`].
    pub fn start(self, spec: &[u8]) -> Result<Started> {
        self.send(spec).report()
    }
}

/// A supervisor that has its spec and is starting the command.
pub struct Sent {
    pid: i32,
    pidfd: OwnedFd,
    host: HostEnd,
    sent: bool,
    shim: std::path::PathBuf,
}

impl Sent {
    /// Returns once the command has exec'd (or failed to).
    pub fn report(self) -> Result<Started> {
        let Sent {
            pid,
            pidfd,
            mut host,
            sent,
            shim,
        } = self;
        let line = match (sent, host.next_line(true)) {
            (true, Ok(Line::Line(l))) => l,
            _ => String::new(),
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["ok"] == serde_json::Value::Bool(true) {
            return Ok(Started {
                pid,
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
                shim.display()
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

/// A supervisor started ahead of any task ("prestarted"), idle until a start of its
/// kind takes it: same shim, same namespaces (the supervisor is cloned into them).
/// Only raw_exec supervisors (no namespaces) are prestarted: an exec start spends longer
/// creating the task's cgroups than its supervisor takes to load alongside, so a spare
/// gained nothing there (measured), and its background launch competed with the start.
struct Spare {
    shim: std::path::PathBuf,
    ns_flags: libc::c_int,
    pending: Pending,
}

/// At most one spare per kind (shim path and namespaces).
static SPARES: std::sync::Mutex<Vec<Spare>> = std::sync::Mutex::new(Vec::new());
const MAX_SPARES: usize = 4;

fn spares() -> std::sync::MutexGuard<'static, Vec<Spare>> {
    SPARES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether starts of this kind use prestarted supervisors.
fn prestarted(cfg: &PluginConfig, ns_flags: libc::c_int) -> bool {
    cfg.prestart_supervisor && ns_flags == 0
}

/// The supervisor for a start: the spare of this kind when there is a live one
/// (`prestart_supervisor`, raw_exec), else a new one.
pub fn supervisor_for(cfg: &PluginConfig, ns_flags: libc::c_int) -> Result<Pending> {
    if prestarted(cfg, ns_flags) {
        let shim = crate::plugin::shim_path(cfg)?;
        let spare = {
            let mut v = spares();
            v.iter()
                .position(|s| s.shim == shim && s.ns_flags == ns_flags)
                .map(|i| v.swap_remove(i))
        };
        match spare {
            Some(s) if s.pending.alive() => return Ok(s.pending),
            // Killed while idle: dropped (reaped), and a new one is launched.
            _ => {}
        }
    }
    launch_supervisor(cfg, ns_flags)
}

/// Starts a spare supervisor of this kind, unless there is one already or
/// `prestart_supervisor` is off. Failure only means the next start launches its own.
pub fn prestart(cfg: &PluginConfig, ns_flags: libc::c_int) {
    if !prestarted(cfg, ns_flags) {
        return;
    }
    let Ok(shim) = crate::plugin::shim_path(cfg) else {
        return;
    };
    let same = |s: &Spare| s.shim == shim && s.ns_flags == ns_flags;
    if spares().iter().any(same) {
        return;
    }
    let Ok(pending) = launch_supervisor(cfg, ns_flags) else {
        return;
    };
    let spare = Spare {
        shim: shim.clone(),
        ns_flags,
        pending,
    };
    // Anything dropped here (a spare another thread made meanwhile, the oldest kind) ends
    // and is reaped after the lock is released.
    let _evicted = {
        let mut v = spares();
        if v.iter().any(same) {
            Some(spare)
        } else {
            v.push(spare);
            (v.len() > MAX_SPARES).then(|| v.remove(0))
        }
    };
}

/// Spare starts running on background threads (see [`prestart_in_background`]).
static IN_FLIGHT: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

fn in_flight() -> std::sync::MutexGuard<'static, usize> {
    IN_FLIGHT.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`prestart`] on a short-lived background thread, so that the caller does not wait for
/// the new supervisor's exec.
pub fn prestart_in_background(cfg: std::sync::Arc<PluginConfig>, ns_flags: libc::c_int) {
    if !prestarted(&cfg, ns_flags) {
        return;
    }
    *in_flight() += 1;
    let started = crate::sys::background("execdriver-spare", move || {
        prestart(&cfg, ns_flags);
        *in_flight() -= 1;
        IN_FLIGHT.1.notify_all();
    });
    if !started {
        *in_flight() -= 1;
        IN_FLIGHT.1.notify_all();
    }
}

/// Returns once no spare is being started in the background (for tests).
pub fn settle() {
    let mut n = in_flight();
    while *n > 0 {
        n = IN_FLIGHT.1.wait(n).unwrap_or_else(|p| p.into_inner());
    }
}

/// Ends every spare supervisor (they exit on EOF and are reaped): `driver_configure`
/// calls it, since they were started for the previous configuration.
pub fn drop_spares() {
    let v = std::mem::take(&mut *spares());
    drop(v);
}

/// Pids of the spare supervisors now idle (for tests).
pub fn spare_pids() -> Vec<i32> {
    spares().iter().map(|s| s.pending.pid).collect()
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
