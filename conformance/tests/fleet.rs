//! `lockstep-conformance fleet` against an in-process fake API server (tests/fleet/fake.rs):
//! a node that passes, one whose Job fails and one that times out; a kubeconfig that does not
//! parse, a cluster that refuses and one that is not there (exit 2 with the reason), Ctrl-C;
//! and, as root, that what `run --json -` prints is what fleet reads from a pod's log.

#[path = "fleet/fake.rs"]
mod fake;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use fake::{Behaviour, Fake, FakeNode, TOKEN};
use lockstep_conformance::framework::{Outcome, RuntimeIdentity, TestReport};
use lockstep_conformance::report::{self, RunReport};
use lockstep_conformance::surface::Surface;
use lockstep_cri::Minor;

const BIN: &str = env!("CARGO_BIN_EXE_lockstep-conformance");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A kubeconfig for the server at `server` with the fake's token.
fn kubeconfig(dir: &Path, server: &str, token: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n\
         current-context: fake\nusers:\n- name: tester\n  user:\n    token: {token}\n"
    );
    std::fs::write(&path, config).unwrap();
    path
}

async fn fleet(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .arg("fleet")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("KUBECONFIG")
        .output()
        .await
        .unwrap()
}

/// A report of the 1.36 profile with these tests, as the harness writes it.
fn report_with(tests: Vec<TestReport>) -> RunReport {
    RunReport {
        kube: "1.36".into(),
        endpoint: "unix:///host-cri.sock".into(),
        runtime: RuntimeIdentity {
            name: "containerd".into(),
            version: "v2.1.4".into(),
            api_version: "v1".into(),
            pinned_minor: None,
        },
        surface: Surface { probes: vec![], summary: "serves every RPC of Kubernetes 1.36".into() },
        tests,
        duration: Duration::from_secs(3),
    }
}

fn test(area: &'static str, name: &'static str, outcome: Outcome) -> TestReport {
    TestReport { area, name, since: Minor::V1_30, outcome, duration: Duration::from_millis(40) }
}

/// The pod's log: the table (stderr), then the JSON report (stdout).
fn log_of(report: &RunReport) -> String {
    let table = report::to_table(report, false);
    let json = serde_json::to_string_pretty(&report::to_json(report)).unwrap();
    format!("{table}{json}\n")
}

/// What `run --kube 1.36 --json -` prints in the pod: the table on stderr, then the JSON report
/// on stdout, both in the pod's log; written by the harness's own report module.
fn passing_log() -> String {
    log_of(&report_with(vec![
        test("runtime-info", "Version answers what the kubelet requires", Outcome::Passed),
        test("pods", "RunPodSandbox makes a ready pod", Outcome::Passed),
        test("user-namespaces", "hostUsers false", Outcome::Skipped("the runtime reports none".into())),
    ]))
}

