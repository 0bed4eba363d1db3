//! ReopenContainerLog: the monitor of a running container closes its CRI log and opens it
//! again (after the kubelet rotated it).

use super::error::ContainerError;
use super::manager::ContainerManager;
use super::record::RecordState;
use crate::monitor::ContainerDir;

pub fn reopen_container_log(containers: &ContainerManager, id: &str) -> Result<(), ContainerError> {
    let entry = containers.store.existing(id)?;
    let record =
        containers.refreshed_in(&entry, &[RecordState::Running], "only a running container's log can be reopened")?;
    containers
        .runtime_of(&record)
        .reopen_log(&ContainerDir::new(&record.run_dir))
        .map_err(ContainerError::monitor(id, "reopen the log of"))
}
