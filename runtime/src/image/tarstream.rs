//! A streaming tar reader for layers, bounded against hostile input: GNU long names and PAX
//! headers are read only up to a cap (PATH_MAX for a name), the whole stream is counted against
//! a byte limit, and a GNU sparse file's map is handed out as a map so its holes stay holes.
//! Nothing but one entry's metadata is held in memory. Pure reading; `unpack` writes.

use std::io::{self, Read};

/// The longest path Linux takes (with its NUL), and so the longest a layer may name.
pub const PATH_MAX: usize = 4096;
/// The most a PAX header (extended attributes, long paths) may hold.
pub const MAX_PAX: u64 = 1 << 20;
/// The most data pieces a GNU sparse file may list (its map is read before its data).
pub const MAX_SPARSE_PIECES: usize = 1 << 16;
const BLOCK: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Corrupt(String),
    #[error("{what} of {len} bytes is longer than the {max} lockstep reads")]
    TooLong { what: &'static str, len: u64, max: u64 },
    #[error("the layer is larger than {max} bytes uncompressed (the image.max_layer_bytes limit)")]
    TooLarge { max: u64 },
}

/// The byte limit, carried inside an io::Error through readers that know nothing of it.
#[derive(Debug)]
pub struct LimitExceeded {
    pub max: u64,
}

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the layer is larger than {} bytes uncompressed (the image.max_layer_bytes limit)", self.max)
    }
}

impl std::error::Error for LimitExceeded {}

/// The limit an io::Error carries, if it is one.
pub fn limit_of(e: &io::Error) -> Option<u64> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<LimitExceeded>()).map(|l| l.max)
}

impl From<TarError> for io::Error {
    fn from(e: TarError) -> io::Error {
        match e {
            TarError::Io(e) => e,
            TarError::TooLarge { max } => io::Error::other(LimitExceeded { max }),
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// Counts what is read and fails past `max` bytes.
pub struct Counted<R> {
    inner: R,
    count: u64,
    max: u64,
}

impl<R: Read> Counted<R> {
    pub fn new(inner: R, max: u64) -> Self {
        Counted { inner, count: 0, max }
    }
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.max {
            return Err(io::Error::other(LimitExceeded { max: self.max }));
        }
        Ok(n)
    }
}

/// A GNU sparse file: where its data pieces go, and its size with the holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sparse {
    /// (offset, length) of each piece, in order, as the entry's data holds them one after another.
    pub pieces: Vec<(u64, u64)>,
    pub real_size: u64,
}

/// One member of the archive with everything that describes it folded in.
pub struct TarEntry {
    /// Its own header (ustar or GNU).
    pub header: tar::Header,
    /// From a PAX `path`, else a GNU long name, else the header.
    pub path: Vec<u8>,
    /// From a PAX `linkpath`, else a GNU long link name, else the header.
    pub link: Option<Vec<u8>>,
    /// The raw records of its PAX header, if any.
    pub pax: Option<Vec<u8>>,
    /// Bytes of data in the archive (for a sparse file: its pieces together).
    pub size: u64,
    pub sparse: Option<Sparse>,
}

impl TarEntry {
    pub fn pax_records(&self) -> Option<tar::PaxExtensions<'_>> {
        self.pax.as_deref().map(tar::PaxExtensions::new)
    }
}

