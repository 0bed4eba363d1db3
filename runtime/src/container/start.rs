//! StartContainer: a created container's init is let run; the record says running once the
//! runtime has started it. A container made from a checkpoint archive has its processes
//! restored instead, under a monitor started now.

use super::error::ContainerError;
use super::manager::ContainerManager;
use super::record::{ContainerRecord, PendingRestore, RecordState};
use super::runtime::CreateRequest;
use super::signal::SIGKILL;
use super::store::lock;
use crate::monitor::{ContainerDir, RestoreFrom};
use crate::timing::now_nanos;

pub fn start_container(containers: &ContainerManager, id: &str) -> Result<(), ContainerError> {
    let entry = containers.store.existing(id)?;
    let _op = lock(&entry.op);
    let record = containers.refreshed_in(&entry, &[RecordState::Created], "only a created container can be started")?;
    let mut updated = record.clone();
    match &record.restore {
        Some(pending) => updated.init_pid = restore(containers, &record, pending)?,
        None => containers.runtime_of(&record).start(id).map_err(ContainerError::runtime(id, "start"))?,
    }
    updated.restore = None;
    updated.state = RecordState::Running;
    updated.started_at = now_nanos();
    containers.store.save(&entry, updated.clone())?;
    tracing::info!(container = %id, "container started");
    containers.publish(lockstep_cri::model::ContainerEventType::ContainerStartedEvent, &updated);
    Ok(())
}

/// Restores a checkpoint's processes as container `record` under a new monitor (which runs the
/// runtime's restore with the container's stdio); the restored init's pid. A failed restore
/// leaves the container as it was: created, its restore still to do.
fn restore(
    containers: &ContainerManager,
    record: &ContainerRecord,
    pending: &PendingRestore,
) -> Result<i32, ContainerError> {
    let id = record.id.as_str();
    let runtime = containers.runtime_of(record);
    let work = record.run_dir.join("restore-work");
    let _ = crate::fstree::remove_tree(&work);
    std::fs::create_dir_all(&work).map_err(|source| ContainerError::Io {
        action: "create",
        path: work.clone(),
        source,
    })?;
    let request = CreateRequest {
        container_id: id.to_string(),
        bundle: record.bundle(),
        log_path: record.log_path.clone(),
        tty: false,
        stdin: pending.stdin,
        stdin_once: pending.stdin_once,
        restore: Some(RestoreFrom { images: pending.images.clone(), work }),
    };
    match runtime.create(&ContainerDir::new(&record.run_dir), &request) {
        Ok(spawned) => {
            // The images (as big as the process's memory) have served.
            if let Some(unpacked) = pending.images.parent() {
                if let Err(e) = crate::fstree::remove_tree(unpacked) {
                    tracing::warn!(container = %id, error = %e, "cannot remove the unpacked checkpoint");
                }
            }
            Ok(spawned.init_pid)
        }
        Err(e) => {
            // Whatever the runtime kept of a restore that failed half way.
            let _ = runtime.signal(id, SIGKILL, true);
            let _ = runtime.delete(id);
            Err(ContainerError::monitor(id, "restore")(e))
        }
    }
}
