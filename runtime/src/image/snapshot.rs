//! Layer snapshots: one directory per layer on top of its lower layers, keyed by its chain ID
//! (the layer and every layer below it, as the OCI image spec defines it) and shared by every
//! image with that chain, at `<root>/images/snapshots/<hex>/fs` (an overlay lowerdir) with its
//! usage beside it. A layer is unpacked under tmp/ ([`Snapshots::unpack`], several at once),
//! checked (blob digest and diff ID), then committed on top of its lower snapshots
//! ([`Snapshots::commit`]: the directories it does not list take their attributes from below)
//! and renamed into place. Touches only `<root>/images/{snapshots,tmp}`.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;

use super::reference::Digest;
use super::store::Layout;
use super::unpack::{self, Extracted, Limits, UnpackError, Usage};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("layer {layer}: {source}")]
    Unpack { layer: Digest, source: UnpackError },
    #[error("layer {layer}: {what} digest mismatch: expected {expected}, got {actual}")]
    Mismatch { layer: Digest, what: &'static str, expected: String, actual: String },
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

/// The snapshots of one store.
#[derive(Debug, Clone)]
pub struct Snapshots {
    layout: Layout,
    /// What one layer may cost to unpack.
    limits: Limits,
}

/// What a layer should be, from the manifest and the config.
#[derive(Debug, Clone)]
pub struct Expected {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// A layer unpacked and checked under tmp/, not yet committed; dropped, it is removed.
pub struct Unpacked {
    guard: TmpGuard,
    layer: Digest,
    extracted: Extracted,
}

impl Unpacked {
    pub fn usage(&self) -> Usage {
        self.extracted.usage
    }
}

/// Removes a directory under tmp/ unless it was committed.
struct TmpGuard(Option<PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = crate::fstree::remove_tree(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove an unfinished snapshot");
            }
        }
    }
}

impl Snapshots {
    pub fn new(layout: Layout) -> Snapshots {
        Snapshots::with_limits(layout, Limits::default())
    }

    pub fn with_limits(layout: Layout, limits: Limits) -> Snapshots {
        Snapshots { layout, limits }
    }

    pub fn exists(&self, chain_id: &Digest) -> bool {
        self.layout.snapshot(chain_id).join("fs").is_dir()
    }

    /// The directory to use as an overlay lowerdir.
    pub fn fs_dir(&self, chain_id: &Digest) -> PathBuf {
        self.layout.snapshot(chain_id).join("fs")
    }

