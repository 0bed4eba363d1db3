//! streaming: `kubectl exec`, `attach` and `port-forward` as the kubelet serves them — Exec,
//! Attach and PortForward return a URL of the runtime's streaming server, and that URL must
//! carry the stream. Each is checked over WebSocket (websocket.rs, what crictl and newer
//! clients speak) and over SPDY (spdy.rs, what the kubelet and the API server speak, and
//! critest); a URL works once.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::time::Duration;

use lockstep_cri::{model, Minor};

use super::conkit::{with_kit, Kit};
use super::containers::IMAGES;
use super::podkit::{self, pod_config, with_pod};
use super::spdy;
use super::websocket::{self, Socket, CHANNEL_PROTOCOL};
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};

const AREA: &str = "streaming";
const STREAM_WAIT: Duration = Duration::from_secs(30);

fn test(name: &'static str, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs, timeout: Duration::from_secs(90), body }
}

pub fn tests() -> Vec<Test> {
    vec![
        test("Exec's URL runs the command and streams its stdout, stderr and exit code", IMAGES, |c| Box::pin(exec(c))),
        test("Exec's URL with a tty and stdin streams the command's output", IMAGES, |c| Box::pin(exec_tty(c))),
        test("Attach's URL streams the output of the container's process", IMAGES, |c| Box::pin(attach(c))),
        test("PortForward's URL reaches a port in the pod's network namespace", &[], |c| Box::pin(port_forward(c))),
        test("PortForward's URL reaches a port of a host-network pod on the node", &[], |c| {
            Box::pin(port_forward_host_network(c))
        }),
        test("Exec's URL over SPDY runs the command and streams its stdout, stderr and exit code", IMAGES, |c| {
            Box::pin(exec_spdy(c))
        }),
        test("Exec's URL over SPDY with a tty and stdin streams the command's output", IMAGES, |c| {
            Box::pin(exec_tty_spdy(c))
        }),
        test("Attach's URL over SPDY streams the output of the container's process", IMAGES, |c| {
            Box::pin(attach_spdy(c))
        }),
        test("PortForward's URL over SPDY reaches a port in the pod's network namespace", &[], |c| {
            Box::pin(port_forward_spdy(c))
        }),
        test("PortForward's URL over SPDY reports a port nothing listens on on the error stream", &[], |c| {
            Box::pin(port_forward_refused(c))
        }),
        test("A streaming URL works once: the second connection is refused with 404", IMAGES, |c| {
            Box::pin(url_works_once(c))
        }),
    ]
}

fn stream_failed(what: &str, e: String) -> Failure {
    Failure::fail(format!("{what}: {e}"))
}

/// The two ways a client reaches a streaming URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    WebSocket,
    Spdy,
}

async fn exec_url(kit: &Kit, id: &str, cmd: &[&str], tty: bool) -> Result<String, Failure> {
    Ok(kit
        .client()
        .exec(model::ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin: tty,
            stdout: true,
            stderr: !tty,
        })
        .await
        .map_err(|e| call_failed("Exec", &e))?
        .url)
}

/// Exec for `cmd` and the channels its stream carried until the server closed it.
async fn exec_over(
    kit: &Kit,
    id: &str,
    cmd: &[&str],
    tty: bool,
    transport: Transport,
) -> Result<BTreeMap<u8, Vec<u8>>, Failure> {
    let url = exec_url(kit, id, cmd, tty).await?;
    if transport == Transport::Spdy {
        let streams = spdy::Streams { stdin: tty.then(Vec::new), stdout: true, stderr: !tty, resize: tty };
        let (channels, ended) =
            spdy::remotecommand(&url, streams, STREAM_WAIT).await.map_err(|e| stream_failed("the exec URL", e))?;
        check!(ended, "the exec's error stream did not end within {STREAM_WAIT:?}: {:?}", websocket::shown(&channels));
        return Ok(channels);
    }
    let mut socket = Socket::connect(&url, CHANNEL_PROTOCOL).await.map_err(|e| stream_failed("the exec URL", e))?;
    let channels =
        socket.read_channels(STREAM_WAIT, |_| false).await.map_err(|e| stream_failed("the exec stream", e))?;
    socket.close().await;
    Ok(channels)
}

fn text(channels: &BTreeMap<u8, Vec<u8>>, channel: u8) -> String {
    channels.get(&channel).map(|d| String::from_utf8_lossy(d).into_owned()).unwrap_or_default()
}

async fn exec(ctx: Ctx) -> TestResult {
    exec_with(ctx, Transport::WebSocket).await
}

async fn exec_spdy(ctx: Ctx) -> TestResult {
    exec_with(ctx, Transport::Spdy).await
}

