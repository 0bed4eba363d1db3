//! The container manager: the containers lockstepd holds (crash-safe records, one lock per
//! container), their live state (exits read from the monitors), StartContainer,
//! StopContainer, RemoveContainer, ContainerStatus and ListContainers, and a sandbox's
//! containers stopped and removed with it. Creation is in `create`, what runs against a live
//! container in `operations`. Blocking code: call it off the async workers (image holds are
//! awaited with the runtime handle it was given).
//! May touch: `<root>/containers`, `<runroot>/containers`, the OCI runtimes' state, the
//! containers' cgroups (through the runtimes), their monitors and their mounts.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lockstep_cri::model;

use super::host::HostFacts;
use super::lifecycle::{self, Observed, UNKNOWN_EXIT};
use super::record::{ContainerRecord, ExitInfo, RecordState};
use super::runtime::{ContainerRuntime, Monitored};
use super::{rootfs, signal, stats, ErrorKind, SpecError};
use crate::image::service::ImageService;
use crate::info::RuntimeInfo;
use crate::monitor::{self, ContainerDir, MonitorError, MonitorState};
use crate::oci::{CommandRuntime, OciError, OciStatus, RuntimeCommand};
use crate::persist::RecordDir;
use crate::sandbox::{PodContainers, SandboxManager};

pub(super) use super::signal::SIGKILL;

/// What went wrong, by the gRPC code it maps to; each message names the field or the id.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<SpecError> for ContainerError {
    fn from(e: SpecError) -> Self {
        let message = e.to_string();
        match e.kind {
            ErrorKind::InvalidArgument => ContainerError::InvalidArgument(message),
            ErrorKind::NotFound => ContainerError::NotFound(message),
            ErrorKind::FailedPrecondition => ContainerError::FailedPrecondition(message),
        }
    }
}

pub(super) fn internal<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ContainerError + '_ {
    move |e| ContainerError::Internal(format!("{what}: {e}"))
}

pub(super) fn not_found(id: &str) -> ContainerError {
    ContainerError::NotFound(format!("container_id {id:?}: no such container"))
}

/// One container held in memory: `op` serialises the operations on it, `record` is what readers see.
pub(super) struct Entry {
    pub(super) op: Mutex<()>,
    pub(super) record: RwLock<ContainerRecord>,
}

impl Entry {
    pub(super) fn new(record: ContainerRecord) -> Arc<Entry> {
        Arc::new(Entry { op: Mutex::new(()), record: RwLock::new(record) })
    }
    pub(super) fn read(&self) -> ContainerRecord {
        self.record.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The CRI's uniqueness key: a name and attempt within a sandbox.
pub(super) type NameKey = (String, String, u32);

pub struct ContainerManager {
    pub(super) info: Arc<RuntimeInfo>,
    pub(super) sandboxes: Arc<SandboxManager>,
    pub(super) images: Arc<ImageService>,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) records: RecordDir,
    /// `<root>/containers`: records and writable layers.
    pub(super) layers_root: PathBuf,
    /// `<runroot>/containers`: bundles, rootfs mount points, monitor files.
    pub(super) run_root: PathBuf,
    pub(super) host: HostFacts,
    pub(super) monitor_binary: Result<PathBuf, String>,
    /// The cgroup (one directory per hierarchy) every lockstep-monitor moves itself into.
    pub(super) monitor_cgroups: Vec<PathBuf>,
    pub(super) index: RwLock<BTreeMap<String, Arc<Entry>>>,
    pub(super) reservations: Mutex<HashMap<NameKey, Arc<Mutex<()>>>>,
    /// The last cgroup reading per container, for CPU rates.
    pub(super) samples: Mutex<HashMap<String, stats::CgroupSample>>,
}

impl ContainerManager {
    /// Loads the records and reconciles them with the monitors and runtimes (see recovery).
    /// `handle` runs the image service's async calls from the blocking code here.
    pub fn start(
        info: Arc<RuntimeInfo>,
        sandboxes: Arc<SandboxManager>,
        images: Arc<ImageService>,
        handle: tokio::runtime::Handle,
    ) -> Result<Arc<ContainerManager>, ContainerError> {
        let config = info.config();
        let host = HostFacts::read().map_err(internal("cannot read the host's facts"))?;
        let monitor_cgroups = monitor_cgroups(config.cgroup_driver);
        let manager = ContainerManager {
            records: RecordDir::new(config.root.join("containers")),
            layers_root: config.root.join("containers"),
            run_root: config.runroot.join("containers"),
            host,
            monitor_binary: crate::helpers::find_helper(monitor::BINARY).map_err(|e| e.to_string()),
            monitor_cgroups,
            info,
            sandboxes,
            images,
            handle,
            index: RwLock::new(BTreeMap::new()),
            reservations: Mutex::new(HashMap::new()),
            samples: Mutex::new(HashMap::new()),
        };
        manager.recover()?;
        Ok(Arc::new(manager))
    }

