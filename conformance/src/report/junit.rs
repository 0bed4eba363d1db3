//! JUnit XML, as CI systems read it: one testsuite per area, a testcase per test, with
//! <failure> or <skipped> and the reason; the runtime's identity as properties.

use std::fmt::Write as _;

use super::RunReport;
use crate::framework::Outcome;

pub fn to_junit(report: &RunReport) -> String {
    let c = report.counts();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"lockstep-conformance {}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        escape(&report.kube),
        report.tests.len(),
        c.failed,
        c.skipped + c.expected_failures,
        report.duration.as_secs_f64()
    );
    let mut areas: Vec<&str> = report.tests.iter().map(|t| t.area).collect();
    areas.dedup();
    let mut seen = std::collections::BTreeSet::new();
    for area in areas.into_iter().filter(|a| seen.insert(*a)) {
        let tests: Vec<_> = report.tests.iter().filter(|t| t.area == area).collect();
        let failures = tests.iter().filter(|t| matches!(t.outcome, Outcome::Failed(_))).count();
        let skipped =
            tests.iter().filter(|t| matches!(t.outcome, Outcome::Skipped(_) | Outcome::ExpectedFailure { .. })).count();
        let time: f64 = tests.iter().map(|t| t.duration.as_secs_f64()).sum();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time:.3}\">",
            escape(area),
            tests.len()
        );
        let _ = writeln!(s, "    <properties>");
        for (name, value) in [
            ("kubernetes", report.kube.as_str()),
            ("endpoint", report.endpoint.as_str()),
            ("runtime", report.runtime.name.as_str()),
            ("runtime_version", report.runtime.version.as_str()),
            ("rpc_surface", report.surface.summary.as_str()),
        ] {
            let _ = writeln!(s, "      <property name=\"{name}\" value=\"{}\"/>", escape(value));
        }
        let _ = writeln!(s, "    </properties>");
        for t in tests {
            let _ = write!(
                s,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                escape(area),
                escape(t.name),
                t.duration.as_secs_f64()
            );
            match &t.outcome {
                Outcome::Passed => s.push_str("/>\n"),
                Outcome::Failed(reason) => {
                    let _ = writeln!(
                        s,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        escape(reason),
                        escape(reason)
                    );
                }
                Outcome::Skipped(reason) => {
                    let _ = writeln!(s, ">\n      <skipped message=\"{}\"/>\n    </testcase>", escape(reason));
                }
                // CI systems know no "expected failure": it is reported as skipped, with both reasons.
                outcome @ Outcome::ExpectedFailure { .. } => {
                    let _ =
                        writeln!(s, ">\n      <skipped message=\"{}\"/>\n    </testcase>", escape(&outcome.reason()));
                }
            }
        }
        let _ = writeln!(s, "  </testsuite>");
    }
    s.push_str("</testsuites>\n");
    s
}

/// Escapes text for XML attributes and content; drops characters XML 1.0 cannot carry.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{RuntimeIdentity, TestReport};
    use crate::surface::Surface;
    use lockstep_cri::Minor;
    use std::time::Duration;

    #[test]
    fn failures_and_skips_carry_their_escaped_reasons() {
        let report = RunReport {
            kube: "1.36".into(),
            endpoint: "unix:///x".into(),
            runtime: RuntimeIdentity::default(),
            surface: Surface { probes: vec![], summary: "s".into() },
            tests: vec![
                TestReport {
                    area: "a",
                    name: "ok",
                    since: Minor::V1_30,
                    outcome: Outcome::Passed,
                    duration: Duration::ZERO,
                },
                TestReport {
                    area: "a",
                    name: "bad <one>",
                    since: Minor::V1_30,
                    outcome: Outcome::Failed("got \"x\" & \u{1}y".into()),
                    duration: Duration::ZERO,
                },
                TestReport {
                    area: "b",
                    name: "later",
                    since: Minor::V1_36,
                    outcome: Outcome::Skipped("no".into()),
                    duration: Duration::ZERO,
                },
            ],
            duration: Duration::from_millis(1500),
        };
        let xml = to_junit(&report);
        assert!(xml.contains("tests=\"3\" failures=\"1\" skipped=\"1\""), "{xml}");
        assert!(xml.contains("name=\"bad &lt;one&gt;\""), "{xml}");
        assert!(xml.contains("<failure message=\"got &quot;x&quot; &amp; y\">"), "{xml}");
        assert!(xml.contains("<testsuite name=\"b\" tests=\"1\" failures=\"0\" skipped=\"1\""), "{xml}");
        assert_eq!(xml.matches("<testsuite ").count(), 2);
    }
}
