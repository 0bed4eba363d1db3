//! `image.pinned_images` as the kubelet sees it: ListImages and ImageStatus report an image a
//! pattern names as pinned (and no other), and a bad pattern stops lockstepd at start with the
//! pattern in its message.

use lockstep_cri::{model, Minor};
use lockstep_testkit::fixtures::{self, registry::LocalRegistry};
use lockstep_testkit::{Launch, Lockstepd, Program};

const LOCKSTEPD: &str = env!("CARGO_BIN_EXE_lockstepd");

fn program() -> Program {
    Program::lockstepd(LOCKSTEPD, Minor::V1_36)
}

#[tokio::test(flavor = "multi_thread")]
async fn images_a_pattern_names_are_reported_pinned_and_others_not() {
    let registry = LocalRegistry::start().unwrap();
    let wanted: Vec<_> = fixtures::standard()
        .unwrap()
        .into_iter()
        .filter(|f| [fixtures::SHELL, fixtures::USER_NAME].contains(&f.repo))
        .collect();
    fixtures::push_all(&registry.host, &wanted).await.unwrap();
    let config = format!("[image]\npinned_images = [\"{}/lockstep/shell*\", \"*never-pulled*\"]\n", registry.host);
    let daemon = Lockstepd::start(program(), Launch::default(), &config).await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    let mut ids = Vec::new();
    for fixture in &wanted {
        let image = Some(model::ImageSpec { image: fixture.reference(&registry.host), ..Default::default() });
        let pulled = kubelet.pull_image(model::PullImageRequest { image, ..Default::default() }).await.unwrap();
        ids.push((fixture.repo, pulled.image_ref));
    }
    let listed = kubelet.list_images(model::ListImagesRequest::default()).await.unwrap().images;
    for (repo, id) in &ids {
        let image = listed.iter().find(|i| &i.id == id).unwrap();
        assert_eq!(image.pinned, *repo == fixtures::SHELL, "{repo} in ListImages");
        let request = model::ImageStatusRequest {
            image: Some(model::ImageSpec { image: id.clone(), ..Default::default() }),
            verbose: false,
        };
        let status = kubelet.image_status(request).await.unwrap().image.unwrap();
        assert_eq!(status.pinned, *repo == fixtures::SHELL, "{repo} in ImageStatus");
    }
}

#[tokio::test]
async fn a_pattern_with_a_star_inside_stops_lockstepd_naming_it() {
    let config = "[image]\npinned_images = [\"quay.io/*/agent\"]\n";
    let err = Lockstepd::start(program(), Launch::default(), config).await.err().expect("lockstepd refuses to start");
    let message = format!("{err:#}");
    assert!(message.contains("quay.io/*/agent") && message.contains("pinned_images"), "{message}");
}
