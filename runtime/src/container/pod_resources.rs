//! UpdatePodSandboxResources (1.33+): the kubelet, having resized a pod's cgroup in place, tells
//! the runtime its new pod-level resources (overhead and the containers' total). They are
//! checked as UpdateContainerResources checks a container's, then kept in the pod's record.
//! Best effort by the CRI's word: the kubelet goes on with the resize whatever the answer.

use lockstep_cri::model;

use super::error::ContainerError;
use super::manager::ContainerManager;
use super::resources;
use crate::sandbox::record::PodResources;
use crate::sandbox::SandboxError;

pub fn update_pod_sandbox_resources(
    containers: &ContainerManager,
    request: &model::UpdatePodSandboxResourcesRequest,
) -> Result<(), ContainerError> {
    let id = &request.pod_sandbox_id;
    if !crate::ids::is_safe_id(id) {
        return Err(ContainerError::bad_field("pod_sandbox_id", format!("{id:?} is not a pod sandbox id")));
    }
    let overhead = request.overhead.as_ref().map(|r| resources::linux_resources(r, "overhead")).transpose()?;
    let pod = request.resources.as_ref().map(|r| resources::linux_resources(r, "resources")).transpose()?;
    let update = PodResources { overhead, resources: pod, updated_at: crate::timing::now_nanos() };
    crate::sandbox::resize::record_resources(&containers.sandboxes, id, update).map_err(|e| match e {
        SandboxError::NoSuchSandbox { id } => ContainerError::NoSuchSandbox { id },
        other => ContainerError::Sandbox(Box::new(other)),
    })?;
    tracing::info!(sandbox = %id, "pod-level resources recorded after a resize");
    Ok(())
}
