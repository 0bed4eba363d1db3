//! Garbage collection: snapshots and blobs that no image, container hold or running pull
//! needs go, and pulls mark what they have in flight so that it stays. Touches
//! `<root>/images/{snapshots,blobs,tmp}`.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use super::state::{lock, Store};
use crate::image::reference::Digest;

impl Store {
    /// Collects garbage: detached under the commit lock, deleted after it. Blocking.
    pub fn collect_garbage_locked(&self) {
        let detached = {
            let _commit = self.commit_lock();
            self.collect_garbage()
        };
        detached.delete();
    }

    /// Takes snapshots that no image, container hold or running pull needs out of sight and
    /// removes such blobs; the snapshots are deleted by [`Detached::delete`], which callers
    /// run after releasing the commit lock (issue 14, item 12: deleting a big image must not
    /// hold up every CreateContainer and pull). Callers hold the commit lock (or own the
    /// store alone, at start).
    #[must_use = "detached snapshots are deleted only by Detached::delete"]
    pub(super) fn collect_garbage(&self) -> Detached<'_> {
        let (layers, blobs) = {
            let records = self.records();
            (records.layers_in_use(), records.blobs_in_use())
        };
        let detached = {
            let in_flight = lock(&self.layers_in_flight);
            let keep: BTreeSet<Digest> = in_flight.keys().cloned().collect();
            self.snapshots.detach_unused(&layers, &keep)
        };
        // Under the lock pulls take to mark their blobs before writing them: a blob written
        // after the listing below is either marked (kept) or waits for the end of this loop.
        let in_flight = lock(&self.blobs_in_flight);
        if let Ok(entries) = std::fs::read_dir(self.layout.blobs()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let keep = Digest::parse(&format!("sha256:{name}"))
                    .is_ok_and(|d| blobs.contains(&d) || in_flight.contains_key(&d));
                if !keep {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Detached { store: self, paths: detached }
    }

    /// Marks layers (chain IDs) as needed by a running pull until the mark is dropped.
    pub fn mark_layers(&self, layers: &[Digest]) -> InFlight<'_> {
        InFlight::new(&self.layers_in_flight, layers)
    }

    /// Marks blobs as written by a running pull until the mark is dropped.
    pub fn mark_blobs(&self, blobs: &[Digest]) -> InFlight<'_> {
        InFlight::new(&self.blobs_in_flight, blobs)
    }
}

/// Snapshots taken out of sight (renamed under tmp/), to be deleted without the commit lock.
/// What is not deleted (a crash, an error) goes at the next start, with the rest of tmp/.
pub struct Detached<'a> {
    #[cfg_attr(not(test), allow(dead_code))]
    store: &'a Store,
    paths: Vec<PathBuf>,
}

impl Detached<'_> {
    pub fn delete(self) {
        if self.paths.is_empty() {
            return;
        }
        #[cfg(test)]
        if let Some(hook) = lock(&self.store.before_delete).as_ref() {
            hook();
        }
        tracing::debug!(count = self.paths.len(), "removing unused layer snapshots");
        crate::image::snapshot::delete(self.paths);
    }
}

/// Marks layers or blobs as needed by a running pull, so garbage collection leaves them be.
pub struct InFlight<'a> {
    map: &'a Mutex<HashMap<Digest, usize>>,
    digests: Vec<Digest>,
}

impl<'a> InFlight<'a> {
    fn new(map: &'a Mutex<HashMap<Digest, usize>>, digests: &[Digest]) -> Self {
        let mut m = lock(map);
        for d in digests {
            *m.entry(d.clone()).or_default() += 1;
        }
        InFlight { map, digests: digests.to_vec() }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = lock(self.map);
        for d in &self.digests {
            if let Some(n) = m.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    m.remove(d);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::image::registry::manifest::{ImageConfig, RootFs};
    use crate::image::snapshot::Snapshots;
    use crate::image::store::records::{ImageRecord, LayerRecord};
    use crate::image::store::{Layout, Lookup};

    /// How long a test waits for what must happen before it calls it a failure (never a
    /// measure of speed: every wait below ends as soon as the awaited event happens).
    const FAILURE_AFTER: Duration = Duration::from_secs(20);

    fn digest(text: &str) -> Digest {
        use sha2::Digest as _;
        Digest::from_sha256(&sha2::Sha256::digest(text.as_bytes()))
    }

    /// An image of one layer whose snapshot is a directory of `files` files.
    fn stored_image(store: &Store, name: &str, files: usize) -> ImageRecord {
        let diff_id = digest(name);
        let fs = store.snapshots.fs_dir(&diff_id);
        std::fs::create_dir_all(&fs).unwrap();
        for i in 0..files {
            std::fs::write(fs.join(format!("f{i}")), b"x").unwrap();
        }
        let record = ImageRecord {
            id: digest(&format!("{name}-config")),
            repo_tags: vec![format!("registry.test/{name}:1")],
            repo_digests: vec![],
            manifest: digest(&format!("{name}-manifest")),
            config: ImageConfig {
                rootfs: RootFs { kind: "layers".into(), diff_ids: vec![diff_id.clone()] },
                ..Default::default()
            },
            layers: vec![LayerRecord { diff_id: diff_id.clone(), digest: diff_id, size: 1, media_type: String::new() }],
            size: 1,
            pulled_at: 0,
        };
        store.commit_image(record).unwrap()
    }

    fn open(root: &std::path::Path) -> Arc<Store> {
        let layout = Layout::new(root);
        Arc::new(Store::open(layout.clone(), Snapshots::new(layout), root.join("containers")).unwrap())
    }

    /// RemoveImage deletes a big snapshot: the image is gone from sight at once, and a hold
    /// (CreateContainer) on another image completes while the deletion is still going on,
    /// instead of waiting behind it for the commit lock.
    #[test]
    fn deleting_a_removed_image_does_not_hold_up_other_images() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let big = stored_image(&store, "big", 100);
        let other = stored_image(&store, "other", 1);

        let (deleting_tx, deleting) = mpsc::channel::<()>();
        let (go_on_tx, go_on) = mpsc::channel::<()>();
        let go_on = Mutex::new(go_on);
        *lock(&store.before_delete) = Some(Box::new(move || {
            let _ = deleting_tx.send(());
            // Held until the test has seen the hold go through (or gives up on it).
            let _ = lock(&go_on).recv_timeout(FAILURE_AFTER);
        }));
        let remover = {
            let store = store.clone();
            let id = big.id.clone();
            std::thread::spawn(move || store.remove_image(&id))
        };
        deleting.recv_timeout(FAILURE_AFTER).expect("the removal reached the deletion");
        assert!(store.find(&Lookup::Id(big.id.clone())).is_none(), "the removed image is gone from sight");

        let (held_tx, held) = mpsc::channel();
        {
            let store = store.clone();
            let other = other.id.clone();
            std::thread::spawn(move || {
                let _ = held_tx.send(store.hold("container-1", &Lookup::Id(other), "other").map(|h| h.layer_dirs));
            });
        }
        let during = held.recv_timeout(FAILURE_AFTER);
        go_on_tx.send(()).unwrap();
        remover.join().unwrap().unwrap();
        let layer_dirs = during.expect("the hold completed while the deletion was held").unwrap();
        assert!(layer_dirs[0].is_dir());
        assert_eq!(store.snapshots.list(), vec![other.layers[0].diff_id.clone()], "the big snapshot is deleted");
        assert_eq!(std::fs::read_dir(store.layout.tmp()).unwrap().count(), 0, "nothing left in tmp/");
    }
}
