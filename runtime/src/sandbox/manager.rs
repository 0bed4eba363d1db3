//! The sandbox manager: what every pod sandbox RPC works with — the store of sandboxes, the
//! CNI plugins and their cache, and the containers that go first when a pod stops or goes.
//! Each RPC family is a file of its own (`run`, `stop`, `remove`, `status`; `recovery` at
//! start). May touch: `<root>/sandboxes`, `<root>/cni`, `<runroot>/sandboxes/<id>`, the pods'
//! namespaces and pause processes, and the CNI plugins it runs.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::error::SandboxError;
use super::record::SandboxRecord;
use super::store::SandboxStore;
use crate::cni::exec::Plugins;
use crate::cni::network::AttachmentCache;
use crate::info::RuntimeInfo;
use crate::persist::RecordDir;

/// What a sandbox's containers must go through before the sandbox stops or goes; containers
/// (CreateContainer and the rest) implement it.
pub trait PodContainers: Send + Sync {
    /// Stops every container of the sandbox.
    fn stop_all(&self, sandbox_id: &str) -> Result<(), String>;
    /// Removes every container of the sandbox.
    fn remove_all(&self, sandbox_id: &str) -> Result<(), String>;
    /// The statuses of the sandbox's containers as ContainerStatus gives them (PodSandboxStatus
    /// carries them: the kubelet's Evented PLEG reads them there).
    fn statuses(&self, sandbox_id: &str) -> Vec<lockstep_cri::model::ContainerStatus>;
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
    fn statuses(&self, _: &str) -> Vec<lockstep_cri::model::ContainerStatus> {
        Vec::new()
    }
}

pub struct SandboxManager {
    pub(super) store: SandboxStore,
    pub(super) info: Arc<RuntimeInfo>,
    pub(super) cni_cache: AttachmentCache,
    pub(super) plugins: Plugins,
    /// `<runroot>/sandboxes`: one directory per sandbox (pins, files, shm).
    pub(super) runroot_sandboxes: PathBuf,
    containers: RwLock<Arc<dyn PodContainers>>,
}

impl SandboxManager {
    /// Loads the records and recovers: half-made sandboxes are rolled back, ready ones checked.
    pub fn recover(info: Arc<RuntimeInfo>) -> Result<Arc<SandboxManager>, SandboxError> {
        let config = info.config();
        let manager = SandboxManager {
            store: SandboxStore::new(RecordDir::new(config.root.join("sandboxes"))),
            cni_cache: AttachmentCache::new(&config.root),
            plugins: config.cni_plugins(),
            runroot_sandboxes: config.runroot.join("sandboxes"),
            info,
            containers: RwLock::new(Arc::new(NoContainers)),
        };
        super::recovery::recover(&manager)?;
        Ok(Arc::new(manager))
    }

    /// Installs what stops and removes a sandbox's containers.
    pub fn set_containers(&self, containers: Arc<dyn PodContainers>) {
        *self.containers.write().unwrap_or_else(|p| p.into_inner()) = containers;
    }

    pub(super) fn containers(&self) -> Arc<dyn PodContainers> {
        self.containers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The record of a sandbox, for containers to build their specs from.
    pub fn get(&self, id: &str) -> Option<SandboxRecord> {
        self.store.get(id).map(|e| e.read())
    }

    /// Whether the sandbox still takes new containers: it exists and no StopPodSandbox or
    /// RemovePodSandbox has begun.
    pub fn accepts_containers(&self, id: &str) -> bool {
        self.store.get(id).is_some_and(|e| !e.is_closing() && !e.is_removed())
    }
}
