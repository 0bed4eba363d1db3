//! Pulls: concurrent pulls of one image (same credentials) collapsed into one task, short
//! names tried on each search registry, each reference's mirrors before its location, the
//! platform's manifest picked from an index, layers fetched (`pull/layers.rs`), then the image
//! committed whole. Touches the network and the store.

mod layers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

use super::error::ImageError;
use super::reference::{Digest, Parsed, Reference, Target};
use super::registries_conf::RegistriesConf;
use super::registry::auth::Credentials;
use super::registry::manifest::{self, Document, ImageConfig};
use super::registry::{Registry, Session};
use super::store::records::{chain_ids, ImageRecord, LayerRecord};
use super::store::Store;
use crate::persist::PersistError;

/// Image configs above this size are refused.
const MAX_CONFIG_BYTES: usize = 8 << 20;

type PullResult = Result<ImageRecord, Arc<ImageError>>;
/// A pull in progress, shared by its callers, with the id its task removes it by.
type RunningPull = (u64, Shared<BoxFuture<'static, PullResult>>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The references a name may stand for: itself if qualified, else one per search registry
/// of registries.conf (at `conf`), in order.
pub(super) fn candidates(conf: &Path, parsed: &Parsed) -> Result<Vec<Reference>, ImageError> {
    if parsed.qualified {
        return Ok(vec![parsed.reference.clone()]);
    }
    let conf = RegistriesConf::load(conf)?;
    Ok(conf.search_registries().iter().map(|r| parsed.on_registry(r)).collect())
}

/// The pulling side of the image service.
pub struct Puller {
    store: Arc<Store>,
    registry: Registry,
    registries_conf: PathBuf,
    /// Pulls in progress by what they pull, each with the id its task removes it by.
    pulls: Mutex<HashMap<String, RunningPull>>,
    pull_ids: AtomicU64,
    layers_unpacked: AtomicU64,
}

impl Puller {
    pub fn new(store: Arc<Store>, registry: Registry, registries_conf: PathBuf) -> Puller {
        Puller {
            store,
            registry,
            registries_conf,
            pulls: Mutex::default(),
            pull_ids: AtomicU64::new(0),
            layers_unpacked: AtomicU64::new(0),
        }
    }

    /// How many layers were unpacked since the start (shared layers count once).
    pub fn layers_unpacked(&self) -> u64 {
        self.layers_unpacked.load(Ordering::Relaxed)
    }

    /// Pulls `image`; two pulls of the same image with the same credentials share one.
    pub async fn pull(self: &Arc<Self>, image: &str, credentials: Credentials) -> PullResult {
        let parsed = super::reference::parse(image).map_err(|e| Arc::new(e.into()))?;
        let candidates = candidates(&self.registries_conf, &parsed).map_err(Arc::new)?;
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                &credentials.username,
                &credentials.password,
                &credentials.identity_token,
                &credentials.registry_token,
                &credentials.server_address,
            )
                .hash(&mut h);
            format!("{}#{:x}", candidates.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","), h.finish())
        };
        let shared = {
            let mut pulls = lock(&self.pulls);
            match pulls.get(&key) {
                Some((_, running)) => running.clone(),
                None => {
                    let id = self.pull_ids.fetch_add(1, Ordering::Relaxed);
                    let this = self.clone();
                    let name = image.to_string();
                    let done = PullDone { puller: self.clone(), key: key.clone(), id };
                    // A task of its own: a kubelet that gives up does not cancel the others' pull.
                    // The task itself ends the sharing when it ends (however it ends), so a call
                    // that comes after it pulls afresh even if every caller gave up.
                    let task = tokio::spawn(async move {
                        let _done = done;
                        this.pull_candidates(&name, candidates, credentials).await.map_err(Arc::new)
                    });
                    let future: BoxFuture<'static, PullResult> = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(Arc::new(ImageError::BadImage {
                                reference: "pull".into(),
                                detail: format!("the pull task failed: {e}"),
                            }))
                        })
                    }
                    .boxed();
                    let shared = future.shared();
                    pulls.insert(key, (id, shared.clone()));
                    shared
                }
            }
        };
        shared.await
    }

    async fn pull_candidates(
        self: &Arc<Self>,
        image: &str,
        candidates: Vec<Reference>,
        credentials: Credentials,
    ) -> Result<ImageRecord, ImageError> {
        let mut failures = Vec::new();
        for (index, candidate) in candidates.iter().enumerate() {
            // Credentials that name no registry are for the first search registry only: the
            // others are other parties, which must not receive them.
            let credentials = if index > 0 && credentials.server_address.is_empty() {
                Credentials::default()
            } else {
                credentials.clone()
            };
            match self.pull_reference(candidate, &credentials).await {
                Ok(record) => return Ok(record),
                Err(e) => failures.push((candidate.to_string(), e)),
            }
        }
        if failures.len() == 1 {
            return Err(failures.remove(0).1);
        }
        let text = failures.iter().map(|(c, e)| format!("{c}: {e}")).collect::<Vec<_>>().join("; ");
        let decisive = failures.iter().position(|(_, e)| !e.is_not_found()).unwrap_or(0);
        let root = failures.swap_remove(decisive).1;
        Err(ImageError::Several(format!("{image}: every search registry failed: {text}"), Box::new(root)))
    }

    /// Tries the mirrors of a reference, then its location.
    async fn pull_reference(
        self: &Arc<Self>,
        named: &Reference,
        credentials: &Credentials,
    ) -> Result<ImageRecord, ImageError> {
        let sources = RegistriesConf::load(&self.registries_conf)?.sources(named)?;
        let mut last = None;
        for source in sources {
            let mirror = source.mirror;
            let credentials = credentials.for_registry(&named.registry, &source.reference.registry);
            let committed_before = self.layers_unpacked();
            let pulled = self.pull_from(named, source.reference.clone(), source.insecure, &credentials).await;
            if pulled.is_err() && self.layers_unpacked() != committed_before {
                // Lower layers committed before a later one failed: nothing of a failed pull stays.
                // Under the commit lock, as every collection: a pull committing meanwhile would
                // otherwise lose the blobs it wrote between the listing and the sweep.
                self.collect_garbage().await;
            }
            match pulled {
                Ok(r) => return Ok(r),
                Err(e) if mirror => {
                    tracing::warn!(mirror = %source.reference, error = %e, "mirror failed, trying the next source");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ImageError::NotFound(named.to_string())))
    }

    /// Garbage collection on a blocking thread: deleting a large layer takes a while.
    async fn collect_garbage(&self) {
        let store = self.store.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || store.collect_garbage_locked()).await {
            tracing::warn!(error = %e, "garbage collection failed; it runs again at the next start");
        }
    }

    async fn pull_from(
        self: &Arc<Self>,
        named: &Reference,
        from: Reference,
        insecure: bool,
        credentials: &Credentials,
    ) -> Result<ImageRecord, ImageError> {
        let started = std::time::Instant::now();
        let mut session = self.registry.session(from.clone(), insecure, credentials.clone());
        let expected_top = match &named.target {
            Target::Digest(d) => Some(d.clone()),
            Target::Tag(_) => None,
        };
        let top = session.manifest(from.target_str(), expected_top.as_ref()).await?;
        let bad = |detail: String| ImageError::BadImage { reference: named.to_string(), detail };
        let (manifest, manifest_fetched) = match manifest::decode(&top.content_type, &top.bytes).map_err(bad)? {
            Document::Manifest(m) => (m, top.clone()),
            Document::Index(index) => {
                let (arch, variant) = manifest::host_platform();
                let chosen = manifest::pick(&index, arch, variant).map_err(bad)?.digest.clone();
                let fetched = session.manifest(chosen.as_str(), Some(&chosen)).await?;
                match manifest::decode(&fetched.content_type, &fetched.bytes).map_err(bad)? {
                    Document::Manifest(m) => (m, fetched),
                    Document::Index(_) => return Err(bad("an image index points to another index".into())),
                }
            }
        };
        if manifest.config.size as usize > MAX_CONFIG_BYTES {
            return Err(bad(format!(
                "the image config is {} bytes, more than {MAX_CONFIG_BYTES}",
                manifest.config.size
            )));
        }
        let config_bytes = read_blob(&mut session, &manifest.config.digest, manifest.config.size).await?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| bad(format!("the image config is invalid: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(bad(format!(
                "the manifest has {} layers but the config lists {} diff IDs",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let layers: Vec<LayerRecord> = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(l, diff_id)| LayerRecord {
                diff_id: diff_id.clone(),
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
            })
            .collect();
        let chains = chain_ids(layers.iter().map(|l| &l.diff_id));
        let _in_flight = self.store.mark_layers(&chains);
        layers::fetch_layers(&self.store.snapshots, &session, &layers, &chains, &self.layers_unpacked).await?;

        // Small blobs, then make everything durable, then the record: the image becomes
        // visible only now, whole.
        let id = manifest.config.digest.clone();
        let layout = self.store.layout.clone();
        let blobs = vec![
            (id.clone(), config_bytes),
            (manifest_fetched.digest.clone(), manifest_fetched.bytes.clone()),
            (top.digest.clone(), top.bytes.clone()),
        ];
        let blob_digests: Vec<Digest> = blobs.iter().map(|(d, _)| d.clone()).collect();
        let _blobs_in_flight = self.store.mark_blobs(&blob_digests);
        tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
            for (digest, bytes) in &blobs {
                layout.put_blob(digest, bytes)?;
            }
            let base = std::fs::File::open(&layout.base).map_err(|source| PersistError::Io {
                what: "open",
                path: layout.base.clone(),
                source,
            })?;
            rustix::fs::syncfs(&base).map_err(|e| PersistError::Io {
                what: "syncfs",
                path: layout.base.clone(),
                source: e.into(),
            })?;
            Ok(())
        })
        .await
        .map_err(|e| bad(format!("storing blobs failed: {e}")))??;
        let size = manifest.config.size + layers.iter().map(|l| l.size).sum::<u64>();
        let record = ImageRecord {
            id: id.clone(),
            repo_tags: match &named.target {
                Target::Tag(_) => vec![named.to_string()],
                Target::Digest(_) => vec![],
            },
            repo_digests: vec![format!("{}@{}", named.name(), top.digest)],
            manifest: manifest_fetched.digest.clone(),
            config,
            layers,
            size,
            pulled_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        };
        let store = self.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.commit_image(record))
            .await
            .map_err(|e| bad(format!("committing the image failed: {e}")))?
            .map_err(|e| match e {
                ImageError::NotFound(_) => ImageError::NotFound(named.to_string()),
                other => other,
            })?;
        tracing::info!(image = %named, id = %id, from = %from, elapsed_ms = started.elapsed().as_millis() as u64, "pulled");
        Ok(stored)
    }
}

/// Removes a finished pull from the shared ones, when its task ends (or panics).
struct PullDone {
    puller: Arc<Puller>,
    key: String,
    id: u64,
}

impl Drop for PullDone {
    fn drop(&mut self) {
        let mut pulls = lock(&self.puller.pulls);
        if pulls.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            pulls.remove(&self.key);
        }
    }
}

/// A small blob (a config), read whole and verified.
async fn read_blob(session: &mut Session<'_>, digest: &Digest, size: u64) -> Result<Vec<u8>, ImageError> {
    use sha2::Digest as _;
    let mut blob = session.blob(digest).await?;
    let mut bytes = Vec::with_capacity(size as usize);
    while let Some(chunk) = blob.chunk().await? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > size {
            break;
        }
    }
    let actual = Digest::from_sha256(&sha2::Sha256::digest(&bytes));
    if &actual != digest {
        return Err(ImageError::BadImage {
            reference: session.reference().to_string(),
            detail: format!("config blob digest mismatch: expected {digest}, got {actual}"),
        });
    }
    Ok(bytes)
}
