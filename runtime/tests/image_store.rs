//! lockstepd's image store against a real registry (Debian's docker-registry) holding images
//! built by the fixtures: pulls of every kind, sharing, concurrency, auth, registries.conf,
//! restarts, container holds, and faults caused for real (tampered blobs, truncated gzip,
//! escaping layers, a stopped or frozen registry), after each of which nothing is left behind.

mod registry_double;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lockstep_runtime::config::Config;
use lockstep_runtime::image::registry::auth::Credentials;
use lockstep_runtime::image::service::{ImageError, ImageService};
use lockstep_testkit::fixtures::{self, hostile, oci, registry::LocalRegistry, Fixture};

struct Store {
    service: Arc<ImageService>,
    dir: tempfile::TempDir,
}

fn config(dir: &Path, registries_conf: &str, timeout: u64) -> Config {
    let conf = dir.join("registries.conf");
    std::fs::write(&conf, registries_conf).unwrap();
    let mut config = Config { root: dir.join("root"), runroot: dir.join("run"), ..Default::default() };
    config.image.registries_conf = conf;
    config.image.certs_dir = dir.join("certs.d");
    config.image.pull_progress_timeout_secs = timeout;
    config
}

impl Store {
    fn open(registries_conf: &str) -> Store {
        Self::open_with_timeout(registries_conf, 20)
    }
    fn open_with_timeout(registries_conf: &str, timeout: u64) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let service = Arc::new(ImageService::open(&config(dir.path(), registries_conf, timeout)).unwrap());
        Store { service, dir }
    }
    fn reopen(self) -> Store {
        let Store { service, dir } = self;
        drop(service);
        let conf = std::fs::read_to_string(dir.path().join("registries.conf")).unwrap();
        let service = Arc::new(ImageService::open(&config(dir.path(), &conf, 20)).unwrap());
        Store { service, dir }
    }
    fn images_dir(&self) -> PathBuf {
        self.dir.path().join("root/images")
    }
    fn count(&self, sub: &str) -> usize {
        std::fs::read_dir(self.images_dir().join(sub)).map(|d| d.count()).unwrap_or(0)
    }
    /// Nothing half-made: no temp files, and exactly `snapshots` snapshots and `records` records.
    fn assert_clean(&self, records: usize, snapshots: usize) {
        assert_eq!(
            self.count("tmp"),
            0,
            "temp files left: {:?}",
            std::fs::read_dir(self.images_dir().join("tmp")).unwrap().collect::<Vec<_>>()
        );
        assert_eq!(self.count("records"), records, "records");
        assert_eq!(self.count("snapshots"), snapshots, "snapshots");
        assert_eq!(self.service.list().len(), records);
    }
}

async fn registry_with(fixtures: &[Fixture]) -> LocalRegistry {
    let registry = LocalRegistry::start().unwrap();
    fixtures::push_all(&registry.host, fixtures).await.unwrap();
    registry
}

fn find<'a>(set: &'a [Fixture], repo: &str) -> &'a Fixture {
    set.iter().find(|f| f.repo == repo).unwrap()
}

