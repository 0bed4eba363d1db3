//! The HTTP side of the streaming server (hyper, HTTP/1.1): `/exec/<token>`,
//! `/attach/<token>` and `/portforward/<token>`. The token is taken first — unknown, expired or
//! already used is 404 and nothing starts — then the connection is upgraded to SPDY/3.1
//! (`X-Stream-Protocol-Version` negotiates the subprotocol) or WebSocket
//! (`Sec-WebSocket-Protocol`), and handed to the protocol's module. Sessions hold a permit
//! from the upgrade to their end; past `stream_max_sessions` a request is answered 503 (with
//! Retry-After) before its token is looked at, so the same URL may be tried again. With TLS,
//! each connection's handshake comes first (on its own task, bounded in time).

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, Method, Request as HttpRequest, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::tokens::Tokens;
use super::websocket::{self, Framing};
use super::{portforward, remotecommand, spdy, Activity, Backend, Request};

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// The sessions that may run at once.
#[derive(Clone)]
pub struct Sessions {
    permits: Arc<Semaphore>,
    max: usize,
}

impl Sessions {
    pub fn new(max: usize) -> Sessions {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Sessions { permits: Arc::new(Semaphore::new(max)), max }
    }

    fn try_start(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }
}

/// What every session is held to.
#[derive(Clone)]
pub struct Limits {
    pub idle: Duration,
    pub sessions: Sessions,
}

/// Accepts connections for the daemon's life.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tokens: Arc<Tokens<Request>>,
    backend: Arc<dyn Backend>,
    limits: Limits,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "streaming server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (tokens, backend, limits, tls) = (tokens.clone(), backend.clone(), limits.clone(), tls.clone());
        tokio::spawn(async move {
            let Some(tls) = tls else { return connection(tcp, peer, tokens, backend, limits).await };
            match tokio::time::timeout(TLS_HANDSHAKE, tls.accept(tcp)).await {
                Ok(Ok(stream)) => connection(stream, peer, tokens, backend, limits).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "streaming TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "streaming TLS handshake timed out"),
            }
        });
    }
}

/// Serves one connection's HTTP/1.1 requests (and its upgrade).
async fn connection<IO>(
    io: IO,
    peer: std::net::SocketAddr,
    tokens: Arc<Tokens<Request>>,
    backend: Arc<dyn Backend>,
    limits: Limits,
) where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let (tokens, backend, limits) = (tokens.clone(), backend.clone(), limits.clone());
        async move { Ok::<_, std::convert::Infallible>(route(req, &tokens, backend, &limits)) }
    });
    let served =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service).with_upgrades().await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "streaming connection ended with an error");
    }
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response<String> {
    let mut response = Response::new(text.into());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    response
}

/// Every value of `name`, comma lists split, in the client's order.
fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The client's first protocol that the server speaks.
pub fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    offered.iter().find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
}

enum Kind {
    Spdy,
    WebSocket,
}

fn upgrade_kind(headers: &HeaderMap) -> Option<Kind> {
    let upgrade = headers.get(header::UPGRADE)?.to_str().ok()?.to_ascii_lowercase();
    if upgrade.contains("websocket") {
        Some(Kind::WebSocket)
    } else if upgrade.contains("spdy/3.1") {
        Some(Kind::Spdy)
    } else {
        None
    }
}

