//! One SPDY/3.1 connection: a reader task that parses frames and hands each stream the peer
//! opens to the protocol code, and a writer task that owns the socket's write half and the
//! header compressor. The server side accepts streams; `Session::open` is the client side
//! (the conformance harness and the tests speak SPDY with it). Memory is bounded per stream: a stream's inbound
//! queue holds a few chunks and the reader waits for room (TCP back-pressure); outbound data
//! waits for the peer's window once the peer shows it keeps SPDY/3.1 flow control (Go's
//! spdystream, the kubelet's and kubectl's library, neither sends nor honours WINDOW_UPDATE, so
//! windows are enforced only for a peer that sends one or SETTINGS_INITIAL_WINDOW_SIZE). A
//! malformed frame ends this session only, with GOAWAY PROTOCOL_ERROR.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::frame::{self, goaway, rst, Control, Head, FLAG_FIN};
use super::headers::{Deflater, Headers, Inflater};
use crate::streaming::Activity;

/// The largest piece a DATA frame is cut into, either way.
pub const CHUNK: usize = 32 * 1024;
/// Chunks a stream's inbound queue holds before the reader waits.
const INBOUND_CHUNKS: usize = 4;
/// The largest control frame accepted (header blocks are small; this is generous).
const MAX_CONTROL: usize = 1024 * 1024;

/// A stream the client opened: its headers and both halves.
pub struct Incoming {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

enum Out {
    Frame(Vec<u8>),
    SynReply { stream_id: u32 },
    SynStream { stream_id: u32, headers: Headers },
    Data { stream_id: u32, data: Bytes, fin: bool },
    GoAway { status: u32 },
}

#[derive(Default)]
struct Flow {
    /// The peer keeps flow control (it sent WINDOW_UPDATE or an initial window).
    enforced: bool,
    session: i64,
    initial: i64,
    /// Send windows of the streams this side may still write on.
    streams: HashMap<u32, i64>,
}

struct Shared {
    out: mpsc::Sender<Out>,
    /// The inbound queues of streams whose peer side is open.
    inbound: Mutex<HashMap<u32, mpsc::Sender<Bytes>>>,
    /// Streams this side opened, waiting for the peer's SYN_REPLY.
    replies: Mutex<HashMap<u32, tokio::sync::oneshot::Sender<()>>>,
    /// The next stream id this side opens (odd: a client's).
    next_id: Mutex<u32>,
    flow: Mutex<Flow>,
    flow_changed: Notify,
    gone: CancellationToken,
    activity: Activity,
}

impl Shared {
    fn flow(&self) -> std::sync::MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn inbound(&self) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::Sender<Bytes>>> {
        self.inbound.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a stream's halves: its inbound queue (unless the peer is done sending) and
    /// its send window.
    fn register(self: &Arc<Self>, id: u32, headers: Headers, peer_done: bool) -> Incoming {
        let (tx, rx) = mpsc::channel(INBOUND_CHUNKS);
        if !peer_done {
            self.inbound().insert(id, tx);
        }
        {
            let mut flow = self.flow();
            let initial = flow.initial;
            flow.streams.insert(id, initial);
        }
        Incoming {
            id,
            headers,
            reader: StreamReader { id, rx, shared: self.clone(), unacked: 0 },
            writer: StreamWriter { id, shared: self.clone(), finished: false },
        }
    }
}

/// The connection as a whole.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

impl Session {
    /// Cancelled once the connection is gone (the peer closed it, a frame was malformed, or
    /// `close` was called).
    pub fn gone(&self) -> CancellationToken {
        self.shared.gone.clone()
    }

    /// Opens a stream with `headers` (the client side) and waits for the peer's SYN_REPLY.
    pub async fn open(&self, headers: Headers) -> Result<Incoming, Closed> {
        let id = {
            let mut next = self.shared.next_id.lock().unwrap_or_else(|p| p.into_inner());
            let id = *next;
            *next += 2;
            id
        };
        let (replied_tx, replied) = tokio::sync::oneshot::channel();
        self.shared.replies.lock().unwrap_or_else(|p| p.into_inner()).insert(id, replied_tx);
        let stream = self.shared.register(id, headers.clone(), false);
        self.shared.out.send(Out::SynStream { stream_id: id, headers }).await.map_err(|_| Closed)?;
        tokio::select! {
            r = replied => r.map_err(|_| Closed)?,
            _ = self.shared.gone.cancelled() => return Err(Closed),
        }
        Ok(stream)
    }

