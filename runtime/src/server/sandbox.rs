//! Pod sandbox RPCs: thin glue from the CRI to the sandbox manager, run off the async workers
//! (creation execs plugins and changes namespaces), errors mapped to gRPC codes.

use std::sync::Arc;

use lockstep_cri::model;
use lockstep_cri::window::StreamOf;
use tonic::Status;

use super::blocking;

use crate::metrics::Metrics;
use crate::sandbox::{self, SandboxError, SandboxManager};

pub type Sandboxes = SandboxManager;

/// The gRPC code each sandbox error deserves: the request's fault, a missing or duplicate
/// sandbox, a node that cannot run it, something to retry, or lockstepd's (or the host's) trouble.
impl From<SandboxError> for Status {
    fn from(e: SandboxError) -> Status {
        let message = e.to_string();
        if let Some(status) = super::disk_full::exhausted(&e, &message) {
            return status;
        }
        match e {
            SandboxError::BadField(_) => Status::invalid_argument(message),
            SandboxError::NoSuchSandbox { .. } => Status::not_found(message),
            SandboxError::Exists { .. } => Status::already_exists(message),
            SandboxError::HandlerBroken { .. } | SandboxError::NoWorkingHandler => Status::failed_precondition(message),
            SandboxError::NetworkNotReady(_) | SandboxError::Detach { .. } => Status::unavailable(message),
            SandboxError::Attach { .. }
            | SandboxError::Containers { .. }
            | SandboxError::Record { .. }
            | SandboxError::CniCache { .. }
            | SandboxError::Namespaces { .. }
            | SandboxError::Pause { .. }
            | SandboxError::Cgroups { .. }
            | SandboxError::Files { .. }
            | SandboxError::Mounts { .. }
            | SandboxError::Dir { .. }
            | SandboxError::Io { .. } => Status::internal(message),
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

/// Counts a failed CNI ADD or DEL for lockstepd's metrics, on the way out.
fn noted<T>(metrics: &Metrics, result: Result<T, SandboxError>) -> Result<T, SandboxError> {
    match &result {
        Err(SandboxError::Attach { .. }) => metrics.cni_failure("add"),
        Err(SandboxError::Detach { .. }) => metrics.cni_failure("del"),
        _ => {}
    }
    result
}

pub async fn run(
    sandboxes: &Arc<Sandboxes>,
    metrics: &Arc<Metrics>,
    request: model::RunPodSandboxRequest,
) -> Result<model::RunPodSandboxResponse, Status> {
    let (sandboxes, metrics) = (sandboxes.clone(), metrics.clone());
    let id = blocking(move || noted(&metrics, sandbox::run::run_pod_sandbox(&sandboxes, &request))).await?;
    Ok(model::RunPodSandboxResponse { pod_sandbox_id: id })
}

pub async fn stop(
    sandboxes: &Arc<Sandboxes>,
    metrics: &Arc<Metrics>,
    request: model::StopPodSandboxRequest,
) -> Result<model::StopPodSandboxResponse, Status> {
    checked_id(&request.pod_sandbox_id)?;
    let (sandboxes, metrics) = (sandboxes.clone(), metrics.clone());
    blocking(move || noted(&metrics, sandbox::stop::stop_pod_sandbox(&sandboxes, &request.pod_sandbox_id))).await?;
    Ok(model::StopPodSandboxResponse {})
}

pub async fn remove(
    sandboxes: &Arc<Sandboxes>,
    metrics: &Arc<Metrics>,
    request: model::RemovePodSandboxRequest,
) -> Result<model::RemovePodSandboxResponse, Status> {
    checked_id(&request.pod_sandbox_id)?;
    let (sandboxes, metrics) = (sandboxes.clone(), metrics.clone());
    blocking(move || noted(&metrics, sandbox::remove::remove_pod_sandbox(&sandboxes, &request.pod_sandbox_id))).await?;
    Ok(model::RemovePodSandboxResponse {})
}

pub fn status(
    sandboxes: &Sandboxes,
    request: model::PodSandboxStatusRequest,
) -> Result<model::PodSandboxStatusResponse, Status> {
    checked_id(&request.pod_sandbox_id)?;
    sandbox::status::pod_sandbox_status(sandboxes, &request.pod_sandbox_id, request.verbose).map_err(Status::from)
}

pub fn list(sandboxes: &Sandboxes, request: model::ListPodSandboxRequest) -> model::ListPodSandboxResponse {
    model::ListPodSandboxResponse { items: sandbox::status::list_pod_sandboxes(sandboxes, request.filter.as_ref()) }
}

/// The whole list in one message: ours are far below the 16 MiB limit.
pub fn stream(
    sandboxes: &Sandboxes,
    request: model::StreamPodSandboxesRequest,
) -> StreamOf<model::StreamPodSandboxesResponse> {
    let pod_sandboxes = sandbox::status::list_pod_sandboxes(sandboxes, request.filter.as_ref());
    Box::pin(futures::stream::iter([Ok(model::StreamPodSandboxesResponse { pod_sandboxes })]))
}
