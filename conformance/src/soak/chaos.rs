//! `chaos`: the soak's load on a daemon the harness starts (the embedded lockstepd, or any
//! command line), with faults at seeded random moments: the daemon SIGKILLed and started again,
//! and, when selected, the other faults of `faults` (a helper or the OCI runtime killed
//! mid-call, the disk filled, the registry dropped mid-layer), the kind of each drawn by the same
//! seed. After each fault the steady pods must be there with the same container pid and the real
//! exit codes, and no pod may be listed twice (a retried RunPodSandbox); at the end, the soak's
//! leak accounting.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use lockstep_cri::{model, CriClient, Minor};

use super::accounting::Scope;
use super::faults::{self, FaultKind};
use super::load::{lock, Load, STEADY_EXIT_CODE};
use super::{settle, warm_up, Report};
use crate::target::Embedded;

/// How long a restarted daemon may take to answer Version.
const SERVE_DEADLINE: Duration = Duration::from_secs(60);

/// What the faults did and what was found after them (read back by the HTML report; a field a
/// file lacks reads as 0).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ChaosReport {
    pub seed: u64,
    pub kills: usize,
    /// Restarts after which the steady pods were checked.
    pub verified: usize,
    pub pods_lost: usize,
    pub containers_wrong: usize,
    pub duplicates: usize,
    /// The fault kinds the run drew from (`daemon` alone when empty, as before they existed).
    pub faults: Vec<FaultKind>,
    /// Faults made, of every kind (`kills` counts the daemon's).
    pub rounds: usize,
    pub monitor_kills: usize,
    pub oci_runtime_kills: usize,
    pub disk_full_rounds: usize,
    pub registry_drops: usize,
    /// What went wrong after the faults other than daemon kills.
    pub fault_findings: usize,
    /// What each of those faults did and what the runtime answered (the first MAX_OUTCOMES).
    pub outcomes: Vec<String>,
}

/// Outcome lines kept in the report.
const MAX_OUTCOMES: usize = 400;

/// A seeded generator (splitmix64): the same seed, the same kill moments.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A duration in [low, high).
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis().max(1) as u64;
        low + Duration::from_millis(self.next_u64() % span)
    }
}

/// A daemon the harness starts, kills and starts again.
pub enum Daemon {
    Embedded(Embedded),
    Command(CommandDaemon),
}

/// A daemon given as a command line (`sh -c "exec CMD"`), serving `endpoint`.
pub struct CommandDaemon {
    command: String,
    endpoint: String,
    log: PathBuf,
    child: Option<Child>,
    minor: Minor,
}

impl CommandDaemon {
    pub async fn start(command: String, endpoint: String, log: PathBuf, minor: Minor) -> anyhow::Result<CommandDaemon> {
        let mut daemon = CommandDaemon { command, endpoint, log, child: None, minor };
        daemon.spawn().await?;
        Ok(daemon)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let err = log.try_clone().context("cannot share the log")?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {}", self.command))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot run `{}`", self.command))?;
        self.child = Some(child);
        let deadline = Instant::now() + SERVE_DEADLINE;
        loop {
            if let Some(status) = self.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                bail!("`{}` exited ({status}) before serving; its output is in {}", self.command, self.log.display());
            }
            if answers(&self.endpoint, self.minor).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("`{}` did not answer Version on {} within {SERVE_DEADLINE:?}", self.command, self.endpoint);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether the endpoint answers Version.
async fn answers(endpoint: &str, minor: Minor) -> bool {
    let Ok(channel) = lockstep_cri::connect(endpoint, Duration::from_secs(1)).await else { return false };
    let Ok(mut client) = CriClient::new(minor, channel) else { return false };
    client.set_timeout(Some(Duration::from_secs(2)));
    client.version(Default::default()).await.is_ok()
}

