//! execdriver: Nomad's `exec` and `raw_exec` task drivers as a shared library with a C ABI.
//!
//! Module map:
//! - [`error`]: the error type and status codes of the contract.
//! - [`config`]: typed parsing of plugin configuration and task requests.
//! - [`env`]: the task environment and `${…}` interpolation.
//! - [`caps`]: Linux capability names and the task's capability set.
//! - [`fetch`]: artifact fetching (HTTP, file://, checksums, archives).
//! - [`cgroup`]: cgroup v1/v2 management for tasks.
//! - [`ffi`]: the C ABI only.

pub mod caps;
pub mod config;
pub mod error;
pub mod fetch;

pub use error::{Code, Error, Result, Status};
