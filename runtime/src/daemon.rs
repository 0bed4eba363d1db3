//! Starting and stopping lockstepd: state directories, the one-daemon-per-root lock, the
//! socket, the CRI services of the pinned minor, and a clean stop that leaves containers be.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockstep_cri::Minor;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;

use crate::authority::AuthorityFix;
use crate::config::Config;
use crate::image::service::ImageService;
use crate::info::RuntimeInfo;
use crate::metrics::Metrics;
use crate::persist::{self, PersistError};
use crate::server::metrics::MetricsLayer;
use crate::server::streaming::Streaming;
use crate::server::{Containers, Cri, Sandboxes};
use crate::socket::{self, SocketError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("another lockstepd already uses --root {0}")]
    RootInUse(PathBuf),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    State(#[from] PersistError),
    #[error(transparent)]
    NotCompiled(#[from] lockstep_cri::NotCompiled),
    #[error("sandbox recovery failed: {0}")]
    Sandboxes(#[from] crate::sandbox::SandboxError),
    #[error("container recovery failed: {0}")]
    Containers(#[from] crate::container::ContainerError),
    #[error("recovery panicked ({0})")]
    RecoveryPanicked(String),
    #[error(transparent)]
    Streaming(#[from] crate::streaming::StreamError),
    #[error(transparent)]
    SignaturePolicy(#[from] crate::image::policy::PolicyError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::EndpointError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Reads the signature policy once before serving: a bad file stops the start, naming it (and
/// the line); what it requires but this build cannot verify is said, as pulls it governs fail.
fn check_signature_policy(config: &Config) -> Result<(), crate::image::policy::PolicyError> {
    match crate::image::policy::Policy::configured(&config.image.signature_policy)? {
        None => tracing::info!(
            "no signature policy (image.signature_policy, /etc/containers/policy.json): every image is accepted"
        ),
        Some(policy) => {
            tracing::info!(path = %policy.path.display(), "signature policy");
            for requirement in policy.unverifiable() {
                tracing::warn!(%requirement, "the signature policy requires what lockstepd cannot verify: pulls it governs are refused");
            }
        }
    }
    Ok(())
}

/// Serves the CRI of `minor` until `shutdown` completes, then removes the socket.
pub async fn run(
    mut config: Config,
    minor: Minor,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    // Other users may pass through the state directories (0711) but see nothing in those that
    // hold what containers see (layers, writable layers, pod files): 0700.
    // Resolved once (/var/run is often a symlink to /run): the paths recorded and compared with
    // /proc/self/mountinfo are then the kernel's own.
    for dir in [&mut config.root, &mut config.runroot] {
        persist::restrict_dir(dir, 0o711)?;
        *dir = std::fs::canonicalize(&*dir).map_err(|source| DaemonError::StateDir { path: dir.clone(), source })?;
    }
    persist::restrict_dir(&config.runroot.join("sandboxes"), 0o700)?;
    // Mounted container root filesystems (setuid binaries, devices) and bundles (environment).
    persist::restrict_dir(&config.runroot.join("containers"), 0o700)?;
    // Records (a pod's annotations, its CNI attachment) and the OCI runtime's calls (an exec's
    // process with the container's whole environment, the runtime's logs): lockstepd's alone.
    for dir in [config.root.join("sandboxes"), config.root.join("cni"), config.runroot.join("oci")] {
        persist::restrict_dir(&dir, 0o700)?;
    }
    let _lock = lock_root(&config.root)?;
    // What a daemon killed in the middle of an OCI runtime call left of that call.
    let swept = crate::oci::sweep_call_files(&config.runroot.join("oci"));
    if swept > 0 {
        tracing::info!(files = swept, "removed the OCI runtime call files of a daemon killed mid-call");
    }
    check_signature_policy(&config)?;
    let socket_path = config.socket_path();
    let images = Arc::new(ImageService::open(&config)?);
    let info = Arc::new(RuntimeInfo::new(minor, config)?);
    log_handlers(&info);
    let sandboxes = recover_sandboxes(info.clone()).await?;
    let containers = recover_containers(info.clone(), sandboxes.clone(), images.clone()).await?;
    sandboxes.set_containers(containers.clone());
    let streaming = start_streaming(&info, containers.clone(), sandboxes.clone()).await?;
    let metrics = Arc::new(Metrics::new());
    containers.set_metrics(metrics.clone());
    let endpoint = start_metrics(&info, metrics.clone(), containers.clone()).await?;
    let cri = Arc::new(Cri { info, sandboxes, containers, images, streaming, metrics: metrics.clone() });
    let routes = lockstep_cri::routes(minor, cri.clone(), cri)?;
    let listener = socket::listen(&socket_path)?;
    tracing::info!(socket = %socket_path.display(), kubernetes = %minor, "lockstepd serving the CRI");
    // Every client's `:authority` accepted, Python's and Java's gRPC included (authority.rs).
    let incoming = UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityFix::new));
    let served = tonic::transport::Server::builder()
        .layer(MetricsLayer::new(metrics))
        .layer(crate::server::deadline::DeadlineLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Some(endpoint) = endpoint {
        endpoint.abort();
    }
    let _ = std::fs::remove_file(&socket_path);
    tracing::info!("lockstepd stopped; containers keep running");
    Ok(served?)
}

/// lockstepd's metrics endpoint when `metrics_port` asks for one (None: off, the default).
async fn start_metrics(
    info: &RuntimeInfo,
    metrics: Arc<Metrics>,
    containers: Arc<Containers>,
) -> Result<Option<tokio::task::JoinHandle<()>>, DaemonError> {
    let config = info.config();
    if config.metrics_port == 0 {
        return Ok(None);
    }
    let address = crate::metrics::endpoint_address(&config.metrics_address, config.metrics_port)?;
    let census = Arc::new(move || containers.census());
    let (bound, task) = crate::metrics::serve(address, metrics, census).await?;
    tracing::info!(address = %bound, "serving lockstepd's metrics on /metrics");
    Ok(Some(task))
}

/// The streaming server behind Exec, Attach and PortForward; exec terminals arrive on
/// sockets under `<runroot>/streams`.
async fn start_streaming(
    info: &RuntimeInfo,
    containers: Arc<Containers>,
    sandboxes: Arc<Sandboxes>,
) -> Result<Arc<Streaming>, DaemonError> {
    let config = info.config();
    let settings = crate::streaming::Settings {
        address: config.runtime.stream_address.clone(),
        port: config.runtime.stream_port,
        idle_timeout: std::time::Duration::from_secs(config.runtime.stream_idle_timeout_secs.max(1)),
        tls: config.stream_tls(),
        max_sessions: usize::try_from(config.runtime.stream_max_sessions).unwrap_or(usize::MAX),
    };
    let console_dir = config.runroot.join("streams");
    persist::restrict_dir(&console_dir, 0o700)?;
    Ok(Arc::new(Streaming::start(settings, containers, sandboxes, console_dir).await?))
}

/// Loads the sandbox records and recovers them (rollback of half-made ones, checks of ready
/// ones) before the socket opens, so that no RPC sees a half state.
async fn recover_sandboxes(info: Arc<RuntimeInfo>) -> Result<Arc<Sandboxes>, DaemonError> {
    let recovered = tokio::task::spawn_blocking(move || Sandboxes::recover(info)).await;
    match recovered {
        Ok(result) => Ok(result?),
        Err(e) => Err(DaemonError::RecoveryPanicked(format!("sandboxes: {e}"))),
    }
}

/// Loads the container records and reconciles them with the monitors and OCI runtimes before
/// the socket opens; the sandboxes then stop and remove their containers through it.
async fn recover_containers(
    info: Arc<RuntimeInfo>,
    sandboxes: Arc<Sandboxes>,
    images: Arc<ImageService>,
) -> Result<Arc<Containers>, DaemonError> {
    let recovered = tokio::task::spawn_blocking(move || Containers::recover(info, sandboxes, images)).await;
    match recovered {
        Ok(result) => Ok(result?),
        Err(e) => Err(DaemonError::RecoveryPanicked(format!("containers: {e}"))),
    }
}

/// Holds an exclusive lock on `<root>/lockstepd.lock` for the daemon's life: two daemons on
/// one root would corrupt each other's state.
fn lock_root(root: &Path) -> Result<File, DaemonError> {
    let path = root.join("lockstepd.lock");
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| DaemonError::StateDir { path: path.clone(), source })?;
    // A daemon killed a moment ago may still hold the lock for a little while (its open file
    // lives on in a child it forked that has not exec'd yet, or in its last exiting thread):
    // asked again for up to ROOT_LOCK_PATIENCE before the root is taken for another daemon's.
    let deadline = std::time::Instant::now() + ROOT_LOCK_PATIENCE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(DaemonError::RootInUse(root.to_path_buf())),
            Err(std::fs::TryLockError::Error(source)) => return Err(DaemonError::StateDir { path, source }),
        }
    }
}

/// How long a starting lockstepd waits for the root's lock before it says another daemon has it.
const ROOT_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

fn log_handlers(info: &RuntimeInfo) {
    let handlers = info.handlers();
    for h in &handlers.handlers {
        match &h.problem {
            None => {
                tracing::info!(
                    handler = %h.name,
                    version = h.version.as_deref().unwrap_or(""),
                    checked_by = %h.checked_by,
                    probe_ms = h.took.as_millis() as u64,
                    "OCI runtime works"
                )
            }
            Some(problem) => {
                tracing::warn!(handler = %h.name, %problem, probe_ms = h.took.as_millis() as u64, "OCI runtime unusable")
            }
        }
    }
    match handlers.default_handler() {
        Some(h) => tracing::info!(handler = %h.name, "default runtime handler"),
        None => tracing::warn!("no OCI runtime works: Status reports RuntimeReady=false"),
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop lockstepd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_lock_let_go_a_moment_later_is_taken_and_one_kept_is_refused() {
        let root = tempfile::tempdir().unwrap();
        // The lock of a daemon that is going away: released 300 ms after the new one asks.
        let held =
            File::options().create(true).truncate(false).write(true).open(root.path().join("lockstepd.lock")).unwrap();
        held.try_lock().unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let taken = lock_root(root.path()).expect("the lock, once let go");
        releaser.join().unwrap();
        // A daemon that keeps it: refused once the patience is spent.
        let started = std::time::Instant::now();
        assert!(matches!(lock_root(root.path()), Err(DaemonError::RootInUse(_))));
        assert!(started.elapsed() >= ROOT_LOCK_PATIENCE);
        drop(taken);
    }
}
