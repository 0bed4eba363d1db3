//! StartContainer: a created container's init is let run; the record says running once the
//! runtime has started it.

use super::error::ContainerError;
use super::manager::ContainerManager;
use super::record::RecordState;
use super::store::lock;
use crate::timing::now_nanos;

pub fn start_container(containers: &ContainerManager, id: &str) -> Result<(), ContainerError> {
    let entry = containers.store.existing(id)?;
    let _op = lock(&entry.op);
    let record = containers.refreshed_in(&entry, &[RecordState::Created], "only a created container can be started")?;
    containers.runtime_of(&record).start(id).map_err(ContainerError::runtime(id, "start"))?;
    let mut updated = record;
    updated.state = RecordState::Running;
    updated.started_at = now_nanos();
    containers.store.save(&entry, updated.clone())?;
    tracing::info!(container = %id, "container started");
    containers.publish(lockstep_cri::model::ContainerEventType::ContainerStartedEvent, &updated);
    Ok(())
}
