//! Whether a GetContainerEvents subscriber that never reads slows the container calls: in one
//! pod, N container lifecycles (CreateContainer, StartContainer, StopContainer,
//! RemoveContainer: four events each) with no subscriber, then N more with a subscriber that
//! opened the stream and reads nothing. A runtime that blocked its calls on a full subscriber
//! would show it in the second series; one that does not serve the RPC gets that said.

use anyhow::Context as _;
use lockstep_cri::{model, CriClient, Minor};

use super::{measure, Bench, BenchCtx, BenchFuture, BenchResult, Series};
use crate::suites::podkit;

pub const EVENTS_BENCH: &str = "container lifecycle with and without an unread event subscriber";

pub fn benches() -> Vec<Bench> {
    vec![Bench { name: EVENTS_BENCH, since: Minor::V1_30, body: |b| Box::pin(events(b)) as BenchFuture }]
}

/// One container's whole life in the pod.
async fn lifecycle(
    mut c: CriClient,
    pod: String,
    config: model::PodSandboxConfig,
    image: String,
    i: usize,
) -> anyhow::Result<()> {
    let container = lockstep_testkit::requests::container(&config, &format!("c{i}"), &image, &["sleep", "3600"]);
    let request =
        model::CreateContainerRequest { pod_sandbox_id: pod, config: Some(container), sandbox_config: Some(config) };
    let id = c.create_container(request).await?.container_id;
    c.start_container(model::StartContainerRequest { container_id: id.clone() }).await?;
    c.stop_container(model::StopContainerRequest { container_id: id.clone(), timeout: 0 }).await?;
    c.remove_container(model::RemoveContainerRequest { container_id: id }).await?;
    Ok(())
}

async fn events(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let mut client = bench.ctx.kubelet();
    let image = super::pull_shell(&bench, &mut client).await?;
    let (config, logs) = super::pod_with_logs("bench-events")?;
    for i in 0..2 * bench.iterations {
        std::fs::create_dir_all(logs.path().join(format!("c{i}"))).context("cannot make a log directory")?;
    }
    let pod = client
        .run_pod_sandbox(model::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await?
        .pod_sandbox_id;
    let measured = async {
        let run = |label: &'static str, offset: usize| {
            let (client, pod, config, image) = (client.clone(), pod.clone(), config.clone(), image.clone());
            measure(&bench, label, move |i| {
                lifecycle(client.clone(), pod.clone(), config.clone(), image.clone(), offset + i)
            })
        };
        let without: Series = run("create+start+stop+remove, no subscriber", 0).await?;
        let mut readings = Vec::new();
        // Opened, never read: the runtime's buffer for it fills after a few hundred events.
        let unread = client.clone().get_container_events(model::GetEventsRequest {}).await;
        let mut series = vec![without];
        match unread {
            Ok(stream) => {
                let with = run("create+start+stop+remove, an unread subscriber", bench.iterations).await?;
                series.push(with);
                drop(stream);
            }
            Err(status) => readings.push((
                "GetContainerEvents".to_string(),
                format!("not served: {:?} {}", status.code(), status.message()),
            )),
        }
        anyhow::Ok(BenchResult { series, readings })
    }
    .await;
    let _ = podkit::stop_and_remove(&mut client, &pod).await;
    measured
}
