//! The client side of a streaming URL over SPDY: the HTTP/1.1 upgrade (`Upgrade: SPDY/3.1`,
//! the subprotocols offered in `X-Stream-Protocol-Version`) on a plain TCP connection, then a
//! session on which the caller opens streams. For the conformance harness and tests.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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

/// `http://host:port/path` into the address and the path.
fn split(url: &str) -> Result<(String, String), DialError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| DialError::Connect(format!("{url}: only http:// URLs are dialled")))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, if path.is_empty() { "/".into() } else { path.to_string() }))
}

/// Upgrades `url` to SPDY/3.1 offering `protocols` (in order of preference).
pub async fn dial(url: &str, protocols: &[&str]) -> Result<Dialed, DialError> {
    let (host, path) = split(url)?;
    let connect = |e: std::io::Error| DialError::Connect(format!("{host}: {e}"));
    let mut tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&host))
        .await
        .map_err(|_| DialError::Connect(format!("{host}: connect timed out")))?
        .map_err(connect)?;
    let _ = tcp.set_nodelay(true);
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
        assert_eq!(split("http://127.0.0.1:9/exec/x").unwrap(), ("127.0.0.1:9".into(), "/exec/x".into()));
        assert_eq!(split("http://node").unwrap(), ("node:80".into(), "/".into()));
        assert!(split("https://node/x").is_err());
    }
}
