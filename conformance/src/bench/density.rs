//! Density and concurrency, as a kubelet loads a runtime after a node drain: a burst of pod
//! starts at a concurrency and its teardown; many pods running under the PLEG's 1 s relist and
//! the stats provider, with the daemon's memory, its CPU time while idle and (for a lockstepd
//! this run started) its start-up with that state; ListContainers over many created containers.
//! The sizes come from `Sizes` (flags), so tests and CI run small versions.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lockstep_cri::{model, CriClient, Minor};

use super::containers::{first_line, lock, start_one, tear_down, Started, Steps};
use super::{measure, measure_n, Bench, BenchCtx, BenchFuture, BenchResult, Series};

pub const BURST_BENCH: &str = "burst: pods started, then torn down, at a concurrency";
pub const DENSITY_BENCH: &str =
    "density: pods running under a 1 s relist loop (lists, stats, memory, idle CPU, restart)";
pub const MANY_CONTAINERS_BENCH: &str = "ListContainers with many created containers";
/// Every benchmark of this file (a run that selects one starts a registry with the fixtures).
pub const NAMES: [&str; 3] = [BURST_BENCH, DENSITY_BENCH, MANY_CONTAINERS_BENCH];

pub fn benches() -> Vec<Bench> {
    vec![
        Bench { name: BURST_BENCH, since: Minor::V1_30, body: |b| Box::pin(burst(b)) as BenchFuture },
        Bench {
            name: MANY_CONTAINERS_BENCH,
            since: Minor::V1_30,
            body: |b| Box::pin(many_containers(b)) as BenchFuture,
        },
        // Last: it restarts an embedded lockstepd.
        Bench { name: DENSITY_BENCH, since: Minor::V1_30, body: |b| Box::pin(density(b)) as BenchFuture },
    ]
}

/// Pods started together: each one's latency, the pods (for the teardown, whatever failed)
/// and the wall time of the whole.
struct Filled {
    series: anyhow::Result<Series>,
    pods: Vec<Started>,
    wall: Duration,
}

/// Starts `n` pods of one `sleep` container each, `burst_concurrency` at once.
async fn start_pods(bench: &BenchCtx, client: &CriClient, image: &str, logs: &Path, n: usize, op: &str) -> Filled {
    let steps = Arc::new(Mutex::new(Steps::default()));
    let t = Instant::now();
    let series = measure_n(bench, op, n, bench.sizes.burst_concurrency, |i| {
        start_one(client.clone(), image.to_string(), logs.join(format!("pod-{i}")), None, steps.clone())
    })
    .await;
    let wall = t.elapsed();
    let pods = lock(&steps).pods.clone();
    Filled { series, pods, wall }
}

/// Tears `pods` down, `burst_concurrency` at once: the latencies and the wall time.
async fn tear_down_pods(
    bench: &BenchCtx,
    client: &CriClient,
    pods: &[Started],
    op: &str,
) -> (anyhow::Result<Series>, Duration) {
    let t = Instant::now();
    let series = measure_n(bench, op, pods.len(), bench.sizes.burst_concurrency, |i| {
        tear_down(client.clone(), pods.get(i).cloned())
    })
    .await;
    (series, t.elapsed())
}

fn rate(n: usize, wall: Duration) -> String {
    format!("{:.1} pods/s ({n} pods in {:.2} s)", n as f64 / wall.as_secs_f64().max(1e-9), wall.as_secs_f64())
}

/// p99 over p50 of a series, the burst's evenness.
fn spread(series: &Series) -> String {
    match super::percentiles(&series.samples) {
        Some(p) if !p.p50.is_zero() => format!("{:.2}", p.p99.as_secs_f64() / p.p50.as_secs_f64()),
        _ => "n/a".into(),
    }
}

