//! ImageSpec.runtime_handler (KEP-4216, sent by a kubelet with RuntimeClassInImageCriApi): a
//! configured handler pulls the same image as the default (every handler shares the store and
//! the host's platform), and one lockstepd does not have is InvalidArgument naming the field,
//! before anything is fetched.

use lockstep_cri::{model, Minor};
use lockstep_testkit::fixtures::{self, registry::LocalRegistry};
use lockstep_testkit::{Launch, Lockstepd, Program};

const LOCKSTEPD: &str = env!("CARGO_BIN_EXE_lockstepd");

fn spec(image: &str, handler: &str) -> Option<model::ImageSpec> {
    Some(model::ImageSpec { image: image.to_string(), runtime_handler: handler.to_string(), ..Default::default() })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_known_handler_pulls_the_same_image_and_an_unknown_one_is_refused() {
    let registry = LocalRegistry::start().unwrap();
    let shell: Vec<_> = fixtures::standard().unwrap().into_iter().filter(|f| f.repo == fixtures::SHELL).collect();
    fixtures::push_all(&registry.host, &shell).await.unwrap();
    let image = shell[0].reference(&registry.host);
    let daemon = Lockstepd::start(Program::lockstepd(LOCKSTEPD, Minor::V1_36), Launch::default(), "").await.unwrap();
    let mut kubelet = daemon.kubelet().await;

    let refused = kubelet
        .pull_image(model::PullImageRequest { image: spec(&image, "kata"), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("image.runtime_handler \"kata\""), "{}", refused.message());
    let listed = kubelet.list_images(model::ListImagesRequest::default()).await.unwrap().images;
    assert!(listed.is_empty(), "nothing pulled: {listed:?}");

    let mut ids = Vec::new();
    for handler in ["runc", "crun", ""] {
        let pulled = kubelet
            .pull_image(model::PullImageRequest { image: spec(&image, handler), ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("handler {handler:?}: {e:?}"));
        ids.push(pulled.image_ref);
    }
    assert!(ids.iter().all(|id| id == shell[0].id()), "one image for every handler: {ids:?}");
    let status =
        kubelet.image_status(model::ImageStatusRequest { image: spec(&image, "runc"), verbose: false }).await.unwrap();
    assert_eq!(status.image.map(|i| i.id), Some(shell[0].id().to_string()));
}
