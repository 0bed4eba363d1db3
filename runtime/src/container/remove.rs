//! RemoveContainer: a running container is killed, then everything of it but its log goes —
//! the process, the runtime's state and cgroup, mounts, directories, image holds, the record.
//! Idempotent; a crash halfway is finished at the next start (`recovery`).

use super::error::ContainerError;
use super::lifecycle;
use super::manager::{send, ContainerManager};
use super::record::{ContainerRecord, RecordState};
use super::rootfs;
use super::signal::SIGKILL;
use super::store::lock;
use crate::monitor::{ContainerDir, MonitorState};
use crate::oci::{OciError, OciStatus};

pub fn remove_container(containers: &ContainerManager, id: &str) -> Result<(), ContainerError> {
    let Some(entry) = containers.store.known(id) else { return Ok(()) };
    let _op = lock(&entry.op);
    let mut record = entry.read();
    if record.state != RecordState::Removing {
        record.state = RecordState::Removing;
        // A crash from here on finishes the removal at the next start.
        containers.store.save(&entry, record.clone())?;
    }
    tear_down(containers, &record)?;
    containers.store.forget(&record)?;
    tracing::info!(container = %id, "container removed");
    containers.publish(lockstep_cri::model::ContainerEventType::ContainerDeletedEvent, &record);
    Ok(())
}

/// Everything of a container but its record and log, each step idempotent: the process
/// (killed), the runtime's state and cgroup, the mounts and directories, the image holds.
pub(super) fn tear_down(containers: &ContainerManager, record: &ContainerRecord) -> Result<(), ContainerError> {
    let id = record.id.as_str();
    let dir = ContainerDir::new(&record.run_dir);
    let runtime = containers.runtime_of(record);
    let alive = match runtime.watch(&dir) {
        Ok(MonitorState::Running { .. }) => true,
        Ok(MonitorState::Lost) => runtime.oci_state(id).ok().flatten().is_some_and(|s| s.status != OciStatus::Stopped),
        _ => false,
    };
    // A container whose handler is gone cannot be killed or deleted by it: what else is
    // its still goes.
    if alive {
        match send(runtime.as_ref(), id, SIGKILL, true) {
            Err(ContainerError::HandlerUnavailable(e)) => tracing::warn!(container = %id, error = %e, "cannot kill"),
            sent => {
                sent?;
                lifecycle::wait_killed(runtime.as_ref(), record)?;
            }
        }
    }
    match runtime.delete(id) {
        Ok(()) | Err(OciError::Unavailable { .. }) => {}
        Err(e) => return Err(ContainerError::runtime(id, "delete")(e)),
    }
    let rootfs = record.rootfs();
    rootfs::remove_dirs(&[&record.run_dir, &record.layer_dir], &[&rootfs])
        .map_err(ContainerError::rootfs(id, "remove the files and the writable layer"))?;
    for holder in std::iter::once(id).chain(record.volume_holds.iter().map(String::as_str)) {
        containers.release(holder)?;
    }
    Ok(())
}
