//! execdriver: Nomad's `exec` and `raw_exec` task drivers as a shared library with a C ABI.
//!
//! Module map:
//! - [`ffi`]: the C ABI only (pointers, panic boundary, status codes).
//! - [`driver`]: the operations as a safe Rust API over JSON text.
//! - [`error`]: the error type and status codes of the contract.
//! - [`config`]: typed parsing of plugin configuration and task requests.
//! - [`plugin`]: process-wide configuration, data dir, supervisor path.
//! - [`env`]: the task environment and `${…}` interpolation.
//! - [`caps`]: Linux capability names and the task's capability set.
//! - [`fetch`]: artifact fetching (HTTP, file://, checksums, archives).
//! - [`cgroup`]: cgroup v1/v2 management for tasks.
//! - [`prepare`]: host-side preparation (dirs, user, command lookup, binds).
//! - [`task`]: the task table and waiting.
//! - [`handle`]: the authenticated handle of `driver_start` and `driver_recover`.
//! - [`launch`]: what host and supervisor exchange (launch spec, exit status).
//! - [`proto`]: every message between host and supervisor, typed.
//! - [`chan`]: the socket between host and supervisor that carries them.
//! - [`spawn`], [`sys`]: starting the supervisor; the raw syscalls.
//! - [`supervisor`], [`isolate`]: the per-task supervisor process and the command's
//!   isolation (run in the `execdriver-shim` binary, never in the host).

#[cfg(feature = "abi")]
pub mod abi;
pub mod caps;
pub mod cgroup;
pub mod chan;
pub mod config;
pub mod driver;
pub mod env;
pub mod error;
pub mod exec_into;
pub mod fetch;
pub mod ffi;
pub mod handle;
pub mod isolate;
pub mod launch;
pub mod plugin;
pub mod prepare;
pub mod proto;
pub mod recover;
pub mod spawn;
pub mod stats;
pub mod supervisor;
pub mod sys;
pub mod task;

pub use error::{Code, Error, Result, Status};