    pub(super) fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    pub(super) fn existing(&self, id: &str) -> Result<Arc<Entry>, ContainerError> {
        if !crate::ids::is_safe_id(id) {
            return Err(ContainerError::InvalidArgument(format!("container_id {id:?} is not a container id")));
        }
        self.entry(id).ok_or_else(|| not_found(id))
    }

    /// The entry of `id` if it names a container lockstepd knows; None for any other string.
    fn known(&self, id: &str) -> Option<Arc<Entry>> {
        crate::ids::is_safe_id(id).then(|| self.entry(id)).flatten()
    }

    /// How a handler's OCI runtime is run, in lockstepd's layout.
    pub(super) fn command(&self, handler: &str) -> Result<RuntimeCommand, ContainerError> {
        let handlers = self.info.handlers();
        let probed = handlers.get(handler).ok_or_else(|| {
            ContainerError::FailedPrecondition(format!("runtime handler {handler:?} is not configured"))
        })?;
        let oci_dir = self.info.config().runroot.join("oci");
        let systemd = self.info.config().cgroup_driver == crate::config::CgroupDriver::Systemd;
        probed.command(&oci_dir, systemd).ok_or_else(|| {
            ContainerError::FailedPrecondition(format!("runtime handler {handler:?}: its binary was not found"))
        })
    }

    fn monitored(&self, handler: &str, runtime: Result<CommandRuntime, String>) -> Arc<dyn ContainerRuntime> {
        Arc::new(Monitored {
            handler: handler.to_string(),
            runtime,
            monitor_binary: self.monitor_binary.clone(),
            monitor_cgroups: self.monitor_cgroups.clone(),
        })
    }

    /// The runtime a new container of `handler` is made with.
    pub(super) fn runtime(&self, handler: &str) -> Result<Arc<dyn ContainerRuntime>, ContainerError> {
        let command = self.command(handler)?;
        Ok(self.monitored(handler, Ok(CommandRuntime::new(command))))
    }

    /// The runtime of an existing container: its handler, run as when it was created. A
    /// handler that cannot be run now is FailedPrecondition.
    pub(super) fn runtime_of(&self, record: &ContainerRecord) -> Result<Arc<dyn ContainerRuntime>, ContainerError> {
        let command = self.command(&record.oci_handler)?;
        let runtime = CommandRuntime::new(command.hiding_cgroup2(record.cgroup2_hidden.clone()));
        Ok(self.monitored(&record.oci_handler, Ok(runtime)))
    }

    /// As `runtime_of`, but a container whose handler cannot be run now is still watched
    /// through its monitor (only the runtime's calls fail): for reading its state.
    pub(super) fn watcher_of(&self, record: &ContainerRecord) -> Arc<dyn ContainerRuntime> {
        let runtime = self
            .command(&record.oci_handler)
            .map(|command| CommandRuntime::new(command.hiding_cgroup2(record.cgroup2_hidden.clone())))
            .map_err(|e| e.to_string());
        self.monitored(&record.oci_handler, runtime)
    }

    /// The ids of a sandbox's containers.
    fn of_sandbox(&self, sandbox_id: &str) -> Vec<Arc<Entry>> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index.values().filter(|e| e.read().sandbox_id == sandbox_id).cloned().collect()
    }

