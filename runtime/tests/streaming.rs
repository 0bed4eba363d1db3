//! The streaming server with real containers (runc, parented by lockstep-monitor): exec over
//! SPDY and WebSocket with exit codes, stdin and terminals; a token works once and an unknown
//! one starts nothing; a client that goes away mid-exec leaves no process; a malformed frame
//! ends its own session only; attach through the monitor with two clients and stdin_once.

mod lab;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt as _, StreamExt as _};
use lab::{Lab, MONITOR};
use lockstep_cri::model;
use lockstep_runtime::monitor::attach::AttachFlags;
use lockstep_runtime::monitor::{self, MonitorConfig};
use lockstep_runtime::oci::OciRuntime as _;
use lockstep_runtime::streaming::process::{self, ConsoleSocket};
use lockstep_runtime::streaming::spdy::dial::{dial, DialError};
use lockstep_runtime::streaming::spdy::Headers;
use lockstep_runtime::streaming::{attach, Backend, CommandIo, ExecResult, Request, Settings, StreamServer};
use lockstep_testkit::host::{processes_running, wait_gone};
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

/// Exec and attach in the lab's containers, counting the execs it starts.
struct LabBackend {
    lab: Arc<Lab>,
    execs: AtomicUsize,
}

impl Backend for LabBackend {
    fn exec(&self, request: model::ExecRequest, io: CommandIo) -> BoxFuture<'static, ExecResult> {
        self.execs.fetch_add(1, Ordering::SeqCst);
        let lab = self.lab.clone();
        Box::pin(async move {
            let dir = lab.tmp.path().join("consoles");
            let console = request
                .tty
                .then(|| ConsoleSocket::bind(&dir, &format!("{}.sock", request.cmd.join("-").len())).unwrap());
            let bundle = lab.dir(&request.container_id).path().join("bundle/config.json");
            let spec: oci_spec::runtime::Spec = serde_json::from_slice(&std::fs::read(bundle).unwrap()).unwrap();
            let mut p = spec.process().clone().unwrap();
            p.set_args(Some(request.cmd.clone()));
            p.set_terminal(Some(request.tty));
            let path = console.as_ref().map(|c| c.path().to_path_buf());
            let prepared = lab
                .runtime
                .prepare_exec(&request.container_id, &p, path.as_deref(), Path::new(MONITOR), None)
                .map_err(|e| e.to_string())?;
            process::run(prepared, console, io).await
        })
    }

    fn attach(&self, request: model::AttachRequest, io: CommandIo) -> BoxFuture<'static, Result<(), String>> {
        let dir = self.lab.dir(&request.container_id).path().to_path_buf();
        Box::pin(async move {
            let flags = AttachFlags { stdin: request.stdin, stdout: request.stdout, stderr: request.stderr };
            let conn = tokio::task::spawn_blocking(move || attach::open(&dir, flags)).await.unwrap()?;
            attach::run(conn, io).await
        })
    }

    fn connect(&self, _: String, _: u16) -> BoxFuture<'static, Result<tokio::net::TcpStream, String>> {
        Box::pin(async { Err("the lab has no pods".to_string()) })
    }
}

struct Rig {
    lab: Arc<Lab>,
    backend: Arc<LabBackend>,
    server: StreamServer,
}

async fn rig() -> Rig {
    let lab = Arc::new(Lab::new("runc"));
    let backend = Arc::new(LabBackend { lab: lab.clone(), execs: AtomicUsize::new(0) });
    let settings = Settings { idle_timeout: Duration::from_secs(60), ..Settings::default() };
    let server = StreamServer::start(settings, backend.clone()).await.unwrap();
    Rig { lab, backend, server }
}

impl Rig {
    fn sleeper(&self, id: &str) {
        self.lab.run(id, &Lab::config(&["sleep", "1000"]));
    }

    fn exec_url(&self, id: &str, cmd: &[&str], tty: bool, stdin: bool) -> String {
        let request = model::ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        };
        self.server.url(Request::Exec(request)).unwrap()
    }
}

fn h(kind: &str) -> Headers {
    vec![("streamtype".to_string(), kind.to_string())]
}