    /// Sends GOAWAY once everything queued before it is written, then closes the socket.
    pub async fn close(&self) {
        let _ = self.shared.out.send(Out::GoAway { status: goaway::OK }).await;
    }
}

/// The inbound half of a stream: its data until the peer's FIN (or RST).
pub struct StreamReader {
    id: u32,
    rx: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
    /// Bytes taken since the last WINDOW_UPDATE.
    unacked: u32,
}

impl StreamReader {
    /// The next chunk; None at the end of the stream. What is taken goes back to the peer's
    /// window once half a window's worth has been — for a peer that keeps flow control only:
    /// Go's spdystream ignores WINDOW_UPDATE, and one arriving after it closed the connection
    /// makes its kernel reset it, losing what it sent last.
    pub async fn read(&mut self) -> Option<Bytes> {
        let chunk = self.rx.recv().await?;
        self.unacked = self.unacked.saturating_add(chunk.len() as u32);
        let due = {
            let flow = self.shared.flow();
            flow.enforced && i64::from(self.unacked) >= flow.initial / 2
        };
        if due {
            let n = std::mem::take(&mut self.unacked);
            let updates = [
                Control::WindowUpdate { stream_id: self.id, delta: n },
                Control::WindowUpdate { stream_id: 0, delta: n },
            ];
            for update in updates {
                let _ = self.shared.out.send(Out::Frame(frame::encode_control(&update))).await;
            }
        }
        Some(chunk)
    }
}

/// The outbound half of a stream.
pub struct StreamWriter {
    id: u32,
    shared: Arc<Shared>,
    finished: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("the SPDY stream is closed")]
pub struct Closed;

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Writes `data` in chunks, each waiting for window when the peer keeps flow control.
    pub async fn write(&mut self, mut data: Bytes) -> Result<(), Closed> {
        if self.finished {
            return Err(Closed);
        }
        while !data.is_empty() {
            let n = self.window_for(data.len().min(CHUNK)).await?;
            let piece = data.split_to(n);
            self.shared.activity.touch();
            self.shared
                .out
                .send(Out::Data { stream_id: self.id, data: piece, fin: false })
                .await
                .map_err(|_| Closed)?;
        }
        Ok(())
    }

    /// Waits until `want` bytes (or fewer, at least one) may be sent; how many.
    async fn window_for(&self, want: usize) -> Result<usize, Closed> {
        loop {
            let changed = self.shared.flow_changed.notified();
            {
                let mut flow = self.shared.flow();
                let Some(&stream) = flow.streams.get(&self.id) else { return Err(Closed) };
                if !flow.enforced {
                    return Ok(want);
                }
                let room = stream.min(flow.session);
                if room > 0 {
                    let n = want.min(room as usize);
                    flow.session -= n as i64;
                    if let Some(w) = flow.streams.get_mut(&self.id) {
                        *w -= n as i64;
                    }
                    return Ok(n);
                }
            }
            tokio::select! {
                _ = changed => {}
                _ = self.shared.gone.cancelled() => return Err(Closed),
            }
        }
    }

    /// Ends this side of the stream (DATA with FIN).
    pub async fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.shared.flow().streams.remove(&self.id);
        let _ = self.shared.out.send(Out::Data { stream_id: self.id, data: Bytes::new(), fin: true }).await;
    }

    /// Aborts the stream (RST_STREAM CANCEL).
    pub async fn reset(&mut self) {
        self.finished = true;
        self.shared.flow().streams.remove(&self.id);
        let frame = frame::encode_control(&Control::RstStream { stream_id: self.id, status: rst::CANCEL });
        let _ = self.shared.out.send(Out::Frame(frame)).await;
    }
}

