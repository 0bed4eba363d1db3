//! The kubelet-like load of `soak` and `chaos`: a few steady pods that live through the run, and
//! pod cycles (init container, app container, ExecSync probes, a log rotation with
//! ReopenContainerLog, PLEG relists, status and stats calls, now and then an image pulled and
//! removed) at a concurrency. Every pod and container id made is written in the ledger, so the
//! accounting and the cleanup know what the run owns; the run's pods carry a label of their own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use lockstep_cri::{model, CriClient};
use tonic::Code;

use super::calls::{self, brief};

/// The label every pod of one run carries, with the run's id as its value.
pub const RUN_LABEL: &str = "lockstep.conformance/soak-run";
/// Findings kept word for word (the count is kept beyond).
const KEPT_FINDINGS: usize = 50;
/// How long a container may take to reach a state.
const STATE_DEADLINE: Duration = Duration::from_secs(60);
/// The exit code of each steady pod's short-lived container.
pub const STEADY_EXIT_CODE: i32 = 3;
/// The app container: a numbered line every 50 ms (a gap in the numbers is a lost line), and
/// exit 0 on SIGTERM.
const APP: &str = "trap 'exit 0' TERM; i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done";

/// What one pod of the run left: enough for the accounting to look for it on the host.
#[derive(Debug, Clone, Default)]
pub struct PodEntry {
    pub containers: Vec<String>,
    /// Host-side interface names the runtime reported for the pod (its verbose status).
    pub veths: Vec<String>,
    pub removed: bool,
}

/// Everything the run made and how its cycles went.
#[derive(Debug, Default)]
pub struct Ledger {
    pub pods: BTreeMap<String, PodEntry>,
    pub cycles_done: usize,
    pub cycles_failed: usize,
    /// Cycles that failed because a fault (other than a daemon kill) hit them: their pod's
    /// helper or OCI runtime was killed, or they ran while the disk was full or the registry
    /// dropped (their teardown still had to succeed).
    pub cycles_faulted: usize,
    /// How those cycles failed, the first KEPT_FINDINGS of them.
    pub fault_effects: Vec<String>,
    pub images_cycled: usize,
    /// What went wrong, the first KEPT_FINDINGS of them; `findings` counts them all.
    pub findings: Vec<String>,
    pub finding_count: usize,
    /// The daemon's RSS (KiB) after each hundred cycles, with the count of cycles then.
    pub rss: Vec<(usize, u64)>,
    /// Its anonymous part (heap and stacks) at the same moments.
    pub rss_anon: Vec<(usize, u64)>,
    /// Optional calls the runtime did not answer: how many times, and the first error.
    pub unanswered: BTreeMap<String, (usize, String)>,
}

impl Ledger {
    pub fn finding(&mut self, what: String) {
        self.finding_count += 1;
        if self.findings.len() < KEPT_FINDINGS {
            self.findings.push(what);
        }
    }

    /// A cycle failed because a fault hit it: an outcome to report, not a finding.
    pub fn fault_effect(&mut self, what: String) {
        self.cycles_faulted += 1;
        self.note_effect(what);
    }

    /// What a fault did, kept among the first KEPT_FINDINGS (not counted as a cycle).
    pub fn note_effect(&mut self, what: String) {
        if self.fault_effects.len() < KEPT_FINDINGS {
            self.fault_effects.push(what);
        }
    }

    /// The pod a container of the run belongs to.
    pub fn pod_of(&self, container: &str) -> Option<String> {
        self.pods.iter().find(|(_, p)| p.containers.iter().any(|c| c == container)).map(|(id, _)| id.clone())
    }

    /// An optional call (stats) failed: counted by RPC, not a finding.
    pub fn unanswered(&mut self, error: String) {
        let rpc = error.split(':').next().unwrap_or_default().to_string();
        let entry = self.unanswered.entry(rpc).or_insert((0, error));
        entry.0 += 1;
    }

    /// Every pod and container id the run made.
    pub fn ids(&self) -> Vec<String> {
        self.pods.iter().flat_map(|(id, p)| std::iter::once(id.clone()).chain(p.containers.iter().cloned())).collect()
    }
}

