//! Image records (what ListImages shows: id, tags, digests, config, layers) and container
//! holds on layers, each a crash-safe JSON file through `persist::RecordDir`, with an in-memory
//! index for lookups by ID, tag or digest. Touches `<root>/images/{records,holds}`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::image::reference::Digest;
use crate::image::registry::manifest::ImageConfig;
use crate::persist::{PersistError, RecordDir};

/// One image as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest: the image ID.
    pub id: Digest,
    /// `registry/repository:tag`, normalised.
    pub repo_tags: Vec<String>,
    /// `registry/repository@sha256:…` of the manifest (or index) the image was pulled by.
    pub repo_digests: Vec<String>,
    /// The platform manifest that was unpacked.
    pub manifest: Digest,
    /// The config, parsed (its bytes are the blob `id`).
    pub config: ImageConfig,
    /// The layers, lowest first.
    pub layers: Vec<LayerRecord>,
    /// Bytes as the registry counts them: config plus compressed layers.
    pub size: u64,
    /// Unix seconds of the pull that created the record.
    pub pulled_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the uncompressed tar: names the snapshot.
    pub diff_id: Digest,
    /// Digest of the blob as the registry stores it.
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

impl ImageRecord {
    /// Blobs the record needs: config and manifests.
    pub fn blobs(&self) -> Vec<Digest> {
        let mut blobs = vec![self.id.clone(), self.manifest.clone()];
        for d in &self.repo_digests {
            if let Some(Ok(digest)) = d.split_once('@').map(|(_, d)| Digest::parse(d)) {
                blobs.push(digest);
            }
        }
        blobs
    }

    pub fn diff_ids(&self) -> impl Iterator<Item = &Digest> {
        self.layers.iter().map(|l| &l.diff_id)
    }

    /// The chain IDs of the layers, lowest first: what names their snapshots.
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(self.diff_ids())
    }
}

/// OCI image spec chain IDs: the first layer's is its diff ID, each next one is the sha256 of
/// `<chain ID below> <diff ID>`. A layer's snapshot depends on the layers below it.
pub fn chain_ids<'a>(diff_ids: impl IntoIterator<Item = &'a Digest>) -> Vec<Digest> {
    use sha2::Digest as _;
    let mut chains: Vec<Digest> = Vec::new();
    for diff_id in diff_ids {
        let chain = match chains.last() {
            None => diff_id.clone(),
            Some(below) => Digest::from_sha256(&sha2::Sha256::digest(format!("{below} {diff_id}").as_bytes())),
        };
        chains.push(chain);
    }
    chains
}

/// A container's hold on an image's layers: while it exists, RemoveImage leaves them be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub image: Digest,
    /// The layers' snapshots (chain IDs).
    pub layers: Vec<Digest>,
}

/// The records, persisted and indexed.
#[derive(Debug)]
pub struct Records {
    dir: RecordDir,
    holds_dir: RecordDir,
    by_id: BTreeMap<Digest, ImageRecord>,
    holds: BTreeMap<String, Hold>,
}

impl Records {
    /// Loads the records. A tag that two records claim (a tag move cut short by a crash)
    /// belongs to the one written last; the other loses it, and goes if it has no name left.
    pub fn load(dir: RecordDir, holds_dir: RecordDir) -> Result<Records, PersistError> {
        let mut by_id = BTreeMap::new();
        let mut written = BTreeMap::new();
        // An unreadable image record is set aside (its layers go at the next collection unless a
        // container holds them); holds stay strict: losing one could delete a running container's layers.
        let loaded = dir.load_readable::<ImageRecord>()?;
        for bad in &loaded.set_aside {
            tracing::error!(image = %bad.id, moved_to = %bad.moved_to.display(), problem = %bad.problem,
                "an unreadable image record was set aside; pull the image again");
        }
        for (_, record) in loaded.records {
            let modified = std::fs::metadata(dir.path(record.id.hex())).and_then(|m| m.modified()).ok();
            written.insert(record.id.clone(), (modified, record.pulled_at));
            by_id.insert(record.id.clone(), record);
        }
        let holds = holds_dir.load_all::<Hold>()?.into_iter().collect();
        let mut records = Records { dir, holds_dir, by_id, holds };
        let mut owner: BTreeMap<String, Digest> = BTreeMap::new();
        for record in records.by_id.values() {
            for tag in &record.repo_tags {
                match owner.get(tag) {
                    Some(other) if written.get(other) >= written.get(&record.id) => {}
                    _ => {
                        owner.insert(tag.clone(), record.id.clone());
                    }
                }
            }
        }
        let losers: Vec<Digest> = records
            .by_id
            .values()
            .filter(|r| r.repo_tags.iter().any(|t| owner.get(t) != Some(&r.id)))
            .map(|r| r.id.clone())
            .collect();
        for id in losers {
            let Some(mut record) = records.by_id.get(&id).cloned() else { continue };
            record.repo_tags.retain(|t| owner.get(t) == Some(&id));
            tracing::info!(image = %id, "finishing a tag move a crash cut short");
            if record.repo_tags.is_empty() && record.repo_digests.is_empty() {
                records.remove(&id)?;
            } else {
                records.put(record)?;
            }
        }
        Ok(records)
    }