    // ---- StartContainer -------------------------------------------------------------------

    pub fn start_container(&self, id: &str) -> Result<(), ContainerError> {
        let entry = self.existing(id)?;
        let _op = lock(&entry.op);
        let record = self.refresh(&entry);
        if record.state != RecordState::Created {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {id} is {}, not created: only a created container can be started",
                state_word(record.state)
            )));
        }
        let runtime = self.runtime_of(&record)?;
        runtime.start(id).map_err(|e| ContainerError::Internal(format!("cannot start container {id}: {e}")))?;
        let mut updated = record;
        updated.state = RecordState::Running;
        updated.started_at = now_nanos();
        self.records.put(id, &updated).map_err(internal("cannot write the container record"))?;
        *entry.record.write().unwrap_or_else(|p| p.into_inner()) = updated;
        tracing::info!(container = %id, "container started");
        Ok(())
    }

    // ---- StopContainer --------------------------------------------------------------------

    /// The stop signal, then SIGKILL after `timeout` seconds (0: SIGKILL at once); returns once
    /// the exit is recorded. Idempotent as the CRI requires: stopping a stopped, removed or
    /// unknown container succeeds (the kubelet retries stops of containers already gone).
    pub fn stop(&self, id: &str, timeout: i64) -> Result<(), ContainerError> {
        if timeout < 0 {
            return Err(ContainerError::InvalidArgument(format!("timeout: {timeout} is negative")));
        }
        if id.is_empty() {
            return Err(ContainerError::InvalidArgument("container_id is empty".into()));
        }
        let Some(entry) = self.known(id) else {
            tracing::debug!(container = %id, "StopContainer of an unknown container: nothing to stop");
            return Ok(());
        };
        let grace = Duration::from_secs(timeout as u64);
        if !grace.is_zero() && self.signal_stop(&entry)? {
            // The grace period is waited out without the container's lock: a shorter stop (a
            // forced pod deletion), RemoveContainer or StopPodSandbox meanwhile kills at once.
            let record = entry.read();
            let runtime = self.runtime_of(&record)?;
            match runtime.wait_exit(&ContainerDir::new(&record.run_dir), id, grace) {
                Ok(exit) => {
                    self.mark_exited(&entry, lifecycle::exit_info(&exit));
                    return Ok(());
                }
                Err(MonitorError::ExitTimeout { .. }) => {
                    tracing::info!(container = %id, ?grace, "stop signal not heeded in time: SIGKILL");
                }
                Err(MonitorError::Lost { .. }) => {
                    // No monitor to record the exit: the runtime's word, through the same grace.
                    if lifecycle::stopped_within(runtime.as_ref(), id, grace)
                        .map_err(|e| ContainerError::Internal(e.to_string()))?
                    {
                        self.mark_exited(&entry, lifecycle::lost_exit(UNKNOWN_EXIT));
                        return Ok(());
                    }
                    tracing::info!(container = %id, ?grace, "stop signal not heeded in time: SIGKILL");
                }
                Err(e) => return Err(ContainerError::Internal(format!("cannot stop container {id}: {e}"))),
            }
        }
        let _op = lock(&entry.op);
        self.kill_locked(&entry)
    }

    /// Sends a running container its stop signal (under its lock); whether one was sent. A
    /// container never started runs only the runtime's init, waiting: nothing to warn.
    fn signal_stop(&self, entry: &Entry) -> Result<bool, ContainerError> {
        let _op = lock(&entry.op);
        let record = self.refresh(entry);
        if record.state != RecordState::Running {
            return Ok(false);
        }
        let runtime = self.runtime_of(&record)?;
        send(runtime.as_ref(), &record.id, record.stop_signal, false)?;
        Ok(true)
    }

    /// Kills a created or running container, its lock held, and records the exit.
    fn kill_locked(&self, entry: &Entry) -> Result<(), ContainerError> {
        let record = self.refresh(entry);
        if !matches!(record.state, RecordState::Created | RecordState::Running) {
            return Ok(());
        }
        let id = record.id.as_str();
        let runtime = self.runtime_of(&record)?;
        send(runtime.as_ref(), id, SIGKILL, true)?;
        let exit =
            lifecycle::wait_killed(runtime.as_ref(), &record).map_err(|e| ContainerError::Internal(e.to_string()))?;
        self.mark_exited(entry, exit);
        tracing::info!(container = %id, "container stopped");
        Ok(())
    }

    // ---- RemoveContainer ------------------------------------------------------------------

    /// Kills a running container, then removes everything of it but its log. Idempotent.
    pub fn remove(&self, id: &str) -> Result<(), ContainerError> {
        if !crate::ids::is_safe_id(id) {
            return Ok(());
        }
        let Some(entry) = self.entry(id) else { return Ok(()) };
        let _op = lock(&entry.op);
        let mut record = entry.read();
        if record.state != RecordState::Removing {
            record.state = RecordState::Removing;
            // A crash from here on finishes the removal at the next start.
            self.records.put(id, &record).map_err(internal("cannot write the container record"))?;
            *entry.record.write().unwrap_or_else(|p| p.into_inner()) = record.clone();
        }
        self.tear_down(&record)?;
        self.records.remove(id).map_err(internal("cannot remove the container record"))?;
        self.index.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        lock(&self.reservations).remove(&(record.sandbox_id.clone(), record.name.clone(), record.attempt));
        lock(&self.samples).remove(id);
        tracing::info!(container = %id, "container removed");
        Ok(())
    }

    /// Everything of a container but its record and log, each step idempotent: the process
    /// (killed), the runtime's state and cgroup, the mounts and directories, the image holds.
    pub(super) fn tear_down(&self, record: &ContainerRecord) -> Result<(), ContainerError> {
        let id = record.id.as_str();
        let dir = ContainerDir::new(&record.run_dir);
        if let Ok(runtime) = self.runtime_of(record) {
            let alive = match runtime.watch(&dir) {
                Ok(MonitorState::Running { .. }) => true,
                Ok(MonitorState::Lost) => {
                    runtime.oci_state(id).ok().flatten().is_some_and(|s| s.status != OciStatus::Stopped)
                }
                _ => false,
            };
            if alive {
                send(runtime.as_ref(), id, SIGKILL, true)?;
                lifecycle::wait_killed(runtime.as_ref(), record)
                    .map_err(|e| ContainerError::Internal(e.to_string()))?;
            }
            runtime.delete(id).map_err(|e| ContainerError::Internal(format!("cannot delete container {id}: {e}")))?;
        }
        rootfs::remove_dir(&record.run_dir).map_err(internal("cannot remove the container's files"))?;
        rootfs::remove_dir(&record.layer_dir).map_err(internal("cannot remove the container's writable layer"))?;
        for holder in std::iter::once(id).chain(record.volume_holds.iter().map(String::as_str)) {
            self.handle.block_on(self.images.release(holder)).map_err(internal("cannot release the image hold"))?;
        }
        Ok(())
    }

    // ---- ContainerStatus and ListContainers -----------------------------------------------

    /// The record with what happened since it was written: an exit the monitor recorded.
    pub(super) fn refresh(&self, entry: &Entry) -> ContainerRecord {
        let record = entry.read();
        if !matches!(record.state, RecordState::Created | RecordState::Running) {
            return record;
        }
        match lifecycle::observe(&record, self.watcher_of(&record).as_ref()) {
            Observed::Unchanged => record,
            Observed::Exited(exit) => self.mark_exited(entry, exit),
        }
    }

    /// Records an exit (once), on disk and in memory.
    pub(super) fn mark_exited(&self, entry: &Entry, exit: ExitInfo) -> ContainerRecord {
        let mut record = entry.record.write().unwrap_or_else(|p| p.into_inner());
        if matches!(record.state, RecordState::Created | RecordState::Running) {
            record.state = RecordState::Exited;
            record.exit = Some(exit);
            if let Err(e) = self.records.put(&record.id, &*record) {
                tracing::warn!(container = %record.id, error = %e, "cannot persist the exit; it is read again later");
            }
        }
        record.clone()
    }

    pub fn status(&self, id: &str, verbose: bool) -> Result<model::ContainerStatusResponse, ContainerError> {
        let entry = self.existing(id)?;
        let record = self.refresh(&entry);
        let mut info = HashMap::new();
        if verbose {
            let detail = serde_json::json!({
                "id": record.id,
                "sandboxID": record.sandbox_id,
                "pid": if record.state == RecordState::Running || record.state == RecordState::Created { record.init_pid } else { 0 },
                "runtimeHandler": record.oci_handler,
                "bundle": record.bundle(),
                "specPath": record.bundle().join("config.json"),
                "rootfs": record.rootfs(),
                "writableLayer": record.layer_dir,
                "monitorDir": record.run_dir,
                "stopSignal": signal::name(record.stop_signal),
            });
            info.insert("info".to_string(), detail.to_string());
        }
        Ok(model::ContainerStatusResponse { status: Some(record.to_status()), info })
    }

    pub fn list(&self, filter: Option<&model::ContainerFilter>) -> Vec<model::Container> {
        let entries: Vec<Arc<Entry>> = match filter.map(|f| f.id.as_str()).filter(|id| !id.is_empty()) {
            Some(id) => self.entry(id).into_iter().collect(),
            None => self.index.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect(),
        };
        entries
            .iter()
            .map(|e| self.refresh(e))
            .filter(|r| r.state != RecordState::Removing)
            .map(|r| r.to_container())
            .filter(|c| crate::filter::container_matches(c, filter))
            .collect()
    }
}

