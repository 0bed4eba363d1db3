//! Garbage collection: snapshots and blobs that no image, container hold or running pull
//! needs go, and pulls mark what they have in flight so that it stays. Touches
//! `<root>/images/{snapshots,blobs,tmp}`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use super::state::{lock, Store};
use crate::image::reference::Digest;

impl Store {
    /// Collects garbage under the commit lock. Blocking.
    pub fn collect_garbage_locked(&self) {
        let _commit = self.commit_lock();
        self.collect_garbage();
    }

    /// Removes snapshots and blobs that no image, container hold or running pull needs.
    /// Callers hold the commit lock (or own the store alone, at start).
    pub(super) fn collect_garbage(&self) {
        let (layers, blobs) = {
            let records = self.records();
            (records.layers_in_use(), records.blobs_in_use())
        };
        let detached = {
            let in_flight = lock(&self.layers_in_flight);
            let keep: BTreeSet<Digest> = in_flight.keys().cloned().collect();
            self.snapshots.detach_unused(&layers, &keep)
        };
        if !detached.is_empty() {
            tracing::debug!(count = detached.len(), "removing unused layer snapshots");
            crate::image::snapshot::delete(detached);
        }
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
