//! The OCI distribution client: manifests and blobs over HTTP(S), with Basic and bearer-token
//! auth, per-host CAs and client certificates from certs.d, and plain HTTP for insecure and
//! loopback registries only: redirects and token realms are followed by hand, each hop checked
//! (no plain HTTP to any other host, TLS verified for every host but an insecure registry's
//! own, credentials only to the registry and its token service). Every wait is bounded by the
//! pull's progress timeout. Touches only the network and reads certs.d.

pub mod auth;
pub mod manifest;
pub mod proxy;
#[cfg(test)]
pub(crate) mod test_server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE, WWW_AUTHENTICATE,
};
use reqwest::StatusCode;

use super::reference::{Digest, Reference};
use auth::{Challenge, Credentials};

/// Manifests above this size are refused (containerd uses the same limit).
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Token service answers above this size are refused (a token is a few KiB at most).
const MAX_TOKEN_BYTES: usize = 1 << 20;
/// Redirects followed for one request (blob downloads are often redirected once, to storage).
const MAX_REDIRECTS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {host} is unreachable: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("{what} not found in registry {host}")]
    NotFound { host: String, what: String },
    #[error("registry {host} refused access to {what}: {detail}")]
    Denied { host: String, what: String, detail: String },
    #[error("registry {host}: {detail}")]
    Protocol { host: String, detail: String },
    #[error("no progress from registry {host} for {} s while {what}; the pull was cancelled", .after.as_secs())]
    Stalled { host: String, what: String, after: Duration },
    #[error("cannot set up a client for registry {host}: {detail}")]
    Setup { host: String, detail: String },
    #[error("registry {host}: refused {detail}")]
    Insecure { host: String, detail: String },
}

/// HTTP clients per registry host, built once: each carries that host's CAs from certs.d.
pub struct Registry {
    certs_dir: PathBuf,
    progress_timeout: Duration,
    clients: Mutex<HashMap<(String, bool), reqwest::Client>>,
    /// Hosts found to speak plain HTTP (insecure or loopback ones only).
    plain_http: Mutex<HashMap<String, bool>>,
    /// HTTP_PROXY, HTTPS_PROXY and NO_PROXY as lockstepd's environment gave them at start.
    proxies: proxy::ProxyRules,
}

/// A manifest as fetched: its bytes, digest and the media type the registry said.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub content_type: String,
}

/// One conversation with one repository on one registry: the auth it earned is reused.
pub struct Session<'a> {
    registry: &'a Registry,
    reference: Reference,
    insecure: bool,
    credentials: Credentials,
    authorization: Option<String>,
}

fn is_loopback(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    let bare =
        host.rsplit_once(':').map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `target` may be reached over plain HTTP because it is on loopback: only when the
/// registry (`registry`) is on loopback too, so nothing remote chooses what is fetched there.
fn plain_loopback_allowed(registry: &str, target: &str) -> bool {
    is_loopback(registry) && is_loopback(target)
}

/// The API host of a registry name (docker.io is served from registry-1.docker.io).
fn api_host(registry: &str) -> &str {
    if registry == super::reference::DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        registry
    }
}

impl Registry {
    pub fn new(certs_dir: PathBuf, progress_timeout: Duration) -> Registry {
        Registry {
            certs_dir,
            progress_timeout,
            clients: Mutex::default(),
            plain_http: Mutex::default(),
            proxies: proxy::ProxyRules::from_env(),
        }
    }

    pub fn progress_timeout(&self) -> Duration {
        self.progress_timeout
    }

