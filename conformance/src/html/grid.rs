//! The skew matrix as a grid: a row per runtime build, a column per Kubernetes minor, a cell per
//! verdict. Skew results fill whole rows; a `run` result fills the one cell of its runtime and
//! minor that no skew result filled.

use serde::Serialize;

use super::input::{Doc, Input};
use super::schema::{Counts, RunDoc};

#[derive(Debug, Serialize)]
pub struct Grid {
    pub minors: Vec<String>,
    pub rows: Vec<Row>,
    /// rows × minors: what the page's self-check counts.
    pub cell_count: usize,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub runtime: String,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub minor: String,
    /// serves, xfail (serves with known differences), fails, or none (not run).
    pub verdict: &'static str,
    pub counts: Counts,
    pub source: String,
    /// area/name: reason of each failed test.
    pub failures: Vec<String>,
}

/// None when no input holds a verdict for any minor.
pub fn build(inputs: &[Input]) -> Option<Grid> {
    let mut rows: Vec<(String, Vec<Cell>)> = Vec::new();
    let mut put = |runtime: String, cell: Cell, replace: bool| {
        let index = match rows.iter().position(|(r, _)| *r == runtime) {
            Some(i) => i,
            None => {
                rows.push((runtime, Vec::new()));
                rows.len() - 1
            }
        };
        let cells = &mut rows[index].1;
        match cells.iter().position(|c| c.minor == cell.minor) {
            Some(i) if replace => cells[i] = cell,
            Some(_) => {}
            None => cells.push(cell),
        }
    };
    for input in inputs {
        if let Doc::Skew(skew) = &input.doc {
            for row in &skew.matrix {
                let runtime = match (&skew.runtime, &row.report) {
                    (Some(identity), _) => identity.label(),
                    (None, Some(report)) => report.runtime.label(),
                    (None, None) => "unknown runtime".to_string(),
                };
                let failures = row.report.as_ref().map(failures).unwrap_or_default();
                put(runtime, cell(&row.kubernetes, row.summary, &input.source, failures), true);
            }
        }
    }
    for input in inputs {
        if let Doc::Run(run) = &input.doc {
            put(run.runtime.label(), cell(&run.kubernetes, run.summary, &input.source, failures(run)), false);
        }
    }
    if rows.is_empty() {
        return None;
    }
    let mut minors: Vec<String> = Vec::new();
    for (_, cells) in &rows {
        for c in cells {
            if !minors.contains(&c.minor) {
                minors.push(c.minor.clone());
            }
        }
    }
    minors.sort_by_key(|m| minor_key(m));
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|(runtime, cells)| Row {
            runtime,
            cells: minors
                .iter()
                .map(|m| cells.iter().find(|c| &c.minor == m).cloned().unwrap_or_else(|| absent(m)))
                .collect(),
        })
        .collect();
    Some(Grid { cell_count: rows.len() * minors.len(), minors, rows })
}

fn cell(minor: &str, counts: Counts, source: &str, failures: Vec<String>) -> Cell {
    let verdict = if counts.failed > 0 {
        "fails"
    } else if counts.expected_failures > 0 {
        "xfail"
    } else {
        "serves"
    };
    Cell { minor: minor.to_string(), verdict, counts, source: source.to_string(), failures }
}

fn absent(minor: &str) -> Cell {
    Cell {
        minor: minor.to_string(),
        verdict: "none",
        counts: Counts::default(),
        source: String::new(),
        failures: vec![],
    }
}

fn failures(run: &RunDoc) -> Vec<String> {
    run.tests.iter().filter(|t| t.outcome == "failed").map(|t| format!("{}/{}: {}", t.area, t.name, t.reason)).collect()
}

/// "1.9" before "1.10"; what does not parse sorts last, by its text.
fn minor_key(minor: &str) -> (u64, u64, String) {
    let mut parts = minor.split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor_n)) => (major, minor_n, String::new()),
        _ => (u64::MAX, u64::MAX, minor.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::html::input::parse;

    #[test]
    fn skew_rows_and_run_cells_make_one_grid() {
        let skew = parse(
            "skew.json",
            r#"{"runtime": {"name": "lockstep", "version": "0.1.0"}, "matrix": [
                {"kubernetes": "1.9", "summary": {"passed": 3}},
                {"kubernetes": "1.10", "summary": {"passed": 2, "failed": 1},
                 "report": {"tests": [{"area": "pods", "name": "x", "outcome": "failed", "reason": "boom"}]}}]}"#,
        )
        .unwrap();
        let same = parse(
            "run-same.json",
            r#"{"kubernetes": "1.10", "runtime": {"name": "lockstep", "version": "0.1.0"}, "summary": {"passed": 3}, "tests": []}"#,
        )
        .unwrap();
        let other = parse(
            "run-other.json",
            r#"{"kubernetes": "1.11", "runtime": {"name": "containerd", "version": "2"}, "summary": {"passed": 1, "expected_failures": 1}, "tests": []}"#,
        )
        .unwrap();
        let grid = build(&[same, skew, other]).unwrap();
        assert_eq!(grid.minors, ["1.9", "1.10", "1.11"]);
        assert_eq!(grid.cell_count, 6);
        let verdicts: Vec<Vec<&str>> = grid.rows.iter().map(|r| r.cells.iter().map(|c| c.verdict).collect()).collect();
        // The skew's verdict for 1.10 wins over the run's.
        assert_eq!(verdicts, [vec!["serves", "fails", "none"], vec!["none", "none", "xfail"]]);
        assert_eq!(grid.rows[0].cells[1].failures, ["pods/x: boom"]);
        assert!(build(&[]).is_none());
    }
}