pub struct TarReader<R> {
    inner: R,
    /// Data of the current entry not yet read, and the padding after it.
    remaining: u64,
    padding: u64,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader { inner, remaining: 0, padding: 0 }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The current entry's data (what is left of it).
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { reader: self }
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let skipped = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        if skipped != n {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside an entry"));
        }
        Ok(())
    }

    fn read_block(&mut self, block: &mut [u8; BLOCK as usize]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < block.len() {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(TarError::Corrupt("the archive ends inside a header".into())),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
        Ok(true)
    }

    /// Reads the data of an extension header (`size` bytes, at most `max`) and its padding.
    fn read_extension(&mut self, what: &'static str, size: u64, max: u64) -> Result<Vec<u8>, TarError> {
        if size > max {
            return Err(TarError::TooLong { what, len: size, max });
        }
        let mut data = Vec::with_capacity(size as usize);
        (&mut self.inner).take(size).read_to_end(&mut data).map_err(io_error)?;
        if data.len() as u64 != size {
            return Err(TarError::Corrupt(format!("the archive ends inside a {what}")));
        }
        self.skip(padding(size)).map_err(io_error)?;
        Ok(data)
    }

    /// The next member, or None at the end of the archive (a zero block, or the end of input).
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, TarError> {
        self.skip(self.remaining + self.padding).map_err(io_error)?;
        self.remaining = 0;
        self.padding = 0;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<u8>> = None;
        loop {
            let mut header = tar::Header::new_old();
            if !self.read_block(header.as_mut_bytes())? || header.as_bytes().iter().all(|&b| b == 0) {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(TarError::Corrupt("extension headers describe a member that never comes".into()));
                }
                return Ok(None);
            }
            check_sum(&header)?;
            let kind = header.entry_type();
            let size = header.entry_size().map_err(|e| TarError::Corrupt(e.to_string()))?;
            match kind {
                tar::EntryType::GNULongName => {
                    let name = self.read_extension("a GNU long name", size, PATH_MAX as u64 + 1)?;
                    if long_name.replace(trim_nul(name)).is_some() {
                        return Err(TarError::Corrupt("two long names for one member".into()));
                    }
                }
                tar::EntryType::GNULongLink => {
                    let name = self.read_extension("a GNU long link name", size, PATH_MAX as u64 + 1)?;
                    if long_link.replace(trim_nul(name)).is_some() {
                        return Err(TarError::Corrupt("two long link names for one member".into()));
                    }
                }
                tar::EntryType::XHeader => {
                    let records = self.read_extension("a PAX header", size, MAX_PAX)?;
                    if pax.replace(records).is_some() {
                        return Err(TarError::Corrupt("two PAX headers for one member".into()));
                    }
                }
                // Global PAX headers apply to no file (containerd ignores them too).
                tar::EntryType::XGlobalHeader => {
                    if size > MAX_PAX {
                        return Err(TarError::TooLong { what: "a global PAX header", len: size, max: MAX_PAX });
                    }
                    self.skip(size + padding(size)).map_err(io_error)?;
                }
                _ => return self.member(header, long_name, long_link, pax).map(Some),
            }
        }
    }

    fn member(
        &mut self,
        header: tar::Header,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Option<Vec<u8>>,
    ) -> Result<TarEntry, TarError> {
        let record = |key: &str| -> Option<Vec<u8>> {
            let records = tar::PaxExtensions::new(pax.as_deref()?);
            records.flatten().find(|r| r.key() == Ok(key)).map(|r| r.value_bytes().to_vec())
        };
        let path = record("path").or(long_name).unwrap_or_else(|| header.path_bytes().into_owned());
        if path.len() >= PATH_MAX {
            return Err(TarError::TooLong { what: "a path", len: path.len() as u64, max: PATH_MAX as u64 - 1 });
        }
        let link = record("linkpath").or(long_link).or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        if let Some(link) = &link {
            if link.len() >= PATH_MAX {
                return Err(TarError::TooLong {
                    what: "a link target",
                    len: link.len() as u64,
                    max: PATH_MAX as u64 - 1,
                });
            }
        }
        let mut size = header.entry_size().map_err(|e| TarError::Corrupt(e.to_string()))?;
        if let Some(value) = record("size") {
            size = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| TarError::Corrupt("a PAX size that is not a number".into()))?;
        }
        let sparse =
            if header.entry_type() == tar::EntryType::GNUSparse { Some(self.sparse_map(&header, size)?) } else { None };
        self.remaining = size;
        self.padding = padding(size);
        Ok(TarEntry { header, path, link, pax, size, sparse })
    }

    /// The map of a GNU sparse member: four pieces in its header, 21 in each extension block.
    fn sparse_map(&mut self, header: &tar::Header, size: u64) -> Result<Sparse, TarError> {
        let corrupt = |e: io::Error| TarError::Corrupt(format!("a GNU sparse map: {e}"));
        let gnu = header.as_gnu().ok_or_else(|| TarError::Corrupt("a sparse member without a GNU header".into()))?;
        let real_size = gnu.real_size().map_err(corrupt)?;
        let mut pieces = Vec::new();
        let (mut end, mut data) = (0u64, 0u64);
        let mut add = |piece: &tar::GnuSparseHeader, pieces: &mut Vec<(u64, u64)>| -> Result<(), TarError> {
            if piece.is_empty() {
                return Ok(());
            }
            let (offset, length) = (piece.offset().map_err(corrupt)?, piece.length().map_err(corrupt)?);
            let piece_end = offset.checked_add(length).filter(|&e| e <= real_size && offset >= end);
            let Some(piece_end) = piece_end else {
                return Err(TarError::Corrupt("a GNU sparse map whose pieces overlap or pass the file's end".into()));
            };
            if pieces.len() >= MAX_SPARSE_PIECES {
                return Err(TarError::TooLong {
                    what: "a GNU sparse map",
                    len: pieces.len() as u64 + 1,
                    max: MAX_SPARSE_PIECES as u64,
                });
            }
            end = piece_end;
            data += length;
            pieces.push((offset, length));
            Ok(())
        };
        for piece in &gnu.sparse {
            add(piece, &mut pieces)?;
        }
        let mut extended = gnu.is_extended();
        while extended {
            let mut ext = tar::GnuExtSparseHeader::new();
            if !self.read_block(ext.as_mut_bytes())? {
                return Err(TarError::Corrupt("the archive ends inside a GNU sparse map".into()));
            }
            for piece in ext.sparse() {
                add(piece, &mut pieces)?;
            }
            extended = ext.is_extended();
        }
        if data != size {
            return Err(TarError::Corrupt(format!(
                "a GNU sparse map of {data} bytes of data for a member that holds {size}"
            )));
        }
        Ok(Sparse { pieces, real_size })
    }
}

