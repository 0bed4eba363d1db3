//! The image store on disk, under `<root>/images`: `blobs/sha256/<hex>` (manifests, indexes and
//! configs, each verified before it gets its name), `records/` (one JSON record per image),
//! `holds/` (layers held by containers), `snapshots/` and `tmp/` (work in progress, emptied at
//! start). Touches only that directory.

mod gc;
mod holds;
pub mod records;
mod state;
mod usage;

pub use gc::InFlight;
pub use holds::HeldImage;
pub use state::{Lookup, Store};
pub use usage::{Filesystem, FsUsage};

use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::reference::Digest;
use crate::persist::{self, PersistError};

/// The directories of the store.
#[derive(Debug, Clone)]
pub struct Layout {
    pub base: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout { base: root.join("images") }
    }
    pub fn blobs(&self) -> PathBuf {
        self.base.join("blobs").join("sha256")
    }
    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs().join(digest.hex())
    }
    pub fn records(&self) -> PathBuf {
        self.base.join("records")
    }
    pub fn holds(&self) -> PathBuf {
        self.base.join("holds")
    }
    pub fn snapshots(&self) -> PathBuf {
        self.base.join("snapshots")
    }
    pub fn tmp(&self) -> PathBuf {
        self.base.join("tmp")
    }

    /// Creates the directories and removes whatever an interrupted pull left in tmp/. The
    /// store is closed to other users (0700): layers hold setuid files and device nodes, and
    /// a lower layer shared by containers must not take files from anyone but lockstepd.
    pub fn prepare(&self) -> Result<(), PersistError> {
        persist::restrict_dir(&self.base, 0o700)?;
        persist::restrict_dir(&self.tmp(), 0o700)?;
        for dir in [self.blobs(), self.records(), self.holds(), self.snapshots()] {
            std::fs::create_dir_all(&dir).map_err(|source| PersistError::Io {
                what: "create directory",
                path: dir.clone(),
                source,
            })?;
        }
        let tmp = self.tmp();
        let entries =
            std::fs::read_dir(&tmp).map_err(|source| PersistError::Io { what: "list", path: tmp.clone(), source })?;
        // What cannot be removed is logged and left for the next start: it is out of sight
        // under tmp/, and refusing to start would take every pod on the node down with it.
        for entry in entries.flatten() {
            let path = entry.path();
            match crate::fstree::remove_tree(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed what an interrupted pull left"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove what an interrupted pull left; starting anyway")
                }
            }
        }
        Ok(())
    }

    /// A fresh, unique path under tmp/.
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        let id = crate::ids::random_id()
            .unwrap_or_else(|_| format!("{}-{:?}", std::process::id(), std::time::SystemTime::now()));
        self.tmp().join(format!("{what}-{}", &id[..id.len().min(16)]))
    }

    /// Stores `bytes` as the blob `digest`: written under tmp/, verified, fsynced, renamed.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), BlobError> {
        let actual = Digest::from_sha256(&sha2::Sha256::digest(bytes));
        if &actual != digest {
            return Err(BlobError::Mismatch { expected: digest.clone(), actual });
        }
        let path = self.blob(digest);
        if path.exists() {
            return Ok(());
        }
        let tmp = self.tmp_path("blob");
        let io = |what: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| BlobError::Io(PersistError::Io { what, path: p, source })
        };
        let result = (|| {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
            f.write_all(bytes).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("fsync", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
            persist::sync_dir(&self.blobs()).map_err(BlobError::Io)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    pub fn get_blob(&self, digest: &Digest) -> Result<Vec<u8>, PersistError> {
        let path = self.blob(digest);
        std::fs::read(&path).map_err(|source| PersistError::Io { what: "read", path, source })
    }

    /// The directory of a layer's snapshot (keyed by its uncompressed digest, the diff ID).
    pub fn snapshot(&self, diff_id: &Digest) -> PathBuf {
        self.snapshots().join(diff_id.hex())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("digest mismatch: expected {expected}, the content is {actual}")]
    Mismatch { expected: Digest, actual: Digest },
    #[error(transparent)]
    Io(PersistError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_before_they_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        layout.prepare().unwrap();
        let digest = Digest::from_sha256(&sha2::Sha256::digest(b"config"));
        layout.put_blob(&digest, b"config").unwrap();
        assert_eq!(layout.get_blob(&digest).unwrap(), b"config");
        let other = Digest::from_sha256(&sha2::Sha256::digest(b"other"));
        let err = layout.put_blob(&other, b"tampered").unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        assert!(!layout.blob(&other).exists());
        assert_eq!(std::fs::read_dir(layout.tmp()).unwrap().count(), 0, "no temp file left");
    }

    #[test]
    fn the_store_is_closed_to_other_users_even_when_it_was_open() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        std::fs::create_dir_all(layout.tmp()).unwrap();
        for dir in [layout.base.clone(), layout.tmp()] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        }
        layout.prepare().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode(&layout.base), mode(&layout.tmp())), (0o700, 0o700));
    }

    #[test]
    fn prepare_removes_leftovers_of_an_interrupted_pull() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        layout.prepare().unwrap();
        std::fs::create_dir_all(layout.tmp().join("layer-x/usr/bin")).unwrap();
        std::fs::write(layout.tmp().join("blob-y"), b"half").unwrap();
        layout.prepare().unwrap();
        assert_eq!(std::fs::read_dir(layout.tmp()).unwrap().count(), 0);
    }

    /// A tree deeper than the open-file limit (a hostile layer interrupted mid-pull) goes; what
    /// cannot go (here a mount) is logged and left, and the store opens anyway.
    #[test]
    fn prepare_removes_deep_leftovers_and_starts_despite_what_it_cannot_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        layout.prepare().unwrap();
        let deep = layout.tmp().join("layer-deep");
        std::fs::create_dir(&deep).unwrap();
        let depth = (crate::fstree::tests::nofile() as usize + 100).clamp(5_000, 200_000);
        crate::fstree::tests::deep_chain(&deep, depth);
        let stuck = layout.tmp().join("layer-stuck/mnt");
        std::fs::create_dir_all(&stuck).unwrap();
        nix::mount::mount(Some("tmpfs"), &stuck, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
        let prepared = layout.prepare();
        nix::mount::umount2(&stuck, nix::mount::MntFlags::MNT_DETACH).unwrap();
        prepared.unwrap();
        assert!(!deep.exists(), "the deep tree is removed");
        assert!(stuck.exists(), "what cannot be removed stays, for the next start");
        layout.prepare().unwrap();
        assert_eq!(std::fs::read_dir(layout.tmp()).unwrap().count(), 0);
    }
}
