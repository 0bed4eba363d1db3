//! UpdateContainerResources: new cgroup limits through the OCI runtime's update, kept in the
//! record so that ContainerStatus shows them.

use lockstep_cri::model;

use super::error::ContainerError;
use super::manager::ContainerManager;
use super::record::RecordState;
use super::resources;
use super::store::lock;

pub fn update_container_resources(
    containers: &ContainerManager,
    id: &str,
    linux: Option<&model::LinuxContainerResources>,
) -> Result<(), ContainerError> {
    let entry = containers.store.existing(id)?;
    let _op = lock(&entry.op);
    let mut record = containers.refreshed_in(
        &entry,
        &[RecordState::Created, RecordState::Running],
        "only a created or running container's resources can change",
    )?;
    let Some(linux) = linux else { return Ok(()) };
    let mut oci = resources::linux_resources(linux, "linux")?;
    if let Some(warning) = resources::tolerate_missing_hugetlb(&mut oci, containers.host.hugetlb) {
        tracing::warn!(container = %id, %warning, "UpdateContainerResources honoured a request only in part");
    }
    containers.runtime_of(&record).update(id, &oci).map_err(ContainerError::runtime(id, "update"))?;
    let mut template = record.template();
    template.resources = Some(model::ContainerResources { linux: Some(linux.clone()), windows: None });
    record.set_template(&template);
    containers.store.save(&entry, record)
}
