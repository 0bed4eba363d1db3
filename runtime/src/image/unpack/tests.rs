//! Tests of the unpacker as a whole: real layers built with the tar crate, extracted into
//! temporary directories, every kind of entry, escape and limit.

use super::whiteouts::OPAQUE_XATTR;
use super::*;
use rustix::fs::XattrFlags;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(1_700_000_000);
    // Write the raw name so tests can build paths the builder would refuse.
    let name = &mut h.as_old_mut().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_cksum();
    h
}

fn layer(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut h = header(path, *kind, data.len() as u64, if kind.is_dir() { 0o750 } else { 0o640 });
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
            h.set_cksum();
        }
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<Usage, UnpackError>) {
    let tmp = tempfile::tempdir().unwrap();
    let r = extract(bytes, tmp.path()).map(|(e, _)| e.usage);
    (tmp, r)
}

use tar::EntryType as T;

#[test]
fn files_dirs_links_and_owners() {
    let bytes = layer(&[
        ("etc/", T::Directory, b"", ""),
        ("etc/motd", T::Regular, b"hello", ""),
        ("etc/motd2", T::Link, b"", "etc/motd"),
        ("etc/link", T::Symlink, b"", "/etc/motd"),
        ("bin/deep/file", T::Regular, b"x", ""),
        ("dev/null", T::Char, b"", ""),
    ]);
    let (tmp, usage) = unpack(&bytes);
    let usage = usage.unwrap();
    let root = tmp.path();
    assert_eq!(std::fs::read_to_string(root.join("etc/motd")).unwrap(), "hello");
    let meta = std::fs::metadata(root.join("etc/motd")).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777), (1234, 5678, 0o640));
    assert_eq!(meta.nlink(), 2, "hardlinked");
    assert_eq!(meta.mtime(), 1_700_000_000);
    assert_eq!(std::fs::read_link(root.join("etc/link")).unwrap(), Path::new("/etc/motd"));
    let etc = std::fs::metadata(root.join("etc")).unwrap();
    assert_eq!((etc.permissions().mode() & 0o7777, etc.mtime()), (0o750, 1_700_000_000));
    assert!(root.join("bin/deep/file").exists(), "missing parents are created");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(root.join("dev/null")).unwrap().file_type().is_char_device());
    assert_eq!(usage.bytes, 6);
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let bytes = layer(&[
        ("etc/", T::Directory, b"", ""),
        ("etc/.wh.passwd", T::Regular, b"", ""),
        ("var/", T::Directory, b"", ""),
        ("var/.wh..wh..opq", T::Regular, b"", ""),
    ]);
    let (tmp, usage) = unpack(&bytes);
    usage.unwrap();
    let meta = std::fs::symlink_metadata(tmp.path().join("etc/passwd")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(meta.file_type().is_char_device() && meta.rdev() == 0, "a 0:0 character device");
    assert!(!tmp.path().join("etc/.wh.passwd").exists());
    let mut buf = [0u8; 4];
    let n = rfs::getxattr(tmp.path().join("var"), OPAQUE_XATTR, &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"y");
}