    pub fn all(&self) -> impl Iterator<Item = &ImageRecord> {
        self.by_id.values()
    }

    pub fn get(&self, id: &Digest) -> Option<&ImageRecord> {
        self.by_id.get(id)
    }

    /// The image a tag or digest reference (normalised) names.
    pub fn by_name(&self, name: &str) -> Option<&ImageRecord> {
        self.by_id.values().find(|r| r.repo_tags.iter().chain(&r.repo_digests).any(|n| n == name))
    }

    /// Stores a pulled image: its tags and digests join those of an existing record with the
    /// same ID, and a tag moves away from any other image (which is removed if nothing names it
    /// any more). Returns the IDs of images that lost their last name.
    ///
    /// Crash-safe: the new record is written first, so a crash before the others lose the
    /// tag leaves it in two records, which [`Records::load`] settles.
    pub fn commit(&mut self, mut record: ImageRecord) -> Result<Vec<Digest>, PersistError> {
        if let Some(existing) = self.by_id.get(&record.id) {
            let tags: BTreeSet<String> = existing.repo_tags.iter().chain(&record.repo_tags).cloned().collect();
            let digests: BTreeSet<String> = existing.repo_digests.iter().chain(&record.repo_digests).cloned().collect();
            record.repo_tags = tags.into_iter().collect();
            record.repo_digests = digests.into_iter().collect();
            record.pulled_at = existing.pulled_at;
        }
        let moved: Vec<Digest> = self
            .by_id
            .values()
            .filter(|r| r.id != record.id && r.repo_tags.iter().any(|t| record.repo_tags.contains(t)))
            .map(|r| r.id.clone())
            .collect();
        let tags = record.repo_tags.clone();
        self.put(record)?;
        let mut orphaned = Vec::new();
        for id in moved {
            let Some(mut other) = self.by_id.get(&id).cloned() else { continue };
            other.repo_tags.retain(|t| !tags.contains(t));
            if other.repo_tags.is_empty() && other.repo_digests.is_empty() {
                self.remove(&id)?;
                orphaned.push(id);
            } else {
                self.put(other)?;
            }
        }
        Ok(orphaned)
    }

    fn put(&mut self, record: ImageRecord) -> Result<(), PersistError> {
        self.dir.put(record.id.hex(), &record)?;
        self.by_id.insert(record.id.clone(), record);
        Ok(())
    }

    /// Removes a record; absent is fine.
    pub fn remove(&mut self, id: &Digest) -> Result<Option<ImageRecord>, PersistError> {
        self.dir.remove(id.hex())?;
        Ok(self.by_id.remove(id))
    }

    pub fn hold(&mut self, holder: &str, hold: Hold) -> Result<(), PersistError> {
        self.holds_dir.put(holder, &hold)?;
        self.holds.insert(holder.to_string(), hold);
        Ok(())
    }

    pub fn release(&mut self, holder: &str) -> Result<(), PersistError> {
        self.holds_dir.remove(holder)?;
        self.holds.remove(holder);
        Ok(())
    }

    /// Who holds layers (container IDs, and the names of their image volumes' holds).
    pub fn holders(&self) -> impl Iterator<Item = &str> {
        self.holds.keys().map(String::as_str)
    }

    /// Every layer snapshot (by chain ID) some image or hold needs.
    pub fn layers_in_use(&self) -> BTreeSet<Digest> {
        let mut used: BTreeSet<Digest> = self.by_id.values().flat_map(|r| r.chain_ids()).collect();
        used.extend(self.holds.values().flat_map(|h| h.layers.iter().cloned()));
        used
    }

