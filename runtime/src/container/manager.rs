//! The container manager: what every container RPC works with — the store of containers, the
//! handler registry, the pods and images they are made from — and the two steps they share:
//! reading a container's live state (`refresh`) and signalling it (`send`). Each RPC family is
//! a file of its own (`create`, `start`, `stop`, `remove`, `status`, `stats`, `update`, `exec`,
//! `logs`; `recovery` at start, `pod` for StopPodSandbox/RemovePodSandbox). Blocking code: call
//! it off the async workers.

use std::path::PathBuf;
use std::sync::Arc;

use super::error::ContainerError;
use super::host::HostFacts;
use super::lifecycle::{self, Observed};
use super::record::{ContainerRecord, RecordState};
use super::runtime::ContainerRuntime;
use super::runtimes::{Handlers, Runtimes};
use super::store::{ContainerStore, Entry};
use crate::image::service::ImageService;
use crate::info::RuntimeInfo;
use crate::oci::OciError;
use crate::persist::RecordDir;
use crate::sandbox::SandboxManager;

pub struct ContainerManager {
    pub(super) store: ContainerStore,
    pub(super) runtimes: Arc<dyn Runtimes>,
    pub(super) info: Arc<RuntimeInfo>,
    pub(super) sandboxes: Arc<SandboxManager>,
    pub(super) images: Arc<ImageService>,
    /// `<root>/containers`: records and writable layers.
    pub(super) layers_root: PathBuf,
    /// `<runroot>/containers`: bundles, rootfs mount points, monitor files.
    pub(super) run_root: PathBuf,
    pub(super) host: HostFacts,
}

impl ContainerManager {
    /// Loads the records and reconciles them with the monitors and runtimes (see `recovery`).
    pub fn recover(
        info: Arc<RuntimeInfo>,
        sandboxes: Arc<SandboxManager>,
        images: Arc<ImageService>,
    ) -> Result<Arc<ContainerManager>, ContainerError> {
        let runtimes = Arc::new(Handlers::new(info.clone()));
        let manager = ContainerManager::assemble(info, sandboxes, images, runtimes)?;
        super::recovery::recover(&manager)?;
        Ok(Arc::new(manager))
    }

    /// A manager with no containers loaded yet, whose runtimes come from `runtimes`.
    pub(super) fn assemble(
        info: Arc<RuntimeInfo>,
        sandboxes: Arc<SandboxManager>,
        images: Arc<ImageService>,
        runtimes: Arc<dyn Runtimes>,
    ) -> Result<ContainerManager, ContainerError> {
        let config = info.config();
        let host = HostFacts::read().map_err(|source| ContainerError::Io {
            action: "read the host's facts from",
            path: PathBuf::from("/proc and /sys"),
            source,
        })?;
        Ok(ContainerManager {
            store: ContainerStore::new(RecordDir::new(config.root.join("containers"))),
            runtimes,
            layers_root: config.root.join("containers"),
            run_root: config.runroot.join("containers"),
            host,
            info,
            sandboxes,
            images,
        })
    }

    /// The runtime of an existing container (see `Runtimes::for_record`).
    pub(super) fn runtime_of(&self, record: &ContainerRecord) -> Arc<dyn ContainerRuntime> {
        self.runtimes.for_record(record)
    }

    /// The record with what happened since it was written: an exit the monitor recorded.
    pub(super) fn refresh(&self, entry: &Entry) -> ContainerRecord {
        let record = entry.read();
        if !matches!(record.state, RecordState::Created | RecordState::Running) {
            return record;
        }
        match lifecycle::observe(&record, self.runtime_of(&record).as_ref()) {
            Observed::Unchanged => record,
            Observed::Exited(exit) => self.store.mark_exited(entry, exit),
        }
    }

    /// Releases image holds (a container's image, its image volumes).
    pub(super) fn release(&self, holder: &str) -> Result<(), ContainerError> {
        self.images.release(holder).map_err(|source| ContainerError::Image {
            action: "release the hold of",
            image: format!("held by {holder}"),
            source: Box::new(source),
        })
    }
}

/// Sends a signal; a container that is no longer running has nothing to receive it.
pub(super) fn send(runtime: &dyn ContainerRuntime, id: &str, signal: i32, all: bool) -> Result<(), ContainerError> {
    match runtime.signal(id, signal, all) {
        Ok(()) | Err(OciError::NotRunning { .. }) | Err(OciError::NotFound { .. }) => Ok(()),
        Err(e) => Err(ContainerError::runtime(id, "signal")(e)),
    }
}

#[cfg(test)]
#[path = "rpc_tests.rs"]
mod rpc_tests;
