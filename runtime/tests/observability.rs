//! lockstepd's own observability, as a real process: the Prometheus endpoint that `metrics_port`
//! turns on (its counters move when a pod is made, its text passes `promtool check metrics`),
//! off by default, and JSON log lines under `log_format = "json"`.

mod common;

use std::io::{Read as _, Write as _};
use std::time::Duration;

use common::{pod, run_request, start_with, unique, Options};
use lockstep_cri::model;

/// A port free a moment ago on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The body of `GET /metrics` on 127.0.0.1:`port`, with the response's status line.
fn scrape(port: u16) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    // A body of unknown length comes chunked; ours is small: drop the chunk size lines.
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the sample line that starts with `series` (name and labels as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))?.rsplit(' ').next()?.parse().ok()
}

fn ops(rpc: &str, code: &str) -> String {
    format!("container_runtime_lockstep_operations_total{{operation=\"{rpc}\",code=\"{code}\"}}")
}

#[tokio::test]
async fn the_metrics_endpoint_counts_calls_by_rpc_and_code_and_passes_promtool() {
    let port = free_port();
    let daemon = start_with(Options { top_toml: format!("metrics_port = {port}\n"), ..Default::default() }).await;
    let mut kubelet = daemon.kubelet().await;
    let (status, before) = scrape(port);
    assert!(status.contains("200"), "{status}\n{before}");
    assert_eq!(sample(&before, &ops("RunPodSandbox", "OK")), None, "no pod made yet:\n{before}");

    let config = pod(&unique("metrics"));
    let id = kubelet.run_pod_sandbox(run_request(config)).await.unwrap().pod_sandbox_id;
    let unknown = kubelet
        .pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id: "0".repeat(64), verbose: false })
        .await;
    assert_eq!(unknown.map(|_| ()).unwrap_err().code(), tonic::Code::NotFound);
    let (_, after) = scrape(port);
    kubelet.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    kubelet.remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: id }).await.unwrap();

    assert_eq!(sample(&after, &ops("RunPodSandbox", "OK")), Some(1.0), "{after}");
    assert_eq!(sample(&after, &ops("PodSandboxStatus", "NOT_FOUND")), Some(1.0), "{after}");
    let latency =
        "container_runtime_lockstep_operations_latency_seconds_count{operation=\"RunPodSandbox\",code=\"OK\"}";
    assert_eq!(sample(&after, latency), Some(1.0), "{after}");
    assert_eq!(sample(&after, "container_runtime_lockstep_containers{state=\"running\"}"), Some(0.0));
    assert_eq!(sample(&after, "container_runtime_lockstep_cni_failures_total{operation=\"add\"}"), None);

    let (_, last) = scrape(port);
    assert_eq!(sample(&last, &ops("StopPodSandbox", "OK")), Some(1.0), "{last}");
    assert_eq!(sample(&last, &ops("RemovePodSandbox", "OK")), Some(1.0), "{last}");
    promtool_accepts(&last);
}

/// `promtool check metrics` (Debian's prometheus package, ci/setup) on the text; a clear skip
/// where it is not installed.
fn promtool_accepts(text: &str) {
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIPPED promtool check: promtool is not installed (Debian package prometheus, see ci/setup)");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_and_no_metrics_endpoint_by_default() {
    let daemon = start_with(Options { top_toml: "log_format = \"json\"\n".into(), ..Default::default() }).await;
    let mut kubelet = daemon.kubelet().await;
    kubelet.version(model::VersionRequest { version: "v1".into() }).await.unwrap();
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    let mut serving = false;
    for line in &lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(object["timestamp"].is_string() && object["level"].is_string(), "{line}");
        serving |= object["message"] == "lockstepd serving the CRI" && object["socket"].is_string();
    }
    assert!(serving, "no JSON line says it serves, with the socket as a field:\n{log}");
    assert!(!log.contains("lockstepd's metrics"), "a metrics endpoint without metrics_port:\n{log}");
}
