//! Cold pull + unpack of the ~200 MB fixture image (busybox and 5 layers of incompressible
//! data) from a private registry on loopback: the image is removed before every pull, and the
//! daemon's peak resident memory during the pulls is read (VmHWM, reset before each pull).
//! And two images that share those six layers pulled at once, cold, with the bytes the
//! registry sent for the pair: a runtime that fetches a shared layer once sends ~200 MB.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use lockstep_cri::{model, Minor};

use super::{Bench, BenchCtx, BenchFuture, BenchResult, Series};
use lockstep_testkit::fixtures;

/// Pulls per runtime: each moves ~200 MB, so the run's --iterations is capped here.
const MAX_PULLS: usize = 5;

/// The benchmark's name; a run that selects it starts a registry holding the large image.
pub const PULL_BENCH: &str = "image pull (200 MB, 6 layers, cold)";
/// Likewise, with the large image's sibling.
pub const SHARED_PULL_BENCH: &str = "two images sharing 200 MB of layers, pulled at once (cold)";

pub fn benches() -> Vec<Bench> {
    vec![
        Bench { name: PULL_BENCH, since: Minor::V1_30, body: |b| Box::pin(cold_pull(b)) as BenchFuture },
        Bench { name: SHARED_PULL_BENCH, since: Minor::V1_30, body: |b| Box::pin(shared_pull(b)) as BenchFuture },
    ]
}

/// Removes an image and checks it is gone, so that the next pull is cold.
async fn remove_cold(client: &mut lockstep_cri::CriClient, id: &str) -> anyhow::Result<()> {
    client
        .remove_image(model::RemoveImageRequest { image: spec(id) })
        .await
        .context("RemoveImage before a cold pull")?;
    let gone = client.image_status(model::ImageStatusRequest { image: spec(id), verbose: false }).await?;
    if gone.image.is_some() {
        bail!("{id} is still there after RemoveImage: the pull would not be cold");
    }
    Ok(())
}

async fn shared_pull(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let env = bench.ctx.registry.clone().context("no registry for the pull benchmark")?;
    let find = |repo: &str| env.standard.iter().find(|f| f.repo == repo).context("the large images were not pushed");
    let (large, sibling) = (find(fixtures::LARGE)?, find(fixtures::LARGE_SIBLING)?);
    let mut client = bench.ctx.kubelet();
    client.set_timeout(Some(Duration::from_secs(300)));
    let pairs = bench.iterations.clamp(1, MAX_PULLS);
    let (mut samples, mut served) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        for fixture in [large, sibling] {
            remove_cold(&mut client, fixture.id()).await?;
        }
        let before = env.served_bytes();
        let started = Instant::now();
        let pull = |fixture: &fixtures::Fixture| {
            let mut client = client.clone();
            let request = model::PullImageRequest { image: spec(&fixture.reference(&env.host)), ..Default::default() };
            async move { client.pull_image(request).await.map(|r| r.image_ref) }
        };
        let (a, b) = tokio::join!(pull(large), pull(sibling));
        samples.push(started.elapsed());
        if a? != large.id() || b? != sibling.id() {
            bail!("the pulls returned other image IDs than the fixtures'");
        }
        if let (Some(before), Some(after)) = (before, env.served_bytes()) {
            served.push(after.saturating_sub(before));
        }
        eprintln!("bench {}: pair {}/{pairs} {:.0} ms", bench.label, i + 1, samples[i].as_secs_f64() * 1000.0);
    }
    for fixture in [large, sibling] {
        client.remove_image(model::RemoveImageRequest { image: spec(fixture.id()) }).await?;
    }
    let shared: usize = large.image.layers.iter().map(|l| l.blob.len()).sum();
    let mut readings = vec![("shared layers".to_string(), format!("{:.0} MB compressed", shared as f64 / 1e6))];
    if let Some(max) = served.iter().max() {
        let min = served.iter().min().unwrap_or(max);
        readings.push((
            "registry sent per pair".into(),
            format!(
                "{:.0}–{:.0} MB ({:.2}–{:.2} × the shared layers)",
                *min as f64 / 1e6,
                *max as f64 / 1e6,
                *min as f64 / shared as f64,
                *max as f64 / shared as f64
            ),
        ));
    }
    Ok(BenchResult {
        series: vec![Series { op: "2 × PullImage, 6 of 7 layers shared (cold)".into(), samples }],
        readings,
    })
}

fn spec(image: &str) -> Option<model::ImageSpec> {
    Some(model::ImageSpec { image: image.to_string(), ..Default::default() })
}

/// Resets a process's peak RSS (VmHWM) to its current RSS.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

async fn cold_pull(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let env = bench.ctx.registry.clone().context("no registry for the pull benchmark")?;
    let large = env.standard.iter().find(|f| f.repo == fixtures::LARGE).context("the large fixture was not pushed")?;
    let image = large.reference(&env.host);
    let mut client = bench.ctx.kubelet();
    client.set_timeout(Some(Duration::from_secs(300)));
    let pulls = bench.iterations.clamp(1, MAX_PULLS);
    let mut samples = Vec::new();
    let mut peak_kib = 0u64;
    let mut peak_known = bench.daemon_pid.is_some();
    let idle_kib = bench.daemon_pid.and_then(super::rss_kib);
    for i in 0..pulls {
        remove_cold(&mut client, large.id()).await?;
        if let Some(pid) = bench.daemon_pid {
            peak_known &= reset_peak(pid);
        }
        let started = Instant::now();
        let id =
            client.pull_image(model::PullImageRequest { image: spec(&image), ..Default::default() }).await?.image_ref;
        samples.push(started.elapsed());
        if id != large.id() {
            bail!("pulled {id}, expected {}", large.id());
        }
        if let Some(peak) = bench.daemon_pid.and_then(super::peak_rss_kib) {
            peak_kib = peak_kib.max(peak);
        }
        eprintln!("bench {}: pull {}/{pulls} {:.0} ms", bench.label, i + 1, samples[i].as_secs_f64() * 1000.0);
    }
    client.remove_image(model::RemoveImageRequest { image: spec(large.id()) }).await?;
    let mut readings = vec![(
        "image size".to_string(),
        format!("{:.0} MB compressed", large.image.layers.iter().map(|l| l.blob.len()).sum::<usize>() as f64 / 1e6),
    )];
    if let Some(idle) = idle_kib {
        readings.push(("RSS before the pulls".into(), format!("{:.1} MiB", idle as f64 / 1024.0)));
    }
    if bench.daemon_pid.is_some() {
        let label = if peak_known { "peak RSS during a pull" } else { "peak RSS since start (reset refused)" };
        readings.push((label.into(), format!("{:.1} MiB", peak_kib as f64 / 1024.0)));
    }
    Ok(BenchResult { series: vec![Series { op: "PullImage (cold)".into(), samples }], readings })
}
