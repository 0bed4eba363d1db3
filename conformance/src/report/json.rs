//! The report as JSON, for tools (and `report --html`): stamped with the harness version and
//! its kind, so that a reader can refuse a file from a newer harness.

use serde_json::json;

use super::RunReport;

pub fn to_json(report: &RunReport) -> serde_json::Value {
    let tests: Vec<serde_json::Value> = report
        .tests
        .iter()
        .map(|t| {
            json!({
                "area": t.area,
                "name": t.name,
                "since": t.since.to_string(),
                "outcome": t.outcome.label(),
                "reason": t.outcome.reason(),
                "duration_ms": t.duration.as_secs_f64() * 1000.0,
            })
        })
        .collect();
    json!({
        "harness_version": crate::html::HARNESS_VERSION,
        "kind": "run",
        "kubernetes": report.kube,
        "endpoint": report.endpoint,
        "runtime": report.runtime,
        "rpc_surface": report.surface,
        "summary": report.counts(),
        "duration_s": report.duration.as_secs_f64(),
        "tests": tests,
    })
}
