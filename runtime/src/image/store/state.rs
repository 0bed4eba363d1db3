//! The store as the service shares it: the records behind a lock, the commit lock that every
//! change of records and every collection takes, and what running pulls have in flight.
//! Everything here is synchronous; async callers go through `spawn_blocking`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::records::{ImageRecord, Records};
use super::Layout;
use crate::image::error::ImageError;
use crate::image::reference::Digest;
use crate::image::snapshot::Snapshots;
use crate::persist::{PersistError, RecordDir};

/// What a lookup names: an image ID, or the references (normalised) a name may stand for,
/// in the order of the search registries.
#[derive(Debug, Clone)]
pub enum Lookup {
    Id(Digest),
    Names(Vec<String>),
}

/// The records, snapshots and blobs of one lockstepd, with their locks.
pub struct Store {
    pub(crate) layout: Layout,
    pub(crate) snapshots: Snapshots,
    records: RwLock<Records>,
    /// Held while records change and unused layers are collected.
    commit: Mutex<()>,
    /// Layers (chain IDs) of pulls in progress: garbage collection leaves them be.
    pub(super) layers_in_flight: Mutex<HashMap<Digest, usize>>,
    /// Blobs written by pulls not yet committed: garbage collection leaves them be.
    pub(super) blobs_in_flight: Mutex<HashMap<Digest, usize>>,
    /// The containers' writable layers (measured for ImageFsInfo).
    pub(super) containers_dir: PathBuf,
    /// Called before detached snapshots are deleted: lets a test hold a deletion.
    #[cfg(test)]
    pub(super) before_delete: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens the store: removes what an interrupted pull left, loads the records (dropping any
    /// whose layers are missing), and removes snapshots and blobs that nothing needs.
    pub fn open(layout: Layout, snapshots: Snapshots, containers_dir: PathBuf) -> Result<Store, PersistError> {
        layout.prepare()?;
        let records = Records::load(RecordDir::new(layout.records()), RecordDir::new(layout.holds()))?;
        crate::persist::restrict_dir(&containers_dir, 0o700)?;
        let store = Store {
            layout,
            snapshots,
            records: RwLock::new(records),
            commit: Mutex::new(()),
            layers_in_flight: Mutex::default(),
            blobs_in_flight: Mutex::default(),
            containers_dir,
            #[cfg(test)]
            before_delete: Mutex::default(),
        };
        store.drop_records_without_layers()?;
        store.collect_garbage().delete();
        Ok(store)
    }

    /// A record is written only after its layers, so one whose snapshots are missing was
    /// damaged from outside or written by a version that named snapshots by diff ID: it goes,
    /// and the image is pulled again.
    fn drop_records_without_layers(&self) -> Result<(), PersistError> {
        let broken: Vec<Digest> = self
            .records()
            .all()
            .filter(|r| r.chain_ids().iter().any(|c| !self.snapshots.exists(c)))
            .map(|r| r.id.clone())
            .collect();
        for id in broken {
            tracing::warn!(image = %id, "an image record whose layers are missing: removed, pull the image again");
            self.records_mut().remove(&id)?;
        }
        Ok(())
    }

    pub(crate) fn records(&self) -> RwLockReadGuard<'_, Records> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn records_mut(&self) -> RwLockWriteGuard<'_, Records> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The commit lock. Blocking: never taken on an async worker thread.
    pub(super) fn commit_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.commit)
    }

    /// The image a lookup names, if present.
    pub fn find(&self, lookup: &Lookup) -> Option<ImageRecord> {
        let records = self.records();
        match lookup {
            Lookup::Id(id) => records.get(id).cloned(),
            Lookup::Names(names) => names.iter().find_map(|n| records.by_name(n)).cloned(),
        }
    }

    /// Stores a pulled image (see [`Records::commit`]) and collects what images that lost
    /// their last name leave unused. Blocking. Returns the record as stored.
    pub fn commit_image(&self, record: ImageRecord) -> Result<ImageRecord, ImageError> {
        let id = record.id.clone();
        let named = record.repo_tags.first().or(record.repo_digests.first()).cloned().unwrap_or_default();
        let (stored, detached) = {
            let _commit = self.commit_lock();
            let orphaned = self.records_mut().commit(record)?;
            let detached = (!orphaned.is_empty()).then(|| self.collect_garbage());
            (self.records().get(&id).cloned(), detached)
        };
        if let Some(detached) = detached {
            detached.delete();
        }
        stored.ok_or(ImageError::NotFound(named))
    }

    /// Removes an image record (all its tags and digests; absent is fine) and what it alone
    /// used. Blocking.
    pub fn remove_image(&self, id: &Digest) -> Result<(), ImageError> {
        let detached = {
            let _commit = self.commit_lock();
            self.records_mut().remove(id)?;
            self.collect_garbage()
        };
        detached.delete();
        Ok(())
    }

    /// The snapshot directories of an image's layers, lowest first.
    pub fn layer_dirs(&self, record: &ImageRecord) -> Vec<PathBuf> {
        record.chain_ids().iter().map(|c| self.snapshots.fs_dir(c)).collect()
    }
}
