//! lockstepd killed (SIGKILL) in the middle of a pull, while a layer is half unpacked: after a
//! restart on the same root there is no image, no snapshot and no temporary file, and the pull
//! works again. Real daemon process, real registry, real kill.

use std::path::Path;
use std::time::{Duration, Instant};

use lockstep_cri::{model, Minor};
use lockstep_testkit::fixtures::oci::{self, Compression, Entry, Image, Layer, RunConfig};
use lockstep_testkit::fixtures::{self, registry::LocalRegistry, Fixture};
use lockstep_testkit::{Launch, Lockstepd, Program};

const LOCKSTEPD: &str = env!("CARGO_BIN_EXE_lockstepd");

/// lockstepd on its defaults in a fresh directory of its own.
async fn start_daemon() -> Lockstepd {
    Lockstepd::start(Program::lockstepd(LOCKSTEPD, Minor::V1_36), Launch::default(), "").await.unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_killed_halfway_leaves_nothing_and_can_be_redone() {
    let big = Layer::new(
        &[Entry::File { path: "big".into(), mode: 0o644, data: oci::noise(3, 48 << 20) }],
        Compression::Gzip,
    );
    let image = Image::build(
        vec![fixtures::busybox_layer().unwrap(), big],
        &RunConfig::default(),
        fixtures::host_arch(),
        false,
    );
    let fixture = Fixture { repo: "lockstep/crash", tags: vec!["1"], image, index: None, others: vec![] };
    let registry = LocalRegistry::start().unwrap();
    fixtures::push_all(&registry.host, std::slice::from_ref(&fixture)).await.unwrap();
    let reference = fixture.reference(&registry.host);
    let mut daemon = start_daemon().await;
    let store = daemon.root().join("images");
    let mut kubelet = daemon.kubelet().await;
    let spec = Some(model::ImageSpec { image: reference.clone(), ..Default::default() });
    let request = model::PullImageRequest { image: spec.clone(), ..Default::default() };
    let pulling = tokio::spawn(async move { kubelet.pull_image(request).await });
    // Wait until a layer is being unpacked, freeze the registry so it stays half done, kill.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !entries(&store.join("tmp")).iter().any(|e| e.starts_with("layer-")) {
        assert!(Instant::now() < deadline, "no layer was ever unpacked");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    registry.pause().unwrap();
    daemon.kill();
    assert!(pulling.await.unwrap().is_err(), "the pull died with the daemon");
    assert!(!entries(&store.join("tmp")).is_empty(), "the kill left work in progress behind");
    registry.resume().unwrap();

    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    assert!(kubelet.list_images(Default::default()).await.unwrap().images.is_empty(), "no half image is visible");
    assert_eq!(entries(&store.join("tmp")), Vec::<String>::new(), "temporary files are cleaned at start");
    assert_eq!(entries(&store.join("records")), Vec::<String>::new());
    assert_eq!(entries(&store.join("snapshots")), Vec::<String>::new(), "layers of no image are removed at start");
    let id = kubelet
        .pull_image(model::PullImageRequest { image: spec.clone(), ..Default::default() })
        .await
        .unwrap()
        .image_ref;
    assert_eq!(id, fixture.id());
    assert_eq!(entries(&store.join("snapshots")).len(), 2);
    daemon.kill();
}