fn route(
    mut req: HttpRequest<Incoming>,
    tokens: &Tokens<Request>,
    backend: Arc<dyn Backend>,
    limits: &Limits,
) -> Response<String> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET or POST\n");
    }
    let idle = limits.idle;
    // Before the token: a refused client may use its URL again once a session ends.
    let Some(permit) = limits.sessions.try_start() else {
        let max = limits.sessions.max;
        tracing::info!(max, "streaming session refused: the limit is reached");
        let mut response =
            plain(StatusCode::SERVICE_UNAVAILABLE, format!("too many streaming sessions (the limit is {max})\n"));
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    };
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() || token.contains('/') {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    // Taken whatever follows: a token works once.
    let Some(request) = tokens.take(token) else {
        return plain(StatusCode::NOT_FOUND, "unknown, expired or already used token\n");
    };
    let matches_path = matches!(
        (&request, kind),
        (Request::Exec(_), "exec") | (Request::Attach(_), "attach") | (Request::PortForward(_), "portforward")
    );
    if !matches_path {
        return plain(StatusCode::NOT_FOUND, "the token is not for this path\n");
    }
    let is_forward = matches!(request, Request::PortForward(_));
    match upgrade_kind(req.headers()) {
        Some(Kind::Spdy) => {
            let supported = if is_forward { portforward::SPDY_PROTOCOLS } else { remotecommand::SPDY_PROTOCOLS };
            let offered = values(req.headers(), PROTOCOL_HEADER);
            let protocol = if offered.is_empty() {
                // Clients older than protocol negotiation speak the first version.
                supported[supported.len() - 1]
            } else {
                match negotiate(&offered, supported) {
                    Some(p) => p,
                    None => {
                        let mut response = plain(StatusCode::FORBIDDEN, "no common stream protocol\n");
                        if let Ok(v) = header::HeaderValue::from_str(&supported.join(", ")) {
                            response.headers_mut().insert(ACCEPTED_HEADER, v);
                        }
                        return response;
                    }
                }
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let _permit = permit;
                let upgraded = match on_upgrade.await {
                    Ok(u) => u,
                    Err(e) => return tracing::debug!(error = %e, "SPDY upgrade failed"),
                };
                let activity = Activity::new();
                let (session, incoming) = spdy::start(TokioIo::new(upgraded), activity.clone());
                activity.watch(idle, session.gone());
                match request {
                    Request::Exec(r) => {
                        let command = remotecommand::Command::Exec(r);
                        remotecommand::serve_spdy(command, protocol, session, incoming, backend).await
                    }
                    Request::Attach(r) => {
                        let command = remotecommand::Command::Attach(r);
                        remotecommand::serve_spdy(command, protocol, session, incoming, backend).await
                    }
                    Request::PortForward(r) => portforward::serve_spdy(r, session, incoming, backend).await,
                }
            });
            let mut response = plain(StatusCode::SWITCHING_PROTOCOLS, "");
            let h = response.headers_mut();
            h.insert(header::CONNECTION, header::HeaderValue::from_static("Upgrade"));
            h.insert(header::UPGRADE, header::HeaderValue::from_static("SPDY/3.1"));
            h.insert(PROTOCOL_HEADER, header::HeaderValue::from_static(protocol));
            h.remove(header::CONTENT_TYPE);
            response
        }
        Some(Kind::WebSocket) => {
            let Some(key) = req.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec()) else {
                return plain(StatusCode::BAD_REQUEST, "a WebSocket upgrade without Sec-WebSocket-Key\n");
            };
            let supported = if is_forward { portforward::WS_PROTOCOLS } else { remotecommand::WS_PROTOCOLS };
            let offered = values(req.headers(), "sec-websocket-protocol");
            let (protocol, echoed) = if offered.is_empty() {
                ("channel.k8s.io", false)
            } else {
                match negotiate(&offered, supported) {
                    Some(p) => (p, true),
                    None => return plain(StatusCode::FORBIDDEN, format!("no common protocol; speaks {supported:?}\n")),
                }
            };
            let framing = Framing { base64: protocol.contains("base64"), close_signal: protocol.starts_with("v5.") };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let _permit = permit;
                let upgraded = match on_upgrade.await {
                    Ok(u) => u,
                    Err(e) => return tracing::debug!(error = %e, "WebSocket upgrade failed"),
                };
                let activity = Activity::new();
                if protocol == websocket::SPDY_TUNNEL {
                    if let Request::PortForward(r) = request {
                        let stream = websocket::tunnel(TokioIo::new(upgraded), activity.clone()).await;
                        let (session, incoming) = spdy::start(stream, activity.clone());
                        activity.watch(idle, session.gone());
                        portforward::serve_spdy(r, session, incoming, backend).await;
                    }
                    return;
                }
                let readable: Vec<u8> = match &request {
                    Request::PortForward(r) => (0..r.port.len()).map(|n| (2 * n) as u8).collect(),
                    _ => vec![0, 4],
                };
                let channels = websocket::start(TokioIo::new(upgraded), framing, &readable, activity.clone()).await;
                activity.watch(idle, channels.gone.clone());
                match request {
                    Request::Exec(r) => {
                        remotecommand::serve_ws(remotecommand::Command::Exec(r), protocol, channels, backend).await
                    }
                    Request::Attach(r) => {
                        remotecommand::serve_ws(remotecommand::Command::Attach(r), protocol, channels, backend).await
                    }
                    Request::PortForward(r) => portforward::serve_ws(r, channels, backend).await,
                }
            });
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
            let mut response = plain(StatusCode::SWITCHING_PROTOCOLS, "");
            let h = response.headers_mut();
            h.remove(header::CONTENT_TYPE);
            h.insert(header::CONNECTION, header::HeaderValue::from_static("Upgrade"));
            h.insert(header::UPGRADE, header::HeaderValue::from_static("websocket"));
            if let Ok(v) = header::HeaderValue::from_str(&accept) {
                h.insert("sec-websocket-accept", v);
            }
            if echoed {
                h.insert("sec-websocket-protocol", header::HeaderValue::from_static(protocol));
            }
            response
        }
        None => plain(StatusCode::BAD_REQUEST, "the streaming URL must be upgraded to SPDY/3.1 or WebSocket\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_first_known_protocol_wins() {
        let offered = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            negotiate(&offered(&["v5.channel.k8s.io", "v4.channel.k8s.io"]), remotecommand::SPDY_PROTOCOLS),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate(&offered(&["v4.base64.channel.k8s.io", "v5.channel.k8s.io"]), remotecommand::WS_PROTOCOLS),
            Some("v4.base64.channel.k8s.io")
        );
        assert_eq!(negotiate(&offered(&["v9"]), portforward::SPDY_PROTOCOLS), None);
        let mut headers = HeaderMap::new();
        headers.append(PROTOCOL_HEADER, "v4.channel.k8s.io, v3.channel.k8s.io".parse().unwrap());
        headers.append(PROTOCOL_HEADER, "channel.k8s.io".parse().unwrap());
        assert_eq!(values(&headers, PROTOCOL_HEADER), ["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"]);
    }
}
