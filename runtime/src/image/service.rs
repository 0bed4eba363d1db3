//! The ImageService façade: what `server/` and `container/` call. Lookups by ID, tag or
//! digest, and removal, here; pulls in `pull.rs`; records, holds, garbage collection and
//! usage in `store/`. Touches `<root>/images` and the network through those.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::pull::{self, Puller};
use super::reference::{self};
use super::registries_conf;
use super::registry::auth::Credentials;
use super::registry::Registry;
use super::snapshot::Snapshots;
use super::store::records::ImageRecord;
use super::store::{Layout, Lookup, Store};
use crate::config::Config;
use crate::persist::PersistError;
use crate::pin_patterns::PinPattern;

pub use super::error::ImageError;
pub use super::store::{Filesystem, FsUsage, HeldImage};

/// The images of one lockstepd.
pub struct ImageService {
    store: Arc<Store>,
    puller: Arc<Puller>,
    registries_conf: PathBuf,
    pinned: Vec<PinPattern>,
    /// The configured runtime handlers: an ImageSpec may name one (KEP-4216). They all share
    /// this store and the host's platform, so the image is the same for each.
    handlers: Vec<String>,
}

impl ImageService {
    /// Opens the store under `config.root`: removes what an interrupted pull left, loads the
    /// records (dropping any whose layers are missing), and removes snapshots and blobs that
    /// no image or container needs.
    pub fn open(config: &Config) -> Result<ImageService, PersistError> {
        let layout = Layout::new(&config.root);
        let snapshots = Snapshots::with_limits(
            layout.clone(),
            crate::image::unpack::Limits {
                max_bytes: config.image.max_layer_bytes,
                max_entries: config.image.max_layer_entries,
            },
        );
        let store = Arc::new(Store::open(layout, snapshots, config.container_layers_dir())?);
        let certs_dir = if config.image.certs_dir.as_os_str().is_empty() {
            PathBuf::from("/etc/containers/certs.d")
        } else {
            config.image.certs_dir.clone()
        };
        let registries_conf = registries_conf::config_path(&config.image.registries_conf);
        let registry = Registry::new(certs_dir, config.pull_progress_timeout());
        let puller = Arc::new(Puller::new(
            store.clone(),
            registry,
            registries_conf.clone(),
            config.image.signature_policy.clone(),
            config.image.registries_d.clone(),
            config.pull_timeout(),
        ));
        // Checked when the configuration was read; a pattern that fails here pins nothing.
        let pinned = config.image.pinned_images.iter().filter_map(|p| PinPattern::parse(p).ok()).collect();
        let handlers = config.runtime.handlers.iter().map(|h| h.name.clone()).collect();
        Ok(ImageService { store, puller, registries_conf, pinned, handlers })
    }

    /// Whether an ImageSpec's `runtime_handler` names a configured handler (empty: the default).
    pub fn knows_handler(&self, handler: &str) -> bool {
        handler.is_empty() || self.handlers.iter().any(|h| h == handler)
    }

    /// The configured handlers' names.
    pub fn handlers(&self) -> &[String] {
        &self.handlers
    }

    /// Whether `record` is pinned by `image.pinned_images` through one of its tags or digests.
    pub fn is_pinned(&self, record: &ImageRecord) -> bool {
        let names = record.repo_tags.iter().chain(&record.repo_digests).map(String::as_str);
        crate::pin_patterns::pinned(&self.pinned, names)
    }

    /// How many layers this service has unpacked since it started (shared layers count once).
    pub fn layers_unpacked(&self) -> u64 {
        self.puller.layers_unpacked()
    }

    pub fn layout(&self) -> &Layout {
        &self.store.layout
    }

    /// Every image.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.store.records().all().cloned().collect()
    }

    /// What `image` names: an ID (with or without `sha256:`), or a reference by tag or digest
    /// (short names resolved as a pull would resolve them).
    fn lookup(&self, image: &str) -> Result<Lookup, ImageError> {
        if let Some(id) = reference::parse_image_id(image) {
            return Ok(Lookup::Id(id));
        }
        let parsed = reference::parse(image)?;
        let candidates = pull::local_candidates(&self.registries_conf, &parsed)?;
        Ok(Lookup::Names(candidates.iter().map(|c| c.to_string()).collect()))
    }

    /// The image that `image` names (see [`ImageService::lookup`]). None when absent.
    pub fn resolve(&self, image: &str) -> Result<Option<ImageRecord>, ImageError> {
        Ok(self.store.find(&self.lookup(image)?))
    }

    /// The raw config of an image, for verbose ImageStatus.
    pub fn config_bytes(&self, record: &ImageRecord) -> Option<Vec<u8>> {
        self.store.layout.get_blob(&record.id).ok()
    }

    /// Pulls `image`; two pulls of the same image with the same credentials share one.
    pub async fn pull(&self, image: &str, credentials: Credentials) -> Result<ImageRecord, Arc<ImageError>> {
        self.puller.pull(image, credentials).await
    }

    /// Removes an image (all its tags and digests); absent is fine. Returns whether one was removed.
    pub async fn remove(&self, image: &str) -> Result<bool, ImageError> {
        let Some(record) = self.resolve(image)? else { return Ok(false) };
        let store = self.store.clone();
        let id = record.id.clone();
        // On a blocking thread: the commit lock is a blocking one, and deleting a large layer
        // takes a while.
        tokio::task::spawn_blocking(move || store.remove_image(&id)).await.map_err(|e| ImageError::BadImage {
            reference: image.to_string(),
            detail: format!("the removal failed: {e}"),
        })??;
        tracing::info!(image, id = %record.id, "removed image");
        Ok(true)
    }

    /// Usage of the image store and of the containers' writable layers. Blocking.
    pub fn usage(&self) -> FsUsage {
        self.store.usage()
    }

    /// For containers (issue 5): resolves `image` and records that `holder` (a container ID)
    /// uses its layers, crash-safely. RemoveImage may then remove the image record, but the
    /// layers stay until `release(holder)`. Holding again replaces the previous hold. Blocking.
    pub fn hold(&self, holder: &str, image: &str) -> Result<HeldImage, ImageError> {
        if !crate::ids::is_safe_id(holder) {
            return Err(ImageError::InvalidHolder(holder.to_string()));
        }
        let lookup = self.lookup(image)?;
        self.store.hold(holder, &lookup, image)
    }

    /// Ends a container's hold; layers no image needs any more are removed. Idempotent. Blocking.
    pub fn release(&self, holder: &str) -> Result<(), ImageError> {
        self.store.release(holder)
    }

    /// At start, once containers are recovered: ends the holds of every holder `keep` does not
    /// accept (containers without a record, and their image volumes). Returns them. Blocking.
    pub fn release_holds_except(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, ImageError> {
        self.store.release_holds_except(keep)
    }

    /// The snapshot directories of an image's layers, lowest first.
    pub fn layer_dirs(&self, record: &ImageRecord) -> Vec<PathBuf> {
        self.store.layer_dirs(record)
    }

    #[cfg(test)]
    pub(crate) fn puller(&self) -> &Puller {
        &self.puller
    }

    pub fn store_dir(&self) -> &Path {
        &self.store.layout.base
    }
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
