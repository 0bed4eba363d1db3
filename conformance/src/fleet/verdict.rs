//! Each node's verdict and the fleet's three reports: a node × minor table for people, JUnit XML
//! with one testsuite per node for CI, JSON for tools (every node's reports in the harness's own
//! format). Pure: the caller writes the files.

use std::fmt::Write as _;
use std::time::Duration;

use lockstep_cri::Minor;
use serde_json::json;

use crate::framework::Outcome;
use crate::report::junit::escape;
use crate::skew::Row;

/// How a node's Job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// The Job completed.
    Succeeded,
    /// The Job failed, with Kubernetes' reason and the log's last lines.
    Failed(String),
    /// No result within the per-node timeout; the Job was deleted. With what its pod was
    /// waiting for, when it said (e.g. "ImagePullBackOff: …"), else empty.
    TimedOut(Duration, String),
}

/// One node's result.
#[derive(Debug)]
pub struct NodeResult {
    pub node: String,
    pub job: String,
    pub end: JobEnd,
    /// The runs read from its log: one per minor (none when the log had no report).
    pub rows: Vec<Row>,
    /// Why no report could be read, when the Job succeeded but its log was not usable.
    pub unreadable: Option<String>,
}

impl NodeResult {
    /// Every minor ran and nothing failed.
    pub fn passed(&self) -> bool {
        self.end == JobEnd::Succeeded && !self.rows.is_empty() && self.rows.iter().all(Row::serves)
    }

    /// "passed", "failed: …", "timed out …", in a word or a sentence.
    pub fn verdict(&self) -> String {
        if self.passed() {
            return "passed".to_string();
        }
        let failed: Vec<String> = self
            .rows
            .iter()
            .flat_map(|row| {
                row.report
                    .tests
                    .iter()
                    .filter(|t| matches!(t.outcome, Outcome::Failed(_)))
                    .map(move |t| format!("{} {}/{}", row.minor, t.area, t.name))
            })
            .collect();
        match &self.end {
            JobEnd::TimedOut(after, waiting) => {
                let mut text = format!("timed out: no result within {} s, Job deleted", after.as_secs());
                if !waiting.is_empty() {
                    let _ = write!(text, "; its pod was waiting: {waiting}");
                }
                text
            }
            _ if !failed.is_empty() => format!("failed: {} test(s): {}", failed.len(), shorten(&failed, 5)),
            JobEnd::Failed(reason) => format!("failed: {reason}"),
            JobEnd::Succeeded => {
                format!("failed: {}", self.unreadable.as_deref().unwrap_or("the Job's log held no report"))
            }
        }
    }

    /// Why the node has no report, when it has none (the JUnit "job" testcase's failure).
    fn missing_report(&self) -> Option<String> {
        self.rows.is_empty().then(|| self.verdict().trim_start_matches("failed: ").to_string())
    }
}

fn shorten(items: &[String], n: usize) -> String {
    let mut text = items.iter().take(n).cloned().collect::<Vec<_>>().join("; ");
    if items.len() > n {
        let _ = write!(text, "; and {} more", items.len() - n);
    }
    text
}

/// Node × minor: each cell `pass`, `FAIL n` or `-`, then the node's verdict.
pub fn to_table(results: &[NodeResult], minors: &[Minor]) -> String {
    let width = results.iter().map(|r| r.node.len()).max().unwrap_or(4).max(4);
    let mut s = format!("{:<width$}", "node");
    for minor in minors {
        let _ = write!(s, " {:>7}", minor.to_string());
    }
    s.push_str("  verdict\n");
    for result in results {
        let _ = write!(s, "{:<width$}", result.node);
        for minor in minors {
            let cell = match result.rows.iter().find(|r| r.minor == *minor) {
                Some(row) if row.serves() => "pass".to_string(),
                Some(row) => format!("FAIL {}", row.report.counts().failed),
                None => "-".to_string(),
            };
            let _ = write!(s, " {cell:>7}");
        }
        let _ = writeln!(s, "  {}", result.verdict());
    }
    let passed = results.iter().filter(|r| r.passed()).count();
    let _ = writeln!(s, "\n{passed} of {} node(s) passed", results.len());
    s
}