async fn burst(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let mut client = bench.ctx.kubelet();
    let image = super::pull_shell(&bench, &mut client).await?;
    let logs = tempfile::Builder::new().prefix("lockstep-bench-logs-").tempdir().context("cannot make a temp dir")?;
    let (n, c) = (bench.sizes.burst_pods, bench.sizes.burst_concurrency);
    let filled = start_pods(&bench, &client, &image, logs.path(), n, "pod start (to RUNNING) in the burst").await;
    let (teardown, down_wall) = tear_down_pods(&bench, &client, &filled.pods, "pod teardown in the burst").await;
    let (started, teardown) = (filled.series?, teardown?);
    let readings = vec![
        (format!("burst start, {n} pods at {c}"), rate(n, filled.wall)),
        ("burst start p99/p50".to_string(), spread(&started)),
        (format!("burst teardown, {n} pods at {c}"), rate(n, down_wall)),
        ("burst teardown p99/p50".to_string(), spread(&teardown)),
    ];
    let series = vec![
        started,
        Series { op: format!("whole burst start ({n} pods)"), samples: vec![filled.wall] },
        teardown,
        Series { op: format!("whole burst teardown ({n} pods)"), samples: vec![down_wall] },
    ];
    Ok(BenchResult { series, readings })
}

/// CPU time a process has used, in nanoseconds: the sum of its threads' (schedstat).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time per minute over `window`, and the share of one core it is.
fn per_minute(ns: u64, window: Duration) -> String {
    let share = ns as f64 / window.as_nanos().max(1) as f64;
    format!("{:.1} ms per minute ({:.3} % of a core)", share * 60_000.0, share * 100.0)
}

/// The daemon's and its helpers' CPU time over `body`, as readings named after `what`.
async fn cpu_over<F: std::future::Future<Output = T>, T>(
    bench: &BenchCtx,
    what: &str,
    body: F,
) -> (T, Vec<(String, String)>) {
    let (kind, helpers) = super::containers::helper_processes(bench).await;
    let helpers_cpu = |pids: &[u32]| pids.iter().map(|p| cpu_ns(*p)).sum::<u64>();
    let daemon_before = bench.daemon_pid.map(cpu_ns);
    let helpers_before = helpers_cpu(&helpers);
    let t = Instant::now();
    let value = body.await;
    let window = t.elapsed();
    let mut readings = Vec::new();
    match (bench.daemon_pid, daemon_before) {
        (Some(pid), Some(before)) => {
            readings.push((format!("daemon CPU {what}"), per_minute(cpu_ns(pid).saturating_sub(before), window)))
        }
        _ => readings.push((format!("daemon CPU {what}"), "n/a (its pid is not known)".into())),
    }
    if !helpers.is_empty() {
        let used = helpers_cpu(&helpers).saturating_sub(helpers_before);
        readings.push((format!("{} {kind} CPU {what}", helpers.len()), per_minute(used, window)));
    }
    (value, readings)
}

/// The lists a kubelet makes: the PLEG's relist and the stats provider's, once a second.
struct Relist {
    series: Vec<Series>,
    failed: Vec<(String, String)>,
}

async fn relist_loop(bench: &BenchCtx, client: &CriClient, n: usize) -> Relist {
    let names = [
        format!("ListPodSandbox ({n} pods, 1 s relist)"),
        format!("ListContainers ({n} pods, 1 s relist)"),
        format!("ListContainerStats ({n} pods, 1 s relist)"),
        format!("ListPodSandboxStats ({n} pods, 1 s relist)"),
    ];
    let mut samples: [Vec<Duration>; 4] = Default::default();
    let mut errors: [Option<String>; 4] = Default::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let rounds = bench.sizes.relist_secs as usize;
    for round in 0..rounds {
        tick.tick().await;
        for (k, sample) in samples.iter_mut().enumerate() {
            let mut c = client.clone();
            let t = Instant::now();
            let answered = match k {
                0 => c.list_pod_sandbox(model::ListPodSandboxRequest::default()).await.map(drop),
                1 => c.list_containers(model::ListContainersRequest::default()).await.map(drop),
                2 => c.list_container_stats(model::ListContainerStatsRequest::default()).await.map(drop),
                _ => c.list_pod_sandbox_stats(model::ListPodSandboxStatsRequest::default()).await.map(drop),
            };
            match answered {
                Ok(()) => sample.push(t.elapsed()),
                Err(e) => {
                    errors[k].get_or_insert_with(|| first_line(&anyhow::Error::from(e)));
                }
            }
        }
        if (round + 1).is_multiple_of((rounds / 10).max(1)) {
            eprintln!("bench {}: relist {}/{rounds}", bench.label, round + 1);
        }
    }
    let mut relist = Relist { series: Vec::new(), failed: Vec::new() };
    for ((op, samples), error) in names.into_iter().zip(samples).zip(errors) {
        if let Some(e) = error {
            let rpc = op.split_whitespace().next().unwrap_or_default().to_string();
            relist.failed.push((rpc, format!("failed {} of {rounds} times: {e}", rounds - samples.len())));
        }
        if !samples.is_empty() {
            relist.series.push(Series { op, samples });
        }
    }
    relist
}

