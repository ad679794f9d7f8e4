//! Every message between the host and a supervisor, typed: one enum per direction on
//! the channel ([`ToSupervisor`], [`ToHost`]), each a line of JSON (serde_json escapes
//! every newline inside it); the verdict and go byte between a supervisor and its staged
//! command process ([`Verdict`]); the fork server's request and reply ([`ForkRequest`]);
//! the driver's commands to a supervisor as queued signals ([`Control`]); and
//! `driver_exec`'s request and reports ([`exec`]). No byte or string of these is compared
//! anywhere else.
//!
//! The channel, in order: the host sends [`ToSupervisor::Spec`], then
//! [`ToSupervisor::Go`] once the task's directories are made (EOF instead: the start
//! failed); the supervisor answers [`ToHost::Started`] or [`ToHost::Failed`], later
//! [`ToHost::Exited`]. One that may run another task then says [`ToHost::Idle`] and
//! waits for [`ToSupervisor::Keep`] (then the next spec) or EOF.

pub mod chan;
pub mod exec;
pub mod mounts;
pub mod spec;

use crate::error::{Code, Error};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use spec::{ExitStatus, Go, LaunchSpec};

/// What the host says to a supervisor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ToSupervisor {
    /// The task to run.
    Spec(Box<LaunchSpec>),
    /// Its directories are made (and its artifacts in place): start it.
    Go(Go),
    /// Stay, prestarted, for the next task.
    Keep,
}

/// What a supervisor says to the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ToHost {
    /// The command runs (it has exec'd).
    Started(Box<Started>),
    /// It could not start; nothing of it is left.
    Failed(Failure),
    /// The task has ended; the supervisor tidies up next.
    Exited(ExitStatus),
    /// Tidied up after its task: it may run another (see [`ToSupervisor::Keep`]).
    Idle,
}

/// [`ToHost::Started`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Started {
    /// The command's pid in the supervisor's pid namespace.
    pub pid: i32,
    /// The supervisor's own start time (`/proc/<pid>/stat` field 22), for the handle.
    pub start_time: Option<u64>,
    pub started_at: String,
    /// The task's cgroups, when the supervisor made them.
    pub cgroup: Option<crate::cgroup::TaskCgroup>,
}

/// An [`Error`] as it travels ([`ToHost::Failed`], a command child's sync pipe).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    pub code: String,
    pub message: String,
    /// Left out when there is none, as in the library's error responses
    /// ([`Error::to_json`]), which [`exec`] passes on in this shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Failure {
        Failure {
            code: e.code.as_str().to_string(),
            message: e.message.clone(),
            field: e.field.clone(),
        }
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        Error {
            code: Code::parse(&f.code).unwrap_or(Code::Internal),
            message: f.message,
            field: f.field,
        }
    }
}

/// `m` as a line of the channel (ending in a newline).
pub fn line<T: Serialize>(m: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec(m).unwrap_or_default();
    b.push(b'\n');
    b
}

/// The message of a line (without its newline).
pub fn parse<T: DeserializeOwned>(line: &[u8]) -> Result<T, String> {
    serde_json::from_slice(line).map_err(|e| format!("a malformed message ({e})"))
}

/// The largest line a supervisor reads (a spec: its environment may be large).
pub const MAX_LINE: usize = 64 << 20;

/// Reads the next message from the host on `chan` (supervisor side): `None` at EOF (the
/// host closed the channel: it gave up, or went away).
pub fn read_from_host(chan: &mut chan::Channel) -> Result<Option<ToSupervisor>, String> {
    match chan.line(true, MAX_LINE).map_err(|e| e.to_string())? {
        chan::Line::Complete(b) => parse(&b).map(Some),
        _ => Ok(None),
    }
}

/// Sends `m` to the host (supervisor side).
pub fn send_to_host(chan: &std::os::fd::OwnedFd, m: &ToHost) -> std::io::Result<()> {
    crate::proto::chan::send_all(chan, &line(m))
}

/// Sends `m` to a supervisor (host side).
pub fn send_to_supervisor(chan: &std::os::fd::OwnedFd, m: &ToSupervisor) -> std::io::Result<()> {
    crate::proto::chan::send_all(chan, &line(m))
}

/// [`send_to_supervisor`] with an fd attached (the go's wait pipe, [`spec::Go::wait_pipe`]).
pub fn send_to_supervisor_with_fd(
    chan: &std::os::fd::OwnedFd,
    m: &ToSupervisor,
    fd: &std::os::fd::OwnedFd,
) -> std::io::Result<()> {
    crate::sys::socket::send_with_fd(chan, &line(m), fd)
}

/// A staged command process's verdict on a task, the byte it sends its supervisor after the spec it
/// forwarded; and the supervisor's go byte back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It takes the task.
    Takes,
    /// It does not: the supervisor starts it the usual way.
    Declines,
}

impl Verdict {
    pub fn byte(self) -> u8 {
        match self {
            Verdict::Takes => b'Y',
            Verdict::Declines => b'N',
        }
    }

    pub fn from_byte(b: u8) -> Verdict {
        if b == b'Y' {
            Verdict::Takes
        } else {
            Verdict::Declines
        }
    }
}

/// The supervisor's go to its staged command process (the task's cgroups are ready): one byte.
pub const GO: u8 = b'g';

