//! Recovery before lockstepd serves: container records reconciled with their monitors, the
//! OCI runtimes and the exit records. Running containers stay running; exits that happened
//! while lockstepd was down get their real codes and times; a creation or removal that a crash
//! interrupted is rolled back or finished; monitor directories without a record are swept.

use std::collections::BTreeMap;
use std::sync::Arc;

use lockstep_cri::model;

use super::error::ContainerError;
use super::lifecycle::{self, Recovery};
use super::manager::ContainerManager;
use super::record::{ContainerRecord, RecordState};
use super::remove::tear_down;
use super::rootfs;
use super::store::Entry;
use crate::monitor::{self, ContainerDir, MonitorState};
use crate::oci::OciRuntime;
use crate::timing::now_nanos;

pub(super) fn recover(containers: &ContainerManager) -> Result<(), ContainerError> {
    let loaded = containers.store.load().map_err(ContainerError::record("", "load"))?;
    for bad in &loaded.set_aside {
        tracing::error!(container = %bad.id, moved_to = %bad.moved_to.display(), problem = %bad.problem,
            "an unreadable container record was set aside; the container is no longer listed");
    }
    let mut kept = BTreeMap::new();
    let mut exited_while_down = Vec::new();
    for (id, mut record) in loaded.records {
        match record.state {
            RecordState::Creating | RecordState::Removing => {
                let what = if record.state == RecordState::Creating { "creation" } else { "removal" };
                let removed = tear_down(containers, &record).and_then(|()| {
                    containers.store.records().remove(&id).map_err(ContainerError::record(&id, "remove"))
                });
                match removed {
                    Ok(()) => {
                        tracing::info!(container = %id, "finished the {what} that a crash interrupted: removed");
                        continue;
                    }
                    Err(e) => {
                        // Kept as being removed: RemoveContainer (or the next start) retries.
                        tracing::warn!(container = %id, error = %e, "cannot clean up an interrupted {what}");
                        record.state = RecordState::Removing;
                    }
                }
            }
            RecordState::Created | RecordState::Running => {
                if reconcile(containers, &mut record) {
                    exited_while_down.push(record.clone());
                }
            }
            RecordState::Exited => {}
        }
        kept.insert(id, Entry::new(record));
    }
    sweep_orphans(containers, &kept);
    // Image holds of containers without a record, their image volumes' included.
    let owned: std::collections::BTreeSet<String> =
        kept.values().map(|e| e.read()).flat_map(|r| std::iter::once(r.id).chain(r.volume_holds)).collect();
    match containers.images.release_holds_except(|holder| owned.contains(holder)) {
        Ok(released) if !released.is_empty() => {
            tracing::info!(?released, "released the image holds of gone containers")
        }
        Err(e) => tracing::warn!(error = %e, "cannot release the image holds of gone containers"),
        Ok(_) => {}
    }
    tracing::info!(containers = kept.len(), "container records recovered");
    containers.store.hold_all(kept);
    // The kubelet missed these exits: its first event stream starts with them.
    for record in &exited_while_down {
        containers.events.remember(containers.event(model::ContainerEventType::ContainerStoppedEvent, record));
    }
    Ok(())
}

/// A created or running container after a restart: still there, exited meanwhile, or
/// started by a StartContainer that the crash cut short (lifecycle::recover decides). Whether
/// it exited while lockstepd was down.
fn reconcile(containers: &ContainerManager, record: &mut ContainerRecord) -> bool {
    let exited = match lifecycle::recover(record, containers.runtime_of(record).as_ref()) {
        Recovery::Keep | Recovery::TearDown => return false,
        Recovery::Exited(exit) => {
            tracing::info!(container = %record.id, exit_code = exit.exit_code,
                "the container exited while lockstepd was down");
            record.state = RecordState::Exited;
            record.exit = Some(exit);
            true
        }
        Recovery::Started => {
            tracing::info!(container = %record.id, "a start that a crash cut short had run: the container is running");
            record.state = RecordState::Running;
            record.started_at = now_nanos();
            // A restore's init was not recorded yet: the runtime knows it.
            if record.restore.take().is_some() {
                let state = containers.runtime_of(record).oci_state(&record.id);
                record.init_pid = state.ok().flatten().map(|s| s.pid).unwrap_or_default();
            }
            false
        }
    };
    if let Err(e) = containers.store.write(record) {
        tracing::warn!(container = %record.id, error = %e, "cannot persist what recovery found; it is read again later");
    }
    exited
}

/// Container directories under the runroot without a record: what a removal left after
/// its record was gone. Their containers are killed and deleted, the directories removed.
fn sweep_orphans(containers: &ContainerManager, kept: &BTreeMap<String, Arc<Entry>>) {
    let Ok(found) = monitor::find_all(&containers.run_root) else { return };
    for (id, state) in found {
        if kept.contains_key(&id) {
            continue;
        }
        let dir = ContainerDir::new(containers.run_root.join(&id));
        if let Ok(config) = dir.read_config() {
            let runtime = crate::oci::CommandRuntime::new(config.runtime);
            if matches!(state, MonitorState::Running { .. }) {
                let _ = runtime.kill(&id, 9, true);
                let _ = monitor::wait_exit(&dir, &id, std::time::Duration::from_secs(10));
            }
            let _ = runtime.delete(&id);
        }
        match rootfs::remove_dir(dir.path()) {
            Ok(()) => tracing::info!(container = %id, "swept a container directory without a record"),
            Err(e) => tracing::warn!(container = %id, error = %e, "cannot sweep a container directory"),
        }
        let _ = containers.release(&id);
    }
    let Ok(layers) = std::fs::read_dir(&containers.layers_root) else { return };
    for entry in layers.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && crate::ids::is_safe_id(&name) && !kept.contains_key(&name) {
            if let Err(e) = rootfs::remove_dir(&entry.path()) {
                tracing::warn!(container = %name, error = %e, "cannot sweep a writable layer without a record");
            }
        }
    }
}