async fn pull(
    store: &Store,
    image: &str,
) -> Result<lockstep_runtime::image::store::records::ImageRecord, Arc<ImageError>> {
    store.service.pull(image, Credentials::default()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_by_tag_and_digest_share_layers_and_survive_a_restart() {
    let set = fixtures::standard().unwrap();
    let registry = registry_with(&set).await;
    let host = &registry.host;
    let store = Store::open("");

    let shell = find(&set, fixtures::SHELL);
    let record = pull(&store, &shell.reference(host)).await.unwrap();
    assert_eq!(record.id.to_string(), shell.id());
    assert_eq!(record.repo_tags, vec![shell.reference(host)]);
    assert_eq!(record.repo_digests, vec![shell.digest_reference(host)]);
    assert!(store.service.layer_dirs(&record)[0].join("bin/busybox").is_file());
    assert_eq!(store.service.layers_unpacked(), 1);

    // The same base layer in another image is not unpacked again.
    let uid = find(&set, fixtures::USER_UID);
    let by_digest = pull(&store, &uid.digest_reference(host)).await.unwrap();
    assert_eq!(by_digest.id.to_string(), uid.id());
    assert!(by_digest.repo_tags.is_empty(), "pulled by digest: no tag");
    assert_eq!(store.service.layers_unpacked(), 1);
    let again = pull(&store, &uid.reference(host)).await.unwrap();
    assert_eq!(again.id, by_digest.id, "tag and digest name the same image");
    assert_eq!(again.repo_tags, vec![uid.reference(host)]);

    // An index: the host's platform, by its config digest.
    let multi = find(&set, fixtures::MULTIARCH);
    let record = pull(&store, &multi.reference(host)).await.unwrap();
    assert_eq!(record.id.to_string(), multi.id());
    assert_eq!(record.repo_digests, vec![multi.digest_reference(host)], "the repo digest is the index's");

    // zstd and uncompressed layers.
    let zstd = pull(&store, &find(&set, fixtures::ZSTD).reference(host)).await.unwrap();
    let dirs = store.service.layer_dirs(&zstd);
    assert_eq!(std::fs::read_to_string(dirs[1].join("z/zstd")).unwrap(), "zstd layer\n");
    assert_eq!(std::fs::read_to_string(dirs[2].join("p/plain")).unwrap(), "plain layer\n");

    // Whiteouts in overlay form, hardlinks.
    let wh = pull(&store, &find(&set, fixtures::WHITEOUT).reference(host)).await.unwrap();
    let dirs = store.service.layer_dirs(&wh);
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let whiteout = std::fs::symlink_metadata(dirs[2].join("data/deleted")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert_eq!(std::fs::metadata(dirs[1].join("data/kept")).unwrap().nlink(), 2);
    let opaque = std::process::Command::new("getfattr")
        .args(["-n", "trusted.overlay.opaque", "--only-values"])
        .arg(dirs[2].join("opaque"))
        .output();
    if let Ok(out) = opaque {
        if out.status.success() {
            assert_eq!(out.stdout, b"y");
        }
    }

    let images = store.service.list().len();
    let snapshots = store.count("snapshots");
    let store = store.reopen();
    store.assert_clean(images, snapshots);
    assert!(store.service.resolve(&shell.reference(host)).unwrap().is_some());
    assert!(store.service.resolve(shell.id()).unwrap().is_some(), "by ID");
    assert!(store.service.resolve(shell.id().trim_start_matches("sha256:")).unwrap().is_some(), "by bare ID");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_one_image_do_the_work_once() {
    let set = fixtures::standard().unwrap();
    let registry = registry_with(&set).await;
    let store = Store::open("");
    let web = find(&set, fixtures::WEB).reference(&registry.host);
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let s = store.service.clone();
            let w = web.clone();
            tokio::spawn(async move { s.pull(&w, Credentials::default()).await })
        })
        .collect();
    for p in pulls {
        p.await.unwrap().unwrap();
    }
    assert_eq!(store.service.layers_unpacked(), 2, "two layers, unpacked once");
    store.assert_clean(1, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_images_that_share_layers_fetch_each_shared_layer_once() {
    use oci::{Compression, Entry, Image, Layer, RunConfig};
    // Two images on the same two lower layers (busybox and 32 MiB that take a while to unpack),
    // each with a top layer of its own.
    let big = Layer::new(
        &[Entry::File { path: "big".into(), mode: 0o644, data: oci::noise(7, 32 << 20) }],
        Compression::Gzip,
    );
    let image = |name: &'static str| {
        let top = Layer::new(
            &[Entry::File { path: name.into(), mode: 0o644, data: name.as_bytes().to_vec() }],
            Compression::Gzip,
        );
        let layers = vec![fixtures::busybox_layer().unwrap(), big.clone(), top];
        let image = Image::build(layers, &RunConfig::default(), fixtures::host_arch(), false);
        Fixture { repo: name, tags: vec!["1"], image, index: None, others: vec![] }
    };
    let set = [image("lockstep/shared-a"), image("lockstep/shared-b")];
    let registry = registry_with(&set).await;
    let store = Store::open("");
    let pulls: Vec<_> = set
        .iter()
        .map(|f| {
            let (service, reference) = (store.service.clone(), f.reference(&registry.host));
            tokio::spawn(async move { service.pull(&reference, Credentials::default()).await })
        })
        .collect();
    for p in pulls {
        p.await.unwrap().unwrap();
    }
    assert_eq!(store.service.layers_unpacked(), 4, "two shared layers once, and each image's own");
    store.assert_clean(2, 4);
    let a = store.service.resolve(&set[0].reference(&registry.host)).unwrap().unwrap();
    let dirs = store.service.layer_dirs(&a);
    assert_eq!(std::fs::read(dirs[2].join("lockstep/shared-a")).unwrap(), b"lockstep/shared-a");
}

#[tokio::test(flavor = "multi_thread")]
async fn removal_is_whole_idempotent_and_spares_held_layers() {
    let set = fixtures::standard().unwrap();
    let registry = registry_with(&set).await;
    let host = &registry.host;
    let store = Store::open("");
    let tags = find(&set, fixtures::TAGS);
    for t in fixtures::TAG_NAMES {
        pull(&store, &format!("{host}/{}:{t}", tags.repo)).await.unwrap();
    }
    let record = store.service.resolve(&format!("{host}/{}:b", tags.repo)).unwrap().unwrap();
    assert_eq!(record.repo_tags.len(), 3);
    pull(&store, &find(&set, fixtures::SHELL).reference(host)).await.unwrap();

    let held = store.service.hold("container-1", &format!("{host}/{}:a", tags.repo)).unwrap();
    assert_eq!(held.layer_dirs.len(), 1);
    assert!(store.service.remove(&format!("{host}/{}:b", tags.repo)).await.unwrap());
    assert!(store.service.resolve(&format!("{host}/{}:a", tags.repo)).unwrap().is_none(), "every tag went with it");
    assert!(!store.service.remove(&format!("{host}/{}:b", tags.repo)).await.unwrap(), "idempotent");
    store.assert_clean(1, 1);
    assert!(held.layer_dirs[0].join("bin/busybox").exists(), "the held layer stays");

    store.service.remove(&find(&set, fixtures::SHELL).reference(host)).await.unwrap();
    assert!(held.layer_dirs[0].exists(), "still held after every image using it is gone");
    let store = store.reopen();
    assert_eq!(store.count("snapshots"), 1, "the hold survives a restart");
    store.service.release("container-1").unwrap();
    store.service.release("container-1").unwrap();
    store.assert_clean(0, 0);
    assert_eq!(store.count("blobs/sha256"), 0, "no blob left");
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_and_hostile_layers_fail_the_pull_and_leave_nothing() {
    let _ = std::fs::remove_file("/tmp/lockstep-escaped");
    let mut bad = hostile::escapes();
    bad.push(hostile::truncated());
    let tampered = hostile::tampered();
    bad.push(tampered.clone());
    let registry = registry_with(&bad).await;
    hostile::tamper(&registry, &tampered.image.layers[0].digest).unwrap();
    let host = &registry.host;
    let store = Store::open("");
    for (repo, expected) in [
        (hostile::DOTDOT, "`..`"),
        (hostile::ABSOLUTE, "absolute"),
        (hostile::SYMLINK, "symlink"),
        (hostile::TRUNCATED, "gzip"),
        (hostile::TAMPERED, "digest mismatch"),
    ] {
        let image = format!("{host}/{repo}:1");
        let err = pull(&store, &image).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{repo}: {err}");
        store.assert_clean(0, 0);
    }
    assert!(!Path::new("/tmp/lockstep-escaped").exists(), "nothing escaped");
}

/// Tiny layers that cost the host dearly: a path 50,000 directories deep in a few hundred
/// bytes (memory), and a gzip bomb past the configured byte limit (disk). Each fails its pull
/// at once with an error that says why, and leaves nothing, not a half-unpacked snapshot.
#[tokio::test(flavor = "multi_thread")]
async fn layers_that_would_exhaust_memory_or_disk_fail_the_pull_and_leave_nothing() {
    let bad = vec![hostile::deep_path(hostile::DEEP_PATH, 50_000), hostile::gzip_bomb(hostile::GZIP_BOMB, 64 << 20)];
    let registry = registry_with(&bad).await;
    let host = &registry.host;
    let dir = tempfile::tempdir().unwrap();
    let mut limited = config(dir.path(), "", 20);
    limited.image.max_layer_bytes = 16 << 20;
    let store = Store { service: Arc::new(ImageService::open(&limited).unwrap()), dir };
    for (repo, expected) in [(hostile::DEEP_PATH, "GNU long name"), (hostile::GZIP_BOMB, "max_layer_bytes")] {
        let started = std::time::Instant::now();
        let err = pull(&store, &format!("{host}/{repo}:1")).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{repo}: {err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{repo}: {:?}", started.elapsed());
        assert!(err.len() < 1000, "{repo}: the message does not carry the whole path: {} bytes", err.len());
        store.assert_clean(0, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_or_frozen_registry_is_reported() {
    let set = vec![find(&fixtures::standard().unwrap(), fixtures::SHELL).clone()];
    let mut registry = registry_with(&set).await;
    let image = set[0].reference(&registry.host);
    let store = Store::open_with_timeout("", 1);

    registry.pause().unwrap();
    let started = std::time::Instant::now();
    let err = pull(&store, &image).await.unwrap_err();
    assert!(
        matches!(err.root(), ImageError::Registry(lockstep_runtime::image::registry::RegistryError::Stalled { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("no progress"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
    registry.resume().unwrap();

    registry.stop();
    let err = pull(&store, &image).await.unwrap_err();
    assert!(
        matches!(
            err.root(),
            ImageError::Registry(lockstep_runtime::image::registry::RegistryError::Unreachable { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&registry.host), "{err}");
    store.assert_clean(0, 0);

    let err = pull(&store, &format!("{}/lockstep/absent:1", registry.host)).await.unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_used_when_the_registry_wants_them() {
    let shell = find(&fixtures::standard().unwrap(), fixtures::SHELL).clone();
    let registry = LocalRegistry::start_with(true).unwrap();
    let pusher = fixtures::push::Pusher::new(
        &registry.host,
        Some((fixtures::registry::AUTH_USER, fixtures::registry::AUTH_PASSWORD)),
    )
    .unwrap();
    shell.push(&pusher).await.unwrap();
    let image = shell.reference(&registry.host);
    let store = Store::open("");

    let err = pull(&store, &image).await.unwrap_err();
    assert!(err.to_string().contains("none were given"), "{err}");
    let wrong = Credentials { username: "lockstep".into(), password: "wrong".into(), ..Default::default() };
    let err = store.service.pull(&image, wrong).await.unwrap_err();
    assert!(
        matches!(err.root(), ImageError::Registry(lockstep_runtime::image::registry::RegistryError::Denied { .. })),
        "{err}"
    );
    use base64::Engine as _;
    let auth = lockstep_cri::model::AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            fixtures::registry::AUTH_USER,
            fixtures::registry::AUTH_PASSWORD
        )),
        ..Default::default()
    };
    let record = store.service.pull(&image, Credentials::from_cri(Some(&auth)).unwrap()).await.unwrap();
    assert_eq!(record.id.to_string(), shell.id());
}

#[tokio::test(flavor = "multi_thread")]
async fn registries_conf_rewrites_mirrors_search_and_blocks() {
    let shell = find(&fixtures::standard().unwrap(), fixtures::SHELL).clone();
    let registry = registry_with(std::slice::from_ref(&shell)).await;
    let host = &registry.host;
    let dead = format!("127.0.0.1:{}", fixtures::registry::free_port().unwrap());
    let conf = format!(
        r#"unqualified-search-registries = ["{dead}", "{host}"]

[[registry]]
prefix = "registry.example.invalid/team"
location = "{host}/lockstep"
[[registry.mirror]]
location = "{dead}/lockstep"

[[registry]]
prefix = "blocked.example.invalid"
blocked = true
"#
    );
    let store = Store::open(&conf);
    // A short name: the first search registry is down, the second has it.
    let record = pull(&store, "lockstep/shell:1").await.unwrap();
    assert_eq!(record.repo_tags, vec![shell.reference(host)]);
    assert!(store.service.resolve("lockstep/shell:1").unwrap().is_some(), "short names resolve the same way");
    // A prefix rewritten to another location, after a dead mirror; the tag keeps the name asked for.
    let record = pull(&store, "registry.example.invalid/team/shell:1").await.unwrap();
    assert!(record.repo_tags.contains(&"registry.example.invalid/team/shell:1".to_string()), "{:?}", record.repo_tags);
    let err = pull(&store, "blocked.example.invalid/x:1").await.unwrap_err().to_string();
    assert!(err.contains("blocked"), "{err}");
    let err = pull(&store, "Not A Reference").await.unwrap_err();
    assert!(matches!(err.root(), ImageError::Reference(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_whose_caller_gave_up_is_cancelled_and_the_next_one_pulls_afresh() {
    let set = fixtures::standard().unwrap();
    let registry = registry_with(&set).await;
    let store = Store::open("");
    let web = find(&set, fixtures::WEB);
    let image = web.reference(&registry.host);
    // The kubelet's deadline passes at once: nobody waits for the pull any more, so it is
    // cancelled (issue 14, item 9), and the next call pulls afresh instead of joining it.
    let gave_up = tokio::time::timeout(Duration::from_millis(1), pull(&store, &image)).await;
    assert!(gave_up.is_err(), "the pull finished within 1 ms");
    let record = pull(&store, &image).await.unwrap();
    assert_eq!(record.id.to_string(), web.id());
    assert!(store.service.resolve(&image).unwrap().is_some());
    // The cancelled pull's unpackers may still be removing what they had begun.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.count("tmp") > 0 {
        assert!(std::time::Instant::now() < deadline, "the cancelled pull left files behind");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.assert_clean(1, 2);
}

/// The kubelet's credentials are for one registry (AuthConfig.server_address, else the one the
/// image names): a mirror or a search registry elsewhere must not receive them.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_go_only_to_the_registry_they_are_for() {
    let shell = find(&fixtures::standard().unwrap(), fixtures::SHELL).clone();
    let registry = registry_with(std::slice::from_ref(&shell)).await;
    let host = &registry.host;
    // A mirror that asks every caller for credentials and records what it gets.
    let mirror = registry_double::serve(
        "127.0.0.1".parse().unwrap(),
        None,
        Arc::new(|_: &registry_double::Request| {
            registry_double::Response::new(401, "{}").header("WWW-Authenticate", "Basic realm=\"mirror\"")
        }),
    )
    .await;
    let conf = format!(
        "[[registry]]\nprefix = \"{host}/lockstep\"\n[[registry.mirror]]\nlocation = \"{}/lockstep\"\n",
        mirror.host
    );
    let store = Store::open(&conf);
    let image = shell.reference(host);
    for credentials in [
        Credentials {
            username: "alice".into(),
            password: "secret".into(),
            server_address: host.clone(),
            ..Default::default()
        },
        Credentials { username: "alice".into(), password: "secret".into(), ..Default::default() },
        Credentials {
            registry_token: "tok".into(),
            server_address: format!("https://{host}/v2/"),
            ..Default::default()
        },
    ] {
        let record = store.service.pull(&image, credentials.clone()).await.unwrap();
        assert_eq!(record.id.to_string(), shell.id(), "the registry itself served the pull");
        let leaked: Vec<String> =
            mirror.requests().iter().filter_map(|r| r.header("authorization").map(str::to_string)).collect();
        assert!(leaked.is_empty(), "the mirror got credentials ({credentials:?}): {leaked:?}");
    }
    assert!(!mirror.requests().is_empty(), "the mirror was tried first");
}

/// Garbage collection (here: containers releasing their holds) while pulls write their blobs
/// must not delete them before the image record names them.
#[tokio::test(flavor = "multi_thread")]
async fn garbage_collection_spares_the_blobs_of_a_pull_in_flight() {
    let set = fixtures::standard().unwrap();
    let registry = registry_with(&set).await;
    let store = Store::open("");
    let image = find(&set, fixtures::WEB).reference(&registry.host);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (service, stop) = (store.service.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                service.release("no-such-container").unwrap();
            }
        })
    };
    for _ in 0..20 {
        let record = pull(&store, &image).await.unwrap();
        for blob in record.blobs() {
            assert!(store.images_dir().join("blobs/sha256").join(blob.hex()).is_file(), "blob {blob} was collected");
        }
        store.service.remove(&image).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    collector.await.unwrap();
}

/// Through a real overlay mount of the layer snapshots, as a container sees its rootfs: a
/// layer that lists `tmp/x` but not `tmp/` leaves /tmp as the base layer made it (1777).
#[tokio::test(flavor = "multi_thread")]
async fn directories_a_layer_does_not_list_look_as_the_layers_below_made_them() {
    use fixtures::oci::{Compression, Entry, Image, Layer, RunConfig};
    use std::os::unix::fs::PermissionsExt;
    let top = Layer::new(&[Entry::File { path: "tmp/x".into(), mode: 0o644, data: b"x".to_vec() }], Compression::Gzip);
    let image = Image::build(
        vec![fixtures::busybox_layer().unwrap(), top],
        &RunConfig::default(),
        fixtures::host_arch(),
        false,
    );
    let fixture = Fixture { repo: "lockstep/implicit-tmp", tags: vec!["1"], image, index: None, others: vec![] };
    let registry = registry_with(std::slice::from_ref(&fixture)).await;
    let store = Store::open("");
    let record = pull(&store, &fixture.reference(&registry.host)).await.unwrap();
    let lower: Vec<String> = store.service.layer_dirs(&record).iter().rev().map(|p| p.display().to_string()).collect();
    let merged = store.dir.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let options = format!("lowerdir={}", lower.join(":"));
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .unwrap();
    let _unmount = Unmount(&merged);
    assert_eq!(std::fs::read(merged.join("tmp/x")).unwrap(), b"x");
    let mode = std::fs::metadata(merged.join("tmp")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777, "the merged /tmp is {mode:o}");
    assert!(merged.join("bin/busybox").is_file());
}

/// A pull that fails after some of its layers were unpacked leaves none of them: a bad second
/// layer (corrupt, or writing through a symlink the first one made).
#[tokio::test(flavor = "multi_thread")]
async fn a_pull_that_fails_on_a_later_layer_leaves_no_snapshot() {
    use fixtures::oci::{Compression, Entry, Image, Layer, RunConfig};
    let base = fixtures::busybox_layer().unwrap();
    let link = Layer::new(&[Entry::Symlink { path: "lib2".into(), target: "bin".into() }], Compression::Gzip);
    let through =
        Layer::new(&[Entry::File { path: "lib2/x".into(), mode: 0o644, data: b"x".to_vec() }], Compression::Gzip);
    let mut truncated =
        Layer::new(&[Entry::File { path: "f".into(), mode: 0o644, data: oci::noise(5, 1 << 16) }], Compression::Gzip);
    truncated.blob.truncate(truncated.blob.len() / 2);
    truncated.digest = oci::sha256(&truncated.blob);
    let build = |repo: &'static str, layers: Vec<Layer>| Fixture {
        repo,
        tags: vec!["1"],
        image: Image::build(layers, &RunConfig::default(), fixtures::host_arch(), false),
        index: None,
        others: vec![],
    };
    let through_symlink = build("lockstep/bad-through-symlink", vec![base.clone(), link, through]);
    let cut = build("lockstep/bad-second-layer", vec![base, truncated]);
    let registry = registry_with(&[through_symlink.clone(), cut.clone()]).await;
    let store = Store::open("");
    for (fixture, why) in [(&through_symlink, "symlink"), (&cut, "gzip")] {
        let err = pull(&store, &fixture.reference(&registry.host)).await.unwrap_err().to_string();
        assert!(err.contains(why), "{}: {err}", fixture.repo);
        store.assert_clean(0, 0);
    }
}

/// A tag pulled again for a new image leaves the old one nameless: its removal (thousands of
/// files here) must not stop the daemon's other work, so it runs off the async workers. On a
/// single-threaded runtime another task sees the old layer's removal in progress only if it
/// does.
#[tokio::test(flavor = "current_thread")]
async fn removing_an_image_whose_tag_moved_does_not_stall_the_daemon() {
    use fixtures::oci::{Compression, Entry, Image, Layer, RunConfig};
    let many: Vec<Entry> =
        (0..10_000).map(|i| Entry::File { path: format!("f{i}"), mode: 0o644, data: vec![] }).collect();
    let old =
        Image::build(vec![Layer::new(&many, Compression::Gzip)], &RunConfig::default(), fixtures::host_arch(), false);
    let new =
        Image::build(vec![fixtures::busybox_layer().unwrap()], &RunConfig::default(), fixtures::host_arch(), false);
    let fixture = |image| Fixture { repo: "lockstep/moved", tags: vec!["1"], image, index: None, others: vec![] };
    let registry = registry_with(&[fixture(old)]).await;
    let store = Store::open("");
    let image = format!("{}/lockstep/moved:1", registry.host);
    let first = pull(&store, &image).await.unwrap();
    // Every pull records the digest it pulled by, which keeps an image named when its tag
    // moves; a record without one (as a tag-only record would be) goes with its last tag.
    let file = store.images_dir().join("records").join(format!("{}.json", first.id.hex()));
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    json["repo_digests"] = serde_json::json!([]);
    std::fs::write(&file, serde_json::to_vec(&json).unwrap()).unwrap();
    let store = store.reopen();
    fixtures::push_all(&registry.host, &[fixture(new.clone())]).await.unwrap();

    let tmp = store.images_dir().join("tmp");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let removing = std::fs::read_dir(&tmp)
                    .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("removed-")))
                    .unwrap_or(false);
                if removing {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            false
        })
    };
    let record = pull(&store, &image).await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(record.id.to_string(), new.config_digest);
    assert!(watcher.await.unwrap(), "nothing else ran while the old image's layer was being removed");
    store.assert_clean(1, 1);
}

/// A token service that is down is the registry being unavailable (the kubelet retries), not
/// a refusal of the credentials.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_service_that_is_down_is_unavailable_not_a_refusal() {
    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let tokens = registry_double::serve(
        loopback,
        None,
        Arc::new(|_: &registry_double::Request| registry_double::Response::new(503, "down")),
    )
    .await;
    let realm = format!("http://{}/token", tokens.host);
    let registry = registry_double::serve(
        loopback,
        None,
        Arc::new(move |_: &registry_double::Request| {
            registry_double::Response::new(401, "{}").header("WWW-Authenticate", format!("Bearer realm=\"{realm}\""))
        }),
    )
    .await;
    let store = Store::open("");
    let err = pull(&store, &format!("{}/lockstep/x:1", registry.host)).await.unwrap_err();
    assert!(
        matches!(
            err.root(),
            ImageError::Registry(lockstep_runtime::image::registry::RegistryError::Unreachable { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(tokens.requests().len(), 1);
}
