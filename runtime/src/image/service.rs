//! The ImageService core: pull (short-name resolution, mirrors, platform pick, layers streamed
//! from the registry straight into snapshots, several at once, concurrent pulls of one image
//! collapsed into one), lookups by ID, tag or digest, removal with garbage collection, usage
//! for ImageFsInfo, and container holds on layers. Touches `<root>/images` and the network.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::StreamExt;

use super::reference::{self, Digest, Reference, ReferenceError, Target};
use super::registries_conf::{self, RegistriesConf, RegistriesConfError};
use super::registry::auth::Credentials;
use super::registry::manifest::{self, Document, ImageConfig};
use super::registry::{Registry, RegistryError, Session};
use super::snapshot::{Expected, SnapshotError, Snapshots, Unpacked};
use super::store::records::{chain_ids, Hold, ImageRecord, LayerRecord, Records};
use super::store::{BlobError, Layout};
use super::unpack::Usage;
use crate::config::Config;
use crate::persist::{PersistError, RecordDir};

/// Layers downloaded and unpacked at once per pull.
const PARALLEL_LAYERS: usize = 3;
/// Chunks buffered between a download and its unpacker (each up to a few tens of KiB).
const CHANNEL_CHUNKS: usize = 8;
/// Image configs above this size are refused.
const MAX_CONFIG_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("auth: {0}")]
    Auth(String),
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error(transparent)]
    Blocked(#[from] registries_conf::Unusable),
    #[error(transparent)]
    RegistriesConf(#[from] RegistriesConfError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{reference}: {detail}")]
    BadImage { reference: String, detail: String },
    #[error(transparent)]
    Layer(#[from] SnapshotError),
    #[error("image store: {0}")]
    Store(#[from] PersistError),
    #[error("{0}")]
    Several(String, Box<ImageError>),
    #[error("holder {0:?} is not a valid container ID")]
    InvalidHolder(String),
}

impl ImageError {
    fn is_not_found(&self) -> bool {
        matches!(self, ImageError::NotFound(_) | ImageError::Registry(RegistryError::NotFound { .. }))
    }
    /// The error that decides the gRPC code.
    pub fn root(&self) -> &ImageError {
        match self {
            ImageError::Several(_, inner) => inner.root(),
            other => other,
        }
    }
}

impl From<BlobError> for ImageError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Io(p) => ImageError::Store(p),
            mismatch => ImageError::BadImage { reference: "blob".into(), detail: mismatch.to_string() },
        }
    }
}

