//! Port forwarding over SPDY (`portforward.k8s.io`: per connection the client opens an error
//! and a data stream, paired by their `requestid` header and naming the `port`) and over
//! WebSocket (`v4.channel.k8s.io` and its base64 form: for the n-th requested port, channel
//! 2n carries data and 2n+1 errors, each opening with the port as two little-endian bytes;
//! or `SPDY/3.1+portforward.k8s.io`, the SPDY session inside binary messages).
//! Each connection reaches the port on the pod's loopback through the `Backend`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use lockstep_cri::model;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use super::spdy::{self, headers};
use super::websocket::Channels;
use super::Backend;

pub const SPDY_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
/// WebSocket subprotocols: the channel forms, and SPDY tunnelled in binary messages.
pub const WS_PROTOCOLS: &[&str] = &[
    super::websocket::SPDY_TUNNEL,
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// Copies between a pod connection and the client's data stream until the pod's side ends
/// (as the kubelet's runtimes do); the client's end of data shuts down the pod's input.
async fn bridge(
    conn: tokio::net::TcpStream,
    mut from_client: impl FnMut() -> futures::future::BoxFuture<'static, Option<Bytes>> + Send + 'static,
    to_client: mpsc::Sender<Bytes>,
) {
    let (mut read, mut write) = conn.into_split();
    let upstream = async move {
        while let Some(data) = from_client().await {
            if write.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    };
    let upstream = tokio::spawn(upstream);
    super::process::pump(&mut read, Some(to_client)).await;
    upstream.abort();
}

fn port_of(headers: &spdy::Headers) -> Result<u16, String> {
    let raw = headers::get(headers, "port").ok_or("the stream names no port")?;
    match raw.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid port {raw:?}")),
    }
}

/// The pair a stream belongs to: its `requestid`, or (clients before request ids) the data
/// stream's id, which follows its error stream's by 2.
fn request_key(stream: &spdy::Incoming, kind: &str) -> String {
    match headers::get(&stream.headers, "requestid") {
        Some(id) => id.to_string(),
        None if kind == "data" => format!("#{}", stream.id.saturating_sub(2)),
        None => format!("#{}", stream.id),
    }
}

/// Serves a SPDY port-forward session until the client closes it.
pub async fn serve_spdy(
    request: model::PortForwardRequest,
    session: spdy::Session,
    mut incoming: mpsc::Receiver<spdy::Incoming>,
    backend: Arc<dyn Backend>,
) {
    let mut halves: HashMap<String, (Option<spdy::Incoming>, Option<spdy::Incoming>)> = HashMap::new();
    let gone = session.gone();
    loop {
        let stream = tokio::select! {
            s = incoming.recv() => match s { Some(s) => s, None => break },
            _ = gone.cancelled() => break,
        };
        let kind = headers::get(&stream.headers, "streamtype").unwrap_or("").to_string();
        let key = request_key(&stream, &kind);
        let entry = halves.entry(key.clone()).or_default();
        match kind.as_str() {
            "error" => entry.0 = Some(stream),
            "data" => entry.1 = Some(stream),
            _ => {
                let mut stream = stream;
                stream.writer.reset().await;
                continue;
            }
        }
        if matches!(halves.get(&key), Some((Some(_), Some(_)))) {
            if let Some((Some(error), Some(data))) = halves.remove(&key) {
                tokio::spawn(forward_spdy(request.pod_sandbox_id.clone(), error, data, backend.clone()));
            }
        }
    }
    session.close().await;
}

async fn forward_spdy(sandbox: String, error: spdy::Incoming, data: spdy::Incoming, backend: Arc<dyn Backend>) {
    let mut error_writer = error.writer;
    let mut data_writer = data.writer;
    let connected = match port_of(&data.headers) {
        Ok(port) => backend.connect(sandbox.clone(), port).await.map(|c| (c, port)),
        Err(e) => Err(e),
    };
    let (conn, port) = match connected {
        Ok(c) => c,
        Err(message) => {
            tracing::debug!(sandbox = %sandbox, %message, "port-forward connection refused");
            let _ = error_writer.write(Bytes::from(message)).await;
            error_writer.finish().await;
            data_writer.finish().await;
            return;
        }
    };
    tracing::debug!(sandbox = %sandbox, port, "port-forward connection");
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let sender = tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if data_writer.write(chunk).await.is_err() {
                return;
            }
        }
        data_writer.finish().await;
    });
    let reader = Arc::new(tokio::sync::Mutex::new(data.reader));
    let next = move || -> futures::future::BoxFuture<'static, Option<Bytes>> {
        let reader = reader.clone();
        Box::pin(async move { reader.lock().await.read().await })
    };
    bridge(conn, next, tx).await;
    let _ = sender.await;
    error_writer.finish().await;
}

/// Serves a WebSocket port-forward of the request's ports, all connected at once.
pub async fn serve_ws(request: model::PortForwardRequest, mut channels: Channels, backend: Arc<dyn Backend>) {
    let mut tasks = Vec::new();
    for (n, port) in request.port.iter().enumerate() {
        let (data_channel, error_channel) = ((2 * n) as u8, (2 * n + 1) as u8);
        let from_client = channels.reader(data_channel);
        let to_client = channels.writer(data_channel);
        let errors = channels.writer(error_channel);
        let backend = backend.clone();
        let sandbox = request.pod_sandbox_id.clone();
        let port = *port;
        tasks.push(tokio::spawn(async move {
            let prefix = Bytes::copy_from_slice(&(port as u16).to_le_bytes());
            let _ = to_client.send(prefix.clone()).await;
            let _ = errors.send(prefix).await;
            let port = match u16::try_from(port) {
                Ok(p) if p > 0 => p,
                _ => {
                    let _ = errors.send(Bytes::from(format!("invalid port {port}"))).await;
                    return;
                }
            };
            let conn = match backend.connect(sandbox, port).await {
                Ok(conn) => conn,
                Err(message) => {
                    let _ = errors.send(Bytes::from(message)).await;
                    return;
                }
            };
            let reader = Arc::new(tokio::sync::Mutex::new(from_client));
            let next = move || -> futures::future::BoxFuture<'static, Option<Bytes>> {
                let reader = reader.clone();
                Box::pin(async move {
                    match reader.lock().await.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => None,
                    }
                })
            };
            bridge(conn, next, to_client).await;
        }));
    }
    channels.done();
    for task in tasks {
        let _ = task.await;
    }
}
