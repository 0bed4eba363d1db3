//! Runs the selected benchmarks on each runtime of the run (the endpoint, then --vs), and
//! renders the percentiles side by side with the ratios.

use std::fmt::Write as _;

use regex::Regex;
use serde_json::json;

use super::{percentiles, Bench, BenchCtx, BenchResult};

/// One runtime under measurement.
pub struct Runtime {
    pub label: String,
    pub ctx: crate::framework::Ctx,
    pub daemon_pid: Option<u32>,
}

pub struct Options {
    pub iterations: usize,
    pub concurrency: usize,
    pub focus: Option<Regex>,
    pub sizes: super::Sizes,
}

/// Each benchmark's result on each runtime (same order as `runtimes`).
pub struct BenchReport {
    pub labels: Vec<String>,
    pub iterations: usize,
    pub concurrency: usize,
    pub results: Vec<(&'static str, Vec<Result<BenchResult, String>>)>,
}

pub async fn run(benches: &[Bench], runtimes: &[Runtime], options: &Options) -> BenchReport {
    let mut results = Vec::new();
    for bench in benches {
        if options.focus.as_ref().is_some_and(|f| !f.is_match(bench.name)) {
            continue;
        }
        let mut per_runtime = Vec::new();
        for runtime in runtimes {
            if bench.since > runtime.ctx.minor {
                per_runtime.push(Err(format!("needs Kubernetes {} or later", bench.since)));
                continue;
            }
            // A daemon the run restarts (an embedded lockstepd) has a new pid after each restart.
            let daemon_pid = match runtime.ctx.can_restart() {
                true => runtime.ctx.restartable_pid().await,
                false => runtime.daemon_pid,
            };
            let ctx = BenchCtx {
                ctx: runtime.ctx.clone(),
                iterations: options.iterations,
                concurrency: options.concurrency,
                daemon_pid,
                label: runtime.label.clone(),
                sizes: options.sizes,
            };
            eprintln!(
                "bench {}: {} ({} iterations, concurrency {})",
                runtime.label, bench.name, options.iterations, options.concurrency
            );
            per_runtime.push((bench.body)(ctx).await.map_err(|e| format!("{e:#}")));
        }
        results.push((bench.name, per_runtime));
    }
    BenchReport {
        labels: runtimes.iter().map(|r| r.label.clone()).collect(),
        iterations: options.iterations,
        concurrency: options.concurrency,
        results,
    }
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

pub fn to_table(report: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} iterations, concurrency {}; milliseconds", report.iterations, report.concurrency);
    for (name, per_runtime) in &report.results {
        let _ = writeln!(s, "\n{name}");
        let _ = writeln!(
            s,
            "  {:<50} {:<12} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "operation", "runtime", "n", "p50", "p95", "p99", "min", "max"
        );
        let ops: Vec<String> = per_runtime
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .flat_map(|r| r.series.iter().map(|s| s.op.clone()))
            .fold(Vec::new(), |mut acc, op| {
                if !acc.contains(&op) {
                    acc.push(op);
                }
                acc
            });
        for op in &ops {
            let mut p50s = Vec::new();
            for (label, result) in report.labels.iter().zip(per_runtime) {
                let series = result.as_ref().ok().and_then(|r| r.series.iter().find(|s| &s.op == op));
                if let Some(p) = series.and_then(|s| percentiles(&s.samples)) {
                    let _ = writeln!(
                        s,
                        "  {op:<50} {label:<12} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
                        p.n,
                        ms(p.p50),
                        ms(p.p95),
                        ms(p.p99),
                        ms(p.min),
                        ms(p.max)
                    );
                    p50s.push(p.p50);
                }
            }
            if p50s.len() == 2 && !p50s[1].is_zero() {
                let ratio = p50s[0].as_secs_f64() / p50s[1].as_secs_f64();
                let _ = writeln!(s, "  {:<50} p50 {} / {} = {ratio:.2}", "", report.labels[0], report.labels[1]);
            }
        }
        for (label, result) in report.labels.iter().zip(per_runtime) {
            match result {
                Ok(r) => {
                    for (key, value) in &r.readings {
                        let _ = writeln!(s, "  {key:<50} {label:<12} {value}");
                    }
                }
                Err(e) => {
                    let _ = writeln!(s, "  {label}: not measured: {e}");
                }
            }
        }
    }
    s
}

pub fn to_json(report: &BenchReport) -> serde_json::Value {
    let benches: Vec<serde_json::Value> = report
        .results
        .iter()
        .map(|(name, per_runtime)| {
            let runtimes: Vec<serde_json::Value> = report
                .labels
                .iter()
                .zip(per_runtime)
                .map(|(label, result)| match result {
                    Ok(r) => json!({
                        "runtime": label,
                        "operations": r.series.iter().map(|s| json!({"op": s.op, "ms": percentiles(&s.samples)})).collect::<Vec<_>>(),
                        "readings": r.readings.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
                    }),
                    Err(e) => json!({"runtime": label, "error": e}),
                })
                .collect();
            json!({"bench": name, "runtimes": runtimes})
        })
        .collect();
    json!({"harness_version": crate::html::HARNESS_VERSION, "kind": "bench", "iterations": report.iterations, "concurrency": report.concurrency, "benches": benches})
}
