//! The pod sandboxes lockstepd holds: an index of entries (one lock per sandbox that
//! serialises the calls changing it, the record readers see, and two flags: closing and
//! removed), their crash-safe records on disk, and RunPodSandbox's reservations per pod
//! metadata. Nothing here touches namespaces, processes or networks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::error::SandboxError;
use super::record::{Metadata, SandboxRecord};
use super::reservations::Reservations;
use crate::monitor::watch::HeldWatch;
use crate::persist::{Loaded, PersistError, RecordDir};

/// One sandbox held in memory.
pub struct Entry {
    /// Serialises the calls that change the sandbox.
    pub op: Mutex<()>,
    record: RwLock<SandboxRecord>,
    /// Set (under `op`) when RemovePodSandbox finished: a call that was waiting for `op` then
    /// finds the sandbox gone.
    removed: AtomicBool,
    /// Set (for good) when StopPodSandbox or RemovePodSandbox begins: a CreateContainer that
    /// races them sees it after adding its container, and takes the container back.
    closing: AtomicBool,
    /// A pidfd on its pause process while it runs READY (lists poll it instead of reading /proc).
    pause_watch: HeldWatch,
}

impl Entry {
    pub fn new(record: SandboxRecord) -> Arc<Entry> {
        Arc::new(Entry {
            op: Mutex::new(()),
            record: RwLock::new(record),
            removed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            pause_watch: HeldWatch::default(),
        })
    }

    /// `f` of the record as readers see it, without copying it.
    pub fn view<R>(&self, f: impl FnOnce(&SandboxRecord) -> R) -> R {
        f(&self.record.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The watch on its pause process, held while the sandbox is READY and the process runs.
    pub fn pause_watch(&self) -> &HeldWatch {
        &self.pause_watch
    }

    pub fn read(&self) -> SandboxRecord {
        self.record.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What readers see from now on (not written to disk: see `SandboxStore::save`).
    pub fn show(&self, record: SandboxRecord) {
        *self.record.write().unwrap_or_else(|p| p.into_inner()) = record;
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}

/// A mutex's guard; a panic elsewhere does not make the data unusable here.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct SandboxStore {
    records: RecordDir,
    index: RwLock<BTreeMap<String, Arc<Entry>>>,
    /// One lock per pod metadata: a retried RunPodSandbox waits for the first, then finds it.
    reservations: Reservations<Metadata>,
}

impl SandboxStore {
    pub fn new(records: RecordDir) -> SandboxStore {
        SandboxStore { records, index: RwLock::new(BTreeMap::new()), reservations: Reservations::default() }
    }

    pub fn records(&self) -> &RecordDir {
        &self.records
    }

    /// Every readable record on disk (unreadable ones are set aside, as `RecordDir` does).
    pub fn load(&self) -> Result<Loaded<SandboxRecord>, PersistError> {
        self.records.load_readable::<SandboxRecord>()
    }

    /// Replaces what is held in memory (at recovery).
    pub fn hold_all(&self, entries: BTreeMap<String, Arc<Entry>>) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = entries;
    }

    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// The sandbox already made for a pod's metadata.
    pub fn with_metadata(&self, metadata: &Metadata) -> Option<SandboxRecord> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index.values().map(|e| e.read()).find(|r| r.metadata == *metadata)
    }

    /// Runs `work` holding the reservation of `metadata`.
    pub fn reserved<T>(&self, metadata: &Metadata, work: impl FnOnce() -> T) -> T {
        self.reservations.with(metadata, work)
    }

    /// Writes a record on disk (crash-safely) without showing it to readers.
    pub fn write(&self, record: &SandboxRecord) -> Result<(), SandboxError> {
        self.records.put(&record.id, record).map_err(SandboxError::record(&record.id, "write"))
    }

    /// Writes `record` on disk, then shows it to readers.
    pub fn save(&self, entry: &Entry, record: SandboxRecord) -> Result<(), SandboxError> {
        self.write(&record)?;
        entry.show(record);
        Ok(())
    }

    /// Holds a sandbox in memory (its record is on disk already).
    pub fn insert(&self, record: SandboxRecord) {
        let id = record.id.clone();
        self.index.write().unwrap_or_else(|p| p.into_inner()).insert(id, Entry::new(record));
    }

    /// Forgets a removed sandbox: its record, then its entry (marked removed for the calls
    /// that waited for it).
    pub fn forget(&self, entry: &Entry, id: &str) -> Result<(), SandboxError> {
        self.records.remove(id).map_err(SandboxError::record(id, "remove"))?;
        entry.removed.store(true, Ordering::SeqCst);
        self.index.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        Ok(())
    }
}