    pub fn usage(&self, chain_id: &Digest) -> Usage {
        std::fs::read(self.layout.snapshot(chain_id).join("usage.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Unpacks a layer blob (read from `blob`, compressed or not) under tmp/. Blocking. The
    /// blob is read to its end, so every byte is hashed; it is an error unless both digests
    /// match. Nothing is visible until [`Snapshots::commit`].
    pub fn unpack(&self, expected: &Expected, blob: impl Read) -> Result<Unpacked, SnapshotError> {
        let layer = expected.digest.clone();
        let tmp = self.layout.tmp_path("layer");
        let fs = tmp.join("fs");
        std::fs::create_dir_all(&fs).map_err(|source| SnapshotError::Io {
            what: "create",
            path: fs.clone(),
            source,
        })?;
        let guard = TmpGuard(Some(tmp.clone()));
        let unpack_err = |source| SnapshotError::Unpack { layer: layer.clone(), source };
        let mut compressed = unpack::Hashing::new(blob);
        let unpacked = (|| {
            let (_, tar) = unpack::decompress(&mut compressed)?;
            let (extracted, rest) = unpack::extract_limited(unpack::Hashing::new(tar), &fs, &self.limits)?;
            let (diff_id, _, _) = rest.finish();
            Ok((extracted, diff_id))
        })();
        // Whatever follows the compressed stream still counts towards the blob's digest. A
        // stream that did not unpack is read on too: a digest mismatch is the better diagnosis.
        let drained = std::io::copy(&mut compressed, &mut std::io::sink());
        let (extracted, diff_id) = match unpacked {
            Ok(done) => done,
            Err(e @ UnpackError::Corrupt { .. }) if drained.is_ok() => {
                let (digest, size, _) = compressed.finish();
                if digest != expected.digest {
                    return Err(SnapshotError::Mismatch {
                        layer,
                        what: "blob",
                        expected: format!("{} ({} bytes)", expected.digest, expected.size),
                        actual: format!("{digest} ({size} bytes); its content is corrupt too: {e}"),
                    });
                }
                return Err(unpack_err(e));
            }
            Err(e) => return Err(unpack_err(e)),
        };
        drained.map_err(|e| unpack_err(UnpackError::Corrupt { format: "layer", detail: e.to_string() }))?;
        let (digest, size, _) = compressed.finish();
        if digest != expected.digest || size != expected.size {
            return Err(SnapshotError::Mismatch {
                layer,
                what: "blob",
                expected: format!("{} ({} bytes)", expected.digest, expected.size),
                actual: format!("{digest} ({size} bytes)"),
            });
        }
        if diff_id != expected.diff_id {
            return Err(SnapshotError::Mismatch {
                layer,
                what: "uncompressed (diff ID)",
                expected: expected.diff_id.to_string(),
                actual: diff_id.to_string(),
            });
        }
        Ok(Unpacked { guard, layer, extracted })
    }

    /// Puts an unpacked layer into place as the snapshot `chain_id`, on top of `lowers` (the
    /// snapshot directories of the layers below, lowest first, all present). Blocking. Another
    /// pull may have made the same snapshot meanwhile: that one is kept.
    pub fn commit(
        &self,
        mut unpacked: Unpacked,
        chain_id: &Digest,
        lowers: &[PathBuf],
    ) -> Result<Usage, SnapshotError> {
        let Some(tmp) = unpacked.guard.0.clone() else {
            return Ok(unpacked.extracted.usage);
        };
        if self.exists(chain_id) {
            return Ok(self.usage(chain_id));
        }
        let usage = unpacked.extracted.usage;
        unpack::inherit_implicit_dirs(&tmp.join("fs"), &unpacked.extracted, lowers)
            .map_err(|source| SnapshotError::Unpack { layer: unpacked.layer.clone(), source })?;
        let usage_file = tmp.join("usage.json");
        let usage_json = serde_json::to_vec(&usage).unwrap_or_default();
        std::fs::write(&usage_file, usage_json).map_err(|source| SnapshotError::Io {
            what: "write",
            path: usage_file,
            source,
        })?;
        let target = self.layout.snapshot(chain_id);
        match std::fs::rename(&tmp, &target) {
            Ok(()) => unpacked.guard.0 = None,
            // Made by a concurrent pull meanwhile: keep that one, drop ours (the guard does).
            Err(_) if self.exists(chain_id) => {}
            Err(source) => return Err(SnapshotError::Io { what: "rename into place", path: target, source }),
        }
        Ok(usage)
    }

    /// Every snapshot present.
    pub fn list(&self) -> Vec<Digest> {
        let Ok(entries) = std::fs::read_dir(self.layout.snapshots()) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy())).ok())
            .collect()
    }

    /// Takes the snapshots that nothing uses out of sight, atomically each (a rename into tmp/),
    /// and returns their new paths for [`delete`]. Callers hold the lock that pulls take to
    /// mark layers in flight, so a layer a pull has just found cannot vanish under it.
    pub fn detach_unused(&self, in_use: &BTreeSet<Digest>, also_keep: &BTreeSet<Digest>) -> Vec<PathBuf> {
        let mut detached = Vec::new();
        for diff_id in self.list() {
            if in_use.contains(&diff_id) || also_keep.contains(&diff_id) {
                continue;
            }
            let doomed = self.layout.tmp_path("removed");
            let from = self.layout.snapshot(&diff_id);
            match std::fs::rename(&from, &doomed) {
                Ok(()) => detached.push(doomed),
                Err(e) => tracing::warn!(path = %from.display(), error = %e, "cannot remove an unused snapshot"),
            }
        }
        detached
    }
}

