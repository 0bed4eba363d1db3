//! lockstep-conformance as CI uses it: against an embedded lockstepd, against a daemon that is
//! not ready (failures are reported and exit 1), and bad input (exit 2 with a clear message).

use std::process::{Command, Output};

use lockstep_cri::Minor;
use lockstep_testkit::{Launch, Lockstepd, Program};

const BIN: &str = env!("CARGO_BIN_EXE_lockstep-conformance");

fn conformance(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("RUST_BACKTRACE", "0").output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The table's verdict (PASS, FAIL, SKIP, XFAIL) for the test whose id is `id`.
fn verdict<'a>(table: &'a str, id: &str) -> &'a str {
    let line = table.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("{id} not in:\n{table}"));
    line.split_whitespace().next().unwrap_or("")
}

/// A lockstepd pinned to `kube`, started as the embedded daemon is, with `config` as its file.
async fn daemon(kube: &str, config: &str) -> Lockstepd {
    let minor: Minor = kube.parse().unwrap();
    Lockstepd::start(Program::conformance_daemon(BIN, minor), Launch::default(), config).await.unwrap()
}

#[test]
fn an_embedded_lockstepd_passes_and_reports_in_three_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let junit = tmp.path().join("report.xml");
    let json = tmp.path().join("report.json");
    // Only what lockstepd has not built yet may fail, as its expected list says.
    let expected = concat!(env!("CARGO_MANIFEST_DIR"), "/expected/lockstep.toml");
    let out = conformance(&[
        "run",
        "--kube",
        "1.33",
        "--expected",
        expected,
        "--junit",
        junit.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("lockstep 0.1.0+k8s.1.33"), "{stdout}");
    assert_eq!(verdict(&stdout, "runtime-info/Version answers what the kubelet requires"), "PASS");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testsuite name=\"runtime-info\"") && xml.contains("failures=\"0\""), "{xml}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["kubernetes"], "1.33");
    assert_eq!(report["runtime"]["pinned_minor"], "1.33");
    assert_eq!(report["summary"]["failed"], 0);
    assert!(report["summary"]["passed"].as_u64().unwrap() >= 6);
}

