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

/// A JSON report that cannot be read back, naming the field that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not a lockstep-conformance report: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("field `{field}`: {problem}")]
    Field { field: String, problem: String },
}

/// The report written by [`to_json`], read back (a fleet node's result, a saved run).
pub fn from_json(value: &serde_json::Value) -> Result<RunReport, ReadError> {
    use crate::framework::{Outcome, RuntimeIdentity, TestReport};
    use crate::surface::{Probe, Surface};
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Wire {
        kubernetes: String,
        endpoint: String,
        runtime: WireRuntime,
        rpc_surface: WireSurface,
        duration_s: f64,
        tests: Vec<WireTest>,
    }
    #[derive(Deserialize)]
    struct WireRuntime {
        name: String,
        version: String,
        api_version: String,
        pinned_minor: Option<String>,
    }
    #[derive(Deserialize)]
    struct WireSurface {
        probes: Vec<WireProbe>,
        summary: String,
    }
    #[derive(Deserialize)]
    struct WireProbe {
        rpc: String,
        added_in: String,
        served: bool,
    }
    #[derive(Deserialize)]
    struct WireTest {
        area: String,
        name: String,
        since: String,
        outcome: String,
        reason: String,
        duration_ms: f64,
    }

    let wire = Wire::deserialize(value)?;
    let duration = |field: String, seconds: f64| {
        std::time::Duration::try_from_secs_f64(seconds)
            .map_err(|e| ReadError::Field { field, problem: format!("{seconds}: {e}") })
    };
    let mut tests = Vec::with_capacity(wire.tests.len());
    for (i, t) in wire.tests.into_iter().enumerate() {
        let field = |name: &str| format!("tests[{i}].{name}");
        let since = t
            .since
            .parse::<lockstep_cri::Minor>()
            .map_err(|e| ReadError::Field { field: field("since"), problem: e.to_string() })?;
        let outcome = match t.outcome.as_str() {
            "passed" => Outcome::Passed,
            "failed" => Outcome::Failed(t.reason),
            "skipped" => Outcome::Skipped(t.reason),
            "expected-failure" => expected_failure(t.reason),
            other => {
                return Err(ReadError::Field { field: field("outcome"), problem: format!("unknown outcome {other:?}") })
            }
        };
        tests.push(TestReport {
            area: intern(t.area),
            name: intern(t.name),
            since,
            outcome,
            duration: duration(field("duration_ms"), t.duration_ms / 1000.0)?,
        });
    }
    let probes = wire
        .rpc_surface
        .probes
        .into_iter()
        .map(|p| Probe { rpc: intern(p.rpc), added_in: p.added_in, served: p.served })
        .collect();
    Ok(RunReport {
        kube: wire.kubernetes,
        endpoint: wire.endpoint,
        runtime: RuntimeIdentity {
            name: wire.runtime.name,
            version: wire.runtime.version,
            api_version: wire.runtime.api_version,
            pinned_minor: wire.runtime.pinned_minor,
        },
        surface: Surface { probes, summary: wire.rpc_surface.summary },
        tests,
        duration: duration("duration_s".into(), wire.duration_s)?,
    })
}

/// `Outcome::reason` of an expected failure, "expected: E (got: A)", split again.
fn expected_failure(reason: String) -> crate::framework::Outcome {
    let split = reason
        .strip_prefix("expected: ")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|rest| rest.rsplit_once(" (got: "));
    match split {
        Some((expected, actual)) => {
            crate::framework::Outcome::ExpectedFailure { expected: expected.to_string(), actual: actual.to_string() }
        }
        None => crate::framework::Outcome::ExpectedFailure { expected: reason, actual: String::new() },
    }
}

/// The report's names are `&'static str` (they come from the test table): a name read back is
/// leaked once per distinct string, which a command that reads a few reports and exits can afford.
fn intern(text: String) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = names.get(text.as_str()) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.into_boxed_str());
    names.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{Outcome, RuntimeIdentity, TestReport};
    use crate::surface::{Probe, Surface};
    use lockstep_cri::Minor;
    use std::time::Duration;

    fn sample() -> RunReport {
        RunReport {
            kube: "1.36".into(),
            endpoint: "unix:///host-cri.sock".into(),
            runtime: RuntimeIdentity {
                name: "containerd".into(),
                version: "v2.1.0".into(),
                api_version: "v1".into(),
                pinned_minor: None,
            },
            surface: Surface {
                probes: vec![Probe { rpc: "RuntimeConfig", added_in: "1.28".into(), served: true }],
                summary: "serves every RPC".into(),
            },
            tests: vec![
                TestReport {
                    area: "pods",
                    name: "run",
                    since: Minor::V1_30,
                    outcome: Outcome::Passed,
                    duration: Duration::from_millis(12),
                },
                TestReport {
                    area: "pods",
                    name: "stop",
                    since: Minor::V1_30,
                    outcome: Outcome::Failed("no".into()),
                    duration: Duration::from_millis(3),
                },
                TestReport {
                    area: "images",
                    name: "pull (auth)",
                    since: Minor::V1_33,
                    outcome: Outcome::ExpectedFailure { expected: "known (bug)".into(), actual: "timeout".into() },
                    duration: Duration::from_millis(7),
                },
            ],
            duration: Duration::from_millis(1500),
        }
    }

    #[test]
    fn a_report_reads_back_as_written() {
        let written = to_json(&sample());
        let read = from_json(&written).expect("reads back");
        assert_eq!(to_json(&read), written);
        assert_eq!(read.counts().failed, 1);
    }

    #[test]
    fn a_bad_field_is_named() {
        let mut written = to_json(&sample());
        written["tests"][1]["outcome"] = "exploded".into();
        let err = from_json(&written).expect_err("refused").to_string();
        assert!(err.contains("tests[1].outcome") && err.contains("exploded"), "{err}");
        let err = from_json(&serde_json::json!({"kubernetes": "1.36"})).expect_err("refused").to_string();
        assert!(err.contains("missing field"), "{err}");
    }
}
