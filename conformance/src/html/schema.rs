//! The JSON results as the HTML report reads them: the shapes `run`, `skew`, `bench`, `soak` and
//! `chaos` write (report/json.rs, skew.rs, bench/run.rs, soak/report.rs), every field optional so
//! that files of older harnesses, without `harness_version` or `kind`, still read.

use serde::Deserialize;

/// The runtime's identity, as `run` and `skew` write it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Identity {
    pub name: String,
    pub version: String,
    pub api_version: String,
    pub pinned_minor: Option<String>,
}

impl Identity {
    /// "lockstep 0.1.0+k8s.1.36", or "unknown runtime".
    pub fn label(&self) -> String {
        match (self.name.is_empty(), self.version.is_empty()) {
            (true, _) => "unknown runtime".to_string(),
            (false, true) => self.name.clone(),
            (false, false) => format!("{} {}", self.name, self.version),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub expected_failures: usize,
}

/// `run --json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunDoc {
    pub kubernetes: String,
    pub endpoint: String,
    pub runtime: Identity,
    pub summary: Counts,
    pub duration_s: f64,
    pub tests: Vec<TestDoc>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TestDoc {
    pub area: String,
    pub name: String,
    pub since: String,
    /// passed, failed, skipped or expected-failure.
    pub outcome: String,
    pub reason: String,
    pub duration_ms: f64,
}

/// `skew --json`: a row per minor, each with its run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SkewDoc {
    pub runtime: Option<Identity>,
    pub matrix: Vec<MatrixRow>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MatrixRow {
    pub kubernetes: String,
    pub serves: bool,
    pub summary: Counts,
    pub report: Option<RunDoc>,
}

/// `bench --json`: each benchmark's percentiles per runtime (the endpoint, then --vs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BenchDoc {
    pub iterations: usize,
    pub concurrency: usize,
    pub benches: Vec<BenchEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BenchEntry {
    pub bench: String,
    pub runtimes: Vec<BenchRuntime>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BenchRuntime {
    pub runtime: String,
    pub operations: Vec<Operation>,
    pub readings: Vec<Reading>,
    /// Why the benchmark was not measured on this runtime.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Operation {
    pub op: String,
    /// Milliseconds; absent when the operation had no samples.
    pub ms: Option<Percentiles>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct Percentiles {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// A figure that is not a latency (memory, CPU time, a count): shown as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Reading {
    pub name: String,
    pub value: serde_json::Value,
}

/// `soak --json` and `chaos --json` (the latter with `chaos`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SoakDoc {
    pub runtime: String,
    pub cycles: usize,
    pub cycles_done: usize,
    pub cycles_failed: usize,
    pub concurrency: usize,
    pub steady_pods: usize,
    pub images_cycled: usize,
    pub interrupted: bool,
    pub duration_seconds: f64,
    pub leaks: usize,
    pub accounting: Vec<AccountingLine>,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub rss_growth_kib_per_100_cycles: Option<f64>,
    /// (cycles done, RSS in KiB) pairs.
    pub rss_by_cycles: Vec<(usize, u64)>,
    pub unanswered: Vec<Unanswered>,
    pub finding_count: usize,
    pub findings: Vec<String>,
    /// Read with the type `chaos` writes it with.
    pub chaos: Option<crate::soak::chaos::ChaosReport>,
    pub passed: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AccountingLine {
    pub resource: String,
    pub before: usize,
    pub after: usize,
    pub leaked: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Unanswered {
    pub rpc: String,
    pub times: usize,
    pub first: String,
}