/// StopPodSandbox and RemovePodSandbox go through the pod's containers first.
impl PodContainers for ContainerManager {
    fn stop_all(&self, sandbox_id: &str) -> Result<(), String> {
        let entries = self.of_sandbox(sandbox_id);
        let problems: Vec<String> = std::thread::scope(|scope| {
            let stops: Vec<_> = entries
                .iter()
                .map(|e| {
                    scope.spawn(move || {
                        let _op = lock(&e.op);
                        self.kill_locked(e)
                    })
                })
                .collect();
            stops
                .into_iter()
                .filter_map(|s| {
                    s.join().map_err(|_| "a stop panicked".to_string()).and_then(|r| r.map_err(|e| e.to_string())).err()
                })
                .collect()
        });
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    fn remove_all(&self, sandbox_id: &str) -> Result<(), String> {
        let ids: Vec<String> = self.of_sandbox(sandbox_id).iter().map(|e| e.read().id).collect();
        let problems: Vec<String> = ids.iter().filter_map(|id| self.remove(id).err().map(|e| e.to_string())).collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Sends a signal; a container that is no longer running has nothing to receive it.
pub(super) fn send(runtime: &dyn ContainerRuntime, id: &str, signal: i32, all: bool) -> Result<(), ContainerError> {
    match runtime.signal(id, signal, all) {
        Ok(()) | Err(OciError::NotRunning { .. }) | Err(OciError::NotFound { .. }) => Ok(()),
        Err(e) => Err(ContainerError::Internal(format!("cannot signal container {id}: {e}"))),
    }
}

pub(super) fn state_word(state: RecordState) -> &'static str {
    match state {
        RecordState::Creating => "being created",
        RecordState::Created => "created",
        RecordState::Running => "running",
        RecordState::Exited => "exited",
        RecordState::Removing => "being removed",
    }
}

/// The monitors' own cgroup, made when missing: out of lockstepd's, so that a restart of its
/// service (systemd's KillMode=control-group) does not take the monitors along, and their memory
/// is not charged to it. Without one (no cgroupfs access) they stay in lockstepd's, with a warning.
fn monitor_cgroups(driver: crate::config::CgroupDriver) -> Vec<PathBuf> {
    use crate::sandbox::cgroups;
    let made = cgroups::plan(driver, "", "monitors").and_then(|planned| {
        cgroups::create(&planned.missing)?;
        Ok(planned.leaves)
    });
    made.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no cgroup of their own for the monitors: they stay in lockstepd's");
        Vec::new()
    })
}

pub(super) use crate::timing::now_nanos;
