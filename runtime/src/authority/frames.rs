//! The client-to-server byte stream of one HTTP/2 connection, frame by frame: every frame
//! passes unchanged except the client's header blocks, which are decoded (the client's HPACK
//! context is kept for the whole connection) and, once one carried an `:authority` that h2
//! refuses, re-encoded with `localhost` as self-contained literals. Pure: bytes in, bytes out.

use bytes::{Buf, BytesMut};

use super::hpack::{self, Decoder, Field, HpackError};

/// The 24-octet client connection preface (RFC 9113 section 3.4), passed through as it is.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// SETTINGS_MAX_FRAME_SIZE and SETTINGS_HEADER_TABLE_SIZE of the server (h2's defaults, which
/// tonic keeps; the integration test `grpc_clients` reads them from lockstepd's SETTINGS).
pub const SERVER_MAX_FRAME_SIZE: usize = 16_384;
pub const SERVER_HEADER_TABLE_SIZE: usize = 4_096;
/// The most a header block may take, encoded (its frames) or decoded (RFC 9113's header list
/// size: names, values and 32 octets a field). A gRPC request carries a few hundred octets.
/// hyper answers 431 to header lists above 16 KiB and keeps the connection; far beyond that,
/// the connection ends here (three such buffers at most a connection).
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Buffers grown past this by one large block are given back after it.
const KEPT_CAPACITY: usize = 64 * 1024;
/// What an `:authority` that h2 refuses becomes: what Go's gRPC sends over a unix socket.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a HEADERS or CONTINUATION frame of {0} octets is larger than the server's maximum frame size")]
    FrameTooLarge(usize),
    #[error("frame type {kind} on stream {stream} inside the header block of stream {block_stream}")]
    Interleaved { kind: u8, stream: u32, block_stream: u32 },
    #[error("padding longer than its HEADERS frame")]
    Padding,
    #[error("a header block larger than {MAX_HEADER_BLOCK} octets")]
    BlockTooLarge,
    #[error("malformed header block: {0}")]
    Hpack(#[from] HpackError),
}

#[derive(Clone, Copy)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

enum State {
    /// This many octets pass as they are (the preface, or the payload of a frame that is not
    /// part of a header block).
    Verbatim(usize),
    /// The next octets are a frame header.
    Head,
    /// Collecting the payload of a HEADERS or CONTINUATION frame into `Block::raw`.
    HeaderPayload { head: FrameHead, missing: usize },
}

/// The header block being collected.
#[derive(Clone, Copy)]
struct OpenBlock {
    stream: u32,
    end_stream: bool,
}

/// The client's side of one connection.
pub struct ClientFrames {
    state: State,
    decoder: Decoder,
    block: Option<OpenBlock>,
    /// The open block's frames as received (buffers kept between blocks).
    raw: Vec<u8>,
    /// The open block's fragments, without padding and priority.
    fragment: Vec<u8>,
    /// Set by the first block whose `:authority` had to change: from then on every block is
    /// re-encoded, as the server's HPACK context no longer matches the client's.
    rewriting: bool,
    /// Scratch for the re-encoded block.
    encoded: Vec<u8>,
    /// The last authority found valid: a client sends the same one on every call.
    valid: Vec<u8>,
}

impl Default for ClientFrames {
    fn default() -> Self {
        ClientFrames {
            state: State::Verbatim(PREFACE_LEN),
            decoder: Decoder::new(SERVER_HEADER_TABLE_SIZE),
            block: None,
            raw: Vec::new(),
            fragment: Vec::new(),
            rewriting: false,
            encoded: Vec::new(),
            valid: Vec::new(),
        }
    }
}

impl ClientFrames {
    /// Whether a block has been re-encoded on this connection.
    pub fn rewriting(&self) -> bool {
        self.rewriting
    }

    /// How many of the next octets pass through as they are (the caller may copy them itself
    /// and report them with [`Self::passed`]).
    pub fn verbatim(&self) -> usize {
        match self.state {
            State::Verbatim(n) => n,
            _ => 0,
        }
    }

    /// `n` octets, at most [`Self::verbatim`], were passed through by the caller.
    pub fn passed(&mut self, n: usize) {
        if let State::Verbatim(left) = self.state {
            self.state = State::Verbatim(left.saturating_sub(n));
        }
    }

