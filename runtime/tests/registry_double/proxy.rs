//! A forward HTTP proxy for the tests: CONNECT tunnels (HTTPS) and absolute-form requests (plain
//! HTTP), each connection piped to the host it names; with credentials it answers 407 to a
//! request without the right Proxy-Authorization. It records the first line of each request.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Proxy {
    /// `127.0.0.1:PORT`
    pub host: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// The first line of each request it got (`CONNECT host:port HTTP/1.1`, `GET http://…`).
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts a proxy on loopback; with `credentials`, only requests that carry them are served.
pub async fn start(credentials: Option<(&str, &str)>) -> Proxy {
    use base64::Engine as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let wanted = credentials.map(|(user, password)| {
        format!("Basic {}", base64::prelude::BASE64_STANDARD.encode(format!("{user}:{password}")))
    });
    let recorded = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { return };
            let (seen, wanted) = (recorded.clone(), wanted.clone());
            tokio::spawn(async move {
                let _ = serve(client, &seen, wanted.as_deref()).await;
            });
        }
    });
    Proxy { host, seen }
}

async fn serve(
    mut client: tokio::net::TcpStream,
    seen: &Mutex<Vec<String>>,
    wanted: Option<&str>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let first = text.lines().next().unwrap_or_default().to_string();
    seen.lock().unwrap().push(first.clone());
    if let Some(wanted) = wanted {
        let authorized = text.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| k.eq_ignore_ascii_case("proxy-authorization") && v.trim() == wanted)
        });
        if !authorized {
            client
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    }
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let origin = if method == "CONNECT" {
        target.to_string()
    } else {
        let rest = target.strip_prefix("http://").unwrap_or(target);
        rest.split('/').next().unwrap_or_default().to_string()
    };
    let mut upstream = tokio::net::TcpStream::connect(&origin).await?;
    if method == "CONNECT" {
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
    } else {
        upstream.write_all(&head).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
