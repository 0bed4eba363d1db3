//! The containers lockstepd holds: an index of entries (one lock per container that serialises
//! the calls changing it, and the record that readers see), their crash-safe records on disk,
//! CreateContainer's reservations per name and attempt, and the last cgroup reading of each.
//! Nothing here runs an OCI runtime; every RPC family works over this store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use lockstep_cri::model;

use super::error::ContainerError;
use super::record::{ContainerRecord, ExitInfo, RecordState};
use super::usage::CgroupSample;
use crate::monitor::watch::HeldWatch;
use crate::persist::{Loaded, PersistError, RecordDir};

/// One container held in memory: `op` serialises the calls that change it, `record` is what
/// readers see (with its ListContainers item, made once per change, not once per list), and
/// `watch` a pidfd on its monitor while it runs (lists poll it instead of reading files).
pub struct Entry {
    pub op: Mutex<()>,
    record: RwLock<Held>,
    watch: HeldWatch,
}

/// A record and what ListContainers shows of it.
struct Held {
    record: ContainerRecord,
    listed: model::Container,
}

impl Held {
    fn new(record: ContainerRecord) -> Held {
        Held { listed: record.to_container(), record }
    }
}

impl Entry {
    pub fn new(record: ContainerRecord) -> Arc<Entry> {
        Arc::new(Entry { op: Mutex::new(()), record: RwLock::new(Held::new(record)), watch: HeldWatch::default() })
    }

    pub fn read(&self) -> ContainerRecord {
        self.record.read().unwrap_or_else(|p| p.into_inner()).record.clone()
    }

    /// What `look` finds in the record, without a copy of it.
    pub fn view<T>(&self, look: impl FnOnce(&ContainerRecord) -> T) -> T {
        look(&self.record.read().unwrap_or_else(|p| p.into_inner()).record)
    }

    /// The container as ListContainers shows it; None while it is being removed.
    pub fn listed(&self) -> Option<model::Container> {
        let held = self.record.read().unwrap_or_else(|p| p.into_inner());
        (held.record.state != RecordState::Removing).then(|| held.listed.clone())
    }

    /// Whether the container is created or running (its monitor has something to say).
    pub fn is_live(&self) -> bool {
        let held = self.record.read().unwrap_or_else(|p| p.into_inner());
        matches!(held.record.state, RecordState::Created | RecordState::Running)
    }

    /// The watch on its monitor, held while it runs.
    pub fn watch(&self) -> &HeldWatch {
        &self.watch
    }

    fn replace(&self, record: ContainerRecord) {
        *self.record.write().unwrap_or_else(|p| p.into_inner()) = Held::new(record);
    }
}

/// A mutex's guard; a panic elsewhere does not make the data unusable here.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The CRI's uniqueness key of a container: its pod sandbox, name and attempt.
pub type NameKey = (String, String, u32);

pub struct ContainerStore {
    records: RecordDir,
    index: RwLock<BTreeMap<String, Arc<Entry>>>,
    reservations: Mutex<HashMap<NameKey, Arc<Mutex<()>>>>,
    samples: Mutex<HashMap<String, CgroupSample>>,
}

impl ContainerStore {
    /// An empty store over the records in `records` (read them with `load`).
    pub fn new(records: RecordDir) -> ContainerStore {
        ContainerStore {
            records,
            index: RwLock::new(BTreeMap::new()),
            reservations: Mutex::new(HashMap::new()),
            samples: Mutex::new(HashMap::new()),
        }
    }

    pub fn records(&self) -> &RecordDir {
        &self.records
    }

    /// Every readable record on disk (unreadable ones are set aside, as `RecordDir` does).
    pub fn load(&self) -> Result<Loaded<ContainerRecord>, PersistError> {
        self.records.load_readable::<ContainerRecord>()
    }

