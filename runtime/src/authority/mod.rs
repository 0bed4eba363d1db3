//! Lets every gRPC client reach the CRI socket, whatever `:authority` it sends. gRPC C-core
//! (Python's grpcio) and grpc-java send the socket path, its %-encoding or `unix:...`; h2 (under
//! tonic) refuses any authority that is not an RFC 3986 authority and resets each such stream
//! with PROTOCOL_ERROR. [`AuthorityFix`] wraps each accepted connection: what the server writes
//! passes untouched, and of what the client sends only its header blocks are looked at
//! ([`frames`]): a refused `:authority` becomes `localhost`, as Go's gRPC sends it.
//!
//! Why an adapter rather than a patched h2: the change h2 would need (hyperium/h2#487) is not
//! merged, a fork would drift from every h2 release, and this project keeps no upstream code.
//! Clients that send a valid authority (crictl, the kubelet) get their bytes forwarded as they
//! are, decoded only to follow their HPACK context. The HPACK decoder is ours: h2's is private,
//! and the crates are unmaintained (hpack, httlib-hpack) or build hash maps to decode each
//! Huffman string (loona-hpack); RFC 7541 does not change.

mod frames;
mod hpack;
mod huffman;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use frames::{
    ClientFrames, FrameError, MAX_HEADER_BLOCK, REPLACEMENT_AUTHORITY, SERVER_HEADER_TABLE_SIZE, SERVER_MAX_FRAME_SIZE,
};

/// How much is read from the client at once.
const READ_CHUNK: usize = 16 * 1024;

/// A connection whose client header blocks h2 can always accept; see the module header.
pub struct AuthorityFix<S> {
    inner: S,
    frames: ClientFrames,
    /// Read from the client, not yet looked at. Bounded: frames are consumed as they come,
    /// and a header block is collected in `frames` (at most [`MAX_HEADER_BLOCK`]).
    input: BytesMut,
    /// Ready for the server.
    output: BytesMut,
    eof: bool,
    /// A malformed header block met after part of a read was filled: reported next read.
    failed: Option<io::Error>,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            frames: ClientFrames::default(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            eof: false,
            failed: None,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Err(e));
        }
        let start = buf.filled().len();
        while buf.remaining() > 0 {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                continue;
            }
            // Frame payloads other than header blocks go straight to the server.
            let verbatim = this.frames.verbatim().min(this.input.len()).min(buf.remaining());
            if verbatim > 0 {
                buf.put_slice(&this.input[..verbatim]);
                this.input.advance(verbatim);
                this.frames.passed(verbatim);
                continue;
            }
            match this.frames.step(&mut this.input, &mut this.output) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "closing a CRI connection: a header block cannot be passed on");
                    let e = io::Error::new(io::ErrorKind::InvalidData, e);
                    if buf.filled().len() == start {
                        return Poll::Ready(Err(e));
                    }
                    this.failed = Some(e);
                    break;
                }
            }
            // A frame cut short by the end of the stream: the server sees the end.
            if buf.filled().len() > start || this.eof {
                break;
            }
            this.input.reserve(READ_CHUNK);
            match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.input)) {
                Ok(0) => this.eof = true,
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A connection as Python's grpcio opens it: preface, SETTINGS, one request (GET, so that
    /// END_STREAM on HEADERS ends it) whose `:authority` is `authority`.
    fn client_bytes(authority: &[u8]) -> Vec<u8> {
        let mut c = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        c.extend(frame(0x4, 0, 0, &[]));
        let mut block = vec![0x82, 0x86, 0x84]; // GET, http, /
        hpack::encode_literal(&mut block, b":authority", authority, false);
        c.extend(frame(HEADERS, 0x4 | 0x1, 1, &block));
        c
    }

    /// The type and payload of the first frame the server sends on stream 1.
    async fn first_answer(client: &mut DuplexStream) -> (u8, Vec<u8>) {
        loop {
            let mut head = [0u8; 9];
            client.read_exact(&mut head).await.unwrap();
            let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let mut payload = vec![0; len];
            client.read_exact(&mut payload).await.unwrap();
            if u32::from_be_bytes([head[5], head[6], head[7], head[8]]) == 1 {
                return (head[3], payload);
            }
        }
    }

    /// h2's server on `io`: reports each request's authority and answers 200.
    fn serve<T>(io: T) -> tokio::sync::mpsc::UnboundedReceiver<Option<String>>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(io).await.unwrap();
            while let Some(Ok((request, mut respond))) = conn.accept().await {
                let _ = tx.send(request.uri().authority().map(|a| a.to_string()));
                let _ = respond.send_response(http::Response::new(()), true);
            }
        });
        rx
    }

    #[tokio::test]
    async fn h2_serves_a_socket_path_authority_through_the_adapter() {
        for authority in [&b"/run/lockstep/lockstep.sock"[..], b"%2Frun%2Flockstep.sock", b""] {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let mut requests = serve(AuthorityFix::new(server));
            client.write_all(&client_bytes(authority)).await.unwrap();
            let (kind, _) = first_answer(&mut client).await;
            assert_eq!(kind, HEADERS, "a response, not a reset");
            assert_eq!(requests.recv().await.unwrap().as_deref(), Some("localhost"));
        }
    }

    #[tokio::test]
    async fn without_the_adapter_h2_resets_such_a_stream() {
        // What the adapter exists for; should h2 ever accept these, it could go.
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let _requests = serve(server);
        client.write_all(&client_bytes(b"/run/lockstep/lockstep.sock")).await.unwrap();
        let (kind, payload) = first_answer(&mut client).await;
        assert_eq!((kind, payload), (RST_STREAM, vec![0, 0, 0, 1]), "PROTOCOL_ERROR");
    }

    #[tokio::test]
    async fn a_malformed_block_fails_the_read_after_what_came_before() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut fix = AuthorityFix::new(server);
        let good = client_bytes(b"localhost");
        let mut bytes = good.clone();
        bytes.extend(frame(HEADERS, 0x4, 3, &[0x82, 0xff, 0x7f])); // index 254: beyond any table
        client.write_all(&bytes).await.unwrap();
        let mut got = vec![0; good.len()];
        fix.read_exact(&mut got).await.unwrap();
        assert_eq!(got, good, "a valid authority passes as it is");
        let err = fix.read(&mut [0; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("index"), "{err}");
    }
}
