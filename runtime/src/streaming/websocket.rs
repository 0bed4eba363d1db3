//! The Kubernetes channel protocols over WebSocket (RFC 6455, framing by tungstenite): every
//! message starts with its channel number — a byte in the binary protocols, an ASCII digit
//! followed by base64 in the `base64.` ones. `v5.channel.k8s.io` adds channel 255, on which
//! the client closes one of its channels (`[255, n]`). A malformed frame or message ends this
//! connection only. `tunnel` carries a byte stream instead (SPDY inside binary messages, the
//! `SPDY/3.1+portforward.k8s.io` protocol of newer kubectl and crictl port-forward).

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::Activity;

/// The channel on which a v5 client closes one of its own.
pub const CLOSE_CHANNEL: u8 = 255;
/// The largest message accepted from a client (kubectl sends at most 32 KiB at a time).
const MAX_MESSAGE: usize = 4 << 20;
/// Messages a channel's inbound queue holds before the reader waits.
const INBOUND_MESSAGES: usize = 4;

/// How messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub base64: bool,
    /// Channel 255 closes a client channel (v5).
    pub close_signal: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("a message without a channel number")]
    Empty,
    #[error("a base64 message whose channel {0:?} is not a digit")]
    BadChannel(char),
    #[error("a base64 message that does not decode: {0}")]
    BadBase64(String),
    #[error("a {0} message where the protocol carries {1}")]
    WrongKind(&'static str, &'static str),
}

/// A client message as (channel, data); None for control messages (ping, pong, close).
pub fn decode(message: Message, framing: Framing) -> Result<Option<(u8, Bytes)>, ChannelError> {
    match (message, framing.base64) {
        (Message::Binary(data), false) => {
            let channel = *data.first().ok_or(ChannelError::Empty)?;
            Ok(Some((channel, data.slice(1..))))
        }
        (Message::Text(text), true) => {
            let text = text.as_str();
            let digit = text.chars().next().ok_or(ChannelError::Empty)?;
            let channel = digit.to_digit(10).ok_or(ChannelError::BadChannel(digit))? as u8;
            let data = base64::engine::general_purpose::STANDARD
                .decode(&text[1..])
                .map_err(|e| ChannelError::BadBase64(e.to_string()))?;
            Ok(Some((channel, Bytes::from(data))))
        }
        (Message::Binary(_), true) => Err(ChannelError::WrongKind("binary", "base64 text")),
        (Message::Text(_), false) => Err(ChannelError::WrongKind("text", "binary")),
        _ => Ok(None),
    }
}

/// `data` on `channel` as a message.
pub fn encode(channel: u8, data: &[u8], framing: Framing) -> Message {
    if framing.base64 {
        let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        text.push(char::from(b'0' + channel % 10));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
        Message::Text(text.into())
    } else {
        let mut bytes = Vec::with_capacity(1 + data.len());
        bytes.push(channel);
        bytes.extend_from_slice(data);
        Message::Binary(bytes.into())
    }
}

/// An open connection's channels: take the readers and writers the protocol uses, drop the
/// rest. The connection closes once every writer is dropped and its data sent.
pub struct Channels {
    readers: HashMap<u8, mpsc::Receiver<Bytes>>,
    out: Option<mpsc::Sender<(u8, Bytes)>>,
    pub gone: CancellationToken,
}

impl Channels {
    /// What the client sends on `channel`; None once taken or if not readable.
    pub fn reader(&mut self, channel: u8) -> Option<mpsc::Receiver<Bytes>> {
        self.readers.remove(&channel)
    }

    /// A sender for `channel`; each message sent becomes one WebSocket message.
    pub fn writer(&self, channel: u8) -> mpsc::Sender<Bytes> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(4);
        if let Some(out) = self.out.clone() {
            tokio::spawn(async move {
                while let Some(data) = rx.recv().await {
                    if out.send((channel, data)).await.is_err() {
                        break;
                    }
                }
            });
        }
        tx
    }

    /// Gives up this handle's own sender: the connection ends when the writers are gone.
    pub fn done(&mut self) {
        self.out = None;
    }
}

/// Starts the reader and writer of an upgraded connection; `readable` are the channels the
/// client may send on (others' messages are dropped).
pub async fn start<IO>(io: IO, framing: Framing, readable: &[u8], activity: Activity) -> Channels
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (mut sink, mut stream) = ws.split();
    let gone = CancellationToken::new();
    let mut inbound = HashMap::new();
    let mut readers = HashMap::new();
    for &channel in readable {
        let (tx, rx) = mpsc::channel(INBOUND_MESSAGES);
        inbound.insert(channel, tx);
        readers.insert(channel, rx);
    }
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(16);

    let writer_gone = gone.clone();
    let writer_activity = activity.clone();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! { n = out_rx.recv() => n, _ = writer_gone.cancelled() => None };
            let Some((channel, data)) = next else { break };
            writer_activity.touch();
            if sink.send(encode(channel, &data, framing)).await.is_err() {
                writer_gone.cancel();
                return;
            }
        }
        // A normal closure (1000): clients (Go's gorilla) take a close without a code as an error.
        let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = sink.close().await;
        // The client answers the close; if it does not, the reader stops here.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        writer_gone.cancel();
    });

    let reader_gone = gone.clone();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! { n = stream.next() => n, _ = reader_gone.cancelled() => break };
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "WebSocket streaming connection ended by a bad frame");
                    break;
                }
                None => break,
            };
            activity.touch();
            if matches!(message, Message::Close(_)) {
                break;
            }
            match decode(message, framing) {
                Ok(Some((CLOSE_CHANNEL, data))) if framing.close_signal => {
                    if let Some(channel) = data.first() {
                        inbound.remove(channel);
                    }
                }
                Ok(Some((channel, data))) => {
                    if let Some(tx) = inbound.get(&channel) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            inbound.remove(&channel);
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket streaming connection ended by a bad message");
                    break;
                }
            }
        }
        // The client's input ends with the connection.
        drop(inbound);
        reader_gone.cancel();
    });
    Channels { readers, out: Some(out_tx), gone }
}