/// What an SPDY exec carried: stdout, stderr, the error stream.
async fn spdy_exec(url: &str, tty: bool, input: &[&[u8]], resize: Option<&str>) -> (String, String, String) {
    let dialed = dial(url, &["v4.channel.k8s.io", "v3.channel.k8s.io"]).await.unwrap();
    assert_eq!(dialed.protocol, "v4.channel.k8s.io");
    let session = dialed.session;
    let error = session.open(h("error")).await.unwrap();
    let mut stdin = if input.is_empty() { None } else { Some(session.open(h("stdin")).await.unwrap()) };
    let stdout = session.open(h("stdout")).await.unwrap();
    let mut stderr = if tty { None } else { Some(session.open(h("stderr")).await.unwrap()) };
    let mut resizer = if tty { Some(session.open(h("resize")).await.unwrap()) } else { None };
    if let (Some(r), Some(size)) = (resizer.as_mut(), resize) {
        r.writer.write(Bytes::from(size.to_string())).await.unwrap();
    }
    if let Some(s) = stdin.as_mut() {
        for chunk in input {
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        s.writer.finish().await;
    }
    let read_all = |mut r: lockstep_runtime::streaming::spdy::StreamReader| async move {
        let mut all = Vec::new();
        while let Some(chunk) = r.read().await {
            all.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&all).into_owned()
    };
    let out = tokio::spawn(read_all(stdout.reader));
    let err = match stderr.take() {
        Some(s) => tokio::spawn(read_all(s.reader)),
        None => tokio::spawn(async { String::new() }),
    };
    let status = tokio::time::timeout(Duration::from_secs(30), read_all(error.reader)).await.unwrap();
    (out.await.unwrap(), err.await.unwrap(), status)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens `url` over WebSocket with `protocol`.
async fn ws(url: &str, protocol: &str) -> Result<Ws, String> {
    let mut request = url.replace("http://", "ws://").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let host = url.strip_prefix("http://").and_then(|r| r.split('/').next()).unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(host).await.map_err(|e| e.to_string())?;
    tokio_tungstenite::client_async(request, tcp).await.map(|(s, _)| s).map_err(|e| e.to_string())
}

/// Channel contents until the server closes.
async fn ws_channels(socket: &mut Ws) -> BTreeMap<u8, String> {
    let mut channels: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
        if let Message::Binary(data) = message {
            if let Some((c, d)) = data.split_first() {
                channels.entry(*c).or_default().extend_from_slice(d);
            }
        }
    }
    channels.into_iter().map(|(c, d)| (c, String::from_utf8_lossy(&d).into_owned())).collect()
}

fn status(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?} is not a Status: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_spdy_streams_output_and_exit_codes() {
    let rig = rig().await;
    rig.sleeper("spdy");
    let url = rig.exec_url("spdy", &["sh", "-c", "echo out; echo err >&2; exit 3"], false, false);
    let (out, err, error) = spdy_exec(&url, false, &[], None).await;
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    let failed = status(&error);
    assert_eq!(failed["reason"], "NonZeroExitCode", "{error}");
    assert_eq!(failed["details"]["causes"][0], serde_json::json!({"reason": "ExitCode", "message": "3"}));
    let url = rig.exec_url("spdy", &["sh", "-c", "read x; echo \"got $x\""], false, true);
    let (out, _, error) = spdy_exec(&url, false, &[b"typed\n"], None).await;
    assert_eq!(out, "got typed\n");
    assert_eq!(status(&error)["status"], "Success");
    let url = rig.exec_url("spdy", &["/no/such/binary"], false, false);
    let (_, _, error) = spdy_exec(&url, false, &[], None).await;
    assert_eq!(status(&error)["status"], "Failure", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_a_terminal_is_resized_and_reads_stdin() {
    let rig = rig().await;
    rig.sleeper("tty");
    let url = rig.exec_url("tty", &["sh", "-c", "test -t 0 && read x && stty size"], true, true);
    let (out, _, error) = spdy_exec(&url, true, &[b"go\r"], Some(r#"{"Width":100,"Height":40}"#)).await;
    assert!(out.contains("40 100"), "the terminal was not resized, or is none: {out:?} ({error})");
    assert_eq!(status(&error)["status"], "Success");
    // A command over before its terminal is looked at still has its output (critest's case).
    for _ in 0..10 {
        let url = rig.exec_url("tty", &["echo", "-n", "quick"], true, false);
        let (out, _, error) = spdy_exec(&url, true, &[], None).await;
        assert_eq!((out.as_str(), status(&error)["status"].as_str()), ("quick", Some("Success")), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_websocket_v5_closes_stdin_on_the_close_channel() {
    let rig = rig().await;
    rig.sleeper("ws");
    let url = rig.exec_url("ws", &["cat"], false, true);
    let mut socket = ws(&url, "v5.channel.k8s.io").await.unwrap();
    socket.send(Message::Binary(Bytes::from_static(b"\x00hello"))).await.unwrap();
    socket.send(Message::Binary(Bytes::from_static(&[255, 0]))).await.unwrap();
    let channels = ws_channels(&mut socket).await;
    assert_eq!(channels.get(&1).map(String::as_str), Some("hello"), "{channels:?}");
    assert_eq!(status(&channels[&3])["status"], "Success");
    // The base64 form: text messages, a digit for the channel.
    let url = rig.exec_url("ws", &["sh", "-c", "exit 7"], false, false);
    let mut socket = ws(&url, "v4.base64.channel.k8s.io").await.unwrap();
    let mut texts = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
        if let Message::Text(t) = m {
            texts.push(t.to_string());
        }
    }
    let error = texts.iter().find(|t| t.starts_with('3')).expect("a status on channel 3");
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD.decode(&error[1..]).unwrap();
    assert_eq!(status(&String::from_utf8_lossy(&decoded))["details"]["causes"][0]["message"], "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_once_and_an_unknown_one_starts_nothing() {
    let rig = rig().await;
    rig.sleeper("token");
    let url = rig.exec_url("token", &["true"], false, false);
    let (_, _, error) = spdy_exec(&url, false, &[], None).await;
    assert_eq!(status(&error)["status"], "Success");
    assert_eq!(rig.backend.execs.load(Ordering::SeqCst), 1);
    match dial(&url, &["v4.channel.k8s.io"]).await {
        Err(DialError::Refused { status, .. }) => assert_eq!(status, 404),
        other => panic!("a used token was accepted: {:?}", other.map(|d| d.protocol)),
    }
    let made_up = format!("{}/exec/AAAAAAAAAAAAAAAAAAAAAA", url.rsplit_once("/exec/").unwrap().0);
    assert!(ws(&made_up, "v4.channel.k8s.io").await.unwrap_err().contains("404"));
    assert_eq!(rig.backend.execs.load(Ordering::SeqCst), 1, "a refused token started an exec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_exec_leaves_no_process() {
    let rig = rig().await;
    rig.sleeper("gone");
    for (n, tty) in [(4241, false), (4242, true)] {
        let arg = n.to_string();
        let url = rig.exec_url("gone", &["sleep", &arg], tty, tty);
        let dialed = dial(&url, &["v4.channel.k8s.io"]).await.unwrap();
        let session = dialed.session;
        let _error = session.open(h("error")).await.unwrap();
        let _stdin = if tty { Some(session.open(h("stdin")).await.unwrap()) } else { None };
        let _stdout = session.open(h("stdout")).await.unwrap();
        let _stderr = if tty { None } else { Some(session.open(h("stderr")).await.unwrap()) };
        let _resize = if tty { Some(session.open(h("resize")).await.unwrap()) } else { None };
        let mut pids = Vec::new();
        for _ in 0..100 {
            pids = processes_running(&["sleep", &arg]);
            if !pids.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pids.len(), 1, "the exec did not start (tty {tty})");
        // The connection drops without a word.
        session.gone().cancel();
        assert!(wait_gone(pids[0], Duration::from_secs(10)), "the exec outlived its client (tty {tty})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_ends_its_own_session_only() {
    let rig = rig().await;
    rig.sleeper("frames");
    let good = rig.exec_url("frames", &["sh", "-c", "sleep 1; echo survived"], false, false);
    let good = tokio::spawn(async move { spdy_exec(&good, false, &[], None).await });
    // Another connection upgrades, then sends a control frame of SPDY version 2.
    let bad = rig.exec_url("frames", &["sleep", "4344"], false, false);
    let (host, _) = bad.strip_prefix("http://").unwrap().split_once('/').unwrap();
    let mut raw = tokio::net::TcpStream::connect(host).await.unwrap();
    let path = bad.split_once(host).unwrap().1;
    raw.write_all(
        format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    raw.write_all(&[0x80, 0x02, 0x00, 0x01, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut rest));
    assert!(read.await.is_ok(), "the bad connection was not closed");
    let (out, _, error) = good.await.unwrap();
    assert_eq!(out, "survived\n", "{error}");
    assert!(processes_running(&["sleep", "4344"]).is_empty(), "the bad session started its exec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachers_share_the_output_and_stdin_once_ends_the_container() {
    let rig = rig().await;
    let mut config = Lab::config(&["sh", "-c", "while read l; do echo \"got $l\"; done; echo bye"]);
    config.stdin = true;
    config.stdin_once = true;
    let built = rig.lab.spec("att", &config).unwrap();
    let dir = rig.lab.dir("att");
    std::fs::create_dir_all(dir.path().join("bundle")).unwrap();
    std::fs::write(dir.path().join("bundle/config.json"), serde_json::to_vec(&built.spec).unwrap()).unwrap();
    rig.lab.register("att");
    let monitor_config = MonitorConfig { stdin_once: true, ..rig.lab.monitor_config("att", false, true) };
    monitor::spawn(Path::new(MONITOR), &dir, &monitor_config, Duration::from_secs(30)).unwrap();
    rig.lab.runtime.start("att").unwrap();
    let attach_url = |stdin| {
        let request =
            model::AttachRequest { container_id: "att".into(), stdin, tty: false, stdout: true, stderr: true };
        rig.server.url(Request::Attach(request)).unwrap()
    };
    let mut watcher = ws(&attach_url(false), "v5.channel.k8s.io").await.unwrap();
    let mut typist = ws(&attach_url(true), "v5.channel.k8s.io").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    typist.send(Message::Binary(Bytes::from_static(b"\x00one\n"))).await.unwrap();
    typist.send(Message::Binary(Bytes::from_static(&[255, 0]))).await.unwrap();
    let (typed, watched) = tokio::join!(ws_channels(&mut typist), ws_channels(&mut watcher));
    for (who, channels) in [("the typist", &typed), ("the watcher", &watched)] {
        assert_eq!(channels.get(&1).map(String::as_str), Some("got one\nbye\n"), "{who} saw {channels:?}");
        assert_eq!(status(&channels[&3])["status"], "Success");
    }
    let exit = rig.lab.wait_exit("att");
    assert_eq!(exit.exit_code, 0);
    assert!(rig.lab.log("att").contains("got one"), "the CRI log still has the output");
}
