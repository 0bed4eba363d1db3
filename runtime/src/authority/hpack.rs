//! HPACK (RFC 7541) for the client side of one HTTP/2 connection: a decoder that keeps the
//! client's dynamic table across the connection's header blocks, and an encoder of plain
//! literals that never touch the peer's dynamic table. Pure functions over byte slices.

use std::borrow::Cow;
use std::collections::VecDeque;

use super::huffman::{self, HuffmanError};

/// RFC 7541 Appendix A.
#[rustfmt::skip]
const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""), (b":method", b"GET"), (b":method", b"POST"), (b":path", b"/"),
    (b":path", b"/index.html"), (b":scheme", b"http"), (b":scheme", b"https"), (b":status", b"200"),
    (b":status", b"204"), (b":status", b"206"), (b":status", b"304"), (b":status", b"400"),
    (b":status", b"404"), (b":status", b"500"), (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"), (b"accept-language", b""), (b"accept-ranges", b""),
    (b"accept", b""), (b"access-control-allow-origin", b""), (b"age", b""), (b"allow", b""),
    (b"authorization", b""), (b"cache-control", b""), (b"content-disposition", b""),
    (b"content-encoding", b""), (b"content-language", b""), (b"content-length", b""),
    (b"content-location", b""), (b"content-range", b""), (b"content-type", b""), (b"cookie", b""),
    (b"date", b""), (b"etag", b""), (b"expect", b""), (b"expires", b""), (b"from", b""),
    (b"host", b""), (b"if-match", b""), (b"if-modified-since", b""), (b"if-none-match", b""),
    (b"if-range", b""), (b"if-unmodified-since", b""), (b"last-modified", b""), (b"link", b""),
    (b"location", b""), (b"max-forwards", b""), (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""), (b"range", b""), (b"referer", b""), (b"refresh", b""),
    (b"retry-after", b""), (b"server", b""), (b"set-cookie", b""),
    (b"strict-transport-security", b""), (b"transfer-encoding", b""), (b"user-agent", b""),
    (b"vary", b""), (b"via", b""), (b"www-authenticate", b""),
];

/// What every entry costs in the table besides its name and value (RFC 7541 section 4.1).
const ENTRY_OVERHEAD: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block truncated")]
    Truncated,
    #[error("integer too large")]
    Overflow,
    #[error("index {0} is in neither table")]
    Index(usize),
    #[error("dynamic table size update to {size} exceeds the {limit} octets the server allows")]
    TableSize { size: usize, limit: usize },
    #[error("dynamic table size update after a header field")]
    LateSizeUpdate,
    #[error(transparent)]
    Huffman(#[from] HuffmanError),
}

/// A name and value in the dynamic table.
type Entry = (Box<[u8]>, Box<[u8]>);

/// One decoded header field.
#[derive(Debug)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    /// Sent as "never indexed" (RFC 7541 section 6.2.3): an intermediary keeps it so.
    pub sensitive: bool,
}

/// The decoding context of one direction of one connection.
pub struct Decoder {
    /// Newest first.
    table: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// SETTINGS_HEADER_TABLE_SIZE of the receiving end: the ceiling of size updates.
    limit: usize,
}

impl Decoder {
    pub fn new(limit: usize) -> Decoder {
        Decoder { table: VecDeque::new(), size: 0, max_size: limit, limit }
    }

