//! Which CRI RPCs a runtime really serves, probed with harmless calls to the RPCs that later
//! minors added: a runtime we did not write (containerd 1.6 speaks CRI v1 as of an older
//! minor) is then described, not misjudged.

use futures::StreamExt;
use lockstep_cri::model;
use lockstep_cri::model::image_service_client::ImageServiceClient;
use lockstep_cri::model::runtime_service_client::RuntimeServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

/// One probed RPC: the Kubernetes minor that added it and whether the runtime serves it.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub rpc: &'static str,
    /// The minor that added it, from versions/ (`lockstep_cri::versions::added_in`).
    pub added_in: String,
    pub served: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Surface {
    pub probes: Vec<Probe>,
    /// One sentence for the report.
    pub summary: String,
}

/// Whether an answer says the runtime has no such RPC at all. gRPC servers answer an RPC
/// they do not route with UNIMPLEMENTED and an empty message (tonic) or "unknown method …"
/// (grpc-go); an RPC that is routed but not built answers UNIMPLEMENTED with its own words,
/// which is a missing feature, not a missing RPC.
pub fn rpc_absent(status: &tonic::Status) -> bool {
    let message = status.message();
    status.code() == tonic::Code::Unimplemented
        && (message.is_empty() || message.starts_with("unknown method") || message.starts_with("unknown service"))
}

/// Any answer but "no such RPC" (even an error about the empty request) means served.
fn served<T>(result: &Result<T, tonic::Status>) -> bool {
    !matches!(result, Err(s) if rpc_absent(s))
}

async fn stream_served<M>(
    call: impl std::future::Future<Output = Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>>,
) -> bool {
    match call.await {
        Ok(response) => {
            let mut stream = response.into_inner();
            // cri-client sees UNIMPLEMENTED on the first Recv, so look there too.
            !matches!(stream.next().await, Some(Err(s)) if rpc_absent(&s))
        }
        Err(e) => served::<()>(&Err(e)),
    }
}

impl Probe {
    fn of(rpc: &'static str, served: bool) -> Probe {
        let added_in = lockstep_cri::versions::added_in(rpc).unwrap_or_else(|| "a later minor".into());
        Probe { rpc, added_in, served }
    }
}

impl Surface {
    /// Whether the runtime serves `rpc`: false only when the probe found it absent.
    pub fn serves(&self, rpc: &str) -> bool {
        self.probes.iter().find(|p| p.rpc == rpc).is_none_or(|p| p.served)
    }
}

pub async fn probe(channel: Channel) -> Surface {
    let mut runtime = RuntimeServiceClient::new(channel.clone());
    let mut image = ImageServiceClient::new(channel);
    let mut probes = vec![
        Probe::of("RuntimeConfig", served(&runtime.runtime_config(model::RuntimeConfigRequest {}).await)),
        Probe::of(
            "UpdatePodSandboxResources",
            // An empty sandbox id changes nothing on a runtime that serves it.
            served(&runtime.update_pod_sandbox_resources(model::UpdatePodSandboxResourcesRequest::default()).await),
        ),
    ];
    let streams = [
        (
            "StreamPodSandboxes",
            stream_served(runtime.stream_pod_sandboxes(model::StreamPodSandboxesRequest::default())).await,
        ),
        ("StreamContainers", stream_served(runtime.stream_containers(model::StreamContainersRequest::default())).await),
        ("StreamImages", stream_served(image.stream_images(model::StreamImagesRequest::default())).await),
    ];
    probes.extend(streams.into_iter().map(|(rpc, served)| Probe::of(rpc, served)));
    let summary = summarize(&probes);
    Surface { probes, summary }
}

fn summarize(probes: &[Probe]) -> String {
    match probes.iter().find(|p| !p.served) {
        None => {
            let newest = probes.iter().map(|p| p.added_in.as_str()).max().unwrap_or("?");
            let names: Vec<&str> = probes.iter().map(|p| p.rpc).collect();
            format!("serves every probed RPC up to Kubernetes {newest} ({})", names.join(", "))
        }
        Some(first) => {
            let missing: Vec<&str> = probes.iter().filter(|p| !p.served).map(|p| p.rpc).collect();
            format!("speaks a CRI older than Kubernetes {}: it has no {}", first.added_in, missing.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_rpc_is_told_from_one_not_built() {
        assert!(rpc_absent(&tonic::Status::unimplemented("")));
        assert!(rpc_absent(&tonic::Status::unimplemented(
            "unknown method RuntimeConfig for service runtime.v1.RuntimeService"
        )));
        assert!(!rpc_absent(&tonic::Status::unimplemented("lockstep does not implement StreamImages yet")));
        assert!(!rpc_absent(&tonic::Status::invalid_argument("")));
    }

    #[test]
    fn the_summary_names_the_oldest_missing_minor() {
        let probe = |rpc, added_in: &str, served| Probe { rpc, added_in: added_in.into(), served };
        let old = [probe("RuntimeConfig", "1.28", false), probe("StreamContainers", "1.36", false)];
        assert_eq!(
            summarize(&old),
            "speaks a CRI older than Kubernetes 1.28: it has no RuntimeConfig, StreamContainers"
        );
        let mid = [probe("RuntimeConfig", "1.28", true), probe("StreamContainers", "1.36", false)];
        assert!(summarize(&mid).contains("older than Kubernetes 1.36"));
        assert!(summarize(&[probe("RuntimeConfig", "1.28", true)]).starts_with("serves every probed RPC"));
    }
}
