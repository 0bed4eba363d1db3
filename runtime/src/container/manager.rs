//! The container manager: what every container RPC works with — the store of containers, the
//! handler registry, the pods and images they are made from — and the two steps they share:
//! reading a container's live state (`refresh`) and signalling it (`send`). Each RPC family is
//! a file of its own (`create`, `start`, `stop`, `remove`, `status`, `stats`, `update`, `exec`,
//! `logs`; `recovery` at start, `pod` for StopPodSandbox/RemovePodSandbox). Blocking code: call
//! it off the async workers.

use std::path::PathBuf;
use std::sync::Arc;

use lockstep_cri::model;

use super::error::ContainerError;
use super::events::Events;
use super::host::HostFacts;
use super::lifecycle::{self, Observed};
use super::record::{ContainerRecord, ExitInfo, RecordState};
use super::runtime::ContainerRuntime;
use super::runtimes::{Handlers, Runtimes};
use super::store::{ContainerStore, Entry};
use crate::image::service::ImageService;
use crate::info::RuntimeInfo;
use crate::monitor::watch::{ProcessWatch, WatchBudget};
use crate::monitor::{self, ContainerDir};
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
    pub(super) events: Events,
    /// lockstepd's own metrics, once the daemon hands them over (OOM kills are counted here).
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// How many monitors may be watched by pidfd (`refresh_live`).
    watches: Arc<WatchBudget>,
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
        let manager = Arc::new(manager);
        watch_exits(Arc::downgrade(&manager));
        Ok(manager)
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
        let watches = sandboxes.watch_budget();
        Ok(ContainerManager {
            store: ContainerStore::new(RecordDir::new(config.root.join("containers"))),
            runtimes,
            layers_root: config.root.join("containers"),
            run_root: config.runroot.join("containers"),
            host,
            info,
            sandboxes,
            images,
            events: Events::default(),
            metrics: std::sync::OnceLock::new(),
            watches,
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
            Observed::Exited(exit) => self.record_exit(entry, exit),
        }
    }

    /// Brings every live container of `entries` up to date as `refresh` does, asking the kernel
    /// once for all those whose monitor is watched (one poll of their pidfds): only a container
    /// whose monitor has exited, or that has no watch, is looked at on disk. What the lists use:
    /// a monitor writes the exit record just before it exits, so an exit is seen as soon.
    pub(super) fn refresh_live(&self, entries: &[Arc<Entry>]) {
        let mut watched = Vec::new();
        for entry in entries {
            if !entry.is_live() {
                if entry.watch().get().is_some() {
                    entry.watch().set(None);
                }
                continue;
            }
            match self.watch_of(entry) {
                Some(watch) => watched.push((entry, watch)),
                None => {
                    self.refresh(entry);
                }
            }
        }
        let exited = monitor::watch::exited(&watched.iter().map(|(_, w)| w.as_ref()).collect::<Vec<_>>());
        for ((entry, _), exited) in watched.iter().zip(exited) {
            if exited {
                self.refresh(entry);
            }
        }
    }

    /// The watch on a live container's monitor: the one held, or a new one while the budget
    /// allows.
    fn watch_of(&self, entry: &Entry) -> Option<Arc<ProcessWatch>> {
        if let Some(watch) = entry.watch().get() {
            return Some(watch);
        }
        if !self.watches.available() {
            return None;
        }
        let record = entry.read();
        let watch = self.runtime_of(&record).open_watch(&ContainerDir::new(&record.run_dir), &self.watches)?;
        entry.watch().set(Some(watch))
    }

    /// The record, refreshed, when its state is one of `allowed`; WrongState naming the
    /// container's state and `requirement` otherwise.
    pub(super) fn refreshed_in(
        &self,
        entry: &Entry,
        allowed: &[RecordState],
        requirement: &'static str,
    ) -> Result<ContainerRecord, ContainerError> {
        let record = self.refresh(entry);
        if allowed.contains(&record.state) {
            Ok(record)
        } else {
            Err(ContainerError::WrongState {
                id: record.id,
                state: super::error::state_word(record.state),
                requirement,
            })
        }
    }

    /// Records an exit (once) and tells the event subscribers.
    pub(super) fn record_exit(&self, entry: &Entry, exit: ExitInfo) -> ContainerRecord {
        let (record, first) = self.store.mark_exited(entry, exit);
        if first {
            if record.exit.as_ref().is_some_and(|e| e.oom_killed) {
                if let Some(metrics) = self.metrics() {
                    metrics.oom_kill();
                }
            }
            self.publish(model::ContainerEventType::ContainerStoppedEvent, &record);
        }
        record
    }

    /// The event of `kind` about `record`, with its pod's status and its pod's container
    /// statuses as they are now.
    pub(super) fn event(
        &self,
        kind: model::ContainerEventType,
        record: &ContainerRecord,
    ) -> model::ContainerEventResponse {
        let pod_sandbox_status = crate::sandbox::status::sandbox_status(&self.sandboxes, &record.sandbox_id);
        let containers_statuses = self
            .store
            .of_sandbox(&record.sandbox_id)
            .iter()
            .map(|e| e.read())
            .filter(|r| r.state != RecordState::Removing)
            .map(|r| r.to_status())
            .collect();
        model::ContainerEventResponse {
            container_id: record.id.clone(),
            container_event_type: kind as i32,
            created_at: crate::timing::now_nanos(),
            pod_sandbox_status,
            containers_statuses,
        }
    }

    /// Sends the event of `kind` about `record` to the subscribers, if there are any.
    pub(super) fn publish(&self, kind: model::ContainerEventType, record: &ContainerRecord) {
        if self.events.has_subscribers() {
            self.events.publish(self.event(kind, record));
        }
    }

    /// Hands over lockstepd's metrics (once; later calls change nothing).
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    pub fn metrics(&self) -> Option<&Arc<crate::metrics::Metrics>> {
        self.metrics.get()
    }

    /// How many containers are in each CRI state, from their records as they stand (no
    /// runtime is asked), for the containers-by-state gauge.
    pub fn census(&self) -> Vec<(&'static str, i64)> {
        let mut counts: Vec<(&'static str, i64)> = Vec::new();
        for entry in self.store.all() {
            let state = match entry.read().cri_state() {
                model::ContainerState::ContainerCreated => "created",
                model::ContainerState::ContainerRunning => "running",
                model::ContainerState::ContainerExited => "exited",
                model::ContainerState::ContainerUnknown => "unknown",
            };
            match counts.iter_mut().find(|(s, _)| *s == state) {
                Some((_, n)) => *n += 1,
                None => counts.push((state, 1)),
            }
        }
        counts
    }

    /// A new GetContainerEvents subscriber's stream (see `events`).
    pub fn subscribe(&self) -> tokio::sync::mpsc::Receiver<model::ContainerEventResponse> {
        self.events.subscribe()
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

/// How often the live containers are looked at for exits while someone subscribes to events.
const EXIT_WATCH: std::time::Duration = std::time::Duration::from_secs(1);

/// While GetContainerEvents has subscribers, reads every live container's state once a second
/// (without its lock), so that an exit is sent as a STOPPED event when it happens, not when
/// someone next asks. Ends with the manager.
fn watch_exits(containers: std::sync::Weak<ContainerManager>) {
    let spawned = std::thread::Builder::new().name("exit-watch".into()).spawn(move || loop {
        std::thread::sleep(EXIT_WATCH);
        let Some(containers) = containers.upgrade() else { return };
        if containers.events.has_subscribers() {
            containers.refresh_live(&containers.store.all());
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no exit watcher: container exits reach event subscribers only on the next call");
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
