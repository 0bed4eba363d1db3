//! `fleet`: the conformance (or skew) profile on every selected node of a cluster, each as a Job
//! pinned to its node; progress on stderr, each node's JSON report collected from its pod's log,
//! the Jobs deleted at the end (on failure and Ctrl-C too). Talks only to the API server.

pub mod collect;
pub mod job;
pub mod verdict;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub use job::{JobTemplate, Profile};
pub use verdict::{JobEnd, NodeResult};

/// What `fleet` was asked to do.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The kubeconfig; None: KUBECONFIG, then ~/.kube/config, then the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// `key=value,...` as the API server takes it; None: every node.
    pub selector: Option<String>,
    /// Everything but the run id, which `run` makes.
    pub template: JobTemplate,
    /// How often the Jobs are listed.
    pub poll: Duration,
}

/// Why the fleet could not run at all (exit 2), or was interrupted (130).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig { path: String, source: kube::config::KubeconfigError },
    #[error("no usable cluster configuration: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot make a client for the cluster: {0}")]
    Client(#[source] kube::Error),
    #[error("the cluster refused {what}: {reason}")]
    Refused { what: String, reason: String },
    #[error("the cluster did not answer {what}: {reason}")]
    Unreachable { what: String, reason: String },
    #[error("no node matches the selector {0:?}")]
    NoNodes(String),
    #[error("interrupted (Ctrl-C); the run's Jobs were deleted")]
    Interrupted,
}

impl FleetError {
    /// The process exit code: 130 after Ctrl-C, 2 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            FleetError::Interrupted => 130,
            _ => 2,
        }
    }
}

/// `what` failed: refused by the API server (401, 403, 404 …), or not answered (connection
/// refused, TLS, timeout).
fn refused(what: impl Into<String>) -> impl FnOnce(kube::Error) -> FleetError {
    let what = what.into();
    move |e| match e {
        kube::Error::Api(_) => FleetError::Refused { what, reason: describe(&e) },
        _ => FleetError::Unreachable { what, reason: describe(&e) },
    }
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            let reason = if status.reason.is_empty() { "error" } else { status.reason.as_str() };
            format!("{} {reason}: {}", status.code, status.message)
        }
        other => {
            // The transport's own words are at the bottom of the chain (connection refused, TLS).
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let s_text = s.to_string();
                if !text.contains(&s_text) {
                    text = format!("{text}: {s_text}");
                }
                source = s.source();
            }
            text
        }
    }
}

/// A client from the kubeconfig given, or from what kube infers.
pub async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<Client, FleetError> {
    let config = match kubeconfig {
        Some(path) => {
            let shown = path.display().to_string();
            let wrap = |source| FleetError::Kubeconfig { path: shown.clone(), source };
            let parsed = Kubeconfig::read_from(path).map_err(wrap)?;
            Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default()).await.map_err(wrap)?
        }
        None => Config::infer().await?,
    };
    Client::try_from(config).map_err(FleetError::Client)
}

/// A short id for this run's Jobs: base36 of the clock and the pid.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut n = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    let mut id = String::new();
    for _ in 0..6 {
        let digit = (n % 36) as u32;
        id.push(char::from_digit(digit, 36).unwrap_or('0'));
        n /= 36;
    }
    id
}

/// Runs the profile on every selected node and returns each node's result.
pub async fn run(options: FleetOptions) -> Result<Vec<NodeResult>, FleetError> {
    let client = connect(options.kubeconfig.as_deref()).await?;
    let mut template = options.template.clone();
    template.run_id = run_id();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &template.namespace);
    let created = Mutex::new(Vec::new());
    let work = supervise(&client, &options, &template, &created);
    let result = tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => Err(FleetError::Interrupted),
    };
    let names = created.lock().map(|names| names.clone()).unwrap_or_default();
    delete_jobs(&jobs, &names).await;
    result
}

