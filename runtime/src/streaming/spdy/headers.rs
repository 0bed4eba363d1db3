//! SPDY/3 header blocks: the name/value block layout (32-bit counts and lengths, values of one
//! name joined by NUL) and its zlib compression, one context per direction for the whole
//! session, primed with the dictionary the SPDY/3 specification defines.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The words of the SPDY/3 header dictionary, each stored with a 32-bit big-endian length.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// What follows the words in the dictionary, as it stands.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The zlib dictionary both sides of a SPDY/3 session prime their contexts with.
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        d.extend_from_slice(&(word.len() as u32).to_be_bytes());
        d.extend_from_slice(word.as_bytes());
    }
    d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    d
}

/// The most a header block may inflate to; a bigger one ends the session (a zlib bomb).
pub const MAX_BLOCK: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the header block does not inflate: {0}")]
    Inflate(String),
    #[error("the header block inflates past {MAX_BLOCK} bytes")]
    TooLarge,
    #[error("the header block is malformed: {0}")]
    Malformed(&'static str),
}

/// Headers as name/value pairs, names lower-case (SPDY requires it).
pub type Headers = Vec<(String, String)>;

/// The first value of `name` in `headers`.
pub fn get<'h>(headers: &'h Headers, name: &str) -> Option<&'h str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The uncompressed block: count, then each name and value with its length. Values of the
/// same name are joined with NUL, as SPDY/3 carries several values of one header.
pub fn encode_block(headers: &Headers) -> Vec<u8> {
    let mut joined: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match joined.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push('\0');
                v.push_str(value);
            }
            None => joined.push((name, value.clone())),
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(joined.len() as u32).to_be_bytes());
    for (name, value) in &joined {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Reads an uncompressed block; a value holding NULs becomes one pair per value.
pub fn decode_block(mut b: &[u8]) -> Result<Headers, HeaderError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], HeaderError> {
        if b.len() < n {
            return Err(HeaderError::Malformed("it ends inside a length or a string"));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn len(b: &mut &[u8]) -> Result<usize, HeaderError> {
        let x = take(b, 4)?;
        Ok(u32::from_be_bytes([x[0], x[1], x[2], x[3]]) as usize)
    }
    let count = len(&mut b)?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let n = len(&mut b)?;
        let name = take(&mut b, n)?;
        if name.is_empty() {
            return Err(HeaderError::Malformed("an empty header name"));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let n = len(&mut b)?;
        let value = String::from_utf8_lossy(take(&mut b, n)?).into_owned();
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_string()));
        }
    }
    Ok(headers)
}

/// The compressing side: what this end sends.
pub struct Deflater {
    z: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflater {
    pub fn new() -> Deflater {
        let mut z = Compress::new(Compression::default(), true);
        // Fails only for a stream already started; this one is new.
        let _ = z.set_dictionary(&dictionary());
        Deflater { z }
    }

    /// `headers` compressed and sync-flushed: the peer can inflate it at once.
    pub fn block(&mut self, headers: &Headers) -> Vec<u8> {
        let raw = encode_block(headers);
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.z.total_in();
        loop {
            let done = (self.z.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(raw.len() + 64);
            }
            let before = out.len();
            // Compressing into a Vec with room cannot fail.
            let _ = self.z.compress_vec(&raw[done..], &mut out, FlushCompress::Sync);
            let consumed = (self.z.total_in() - start) as usize == raw.len();
            // A sync flush is complete once a call leaves spare room in the output.
            if consumed && out.len() < out.capacity() && out.len() >= before {
                break;
            }
        }
        out
    }
}

/// The inflating side: what the peer sends.
pub struct Inflater {
    z: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater { z: Decompress::new(true) }
    }

