//! Container RPCs. So far: listing, over the containers lockstepd holds.

use std::collections::BTreeMap;
use std::sync::RwLock;

use lockstep_cri::model;
use lockstep_cri::window::StreamOf;

use crate::filter::container_matches;

/// The containers lockstepd holds, by id.
#[derive(Debug, Default)]
pub struct Containers {
    by_id: RwLock<BTreeMap<String, model::Container>>,
}

impl Containers {
    fn list(&self, filter: Option<&model::ContainerFilter>) -> Vec<model::Container> {
        let by_id = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        by_id.values().filter(|c| container_matches(c, filter)).cloned().collect()
    }
}

pub fn list(containers: &Containers, request: model::ListContainersRequest) -> model::ListContainersResponse {
    model::ListContainersResponse { containers: containers.list(request.filter.as_ref()) }
}

/// The whole list in one message: the stream exists so that big lists need not fit one
/// message; ours are far below the 16 MiB limit.
pub fn stream(
    containers: &Containers,
    request: model::StreamContainersRequest,
) -> StreamOf<model::StreamContainersResponse> {
    let containers = containers.list(request.filter.as_ref());
    Box::pin(futures::stream::iter([Ok(model::StreamContainersResponse { containers })]))
}