/// Runs a server-side session over `io`; streams the client opens arrive on the receiver.
pub fn start<IO>(io: IO, activity: Activity) -> (Session, mpsc::Receiver<Incoming>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel(64);
    let shared = Arc::new(Shared {
        out: out_tx,
        inbound: Mutex::new(HashMap::new()),
        replies: Mutex::new(HashMap::new()),
        next_id: Mutex::new(1),
        flow: Mutex::new(Flow {
            enforced: false,
            session: i64::from(frame::DEFAULT_WINDOW),
            initial: i64::from(frame::DEFAULT_WINDOW),
            streams: HashMap::new(),
        }),
        flow_changed: Notify::new(),
        gone: CancellationToken::new(),
        activity,
    });
    let (incoming_tx, incoming_rx) = mpsc::channel(16);
    tokio::spawn(write_loop(write, out_rx, shared.gone.clone()));
    let reader = Reader { shared: shared.clone(), inflater: Inflater::new(), last_id: 0 };
    tokio::spawn(reader.run(read, incoming_tx));
    (Session { shared }, incoming_rx)
}

/// At most this much is gathered from the queue for one (vectored) write.
const BATCH_BYTES: usize = 256 * 1024;

/// Frames waiting for the socket: DATA payloads are not copied, their 8-byte heads and the
/// control frames sit beside them, and the lot goes out in as few `writev` calls as the
/// kernel allows (one `write` per frame was most of the cost of a fast stream).
#[derive(Default)]
struct Batch {
    parts: VecDeque<Bytes>,
    len: usize,
}

impl Batch {
    fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.len += part.len();
            self.parts.push_back(part);
        }
    }
}

impl Buf for Batch {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map(|p| &p[..]).unwrap_or_default()
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.parts.front_mut() else { return };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.parts.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }
}

/// Puts `out` into `batch` as wire bytes; true for GOAWAY, the last frame written.
fn encode(out: Out, batch: &mut Batch, deflater: &mut Deflater) -> bool {
    match out {
        Out::Frame(bytes) => batch.push(Bytes::from(bytes)),
        Out::SynStream { stream_id, headers } => {
            let block = deflater.block(&headers);
            let syn = Control::SynStream { stream_id, associated: 0, priority: 0, flags: 0, block };
            batch.push(Bytes::from(frame::encode_control(&syn)));
        }
        Out::SynReply { stream_id } => {
            let block = deflater.block(&Vec::new());
            batch.push(Bytes::from(frame::encode_control(&Control::SynReply { stream_id, flags: 0, block })));
        }
        Out::Data { stream_id, data, fin } => {
            let head = frame::data_head(stream_id, if fin { FLAG_FIN } else { 0 }, data.len());
            batch.push(Bytes::copy_from_slice(&head));
            batch.push(data);
        }
        Out::GoAway { status } => {
            batch.push(Bytes::from(frame::encode_control(&Control::GoAway { last_good: 0, status })));
            return true;
        }
    }
    false
}

async fn write_loop(mut w: impl AsyncWrite + Unpin, mut rx: mpsc::Receiver<Out>, gone: CancellationToken) {
    let mut deflater = Deflater::new();
    while let Some(out) = tokio::select! { o = rx.recv() => o, _ = gone.cancelled() => None } {
        let mut batch = Batch::default();
        let mut last = encode(out, &mut batch, &mut deflater);
        // Whatever else is already queued goes out with it.
        while !last && batch.len < BATCH_BYTES {
            match rx.try_recv() {
                Ok(out) => last = encode(out, &mut batch, &mut deflater),
                Err(_) => break,
            }
        }
        if w.write_all_buf(&mut batch).await.is_err() || last {
            break;
        }
    }
    let _ = w.shutdown().await;
    gone.cancel();
}

/// The read half, buffered: one `read` takes as much as the socket holds, and DATA payloads
/// are handed on as slices of that buffer (no copy, no zeroing).
struct FrameReader<R> {
    r: R,
    buf: BytesMut,
}

/// How much one read asks the socket for.
const READ_BUF: usize = 256 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// The next `n` bytes.
    async fn take(&mut self, n: usize) -> std::io::Result<Bytes> {
        while self.buf.len() < n {
            if self.buf.capacity() - self.buf.len() < (n - self.buf.len()).max(CHUNK) {
                self.buf.reserve(READ_BUF.max(n));
            }
            if self.r.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.split_to(n).freeze())
    }
}

struct Reader {
    shared: Arc<Shared>,
    inflater: Inflater,
    last_id: u32,
}

#[derive(Debug)]
enum End {
    Closed,
    Protocol(String),
}

