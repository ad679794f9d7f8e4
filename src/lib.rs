//! execdriver: Nomad's `exec` and `raw_exec` task drivers as a shared library with a C ABI.
//!
//! The layout follows the process boundary:
//! - [`ffi`] (and `abi`): the C ABI only (pointers, panic boundary, status codes), over
//!   [`driver`], the operations as a safe Rust API over JSON text.
//! - [`host`]: what runs in the host's process: the operations, the task table, the
//!   start (directories, user, environment, artifacts), the pool of prestarted
//!   supervisors, recovery from handles.
//! - [`supervisor`]: what runs in the `execdriver-shim` process, never in the host: the
//!   per-task supervisor, and the launcher of its command process (root, privileges,
//!   seccomp, network).
//! - [`proto`]: what the two say to each other (the launch spec, typed messages) and the
//!   channel that carries it.
//! - Below both: [`cgroup`] (cgroup v1 and v2 for tasks), [`caps`] (capability names
//!   and sets), [`config`] (the typed requests of the contract), [`error`], and [`sys`],
//!   the raw system calls.
//!
//! `unsafe` is allowed in two modules only: [`sys`] (system calls behind safe
//! functions) and [`ffi`] (the C ABI's pointers).

#![deny(unsafe_code)]

#[cfg(feature = "abi")]
#[allow(unsafe_code)]
pub mod abi;
pub mod caps;
pub mod cgroup;
pub mod config;
pub mod error;
#[allow(unsafe_code)]
pub mod ffi;
pub mod host;
pub mod proto;
pub mod supervisor;
#[allow(unsafe_code)]
pub mod sys;

pub use error::{Code, Error, Result, Status};
pub use host::{driver, fetch};
