//! lockstep-monitor, the parent of each container process, and lockstepd's side of it.
//! One small process per container (no async runtime): it runs the OCI runtime's `create`,
//! holds the container's stdio, writes the CRI log, reopens it on request, records the exit
//! (code, time, OOM kill) and outlives lockstepd. lockstepd starts it, reads its report,
//! talks to it over a control socket and reads its exit record, before and after a restart.

pub mod attach;
pub mod client;
pub mod control;
pub mod exec_reaper;
pub mod files;
pub mod log;
pub mod oom;
pub mod process;
mod sys;
pub mod watch;

/// The pty master an OCI runtime sends over a console socket (exec with a terminal uses it too).
pub use sys::receive_fd;

pub use client::{find_all, reopen_log, spawn, state, wait_exit, MonitorError, MonitorState, Spawned};
pub use files::{ContainerDir, ExitRecord, MonitorConfig, RestoreFrom};

/// The monitor's binary name, found with `helpers::find_helper`.
pub const BINARY: &str = "lockstep-monitor";
