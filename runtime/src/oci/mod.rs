//! The OCI runtimes that lockstepd can run containers with, one per runtime handler
//! (RuntimeClass): the small trait every container operation goes through, its implementation
//! over a runc-compatible command line (crun, runc), and which handlers work on this host.

mod command;
mod probe;
mod spawn;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use oci_spec::runtime::{LinuxResources, Process};
use serde::{Deserialize, Serialize};

pub use command::{sweep_call_files, CommandRuntime, PreparedExec, RuntimeCommand};
pub use probe::{probe_handlers, probe_one, resolve, HandlerFeatures, HandlerSet, ProbedHandler, PROBE_BINARY};

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("cannot run {binary}: {source}")]
    Spawn { binary: PathBuf, source: std::io::Error },
    /// The runtime ran and refused; `message` is its own words (from its JSON log or stderr).
    #[error("{handler} {op} {id}: {message}")]
    Failed { handler: String, op: &'static str, id: String, message: String },
    #[error("{handler}: container {id} does not exist")]
    NotFound { handler: String, id: String },
    #[error("{handler}: container {id} is not running")]
    NotRunning { handler: String, id: String },
    #[error("{handler} {op} {id}: the runtime's answer is not understood: {message}")]
    Parse { handler: String, op: &'static str, id: String, message: String },
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// The runtime did not finish a call in time; it was killed.
    #[error("{handler} {op} {id}: no answer within {after:?}; the runtime was killed")]
    TimedOut { handler: String, op: &'static str, id: String, after: std::time::Duration },
    /// The handler cannot be run now (no longer configured, its binary gone).
    #[error("runtime handler {handler:?}: {problem}")]
    Unavailable { handler: String, problem: String },
}

/// A container's state as the OCI runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciState {
    pub id: String,
    pub status: OciStatus,
    /// The init process on the host; 0 once stopped.
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub bundle: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OciStatus {
    Creating,
    Created,
    Running,
    Stopped,
    Paused,
}

/// How `create` wires the container: where the runtime writes the init pid, the console socket
/// for a terminal, and the stdio the init process inherits when there is no terminal.
pub struct CreateOptions<'a> {
    pub pid_file: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// What ExecSync keeps of each stream: 8 MiB. Both together stay under the 16 MiB the kubelet
/// accepts in one CRI message (and the bound CRI-O and conmon adopted for CVE-2022-1708,
/// unbounded exec output exhausting the runtime's memory), leaving room for the rest.
pub const DEFAULT_EXEC_OUTPUT_CAP: usize = (8 << 20) - (64 << 10);

/// How `exec` runs a process and what it keeps of the output.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Kill the process (and wait for it) when it runs longer; None waits forever.
    pub timeout: Option<Duration>,
    /// At most this many bytes of stdout and of stderr each are kept; the rest is read and dropped.
    pub output_cap: usize,
    /// `lockstep-monitor`, to run the runtime's exec detached under it (see
    /// monitor::exec_reaper); None runs it undetached, which waits for every process that
    /// holds the output.
    pub reaper: Option<std::path::PathBuf>,
    /// A cgroup the reaper joins before it runs the runtime: for a runtime in a pure cgroup v1
    /// view, the monitors' v2 cgroup, which the exec'd process then inherits (the runtime
    /// moves it into the container's v1 cgroups only, and lockstepd's own v2 cgroup goes with
    /// its service).
    pub reaper_cgroup: Option<std::path::PathBuf>,
}

/// What an `exec` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The exit code, 128 + n for a process killed by signal n.
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    /// Output beyond `output_cap` was dropped.
    pub truncated: bool,
}

/// The boundary to an OCI runtime: what the container RPCs need, nothing more. Calls block
/// (an OCI runtime is a process to run); async callers use spawn_blocking.
pub trait OciRuntime: Send + Sync + std::fmt::Debug {
    /// The handler name (the RuntimeClass handler) this runtime serves.
    fn handler(&self) -> &str;
    /// Creates the container from `bundle` (its config.json and rootfs); the init process waits
    /// for `start`. The caller (lockstep-monitor) becomes the init's parent once create returns.
    fn create(&self, id: &str, bundle: &Path, options: CreateOptions<'_>) -> Result<(), OciError>;
    /// Runs the container's process.
    fn start(&self, id: &str) -> Result<(), OciError>;
    /// The container's state; None when the runtime does not know it.
    fn state(&self, id: &str) -> Result<Option<OciState>, OciError>;
    /// Sends `signal` to the init process (`all`: to every process of the container).
    /// A container that is not running is `OciError::NotRunning`.
    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError>;
    /// Forgets a stopped or never-started container and removes its cgroup. A container the
    /// runtime does not know is already deleted: Ok. Never forced: runc's `delete -f` sleeps
    /// 100 ms, so callers kill, wait for the exit, then delete.
    fn delete(&self, id: &str) -> Result<(), OciError>;
    /// Runs `process` inside the running container and waits for it (killing it at the timeout,
    /// and reaping it either way).
    fn exec(&self, id: &str, process: &Process, options: ExecOptions) -> Result<ExecOutcome, OciError>;
    /// Changes the container's cgroup limits.
    fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), OciError>;
    /// Whether this runtime can checkpoint and restore here (CRIU on the PATH, a runtime built
    /// with it); Err says what is missing.
    fn checkpoint_support(&self) -> Result<(), String>;
    /// Dumps the running container's processes with CRIU into `images` (`work` gets CRIU's
    /// logs), leaving them running; killed past `timeout`.
    fn checkpoint(&self, id: &str, images: &Path, work: &Path, timeout: Duration) -> Result<(), OciError>;
    /// Restores the processes dumped in `images` as container `id` of `bundle`, detached: they
    /// run once this returns, their stdio (pipes at the checkpoint) those of `options`. The
    /// caller (lockstep-monitor) is the subreaper that inherits them.
    fn restore(
        &self,
        id: &str,
        bundle: &Path,
        images: &Path,
        work: &Path,
        options: CreateOptions<'_>,
    ) -> Result<(), OciError>;
}
