//! The container manager: CreateContainer as a straight line of steps, each registering its
//! undo; start, stop, remove, status, list, resource updates, log reopening and ExecSync over
//! crash-safe records; a sandbox's containers stopped and removed with it. Blocking code (call
//! it off the async workers: image holds are awaited with the runtime handle it was given).
//! May touch: `<root>/containers`, `<runroot>/containers`, the OCI runtimes' state, the
//! containers' cgroups (through the runtimes), their monitors and their mounts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lockstep_cri::model;

use super::host::{self, HostFacts};
use super::record::{ContainerRecord, ExitInfo, RecordState};
use super::spec::{self, ImageView, NamespaceSource, RuntimeSettings, SandboxView, SpecInput};
use super::{resources, rootfs, signal, stats, ErrorKind, SpecError};
use crate::image::reference;
use crate::image::service::ImageService;
use crate::image::store::records::ImageRecord;
use crate::info::RuntimeInfo;
use crate::monitor::{self, ContainerDir, MonitorConfig, MonitorError, MonitorState};
use crate::oci::{CommandRuntime, ExecOptions, OciError, OciRuntime, OciStatus, DEFAULT_EXEC_OUTPUT_CAP};
use crate::persist::RecordDir;
use crate::sandbox::record::{SandboxRecord, SandboxState};
use crate::sandbox::{PodContainers, SandboxManager};
use crate::undo::Undo;

/// How long the monitor may take to report that the runtime created the container.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGKILLed container may take to be reaped and recorded.
const KILL_WAIT: Duration = Duration::from_secs(30);
const SIGKILL: i32 = 9;

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

fn internal<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ContainerError + '_ {
    move |e| ContainerError::Internal(format!("{what}: {e}"))
}

