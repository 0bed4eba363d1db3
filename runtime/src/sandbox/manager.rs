//! The sandbox manager: RunPodSandbox (its creation is in create.rs), stop, remove, status and
//! list; kubelet retries with the same metadata answered with the same id.
//! May touch: `<root>/sandboxes`, `<root>/cni`, `<runroot>/sandboxes/<id>`, the pods'
//! namespaces and pause processes, and the CNI plugins it runs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lockstep_cri::model;

use super::namespaces;
use super::record::{Metadata, SandboxRecord, SandboxState};
use super::reservations::Reservations;
use super::validate::{self, BadField, PodPlan};
use super::{cgroups, files, pause};
use crate::cni::exec::Plugins;
use crate::cni::network::{self, Attachment, AttachmentCache};
use crate::filter::sandbox_matches;
use crate::info::RuntimeInfo;
use crate::persist::RecordDir;

/// A cause, kept with its own chain of sources.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong, by the gRPC code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    InvalidArgument(#[from] BadField),
    #[error("pod sandbox {0:?} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Something the caller may retry (a CNI DEL that failed, a network not ready yet).
    #[error("{what}: {source}")]
    Unavailable { what: String, source: Cause },
    #[error("{what}: {source}")]
    Internal { what: String, source: Cause },
}

impl SandboxError {
    pub fn internal(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        SandboxError::Internal { what: what.into(), source: source.into() }
    }
    pub fn unavailable(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        SandboxError::Unavailable { what: what.into(), source: source.into() }
    }
}

/// `map_err(internal("what failed"))`: an Internal error that keeps its cause.
pub(super) fn internal<E: Into<Cause>>(what: &str) -> impl FnOnce(E) -> SandboxError + '_ {
    move |e| SandboxError::internal(what, e)
}