type PullResult = Result<ImageRecord, Arc<ImageError>>;
/// A pull in progress, shared by its callers, with the id its task removes it by.
type RunningPull = (u64, Shared<BoxFuture<'static, PullResult>>);

/// The images of one lockstepd.
pub struct ImageService {
    layout: Layout,
    snapshots: Snapshots,
    registry: Registry,
    registries_conf: PathBuf,
    containers_dir: PathBuf,
    records: RwLock<Records>,
    /// Held while records change and unused layers are collected.
    commit: tokio::sync::Mutex<()>,
    /// Pulls in progress by what they pull, each with the id its task removes it by.
    pulls: Mutex<HashMap<String, RunningPull>>,
    pull_ids: AtomicU64,
    layers_in_flight: Mutex<HashMap<Digest, usize>>,
    /// Blobs written by pulls not yet committed: garbage collection leaves them be.
    blobs_in_flight: Mutex<HashMap<Digest, usize>>,
    layers_unpacked: AtomicU64,
}

/// What ImageFsInfo reports.
#[derive(Debug, Clone)]
pub struct FsUsage {
    pub images: Filesystem,
    pub containers: Filesystem,
}

#[derive(Debug, Clone)]
pub struct Filesystem {
    /// A directory on the filesystem (what the kubelet stats).
    pub mountpoint: PathBuf,
    pub usage: Usage,
}

/// An image as a container uses it: its record and its layers' directories, lowest first.
#[derive(Debug, Clone)]
pub struct HeldImage {
    pub record: ImageRecord,
    /// Snapshot directories, lowest layer first (overlayfs wants the reverse, top first, in
    /// `lowerdir=`).
    pub layer_dirs: Vec<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ImageService {
    /// Opens the store under `config.root`: removes what an interrupted pull left, loads the
    /// records (dropping any whose layers are missing), and removes snapshots and blobs that
    /// no image or container needs.
    pub fn open(config: &Config) -> Result<ImageService, PersistError> {
        let layout = Layout::new(&config.root);
        layout.prepare()?;
        let records = Records::load(RecordDir::new(layout.records()), RecordDir::new(layout.holds()))?;
        let containers_dir = config.container_layers_dir();
        crate::persist::restrict_dir(&containers_dir, 0o700)?;
        let certs_dir = if config.image.certs_dir.as_os_str().is_empty() {
            PathBuf::from("/etc/containers/certs.d")
        } else {
            config.image.certs_dir.clone()
        };
        let service = ImageService {
            snapshots: Snapshots::with_limits(
                layout.clone(),
                crate::image::unpack::Limits {
                    max_bytes: config.image.max_layer_bytes,
                    max_entries: config.image.max_layer_entries,
                },
            ),
            registry: Registry::new(certs_dir, config.pull_progress_timeout()),
            registries_conf: registries_conf::config_path(&config.image.registries_conf),
            containers_dir,
            layout,
            records: RwLock::new(records),
            commit: tokio::sync::Mutex::new(()),
            pulls: Mutex::default(),
            pull_ids: AtomicU64::new(0),
            layers_in_flight: Mutex::default(),
            blobs_in_flight: Mutex::default(),
            layers_unpacked: AtomicU64::new(0),
        };
        service.drop_records_without_layers()?;
        service.collect_garbage();
        Ok(service)
    }

    /// A record is written only after its layers, so one whose snapshots are missing was
    /// damaged from outside or written by a version that named snapshots by diff ID: it goes,
    /// and the kubelet pulls the image again.
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

    fn records(&self) -> std::sync::RwLockReadGuard<'_, Records> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn records_mut(&self) -> std::sync::RwLockWriteGuard<'_, Records> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }

    /// How many layers this service has unpacked since it started (shared layers count once).
    pub fn layers_unpacked(&self) -> u64 {
        self.layers_unpacked.load(Ordering::Relaxed)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn search_conf(&self) -> Result<RegistriesConf, ImageError> {
        Ok(RegistriesConf::load(&self.registries_conf)?)
    }

    /// Every image.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.records().all().cloned().collect()
    }

    /// The image that `image` names: an ID (with or without `sha256:`), or a reference by tag
    /// or digest (short names resolved as a pull would resolve them). None when absent.
    pub fn resolve(&self, image: &str) -> Result<Option<ImageRecord>, ImageError> {
        if let Some(id) = reference::parse_image_id(image) {
            return Ok(self.records().get(&id).cloned());
        }
        let parsed = reference::parse(image)?;
        let candidates = if parsed.qualified {
            vec![parsed.reference.clone()]
        } else {
            self.search_conf()?.search_registries().iter().map(|r| parsed.on_registry(r)).collect()
        };
        let records = self.records();
        Ok(candidates.iter().find_map(|c| records.by_name(&c.to_string())).cloned())
    }

    /// The raw config of an image, for verbose ImageStatus.
    pub fn config_bytes(&self, record: &ImageRecord) -> Option<Vec<u8>> {
        self.layout.get_blob(&record.id).ok()
    }

    /// Pulls `image`; two pulls of the same image with the same credentials share one.
    pub async fn pull(self: &Arc<Self>, image: &str, credentials: Credentials) -> Result<ImageRecord, Arc<ImageError>> {
        let parsed = reference::parse(image).map_err(|e| Arc::new(e.into()))?;
        let candidates = if parsed.qualified {
            vec![parsed.reference.clone()]
        } else {
            self.search_conf().map_err(Arc::new)?.search_registries().iter().map(|r| parsed.on_registry(r)).collect()
        };
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
                    let done = PullDone { service: self.clone(), key: key.clone(), id };
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
        let sources = self.search_conf()?.sources(named)?;
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
                let _commit = self.commit.lock().await;
                self.collect_garbage_off_thread().await;
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
        let _in_flight = InFlight::new(&self.layers_in_flight, &chains);
        self.fetch_layers(&session, &layers, &chains).await?;

        // Small blobs, then make everything durable, then the record: the image becomes
        // visible only now, whole.
        let id = manifest.config.digest.clone();
        let layout = self.layout.clone();
        let blobs = vec![
            (id.clone(), config_bytes),
            (manifest_fetched.digest.clone(), manifest_fetched.bytes.clone()),
            (top.digest.clone(), top.bytes.clone()),
        ];
        let blob_digests: Vec<Digest> = blobs.iter().map(|(d, _)| d.clone()).collect();
        let _blobs_in_flight = InFlight::new(&self.blobs_in_flight, &blob_digests);
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
        let _commit = self.commit.lock().await;
        let orphaned = self.records_mut().commit(record)?;
        if !orphaned.is_empty() {
            self.collect_garbage_off_thread().await;
        }
        let stored = self.records().get(&id).cloned().ok_or_else(|| ImageError::NotFound(named.to_string()))?;
        tracing::info!(image = %named, id = %id, from = %from, elapsed_ms = started.elapsed().as_millis() as u64, "pulled");
        Ok(stored)
    }

    /// Downloads and unpacks the layers that have no snapshot yet, several at once, then
    /// commits them lowest first, each on top of the snapshots below it.
    async fn fetch_layers(
        &self,
        session: &Session<'_>,
        layers: &[LayerRecord],
        chains: &[Digest],
    ) -> Result<(), ImageError> {
        let cancel = AtomicBool::new(false);
        let missing: Vec<usize> = (0..layers.len()).filter(|&i| !self.snapshots.exists(&chains[i])).collect();
        let mut jobs = Vec::new();
        for i in missing {
            let cancel = &cancel;
            let layer = &layers[i];
            jobs.push(async move {
                let result = self.fetch_layer(session, layer, cancel).await;
                if result.is_err() {
                    cancel.store(true, Ordering::Relaxed);
                }
                result.map(|unpacked| (i, unpacked))
            });
        }
        let results: Vec<Result<(usize, Unpacked), ImageError>> =
            futures::stream::iter(jobs).buffer_unordered(PARALLEL_LAYERS).collect().await;
        let mut unpacked: Vec<Option<Unpacked>> = (0..layers.len()).map(|_| None).collect();
        let mut errors = Vec::new();
        for result in results {
            match result {
                Ok((i, u)) => unpacked[i] = Some(u),
                Err(e) => errors.push(e),
            }
        }
        // The first real failure, not the cancellations it caused (what was unpacked goes).
        if let Some(i) =
            errors.iter().position(|e| !matches!(e, ImageError::BadImage { detail, .. } if detail == CANCELLED))
        {
            return Err(errors.swap_remove(i));
        }
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        let snapshots = self.snapshots.clone();
        let chains = chains.to_vec();
        let (committed, result) = tokio::task::spawn_blocking(move || -> (u64, Result<(), SnapshotError>) {
            let mut committed = 0;
            for (i, layer) in unpacked.into_iter().enumerate() {
                let Some(layer) = layer else { continue };
                let lowers: Vec<PathBuf> = chains[..i].iter().map(|c| snapshots.fs_dir(c)).collect();
                if let Err(e) = snapshots.commit(layer, &chains[i], &lowers) {
                    return (committed, Err(e));
                }
                committed += 1;
            }
            (committed, Ok(()))
        })
        .await
        .map_err(|e| ImageError::BadImage { reference: "layers".into(), detail: format!("committing failed: {e}") })?;
        self.layers_unpacked.fetch_add(committed, Ordering::Relaxed);
        Ok(result?)
    }

    async fn fetch_layer(
        &self,
        session: &Session<'_>,
        layer: &LayerRecord,
        cancel: &AtomicBool,
    ) -> Result<Unpacked, ImageError> {
        let mut session = session.fork();
        let mut blob = session.blob(&layer.digest).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
        let snapshots = self.snapshots.clone();
        let expected = Expected { digest: layer.digest.clone(), size: layer.size, diff_id: layer.diff_id.clone() };
        let unpacker = tokio::task::spawn_blocking(move || {
            snapshots.unpack(&expected, ChannelReader { rx, current: bytes::Bytes::new(), pos: 0, ended: false })
        });
        let mut received: u64 = 0;
        let download: Result<(), ImageError> = async {
            loop {
                if cancel.load(Ordering::Relaxed) {
                    let _ = tx.send(Chunk::Failed(CANCELLED.into())).await;
                    return Err(ImageError::BadImage { reference: layer.digest.to_string(), detail: CANCELLED.into() });
                }
                match blob.chunk().await {
                    Ok(Some(bytes)) => {
                        received += bytes.len() as u64;
                        if received > layer.size {
                            let detail = format!(
                                "the registry sent more than the {} bytes the manifest gives for layer {}",
                                layer.size, layer.digest
                            );
                            let _ = tx.send(Chunk::Failed(detail.clone())).await;
                            return Err(ImageError::BadImage { reference: layer.digest.to_string(), detail });
                        }
                        if tx.send(Chunk::Data(bytes)).await.is_err() {
                            return Ok(()); // the unpacker stopped: its error tells why
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Chunk::End).await;
                        return Ok(());
                    }
                    Err(e) => {
                        let _ = tx.send(Chunk::Failed(e.to_string())).await;
                        return Err(e.into());
                    }
                }
            }
        }
        .await;
        drop(tx);
        let unpacked = unpacker.await.map_err(|e| ImageError::BadImage {
            reference: layer.digest.to_string(),
            detail: format!("the unpacker failed: {e}"),
        })?;
        download?;
        Ok(unpacked?)
    }

    /// Removes an image (all its tags and digests); absent is fine. Returns whether one was removed.
    pub async fn remove(self: &Arc<Self>, image: &str) -> Result<bool, ImageError> {
        let Some(record) = self.resolve(image)? else { return Ok(false) };
        let _commit = self.commit.lock().await;
        self.records_mut().remove(&record.id)?;
        self.collect_garbage_off_thread().await;
        tracing::info!(image, id = %record.id, "removed image");
        Ok(true)
    }

    /// Garbage collection on a blocking thread: deleting a large layer takes a while.
    async fn collect_garbage_off_thread(self: &Arc<Self>) {
        let this = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || this.collect_garbage()).await {
            tracing::warn!(error = %e, "garbage collection failed; it runs again at the next start");
        }
    }

    /// Removes snapshots and blobs that no image, container hold or running pull needs.
    fn collect_garbage(&self) {
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
            super::snapshot::delete(detached);
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

    /// Usage of the image store (snapshots and blobs) and of the containers' writable layers,
    /// each with the directory that names its filesystem. Containers whose layers sit on the
    /// image store's filesystem get the same directory: the kubelet takes two different ones
    /// for a split disk (KubeletSeparateDiskGC) and stats each (cadvisor), so both must exist.
    pub fn usage(&self) -> FsUsage {
        let mut images = Usage::default();
        for chain in self.snapshots.list() {
            let u = self.snapshots.usage(&chain);
            images.bytes += u.bytes;
            images.inodes += u.inodes;
        }
        if let Ok(entries) = std::fs::read_dir(self.layout.blobs()) {
            for e in entries.flatten() {
                images.inodes += 1;
                images.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        let containers = super::unpack::measure(&self.containers_dir);
        let device = |p: &Path| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::dev(&m)).ok();
        let same_filesystem = device(&self.layout.base).is_some_and(|d| device(&self.containers_dir) == Some(d));
        let containers_mountpoint =
            if same_filesystem { self.layout.base.clone() } else { self.containers_dir.clone() };
        FsUsage {
            images: Filesystem { mountpoint: self.layout.base.clone(), usage: images },
            containers: Filesystem { mountpoint: containers_mountpoint, usage: containers },
        }
    }

    /// For containers (issue 5): resolves `image` and records that `holder` (a container ID)
    /// uses its layers, crash-safely. RemoveImage may then remove the image record, but the
    /// layers stay until `release(holder)`. Holding again replaces the previous hold.
    pub async fn hold(&self, holder: &str, image: &str) -> Result<HeldImage, ImageError> {
        if !crate::ids::is_safe_id(holder) {
            return Err(ImageError::InvalidHolder(holder.to_string()));
        }
        let _commit = self.commit.lock().await;
        let record = self.resolve(image)?.ok_or_else(|| ImageError::NotFound(image.to_string()))?;
        let layers = record.chain_ids();
        self.records_mut().hold(holder, Hold { image: record.id.clone(), layers })?;
        let layer_dirs = self.layer_dirs(&record);
        Ok(HeldImage { record, layer_dirs })
    }

    /// Ends a container's hold; layers no image needs any more are removed. Idempotent.
    pub async fn release(self: &Arc<Self>, holder: &str) -> Result<(), ImageError> {
        if !crate::ids::is_safe_id(holder) {
            return Ok(());
        }
        let _commit = self.commit.lock().await;
        self.records_mut().release(holder)?;
        self.collect_garbage_off_thread().await;
        Ok(())
    }

    /// The snapshot directories of an image's layers, lowest first.
    pub fn layer_dirs(&self, record: &ImageRecord) -> Vec<PathBuf> {
        record.chain_ids().iter().map(|c| self.snapshots.fs_dir(c)).collect()
    }

    pub fn store_dir(&self) -> &Path {
        &self.layout.base
    }
}

const CANCELLED: &str = "cancelled because another layer failed";

/// Removes a finished pull from the shared ones, when its task ends (or panics).
struct PullDone {
    service: Arc<ImageService>,
    key: String,
    id: u64,
}

impl Drop for PullDone {
    fn drop(&mut self) {
        let mut pulls = lock(&self.service.pulls);
        if pulls.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            pulls.remove(&self.key);
        }
    }
}

/// Marks layers or blobs as needed by a running pull, so garbage collection leaves them be.
struct InFlight<'a> {
    map: &'a Mutex<HashMap<Digest, usize>>,
    layers: Vec<Digest>,
}