fn not_found(id: &str) -> ContainerError {
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The CRI's uniqueness key: a name and attempt within a sandbox.
type NameKey = (String, String, u32);

pub struct ContainerManager {
    pub(super) info: Arc<RuntimeInfo>,
    sandboxes: Arc<SandboxManager>,
    pub(super) images: Arc<ImageService>,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) records: RecordDir,
    /// `<root>/containers`: records and writable layers.
    pub(super) layers_root: PathBuf,
    /// `<runroot>/containers`: bundles, rootfs mount points, monitor files.
    pub(super) run_root: PathBuf,
    host: HostFacts,
    monitor_binary: Result<PathBuf, String>,
    pub(super) index: RwLock<BTreeMap<String, Arc<Entry>>>,
    reservations: Mutex<HashMap<NameKey, Arc<Mutex<()>>>>,
    /// The last cgroup reading per container, for CPU rates.
    samples: Mutex<HashMap<String, stats::CgroupSample>>,
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
        let manager = ContainerManager {
            records: RecordDir::new(config.root.join("containers")),
            layers_root: config.root.join("containers"),
            run_root: config.runroot.join("containers"),
            host,
            monitor_binary: crate::helpers::find_helper(monitor::BINARY).map_err(|e| e.to_string()),
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

    fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    fn existing(&self, id: &str) -> Result<Arc<Entry>, ContainerError> {
        if !crate::ids::is_safe_id(id) {
            return Err(ContainerError::InvalidArgument(format!("container_id {id:?} is not a container id")));
        }
        self.entry(id).ok_or_else(|| not_found(id))
    }

    /// The OCI runtime of a handler, in lockstepd's layout.
    pub(super) fn runtime(&self, handler: &str) -> Result<CommandRuntime, ContainerError> {
        let handlers = self.info.handlers();
        let probed = handlers.get(handler).ok_or_else(|| {
            ContainerError::FailedPrecondition(format!("runtime handler {handler:?} is not configured"))
        })?;
        let oci_dir = self.info.config().runroot.join("oci");
        let systemd = self.info.config().cgroup_driver == crate::config::CgroupDriver::Systemd;
        let command = probed.command(&oci_dir, systemd).ok_or_else(|| {
            ContainerError::FailedPrecondition(format!("runtime handler {handler:?}: its binary was not found"))
        })?;
        Ok(CommandRuntime::new(command))
    }

    // ---- CreateContainer ------------------------------------------------------------------

    pub fn create(&self, request: &model::CreateContainerRequest) -> Result<String, ContainerError> {
        let invalid = |field: &str, problem: &str| ContainerError::InvalidArgument(format!("{field}: {problem}"));
        let config = request.config.as_ref().ok_or_else(|| invalid("config", "is missing"))?;
        let metadata = config.metadata.as_ref().ok_or_else(|| invalid("config.metadata", "is missing"))?;
        if metadata.name.is_empty() {
            return Err(invalid("config.metadata.name", "is empty"));
        }
        let image_name = config.image.as_ref().map(|i| i.image.as_str()).unwrap_or_default();
        if image_name.is_empty() {
            return Err(invalid("config.image.image", "is empty"));
        }
        let sandbox_id = &request.pod_sandbox_id;
        if !crate::ids::is_safe_id(sandbox_id) {
            return Err(invalid("pod_sandbox_id", &format!("{sandbox_id:?} is not a pod sandbox id")));
        }
        let sandbox = self
            .sandboxes
            .get(sandbox_id)
            .ok_or_else(|| ContainerError::NotFound(format!("pod_sandbox_id {sandbox_id:?}: no such pod sandbox")))?;
        let pause_alive = sandbox.namespaces.pause.as_ref().is_none_or(crate::sandbox::pause::alive);
        if sandbox.state != SandboxState::Ready || !pause_alive {
            return Err(ContainerError::FailedPrecondition(format!(
                "pod_sandbox_id {sandbox_id:?}: the pod sandbox is not ready (stopped or broken)"
            )));
        }

        let key = (sandbox_id.clone(), metadata.name.clone(), metadata.attempt);
        let key_lock = lock(&self.reservations).entry(key.clone()).or_default().clone();
        let _reserved = lock(&key_lock);
        let same = self.index.read().unwrap_or_else(|p| p.into_inner()).values().map(|e| e.read()).find(|r| {
            r.sandbox_id == key.0 && r.name == key.1 && r.attempt == key.2 && r.state != RecordState::Removing
        });
        if let Some(found) = same {
            // The kubelet retried a call that timed out: the container it asked for.
            tracing::info!(container = %found.id, name = %key.1, attempt = key.2, "CreateContainer retried: same id");
            return Ok(found.id);
        }

        let image = self
            .images
            .resolve(image_name)
            .map_err(|e| invalid("config.image.image", &format!("{image_name:?}: {e}")))?
            .ok_or_else(|| {
                ContainerError::NotFound(format!(
                    "config.image.image {image_name:?}: the image is not present; pull it first"
                ))
            })?;
        let id = crate::ids::random_id().map_err(internal("cannot make a container id"))?;
        let record = self.create_steps(&id, config, &sandbox, &image, image_name)?;
        self.index.write().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), Entry::new(record));
        Ok(id)
    }

    fn create_steps(
        &self,
        id: &str,
        config: &model::ContainerConfig,
        sandbox: &SandboxRecord,
        image: &ImageRecord,
        image_name: &str,
    ) -> Result<ContainerRecord, ContainerError> {
        let metadata = config.metadata.clone().unwrap_or_default();
        let run_dir = self.run_root.join(id);
        let layer_dir = self.layers_root.join(id);
        let runtime = self.runtime(&sandbox.oci_handler)?;
        let monitor_binary = self.monitor_binary.clone().map_err(ContainerError::Unavailable)?;
        let log_path = spec::log_file(&sandbox.log_directory, &config.log_path)?;
        let mut record = ContainerRecord {
            id: id.to_string(),
            sandbox_id: sandbox.id.clone(),
            name: metadata.name.clone(),
            attempt: metadata.attempt,
            state: RecordState::Creating,
            created_at: now_nanos(),
            started_at: 0,
            exit: None,
            oci_handler: sandbox.oci_handler.clone(),
            stop_signal: signal::DEFAULT_STOP_SIGNAL,
            init_pid: 0,
            run_dir: run_dir.clone(),
            layer_dir: layer_dir.clone(),
            log_path: log_path.clone(),
            volume_holds: Vec::new(),
            status_template: String::new(),
        };

        let mut undo = Undo::new();
        let mut timer = crate::timing::StepTimer::new();
        // 1. The record first: a crash from here on is rolled back at the next start.
        self.records.put(id, &record).map_err(internal("cannot write the container record"))?;
        let records = self.records.clone();
        let record_id = id.to_string();
        undo.push("remove the container record", move || records.remove(&record_id).map_err(|e| e.to_string()));
        timer.mark("record");

        // 2. The image's layers, held against removal.
        let held = self.hold(id, &image.id.to_string())?;
        self.push_release(&mut undo, id.to_string());
        timer.mark("hold");

        // 3. The rootfs: the layers under a writable one; directories swept on failure.
        let (swept_run, swept_layer) = (run_dir.clone(), layer_dir.clone());
        undo.push("remove the container's directories", move || {
            rootfs::remove_dir(&swept_run).map_err(|e| e.to_string())?;
            rootfs::remove_dir(&swept_layer).map_err(|e| e.to_string())
        });
        rootfs::mount_rootfs(&held.layer_dirs, &layer_dir, &record.rootfs())
            .map_err(internal("cannot mount the container's rootfs"))?;
        timer.mark("rootfs");

        // 4. Image volumes (1.31+), each held and mounted read-only.
        let mut resolved_volumes = BTreeMap::new();
        for (i, m) in config.mounts.iter().enumerate() {
            let Some(volume) = m.image.as_ref().filter(|img| !img.image.is_empty()) else { continue };
            let field = format!("config.mounts[{i}].image.image");
            let volume_image = self
                .images
                .resolve(&volume.image)
                .map_err(|e| ContainerError::InvalidArgument(format!("{field}: {e}")))?
                .ok_or_else(|| {
                    ContainerError::NotFound(format!("{field}: image {:?} is not present; pull it first", volume.image))
                })?;
            let holder = format!("{id}-v{i}");
            let held = self.hold(&holder, &volume_image.id.to_string())?;
            self.push_release(&mut undo, holder.clone());
            record.volume_holds.push(holder);
            let target = run_dir.join("volumes").join(i.to_string());
            rootfs::mount_image_readonly(&held.layer_dirs, &target)
                .map_err(internal("cannot mount the image volume"))?;
            resolved_volumes.insert(volume.image.clone(), target);
        }

        // 5. The spec: what the host says, then the pure builder.
        let run = &image.config.config;
        let image_view = ImageView {
            name: image_name.to_string(),
            entrypoint: run.entrypoint.clone().unwrap_or_default(),
            cmd: run.cmd.clone().unwrap_or_default(),
            env: run.env.clone().unwrap_or_default(),
            working_dir: run.working_dir.clone(),
            user: run.user.clone(),
            stop_signal: run.stop_signal.clone(),
            rootfs: record.rootfs(),
        };
        let mut resolved = host::resolve(config, &record.rootfs(), &run.user)?;
        resolved.image_volumes = resolved_volumes;
        resolved.target_pid_namespace = self.target_pid_namespace(config)?;
        let settings = {
            let handlers = self.info.handlers();
            let features = handlers.get(&sandbox.oci_handler).map(|h| h.features).unwrap_or_default();
            RuntimeSettings::new(self.info.config().cgroup_driver, features, self.host.clone())
        };
        let view = sandbox_view(sandbox);
        let built = spec::build(&SpecInput {
            id,
            config,
            sandbox: &view,
            image: &image_view,
            runtime: &settings,
            resolved: &resolved,
        })?;
        for warning in &built.warnings {
            tracing::warn!(container = %id, %warning, "CreateContainer honoured a request only in part");
        }
        record.stop_signal = built.stop_signal;
        let bundle = record.bundle();
        let spec_bytes = serde_json::to_vec_pretty(&built.spec).map_err(internal("cannot encode the OCI spec"))?;
        // Not fsynced: the bundle is needed only until the runtime's create has read it, and a
        // crash before that leaves a `creating` record, which recovery rolls back.
        std::fs::create_dir_all(&bundle)
            .and_then(|()| std::fs::write(bundle.join("config.json"), &spec_bytes))
            .map_err(|e| ContainerError::Internal(format!("cannot write {}/config.json: {e}", bundle.display())))?;
        record.set_template(&status_template(config, image, image_name, &built, log_path.as_deref()));
        timer.mark("spec");

        // 6. The monitor, which runs the runtime's create. Its undo kills, waits, deletes.
        let dir = ContainerDir::new(&run_dir);
        let (undo_runtime, undo_dir, undo_id) = (runtime.clone(), dir.clone(), id.to_string());
        undo.push("kill and delete the container", move || {
            let _ = undo_runtime.kill(&undo_id, SIGKILL, true);
            if matches!(monitor::state(&undo_dir), Ok(MonitorState::Running { .. })) {
                let _ = monitor::wait_exit(&undo_dir, &undo_id, KILL_WAIT);
            }
            undo_runtime.delete(&undo_id).map_err(|e| e.to_string())
        });
        let monitor_config = MonitorConfig {
            container_id: id.to_string(),
            runtime: runtime.command().clone(),
            bundle,
            log_path,
            tty: config.tty,
            stdin: config.stdin,
            max_log_line: monitor::log::DEFAULT_MAX_LINE,
        };
        let spawned = monitor::spawn(&monitor_binary, &dir, &monitor_config, CREATE_TIMEOUT).map_err(|e| match e {
            MonitorError::CreateFailed { message, .. } => ContainerError::Internal(format!(
                "the OCI runtime {} could not create the container: {message}",
                sandbox.oci_handler
            )),
            other => ContainerError::Internal(other.to_string()),
        })?;
        timer.mark("monitor");

        // 7. Created, on disk before the answer.
        record.init_pid = spawned.init_pid;
        record.state = RecordState::Created;
        self.records.put(id, &record).map_err(internal("cannot write the container record"))?;
        undo.disarm();
        timer.mark("created");
        tracing::debug!(container = %id, steps = %timer, "CreateContainer step times");
        tracing::info!(container = %id, sandbox = %sandbox.id, name = %record.name, attempt = record.attempt,
            "container created");
        Ok(record)
    }

    fn hold(&self, holder: &str, image_id: &str) -> Result<crate::image::service::HeldImage, ContainerError> {
        self.handle.block_on(self.images.hold(holder, image_id)).map_err(|e| match e {
            crate::image::service::ImageError::NotFound(_) => ContainerError::NotFound(format!(
                "config.image.image: image {image_id} was removed while the container was being created"
            )),
            other => ContainerError::Internal(format!("cannot hold image {image_id}: {other}")),
        })
    }

    fn push_release(&self, undo: &mut Undo, holder: String) {
        let (images, handle) = (self.images.clone(), self.handle.clone());
        undo.push("release the image hold", move || {
            handle.block_on(images.release(&holder)).map_err(|e| e.to_string())
        });
    }

    /// The pid namespace of the container that namespace_options.target_id names.
    fn target_pid_namespace(&self, config: &model::ContainerConfig) -> Result<Option<PathBuf>, ContainerError> {
        let options =
            config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.as_ref());
        let Some(options) = options.filter(|o| o.pid == model::NamespaceMode::Target as i32) else {
            return Ok(None);
        };
        let field = "config.linux.security_context.namespace_options.target_id";
        let target = self
            .entry(&options.target_id)
            .map(|e| self.refresh(&e))
            .ok_or_else(|| ContainerError::NotFound(format!("{field}: no container {:?}", options.target_id)))?;
        if !matches!(target.state, RecordState::Created | RecordState::Running) || target.init_pid <= 0 {
            return Err(ContainerError::FailedPrecondition(format!(
                "{field}: container {:?} is not running",
                options.target_id
            )));
        }
        Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", target.init_pid))))
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
        let runtime = self.runtime(&record.oci_handler)?;
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
    /// the exit is recorded. Stopping a stopped container succeeds.
    pub fn stop(&self, id: &str, timeout: i64) -> Result<(), ContainerError> {
        if timeout < 0 {
            return Err(ContainerError::InvalidArgument(format!("timeout: {timeout} is negative")));
        }
        let entry = self.existing(id)?;
        let _op = lock(&entry.op);
        self.stop_locked(&entry, Duration::from_secs(timeout as u64))
    }

    fn stop_locked(&self, entry: &Entry, grace: Duration) -> Result<(), ContainerError> {
        let record = self.refresh(entry);
        if !matches!(record.state, RecordState::Created | RecordState::Running) {
            return Ok(());
        }
        let id = record.id.as_str();
        let runtime = self.runtime(&record.oci_handler)?;
        let dir = ContainerDir::new(&record.run_dir);
        // A container never started runs only the runtime's init, waiting: nothing to warn.
        if !grace.is_zero() && record.state == RecordState::Running {
            send(&runtime, id, record.stop_signal, false)?;
            match monitor::wait_exit(&dir, id, grace) {
                Ok(exit) => {
                    self.mark_exited(entry, exit_info(&exit));
                    return Ok(());
                }
                Err(MonitorError::ExitTimeout { .. }) | Err(MonitorError::Lost { .. }) => {
                    tracing::info!(container = %id, ?grace, "stop signal not heeded in time: SIGKILL");
                }
                Err(e) => return Err(ContainerError::Internal(format!("cannot stop container {id}: {e}"))),
            }
        }
        send(&runtime, id, SIGKILL, true)?;
        let exit = self.wait_killed(&runtime, &dir, id)?;
        self.mark_exited(entry, exit);
        tracing::info!(container = %id, "container stopped");
        Ok(())
    }

    /// After SIGKILL: the monitor's record, or (monitor lost) the runtime's word that it stopped.
    fn wait_killed(&self, runtime: &CommandRuntime, dir: &ContainerDir, id: &str) -> Result<ExitInfo, ContainerError> {
        match monitor::wait_exit(dir, id, KILL_WAIT) {
            Ok(exit) => Ok(exit_info(&exit)),
            Err(MonitorError::Lost { .. }) => {
                let deadline = std::time::Instant::now() + KILL_WAIT;
                loop {
                    let state = runtime.state(id).map_err(internal("cannot ask the OCI runtime"))?;
                    if state.is_none_or(|s| s.status == OciStatus::Stopped) {
                        return Ok(lost_exit(128 + SIGKILL));
                    }
                    if std::time::Instant::now() > deadline {
                        return Err(ContainerError::Internal(format!("container {id} survived SIGKILL")));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Err(e) => Err(ContainerError::Internal(format!("container {id} did not exit after SIGKILL: {e}"))),
        }
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
        if let Ok(runtime) = self.runtime(&record.oci_handler) {
            let alive = match monitor::state(&dir) {
                Ok(MonitorState::Running { .. }) => true,
                Ok(MonitorState::Lost) => {
                    runtime.state(id).ok().flatten().is_some_and(|s| s.status != OciStatus::Stopped)
                }
                _ => false,
            };
            if alive {
                send(&runtime, id, SIGKILL, true)?;
                self.wait_killed(&runtime, &dir, id)?;
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
        match monitor::state(&ContainerDir::new(&record.run_dir)) {
            Ok(MonitorState::Running { .. }) => record,
            Ok(MonitorState::Exited(exit)) => self.mark_exited(entry, exit_info(&exit)),
            Ok(MonitorState::Lost) => {
                let running = self
                    .runtime(&record.oci_handler)
                    .ok()
                    .and_then(|r| r.state(&record.id).ok().flatten())
                    .is_some_and(|s| matches!(s.status, OciStatus::Running | OciStatus::Created));
                if running {
                    record
                } else {
                    self.mark_exited(entry, lost_exit(255))
                }
            }
            Err(e) => {
                tracing::warn!(container = %record.id, error = %e, "cannot read the monitor's state");
                record
            }
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

    // ---- ContainerStats and ListContainerStats -----------------------------------------

    /// A container's resource usage; an exited one has only its attributes and layer.
    pub fn stats(&self, id: &str) -> Result<model::ContainerStats, ContainerError> {
        let entry = self.existing(id)?;
        Ok(self.stats_of(&self.refresh(&entry)))
    }

    /// The usage of every running container the filter matches.
    pub fn list_stats(&self, filter: Option<&model::ContainerStatsFilter>) -> Vec<model::ContainerStats> {
        let entries: Vec<Arc<Entry>> = self.index.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        entries
            .iter()
            .map(|e| self.refresh(e))
            .filter(|r| r.state == RecordState::Running)
            .filter(|r| {
                filter.is_none_or(|f| {
                    (f.id.is_empty() || f.id == r.id)
                        && (f.pod_sandbox_id.is_empty() || f.pod_sandbox_id == r.sandbox_id)
                        && crate::filter::labels_match(&r.template().labels, &f.label_selector)
                })
            })
            .map(|r| self.stats_of(&r))
            .collect()
    }

    fn stats_of(&self, record: &ContainerRecord) -> model::ContainerStats {
        let template = record.template();
        let attributes = model::ContainerAttributes {
            id: record.id.clone(),
            metadata: template.metadata,
            labels: template.labels,
            annotations: template.annotations,
        };
        let layer = stats::upper_dir(&record.layer_dir);
        let reading =
            (record.state == RecordState::Running).then(|| stats::sample(record.init_pid, now_nanos())).flatten();
        let reading = reading.unwrap_or(stats::CgroupSample { timestamp: now_nanos(), cpu_ns: None, memory: None });
        let previous = lock(&self.samples).insert(record.id.clone(), reading.clone());
        stats::to_cri(attributes, &reading, previous.as_ref(), &layer)
    }

    /// The ids of a sandbox's containers.
    fn of_sandbox(&self, sandbox_id: &str) -> Vec<Arc<Entry>> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index.values().filter(|e| e.read().sandbox_id == sandbox_id).cloned().collect()
    }

    // ---- UpdateContainerResources, ReopenContainerLog, ExecSync ---------------------------

    pub fn update_resources(
        &self,
        id: &str,
        linux: Option<&model::LinuxContainerResources>,
    ) -> Result<(), ContainerError> {
        let entry = self.existing(id)?;
        let _op = lock(&entry.op);
        let mut record = self.refresh(&entry);
        if !matches!(record.state, RecordState::Created | RecordState::Running) {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {id} is {}: only a created or running container's resources can change",
                state_word(record.state)
            )));
        }
        let Some(linux) = linux else { return Ok(()) };
        let oci = resources::linux_resources(linux, "linux")?;
        let runtime = self.runtime(&record.oci_handler)?;
        runtime.update(id, &oci).map_err(|e| ContainerError::Internal(format!("cannot update container {id}: {e}")))?;
        let mut template = record.template();
        template.resources = Some(model::ContainerResources { linux: Some(linux.clone()), windows: None });
        record.set_template(&template);
        self.records.put(id, &record).map_err(internal("cannot write the container record"))?;
        *entry.record.write().unwrap_or_else(|p| p.into_inner()) = record;
        Ok(())
    }

    pub fn reopen_log(&self, id: &str) -> Result<(), ContainerError> {
        let entry = self.existing(id)?;
        let record = self.refresh(&entry);
        if record.state != RecordState::Running {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {id} is {}: only a running container's log can be reopened",
                state_word(record.state)
            )));
        }
        monitor::reopen_log(&ContainerDir::new(&record.run_dir))
            .map_err(|e| ContainerError::Internal(format!("cannot reopen the log of container {id}: {e}")))
    }

    /// Runs `cmd` in the container as its own process runs (user, env, capabilities), with
    /// `timeout` seconds (0: none) and each stream capped.
    pub fn exec_sync(&self, id: &str, cmd: &[String], timeout: i64) -> Result<model::ExecSyncResponse, ContainerError> {
        if cmd.is_empty() {
            return Err(ContainerError::InvalidArgument("cmd: is empty".into()));
        }
        if timeout < 0 {
            return Err(ContainerError::InvalidArgument(format!("timeout: {timeout} is negative")));
        }
        let entry = self.existing(id)?;
        let record = self.refresh(&entry);
        if record.state != RecordState::Running {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {id} is {}: commands run only in a running container",
                state_word(record.state)
            )));
        }
        let spec_path = record.bundle().join("config.json");
        let spec: oci_spec::runtime::Spec = std::fs::read(&spec_path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
            .map_err(|e| ContainerError::Internal(format!("cannot read {}: {e}", spec_path.display())))?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(cmd.to_vec()));
        process.set_terminal(Some(false));
        let options = ExecOptions {
            timeout: (timeout > 0).then(|| Duration::from_secs(timeout as u64)),
            output_cap: DEFAULT_EXEC_OUTPUT_CAP,
        };
        let runtime = self.runtime(&record.oci_handler)?;
        let outcome = runtime.exec(id, &process, options).map_err(|e| match e {
            OciError::NotRunning { .. } | OciError::NotFound { .. } => {
                ContainerError::FailedPrecondition(format!("container {id} is not running"))
            }
            other => ContainerError::Internal(format!("cannot run {:?} in container {id}: {other}", cmd[0])),
        })?;
        if outcome.timed_out {
            return Err(ContainerError::DeadlineExceeded(format!(
                "command {cmd:?} in container {id} timed out after {timeout}s and was killed"
            )));
        }
        Ok(model::ExecSyncResponse { stdout: outcome.stdout, stderr: outcome.stderr, exit_code: outcome.exit_code })
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
                        self.stop_locked(e, Duration::ZERO)
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
fn send(runtime: &CommandRuntime, id: &str, signal: i32, all: bool) -> Result<(), ContainerError> {
    match runtime.kill(id, signal, all) {
        Ok(()) | Err(OciError::NotRunning { .. }) | Err(OciError::NotFound { .. }) => Ok(()),
        Err(e) => Err(ContainerError::Internal(format!("cannot signal container {id}: {e}"))),
    }
}