    /// Every blob some image needs.
    pub fn blobs_in_use(&self) -> BTreeSet<Digest> {
        self.by_id.values().flat_map(|r| r.blobs()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn record(id: char, tags: &[&str], layers: &[char]) -> ImageRecord {
        ImageRecord {
            id: d(id),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![],
            manifest: d('f'),
            config: ImageConfig::default(),
            layers: layers
                .iter()
                .map(|&c| LayerRecord { diff_id: d(c), digest: d(c), size: 1, media_type: String::new() })
                .collect(),
            size: 1,
            pulled_at: 0,
        }
    }

    fn open(tmp: &std::path::Path) -> Records {
        Records::load(RecordDir::new(tmp.join("records")), RecordDir::new(tmp.join("holds"))).unwrap()
    }

    #[test]
    fn tags_merge_move_and_survive_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let mut records = open(tmp.path());
        records.commit(record('a', &["r/x:1"], &['1'])).unwrap();
        records.commit(record('a', &["r/x:2"], &['1'])).unwrap();
        assert_eq!(records.get(&d('a')).unwrap().repo_tags, vec!["r/x:1", "r/x:2"]);
        let orphaned = records.commit(record('b', &["r/x:1", "r/x:2"], &['2'])).unwrap();
        assert_eq!(orphaned, vec![d('a')], "both tags moved: a has no name left");
        let records = open(tmp.path());
        assert!(records.get(&d('a')).is_none());
        assert_eq!(records.by_name("r/x:2").unwrap().id, d('b'));
    }

    #[test]
    fn chain_ids_name_a_layer_with_the_layers_below() {
        use sha2::Digest as _;
        let ids = chain_ids(&[d('1'), d('2')]);
        assert_eq!(ids[0], d('1'), "the first layer's chain ID is its diff ID");
        let text = format!("sha256:{} sha256:{}", "1".repeat(64), "2".repeat(64));
        assert_eq!(ids[1], Digest::from_sha256(&sha2::Sha256::digest(text.as_bytes())));
        assert_ne!(chain_ids(&[d('3'), d('2')])[1], ids[1], "the same layer on another base");
    }

    /// A tag move that fails (or is cut short by a crash) half way loses neither image: the
    /// new record is written first, and a tag found in two records at load belongs to the one
    /// written last.
    #[test]
    fn a_tag_move_cut_short_loses_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut records = open(tmp.path());
        records.commit(record('a', &["r/x:1"], &['1'])).unwrap();
        // The new record cannot be written: the move must not have started.
        let blocked = tmp.path().join("records").join(format!("{}.json", d('b').hex()));
        std::fs::create_dir(&blocked).unwrap();
        assert!(records.commit(record('b', &["r/x:1"], &['2'])).is_err());
        std::fs::remove_dir(&blocked).unwrap();
        assert_eq!(open(tmp.path()).by_name("r/x:1").map(|r| r.id.clone()), Some(d('a')));
        let mut records = open(tmp.path());

        // A crash after the new record was written, before the old one lost its tag.
        let stale = open(tmp.path()).get(&d('a')).unwrap().clone();
        records.commit(record('b', &["r/x:1"], &['2'])).unwrap();
        let older = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        RecordDir::new(tmp.path().join("records")).put(stale.id.hex(), &stale).unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(RecordDir::new(tmp.path().join("records")).path(stale.id.hex()))
            .unwrap();
        file.set_modified(older).unwrap();
        let reloaded = open(tmp.path());
        assert_eq!(reloaded.by_name("r/x:1").unwrap().id, d('b'), "the record written last owns the tag");
        assert!(reloaded.get(&d('a')).is_none(), "the old image, left with no name, is gone");
        assert!(open(tmp.path()).get(&d('a')).is_none(), "and stays gone");
    }

    #[test]
    fn holds_keep_layers_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let mut records = open(tmp.path());
        records.commit(record('a', &["r/x:1"], &['1', '2'])).unwrap();
        records.hold("ctr1", Hold { image: d('a'), layers: vec![d('1'), d('2')] }).unwrap();
        records.remove(&d('a')).unwrap();
        let reopened = open(tmp.path());
        assert_eq!(reopened.layers_in_use(), [d('1'), d('2')].into());
        records.release("ctr1").unwrap();
        assert!(open(tmp.path()).layers_in_use().is_empty());
    }
}
