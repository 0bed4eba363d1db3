//! The report for people: one line per test, reasons under failures and skips, a summary;
//! coloured when the output is a terminal.

use std::fmt::Write as _;

use super::RunReport;
use crate::framework::Outcome;

pub fn to_table(report: &RunReport, colour: bool) -> String {
    let paint = |code: &str, text: &str| if colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() };
    let mut s = String::new();
    let r = &report.runtime;
    let _ = writeln!(s, "CRI conformance for Kubernetes {} against {}", report.kube, report.endpoint);
    let _ = writeln!(s, "runtime: {} {} (CRI {})", r.name, r.version, r.api_version);
    if let Some(m) = &r.pinned_minor {
        let _ = writeln!(s, "pinned to: Kubernetes {m}");
    }
    let _ = writeln!(s, "RPC surface: {}\n", report.surface.summary);
    let width = report.tests.iter().map(|t| t.area.len() + t.name.len() + 1).max().unwrap_or(10).min(90);
    for t in &report.tests {
        let (mark, code) = match t.outcome {
            Outcome::Passed => ("PASS", "32"),
            Outcome::Failed(_) => ("FAIL", "31"),
            Outcome::Skipped(_) => ("SKIP", "33"),
            Outcome::ExpectedFailure { .. } => ("XFAIL", "36"),
        };
        let id = format!("{}/{}", t.area, t.name);
        let _ = writeln!(
            s,
            "{}  {id:<width$}  {:>5} ms  since {}",
            paint(code, &format!("{mark:<5}")),
            t.duration.as_millis(),
            t.since
        );
        let reason = t.outcome.reason();
        if !reason.is_empty() {
            let _ = writeln!(s, "       {reason}");
        }
    }
    let c = report.counts();
    let mut summary = format!("{} passed, {} failed, {} skipped", c.passed, c.failed, c.skipped);
    if c.expected_failures > 0 {
        summary += &format!(", {} expected failures", c.expected_failures);
    }
    summary += &format!(" in {:.1} s", report.duration.as_secs_f64());
    let _ = writeln!(s, "\n{}", paint(if c.failed > 0 { "31" } else { "32" }, &summary));
    s
}
