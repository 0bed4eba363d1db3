//! Containers: a whole pod start as the kubelet drives it (RunPodSandbox, CreateContainer,
//! StartContainer, ContainerStatus until RUNNING) over N pods, with CreateContainer +
//! StartContainer on their own; then, with the N pods running, ExecSync, the PLEG's
//! ListContainers / ListPodSandbox, the stats provider's ListPodSandboxStats /
//! ListContainerStats, and memory: the daemon idle and with N pods, plus the
//! per-container helper processes of the runtime under test (lockstep-monitor under its runroot,
//! or containerd-shim with `-address <its socket>`); then the teardown of every pod.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use lockstep_cri::{model, CriClient, Minor};

use super::{measure, Bench, BenchCtx, BenchFuture, BenchResult, Series};
use crate::suites::podkit;

/// The benchmark's name; a run that selects it starts a registry with the fixture images.
pub const CONTAINER_BENCH: &str = "pod start with a container (and exec, lists, memory with the pods running)";

pub fn benches() -> Vec<Bench> {
    vec![Bench { name: CONTAINER_BENCH, since: Minor::V1_30, body: |b| Box::pin(pod_start(b)) as BenchFuture }]
}

/// One pod of the benchmark.
#[derive(Debug, Clone)]
pub(super) struct Started {
    pod: String,
    container: String,
}

/// Latencies of the steps inside each pod start.
#[derive(Default)]
pub(super) struct Steps {
    pub(super) run_pod: Vec<Duration>,
    pub(super) create: Vec<Duration>,
    pub(super) start: Vec<Duration>,
    create_start: Vec<Duration>,
    pub(super) pods: Vec<Started>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn pod_start(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let mut client = bench.ctx.kubelet();
    let daemon_idle = bench.daemon_pid.and_then(super::rss_kib);
    let image = super::pull_shell(&bench, &mut client).await?;
    let logs = tempfile::Builder::new().prefix("lockstep-bench-logs-").tempdir().context("cannot make a temp dir")?;
    let steps = Arc::new(Mutex::new(Steps::default()));
    let started = measure(&bench, "pod start (to RUNNING)", |i| {
        start_one(client.clone(), image.clone(), logs.path().join(format!("pod-{i}")), None, steps.clone())
    })
    .await;
    let pods: Vec<Started> = lock(&steps).pods.clone();
    // With the pods running (whatever failed above): exec, lists and memory, then teardown.
    let running = async {
        let started = started?;
        let first = pods.first().context("no pod started")?.container.clone();
        let exec = measure(&bench, "ExecSync (true)", |_| {
            let mut c = client.clone();
            let id = first.clone();
            async move {
                let r = c
                    .exec_sync(model::ExecSyncRequest { container_id: id, cmd: vec!["true".into()], timeout: 10 })
                    .await?;
                if r.exit_code != 0 {
                    bail!("`true` exited {}", r.exit_code);
                }
                Ok(())
            }
        })
        .await?;
        let n = pods.len();
        let list_containers = measure(&bench, &format!("ListContainers ({n} pods)"), |_| {
            let mut c = client.clone();
            async move { Ok(c.list_containers(model::ListContainersRequest::default()).await.map(drop)?) }
        })
        .await?;
        let list_pods = measure(&bench, &format!("ListPodSandbox ({n} pods)"), |_| {
            let mut c = client.clone();
            async move { Ok(c.list_pod_sandbox(model::ListPodSandboxRequest::default()).await.map(drop)?) }
        })
        .await?;
        let mut series = vec![started, exec, list_containers, list_pods];
        let mut failed = Vec::new();
        // The stats provider's calls: a runtime that cannot answer one (containerd 1.6's
        // ListPodSandboxStats on these hosts) gets it said, and the rest still measured.
        let pod_stats = measure(&bench, &format!("ListPodSandboxStats ({n} pods)"), |_| {
            let mut c = client.clone();
            async move { Ok(c.list_pod_sandbox_stats(model::ListPodSandboxStatsRequest::default()).await.map(drop)?) }
        })
        .await;
        let container_stats = measure(&bench, &format!("ListContainerStats ({n} pods)"), |_| {
            let mut c = client.clone();
            async move { Ok(c.list_container_stats(model::ListContainerStatsRequest::default()).await.map(drop)?) }
        })
        .await;
        for (rpc, measured) in [("ListPodSandboxStats", pod_stats), ("ListContainerStats", container_stats)] {
            match measured {
                Ok(s) => series.push(s),
                Err(e) => failed.push((rpc.to_string(), format!("failed: {}", first_line(&e)))),
            }
        }
        let mut memory = memory_readings(&bench, daemon_idle, &pods).await;
        memory.extend(failed);
        anyhow::Ok((series, memory))
    }
    .await;
    let teardown = measure(&bench, "pod teardown", |i| tear_down(client.clone(), pods.get(i).cloned())).await;
    let (mut series, readings) = running?;
    let teardown = teardown?;
    let steps = std::mem::take(&mut *lock(&steps));
    for (op, samples) in [
        ("RunPodSandbox", steps.run_pod),
        ("CreateContainer", steps.create),
        ("StartContainer", steps.start),
        ("CreateContainer+StartContainer", steps.create_start),
    ] {
        series.push(Series { op: op.into(), samples });
    }
    series.push(teardown);
    Ok(BenchResult { series, readings })
}

/// The first line of an error's chain, for a reading.
pub(super) fn first_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.lines().next().unwrap_or_default().chars().take(160).collect()
}

