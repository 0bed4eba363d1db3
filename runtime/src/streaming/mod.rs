//! lockstepd's streaming server: the URLs that Exec, Attach and PortForward return, served
//! over SPDY/3.1 (what the kubelet and the API server speak) and WebSocket (crictl, newer
//! clients). `tokens` keeps the single-use tokens, `http` accepts connections and upgrades
//! them, `spdy` and `websocket` carry the channels, `remotecommand` runs exec and attach over
//! either, `portforward` forwards ports, `process` drives an exec'd process, `tls` is the
//! optional TLS. What runs in
//! containers and pods is reached through a `Backend`, so that this module touches no state.

pub mod attach;
pub mod http;
pub mod portforward;
pub mod process;
pub mod remotecommand;
pub mod spdy;
pub mod tls;
pub mod tokens;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use lockstep_cri::model;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use tokens::TokenError;

/// What a token stands for.
#[derive(Debug, Clone)]
pub enum Request {
    Exec(model::ExecRequest),
    Attach(model::AttachRequest),
    PortForward(model::PortForwardRequest),
}

/// A terminal size as the resize channel carries it (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The streams of one exec or attach, whatever protocol carries them. A closed `stdin` is the
/// client's end of input; dropping a sender ends that stream for the client. `gone` is
/// cancelled when the client goes away: whatever runs for it must stop.
pub struct CommandIo {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
    pub resize: Option<mpsc::Receiver<TermSize>>,
    pub gone: CancellationToken,
}

/// How an exec ended: the process's exit code, or why it could not run.
pub type ExecResult = Result<i32, String>;

/// What the streaming server asks of the rest of lockstepd.
pub trait Backend: Send + Sync + 'static {
    /// Runs the exec of `request`, its streams in `io`, until the process exits (or the
    /// client goes and the process is killed).
    fn exec(&self, request: model::ExecRequest, io: CommandIo) -> BoxFuture<'static, ExecResult>;
    /// Attaches `io` to the container's own process until it exits or the client goes.
    fn attach(&self, request: model::AttachRequest, io: CommandIo) -> BoxFuture<'static, Result<(), String>>;
    /// A connection to `port` on the loopback of the pod's network namespace.
    fn connect(&self, sandbox_id: String, port: u16) -> BoxFuture<'static, Result<tokio::net::TcpStream, String>>;
}

/// Where the server listens, with or without TLS, how long sessions may idle and how many may
/// run at once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub address: String,
    pub port: u16,
    pub idle_timeout: Duration,
    /// A certificate chain and key: the server speaks TLS only (https:// URLs).
    pub tls: Option<tls::TlsFiles>,
    /// Sessions (upgraded connections) at once; past it a request is answered 503.
    pub max_sessions: usize,
}

/// The sessions that may run at once unless configured otherwise (`stream_max_sessions`).
pub const DEFAULT_MAX_SESSIONS: usize = 256;

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            address: "127.0.0.1".into(),
            port: 0,
            idle_timeout: Duration::from_secs(4 * 3600),
            tls: None,
            max_sessions: DEFAULT_MAX_SESSIONS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot listen for streaming on {address}:{port}: {source}")]
    Listen { address: String, port: u16, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// When a session last moved data; a watchdog ends it once idle too long.
#[derive(Clone)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }

    pub fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Cancels `gone` once nothing moved for `limit`; ends with `gone`.
    pub fn watch(&self, limit: Duration, gone: CancellationToken) {
        let activity = self.clone();
        tokio::spawn(async move {
            loop {
                let idle = activity.idle_for();
                if idle >= limit {
                    tracing::info!(idle_secs = idle.as_secs(), "streaming session idle too long; ending it");
                    gone.cancel();
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(limit - idle) => {}
                    _ = gone.cancelled() => return,
                }
            }
        });
    }
}

/// The running server: hands out URLs, serves them.
pub struct StreamServer {
    base_url: String,
    local: SocketAddr,
    tokens: Arc<tokens::Tokens<Request>>,
}

impl StreamServer {
    /// Binds the listener and serves it on the current tokio runtime.
    pub async fn start(settings: Settings, backend: Arc<dyn Backend>) -> Result<StreamServer, StreamError> {
        let listen_err =
            |source| StreamError::Listen { address: settings.address.clone(), port: settings.port, source };
        // The files are read before anything listens: a bad pair fails the start.
        let tls = settings.tls.as_ref().map(tls::acceptor).transpose()?;
        let host = settings.address.trim_start_matches('[').trim_end_matches(']').to_string();
        let listener = tokio::net::TcpListener::bind((host.as_str(), settings.port)).await.map_err(listen_err)?;
        let local = listener.local_addr().map_err(listen_err)?;
        let shown = match local {
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
            SocketAddr::V4(a) => a.to_string(),
        };
        let tokens = Arc::new(tokens::Tokens::new(tokens::TOKEN_TTL));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let limits = http::Limits { idle: settings.idle_timeout, sessions: http::Sessions::new(settings.max_sessions) };
        tokio::spawn(http::serve(listener, tls, tokens.clone(), backend, limits));
        tracing::info!(address = %shown, %scheme, max_sessions = settings.max_sessions, "streaming server listening");
        Ok(StreamServer { base_url: format!("{scheme}://{shown}"), local, tokens })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The URL that carries `request`, valid once, for a minute.
    pub fn url(&self, request: Request) -> Result<String, TokenError> {
        let kind = match &request {
            Request::Exec(_) => "exec",
            Request::Attach(_) => "attach",
            Request::PortForward(_) => "portforward",
        };
        let token = self.tokens.insert(request)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_session_is_ended_and_a_busy_one_is_not() {
        let busy = Activity::new();
        let busy_gone = CancellationToken::new();
        busy.watch(Duration::from_millis(200), busy_gone.clone());
        let idle = Activity::new();
        let idle_gone = CancellationToken::new();
        idle.watch(Duration::from_millis(200), idle_gone.clone());
        for _ in 0..8 {
            busy.touch();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(idle_gone.is_cancelled(), "a session idle past its limit goes on");
        assert!(!busy_gone.is_cancelled(), "a session that moved data was ended");
        busy_gone.cancel();
    }
}