pub(super) fn exit_info(exit: &monitor::ExitRecord) -> ExitInfo {
    ExitInfo {
        exit_code: exit.exit_code,
        finished_at: exit.exited_at_ns,
        oom_killed: exit.oom_killed,
        message: String::new(),
    }
}

/// An exit whose code nobody recorded: the monitor was killed.
pub(super) fn lost_exit(code: i32) -> ExitInfo {
    ExitInfo {
        exit_code: code,
        finished_at: now_nanos(),
        oom_killed: false,
        message: "the container's monitor was lost; its real exit code is unknown".into(),
    }
}

fn state_word(state: RecordState) -> &'static str {
    match state {
        RecordState::Creating => "being created",
        RecordState::Created => "created",
        RecordState::Running => "running",
        RecordState::Exited => "exited",
        RecordState::Removing => "being removed",
    }
}

/// What the spec builder needs of the sandbox.
fn sandbox_view(sandbox: &SandboxRecord) -> SandboxView {
    let source = |path: &Option<PathBuf>| match path {
        Some(p) => NamespaceSource::Join(p.clone()),
        None => NamespaceSource::Host,
    };
    SandboxView {
        id: sandbox.id.clone(),
        pod_name: sandbox.metadata.name.clone(),
        pod_namespace: sandbox.metadata.namespace.clone(),
        pod_uid: sandbox.metadata.uid.clone(),
        hostname: sandbox.hostname.clone(),
        network: source(&sandbox.namespaces.network),
        ipc: source(&sandbox.namespaces.ipc),
        uts: source(&sandbox.namespaces.uts),
        pod_pid: sandbox.namespaces.pid_path(),
        resolv_conf: Some(sandbox.files.resolv_conf.clone()),
        hosts: Some(sandbox.files.hosts.clone()),
        hostname_file: Some(sandbox.files.hostname.clone()),
        shm: Some(sandbox.files.shm.clone()),
        cgroup_parent: sandbox.cgroup_parent.clone(),
        privileged: sandbox.security.privileged,
    }
}

