//! A registry connection dropped in the middle of a layer: a TCP forwarder on 127.0.0.1 in front
//! of the run's registry that reads the HTTP/1.1 requests and responses passing through and,
//! when told, closes the connection halfway through the body of a chosen layer blob (every
//! time, or once). A round pulls an image the load does not use through it: with every try cut
//! the pull must fail with a clear status and leave no image and no temporary file; a pull cut
//! once shows whether the runtime resumes; a pull not cut must succeed.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use lockstep_cri::model;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{bounded, clear, line, Round};
use crate::soak::load::{lock, Load};

/// A response head longer than this is not HTTP the proxy follows: passed on untouched.
const MAX_HEAD: usize = 64 << 10;

const PASS: u8 = 0;
const CUT_ALWAYS: u8 = 1;
const CUT_ONCE: u8 = 2;

#[derive(Default)]
struct Control {
    mode: AtomicU8,
    digests: Mutex<BTreeSet<String>>,
    cuts: AtomicUsize,
}

impl Control {
    /// Whether the body of this blob is to be cut now (a cut-once proxy passes after one).
    fn cut(&self, digest: &str) -> bool {
        let mode = self.mode.load(Ordering::SeqCst);
        if mode == PASS || !lock(&self.digests).contains(digest) {
            return false;
        }
        mode == CUT_ALWAYS || self.mode.compare_exchange(CUT_ONCE, PASS, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }
}

/// The forwarder: `host` (`127.0.0.1:PORT`) reaches the registry behind it.
pub struct Proxy {
    pub host: String,
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot listen on 127.0.0.1")?;
        let host = listener.local_addr().context("no local address")?.to_string();
        let control = Arc::new(Control::default());
        let upstream = upstream.to_string();
        let shared = control.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, control) = (upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        forward(client, server, control).await;
                    }
                });
            }
        });
        Ok(Proxy { host, control, task })
    }

    /// Cut the bodies of these blobs halfway: every time (`always`) or the next one only.
    pub fn cut(&self, digests: &[String], always: bool) {
        *lock(&self.control.digests) = digests.iter().cloned().collect();
        self.control.mode.store(if always { CUT_ALWAYS } else { CUT_ONCE }, Ordering::SeqCst);
    }

    pub fn pass(&self) {
        self.control.mode.store(PASS, Ordering::SeqCst);
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.control.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A request as the response to it needs: its method and the blob it asks for.
struct Asked {
    head: bool,
    blob: Option<String>,
}

/// Where `find` first occurs in `bytes`.
fn find(bytes: &[u8], what: &[u8]) -> Option<usize> {
    bytes.windows(what.len()).position(|w| w == what)
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (key, value) = l.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_string())
    })
}

/// The requests in a client's bytes so far (heads only: a registry pull sends no bodies; a
/// request with a body is followed by its Content-Length). Returns how many bytes were used.
fn requests(buffer: &[u8], asked: &mut VecDeque<Asked>) -> usize {
    let mut used = 0;
    while let Some(end) = find(&buffer[used..], b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buffer[used..used + end]).into_owned();
        let length: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        if buffer.len() < used + end + 4 + length {
            break;
        }
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or_default();
        let path = words.next().unwrap_or_default();
        let blob = path.split_once("/blobs/").map(|(_, d)| d.split('?').next().unwrap_or(d).to_string());
        asked.push_back(Asked { head: method == "HEAD", blob });
        used += end + 4 + length;
    }
    used
}

/// Copies both ways; the responses are followed so that a chosen blob's body is cut halfway.
async fn forward(client: TcpStream, server: TcpStream, control: Arc<Control>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let asked = Arc::new(Mutex::new(VecDeque::<Asked>::new()));
    let requests_seen = asked.clone();
    let upward = tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            let n = match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&chunk[..n]);
            let used = requests(&pending, &mut lock(&requests_seen));
            pending.drain(..used);
            if pending.len() > MAX_HEAD {
                pending.clear();
            }
            if server_write.write_all(&chunk[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    });
    let _ = downward(&mut server_read, &mut client_write, &asked, &control).await;
    upward.abort();
    let _ = client_write.shutdown().await;
}

