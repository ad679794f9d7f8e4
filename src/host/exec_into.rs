//! `driver_exec` on the host side: find the task's command, hand the request to the shim
//! (`execdriver-shim --exec`), return its result; or, in the interactive form, the
//! session [`crate::host::exec_session`] keeps.

use crate::config::{self, PluginConfig};
use crate::error::{Code, Error, Result};
use crate::host::task;
use crate::proto::exec::{ExecRequest, ExecResult, Interactive};
use serde::Deserialize;
use serde_json::Value;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExecReq {
    task_id: String,
    command: String,
    #[serde(default, deserialize_with = "config::de_args")]
    args: Vec<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    stdin: bool,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    rows: Option<u16>,
    #[serde(default)]
    cols: Option<u16>,
    #[serde(default)]
    term: Option<String>,
}

/// The interactive form the request asks for, if any (`tty`, `stdin` or `stream`).
fn interactive(r: &ExecReq) -> Result<Option<Interactive>> {
    let size = match (r.rows, r.cols) {
        (None, None) => None,
        (Some(rows), Some(cols)) if rows > 0 && cols > 0 => Some((rows, cols)),
        (Some(_), Some(_)) => {
            return Err(Error::field(
                Code::InvalidRequest,
                "rows",
                "rows and cols must be at least 1",
            ));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::field(
                Code::InvalidRequest,
                if r.rows.is_none() { "rows" } else { "cols" },
                "rows and cols go together",
            ));
        }
    };
    if size.is_some() && !r.tty {
        return Err(Error::field(
            Code::InvalidRequest,
            "rows",
            "rows and cols set a terminal's size: they need \"tty\": true",
        ));
    }
    if let Some(t) = &r.term {
        let ok = !t.is_empty()
            && t.len() <= 64
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
        if !r.tty || !ok {
            return Err(Error::field(
                Code::InvalidRequest,
                "term",
                "term names the terminal type (TERM) of a \"tty\": true exec: 1 to 64 of A-Z a-z 0-9 . _ + -",
            ));
        }
    }
    Ok((r.tty || r.stdin || r.stream).then(|| Interactive {
        term: r.term.clone(),
        tty: r.tty,
        stdin: r.stdin,
        rows: size.map(|s| s.0),
        cols: size.map(|s| s.1),
        timeout_ms: r.timeout_ms,
    }))
}

/// `driver_exec`: one command inside a running task's isolation, output captured.
pub fn exec(req: &str) -> Result<Value> {
    let r: ExecReq = config::parse(req, Code::InvalidRequest, "")?;
    let interactive = interactive(&r)?;
    if r.command.is_empty() {
        return Err(Error::field(
            Code::InvalidRequest,
            "command",
            "command is required",
        ));
    }
    let t = task::get(&r.task_id)?;
    let pid = t.lock().pid;
    let (Some(pid), false) = (pid, t.supervisor_exited()) else {
        return Err(Error::field(
            Code::TaskNotFound,
            "task_id",
            format!("task {:?} is not running", t.id),
        ));
    };
    // The command is the supervisor's first child (its host pid).
    let target = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<i32>().ok())
        });
    let request = ExecRequest {
        target_pid: target,
        supervisor_pid: Some(pid),
        command: r.command,
        args: r.args,
        timeout_ms: r.timeout_ms.unwrap_or(10_000),
        spec: Some(launch_spec(&t)?),
        interactive,
    };
    let file = t
        .state_dir
        .join(format!("exec-{}.json", crate::sys::random_hex(8)));
    let bytes = serde_json::to_vec(&request).map_err(|e| Error::internal(e.to_string()))?;
    std::fs::write(&file, bytes)
        .map_err(|e| Error::new(Code::Spawn, format!("writing exec request: {e}")))?;
    let cfg = crate::host::plugin::current();
    let result = match &request.interactive {
        Some(it) => crate::host::exec_session::start(&cfg, &file, &t.id, it),
        None => run_exec(&cfg, &file),
    };
    let _ = std::fs::remove_file(&file);
    result
}

