//! The gRPC face of lockstepd: the model's RuntimeService and ImageService, each RPC routed to
//! the module of its family. Thin by design: validation and work live in those modules.
//! An RPC that is not built yet answers UNIMPLEMENTED with a message that names it.

mod container;
pub mod deadline;
pub mod disk_full;
pub mod image;
pub mod metrics;
mod runtime_info;
mod sandbox;
pub mod streaming;

use std::sync::Arc;

use lockstep_cri::model;
use lockstep_cri::model::image_service_server::ImageService;
use lockstep_cri::model::runtime_service_server::RuntimeService;
use lockstep_cri::window::StreamOf;
use tonic::{Request, Response, Status};

use crate::info::RuntimeInfo;
pub use container::Containers;
pub use sandbox::Sandboxes;

type Reply<T> = Result<Response<T>, Status>;

/// The parts of lockstepd that answer CRI calls; each RPC reaches only the part it needs.
pub struct Cri {
    pub info: Arc<RuntimeInfo>,
    pub sandboxes: Arc<Sandboxes>,
    pub containers: Arc<Containers>,
    pub images: Arc<crate::image::service::ImageService>,
    pub streaming: Arc<streaming::Streaming>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Runs blocking work (OCI runtimes, CNI plugins, namespaces, files) off the async workers; its
/// error becomes the gRPC status its family's `From` decides.
async fn blocking<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, Status>
where
    T: Send + 'static,
    E: Into<Status> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("the operation panicked: {e}")))?
        .map_err(Into::into)
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(&self, _: Request<model::VersionRequest>) -> Reply<model::VersionResponse> {
        Ok(Response::new(runtime_info::version(&self.info)))
    }
    async fn status(&self, request: Request<model::StatusRequest>) -> Reply<model::StatusResponse> {
        runtime_info::status(&self.info, request.into_inner()).await.map(Response::new)
    }
    async fn runtime_config(&self, _: Request<model::RuntimeConfigRequest>) -> Reply<model::RuntimeConfigResponse> {
        Ok(Response::new(runtime_info::runtime_config(&self.info)))
    }
    async fn update_runtime_config(
        &self,
        request: Request<model::UpdateRuntimeConfigRequest>,
    ) -> Reply<model::UpdateRuntimeConfigResponse> {
        runtime_info::update_runtime_config(&self.info, request.into_inner()).await.map(Response::new)
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<model::RunPodSandboxRequest>,
    ) -> Reply<model::RunPodSandboxResponse> {
        sandbox::run(&self.sandboxes, &self.metrics, request.into_inner()).await.map(Response::new)
    }
    async fn stop_pod_sandbox(
        &self,
        request: Request<model::StopPodSandboxRequest>,
    ) -> Reply<model::StopPodSandboxResponse> {
        sandbox::stop(&self.sandboxes, &self.metrics, request.into_inner()).await.map(Response::new)
    }
    async fn remove_pod_sandbox(
        &self,
        request: Request<model::RemovePodSandboxRequest>,
    ) -> Reply<model::RemovePodSandboxResponse> {
        sandbox::remove(&self.sandboxes, &self.metrics, request.into_inner()).await.map(Response::new)
    }
    async fn pod_sandbox_status(
        &self,
        request: Request<model::PodSandboxStatusRequest>,
    ) -> Reply<model::PodSandboxStatusResponse> {
        sandbox::status(&self.sandboxes, request.into_inner()).map(Response::new)
    }
    async fn list_pod_sandbox(
        &self,
        request: Request<model::ListPodSandboxRequest>,
    ) -> Reply<model::ListPodSandboxResponse> {
        Ok(Response::new(sandbox::list(&self.sandboxes, request.into_inner())))
    }
    type StreamPodSandboxesStream = StreamOf<model::StreamPodSandboxesResponse>;
    async fn stream_pod_sandboxes(
        &self,
        request: Request<model::StreamPodSandboxesRequest>,
    ) -> Reply<Self::StreamPodSandboxesStream> {
        Ok(Response::new(sandbox::stream(&self.sandboxes, request.into_inner())))
    }
    async fn update_pod_sandbox_resources(
        &self,
        request: Request<model::UpdatePodSandboxResourcesRequest>,
    ) -> Reply<model::UpdatePodSandboxResourcesResponse> {
        container::update_pod_resources(&self.containers, request.into_inner()).await.map(Response::new)
    }

    async fn create_container(
        &self,
        request: Request<model::CreateContainerRequest>,
    ) -> Reply<model::CreateContainerResponse> {
        container::create(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn start_container(
        &self,
        request: Request<model::StartContainerRequest>,
    ) -> Reply<model::StartContainerResponse> {
        container::start(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn stop_container(
        &self,
        request: Request<model::StopContainerRequest>,
    ) -> Reply<model::StopContainerResponse> {
        container::stop(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn remove_container(
        &self,
        request: Request<model::RemoveContainerRequest>,
    ) -> Reply<model::RemoveContainerResponse> {
        container::remove(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn container_status(
        &self,
        request: Request<model::ContainerStatusRequest>,
    ) -> Reply<model::ContainerStatusResponse> {
        container::status(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn list_containers(
        &self,
        request: Request<model::ListContainersRequest>,
    ) -> Reply<model::ListContainersResponse> {
        container::list(&self.containers, request.into_inner()).await.map(Response::new)
    }
    type StreamContainersStream = StreamOf<model::StreamContainersResponse>;
    async fn stream_containers(
        &self,
        request: Request<model::StreamContainersRequest>,
    ) -> Reply<Self::StreamContainersStream> {
        container::stream(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn update_container_resources(
        &self,
        request: Request<model::UpdateContainerResourcesRequest>,
    ) -> Reply<model::UpdateContainerResourcesResponse> {
        container::update_resources(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn reopen_container_log(
        &self,
        request: Request<model::ReopenContainerLogRequest>,
    ) -> Reply<model::ReopenContainerLogResponse> {
        container::reopen_log(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn exec_sync(&self, request: Request<model::ExecSyncRequest>) -> Reply<model::ExecSyncResponse> {
        container::exec_sync(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn exec(&self, request: Request<model::ExecRequest>) -> Reply<model::ExecResponse> {
        streaming::exec(&self.streaming, request.into_inner()).await.map(Response::new)
    }
    async fn attach(&self, request: Request<model::AttachRequest>) -> Reply<model::AttachResponse> {
        streaming::attach(&self.streaming, request.into_inner()).await.map(Response::new)
    }
    async fn port_forward(&self, request: Request<model::PortForwardRequest>) -> Reply<model::PortForwardResponse> {
        streaming::port_forward(&self.streaming, request.into_inner()).await.map(Response::new)
    }
    async fn checkpoint_container(
        &self,
        request: Request<model::CheckpointContainerRequest>,
    ) -> Reply<model::CheckpointContainerResponse> {
        container::checkpoint(&self.containers, request.into_inner()).await.map(Response::new)
    }
    type GetContainerEventsStream = StreamOf<model::ContainerEventResponse>;
    async fn get_container_events(
        &self,
        request: Request<model::GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        Ok(Response::new(container::events(&self.containers, request.into_inner())))
    }

    async fn container_stats(
        &self,
        request: Request<model::ContainerStatsRequest>,
    ) -> Reply<model::ContainerStatsResponse> {
        container::stats(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn list_container_stats(
        &self,
        request: Request<model::ListContainerStatsRequest>,
    ) -> Reply<model::ListContainerStatsResponse> {
        container::list_stats(&self.containers, request.into_inner()).await.map(Response::new)
    }
    type StreamContainerStatsStream = StreamOf<model::StreamContainerStatsResponse>;
    async fn stream_container_stats(
        &self,
        request: Request<model::StreamContainerStatsRequest>,
    ) -> Reply<Self::StreamContainerStatsStream> {
        container::stream_stats(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn pod_sandbox_stats(
        &self,
        request: Request<model::PodSandboxStatsRequest>,
    ) -> Reply<model::PodSandboxStatsResponse> {
        container::pod_stats(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn list_pod_sandbox_stats(
        &self,
        request: Request<model::ListPodSandboxStatsRequest>,
    ) -> Reply<model::ListPodSandboxStatsResponse> {
        container::list_pod_stats(&self.containers, request.into_inner()).await.map(Response::new)
    }
    type StreamPodSandboxStatsStream = StreamOf<model::StreamPodSandboxStatsResponse>;
    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<model::StreamPodSandboxStatsRequest>,
    ) -> Reply<Self::StreamPodSandboxStatsStream> {
        container::stream_pod_stats(&self.containers, request.into_inner()).await.map(Response::new)
    }
    async fn list_metric_descriptors(
        &self,
        _: Request<model::ListMetricDescriptorsRequest>,
    ) -> Reply<model::ListMetricDescriptorsResponse> {
        Ok(Response::new(container::metric_descriptors()))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<model::ListPodSandboxMetricsRequest>,
    ) -> Reply<model::ListPodSandboxMetricsResponse> {
        container::list_pod_metrics(&self.containers).await.map(Response::new)
    }
    type StreamPodSandboxMetricsStream = StreamOf<model::StreamPodSandboxMetricsResponse>;
    async fn stream_pod_sandbox_metrics(
        &self,
        _: Request<model::StreamPodSandboxMetricsRequest>,
    ) -> Reply<Self::StreamPodSandboxMetricsStream> {
        container::stream_pod_metrics(&self.containers).await.map(Response::new)
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(&self, request: Request<model::ListImagesRequest>) -> Reply<model::ListImagesResponse> {
        image::list(&self.images, request.into_inner()).map(Response::new)
    }
    type StreamImagesStream = StreamOf<model::StreamImagesResponse>;
    async fn stream_images(&self, request: Request<model::StreamImagesRequest>) -> Reply<Self::StreamImagesStream> {
        image::stream(&self.images, request.into_inner()).map(Response::new)
    }
    async fn image_status(&self, request: Request<model::ImageStatusRequest>) -> Reply<model::ImageStatusResponse> {
        image::image_status(&self.images, request.into_inner()).await.map(Response::new)
    }
    async fn pull_image(&self, request: Request<model::PullImageRequest>) -> Reply<model::PullImageResponse> {
        image::pull(&self.images, &self.metrics, request.into_inner()).await.map(Response::new)
    }
    async fn remove_image(&self, request: Request<model::RemoveImageRequest>) -> Reply<model::RemoveImageResponse> {
        image::remove(&self.images, request.into_inner()).await.map(Response::new)
    }
    async fn image_fs_info(&self, _: Request<model::ImageFsInfoRequest>) -> Reply<model::ImageFsInfoResponse> {
        image::fs_info(&self.images).await.map(Response::new)
    }
}