async fn density(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let mut client = bench.ctx.kubelet();
    let n = bench.sizes.density_pods;
    let daemon_idle = bench.daemon_pid.and_then(super::rss_kib);
    let image = super::pull_shell(&bench, &mut client).await?;
    let logs = tempfile::Builder::new().prefix("lockstep-bench-logs-").tempdir().context("cannot make a temp dir")?;
    let filled = start_pods(&bench, &client, &image, logs.path(), n, "pod start (to RUNNING), filling the node").await;
    let pods = filled.pods.clone();
    let measured = async {
        let mut series = vec![filled.series?];
        let mut readings = vec![(format!("filling the node, {n} pods"), rate(n, filled.wall))];
        let (relist, cpu) = cpu_over(&bench, "during the relist loop", relist_loop(&bench, &client, n)).await;
        series.extend(relist.series);
        readings.extend(relist.failed);
        readings.extend(cpu);
        readings.extend(super::containers::memory_readings(&bench, daemon_idle, &pods).await);
        eprintln!("bench {}: idle for {} s", bench.label, bench.sizes.idle_secs);
        let idle = tokio::time::sleep(Duration::from_secs(bench.sizes.idle_secs));
        let ((), cpu) = cpu_over(&bench, &format!("idle with {n} pods"), idle).await;
        readings.extend(cpu);
        match restarts(&bench, n).await? {
            Some(restarted) => series.push(restarted),
            None => readings.push((format!("start-up with {n} pods"), "n/a (not a daemon this run started)".into())),
        }
        anyhow::Ok(BenchResult { series, readings })
    }
    .await;
    // A restarted daemon is reached afresh.
    let client = bench.ctx.kubelet();
    let (teardown, wall) = tear_down_pods(&bench, &client, &pods, "pod teardown, emptying the node").await;
    let mut result = measured?;
    result.series.push(teardown?);
    result.readings.push((format!("emptying the node, {n} pods"), rate(n, wall)));
    Ok(result)
}

/// Kills a daemon this run started (SIGKILL) and times its start until ListPodSandbox and
/// ListContainers answer with every pod and container still there; None for any other.
async fn restarts(bench: &BenchCtx, n: usize) -> anyhow::Result<Option<Series>> {
    if !bench.ctx.can_restart() || bench.sizes.restarts == 0 {
        return Ok(None);
    }
    let mut samples = Vec::new();
    for r in 0..bench.sizes.restarts {
        bench.ctx.kill_runtime().await.map_err(|f| anyhow::anyhow!("{f:?}"))?;
        let t = Instant::now();
        bench.ctx.start_runtime().await.map_err(|f| anyhow::anyhow!("{f:?}"))?;
        let mut c = bench.ctx.kubelet();
        let pods = c.list_pod_sandbox(model::ListPodSandboxRequest::default()).await?.items;
        let containers = c.list_containers(model::ListContainersRequest::default()).await?.containers;
        samples.push(t.elapsed());
        let running = containers.iter().filter(|c| c.state == model::ContainerState::ContainerRunning as i32).count();
        anyhow::ensure!(
            pods.len() >= n && running >= n,
            "after restart {r}: {} pods and {running} running containers, {n} of each expected",
            pods.len()
        );
        eprintln!("bench {}: restart {}/{}", bench.label, r + 1, bench.sizes.restarts);
    }
    Ok(Some(Series { op: format!("start-up until the lists answer ({n} pods)"), samples }))
}

/// Containers per pod in the ListContainers benchmark.
const PER_POD: usize = 50;

