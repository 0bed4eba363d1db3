//! Judges a run of critest (the upstream CRI validation suite) by a runtime's expected list,
//! conformance/expected/critest-<runtime>.toml: every spec that failed or was skipped must be
//! listed with its reason, and every listed spec must have failed (or been skipped) as listed.
//! A spec that starts passing, or stops being skipped, therefore fails the check too, so the
//! list stays exactly what critest finds. Reads critest's Ginkgo JSON report; runs nothing.

use std::path::Path;

use anyhow::{bail, Context as _};
use serde::Deserialize;

/// What a spec came to, as Ginkgo reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Passed,
    Failed,
    Skipped,
}

/// One spec of the report: its full name ("[k8s.io] Idempotence / StopPodSandbox / should …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub state: State,
    /// The failure or skip message, first line; "" when it passed.
    pub message: String,
    /// file:line of the failure, when there is one.
    pub location: String,
}

/// The specs of a critest JSON report (`-ginkgo.json-report`, or critest-env's `--report`).
pub fn read_report(path: &Path) -> anyhow::Result<Vec<Spec>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_report(&text).with_context(|| format!("{} is not a critest JSON report", path.display()))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SuiteReport {
    spec_reports: Vec<SpecReport>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SpecReport {
    #[serde(default)]
    container_hierarchy_texts: Option<Vec<String>>,
    #[serde(default)]
    leaf_node_text: String,
    leaf_node_type: String,
    state: String,
    #[serde(default)]
    failure: Option<Failure>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Failure {
    #[serde(default)]
    message: String,
    #[serde(default)]
    location: Option<Location>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Location {
    file_name: String,
    line_number: u32,
}

pub fn parse_report(text: &str) -> anyhow::Result<Vec<Spec>> {
    let suites: Vec<SuiteReport> = serde_json::from_str(text)?;
    let mut specs = Vec::new();
    for report in suites.into_iter().flat_map(|s| s.spec_reports) {
        // Suite set-up nodes are not specs; their failure fails every spec anyway.
        if report.leaf_node_type != "It" {
            continue;
        }
        let state = match report.state.as_str() {
            "passed" => State::Passed,
            "skipped" | "pending" => State::Skipped,
            // failed, panicked, interrupted, aborted, timedout.
            _ => State::Failed,
        };
        let mut parts = report.container_hierarchy_texts.unwrap_or_default();
        parts.push(report.leaf_node_text);
        let (message, location) = match (state, report.failure) {
            (State::Passed, _) | (_, None) => (String::new(), String::new()),
            (_, Some(f)) => (
                f.message.lines().next().unwrap_or_default().trim().to_string(),
                f.location.map(|l| format!("{}:{}", l.file_name, l.line_number)).unwrap_or_default(),
            ),
        };
        specs.push(Spec { name: parts.join(" / "), state, message, location });
    }
    Ok(specs)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    fails: Vec<Entry>,
    #[serde(default)]
    skips: Vec<Entry>,
}

/// One spec by its full name, or every spec whose name starts with `prefix`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(default)]
    spec: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    reason: String,
}

impl Entry {
    fn matches(&self, name: &str) -> bool {
        match (&self.spec, &self.prefix) {
            (Some(spec), _) => spec == name,
            (None, Some(prefix)) => name.starts_with(prefix.as_str()),
            (None, None) => false,
        }
    }

    fn label(&self) -> &str {
        self.spec.as_deref().or(self.prefix.as_deref()).unwrap_or_default()
    }
}

/// A runtime's expected critest failures and skips.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    fails: Vec<Entry>,
    skips: Vec<Entry>,
}

impl Expected {
    pub fn load(path: &Path) -> anyhow::Result<Expected> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Expected::parse(&text).with_context(|| format!("{} is not a list of expected critest outcomes", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Expected> {
        let file: File = toml::from_str(text)?;
        for entry in file.fails.iter().chain(&file.skips) {
            if entry.spec.is_some() == entry.prefix.is_some() {
                bail!("an entry needs exactly one of spec and prefix: {entry:?}");
            }
            if entry.reason.trim().is_empty() {
                bail!("{:?} has no reason", entry.label());
            }
        }
        Ok(Expected { fails: file.fails, skips: file.skips })
    }
}

/// How a report measures up to the expected list.
#[derive(Debug, Default)]
pub struct Verdict {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Each difference from the list, one line each; empty when the report is as listed.
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn judge(specs: &[Spec], expected: &Expected) -> Verdict {
    let mut verdict = Verdict::default();
    for spec in specs {
        match spec.state {
            State::Passed => verdict.passed += 1,
            State::Failed => verdict.failed += 1,
            State::Skipped => verdict.skipped += 1,
        }
        let listed_fail = expected.fails.iter().find(|e| e.matches(&spec.name));
        let listed_skip = expected.skips.iter().find(|e| e.matches(&spec.name));
        let problem = match (spec.state, listed_fail, listed_skip) {
            (State::Failed, Some(_), _) | (State::Skipped, _, Some(_)) | (State::Passed, None, None) => None,
            (state, Some(e), _) => {
                Some(format!("listed as failing ({}) but {}: {}", e.reason, describe(state), spec.name))
            }
            (state, None, Some(e)) => {
                Some(format!("listed as skipped ({}) but {}: {}", e.reason, describe(state), spec.name))
            }
            (State::Failed, None, None) => Some(format!("failed, not listed: {}", spec.name)),
            (State::Skipped, None, None) => Some(format!("skipped, not listed: {}", spec.name)),
        };
        if let Some(mut problem) = problem {
            if !spec.message.is_empty() {
                problem.push_str(&format!("\n      {} (at {})", spec.message, spec.location));
            }
            verdict.problems.push(problem);
        }
    }
    for (kind, entries) in [("fails", &expected.fails), ("skips", &expected.skips)] {
        for entry in entries.iter().filter(|e| !specs.iter().any(|s| e.matches(&s.name))) {
            verdict.problems.push(format!("{kind} entry names no spec of this critest: {:?}", entry.label()));
        }
    }
    verdict
}

fn describe(state: State) -> &'static str {
    match state {
        State::Passed => "passed: remove it from the list",
        State::Failed => "failed",
        State::Skipped => "was skipped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(specs: &[(&[&str], &str, &str)]) -> String {
        let reports: Vec<serde_json::Value> = std::iter::once(serde_json::json!({
            "LeafNodeType": "BeforeSuite", "State": "passed", "LeafNodeText": ""
        }))
        .chain(specs.iter().map(|(path, leaf, state)| {
            serde_json::json!({
                "ContainerHierarchyTexts": path, "LeafNodeText": leaf, "LeafNodeType": "It", "State": state,
                "Failure": {"Message": format!("{leaf} went wrong\nmore"), "Location": {"FileName": "v.go", "LineNumber": 7}}
            })
        }))
        .collect();
        serde_json::json!([{ "SuiteDescription": "CRI validation", "SpecReports": reports }]).to_string()
    }

    fn specs() -> Vec<Spec> {
        parse_report(&report(&[
            (&["[k8s.io] Idempotence", "StopPodSandbox"], "should not return an error if not found", "passed"),
            (&["[k8s.io] Streaming", "runtime"], "should support exec", "failed"),
            (&["[k8s.io] Streaming", "runtime"], "should support attach", "failed"),
            (&["[k8s.io] AppArmor"], "should enforce", "skipped"),
        ]))
        .unwrap()
    }

    const LISTED: &str = r#"
        [[fails]]
        prefix = "[k8s.io] Streaming / "
        reason = "streaming is not built yet"
        [[skips]]
        spec = "[k8s.io] AppArmor / should enforce"
        reason = "AppArmor is off on these kernels"
    "#;

    #[test]
    fn specs_are_named_by_their_whole_path_and_set_up_nodes_left_out() {
        let specs = specs();
        assert_eq!(specs.len(), 4);
        assert_eq!(specs[0].name, "[k8s.io] Idempotence / StopPodSandbox / should not return an error if not found");
        assert_eq!((specs[1].state, specs[1].message.as_str()), (State::Failed, "should support exec went wrong"));
        assert_eq!(specs[1].location, "v.go:7");
        assert_eq!((specs[0].state, specs[0].message.as_str()), (State::Passed, ""));
    }

    #[test]
    fn a_report_exactly_as_listed_passes() {
        let verdict = judge(&specs(), &Expected::parse(LISTED).unwrap());
        assert!(verdict.ok(), "{:?}", verdict.problems);
        assert_eq!((verdict.passed, verdict.failed, verdict.skipped), (1, 2, 1));
    }

    #[test]
    fn an_unlisted_failure_or_skip_fails() {
        let verdict = judge(&specs(), &Expected::default());
        assert_eq!(verdict.problems.len(), 3, "{:?}", verdict.problems);
        assert!(
            verdict.problems[0].starts_with("failed, not listed: [k8s.io] Streaming / runtime / should support exec")
        );
        assert!(verdict.problems[0].contains("went wrong (at v.go:7)"));
        assert!(verdict.problems[2].starts_with("skipped, not listed: [k8s.io] AppArmor"));
    }

    #[test]
    fn a_listed_spec_that_passes_or_changes_kind_fails() {
        let listed = format!(
            "{LISTED}\n[[fails]]\nspec = \"[k8s.io] Idempotence / StopPodSandbox / should not return an error if not found\"\nreason = \"containerd answers NotFound\"\n"
        );
        let verdict = judge(&specs(), &Expected::parse(&listed).unwrap());
        assert_eq!(verdict.problems.len(), 1, "{:?}", verdict.problems);
        assert!(verdict.problems[0].contains("but passed: remove it from the list"), "{}", verdict.problems[0]);

        let swapped =
            LISTED.replace("[[fails]]", "[[tmp]]").replace("[[skips]]", "[[fails]]").replace("[[tmp]]", "[[skips]]");
        let verdict = judge(&specs(), &Expected::parse(&swapped).unwrap());
        assert!(verdict.problems.iter().any(|p| p.starts_with("listed as skipped") && p.contains("failed")));
        assert!(verdict.problems.iter().any(|p| p.starts_with("listed as failing") && p.contains("was skipped")));
    }

    #[test]
    fn an_entry_that_names_no_spec_fails() {
        let listed = format!("{LISTED}\n[[skips]]\nprefix = \"[k8s.io] Gone / \"\nreason = \"was removed upstream\"\n");
        let verdict = judge(&specs(), &Expected::parse(&listed).unwrap());
        assert_eq!(
            verdict.problems,
            vec!["skips entry names no spec of this critest: \"[k8s.io] Gone / \"".to_string()]
        );
    }

    #[test]
    fn entries_need_one_name_and_a_reason() {
        let both = "[[fails]]\nspec = \"a\"\nprefix = \"a\"\nreason = \"r\"\n";
        assert!(Expected::parse(both).is_err());
        let neither = "[[fails]]\nreason = \"r\"\n";
        assert!(Expected::parse(neither).is_err());
        let no_reason = "[[skips]]\nspec = \"a\"\nreason = \" \"\n";
        assert!(Expected::parse(no_reason).is_err());
        assert!(Expected::parse("[[fails]]\nspec = \"a\"\nreason = \"r\"\nwhy = \"x\"\n").is_err(), "unknown keys");
    }
}