/// The task's launch spec: the one this host started it with, or (a recovered task) the
/// one in its state dir, with the cgroups of its authenticated handle. One read back must
/// be the task's as its handle has it ([`agrees_with_handle`]): never does a command run
/// outside the isolation the task started with.
fn launch_spec(t: &task::Task) -> Result<crate::proto::spec::LaunchSpec> {
    let (spec, cgroup, handle) = {
        let g = t.lock();
        (g.spec.clone(), g.cgroup.clone(), g.handle.clone())
    };
    if let Some(s) = spec {
        return Ok(s);
    }
    let mut s = crate::proto::spec::read_launch(&t.state_dir).map_err(|e| {
        Error::new(
            Code::Isolation,
            format!("driver_exec: the task's launch spec: {e}"),
        )
    })?;
    agrees_with_handle(&s, t, handle.as_ref()).map_err(|why| {
        Error::new(
            Code::Isolation,
            format!(
                "driver_exec: refusing the launch spec in {}: {why}",
                t.state_dir.display()
            ),
        )
    })?;
    s.cgroup_procs = cgroup
        .as_ref()
        .map(|c| c.self_join_files())
        .unwrap_or_default();
    s.clone_into = None;
    Ok(s)
}

/// Whether a launch spec read back from disk is the task's as its authenticated handle
/// (and the table, filled from it) has it: its id and state dir, its start's nonce, an
/// isolation exactly when the driver is exec, rooted in its task dir, and confined as it
/// started (the handle's [`crate::host::handle::confinement_of`]).
fn agrees_with_handle(
    s: &crate::proto::spec::LaunchSpec,
    t: &task::Task,
    handle: Option<&Value>,
) -> std::result::Result<(), String> {
    if s.task_id != t.id || s.state_dir != t.state_dir {
        return Err(format!("it is task {:?}'s", s.task_id));
    }
    let field = |k: &str| handle.and_then(|h| h.get(k)).and_then(Value::as_str);
    if field("nonce") != Some(s.nonce.as_str()) {
        return Err("it is not of the start its handle names".into());
    }
    match (&s.isolation, t.driver) {
        (None, config::DriverKind::Exec) => Err("an exec task's spec without its isolation".into()),
        (Some(_), config::DriverKind::RawExec) => Err("a raw_exec task's spec with an isolation".into()),
        (Some(iso), _) if iso.root != t.task_dir => Err("its root is not the task dir".into()),
        (Some(iso), _) => match field("confinement") {
            Some(c) if c != crate::host::handle::confinement_of(iso) => {
                Err("its user, capabilities or namespaces are not those the task started with".into())
            }
            _ => Ok(()),
        },
        (None, _) => Ok(()),
    }
}

/// The shim's path and `execdriver-shim --exec <request>` with its environment, as
/// C strings.
pub(crate) struct ShimCommand {
    pub shown: String,
    pub path: std::ffi::CString,
    pub args: [std::ffi::CString; 3],
    pub env: Vec<std::ffi::CString>,
}

pub(crate) fn shim_command(cfg: &PluginConfig, request: &Path) -> Result<ShimCommand> {
    let shim = crate::host::plugin::shim_path(cfg)?;
    let c = |s: &str| {
        crate::sys::cstring(s, "argument").map_err(|e| Error::new(Code::Spawn, e.to_string()))
    };
    Ok(ShimCommand {
        shown: shim.display().to_string(),
        path: c(&shim.to_string_lossy())?,
        args: [
            c("execdriver-shim")?,
            c("--exec")?,
            c(&request.to_string_lossy())?,
        ],
        env: crate::host::plugin::shim_env(&[])?,
    })
}

/// Runs `execdriver-shim --exec <request>` for `driver_exec` and returns its
/// one-line result ([`ExecResult`]).
fn run_exec(cfg: &PluginConfig, request: &Path) -> Result<serde_json::Value> {
    let cmd = shim_command(cfg, request)?;
    let sp = crate::sys::spawn(&cmd.path, &cmd.args, &cmd.env, 0)
        .map_err(|e| Error::new(Code::Spawn, format!("starting {}: {e}", cmd.shown)))?;
    let mut report = String::new();
    let mut out = sp.stdout;
    let _ = out.read_to_string(&mut report);
    let _ = crate::sys::poll_readable(sp.pidfd.as_raw_fd(), -1);
    let _ = crate::sys::pidfd_reap(&sp.pidfd);
    match serde_json::from_str::<ExecResult>(report.trim()) {
        Ok(ExecResult::Ran(out)) => {
            serde_json::to_value(out).map_err(|e| Error::internal(e.to_string()))
        }
        Ok(ExecResult::Failed { error }) => Err(error.into()),
        Err(_) => Err(Error::new(
            Code::Spawn,
            format!("driver_exec: the shim gave no result ({report:?})"),
        )),
    }
}
