//! networking: what a pod's network looks like from the node — its IP on eth0 and lo up in its
//! network namespace, a host port that reaches a listener inside the pod, and traffic from the
//! node and from other pods over the pod network. Listeners and clients run on threads inside the pods' network
//! namespaces, so no container image is needed.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use lockstep_cri::{model, Minor};

use super::podkit::{self, pod_config, with_pod, within};
use crate::check;
use crate::framework::{Ctx, Failure, Need, Test, TestFuture, TestResult};

const AREA: &str = "networking";

fn test(name: &'static str, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs, timeout: Duration::from_secs(60), body }
}

pub fn tests() -> Vec<Test> {
    vec![
        test("The pod's IP is on eth0 and lo is up in its network namespace", &[], |c| Box::pin(ip_on_eth0(c))),
        test("A host port reaches a listener in the pod from the node's address", &[], |c| {
            Box::pin(host_port(c, false))
        }),
        test("A host port reaches a listener in the pod through 127.0.0.1", &[], |c| Box::pin(host_port(c, true))),
        test("Pods reach each other over the pod network", &[], |c| Box::pin(pod_to_pod(c))),
        test("The node reaches a listener in the pod at the pod's IP", &[], |c| Box::pin(node_to_pod(c))),
    ]
}

async fn ip_on_eth0(ctx: Ctx) -> TestResult {
    with_pod(&ctx, pod_config("eth0"), |pod| async move {
        let netns = podkit::netns(&pod)?;
        let addrs = podkit::addresses(&netns)?;
        check!(
            podkit::eth0_carries(&addrs, &pod.ip),
            "eth0 does not carry the reported IP {} inside the pod:\n{addrs}",
            pod.ip
        );
        check!(
            addrs.lines().any(|l| l.contains(" lo ") && l.contains("127.0.0.1/8")),
            "lo is not up in the pod:\n{addrs}"
        );
        Ok(())
    })
    .await
}

/// Accepts one connection inside `netns` on `port` and echoes one message.
pub(crate) fn echo_server(netns: &std::path::Path, port: u16) -> Result<std::thread::JoinHandle<()>, Failure> {
    let listener = within(netns, podkit::net_flag(), move || TcpListener::bind(("0.0.0.0", port)))?
        .map_err(|e| Failure::fail(format!("cannot listen on {port} inside the pod: {e}")))?;
    Ok(std::thread::spawn(move || {
        let _ = listener.set_nonblocking(false);
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 64];
            if let Ok(n) = conn.read(&mut buf) {
                let _ = conn.write_all(&buf[..n]);
            }
        }
    }))
}

/// Starts an echo server on port 8080 in the pod's network namespace, sends `text` to it from
/// the node through `target` and returns what came back (or why nothing did); the server's
/// thread has ended either way.
async fn echo_through(
    netns: &std::path::Path,
    target: SocketAddr,
    text: &'static str,
) -> Result<Result<String, String>, Failure> {
    let server = echo_server(netns, 8080)?;
    let reply = tokio::task::spawn_blocking(move || echo_from(target, text))
        .await
        .map_err(|e| Failure::fail(format!("the client panicked: {e}")))?;
    if reply.is_err() {
        // Unblock the listener so that its thread ends.
        let _ = within(netns, podkit::net_flag(), || TcpStream::connect(("127.0.0.1", 8080)));
    }
    let _ = server.join();
    Ok(reply)
}

fn echo_from(target: SocketAddr, text: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    stream.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A host port unlikely to be taken: from this process's id and a counter.
fn pick_host_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    30000 + ((std::process::id() as u16 % 1000) * 10 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) % 20000
}

/// The node's first global IPv4 address outside the pod networks.
fn node_address() -> Result<std::net::IpAddr, Failure> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .map_err(|e| Failure::fail(format!("cannot run ip: {e}")))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let dev = l.split_whitespace().nth(1).unwrap_or("");
            !dev.starts_with("lockstep") && !dev.starts_with("cni") && !dev.starts_with("veth")
        })
        .find_map(|l| l.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
        .ok_or_else(|| Failure::fail("the node has no global IPv4 address"))
}

async fn host_port(ctx: Ctx, via_loopback: bool) -> TestResult {
    let port = pick_host_port();
    let mut config = pod_config(if via_loopback { "hostport-lo" } else { "hostport" });
    config.port_mappings = vec![model::PortMapping {
        protocol: model::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: port as i32,
        host_ip: String::new(),
    }];
    with_pod(&ctx, config, |pod| async move {
        let netns: PathBuf = podkit::netns(&pod)?;
        let address = if via_loopback { std::net::IpAddr::from([127, 0, 0, 1]) } else { node_address()? };
        let target = SocketAddr::new(address, port);
        match echo_through(&netns, target, "hello through the host port").await? {
            Ok(text) => {
                check!(text == "hello through the host port", "the pod echoed {text:?}");
                Ok(())
            }
            Err(e) => {
                Err(Failure::fail(format!("{target} (host port {port} -> pod {}:8080) does not answer: {e}", pod.ip)))
            }
        }
    })
    .await
}

/// critest's port mapping with only a container port: the node reaches pod IP:port directly.
async fn node_to_pod(ctx: Ctx) -> TestResult {
    with_pod(&ctx, pod_config("node-to-pod"), |pod| async move {
        let netns = podkit::netns(&pod)?;
        let target: SocketAddr = format!("{}:8080", pod.ip)
            .parse()
            .map_err(|_| Failure::fail(format!("the pod's IP {:?} is not an IPv4", pod.ip)))?;
        match echo_through(&netns, target, "node to pod").await? {
            Ok(text) => {
                check!(text == "node to pod", "the pod echoed {text:?}");
                Ok(())
            }
            Err(e) => Err(Failure::fail(format!("the node cannot reach {target}: {e}"))),
        }
    })
    .await
}

async fn pod_to_pod(ctx: Ctx) -> TestResult {
    let ctx2 = ctx.clone();
    with_pod(&ctx, pod_config("server"), |server_pod| async move {
        with_pod(&ctx2, pod_config("client"), |client_pod| async move {
            let server_ns = podkit::netns(&server_pod)?;
            let client_ns = podkit::netns(&client_pod)?;
            let server = echo_server(&server_ns, 9090)?;
            let target: SocketAddr = format!("{}:9090", server_pod.ip)
                .parse()
                .map_err(|_| Failure::fail(format!("the server pod's IP {:?} is not an IPv4", server_pod.ip)))?;
            let reply = within(&client_ns, podkit::net_flag(), move || echo_from(target, "pod to pod"))?;
            if reply.is_err() {
                let _ = within(&server_ns, podkit::net_flag(), || TcpStream::connect(("127.0.0.1", 9090)));
            }
            let _ = server.join();
            match reply {
                Ok(text) => {
                    check!(text == "pod to pod", "the server pod echoed {text:?}");
                    Ok(())
                }
                Err(e) => Err(Failure::fail(format!("pod {} cannot reach pod {target}: {e}", client_pod.ip))),
            }
        })
        .await
    })
    .await
}