    /// Decodes one complete header block, calling `field` for each header in order. An error
    /// leaves the context unusable (the connection must end: RFC 7541 section 2.3.3 and 4.2).
    pub fn decode<E: From<HpackError>>(
        &mut self,
        mut block: &[u8],
        mut field: impl FnMut(Field<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut first = true;
        while let Some(&octet) = block.first() {
            if octet & 0x80 != 0 {
                // Indexed header field.
                let index = integer(&mut block, 7)?;
                let (name, value) = self.entry(index)?;
                field(Field { name, value, sensitive: false })?;
            } else if octet & 0x40 != 0 {
                // Literal with incremental indexing.
                let (name, value) = literal(&mut block, 6)?;
                let name = self.name(name)?;
                field(Field { name: &name, value: &value, sensitive: false })?;
                let entry = (name.into_owned().into_boxed_slice(), value.into_owned().into_boxed_slice());
                self.insert(entry.0, entry.1);
            } else if octet & 0x20 != 0 {
                // Dynamic table size update: only before the block's first field.
                if !first {
                    return Err(HpackError::LateSizeUpdate.into());
                }
                let size = integer(&mut block, 5)?;
                if size > self.limit {
                    return Err(HpackError::TableSize { size, limit: self.limit }.into());
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                let sensitive = octet & 0x10 != 0;
                let (name, value) = literal(&mut block, 4)?;
                field(Field { name: &self.name(name)?, value: &value, sensitive })?;
            }
            first = false;
        }
        Ok(())
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError::Index(0)),
            1..=61 => Ok(STATIC[index - 1]),
            _ => self.table.get(index - 62).map(|(n, v)| (&**n, &**v)).ok_or(HpackError::Index(index)),
        }
    }

    fn name<'b>(&'b self, name: Name<'b>) -> Result<Cow<'b, [u8]>, HpackError> {
        match name {
            Name::Indexed(index) => Ok(Cow::Borrowed(self.entry(index)?.0)),
            Name::Literal(name) => Ok(name),
        }
    }

    fn insert(&mut self, name: Box<[u8]>, value: Box<[u8]>) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        // An entry larger than the table empties it and is not added (section 4.4).
        self.evict(size);
        if size <= self.max_size {
            self.size += size;
            self.table.push_front((name, value));
        }
    }

    /// Evicts the oldest entries until `room` more octets fit (or the table is empty).
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((name, value)) = self.table.pop_back() else { break };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// The name of a literal field: a table index, or a string.
enum Name<'b> {
    Indexed(usize),
    Literal(Cow<'b, [u8]>),
}

/// A literal field whose name index has `prefix` bits; advances `block` past it.
fn literal<'b>(block: &mut &'b [u8], prefix: u8) -> Result<(Name<'b>, Cow<'b, [u8]>), HpackError> {
    let index = integer(block, prefix)?;
    let name = if index == 0 { Name::Literal(string(block)?) } else { Name::Indexed(index) };
    Ok((name, string(block)?))
}

/// An integer with an N-bit prefix (section 5.1); advances `block` past it.
fn integer(block: &mut &[u8], prefix: u8) -> Result<usize, HpackError> {
    let (&first, mut rest) = block.split_first().ok_or(HpackError::Truncated)?;
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(first) & mask;
    if value == mask {
        let mut shift = 0;
        loop {
            let (&b, tail) = rest.split_first().ok_or(HpackError::Truncated)?;
            rest = tail;
            // Four continuation octets reach 2^28 + mask: far beyond any real length or index.
            if shift > 21 {
                return Err(HpackError::Overflow);
            }
            value += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    *block = rest;
    Ok(value)
}

/// A string literal (section 5.2), raw or Huffman-coded; advances `block` past it.
fn string<'b>(block: &mut &'b [u8]) -> Result<Cow<'b, [u8]>, HpackError> {
    let huffman = block.first().is_some_and(|b| b & 0x80 != 0);
    let len = integer(block, 7)?;
    if len > block.len() {
        return Err(HpackError::Truncated);
    }
    let (raw, rest) = block.split_at(len);
    *block = rest;
    if huffman {
        let mut out = Vec::new();
        huffman::decode(raw, &mut out)?;
        Ok(Cow::Owned(out))
    } else {
        Ok(Cow::Borrowed(raw))
    }
}