#[test]
fn escapes_are_refused() {
    // Where a broken unpacker would write: beside the root (it sits two levels down, so
    // `..` twice stays inside our temporary directory) or, for absolute paths, in /tmp.
    let marker = format!("/tmp/lockstep-unpack-escape-{}", std::process::id());
    let marker_name = marker.trim_start_matches("/tmp/").to_string();
    for (entries, why) in [
        (vec![("../evil".to_string(), T::Regular, &b"x"[..], String::new())], "`..`"),
        (vec![("a/../../evil".to_string(), T::Regular, &b"x"[..], String::new())], "`..`"),
        (vec![(marker.clone(), T::Regular, &b"x"[..], String::new())], "absolute"),
        (
            vec![
                ("esc".to_string(), T::Symlink, &b""[..], "/tmp".to_string()),
                (format!("esc/{marker_name}"), T::Regular, &b"x"[..], String::new()),
            ],
            "symlink",
        ),
        (
            vec![
                ("esc".to_string(), T::Symlink, &b""[..], "../..".to_string()),
                ("esc/x/evil".to_string(), T::Directory, &b""[..], String::new()),
            ],
            "symlink",
        ),
        (vec![("hl".to_string(), T::Link, &b""[..], "../../etc/passwd".to_string())], "hardlink target"),
    ] {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("d1/root");
        std::fs::create_dir_all(&root).unwrap();
        let borrowed: Vec<(&str, T, &[u8], &str)> =
            entries.iter().map(|(p, k, d, l)| (p.as_str(), *k, *d, l.as_str())).collect();
        let bytes = layer(&borrowed);
        let err = extract(&bytes[..], &root).map(|(e, _)| e.usage).unwrap_err();
        let escaped = Path::new(&marker).exists();
        let _ = std::fs::remove_file(&marker);
        assert!(!escaped, "wrote {marker}");
        assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
        assert!(err.to_string().contains(why), "{err}");
        let top: Vec<_> = std::fs::read_dir(outer.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        let beside: Vec<_> =
            std::fs::read_dir(outer.path().join("d1")).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!((top, beside), (vec!["d1".into()], vec!["root".into()]), "nothing beside the root");
    }
}

/// A layer that lists `tmp/x` but not `tmp/` must not turn the merged /tmp (1777 below)
/// into a 0755 directory of the unpack's time: overlayfs shows the topmost directory.
#[test]
fn directories_a_layer_does_not_list_keep_their_attributes_from_below() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let unpack_at = |name: &str, bytes: &[u8]| {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let (extracted, _) = extract(bytes, &dir).unwrap();
        (dir, extracted)
    };
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode) in [("./", 0o751), ("tmp/", 0o1777), ("gone/", 0o700), ("hidden/", 0o700), ("lib/", 0o755)] {
        b.append(&header(path, T::Directory, 0, mode), &b""[..]).unwrap();
    }
    let bytes = b.into_inner().unwrap();
    let (base, _) = unpack_at("base", &bytes);
    rfs::setxattr(base.join("tmp"), "user.lockstep", b"kept", XattrFlags::empty()).unwrap();
    rfs::setxattr(base.join("tmp"), OPAQUE_XATTR, b"y", XattrFlags::empty()).unwrap();
    // The middle layer whites out gone/ and makes hidden/ opaque, so nothing of the base's shows there.
    let (middle, middle_extracted) = unpack_at(
        "middle",
        &layer(&[
            (".wh.gone", T::Regular, b"", ""),
            ("hidden/", T::Directory, b"", ""),
            ("hidden/.wh..wh..opq", T::Regular, b"", ""),
        ]),
    );
    inherit_implicit_dirs(&middle, &middle_extracted, std::slice::from_ref(&base)).unwrap();
    let (top, extracted) = unpack_at(
        "top",
        &layer(&[
            ("tmp/x", T::Regular, b"x", ""),
            ("gone/y", T::Regular, b"y", ""),
            ("hidden/sub/z", T::Regular, b"z", ""),
        ]),
    );
    assert!(!extracted.root_listed);
    inherit_implicit_dirs(&top, &extracted, &[base.clone(), middle.clone()]).unwrap();
    let meta = |p: &str| std::fs::symlink_metadata(top.join(p)).unwrap();
    let (t, below) = (meta("tmp"), std::fs::metadata(base.join("tmp")).unwrap());
    assert_eq!(t.mode() & 0o7777, 0o1777, "mode from below");
    assert_eq!((t.uid(), t.gid(), t.mtime()), (1234, 5678, below.mtime()), "owner and times from below");
    let mut value = [0u8; 16];
    let n = rfs::getxattr(top.join("tmp"), "user.lockstep", &mut value[..]).unwrap();
    assert_eq!(&value[..n], b"kept");
    assert!(rfs::getxattr(top.join("tmp"), OPAQUE_XATTR, &mut value[..]).is_err(), "opaque is not inherited");
    assert_eq!(meta("").mode() & 0o7777, 0o751, "an implicit root takes the root's attributes");
    assert_eq!(meta("gone").mode() & 0o7777, 0o755, "whited out below: a new directory");
    assert_eq!(meta("hidden/sub").mode() & 0o7777, 0o755, "under an opaque directory: a new one");
    assert_eq!(meta("hidden").uid(), 1234, "hidden/ itself is the middle layer's");

    // A lower symlink where this layer needs a directory: refused, not shadowed.
    let (linked, _) = unpack_at("linked", &layer(&[("lib2", T::Symlink, b"", "lib")]));
    let (writer, extracted) = unpack_at("writer", &layer(&[("lib2/x", T::Regular, b"x", "")]));
    let err = inherit_implicit_dirs(&writer, &extracted, &[base, linked]).unwrap_err();
    assert!(matches!(err, UnpackError::LowerConflict { .. }) && err.to_string().contains("symlink"), "{err}");
}

