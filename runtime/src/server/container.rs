//! Container RPCs: thin glue from the CRI to the container manager, run off the async workers
//! (the manager runs OCI runtimes and waits for processes), errors mapped to gRPC codes.

use std::sync::Arc;

use lockstep_cri::model;
use lockstep_cri::window::StreamOf;
use tonic::Status;

use super::blocking;

use crate::container::{ContainerError, ContainerManager};

pub type Containers = ContainerManager;

impl From<ContainerError> for Status {
    fn from(e: ContainerError) -> Status {
        let message = e.to_string();
        match e {
            ContainerError::InvalidArgument(_) => Status::invalid_argument(message),
            ContainerError::NotFound(_) => Status::not_found(message),
            ContainerError::FailedPrecondition(_) => Status::failed_precondition(message),
            ContainerError::DeadlineExceeded(_) => Status::deadline_exceeded(message),
            ContainerError::Unavailable(_) => Status::unavailable(message),
            ContainerError::Internal(_) => Status::internal(message),
        }
    }
}

pub async fn create(
    containers: &Arc<Containers>,
    request: model::CreateContainerRequest,
) -> Result<model::CreateContainerResponse, Status> {
    let containers = containers.clone();
    let container_id = blocking(move || containers.create(&request)).await?;
    Ok(model::CreateContainerResponse { container_id })
}

pub async fn start(
    containers: &Arc<Containers>,
    request: model::StartContainerRequest,
) -> Result<model::StartContainerResponse, Status> {
    let containers = containers.clone();
    blocking(move || containers.start_container(&request.container_id)).await?;
    Ok(model::StartContainerResponse {})
}

pub async fn stop(
    containers: &Arc<Containers>,
    request: model::StopContainerRequest,
) -> Result<model::StopContainerResponse, Status> {
    let containers = containers.clone();
    blocking(move || containers.stop(&request.container_id, request.timeout)).await?;
    Ok(model::StopContainerResponse {})
}

pub async fn remove(
    containers: &Arc<Containers>,
    request: model::RemoveContainerRequest,
) -> Result<model::RemoveContainerResponse, Status> {
    let containers = containers.clone();
    blocking(move || containers.remove(&request.container_id)).await?;
    Ok(model::RemoveContainerResponse {})
}

pub async fn status(
    containers: &Arc<Containers>,
    request: model::ContainerStatusRequest,
) -> Result<model::ContainerStatusResponse, Status> {
    let containers = containers.clone();
    blocking(move || containers.status(&request.container_id, request.verbose)).await
}

pub async fn list(
    containers: &Arc<Containers>,
    request: model::ListContainersRequest,
) -> Result<model::ListContainersResponse, Status> {
    let containers = containers.clone();
    let listed = blocking(move || Ok::<_, Status>(containers.list(request.filter.as_ref()))).await?;
    Ok(model::ListContainersResponse { containers: listed })
}

/// The whole list in one message: the stream exists so that big lists need not fit one
/// message; ours are far below the 16 MiB limit.
pub async fn stream(
    containers: &Arc<Containers>,
    request: model::StreamContainersRequest,
) -> Result<StreamOf<model::StreamContainersResponse>, Status> {
    let containers = containers.clone();
    let listed = blocking(move || Ok::<_, Status>(containers.list(request.filter.as_ref()))).await?;
    Ok(Box::pin(futures::stream::iter([Ok(model::StreamContainersResponse { containers: listed })])))
}

pub async fn update_resources(
    containers: &Arc<Containers>,
    request: model::UpdateContainerResourcesRequest,
) -> Result<model::UpdateContainerResourcesResponse, Status> {
    let containers = containers.clone();
    blocking(move || containers.update_resources(&request.container_id, request.linux.as_ref())).await?;
    Ok(model::UpdateContainerResourcesResponse {})
}

pub async fn reopen_log(
    containers: &Arc<Containers>,
    request: model::ReopenContainerLogRequest,
) -> Result<model::ReopenContainerLogResponse, Status> {
    let containers = containers.clone();
    blocking(move || containers.reopen_log(&request.container_id)).await?;
    Ok(model::ReopenContainerLogResponse {})
}

pub async fn exec_sync(
    containers: &Arc<Containers>,
    request: model::ExecSyncRequest,
) -> Result<model::ExecSyncResponse, Status> {
    let containers = containers.clone();
    blocking(move || containers.exec_sync(&request.container_id, &request.cmd, request.timeout)).await
}

pub async fn stats(
    containers: &Arc<Containers>,
    request: model::ContainerStatsRequest,
) -> Result<model::ContainerStatsResponse, Status> {
    let containers = containers.clone();
    let stats = blocking(move || containers.stats(&request.container_id)).await?;
    Ok(model::ContainerStatsResponse { stats: Some(stats) })
}

pub async fn list_stats(
    containers: &Arc<Containers>,
    request: model::ListContainerStatsRequest,
) -> Result<model::ListContainerStatsResponse, Status> {
    let containers = containers.clone();
    let stats = blocking(move || Ok::<_, Status>(containers.list_stats(request.filter.as_ref()))).await?;
    Ok(model::ListContainerStatsResponse { stats })
}

/// One message with every container's usage, as ListContainerStats.
pub async fn stream_stats(
    containers: &Arc<Containers>,
    request: model::StreamContainerStatsRequest,
) -> Result<StreamOf<model::StreamContainerStatsResponse>, Status> {
    let containers = containers.clone();
    let container_stats = blocking(move || Ok::<_, Status>(containers.list_stats(request.filter.as_ref()))).await?;
    Ok(Box::pin(futures::stream::iter([Ok(model::StreamContainerStatsResponse { container_stats })])))
}