/// Lists the nodes, creates a Job on each, polls them to their end and collects the reports.
async fn supervise(
    client: &Client,
    options: &FleetOptions,
    template: &JobTemplate,
    created: &Mutex<Vec<String>>,
) -> Result<Vec<NodeResult>, FleetError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut params = ListParams::default();
    if let Some(selector) = &options.selector {
        params = params.labels(selector);
    }
    let nodes = nodes.list(&params).await.map_err(refused("listing nodes"))?;
    let nodes: Vec<String> = nodes.items.into_iter().filter_map(|n| n.metadata.name).collect();
    if nodes.is_empty() {
        return Err(FleetError::NoNodes(options.selector.clone().unwrap_or_default()));
    }
    let ns = &template.namespace;
    eprintln!("fleet: {} node(s); Jobs in namespace {ns}, run {}", nodes.len(), template.run_id);

    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // Job name → (node, when it was created).
    let mut pending: BTreeMap<String, (String, Instant)> = BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        let manifest = job::manifest(template, index, node);
        let job = jobs
            .create(&PostParams::default(), &manifest)
            .await
            .map_err(refused(format!("creating the Job for node {node} in namespace {ns}")))?;
        let name = job.metadata.name.unwrap_or_default();
        if let Ok(mut names) = created.lock() {
            names.push(name.clone());
        }
        eprintln!("fleet: {node}: started (Job {name})");
        pending.insert(name, (node.clone(), Instant::now()));
    }

    let mut results = Vec::new();
    let selector = format!("{}={}", job::RUN_LABEL, template.run_id);
    let mut errors_in_a_row = 0;
    let mut announced = std::collections::BTreeSet::new();
    while !pending.is_empty() {
        tokio::time::sleep(options.poll).await;
        let listed = match jobs.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                errors_in_a_row = 0;
                list.items
            }
            Err(e @ kube::Error::Api(_)) => return Err(refused("listing the run's Jobs")(e)),
            Err(e) => {
                // A dropped connection is retried a few times before the run gives up.
                errors_in_a_row += 1;
                eprintln!("fleet: listing the Jobs failed ({errors_in_a_row} in a row): {}", describe(&e));
                if errors_in_a_row >= 5 {
                    return Err(refused("listing the run's Jobs")(e));
                }
                continue;
            }
        };
        let by_name: BTreeMap<String, Job> =
            listed.into_iter().filter_map(|j| j.metadata.name.clone().map(|n| (n, j))).collect();
        let names: Vec<String> = pending.keys().cloned().collect();
        for name in names {
            let Some((node, started)) = pending.get(&name).cloned() else { continue };
            let active = by_name.get(&name).and_then(|j| j.status.as_ref()).and_then(|s| s.active).unwrap_or(0);
            if active > 0 && announced.insert(name.clone()) {
                eprintln!("fleet: {node}: pod active (pending or running)");
            }
            let end = match by_name.get(&name) {
                Some(job) => ended(job, template.timeout),
                None => Some(JobEnd::Failed("the Job disappeared (deleted by someone else?)".into())),
            };
            let end = match end {
                Some(end) => end,
                None if started.elapsed() > template.timeout + options.poll => {
                    JobEnd::TimedOut(template.timeout, String::new())
                }
                None => continue,
            };
            pending.remove(&name);
            let result = finish(&jobs, &pods, template, node, name, end).await;
            eprintln!("fleet: {}: {}", result.node, result.verdict());
            results.push(result);
        }
    }
    results.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(results)
}

/// How a Job has ended, from its conditions; None while it runs.
fn ended(job: &Job, timeout: Duration) -> Option<JobEnd> {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref())?;
    let met = |kind: &str| conditions.iter().find(|c| c.type_ == kind && c.status == "True");
    if met("Complete").is_some() {
        return Some(JobEnd::Succeeded);
    }
    let failed = met("Failed")?;
    let reason = failed.reason.clone().unwrap_or_default();
    if reason == "DeadlineExceeded" {
        return Some(JobEnd::TimedOut(timeout, String::new()));
    }
    let message = failed.message.clone().unwrap_or_default();
    Some(JobEnd::Failed(if message.is_empty() { reason } else { format!("{reason}: {message}") }))
}

/// The node's result: its report read from the pod's log; a timed-out Job deleted at once.
async fn finish(
    jobs: &Api<Job>,
    pods: &Api<Pod>,
    template: &JobTemplate,
    node: String,
    name: String,
    end: JobEnd,
) -> NodeResult {
    let mut result = NodeResult { node, job: name.clone(), end, rows: Vec::new(), unreadable: None };
    if let JobEnd::TimedOut(_, waiting) = &mut result.end {
        // What the pod was stuck on says more than the timeout (an image that does not pull).
        if let Ok(Some(reason)) = collect::waiting(pods, &name).await {
            *waiting = reason;
        }
        delete_jobs(jobs, std::slice::from_ref(&name)).await;
        return result;
    }
    let log = match collect::job_log(pods, &name).await {
        Ok(log) => log,
        Err(e) => {
            result.unreadable = Some(format!("cannot read the pod's log: {}", describe(&e)));
            None
        }
    };
    let Some(log) = log else {
        result.unreadable.get_or_insert_with(|| "the Job's pod has no log".to_string());
        return result;
    };
    match collect::rows(&template.profile, &log) {
        Ok(rows) => result.rows = rows,
        Err(e) => {
            let tail = collect::tail(&log, 3);
            match &mut result.end {
                // The harness's own last words say more than "BackoffLimitExceeded".
                JobEnd::Failed(reason) if !tail.is_empty() => *reason = format!("{reason}; log: {tail}"),
                _ => result.unreadable = Some(format!("{e}; log: {tail}")),
            }
        }
    }
    result
}

/// Deletes the Jobs with their pods (background propagation); one already gone is fine.
async fn delete_jobs(jobs: &Api<Job>, names: &[String]) {
    for name in names {
        match jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => eprintln!("fleet: cannot delete Job {name}: {} (delete it by hand)", describe(&e)),
        }
    }
}

/// `30m`, `2s`, `1h`, `90` (seconds): the per-node timeout.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?}: expected a number with s, m or h, e.g. 30m"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (s, m or h)")),
    };
    let seconds = n.checked_mul(scale).ok_or_else(|| format!("{text:?}: too long"))?;
    if seconds == 0 {
        return Err(format!("{text:?}: must be at least 1 s"));
    }
    Ok(Duration::from_secs(seconds))
}

/// As [`parse_duration`], and `ms` too (how often Jobs are polled; tests poll fast).
pub fn parse_duration_ms(text: &str) -> Result<Duration, String> {
    match text.trim().strip_suffix("ms").map(str::parse::<u64>) {
        Some(Ok(ms)) if ms > 0 => Ok(Duration::from_millis(ms)),
        Some(_) => Err(format!("{text:?}: expected a number of milliseconds, e.g. 200ms")),
        None => parse_duration(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5d").is_err_and(|e| e.contains("unknown unit")));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn run_ids_are_label_and_name_safe() {
        let id = run_id();
        assert_eq!(id.len(), 6);
        assert!(id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{id}");
    }
}