/// overlayfs reads its own xattrs from lower layers (redirects, opaque markers, metacopy):
/// a layer must not set them; its other xattrs stay.
#[test]
fn layers_cannot_set_overlayfs_attributes() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
        ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
        ("SCHILY.xattr.user.kept", &b"1"[..]),
    ])
    .unwrap();
    b.append(&header("d/", T::Directory, 0, 0o755), &b""[..]).unwrap();
    let (tmp, usage) = unpack(&b.into_inner().unwrap());
    usage.unwrap();
    let mut value = [0u8; 16];
    for name in ["trusted.overlay.redirect", "trusted.overlay.opaque"] {
        assert!(rfs::getxattr(tmp.path().join("d"), name, &mut value[..]).is_err(), "{name} was set");
    }
    assert_eq!(rfs::getxattr(tmp.path().join("d"), "user.kept", &mut value[..]).unwrap(), 1);
}

/// The mode a layer gives a device node or a FIFO is the mode it gets, whatever the umask.
#[test]
fn device_and_fifo_modes_are_kept_whole() {
    let mut b = tar::Builder::new(Vec::new());
    let mut null = header("null", T::Char, 0, 0o666);
    null.set_device_major(1).unwrap();
    null.set_device_minor(3).unwrap();
    null.set_cksum();
    b.append(&null, &b""[..]).unwrap();
    b.append(&header("pipe", T::Fifo, 0, 0o666), &b""[..]).unwrap();
    let (tmp, usage) = unpack(&b.into_inner().unwrap());
    usage.unwrap();
    for name in ["null", "pipe"] {
        let meta = std::fs::symlink_metadata(tmp.path().join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o666, "{name}");
        assert_eq!((meta.uid(), meta.gid()), (1234, 5678), "{name}");
    }
}

/// Later entries win, as tar extraction does: a directory replaced by a file or a symlink
/// in the same layer goes with its contents.
#[test]
fn a_later_entry_replaces_a_directory() {
    let bytes = layer(&[
        ("d/", T::Directory, b"", ""),
        ("d/f", T::Regular, b"x", ""),
        ("d", T::Symlink, b"", "/elsewhere"),
        ("e/sub/", T::Directory, b"", ""),
        ("e", T::Regular, b"file now", ""),
        ("h/", T::Directory, b"", ""),
        ("h", T::Link, b"", "e"),
    ]);
    let (tmp, usage) = unpack(&bytes);
    usage.unwrap();
    assert_eq!(std::fs::read_link(tmp.path().join("d")).unwrap(), Path::new("/elsewhere"));
    assert_eq!(std::fs::read(tmp.path().join("e")).unwrap(), b"file now");
    assert_eq!(std::fs::metadata(tmp.path().join("h")).unwrap().nlink(), 2);
}

