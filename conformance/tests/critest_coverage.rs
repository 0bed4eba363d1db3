//! docs/critest-coverage.md kept honest: every spec that critest's dry run lists has a row, every
//! row names a spec critest has, and every harness test a row names is one that
//! `lockstep-conformance list` lists. The dry run needs ../shared/anchors/bin/critest (relative
//! to the repository); without it that test prints why it checked nothing and passes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lockstep-conformance");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("conformance/ has a parent").to_path_buf()
}

fn doc_path() -> PathBuf {
    repo().join("docs/critest-coverage.md")
}

/// One row of the doc's tables.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    line: usize,
    spec: String,
    /// The harness tests named; empty for `none`.
    tests: Vec<String>,
    note: String,
}

/// The cells of a table row, split on `|` but not on `\|` (which stands for a `|`).
fn cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = line.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    if cells.last().is_some_and(|c| c.trim().is_empty()) {
        cells.pop();
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The text inside one pair of backticks, or None.
fn code(cell: &str) -> Option<String> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.is_empty() && !inner.contains('`')).then(|| inner.to_string())
}

/// The rows of every table whose first cell is a spec in backticks; a malformed one is an error
/// naming its line.
fn parse(text: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if !line.starts_with("| `") {
            continue;
        }
        let cells = cells(line);
        if cells.len() != 3 {
            return Err(format!("line {n}: {} cells, not 3 (spec | tests or none | notes)", cells.len()));
        }
        let spec = code(&cells[0]).ok_or_else(|| format!("line {n}: the spec is not one name in backticks"))?;
        let note = cells[2].clone();
        let tests = if cells[1] == "none" {
            if note.is_empty() {
                return Err(format!("line {n}: {spec:?} maps to none but the notes do not say why"));
            }
            Vec::new()
        } else {
            cells[1]
                .split("<br>")
                .map(|t| code(t.trim()).ok_or_else(|| format!("line {n}: {t:?} is not one test name in backticks")))
                .collect::<Result<Vec<_>, _>>()?
        };
        rows.push(Row { line: n, spec, tests, note });
    }
    Ok(rows)
}

/// Every test of every minor, as `area/name`.
fn harness_tests() -> BTreeSet<String> {
    let out = Command::new(BIN).arg("list").output().expect("lockstep-conformance runs");
    assert!(out.status.success(), "list failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.rsplit_once("  (since ").map_or(l, |(id, _)| id).to_string())
        .collect()
}

/// The specs of critest's dry run, named as critest-env's summary names them (read by the
/// parser that `lockstep-conformance critest` judges real runs with).
fn critest_specs(critest: &Path) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("specs.json");
    let out = Command::new(critest)
        .arg("--ginkgo.dry-run")
        .arg(format!("--ginkgo.json-report={}", report.display()))
        .arg("--ginkgo.no-color")
        .current_dir(dir.path())
        .output()
        .expect("critest runs");
    assert!(out.status.success(), "critest's dry run failed: {}", String::from_utf8_lossy(&out.stdout));
    let specs = lockstep_conformance::critest::read_report(&report).unwrap_or_else(|e| panic!("{e:#}"));
    specs.into_iter().map(|s| s.name).collect()
}

fn doc_rows() -> Vec<Row> {
    let text = std::fs::read_to_string(doc_path()).expect("docs/critest-coverage.md is readable");
    parse(&text).unwrap_or_else(|e| panic!("docs/critest-coverage.md: {e}"))
}

#[test]
fn the_doc_names_only_tests_the_harness_has() {
    let rows = doc_rows();
    assert!(rows.len() >= 100, "only {} rows: is the table format still what parse() reads?", rows.len());
    let known = harness_tests();
    for id in &known {
        assert!(!id.contains('`') && !id.contains('|'), "{id:?} cannot be written in the doc's tables");
    }
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for row in &rows {
        if !seen.insert(row.spec.clone()) {
            problems.push(format!("line {}: {:?} has a second row", row.line, row.spec));
        }
        for test in &row.tests {
            if !known.contains(test) {
                problems.push(format!("line {}: no harness test is named {test:?}", row.line));
            }
        }
    }
    assert!(problems.is_empty(), "docs/critest-coverage.md:\n{}", problems.join("\n"));
}

/// What the doc and critest's dry run disagree on (specs without a row, rows naming no spec),
/// or None when there is no critest binary at `critest` to ask.
fn disagreements(critest: &Path) -> Option<(Vec<String>, Vec<String>)> {
    if !critest.exists() {
        return None;
    }
    let specs = critest_specs(critest);
    assert!(specs.len() >= 100, "critest's dry run listed only {} specs", specs.len());
    let rows: BTreeSet<String> = doc_rows().into_iter().map(|r| r.spec).collect();
    Some((specs.difference(&rows).cloned().collect(), rows.difference(&specs).cloned().collect()))
}

#[test]
fn every_critest_spec_has_a_row_and_every_row_a_spec() {
    let critest = repo().join("../shared/anchors/bin/critest");
    let Some((missing, stale)) = disagreements(&critest) else {
        eprintln!(
            "skipped: {} is not on this machine, so critest's spec list is unknown; the doc's harness test names \
             are still checked by the_doc_names_only_tests_the_harness_has",
            critest.display()
        );
        return;
    };
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/critest-coverage.md and {} disagree.\nspecs without a row:\n  {}\nrows naming no spec:\n  {}",
        critest.display(),
        missing.join("\n  "),
        stale.join("\n  ")
    );
}

#[test]
fn without_critest_the_spec_check_is_skipped() {
    assert!(disagreements(&repo().join("no-such-dir/critest")).is_none());
}

#[test]
fn rows_are_read_as_the_doc_describes_and_bad_ones_refused() {
    let text = "\
# t
| critest spec | lockstep-conformance | notes |
|---|---|---|
| `[k8s.io] A / has Uid\\|Username` | `a/one`<br>`b/two, with a comma` | why \\| not |
| `[k8s.io] B / bench` | none | a benchmark |
text | `not a row` |
";
    let rows = parse(text).unwrap();
    assert_eq!(
        rows,
        vec![
            Row {
                line: 4,
                spec: "[k8s.io] A / has Uid|Username".into(),
                tests: vec!["a/one".into(), "b/two, with a comma".into()],
                note: "why | not".into(),
            },
            Row { line: 5, spec: "[k8s.io] B / bench".into(), tests: vec![], note: "a benchmark".into() },
        ]
    );
    for (bad, says) in [
        ("| `[k8s.io] C` | none |  |", "do not say why"),
        ("| `[k8s.io] C` | a/one | x |", "not one test name"),
        ("| `[k8s.io] C` | `a/one` |", "2 cells"),
        ("| `[k8s.io] C`x | `a/one` | x |", "not one name"),
    ] {
        let err = parse(bad).unwrap_err();
        assert!(err.contains(says) && err.starts_with("line 1"), "{bad}: {err}");
    }
}
