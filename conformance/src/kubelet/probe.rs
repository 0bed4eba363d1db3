//! Readiness probes as the kubelet runs them: exec through ExecSync (exit 0 is success, a
//! DeadlineExceeded answer is a timeout), httpGet from the node to the pod's IP (a status
//! 200–399 is success), tcpSocket (a connection is success). Liveness and startup probes are
//! not emulated (their failure restarts a container, which the emulation does not do).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How a probe is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec { command: Vec<String>, timeout_secs: i64 },
    Http { host: String, port: u16, path: String, timeout: Duration },
    Tcp { host: String, port: u16, timeout: Duration },
}

impl Action {
    /// What the report shows, e.g. `httpGet 10.88.0.5:8080/index.html`.
    pub fn describe(&self) -> String {
        match self {
            Action::Exec { command, .. } => format!("exec {}", command.join(" ")),
            Action::Http { host, port, path, .. } => format!("httpGet {host}:{port}{path}"),
            Action::Tcp { host, port, .. } => format!("tcpSocket {host}:{port}"),
        }
    }
}

/// The probe's action for a pod at `pod_ip` (the node's address for host-network pods).
pub fn action(probe: &Probe, container: &Container, pod_ip: &str) -> Result<Action, String> {
    let timeout_secs = i64::from(probe.timeout_seconds.unwrap_or(1).max(1));
    let timeout = Duration::from_secs(timeout_secs as u64);
    if let Some(exec) = &probe.exec {
        return Ok(Action::Exec { command: exec.command.clone().unwrap_or_default(), timeout_secs });
    }
    if let Some(http) = &probe.http_get {
        if http.scheme.as_deref().is_some_and(|s| s != "HTTP") {
            return Err(format!("container {}: only HTTP probes are emulated", container.name));
        }
        let host = http.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
        let port = port_number(&http.port, container)?;
        let path = http.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
        return Ok(Action::Http { host, port, path, timeout });
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = tcp.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
        return Ok(Action::Tcp { host, port: port_number(&tcp.port, container)?, timeout });
    }
    Err(format!("container {}: the readiness probe has no exec, httpGet or tcpSocket", container.name))
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port_number(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("container {}: no port is named {name:?}", container.name))?,
    };
    u16::try_from(number).ok().filter(|p| *p > 0).ok_or_else(|| format!("probe port {number} is not a port"))
}

/// One HTTP GET as kube-probe sends it; Ok with the status line for 200–399.
pub async fn http_get(host: &str, port: u16, path: &str, timeout: Duration, kube: &str) -> Result<String, String> {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/{kube}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&answer);
        let status_line = text.lines().next().unwrap_or("").to_string();
        let code: u16 = status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        if (200..400).contains(&code) {
            Ok(status_line)
        } else {
            Err(format!("answered {status_line:?}"))
        }
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("no answer within {timeout:?}"))?
}

/// One TCP connection attempt.
pub async fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<String, String> {
    let work = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(_)) => Ok("connected".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, HTTPGetAction};

    fn container() -> Container {
        Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: 8080, ..Default::default() }]),
            ..Default::default()
        }
    }

    #[test]
    fn probes_become_actions_against_the_pod_ip() {
        let http = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("http".into()),
                path: Some("/healthz".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            action(&http, &container(), "10.88.0.5").unwrap(),
            Action::Http {
                host: "10.88.0.5".into(),
                port: 8080,
                path: "/healthz".into(),
                timeout: Duration::from_secs(1)
            }
        );
        let exec = Probe {
            exec: Some(ExecAction { command: Some(vec!["cat".into(), "/ready".into()]) }),
            timeout_seconds: Some(3),
            ..Default::default()
        };
        assert_eq!(
            action(&exec, &container(), "").unwrap(),
            Action::Exec { command: vec!["cat".into(), "/ready".into()], timeout_secs: 3 }
        );
        let bad = Probe {
            http_get: Some(HTTPGetAction { port: IntOrString::String("nope".into()), ..Default::default() }),
            ..Default::default()
        };
        assert!(action(&bad, &container(), "10.0.0.1").unwrap_err().contains("nope"));
    }

    #[tokio::test]
    async fn http_get_reads_the_status_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for answer in ["HTTP/1.1 200 OK\r\n\r\nok", "HTTP/1.1 500 Oops\r\n\r\n"] {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let n = conn.read(&mut buf).await.unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).contains("User-Agent: kube-probe/1.36"));
                conn.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let t = Duration::from_secs(5);
        assert_eq!(http_get("127.0.0.1", port, "/", t, "1.36").await.unwrap(), "HTTP/1.1 200 OK");
        assert!(http_get("127.0.0.1", port, "/", t, "1.36").await.unwrap_err().contains("500"));
        server.await.unwrap();
    }
}
