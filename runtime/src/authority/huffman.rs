//! The Huffman code of HPACK (RFC 7541 Appendix B), decoding only: the code is canonical, so
//! the 257 code lengths below determine every code, and the decoder tables are derived from
//! them at compile time. Pure functions over byte slices.

/// Code length in bits of each symbol 0..=255 and of EOS (256), from RFC 7541 Appendix B.
#[rustfmt::skip]
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0..
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16..
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,         // 32..
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,              // 48..
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,                // 64..
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,             // 80..
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,                // 96..
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,            // 112..
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128..
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144..
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160..
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176..
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192..
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208..
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224..
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240..
    30,                                                             // EOS
];

const EOS: u16 = 256;
const MIN_LEN: u32 = 5;
const MAX_LEN: u32 = 30;

/// A canonical code: codes of one length are consecutive, in symbol order, and each length's
/// first code follows the previous length's last one (shifted).
struct Canonical {
    /// The first code of each length (index = length).
    first: [u32; 31],
    /// How many codes each length has.
    count: [u16; 31],
    /// Where each length's symbols start in `symbols`.
    offset: [u16; 31],
    /// Symbols ordered by (length, symbol).
    symbols: [u16; 257],
}

const fn canonical() -> Canonical {
    let mut c = Canonical { first: [0; 31], count: [0; 31], offset: [0; 31], symbols: [0; 257] };
    let mut s = 0;
    while s < 257 {
        c.count[LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut code = 0u32;
    let mut at = 0u16;
    let mut len = 1;
    while len <= MAX_LEN as usize {
        code = (code + c.count[len - 1] as u32) << 1;
        c.first[len] = code;
        c.offset[len] = at;
        let mut s = 0;
        while s < 257 {
            if LENGTHS[s] as usize == len {
                c.symbols[at as usize] = s as u16;
                at += 1;
            }
            s += 1;
        }
        len += 1;
    }
    c
}

static CODE: Canonical = canonical();

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    #[error("a Huffman-coded string contains EOS")]
    Eos,
    #[error("a Huffman-coded string ends in invalid padding")]
    Padding,
}

/// Appends the decoded `input` to `out`. Padding must be at most 7 bits of ones (the EOS
/// prefix), as RFC 7541 section 5.2 demands.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    out.reserve(input.len() * 8 / 5);
    // Unread bits, left-aligned: the next bit is bit 63.
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    let mut next = 0;
    loop {
        while bits <= 56 && next < input.len() {
            acc |= u64::from(input[next]) << (56 - bits);
            bits += 8;
            next += 1;
        }
        if bits == 0 {
            return Ok(());
        }
        if next == input.len() && bits <= 7 && acc >> (64 - bits) == (1 << bits) - 1 {
            return Ok(()); // padding
        }
        // The next 30 bits; past the end of the input they read as ones, like padding would.
        let missing = MAX_LEN.saturating_sub(bits);
        let peek = ((acc >> (64 - MAX_LEN)) as u32) | ((1u32 << missing) - 1);
        let (len, symbol) = lookup(peek).ok_or(HuffmanError::Padding)?;
        if len > bits {
            return Err(HuffmanError::Padding);
        }
        if symbol == EOS {
            return Err(HuffmanError::Eos);
        }
        out.push(symbol as u8);
        acc <<= len;
        bits -= len;
    }
}

/// The symbol whose code starts `peek` (30 bits), and the code's length.
#[inline]
fn lookup(peek: u32) -> Option<(u32, u16)> {
    let mut len = MIN_LEN;
    while len <= MAX_LEN {
        let code = peek >> (MAX_LEN - len);
        let first = CODE.first[len as usize];
        let count = u32::from(CODE.count[len as usize]);
        if code >= first && code - first < count {
            let at = usize::from(CODE.offset[len as usize]) + (code - first) as usize;
            return Some((len, CODE.symbols[at]));
        }
        len += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn decoded(input: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(input, &mut out).map(|()| out)
    }

    #[test]
    fn decodes_the_rfc_examples() {
        // RFC 7541 C.4.1 to C.4.3 and C.6.1.
        assert_eq!(decoded(&hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")).unwrap(), b"www.example.com");
        assert_eq!(decoded(&hex("a8eb 1064 9cbf")).unwrap(), b"no-cache");
        assert_eq!(decoded(&hex("25a8 49e9 5ba9 7d7f")).unwrap(), b"custom-key");
        assert_eq!(decoded(&hex("25a8 49e9 5bb8 e8b4 bf")).unwrap(), b"custom-value");
        assert_eq!(decoded(&hex("6402")).unwrap(), b"302");
        assert_eq!(decoded(&hex("aec3 771a 4b")).unwrap(), b"private");
        assert_eq!(
            decoded(&hex("d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff")).unwrap(),
            b"Mon, 21 Oct 2013 20:13:21 GMT"
        );
        assert_eq!(decoded(&[]).unwrap(), b"");
    }

    #[test]
    fn the_code_is_complete_and_prefix_free() {
        // Kraft's sum of a complete prefix code is exactly 1: sum of 2^(30-len) == 2^30.
        let sum: u64 = LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(sum, 1 << 30);
        // EOS is thirty ones.
        assert_eq!(lookup(u32::MAX >> 2), Some((30, EOS)));
        // '0' is 00000, 'a' 00011 (RFC 7541 Appendix B).
        assert_eq!(lookup(0), Some((5, b'0' as u16)));
        assert_eq!(lookup(0b00011 << 25), Some((5, b'a' as u16)));
    }

    #[test]
    fn refuses_bad_padding_and_eos() {
        // "0" then three zero bits: padding must be ones.
        assert_eq!(decoded(&[0b0000_0000]), Err(HuffmanError::Padding));
        // A whole byte of ones is more than 7 bits of padding.
        assert_eq!(decoded(&hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff ff")), Err(HuffmanError::Padding));
        // EOS itself (30 ones) followed by two bits of padding.
        assert_eq!(decoded(&[0xff, 0xff, 0xff, 0xff]), Err(HuffmanError::Eos));
    }
}