/// A steady pod: its long-running app (with the pid it had) and its container that exited.
#[derive(Debug, Clone)]
pub struct Steady {
    pub pod: String,
    pub uid: String,
    pub app: String,
    pub app_pid: Option<i64>,
    pub app_started_at: i64,
    pub exited: String,
}

/// The shape of a run's load.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Steady pods, up for the whole run.
    pub pods: usize,
    pub cycles: usize,
    pub concurrency: usize,
    /// Every this many cycles, one pulls and removes an image.
    pub image_every: usize,
    /// Retry calls the runtime could not answer because it was down (chaos).
    pub retry: bool,
}

pub struct Load {
    client: CriClient,
    /// The image of the containers (pulled before the run).
    image: String,
    /// The image pulled and removed now and then.
    churn_image: String,
    logs: PathBuf,
    run_id: String,
    shape: Shape,
    /// The daemon whose RSS is sampled every hundred cycles (soak).
    rss_pid: Option<u32>,
    pub ledger: Mutex<Ledger>,
    stop: AtomicBool,
    images: tokio::sync::Mutex<()>,
    pub steady: Mutex<Vec<Steady>>,
    /// What the faults hit, so that the cycles they broke are told apart from real failures.
    pub marks: FaultMarks,
}

/// The pods whose helper or OCI runtime a fault killed, and the windows (disk full, registry
/// dropping) during which every cycle may fail.
#[derive(Debug, Default)]
pub struct FaultMarks {
    pods: Mutex<std::collections::BTreeSet<String>>,
    /// Ids a killed process named that the ledger did not know yet (a container whose
    /// CreateContainer was under way): a cycle failing with one in its error was hit.
    ids: Mutex<std::collections::BTreeSet<String>>,
    windows: std::sync::atomic::AtomicU64,
    open: AtomicBool,
}

