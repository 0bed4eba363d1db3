//! Pod sandbox RPCs. So far: listing, over the sandboxes lockstepd holds.

use std::collections::BTreeMap;
use std::sync::RwLock;

use lockstep_cri::model;
use lockstep_cri::window::StreamOf;

use crate::filter::sandbox_matches;

/// The pod sandboxes lockstepd holds, by id.
#[derive(Debug, Default)]
pub struct Sandboxes {
    by_id: RwLock<BTreeMap<String, model::PodSandbox>>,
}

impl Sandboxes {
    fn list(&self, filter: Option<&model::PodSandboxFilter>) -> Vec<model::PodSandbox> {
        let by_id = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        by_id.values().filter(|s| sandbox_matches(s, filter)).cloned().collect()
    }
}

pub fn list(sandboxes: &Sandboxes, request: model::ListPodSandboxRequest) -> model::ListPodSandboxResponse {
    model::ListPodSandboxResponse { items: sandboxes.list(request.filter.as_ref()) }
}

pub fn stream(
    sandboxes: &Sandboxes,
    request: model::StreamPodSandboxesRequest,
) -> StreamOf<model::StreamPodSandboxesResponse> {
    let pod_sandboxes = sandboxes.list(request.filter.as_ref());
    Box::pin(futures::stream::iter([Ok(model::StreamPodSandboxesResponse { pod_sandboxes })]))
}