    pub fn session(&self, reference: Reference, insecure: bool, credentials: Credentials) -> Session<'_> {
        let authorization =
            (!credentials.registry_token.is_empty()).then(|| format!("Bearer {}", credentials.registry_token));
        Session { registry: self, reference, insecure, credentials, authorization }
    }

    fn client(&self, host: &str, insecure: bool) -> Result<reqwest::Client, RegistryError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&(host.to_string(), insecure)) {
            return Ok(c.clone());
        }
        let setup = |detail: String| RegistryError::Setup { host: host.to_string(), detail };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.progress_timeout)
            // Only the proxies `self.proxies` gives for this host, not reqwest's own reading.
            .no_proxy()
            // Followed by hand (Session::follow), each hop checked.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lockstep/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(insecure);
        for (https, variable) in [(true, "HTTPS_PROXY"), (false, "HTTP_PROXY")] {
            if let Some(url) = self.proxies.proxy_for(host, https) {
                let bad = |e: reqwest::Error| setup(format!("{variable} {url:?} is not a proxy URL: {e}"));
                let proxy = if https { reqwest::Proxy::https(&url) } else { reqwest::Proxy::http(&url) };
                builder = builder.proxy(proxy.map_err(bad)?);
            }
        }
        let (cas, identity) = host_certs(&self.certs_dir.join(host)).map_err(setup)?;
        for ca in cas {
            builder = builder.add_root_certificate(ca);
        }
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        let client = builder.build().map_err(|e| setup(e.to_string()))?;
        clients.insert((host.to_string(), insecure), client.clone());
        Ok(client)
    }
}

/// The `*.crt` CAs and the optional `*.cert` + `*.key` client identity of a certs.d/HOST dir.
fn host_certs(dir: &Path) -> Result<(Vec<reqwest::Certificate>, Option<reqwest::Identity>), String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let mut cas = Vec::new();
    let mut identity = None;
    for p in &paths {
        match p.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                let bundle = reqwest::Certificate::from_pem_bundle(&read(p)?)
                    .map_err(|e| format!("{} is not a PEM certificate: {e}", p.display()))?;
                if bundle.is_empty() {
                    return Err(format!("{} holds no PEM certificate", p.display()));
                }
                cas.extend(bundle);
            }
            Some("cert") => {
                let key = p.with_extension("key");
                let mut pem = read(p)?;
                pem.extend(read(&key)?);
                identity = Some(
                    reqwest::Identity::from_pem(&pem)
                        .map_err(|e| format!("{} with {}: not a client identity: {e}", p.display(), key.display()))?,
                );
            }
            _ => {}
        }
    }
    Ok((cas, identity))
}