impl<'a> InFlight<'a> {
    fn new(map: &'a Mutex<HashMap<Digest, usize>>, layers: &[Digest]) -> Self {
        let mut m = lock(map);
        for l in layers {
            *m.entry(l.clone()).or_default() += 1;
        }
        InFlight { map, layers: layers.to_vec() }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = lock(self.map);
        for l in &self.layers {
            if let Some(n) = m.get_mut(l) {
                *n -= 1;
                if *n == 0 {
                    m.remove(l);
                }
            }
        }
    }
}

/// What a download hands to its unpacker.
enum Chunk {
    Data(bytes::Bytes),
    End,
    Failed(String),
}

/// The blocking side of a download: bytes arrive through a channel.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    current: bytes::Bytes,
    pos: usize,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(bytes)) => {
                    self.current = bytes;
                    self.pos = 0;
                }
                Some(Chunk::End) => {
                    self.ended = true;
                    return Ok(0);
                }
                Some(Chunk::Failed(why)) => return Err(std::io::Error::other(format!("download failed: {why}"))),
                None => return Err(std::io::Error::other("download interrupted")),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open(root: &Path) -> ImageService {
        let mut config = Config { root: root.to_path_buf(), runroot: root.join("run"), ..Default::default() };
        config.image.registries_conf = root.join("none.conf");
        ImageService::open(&config).unwrap()
    }

    /// The kubelet stats each mountpoint (cadvisor) and treats two filesystems as a split
    /// disk: on one filesystem both entries name the same existing directory.
    #[test]
    fn one_filesystem_is_reported_once_for_images_and_containers() {
        let tmp = tempfile::tempdir().unwrap();
        let service = open(tmp.path());
        let usage = service.usage();
        assert!(usage.images.mountpoint.is_dir() && usage.containers.mountpoint.is_dir());
        assert_eq!(usage.images.mountpoint, usage.containers.mountpoint);
        assert!(tmp.path().join("containers").is_dir(), "the container layers' directory exists");
    }

    /// A separate disk mounted for the containers' writable layers is reported as such.
    #[test]
    fn a_separate_container_filesystem_is_reported_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let containers = tmp.path().join("containers");
        std::fs::create_dir_all(&containers).unwrap();
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        nix::mount::mount(Some("tmpfs"), &containers, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=1m"))
            .unwrap();
        let _unmount = Unmount(&containers);
        std::fs::write(containers.join("layer"), b"12345").unwrap();
        let usage = open(tmp.path()).usage();
        assert_eq!(usage.containers.mountpoint, containers);
        assert_ne!(usage.images.mountpoint, usage.containers.mountpoint);
        assert_eq!(usage.containers.usage.bytes, 5);
    }
}