/// Appends a literal without indexing (never indexed if `sensitive`) with a literal name and
/// raw strings: the receiving decoder's dynamic table is neither read nor written.
pub fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8], sensitive: bool) {
    out.push(if sensitive { 0x10 } else { 0x00 });
    encode_integer(out, 0, 7, name.len());
    out.extend_from_slice(name);
    encode_integer(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// An integer with an N-bit prefix whose first octet carries `flags` above the prefix.
pub fn encode_integer(out: &mut Vec<u8>, flags: u8, prefix: u8, mut value: usize) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    value -= mask;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn decode(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut out = Vec::new();
        d.decode(block, |f: Field<'_>| {
            out.push((String::from_utf8_lossy(f.name).into_owned(), String::from_utf8_lossy(f.value).into_owned()));
            Ok::<(), HpackError>(())
        })?;
        Ok(out)
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn integers_of_the_rfc() {
        // C.1.1 to C.1.3.
        for (bytes, prefix, value) in [(vec![0x0a], 5, 10), (vec![0x1f, 0x9a, 0x0a], 5, 1337), (vec![0x2a], 8, 42)] {
            let mut b = &bytes[..];
            assert_eq!(integer(&mut b, prefix).unwrap(), value);
            assert!(b.is_empty());
            let mut again = Vec::new();
            encode_integer(&mut again, 0, prefix, value);
            assert_eq!(again, bytes);
        }
        assert_eq!(integer(&mut &[0x1f, 0x9a][..], 5), Err(HpackError::Truncated));
        assert_eq!(integer(&mut &[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01][..], 5), Err(HpackError::Overflow));
    }

    #[test]
    fn requests_with_huffman_and_the_dynamic_table() {
        // RFC 7541 C.4: three requests on one connection.
        let mut d = Decoder::new(4096);
        let first = decode(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
        assert_eq!(
            first,
            pairs(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")])
        );
        let second = decode(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(
            second,
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        let third = decode(&mut d, &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")).unwrap();
        assert_eq!(
            third,
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.size, 164, "the table's size after C.4.3");
    }

    #[test]
    fn eviction_and_size_updates() {
        // RFC 7541 C.5 with a 256-octet table: the third response evicts.
        let mut d = Decoder::new(256);
        d.max_size = 256;
        decode(&mut d, &hex("4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")).unwrap();
        assert_eq!(d.size, 222);
        decode(&mut d, &hex("4803 3330 37c1 c0bf")).unwrap();
        assert_eq!(d.size, 222);
        assert_eq!(d.table.len(), 4);
        // A size update to 0 empties the table; references into it then fail.
        assert_eq!(decode(&mut d, &[0x20, 0x82]).unwrap(), pairs(&[(":method", "GET")]));
        assert_eq!((d.size, d.table.len()), (0, 0));
        assert_eq!(decode(&mut d, &[0xbe]), Err(HpackError::Index(62)));
        // Beyond the limit the server set, or after a field: refused.
        assert_eq!(decode(&mut d, &[0x3f, 0xe2, 0x01]), Err(HpackError::TableSize { size: 257, limit: 256 }));
        assert_eq!(decode(&mut d, &[0x82, 0x20]), Err(HpackError::LateSizeUpdate));
    }

    #[test]
    fn never_indexed_and_truncated_literals() {
        let mut d = Decoder::new(4096);
        let mut seen = Vec::new();
        // C.2.3: never indexed "password: secret".
        d.decode(&hex("1008 7061 7373 776f 7264 0673 6563 7265 74"), |f: Field<'_>| {
            seen.push((f.name.to_vec(), f.value.to_vec(), f.sensitive));
            Ok::<(), HpackError>(())
        })
        .unwrap();
        assert_eq!(seen, vec![(b"password".to_vec(), b"secret".to_vec(), true)]);
        assert_eq!(d.size, 0, "not added to the table");
        assert_eq!(decode(&mut d, &hex("1008 7061 7373")), Err(HpackError::Truncated));
        assert_eq!(decode(&mut d, &[0x80]), Err(HpackError::Index(0)));
    }

    #[test]
    fn literals_round_trip_without_touching_the_table() {
        let mut out = Vec::new();
        encode_literal(&mut out, b":authority", b"localhost", false);
        encode_literal(&mut out, b"x-long", &[b'v'; 300], true);
        let mut d = Decoder::new(4096);
        let mut seen = Vec::new();
        d.decode(&out, |f: Field<'_>| {
            seen.push((f.name.to_vec(), f.value.len(), f.sensitive));
            Ok::<(), HpackError>(())
        })
        .unwrap();
        assert_eq!(seen, vec![(b":authority".to_vec(), 9, false), (b"x-long".to_vec(), 300, true)]);
        assert_eq!(d.table.len(), 0);
    }
}