fn nodes() -> Vec<FakeNode> {
    let pool: &'static [(&'static str, &'static str)] = &[("lockstep.dev/pool", "cri"), ("zone", "a")];
    vec![
        FakeNode { name: "node-ok", labels: pool, behaviour: Behaviour::Succeed(passing_log()) },
        FakeNode {
            name: "node-broken",
            labels: pool,
            behaviour: Behaviour::Fail(
                "lockstep-conformance: cannot connect to unix:///host-cri.sock: No such file or directory\n".into(),
            ),
        },
        FakeNode { name: "node-stuck", labels: pool, behaviour: Behaviour::Hang },
        // Not selected: it would pass, and must not get a Job.
        FakeNode { name: "node-other", labels: &[("zone", "b")], behaviour: Behaviour::Succeed(passing_log()) },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passing_a_failing_and_a_stuck_node_are_judged_and_every_job_is_deleted() {
    let (fake, address) = Fake::start(nodes(), None).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = kubeconfig(tmp.path(), &format!("http://{address}"), TOKEN);
    let (junit, json) = (tmp.path().join("fleet.xml"), tmp.path().join("fleet.json"));
    let out = fleet(&[
        "--kubeconfig",
        config.to_str().unwrap(),
        "--selector",
        "lockstep.dev/pool=cri",
        "--image",
        "registry.example/lockstep-conformance:test",
        "--namespace",
        "conformance-ci",
        "--timeout",
        "2s",
        "--poll-interval",
        "100ms",
        "--junit",
        junit.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ])
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");

    // The table: one line per node, its 1.36 cell and verdict.
    let line = |node: &str| stdout.lines().find(|l| l.starts_with(node)).unwrap_or_else(|| panic!("{node}: {stdout}"));
    assert!(line("node-ok ").contains("pass  passed"), "{stdout}");
    assert!(line("node-broken").contains("failed: BackoffLimitExceeded: Job has reached the specified backoff limit"));
    assert!(line("node-broken").contains("cannot connect to unix:///host-cri.sock"), "{stdout}");
    assert!(line("node-stuck").contains("timed out: no result within 2 s, Job deleted"), "{stdout}");
    assert!(line("node-stuck").contains("its pod was waiting: ImagePullBackOff: Back-off pulling image"), "{stdout}");
    assert!(!stdout.contains("node-other"), "{stdout}");
    assert!(stdout.contains("1 of 3 node(s) passed"), "{stdout}");
    // Progress on stderr, node by node.
    for node in ["node-ok", "node-broken", "node-stuck"] {
        assert!(stderr.contains(&format!("fleet: {node}: started (Job ")), "{stderr}");
    }
    assert!(stderr.contains("fleet: node-ok: passed"), "{stderr}");
    assert!(stderr.contains("fleet: node-stuck: pod active (pending or running)"), "{stderr}");

    // JUnit: a suite per node, the failures where they belong.
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
    assert!(xml.contains("<testsuite name=\"node-ok\" tests=\"4\" failures=\"0\" skipped=\"1\""), "{xml}");
    assert!(xml.contains("<testsuite name=\"node-broken\" tests=\"1\" failures=\"1\""), "{xml}");
    assert!(xml.contains("<testsuite name=\"node-stuck\" tests=\"1\" failures=\"1\""), "{xml}");
    assert!(xml.contains("name=\"1.36 pods/RunPodSandbox makes a ready pod\""), "{xml}");

    // JSON: each node's report as the harness writes it.
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ok = report["nodes"].as_array().unwrap().iter().find(|n| n["node"] == "node-ok").unwrap();
    assert_eq!(ok["runs"][0]["report"]["runtime"]["version"], "v2.1.4");
    assert_eq!(ok["runs"][0]["report"]["summary"]["passed"], 2);

    let seen = fake.seen.lock().unwrap();
    // The selector reached the API server; the Jobs are what the run should have made.
    assert!(
        seen.requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/nodes?") && r.contains("labelSelector=lockstep.dev%2Fpool%3Dcri")),
        "{:?}",
        seen.requests
    );
    assert_eq!(seen.created.len(), 3, "{:?}", seen.created.keys());
    for job in seen.created.values() {
        assert_eq!(job["metadata"]["namespace"], "conformance-ci");
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 2);
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.example/lockstep-conformance:test"
        );
    }
    // Every Job deleted, with its pods.
    assert_eq!(seen.deleted.keys().collect::<Vec<_>>(), seen.created.keys().collect::<Vec<_>>());
    for options in seen.deleted.values() {
        assert_eq!(options["propagationPolicy"], "Background", "{options}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubeconfig_that_does_not_parse_is_exit_2_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("broken-kubeconfig");
    std::fs::write(&config, "clusters: [this is: not: yaml\n").unwrap();
    let out = fleet(&["--kubeconfig", config.to_str().unwrap(), "--image", "x"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("kubeconfig {}", config.display())), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_that_forbids_is_exit_2_with_the_reason_and_no_job() {
    let (fake, address) = Fake::start(nodes(), Some(403)).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = kubeconfig(tmp.path(), &format!("http://{address}"), TOKEN);
    let out = fleet(&["--kubeconfig", config.to_str().unwrap(), "--image", "x"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the cluster refused listing nodes: 403 Forbidden: nodes is forbidden"), "{stderr}");
    assert!(fake.seen.lock().unwrap().created.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_is_exit_2_unauthorized() {
    let (_fake, address) = Fake::start(nodes(), None).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = kubeconfig(tmp.path(), &format!("http://{address}"), "not-the-token");
    let out = fleet(&["--kubeconfig", config.to_str().unwrap(), "--image", "x"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_that_is_not_there_is_exit_2_connection_refused() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let config = kubeconfig(tmp.path(), &format!("http://127.0.0.1:{port}"), TOKEN);
    let out = fleet(&["--kubeconfig", config.to_str().unwrap(), "--image", "x"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("listing nodes") && stderr.to_lowercase().contains("connection refused"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selector_that_matches_nothing_is_exit_2() {
    let (fake, address) = Fake::start(nodes(), None).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = kubeconfig(tmp.path(), &format!("http://{address}"), TOKEN);
    let out = fleet(&["--kubeconfig", config.to_str().unwrap(), "--image", "x", "--selector", "zone=c"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no node matches the selector \"zone=c\""), "{stderr}");
    assert!(fake.seen.lock().unwrap().created.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_fails_with_a_report_is_judged_by_its_failed_tests() {
    // `run` exits 1 when a test fails, so the Job fails, but its log holds the report.
    let failing = log_of(&report_with(vec![
        test("pods", "RunPodSandbox makes a ready pod", Outcome::Passed),
        test("exec", "ExecSync honours its timeout", Outcome::Failed("returned after 9 s".into())),
    ]));
    let node = FakeNode { name: "node-red", labels: &[], behaviour: Behaviour::Fail(failing) };
    let (_fake, address) = Fake::start(vec![node], None).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = kubeconfig(tmp.path(), &format!("http://{address}"), TOKEN);
    let junit = tmp.path().join("fleet.xml");
    let out = fleet(&[
        "--kubeconfig",
        config.to_str().unwrap(),
        "--image",
        "x",
        "--poll-interval",
        "100ms",
        "--junit",
        junit.to_str().unwrap(),
    ])
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("FAIL 1  failed: 1 test(s): 1.36 exec/ExecSync honours its timeout"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testcase classname=\"node-red\" name=\"job\"/>"), "{xml}");
    assert!(xml.contains("<failure message=\"returned after 9 s\">"), "{xml}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_deletes_the_jobs_and_exits_130() {
    let nodes = vec![
        FakeNode { name: "node-a", labels: &[], behaviour: Behaviour::Hang },
        FakeNode { name: "node-b", labels: &[], behaviour: Behaviour::Hang },
    ];
    let (fake, address) = Fake::start(nodes, None).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = kubeconfig(tmp.path(), &format!("http://{address}"), TOKEN);
    let child = tokio::process::Command::new(BIN)
        .args(["fleet", "--kubeconfig", config.to_str().unwrap(), "--image", "x", "--poll-interval", "100ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    // Once both Jobs exist and are being polled, the operator presses Ctrl-C.
    for _ in 0..100 {
        let polled = fake.seen.lock().unwrap().requests.iter().any(|r| r.starts_with("GET /apis/batch/v1/"));
        if polled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.unwrap().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted (Ctrl-C); the run's Jobs were deleted"), "{stderr}");
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.created.len(), 2);
    assert_eq!(seen.deleted.keys().collect::<Vec<_>>(), seen.created.keys().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn what_run_and_skew_json_dash_print_in_a_pod_is_what_fleet_reads() {
    // The embedded lockstepd needs root; the fake-server tests above need nothing.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the embedded lockstepd needs root");
        return;
    }
    let out = tokio::process::Command::new(BIN)
        .args(["run", "--kube", "1.36", "--focus", "runtime-info/Version", "--json", "-"])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    // stdout is the JSON alone; the table went to stderr.
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["kubernetes"], "1.36");
    assert!(stderr.contains("CRI conformance for Kubernetes 1.36"), "{stderr}");
    // A pod's log holds both streams.
    let profile = lockstep_conformance::fleet::Profile::Run { kube: "1.36".into() };
    let rows = lockstep_conformance::fleet::collect::rows(&profile, &format!("{stderr}{stdout}")).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].report.counts().passed, 1);
    assert_eq!(rows[0].report.runtime.name, "lockstep");

    // The same for skew: every minor's row.
    let out = tokio::process::Command::new(BIN)
        .args(["skew", "--kube", "1.35", "--focus", "^runtime-info/Version", "--json", "-"])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let rows = lockstep_conformance::fleet::collect::rows(
        &lockstep_conformance::fleet::Profile::Skew,
        &format!("{stderr}{stdout}"),
    )
    .unwrap();
    assert_eq!(rows.iter().map(|r| r.minor).collect::<Vec<_>>(), Minor::ALL);
}