impl Daemon {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Daemon::Embedded(e) => e.pid(),
            Daemon::Command(c) => c.child.as_ref().map(Child::id),
        }
    }

    async fn kill(&mut self) {
        match self {
            Daemon::Embedded(e) => {
                let _ = e.kill().await;
            }
            Daemon::Command(c) => c.kill(),
        }
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        match self {
            Daemon::Embedded(e) => e.start_again().await,
            Daemon::Command(c) => c.spawn().await,
        }
    }

    pub async fn stop(self) {
        match self {
            Daemon::Embedded(e) => {
                if let Err(e) = e.stop().await {
                    eprintln!("chaos: the embedded lockstepd did not stop cleanly: {e:#}");
                }
            }
            Daemon::Command(mut c) => c.stop().await,
        }
    }
}

/// The shape of the faults.
#[derive(Debug, Clone)]
pub struct Faults {
    /// How many faults are made (daemon kills when `kinds` is `daemon` alone).
    pub kills: usize,
    pub seed: u64,
    /// The kinds each fault is drawn from.
    pub kinds: Vec<FaultKind>,
    /// For disk-full: a directory on the runtime's size-limited filesystem.
    pub disk_dir: Option<PathBuf>,
}

/// What the faults other than daemon kills need: the run's registry (for the images a round
/// pulls) and, for registry-drop, the proxy in front of it.
pub struct FaultSupport<'a> {
    pub registry: &'a lockstep_testkit::fixtures::env::RegistryEnv,
    pub proxy: Option<faults::registry::Proxy>,
}

/// The chaos run: warm-up, snapshot, steady pods, the cycles while the daemon is killed and
/// started again `kills` times, the checks after each restart, cleanup, accounting.
pub async fn chaos(
    load: Arc<Load>,
    daemon: &mut Daemon,
    mut scope: Scope,
    runtime: String,
    faults: Faults,
    support: FaultSupport<'_>,
) -> Report {
    let started = Instant::now();
    let kinds = if faults.kinds.is_empty() { vec![FaultKind::Daemon] } else { faults.kinds.clone() };
    let mut found = ChaosReport { seed: faults.seed, faults: kinds.clone(), ..Default::default() };
    warm_up(&load).await;
    let before = scope.snapshot();
    if let Err(e) = load.start_steady().await {
        lock(&load.ledger).finding(format!("steady pods: {e}"));
    }
    let cycling = {
        let load = load.clone();
        tokio::spawn(async move { load.run_cycles().await })
    };
    let mut rng = Rng::new(faults.seed);
    let mut reported_duplicates = std::collections::BTreeSet::new();
    let mut rotation = 0usize;
    for k in 1..=faults.kills {
        tokio::time::sleep(rng.between(Duration::from_millis(200), Duration::from_millis(2500))).await;
        // One kind alone draws nothing, so a daemon-only seed replays as before the other kinds.
        let kind = if kinds.len() == 1 { kinds[0] } else { kinds[(rng.next_u64() % kinds.len() as u64) as usize] };
        let at = started.elapsed();
        scope.daemon_pid = daemon.pid();
        let round = match kind {
            FaultKind::Daemon => {
                daemon.kill().await;
                tokio::time::sleep(rng.between(Duration::ZERO, Duration::from_millis(500))).await;
                if let Err(e) = daemon.start().await {
                    lock(&load.ledger).finding(format!("kill {k}: the daemon did not start again: {e:#}"));
                    // Once more a moment later, so the run still ends with the pods removed and counted.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if let Err(e) = daemon.start().await {
                        lock(&load.ledger).finding(format!("kill {k}: nor 2 s later: {e:#}"));
                        break;
                    }
                }
                found.kills += 1;
                None
            }
            FaultKind::Monitor => {
                found.monitor_kills += 1;
                Some(faults::helpers::kill_helper(&load, &scope, &mut rng).await)
            }
            FaultKind::OciRuntime => {
                found.oci_runtime_kills += 1;
                Some(faults::helpers::kill_oci_runtime(&load, &scope).await)
            }
            FaultKind::DiskFull => {
                found.disk_full_rounds += 1;
                rotation += 1;
                match &faults.disk_dir {
                    Some(dir) => {
                        let image = round_image(support.registry, rotation);
                        Some(faults::disk::round(&load, dir, &image, k).await)
                    }
                    None => Some(missing("disk-full: no directory on a size-limited filesystem was given")),
                }
            }
            FaultKind::RegistryDrop => {
                found.registry_drops += 1;
                rotation += 1;
                match &support.proxy {
                    Some(proxy) => {
                        Some(faults::registry::round(&load, proxy, support.registry, &scope.state_dirs, rotation).await)
                    }
                    None => Some(missing("registry-drop: no proxy was started")),
                }
            }
        };
        found.rounds = k;
        scope.daemon_pid = daemon.pid();
        verify(&load, k, &mut found, &mut reported_duplicates).await;
        match round {
            None => {
                found.verified += 1;
                eprintln!("chaos: fault {k}/{}: daemon killed at {at:.1?}", faults.kills);
            }
            Some(round) => {
                eprintln!("chaos: fault {k}/{} at {at:.1?}: {}", faults.kills, round.what);
                for outcome in &round.outcomes {
                    eprintln!("    {outcome}");
                }
                let mut ledger = lock(&load.ledger);
                for finding in &round.findings {
                    eprintln!("    WRONG: {finding}");
                    ledger.finding(format!("fault {k} ({}): {finding}", kind.name()));
                }
                found.fault_findings += round.findings.len();
                let mut text = format!("{k} {}: {}", kind.name(), round.what);
                for outcome in round.outcomes.iter().chain(round.findings.iter().map(|f| f as &String)) {
                    text.push_str("; ");
                    text.push_str(outcome);
                }
                if found.outcomes.len() < MAX_OUTCOMES {
                    found.outcomes.push(text);
                }
            }
        }
    }
    load.stop();
    let _ = cycling.await;
    load.tear_down_all().await;
    scope.daemon_pid = daemon.pid();
    let (_, accounting) = settle(&scope, &before, &load).await;
    let mut report = super::report(runtime, &load, accounting, started);
    report.cycles = 0;
    report.interrupted = false;
    report.chaos = Some(found);
    report
}