    /// The headers of one compressed block.
    pub fn block(&mut self, compressed: &[u8]) -> Result<Headers, HeaderError> {
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        let start = self.z.total_in();
        loop {
            let done = (self.z.total_in() - start) as usize;
            if out.len() == out.capacity() {
                if out.len() >= MAX_BLOCK {
                    return Err(HeaderError::TooLarge);
                }
                out.reserve(out.len().min(MAX_BLOCK - out.len()).max(1024));
            }
            let before = (self.z.total_in(), out.len());
            match self.z.decompress_vec(&compressed[done..], &mut out, FlushDecompress::Sync) {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z.set_dictionary(&dictionary()).map_err(|e| HeaderError::Inflate(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(HeaderError::Inflate(e.to_string())),
            }
            let all_in = (self.z.total_in() - start) as usize == compressed.len();
            let progressed = (self.z.total_in(), out.len()) != before;
            if all_in && out.len() < out.capacity() {
                break;
            }
            if !progressed && out.len() < out.capacity() {
                return Err(HeaderError::Inflate("the block stops in the middle".into()));
            }
        }
        decode_block(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_dictionary_is_the_specifications() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(&d);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02");
    }

    #[test]
    fn blocks_round_trip_through_one_context_per_direction() {
        let mut out = Deflater::new();
        let mut peer = Inflater::new();
        let first = h(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]);
        let second = h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]);
        let a = out.block(&first);
        let b = out.block(&second);
        assert_eq!(peer.block(&a).unwrap(), first);
        // The second block refers back into the first: it inflates only in order.
        assert_eq!(peer.block(&b).unwrap(), second);
        assert!(b.len() < a.len(), "the shared context made the repeat smaller");
    }

    #[test]
    fn several_values_of_a_name_travel_nul_joined() {
        let headers = h(&[("x-stream-protocol-version", "v4.channel.k8s.io"), ("x-stream-protocol-version", "v3")]);
        let raw = encode_block(&headers);
        assert!(raw.windows(19).any(|w| w == b"v4.channel.k8s.io\0v"));
        assert_eq!(decode_block(&raw).unwrap(), headers);
    }

    #[test]
    fn blocks_name_the_dictionary_the_peer_checks() {
        let mut d = Deflater::new();
        let block = d.block(&h(&[("streamtype", "stdout")]));
        // A zlib stream with a preset dictionary: FDICT set in the header, then the dictionary's
        // Adler-32 (which the peer checks).
        assert_eq!(block[0], 0x78);
        assert_ne!(block[1] & 0x20, 0, "FDICT is set");
        assert_eq!(&block[2..6], &adler32(&dictionary()).to_be_bytes());
        assert_eq!(Inflater::new().block(&block).unwrap(), h(&[("streamtype", "stdout")]));
    }

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn garbage_and_bombs_are_errors() {
        assert!(Inflater::new().block(&[1, 2, 3, 4, 5]).is_err());
        assert!(decode_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
        assert!(decode_block(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // One value of a megabyte of zeros: small compressed, too large inflated.
        let huge = h(&[("y", &"a".repeat(1 << 20))]);
        let block = Deflater::new().block(&huge);
        assert!(block.len() < 8 * 1024);
        assert_eq!(Inflater::new().block(&block).unwrap_err(), HeaderError::TooLarge);
    }

    mod properties {
        //! Header blocks: any bytes are read or refused; any headers written are read back.
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn any_uncompressed_block_is_read_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
                let _ = decode_block(&bytes);
            }

            #[test]
            fn headers_written_are_read_back(
                headers in prop::collection::vec(("[a-z][a-z0-9-]{0,12}", "[ -~]{0,20}"), 0..6),
            ) {
                let headers: Headers = headers;
                let mut expected: Headers = Vec::new();
                // Values of one name travel together, in order, as SPDY/3 joins them.
                for (name, _) in &headers {
                    if !expected.iter().any(|(n, _)| n == name) {
                        expected.extend(headers.iter().filter(|(n, _)| n == name).cloned());
                    }
                }
                prop_assert_eq!(decode_block(&encode_block(&headers)).unwrap(), expected);
            }
        }
    }
}
