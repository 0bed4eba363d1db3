//! `skew`: every minor's profile against one endpoint, as a matrix (minor × passed / failed /
//! skipped) that tells a release engineer which kubelet minors the runtime really serves.

use std::fmt::Write as _;

use lockstep_cri::Minor;
use serde_json::json;

use crate::report::{Counts, RunReport};

/// One row: a minor and its run.
#[derive(Debug)]
pub struct Row {
    pub minor: Minor,
    pub report: RunReport,
}

impl Row {
    pub fn serves(&self) -> bool {
        self.report.counts().failed == 0
    }
}

pub fn to_table(rows: &[Row]) -> String {
    let mut s = String::new();
    if let Some(first) = rows.first() {
        let r = &first.report.runtime;
        let _ = writeln!(s, "Version skew of {} {} at {}", r.name, r.version, first.report.endpoint);
        let _ = writeln!(s, "RPC surface: {}\n", first.report.surface.summary);
    }
    let _ = writeln!(s, "{:<10} {:>7} {:>7} {:>8} {:>6}  verdict", "kubelet", "passed", "failed", "skipped", "xfail");
    for row in rows {
        let c: Counts = row.report.counts();
        let verdict = if row.serves() && c.expected_failures > 0 {
            format!("serves, with {} known difference(s) (xfail)", c.expected_failures)
        } else if row.serves() {
            "serves".to_string()
        } else {
            let failed: Vec<String> = row
                .report
                .tests
                .iter()
                .filter(|t| matches!(t.outcome, crate::framework::Outcome::Failed(_)))
                .map(|t| format!("{}/{}", t.area, t.name))
                .collect();
            format!("does not serve: {}", failed.join("; "))
        };
        let _ = writeln!(
            s,
            "{:<10} {:>7} {:>7} {:>8} {:>6}  {verdict}",
            row.minor.to_string(),
            c.passed,
            c.failed,
            c.skipped,
            c.expected_failures
        );
    }
    let served: Vec<String> = rows.iter().filter(|r| r.serves()).map(|r| r.minor.to_string()).collect();
    let _ = writeln!(s, "\nserves kubelets of: {}", if served.is_empty() { "none".into() } else { served.join(", ") });
    s
}

pub fn to_json(rows: &[Row]) -> serde_json::Value {
    let matrix: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            json!({
                "kubernetes": row.minor.to_string(),
                "serves": row.serves(),
                "summary": row.report.counts(),
                "report": crate::report::to_json(&row.report),
            })
        })
        .collect();
    let runtime = rows.first().map(|r| json!(r.report.runtime)).unwrap_or(json!(null));
    json!({ "harness_version": crate::html::HARNESS_VERSION, "kind": "skew", "runtime": runtime, "matrix": matrix })
}
