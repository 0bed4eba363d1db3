//! Pod sandbox RPCs: thin glue from the CRI to the sandbox manager, run off the async workers
//! (creation execs plugins and changes namespaces), errors mapped to gRPC codes.

use std::sync::Arc;

use lockstep_cri::model;
use lockstep_cri::window::StreamOf;
use tonic::Status;

use super::blocking;

use crate::sandbox::{SandboxError, SandboxManager};

pub type Sandboxes = SandboxManager;

impl From<SandboxError> for Status {
    fn from(e: SandboxError) -> Status {
        let message = e.to_string();
        match e {
            SandboxError::InvalidArgument(_) => Status::invalid_argument(message),
            SandboxError::NotFound(_) => Status::not_found(message),
            SandboxError::AlreadyExists(_) => Status::already_exists(message),
            SandboxError::FailedPrecondition(_) => Status::failed_precondition(message),
            SandboxError::Unavailable { .. } => Status::unavailable(message),
            SandboxError::Internal { .. } => Status::internal(message),
        }
    }
}

fn checked_id(id: &str) -> Result<(), Status> {
    if crate::ids::is_safe_id(id) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!("pod_sandbox_id {id:?} is not a sandbox id")))
    }
}

pub async fn run(
    sandboxes: &Arc<Sandboxes>,
    request: model::RunPodSandboxRequest,
) -> Result<model::RunPodSandboxResponse, Status> {
    let sandboxes = sandboxes.clone();
    let id = blocking(move || sandboxes.run(&request)).await?;
    Ok(model::RunPodSandboxResponse { pod_sandbox_id: id })
}

pub async fn stop(
    sandboxes: &Arc<Sandboxes>,
    request: model::StopPodSandboxRequest,
) -> Result<model::StopPodSandboxResponse, Status> {
    checked_id(&request.pod_sandbox_id)?;
    let sandboxes = sandboxes.clone();
    blocking(move || sandboxes.stop(&request.pod_sandbox_id)).await?;
    Ok(model::StopPodSandboxResponse {})
}

pub async fn remove(
    sandboxes: &Arc<Sandboxes>,
    request: model::RemovePodSandboxRequest,
) -> Result<model::RemovePodSandboxResponse, Status> {
    checked_id(&request.pod_sandbox_id)?;
    let sandboxes = sandboxes.clone();
    blocking(move || sandboxes.remove(&request.pod_sandbox_id)).await?;
    Ok(model::RemovePodSandboxResponse {})
}

pub fn status(
    sandboxes: &Sandboxes,
    request: model::PodSandboxStatusRequest,
) -> Result<model::PodSandboxStatusResponse, Status> {
    checked_id(&request.pod_sandbox_id)?;
    sandboxes.status(&request.pod_sandbox_id, request.verbose).map_err(Status::from)
}

pub fn list(sandboxes: &Sandboxes, request: model::ListPodSandboxRequest) -> model::ListPodSandboxResponse {
    model::ListPodSandboxResponse { items: sandboxes.list(request.filter.as_ref()) }
}

/// The whole list in one message: ours are far below the 16 MiB limit.
pub fn stream(
    sandboxes: &Sandboxes,
    request: model::StreamPodSandboxesRequest,
) -> StreamOf<model::StreamPodSandboxesResponse> {
    let pod_sandboxes = sandboxes.list(request.filter.as_ref());
    Box::pin(futures::stream::iter([Ok(model::StreamPodSandboxesResponse { pod_sandboxes })]))
}
