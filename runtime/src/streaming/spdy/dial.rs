//! The client side of a streaming URL over SPDY: the HTTP/1.1 upgrade (`Upgrade: SPDY/3.1`,
//! the subprotocols offered in `X-Stream-Protocol-Version`) on a TCP connection — plain for
//! http:// URLs, TLS through the caller's connector for https:// ones — then a session on which
//! the caller opens streams. For the conformance harness and tests.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::session::{self, Incoming, Session};
use crate::streaming::Activity;

/// An upgraded connection: the session, the subprotocol the server chose, and the
/// server's streams (none in the Kubernetes protocols).
pub struct Dialed {
    pub session: Session,
    pub protocol: String,
    pub incoming: tokio::sync::mpsc::Receiver<Incoming>,
}

/// The HTTP status of a refused upgrade, with the server's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("{0}")]
    Connect(String),
    #[error("the server answered {status}: {body:?}")]
    Refused { status: u16, body: String },
}

/// `http[s]://host:port/path` into whether it is TLS, the address and the path.
fn split(url: &str) -> Result<(bool, String, String), DialError> {
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err(DialError::Connect(format!("{url}: only http:// and https:// URLs are dialled"))),
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host.to_string()
    } else {
        format!("{host}:{}", if tls { 443 } else { 80 })
    };
    Ok((tls, host, if path.is_empty() { "/".into() } else { path.to_string() }))
}

/// Upgrades `url` (http://) to SPDY/3.1 offering `protocols` (in order of preference).
pub async fn dial(url: &str, protocols: &[&str]) -> Result<Dialed, DialError> {
    dial_with(url, protocols, None).await
}

/// As `dial`; an https:// URL is dialled through `tls`, the certificate checked for the URL's
/// host.
pub async fn dial_with(url: &str, protocols: &[&str], tls: Option<&TlsConnector>) -> Result<Dialed, DialError> {
    let (secure, host, path) = split(url)?;
    let connect = |e: std::io::Error| DialError::Connect(format!("{host}: {e}"));
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&host))
        .await
        .map_err(|_| DialError::Connect(format!("{host}: connect timed out")))?
        .map_err(connect)?;
    let _ = tcp.set_nodelay(true);
    if !secure {
        return upgrade(tcp, &host, &path, protocols).await;
    }
    let tls = tls.ok_or_else(|| DialError::Connect(format!("{url}: an https:// URL needs a TLS configuration")))?;
    let name =
        host.rsplit_once(':').map_or(host.as_str(), |(name, _)| name).trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(name.to_string())
        .map_err(|e| DialError::Connect(format!("{host}: not a TLS server name: {e}")))?;
    let stream = tokio::time::timeout(Duration::from_secs(10), tls.connect(name, tcp))
        .await
        .map_err(|_| DialError::Connect(format!("{host}: TLS handshake timed out")))?
        .map_err(|e| DialError::Connect(format!("{host}: TLS handshake: {e}")))?;
    upgrade(stream, &host, &path, protocols).await
}

/// The upgrade request and response on `io`, then the session.
async fn upgrade<IO>(mut tcp: IO, host: &str, path: &str, protocols: &[&str]) -> Result<Dialed, DialError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let connect = |e: std::io::Error| DialError::Connect(format!("{host}: {e}"));
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for p in protocols {
        request.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.map_err(connect)?;
    // The head, a byte at a time: the session's first frame may follow it at once.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(DialError::Connect(format!("{host}: an endless response head")));
        }
        let mut byte = [0u8; 1];
        let n = tcp.read(&mut byte).await.map_err(connect)?;
        if n == 0 {
            return Err(DialError::Connect(format!("{host} closed the connection during the upgrade")));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if status != 101 {
        // What the server says why: a short body, if any.
        let mut body = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut body)).await.ok().and_then(Result::ok);
        body.truncate(n.unwrap_or(0));
        return Err(DialError::Refused { status, body: String::from_utf8_lossy(&body).trim().to_string() });
    }
    let protocol = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim().eq_ignore_ascii_case("x-stream-protocol-version").then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    let (session, incoming) = session::start(tcp, Activity::new());
    Ok(Dialed { session, protocol, incoming })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(split("http://127.0.0.1:9/exec/x").unwrap(), (false, "127.0.0.1:9".into(), "/exec/x".into()));
        assert_eq!(split("http://node").unwrap(), (false, "node:80".into(), "/".into()));
        assert_eq!(split("https://node/x").unwrap(), (true, "node:443".into(), "/x".into()));
        assert!(split("ftp://node/x").is_err());
    }
}
