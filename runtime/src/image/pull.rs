//! Pulls: concurrent pulls of one image (same credentials) collapsed into one task, cancelled
//! when every caller has gone or at the overall deadline; short names tried on each search
//! registry, each reference's mirrors before its location, the platform's manifest picked
//! from an index after the signature policy accepted the image (`policy/`), layers fetched (`pull/layers.rs`), then the image committed whole. Touches
//! the network and the store.

mod layers;
mod shared_layers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio_util::sync::CancellationToken;

use super::error::ImageError;
use super::policy::{self, Policy};
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

/// A pull in progress, shared by its callers.
struct RunningPull {
    /// What its task and its callers remove it by (a later pull of the same key has another).
    id: u64,
    shared: Shared<BoxFuture<'static, PullResult>>,
    /// Callers waiting for it; when the last one goes, the pull is cancelled.
    waiters: usize,
    stop: Stop,
}

/// Why a pull stops before its end.
#[derive(Debug, Clone, Copy)]
enum StopReason {
    /// Every caller gave up (the kubelet cancelled PullImage, or its pod went).
    Abandoned,
    /// `image.pull_timeout_secs` passed.
    Deadline(Duration),
}

/// Stops a pull from outside: its downloads watch the token and end at once, leaving nothing.
#[derive(Debug, Clone)]
pub(super) struct Stop {
    token: CancellationToken,
    why: Arc<OnceLock<StopReason>>,
    image: Arc<str>,
}

impl Stop {
    fn new(image: &str) -> Stop {
        Stop { token: CancellationToken::new(), why: Arc::default(), image: image.into() }
    }

    fn stop(&self, why: StopReason) {
        let _ = self.why.set(why);
        self.token.cancel();
    }

    /// The error a stopped pull ends with.
    pub(super) fn error(&self) -> ImageError {
        match self.why.get() {
            Some(StopReason::Deadline(after)) => ImageError::Deadline { image: self.image.to_string(), after: *after },
            _ => ImageError::Abandoned(self.image.to_string()),
        }
    }

    /// Resolves when the pull is stopped.
    pub(super) async fn stopped(&self) {
        self.token.cancelled().await
    }

