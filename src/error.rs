//! The one error type that crosses every module boundary and, at the C ABI, becomes
//! `{"error": {"code", "message", "field"}}` plus a [`Status`].

use serde_json::{Value, json};
use std::fmt;

/// Status codes of the C ABI (docs/api.md "Status codes"). The numeric values are the contract.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    Invalid = 1,
    NotFound = 2,
    Timeout = 3,
    Unsupported = 4,
    Artifact = 5,
    Start = 6,
    Conflict = 7,
    Internal = 8,
}

/// The `error.code` strings of docs/api.md "Error codes", each mapped to its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidJson,
    InvalidRequest,
    InvalidConfig,
    TaskNotFound,
    Timeout,
    Unsupported,
    ArtifactDownload,
    ArtifactChecksum,
    ArtifactUnpack,
    ArtifactLimit,
    ArtifactDenied,
    CommandNotFound,
    UserNotFound,
    Isolation,
    Spawn,
    TaskExists,
    TaskRunning,
    Internal,
}

impl Code {
    /// Every code, in the order of the enum.
    pub const ALL: [Code; 18] = [
        Code::InvalidJson,
        Code::InvalidRequest,
        Code::InvalidConfig,
        Code::TaskNotFound,
        Code::Timeout,
        Code::Unsupported,
        Code::ArtifactDownload,
        Code::ArtifactChecksum,
        Code::ArtifactUnpack,
        Code::ArtifactLimit,
        Code::ArtifactDenied,
        Code::CommandNotFound,
        Code::UserNotFound,
        Code::Isolation,
        Code::Spawn,
        Code::TaskExists,
        Code::TaskRunning,
        Code::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidJson => "invalid_json",
            Code::InvalidRequest => "invalid_request",
            Code::InvalidConfig => "invalid_config",
            Code::TaskNotFound => "task_not_found",
            Code::Timeout => "timeout",
            Code::Unsupported => "unsupported",
            Code::ArtifactDownload => "artifact_download",
            Code::ArtifactChecksum => "artifact_checksum",
            Code::ArtifactUnpack => "artifact_unpack",
            Code::ArtifactLimit => "artifact_limit",
            Code::ArtifactDenied => "artifact_denied",
            Code::CommandNotFound => "command_not_found",
            Code::UserNotFound => "user_not_found",
            Code::Isolation => "isolation",
            Code::Spawn => "spawn",
            Code::TaskExists => "task_exists",
            Code::TaskRunning => "task_running",
            Code::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn status(self) -> Status {
        use Code::*;
        match self {
            InvalidJson | InvalidRequest | InvalidConfig => Status::Invalid,
            TaskNotFound => Status::NotFound,
            Timeout => Status::Timeout,
            Unsupported => Status::Unsupported,
            ArtifactDownload | ArtifactChecksum | ArtifactUnpack | ArtifactLimit
            | ArtifactDenied => Status::Artifact,
            CommandNotFound | UserNotFound | Isolation | Spawn => Status::Start,
            TaskExists | TaskRunning => Status::Conflict,
            Internal => Status::Internal,
        }
    }
}

/// An error as the contract describes it: a code, a message for a human, and the JSON
/// path of the offending input when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub message: String,
    pub field: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// An error about one input field, e.g. `Error::field(Code::InvalidConfig, "config.command", "…")`.
    pub fn field(code: Code, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Code::Internal, message)
    }

    /// The `internal` error for a panic caught at an ABI boundary, with its message.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Error {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Error::internal(format!("internal error (caught panic): {what}"))
    }

    pub fn status(&self) -> Status {
        self.code.status()
    }

    /// The error object (docs/api.md "Error codes").
    pub fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(f) = &self.field {
            e["field"] = json!(f);
        }
        json!({ "error": e })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (field {field})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_map_to_statuses() {
        for s in [
            "invalid_json",
            "task_not_found",
            "artifact_limit",
            "spawn",
            "task_running",
        ] {
            assert_eq!(Code::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(Code::ArtifactDenied.status() as i32, 5);
        assert_eq!(Code::UserNotFound.status() as i32, 6);
        let e = Error::field(
            Code::InvalidConfig,
            "config.command",
            "config.command is required",
        );
        assert_eq!(
            e.to_json(),
            json!({"error": {"code": "invalid_config", "field": "config.command",
                "message": "config.command is required"}})
        );
    }

    #[test]
    fn every_code_parses_back_and_names_are_unique() {
        let names: std::collections::BTreeSet<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Code::ALL.len());
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(c));
        }
    }

    #[test]
    fn panics_become_internal_errors_with_their_message() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        let e = Error::from_panic(&*p);
        assert_eq!((e.code, e.status()), (Code::Internal, Status::Internal));
        assert!(e.message.contains("boom 7"), "{}", e.message);
    }
}
