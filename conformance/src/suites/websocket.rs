//! A small WebSocket client (RFC 6455) for the URLs that Exec, Attach and PortForward return:
//! the CRI streaming server of the kubelet's libraries (containerd, CRI-O) speaks the
//! `v4.channel.k8s.io` protocol over WebSocket beside SPDY — every binary message starts with
//! the number of its channel (exec/attach: 0 stdin, 1 stdout, 2 stderr, 3 error; port-forward:
//! 2n data and 2n+1 error of the n-th port). Plain http only; touches nothing but its socket.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

pub const CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// An open WebSocket connection.
pub struct Socket {
    stream: TcpStream,
    /// Bytes read past what has been parsed.
    pending: Vec<u8>,
}

/// `http://host:port/path?query` split into the address and the request target.
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => return Err(format!("{url}: scheme {scheme} (the harness speaks plain http only)")),
        None => return Err(format!("{url} is not an absolute URL")),
    };
    let (host, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(format!("{url} names no host"));
    }
    let host = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, target.to_string()))
}

/// One frame as it goes on the wire from a client: FIN set, masked with `key`.
pub fn client_frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// One frame read off the wire.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
    /// How many bytes of the buffer it took.
    pub used: usize,
}

/// A whole frame at the start of `buf`, or None if more bytes are needed.
pub fn parse_frame(buf: &[u8]) -> Result<Option<Frame>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (fin, opcode, masked) = (buf[0] & 0x80 != 0, buf[0] & 0x0f, buf[1] & 0x80 != 0);
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (usize::try_from(u64::from_be_bytes(b)).map_err(|_| "a frame too large to hold".to_string())?, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    let key = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let k = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(k)
    } else {
        None
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    let mut payload = buf[at..at + len].to_vec();
    if let Some(k) = key {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= k[i % 4]);
    }
    Ok(Some(Frame { fin, opcode, payload, used: at + len }))
}

fn mask_key() -> [u8; 4] {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    nanos.to_le_bytes()
}

impl Socket {
    /// Opens `url` asking for `protocol`; fails unless the server switches protocols.
    pub async fn connect(url: &str, protocol: &str) -> Result<Socket, String> {
        let (host, target) = split_url(url)?;
        let mut stream = TcpStream::connect(&host).await.map_err(|e| format!("cannot connect to {host}: {e}"))?;
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: bG9ja3N0ZXAtY29uZm9ybQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {protocol}\r\nOrigin: http://{host}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("cannot write to {host}: {e}"))?;
        let mut pending = Vec::new();
        let end = loop {
            if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.map_err(|e| format!("reading the handshake from {host}: {e}"))?;
            if n == 0 {
                return Err(format!("{host} closed the connection during the handshake"));
            }
            pending.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        let status = head.lines().next().unwrap_or("");
        if status.split_whitespace().nth(1) != Some("101") {
            return Err(format!("{url} answered the WebSocket upgrade with {status:?}"));
        }
        pending.drain(..end);
        Ok(Socket { stream, pending })
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        let frame = client_frame(opcode, payload, mask_key());
        self.stream.write_all(&frame).await.map_err(|e| format!("cannot send a frame: {e}"))
    }

    /// Sends `data` on `channel`.
    pub async fn send_channel(&mut self, channel: u8, data: &[u8]) -> Result<(), String> {
        let mut payload = vec![channel];
        payload.extend_from_slice(data);
        self.send(OP_BINARY, &payload).await
    }

    /// The next whole message (text or binary); None once the server closed. Pings are answered.
    pub async fn message(&mut self) -> Result<Option<Vec<u8>>, String> {
        let mut message: Vec<u8> = Vec::new();
        loop {
            match parse_frame(&self.pending)? {
                Some(Frame { fin, opcode, payload, used }) => {
                    self.pending.drain(..used);
                    match opcode {
                        OP_CLOSE => {
                            let _ = self.send(OP_CLOSE, &[]).await;
                            return Ok(None);
                        }
                        OP_PING => self.send(OP_PONG, &payload).await?,
                        OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                            message.extend_from_slice(&payload);
                            if fin {
                                return Ok(Some(message));
                            }
                        }
                        _ => {}
                    }
                }
                None => {
                    let mut chunk = [0u8; 16384];
                    let n = self.stream.read(&mut chunk).await.map_err(|e| format!("reading a frame: {e}"))?;
                    if n == 0 {
                        return Ok(None);
                    }
                    self.pending.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    /// Reads channel messages until the server closes (or `limit` passes, or `enough` holds for
    /// what arrived), and returns each channel's bytes in order.
    pub async fn read_channels(
        &mut self,
        limit: Duration,
        enough: impl Fn(&BTreeMap<u8, Vec<u8>>) -> bool,
    ) -> Result<BTreeMap<u8, Vec<u8>>, String> {
        let mut channels: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + limit;
        while !enough(&channels) {
            let next = tokio::time::timeout_at(deadline, self.message()).await;
            match next {
                Err(_) => return Err(format!("the stream did not end within {limit:?}; got {:?}", shown(&channels))),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(m))) => {
                    if let Some((channel, data)) = m.split_first() {
                        channels.entry(*channel).or_default().extend_from_slice(data);
                    }
                }
            }
        }
        Ok(channels)
    }

    /// Ends the connection politely.
    pub async fn close(mut self) {
        let _ = self.send(OP_CLOSE, &[]).await;
    }
}

/// Channel contents as text, for failure messages.
pub fn shown(channels: &BTreeMap<u8, Vec<u8>>) -> BTreeMap<u8, String> {
    channels.iter().map(|(c, d)| (*c, String::from_utf8_lossy(d).into_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_target() {
        assert_eq!(
            split_url("http://127.0.0.1:35555/exec/AbC?x=1").unwrap(),
            ("127.0.0.1:35555".to_string(), "/exec/AbC?x=1".to_string())
        );
        assert_eq!(split_url("http://node").unwrap(), ("node:80".to_string(), "/".to_string()));
        assert!(split_url("https://127.0.0.1:1/exec").unwrap_err().contains("plain http"));
        assert!(split_url("/exec/abc").is_err());
    }

    #[test]
    fn frames_round_trip_with_every_length_form() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = client_frame(OP_BINARY, &payload, [1, 2, 3, 4]);
            let back = parse_frame(&frame).unwrap().unwrap();
            assert_eq!(back, Frame { fin: true, opcode: OP_BINARY, payload, used: frame.len() }, "length {len}");
            assert!(parse_frame(&frame[..frame.len() - 1]).unwrap().is_none(), "a cut frame waits for more");
        }
        // A server frame is not masked.
        let frame = parse_frame(&[0x02, 3, 1, b'h', b'i']).unwrap().unwrap();
        assert_eq!(frame, Frame { fin: false, opcode: OP_BINARY, payload: vec![1, b'h', b'i'], used: 5 });
    }
}