#[test]
fn compressed_streams_are_sniffed_and_truncation_is_reported() {
    let bytes = layer(&[("f", T::Regular, b"data", "")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &bytes).unwrap();
    let gz = gz.finish().unwrap();
    let zst = ruzstd::encoding::compress_to_vec(&bytes[..], ruzstd::encoding::CompressionLevel::Fastest);
    for (data, kind) in [(&gz[..], Compression::Gzip), (&zst[..], Compression::Zstd), (&bytes[..], Compression::None)] {
        let (found, reader) = decompress(data).unwrap();
        assert_eq!(found, kind);
        let tmp = tempfile::tempdir().unwrap();
        let hashing = Hashing::new(reader);
        let (_, rest) = extract(hashing, tmp.path()).unwrap();
        let (_, count, _) = rest.finish();
        assert_eq!(count, bytes.len() as u64, "the whole stream was read");
        assert_eq!(std::fs::read(tmp.path().join("f")).unwrap(), b"data");
    }
    let truncated = &gz[..gz.len() - 6];
    let (_, reader) = decompress(truncated).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = extract(reader, tmp.path()).err().unwrap().to_string();
    assert!(err.contains("gzip"), "{err}");
}

/// zstd:chunked and other seekable layouts: several frames, and skippable frames between.
#[test]
fn zstd_layers_of_several_frames_are_read_to_the_end() {
    let bytes = layer(&[("a", T::Regular, &[b'a'; 5000][..], ""), ("b", T::Regular, b"second frame", "")]);
    let mid = bytes.len() / 2;
    let frame = |part: &[u8]| ruzstd::encoding::compress_to_vec(part, ruzstd::encoding::CompressionLevel::Fastest);
    let mut stream = frame(&bytes[..mid]);
    stream.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
    stream.extend_from_slice(&5u32.to_le_bytes());
    stream.extend_from_slice(b"skip!");
    stream.extend(frame(&bytes[mid..]));
    let (kind, reader) = decompress(&stream[..]).unwrap();
    assert_eq!(kind, Compression::Zstd);
    let tmp = tempfile::tempdir().unwrap();
    let (_, rest) = extract(Hashing::new(reader), tmp.path()).unwrap();
    let (_, count, _) = rest.finish();
    assert_eq!(count, bytes.len() as u64, "every frame was decoded");
    assert_eq!(std::fs::read(tmp.path().join("b")).unwrap(), b"second frame");
    let mut cut = stream.clone();
    cut.truncate(stream.len() - 3);
    let (_, reader) = decompress(&cut[..]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = extract(reader, tmp.path()).err().unwrap().to_string();
    assert!(err.contains("zstd"), "a truncated last frame is reported: {err}");
}

/// GNU tar --sparse: the pieces go where the map says and the holes stay holes (a 1 GiB
/// hole costs no disk; written out as zeros it did), reading as zeros. Entry kinds it cannot
/// place fail the layer instead of vanishing from it.
#[test]
fn sparse_files_keep_their_holes_and_unknown_kinds_are_refused() {
    let hole = 1u64 << 30;
    let mut h = header("sparse", T::GNUSparse, 1024, 0o644);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.sparse[0].set_offset(0);
    gnu.sparse[0].set_length(512);
    gnu.sparse[1].set_offset(512 + hole);
    gnu.sparse[1].set_length(512);
    gnu.set_real_size(1024 + hole);
    h.set_cksum();
    let mut data = vec![b'a'; 512];
    data.extend([b'b'; 512]);
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &data[..]).unwrap();
    let (tmp, usage) = unpack(&b.into_inner().unwrap());
    assert_eq!(usage.unwrap().bytes, 1024, "the bytes the file takes, not its length");
    let path = tmp.path().join("sparse");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 1024 + hole);
    assert!(meta.blocks() * 512 < 1 << 20, "the hole is a hole: {} bytes allocated", meta.blocks() * 512);
    let mut file = std::fs::File::open(&path).unwrap();
    let mut piece = [0u8; 1024];
    io::Read::read_exact(&mut file, &mut piece).unwrap();
    assert!(piece[..512].iter().all(|&c| c == b'a') && piece[512..].iter().all(|&c| c == 0));
    file.seek(SeekFrom::Start(hole)).unwrap();
    io::Read::read_exact(&mut file, &mut piece).unwrap();
    assert!(piece[..512].iter().all(|&c| c == 0) && piece[512..].iter().all(|&c| c == b'b'));

    // Pieces out of order (or overlapping): corrupt.
    let mut h = header("bad", T::GNUSparse, 512, 0o644);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.sparse[0].set_offset(4096);
    gnu.sparse[0].set_length(512);
    gnu.sparse[1].set_offset(0);
    gnu.sparse[1].set_length(512);
    gnu.set_real_size(8192);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &[0u8; 512][..]).unwrap();
    let (_, usage) = unpack(&b.into_inner().unwrap());
    assert!(matches!(usage, Err(UnpackError::Corrupt { .. })), "{usage:?}");

    let (_, usage) = unpack(&layer(&[("dump", T::new(b'D'), b"", "")]));
    let err = usage.unwrap_err().to_string();
    assert!(err.contains("dump") && err.contains("kind"), "{err}");

    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("GNU.sparse.major", &b"1"[..]), ("GNU.sparse.name", &b"f"[..])]).unwrap();
    b.append(&header("GNUSparseFile.0/f", T::Regular, 1, 0o644), &b"x"[..]).unwrap();
    let (tmp, usage) = unpack(&b.into_inner().unwrap());
    let err = usage.unwrap_err().to_string();
    assert!(err.contains("sparse"), "PAX sparse files are refused, not stored as their map: {err}");
    assert!(!tmp.path().join("GNUSparseFile.0").exists());
}

