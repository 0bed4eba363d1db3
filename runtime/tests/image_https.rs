//! The registry client's HTTPS rules against a registry on this machine's non-loopback address
//! (so it is treated as remote), with its CA in certs.d: redirects and token realms must not
//! lead it to plain HTTP, an insecure registry's flag must not switch off TLS checks for its
//! token service, and same-host HTTPS redirects (blob storage) still work.

mod registry_double;

use std::sync::Arc;

use lockstep_runtime::config::Config;
use lockstep_runtime::image::registry::auth::Credentials;
use lockstep_runtime::image::service::ImageService;
use lockstep_testkit::fixtures::host_arch;
use lockstep_testkit::fixtures::oci::{Compression, Entry, Image, Layer, RunConfig};
use registry_double::{Request, Response};

const TOKEN: &str = "tok-https-1";

fn image() -> Image {
    let layer =
        Layer::new(&[Entry::File { path: "f".into(), mode: 0o644, data: b"https\n".to_vec() }], Compression::Gzip);
    Image::build(vec![layer], &RunConfig::default(), host_arch(), false)
}

/// A token service's answer with the one token the test registries accept.
fn token_answer() -> Response {
    Response::new(200, format!("{{\"token\":\"{TOKEN}\"}}")).header("Content-Type", "application/json")
}

