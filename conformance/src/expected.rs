//! Expected failures of a runtime we did not write (conformance/expected/<runtime>.toml): each
//! test that fails there is listed with the reason. A listed test that fails counts as
//! expected; one that passes is a failure of the list (it must be removed), and an entry that
//! names no test is refused — so the list stays exactly what fails, and hides no regression.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _};
use serde::Deserialize;

use crate::framework::{Outcome, Test, TestReport};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    fails: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// `area/name`, as the reports print it.
    test: String,
    /// Why it fails on that runtime.
    reason: String,
}

/// Test id → why it is expected to fail.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    by_test: BTreeMap<String, String>,
}

impl Expected {
    pub fn load(path: &Path, tests: &[Test]) -> anyhow::Result<Expected> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: File =
            toml::from_str(&text).with_context(|| format!("{} is not a list of expected failures", path.display()))?;
        let mut by_test = BTreeMap::new();
        for entry in file.fails {
            if !tests.iter().any(|t| t.id() == entry.test) {
                bail!("{}: no test is named {:?}; remove or rename the entry", path.display(), entry.test);
            }
            if entry.reason.trim().is_empty() {
                bail!("{}: {:?} has no reason", path.display(), entry.test);
            }
            by_test.insert(entry.test, entry.reason);
        }
        Ok(Expected { by_test })
    }

    /// Marks each report: a listed failure becomes expected; a listed pass becomes a failure.
    pub fn apply(&self, reports: &mut [TestReport]) {
        for report in reports {
            let id = format!("{}/{}", report.area, report.name);
            let Some(reason) = self.by_test.get(&id) else { continue };
            report.outcome = match std::mem::replace(&mut report.outcome, Outcome::Passed) {
                Outcome::Failed(actual) => Outcome::ExpectedFailure { expected: reason.clone(), actual },
                Outcome::Passed => Outcome::Failed(format!(
                    "listed as an expected failure ({reason}) but passed: remove it from the expected list"
                )),
                skipped => skipped,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_cri::Minor;
    use std::time::Duration;

    fn test(name: &'static str) -> Test {
        Test {
            area: "a",
            name,
            since: Minor::V1_30,
            needs: &[],
            timeout: Duration::ZERO,
            body: |_| Box::pin(async { Ok(()) }),
        }
    }

    fn report(name: &'static str, outcome: Outcome) -> TestReport {
        TestReport { area: "a", name, since: Minor::V1_30, outcome, duration: Duration::ZERO }
    }

    fn load(text: &str) -> anyhow::Result<Expected> {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), text).unwrap();
        Expected::load(tmp.path(), &[test("one"), test("two"), test("three")])
    }

    #[test]
    fn listed_failures_are_expected_and_listed_passes_fail() {
        let expected =
            load("[[fails]]\ntest = \"a/one\"\nreason = \"old\"\n[[fails]]\ntest = \"a/two\"\nreason = \"old too\"\n")
                .unwrap();
        let mut reports = vec![
            report("one", Outcome::Failed("boom".into())),
            report("two", Outcome::Passed),
            report("three", Outcome::Failed("real regression".into())),
        ];
        expected.apply(&mut reports);
        assert_eq!(reports[0].outcome, Outcome::ExpectedFailure { expected: "old".into(), actual: "boom".into() });
        assert!(matches!(&reports[1].outcome, Outcome::Failed(r) if r.contains("but passed")));
        assert_eq!(reports[2].outcome, Outcome::Failed("real regression".into()));
    }

    #[test]
    fn entries_must_name_a_test_and_a_reason() {
        let err = load("[[fails]]\ntest = \"a/gone\"\nreason = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("a/gone"), "{err}");
        let err = load("[[fails]]\ntest = \"a/one\"\nreason = \" \"\n").unwrap_err().to_string();
        assert!(err.contains("no reason"), "{err}");
    }
}
