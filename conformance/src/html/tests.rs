//! The whole page rendered from small hand-made results: the grid's cells, a failure shown
//! outside any fold with its message, passes folded, an SVG chart per benchmark, reliability.

use super::{parse, render, Input};

fn inputs() -> Vec<Input> {
    let skew = r#"{"harness_version": "0.1.0", "kind": "skew",
        "runtime": {"name": "lockstep", "version": "0.1.0+k8s.1.36"},
        "matrix": [
            {"kubernetes": "1.35", "serves": true, "summary": {"passed": 4, "skipped": 1}},
            {"kubernetes": "1.36", "serves": false, "summary": {"passed": 3, "failed": 1},
             "report": {"tests": [{"area": "pods", "name": "x", "outcome": "failed", "reason": "boom"}]}}]}"#;
    let run = r#"{"kind": "run", "kubernetes": "1.36", "endpoint": "unix:///c.sock",
        "runtime": {"name": "containerd", "version": "2.0"},
        "summary": {"passed": 2, "failed": 1, "skipped": 1},
        "tests": [
            {"area": "pods", "name": "runs <a> pod", "since": "1.30", "outcome": "passed", "duration_ms": 12.5},
            {"area": "pods", "name": "stops it", "since": "1.30", "outcome": "passed"},
            {"area": "images", "name": "pulls", "since": "1.30", "outcome": "failed", "reason": "registry said <no> & left"},
            {"area": "images", "name": "streams", "since": "1.36", "outcome": "skipped", "reason": "not in 1.35"}]}"#;
    let bench = r#"{"kind": "bench", "iterations": 5, "concurrency": 1, "benches": [
        {"bench": "runtime-info round trips", "runtimes": [
            {"runtime": "lockstep", "operations": [{"op": "Version", "ms": {"n": 5, "p50": 1.2, "p99": 1.9}},
                                                   {"op": "Status", "ms": {"n": 5, "p50": 2.0, "p99": 2.8}}]},
            {"runtime": "containerd", "operations": [{"op": "Version", "ms": {"n": 5, "p50": 0.9, "p99": 1.4}},
                                                     {"op": "Status", "ms": {"n": 5, "p50": 1.1, "p99": 1.6}}]}]},
        {"bench": "pod sandboxes", "runtimes": [
            {"runtime": "lockstep", "operations": [{"op": "RunPodSandbox", "ms": {"n": 5, "p50": 150, "p99": 210}}]}]}]}"#;
    let chaos = r#"{"kind": "chaos", "runtime": "lockstep 0.1.0", "cycles_done": 40, "accounting":
        [{"resource": "mounts", "before": 3, "after": 4, "leaked": ["/run/x"]}],
        "rss_by_cycles": [[0, 40000], [20, 41000], [40, 40500]], "leaks": 1,
        "chaos": {"seed": 15, "kills": 10, "verified": 10}, "passed": false}"#;
    [("skew.json", skew), ("run.json", run), ("bench.json", bench), ("chaos.json", chaos)]
        .into_iter()
        .map(|(name, text)| parse(name, text).unwrap())
        .collect()
}

#[test]
fn the_page_shows_every_result() {
    let page = render(&inputs()).unwrap();
    // Two rows (lockstep from the skew, containerd from the run) by two minors.
    assert_eq!(page.matches("<td class=\"cell ").count(), 4, "{page}");
    assert!(page.contains("data-cells=\"4\""));
    assert!(page.contains("<td class=\"cell fails\" data-runtime=\"lockstep 0.1.0+k8s.1.36\" data-minor=\"1.36\""));
    assert!(page.contains("<td class=\"cell none\" data-runtime=\"containerd 2.0\" data-minor=\"1.35\""));
    // The failure is shown, escaped, outside every <details>; the passes are folded.
    let failure = page.find("registry said &lt;no&gt; &amp; left").expect("the failure's message");
    let before = &page[..failure];
    assert_eq!(before.matches("<details").count(), before.matches("</details>").count(), "inside a fold");
    assert!(page.contains("<details class=\"passed\"><summary>2 passed</summary>"));
    assert!(page.contains("runs &lt;a&gt; pod"));
    // A chart per benchmark, two bars (p50, p99) per operation and runtime.
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 2);
    assert!(page.contains("data-bars=\"8\"") && page.contains("data-bars=\"2\""));
    assert_eq!(page.matches("<rect class=\"bar ").count(), 10);
    // Reliability figures and the RSS line.
    assert!(page.contains("chaos of lockstep 0.1.0"));
    assert!(page.contains("<polyline points=\""));
    // minijinja escapes / too: &#x2f;.
    assert!(page.contains("<code>&#x2f;run&#x2f;x</code>"), "{page}");
    // Self-contained: nothing fetched.
    for fetch in ["src=\"http", "href=\"http", "<link", "url(", "@import"] {
        assert!(!page.contains(fetch), "{fetch}");
    }
    assert!(page.contains("Content-Security-Policy"));
    // The style and script went in unescaped.
    assert!(page.contains("problems.length ? problems.join"));
    assert!(!page.contains("&gt;= 0 &amp;&amp;"));
}

#[test]
fn sections_without_results_are_left_out() {
    let only_bench: Vec<Input> = inputs().into_iter().filter(|i| i.source == "bench.json").collect();
    let page = render(&only_bench).unwrap();
    assert!(!page.contains("<table class=\"grid\""));
    assert!(!page.contains("id=\"suites\"") && !page.contains("id=\"reliability\""));
    assert!(page.contains("id=\"latency\""));
}