    /// Moves what it can from `input` to `out` (for the server to read). Returns false when it
    /// needs more input to go on. An error means the connection must end.
    pub fn step(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<bool, FrameError> {
        match self.state {
            State::Verbatim(0) => {
                self.state = State::Head;
                Ok(true)
            }
            State::Verbatim(n) => {
                if input.is_empty() {
                    return Ok(false);
                }
                let take = n.min(input.len());
                out.extend_from_slice(&input[..take]);
                input.advance(take);
                self.state = State::Verbatim(n - take);
                Ok(true)
            }
            State::Head => {
                if input.len() < FRAME_HEADER_LEN {
                    return Ok(false);
                }
                let h = &input[..FRAME_HEADER_LEN];
                let head = FrameHead {
                    len: (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]),
                    kind: h[3],
                    flags: h[4],
                    stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                };
                let in_block = match &self.block {
                    Some(block) if head.kind != CONTINUATION || head.stream != block.stream => {
                        return Err(FrameError::Interleaved {
                            kind: head.kind,
                            stream: head.stream,
                            block_stream: block.stream,
                        });
                    }
                    Some(_) => true,
                    None => head.kind == HEADERS,
                };
                if !in_block {
                    // Anything else, a stray CONTINUATION included, is the server's to judge.
                    out.extend_from_slice(h);
                    input.advance(FRAME_HEADER_LEN);
                    self.state = State::Verbatim(head.len);
                    return Ok(true);
                }
                if head.len > SERVER_MAX_FRAME_SIZE {
                    return Err(FrameError::FrameTooLarge(head.len));
                }
                if self.block.is_none() {
                    self.block = Some(OpenBlock { stream: head.stream, end_stream: head.flags & END_STREAM != 0 });
                    self.raw.clear();
                    self.fragment.clear();
                }
                if self.raw.len() + FRAME_HEADER_LEN + head.len > MAX_HEADER_BLOCK {
                    return Err(FrameError::BlockTooLarge);
                }
                self.raw.extend_from_slice(h);
                input.advance(FRAME_HEADER_LEN);
                self.state = State::HeaderPayload { head, missing: head.len };
                Ok(true)
            }
            State::HeaderPayload { head, missing } => {
                if missing > 0 {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    let take = missing.min(input.len());
                    self.raw.extend_from_slice(&input[..take]);
                    input.advance(take);
                    self.state = State::HeaderPayload { head, missing: missing - take };
                    return Ok(true);
                }
                let payload = &self.raw[self.raw.len() - head.len..];
                self.fragment.extend_from_slice(fragment(head, payload)?);
                self.state = State::Head;
                if head.flags & END_HEADERS != 0 {
                    self.finish_block(out)?;
                }
                Ok(true)
            }
        }
    }

    /// Decodes the complete block and hands it on: as received while nothing was rewritten,
    /// else re-encoded into fresh frames.
    fn finish_block(&mut self, out: &mut BytesMut) -> Result<(), FrameError> {
        let Some(block) = self.block.take() else { return Ok(()) };
        let encoded = &mut self.encoded;
        let valid = &mut self.valid;
        encoded.clear();
        let mut fix = false;
        let first_rewrite = !self.rewriting;
        let mut list_size = 0usize;
        self.decoder.decode(&self.fragment, |f: Field<'_>| {
            list_size += f.name.len() + f.value.len() + 32;
            if list_size > MAX_HEADER_BLOCK {
                return Err(FrameError::BlockTooLarge);
            }
            let value = if f.name == b":authority" && !known_valid(valid, f.value) {
                if first_rewrite && !fix {
                    tracing::debug!(
                        authority = %String::from_utf8_lossy(f.value),
                        "client sent an :authority h2 refuses; serving its calls as localhost"
                    );
                }
                fix = true;
                REPLACEMENT_AUTHORITY
            } else {
                f.value
            };
            hpack::encode_literal(encoded, f.name, value, f.sensitive);
            Ok(())
        })?;
        if fix {
            self.rewriting = true;
        }
        if self.rewriting {
            emit_frames(out, block.stream, block.end_stream, encoded);
        } else {
            out.extend_from_slice(&self.raw);
        }
        for buf in [&mut self.raw, &mut self.fragment, &mut self.encoded] {
            if buf.capacity() > KEPT_CAPACITY {
                *buf = Vec::new();
            }
        }
        Ok(())
    }
}

/// The header block fragment of a HEADERS or CONTINUATION payload, without padding and
/// priority (RFC 9113 section 6.2).
fn fragment(head: FrameHead, payload: &[u8]) -> Result<&[u8], FrameError> {
    if head.kind != HEADERS {
        return Ok(payload);
    }
    let mut p = payload;
    let mut pad = 0;
    if head.flags & PADDED != 0 {
        let (&len, rest) = p.split_first().ok_or(FrameError::Padding)?;
        pad = usize::from(len);
        p = rest;
    }
    if head.flags & PRIORITY != 0 {
        p = p.get(5..).ok_or(FrameError::Padding)?;
    }
    if pad > p.len() {
        return Err(FrameError::Padding);
    }
    Ok(&p[..p.len() - pad])
}