/// The data of the current member.
pub struct EntryData<'a, R> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.reader.remaining) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.reader.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside a member's data"));
        }
        self.reader.remaining -= n as u64;
        Ok(n)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn trim_nul(mut name: Vec<u8>) -> Vec<u8> {
    while name.last() == Some(&0) {
        name.pop();
    }
    name
}

fn io_error(e: io::Error) -> TarError {
    match limit_of(&e) {
        Some(max) => TarError::TooLarge { max },
        None => TarError::Io(e),
    }
}

fn check_sum(header: &tar::Header) -> Result<(), TarError> {
    let bytes = header.as_bytes();
    let sum: u32 = bytes[..148].iter().chain(&bytes[156..]).map(|&b| u32::from(b)).sum::<u32>() + 8 * u32::from(b' ');
    match header.cksum() {
        Ok(expected) if expected == sum => Ok(()),
        _ => Err(TarError::Corrupt("a header's checksum does not match".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, TarError> {
        let mut reader = TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = reader.next_entry()? {
            let mut data = Vec::new();
            reader.data().read_to_end(&mut data)?;
            out.push((String::from_utf8_lossy(&e.path).into_owned(), data));
        }
        Ok(out)
    }

    #[test]
    fn long_names_pax_records_and_data_are_folded_into_their_member() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(300));
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
        b.append_pax_extensions([("path", &b"from-pax"[..]), ("size", &b"3"[..])]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("ignored").unwrap();
        h.set_size(3);
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        let got = entries(&b.into_inner().unwrap()).unwrap();
        assert_eq!(got, vec![(long, b"hello".to_vec()), ("from-pax".to_string(), b"abc".to_vec())]);
    }

    /// A long name or a PAX header past its cap fails before it is read into memory.
    #[test]
    fn oversized_extension_headers_are_refused_unread() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(1 << 40);
        h.set_cksum();
        let err = entries(h.as_bytes()).err().unwrap();
        assert!(matches!(err, TarError::TooLong { what: "a GNU long name", .. }), "{err}");
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_cksum();
        assert!(matches!(entries(h.as_bytes()), Err(TarError::TooLong { what: "a PAX header", .. })));
        let mut bad = h.clone();
        bad.as_mut_bytes()[0] ^= 1;
        assert!(matches!(entries(bad.as_bytes()), Err(TarError::Corrupt(_))));
    }

    #[test]
    fn the_byte_limit_stops_the_stream() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(10_000);
        b.append_data(&mut h, "big", &[0u8; 10_000][..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut reader = TarReader::new(Counted::new(&bytes[..], 4096));
        reader.next_entry().unwrap().unwrap();
        let err = io::copy(&mut reader.data(), &mut io::sink()).unwrap_err();
        assert_eq!(limit_of(&err), Some(4096));
    }
}
