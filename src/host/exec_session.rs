//! The interactive form of `driver_exec`: a session per command, the shim that runs it
//! (`execdriver-shim --exec`, the command's parent for as long as it runs) on the other
//! end of a `SOCK_SEQPACKET` socket. The shim sends `{"pid"}` with the command's pty
//! master or pipes, which go to the caller; `driver_exec_resize` sends it window sizes;
//! its last message is the exit report `driver_exec_wait` returns. The session leaves
//! the table when waited for, or when its task is destroyed: closing the socket makes the
//! shim kill the command.

use crate::config::{self, PluginConfig};
use crate::error::{Code, Error, Result};
use crate::proto::exec::{Interactive, Resize, SessionEnd, SessionStart};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

struct Session {
    task_id: String,
    /// The shim, our child: reaped once it has reported (or been told to go).
    shim: OwnedFd,
    sock: OwnedFd,
    tty: bool,
    /// The exit report once read (by one waiter; the others find it here).
    report: Mutex<Option<SessionEnd>>,
}

fn table() -> MutexGuard<'static, HashMap<String, Arc<Session>>> {
    static T: LazyLock<Mutex<HashMap<String, Arc<Session>>>> = LazyLock::new(Default::default);
    T.lock().unwrap_or_else(|p| p.into_inner())
}

fn get(id: &str) -> Result<Arc<Session>> {
    table().get(id).cloned().ok_or_else(|| {
        Error::field(
            Code::TaskNotFound,
            "exec_id",
            format!("no exec session with id {id:?} (it was waited for, or its task destroyed)"),
        )
    })
}