/// Past a limit the layer fails: bytes of the uncompressed stream (a gzip bomb: 4 MiB of
/// zeros in a few KiB), entries (the directories it makes without listing them count), and
/// depth.
#[test]
fn layers_past_their_limits_fail() {
    let limits = Limits { max_bytes: 1 << 20, max_entries: 100 };
    let extract_with = |bytes: &[u8]| {
        let tmp = tempfile::tempdir().unwrap();
        let (_, reader) = decompress(bytes).unwrap();
        extract_limited(reader, tmp.path(), &limits).map(|(e, _)| e.usage)
    };
    let zeros = vec![0u8; 4 << 20];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    io::Write::write_all(&mut gz, &layer(&[("zeros", T::Regular, &zeros[..], "")])).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let err = extract_with(&bomb).unwrap_err();
    assert!(matches!(err, UnpackError::Limit { .. }) && err.to_string().contains("max_layer_bytes"), "{err}");

    let names: Vec<String> = (0..150).map(|i| format!("f{i}")).collect();
    let many: Vec<_> = names.iter().map(|n| (n.as_str(), T::Regular, &b""[..], "")).collect();
    let err = extract_with(&layer(&many)).unwrap_err();
    assert!(err.to_string().contains("max_layer_entries"), "{err}");
    let long_named = |path: &str| {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(0);
        b.append_data(&mut h, path, &b""[..]).unwrap();
        b.into_inner().unwrap()
    };
    let deep = format!("{}f", "d/".repeat(150));
    let err = extract_with(&long_named(&deep)).unwrap_err();
    assert!(err.to_string().contains("max_layer_entries"), "implicit directories count: {err}");
    assert!(extract_with(&layer(&many[..99])).is_ok(), "within the limits");

    let too_deep = format!("{}f", "d/".repeat(MAX_DEPTH));
    let (_, usage) = unpack(&long_named(&too_deep));
    let err = usage.unwrap_err();
    assert!(matches!(err, UnpackError::Limit { .. }) && err.to_string().contains("deep"), "{err}");
    assert!(err.to_string().len() < 400, "the message does not repeat the whole path: {err}");
}

#[test]
fn permissions_survive_setuid_and_read_only_dirs() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header("ro/", T::Directory, 0, 0o555);
    h.set_cksum();
    b.append(&h, &b""[..]).unwrap();
    let mut h = header("ro/suid", T::Regular, 1, 0o4755);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let bytes = b.into_inner().unwrap();
    let (tmp, usage) = unpack(&bytes);
    usage.unwrap();
    let mode = std::fs::metadata(tmp.path().join("ro/suid")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o4755, "chmod after chown keeps setuid");
    std::fs::set_permissions(tmp.path().join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

mod property {
    use super::*;
    use proptest::prelude::*;

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("..".to_string()),
            Just(".".to_string()),
            Just(".wh.a".to_string())
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        (proptest::bool::ANY, proptest::collection::vec(component(), 1..4))
            .prop_map(|(absolute, parts)| format!("{}{}", if absolute { "/" } else { "" }, parts.join("/")))
    }

    /// Link targets that a broken unpacker would follow to just beside the root (and never
    /// further, so a failing run cannot touch the host).
    fn target() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_string()),
            Just("../a".to_string()),
            Just("../b".to_string()),
            Just("a".to_string()),
            Just(".".to_string())
        ]
    }

    fn entry() -> impl Strategy<Value = (String, u8, String)> {
        (path(), 0u8..4, target())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        /// Whatever the layer holds, nothing appears beside the root, and no panic.
        #[test]
        fn nothing_is_written_outside_the_root(entries in proptest::collection::vec(entry(), 1..8)) {
            // The root sits four levels down: paths have at most three components, so even
            // a broken unpacker could climb no higher than the first level, where we look.
            let outer = tempfile::tempdir().unwrap();
            let chain = ["d1", "d2", "d3", "root"];
            let root = chain.iter().fold(outer.path().to_path_buf(), |p, c| p.join(c));
            std::fs::create_dir_all(&root).unwrap();
            let mut b = tar::Builder::new(Vec::new());
            for (name, kind, target) in &entries {
                let kind = [T::Regular, T::Directory, T::Symlink, T::Link][*kind as usize];
                let mut h = header(name, kind, if kind == T::Regular { 1 } else { 0 }, 0o755);
                if matches!(kind, T::Symlink | T::Link) {
                    let raw = &mut h.as_old_mut().linkname;
                    raw[..target.len()].copy_from_slice(target.as_bytes());
                    h.set_cksum();
                }
                let data: &[u8] = if kind == T::Regular { b"x" } else { b"" };
                b.append(&h, data).unwrap();
            }
            let bytes = b.into_inner().unwrap();
            let _ = extract(&bytes[..], &root);
            let mut dir = outer.path().to_path_buf();
            for child in chain {
                let beside: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
                prop_assert_eq!(beside, vec![std::ffi::OsString::from(child)], "in {}", dir.display());
                dir = dir.join(child);
            }
        }
    }
}
