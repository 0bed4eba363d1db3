//! Pod start with `hostUsers: false` beside the same start without: RunPodSandbox,
//! CreateContainer, StartContainer until RUNNING, N pods each way in one run (the kubelet's
//! mapping: 65536 IDs from a multiple of 65536, a new range per pod), then the teardown of
//! all. What a user namespace costs: making and pinning it, and idmapping the image's layers.
//! A runtime whose default handler does not report user namespaces gets the plain start only.

use std::sync::{Arc, Mutex};

use lockstep_cri::{model, Minor};

use super::containers::{lock, start_one, tear_down, Steps};
use super::{measure, Bench, BenchCtx, BenchFuture, BenchResult, Series};

/// The benchmark's name; a run that selects it starts a registry with the fixture images.
pub const USERNS_BENCH: &str = "pod start with and without a user namespace (hostUsers: false)";

pub fn benches() -> Vec<Bench> {
    vec![Bench { name: USERNS_BENCH, since: Minor::V1_30, body: |b| Box::pin(userns(b)) as BenchFuture }]
}

/// userns_options for the i-th pod, as the kubelet allocates them.
fn kubelet_range(i: usize) -> model::UserNamespace {
    let range = || vec![model::IdMapping { container_id: 0, host_id: 65536 * (100 + i as u32), length: 65536 }];
    model::UserNamespace { mode: model::NamespaceMode::Pod as i32, uids: range(), gids: range() }
}

async fn userns(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let mut client = bench.ctx.kubelet();
    let status = client.status(model::StatusRequest { verbose: false }).await?;
    let supported = status
        .runtime_handlers
        .iter()
        .any(|h| h.name.is_empty() && h.features.as_ref().is_some_and(|f| f.user_namespaces));
    let image = super::pull_shell(&bench, &mut client).await?;
    let logs = tempfile::Builder::new().prefix("lockstep-bench-logs-").tempdir()?;
    let plain_steps = Arc::new(Mutex::new(Steps::default()));
    let plain = measure(&bench, "pod start (to RUNNING), node's user namespace", |i| {
        start_one(client.clone(), image.clone(), logs.path().join(format!("plain-{i}")), None, plain_steps.clone())
    })
    .await;
    let mapped_steps = Arc::new(Mutex::new(Steps::default()));
    let mapped = if supported {
        Some(
            measure(&bench, "pod start (to RUNNING), hostUsers: false", |i| {
                let log_dir = logs.path().join(format!("userns-{i}"));
                start_one(client.clone(), image.clone(), log_dir, Some(kubelet_range(i)), mapped_steps.clone())
            })
            .await,
        )
    } else {
        None
    };
    let pods: Vec<_> = lock(&plain_steps).pods.iter().chain(&lock(&mapped_steps).pods).cloned().collect();
    let teardown = measure(&bench, "pod teardown", |i| tear_down(client.clone(), pods.get(i).cloned())).await;
    let mut series = vec![plain?];
    let mut readings = Vec::new();
    match mapped {
        Some(m) => series.push(m?),
        None => readings.push(("hostUsers: false".to_string(), "not reported by the default handler".to_string())),
    }
    // Where the difference is: each step of the start, both ways.
    for (way, steps) in [("node's user namespace", &plain_steps), ("hostUsers: false", &mapped_steps)] {
        let steps = std::mem::take(&mut *lock(steps));
        for (op, samples) in
            [("RunPodSandbox", steps.run_pod), ("CreateContainer", steps.create), ("StartContainer", steps.start)]
        {
            if !samples.is_empty() {
                series.push(Series { op: format!("{op}, {way}"), samples });
            }
        }
    }
    series.push(teardown?);
    Ok(BenchResult { series, readings })
}
