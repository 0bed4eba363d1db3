//! Decompression of a layer stream (gzip, zstd of any number of frames, or plain tar, told
//! apart by its first bytes) and the hashing reader that gives blob digests and diff IDs.
//! Touches nothing but the bytes it reads.

use std::io::{self, BufRead, BufReader, Read};

use sha2::Digest as _;

use super::UnpackError;

/// The compression of a layer stream, by its first bytes (media types are often wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "tar",
        }
    }
}

pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A reader that hashes (sha256) and counts what passes through it.
pub struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
    count: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing { inner, hasher: sha2::Sha256::new(), count: 0 }
    }
    pub fn finish(self) -> (crate::image::reference::Digest, u64, R) {
        (crate::image::reference::Digest::from_sha256(&self.hasher.finalize()), self.count, self.inner)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Tags errors of the decompressor so a truncated or corrupt stream says which format failed.
struct Tagged<R> {
    inner: R,
    format: &'static str,
}

impl<R: Read> Read for Tagged<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), format!("corrupt or truncated {} stream: {e}", self.format)))
    }
}

/// A zstd stream of any number of frames (zstd:chunked layers have many), skippable frames
/// skipped, to the end of its input.
struct ZstdFrames<R> {
    source: R,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> Self {
        ZstdFrames { source, decoder: ruzstd::decoding::FrameDecoder::new(), in_frame: false }
    }

    /// Starts the next frame; false at the end of the input.
    fn next_frame(&mut self) -> io::Result<bool> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.decoder.init(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame { length, .. })) => {
                    let skipped = io::copy(&mut (&mut self.source).take(u64::from(length)), &mut io::sink())?;
                    if skipped != u64::from(length) {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a skippable frame is cut short"));
                    }
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let wanted = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(&mut self.source, ruzstd::decoding::BlockDecodingStrategy::UptoBytes(wanted))
                    .map_err(io::Error::other)?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder.is_finished() {
                self.in_frame = false;
            }
        }
    }
}

/// The uncompressed tar stream of a layer, whatever its compression.
pub fn decompress<'a, R: Read + 'a>(compressed: R) -> Result<(Compression, Box<dyn Read + 'a>), UnpackError> {
    let mut buffered = BufReader::with_capacity(128 * 1024, compressed);
    let head = buffered.fill_buf().map_err(|e| UnpackError::Corrupt { format: "layer", detail: e.to_string() })?;
    let kind = sniff(head);
    let reader: Box<dyn Read + 'a> = match kind {
        Compression::Gzip => Box::new(Tagged { inner: flate2::read::MultiGzDecoder::new(buffered), format: "gzip" }),
        Compression::Zstd => Box::new(Tagged { inner: ZstdFrames::new(buffered), format: "zstd" }),
        Compression::None => Box::new(buffered),
    };
    Ok((kind, reader))
}