/// One testsuite per node: a `job` testcase (failed when the node gave no report: Job failed,
/// timed out, log unusable), then a testcase per test and minor, `<minor> <area>/<name>`.
pub fn to_junit(results: &[NodeResult]) -> String {
    let mut suites = String::new();
    let (mut all_tests, mut all_failures, mut all_skipped) = (0, 0, 0);
    for result in results {
        let mut cases = String::new();
        let (mut tests, mut failures, mut skipped, mut time) = (1, 0, 0, 0.0);
        match result.missing_report() {
            Some(reason) => {
                failures += 1;
                let _ = writeln!(
                    cases,
                    "    <testcase classname=\"{node}\" name=\"job\">\n      <failure message=\"{r}\">{r}</failure>\n    </testcase>",
                    node = escape(&result.node),
                    r = escape(&reason)
                );
            }
            None => {
                let _ = writeln!(cases, "    <testcase classname=\"{}\" name=\"job\"/>", escape(&result.node));
            }
        }
        for row in &result.rows {
            for t in &row.report.tests {
                tests += 1;
                time += t.duration.as_secs_f64();
                let _ = write!(
                    cases,
                    "    <testcase classname=\"{}.{}\" name=\"{} {}/{}\" time=\"{:.3}\"",
                    escape(&result.node),
                    escape(t.area),
                    row.minor,
                    escape(t.area),
                    escape(t.name),
                    t.duration.as_secs_f64()
                );
                match &t.outcome {
                    Outcome::Passed => cases.push_str("/>\n"),
                    Outcome::Failed(reason) => {
                        failures += 1;
                        let _ = writeln!(
                            cases,
                            ">\n      <failure message=\"{r}\">{r}</failure>\n    </testcase>",
                            r = escape(reason)
                        );
                    }
                    other => {
                        skipped += 1;
                        let _ = writeln!(
                            cases,
                            ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                            escape(&other.reason())
                        );
                    }
                }
            }
        }
        let _ = writeln!(
            suites,
            "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time:.3}\">",
            escape(&result.node)
        );
        let _ = writeln!(suites, "    <properties>");
        let runtime = result.rows.first().map(|r| &r.report.runtime);
        for (name, value) in [
            ("job", result.job.as_str()),
            ("verdict", &result.verdict()),
            ("runtime", runtime.map_or("", |r| r.name.as_str())),
            ("runtime_version", runtime.map_or("", |r| r.version.as_str())),
        ] {
            let _ = writeln!(suites, "      <property name=\"{name}\" value=\"{}\"/>", escape(value));
        }
        let _ = writeln!(suites, "    </properties>");
        suites.push_str(&cases);
        suites.push_str("  </testsuite>\n");
        (all_tests, all_failures, all_skipped) = (all_tests + tests, all_failures + failures, all_skipped + skipped);
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"lockstep-conformance fleet\" tests=\"{all_tests}\" failures=\"{all_failures}\" skipped=\"{all_skipped}\">\n{suites}</testsuites>\n"
    )
}

/// `{"nodes": [{node, job, passed, verdict, runs: [{kubernetes, serves, report}]}]}`, each report
/// as `run --json` writes it.
pub fn to_json(results: &[NodeResult]) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let runs: Vec<serde_json::Value> = r
                .rows
                .iter()
                .map(|row| {
                    json!({
                        "kubernetes": row.minor.to_string(),
                        "serves": row.serves(),
                        "report": crate::report::to_json(&row.report),
                    })
                })
                .collect();
            json!({
                "node": r.node,
                "job": r.job,
                "passed": r.passed(),
                "verdict": r.verdict(),
                "runs": runs,
            })
        })
        .collect();
    json!({ "nodes": nodes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{RuntimeIdentity, TestReport};
    use crate::report::RunReport;
    use crate::surface::Surface;

    fn row(minor: Minor, outcome: Outcome) -> Row {
        let test = TestReport { area: "pods", name: "run", since: Minor::V1_30, outcome, duration: Duration::ZERO };
        let report = RunReport {
            kube: minor.to_string(),
            endpoint: "unix:///host-cri.sock".into(),
            runtime: RuntimeIdentity { name: "containerd".into(), ..RuntimeIdentity::default() },
            surface: Surface { probes: vec![], summary: "all".into() },
            tests: vec![test],
            duration: Duration::ZERO,
        };
        Row { minor, report }
    }

    fn results() -> Vec<NodeResult> {
        let node = |node: &str, end: JobEnd, rows: Vec<Row>| NodeResult {
            node: node.into(),
            job: format!("lsc-x-{node}"),
            end,
            rows,
            unreadable: None,
        };
        vec![
            node("a", JobEnd::Succeeded, vec![row(Minor::V1_36, Outcome::Passed)]),
            node("b", JobEnd::Failed("BackoffLimitExceeded: <boom>".into()), vec![]),
            node("c", JobEnd::TimedOut(Duration::from_secs(2), String::new()), vec![]),
            node("d", JobEnd::Failed("exit 1".into()), vec![row(Minor::V1_36, Outcome::Failed("bad".into()))]),
        ]
    }

    #[test]
    fn the_table_has_a_cell_per_minor_and_a_verdict_per_node() {
        let table = to_table(&results(), &[Minor::V1_35, Minor::V1_36]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "node    1.35    1.36  verdict");
        assert_eq!(lines[1], "a          -    pass  passed");
        assert_eq!(lines[2], "b          -       -  failed: BackoffLimitExceeded: <boom>");
        assert_eq!(lines[3], "c          -       -  timed out: no result within 2 s, Job deleted");
        assert_eq!(lines[4], "d          -  FAIL 1  failed: 1 test(s): 1.36 pods/run");
        assert!(table.ends_with("1 of 4 node(s) passed\n"), "{table}");
    }

    #[test]
    fn junit_has_a_suite_per_node_with_its_failures() {
        let xml = to_junit(&results());
        assert_eq!(xml.matches("<testsuite ").count(), 4, "{xml}");
        assert!(xml.contains("<testsuite name=\"a\" tests=\"2\" failures=\"0\""), "{xml}");
        assert!(xml.contains("<failure message=\"BackoffLimitExceeded: &lt;boom&gt;\">"), "{xml}");
        assert!(xml.contains("<testsuite name=\"c\" tests=\"1\" failures=\"1\""), "{xml}");
        assert!(xml.contains("name=\"1.36 pods/run\" time=\"0.000\">\n      <failure message=\"bad\">"), "{xml}");
        assert!(xml.contains("<testsuites name=\"lockstep-conformance fleet\" tests=\"6\" failures=\"3\""), "{xml}");
    }

    #[test]
    fn json_carries_each_node_s_reports_in_the_harness_format() {
        let json = to_json(&results());
        assert_eq!(json["nodes"][0]["passed"], true);
        assert_eq!(json["nodes"][0]["runs"][0]["report"]["summary"]["passed"], 1);
        assert_eq!(json["nodes"][2]["verdict"], "timed out: no result within 2 s, Job deleted");
    }
}