    /// Replaces what is held in memory (at recovery).
    pub fn hold_all(&self, entries: BTreeMap<String, Arc<Entry>>) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = entries;
    }

    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// The entry of a container the request names: a malformed id is a bad field, an unknown
    /// one is not found.
    pub fn existing(&self, id: &str) -> Result<Arc<Entry>, ContainerError> {
        if !crate::ids::is_safe_id(id) {
            return Err(ContainerError::bad_field("container_id", format!("{id:?} is not a container id")));
        }
        self.get(id).ok_or_else(|| ContainerError::NoSuchContainer { id: id.to_string() })
    }

    /// The entry of `id` if it names a container lockstepd knows; None for any other string.
    pub fn known(&self, id: &str) -> Option<Arc<Entry>> {
        crate::ids::is_safe_id(id).then(|| self.get(id)).flatten()
    }

    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn of_sandbox(&self, sandbox_id: &str) -> Vec<Arc<Entry>> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index.values().filter(|e| e.view(|r| r.sandbox_id == sandbox_id)).cloned().collect()
    }

    /// The lock that serialises CreateContainer calls for one name and attempt. Its entry
    /// lives while a call holds or waits for it, and goes with the last, whether that call
    /// succeeded or failed (issue 14, item 14: a failed create left it for the daemon's life).
    pub fn reservation(&self, key: &NameKey) -> Reservation<'_> {
        let slot = lock(&self.reservations).entry(key.clone()).or_default().clone();
        Reservation { store: self, key: key.clone(), slot }
    }

    /// The container already made for a name and attempt (not one being removed).
    pub fn named(&self, key: &NameKey) -> Option<ContainerRecord> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index
            .values()
            .find(|e| {
                e.view(|r| {
                    r.sandbox_id == key.0 && r.name == key.1 && r.attempt == key.2 && r.state != RecordState::Removing
                })
            })
            .map(|e| e.read())
    }

    /// Writes a record on disk (crash-safely) without holding it in memory yet.
    pub fn write(&self, record: &ContainerRecord) -> Result<(), ContainerError> {
        self.records.put(&record.id, record).map_err(ContainerError::record(&record.id, "write"))
    }

    /// Holds a new container in memory (its record is on disk already).
    pub fn insert(&self, record: ContainerRecord) {
        let id = record.id.clone();
        self.index.write().unwrap_or_else(|p| p.into_inner()).insert(id, Entry::new(record));
    }

    /// Writes `record` on disk, then makes it what readers see.
    pub fn save(&self, entry: &Entry, record: ContainerRecord) -> Result<(), ContainerError> {
        self.write(&record)?;
        entry.replace(record);
        Ok(())
    }

    /// Records an exit, once: a container already exited (or gone) keeps its first exit. A
    /// record that cannot be written is warned about; the exit is read again from the monitor.
    /// Returns the record and whether this call recorded the exit.
    pub fn mark_exited(&self, entry: &Entry, exit: ExitInfo) -> (ContainerRecord, bool) {
        let mut held = entry.record.write().unwrap_or_else(|p| p.into_inner());
        let first = matches!(held.record.state, RecordState::Created | RecordState::Running);
        if first {
            let mut record = held.record.clone();
            record.state = RecordState::Exited;
            record.exit = Some(exit);
            if let Err(e) = self.records.put(&record.id, &record) {
                tracing::warn!(container = %record.id, error = %e, "cannot persist the exit; it is read again later");
            }
            *held = Held::new(record);
        }
        (held.record.clone(), first)
    }

    /// Forgets a removed container: its record, its entry, its reservation, its last reading.
    pub fn forget(&self, record: &ContainerRecord) -> Result<(), ContainerError> {
        let id = record.id.as_str();
        self.records.remove(id).map_err(ContainerError::record(id, "remove"))?;
        self.index.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        lock(&self.reservations).remove(&(record.sandbox_id.clone(), record.name.clone(), record.attempt));
        lock(&self.samples).remove(id);
        Ok(())
    }

    /// Forgets the readings whose key `keep` refuses (of pods that are gone).
    pub fn forget_samples(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.samples).retain(|key, _| keep(key));
    }

    /// Keeps `reading` as the container's last one; returns the one before (for CPU rates).
    pub fn swap_sample(&self, id: &str, reading: CgroupSample) -> Option<CgroupSample> {
        lock(&self.samples).insert(id.to_string(), reading)
    }
}

/// A CreateContainer's share of its name's reservation: `lock` it; dropped, it takes the entry
/// with it unless another call holds or waits for it (decided under the map's lock).
pub struct Reservation<'a> {
    store: &'a ContainerStore,
    key: NameKey,
    slot: Arc<Mutex<()>>,
}

