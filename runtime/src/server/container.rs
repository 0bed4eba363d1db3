//! Container RPCs: thin glue from the CRI to the container manager, run off the async workers
//! (the manager runs OCI runtimes and waits for processes), errors mapped to gRPC codes.

use std::sync::Arc;

use lockstep_cri::model;
use lockstep_cri::window::StreamOf;
use tonic::Status;

use super::blocking;

use crate::container::{self, ContainerError, ContainerManager, ErrorKind};
use crate::oci::OciError;

pub type Containers = ContainerManager;

/// The gRPC code each container error deserves: the request's fault, a missing thing, a
/// state that forbids the call, or lockstepd's (or the host's) trouble.
impl From<ContainerError> for Status {
    fn from(e: ContainerError) -> Status {
        let message = e.to_string();
        if let Some(status) = super::disk_full::exhausted(&e, &message) {
            return status;
        }
        match e {
            ContainerError::BadField { .. } => Status::invalid_argument(message),
            ContainerError::Spec(spec) => match spec.kind {
                ErrorKind::InvalidArgument => Status::invalid_argument(message),
                ErrorKind::NotFound => Status::not_found(message),
                ErrorKind::FailedPrecondition => Status::failed_precondition(message),
            },
            ContainerError::NoSuchContainer { .. }
            | ContainerError::NoSuchSandbox { .. }
            | ContainerError::ImageNotPresent { .. }
            | ContainerError::ImageRemoved { .. }
            | ContainerError::NoSuchTarget { .. } => Status::not_found(message),
            ContainerError::Archive { ref source, .. }
                if matches!(**source, crate::container::checkpoint_archive::ArchiveError::Invalid { .. }) =>
            {
                Status::invalid_argument(message)
            }
            ContainerError::WrongState { .. }
            | ContainerError::CannotCheckpoint { .. }
            | ContainerError::SandboxNotReady { .. }
            | ContainerError::HandlerUnavailable(_) => Status::failed_precondition(message),
            ContainerError::ExecTimedOut { .. } => Status::deadline_exceeded(message),
            ContainerError::Runtime { ref source, .. } if matches!(**source, OciError::TimedOut { .. }) => {
                Status::deadline_exceeded(message)
            }
            ContainerError::MonitorMissing(_) => Status::unavailable(message),
            ContainerError::Runtime { .. }
            | ContainerError::Monitor { .. }
            | ContainerError::Wait(_)
            | ContainerError::Image { .. }
            | ContainerError::Record { .. }
            | ContainerError::Rootfs { .. }
            | ContainerError::Sandbox(_)
            | ContainerError::Archive { .. }
            | ContainerError::Io { .. } => Status::internal(message),
        }
    }
}

/// Counts a failure of a container's monitor for lockstepd's metrics, on the way out.
fn noted<T>(containers: &Containers, result: Result<T, ContainerError>) -> Result<T, ContainerError> {
    if let (Err(ContainerError::Monitor { .. } | ContainerError::MonitorMissing(_)), Some(metrics)) =
        (&result, containers.metrics())
    {
        metrics.monitor_failure();
    }
    result
}

pub async fn create(
    containers: &Arc<Containers>,
    request: model::CreateContainerRequest,
) -> Result<model::CreateContainerResponse, Status> {
    let containers = containers.clone();
    let container_id =
        blocking(move || noted(&containers, container::create::create_container(&containers, &request))).await?;
    Ok(model::CreateContainerResponse { container_id })
}

pub async fn start(
    containers: &Arc<Containers>,
    request: model::StartContainerRequest,
) -> Result<model::StartContainerResponse, Status> {
    let containers = containers.clone();
    blocking(move || noted(&containers, container::start::start_container(&containers, &request.container_id))).await?;
    Ok(model::StartContainerResponse {})
}

pub async fn checkpoint(
    containers: &Arc<Containers>,
    request: model::CheckpointContainerRequest,
) -> Result<model::CheckpointContainerResponse, Status> {
    let containers = containers.clone();
    blocking(move || container::checkpoint::checkpoint_container(&containers, &request)).await?;
    Ok(model::CheckpointContainerResponse {})
}

