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
// A function over 80 lines (clippy.toml) says why it cannot be split, in an `allow`.
#![warn(clippy::too_many_lines)]

/// An internal module: `pub(crate)`, so that the compiler flags what nothing uses; public
/// (hidden from the docs) with the `testing` feature, which the integration tests,
/// benchmarks and examples build with (`[dev-dependencies]`).
macro_rules! internal {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[cfg(feature = "testing")]
        #[doc(hidden)]
        pub mod $name;
        $(#[$m])*
        #[cfg(not(feature = "testing"))]
        pub(crate) mod $name;
    };
}

#[cfg(feature = "abi")]
#[allow(unsafe_code)]
pub mod abi;
internal!(caps);
internal!(cgroup);
internal!(config);
pub mod error;
#[allow(unsafe_code)]
pub mod ffi;
internal!(host);
internal!(proto);
internal!(supervisor);
internal!(
    #[allow(unsafe_code)]
    sys
);

/// The `execdriver-shim` executable's `main` (its arguments without the C runtime's
/// help): the supervisor, the fork server, or `driver_exec`'s command.
#[doc(hidden)]
pub fn shim_main(args: &[std::ffi::OsString]) -> i32 {
    supervisor::shim_main(args)
}

pub use error::{Code, Error, Result, Status};
pub use host::driver;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use host::fetch;
