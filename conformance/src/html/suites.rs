//! Per-suite results of each `run`: tests grouped by area, failures with their messages shown,
//! passes and skips folded away.

use serde::Serialize;

use super::input::{Doc, Input};
use super::schema::{Counts, TestDoc};

#[derive(Debug, Serialize)]
pub struct Run {
    pub source: String,
    pub runtime: String,
    pub kubernetes: String,
    pub endpoint: String,
    pub counts: Counts,
    pub duration_s: f64,
    pub areas: Vec<Area>,
}

#[derive(Debug, Serialize)]
pub struct Area {
    pub name: String,
    pub counts: Counts,
    pub failed: Vec<Test>,
    pub passed: Vec<Test>,
    /// Skipped tests and expected failures, with their reasons.
    pub other: Vec<Test>,
}

#[derive(Debug, Serialize)]
pub struct Test {
    pub name: String,
    pub outcome: String,
    pub since: String,
    pub reason: String,
    pub duration_ms: f64,
}

pub fn build(inputs: &[Input]) -> Vec<Run> {
    inputs
        .iter()
        .filter_map(|input| match &input.doc {
            Doc::Run(run) => Some(Run {
                source: input.source.clone(),
                runtime: run.runtime.label(),
                kubernetes: run.kubernetes.clone(),
                endpoint: run.endpoint.clone(),
                counts: run.summary,
                duration_s: run.duration_s,
                areas: areas(&run.tests),
            }),
            _ => None,
        })
        .collect()
}

/// The areas in the order their first test ran.
fn areas(tests: &[TestDoc]) -> Vec<Area> {
    let mut areas: Vec<Area> = Vec::new();
    for t in tests {
        let index = match areas.iter().position(|a| a.name == t.area) {
            Some(i) => i,
            None => {
                areas.push(Area {
                    name: t.area.clone(),
                    counts: Counts::default(),
                    failed: vec![],
                    passed: vec![],
                    other: vec![],
                });
                areas.len() - 1
            }
        };
        let area = &mut areas[index];
        let test = Test {
            name: t.name.clone(),
            outcome: t.outcome.clone(),
            since: t.since.clone(),
            reason: t.reason.clone(),
            duration_ms: t.duration_ms,
        };
        match t.outcome.as_str() {
            "passed" => {
                area.counts.passed += 1;
                area.passed.push(test);
            }
            "failed" => {
                area.counts.failed += 1;
                area.failed.push(test);
            }
            "expected-failure" => {
                area.counts.expected_failures += 1;
                area.other.push(test);
            }
            _ => {
                area.counts.skipped += 1;
                area.other.push(test);
            }
        }
    }
    areas
}