pub async fn stop(
    containers: &Arc<Containers>,
    request: model::StopContainerRequest,
) -> Result<model::StopContainerResponse, Status> {
    let containers = containers.clone();
    blocking(move || {
        noted(&containers, container::stop::stop_container(&containers, &request.container_id, request.timeout))
    })
    .await?;
    Ok(model::StopContainerResponse {})
}

pub async fn remove(
    containers: &Arc<Containers>,
    request: model::RemoveContainerRequest,
) -> Result<model::RemoveContainerResponse, Status> {
    let containers = containers.clone();
    blocking(move || container::remove::remove_container(&containers, &request.container_id)).await?;
    Ok(model::RemoveContainerResponse {})
}

pub async fn status(
    containers: &Arc<Containers>,
    request: model::ContainerStatusRequest,
) -> Result<model::ContainerStatusResponse, Status> {
    let containers = containers.clone();
    blocking(move || container::status::container_status(&containers, &request.container_id, request.verbose)).await
}

pub async fn list(
    containers: &Arc<Containers>,
    request: model::ListContainersRequest,
) -> Result<model::ListContainersResponse, Status> {
    let containers = containers.clone();
    let listed =
        blocking(move || Ok::<_, Status>(container::status::list_containers(&containers, request.filter.as_ref())))
            .await?;
    Ok(model::ListContainersResponse { containers: listed })
}

/// The whole list in one message: the stream exists so that big lists need not fit one
/// message; ours are far below the 16 MiB limit.
pub async fn stream(
    containers: &Arc<Containers>,
    request: model::StreamContainersRequest,
) -> Result<StreamOf<model::StreamContainersResponse>, Status> {
    let containers = containers.clone();
    let listed =
        blocking(move || Ok::<_, Status>(container::status::list_containers(&containers, request.filter.as_ref())))
            .await?;
    Ok(Box::pin(futures::stream::iter([Ok(model::StreamContainersResponse { containers: listed })])))
}

pub async fn update_resources(
    containers: &Arc<Containers>,
    request: model::UpdateContainerResourcesRequest,
) -> Result<model::UpdateContainerResourcesResponse, Status> {
    let containers = containers.clone();
    blocking(move || {
        container::update::update_container_resources(&containers, &request.container_id, request.linux.as_ref())
    })
    .await?;
    Ok(model::UpdateContainerResourcesResponse {})
}

pub async fn reopen_log(
    containers: &Arc<Containers>,
    request: model::ReopenContainerLogRequest,
) -> Result<model::ReopenContainerLogResponse, Status> {
    let containers = containers.clone();
    blocking(move || container::logs::reopen_container_log(&containers, &request.container_id)).await?;
    Ok(model::ReopenContainerLogResponse {})
}

pub async fn exec_sync(
    containers: &Arc<Containers>,
    request: model::ExecSyncRequest,
) -> Result<model::ExecSyncResponse, Status> {
    let containers = containers.clone();
    blocking(move || {
        noted(
            &containers,
            container::exec::exec_sync(&containers, &request.container_id, &request.cmd, request.timeout),
        )
    })
    .await
}

pub async fn stats(
    containers: &Arc<Containers>,
    request: model::ContainerStatsRequest,
) -> Result<model::ContainerStatsResponse, Status> {
    let containers = containers.clone();
    let stats = blocking(move || container::stats::container_stats(&containers, &request.container_id)).await?;
    Ok(model::ContainerStatsResponse { stats: Some(stats) })
}

pub async fn list_stats(
    containers: &Arc<Containers>,
    request: model::ListContainerStatsRequest,
) -> Result<model::ListContainerStatsResponse, Status> {
    let containers = containers.clone();
    let stats =
        blocking(move || Ok::<_, Status>(container::stats::list_container_stats(&containers, request.filter.as_ref())))
            .await?;
    Ok(model::ListContainerStatsResponse { stats })
}

/// One message with every container's usage, as ListContainerStats.
pub async fn stream_stats(
    containers: &Arc<Containers>,
    request: model::StreamContainerStatsRequest,
) -> Result<StreamOf<model::StreamContainerStatsResponse>, Status> {
    let containers = containers.clone();
    let container_stats =
        blocking(move || Ok::<_, Status>(container::stats::list_container_stats(&containers, request.filter.as_ref())))
            .await?;
    Ok(Box::pin(futures::stream::iter([Ok(model::StreamContainerStatsResponse { container_stats })])))
}