async fn exec_with(ctx: Ctx, transport: Transport) -> TestResult {
    with_kit(&ctx, "stream-exec", |kit| async move {
        let id = kit.run_sleeper("stream-exec").await?;
        let script = ["sh", "-c", "echo out; echo err >&2; exit 3"];
        let channels = exec_over(&kit, &id, &script, false, transport).await?;
        let (stdout, stderr, error) = (text(&channels, 1), text(&channels, 2), text(&channels, 3));
        check!(
            stdout == "out\n",
            "the exec stream's stdout is {stdout:?}, not \"out\\n\" ({:?})",
            websocket::shown(&channels)
        );
        check!(stderr == "err\n", "the exec stream's stderr is {stderr:?}, not \"err\\n\"");
        // v4.channel.k8s.io ends with a metav1.Status on the error channel: the exit code in it.
        let status: serde_json::Value = serde_json::from_str(&error).unwrap_or_default();
        let code = status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .unwrap_or("");
        check!(
            status["reason"] == "NonZeroExitCode" && code == "3",
            "the error channel reports {error:?}, not NonZeroExitCode with ExitCode 3"
        );
        let ok = exec_over(&kit, &id, &["echo", "hello"], false, transport).await?;
        check!(text(&ok, 1) == "hello\n", "`echo hello` streamed {:?}", websocket::shown(&ok));
        let ok_status: serde_json::Value = serde_json::from_str(&text(&ok, 3)).unwrap_or_default();
        check!(
            ok_status["status"] == "Success",
            "a command exiting 0 ends with {:?} on the error channel",
            text(&ok, 3)
        );
        Ok(())
    })
    .await
}

async fn exec_tty(ctx: Ctx) -> TestResult {
    exec_tty_with(ctx, Transport::WebSocket).await
}

async fn exec_tty_spdy(ctx: Ctx) -> TestResult {
    exec_tty_with(ctx, Transport::Spdy).await
}

async fn exec_tty_with(ctx: Ctx, transport: Transport) -> TestResult {
    with_kit(&ctx, "stream-tty", |kit| async move {
        let id = kit.run_sleeper("stream-tty").await?;
        let script = ["sh", "-c", "test -t 1 && printf 'hello from a tty'"];
        let channels = exec_over(&kit, &id, &script, true, transport).await?;
        let stdout = text(&channels, 1);
        check!(
            stdout.contains("hello from a tty"),
            "with tty and stdin the exec streamed {:?}: no tty, or no output",
            websocket::shown(&channels)
        );
        Ok(())
    })
    .await
}

async fn attach(ctx: Ctx) -> TestResult {
    attach_with(ctx, Transport::WebSocket).await
}

async fn attach_spdy(ctx: Ctx) -> TestResult {
    attach_with(ctx, Transport::Spdy).await
}

async fn attach_with(ctx: Ctx, transport: Transport) -> TestResult {
    with_kit(&ctx, "stream-attach", |kit| async move {
        let id =
            kit.run_shell("stream-attach", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done").await?;
        let url = kit
            .client()
            .attach(model::AttachRequest { container_id: id, stdin: false, tty: false, stdout: true, stderr: true })
            .await
            .map_err(|e| call_failed("Attach", &e))?
            .url;
        let seen = |c: &BTreeMap<u8, Vec<u8>>| text(c, 1).matches("tick-").count() >= 2;
        let channels = if transport == Transport::Spdy {
            // The container never ends: what arrived in a couple of seconds.
            let streams = spdy::Streams { stdin: None, stdout: true, stderr: true, resize: false };
            spdy::remotecommand(&url, streams, Duration::from_secs(3))
                .await
                .map_err(|e| stream_failed("the attach URL", e))?
                .0
        } else {
            let mut socket =
                Socket::connect(&url, CHANNEL_PROTOCOL).await.map_err(|e| stream_failed("the attach URL", e))?;
            let channels =
                socket.read_channels(STREAM_WAIT, seen).await.map_err(|e| stream_failed("the attach stream", e))?;
            socket.close().await;
            channels
        };
        check!(
            seen(&channels),
            "the attach stream carried {:?}, not the container's ticks",
            websocket::shown(&channels)
        );
        Ok(())
    })
    .await
}

/// Forwards to `port` of the pod and sends `hello` through; the echo must come back on the
/// port's data channel (0), after the two bytes of the port number that open it.
async fn forward_echo(ctx: &Ctx, sandbox: &str, port: u16) -> TestResult {
    let url = ctx
        .kubelet()
        .port_forward(model::PortForwardRequest { pod_sandbox_id: sandbox.into(), port: vec![port as i32] })
        .await
        .map_err(|e| call_failed("PortForward", &e))?
        .url;
    let mut socket =
        Socket::connect(&url, CHANNEL_PROTOCOL).await.map_err(|e| stream_failed("the port-forward URL", e))?;
    let hello = b"hello through port-forward";
    socket.send_channel(0, hello).await.map_err(|e| stream_failed("the port-forward stream", e))?;
    let echoed = |c: &BTreeMap<u8, Vec<u8>>| c.get(&0).is_some_and(|d| d.len() >= 2 + hello.len());
    let channels =
        socket.read_channels(STREAM_WAIT, echoed).await.map_err(|e| stream_failed("the port-forward stream", e))?;
    socket.close().await;
    let data = channels.get(&0).cloned().unwrap_or_default();
    check!(
        data.len() >= 2 && data[..2] == port.to_le_bytes(),
        "the data channel does not open with port {port}: {:?}",
        websocket::shown(&channels)
    );
    check!(&data[2..] == hello, "the port-forward stream echoed {:?}", websocket::shown(&channels));
    Ok(())
}

async fn port_forward(ctx: Ctx) -> TestResult {
    with_pod(&ctx.clone(), pod_config("stream-forward"), |pod| async move {
        let netns = podkit::netns(&pod)?;
        let server = super::networking::echo_server(&netns, 8080)?;
        let result = forward_echo(&ctx, &pod.id, 8080).await;
        if result.is_err() {
            let _ = podkit::within(&netns, podkit::net_flag(), || std::net::TcpStream::connect(("127.0.0.1", 8080)));
        }
        let _ = server.join();
        result
    })
    .await
}

async fn port_forward_host_network(ctx: Ctx) -> TestResult {
    let mut config = pod_config("stream-forward-host");
    config.hostname.clear();
    podkit::namespace_options(&mut config).network = model::NamespaceMode::Node as i32;
    with_pod(&ctx.clone(), config, |pod| async move {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| Failure::fail(format!("cannot listen on the node: {e}")))?;
        let port = listener.local_addr().map_err(|e| Failure::fail(format!("no local address: {e}")))?.port();
        let server = std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 64];
                if let Ok(n) = conn.read(&mut buf) {
                    let _ = conn.write_all(&buf[..n]);
                }
            }
        });
        let result = forward_echo(&ctx, &pod.id, port).await;
        if result.is_err() {
            let _ = std::net::TcpStream::connect(("127.0.0.1", port));
        }
        let _ = server.join();
        result
    })
    .await
}

