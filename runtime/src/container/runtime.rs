//! The seam under the container lifecycle: everything the container manager asks of one
//! container's process — created and watched by its lockstep-monitor, run by an OCI runtime —
//! behind one trait, so that the lifecycle rules (`lifecycle`) are tested without root against
//! a fake. `Monitored` is the real implementation: lockstep-monitor plus a runc-compatible
//! command line (crun, runc). May touch: the container's directory, its monitor, the runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_spec::runtime::{LinuxResources, Process};

use crate::monitor::watch::{ProcessWatch, WatchBudget};
use crate::monitor::{self, ContainerDir, ExitRecord, MonitorConfig, MonitorError, MonitorState, Spawned};
use crate::oci::{
    CommandRuntime, ExecOptions, ExecOutcome, OciError, OciRuntime, OciState, PreparedExec, DEFAULT_EXEC_OUTPUT_CAP,
};

/// What a container's monitor is told at creation, beyond the runtime that the
/// implementation itself supplies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub container_id: String,
    pub bundle: PathBuf,
    pub log_path: Option<PathBuf>,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    /// A checkpoint's processes to restore, instead of a create (the container then runs).
    pub restore: Option<monitor::RestoreFrom>,
}

/// One container's process as lockstepd drives it. Calls block (a runtime is a process to
/// run); a container is named by its id and its directory under the runroot.
pub trait ContainerRuntime: Send + Sync {
    /// The handler (RuntimeClass) this runtime serves.
    fn handler(&self) -> &str;
    /// The hybrid host's v2 mount this runtime does not see, to record with each container
    /// so that it is always run the same way.
    fn cgroup2_hidden(&self) -> Option<&Path>;
    /// Starts the container's monitor, which runs the runtime's create; returns once the
    /// container is created (its init waits for `start`) or has failed to be.
    fn create(&self, dir: &ContainerDir, request: &CreateRequest) -> Result<Spawned, MonitorError>;
    fn start(&self, id: &str) -> Result<(), OciError>;
    /// Sends `signal` to the init (`all`: to every process of the container).
    fn signal(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError>;
    /// What the container's monitor says now: running, exited (recorded), or lost.
    fn watch(&self, dir: &ContainerDir) -> Result<MonitorState, MonitorError>;
    /// A pidfd on the container's running monitor, within `budget`, for lists to learn of its
    /// exit in one poll (`monitor::watch`); None: each look goes through `watch`.
    fn open_watch(&self, dir: &ContainerDir, budget: &Arc<WatchBudget>) -> Option<ProcessWatch> {
        let _ = (dir, budget);
        None
    }
    /// Waits at most `timeout` for the monitor to record the exit.
    fn wait_exit(&self, dir: &ContainerDir, id: &str, timeout: Duration) -> Result<ExitRecord, MonitorError>;
    /// The OCI runtime's own word on the container; None when it does not know it.
    fn oci_state(&self, id: &str) -> Result<Option<OciState>, OciError>;
    /// Forgets a stopped container and removes its cgroup; an unknown one is Ok.
    fn delete(&self, id: &str) -> Result<(), OciError>;
    /// Runs `process` in the running container, waiting at most `timeout`.
    fn exec(&self, id: &str, process: &Process, timeout: Option<Duration>) -> Result<ExecOutcome, OciError>;
    /// `process` prepared to run in the running container interactively (the streaming
    /// server's exec), its terminal sent to `console` when given. A runtime that cannot: Unavailable.
    fn prepare_exec(&self, id: &str, process: &Process, console: Option<&Path>) -> Result<PreparedExec, OciError> {
        let _ = (id, process, console);
        Err(OciError::Unavailable { handler: self.handler().to_string(), problem: "has no interactive exec".into() })
    }
    fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), OciError>;
    /// Whether the runtime can checkpoint here; Err says what is missing.
    fn checkpoint_support(&self) -> Result<(), String> {
        Err(format!("runtime handler {:?} cannot checkpoint", self.handler()))
    }
    /// Dumps the running container into `images` with CRIU, leaving it running.
    fn checkpoint(&self, id: &str, images: &Path, work: &Path, timeout: Duration) -> Result<(), OciError> {
        let _ = (id, images, work, timeout);
        Err(OciError::Unavailable { handler: self.handler().to_string(), problem: "cannot checkpoint".into() })
    }
    /// Asks the monitor to reopen the container's log.
    fn reopen_log(&self, dir: &ContainerDir) -> Result<(), MonitorError>;
}

/// How long the monitor may take to report that the runtime created the container.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// lockstep-monitor and an OCI runtime command: how lockstepd runs every container.
#[derive(Debug, Clone)]
pub struct Monitored {
    pub handler: String,
    /// The OCI runtime, or why the handler cannot be run now: a container whose handler went
    /// away can still be watched through its monitor; only the runtime's calls fail.
    pub runtime: Result<CommandRuntime, String>,
    /// The lockstep-monitor binary, or why it was not found.
    pub monitor_binary: Result<PathBuf, String>,
    /// The cgroup (one directory per hierarchy) each monitor moves itself into.
    pub monitor_cgroups: Vec<PathBuf>,
}

