//! `lockstep-conformance report --html` as a user runs it: a page from result files, and bad
//! input refused with exit 2 naming the file (and both versions, for a newer harness's file).
//! ci/report-check opens a page of real results in a headless browser.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lockstep-conformance");

fn report(dir: &Path, files: &[(&str, &str)]) -> (Output, std::path::PathBuf) {
    let html = dir.join("report.html");
    let mut args = vec!["report".to_string(), "--html".to_string(), html.display().to_string()];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        args.push(path.display().to_string());
    }
    (Command::new(BIN).args(&args).env("RUST_BACKTRACE", "0").output().unwrap(), html)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn results_of_an_older_harness_make_a_page() {
    let tmp = tempfile::tempdir().unwrap();
    // As `run --json` wrote before harness_version and kind.
    let run = r#"{"kubernetes": "1.36", "runtime": {"name": "lockstep", "version": "0.1.0"},
                  "summary": {"passed": 1}, "tests": [{"area": "a", "name": "t", "outcome": "passed"}]}"#;
    let (out, html) = report(tmp.path(), &[("run.json", run)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = std::fs::read_to_string(html).unwrap();
    assert!(page.contains("<td class=\"cell serves\" data-runtime=\"lockstep 0.1.0\" data-minor=\"1.36\""), "{page}");
}

#[test]
fn a_newer_harness_or_a_broken_file_is_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let newer = r#"{"harness_version": "42.0.0", "kind": "skew", "matrix": []}"#;
    let (out, html) = report(tmp.path(), &[("newer.json", newer)]);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{message}");
    assert!(message.contains("newer.json") && message.contains("42.0.0"), "{message}");
    assert!(message.contains(env!("CARGO_PKG_VERSION")), "{message}");
    assert!(!html.exists());

    let (out, _) =
        report(tmp.path(), &[("ok.json", r#"{"kind": "bench", "benches": []}"#), ("cut.json", "{\"kind\": ")]);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{message}");
    assert!(message.contains("cut.json") && message.contains("not valid JSON"), "{message}");

    let (out, _) = report(tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
