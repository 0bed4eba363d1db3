//! lockstepd killed (SIGKILL) in the middle of a pull, while a layer is half unpacked: after a
//! restart on the same root there is no image, no snapshot and no temporary file, and the pull
//! works again. Real daemon process, real registry, real kill.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_conformance::fixtures::oci::{self, Compression, Entry, Image, Layer, RunConfig};
use lockstep_conformance::fixtures::{self, registry::LocalRegistry, Fixture};
use lockstep_cri::{model, Minor};

const BIN: &str = env!("CARGO_BIN_EXE_lockstep-conformance");

/// The daemon process; killed when dropped, so a failing test leaves none behind.
struct Daemon(Child);

impl Daemon {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_daemon(dir: &Path) -> Daemon {
    let arg = |p: &str| dir.join(p).display().to_string();
    let _ = std::fs::remove_file(dir.join("lockstep.sock"));
    std::fs::write(dir.join("lockstep.toml"), "").unwrap();
    let child = Command::new(BIN)
        .args(["daemon", "--kube", "1.36", "--config", &arg("lockstep.toml"), "--root", &arg("root")])
        .args(["--runroot", &arg("run"), "--listen", &arg("lockstep.sock")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("lockstep.sock").exists() {
        assert!(Instant::now() < deadline, "the daemon never served");
        std::thread::sleep(Duration::from_millis(10));
    }
    Daemon(child)
}

async fn client(dir: &Path) -> lockstep_cri::CriClient {
    let channel =
        lockstep_cri::connect(&format!("unix://{}", dir.join("lockstep.sock").display()), Duration::from_secs(5))
            .await
            .unwrap();
    lockstep_cri::CriClient::new(Minor::V1_36, channel).unwrap()
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
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("root/images");

    let mut daemon = start_daemon(tmp.path());
    let mut kubelet = client(tmp.path()).await;
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

    let mut daemon = start_daemon(tmp.path());
    let mut kubelet = client(tmp.path()).await;
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