/// Why a sandbox directory stays.
#[derive(Debug, thiserror::Error)]
pub enum SandboxDirError {
    #[error("{0} stays: its CNI attachment is still cached, and a DEL needs the network namespace pinned there")]
    AttachmentCached(PathBuf),
    #[error(transparent)]
    Cache(#[from] crate::persist::PersistError),
    #[error(transparent)]
    Mounts(#[from] files::FilesError),
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
}

/// What a sandbox's containers must go through before the sandbox stops or goes; containers
/// (CreateContainer and the rest) implement it.
pub trait PodContainers: Send + Sync {
    /// Stops every container of the sandbox.
    fn stop_all(&self, sandbox_id: &str) -> Result<(), String>;
    /// Removes every container of the sandbox.
    fn remove_all(&self, sandbox_id: &str) -> Result<(), String>;
}

/// Until containers exist: nothing to stop or remove.
pub struct NoContainers;

impl PodContainers for NoContainers {
    fn stop_all(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn remove_all(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// One sandbox held in memory: `op` serialises the operations on it, `record` is what readers
/// see, `removed` is set (under `op`) when RemovePodSandbox finished: an operation that was
/// waiting for `op` then finds the sandbox gone.
pub(super) struct Entry {
    op: Mutex<()>,
    record: RwLock<SandboxRecord>,
    removed: AtomicBool,
    /// Set (for good) when StopPodSandbox or RemovePodSandbox begins: a CreateContainer that
    /// races them sees it after adding its container, and takes the container back.
    closing: AtomicBool,
}

impl Entry {
    pub(super) fn new(record: SandboxRecord) -> Arc<Entry> {
        Arc::new(Entry {
            op: Mutex::new(()),
            record: RwLock::new(record),
            removed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        })
    }
    fn read(&self) -> SandboxRecord {
        self.record.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn write(&self, record: SandboxRecord) {
        *self.record.write().unwrap_or_else(|p| p.into_inner()) = record;
    }
    fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct SandboxManager {
    pub(super) info: Arc<RuntimeInfo>,
    pub(super) records: RecordDir,
    pub(super) cni_cache: AttachmentCache,
    plugins: Plugins,
    pub(super) runroot_sandboxes: PathBuf,
    pub(super) index: RwLock<BTreeMap<String, Arc<Entry>>>,
    /// One lock per pod metadata: a retried RunPodSandbox waits for the first, then finds it.
    reservations: Reservations<Metadata>,
    containers: RwLock<Arc<dyn PodContainers>>,
}

impl SandboxManager {
    /// Loads the records and recovers: half-made sandboxes are rolled back, ready ones checked.
    pub fn start(info: Arc<RuntimeInfo>) -> Result<Arc<SandboxManager>, SandboxError> {
        let config = info.config();
        let manager = SandboxManager {
            records: RecordDir::new(config.root.join("sandboxes")),
            cni_cache: AttachmentCache::new(&config.root),
            plugins: config.cni_plugins(),
            runroot_sandboxes: config.runroot.join("sandboxes"),
            info,
            index: RwLock::new(BTreeMap::new()),
            reservations: Reservations::default(),
            containers: RwLock::new(Arc::new(NoContainers)),
        };
        manager.recover()?;
        Ok(Arc::new(manager))
    }

    /// Installs what stops and removes a sandbox's containers.
    pub fn set_containers(&self, containers: Arc<dyn PodContainers>) {
        *self.containers.write().unwrap_or_else(|p| p.into_inner()) = containers;
    }

    fn containers(&self) -> Arc<dyn PodContainers> {
        self.containers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// The record of a sandbox, for containers to build their specs from.
    pub fn get(&self, id: &str) -> Option<SandboxRecord> {
        self.entry(id).map(|e| e.read())
    }

    /// Whether the sandbox still takes new containers: it exists and no StopPodSandbox or
    /// RemovePodSandbox has begun.
    pub fn accepts_containers(&self, id: &str) -> bool {
        self.entry(id).is_some_and(|e| !e.closing.load(Ordering::SeqCst) && !e.is_removed())
    }

    // ---- RunPodSandbox ------------------------------------------------------------------

    pub fn run(&self, request: &model::RunPodSandboxRequest) -> Result<String, SandboxError> {
        let plan = validate::plan(request, self.info.config().cgroup_driver)?;
        let oci_handler = self.resolve_handler(&request.runtime_handler)?;
        let metadata = plan.metadata.clone();
        self.reservations.with(&metadata, || self.find_or_create(plan, request, oci_handler))
    }

    /// Under the metadata's reservation: the sandbox a previous call made, or a new one.
    fn find_or_create(
        &self,
        plan: PodPlan,
        request: &model::RunPodSandboxRequest,
        oci_handler: String,
    ) -> Result<String, SandboxError> {
        let existing = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| e.read())
            .find(|r| r.metadata == plan.metadata);
        if let Some(found) = existing {
            return match live_state(&found) {
                // The kubelet retried a call that timed out: the finished result.
                model::PodSandboxState::SandboxReady => Ok(found.id),
                _ => Err(SandboxError::AlreadyExists(format!(
                    "pod sandbox {} of {}/{} (uid {}, attempt {}) exists and is not ready; remove it or raise \
                     config.metadata.attempt",
                    found.id, found.metadata.namespace, found.metadata.name, found.metadata.uid, found.metadata.attempt
                ))),
            };
        }
        let record = self.create(plan, request.runtime_handler.clone(), oci_handler)?;
        let id = record.id.clone();
        self.index.write().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), Entry::new(record));
        Ok(id)
    }

    fn resolve_handler(&self, name: &str) -> Result<String, SandboxError> {
        let handlers = self.info.handlers();
        match handlers.get(name) {
            Some(h) if h.works() => Ok(h.name.clone()),
            Some(h) => Err(SandboxError::FailedPrecondition(format!(
                "runtime_handler {:?}: the OCI runtime does not work on this node: {}",
                h.name,
                h.problem.as_deref().unwrap_or("")
            ))),
            None if name.is_empty() => {
                Err(SandboxError::FailedPrecondition("runtime_handler \"\": no configured OCI runtime works".into()))
            }
            None => {
                let known: Vec<&str> = handlers.handlers.iter().map(|h| h.name.as_str()).collect();
                Err(SandboxError::InvalidArgument(BadField {
                    field: "runtime_handler".into(),
                    problem: format!("{name:?} is not a configured runtime handler (configured: {known:?})"),
                }))
            }
        }
    }

    // ---- StopPodSandbox -------------------------------------------------------------------

    /// Idempotent as the CRI requires: stopping a stopped, removed or unknown sandbox succeeds.
    pub fn stop(&self, id: &str) -> Result<(), SandboxError> {
        let Some(entry) = self.entry(id) else {
            tracing::debug!(sandbox = %id, "StopPodSandbox of an unknown pod sandbox: nothing to stop");
            return Ok(());
        };
        let _op = lock(&entry.op);
        if entry.is_removed() {
            return Ok(());
        }
        entry.closing.store(true, Ordering::SeqCst);
        let mut record = entry.read();
        self.containers()
            .stop_all(id)
            .map_err(|e| SandboxError::internal(format!("cannot stop the containers of {id}"), e))?;
        let released = self.release(&mut record);
        // What the release got to is what readers see, even when it failed half-way.
        entry.write(record.clone());
        released?;
        record.state = SandboxState::NotReady;
        self.records.put(id, &record).map_err(internal("cannot write the sandbox record"))?;
        entry.write(record);
        Ok(())
    }

    /// What stopping releases: the pause process, the network (DEL, retried), /dev/shm.
    /// Each step is idempotent; the record says what is still held.
    pub(super) fn release(&self, record: &mut SandboxRecord) -> Result<(), SandboxError> {
        if let Some(p) = &record.namespaces.pause {
            pause::kill(p).map_err(internal("cannot stop the pause process"))?;
        }
        // The pause's own cgroup goes now; the parents lockstepd made for it still hold the
        // stopped containers' cgroups until RemoveContainer, so they go with the pod (`remove`).
        let leaves = cgroups::leaves(&record.pause_cgroups, &record.id);
        if !leaves.is_empty() {
            cgroups::remove(&leaves, &record.id).map_err(internal("cannot remove the pause's cgroups"))?;
            // Forgotten at once: a directory of the same name made later is someone else's.
            record.pause_cgroups.retain(|dir| !leaves.contains(dir));
            self.records.put(&record.id, record).map_err(internal("cannot write the sandbox record"))?;
        }
        // The cache entry, not the record's flag, says whether a DEL is owed: a crash or a failed
        // rollback may leave an attachment the record does not know of.
        if let Some(attachment) = self.cni_cache.get(&record.id).map_err(internal("cannot read the CNI cache"))? {
            del_with_retries(&attachment, &self.plugins).map_err(|e| {
                SandboxError::unavailable(format!("cannot detach pod sandbox {} from its network", record.id), e)
            })?;
            self.cni_cache.remove(&record.id).map_err(internal("cannot remove the CNI cache entry"))?;
        }
        if record.network.attached {
            record.network.attached = false;
            // Persist at once: a DEL that succeeded must not be needed again after a crash.
            self.records.put(&record.id, record).map_err(internal("cannot write the sandbox record"))?;
        }
        if record.files.shm.starts_with(&record.files.dir) {
            files::unmount(&record.files.shm).map_err(internal("cannot unmount /dev/shm"))?;
        }
        Ok(())
    }

    // ---- RemovePodSandbox -----------------------------------------------------------------

    pub fn remove(&self, id: &str) -> Result<(), SandboxError> {
        let Some(entry) = self.entry(id) else { return Ok(()) };
        let _op = lock(&entry.op);
        if entry.is_removed() {
            return Ok(());
        }
        entry.closing.store(true, Ordering::SeqCst);
        let mut record = entry.read();
        self.containers()
            .remove_all(id)
            .map_err(|e| SandboxError::internal(format!("cannot remove the containers of {id}"), e))?;
        let released = self.release(&mut record);
        entry.write(record.clone());
        released?;
        if !record.pause_cgroups.is_empty() {
            // The pod's containers are gone: the parents made for its pause can go (one that
            // another pod uses stays).
            cgroups::remove(&record.pause_cgroups, id).map_err(internal("cannot remove the pause's cgroups"))?;
            record.pause_cgroups.clear();
            self.records.put(&record.id, &record).map_err(internal("cannot write the sandbox record"))?;
            entry.write(record.clone());
        }
        // The recorded pins by their own paths first: they are known even when mountinfo's
        // resolved paths would not match.
        let ns = &record.namespaces;
        for pin in [&ns.network, &ns.ipc, &ns.uts].into_iter().flatten() {
            namespaces::unpin(pin).map_err(internal("cannot unpin a namespace"))?;
        }
        remove_sandbox_dir(&self.cni_cache, id, &record.files.dir)
            .map_err(internal("cannot remove the sandbox directory"))?;
        self.records.remove(id).map_err(internal("cannot remove the sandbox record"))?;
        entry.removed.store(true, Ordering::SeqCst);
        self.index.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        tracing::info!(sandbox = %id, "pod sandbox removed");
        Ok(())
    }

    // ---- PodSandboxStatus and ListPodSandbox ----------------------------------------------

    pub fn status(&self, id: &str, verbose: bool) -> Result<model::PodSandboxStatusResponse, SandboxError> {
        let record = self.entry(id).ok_or_else(|| SandboxError::NotFound(id.to_string()))?.read();
        let mut status = record.to_status();
        status.state = live_state(&record) as i32;
        let mut info = HashMap::new();
        if verbose {
            let cni_result = self.cni_cache.get(id).ok().flatten().and_then(|a| a.result);
            info.insert("info".to_string(), verbose_info(&record, cni_result));
        }
        Ok(model::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses: vec![],
            timestamp: now_nanos(),
        })
    }

    pub fn list(&self, filter: Option<&model::PodSandboxFilter>) -> Vec<model::PodSandbox> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index
            .values()
            .map(|e| {
                let record = e.read();
                let mut s = record.to_pod_sandbox();
                s.state = live_state(&record) as i32;
                s
            })
            .filter(|s| sandbox_matches(s, filter))
            .collect()
    }
}

/// READY only while the record says so and the pause process (if any) lives.
fn live_state(record: &SandboxRecord) -> model::PodSandboxState {
    let pause_ok = record.namespaces.pause.as_ref().is_none_or(pause::alive);
    if record.state == SandboxState::Ready && pause_ok {
        model::PodSandboxState::SandboxReady
    } else {
        model::PodSandboxState::SandboxNotready
    }
}

/// PodSandboxStatus's verbose `info`: the record, the namespace paths (the network one is
/// what `ip netns exec`-like tools enter) and the pause pid.
fn verbose_info(record: &SandboxRecord, cni_result: Option<serde_json::Value>) -> String {
    serde_json::json!({
        "sandboxID": record.id,
        "cniResult": cni_result,
        "pid": record.namespaces.pause.as_ref().map(|p| p.pid).unwrap_or(0),
        "netns": record.namespaces.network,
        "record": record,
    })
    .to_string()
}

/// DEL, tried three times with a pause between tries (100 ms, then 200 ms): a plugin may
/// fail for a moment (the iptables lock, a busy store). The last failure is returned.
pub(super) fn del_with_retries(attachment: &Attachment, plugins: &Plugins) -> Result<(), network::CniError> {
    const TRIES: u32 = 3;
    let mut attempt = 1;
    loop {
        match network::del(attachment, plugins) {
            Ok(()) => return Ok(()),
            Err(e) if attempt == TRIES => return Err(e),
            Err(e) => {
                tracing::warn!(sandbox = %attachment.container_id, attempt, error = %e, "CNI DEL failed; retrying");
                std::thread::sleep(Duration::from_millis(100 << (attempt - 1)));
                attempt += 1;
            }
        }
    }
}

/// Unmounts everything under a sandbox directory (namespace pins, shm), then removes it —
/// never while the sandbox's CNI attachment is cached: a DEL without the pinned network
/// namespace cannot remove what the plugins set up on the host (the bridge's masquerade rules).
pub(super) fn remove_sandbox_dir(cache: &AttachmentCache, id: &str, dir: &Path) -> Result<(), SandboxDirError> {
    if cache.get(id)?.is_some() {
        return Err(SandboxDirError::AttachmentCached(dir.to_path_buf()));
    }
    for mount in files::mounts_under(dir)? {
        files::unmount(&mount)?;
    }
    crate::fstree::remove_tree(dir).map_err(|source| SandboxDirError::Remove { path: dir.to_path_buf(), source })
}

pub(super) use crate::timing::now_nanos;