/// The WebSocket subprotocol whose binary messages carry a SPDY/3.1 port-forward session.
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// A byte stream through an upgraded connection's binary messages: what is written to the
/// returned end goes out in messages, what arrives in them is read from it. The client's
/// close ends the stream; the stream's end sends a normal close.
pub async fn tunnel<IO>(io: IO, activity: Activity) -> tokio::io::DuplexStream
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (mut sink, mut stream) = ws.split();
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut from_ws, mut to_ws) = tokio::io::split(theirs);
    let inbound_activity = activity.clone();
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            inbound_activity.touch();
            match message {
                Message::Binary(data) if to_ws.write_all(&data).await.is_err() => break,
                Message::Binary(_) => {}
                Message::Close(_) => break,
                Message::Text(_) => {
                    tracing::debug!("a text message in a SPDY tunnel; ending it");
                    break;
                }
                _ => {}
            }
        }
        let _ = to_ws.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_ws.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    activity.touch();
                    if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        return;
                    }
                }
            }
        }
        let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = sink.close().await;
    });
    ours
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt as _;

    const BINARY: Framing = Framing { base64: false, close_signal: true };
    const BASE64: Framing = Framing { base64: true, close_signal: false };

    #[test]
    fn binary_and_base64_messages_round_trip() {
        for framing in [BINARY, BASE64] {
            for data in [&b""[..], b"hello", &[0, 255, 3, 4]] {
                let message = encode(2, data, framing);
                assert_eq!(decode(message, framing).unwrap(), Some((2, Bytes::copy_from_slice(data))));
            }
        }
        assert_eq!(encode(1, b"hi", BASE64), Message::Text("1aGk=".into()));
        assert_eq!(encode(1, b"hi", BINARY), Message::Binary(Bytes::from_static(&[1, b'h', b'i'])));
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(decode(Message::Binary(Bytes::new()), BINARY), Err(ChannelError::Empty));
        assert_eq!(decode(Message::Text("x4aGk=".into()), BASE64), Err(ChannelError::BadChannel('x')));
        assert!(matches!(decode(Message::Text("0!!!".into()), BASE64), Err(ChannelError::BadBase64(_))));
        assert!(matches!(decode(Message::Text("0".into()), BINARY), Err(ChannelError::WrongKind(..))));
        assert_eq!(decode(Message::Ping(Bytes::new()), BINARY), Ok(None));
    }

    async fn client(io: tokio::io::DuplexStream) -> WebSocketStream<tokio::io::DuplexStream> {
        WebSocketStream::from_raw_socket(io, Role::Client, None).await
    }

    #[tokio::test]
    async fn channels_carry_data_and_v5_closes_one() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut channels = start(b, BINARY, &[0, 4], Activity::new()).await;
        let mut ws = client(a).await;
        let mut stdin = channels.reader(0).unwrap();
        let stdout = channels.writer(1);
        channels.done();
        ws.send(Message::Binary(Bytes::from_static(&[0, b'i', b'n']))).await.unwrap();
        assert_eq!(stdin.recv().await.unwrap(), Bytes::from_static(b"in"));
        ws.send(Message::Binary(Bytes::from_static(&[CLOSE_CHANNEL, 0]))).await.unwrap();
        assert!(stdin.recv().await.is_none(), "channel 255 closed stdin");
        stdout.send(Bytes::from_static(b"out")).await.unwrap();
        drop(stdout);
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::Binary(Bytes::from_static(&[1, b'o', b'u', b't'])));
        let close = ws.next().await.unwrap().unwrap();
        assert!(
            matches!(&close, Message::Close(Some(f)) if f.code == CloseCode::Normal),
            "the last writer closed it, normally: {close:?}"
        );
    }

    #[tokio::test]
    async fn a_tunnel_carries_bytes_in_binary_messages() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (a, b) = tokio::io::duplex(1 << 16);
        let (mut stream, mut ws) = tokio::join!(tunnel(b, Activity::new()), client(a));
        ws.send(Message::Binary(Bytes::from_static(b"spdy "))).await.unwrap();
        ws.send(Message::Binary(Bytes::from_static(b"bytes"))).await.unwrap();
        let mut got = [0u8; 10];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"spdy bytes", "messages are one byte stream");
        stream.write_all(b"back").await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::Binary(Bytes::from_static(b"back")));
        stream.shutdown().await.unwrap();
        drop(stream);
        assert!(matches!(ws.next().await.unwrap().unwrap(), Message::Close(Some(f)) if f.code == CloseCode::Normal));
    }

    #[tokio::test]
    async fn a_malformed_frame_ends_the_connection() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut channels = start(b, BINARY, &[0], Activity::new()).await;
        let mut stdin = channels.reader(0).unwrap();
        // An unmasked frame from a client with a reserved opcode: both forbidden.
        a.write_all(&[0x83, 0x01, 0x00]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), channels.gone.cancelled()).await.unwrap();
        assert!(stdin.recv().await.is_none());
    }
}