async fn port_forward_spdy(ctx: Ctx) -> TestResult {
    with_pod(&ctx.clone(), pod_config("stream-forward-spdy"), |pod| async move {
        let netns = podkit::netns(&pod)?;
        let server = super::networking::echo_server(&netns, 8080)?;
        let url = ctx
            .kubelet()
            .port_forward(model::PortForwardRequest { pod_sandbox_id: pod.id.clone(), port: vec![8080] })
            .await
            .map_err(|e| call_failed("PortForward", &e))?
            .url;
        let hello = b"hello through SPDY";
        let result = spdy::forward(&url, 8080, hello).await;
        if result.is_err() {
            let _ = podkit::within(&netns, podkit::net_flag(), || std::net::TcpStream::connect(("127.0.0.1", 8080)));
        }
        let _ = server.join();
        let (data, errors) = result.map_err(|e| stream_failed("the port-forward URL", e))?;
        check!(
            data == hello,
            "the data stream echoed {:?} (error stream: {:?})",
            String::from_utf8_lossy(&data),
            String::from_utf8_lossy(&errors)
        );
        check!(errors.is_empty(), "the error stream carried {:?}", String::from_utf8_lossy(&errors));
        Ok(())
    })
    .await
}

async fn port_forward_refused(ctx: Ctx) -> TestResult {
    with_pod(&ctx.clone(), pod_config("stream-forward-none"), |pod| async move {
        let url = ctx
            .kubelet()
            .port_forward(model::PortForwardRequest { pod_sandbox_id: pod.id.clone(), port: vec![8081] })
            .await
            .map_err(|e| call_failed("PortForward", &e))?
            .url;
        let (data, errors) =
            spdy::forward(&url, 8081, b"anyone?").await.map_err(|e| stream_failed("the port-forward URL", e))?;
        check!(data.is_empty(), "data came back from a port nothing listens on: {:?}", String::from_utf8_lossy(&data));
        check!(!errors.is_empty(), "the error stream says nothing about a port nothing listens on");
        Ok(())
    })
    .await
}

async fn url_works_once(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "stream-once", |kit| async move {
        let id = kit.run_sleeper("stream-once").await?;
        let url = exec_url(&kit, &id, &["true"], false).await?;
        let streams = spdy::Streams { stdin: None, stdout: true, stderr: true, resize: false };
        let (_, ended) =
            spdy::remotecommand(&url, streams.clone(), STREAM_WAIT).await.map_err(|e| stream_failed("the URL", e))?;
        check!(ended, "the first use of the URL did not end");
        match spdy::remotecommand(&url, streams, STREAM_WAIT).await {
            Err(e) => check!(e.contains(" 404"), "the second use was refused, but not with 404: {e}"),
            Ok((channels, _)) => {
                return Err(Failure::fail(format!("the URL worked twice: {:?}", websocket::shown(&channels))))
            }
        }
        let again = Socket::connect(&url, CHANNEL_PROTOCOL).await;
        check!(
            again.as_ref().is_err_and(|e| e.contains("404")),
            "a used URL answered a WebSocket upgrade with {:?}",
            again.err()
        );
        Ok(())
    })
    .await
}