impl FaultMarks {
    /// A fault hit this pod.
    pub fn hit(&self, pod: &str) {
        lock(&self.pods).insert(pod.to_string());
    }
    /// A fault hit the container or pod of this id, not known to the ledger yet.
    pub fn hit_id(&self, id: &str) {
        lock(&self.ids).insert(id.to_string());
    }
    /// Whether a cycle's error names an id a fault hit.
    pub fn names_hit(&self, error: &str) -> bool {
        lock(&self.ids).iter().any(|id| error.contains(id.as_str()))
    }
    /// A fault that may break any cycle begins.
    pub fn open_window(&self) {
        self.windows.fetch_add(1, Ordering::SeqCst);
        self.open.store(true, Ordering::SeqCst);
    }
    pub fn close_window(&self) {
        self.open.store(false, Ordering::SeqCst);
    }
    /// The windows opened so far (a cycle notes it when it starts).
    pub fn windows(&self) -> u64 {
        self.windows.load(Ordering::SeqCst)
    }
    /// Whether a cycle of `pod`, started when `windows` had been opened, was hit by a fault.
    pub fn excuses(&self, pod: Option<&str>, windows: u64) -> bool {
        self.open.load(Ordering::SeqCst)
            || self.windows() != windows
            || pod.is_some_and(|p| lock(&self.pods).contains(p))
    }
    pub fn was_hit(&self, pod: &str) -> bool {
        lock(&self.pods).contains(pod)
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ctx(step: &str, pod: &str) -> impl Fn(String) -> String {
    let (step, pod) = (step.to_string(), short(pod).to_string());
    move |e| format!("pod {pod}: {step}: {e}")
}

fn short(id: &str) -> &str {
    &id[..id.len().min(13)]
}

impl Load {
    pub fn new(
        client: CriClient,
        image: String,
        churn_image: String,
        logs: &Path,
        shape: Shape,
        rss_pid: Option<u32>,
    ) -> Load {
        let run_id = lockstep_testkit::requests::unique("soak");
        Load {
            client,
            image,
            churn_image,
            logs: logs.to_path_buf(),
            run_id,
            shape,
            rss_pid,
            ledger: Mutex::new(Ledger::default()),
            stop: AtomicBool::new(false),
            images: tokio::sync::Mutex::new(()),
            steady: Mutex::new(Vec::new()),
            marks: FaultMarks::default(),
        }
    }

    /// A warm-up on the same runtime, images and run: one round of cycles at the concurrency.
    pub fn new_like(other: &Load) -> Load {
        let round = other.shape.concurrency.max(1);
        let shape = Shape { pods: 0, cycles: round, image_every: round, ..other.shape.clone() };
        let mut load =
            Load::new(other.client.clone(), other.image.clone(), other.churn_image.clone(), &other.logs, shape, None);
        load.run_id = other.run_id.clone();
        load
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// No cycle starts after this; those under way finish (and tear their pod down).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn c(&self) -> CriClient {
        self.client.clone()
    }

    /// A client of the runtime under test.
    pub fn client(&self) -> CriClient {
        self.client.clone()
    }

    /// Starts the steady pods.
    pub async fn start_steady(&self) -> Result<(), String> {
        for i in 0..self.shape.pods {
            let config = self.pod_config(&format!("steady-{i}"))?;
            let uid = config.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
            let pod = self.run_pod(&config).await?;
            let app =
                self.container(&pod, &config, "app", &["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]);
            let app = self.create_start(&pod, &config, app).await?;
            let (state, _) = self.wait_state(&app, model::ContainerState::ContainerRunning).await?;
            let code = format!("exit {STEADY_EXIT_CODE}");
            let exited = self.container(&pod, &config, "exits", &["sh", "-c", &code]);
            let exited = self.create_start(&pod, &config, exited).await?;
            let (_, exit_code) = self.wait_state(&exited, model::ContainerState::ContainerExited).await?;
            if exit_code != STEADY_EXIT_CODE {
                return Err(format!("steady pod {}: `{code}` reported exit code {exit_code}", short(&pod)));
            }
            let app_pid = self.pid_of(&app).await;
            lock(&self.steady).push(Steady { pod, uid, app, app_pid, app_started_at: state.started_at, exited });
        }
        Ok(())
    }

    /// Runs the cycles, `concurrency` at a time, until all ran or `stop`.
    pub async fn run_cycles(&self) {
        // chaos runs cycles without end (usize::MAX) until it stops them.
        let total = (self.shape.cycles != usize::MAX).then_some(self.shape.cycles as u64);
        let progress = crate::progress::Progress::start("soak", total, "cycles");
        let progress = &progress;
        futures::stream::iter(0..self.shape.cycles)
            .take_while(|_| std::future::ready(!self.stopped()))
            .map(|i| async move {
                if self.stopped() {
                    return;
                }
                let windows = self.marks.windows();
                let (pod, body, teardown) = self.cycle(i, windows).await;
                if body.is_err() || teardown.is_err() {
                    // As the kubelet backs off: a runtime failing every cycle is not hammered.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let excused = self.marks.excuses(pod.as_deref(), windows);
                let mut ledger = lock(&self.ledger);
                ledger.cycles_done += 1;
                match (body, teardown) {
                    // A pod that cannot be torn down is a failure whatever hit it.
                    (_, Err(e)) => {
                        ledger.cycles_failed += 1;
                        ledger.finding(format!("cycle {i}: {e}"));
                    }
                    (Err(e), Ok(())) if excused || self.marks.names_hit(&e) => {
                        ledger.fault_effect(format!("cycle {i}: {e}"))
                    }
                    (Err(e), Ok(())) => {
                        ledger.cycles_failed += 1;
                        ledger.finding(format!("cycle {i}: {e}"));
                    }
                    (Ok(()), Ok(())) => {}
                }
                let done = ledger.cycles_done;
                drop(ledger);
                if done.is_multiple_of(100) {
                    if let Some(pid) = self.rss_pid {
                        let mut ledger = lock(&self.ledger);
                        ledger.rss.extend(crate::bench::rss_kib(pid).map(|kib| (done, kib)));
                        ledger.rss_anon.extend(crate::bench::rss_anon_kib(pid).map(|kib| (done, kib)));
                    }
                }
                progress.inc(1);
            })
            .buffer_unordered(self.shape.concurrency.max(1))
            .collect::<()>()
            .await;
        progress.finish();
    }

    pub(crate) fn pod_config(&self, purpose: &str) -> Result<model::PodSandboxConfig, String> {
        let mut config = crate::suites::podkit::pod_config(purpose);
        config.labels.insert(RUN_LABEL.into(), self.run_id.clone());
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let dir = self.logs.join(&name);
        for container in ["init", "app", "exits"] {
            std::fs::create_dir_all(dir.join(container)).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        }
        config.log_directory = dir.display().to_string();
        Ok(config)
    }

    pub(crate) fn container(
        &self,
        _pod: &str,
        config: &model::PodSandboxConfig,
        name: &str,
        command: &[&str],
    ) -> model::ContainerConfig {
        lockstep_testkit::requests::container(config, name, &self.image, command)
    }

    /// One pod through its life, as the kubelet drives it: its id (when it was made), how its
    /// life went, and how its teardown went.
    async fn cycle(&self, i: usize, windows: u64) -> (Option<String>, Result<(), String>, Result<(), String>) {
        let config = match self.pod_config("cycle") {
            Ok(config) => config,
            Err(e) => return (None, Err(e), Ok(())),
        };
        let pod = match self.run_pod(&config).await {
            Ok(pod) => pod,
            Err(e) => return (None, Err(e), Ok(())),
        };
        let mut result = self.cycle_body(&pod, &config).await;
        let teardown = self.remove_pod_as_kubelet(&pod, windows).await;
        if self.shape.image_every > 0 && i % self.shape.image_every == self.shape.image_every - 1 {
            result = result.and(self.cycle_image().await);
        }
        (Some(pod), result, teardown)
    }

    /// `remove_pod`; for a pod a fault hit (its own, or a window opened since `windows`), tried
    /// again a second apart for up to 30 s, as the kubelet retries a teardown (a disk-full window
    /// may outlast the first tries); the first error is then an outcome of the fault.
    pub async fn remove_pod_as_kubelet(&self, pod: &str, windows: u64) -> Result<(), String> {
        let mut result = self.remove_pod(pod).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut first = true;
        while let Err(e) = &result {
            if Instant::now() > deadline || !self.marks.excuses(Some(pod), windows) {
                break;
            }
            if first {
                lock(&self.ledger).note_effect(format!("teardown retried after: {e}"));
                first = false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            result = self.remove_pod(pod).await;
        }
        result
    }

    async fn cycle_body(&self, pod: &str, config: &model::PodSandboxConfig) -> Result<(), String> {
        let init = self.container(pod, config, "init", &["sh", "-c", "echo init done"]);
        let init = self.create_start(pod, config, init).await?;
        let (_, code) = self.wait_state(&init, model::ContainerState::ContainerExited).await?;
        if code != 0 {
            return Err(format!("pod {}: the init container (`echo`) reported exit code {code}", short(pod)));
        }
        let app = self.container(pod, config, "app", &["sh", "-c", APP]);
        let app = self.create_start(pod, config, app).await?;
        self.wait_state(&app, model::ContainerState::ContainerRunning).await?;
        let log = Path::new(&config.log_directory).join("app/0.log");
        let rotated = Path::new(&config.log_directory).join("app/0.log.1");
        wait_lines(&log, 2, || self.marks.was_hit(pod)).await.map_err(ctx("log", pod))?;
        self.probe(&app).await.map_err(ctx("probe", pod))?;
        // The kubelet's rotation: rename, then ReopenContainerLog makes the runtime write anew.
        std::fs::rename(&log, &rotated).map_err(|e| format!("cannot rotate {}: {e}", log.display()))?;
        let reopened = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let container_id = app.clone();
            async move { c.reopen_container_log(model::ReopenContainerLogRequest { container_id }).await }
        })
        .await;
        reopened.result.map_err(|e| brief("ReopenContainerLog", &e)).map_err(ctx("rotate", pod))?;
        wait_lines(&log, 2, || self.marks.was_hit(pod)).await.map_err(ctx("log after ReopenContainerLog", pod))?;
        self.relist(pod, &app).await?;
        self.probe(&app).await.map_err(ctx("probe", pod))?;
        let stopped = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let container_id = app.clone();
            async move { c.stop_container(model::StopContainerRequest { container_id, timeout: 10 }).await }
        })
        .await;
        stopped.result.map_err(|e| brief("StopContainer", &e)).map_err(ctx("stop", pod))?;
        let (_, code) = self.wait_state(&app, model::ContainerState::ContainerExited).await?;
        if code != 0 {
            return Err(format!(
                "pod {}: the app, stopped (it exits 0 on SIGTERM), reported exit code {code}",
                short(pod)
            ));
        }
        let mut text = std::fs::read_to_string(&rotated).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(&log).unwrap_or_default());
        gap_in_log(&text).map_or(Ok(()), |gap| Err(format!("pod {}: the app's log {gap}", short(pod))))
    }

    /// ExecSync as a liveness probe: `cat /etc/hostname`, exit 0.
    async fn probe(&self, container: &str) -> Result<(), String> {
        let called = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let container_id = container.to_string();
            async move {
                c.exec_sync(model::ExecSyncRequest {
                    container_id,
                    cmd: vec!["cat".into(), "/etc/hostname".into()],
                    timeout: 10,
                })
                .await
            }
        })
        .await;
        let r = called.result.map_err(|e| brief("ExecSync", &e))?;
        if r.exit_code != 0 {
            return Err(format!("ExecSync `cat /etc/hostname` exited {}", r.exit_code));
        }
        Ok(())
    }

    /// The PLEG's relists and the stats provider's calls, and the status of the pod's own.
    async fn relist(&self, pod: &str, container: &str) -> Result<(), String> {
        let r = self.shape.retry;
        let fail = ctx("relist", pod);
        let pods = calls::call(r, || {
            let mut c = self.c();
            async move { c.list_pod_sandbox(model::ListPodSandboxRequest::default()).await }
        })
        .await;
        let pods = pods.result.map_err(|e| fail(brief("ListPodSandbox", &e)))?;
        if !pods.items.iter().any(|p| p.id == pod) {
            return Err(fail("ListPodSandbox does not list the pod".into()));
        }
        let listed = calls::call(r, || {
            let mut c = self.c();
            async move { c.list_containers(model::ListContainersRequest::default()).await }
        })
        .await;
        let listed = listed.result.map_err(|e| fail(brief("ListContainers", &e)))?;
        if !listed.containers.iter().any(|c| c.id == container) {
            return Err(fail("ListContainers does not list the app".into()));
        }
        let status = calls::call(r, || {
            let mut c = self.c();
            let pod_sandbox_id = pod.to_string();
            async move { c.pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id, verbose: false }).await }
        })
        .await;
        status.result.map_err(|e| fail(brief("PodSandboxStatus", &e)))?;
        let stats = calls::call(r, || {
            let mut c = self.c();
            let container_id = container.to_string();
            async move { c.container_stats(model::ContainerStatsRequest { container_id }).await }
        })
        .await;
        stats.result.map_err(|e| fail(brief("ContainerStats", &e)))?;
        let all = calls::call(r, || {
            let mut c = self.c();
            async move { c.list_container_stats(model::ListContainerStatsRequest::default()).await }
        })
        .await;
        all.result.map_err(|e| fail(brief("ListContainerStats", &e)))?;
        // A runtime that cannot answer it on this host (containerd 1.6 reads a cgroup layout it
        // does not find here) gets it said once in the report; the cycle goes on, as the
        // kubelet's stats provider does.
        let pod_stats = calls::call(r, || {
            let mut c = self.c();
            async move { c.list_pod_sandbox_stats(model::ListPodSandboxStatsRequest::default()).await }
        })
        .await;
        if let Err(e) = pod_stats.result {
            lock(&self.ledger).unanswered(brief("ListPodSandboxStats", &e));
        }
        Ok(())
    }

    /// PullImage, ImageStatus, RemoveImage of the churn image, one cycle at a time.
    async fn cycle_image(&self) -> Result<(), String> {
        let _one = self.images.lock().await;
        let spec = model::ImageSpec { image: self.churn_image.clone(), ..Default::default() };
        let pulled = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let image = Some(spec.clone());
            async move { c.pull_image(model::PullImageRequest { image, ..Default::default() }).await }
        })
        .await;
        pulled.result.map_err(|e| format!("image: {}", brief("PullImage", &e)))?;
        let status = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let image = Some(spec.clone());
            async move { c.image_status(model::ImageStatusRequest { image, verbose: false }).await }
        })
        .await;
        let status = status.result.map_err(|e| format!("image: {}", brief("ImageStatus", &e)))?;
        if status.image.is_none() {
            return Err(format!("image: ImageStatus does not know {} just pulled", self.churn_image));
        }
        let removed = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let image = Some(spec.clone());
            async move { c.remove_image(model::RemoveImageRequest { image }).await }
        })
        .await;
        removed.result.map_err(|e| format!("image: {}", brief("RemoveImage", &e)))?;
        lock(&self.ledger).images_cycled += 1;
        Ok(())
    }

    /// RunPodSandbox; after a retry that the runtime refused, the pod the first try made.
    pub(crate) async fn run_pod(&self, config: &model::PodSandboxConfig) -> Result<String, String> {
        let called = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let request = lockstep_testkit::requests::run_pod(config.clone());
            async move { c.run_pod_sandbox(request).await }
        })
        .await;
        let id = match called.result {
            Ok(r) => r.pod_sandbox_id,
            Err(e) if called.retried => {
                let uid = config.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
                match self.pods_of_uid(&uid).await.first() {
                    Some(id) => id.clone(),
                    None => return Err(brief("RunPodSandbox (retried)", &e)),
                }
            }
            Err(e) => return Err(brief("RunPodSandbox", &e)),
        };
        lock(&self.ledger).pods.entry(id.clone()).or_default();
        let veths = self.veths_of(&id).await;
        if let Some(entry) = lock(&self.ledger).pods.get_mut(&id) {
            entry.veths = veths;
        }
        Ok(id)
    }

    /// A pod of the run made outside `run_pod` (a fault's probe): the cleanup and the
    /// accounting know it.
    pub fn remember_pod(&self, pod: &str) {
        lock(&self.ledger).pods.entry(pod.to_string()).or_default();
    }

    /// The ids of the run's pods with this uid, as the runtime lists them.
    pub async fn pods_of_uid(&self, uid: &str) -> Vec<String> {
        let filter = model::PodSandboxFilter {
            label_selector: [(lockstep_testkit::requests::POD_UID.to_string(), uid.to_string())].into(),
            ..Default::default()
        };
        let listed = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let filter = Some(filter.clone());
            async move { c.list_pod_sandbox(model::ListPodSandboxRequest { filter }).await }
        })
        .await;
        listed.result.map(|r| r.items.into_iter().map(|p| p.id).collect()).unwrap_or_default()
    }

    /// Every pod carrying the run's label, as the runtime lists them.
    pub async fn listed_pods(&self) -> Result<Vec<model::PodSandbox>, tonic::Status> {
        let filter = model::PodSandboxFilter {
            label_selector: [(RUN_LABEL.to_string(), self.run_id.clone())].into(),
            ..Default::default()
        };
        let listed = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let filter = Some(filter.clone());
            async move { c.list_pod_sandbox(model::ListPodSandboxRequest { filter }).await }
        })
        .await;
        listed.result.map(|r| r.items)
    }

    /// The host-side interfaces in the pod's verbose status (lockstepd's and containerd's CNI
    /// result both name them).
    async fn veths_of(&self, pod: &str) -> Vec<String> {
        let status = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let pod_sandbox_id = pod.to_string();
            async move { c.pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id, verbose: true }).await }
        })
        .await;
        let info = status.result.ok().and_then(|s| s.info.get("info").cloned()).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&info).unwrap_or_default();
        let mut names = Vec::new();
        veth_names(&value, &mut names);
        names.sort();
        names.dedup();
        names
    }

    /// CreateContainer then StartContainer; a retried call the runtime refused is checked
    /// against what the first try did.
    pub(crate) async fn create_start(
        &self,
        pod: &str,
        sandbox: &model::PodSandboxConfig,
        config: model::ContainerConfig,
    ) -> Result<String, String> {
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let fail = ctx(&name, pod);
        let created = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let request = model::CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(config.clone()),
                sandbox_config: Some(sandbox.clone()),
            };
            async move { c.create_container(request).await }
        })
        .await;
        let id = match created.result {
            Ok(r) => r.container_id,
            Err(e) if created.retried => match self.container_named(pod, &name).await {
                Some(id) => id,
                None => return Err(fail(brief("CreateContainer (retried)", &e))),
            },
            Err(e) => return Err(fail(brief("CreateContainer", &e))),
        };
        if let Some(entry) = lock(&self.ledger).pods.get_mut(pod) {
            entry.containers.push(id.clone());
        }
        let started = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let container_id = id.clone();
            async move { c.start_container(model::StartContainerRequest { container_id }).await }
        })
        .await;
        match started.result {
            Ok(_) => Ok(id),
            Err(e) if started.retried => match self.status(&id).await {
                Ok(s) if s.state != model::ContainerState::ContainerCreated as i32 => Ok(id),
                _ => Err(fail(brief("StartContainer (retried)", &e))),
            },
            Err(e) => Err(fail(brief("StartContainer", &e))),
        }
    }

    async fn container_named(&self, pod: &str, name: &str) -> Option<String> {
        let filter = model::ContainerFilter { pod_sandbox_id: pod.to_string(), ..Default::default() };
        let listed = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let filter = Some(filter.clone());
            async move { c.list_containers(model::ListContainersRequest { filter }).await }
        })
        .await;
        let listed = listed.result.ok()?;
        listed.containers.into_iter().find(|c| c.metadata.as_ref().is_some_and(|m| m.name == name)).map(|c| c.id)
    }

    pub async fn status(&self, id: &str) -> Result<model::ContainerStatus, String> {
        let called = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let container_id = id.to_string();
            async move { c.container_status(model::ContainerStatusRequest { container_id, verbose: false }).await }
        })
        .await;
        called.result.map_err(|e| brief("ContainerStatus", &e))?.status.ok_or_else(|| "no status".to_string())
    }

    /// The container's pid from its verbose status (lockstepd and containerd both give `pid`).
    pub async fn pid_of(&self, id: &str) -> Option<i64> {
        let called = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let container_id = id.to_string();
            async move { c.container_status(model::ContainerStatusRequest { container_id, verbose: true }).await }
        })
        .await;
        let info = called.result.ok()?.info.get("info").cloned()?;
        let value: serde_json::Value = serde_json::from_str(&info).ok()?;
        value["pid"].as_i64().filter(|p| *p > 0)
    }

    /// Polls ContainerStatus until `want`; the status then and its exit code.
    pub(crate) async fn wait_state(
        &self,
        id: &str,
        want: model::ContainerState,
    ) -> Result<(model::ContainerStatus, i32), String> {
        let deadline = Instant::now() + STATE_DEADLINE;
        loop {
            let s = self.status(id).await.map_err(|e| format!("container {}: {e}", short(id)))?;
            if s.state == want as i32 {
                let code = s.exit_code;
                return Ok((s, code));
            }
            if s.state == model::ContainerState::ContainerExited as i32 || Instant::now() > deadline {
                return Err(format!(
                    "container {} ({}) did not reach {want:?}: state {}, exit code {}, reason {:?}",
                    short(id),
                    s.metadata.map(|m| m.name).unwrap_or_default(),
                    s.state,
                    s.exit_code,
                    s.reason
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// StopPodSandbox and RemovePodSandbox (NotFound after a retry: the first try did it).
    pub async fn remove_pod(&self, pod: &str) -> Result<(), String> {
        let stopped = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let pod_sandbox_id = pod.to_string();
            async move { c.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id }).await }
        })
        .await;
        match stopped.result {
            Ok(_) => {}
            Err(e) if e.code() == Code::NotFound => {}
            Err(e) => return Err(ctx("teardown", pod)(brief("StopPodSandbox", &e))),
        }
        let removed = calls::call(self.shape.retry, || {
            let mut c = self.c();
            let pod_sandbox_id = pod.to_string();
            async move { c.remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id }).await }
        })
        .await;
        match removed.result {
            Ok(_) => {}
            Err(e) if e.code() == Code::NotFound => {}
            Err(e) => return Err(ctx("teardown", pod)(brief("RemovePodSandbox", &e))),
        }
        if let Some(entry) = lock(&self.ledger).pods.get_mut(pod) {
            entry.removed = true;
        }
        Ok(())
    }

    /// Removes every pod the run made (the steady ones, any a cycle left, any duplicate the
    /// runtime listed under the run's label); what it could not remove is a finding.
    pub async fn tear_down_all(&self) {
        let mut pods: Vec<String> =
            lock(&self.ledger).pods.iter().filter(|(_, p)| !p.removed).map(|(id, _)| id.clone()).collect();
        match self.listed_pods().await {
            Ok(listed) => pods.extend(listed.into_iter().map(|p| p.id)),
            Err(e) => lock(&self.ledger).finding(format!("cleanup: {}", brief("ListPodSandbox", &e))),
        }
        pods.sort();
        pods.dedup();
        for pod in pods {
            lock(&self.ledger).pods.entry(pod.clone()).or_default();
            if let Err(e) = self.remove_pod_as_kubelet(&pod, self.marks.windows()).await {
                lock(&self.ledger).finding(format!("cleanup: {e}"));
            }
        }
        lock(&self.steady).clear();
    }
}

