//! Tiny HTTP(S) servers for the registry client's tests: each request is recorded (method,
//! target, headers) and answered by the test's own function; TLS with certificates made by
//! the openssl command line. Only what a test needs to play a registry, a token service or a
//! mirror that misbehaves; the real registry is Debian's docker-registry elsewhere.

#![allow(dead_code)]

pub mod proxy;

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An answer: status, headers, body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The connection is closed after this many bytes of the body (its Content-Length still
    /// announcing all of it): a transfer that breaks.
    pub cut_after: Option<usize>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: Vec::new(), body: body.into(), cut_after: None }
    }
    pub fn cut_after(mut self, bytes: usize) -> Response {
        self.cut_after = Some(bytes);
        self
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    pub fn redirect(location: impl Into<String>) -> Response {
        Response::new(307, Vec::new()).header("Location", location)
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A running server: where it listens and what it was asked.
pub struct Server {
    pub host: String,
    pub seen: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves `handler` on `ip` (a free port), over TLS when `tls` is given, until the test ends.
pub async fn serve(ip: std::net::IpAddr, tls: Option<tokio_rustls::TlsAcceptor>, handler: Handler) -> Server {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (tls, handler, seen) = (tls.clone(), handler.clone(), recorded.clone());
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            answer(stream, &handler, &seen).await;
                        }
                    }
                    None => answer(stream, &handler, &seen).await,
                }
            });
        }
    });
    Server { host, seen }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, handler: &Handler, seen: &Mutex<Vec<Request>>) {
    let Some(request) = read_request(&mut stream).await else { return };
    seen.lock().unwrap().push(request.clone());
    let response = handler(&request);
    let mut head =
        format!("HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n", response.status, response.body.len());
    for (k, v) in &response.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let sent = response.cut_after.unwrap_or(response.body.len()).min(response.body.len());
    let _ = stream.write_all(&response.body[..sent]).await;
    let _ = stream.shutdown().await;
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !buf[0].is_ascii_alphabetic() {
            return None; // a TLS hello on a plain port
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    Some(Request { method, target, headers })
}

/// This machine's address on its default route: not loopback, so the client treats a registry
/// there as it would a remote one.
pub fn host_ip() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("198.51.100.1:9").expect("a default route (the test needs a non-loopback address)");
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "{ip}");
    ip
}

use lockstep_testkit::certs::Certs;

pub fn tls_acceptor(certs: &Certs) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_file(&certs.cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(&certs.key).unwrap();
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The manifest, config and layers of `image`, as a registry answers for any repository
/// (tag `1` or the manifest's digest); None for anything else.
pub fn image_content(image: &lockstep_testkit::fixtures::oci::Image, request: &Request) -> Option<Response> {
    use lockstep_testkit::fixtures::oci;
    let path = request.target.split('?').next().unwrap_or("");
    if path.ends_with("/manifests/1") || path.ends_with(&format!("/manifests/{}", image.manifest_digest)) {
        return Some(Response::new(200, image.manifest.clone()).header("Content-Type", oci::OCI_MANIFEST));
    }
    let digest = path.rsplit('/').next().unwrap_or("");
    if digest == image.config_digest {
        return Some(Response::new(200, image.config.clone()));
    }
    image.layers.iter().find(|l| l.digest == digest).map(|l| Response::new(200, l.blob.clone()))
}