/// A request to the fork server (`SOCK_SEQPACKET`, one message each, the new
/// supervisor's channel attached): the namespace flags, and what it prepares.
#[derive(Debug, Clone, PartialEq)]
pub struct ForkRequest {
    pub ns_flags: i32,
    pub staging: Option<crate::proto::spec::Staging>,
}

impl ForkRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.ns_flags.to_le_bytes().to_vec();
        if let Some(w) = &self.staging {
            b.extend_from_slice(&serde_json::to_vec(w).unwrap_or_default());
        }
        b
    }

    /// The request, and its `staging` part as the raw JSON the new supervisor parses itself.
    pub fn decode(b: &[u8]) -> Option<(i32, &[u8])> {
        (b.len() >= 4).then(|| (i32::from_le_bytes([b[0], b[1], b[2], b[3]]), &b[4..]))
    }
}

/// The fork server's reply: the new supervisor's pid, or `-errno`.
pub fn fork_reply(pid_or_errno: i32) -> [u8; 4] {
    pid_or_errno.to_le_bytes()
}

/// [`fork_reply`] read back.
pub fn parse_fork_reply(b: &[u8]) -> Option<i32> {
    (b.len() == 4).then(|| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The test hook: a shim started with `EXECDRIVER_TEST_ENOSYS=<call>,<call>…` in its
/// environment (the host passes it on from its own) sees those system calls fail with
/// `ENOSYS`, as on a kernel that lacks them, so that the tests run every fallback on any
/// kernel (see [`crate::supervisor::seccomp::test_hook`]).
pub const TEST_ENOSYS: &str = "EXECDRIVER_TEST_ENOSYS";

/// The driver's commands to a supervisor, sent as a queued realtime signal
/// ([`control_signal`], `SI_QUEUE`) whose value says which; so a signal that merely
/// reaches the supervisor (a stray SIGKILL-free kill of its pid) is never taken for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Send this signal to the command.
    Forward(i32),
    /// Kill every process of the task now.
    KillAll,
}

const KILL_ALL: i32 = 0x6b69_6c6c;
const FORWARD: i32 = 0x7369_0000;

/// The realtime signal that carries [`Control`]s.
pub fn control_signal() -> i32 {
    libc::SIGRTMIN() + 3
}

impl Control {
    /// Sends it to the supervisor `pidfd` refers to.
    pub fn send(self, pidfd: &std::os::fd::OwnedFd) -> std::io::Result<()> {
        crate::sys::pidfd_send_value(pidfd, control_signal(), self.value())
    }

    /// The signal's value.
    pub fn value(self) -> i32 {
        match self {
            Control::Forward(sig) => FORWARD + (sig & 0xffff),
            Control::KillAll => KILL_ALL,
        }
    }

    /// The command a received signal carries, if it is one: the control signal, queued
    /// (`SI_QUEUE`), with a value of ours.
    pub fn from_signal(signo: i32, code: i32, value: i32) -> Option<Control> {
        if signo != control_signal() || code != libc::SI_QUEUE {
            return None;
        }
        if value == KILL_ALL {
            Some(Control::KillAll)
        } else if value & !0xffff == FORWARD {
            Some(Control::Forward(value & 0xffff))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_each_and_parse_back() {
        let e = Error::field(Code::Spawn, "config.command", "a\nb");
        for m in [
            ToHost::Failed(Failure::from(&e)),
            ToHost::Idle,
            ToHost::Started(Box::new(Started {
                pid: 2,
                start_time: Some(9),
                started_at: "t".into(),
                cgroup: None,
            })),
        ] {
            let l = line(&m);
            assert_eq!(l.iter().filter(|b| **b == b'\n').count(), 1);
            assert_eq!(parse::<ToHost>(&l[..l.len() - 1]).unwrap(), m);
        }
        let back: Error = Failure::from(&e).into();
        assert_eq!(back, e);
        assert_eq!(line(&ToSupervisor::Keep), b"\"keep\"\n");
        assert!(parse::<ToHost>(b"{\"idle\":true}").is_err());
    }

    #[test]
    fn control_values_round_trip_and_nothing_else_is_one() {
        for c in [Control::KillAll, Control::Forward(9), Control::Forward(15)] {
            assert_eq!(
                Control::from_signal(control_signal(), libc::SI_QUEUE, c.value()),
                Some(c)
            );
        }
        assert_eq!(
            Control::from_signal(control_signal(), libc::SI_USER, KILL_ALL),
            None
        );
        assert_eq!(
            Control::from_signal(libc::SIGTERM, libc::SI_QUEUE, KILL_ALL),
            None
        );
        assert_eq!(
            Control::from_signal(control_signal(), libc::SI_QUEUE, 7),
            None
        );
    }

    #[test]
    fn fork_requests_round_trip() {
        let r = ForkRequest {
            ns_flags: libc::CLONE_NEWPID,
            staging: None,
        };
        assert_eq!(
            ForkRequest::decode(&r.encode()),
            Some((libc::CLONE_NEWPID, &b""[..]))
        );
        assert_eq!(
            parse_fork_reply(&fork_reply(-libc::EINVAL)),
            Some(-libc::EINVAL)
        );
        assert_eq!(parse_fork_reply(b"abc"), None);
    }
}