/// Deletes detached snapshots; what cannot be deleted goes at the next start (tmp/ is emptied).
pub fn delete(detached: Vec<PathBuf>) {
    for path in detached {
        if let Err(e) = crate::fstree::remove_tree(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a removed snapshot; it goes at the next start");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn digest(bytes: &[u8]) -> Digest {
        Digest::from_sha256(&sha2::Sha256::digest(bytes))
    }

    fn tar_with(file: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, file, data).unwrap();
        b.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_layer_becomes_a_snapshot_only_when_both_digests_match() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        layout.prepare().unwrap();
        let snapshots = Snapshots::new(layout.clone());
        let tar = tar_with("hello", b"world");
        let blob = gzip(&tar);
        let good = Expected { digest: digest(&blob), size: blob.len() as u64, diff_id: digest(&tar) };
        let chain = good.diff_id.clone();

        let wrong_blob = Expected { digest: digest(b"x"), ..good.clone() };
        let err = snapshots.unpack(&wrong_blob, &blob[..]).err().unwrap().to_string();
        assert!(err.contains("blob digest mismatch"), "{err}");
        let wrong_diff = Expected { diff_id: digest(b"y"), ..good.clone() };
        let err = snapshots.unpack(&wrong_diff, &blob[..]).err().unwrap().to_string();
        assert!(err.contains("diff ID"), "{err}");
        assert!(snapshots.list().is_empty());
        assert_eq!(std::fs::read_dir(layout.tmp()).unwrap().count(), 0, "failed unpacks leave nothing");

        let unpacked = snapshots.unpack(&good, &blob[..]).unwrap();
        assert!(snapshots.list().is_empty(), "nothing visible before the commit");
        drop(unpacked);
        assert_eq!(std::fs::read_dir(layout.tmp()).unwrap().count(), 0, "an unpacked layer dropped leaves nothing");

        let usage = snapshots.commit(snapshots.unpack(&good, &blob[..]).unwrap(), &chain, &[]).unwrap();
        assert_eq!(usage, Usage { bytes: 5, inodes: 1 });
        assert_eq!(std::fs::read(snapshots.fs_dir(&chain).join("hello")).unwrap(), b"world");
        assert_eq!(snapshots.usage(&chain), usage);
        // The same layer again (a concurrent pull): the existing snapshot stays.
        snapshots.commit(snapshots.unpack(&good, &blob[..]).unwrap(), &chain, &[]).unwrap();
        assert_eq!(snapshots.list(), vec![chain.clone()]);
        assert_eq!(std::fs::read_dir(layout.tmp()).unwrap().count(), 0);

        let keep = BTreeSet::from([chain.clone()]);
        assert!(snapshots.detach_unused(&keep, &BTreeSet::new()).is_empty());
        assert!(snapshots.detach_unused(&BTreeSet::new(), &keep).is_empty(), "in flight: kept");
        let detached = snapshots.detach_unused(&BTreeSet::new(), &BTreeSet::new());
        assert_eq!(detached.len(), 1);
        assert!(!snapshots.exists(&chain), "gone from sight at once");
        delete(detached);
        assert_eq!(std::fs::read_dir(layout.tmp()).unwrap().count(), 0);
    }

    /// A layer past the store's limits (here a gzip bomb: 8 MiB of zeros in a few KiB) fails
    /// and leaves nothing, not even its half-written files.
    #[test]
    fn a_layer_past_the_limits_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        layout.prepare().unwrap();
        let limits = Limits { max_bytes: 1 << 20, max_entries: 1000 };
        let snapshots = Snapshots::with_limits(layout.clone(), limits);
        let tar = tar_with("zeros", &vec![0u8; 8 << 20]);
        let blob = gzip(&tar);
        let expected = Expected { digest: digest(&blob), size: blob.len() as u64, diff_id: digest(&tar) };
        let err = snapshots.unpack(&expected, &blob[..]).err().unwrap().to_string();
        assert!(err.contains("max_layer_bytes"), "{err}");
        assert_eq!(std::fs::read_dir(layout.tmp()).unwrap().count(), 0, "nothing half-stored");
        assert!(snapshots.list().is_empty());
        let roomy = Snapshots::with_limits(layout.clone(), Limits { max_bytes: 16 << 20, ..limits });
        roomy.commit(roomy.unpack(&expected, &blob[..]).unwrap(), &expected.diff_id, &[]).unwrap();
    }
}
