//! The floor under every other number: a Version and a Status round trip over the socket.

use lockstep_cri::{model, Minor};

use super::{measure, Bench, BenchCtx, BenchFuture, BenchResult};

pub fn benches() -> Vec<Bench> {
    vec![Bench {
        name: "runtime-info round trips",
        since: Minor::V1_30,
        body: |b| Box::pin(round_trips(b)) as BenchFuture,
    }]
}

async fn round_trips(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let client = bench.ctx.kubelet();
    let version = measure(&bench, "Version", |_| {
        let mut c = client.clone();
        async move { Ok(c.version(model::VersionRequest::default()).await.map(drop)?) }
    })
    .await?;
    let status = measure(&bench, "Status", |_| {
        let mut c = client.clone();
        async move { Ok(c.status(model::StatusRequest { verbose: false }).await.map(drop)?) }
    })
    .await?;
    Ok(BenchResult { series: vec![version, status], readings: vec![] })
}
