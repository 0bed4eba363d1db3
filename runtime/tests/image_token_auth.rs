//! The bearer-token flow of lockstepd's registry client, against the real docker-registry behind
//! a small token gate written here: Debian's registry can only do token auth with a JWT-signing
//! token service, so the gate plays that service (challenge, token endpoint for Basic
//! credentials and OAuth2 refresh tokens) and forwards authorised requests to the registry.

use std::sync::Arc;

use lockstep_runtime::config::Config;
use lockstep_runtime::image::registry::auth::Credentials;
use lockstep_runtime::image::service::ImageService;
use lockstep_testkit::fixtures::{self, registry::LocalRegistry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "tok-lockstep-123";
const REFRESH: &str = "refresh-lockstep-456";

/// What the gate saw, for the assertions.
#[derive(Default)]
struct Seen {
    token_requests: Vec<String>,
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !buf[0].is_ascii_alphabetic() {
            // A TLS hello on this plain-HTTP port: answer as HTTP servers do, and close.
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n").await;
            return None;
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let mut body = buf[end + 4..].to_vec();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request { method, target, headers, body })
}

async fn respond(stream: &mut tokio::net::TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
}

/// Serves the gate on a free port until the test ends; returns its HOST:PORT.
async fn start_gate(registry: String, seen: Arc<std::sync::Mutex<Seen>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let realm = format!("http://{host}/token");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let (realm, registry, client, seen) = (realm.clone(), registry.clone(), client.clone(), seen.clone());
            tokio::spawn(async move {
                let Some(request) = read_request(&mut stream).await else { return };
                if request.target.starts_with("/token") {
                    let basic = format!(
                        "Basic {}",
                        base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            format!("{}:{}", fixtures::registry::AUTH_USER, fixtures::registry::AUTH_PASSWORD)
                        )
                    );
                    let body = String::from_utf8_lossy(&request.body).into_owned();
                    seen.lock().unwrap().token_requests.push(format!("{} {} {body}", request.method, request.target));
                    let by_password =
                        request.method == "GET" && request.header("authorization") == Some(basic.as_str());
                    let by_refresh = request.method == "POST"
                        && body.contains("grant_type=refresh_token")
                        && body.contains(&format!("refresh_token={REFRESH}"));
                    if by_password {
                        respond(
                            &mut stream,
                            200,
                            &[("Content-Type", "application/json".into())],
                            format!("{{\"token\":\"{TOKEN}\"}}").as_bytes(),
                        )
                        .await;
                    } else if by_refresh {
                        respond(
                            &mut stream,
                            200,
                            &[("Content-Type", "application/json".into())],
                            format!("{{\"access_token\":\"{TOKEN}\"}}").as_bytes(),
                        )
                        .await;
                    } else {
                        respond(&mut stream, 401, &[], b"bad credentials").await;
                    }
                    return;
                }
                if request.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
                    let repo = request
                        .target
                        .trim_start_matches("/v2/")
                        .split("/manifests/")
                        .next()
                        .unwrap_or("")
                        .split("/blobs/")
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let challenge =
                        format!("Bearer realm=\"{realm}\",service=\"lockstep-gate\",scope=\"repository:{repo}:pull\"");
                    respond(&mut stream, 401, &[("WWW-Authenticate", challenge)], b"{}").await;
                    return;
                }
                let mut forward = client.get(format!("http://{registry}{}", request.target));
                if let Some(accept) = request.header("accept") {
                    forward = forward.header("Accept", accept);
                }
                let Ok(answer) = forward.send().await else { return respond(&mut stream, 502, &[], b"").await };
                let status = answer.status().as_u16();
                let content_type =
                    answer.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let body = answer.bytes().await.unwrap_or_default();
                respond(&mut stream, status, &[("Content-Type", content_type)], &body).await;
            });
        }
    });
    host
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_from_password_refresh_token_or_given_directly() {
    let shell = fixtures::standard().unwrap().into_iter().find(|f| f.repo == fixtures::SHELL).unwrap();
    let registry = LocalRegistry::start().unwrap();
    fixtures::push_all(&registry.host, std::slice::from_ref(&shell)).await.unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let gate = start_gate(registry.host.clone(), seen.clone()).await;
    let image = shell.reference(&gate);

    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config { root: tmp.path().join("root"), runroot: tmp.path().join("run"), ..Default::default() };
    config.image.registries_conf = tmp.path().join("none.conf");
    let service = Arc::new(ImageService::open(&config).unwrap());

    let err = service.pull(&image, Credentials::default()).await.unwrap_err().to_string();
    assert!(err.contains("refused access"), "{err}");

    let by_password = Credentials {
        username: fixtures::registry::AUTH_USER.into(),
        password: fixtures::registry::AUTH_PASSWORD.into(),
        ..Default::default()
    };
    assert_eq!(service.pull(&image, by_password).await.unwrap().id.to_string(), shell.id());
    service.remove(&image).await.unwrap();

    let by_refresh = Credentials { identity_token: REFRESH.into(), ..Default::default() };
    assert_eq!(service.pull(&image, by_refresh).await.unwrap().id.to_string(), shell.id());
    service.remove(&image).await.unwrap();

    let before = seen.lock().unwrap().token_requests.len();
    let direct = Credentials { registry_token: TOKEN.into(), ..Default::default() };
    assert_eq!(service.pull(&image, direct).await.unwrap().id.to_string(), shell.id());
    assert_eq!(seen.lock().unwrap().token_requests.len(), before, "a registry token needs no token request");

    let requests = seen.lock().unwrap().token_requests.clone();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /token?")
            && r.contains("scope=repository%3Alockstep%2Fshell%3Apull")
            && r.contains("service=lockstep-gate")),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.starts_with("POST /token") && r.contains("grant_type=refresh_token")),
        "{requests:?}"
    );
}
