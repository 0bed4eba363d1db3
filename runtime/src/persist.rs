//! Crash-safe files: write a temporary sibling, fsync it, rename it over the target, fsync the
//! directory. A reader sees the old content or the new, never a torn file. Also a directory of
//! JSON records keyed by id, as the sandbox, container and image stores keep them.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("record {path} is corrupt: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("cannot encode record for {path}: {source}")]
    Encode { path: PathBuf, source: serde_json::Error },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PersistError + 'a {
    move |source| PersistError::Io { what, path: path.to_path_buf(), source }
}

/// Replaces `path` with `bytes` atomically and durably; the file is the owner's alone (0600):
/// records carry what the kubelet sent (environments, annotations), for lockstepd only.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Unique per write: two threads of one process may write the same record.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file =
            File::options().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io("create", &tmp))?;
        file.write_all(bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename or unlink inside `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory", dir))
}

/// Creates `dir` (and missing parents) and makes sure its mode grants nothing beyond
/// `max_mode`: an existing directory with more is narrowed (never widened), so state that an
/// older version or an operator left world-readable is closed at the next start.
pub fn restrict_dir(dir: &Path, max_mode: u32) -> Result<(), PersistError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(max_mode).create(dir).map_err(io("create directory", dir))?;
    let mode = std::fs::metadata(dir).map_err(io("inspect", dir))?.permissions().mode() & 0o7777;
    if mode & !max_mode != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & max_mode))
            .map_err(io("restrict the mode of", dir))?;
    }
    Ok(())
}

/// A directory of JSON records, one file `<id>.json` per record.
#[derive(Debug, Clone)]
pub struct RecordDir {
    dir: PathBuf,
}

impl RecordDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RecordDir { dir: dir.into() }
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn put<T: Serialize>(&self, id: &str, record: &T) -> Result<(), PersistError> {
        let path = self.path(id);
        let bytes =
            serde_json::to_vec_pretty(record).map_err(|source| PersistError::Encode { path: path.clone(), source })?;
        write_atomic(&path, &bytes)
    }

    pub fn get<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, PersistError> {
        let path = self.path(id);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map(Some).map_err(|source| PersistError::Corrupt { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Removes a record; removing one that is absent succeeds.
    pub fn remove(&self, id: &str) -> Result<(), PersistError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    /// Every record that can be read, with its id; a corrupt one is renamed `<id>.json.corrupt`
    /// (kept for a person to look at, never loaded again) and reported, so that one bad file
    /// does not stop a daemon from starting. Leftover temporary files are removed.
    pub fn load_readable<T: DeserializeOwned>(&self) -> Result<Loaded<T>, PersistError> {
        let mut loaded = Loaded { records: Vec::new(), set_aside: Vec::new() };
        for id in self.ids()? {
            match self.get(&id) {
                Ok(Some(record)) => loaded.records.push((id, record)),
                Ok(None) => {}
                Err(problem @ PersistError::Corrupt { .. }) => {
                    let from = self.path(&id);
                    let to = from.with_extension("json.corrupt");
                    std::fs::rename(&from, &to).map_err(io("set aside", &from))?;
                    sync_dir(&self.dir)?;
                    loaded.set_aside.push(SetAside { id, moved_to: to, problem });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(loaded)
    }

    /// The ids of the records on disk, sorted. Leftover temporary files of an interrupted write
    /// are removed.
    fn ids(&self) -> Result<Vec<String>, PersistError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list", &self.dir)(e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("list", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if let Some(id) = name.strip_suffix(".json") {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Every record, with its id; a corrupt one is an error. Leftover temporary files of an
    /// interrupted write are removed.
    pub fn load_all<T: DeserializeOwned>(&self) -> Result<Vec<(String, T)>, PersistError> {
        let mut records = Vec::new();
        for id in self.ids()? {
            if let Some(record) = self.get(&id)? {
                records.push((id, record));
            }
        }
        Ok(records)
    }
}

/// What `load_readable` found.
#[derive(Debug)]
pub struct Loaded<T> {
    pub records: Vec<(String, T)>,
    pub set_aside: Vec<SetAside>,
}

/// A record that could not be read and was renamed out of the way.
#[derive(Debug)]
pub struct SetAside {
    pub id: String,
    pub moved_to: PathBuf,
    pub problem: PersistError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_removal_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RecordDir::new(tmp.path().join("records"));
        dir.put("b", &vec![2u32]).unwrap();
        dir.put("a", &vec![1u32]).unwrap();
        dir.put("a", &vec![1u32, 11]).unwrap();
        let all: Vec<(String, Vec<u32>)> = dir.load_all().unwrap();
        assert_eq!(all, vec![("a".into(), vec![1, 11]), ("b".into(), vec![2])]);
        dir.remove("a").unwrap();
        dir.remove("a").unwrap();
        assert_eq!(dir.get::<Vec<u32>>("a").unwrap(), None);
    }

    #[test]
    fn records_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = RecordDir::new(tmp.path());
        dir.put("env", &vec!["API_TOKEN=s3cr3t".to_string()]).unwrap();
        let mode = std::fs::metadata(dir.path("env")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    #[test]
    fn writers_of_one_record_in_one_process_do_not_collide() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RecordDir::new(tmp.path());
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        dir.put("shared", &vec![w; 100 + i]).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("every write succeeds");
        }
        let last: Vec<u32> = dir.get("shared").unwrap().unwrap();
        assert!(last.iter().all(|v| *v == last[0]), "one writer's record, whole");
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("shared.json")], "no temporary file is left");
    }

    #[test]
    fn an_interrupted_write_leaves_the_old_record_and_is_cleaned_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RecordDir::new(tmp.path());
        dir.put("x", &"old").unwrap();
        // What a kill between create and rename leaves behind.
        std::fs::write(tmp.path().join(".x.json.tmp-999"), b"{\"half").unwrap();
        let all: Vec<(String, String)> = dir.load_all().unwrap();
        assert_eq!(all, vec![("x".into(), "old".into())]);
        assert!(!tmp.path().join(".x.json.tmp-999").exists());
    }

    #[test]
    fn a_corrupt_record_is_set_aside_and_the_others_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RecordDir::new(tmp.path());
        dir.put("good", &"kept").unwrap();
        std::fs::write(tmp.path().join("bad.json"), b"{not json").unwrap();
        std::fs::write(tmp.path().join(".good.json.tmp-7-3"), b"{\"half").unwrap();
        assert!(dir.load_all::<String>().is_err(), "load_all refuses");
        let loaded: Loaded<String> = dir.load_readable().unwrap();
        assert_eq!(loaded.records, vec![("good".into(), "kept".into())]);
        assert_eq!(loaded.set_aside.len(), 1);
        assert_eq!(loaded.set_aside[0].moved_to, tmp.path().join("bad.json.corrupt"));
        assert!(loaded.set_aside[0].problem.to_string().contains("bad.json"));
        assert!(!tmp.path().join("bad.json").exists() && tmp.path().join("bad.json.corrupt").exists());
        assert!(!tmp.path().join(".good.json.tmp-7-3").exists(), "a leftover temporary file is swept");
        let again: Loaded<String> = dir.load_readable().unwrap();
        assert!(again.set_aside.is_empty(), "set aside once");
    }

    #[test]
    fn directories_are_narrowed_never_widened() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let fresh = tmp.path().join("a/b");
        restrict_dir(&fresh, 0o700).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        restrict_dir(&open, 0o711).unwrap();
        assert_eq!(mode(&open), 0o711);
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
        restrict_dir(&open, 0o711).unwrap();
        assert_eq!(mode(&open), 0o700, "never widened");
    }

    #[test]
    fn a_corrupt_record_is_reported_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("bad.json"), b"{not json").unwrap();
        let err = RecordDir::new(tmp.path()).get::<String>("bad").unwrap_err().to_string();
        assert!(err.contains("bad.json") && err.contains("corrupt"), "{err}");
    }
}
