//! Pod start with `hostUsers: false` beside the same start without: RunPodSandbox,
//! CreateContainer, StartContainer until RUNNING, N pods each way in one run, interleaved (the kubelet's
//! mapping: 65536 IDs from a multiple of 65536, a new range per pod), then the teardown of
//! all. What a user namespace costs: making and pinning it, and idmapping the image's layers.
//! A runtime whose default handler does not report user namespaces gets the plain start only.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    let mapped_steps = Arc::new(Mutex::new(Steps::default()));
    let totals: Arc<Mutex<[Vec<Duration>; 2]>> = Arc::default();
    // Each iteration starts one pod of each kind, the order alternating, so that a machine
    // getting busier or quieter weighs on both alike.
    let pairs = measure(&bench, "a pod of each kind", |i| {
        let (client, image, logs) = (client.clone(), image.clone(), logs.path().to_path_buf());
        let (plain_steps, mapped_steps, totals) = (plain_steps.clone(), mapped_steps.clone(), totals.clone());
        async move {
            let kinds: &[usize] = match (supported, i % 2) {
                (false, _) => &[0],
                (true, 0) => &[0, 1],
                (true, _) => &[1, 0],
            };
            for &kind in kinds {
                let t = Instant::now();
                if kind == 0 {
                    start_one(
                        client.clone(),
                        image.clone(),
                        logs.join(format!("plain-{i}")),
                        None,
                        plain_steps.clone(),
                    )
                    .await?;
                } else {
                    let log_dir = logs.join(format!("userns-{i}"));
                    start_one(client.clone(), image.clone(), log_dir, Some(kubelet_range(i)), mapped_steps.clone())
                        .await?;
                }
                lock(&totals)[kind].push(t.elapsed());
            }
            Ok(())
        }
    })
    .await;
    let pods: Vec<_> = lock(&plain_steps).pods.iter().chain(&lock(&mapped_steps).pods).cloned().collect();
    // Two pods an iteration: each iteration tears down two.
    let teardown = measure(&bench, "pod teardown (two pods)", |i| {
        let (client, first, second) = (client.clone(), pods.get(2 * i).cloned(), pods.get(2 * i + 1).cloned());
        async move {
            tear_down(client.clone(), first).await?;
            tear_down(client, second).await
        }
    })
    .await;
    pairs?;
    let [plain, mapped] = std::mem::take(&mut *lock(&totals));
    let mut series = vec![Series { op: "pod start (to RUNNING), node's user namespace".into(), samples: plain }];
    let mut readings = Vec::new();
    if supported {
        series.push(Series { op: "pod start (to RUNNING), hostUsers: false".into(), samples: mapped });
    } else {
        readings.push(("hostUsers: false".to_string(), "not reported by the default handler".to_string()));
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
