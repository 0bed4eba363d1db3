//! A node's result: its Job's pod log fetched from the API server, and the harness's JSON report
//! (run or skew) found in it and read back into the report types. Reads only; deletes nothing.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::Api;
use lockstep_cri::Minor;

use super::job::Profile;
use crate::report::{self, ReadError};
use crate::skew::Row;

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("its log holds no JSON report")]
    NoReport,
    #[error("its JSON report: {0}")]
    Report(#[from] ReadError),
    #[error("{0}")]
    Version(#[from] crate::html::InputError),
    #[error("its JSON report: field `{field}`: {problem}")]
    Field { field: String, problem: String },
}

/// The log of the Job's pod (the newest, if the Job made more than one); None when it has no
/// pod yet or the pod was never started.
pub async fn job_log(pods: &Api<Pod>, job: &str) -> Result<Option<String>, kube::Error> {
    let list = pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await?;
    let newest = list.items.into_iter().max_by_key(|p| p.metadata.creation_timestamp.clone());
    let Some(name) = newest.and_then(|p| p.metadata.name) else { return Ok(None) };
    let params = LogParams { container: Some("conformance".to_string()), ..LogParams::default() };
    match pods.logs(&name, &params).await {
        Ok(text) => Ok(Some(text)),
        // A pod that never ran (image pull failed, evicted) has no log to give.
        Err(kube::Error::Api(status)) if status.code == 400 || status.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the Job's pod is waiting for, when its container says (`ImagePullBackOff: …`,
/// `ContainerCreating`), or its phase and reason when it has no container status yet.
pub async fn waiting(pods: &Api<Pod>, job: &str) -> Result<Option<String>, kube::Error> {
    let list = pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await?;
    let newest = list.items.into_iter().max_by_key(|p| p.metadata.creation_timestamp.clone());
    Ok(newest.and_then(|p| p.status).and_then(|status| {
        let container = status.container_statuses.iter().flatten().find_map(|c| c.state.as_ref()?.waiting.clone());
        match container {
            Some(w) => {
                let reason = w.reason.unwrap_or_default();
                Some(match w.message {
                    Some(message) if !message.is_empty() => format!("{reason}: {message}"),
                    _ => reason,
                })
            }
            None => {
                let phase = status.phase?;
                Some(match status.reason {
                    Some(reason) => format!("{phase} ({reason})"),
                    None => phase,
                })
            }
        }
    }))
}

/// The last JSON object in a log whose other lines are the harness's table and progress: it
/// starts at a line that is exactly `{` (serde_json's pretty printing) and is read to its end.
pub fn last_json(log: &str) -> Option<serde_json::Value> {
    let starts = log.match_indices('\n').map(|(i, _)| i + 1).chain(std::iter::once(0));
    let mut starts: Vec<usize> = starts.filter(|&i| log[i..].starts_with("{\n") || &log[i..] == "{").collect();
    starts.sort_unstable();
    starts.into_iter().rev().find_map(|start| {
        let mut values = serde_json::Deserializer::from_str(&log[start..]).into_iter::<serde_json::Value>();
        match values.next() {
            Some(Ok(value)) if value.is_object() => Some(value),
            _ => None,
        }
    })
}

/// The rows (minor and report) of a node's log: one for `run`, one per minor for `skew`.
pub fn rows(profile: &Profile, log: &str) -> Result<Vec<Row>, CollectError> {
    let value = last_json(log).ok_or(CollectError::NoReport)?;
    // The image's harness may be newer than this one: its report would be misread.
    crate::html::check_version("its JSON report", &value)?;
    match profile {
        Profile::Run { .. } => {
            let report = report::from_json(&value)?;
            let minor = minor(&report.kube, "kubernetes")?;
            Ok(vec![Row { minor, report }])
        }
        Profile::Skew => {
            let matrix = value.get("matrix").and_then(|m| m.as_array()).ok_or_else(|| CollectError::Field {
                field: "matrix".into(),
                problem: "missing, or not a list".into(),
            })?;
            let mut rows = Vec::with_capacity(matrix.len());
            for (i, entry) in matrix.iter().enumerate() {
                let report = entry.get("report").ok_or_else(|| CollectError::Field {
                    field: format!("matrix[{i}].report"),
                    problem: "missing".into(),
                })?;
                let report = report::from_json(report)?;
                let minor = minor(&report.kube, &format!("matrix[{i}].report.kubernetes"))?;
                rows.push(Row { minor, report });
            }
            Ok(rows)
        }
    }
}

fn minor(text: &str, field: &str) -> Result<Minor, CollectError> {
    text.parse::<Minor>().map_err(|e| CollectError::Field { field: field.to_string(), problem: e.to_string() })
}

/// The last `n` non-empty lines of a log, joined with " | ", for a failure's reason.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_report_is_found_among_the_table_and_progress_lines() {
        let log =
            "CRI conformance for Kubernetes 1.36\n{ not json\n{\n  \"a\": 1\n}\nPASS x\n{\n  \"b\": [1,\n 2]\n}\n";
        assert_eq!(last_json(log), Some(serde_json::json!({"b": [1, 2]})));
        assert_eq!(last_json("{\n  \"a\": {\n  \"c\": 1 }\n}"), Some(serde_json::json!({"a": {"c": 1}})));
        assert_eq!(last_json("no report here\n{ \"a\": 1 }\n"), None);
    }

    #[test]
    fn a_skew_log_gives_a_row_per_minor() {
        use crate::framework::{Outcome, RuntimeIdentity, TestReport};
        use crate::report::RunReport;
        use crate::surface::Surface;
        let row = |minor: Minor, outcome: Outcome| Row {
            minor,
            report: RunReport {
                kube: minor.to_string(),
                endpoint: "unix:///host-cri.sock".into(),
                runtime: RuntimeIdentity::default(),
                surface: Surface { probes: vec![], summary: "s".into() },
                tests: vec![TestReport {
                    area: "pods",
                    name: "run",
                    since: Minor::V1_30,
                    outcome,
                    duration: std::time::Duration::ZERO,
                }],
                duration: std::time::Duration::ZERO,
            },
        };
        let written = [row(Minor::V1_35, Outcome::Passed), row(Minor::V1_36, Outcome::Failed("no".into()))];
        let json = serde_json::to_string_pretty(&crate::skew::to_json(&written)).unwrap_or_default();
        let log = format!("skew: Kubernetes 1.35\nskew: Kubernetes 1.36\n{json}\n");
        let read = rows(&Profile::Skew, &log).expect("the matrix reads back");
        let minors: Vec<Minor> = read.iter().map(|r| r.minor).collect();
        assert_eq!(minors, [Minor::V1_35, Minor::V1_36]);
        assert!(read[0].serves() && !read[1].serves());
    }

    #[test]
    fn a_report_of_a_newer_harness_is_refused_naming_both_versions() {
        let log = "progress\n{\n  \"harness_version\": \"99.0.0\",\n  \"kind\": \"run\",\n  \"tests\": []\n}\n";
        let error = rows(&Profile::Skew, log).expect_err("a newer harness's report").to_string();
        assert!(error.contains("99.0.0") && error.contains(crate::html::HARNESS_VERSION), "{error}");
    }

    #[test]
    fn a_log_without_a_report_says_so_and_its_tail_is_kept() {
        let err = rows(&Profile::Skew, "lockstep-conformance: cannot connect\n").expect_err("no report");
        assert!(matches!(err, CollectError::NoReport));
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        let err = rows(&Profile::Skew, "{\n\"runtime\": null\n}\n").expect_err("no matrix").to_string();
        assert!(err.contains("`matrix`"), "{err}");
    }
}