impl Session<'_> {
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// A second session with the auth this one earned, for a parallel download.
    pub fn fork(&self) -> Session<'_> {
        Session {
            registry: self.registry,
            reference: self.reference.clone(),
            insecure: self.insecure,
            credentials: self.credentials.clone(),
            authorization: self.authorization.clone(),
        }
    }

    fn host(&self) -> &str {
        api_host(&self.reference.registry)
    }

    fn stalled(&self, what: &str) -> RegistryError {
        RegistryError::Stalled {
            host: self.reference.registry.clone(),
            what: what.to_string(),
            after: self.registry.progress_timeout,
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> RegistryError {
        RegistryError::Unreachable { host: self.reference.registry.clone(), detail: e.to_string() }
    }

    /// GET `path` under /v2/<repository>/, answering challenges once.
    async fn get(&mut self, path: &str, accept: Option<&str>, what: &str) -> Result<reqwest::Response, RegistryError> {
        self.get_from(path, accept, None, what).await
    }

    /// [`Session::get`], asking for the bytes from `range_from` on when it is given.
    async fn get_from(
        &mut self,
        path: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let host = self.host().to_string();
        let url_path = format!("/v2/{}/{path}", self.reference.repository);
        let mut response = self.send(&host, &url_path, accept, range_from, what).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenge =
                response.headers().get(WWW_AUTHENTICATE).and_then(|h| h.to_str().ok()).and_then(auth::parse_challenge);
            let tried_before = self.authorization.is_some();
            match challenge {
                Some(c) if !tried_before || !matches!(c, Challenge::Basic) => {
                    self.authorize(c).await?;
                    response = self.send(&host, &url_path, accept, range_from, what).await?;
                }
                _ => {}
            }
        }
        match response.status() {
            s if s.is_success() => Ok(response),
            StatusCode::NOT_FOUND => {
                Err(RegistryError::NotFound { host: self.reference.registry.clone(), what: what.to_string() })
            }
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Err(RegistryError::Denied {
                host: self.reference.registry.clone(),
                what: what.to_string(),
                detail: format!(
                    "HTTP {s}{}",
                    if self.credentials == Credentials::default() { " (no credentials were given)" } else { "" }
                ),
            }),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Err(self.unreachable(format!("HTTP {s} for {what}")))
            }
            s => Err(RegistryError::Protocol {
                host: self.reference.registry.clone(),
                detail: format!("unexpected HTTP {s} for {what}"),
            }),
        }
    }

    /// Whether `host` may be spoken to over plain HTTP (or, for `insecure`, unverified TLS):
    /// only this session's registry when it is configured insecure, and loopback hosts when the
    /// registry is itself on loopback. A remote registry must not send lockstepd (root, on the
    /// node) to plain-HTTP services on the node's loopback by a redirect or a token realm.
    fn may_be_plain(&self, host: &str) -> bool {
        (self.insecure && host == self.host()) || plain_loopback_allowed(self.host(), host)
    }

    /// One request, choosing HTTPS or (insecure or loopback registries only) plain HTTP, and
    /// following redirects.
    async fn send(
        &self,
        host: &str,
        path: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let may_be_plain = self.may_be_plain(host);
        let known_plain =
            *self.registry.plain_http.lock().unwrap_or_else(|p| p.into_inner()).get(host).unwrap_or(&false);
        let schemes: &[&str] = match (may_be_plain, known_plain) {
            (true, true) => &["http"],
            (true, false) => &["https", "http"],
            (false, _) => &["https"],
        };
        let client = self.registry.client(host, self.insecure)?;
        let mut last_error = None;
        for scheme in schemes {
            let url = format!("{scheme}://{host}{path}");
            let mut request = client.get(&url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(a) = &self.authorization {
                request = request.header(AUTHORIZATION, a);
            }
            if let Some(from) = range_from {
                request = request.header(RANGE, format!("bytes={from}-"));
            }
            let last_scheme = scheme == schemes.last().unwrap_or(&"https");
            match tokio::time::timeout(self.registry.progress_timeout, request.send()).await {
                Err(_) if last_scheme => return Err(self.stalled(what)),
                // A plain-HTTP server that never answers a TLS hello: try HTTP.
                Err(_) => {}
                Ok(Ok(response)) => {
                    if *scheme == "http" {
                        self.registry
                            .plain_http
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(host.to_string(), true);
                    }
                    return self.follow(response, accept, range_from, what).await;
                }
                Ok(Err(e)) => last_error = Some(e),
            }
        }
        let detail = last_error.map(|e| error_chain(&e)).unwrap_or_default();
        Err(self.unreachable(detail))
    }

    /// Follows the redirects a response starts, each hop checked: never from HTTPS to plain
    /// HTTP, plain HTTP only to a host that may be plain, TLS verified for every host but an
    /// insecure registry's own, and the Authorization header only to the registry itself.
    async fn follow(
        &self,
        mut response: reqwest::Response,
        accept: Option<&str>,
        range_from: Option<u64>,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        for _ in 0..MAX_REDIRECTS {
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let Some(location) = response.headers().get(LOCATION).and_then(|l| l.to_str().ok()) else {
                return Ok(response);
            };
            let from = response.url().clone();
            let to = from.join(location).map_err(|e| RegistryError::Protocol {
                host: self.reference.registry.clone(),
                detail: format!("bad redirect {location:?} for {what}: {e}"),
            })?;
            let to_host = url_host(&to);
            self.check_hop(&to, &to_host, &format!("a redirect for {what}"))?;
            let client = self.registry.client(&to_host, self.insecure && to_host == self.host())?;
            let mut request = client.get(to.clone());
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if to_host == self.host() {
                if let Some(a) = &self.authorization {
                    request = request.header(AUTHORIZATION, a);
                }
            }
            if let Some(from) = range_from {
                request = request.header(RANGE, format!("bytes={from}-"));
            }
            response = match tokio::time::timeout(self.registry.progress_timeout, request.send()).await {
                Err(_) => return Err(self.stalled(what)),
                Ok(Err(e)) => return Err(RegistryError::Unreachable { host: to_host, detail: error_chain(&e) }),
                Ok(Ok(r)) => r,
            };
        }
        Err(RegistryError::Protocol {
            host: self.reference.registry.clone(),
            detail: format!("more than {MAX_REDIRECTS} redirects for {what}"),
        })
    }

    /// Refuses plain HTTP to a host that may not be plain (so a redirect from HTTPS to plain
    /// HTTP is refused unless the user declared that host insecure, or both ends are loopback).
    fn check_hop(&self, to: &reqwest::Url, to_host: &str, what: &str) -> Result<(), RegistryError> {
        let refused = |why: &str| RegistryError::Insecure {
            host: self.reference.registry.clone(),
            detail: format!("{what} to {to}: {why}"),
        };
        match to.scheme() {
            "https" => Ok(()),
            "http" if self.may_be_plain(to_host) => Ok(()),
            "http" if is_loopback(to_host) => Err(refused(
                "plain HTTP to a loopback host is allowed only for a registry on loopback, and this one is not",
            )),
            "http" => Err(refused(
                "plain HTTP is allowed only to a registry configured insecure (itself) and, from a registry on \
                 loopback, to loopback hosts",
            )),
            other => Err(refused(&format!("scheme {other:?} is not HTTP(S)"))),
        }
    }

    /// Earns an Authorization header for the challenge.
    async fn authorize(&mut self, challenge: Challenge) -> Result<(), RegistryError> {
        let host = self.reference.registry.clone();
        match challenge {
            Challenge::Basic => {
                if !self.credentials.has_basic() {
                    return Err(RegistryError::Denied {
                        host,
                        what: self.reference.name(),
                        detail: "the registry wants a user name and password and none were given".into(),
                    });
                }
                self.authorization = Some(self.credentials.basic_header());
            }
            Challenge::Bearer { realm, service, scope } => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository));
                let token = self.fetch_token(&realm, service.as_deref(), &scope).await?;
                self.authorization = Some(format!("Bearer {token}"));
            }
        }
        Ok(())
    }

    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String, RegistryError> {
        let host = self.reference.registry.clone();
        let realm_url = reqwest::Url::parse(realm).map_err(|e| RegistryError::Protocol {
            host: host.clone(),
            detail: format!("bad token realm {realm:?}: {e}"),
        })?;
        let realm_host = url_host(&realm_url);
        // The token service gets credentials: HTTPS, verified, unless it may be plain (the
        // insecure registry itself, or loopback from a loopback registry); an insecure
        // registry's flag covers only itself.
        self.check_hop(&realm_url, &realm_host, "the token realm")?;
        let client = self.registry.client(&realm_host, self.insecure && realm_host == self.host())?;
        let mut pairs = vec![("scope", scope)];
        if let Some(s) = service {
            pairs.push(("service", s));
        }
        let request = if !self.credentials.identity_token.is_empty() {
            pairs.extend([
                ("grant_type", "refresh_token"),
                ("refresh_token", self.credentials.identity_token.as_str()),
                ("client_id", "lockstep"),
            ]);
            client
                .post(realm_url)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(auth::form_encode(&pairs))
        } else {
            let mut url = realm_url;
            url.set_query(Some(&auth::form_encode(&pairs)));
            let request = client.get(url);
            if self.credentials.has_basic() {
                request.header(AUTHORIZATION, self.credentials.basic_header())
            } else {
                request
            }
        };
        let response = match tokio::time::timeout(self.registry.progress_timeout, request.send()).await {
            Err(_) => return Err(self.stalled("fetching a token")),
            Ok(Err(e)) => return Err(RegistryError::Unreachable { host: realm_host, detail: error_chain(&e) }),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let body = match read_capped(response, MAX_TOKEN_BYTES, self.registry.progress_timeout).await {
            Ok(b) => b,
            Err(BodyError::Stalled) => return Err(self.stalled("reading a token")),
            Err(BodyError::Failed(detail)) => return Err(RegistryError::Unreachable { host: realm_host, detail }),
            Err(BodyError::TooLarge) => {
                return Err(RegistryError::Protocol {
                    host,
                    detail: format!("the token service {realm} answered more than {MAX_TOKEN_BYTES} bytes"),
                })
            }
        };
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(RegistryError::Unreachable {
                host: realm_host,
                detail: format!("the token service {realm} answered HTTP {status}"),
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Denied {
                host,
                what: self.reference.name(),
                detail: format!("the token service {realm} answered HTTP {status}"),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            host: host.clone(),
            detail: format!("the token service {realm} sent no JSON: {e}"),
        })?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or(RegistryError::Protocol { host, detail: format!("the token service {realm} sent no token") })
    }

    /// The manifest (or index) for a tag or digest, checked against the digest when one is known.
    pub async fn manifest(&mut self, target: &str, expected: Option<&Digest>) -> Result<Fetched, RegistryError> {
        let what = format!("manifest {}:{target}", self.reference.name());
        let response = self.get(&format!("manifests/{target}"), Some(manifest::ACCEPT), &what).await?;
        let content_type =
            response.headers().get(CONTENT_TYPE).and_then(|h: &HeaderValue| h.to_str().ok()).unwrap_or("").to_string();
        let bytes = match read_capped(response, MAX_MANIFEST_BYTES, self.registry.progress_timeout).await {
            Ok(b) => b,
            Err(BodyError::Stalled) => return Err(self.stalled(&format!("reading {what}"))),
            Err(BodyError::Failed(detail)) => return Err(self.unreachable(detail)),
            Err(BodyError::TooLarge) => {
                return Err(RegistryError::Protocol {
                    host: self.reference.registry.clone(),
                    detail: format!("{what} is larger than {MAX_MANIFEST_BYTES} bytes"),
                })
            }
        };
        use sha2::Digest as _;
        let digest = Digest::from_sha256(&sha2::Sha256::digest(&bytes));
        if let Some(expected) = expected {
            if &digest != expected {
                return Err(RegistryError::Protocol {
                    host: self.reference.registry.clone(),
                    detail: format!("digest mismatch for {what}: expected {expected}, got {digest}"),
                });
            }
        }
        Ok(Fetched { bytes, digest, content_type })
    }

    /// Starts a blob download; read it with [`Blob::chunk`].
    pub async fn blob(&mut self, digest: &Digest) -> Result<Blob, RegistryError> {
        self.blob_from(digest, 0).await
    }

    /// Goes on with a blob download that broke after `offset` bytes: asks for the rest with
    /// an HTTP Range; a registry that answers with the whole blob instead (200) has its first
    /// `offset` bytes dropped, so the reader sees the rest either way.
    pub async fn blob_from(&mut self, digest: &Digest, offset: u64) -> Result<Blob, RegistryError> {
        let what = format!("blob {digest} of {}", self.reference.name());
        let range_from = (offset > 0).then_some(offset);
        let response = self.get_from(&format!("blobs/{digest}"), None, range_from, &what).await?;
        let skip = match (offset, response.status()) {
            (0, _) => 0,
            (_, StatusCode::PARTIAL_CONTENT) => {
                let range = response.headers().get(CONTENT_RANGE).and_then(|h| h.to_str().ok()).unwrap_or("");
                if !range.starts_with(&format!("bytes {offset}-")) {
                    return Err(RegistryError::Protocol {
                        host: self.reference.registry.clone(),
                        detail: format!("asked for {what} from byte {offset}, got the range {range:?}"),
                    });
                }
                0
            }
            _ => offset,
        };
        Ok(Blob {
            response,
            progress_timeout: self.registry.progress_timeout,
            host: self.reference.registry.clone(),
            what,
            window_waited: Duration::ZERO,
            window_bytes: 0,
            skip,
        })
    }
}

/// What a blob download must receive within each progress timeout (or reach its end): a
/// registry trickling a few bytes at a time makes no progress either (issue 14, item 9).
pub const MIN_PROGRESS_BYTES: u64 = 64 << 10;

/// A blob being downloaded.
pub struct Blob {
    response: reqwest::Response,
    progress_timeout: Duration,
    host: String,
    what: String,
    /// The current progress window: the time spent waiting for the registry in it (not the
    /// time the unpacker took to make room) and the bytes received.
    window_waited: Duration,
    window_bytes: u64,
    /// Bytes still to drop from the start of the body (a resumed download answered whole).
    skip: u64,
}

impl Blob {
    /// The next piece, None at the end. Less than [`MIN_PROGRESS_BYTES`] within a progress
    /// timeout (none at all, or a trickle) is an error.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, RegistryError> {
        loop {
            let next = self.raw_chunk().await?;
            match next {
                Some(bytes) if self.skip > 0 => {
                    let dropped = self.skip.min(bytes.len() as u64);
                    self.skip -= dropped;
                    if dropped < bytes.len() as u64 {
                        return Ok(Some(bytes.slice(dropped as usize..)));
                    }
                }
                other => return Ok(other),
            }
        }
    }

    async fn raw_chunk(&mut self) -> Result<Option<bytes::Bytes>, RegistryError> {
        let left = self.progress_timeout.saturating_sub(self.window_waited);
        let started = std::time::Instant::now();
        let next = tokio::time::timeout(left, self.response.chunk()).await;
        self.window_waited += started.elapsed();
        match next {
            Err(_) => Err(RegistryError::Stalled {
                host: self.host.clone(),
                what: format!(
                    "downloading {} ({} bytes came in that time, less than {MIN_PROGRESS_BYTES})",
                    self.what, self.window_bytes
                ),
                after: self.progress_timeout,
            }),
            Ok(Err(e)) => Err(RegistryError::Unreachable { host: self.host.clone(), detail: error_chain(&e) }),
            Ok(Ok(c)) => {
                if let Some(bytes) = &c {
                    self.window_bytes += bytes.len() as u64;
                    if self.window_bytes >= MIN_PROGRESS_BYTES {
                        (self.window_waited, self.window_bytes) = (Duration::ZERO, 0);
                    }
                }
                Ok(c)
            }
        }
    }
}