fn bearer(realm: &str) -> Response {
    Response::new(401, "{}").header("WWW-Authenticate", format!("Bearer realm=\"{realm}\",service=\"test\""))
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_and_token_realms_never_leave_https_for_a_remote_registry() {
    let ip = registry_double::host_ip();
    let tmp = tempfile::tempdir().unwrap();
    let certs = lockstep_testkit::certs::make_certs(tmp.path(), ip);
    let image = Arc::new(image());

    // A plain-HTTP server on the same address: what a downgrade would reach.
    let plain = {
        let image = image.clone();
        registry_double::serve(
            ip,
            None,
            Arc::new(move |r: &Request| {
                if r.target.starts_with("/token") {
                    token_answer()
                } else {
                    registry_double::image_content(&image, r).unwrap_or_else(|| Response::new(404, ""))
                }
            }),
        )
        .await
    };
    // An HTTPS token service whose certificate nothing trusts (no certs.d entry for its port).
    let untrusted = registry_double::serve(
        ip,
        Some(registry_double::tls_acceptor(&certs)),
        Arc::new(move |_: &Request| token_answer()),
    )
    .await;
    // The registry: HTTPS, its CA in certs.d.
    let registry = {
        let (image, plain, untrusted) = (image.clone(), plain.host.clone(), untrusted.host.clone());
        let registry_host = Arc::new(std::sync::Mutex::new(String::new()));
        let me = registry_host.clone();
        let server = registry_double::serve(
            ip,
            Some(registry_double::tls_acceptor(&certs)),
            Arc::new(move |r: &Request| {
                let me = me.lock().unwrap().clone();
                let authorized = r.header("authorization") == Some(&format!("Bearer {TOKEN}"));
                let path = r.target.as_str();
                if path.starts_with("/token") {
                    return token_answer();
                }
                if let Some(digest) = path.strip_prefix("/storage/") {
                    return registry_double::image_content(
                        &image,
                        &Request { target: format!("/v2/x/blobs/{digest}"), ..r.clone() },
                    )
                    .unwrap_or_else(|| Response::new(404, ""));
                }
                if path.contains("/blobs/") {
                    // Blob storage elsewhere on the same host, as registries on object stores do.
                    return Response::redirect(format!("/storage/{}", path.rsplit('/').next().unwrap_or("")));
                }
                if path.starts_with("/v2/lockstep/downgrade/") {
                    return Response::redirect(format!("http://{plain}{path}"));
                }
                if path.starts_with("/v2/lockstep/realm-http/") && !authorized {
                    return bearer(&format!("http://{plain}/token"));
                }
                if path.starts_with("/v2/lockstep/realm-untrusted/") && !authorized {
                    return bearer(&format!("https://{untrusted}/token"));
                }
                if path.starts_with("/v2/lockstep/realm-ok/") && !authorized {
                    return bearer(&format!("https://{me}/token"));
                }
                registry_double::image_content(&image, r).unwrap_or_else(|| Response::new(404, ""))
            }),
        )
        .await;
        *registry_host.lock().unwrap() = server.host.clone();
        server
    };
    let host = registry.host.clone();
    std::fs::create_dir_all(tmp.path().join("certs.d").join(&host)).unwrap();
    std::fs::copy(&certs.ca, tmp.path().join("certs.d").join(&host).join("ca.crt")).unwrap();
    // Only the realm-untrusted repository is configured insecure.
    std::fs::write(
        tmp.path().join("registries.conf"),
        format!("[[registry]]\nprefix = \"{host}/lockstep/realm-untrusted\"\ninsecure = true\n"),
    )
    .unwrap();
    let mut config = Config { root: tmp.path().join("root"), runroot: tmp.path().join("run"), ..Default::default() };
    config.image.registries_conf = tmp.path().join("registries.conf");
    config.image.certs_dir = tmp.path().join("certs.d");
    config.image.pull_progress_timeout_secs = 10;
    let service = Arc::new(ImageService::open(&config).unwrap());
    let creds = Credentials { username: "alice".into(), password: "secret".into(), ..Default::default() };

    // HTTPS with the certs.d CA, blobs redirected on the same host, a token over HTTPS: fine.
    for repo in ["ok", "realm-ok"] {
        let record = service.pull(&format!("{host}/lockstep/{repo}:1"), creds.clone()).await.unwrap();
        assert_eq!(record.id.to_string(), image.config_digest);
    }

    let err = service.pull(&format!("{host}/lockstep/downgrade:1"), creds.clone()).await.unwrap_err().to_string();
    assert!(err.contains("plain HTTP"), "{err}");
    let err = service.pull(&format!("{host}/lockstep/realm-http:1"), creds.clone()).await.unwrap_err().to_string();
    assert!(err.contains("token realm") && err.contains("plain HTTP"), "{err}");
    let err = service.pull(&format!("{host}/lockstep/realm-untrusted:1"), creds.clone()).await.unwrap_err().to_string();
    assert!(err.contains(&untrusted.host), "{err}");

    let reached: Vec<String> = plain.requests().iter().map(|r| r.target.clone()).collect();
    assert!(reached.is_empty(), "plain HTTP was used: {reached:?}");
    let tokens: Vec<String> = untrusted.requests().iter().map(|r| r.target.clone()).collect();
    assert!(tokens.is_empty(), "credentials went to a token service whose TLS was not verified: {tokens:?}");
    assert!(service.resolve(&format!("{host}/lockstep/downgrade:1")).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_registry_cannot_send_lockstepd_to_plain_http_on_loopback() {
    let ip = registry_double::host_ip();
    let tmp = tempfile::tempdir().unwrap();
    let certs = lockstep_testkit::certs::make_certs(tmp.path(), ip);
    let image = Arc::new(image());
    // A plain-HTTP service on the node's loopback that would answer anything (a kubelet's
    // read-only port, a metadata proxy): a remote registry must not make lockstepd fetch from it.
    let local = {
        let image = image.clone();
        registry_double::serve(
            "127.0.0.1".parse().unwrap(),
            None,
            Arc::new(move |r: &Request| {
                if r.target.starts_with("/token") {
                    token_answer()
                } else {
                    registry_double::image_content(&image, r).unwrap_or_else(|| Response::new(404, ""))
                }
            }),
        )
        .await
    };
    let registry = {
        let (image, local) = (image.clone(), local.host.clone());
        registry_double::serve(
            ip,
            Some(registry_double::tls_acceptor(&certs)),
            Arc::new(move |r: &Request| {
                let authorized = r.header("authorization") == Some(&format!("Bearer {TOKEN}"));
                let path = r.target.as_str();
                if path.starts_with("/v2/lockstep/redirect-loopback/") {
                    return Response::redirect(format!("http://{local}{path}"));
                }
                if path.starts_with("/v2/lockstep/realm-loopback/") && !authorized {
                    return bearer(&format!("http://{local}/token"));
                }
                registry_double::image_content(&image, r).unwrap_or_else(|| Response::new(404, ""))
            }),
        )
        .await
    };
    let host = registry.host.clone();
    std::fs::create_dir_all(tmp.path().join("certs.d").join(&host)).unwrap();
    std::fs::copy(&certs.ca, tmp.path().join("certs.d").join(&host).join("ca.crt")).unwrap();
    std::fs::write(tmp.path().join("registries.conf"), "").unwrap();
    let mut config = Config { root: tmp.path().join("root"), runroot: tmp.path().join("run"), ..Default::default() };
    config.image.registries_conf = tmp.path().join("registries.conf");
    config.image.certs_dir = tmp.path().join("certs.d");
    config.image.pull_progress_timeout_secs = 10;
    let service = Arc::new(ImageService::open(&config).unwrap());
    let creds = Credentials { username: "alice".into(), password: "secret".into(), ..Default::default() };

    let err =
        service.pull(&format!("{host}/lockstep/redirect-loopback:1"), creds.clone()).await.unwrap_err().to_string();
    assert!(err.contains(&format!("http://{}/", local.host)) && err.contains("plain HTTP to a loopback host"), "{err}");
    let err = service.pull(&format!("{host}/lockstep/realm-loopback:1"), creds.clone()).await.unwrap_err().to_string();
    assert!(err.contains("token realm") && err.contains("plain HTTP to a loopback host"), "{err}");

    let reached: Vec<String> = local.requests().iter().map(|r| r.target.clone()).collect();
    assert!(reached.is_empty(), "a remote registry sent lockstepd to plain HTTP on loopback: {reached:?}");
    // The same registry's own content still pulls.
    let record = service.pull(&format!("{host}/lockstep/ok:1"), creds).await.unwrap();
    assert_eq!(record.id.to_string(), image.config_digest);
}