    /// `work`, unless the pull is stopped first.
    pub(super) async fn unless_stopped<T, E: Into<ImageError>>(
        &self,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, ImageError> {
        tokio::select! {
            biased;
            _ = self.token.cancelled() => Err(self.error()),
            done = work => done.map_err(Into::into),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The references a name may be pulled from: itself if qualified, else as registries.conf (at
/// `conf`) resolves a short name (aliases, search registries, short-name-mode).
pub(super) fn candidates(conf: &Path, parsed: &Parsed) -> Result<Vec<Reference>, ImageError> {
    if parsed.qualified {
        return Ok(vec![parsed.reference.clone()]);
    }
    Ok(RegistriesConf::load(conf)?.pull_candidates(parsed)?)
}

/// The references a name may stand for among stored images: itself if qualified, else its
/// alias and one per search registry.
pub(super) fn local_candidates(conf: &Path, parsed: &Parsed) -> Result<Vec<Reference>, ImageError> {
    if parsed.qualified {
        return Ok(vec![parsed.reference.clone()]);
    }
    Ok(RegistriesConf::load(conf)?.local_candidates(parsed))
}

/// The pulling side of the image service.
pub struct Puller {
    store: Arc<Store>,
    registry: Registry,
    registries_conf: PathBuf,
    /// `image.signature_policy` as configured (read at each pull, as registries_conf is).
    signature_policy: PathBuf,
    /// `image.registries_d`: where simple signatures are looked for (read when needed).
    registries_d: PathBuf,
    /// Pulls in progress by what they pull, each with the id its task removes it by.
    pulls: Mutex<HashMap<String, RunningPull>>,
    pull_ids: AtomicU64,
    layers_unpacked: AtomicU64,
    /// Layers some pull is fetching, which other pulls wait for instead of fetching again.
    layers_in_flight: Arc<shared_layers::LayersInFlight>,
    /// The overall deadline of one pull.
    pull_timeout: Option<Duration>,
}

impl Puller {
    pub fn new(
        store: Arc<Store>,
        registry: Registry,
        registries_conf: PathBuf,
        signature_policy: PathBuf,
        registries_d: PathBuf,
        pull_timeout: Option<Duration>,
    ) -> Puller {
        Puller {
            store,
            registry,
            registries_conf,
            signature_policy,
            registries_d,
            pulls: Mutex::default(),
            pull_ids: AtomicU64::new(0),
            layers_unpacked: AtomicU64::new(0),
            layers_in_flight: Arc::default(),
            pull_timeout,
        }
    }

    /// How many layers were unpacked since the start (shared layers count once).
    pub fn layers_unpacked(&self) -> u64 {
        self.layers_unpacked.load(Ordering::Relaxed)
    }

    /// Pulls `image`; two pulls of the same image with the same credentials share one, which
    /// is cancelled when every caller has gone (dropped the future).
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
        let (id, shared) = {
            let mut pulls = lock(&self.pulls);
            let running = match pulls.entry(key.clone()) {
                std::collections::hash_map::Entry::Occupied(found) => found.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let id = self.pull_ids.fetch_add(1, Ordering::Relaxed);
                    let this = self.clone();
                    let name = image.to_string();
                    let stop = Stop::new(image);
                    let task_stop = stop.clone();
                    let done = PullDone { puller: self.clone(), key: key.clone(), id };
                    // A task of its own: a kubelet that gives up does not cancel the others' pull.
                    // The task itself ends the sharing when it ends (however it ends), so a call
                    // that comes after it pulls afresh.
                    let task = tokio::spawn(async move {
                        let _done = done;
                        let stop = task_stop;
                        let work = this.pull_candidates(&name, candidates, credentials, &stop);
                        tokio::pin!(work);
                        let result = match this.pull_timeout {
                            None => work.await,
                            Some(after) => tokio::select! {
                                done = &mut work => done,
                                _ = tokio::time::sleep(after) => {
                                    // Stopped, not dropped: the pull ends through its own
                                    // failure path, which leaves nothing behind.
                                    stop.stop(StopReason::Deadline(after));
                                    work.await
                                }
                            },
                        };
                        result.map_err(Arc::new)
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
                    slot.insert(RunningPull { id, shared: future.shared(), waiters: 0, stop })
                }
            };
            running.waiters += 1;
            (running.id, running.shared.clone())
        };
        let _waiter = Waiter { puller: self, key, id };
        shared.await
    }

    async fn pull_candidates(
        self: &Arc<Self>,
        image: &str,
        candidates: Vec<Reference>,
        credentials: Credentials,
        stop: &Stop,
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
            match self.pull_reference(candidate, &credentials, stop).await {
                Ok(record) => return Ok(record),
                Err(e) if e.is_stop() => return Err(e),
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
        stop: &Stop,
    ) -> Result<ImageRecord, ImageError> {
        let sources = RegistriesConf::load(&self.registries_conf)?.sources(named)?;
        let mut last = None;
        for source in sources {
            let mirror = source.mirror;
            let credentials = credentials.for_registry(&named.registry, &source.reference.registry);
            let committed_before = self.layers_unpacked();
            let pulled = self.pull_from(named, source.reference.clone(), source.insecure, &credentials, stop).await;
            if pulled.is_err() && self.layers_unpacked() != committed_before {
                // Lower layers committed before a later one failed: nothing of a failed pull stays.
                // Under the commit lock, as every collection: a pull committing meanwhile would
                // otherwise lose the blobs it wrote between the listing and the sweep.
                self.collect_garbage().await;
            }
            match pulled {
                Ok(r) => return Ok(r),
                Err(e) if mirror && !e.is_stop() => {
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
        stop: &Stop,
    ) -> Result<ImageRecord, ImageError> {
        let started = std::time::Instant::now();
        let mut session = self.registry.session(from.clone(), insecure, credentials.clone());
        let expected_top = match &named.target {
            Target::Digest(d) => Some(d.clone()),
            Target::Tag(_) => None,
        };
        let top = stop.unless_stopped(session.manifest(from.target_str(), expected_top.as_ref())).await?;
        // Before anything of the image is fetched: a refused image leaves nothing behind. The
        // policy speaks of the name asked for; its signatures come from where the image does.
        if let Some(policy) = Policy::configured(&self.signature_policy)? {
            let check = policy::check::enforce(&policy, &self.registries_d, named, &top.digest, &mut session);
            stop.unless_stopped(check).await?;
        }
        let bad = |detail: String| ImageError::BadImage { reference: named.to_string(), detail };
        let (manifest, manifest_fetched) = match manifest::decode(&top.content_type, &top.bytes).map_err(bad)? {
            Document::Manifest(m) => (m, top.clone()),
            Document::Index(index) => {
                let (arch, variant) = manifest::host_platform();
                let chosen = manifest::pick(&index, arch, variant).map_err(bad)?.digest.clone();
                let fetched = stop.unless_stopped(session.manifest(chosen.as_str(), Some(&chosen))).await?;
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
        let config_bytes =
            stop.unless_stopped(read_blob(&mut session, &manifest.config.digest, manifest.config.size)).await?;
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
        layers::fetch_layers(
            &self.store.snapshots,
            &session,
            &layers,
            &chains,
            &self.layers_in_flight,
            &self.layers_unpacked,
            stop,
        )
        .await?;

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
        if pulls.get(&self.key).is_some_and(|running| running.id == self.id) {
            pulls.remove(&self.key);
        }
    }
}

/// A caller of a shared pull: the last one to go, before the pull ends, cancels it.
struct Waiter<'a> {
    puller: &'a Puller,
    key: String,
    id: u64,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut pulls = lock(&self.puller.pulls);
        let Some(running) = pulls.get_mut(&self.key).filter(|r| r.id == self.id) else { return };
        running.waiters -= 1;
        if running.waiters == 0 {
            // Out of the shared ones at once: a caller that comes now pulls afresh rather
            // than joining a pull that is ending.
            running.stop.stop(StopReason::Abandoned);
            pulls.remove(&self.key);
            tracing::info!(key = %self.key, "every caller of a pull gave up: the pull is cancelled");
        }
    }
}

/// A small blob (a config, a signed payload), read whole and verified.
pub(super) async fn read_blob(session: &mut Session<'_>, digest: &Digest, size: u64) -> Result<Vec<u8>, ImageError> {
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
    //! Pulls from a registry on loopback that answers as a test says (`registry/test_server.rs`):
    //! a layer trickled a few bytes at a time, a pull past its deadline, a pull nobody waits for.

    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;
    use crate::config::Config;
    use crate::image::registry::test_server::{serve, Answer, Body};
    use crate::image::registry::RegistryError;
    use crate::image::service::ImageService;

    /// How long a test waits for what must happen before it calls it a failure (never a
    /// measure of speed: every wait ends as soon as the awaited event happens).
    const FAILURE_AFTER: Duration = Duration::from_secs(20);

    fn sha256(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_sha256(&sha2::Sha256::digest(bytes))
    }

    /// A one-layer image (an uncompressed tar holding one file of `size` bytes) served from
    /// 127.0.0.1, the layer `piece` bytes at a time with `every` before each. Returns the
    /// image's reference, and two signals: the layer's download began, the client hung up.
    fn trickling_registry(
        size: usize,
        piece: usize,
        every: Duration,
    ) -> (String, mpsc::Receiver<()>, mpsc::Receiver<()>) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(size as u64);
        header.set_mode(0o644);
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        tar.append_data(&mut header, "data", &data[..]).unwrap();
        let layer = tar.into_inner().unwrap();
        let layer_digest = sha256(&layer);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
        )
        .into_bytes();
        let config_digest = sha256(&config);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        )
        .into_bytes();
        let (started_tx, started) = mpsc::channel();
        let (hung_up_tx, hung_up) = mpsc::channel();
        let (started_tx, hung_up_tx) = (Mutex::new(started_tx), Mutex::new(hung_up_tx));
        let ok = |content_type: &str, len: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )
        };
        let port = serve(move |path, _| {
            if path.ends_with("/manifests/1") {
                let head = ok("application/vnd.oci.image.manifest.v1+json", manifest.len());
                Answer { head, body: Body::Bytes(manifest.clone()) }
            } else if path.ends_with(&format!("/blobs/{config_digest}")) {
                Answer { head: ok("application/octet-stream", config.len()), body: Body::Bytes(config.clone()) }
            } else if path.ends_with(&format!("/blobs/{layer_digest}")) {
                let _ = lock(&started_tx).send(());
                let hung_up = lock(&hung_up_tx).clone();
                let body = Body::Trickle { bytes: layer.clone(), piece, every, hung_up };
                Answer { head: ok("application/octet-stream", layer.len()), body }
            } else if path == "/v2/" {
                Answer::status("200 OK")
            } else {
                Answer::status("404 Not Found")
            }
        });
        (format!("127.0.0.1:{port}/library/app:1"), started, hung_up)
    }

    fn service(root: &Path, progress_timeout_secs: u64, pull_timeout_secs: u64) -> Arc<ImageService> {
        let mut config = Config { root: root.to_path_buf(), runroot: root.join("run"), ..Default::default() };
        config.image.registries_conf = root.join("none.conf");
        config.image.certs_dir = root.join("certs.d");
        config.image.pull_progress_timeout_secs = progress_timeout_secs;
        config.image.pull_timeout_secs = pull_timeout_secs;
        Arc::new(ImageService::open(&config).unwrap())
    }

    /// Waits (a bounded while) until the store holds no record, snapshot or temporary file.
    async fn assert_store_empties(service: &ImageService) {
        let layout = service.layout().clone();
        let count = |dir: PathBuf| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let deadline = Instant::now() + FAILURE_AFTER;
        loop {
            let left = (count(layout.tmp()), count(layout.snapshots()), service.list().len());
            if left == (0, 0, 0) {
                return;
            }
            assert!(Instant::now() < deadline, "left behind (tmp, snapshots, records): {left:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A registry that sends a byte now and then, never pausing as long as the progress
    /// timeout, is stopped all the same: each progress timeout must bring 64 KiB.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_trickling_registry_hits_the_progress_timeout() {
        let (image, _, _) = trickling_registry(4 << 20, 512, Duration::from_millis(20));
        let tmp = tempfile::tempdir().unwrap();
        let service = service(tmp.path(), 1, 0);
        let pulled = tokio::time::timeout(FAILURE_AFTER, service.pull(&image, Credentials::default())).await;
        let err = pulled.expect("the pull was stopped").unwrap_err();
        assert!(matches!(err.root(), ImageError::Registry(RegistryError::Stalled { .. })), "{err}");
        assert!(err.to_string().contains("less than 65536"), "{err}");
        assert_store_empties(&service).await;
    }

    /// A registry fast enough for the progress timeout, but whose layer would take longer
    /// than `image.pull_timeout_secs`, is cancelled at that deadline.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_pull_past_its_deadline_is_cancelled() {
        let (image, _, hung_up) = trickling_registry(64 << 20, 128 << 10, Duration::from_millis(50));
        let tmp = tempfile::tempdir().unwrap();
        let service = service(tmp.path(), 10, 2);
        let pulled = tokio::time::timeout(FAILURE_AFTER, service.pull(&image, Credentials::default())).await;
        let err = pulled.expect("the pull was stopped").unwrap_err();
        assert!(matches!(err.root(), ImageError::Deadline { .. }), "{err}");
        assert!(err.to_string().contains("pull_timeout_secs"), "{err}");
        tokio::task::spawn_blocking(move || hung_up.recv_timeout(FAILURE_AFTER))
            .await
            .unwrap()
            .expect("the download was dropped");
        assert_store_empties(&service).await;
    }

    /// A pull whose every caller has gone (the kubelet cancelled PullImage) stops
    /// downloading and leaves nothing; a caller that comes after pulls afresh.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_abandoned_pull_is_cancelled() {
        let (image, started, hung_up) = trickling_registry(64 << 20, 128 << 10, Duration::from_millis(50));
        let tmp = tempfile::tempdir().unwrap();
        let service = service(tmp.path(), 10, 0);
        let caller = {
            let (service, image) = (service.clone(), image.clone());
            tokio::spawn(async move { service.pull(&image, Credentials::default()).await })
        };
        let started = tokio::task::spawn_blocking(move || started.recv_timeout(FAILURE_AFTER)).await.unwrap();
        started.expect("the layer's download began");
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        tokio::task::spawn_blocking(move || hung_up.recv_timeout(FAILURE_AFTER))
            .await
            .unwrap()
            .expect("the download was dropped once nobody waited for it");
        assert_store_empties(&service).await;
        assert!(lock(&service.puller().pulls).is_empty(), "no pull is left to join");
    }

    /// registries.conf's short-name-mode and [aliases] (issue 14, item 8): under enforcing, a
    /// short name that two search registries could serve is refused before any registry is
    /// asked; an alias resolves a short name on every mode.
    #[tokio::test(flavor = "multi_thread")]
    async fn enforcing_short_names_are_refused_unless_aliased() {
        let asked = Arc::new(AtomicU64::new(0));
        let search: Vec<u16> = (0..2)
            .map(|_| {
                let asked = asked.clone();
                serve(move |_, _| {
                    asked.fetch_add(1, Ordering::SeqCst);
                    Answer::status("404 Not Found")
                })
            })
            .collect();
        let (aliased, _, _) = trickling_registry(1024, 64 << 10, Duration::ZERO);
        let aliased_repo = aliased.trim_end_matches(":1");
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("none.conf"),
            format!(
                "unqualified-search-registries = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\nshort-name-mode = \"enforcing\"\n\n[aliases]\n\"web\" = \"{aliased_repo}\"\n",
                search[0], search[1]
            ),
        )
        .unwrap();
        let service = service(tmp.path(), 10, 0);
        let err = service.pull("app:1", Credentials::default()).await.unwrap_err();
        assert!(matches!(err.root(), ImageError::Blocked(_)), "{err}");
        assert!(err.to_string().contains("ambiguous"), "{err}");
        let record = service.pull("web:1", Credentials::default()).await.unwrap();
        assert_eq!(record.repo_tags, vec![aliased.clone()]);
        assert_eq!(asked.load(Ordering::SeqCst), 0, "no search registry was asked");
        let found = service.resolve("web:1").unwrap().expect("ImageStatus finds the image by its alias");
        assert_eq!(found.id, record.id);
    }
}