/// Starts the shim on `request` and returns the caller's side of the session:
/// `{"exec_id", "pid", "tty_fd"}` or `{"exec_id", "pid", "stdin_fd"?, "stdout_fd",
/// "stderr_fd"}`.
pub fn start(cfg: &PluginConfig, request: &Path, task_id: &str, it: &Interactive) -> Result<Value> {
    let cmd = crate::host::exec_into::shim_command(cfg, request)?;
    let spawn_err = |e: std::io::Error| Error::new(Code::Spawn, format!("starting {}: {e}", cmd.shown));
    let (sock, theirs) = crate::sys::socket::socketpair_of(libc::SOCK_SEQPACKET).map_err(spawn_err)?;
    let (_, shim) = crate::sys::spawn_with(&cmd.path, &cmd.args, &cmd.env, 0, theirs).map_err(spawn_err)?;
    let mut buf = vec![0u8; 64 << 10];
    let first = crate::sys::socket::recv_with_fds(&sock, &mut buf, false);
    let (started, fds) = match first {
        Ok(Some((n, fds))) if n > 0 => (
            serde_json::from_slice::<SessionStart>(&buf[..n]).ok(),
            fds,
        ),
        _ => (None, vec![]),
    };
    let want = if it.tty { 1 } else { 2 + usize::from(it.stdin) };
    let pid = match &started {
        Some(SessionStart::Started { pid }) if fds.len() == want => *pid,
        _ => {
            drop(sock);
            let _ = crate::sys::pidfd_reap_within(&shim, 5000);
            return Err(match started {
                Some(SessionStart::Failed { error }) => error.into(),
                other => Error::new(
                    Code::Spawn,
                    format!("driver_exec: the shim did not start the command ({other:?})"),
                ),
            });
        }
    };
    let exec_id = format!("exec-{}", crate::sys::random_hex(8));
    table().insert(
        exec_id.clone(),
        Arc::new(Session {
            task_id: task_id.to_string(),
            shim,
            sock,
            tty: it.tty,
            report: Mutex::new(None),
        }),
    );
    // From here on the fds are the caller's: handed over as numbers, never touched again.
    let mut fds = fds.into_iter().map(IntoRawFd::into_raw_fd);
    let mut v = json!({"exec_id": exec_id, "pid": pid});
    if it.tty {
        v["tty_fd"] = json!(fds.next());
    } else {
        if it.stdin {
            v["stdin_fd"] = json!(fds.next());
        }
        v["stdout_fd"] = json!(fds.next());
        v["stderr_fd"] = json!(fds.next());
    }
    Ok(v)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WaitReq {
    exec_id: String,
    #[serde(default)]
    timeout_ms: Option<i64>,
}

/// `driver_exec_wait`: `{"exec_id", "exit_code", "signal"}` once the command has exited.
pub fn wait(req: &str) -> Result<Value> {
    let r: WaitReq = config::parse(req, Code::InvalidRequest, "")?;
    let s = get(&r.exec_id)?;
    let ready = crate::sys::poll_readable(s.sock.as_raw_fd(), r.timeout_ms.unwrap_or(-1))
        .map_err(|e| Error::internal(format!("poll: {e}")))?;
    if !ready {
        return Err(Error::new(
            Code::Timeout,
            format!("exec session {:?} is still running", r.exec_id),
        ));
    }
    let report = s
        .report
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(|| read_end(&s.sock))
        .clone();
    table().remove(&r.exec_id);
    let _ = crate::sys::pidfd_reap_within(&s.shim, 5000);
    match report {
        SessionEnd::Exited { exit_code, signal } => {
            Ok(json!({"exec_id": r.exec_id, "exit_code": exit_code, "signal": signal}))
        }
        SessionEnd::Failed { error } => Err(error.into()),
    }
}

/// The shim's exit report, readable on `sock`.
fn read_end(sock: &OwnedFd) -> SessionEnd {
    let mut buf = [0u8; 4096];
    match crate::sys::socket::recv_with_fds(sock, &mut buf, true) {
        Ok(Some((n, _))) if n > 0 => serde_json::from_slice(&buf[..n]).ok(),
        _ => None,
    }
    .unwrap_or_else(|| {
        SessionEnd::from(&Error::new(
            Code::Spawn,
            "the exec session ended without an exit report (its shim was killed, or its task destroyed)",
        ))
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResizeReq {
    exec_id: String,
    rows: u16,
    cols: u16,
}

/// `driver_exec_resize`: sets the window size of a tty session's terminal; returns once
/// it is set.
pub fn resize(req: &str) -> Result<Value> {
    let r: ResizeReq = config::parse(req, Code::InvalidRequest, "")?;
    if r.rows == 0 || r.cols == 0 {
        return Err(Error::field(
            Code::InvalidRequest,
            "rows",
            "rows and cols must be at least 1",
        ));
    }
    let s = get(&r.exec_id)?;
    if !s.tty {
        return Err(Error::field(
            Code::InvalidRequest,
            "exec_id",
            "the session has no terminal (it was started without \"tty\": true)",
        ));
    }
    let msg = serde_json::to_vec(&Resize {
        rows: r.rows,
        cols: r.cols,
    })
    .map_err(|e| Error::internal(e.to_string()))?;
    // The shim closes its copy of `theirs` once the size is set: EOF on `ours` is the
    // answer (also when the shim ends first, its queue going with it).
    let (ours, theirs) =
        crate::sys::socket::socketpair().map_err(|e| Error::internal(format!("socketpair: {e}")))?;
    crate::sys::socket::send_with_fds(&s.sock, &msg, &[theirs.as_fd()]).map_err(|_| {
        Error::field(
            Code::TaskNotFound,
            "exec_id",
            format!("exec session {:?} has ended", r.exec_id),
        )
    })?;
    drop(theirs);
    let _ = crate::sys::poll_readable(ours.as_raw_fd(), 5000);
    Ok(json!({"exec_id": r.exec_id, "rows": r.rows, "cols": r.cols}))
}

/// Ends the sessions of a task being destroyed: each shim, told to go (EOF on its
/// socket), kills its command and exits, and is reaped.
pub fn end_task(task_id: &str) {
    let gone: Vec<Arc<Session>> = {
        let mut t = table();
        let ids: Vec<String> = t
            .iter()
            .filter(|(_, s)| s.task_id == task_id)
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter().filter_map(|id| t.remove(id)).collect()
    };
    for s in gone {
        crate::sys::socket::shutdown_write(&s.sock);
        let _ = crate::sys::pidfd_reap_within(&s.shim, 2000);
    }
}