/// RunPodSandbox (with `userns`, the pod's user namespace), CreateContainer, StartContainer,
/// ContainerStatus until RUNNING.
pub(super) async fn start_one(
    mut c: CriClient,
    image: String,
    log_dir: PathBuf,
    userns: Option<model::UserNamespace>,
    steps: Arc<Mutex<Steps>>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(log_dir.join("sleeper")).with_context(|| format!("cannot make {}", log_dir.display()))?;
    let mut config = podkit::pod_config("bench-pod");
    config.log_directory = log_dir.display().to_string();
    podkit::namespace_options(&mut config).userns_options = userns;
    let t = Instant::now();
    let pod = c
        .run_pod_sandbox(model::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await?
        .pod_sandbox_id;
    let run_pod = t.elapsed();
    let container = container_config(&config, &image);
    let t = Instant::now();
    let created = c
        .create_container(model::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container),
            sandbox_config: Some(config),
        })
        .await;
    let id = match created {
        Ok(r) => r.container_id,
        Err(e) => {
            lock(&steps).pods.push(Started { pod, container: String::new() });
            return Err(e.into());
        }
    };
    let create = t.elapsed();
    lock(&steps).pods.push(Started { pod: pod.clone(), container: id.clone() });
    let t = Instant::now();
    c.start_container(model::StartContainerRequest { container_id: id.clone() }).await?;
    let start = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c
            .container_status(model::ContainerStatusRequest { container_id: id.clone(), verbose: false })
            .await?
            .status
            .context("no status")?;
        if s.state == model::ContainerState::ContainerRunning as i32 {
            break;
        }
        if s.state == model::ContainerState::ContainerExited as i32 || Instant::now() > deadline {
            bail!("container {id} did not run (state {}, exit code {})", s.state, s.exit_code);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut steps = lock(&steps);
    steps.run_pod.push(run_pod);
    steps.create.push(create);
    steps.start.push(start);
    steps.create_start.push(create + start);
    Ok(())
}

/// A sleeping container as the kubelet configures one (the testkit's `requests::container`).
pub(super) fn container_config(pod: &model::PodSandboxConfig, image: &str) -> model::ContainerConfig {
    lockstep_testkit::requests::container(pod, "sleeper", image, &["sleep", "3600"])
}

pub(super) async fn tear_down(mut c: CriClient, started: Option<Started>) -> anyhow::Result<()> {
    let Some(started) = started else { return Ok(()) };
    if !started.container.is_empty() {
        c.stop_container(model::StopContainerRequest { container_id: started.container.clone(), timeout: 0 }).await?;
        c.remove_container(model::RemoveContainerRequest { container_id: started.container }).await?;
    }
    c.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: started.pod.clone() }).await?;
    c.remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: started.pod }).await?;
    Ok(())
}