/// The server's bytes to the client; Err(()) when the connection was cut (or broke).
async fn downward(
    server: &mut tokio::net::tcp::OwnedReadHalf,
    client: &mut tokio::net::tcp::OwnedWriteHalf,
    asked: &Mutex<VecDeque<Asked>>,
    control: &Control,
) -> Result<(), ()> {
    enum State {
        Head(Vec<u8>),
        Body { left: u64, cut_after: Option<u64> },
        Raw,
    }
    let mut state = State::Head(Vec::new());
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = server.read(&mut chunk).await.map_err(|_| ())?;
        if n == 0 {
            return Ok(());
        }
        let mut bytes = &chunk[..n];
        while !bytes.is_empty() {
            match &mut state {
                State::Raw => {
                    client.write_all(bytes).await.map_err(|_| ())?;
                    bytes = &[];
                }
                State::Head(head) => {
                    let before = head.len();
                    head.extend_from_slice(bytes);
                    let Some(end) = find(head, b"\r\n\r\n") else {
                        if head.len() > MAX_HEAD {
                            client.write_all(head).await.map_err(|_| ())?;
                            state = State::Raw;
                        }
                        bytes = &[];
                        continue;
                    };
                    let text = String::from_utf8_lossy(&head[..end]).into_owned();
                    client.write_all(&head[..end + 4]).await.map_err(|_| ())?;
                    bytes = &bytes[end + 4 - before..];
                    let request = lock(asked).pop_front();
                    let code: u16 = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                    let length: Option<u64> = header(&text, "content-length").and_then(|v| v.parse().ok());
                    let bodiless = request.as_ref().is_some_and(|r| r.head) || code == 204 || code == 304;
                    state = match (bodiless, length) {
                        (true, _) => State::Head(Vec::new()),
                        (false, None) => State::Raw,
                        (false, Some(length)) => {
                            let blob = request.and_then(|r| r.blob).filter(|_| code == 200 || code == 206);
                            // A whole blob is cut halfway; a resumed one (206, a Range) where it
                            // starts, so a runtime that resumes without end still fails.
                            let cut_after = blob.filter(|d| length > 1 && control.cut(d)).map(|_| {
                                if code == 206 {
                                    0
                                } else {
                                    length / 2
                                }
                            });
                            if cut_after == Some(0) {
                                let _ = client.flush().await;
                                control.cuts.fetch_add(1, Ordering::SeqCst);
                                return Err(());
                            }
                            if length == 0 {
                                State::Head(Vec::new())
                            } else {
                                State::Body { left: length, cut_after }
                            }
                        }
                    };
                }
                State::Body { left, cut_after } => {
                    let take = (bytes.len() as u64).min(*left) as usize;
                    if let Some(after) = cut_after {
                        if (take as u64) >= *after {
                            client.write_all(&bytes[..*after as usize]).await.map_err(|_| ())?;
                            let _ = client.flush().await;
                            control.cuts.fetch_add(1, Ordering::SeqCst);
                            return Err(());
                        }
                        *after -= take as u64;
                    }
                    client.write_all(&bytes[..take]).await.map_err(|_| ())?;
                    *left -= take as u64;
                    bytes = &bytes[take..];
                    if *left == 0 {
                        state = State::Head(Vec::new());
                    }
                }
            }
        }
    }
}

/// The images a round pulls: fixtures the load never pulls, each with a layer of its own (the
/// shared busybox layer is already in the store, so only those are fetched and cut).
pub const ROUND_IMAGES: [&str; 3] =
    [lockstep_testkit::fixtures::WEB, lockstep_testkit::fixtures::WHITEOUT, lockstep_testkit::fixtures::ZSTD];