/// Whether h2 takes `value` as the request's authority (the same parser it uses); `last` is
/// the last value found valid, which spares parsing the same authority on every call.
fn known_valid(last: &mut Vec<u8>, value: &[u8]) -> bool {
    if !last.is_empty() && last == value {
        return true;
    }
    let valid = http::uri::Authority::try_from(value).is_ok();
    if valid {
        last.clear();
        last.extend_from_slice(value);
    }
    valid
}

/// A HEADERS frame and as many CONTINUATION frames as `block` needs, none above the server's
/// maximum frame size; END_STREAM as the client set it.
fn emit_frames(out: &mut BytesMut, stream: u32, end_stream: bool, block: &[u8]) {
    out.reserve(block.len() + FRAME_HEADER_LEN * (1 + block.len() / SERVER_MAX_FRAME_SIZE));
    let mut chunks = block.chunks(SERVER_MAX_FRAME_SIZE).peekable();
    let mut kind = HEADERS;
    let mut flags = if end_stream { END_STREAM } else { 0 };
    loop {
        let chunk = chunks.next().unwrap_or_default();
        let last = chunks.peek().is_none();
        if last {
            flags |= END_HEADERS;
        }
        let len = chunk.len() as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(chunk);
        if last {
            return;
        }
        kind = CONTINUATION;
        flags = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::hpack::{encode_integer, encode_literal};

    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const DATA: u8 = 0x0;
    const SETTINGS: u8 = 0x4;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A literal with incremental indexing whose name is static entry `name`.
    fn indexed_literal(block: &mut Vec<u8>, name: usize, value: &[u8]) {
        encode_integer(block, 0x40, 6, name);
        encode_integer(block, 0, 7, value.len());
        block.extend_from_slice(value);
    }

    /// A literal with incremental indexing and a literal name.
    fn new_literal(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        block.push(0x40);
        for s in [name, value] {
            encode_integer(block, 0, 7, s.len());
            block.extend_from_slice(s);
        }
    }

    /// `:method POST`, `:scheme http`, `:path /runtime.v1.RuntimeService/Version`, then
    /// `:authority` as a new table entry.
    fn request(authority: &[u8]) -> Vec<u8> {
        let mut b = vec![0x83, 0x86];
        indexed_literal(&mut b, 4, b"/runtime.v1.RuntimeService/Version");
        indexed_literal(&mut b, 1, authority);
        new_literal(&mut b, b"content-type", b"application/grpc");
        b
    }

    /// Feeds `input` in pieces of `chunk` octets, as reads would deliver it.
    fn run(input: &[u8], chunk: usize) -> Result<Vec<u8>, FrameError> {
        let mut frames = ClientFrames::default();
        let mut pending = BytesMut::new();
        let mut out = BytesMut::new();
        let mut seen = Vec::new();
        for piece in input.chunks(chunk) {
            pending.extend_from_slice(piece);
            while frames.step(&mut pending, &mut out)? {
                seen.extend_from_slice(&out.split());
            }
        }
        Ok(seen)
    }

    struct Seen {
        kind: u8,
        flags: u8,
        stream: u32,
        headers: Vec<(String, String)>,
        payload: Vec<u8>,
    }

    /// The frames the server receives, each header block decoded as h2 would (one decoder
    /// for the connection), frames of one block merged.
    fn server_view(out: &[u8]) -> Vec<Seen> {
        assert_eq!(&out[..24], PREFACE);
        let mut decoder = Decoder::new(SERVER_HEADER_TABLE_SIZE);
        let mut rest = &out[24..];
        let mut seen: Vec<Seen> = Vec::new();
        let mut block = Vec::new();
        while !rest.is_empty() {
            let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            assert!(len <= SERVER_MAX_FRAME_SIZE, "a {len}-octet frame");
            let payload = rest[9..9 + len].to_vec();
            rest = &rest[9 + len..];
            if kind == HEADERS || kind == CONTINUATION {
                let head = FrameHead { len, kind, flags, stream };
                block.extend_from_slice(fragment(head, &payload).unwrap());
                if kind == HEADERS {
                    seen.push(Seen { kind, flags, stream, headers: Vec::new(), payload: Vec::new() });
                }
                if flags & END_HEADERS != 0 {
                    let last = seen.last_mut().unwrap();
                    decoder
                        .decode(&block, |f: Field<'_>| {
                            last.headers.push((
                                String::from_utf8_lossy(f.name).into_owned(),
                                String::from_utf8_lossy(f.value).into_owned(),
                            ));
                            Ok::<(), HpackError>(())
                        })
                        .unwrap();
                    block.clear();
                }
            } else {
                seen.push(Seen { kind, flags, stream, headers: Vec::new(), payload });
            }
        }
        seen
    }

    fn authority(seen: &Seen) -> &str {
        &seen.headers.iter().find(|(n, _)| n == ":authority").expect(":authority").1
    }

    fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut c = PREFACE.to_vec();
        c.extend(frame(SETTINGS, 0, 0, &[]));
        for f in frames {
            c.extend_from_slice(f);
        }
        c
    }

    #[test]
    fn a_valid_authority_passes_byte_for_byte() {
        // RFC 7541 C.4: Huffman strings and dynamic table references; then a grpc request.
        let hex = |s: &str| -> Vec<u8> {
            let s: String = s.split_whitespace().collect();
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
        };
        let input = connection(&[
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")),
            frame(HEADERS, END_HEADERS | END_STREAM, 3, &hex("8286 84be 5886 a8eb 1064 9cbf")),
            frame(HEADERS, END_HEADERS, 5, &request(b"localhost:1234")),
            frame(DATA, END_STREAM, 5, &[0, 0, 0, 0, 0]),
            frame(HEADERS, END_HEADERS, 7, &request(b"[::1]:80")),
        ]);
        for chunk in [1, 7, 4096] {
            assert_eq!(run(&input, chunk).unwrap(), input, "read {chunk} octets at a time");
        }
        let seen = server_view(&input);
        assert_eq!(authority(&seen[2]), "www.example.com");
    }

    #[test]
    fn a_socket_path_becomes_localhost_across_continuation_padding_and_priority() {
        let block = request(b"/run/lockstep/lockstep.sock");
        let (a, rest) = block.split_at(10); // inside the :path string
        let (b, c) = rest.split_at(30); // inside the :authority string
        let mut first = vec![3]; // pad length
        first.extend_from_slice(&[0x80, 0, 0, 0, 16]); // exclusive dependency on 0, weight 17
        first.extend_from_slice(a);
        first.extend_from_slice(&[0, 0, 0]);
        let input = connection(&[
            frame(HEADERS, END_STREAM | PADDED | PRIORITY, 1, &first),
            frame(CONTINUATION, 0, 1, b),
            frame(CONTINUATION, END_HEADERS, 1, c),
        ]);
        for chunk in [1, 5, 4096] {
            let seen = server_view(&run(&input, chunk).unwrap());
            assert_eq!(seen.len(), 2, "SETTINGS and one HEADERS frame");
            let h = &seen[1];
            assert_eq!((h.kind, h.stream), (HEADERS, 1));
            assert_eq!(h.flags, END_STREAM | END_HEADERS, "no padding or priority left, END_STREAM kept");
            let expected = [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/runtime.v1.RuntimeService/Version"),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
            ];
            let expected: Vec<_> = expected.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            assert_eq!(h.headers, expected);
        }
    }

    #[test]
    fn table_references_to_a_rewritten_authority_and_later_blocks_stay_right() {
        // Block 1 adds (62 content-type) (63 :authority) (64 :path) to the client's table.
        // Block 2 has a valid authority but names entries of block 1, which the server's table
        // lacks; block 3 names the rewritten authority (63).
        let mut second = vec![0x83, 0x86, 0xc0];
        encode_literal(&mut second, b":authority", b"localhost", false);
        second.push(0xbe);
        let third = vec![0x83, 0x86, 0xc0, 0xbf, 0xbe];
        let input = connection(&[
            frame(HEADERS, END_HEADERS, 1, &request(b"%2Frun%2Flockstep%2Flockstep.sock")),
            frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]),
            frame(HEADERS, END_HEADERS, 3, &second),
            frame(HEADERS, END_HEADERS | END_STREAM, 5, &third),
        ]);
        let seen = server_view(&run(&input, 3).unwrap());
        let blocks: Vec<&Seen> = seen.iter().filter(|s| s.kind == HEADERS).collect();
        assert_eq!(blocks.len(), 3);
        for b in &blocks {
            assert_eq!(authority(b), "localhost", "stream {}", b.stream);
            assert!(b.headers.contains(&(":path".into(), "/runtime.v1.RuntimeService/Version".into())));
            assert!(b.headers.contains(&("content-type".into(), "application/grpc".into())));
        }
        let data = seen.iter().find(|s| s.kind == DATA).unwrap();
        assert_eq!((data.stream, data.flags, data.payload.len()), (1, END_STREAM, 5), "DATA passes as it is");
    }

    #[test]
    fn an_empty_or_unix_authority_becomes_localhost() {
        for bad in [&b""[..], b"unix:/run/lockstep/lockstep.sock", b"unix:///run/x.sock", b"a b"] {
            let input = connection(&[frame(HEADERS, END_HEADERS, 1, &request(bad))]);
            let seen = server_view(&run(&input, 64).unwrap());
            assert_eq!(authority(&seen[1]), "localhost", "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn size_updates_are_obeyed() {
        // A size update to 0 empties the client's table: block 2 may no longer name entry 62.
        let input = connection(&[
            frame(HEADERS, END_HEADERS, 1, &request(b"/x.sock")),
            frame(HEADERS, END_HEADERS, 3, &[0x20, 0x83, 0x86, 0x84, 0x41, 0x01, b'a']),
            frame(HEADERS, END_HEADERS, 5, &[0x83, 0xbe]),
        ]);
        let err = run(&input, 4096).unwrap_err();
        assert!(matches!(err, FrameError::Hpack(HpackError::Index(62))), "{err}");
        // After the update, the table holds only what came after it.
        let input = connection(&[
            frame(HEADERS, END_HEADERS, 1, &request(b"/x.sock")),
            frame(HEADERS, END_HEADERS, 3, &[0x20, 0x3f, 0xe1, 0x1f, 0x83, 0x86, 0x84, 0x41, 0x01, b'a']),
            frame(HEADERS, END_HEADERS, 5, &[0x83, 0x86, 0x84, 0xbe]),
        ]);
        let seen = server_view(&run(&input, 4096).unwrap());
        assert_eq!(authority(&seen[3]), "a");
        // Larger than the server's SETTINGS_HEADER_TABLE_SIZE: refused.
        let input = connection(&[frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xe2, 0x1f, 0x82])]);
        assert!(matches!(run(&input, 4096), Err(FrameError::Hpack(HpackError::TableSize { .. }))));
    }

    #[test]
    fn a_malformed_block_ends_the_connection() {
        let mut truncated = request(b"/x.sock");
        truncated.truncate(truncated.len() - 3);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (frame(HEADERS, END_HEADERS, 1, &truncated), "truncated"),
            (frame(HEADERS, END_HEADERS, 1, &[0x41, 0x84, 0xff, 0xff, 0xff, 0xff]), "EOS"),
            (frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82]), "padding"),
            (frame(HEADERS, END_HEADERS, 1, &[0xc0]), "index 64 of an empty table"),
            ([frame(HEADERS, 0, 1, &[0x82]), frame(DATA, 0, 1, &[])].concat(), "interleaved"),
            ([frame(HEADERS, 0, 1, &[0x82]), frame(CONTINUATION, END_HEADERS, 3, &[])].concat(), "other stream"),
        ];
        for (bad, what) in cases {
            let input = connection(&[bad]);
            assert!(run(&input, 4096).is_err(), "{what}");
        }
    }

    #[test]
    fn large_blocks_are_cut_into_frames_the_server_takes_and_huge_ones_refused() {
        let mut block = request(b"/x.sock");
        block.push(0x00);
        encode_integer(&mut block, 0, 7, 5);
        block.extend_from_slice(b"x-big");
        encode_integer(&mut block, 0, 7, 40_000);
        block.extend(std::iter::repeat_n(b'v', 40_000));
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let pieces: Vec<&[u8]> = block.chunks(SERVER_MAX_FRAME_SIZE).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let flags = if i + 1 == pieces.len() { END_HEADERS } else { 0 };
            frames.push(frame(if i == 0 { HEADERS } else { CONTINUATION }, flags, 1, piece));
        }
        let seen = server_view(&run(&connection(&frames), 4096).unwrap());
        assert_eq!(authority(&seen[1]), "localhost");
        assert_eq!(seen[1].headers.last().unwrap().1.len(), 40_000);
        // Cut again by the 16 KiB limit (server_view checks every frame's size).

        let over = frame(HEADERS, 0, 1, &vec![0; SERVER_MAX_FRAME_SIZE + 1]);
        assert!(matches!(run(&connection(&[over]), 4096), Err(FrameError::FrameTooLarge(_))));
        let piece = vec![0x82; SERVER_MAX_FRAME_SIZE];
        let mut endless = vec![frame(HEADERS, 0, 1, &piece)];
        endless.extend((0..MAX_HEADER_BLOCK / SERVER_MAX_FRAME_SIZE).map(|_| frame(CONTINUATION, 0, 1, &piece)));
        assert!(matches!(run(&connection(&endless), 65536), Err(FrameError::BlockTooLarge)));
    }
}