pub async fn update_pod_resources(
    containers: &Arc<Containers>,
    request: model::UpdatePodSandboxResourcesRequest,
) -> Result<model::UpdatePodSandboxResourcesResponse, Status> {
    let containers = containers.clone();
    blocking(move || container::pod_resources::update_pod_sandbox_resources(&containers, &request)).await?;
    Ok(model::UpdatePodSandboxResourcesResponse {})
}

pub async fn pod_stats(
    containers: &Arc<Containers>,
    request: model::PodSandboxStatsRequest,
) -> Result<model::PodSandboxStatsResponse, Status> {
    let containers = containers.clone();
    let stats = blocking(move || container::pod_stats::pod_sandbox_stats(&containers, &request.pod_sandbox_id)).await?;
    Ok(model::PodSandboxStatsResponse { stats: Some(stats) })
}

pub async fn list_pod_stats(
    containers: &Arc<Containers>,
    request: model::ListPodSandboxStatsRequest,
) -> Result<model::ListPodSandboxStatsResponse, Status> {
    let containers = containers.clone();
    let stats = blocking(move || {
        Ok::<_, Status>(container::pod_stats::list_pod_sandbox_stats(&containers, request.filter.as_ref()))
    })
    .await?;
    Ok(model::ListPodSandboxStatsResponse { stats })
}

/// One message with every pod's usage, as ListPodSandboxStats.
pub async fn stream_pod_stats(
    containers: &Arc<Containers>,
    request: model::StreamPodSandboxStatsRequest,
) -> Result<StreamOf<model::StreamPodSandboxStatsResponse>, Status> {
    let containers = containers.clone();
    let pod_sandbox_stats = blocking(move || {
        Ok::<_, Status>(container::pod_stats::list_pod_sandbox_stats(&containers, request.filter.as_ref()))
    })
    .await?;
    Ok(Box::pin(futures::stream::iter([Ok(model::StreamPodSandboxStatsResponse { pod_sandbox_stats })])))
}

/// ListMetricDescriptors: a fixed table.
pub fn metric_descriptors() -> model::ListMetricDescriptorsResponse {
    model::ListMetricDescriptorsResponse { descriptors: container::metric_descriptors::list_metric_descriptors() }
}

pub async fn list_pod_metrics(containers: &Arc<Containers>) -> Result<model::ListPodSandboxMetricsResponse, Status> {
    let containers = containers.clone();
    let pod_metrics =
        blocking(move || Ok::<_, Status>(container::pod_metrics::list_pod_sandbox_metrics(&containers))).await?;
    Ok(model::ListPodSandboxMetricsResponse { pod_metrics })
}

/// One message with every pod's metrics, as ListPodSandboxMetrics.
pub async fn stream_pod_metrics(
    containers: &Arc<Containers>,
) -> Result<StreamOf<model::StreamPodSandboxMetricsResponse>, Status> {
    let pod_metrics = list_pod_metrics(containers).await?.pod_metrics;
    Ok(Box::pin(futures::stream::iter([Ok(model::StreamPodSandboxMetricsResponse {
        pod_sandbox_metrics: pod_metrics,
    })])))
}

/// GetContainerEvents: the subscriber's events as they happen, until it goes away (or does not
/// keep up: then its stream ends and the kubelet relists).
pub fn events(containers: &Arc<Containers>, _: model::GetEventsRequest) -> StreamOf<model::ContainerEventResponse> {
    let receiver = containers.subscribe();
    Box::pin(futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_call_that_timed_out_is_deadline_exceeded_and_a_handler_gone_a_precondition() {
        let timed_out = OciError::TimedOut {
            handler: "crun".into(),
            op: "kill",
            id: "c1".into(),
            after: std::time::Duration::from_secs(60),
        };
        let status = Status::from(ContainerError::runtime("c1", "stop")(timed_out));
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        let gone = OciError::Unavailable { handler: "crun".into(), problem: "is not configured".into() };
        assert_eq!(Status::from(ContainerError::runtime("c1", "start")(gone)).code(), tonic::Code::FailedPrecondition);
        let failed = OciError::Failed { handler: "crun".into(), op: "start", id: "c1".into(), message: "x".into() };
        assert_eq!(Status::from(ContainerError::runtime("c1", "start")(failed)).code(), tonic::Code::Internal);
    }
}
