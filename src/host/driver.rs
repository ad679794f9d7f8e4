//! The driver's operations as a safe Rust API: each takes the request JSON text and
//! returns the response JSON or an [`Error`]. `ffi.rs` is a thin door onto these.

use crate::config;
use crate::error::{Code, Error, Result};
use crate::host::prepare;
use crate::host::task::{self, State, Task};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parses a request that has no required fields (NULL or "{}" allowed).
fn request<T: for<'de> Deserialize<'de> + Default>(text: Option<&str>) -> Result<T> {
    match text {
        None => Ok(T::default()),
        Some(t) => config::parse(t, Code::InvalidRequest, ""),
    }
}

fn required(text: Option<&str>) -> Result<&str> {
    text.ok_or_else(|| {
        Error::new(
            Code::InvalidRequest,
            "request_json is NULL; this operation needs a JSON object",
        )
    })
}

/// `driver_configure`.
pub fn configure(req: Option<&str>) -> Result<Value> {
    match req {
        None => crate::host::plugin::effective_json(&crate::host::plugin::current()),
        Some(t) => {
            let v = crate::host::plugin::configure(t)?;
            // Prestarted supervisors were started for the previous configuration.
            crate::host::pool::settle();
            crate::host::pool::drop_idle();
            // With them gone (and their placeholder cgroups), what dead hosts left.
            crate::host::sweep::sweep(&crate::host::plugin::current());
            Ok(v)
        }
    }
}

/// `driver_fingerprint`.
pub fn fingerprint(req: Option<&str>) -> Result<Value> {
    let _: Empty = request(req)?;
    let mut attrs = serde_json::Map::new();
    attrs.insert("driver.raw_exec".into(), json!("1"));
    attrs.insert("driver.exec.version".into(), json!(VERSION));
    let (health, desc) = match exec_support() {
        Ok(cg) => {
            attrs.insert("driver.exec".into(), json!("1"));
            attrs.insert("driver.exec.cgroup".into(), json!(cg));
            if let Ok(l) = crate::cgroup::detect() {
                let mut c = l.controllers();
                c.sort();
                attrs.insert("driver.exec.cgroup.controllers".into(), json!(c.join(",")));
            }
            attrs.insert(
                "driver.exec.namespaces".into(),
                json!("ipc,mnt,net,pid,uts"),
            );
            ("healthy", "Healthy".to_string())
        }
        Err((h, why)) => (h, why),
    };
    Ok(json!({"health": health, "health_description": desc, "attributes": attrs}))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// Whether `exec` tasks can run here: Ok(cgroup layout name) or (health, reason).
fn exec_support() -> std::result::Result<String, (&'static str, String)> {
    // The lifecycle is held by pidfds (Linux 5.3+): no pid is ever signalled bare.
    if let Err(e) = crate::sys::pidfd_open(std::process::id() as i32) {
        return Err((
            "undetected",
            format!("exec needs pidfds (Linux 5.3 or later): pidfd_open: {e}"),
        ));
    }
    if crate::sys::euid() != 0 {
        return Err((
            "undetected",
            "exec needs root; this process is not root (raw_exec is available)".into(),
        ));
    }
    for ns in ["mnt", "pid", "ipc", "uts", "net"] {
        if !Path::new(&format!("/proc/self/ns/{ns}")).exists() {
            return Err(("undetected", format!("the kernel has no {ns} namespaces")));
        }
    }
    let layout = crate::cgroup::detect()
        .map_err(|e| ("undetected", format!("no usable cgroups: {}", e.message)))?;
    layout
        .usable_under(&crate::host::plugin::current().cgroup_parent)
        .map_err(|why| ("unhealthy", format!("cgroups present but unusable: {why}")))?;
    crate::host::plugin::shim_path(&crate::host::plugin::current())
        .map_err(|e| ("unhealthy", e.message))?;
    Ok(layout.name().to_string())
}

/// [`exec_support`] remembered for a minute for one `cgroup_parent`: starts must not probe
/// the cgroup hierarchy (mkdir/rmdir in every controller) each time; `driver_fingerprint`
/// always re-checks, and a new parent is checked at once.
pub(crate) fn exec_support_cached() -> std::result::Result<String, (&'static str, String)> {
    type Support = std::result::Result<String, (&'static str, String)>;
    static CACHE: std::sync::Mutex<Option<(std::time::Instant, String, Support)>> =
        std::sync::Mutex::new(None);
    let parent = crate::host::plugin::current().cgroup_parent.clone();
    let mut g = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, p, r)) = g.as_ref()
        && *p == parent
        && at.elapsed() < std::time::Duration::from_secs(60)
    {
        return r.clone();
    }
    let r = exec_support();
    *g = Some((std::time::Instant::now(), parent, r.clone()));
    r
}

