//! What runs in the host's process (the program that loaded the library): the driver's
//! operations and everything they need short of the supervisor. Nothing here forks code
//! that allocates or locks, installs a signal handler, or changes process-wide state.
//!
//! - [`driver`]: the operations over JSON text; [`task`]: the task table and waiting.
//! - A start ([`start`]): a pure [`plan`] of the task, then one transaction in a fixed
//!   order: [`prepare`] (directories, the command's path, the root's binds) with [`user`] (the task's user),
//!   [`env`] (the environment and interpolation), [`fetch`] (artifacts), [`pool`] (the
//!   supervisor for it: prestarted, or launched now).
//! - [`handle`], [`recover`]: the authenticated handle and recovery from it;
//!   [`exec_into`]: `driver_exec`, [`exec_session`]: its interactive sessions; [`stats`]: `driver_stats`; [`plugin`]: the
//!   process-wide configuration; [`diag`]: the library's own log; [`sweep`]: what dead
//!   hosts' starts left, removed at `driver_configure`.

pub mod diag;
pub mod driver;
pub mod env;
pub mod events;
pub mod exec_into;
pub mod exec_session;
pub mod fetch;
pub mod loadable;
pub mod logs;
pub mod handle;
pub mod plan;
pub mod plugin;
pub mod pool;
pub mod prepare;
pub mod recover;
pub mod start;
pub mod stats;
pub mod sweep;
pub mod task;
pub mod user;