impl Reader {
    async fn run(mut self, r: impl AsyncRead + Unpin, incoming: mpsc::Sender<Incoming>) {
        let mut r = FrameReader { r, buf: BytesMut::new() };
        let mut incoming = Some(incoming);
        let gone = self.shared.gone.clone();
        let end = tokio::select! {
            end = self.frames(&mut r, &mut incoming) => end,
            _ = gone.cancelled() => End::Closed,
        };
        if let End::Protocol(why) = &end {
            tracing::debug!(%why, "SPDY session ended by a malformed frame");
            let _ = self.shared.out.try_send(Out::GoAway { status: goaway::PROTOCOL_ERROR });
            // The writer sends it and closes; a writer stuck on a full socket is cut short.
            let gone = self.shared.gone.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                gone.cancel();
            });
        } else {
            self.shared.gone.cancel();
        }
        self.shared.inbound().clear();
        self.shared.replies.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.shared.flow_changed.notify_waiters();
    }

    async fn frames(
        &mut self,
        r: &mut FrameReader<impl AsyncRead + Unpin>,
        incoming: &mut Option<mpsc::Sender<Incoming>>,
    ) -> End {
        loop {
            let mut head = [0u8; 8];
            match r.take(8).await {
                Ok(bytes) => head.copy_from_slice(&bytes),
                Err(_) => return End::Closed,
            }
            self.shared.activity.touch();
            let head = match frame::parse_head(head) {
                Ok(h) => h,
                Err(e) => return End::Protocol(e.to_string()),
            };
            match head {
                Head::Data { stream_id, flags, length } => {
                    if let Err(end) = self.data(r, stream_id, flags, length as usize).await {
                        return end;
                    }
                }
                Head::Control { kind, flags, length } => {
                    let length = length as usize;
                    if length > MAX_CONTROL {
                        return End::Protocol(format!("a control frame of {length} bytes"));
                    }
                    let Ok(payload) = r.take(length).await else { return End::Closed };
                    let control = match frame::parse_control(kind, flags, &payload) {
                        Ok(c) => c,
                        Err(e) => return End::Protocol(e.to_string()),
                    };
                    if let Err(end) = self.control(control, incoming).await {
                        return end;
                    }
                }
            }
        }
    }

    async fn data(
        &mut self,
        r: &mut FrameReader<impl AsyncRead + Unpin>,
        id: u32,
        flags: u8,
        length: usize,
    ) -> Result<(), End> {
        let tx = self.shared.inbound().get(&id).cloned();
        if tx.is_none() {
            self.rst(id, rst::INVALID_STREAM).await;
        }
        let mut left = length;
        while left > 0 {
            let chunk = r.take(left.min(CHUNK)).await.map_err(|_| End::Closed)?;
            left -= chunk.len();
            if let Some(tx) = &tx {
                // Waits for room: the peer is slowed down by TCP, memory stays bounded.
                if tx.send(chunk).await.is_err() {
                    // The protocol code dropped the reader: nobody wants this stream's data.
                    self.shared.inbound().remove(&id);
                }
            }
        }
        if flags & FLAG_FIN != 0 {
            self.shared.inbound().remove(&id);
        }
        Ok(())
    }

    async fn rst(&self, stream_id: u32, status: u32) {
        let frame = frame::encode_control(&Control::RstStream { stream_id, status });
        let _ = self.shared.out.send(Out::Frame(frame)).await;
    }

    async fn control(&mut self, control: Control, incoming: &mut Option<mpsc::Sender<Incoming>>) -> Result<(), End> {
        match control {
            Control::SynStream { stream_id, flags, block, .. } => {
                // Inflated whatever follows: the zlib context must see every block.
                let headers = self.inflater.block(&block).map_err(|e| End::Protocol(e.to_string()))?;
                if stream_id % 2 == 0 || stream_id <= self.last_id {
                    return Err(End::Protocol(format!("stream id {stream_id} after {}", self.last_id)));
                }
                self.last_id = stream_id;
                let Some(accept) = incoming.as_ref() else {
                    self.rst(stream_id, rst::REFUSED_STREAM).await;
                    return Ok(());
                };
                let _ = self.shared.out.send(Out::SynReply { stream_id }).await;
                let stream = self.shared.register(stream_id, headers, flags & FLAG_FIN != 0);
                if accept.send(stream).await.is_err() {
                    *incoming = None;
                }
            }
            Control::SynReply { stream_id, flags, block } => {
                self.inflater.block(&block).map_err(|e| End::Protocol(e.to_string()))?;
                if let Some(replied) = self.shared.replies.lock().unwrap_or_else(|p| p.into_inner()).remove(&stream_id)
                {
                    let _ = replied.send(());
                }
                if flags & FLAG_FIN != 0 {
                    self.shared.inbound().remove(&stream_id);
                }
            }
            Control::Headers { block, .. } => {
                self.inflater.block(&block).map_err(|e| End::Protocol(e.to_string()))?;
            }
            Control::RstStream { stream_id, .. } => {
                self.shared.inbound().remove(&stream_id);
                self.shared.replies.lock().unwrap_or_else(|p| p.into_inner()).remove(&stream_id);
                self.shared.flow().streams.remove(&stream_id);
                self.shared.flow_changed.notify_waiters();
            }
            Control::Settings { entries } => {
                for (_, id, value) in entries {
                    if id == frame::SETTINGS_INITIAL_WINDOW_SIZE {
                        let mut flow = self.shared.flow();
                        let delta = i64::from(value) - flow.initial;
                        flow.initial = i64::from(value);
                        flow.enforced = true;
                        flow.streams.values_mut().for_each(|w| *w += delta);
                    }
                }
                self.shared.flow_changed.notify_waiters();
            }
            Control::WindowUpdate { stream_id, delta } => {
                {
                    let mut flow = self.shared.flow();
                    flow.enforced = true;
                    if stream_id == 0 {
                        flow.session += i64::from(delta);
                    } else if let Some(w) = flow.streams.get_mut(&stream_id) {
                        *w += i64::from(delta);
                    }
                }
                self.shared.flow_changed.notify_waiters();
            }
            Control::Ping { id } => {
                // The peer's pings (odd ids from a client) are echoed; answers to ours are dropped.
                if id % 2 == 1 {
                    let _ = self.shared.out.send(Out::Frame(frame::encode_control(&Control::Ping { id }))).await;
                }
            }
            Control::GoAway { .. } => {
                // No new streams; those open go on until the peer closes the connection.
                *incoming = None;
            }
            Control::Other { .. } => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streaming::spdy::headers;
    use std::time::Duration;
    use tokio::io::DuplexStream;

    /// A frame the test peer read: a control frame, or DATA as (stream, fin, payload).
    type Seen = Result<Control, (u32, bool, Vec<u8>)>;

    /// The client's end of a session under test: raw frames in and out.
    struct Peer {
        io: DuplexStream,
        deflater: Deflater,
        inflater: Inflater,
    }

    impl Peer {
        async fn send(&mut self, bytes: &[u8]) {
            self.io.write_all(bytes).await.unwrap();
        }
        async fn syn(&mut self, id: u32, kind: &str, flags: u8) {
            let block = self.deflater.block(&vec![("streamtype".into(), kind.into())]);
            let bytes =
                frame::encode_control(&Control::SynStream { stream_id: id, associated: 0, priority: 0, flags, block });
            self.send(&bytes).await;
        }
        async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
            let mut bytes = frame::data_head(id, if fin { FLAG_FIN } else { 0 }, data.len()).to_vec();
            bytes.extend_from_slice(data);
            self.send(&bytes).await;
        }
        /// The next frame: control frames parsed, DATA as (id, fin, payload).
        async fn next(&mut self) -> Option<Seen> {
            let mut head = [0u8; 8];
            tokio::time::timeout(Duration::from_secs(5), self.io.read_exact(&mut head)).await.ok()?.ok()?;
            match frame::parse_head(head).unwrap() {
                Head::Data { stream_id, flags, length } => {
                    let mut p = vec![0u8; length as usize];
                    self.io.read_exact(&mut p).await.unwrap();
                    Some(Err((stream_id, flags & FLAG_FIN != 0, p)))
                }
                Head::Control { kind, flags, length } => {
                    let mut p = vec![0u8; length as usize];
                    self.io.read_exact(&mut p).await.unwrap();
                    let c = frame::parse_control(kind, flags, &p).unwrap();
                    if let Control::SynReply { block, .. } = &c {
                        self.inflater.block(block).unwrap();
                    }
                    Some(Ok(c))
                }
            }
        }
        /// Frames until `want` matches one (which is returned); the rest are dropped.
        async fn until(&mut self, want: impl Fn(&Seen) -> bool) -> Option<Seen> {
            loop {
                let f = self.next().await?;
                if want(&f) {
                    return Some(f);
                }
            }
        }
    }

    fn pair() -> (Peer, Session, mpsc::Receiver<Incoming>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (session, incoming) = start(server, Activity::new());
        (Peer { io: client, deflater: Deflater::new(), inflater: Inflater::new() }, session, incoming)
    }

    fn is_data(id: u32) -> impl Fn(&Seen) -> bool {
        move |f| matches!(f, Err((i, _, _)) if *i == id)
    }

    #[tokio::test]
    async fn a_stream_is_replied_to_and_carries_data_both_ways() {
        let (mut peer, _session, mut incoming) = pair();
        peer.syn(1, "stdin", 0).await;
        let mut stream = incoming.recv().await.unwrap();
        assert_eq!(headers::get(&stream.headers, "streamtype"), Some("stdin"));
        assert!(matches!(peer.next().await, Some(Ok(Control::SynReply { stream_id: 1, .. }))));
        peer.data(1, b"hello", true).await;
        assert_eq!(stream.reader.read().await.unwrap(), Bytes::from_static(b"hello"));
        assert!(stream.reader.read().await.is_none(), "FIN ends the inbound half");
        stream.writer.write(Bytes::from_static(b"back")).await.unwrap();
        stream.writer.finish().await;
        assert_eq!(peer.until(is_data(1)).await.unwrap(), Err((1, false, b"back".to_vec())));
        assert_eq!(peer.until(is_data(1)).await.unwrap(), Err((1, true, vec![])));
    }

    #[tokio::test]
    async fn pings_are_echoed_and_unknown_streams_reset() {
        let (mut peer, _session, _incoming) = pair();
        peer.send(&frame::encode_control(&Control::Ping { id: 7 })).await;
        assert_eq!(peer.next().await.unwrap().unwrap(), Control::Ping { id: 7 });
        peer.data(9, b"nobody", false).await;
        assert_eq!(
            peer.next().await.unwrap().unwrap(),
            Control::RstStream { stream_id: 9, status: rst::INVALID_STREAM }
        );
        peer.send(&frame::encode_control(&Control::Ping { id: 9 })).await;
        assert_eq!(peer.next().await.unwrap().unwrap(), Control::Ping { id: 9 }, "the session goes on");
    }

    #[tokio::test]
    async fn a_malformed_frame_ends_the_session_with_goaway() {
        let (mut peer, session, _incoming) = pair();
        // A control frame of SPDY version 2.
        peer.send(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]).await;
        assert_eq!(
            peer.next().await.unwrap().unwrap(),
            Control::GoAway { last_good: 0, status: goaway::PROTOCOL_ERROR }
        );
        tokio::time::timeout(Duration::from_secs(5), session.gone().cancelled()).await.unwrap();
        assert!(peer.next().await.is_none(), "the connection is closed");
    }

    #[tokio::test]
    async fn a_stream_id_going_backwards_is_a_protocol_error() {
        let (mut peer, _session, mut incoming) = pair();
        peer.syn(5, "error", 0).await;
        let _first = incoming.recv().await.unwrap();
        peer.syn(3, "stdout", 0).await;
        let goaway = peer.until(|f| matches!(f, Ok(Control::GoAway { .. }))).await;
        assert_eq!(goaway.unwrap().unwrap(), Control::GoAway { last_good: 0, status: goaway::PROTOCOL_ERROR });
    }

    #[tokio::test]
    async fn a_peer_that_keeps_flow_control_is_held_to_its_window() {
        let (mut peer, _session, mut incoming) = pair();
        let settings = Control::Settings { entries: vec![(0, frame::SETTINGS_INITIAL_WINDOW_SIZE, 10)] };
        peer.send(&frame::encode_control(&settings)).await;
        peer.syn(1, "stdout", 0).await;
        let mut stream = incoming.recv().await.unwrap();
        let writer = tokio::spawn(async move {
            stream.writer.write(Bytes::from(vec![b'x'; 25])).await.unwrap();
            stream.writer.finish().await;
        });
        assert_eq!(peer.until(is_data(1)).await.unwrap(), Err((1, false, vec![b'x'; 10])));
        let nothing = tokio::time::timeout(Duration::from_millis(300), peer.until(is_data(1))).await;
        assert!(nothing.is_err(), "data beyond the window was sent: {nothing:?}");
        peer.send(&frame::encode_control(&Control::WindowUpdate { stream_id: 1, delta: 15 })).await;
        assert_eq!(peer.until(is_data(1)).await.unwrap(), Err((1, false, vec![b'x'; 15])));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn what_is_read_goes_back_to_a_flow_controlled_peers_window_half_a_window_at_a_time() {
        let (mut peer, _session, mut incoming) = pair();
        let settings = Control::Settings { entries: vec![(0, frame::SETTINGS_INITIAL_WINDOW_SIZE, 100)] };
        peer.send(&frame::encode_control(&settings)).await;
        peer.syn(1, "stdin", 0).await;
        let mut stream = incoming.recv().await.unwrap();
        peer.data(1, &[7; 30], false).await;
        peer.data(1, &[7; 30], false).await;
        assert_eq!(stream.reader.read().await.unwrap().len(), 30);
        assert_eq!(stream.reader.read().await.unwrap().len(), 30);
        let update = peer.until(|f| matches!(f, Ok(Control::WindowUpdate { .. }))).await.unwrap().unwrap();
        assert_eq!(update, Control::WindowUpdate { stream_id: 1, delta: 60 }, "one update for both chunks");
        assert_eq!(peer.next().await.unwrap().unwrap(), Control::WindowUpdate { stream_id: 0, delta: 60 });
    }

    #[tokio::test]
    async fn a_peer_without_flow_control_gets_no_window_updates() {
        let (mut peer, _session, mut incoming) = pair();
        peer.syn(1, "stdin", 0).await;
        let mut stream = incoming.recv().await.unwrap();
        peer.data(1, &[7; 40_000], true).await;
        let mut read = 0;
        while let Some(chunk) = stream.reader.read().await {
            read += chunk.len();
        }
        assert_eq!(read, 40_000);
        peer.send(&frame::encode_control(&Control::Ping { id: 3 })).await;
        let next = peer.until(|f| !matches!(f, Ok(Control::SynReply { .. }))).await.unwrap().unwrap();
        assert_eq!(next, Control::Ping { id: 3 }, "a WINDOW_UPDATE went to a peer that ignores them");
    }

    #[tokio::test]
    async fn a_peer_without_flow_control_is_not_waited_for() {
        // Go's spdystream never sends WINDOW_UPDATE: waiting for one would stall at 64 KiB.
        let (mut peer, _session, mut incoming) = pair();
        peer.syn(1, "stdout", 0).await;
        let mut stream = incoming.recv().await.unwrap();
        let writer = tokio::spawn(async move {
            stream.writer.write(Bytes::from(vec![1u8; 200 * 1024])).await.unwrap();
            stream.writer.finish().await;
        });
        let mut total = 0;
        while let Err((_, false, p)) = peer.until(is_data(1)).await.unwrap() {
            total += p.len();
        }
        assert_eq!(total, 200 * 1024);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn an_unread_stream_holds_the_peer_back_instead_of_buffering() {
        let (mut peer, _session, mut incoming) = pair();
        peer.syn(1, "stdin", 0).await;
        let mut stream = incoming.recv().await.unwrap();
        for _ in 0..(INBOUND_CHUNKS + 4) {
            peer.data(1, &[0u8; CHUNK], false).await;
        }
        peer.send(&frame::encode_control(&Control::Ping { id: 1 })).await;
        let pong =
            tokio::time::timeout(Duration::from_millis(300), peer.until(|f| matches!(f, Ok(Control::Ping { .. }))));
        assert!(pong.await.is_err(), "the session read past a full stream queue");
        let mut read = 0;
        while read < (INBOUND_CHUNKS + 4) * CHUNK {
            read += stream.reader.read().await.unwrap().len();
        }
        assert_eq!(
            peer.until(|f| matches!(f, Ok(Control::Ping { .. }))).await.unwrap().unwrap(),
            Control::Ping { id: 1 }
        );
    }
}
