//! `driver_exec` between the host and the shim that runs the command
//! (`execdriver-shim --exec <request file>`): the request ([`ExecRequest`], a file next to
//! the task's launch.json), and what the shim says back, as JSON: the captured form's one
//! line on its stdout ([`ExecResult`]); the interactive form's messages on its
//! `SOCK_SEQPACKET` stdout, the start with the command's fds ([`SessionStart`]), window
//! sizes from the host ([`Resize`]), the exit report last ([`SessionEnd`]). An error is
//! `{"error": {"code", "message", "field"?}}` in each, the shape of the library's own
//! error responses, so the host passes it on as it came.

use super::Failure;
use super::spec::LaunchSpec;
use crate::error::Error;
use serde::{Deserialize, Serialize};

/// What the host asks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecRequest {
    /// Host pid of the task's command: its namespaces are entered.
    pub target_pid: Option<i32>,
    /// Host pid of the task's supervisor: the command must still be its child when its
    /// namespaces are opened (a pid the command left may be another process's by then).
    #[serde(default)]
    pub supervisor_pid: Option<i32>,
    pub command: String,
    pub args: Vec<String>,
    pub timeout_ms: u64,
    /// The task's launch spec: the host's own (a task it started), or the one in the
    /// task's state dir with the cgroups of its handle (a recovered task).
    pub spec: Option<LaunchSpec>,
    /// The interactive form; absent: the output is captured and returned in one result.
    #[serde(default)]
    pub interactive: Option<Interactive>,
}

/// What the interactive form asks for: a pty (`tty`) or pipes (stdin's only with
/// `stdin`), handed to the host; no output cap, no timeout unless `timeout_ms`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Interactive {
    pub tty: bool,
    /// The terminal's type, `TERM` of a tty's command (checked by the host).
    #[serde(default)]
    pub term: Option<String>,
    pub stdin: bool,
    pub rows: Option<u16>,
    pub cols: Option<u16>,
    pub timeout_ms: Option<u64>,
}

/// A window size the host forwards (`driver_exec_resize`), sent with one fd the shim
/// closes once it is set: the host's acknowledgement.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resize {
    pub rows: u16,
    pub cols: u16,
}

/// The captured form's result: the line the shim prints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ExecResult {
    Failed { error: Failure },
    Ran(ExecOutput),
}

/// [`ExecResult::Ran`], which is also `driver_exec`'s response as it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub signal: i32,
    pub stdout: String,
    pub stderr: String,
    /// Some of the output was dropped (over the cap).
    pub truncated: bool,
}

/// The interactive form's first message, with the command's fds when it started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SessionStart {
    Failed { error: Failure },
    Started { pid: i32 },
}

/// The interactive form's last message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SessionEnd {
    Failed { error: Failure },
    Exited { exit_code: i32, signal: i32 },
}

impl From<Result<ExecOutput, Error>> for ExecResult {
    fn from(r: Result<ExecOutput, Error>) -> ExecResult {
        match r {
            Ok(o) => ExecResult::Ran(o),
            Err(e) => ExecResult::Failed {
                error: Failure::from(&e),
            },
        }
    }
}

impl From<&Error> for SessionEnd {
    fn from(e: &Error) -> SessionEnd {
        SessionEnd::Failed {
            error: Failure::from(e),
        }
    }
}

/// A message as its JSON text (these types always serialize).
pub fn to_bytes<T: Serialize>(m: &T) -> Vec<u8> {
    serde_json::to_vec(m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use serde_json::json;

    fn failure() -> Failure {
        Failure::from(&Error::field(Code::CommandNotFound, "command", "no such file"))
    }

    /// `m` serializes to `wire`, and `wire` parses back to `m`.
    fn round_trip<T>(m: &T, wire: serde_json::Value)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        assert_eq!(serde_json::to_value(m).unwrap(), wire);
        assert_eq!(&serde_json::from_slice::<T>(&to_bytes(m)).unwrap(), m);
        assert_eq!(&serde_json::from_value::<T>(wire).unwrap(), m);
    }

    #[test]
    fn errors_travel_as_the_library_s_error_responses() {
        let e = Error::field(Code::CommandNotFound, "command", "no such file");
        let wire = e.to_json();
        round_trip(&ExecResult::from(Err(e.clone())), wire.clone());
        round_trip(&SessionEnd::from(&e), wire.clone());
        round_trip(&SessionStart::Failed { error: failure() }, wire);
        // Without a field: no "field" key, as in the library's own responses.
        let e = Error::new(Code::Isolation, "exec: fork: EAGAIN");
        round_trip(&SessionEnd::from(&e), e.to_json());
        let SessionEnd::Failed { error } = SessionEnd::from(&e) else {
            panic!("not a failure")
        };
        assert_eq!(Error::from(error), e);
    }

    #[test]
    fn reports_round_trip() {
        let out = ExecOutput {
            exit_code: 3,
            signal: 0,
            stdout: "a\n".into(),
            stderr: String::new(),
            truncated: true,
        };
        round_trip(
            &ExecResult::from(Ok(out)),
            json!({"exit_code": 3, "signal": 0, "stdout": "a\n", "stderr": "", "truncated": true}),
        );
        round_trip(&SessionStart::Started { pid: 42 }, json!({"pid": 42}));
        round_trip(
            &SessionEnd::Exited {
                exit_code: 137,
                signal: 9,
            },
            json!({"exit_code": 137, "signal": 9}),
        );
        round_trip(&Resize { rows: 24, cols: 80 }, json!({"rows": 24, "cols": 80}));
        // Neither a report nor an error: no message.
        assert!(serde_json::from_value::<SessionStart>(json!({"exit_code": 0})).is_err());
        assert!(serde_json::from_value::<SessionEnd>(json!({"pid": 1})).is_err());
        assert!(serde_json::from_value::<ExecResult>(json!({"exit_code": 0})).is_err());
    }

    #[test]
    fn requests_round_trip() {
        let r = ExecRequest {
            target_pid: Some(7),
            supervisor_pid: Some(6),
            command: "/bin/sh".into(),
            args: vec!["-c".into(), "true".into()],
            timeout_ms: 1000,
            spec: None,
            interactive: Some(Interactive {
                tty: true,
                term: Some("xterm".into()),
                rows: Some(24),
                cols: Some(80),
                ..Interactive::default()
            }),
        };
        let back: ExecRequest = serde_json::from_slice(&to_bytes(&r)).unwrap();
        assert_eq!(back, r);
        // The optional parts may be left out.
        let old: ExecRequest = serde_json::from_value(json!({"target_pid": 7,
            "command": "x", "args": [], "timeout_ms": 1, "spec": null}))
        .unwrap();
        assert!(old.supervisor_pid.is_none() && old.interactive.is_none());
    }
}