/// Memory of one process: VmRSS, and from smaps_rollup its proportional (Pss) and unique
/// (Private_*) share, in KiB.
#[derive(Debug, Default, Clone, Copy)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
    pub uss: u64,
}

impl std::ops::AddAssign for Memory {
    fn add_assign(&mut self, o: Memory) {
        self.rss += o.rss;
        self.pss += o.pss;
        self.uss += o.uss;
    }
}

pub fn memory_of(pid: u32) -> Option<Memory> {
    let rss = super::rss_kib(pid)?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        rollup
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    Some(Memory { rss, pss: field("Pss:"), uss: field("Private_Clean:") + field("Private_Dirty:") })
}

pub(super) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub(super) async fn memory_readings(bench: &BenchCtx, idle: Option<u64>, pods: &[Started]) -> Vec<(String, String)> {
    let mut readings = Vec::new();
    let n = pods.len();
    let daemon = bench.daemon_pid.and_then(memory_of);
    if let Some(kib) = idle {
        readings.push(("daemon RSS idle (before the pods)".to_string(), mib(kib)));
    }
    if let Some(m) = daemon {
        readings.push((format!("daemon RSS with {n} running pods"), mib(m.rss)));
    }
    let (kind, helpers) = helper_processes(bench).await;
    if helpers.is_empty() {
        readings.push(("per-pod helper processes".into(), format!("none found ({kind})")));
        return readings;
    }
    let mut total = Memory::default();
    for pid in &helpers {
        if let Some(m) = memory_of(*pid) {
            total += m;
        }
    }
    let count = helpers.len() as u64;
    readings.push((
        format!("{kind} processes with {n} pods"),
        format!("{count}: RSS {}, Pss {}, USS {} in all", mib(total.rss), mib(total.pss), mib(total.uss)),
    ));
    readings.push((
        format!("{kind} per process"),
        format!("RSS {}, Pss {}, USS {}", mib(total.rss / count), mib(total.pss / count), mib(total.uss / count)),
    ));
    if let Some(m) = daemon {
        readings.push((format!("daemon + {kind}, Pss with {n} pods"), mib(m.pss + total.pss)));
    }
    readings
}

/// The helper processes of the runtime under test, and what they are.
pub(super) async fn helper_processes(bench: &BenchCtx) -> (String, Vec<u32>) {
    let socket = lockstep_cri::socket_path(&bench.ctx.endpoint).ok();
    let mut shims = Vec::new();
    let mut monitors = Vec::new();
    let runroot = lockstep_runroot(bench).await;
    for (pid, comm, cmdline) in processes() {
        // comm holds 15 bytes ("lockstep-monito"): the program's name is taken from the command line.
        let program = cmdline.first().map(|a| a.rsplit('/').next().unwrap_or(a)).unwrap_or(comm.as_str());
        if program == "lockstep-monitor" {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            if runroot.as_deref().is_some_and(|r| cwd.starts_with(r)) {
                monitors.push(pid);
            }
        } else if cmdline.first().is_some_and(|a| a.contains("containerd-shim")) {
            let address = cmdline.windows(2).find(|w| w[0] == "-address").map(|w| Path::new(&w[1]).to_path_buf());
            if socket.is_some() && address == socket {
                shims.push(pid);
            }
        }
    }
    if !monitors.is_empty() {
        ("lockstep-monitor".into(), monitors)
    } else if !shims.is_empty() {
        ("containerd-shim".into(), shims)
    } else {
        ("neither lockstep-monitor under the daemon's runroot nor containerd-shim for its socket".into(), vec![])
    }
}

/// lockstepd's runroot, from the effective config in its verbose Status (None for others).
async fn lockstep_runroot(bench: &BenchCtx) -> Option<PathBuf> {
    let status = bench.ctx.kubelet().status(model::StatusRequest { verbose: true }).await.ok()?;
    let config: toml::Table = status.info.get("config")?.parse().ok()?;
    config.get("runroot")?.as_str().map(PathBuf::from)
}

/// Every process: pid, comm and command line.
fn processes() -> Vec<(u32, String, Vec<String>)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim().to_string();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args =
            cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned());
        Some((pid, comm, args.collect()))
    })
    .collect()
}