async fn many_containers(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let mut client = bench.ctx.kubelet();
    let total = bench.sizes.listed_containers;
    let image = super::pull_shell(&bench, &mut client).await?;
    let logs = tempfile::Builder::new().prefix("lockstep-bench-logs-").tempdir().context("cannot make a temp dir")?;
    let pod_count = total.div_ceil(PER_POD);
    let pods: Arc<Mutex<Vec<(usize, String, model::PodSandboxConfig)>>> = Arc::default();
    let containers: Arc<Mutex<Vec<String>>> = Arc::default();
    let c = bench.sizes.burst_concurrency;
    let filled = async {
        measure_n(&bench, "RunPodSandbox (filling)", pod_count, c, |p| {
            let (mut client, pods) = (client.clone(), pods.clone());
            let dir = logs.path().join(format!("pod-{p}"));
            async move {
                for j in 0..PER_POD {
                    std::fs::create_dir_all(dir.join(format!("c{j}"))).context("cannot make a log directory")?;
                }
                let mut config = super::super::suites::podkit::pod_config("bench-many");
                config.log_directory = dir.display().to_string();
                let request =
                    model::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
                let id = client.run_pod_sandbox(request).await?.pod_sandbox_id;
                lock(&pods).push((p, id, config));
                Ok(())
            }
        })
        .await?;
        let by_index: Vec<(String, model::PodSandboxConfig)> = {
            let mut pods = lock(&pods).clone();
            pods.sort_by_key(|(p, _, _)| *p);
            pods.into_iter().map(|(_, id, config)| (id, config)).collect()
        };
        let create = measure_n(&bench, "CreateContainer (filling; one in ten started)", total, c, |i| {
            let (mut client, containers, image) = (client.clone(), containers.clone(), image.clone());
            let pod = by_index.get(i / PER_POD).cloned();
            async move {
                let (pod, config) = pod.context("no pod for the container")?;
                let container = lockstep_testkit::requests::container(
                    &config,
                    &format!("c{}", i % PER_POD),
                    &image,
                    &["sleep", "3600"],
                );
                let request = model::CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(container),
                    sandbox_config: Some(config),
                };
                let id = client.create_container(request).await?.container_id;
                lock(&containers).push(id.clone());
                if i % 10 == 0 {
                    client.start_container(model::StartContainerRequest { container_id: id }).await?;
                }
                Ok(())
            }
        })
        .await?;
        let running = total.div_ceil(10);
        let all = measure(&bench, &format!("ListContainers ({total} containers, {running} running)"), |_| {
            let mut c = client.clone();
            async move { Ok(c.list_containers(model::ListContainersRequest::default()).await.map(drop)?) }
        })
        .await?;
        let first_pod = by_index.first().map(|(id, _)| id.clone()).unwrap_or_default();
        let one_pod = measure(&bench, &format!("ListContainers of one pod (of {total} containers)"), |_| {
            let mut c = client.clone();
            let filter = model::ContainerFilter { pod_sandbox_id: first_pod.clone(), ..Default::default() };
            let request = model::ListContainersRequest { filter: Some(filter) };
            async move { Ok(c.list_containers(request).await.map(drop)?) }
        })
        .await?;
        let mut readings = Vec::new();
        if let Some(m) = bench.daemon_pid.and_then(super::containers::memory_of) {
            readings.push((format!("daemon RSS with {total} containers"), super::containers::mib(m.rss)));
        }
        anyhow::Ok(BenchResult { series: vec![create, all, one_pod], readings })
    }
    .await;
    // Whatever failed: every container, then every pod.
    let ids = lock(&containers).clone();
    let removed = measure_n(&bench, "StopContainer + RemoveContainer (emptying)", ids.len(), c, |i| {
        let (mut client, id) = (client.clone(), ids.get(i).cloned().unwrap_or_default());
        async move {
            client.stop_container(model::StopContainerRequest { container_id: id.clone(), timeout: 0 }).await?;
            client.remove_container(model::RemoveContainerRequest { container_id: id }).await?;
            Ok(())
        }
    })
    .await;
    let pod_ids: Vec<String> = lock(&pods).iter().map(|(_, id, _)| id.clone()).collect();
    for id in &pod_ids {
        let _ = super::super::suites::podkit::stop_and_remove(&mut client, id).await;
    }
    let mut result = filled?;
    result.series.push(removed?);
    Ok(result)
}