/// Why a small body (a manifest, a token) could not be read whole.
enum BodyError {
    /// No byte for the progress timeout.
    Stalled,
    /// The connection failed (the error chain).
    Failed(String),
    /// Longer than allowed (said by Content-Length, or found while reading).
    TooLarge,
}

/// Reads a body whole, refusing it as soon as it passes `max` bytes: a server cannot make
/// lockstepd hold more than `max` plus one chunk.
async fn read_capped(mut response: reqwest::Response, max: usize, timeout: Duration) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut bytes = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(timeout, response.chunk()).await {
            Err(_) => return Err(BodyError::Stalled),
            Ok(Err(e)) => return Err(BodyError::Failed(error_chain(&e))),
            Ok(Ok(None)) => return Ok(bytes),
            Ok(Ok(Some(c))) => c,
        };
        bytes.extend_from_slice(&chunk);
        if bytes.len() > max {
            return Err(BodyError::TooLarge);
        }
    }
}

/// `host[:port]` of a URL, as registries are named.
fn url_host(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// An error with its causes, which reqwest keeps apart ("error sending request" alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::test_server::{serve, Answer};
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.3.4.5", "[::1]:5000", "::1"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry.io", "10.0.0.1:5000", "localhost.evil.io", "[::2]:80"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    fn session_to<'a>(registry: &'a Registry, host: &str) -> Session<'a> {
        let reference = Reference {
            registry: host.to_string(),
            repository: "library/app".into(),
            target: crate::image::reference::Target::Tag("1".into()),
        };
        registry.session(reference, false, Credentials::default())
    }

    #[tokio::test]
    async fn a_token_service_answering_too_much_fails_the_pull_naming_the_realm() {
        let port = serve(|path, port| {
            if path.starts_with("/v2/") {
                Answer::status(&format!(
                    "401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"t\""
                ))
            } else {
                // 2 MiB, its length said by nothing but the end of the connection.
                Answer::endless(2 << 20)
            }
        });
        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::new(tmp.path().into(), Duration::from_secs(20));
        let started = std::time::Instant::now();
        let err = session_to(&registry, &format!("127.0.0.1:{port}")).manifest("1", None).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("token service http://127.0.0.1:{port}/token answered more than 1048576 bytes")),
            "{text}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }

    #[test]
    fn plain_http_to_loopback_only_from_a_registry_on_loopback() {
        assert!(plain_loopback_allowed("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(plain_loopback_allowed("localhost:5000", "127.0.0.1:9999"), "a token service on another port");
        assert!(!plain_loopback_allowed("registry.io", "127.0.0.1:10250"));
        assert!(!plain_loopback_allowed("10.0.0.1:5000", "localhost:8080"));
        assert!(!plain_loopback_allowed("127.0.0.1:5000", "10.0.0.1:80"));
    }

    #[test]
    fn certs_dir_reads_cas_and_reports_bad_ones() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(host_certs(&tmp.path().join("absent")).unwrap().0.is_empty());
        std::fs::write(tmp.path().join("ca.crt"), "not a certificate").unwrap();
        let err = host_certs(tmp.path()).err().unwrap();
        assert!(err.contains("ca.crt"), "{err}");
    }
}
