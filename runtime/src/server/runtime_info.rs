//! Version, Status, RuntimeConfig and UpdateRuntimeConfig.

use lockstep_cri::model;
use tonic::Status;

use crate::info::{parse_cidr, RuntimeInfo};

pub fn version(info: &RuntimeInfo) -> model::VersionResponse {
    info.version()
}

pub async fn status(
    info: &std::sync::Arc<RuntimeInfo>,
    request: model::StatusRequest,
) -> Result<model::StatusResponse, Status> {
    // Probing may run the OCI runtime binaries: keep it off the async workers.
    let info = info.clone();
    tokio::task::spawn_blocking(move || info.status(request.verbose))
        .await
        .map_err(|e| Status::internal(format!("status check failed: {e}")))
}

pub fn runtime_config(info: &RuntimeInfo) -> model::RuntimeConfigResponse {
    info.runtime_config()
}

pub async fn update_runtime_config(
    info: &std::sync::Arc<RuntimeInfo>,
    request: model::UpdateRuntimeConfigRequest,
) -> Result<model::UpdateRuntimeConfigResponse, Status> {
    let cidr = request.runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr).unwrap_or_default();
    // The kubelet may send several CIDRs (dual stack), comma separated.
    for one in cidr.split(',').filter(|c| !c.is_empty()) {
        parse_cidr(one.trim())
            .map_err(|e| Status::invalid_argument(format!("runtime_config.network_config.pod_cidr: {e}")))?;
    }
    let info = info.clone();
    tokio::task::spawn_blocking(move || info.set_pod_cidr(&cidr))
        .await
        .map_err(|e| Status::internal(format!("storing the pod CIDR failed: {e}")))?
        .map_err(|e| Status::internal(format!("storing the pod CIDR failed: {e}")))?;
    Ok(model::UpdateRuntimeConfigResponse {})
}