/// Parses a signal given as "SIGHUP", "HUP", "hup" or a number.
/// The signal number of `s` (a name or a number); a bad one is an error of `code` on
/// `field` (the task's config, or an operation's request).
pub fn parse_signal(s: &str, field: &str, code: Code) -> Result<i32> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    } else {
        let up = t.to_ascii_uppercase();
        let name = if up.starts_with("SIG") {
            up
        } else {
            format!("SIG{up}")
        };
        if let Ok(sig) = name.parse::<nix::sys::signal::Signal>() {
            return Ok(sig as i32);
        }
        if let Some(rest) = name.strip_prefix("SIGRTMIN") {
            let off: i32 = if rest.is_empty() {
                0
            } else {
                rest.trim_start_matches('+').parse().unwrap_or(-1)
            };
            let n = libc::SIGRTMIN() + off;
            if off >= 0 && n <= libc::SIGRTMAX() {
                return Ok(n);
            }
        }
    }
    Err(Error::field(
        code,
        field,
        format!("{s:?} is not a signal name (e.g. SIGTERM, HUP) or number 1-64"),
    ))
}

/// `driver_start`: see [`crate::host::start`].
pub fn start(req: Option<&str>) -> Result<Value> {
    crate::host::start::start(required(req)?)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WaitReq {
    task_id: String,
    #[serde(default)]
    timeout_ms: Option<i64>,
}

/// `driver_wait`.
pub fn wait(req: Option<&str>) -> Result<Value> {
    let r: WaitReq = config::parse(required(req)?, Code::InvalidRequest, "")?;
    task::get(&r.task_id)?.wait(r.timeout_ms.unwrap_or(-1))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StopReq {
    task_id: String,
    #[serde(default, deserialize_with = "config::de_signal_opt")]
    signal: Option<String>,
    #[serde(default)]
    timeout_ms: Option<i64>,
}

/// `driver_stop`: the signal, the grace period, then SIGKILL of every process.
pub fn stop(req: Option<&str>) -> Result<Value> {
    let r: StopReq = config::parse(required(req)?, Code::InvalidRequest, "")?;
    let t = task::get(&r.task_id)?;
    let sig = match &r.signal {
        Some(s) => parse_signal(s, "signal", Code::InvalidRequest)?,
        None => t.kill_signal,
    };
    let grace = r
        .timeout_ms
        .map(|m| m.max(0) as u64)
        .unwrap_or(t.kill_timeout_ms)
        .min(crate::host::plugin::current().max_kill_timeout_ms);
    stop_task(&t, sig, grace)
}

fn stop_task(t: &Arc<Task>, sig: i32, grace_ms: u64) -> Result<Value> {
    if t.state() == State::Starting {
        return Err(Error::field(
            Code::TaskRunning,
            "task_id",
            format!("task {:?} is still starting (fetching artifacts)", t.id),
        ));
    }
    let pidfd = t.lock().pidfd.clone();
    let Some(pidfd) = pidfd.filter(|_| !t.supervisor_exited()) else {
        // Its supervisor may be gone without having ended the task (killed, say, by a task
        // that shares the host's pid namespace): what is left of it goes through its
        // cgroup. (After a normal exit the cgroup is already gone: nothing to do.)
        if let Some(cg) = t.lock().cgroup.clone() {
            let _ = cg.kill_all();
        }
        return Ok(t.finalize());
    };
    use crate::host::events::Kind;
    t.event(
        Kind::Killing,
        format!("signal {sig}; every process is SIGKILLed {grace_ms} ms later if it runs on"),
    );
    let _ = crate::proto::Control::Forward(sig).send(&pidfd);
    if let Ok(v) = t.wait(i64::try_from(grace_ms).unwrap_or(i64::MAX)) {
        return Ok(v);
    }
    t.event(Kind::Killing, "the grace period is over: SIGKILL to every process");
    let _ = crate::proto::Control::KillAll.send(&pidfd);
    if let Ok(v) = t.wait(10_000) {
        return Ok(v);
    }
    // The supervisor does not answer: kill it and everything of the task ourselves.
    let _ = crate::sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
    if let Some(cg) = t.lock().cgroup.clone() {
        let _ = cg.kill_all();
    }
    let _ = crate::sys::poll_readable(std::os::fd::AsRawFd::as_raw_fd(&*pidfd), -1);
    Ok(t.finalize_with(Some(())))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DestroyReq {
    task_id: String,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    purge: bool,
}

/// `driver_destroy`.
pub fn destroy(req: Option<&str>) -> Result<Value> {
    let r: DestroyReq = config::parse(required(req)?, Code::InvalidRequest, "")?;
    let t = task::get(&r.task_id)?;
    end_for_destroy(&t, r.force)?;
    // Its interactive execs go with it (their commands are killed).
    crate::host::exec_session::end_task(&t.id);
    // The supervisor may still be tidying up after its exit report; then it is reaped,
    // or goes back to the pool.
    t.release_supervisor();
    if t.owns_its_paths() {
        if let Some(cg) = t.lock().cgroup.clone()
            && let Err(e) = cg.remove()
        {
            crate::host::diag::diag!(Warn, "task {}: its cgroups stay: {e}", t.id);
        }
        if let Err(e) = std::fs::remove_dir_all(&t.state_dir) {
            crate::host::diag::diag!(
                Warn,
                "task {}: its state {} stays: {e}",
                t.id,
                t.state_dir.display()
            );
        }
        let data = crate::host::plugin::data_dir(&crate::host::plugin::current());
        prepare::release_task_dir(&prepare::claim_path(&data, &t.task_dir), &t.id);
        if r.purge {
            let _ = std::fs::remove_dir_all(&t.task_dir);
        }
    }
    task::remove(&t);
    crate::host::diag::diag!(Info, "task {}: destroyed{}", t.id, if r.purge { ", its directory purged" } else { "" });
    Ok(json!({"task_id": t.id, "destroyed": true}))
}

/// Ends what runs of the task before `driver_destroy` releases it: a running task only
/// with `force` (else `task_running` on `force`), killed then.
fn end_for_destroy(t: &Arc<Task>, force: bool) -> Result<()> {
    let running = |why: String| {
        Err(Error::field(
            Code::TaskRunning,
            "force",
            format!("task {:?} {why}; stop it first or pass \"force\": true", t.id),
        ))
    };
    match t.state() {
        State::Starting => Err(Error::field(
            Code::TaskRunning,
            "task_id",
            format!("task {:?} is still starting", t.id),
        )),
        State::Running if !t.supervisor_exited() => {
            if !force {
                return running("is running".into());
            }
            stop_task(t, libc::SIGKILL, 0).map(drop)
        }
        _ => {
            // A supervisor that died (killed, say, by a task sharing the host's pid
            // namespace) may leave processes of its task in its cgroup: that task runs
            // on, and needs `force` as any running task (stop then ends them).
            let cgroup = match t.owns_its_paths() {
                true => t.lock().cgroup.clone(),
                false => None,
            };
            let left = cgroup.map(|c| c.pids().len()).unwrap_or(0);
            match (left, force) {
                (0, _) => {
                    t.finalize();
                    Ok(())
                }
                (_, false) => running(format!(
                    "lost its supervisor, but {left} of its processes still run"
                )),
                (_, true) => stop_task(t, libc::SIGKILL, 0).map(drop),
            }
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdReq {
    task_id: String,
}

/// `driver_inspect`.
pub fn inspect(req: Option<&str>) -> Result<Value> {
    let r: IdReq = config::parse(required(req)?, Code::InvalidRequest, "")?;
    let t = task::get(&r.task_id)?;
    if t.state() == State::Running && t.supervisor_exited() {
        t.finalize();
    }
    let g = t.lock();
    Ok(json!({
        "task_id": t.id, "name": t.name, "driver": t.driver.as_str(),
        "state": g.state.unwrap_or(State::Starting).as_str(), "pid": g.pid, "started_at": g.started_at,
        "exit": g.exit, "task_dir": t.task_dir, "handle": g.handle,
        "artifacts": g.artifacts.iter().map(|a| a.to_json()).collect::<Vec<_>>(),
        "events": g.events.to_json(),
        "supervisor_log": supervisor_log(&t.state_dir, g.superseded),
    }))
}

/// The task's supervisor log, when there is one ([`crate::proto::spec::SUPERVISOR_LOG`])
/// and its state dir is its own (not `superseded`).
fn supervisor_log(state_dir: &Path, superseded: bool) -> Option<std::path::PathBuf> {
    let p = state_dir.join(crate::proto::spec::SUPERVISOR_LOG);
    (!superseded && p.is_file()).then_some(p)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SignalReq {
    task_id: String,
    #[serde(deserialize_with = "config::de_signal")]
    signal: String,
}

/// `driver_signal`: delivered to the task's command through its supervisor.
pub fn signal(req: Option<&str>) -> Result<Value> {
    let r: SignalReq = config::parse(required(req)?, Code::InvalidRequest, "")?;
    let sig = parse_signal(&r.signal, "signal", Code::InvalidRequest)?;
    let t = task::get(&r.task_id)?;
    let pidfd = t.lock().pidfd.clone();
    match pidfd {
        Some(fd) if !t.supervisor_exited() => {
            t.event(crate::host::events::Kind::Signaled, format!("signal {sig}"));
            crate::proto::Control::Forward(sig).send(&fd).map_err(|e| {
                Error::new(
                    Code::Internal,
                    format!("signalling the task's supervisor: {e}"),
                )
            })?;
            Ok(json!({"task_id": t.id, "signal": sig}))
        }
        _ => Err(Error::field(
            Code::TaskNotFound,
            "task_id",
            format!("task {:?} is not running", t.id),
        )),
    }
}

/// `driver_stats`: the task's usage from its cgroups (or /proc for a raw_exec task
/// without cgroups).
pub fn stats(req: Option<&str>) -> Result<Value> {
    let r: IdReq = config::parse(required(req)?, Code::InvalidRequest, "")?;
    let t = task::get(&r.task_id)?;
    let (cgroup, pid) = {
        let g = t.lock();
        (g.cgroup.clone(), g.pid)
    };
    let mut v = crate::host::stats::collect(cgroup.as_ref(), pid);
    let mut g = t.lock();
    g.cpu_sample = crate::host::stats::rates(&mut v, g.cpu_sample);
    Ok(v)
}

/// `driver_recover`.
pub fn recover(req: Option<&str>) -> Result<Value> {
    crate::host::recover::recover(required(req)?)
}

/// `driver_logs`: see [`crate::host::logs`].
pub fn logs(req: Option<&str>) -> Result<Value> {
    crate::host::logs::logs(required(req)?)
}

/// `driver_exec`: one command inside a running task's isolation, output captured.
pub fn exec(req: Option<&str>) -> Result<Value> {
    crate::host::exec_into::exec(required(req)?)
}

/// `driver_exec_wait`: the exit of an interactive `driver_exec`'s command.
pub fn exec_wait(req: Option<&str>) -> Result<Value> {
    crate::host::exec_session::wait(required(req)?)
}

/// `driver_exec_resize`: the window size of an interactive `driver_exec`'s terminal.
pub fn exec_resize(req: Option<&str>) -> Result<Value> {
    crate::host::exec_session::resize(required(req)?)
}
