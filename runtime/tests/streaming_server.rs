//! The streaming server's transport and limits with real containers (runc under
//! lockstep-monitor): TLS with a certificate chain made by the openssl CLI (an exec over
//! https://, a plain-HTTP client and a client that does not trust the certificate refused,
//! nothing started for them), and the cap on concurrent sessions (503 past it, and the refused
//! URL still works once a session has ended).

mod lab;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use lab::{Lab, MONITOR};
use lockstep_cri::model;
use lockstep_runtime::streaming::process;
use lockstep_runtime::streaming::spdy::dial::{dial_with, DialError};
use lockstep_runtime::streaming::spdy::{Headers, StreamReader};
use lockstep_runtime::streaming::tls::TlsFiles;
use lockstep_runtime::streaming::{Backend, CommandIo, ExecResult, Request, Settings, StreamServer};
use tokio_rustls::rustls;

/// Execs (without a terminal) in the lab's containers, counting those it starts.
struct LabBackend {
    lab: Arc<Lab>,
    execs: AtomicUsize,
}

impl Backend for LabBackend {
    fn exec(&self, request: model::ExecRequest, io: CommandIo) -> BoxFuture<'static, ExecResult> {
        self.execs.fetch_add(1, Ordering::SeqCst);
        let lab = self.lab.clone();
        Box::pin(async move {
            let bundle = lab.dir(&request.container_id).path().join("bundle/config.json");
            let spec: oci_spec::runtime::Spec = serde_json::from_slice(&std::fs::read(bundle).unwrap()).unwrap();
            let mut p = spec.process().clone().unwrap();
            p.set_args(Some(request.cmd.clone()));
            let prepared = lab
                .runtime
                .prepare_exec(&request.container_id, &p, None, Path::new(MONITOR), None)
                .map_err(|e| e.to_string())?;
            process::run(prepared, None, io).await
        })
    }

    fn attach(&self, _: model::AttachRequest, _: CommandIo) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("not in this test".to_string()) })
    }

    fn connect(&self, _: String, _: u16) -> BoxFuture<'static, Result<tokio::net::TcpStream, String>> {
        Box::pin(async { Err("the lab has no pods".to_string()) })
    }
}

struct Rig {
    backend: Arc<LabBackend>,
    server: StreamServer,
}

/// A server on `settings` with one running container, `box`.
async fn rig(settings: Settings) -> Rig {
    let lab = Arc::new(Lab::new("runc"));
    lab.run("box", &Lab::config(&["sleep", "1000"]));
    let backend = Arc::new(LabBackend { lab, execs: AtomicUsize::new(0) });
    let server = StreamServer::start(settings, backend.clone()).await.unwrap();
    Rig { backend, server }
}

impl Rig {
    fn exec_url(&self, cmd: &[&str]) -> String {
        let request = model::ExecRequest {
            container_id: "box".into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdout: true,
            ..Default::default()
        };
        self.server.url(Request::Exec(request)).unwrap()
    }

    fn execs(&self) -> usize {
        self.backend.execs.load(Ordering::SeqCst)
    }
}

fn h(kind: &str) -> Headers {
    vec![("streamtype".to_string(), kind.to_string())]
}

async fn read_all(mut reader: StreamReader) -> String {
    let mut all = Vec::new();
    while let Some(chunk) = reader.read().await {
        all.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// Runs an exec URL (stdout only) to its end: stdout and the error stream.
async fn exec(url: &str, tls: Option<&tokio_rustls::TlsConnector>) -> Result<(String, String), DialError> {
    let dialed = dial_with(url, &["v4.channel.k8s.io"], tls).await?;
    let error = dialed.session.open(h("error")).await.unwrap();
    let stdout = dialed.session.open(h("stdout")).await.unwrap();
    let out = tokio::spawn(read_all(stdout.reader));
    let status = tokio::time::timeout(Duration::from_secs(30), read_all(error.reader)).await.unwrap();
    Ok((out.await.unwrap(), status))
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, the server's files).
fn certificates(dir: &Path) -> (PathBuf, TlsFiles) {
    let certs = lockstep_testkit::certs::make_certs(dir, "127.0.0.1".parse().unwrap());
    (certs.ca, TlsFiles { cert: certs.cert, key: certs.key })
}

/// A client that trusts `ca` alone.
fn connector(ca: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(ca).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_an_exec_runs_over_https_and_nothing_else_gets_in() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, files) = certificates(certs.path());
    let rig = rig(Settings { tls: Some(files), ..Settings::default() }).await;
    let url = rig.exec_url(&["echo", "over tls"]);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // Plain HTTP to the TLS port: no upgrade, the token untouched, nothing started.
    let plain = exec(&url.replacen("https://", "http://", 1), None).await;
    assert!(plain.is_err(), "a plain-HTTP client was served");
    // A client that does not trust the certificate stops at the handshake.
    let strangers = tempfile::tempdir().unwrap();
    let (other_ca, _) = certificates(strangers.path());
    let refused = exec(&url, Some(&connector(&other_ca))).await;
    assert!(matches!(&refused, Err(DialError::Connect(m)) if m.contains("TLS")), "{:?}", refused.err());
    assert_eq!(rig.execs(), 0, "an exec started for a client that never got through");

    let (out, status) = exec(&url, Some(&connector(&ca))).await.unwrap();
    assert_eq!(out, "over tls\n");
    assert!(status.contains("Success"), "{status}");
    assert_eq!(rig.execs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_session_cap_a_request_is_refused_and_may_come_back() {
    let rig = rig(Settings { max_sessions: 1, ..Settings::default() }).await;
    // The one session the cap allows: a command that runs until the client goes.
    let first = dial_with(&rig.exec_url(&["sleep", "60"]), &["v4.channel.k8s.io"], None).await.unwrap();
    let _error = first.session.open(h("error")).await.unwrap();
    let _stdout = first.session.open(h("stdout")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rig.execs() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rig.execs(), 1);

    let url = rig.exec_url(&["echo", "second"]);
    let refused = tokio::time::timeout(Duration::from_secs(10), exec(&url, None)).await.expect("a refusal, not a hang");
    match refused {
        Err(DialError::Refused { status, body }) => {
            assert_eq!(status, 503);
            assert!(body.contains("too many streaming sessions"), "{body}");
        }
        other => panic!("past the cap: {:?}", other.map(|(out, _)| out)),
    }
    assert_eq!(rig.execs(), 1, "the refused request started an exec");

    // The first client goes; its session ends and the same URL is served.
    first.session.gone().cancel();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (out, status) = loop {
        match exec(&url, None).await {
            Ok(done) => break done,
            Err(DialError::Refused { status: 503, .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("after the first session ended: {e}"),
        }
    };
    assert_eq!(out, "second\n");
    assert!(status.contains("Success"), "{status}");
}