impl Monitored {
    fn oci(&self) -> Result<&CommandRuntime, OciError> {
        self.runtime
            .as_ref()
            .map_err(|problem| OciError::Unavailable { handler: self.handler.clone(), problem: problem.clone() })
    }
}

impl ContainerRuntime for Monitored {
    fn handler(&self) -> &str {
        &self.handler
    }

    fn cgroup2_hidden(&self) -> Option<&Path> {
        self.runtime.as_ref().ok().and_then(|r| r.command().cgroup2_hidden.as_deref())
    }

    fn create(&self, dir: &ContainerDir, request: &CreateRequest) -> Result<Spawned, MonitorError> {
        let unavailable = |problem: &String| MonitorError::CreateFailed {
            id: request.container_id.clone(),
            message: problem.clone(),
        };
        let binary = self.monitor_binary.as_ref().map_err(unavailable)?;
        let runtime = self.runtime.as_ref().map_err(unavailable)?;
        let config = MonitorConfig {
            container_id: request.container_id.clone(),
            runtime: runtime.command().clone(),
            bundle: request.bundle.clone(),
            log_path: request.log_path.clone(),
            tty: request.tty,
            stdin: request.stdin,
            stdin_once: request.stdin_once,
            max_log_line: monitor::log::DEFAULT_MAX_LINE,
            cgroups: self.monitor_cgroups.clone(),
            restore: request.restore.clone(),
            cgroup_mounts: crate::host::cgroups::cgroup_mountinfo().map(|lines| lines.to_string()),
        };
        monitor::spawn(binary, dir, &config, CREATE_TIMEOUT)
    }

    fn start(&self, id: &str) -> Result<(), OciError> {
        self.oci()?.start(id)
    }

    fn signal(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError> {
        self.oci()?.kill(id, signal, all)
    }

    fn watch(&self, dir: &ContainerDir) -> Result<MonitorState, MonitorError> {
        monitor::state(dir)
    }

    fn open_watch(&self, dir: &ContainerDir, budget: &Arc<WatchBudget>) -> Option<ProcessWatch> {
        ProcessWatch::open(dir, budget)
    }

    fn wait_exit(&self, dir: &ContainerDir, id: &str, timeout: Duration) -> Result<ExitRecord, MonitorError> {
        monitor::wait_exit(dir, id, timeout)
    }

    fn oci_state(&self, id: &str) -> Result<Option<OciState>, OciError> {
        self.oci()?.state(id)
    }

    fn delete(&self, id: &str) -> Result<(), OciError> {
        self.oci()?.delete(id)
    }

    fn exec(&self, id: &str, process: &Process, timeout: Option<Duration>) -> Result<ExecOutcome, OciError> {
        // A runtime in a pure v1 view leaves the process in the reaper's v2 cgroup: the
        // monitors', not lockstepd's (which goes with its service).
        let hidden = self.cgroup2_hidden();
        let options = ExecOptions {
            timeout,
            output_cap: DEFAULT_EXEC_OUTPUT_CAP,
            reaper: self.monitor_binary.clone().ok(),
            reaper_cgroup: hidden.and_then(|h| self.monitor_cgroups.iter().find(|c| c.starts_with(h))).cloned(),
        };
        self.oci()?.exec(id, process, options)
    }

    fn prepare_exec(&self, id: &str, process: &Process, console: Option<&Path>) -> Result<PreparedExec, OciError> {
        let reaper = self
            .monitor_binary
            .as_ref()
            .map_err(|problem| OciError::Unavailable { handler: self.handler.clone(), problem: problem.clone() })?;
        // As `exec`: a runtime in a pure v1 view leaves the process in the reaper's v2 cgroup.
        let hidden = self.cgroup2_hidden();
        let reaper_cgroup = hidden.and_then(|h| self.monitor_cgroups.iter().find(|c| c.starts_with(h)));
        self.oci()?.prepare_exec(id, process, console, reaper, reaper_cgroup.map(PathBuf::as_path))
    }

    fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), OciError> {
        self.oci()?.update(id, resources)
    }

    fn checkpoint_support(&self) -> Result<(), String> {
        self.runtime.as_ref().map_err(Clone::clone)?.checkpoint_support()
    }

    fn checkpoint(&self, id: &str, images: &Path, work: &Path, timeout: Duration) -> Result<(), OciError> {
        self.oci()?.checkpoint(id, images, work, timeout)
    }

    fn reopen_log(&self, dir: &ContainerDir) -> Result<(), MonitorError> {
        monitor::reopen_log(dir)
    }
}
