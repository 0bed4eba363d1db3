//! Pod sandbox latency: RunPodSandbox for N pods (each with its own network namespace on the
//! CNI network, as the kubelet makes them), then StopPodSandbox + RemovePodSandbox for each.

use std::sync::{Arc, Mutex};

use lockstep_cri::{model, Minor};

use super::{measure, Bench, BenchCtx, BenchFuture, BenchResult};
use crate::suites::podkit;

pub fn benches() -> Vec<Bench> {
    vec![Bench { name: "pod sandboxes", since: Minor::V1_30, body: |b| Box::pin(pods(b)) as BenchFuture }]
}

async fn pods(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let client = bench.ctx.kubelet();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let run = measure(&bench, "RunPodSandbox", |_| {
        let mut c = client.clone();
        let ids = ids.clone();
        async move {
            let config = podkit::pod_config("bench");
            let id = c
                .run_pod_sandbox(model::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
                .await?
                .pod_sandbox_id;
            ids.lock().unwrap_or_else(|p| p.into_inner()).push(id);
            Ok(())
        }
    })
    .await;
    let made: Vec<String> = ids.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let rss = bench.daemon_pid.and_then(super::rss_kib);
    let teardown = measure(&bench, "StopPodSandbox+RemovePodSandbox", |i| {
        let mut c = client.clone();
        let id = made.get(i).cloned();
        async move {
            let Some(id) = id else { return Ok(()) };
            c.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await?;
            c.remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: id }).await?;
            Ok(())
        }
    })
    .await;
    let run = run?;
    let teardown = teardown?;
    let mut readings = Vec::new();
    if let Some(kib) = rss {
        readings.push((format!("daemon RSS with {} pods", made.len()), format!("{:.1} MiB", kib as f64 / 1024.0)));
    }
    Ok(BenchResult { series: vec![run, teardown], readings })
}
