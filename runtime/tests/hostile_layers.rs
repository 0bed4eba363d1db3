//! Tiny layers that used to cost lockstepd gigabytes, fed to the real unpacker (decompress and
//! extract, as a pull runs them) under a counting allocator: each fails within a second with a
//! clear error, and the memory it takes at its peak stays within a few MiB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lockstep_runtime::image::unpack::{self, UnpackError};

/// The system allocator, counting bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only counters are added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One test at a time, from its start (building a layer allocates too): the counters are the
/// process's.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const MIB: usize = 1 << 20;

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, tar).unwrap();
    gz.finish().unwrap()
}

/// Unpacks a compressed layer as a pull does; the error, the time taken, and the most memory
/// in use above what was in use before.
fn unpack_measured(blob: &[u8]) -> (UnpackError, Duration, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let result = unpack::decompress(blob).and_then(|(_, tar)| unpack::extract(tar, tmp.path()).map(|_| ()));
    let took = started.elapsed();
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    (result.expect_err("a hostile layer must fail"), took, grew)
}

/// A GNU long-name header followed by a member, the name `len` bytes of `a/a/…`.
fn long_name_tar(kind: tar::EntryType, name: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(name.len() as u64);
    h.set_mode(0o644);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(name);
    out.resize(out.len().div_ceil(512) * 512, 0);
    let mut file = tar::Header::new_gnu();
    file.set_size(0);
    file.set_mode(0o644);
    file.as_gnu_mut().unwrap().name[..1].copy_from_slice(b"f");
    file.set_cksum();
    out.extend_from_slice(file.as_bytes());
    out.extend_from_slice(&[0; 1024]);
    out
}

/// The layer: one entry whose path is `a/` 50,000 times (it cost tens of GB, as every
/// parent on the way kept its whole path).
#[test]
fn a_path_50000_directories_deep_fails_at_once_in_little_memory() {
    let _serial = serial();
    let name = format!("{}f", "a/".repeat(50_000));
    let blob = gzip(&long_name_tar(tar::EntryType::GNULongName, name.as_bytes()));
    assert!(blob.len() < 4096, "a tiny layer: {} bytes", blob.len());
    let (err, took, grew) = unpack_measured(&blob);
    assert!(matches!(err, UnpackError::Limit { .. }), "{err}");
    assert!(err.to_string().contains("GNU long name"), "{err}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(grew < 4 * MIB, "{} KiB at the peak", grew / 1024);
}

/// As deep as a path may be, several times over: each directory is recorded once, so chains of
/// a thousand cost about a megabyte (full paths per parent: hundreds).
#[test]
fn many_maximal_chains_cost_memory_in_proportion_to_their_directories() {
    let _serial = serial();
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..8 {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        let path = format!("c{i}/{}f", "a/".repeat(unpack::MAX_DEPTH - 2));
        b.append_data(&mut h, path, &b""[..]).unwrap();
    }
    let blob = gzip(&b.into_inner().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let (_, tar) = unpack::decompress(&blob[..]).unwrap();
    let started = Instant::now();
    let (extracted, _) = unpack::extract(tar, tmp.path()).unwrap();
    let took = started.elapsed();
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    assert_eq!(extracted.dirs.implicit_count(), 8 * (unpack::MAX_DEPTH - 1));
    // 8,000 directories; as full paths they were 8 × 1024² / 2 strings (~200 MB).
    assert!(grew < 8 * MIB, "{} KiB at the peak", grew / 1024);
    assert!(took < Duration::from_secs(30), "{took:?}");
}

/// Long names and PAX headers of 256 MiB (a few hundred KiB compressed) were read whole into
/// memory; they fail before a byte of them is kept.
#[test]
fn huge_long_names_and_pax_headers_are_not_read_into_memory() {
    let _serial = serial();
    for kind in [tar::EntryType::GNULongName, tar::EntryType::GNULongLink, tar::EntryType::XHeader] {
        let tar = long_name_tar(kind, &vec![b'a'; 256 * MIB]);
        let blob = gzip(&tar);
        drop(tar);
        let (err, took, grew) = unpack_measured(&blob);
        assert!(matches!(err, UnpackError::Limit { .. }), "{kind:?}: {err}");
        assert!(took < Duration::from_secs(1), "{kind:?}: {took:?}");
        assert!(grew < 4 * MIB, "{kind:?}: {} KiB at the peak", grew / 1024);
    }
}
