//! The sandbox manager: what every pod sandbox RPC works with — the store of sandboxes, the
//! CNI plugins and their cache, and the containers that go first when a pod stops or goes.
//! Each RPC family is a file of its own (`run`, `stop`, `remove`, `status`; `recovery` at
//! start). May touch: `<root>/sandboxes`, `<root>/cni`, `<runroot>/sandboxes/<id>`, the pods'
//! namespaces and pause processes, and the CNI plugins it runs.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::error::SandboxError;
use super::pause;
use super::record::{SandboxRecord, SandboxState};
use super::store::{Entry, SandboxStore};
use crate::cni::exec::Plugins;
use crate::cni::network::AttachmentCache;
use crate::info::RuntimeInfo;
use crate::monitor::watch::WatchBudget;
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
    /// The pidfds lockstepd may hold on pause processes and monitors, shared with the
    /// containers (a share of the open-file limit).
    watches: Arc<WatchBudget>,
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
            watches: WatchBudget::from_nofile(),
        };
        super::recovery::recover(&manager)?;
        Ok(Arc::new(manager))
    }

    /// The budget of pidfds, for the containers' monitors to share.
    pub fn watch_budget(&self) -> Arc<WatchBudget> {
        self.watches.clone()
    }

    /// For each of `entries`, whether its pause process (if it has one) still runs, asking the
    /// kernel once for all those watched (one poll of their pidfds); a pause process that is not
    /// watched, or whose pidfd turned readable, is looked up in /proc. A watch no longer needed
    /// (the sandbox is not READY, or its pause process is gone) is let go, as the containers'.
    pub(super) fn pauses_alive(&self, entries: &[Arc<Entry>]) -> Vec<bool> {
        let mut watched = Vec::new();
        let mut alive = vec![true; entries.len()];
        for (i, entry) in entries.iter().enumerate() {
            // Only a READY sandbox's pause process matters: another sandbox is NOTREADY anyway.
            let pause = entry.view(|r| r.namespaces.pause.clone().filter(|_| r.state == SandboxState::Ready));
            let Some(pause) = pause else {
                if entry.pause_watch().get().is_some() {
                    entry.pause_watch().set(None);
                }
                continue;
            };
            let watch = entry.pause_watch().get().or_else(|| {
                let watch = self.watches.available().then(|| pause::watch(&pause, &self.watches)).flatten();
                entry.pause_watch().set(watch)
            });
            match watch {
                Some(watch) => watched.push((i, pause, watch)),
                None => alive[i] = pause::alive(&pause),
            }
        }
        let exited = crate::monitor::watch::exited(&watched.iter().map(|(.., w)| w.as_ref()).collect::<Vec<_>>());
        for ((i, pause, _), exited) in watched.iter().zip(exited) {
            if exited {
                alive[*i] = pause::alive(pause);
                if !alive[*i] {
                    entries[*i].pause_watch().set(None);
                }
            }
        }
        alive
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
