//! `lockstep-conformance bench`: per-operation latency percentiles (p50/p95/p99, min, max),
//! N iterations at a concurrency level, on one endpoint and optionally a second one (`--vs`)
//! in the same run, with the ratios between them. A benchmark is written once against the
//! model, like a test, and sent through the run's minor. Progress goes to stderr.

pub mod checkpoint;
pub mod containers;
pub mod density;
pub mod events;
pub mod images;
mod pods;
pub mod run;
mod runtime_info;
mod stats;
pub mod streaming;
pub mod streaming_io;
pub mod userns;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lockstep_cri::{model, CriClient, Minor};

use crate::framework::Ctx;
pub use stats::{percentiles, Percentiles};

/// What a benchmark gets: the test context, the iteration count and concurrency, and the pid
/// of the daemon under test when it is known (for memory readings).
#[derive(Clone)]
pub struct BenchCtx {
    pub ctx: Ctx,
    pub iterations: usize,
    pub concurrency: usize,
    pub daemon_pid: Option<u32>,
    /// The label of the runtime in progress lines.
    pub label: String,
    /// The sizes of the density and concurrency benchmarks.
    pub sizes: Sizes,
}

/// How big the density and concurrency benchmarks are (issue 19's sizes by default; tests
/// and CI run small ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Pods in the burst.
    pub burst_pods: usize,
    /// Pods started (and torn down) at once, in the burst and when filling the node.
    pub burst_concurrency: usize,
    /// Pods kept running for the density benchmark.
    pub density_pods: usize,
    /// How long the 1 s relist loop runs, in seconds (one sample of each list a second).
    pub relist_secs: u64,
    /// How long the daemon is left idle while its CPU time is counted, in seconds.
    pub idle_secs: u64,
    /// Containers created (one in ten started) for the ListContainers benchmark.
    pub listed_containers: usize,
    /// How many times lockstepd is restarted with the density pods (embedded only).
    pub restarts: usize,
}

impl Default for Sizes {
    fn default() -> Sizes {
        Sizes {
            burst_pods: 50,
            burst_concurrency: 10,
            density_pods: 250,
            relist_secs: 60,
            idle_secs: 60,
            listed_containers: 1000,
            restarts: 3,
        }
    }
}

/// The samples of one operation.
#[derive(Debug, Clone)]
pub struct Series {
    pub op: String,
    pub samples: Vec<Duration>,
}

/// A benchmark's findings: latency series and other readings (peak memory, …), by name.
#[derive(Debug, Clone, Default)]
pub struct BenchResult {
    pub series: Vec<Series>,
    pub readings: Vec<(String, String)>,
}

pub type BenchFuture = Pin<Box<dyn Future<Output = anyhow::Result<BenchResult>> + Send>>;

#[derive(Clone)]
pub struct Bench {
    pub name: &'static str,
    pub since: Minor,
    pub body: fn(BenchCtx) -> BenchFuture,
}

/// Every benchmark, in the order the report lists them.
pub fn all() -> Vec<Bench> {
    let mut benches = Vec::new();
    benches.extend(runtime_info::benches());
    benches.extend(pods::benches());
    benches.extend(images::benches());
    benches.extend(containers::benches());
    benches.extend(events::benches());
    benches.extend(streaming::benches());
    benches.extend(checkpoint::benches());
    benches.extend(streaming_io::benches());
    benches.extend(userns::benches());
    benches.extend(density::benches());
    benches
}

/// Pulls the shell fixture (a container benchmark's image) through `client`; its image ID.
pub async fn pull_shell(bench: &BenchCtx, client: &mut CriClient) -> anyhow::Result<String> {
    let env = bench.ctx.registry.clone().context("no registry with the fixture images")?;
    let reference = env.fixture(lockstep_testkit::fixtures::SHELL).reference(&env.host);
    let image = Some(model::ImageSpec { image: reference.clone(), ..Default::default() });
    let pulled = client.pull_image(model::PullImageRequest { image, ..Default::default() }).await;
    Ok(pulled.with_context(|| format!("PullImage {reference}"))?.image_ref)
}

/// A benchmark pod whose container logs go to a temporary directory (with the `sleeper`
/// container's directory made), which lives as long as the caller keeps it.
pub fn pod_with_logs(name: &str) -> anyhow::Result<(model::PodSandboxConfig, tempfile::TempDir)> {
    let logs = tempfile::Builder::new().prefix("lockstep-bench-logs-").tempdir().context("cannot make a temp dir")?;
    std::fs::create_dir_all(logs.path().join("sleeper")).context("cannot make the log directory")?;
    let mut config = crate::suites::podkit::pod_config(name);
    config.log_directory = logs.path().display().to_string();
    Ok((config, logs))
}

/// Runs `op` `iterations` times with `concurrency` calls in flight and records each latency.
pub async fn measure<F, Fut>(bench: &BenchCtx, name: &str, op: F) -> anyhow::Result<Series>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    measure_n(bench, name, bench.iterations, bench.concurrency, op).await
}

/// As `measure`, `n` times with `concurrency` calls in flight (the run's own counts aside).
pub async fn measure_n<F, Fut>(
    bench: &BenchCtx,
    name: &str,
    n: usize,
    concurrency: usize,
    op: F,
) -> anyhow::Result<Series>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use futures::StreamExt;
    let mut samples = Vec::with_capacity(n);
    let mut timed = futures::stream::iter(0..n)
        .map(|i| {
            let call = op(i);
            async move {
                let started = Instant::now();
                call.await.map(|()| started.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1));
    let progress = crate::progress::Progress::start(&format!("bench {}", bench.label), Some(n as u64), name);
    while let Some(sample) = timed.next().await {
        samples.push(sample?);
        progress.inc(1);
    }
    progress.finish();
    Ok(Series { op: name.to_string(), samples })
}

/// The peak resident memory (VmHWM) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field_kib(pid, "VmHWM:")
}

/// The current resident memory (VmRSS) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field_kib(pid, "VmRSS:")
}

/// The anonymous part of a process's RSS (heap, stacks), KiB: what it allocated, without the
/// pages of its code and files, which it maps once and pages in as it first uses them.
pub fn rss_anon_kib(pid: u32) -> Option<u64> {
    status_field_kib(pid, "RssAnon:")
}

fn status_field_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
