//! `lockstep-conformance soak` and `chaos`: a kubelet-like load for many cycles (`load`), with
//! the daemon killed at seeded random moments for `chaos` (`chaos`) and the other faults
//! (`faults`: helpers and the OCI runtime killed, a full disk, a registry dropped), then an accounting of what
//! the runtime left on the host (`accounting`), printed as a table and JSON (`report`).

pub mod accounting;
pub mod calls;
pub mod chaos;
pub mod faults;
pub mod load;
pub mod report;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lockstep_cri::{model, CriClient};

use accounting::{Accounting, Scope, Snapshot};
use load::{lock, Load};

/// How long the accounting waits for a runtime to finish releasing (shims exit on their own
/// time) before what is left counts as leaked.
const SETTLE: Duration = Duration::from_secs(20);

/// What a soak or chaos run found.
#[derive(Debug, Default)]
pub struct Report {
    pub runtime: String,
    pub cycles: usize,
    pub concurrency: usize,
    pub steady_pods: usize,
    pub cycles_done: usize,
    pub cycles_failed: usize,
    /// Cycles a fault (other than a daemon kill) broke, and how (not failures of the runtime).
    pub cycles_faulted: usize,
    pub fault_effects: Vec<String>,
    pub images_cycled: usize,
    pub findings: Vec<String>,
    pub finding_count: usize,
    /// The daemon's RSS (KiB) after each hundred cycles.
    pub rss: Vec<(usize, u64)>,
    /// Its anonymous part (heap and stacks) at the same moments.
    pub rss_anon: Vec<(usize, u64)>,
    /// Optional calls the runtime did not answer: RPC → (times, first error).
    pub unanswered: std::collections::BTreeMap<String, (usize, String)>,
    pub accounting: Accounting,
    pub interrupted: bool,
    pub duration: Duration,
    pub chaos: Option<chaos::ChaosReport>,
}

impl Report {
    /// Leaks, or anything else the run saw go wrong.
    pub fn failed(&self) -> bool {
        self.accounting.leaks() > 0 || self.finding_count > 0
    }
}

/// The images a run uses: the containers' (pulled here, kept) and the one pulled and removed
/// now and then.
pub struct Images {
    pub image: String,
    pub churn: String,
}

impl Images {
    /// Pulls the shell fixture from `registry`.
    pub async fn pull(
        client: &mut CriClient,
        registry: &lockstep_testkit::fixtures::env::RegistryEnv,
    ) -> anyhow::Result<Images> {
        use lockstep_testkit::fixtures::{OWN_REMOVED, SHELL};
        let reference = registry.fixture(SHELL).reference(&registry.host);
        let image = Some(model::ImageSpec { image: reference.clone(), ..Default::default() });
        let pulled = client.pull_image(model::PullImageRequest { image, ..Default::default() }).await;
        let image = pulled.with_context(|| format!("PullImage {reference}"))?.image_ref;
        Ok(Images { image, churn: registry.fixture(OWN_REMOVED).reference(&registry.host) })
    }
}

/// Runs one round of cycles at the load's concurrency (one of them pulling and removing an
/// image) before the first snapshot, so that what a runtime makes once (its image store,
/// caches, lazily made directories) and what the concurrency itself needs (threads, their
/// stacks and allocator arenas) is not counted as a leak or as RSS growth.
async fn warm_up(load: &Load) {
    let warm = Load::new_like(load);
    warm.run_cycles().await;
    let mut ledger = lock(&load.ledger);
    let warm_ledger = std::mem::take(&mut *lock(&warm.ledger));
    for finding in warm_ledger.findings {
        ledger.finding(format!("warm-up: {finding}"));
    }
    ledger.pods.extend(warm_ledger.pods);
    for (rpc, (times, first)) in warm_ledger.unanswered {
        ledger.unanswered.entry(rpc).or_insert((0, first)).0 += times;
    }
}

/// Waits (at most SETTLE) until the accounting finds nothing, and returns the last one.
async fn settle(scope: &Scope, before: &Snapshot, load: &Load) -> (Snapshot, Accounting) {
    let started = Instant::now();
    loop {
        let (ids, veths) = {
            let ledger = lock(&load.ledger);
            (ledger.ids(), ledger.pods.values().flat_map(|p| p.veths.clone()).collect::<Vec<_>>())
        };
        let after = scope.snapshot();
        let accounting = scope.account(before, &after, &ids, &veths);
        if accounting.leaks() == 0 || started.elapsed() > SETTLE {
            return (after, accounting);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The report of a finished load.
fn report(runtime: String, load: &Load, accounting: Accounting, started: Instant) -> Report {
    let ledger = std::mem::take(&mut *lock(&load.ledger));
    let shape = load.shape();
    Report {
        runtime,
        cycles: shape.cycles,
        concurrency: shape.concurrency,
        steady_pods: shape.pods,
        cycles_done: ledger.cycles_done,
        cycles_failed: ledger.cycles_failed,
        cycles_faulted: ledger.cycles_faulted,
        fault_effects: ledger.fault_effects,
        images_cycled: ledger.images_cycled,
        findings: ledger.findings,
        finding_count: ledger.finding_count,
        rss: ledger.rss,
        rss_anon: ledger.rss_anon,
        unanswered: ledger.unanswered,
        accounting,
        interrupted: load.stopped() && ledger.cycles_done < shape.cycles,
        duration: started.elapsed(),
        chaos: None,
    }
}

/// The soak: warm-up, a snapshot, the steady pods and the cycles (Ctrl-C ends them early),
/// every pod removed, and the accounting.
pub async fn soak(load: Arc<Load>, scope: Scope, runtime: String) -> Report {
    let started = Instant::now();
    warm_up(&load).await;
    let before = scope.snapshot();
    let interrupt = {
        let load = load.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("soak: interrupted; finishing the cycles under way, then removing every pod the run made");
                load.stop();
            }
        })
    };
    match load.start_steady().await {
        Ok(()) => {
            eprintln!("soak: {} steady pods up; cycling", load.shape().pods);
            load.run_cycles().await
        }
        Err(e) => lock(&load.ledger).finding(format!("steady pods: {e}")),
    }
    load.tear_down_all().await;
    interrupt.abort();
    let (_, accounting) = settle(&scope, &before, &load).await;
    report(runtime, &load, accounting, started)
}