/// The image a disk or registry round pulls: fixtures the load never pulls, in turn.
fn round_image(registry: &lockstep_testkit::fixtures::env::RegistryEnv, n: usize) -> String {
    let repo = faults::registry::ROUND_IMAGES[n % faults::registry::ROUND_IMAGES.len()];
    registry.fixture(repo).reference(&registry.host)
}

/// An outcome seen while checking the steady pods (kept with the faults' outcomes).
fn note(found: &mut ChaosReport, what: String) {
    if found.outcomes.len() < MAX_OUTCOMES {
        found.outcomes.push(what);
    }
}

fn missing(what: &str) -> faults::Round {
    let mut round = faults::Round::new(what);
    round.wrong(what);
    round
}

/// After a restart: each steady pod READY, its app RUNNING with the same pid and start time,
/// its short-lived container EXITED with its real code; no pod of the run listed twice.
async fn verify(load: &Load, kill: usize, found: &mut ChaosReport, reported: &mut std::collections::BTreeSet<String>) {
    let steady = lock(&load.steady).clone();
    let mut findings = Vec::new();
    for pod in &steady {
        let short = &pod.pod[..pod.pod.len().min(13)];
        let status =
            super::calls::call(true, || {
                let mut client = load.client();
                let pod_sandbox_id = pod.pod.clone();
                async move {
                    client.pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id, verbose: false }).await
                }
            })
            .await;
        match status.result {
            Err(e) if e.code() == tonic::Code::NotFound => {
                found.pods_lost += 1;
                findings.push(format!("kill {kill}: steady pod {short} is gone"));
                continue;
            }
            Err(e) => {
                found.pods_lost += 1;
                findings
                    .push(format!("kill {kill}: steady pod {short}: {}", super::calls::brief("PodSandboxStatus", &e)));
                continue;
            }
            Ok(s) => {
                let ready = s.status.is_some_and(|s| s.state == model::PodSandboxState::SandboxReady as i32);
                if !ready && load.marks.was_hit(&pod.pod) {
                    // Its shim (or pause) was killed: NOTREADY is the truth, said once.
                    if reported.insert(format!("not ready: {}", pod.pod)) {
                        note(found, format!("{kill}: steady pod {short}, whose helper a fault killed, is NOTREADY"));
                    }
                } else if !ready {
                    found.pods_lost += 1;
                    findings.push(format!("kill {kill}: steady pod {short} is not READY"));
                }
            }
        }
        match load.status(&pod.app).await {
            Ok(s)
                if s.state == model::ContainerState::ContainerRunning as i32 && s.started_at == pod.app_started_at =>
            {
                let pid = load.pid_of(&pod.app).await;
                if pod.app_pid.is_some() && pid != pod.app_pid {
                    found.containers_wrong += 1;
                    findings.push(format!(
                        "kill {kill}: steady pod {short}: the app's pid was {:?}, now {pid:?}",
                        pod.app_pid
                    ));
                }
            }
            // A fault killed its helper and the app's process with it: EXITED is the truth.
            Ok(s)
                if s.state == model::ContainerState::ContainerExited as i32
                    && load.marks.was_hit(&pod.pod)
                    && !pod.app_pid.is_some_and(faults::helpers::alive) =>
            {
                if reported.insert(format!("app exited: {}", pod.pod)) {
                    note(
                        found,
                        format!(
                            "{kill}: steady pod {short}, whose helper a fault killed: its app's process is gone and it is EXITED with code {}",
                            s.exit_code
                        ),
                    );
                }
            }
            Ok(s) => {
                found.containers_wrong += 1;
                findings.push(format!(
                    "kill {kill}: steady pod {short}: the app, running since {}, is reported in state {} since {} (exit code {})",
                    pod.app_started_at, s.state, s.started_at, s.exit_code
                ));
            }
            Err(e) => {
                found.containers_wrong += 1;
                findings.push(format!("kill {kill}: steady pod {short}: the app: {e}"));
            }
        }
        match load.status(&pod.exited).await {
            Ok(s) if s.state == model::ContainerState::ContainerExited as i32 && s.exit_code == STEADY_EXIT_CODE => {}
            Ok(s) => {
                found.containers_wrong += 1;
                findings.push(format!(
                    "kill {kill}: steady pod {short}: `exit {STEADY_EXIT_CODE}` is reported in state {} with exit code {}",
                    s.state, s.exit_code
                ));
            }
            Err(e) => {
                found.containers_wrong += 1;
                findings.push(format!("kill {kill}: steady pod {short}: the exited container: {e}"));
            }
        }
    }
    match load.listed_pods().await {
        Ok(pods) => {
            let mut seen = std::collections::BTreeMap::<String, usize>::new();
            for pod in pods {
                let key = pod
                    .metadata
                    .map(|m| format!("{}/{} attempt {}", m.namespace, m.name, m.attempt))
                    .unwrap_or_default();
                *seen.entry(key).or_default() += 1;
            }
            for (key, count) in seen {
                if count > 1 && reported.insert(key.clone()) {
                    found.duplicates += 1;
                    findings.push(format!(
                        "kill {kill}: pod {key} is listed {count} times (a retried RunPodSandbox made another)"
                    ));
                }
            }
        }
        Err(e) => findings.push(format!("kill {kill}: {}", super::calls::brief("ListPodSandbox", &e))),
    }
    let mut ledger = lock(&load.ledger);
    for finding in findings {
        ledger.finding(finding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_the_same_moments_and_another_seed_others() {
        let moments = |seed| {
            let mut rng = Rng::new(seed);
            (0..5).map(|_| rng.between(Duration::from_millis(200), Duration::from_millis(2500))).collect::<Vec<_>>()
        };
        assert_eq!(moments(42), moments(42));
        assert_ne!(moments(42), moments(43));
        assert!(moments(7).iter().all(|d| *d >= Duration::from_millis(200) && *d < Duration::from_millis(2500)));
    }
}
