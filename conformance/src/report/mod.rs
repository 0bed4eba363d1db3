//! A run's results and the three ways they are shown: a table for people, JUnit XML for CI
//! systems, JSON for tools.

mod json;
pub(crate) mod junit;
mod table;

use std::time::Duration;

use crate::framework::{Outcome, RuntimeIdentity, TestReport};
use crate::surface::Surface;

pub use json::{from_json, to_json, ReadError};
pub use junit::to_junit;
pub use table::to_table;

/// Everything a run found out.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub kube: String,
    pub endpoint: String,
    pub runtime: RuntimeIdentity,
    pub surface: Surface,
    pub tests: Vec<TestReport>,
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub expected_failures: usize,
}

impl RunReport {
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for t in &self.tests {
            match t.outcome {
                Outcome::Passed => counts.passed += 1,
                Outcome::Failed(_) => counts.failed += 1,
                Outcome::Skipped(_) => counts.skipped += 1,
                Outcome::ExpectedFailure { .. } => counts.expected_failures += 1,
            }
        }
        counts
    }
}