/// Interface names starting with "veth" anywhere in a JSON value (keys or strings).
fn veth_names(value: &serde_json::Value, names: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                if key.starts_with("veth") {
                    names.push(key.clone());
                }
                veth_names(v, names);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| veth_names(v, names)),
        serde_json::Value::String(s) if s.starts_with("veth") && s.len() <= 15 => names.push(s.clone()),
        _ => {}
    }
}

/// Waits until the CRI log file has `lines` lines; gives up at once when `hit` says a fault
/// killed the pod's monitor (its log then stays as it was).
async fn wait_lines(path: &Path, lines: usize, hit: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + STATE_DEADLINE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines {
            return Ok(());
        }
        if hit() {
            return Err(format!("{} has fewer than {lines} lines, and a fault hit the pod", path.display()));
        }
        if Instant::now() > deadline {
            return Err(format!("{} has fewer than {lines} lines after {STATE_DEADLINE:?}", path.display()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// In a CRI log of the app's numbered lines (`TIME stdout F N`), the first number missing.
pub fn gap_in_log(text: &str) -> Option<String> {
    let mut expected: Option<u64> = None;
    for line in text.lines() {
        let Some(n) = line.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()) else { continue };
        if let Some(want) = expected {
            if n != want {
                return Some(format!("jumps from line {} to line {n}", want.saturating_sub(1)));
            }
        }
        expected = Some(n + 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_with_every_number_has_no_gap_and_a_missing_line_is_named() {
        let whole = "2026-01-01T00:00:00Z stdout F 0\n2026-01-01T00:00:00Z stdout F 1\nT stdout F 2\n";
        assert_eq!(gap_in_log(whole), None);
        let gap = "T stdout F 4\nT stdout F 5\nT stdout F 7\n";
        assert_eq!(gap_in_log(gap).as_deref(), Some("jumps from line 5 to line 7"));
    }

    #[test]
    fn veths_are_found_in_lockstepd_s_and_containerd_s_cni_results() {
        let lockstepd = serde_json::json!({"cniResult": {"interfaces": [{"name": "lockstep0"}, {"name": "veth1a2b3c4d"}, {"name": "eth0", "sandbox": "/x"}]}});
        let containerd = serde_json::json!({"cniResult": {"Interfaces": {"eth0": {}, "veth99887766": {}}}});
        let mut names = Vec::new();
        veth_names(&lockstepd, &mut names);
        veth_names(&containerd, &mut names);
        assert_eq!(names, ["veth1a2b3c4d", "veth99887766"]);
    }
}