/// Temporary download places of known runtimes under their state dirs (lockstepd's
/// `images/tmp`, containerd's content ingest): entries there after a failed pull are counted.
pub fn download_dirs(state_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for dir in state_dirs {
        for sub in ["images/tmp", "io.containerd.content.v1.content/ingest"] {
            let path = dir.join(sub);
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    dirs
}

fn entries(dirs: &[PathBuf]) -> usize {
    dirs.iter().map(|d| std::fs::read_dir(d).map(|e| e.count()).unwrap_or(0)).sum()
}

/// The image names and digest references the runtime lists that start with `prefix`.
async fn listed(load: &Load, prefix: &str) -> Result<Vec<String>, tonic::Status> {
    let mut client = bounded(load.client());
    let images = client.list_images(model::ListImagesRequest::default()).await?.images;
    Ok(images
        .into_iter()
        .flat_map(|i| i.repo_tags.into_iter().chain(i.repo_digests))
        .filter(|n| n.starts_with(prefix))
        .collect())
}

async fn pull(load: &Load, reference: &str) -> Result<String, tonic::Status> {
    let mut client = bounded(load.client());
    client.set_timeout(Some(Duration::from_secs(120)));
    let image = Some(model::ImageSpec { image: reference.to_string(), ..Default::default() });
    client.pull_image(model::PullImageRequest { image, ..Default::default() }).await.map(|r| r.image_ref)
}

/// A pull of `reference` while the proxy cuts the layers `digests` (every time, or once); what
/// it answered and how many connections were cut.
async fn pull_cut(
    load: &Load,
    proxy: &Proxy,
    reference: &str,
    digests: &[String],
    always: bool,
) -> (Result<String, tonic::Status>, usize) {
    let cuts = proxy.cuts();
    proxy.cut(digests, always);
    let pulled = pull(load, reference).await;
    proxy.pass();
    (pulled, proxy.cuts() - cuts)
}

async fn remove(load: &Load, reference: &str, round: &mut Round) {
    let mut client = bounded(load.client());
    let image = Some(model::ImageSpec { image: reference.to_string(), ..Default::default() });
    if let Err(e) = client.remove_image(model::RemoveImageRequest { image }).await {
        round.wrong(format!("RemoveImage {reference}: {}", line(&e)));
    }
}

/// One round: the `n`th image of ROUND_IMAGES through the proxy, cut every time, then cut
/// once, then not at all.
pub async fn round(
    load: &Load,
    proxy: &Proxy,
    registry: &lockstep_testkit::fixtures::env::RegistryEnv,
    state_dirs: &[PathBuf],
    n: usize,
) -> Round {
    let fixture = registry.fixture(ROUND_IMAGES[n % ROUND_IMAGES.len()]);
    let reference = fixture.reference(&proxy.host);
    let prefix = format!("{}/{}", proxy.host, fixture.repo);
    let mut round = Round::new(format!("registry-drop: pull {} through a proxy cutting its layers", fixture.repo));
    let digests: Vec<String> = fixture.image.layers.iter().map(|l| l.digest.clone()).collect();
    let downloads = download_dirs(state_dirs);
    // The load pulls from the registry itself, not through the proxy, and the round's images
    // share only layers already stored: no cycle is excused while a round runs.
    remove(load, &reference, &mut round).await;
    let before_tmp = entries(&downloads);

    // Every try of the layer cut halfway.
    let (cut, cut_times) = pull_cut(load, proxy, &reference, &digests, true).await;
    match &cut {
        Ok(_) if cut_times == 0 => {
            round.saw("cut every time: no layer was fetched (already in the store): not exercised")
        }
        Ok(_) => round.wrong(format!("cut every time ({cut_times} cuts): PullImage succeeded")),
        Err(e) if clear(e) => round.saw(format!("cut every time ({cut_times} cuts): PullImage {}", line(e))),
        Err(e) => round.wrong(format!("cut every time ({cut_times} cuts): PullImage answered unclearly: {}", line(e))),
    }
    if cut.is_ok() {
        // So that the next pulls fetch the layers again.
        remove(load, &reference, &mut round).await;
    } else {
        match listed(load, &prefix).await {
            Ok(names) if names.is_empty() => round.saw("no image listed after the failed pull"),
            Ok(names) => round.wrong(format!("the failed pull left {} listed", names.join(", "))),
            Err(e) => round.wrong(format!("ListImages: {}", line(&e))),
        }
        // The runtime may take a moment to drop its partial download.
        let mut left = entries(&downloads);
        for _ in 0..50 {
            if left <= before_tmp {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = entries(&downloads);
        }
        if left > before_tmp {
            let places: Vec<String> = downloads.iter().map(|d| d.display().to_string()).collect();
            round.wrong(format!("{} partial download files left in {} (were {before_tmp})", left, places.join(", ")));
        } else if !downloads.is_empty() {
            round.saw("no partial download left");
        }
    }

    // One cut: a runtime that resumes (an HTTP Range) finishes the pull.
    let (once, cut_times) = pull_cut(load, proxy, &reference, &digests, false).await;
    match &once {
        Ok(_) if cut_times == 0 => round.saw("cut once: not exercised (no layer fetched)"),
        Ok(_) => round.saw("cut once: the pull went on and succeeded"),
        Err(e) => round.saw(format!("cut once: PullImage {} (no resume)", line(e))),
    }
    if once.is_ok() {
        remove(load, &reference, &mut round).await;
    }

    // Not cut: must succeed.
    match pull(load, &reference).await {
        Ok(id) => {
            let short: String = id.chars().take(19).collect();
            round.saw(format!("not cut: pulled ({short}…)"));
            remove(load, &reference, &mut round).await;
        }
        Err(e) => round.wrong(format!("not cut: PullImage {}", line(&e))),
    }
    round
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_by_their_heads_and_a_blob_is_named() {
        let mut asked = VecDeque::new();
        let bytes =
            b"HEAD /v2/a/manifests/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/a/blobs/sha256:ab HTTP/1.1\r\n\r\nGET /v2/b/bl";
        let used = requests(bytes, &mut asked);
        assert_eq!(asked.len(), 2);
        assert!(asked[0].head && asked[0].blob.is_none());
        assert_eq!(asked[1].blob.as_deref(), Some("sha256:ab"));
        assert_eq!(&bytes[used..], b"GET /v2/b/bl");
    }

    /// A one-shot HTTP server that answers each request with `body`.
    async fn server(body: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let Ok(n) = socket.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        while let Some(end) = find(&buffer, b"\r\n\r\n") {
                            let request = String::from_utf8_lossy(&buffer[..end]).into_owned();
                            buffer.drain(..end + 4);
                            // `Range: bytes=N-` is answered 206 with the rest.
                            let from: usize = header(&request, "range")
                                .and_then(|r| r.strip_prefix("bytes=")?.trim_end_matches('-').parse().ok())
                                .unwrap_or(0);
                            let status = if from > 0 { "206 Partial Content" } else { "200 OK" };
                            let rest = &body[from.min(body.len())..];
                            let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n", rest.len());
                            if socket.write_all(head.as_bytes()).await.is_err() || socket.write_all(rest).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                });
            }
        });
        host
    }

    /// Sends one GET on a fresh connection and reads until the body is whole or the
    /// connection ends: the body bytes received, and the Content-Length.
    async fn get(host: &str, path: &str) -> (usize, usize) {
        get_from(host, path, 0).await
    }

    /// As `get`, resuming at byte `from` (a Range request).
    async fn get_from(host: &str, path: &str, from: usize) -> (usize, usize) {
        let mut socket = TcpStream::connect(host).await.unwrap();
        let range = if from > 0 { format!("Range: bytes={from}-\r\n") } else { String::new() };
        socket.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{range}\r\n").as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut chunk)).await;
            let Ok(Ok(n)) = read else { break };
            if n == 0 {
                break;
            }
            received.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&received, b"\r\n\r\n") {
                let length: usize = header(&String::from_utf8_lossy(&received[..end]), "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if received.len() - end - 4 >= length {
                    break;
                }
            }
        }
        let end = find(&received, b"\r\n\r\n").map_or(received.len(), |e| e + 4);
        let length = header(&String::from_utf8_lossy(&received[..end]), "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (received.len() - end, length)
    }

    #[tokio::test]
    async fn a_chosen_blob_is_cut_halfway_every_time_or_once_and_others_pass_whole() {
        let body = vec![7u8; 100_000];
        let upstream = server(body.clone()).await;
        let proxy = Proxy::start(&upstream).await.unwrap();
        let digest = "sha256:0123".to_string();
        proxy.cut(std::slice::from_ref(&digest), true);
        let (got, length) = get(&proxy.host, "/v2/x/blobs/sha256:0123").await;
        assert_eq!((got, length), (50_000, 100_000));
        let (got, _) = get(&proxy.host, "/v2/x/blobs/sha256:0123").await;
        assert_eq!(got, 50_000, "cut every time");
        // A resume (206) is cut where it starts: no progress for a runtime that resumes forever.
        assert_eq!(get_from(&proxy.host, "/v2/x/blobs/sha256:0123", 50_000).await, (0, 50_000));
        let (got, _) = get(&proxy.host, "/v2/x/blobs/sha256:other").await;
        assert_eq!(got, 100_000, "another blob passes");
        assert_eq!(proxy.cuts(), 3);
        proxy.cut(std::slice::from_ref(&digest), false);
        assert_eq!(get(&proxy.host, "/v2/x/blobs/sha256:0123").await.0, 50_000);
        assert_eq!(get(&proxy.host, "/v2/x/blobs/sha256:0123").await.0, 100_000, "cut once only");
        proxy.pass();
        assert_eq!(proxy.cuts(), 4);
    }
}