#[tokio::test]
async fn a_runtime_that_is_not_ready_fails_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = daemon("1.36", "[[runtime.handlers]]\nname = \"ghost\"\npath = \"/nonexistent/oci-runtime\"\n").await;
    let junit = tmp.path().join("report.xml");
    let out =
        conformance(&["run", "--kube", "1.36", "--endpoint", &daemon.endpoint(), "--junit", junit.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(verdict(&stdout, "runtime-info/Status says the runtime is ready"), "FAIL");
    assert!(stdout.contains("NoOCIRuntime"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<failure message=") && xml.contains("ghost"), "{xml}");
}

#[tokio::test]
async fn a_runtime_pinned_to_another_minor_is_not_judged_by_its_lock() {
    let daemon = daemon("1.35", "").await;
    let out = conformance(&["run", "--kube", "1.36", "--endpoint", &daemon.endpoint(), "--focus", "later minors"]);
    let stdout = text(&out.stdout);
    assert_eq!(verdict(&stdout, "runtime-info/RPCs of later minors"), "SKIP");
    assert!(stdout.contains("pinned to 1.35"), "{stdout}");
    assert!(stdout.contains("older than Kubernetes 1.36"), "the surface probe tells: {stdout}");
}

#[test]
fn focus_and_skip_select_tests() {
    let out = conformance(&["list", "--kube", "1.36"]);
    let all = text(&out.stdout).lines().count();
    assert!(all >= 7, "{}", text(&out.stdout));
    let out = conformance(&["run", "--kube", "1.36", "--focus", "^runtime-info/.*Status", "--skip", "verbose"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("Status says the runtime is ready")
            && !stdout.contains("verbose")
            && !stdout.contains("Version")
    );
}

#[test]
fn bad_input_is_refused_with_exit_code_2() {
    let cases: [(&[&str], &str); 4] = [
        (&["run", "--kube", "1.29"], "unknown Kubernetes minor"),
        (&["run", "--kube", "1.36", "--endpoint", "unix:///nonexistent/cri.sock"], "cannot connect"),
        (&["run", "--kube", "1.36", "--endpoint", "tcp://127.0.0.1:1"], "not a unix socket"),
        (&["run", "--kube", "1.36", "--focus", "(unclosed"], "--focus"),
    ];
    for (args, expected) in cases {
        let out = conformance(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn skew_prints_a_row_per_minor_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("skew.json");
    let out = conformance(&["skew", "--kube", "1.35", "--focus", "^runtime-info/", "--json", json.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for minor in 30..=37 {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("1.{minor} "))), "no row for 1.{minor}: {stdout}");
    }
    let matrix: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(matrix["matrix"].as_array().unwrap().len(), 8);
    assert_eq!(matrix["runtime"]["pinned_minor"], "1.35");
}

#[test]
fn bench_prints_percentiles_for_each_operation() {
    let out = conformance(&["bench", "--iterations", "5", "--focus", "runtime-info"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let version = stdout.lines().find(|l| l.trim_start().starts_with("Version")).expect(&stdout);
    let columns: Vec<&str> = version.split_whitespace().collect();
    assert_eq!(columns[1], "lockstep");
    assert_eq!(columns[2], "5", "n = iterations: {version}");
    assert!(text(&out.stderr).contains("5/5"), "progress on stderr");
}

/// The density and concurrency benchmarks (issue 19) at a small size, against an embedded
/// lockstepd: each scenario reports its series with the sizes asked for, the burst its rate, the
/// density its idle CPU and the restarted daemon's start-up.
#[test]
fn density_benchmarks_run_at_the_sizes_asked_for() {
    let out = conformance(&[
        "bench",
        "--focus",
        "^burst|^density|ListContainers with",
        "--iterations",
        "3",
        "--burst-pods",
        "3",
        "--burst-concurrency",
        "2",
        "--density-pods",
        "2",
        "--relist-secs",
        "2",
        "--idle-secs",
        "1",
        "--listed-containers",
        "4",
        "--restarts",
        "1",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    // The columns after an operation's name: runtime, n, p50, …
    let after = |op: &str| -> Vec<String> {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(op)).unwrap_or_else(|| panic!("{op}: {stdout}"));
        line.trim_start()[op.len()..].split_whitespace().map(str::to_string).collect()
    };
    for (op, n) in [
        ("pod start (to RUNNING) in the burst", "3"),
        ("pod teardown in the burst", "3"),
        ("ListContainers (4 containers, 1 running)", "3"),
        ("ListContainers (2 pods, 1 s relist)", "2"),
        ("ListPodSandbox (2 pods, 1 s relist)", "2"),
        ("start-up until the lists answer (2 pods)", "1"),
    ] {
        let columns = after(op);
        assert_eq!((columns[0].as_str(), columns[1].as_str()), ("lockstep", n), "{op}: {columns:?}");
    }
    assert!(after("burst start, 3 pods at 2").join(" ").contains("pods/s"), "{stdout}");
    assert!(after("daemon CPU idle with 2 pods").join(" ").contains("ms per minute"), "{stdout}");
}

#[test]
fn the_kubelet_emulation_refuses_bad_input_with_exit_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let deployment = tmp.path().join("deployment.yaml");
    std::fs::write(&deployment, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n").unwrap();
    let pod = tmp.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: x}]\n",
    )
    .unwrap();
    let (deployment, pod) = (deployment.to_str().unwrap(), pod.to_str().unwrap());
    let dead = format!("unix://{}/nothing.sock", tmp.path().display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["kubelet", "--kube", "1.36", "--pod", deployment, "--endpoint", &dead], "not a Pod"),
        (vec!["kubelet", "--kube", "1.36", "--pod", "/nonexistent/pod.yaml"], "/nonexistent/pod.yaml"),
        (vec!["kubelet", "--kube", "1.12", "--pod", pod], "unknown Kubernetes minor"),
        (vec!["kubelet", "--kube", "1.36", "--pod", pod, "--endpoint", &dead], "cannot connect"),
    ];
    for (args, expected) in cases {
        let out = conformance(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
