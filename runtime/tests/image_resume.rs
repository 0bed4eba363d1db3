//! A layer download whose connection breaks goes on from where it broke: the pull asks for the
//! rest with an HTTP Range (206 from a registry that serves ranges; a registry that answers the
//! whole blob again has the part already read dropped) and the image is whole; a registry that
//! breaks every time fails the pull after a few tries, leaving nothing. The registry is a
//! double (registry_double) that cuts its answers on purpose: a real one cannot be made to.

mod registry_double;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lockstep_runtime::config::Config;
use lockstep_runtime::image::registry::auth::Credentials;
use lockstep_runtime::image::service::ImageService;
use lockstep_testkit::fixtures::oci::{self, Compression, Entry, Image, Layer, RunConfig};
use registry_double::{Request, Response};

/// An image whose second layer is 4 MiB of noise, served by a double that breaks that layer's
/// first `breaks` answers halfway, and answers a Range with 206 when `ranges`.
struct Setup {
    image: Image,
    big: String,
    server: registry_double::Server,
    answers: Arc<AtomicUsize>,
}

async fn serve(breaks: usize, ranges: bool) -> Setup {
    let big_layer = Layer::new(
        &[Entry::File { path: "big".into(), mode: 0o644, data: oci::noise(11, 4 << 20) }],
        Compression::Gzip,
    );
    let big = big_layer.digest.clone();
    let layers = vec![lockstep_testkit::fixtures::busybox_layer().unwrap(), big_layer];
    let image = Image::build(layers, &RunConfig::default(), lockstep_testkit::fixtures::host_arch(), false);
    let (served, answers) = (image.clone(), Arc::new(AtomicUsize::new(0)));
    let (digest, count) = (big.clone(), answers.clone());
    let handler = Arc::new(move |request: &Request| {
        let Some(response) = registry_double::image_content(&served, request) else {
            return Response::new(404, "{}");
        };
        if !request.target.ends_with(&digest) {
            return response;
        }
        let n = count.fetch_add(1, Ordering::SeqCst);
        let from = request
            .header("Range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse::<usize>().ok());
        let response = match from {
            Some(from) if ranges && from < response.body.len() => {
                let total = response.body.len();
                Response::new(206, response.body[from..].to_vec())
                    .header("Content-Range", format!("bytes {from}-{}/{total}", total - 1))
            }
            _ => response,
        };
        if n < breaks {
            let half = response.body.len() / 2;
            response.cut_after(half)
        } else {
            response
        }
    });
    let server = registry_double::serve("127.0.0.1".parse().unwrap(), None, handler).await;
    Setup { image, big, server, answers }
}

fn service(dir: &Path) -> Arc<ImageService> {
    let mut config = Config { root: dir.join("root"), runroot: dir.join("run"), ..Default::default() };
    config.image.registries_conf = dir.join("none.conf");
    config.image.certs_dir = dir.join("certs.d");
    Arc::new(ImageService::open(&config).unwrap())
}

/// The Range headers the double was sent for the big layer.
fn ranges_asked(setup: &Setup) -> Vec<String> {
    let requests = setup.server.requests();
    requests
        .iter()
        .filter(|r| r.target.ends_with(&setup.big))
        .filter_map(|r| r.header("Range").map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_download_goes_on_with_a_range_and_the_image_is_whole() {
    let setup = serve(2, true).await;
    let dir = tempfile::tempdir().unwrap();
    let images = service(dir.path());
    let reference = format!("{}/resume/ranges:1", setup.server.host);
    let record = images.pull(&reference, Credentials::default()).await.unwrap();
    assert_eq!(record.id.as_str(), setup.image.config_digest);
    assert_eq!(setup.answers.load(Ordering::SeqCst), 3, "broken twice, then the rest");
    let asked = ranges_asked(&setup);
    assert_eq!(asked.len(), 2, "{asked:?}");
    let blob_len = setup.image.layers[1].blob.len();
    assert_eq!(asked[0], format!("bytes={}-", blob_len / 2), "from where the first answer broke");
    let dirs = images.layer_dirs(&images.resolve(&reference).unwrap().unwrap());
    assert_eq!(std::fs::read(dirs[1].join("big")).unwrap(), oci::noise(11, 4 << 20), "the layer is whole");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_without_ranges_resends_the_whole_blob_and_the_part_read_is_dropped() {
    let setup = serve(1, false).await;
    let dir = tempfile::tempdir().unwrap();
    let images = service(dir.path());
    let reference = format!("{}/resume/whole:1", setup.server.host);
    images.pull(&reference, Credentials::default()).await.unwrap();
    assert_eq!(ranges_asked(&setup).len(), 1, "one resume asked for a range");
    let dirs = images.layer_dirs(&images.resolve(&reference).unwrap().unwrap());
    assert_eq!(std::fs::read(dirs[1].join("big")).unwrap(), oci::noise(11, 4 << 20));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_always_breaks_fails_the_pull_after_a_few_tries_leaving_nothing() {
    let setup = serve(usize::MAX, true).await;
    let dir = tempfile::tempdir().unwrap();
    let images = service(dir.path());
    let reference = format!("{}/resume/never:1", setup.server.host);
    let err = images.pull(&reference, Credentials::default()).await.unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert_eq!(setup.answers.load(Ordering::SeqCst), 4, "the first try and three resumes");
    assert!(images.list().is_empty());
    for sub in ["snapshots", "records", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(dir.path().join("root/images").join(sub))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
}