/// The status fields fixed at creation.
fn status_template(
    config: &model::ContainerConfig,
    image: &ImageRecord,
    requested: &str,
    built: &spec::BuiltSpec,
    log_path: Option<&Path>,
) -> model::ContainerStatus {
    // The kubelet creates containers by image ID; it shows the name, as containerd gives it.
    let shown = if reference::parse_image_id(requested).is_some() {
        image.repo_tags.first().cloned().unwrap_or_else(|| requested.to_string())
    } else {
        requested.to_string()
    };
    let image_id = image.id.to_string();
    let image_ref = image.repo_digests.first().cloned().unwrap_or_else(|| image_id.clone());
    let given = config.image.clone().unwrap_or_default();
    model::ContainerStatus {
        metadata: config.metadata.clone(),
        image: Some(model::ImageSpec { image: shown, image_ref: image_ref.clone(), ..given }),
        image_ref,
        image_id,
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        mounts: config.mounts.clone(),
        log_path: log_path.map(|p| p.display().to_string()).unwrap_or_default(),
        resources: Some(model::ContainerResources {
            linux: config.linux.as_ref().and_then(|l| l.resources.clone()),
            windows: None,
        }),
        user: Some(built.user.to_cri()),
        stop_signal: signal::to_cri(built.stop_signal) as i32,
        ..Default::default()
    }
}

pub(super) fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or_default()
}