impl Reservation<'_> {
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.slot)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.store.reservations);
        // The map's own reference and this one's: nobody else holds or waits.
        if held.get(&self.key).is_some_and(|slot| Arc::strong_count(slot) <= 2) {
            held.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn record(id: &str, name: &str, state: RecordState) -> ContainerRecord {
        ContainerRecord { name: name.into(), ..ContainerRecord::for_tests(id, state, Path::new("/nonexistent/run")) }
    }

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn exit(code: i32) -> ExitInfo {
        ExitInfo { exit_code: code, finished_at: 7, oom_killed: false, message: String::new() }
    }

    #[test]
    fn a_saved_record_and_its_exit_survive_a_reload_and_the_first_exit_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContainerStore::new(RecordDir::new(tmp.path().join("containers")));
        let running = record(&id(1), "app", RecordState::Running);
        store.write(&running).unwrap();
        store.insert(running);
        let entry = store.get(&id(1)).unwrap();
        let (exited, first) = store.mark_exited(&entry, exit(3));
        assert_eq!((exited.exit.unwrap().exit_code, first), (3, true));
        let (again, first) = store.mark_exited(&entry, exit(9));
        assert_eq!((again.exit.unwrap().exit_code, first), (3, false), "a second exit is ignored");

        let reloaded = ContainerStore::new(RecordDir::new(tmp.path().join("containers")));
        let loaded = reloaded.load().unwrap().records;
        let (_, on_disk) = loaded.iter().find(|(found, _)| *found == id(1)).unwrap();
        assert_eq!(on_disk.state, RecordState::Exited);
        assert_eq!(on_disk.exit.as_ref().unwrap().exit_code, 3);
    }

    #[test]
    fn requests_name_containers_by_valid_known_ids_only() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContainerStore::new(RecordDir::new(tmp.path().join("containers")));
        store.insert(record(&id(1), "app", RecordState::Created));
        assert!(store.existing(&id(1)).is_ok());
        assert!(matches!(store.existing(&id(2)), Err(ContainerError::NoSuchContainer { .. })));
        let bad = store.existing("../etc").err().unwrap();
        assert!(matches!(&bad, ContainerError::BadField { field, .. } if field == "container_id"), "{bad}");
        assert!(store.known("../etc").is_none());
    }

    #[test]
    fn a_name_is_taken_until_its_container_is_forgotten_and_removal_frees_it_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContainerStore::new(RecordDir::new(tmp.path().join("containers")));
        let key: NameKey = ("pod".into(), "app".into(), 0);
        let made = record(&id(1), "app", RecordState::Created);
        store.write(&made).unwrap();
        store.insert(made.clone());
        assert_eq!(store.named(&key).unwrap().id, id(1));

        let entry = store.get(&id(1)).unwrap();
        let mut removing = made.clone();
        removing.state = RecordState::Removing;
        store.save(&entry, removing.clone()).unwrap();
        assert!(store.named(&key).is_none(), "a container being removed no longer holds its name");

        store.forget(&removing).unwrap();
        assert!(store.get(&id(1)).is_none());
        assert!(store.load().unwrap().records.is_empty(), "the record is gone from disk");
    }

    /// CreateContainer's reservation of a name: a call that fails leaves no entry; one that
    /// another call waits on keeps it for that call until the last goes.
    #[test]
    fn a_reservation_lives_only_while_a_call_holds_or_waits_for_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(ContainerStore::new(RecordDir::new(tmp.path().join("containers"))));
        let key: NameKey = ("pod".into(), "app".into(), 0);
        let entries = |store: &ContainerStore| lock(&store.reservations).len();
        let failed_create = |store: &ContainerStore, work: &dyn Fn()| -> Result<(), &'static str> {
            let reservation = store.reservation(&key);
            let _reserved = reservation.lock();
            work();
            Err("the image is not present")
        };
        assert!(failed_create(&store, &|| {}).is_err());
        assert_eq!(entries(&store), 0, "a failed create left its reservation");

        let (inside_tx, inside) = std::sync::mpsc::channel();
        let (go_tx, go) = std::sync::mpsc::channel::<()>();
        let go = Mutex::new(go);
        std::thread::scope(|s| {
            let first = s.spawn(|| {
                failed_create(&store, &|| {
                    inside_tx.send(()).unwrap();
                    lock(&go).recv().unwrap();
                })
            });
            inside.recv().unwrap();
            let second = s.spawn(|| failed_create(&store, &|| {}));
            // The second call waits once it has its share: the map's, the first's and its own.
            while Arc::strong_count(lock(&store.reservations).get(&key).unwrap()) < 3 {
                std::thread::yield_now();
            }
            go_tx.send(()).unwrap();
            assert!(first.join().unwrap().is_err());
            assert!(second.join().unwrap().is_err());
        });
        assert_eq!(entries(&store), 0, "the last call took the entry with it");
    }
}
