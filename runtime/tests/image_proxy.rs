//! Pulls through the proxies of lockstepd's environment, as CRI-O's systemd drop-in sets them:
//! plain HTTP through HTTP_PROXY (absolute-form requests), HTTPS through HTTPS_PROXY (a CONNECT
//! tunnel, here with credentials in the proxy URL), NO_PROXY honoured, and a proxy that refuses
//! the credentials fails the pull with nothing stored. The registries sit on this machine's
//! non-loopback address: loopback is never proxied.

mod registry_double;

use std::sync::Arc;

use lockstep_cri::{model, CriClient, Minor};
use lockstep_testkit::fixtures::host_arch;
use lockstep_testkit::fixtures::oci::{Compression, Entry, Image, Layer, RunConfig};
use lockstep_testkit::{Launch, Lockstepd, Program};
use registry_double::{Request, Response};

const LOCKSTEPD: &str = env!("CARGO_BIN_EXE_lockstepd");

fn image() -> Image {
    let layer =
        Layer::new(&[Entry::File { path: "f".into(), mode: 0o644, data: b"proxied\n".to_vec() }], Compression::Gzip);
    Image::build(vec![layer], &RunConfig::default(), host_arch(), false)
}

/// lockstepd with `env`, trusting `ca` for `tls_host` and taking `plain_host` as insecure.
async fn daemon(env: Vec<(String, String)>, plain_host: &str, tls_host: &str, ca: &std::path::Path) -> Lockstepd {
    let launch = Launch { env, ..Default::default() };
    let daemon = Lockstepd::prepare(Program::lockstepd(LOCKSTEPD, Minor::V1_36), launch).unwrap();
    let certs = daemon.dir().join("certs.d");
    std::fs::create_dir_all(certs.join(tls_host)).unwrap();
    std::fs::copy(ca, certs.join(tls_host).join("ca.crt")).unwrap();
    let registries = daemon.dir().join("registries.conf");
    std::fs::write(&registries, format!("[[registry]]\nlocation = \"{plain_host}\"\ninsecure = true\n")).unwrap();
    let config = format!(
        "[image]\nregistries_conf = {:?}\ncerts_dir = {:?}\npull_progress_timeout_secs = 10\n",
        registries.display().to_string(),
        certs.display().to_string()
    );
    std::fs::write(daemon.config_path(), config).unwrap();
    let mut daemon = daemon;
    daemon.spawn().await.unwrap();
    daemon
}

async fn pull(kubelet: &mut CriClient, image: &str) -> Result<String, tonic::Status> {
    let spec = Some(model::ImageSpec { image: image.into(), ..Default::default() });
    kubelet.pull_image(model::PullImageRequest { image: spec, ..Default::default() }).await.map(|r| r.image_ref)
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_go_through_the_environment_s_proxies() {
    let ip = registry_double::host_ip();
    let tmp = tempfile::tempdir().unwrap();
    let certs = lockstep_testkit::certs::make_certs(tmp.path(), ip);
    let image = Arc::new(image());
    let serve = |image: Arc<Image>| {
        Arc::new(move |r: &Request| registry_double::image_content(&image, r).unwrap_or_else(|| Response::new(404, "")))
    };
    let plain = registry_double::serve(ip, None, serve(image.clone())).await;
    let tls = registry_double::serve(ip, Some(registry_double::tls_acceptor(&certs)), serve(image.clone())).await;
    let http_proxy = registry_double::proxy::start(None).await;
    let https_proxy = registry_double::proxy::start(Some(("lockstep", "s3cret"))).await;
    let env = |https_password: &str, no_proxy: &str| {
        vec![
            ("HTTP_PROXY".to_string(), format!("http://{}", http_proxy.host)),
            ("HTTPS_PROXY".to_string(), format!("http://lockstep:{https_password}@{}", https_proxy.host)),
            ("NO_PROXY".to_string(), no_proxy.to_string()),
        ]
    };

    let node = daemon(env("s3cret", "registry.example.invalid"), &plain.host, &tls.host, &certs.ca).await;
    let mut kubelet = node.kubelet().await;
    let id = pull(&mut kubelet, &format!("{}/lockstep/plain:1", plain.host)).await.unwrap();
    assert_eq!(id, image.config_digest);
    let manifest = format!("GET http://{}/v2/lockstep/plain/manifests/1 HTTP/1.1", plain.host);
    assert!(http_proxy.requests().contains(&manifest), "{:#?}", http_proxy.requests());
    pull(&mut kubelet, &format!("{}/lockstep/tls:1", tls.host)).await.unwrap();
    let tunnel = format!("CONNECT {} HTTP/1.1", tls.host);
    assert!(https_proxy.requests().contains(&tunnel), "{:#?}", https_proxy.requests());
    assert!(tls.requests().iter().any(|r| r.target.ends_with("/lockstep/tls/manifests/1")), "through the tunnel");
    drop(node);

    // NO_PROXY names the registries' address: no proxy sees them.
    let (plain_seen, tls_seen) = (http_proxy.requests().len(), https_proxy.requests().len());
    let node = daemon(env("s3cret", &ip.to_string()), &plain.host, &tls.host, &certs.ca).await;
    let mut kubelet = node.kubelet().await;
    pull(&mut kubelet, &format!("{}/lockstep/direct:1", tls.host)).await.unwrap();
    pull(&mut kubelet, &format!("{}/lockstep/direct:1", plain.host)).await.unwrap();
    assert_eq!((http_proxy.requests().len(), https_proxy.requests().len()), (plain_seen, tls_seen));
    drop(node);

    // The proxy refuses the credentials: the pull fails, saying so, and nothing is stored.
    let node = daemon(env("wrong", ""), &plain.host, &tls.host, &certs.ca).await;
    let mut kubelet = node.kubelet().await;
    let err = pull(&mut kubelet, &format!("{}/lockstep/refused:1", tls.host)).await.unwrap_err();
    assert!(err.message().contains(&tls.host), "{}", err.message());
    let images = kubelet.list_images(model::ListImagesRequest::default()).await.unwrap().images;
    assert!(images.is_empty(), "{images:?}");
}
