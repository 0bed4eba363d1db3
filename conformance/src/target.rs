//! The runtime under test: a given endpoint, or an embedded lockstepd started for the run's
//! minor in a temporary directory (this binary re-executed as `daemon`, through the testkit's
//! lockstepd harness) and stopped after it.

use anyhow::Context as _;
use lockstep_cri::Minor;
use lockstep_testkit::{Launch, Lockstepd, Program};

/// A lockstepd that this process started (the testkit's harness), with its own root, runroot
/// and socket.
pub struct Embedded {
    daemon: Lockstepd,
    pub endpoint: String,
    /// A size-limited tmpfs as its --root (chaos's disk-full), unmounted after the daemon's
    /// own sweep (fields drop in order).
    _disk: Option<crate::soak::faults::disk::Tmpfs>,
}

impl Embedded {
    /// Starts lockstepd for `minor` in a fresh temporary directory, on its defaults or on
    /// `config` (a lockstep.toml, copied there so that restarts read the same).
    pub async fn start(minor: Minor, config: Option<&std::path::Path>) -> anyhow::Result<Embedded> {
        Embedded::start_on(minor, config, None).await
    }

    /// As `start`, with --root on a tmpfs of `disk_mib` MiB when given (a disk that fills).
    pub async fn start_on(
        minor: Minor,
        config: Option<&std::path::Path>,
        disk_mib: Option<u64>,
    ) -> anyhow::Result<Embedded> {
        let text = match config {
            Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
            None => "# empty: lockstepd's defaults\n".to_string(),
        };
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut daemon = Lockstepd::prepare(Program::conformance_daemon(exe, minor), Launch::default())
            .context("cannot prepare the embedded lockstepd")?;
        let disk = match disk_mib {
            Some(mib) => Some(crate::soak::faults::disk::Tmpfs::mount(&daemon.root(), mib)?),
            None => None,
        };
        std::fs::write(daemon.config_path(), &text).context("cannot write lockstep.toml")?;
        daemon.spawn().await.context("cannot start the embedded lockstepd")?;
        Ok(Embedded { endpoint: daemon.endpoint(), daemon, _disk: disk })
    }

    /// Kills lockstepd with SIGKILL, as a crash, and starts it again on the same state.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.daemon.restart().await
    }

    /// Kills lockstepd with SIGKILL, as a crash (what it started keeps running).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.daemon.kill();
        Ok(())
    }

    /// Starts lockstepd again on the state of the one `kill` ended.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.daemon.spawn().await
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Its state directories: --root and --runroot.
    pub fn state_dirs(&self) -> Vec<std::path::PathBuf> {
        vec![self.daemon.root(), self.daemon.runroot()]
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail()
    }

    /// SIGTERM, then SIGKILL after 10 s; the temporary directory goes with it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_in_place().await
    }

    /// As `stop`, for an embedded daemon shared with the tests (behind a lock).
    pub async fn stop_in_place(&mut self) -> anyhow::Result<()> {
        self.daemon.stop().await
    }
}

type BoxedResult<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// Restarts a runtime under test (kill and start on the same state), for tests that need it.
pub trait Restarter: Send + Sync {
    fn restart(&self) -> BoxedResult<'_>;
    /// Kills the runtime (SIGKILL), leaving it down until `start`.
    fn kill(&self) -> BoxedResult<'_>;
    /// Starts the runtime that `kill` ended, on the same state.
    fn start(&self) -> BoxedResult<'_>;
    /// The runtime's process id now (a restart changes it), while it runs.
    fn pid(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<u32>> + Send + '_>>;
}

/// The embedded lockstepd, shared between the run and the tests that restart it.
pub struct SharedEmbedded(pub std::sync::Arc<tokio::sync::Mutex<Embedded>>);

impl Restarter for SharedEmbedded {
    fn restart(&self) -> BoxedResult<'_> {
        Box::pin(async move { self.0.lock().await.restart().await })
    }
    fn kill(&self) -> BoxedResult<'_> {
        Box::pin(async move { self.0.lock().await.kill().await })
    }
    fn start(&self) -> BoxedResult<'_> {
        Box::pin(async move { self.0.lock().await.start_again().await })
    }
    fn pid(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<u32>> + Send + '_>> {
        Box::pin(async move { self.0.lock().await.pid() })
    }
}

/// The runtime a command works against: the given endpoint, or an embedded lockstepd for the
/// command's minor that `close` stops (and that tests may restart).
pub struct Target {
    pub endpoint: String,
    /// The daemon's pid when known (always for an embedded one), for memory readings.
    pub pid: Option<u32>,
    embedded: Option<std::sync::Arc<tokio::sync::Mutex<Embedded>>>,
}

impl Target {
    /// `config`: the embedded lockstepd's lockstep.toml (unused with an endpoint).
    pub async fn open(
        minor: Minor,
        endpoint: Option<String>,
        pid: Option<u32>,
        config: Option<&std::path::Path>,
    ) -> anyhow::Result<Target> {
        match endpoint {
            Some(endpoint) => Ok(Target { endpoint, pid, embedded: None }),
            None => {
                let embedded = Embedded::start(minor, config).await?;
                let (endpoint, pid) = (embedded.endpoint.clone(), embedded.pid());
                Ok(Target { endpoint, pid, embedded: Some(std::sync::Arc::new(tokio::sync::Mutex::new(embedded))) })
            }
        }
    }

    /// What lets tests restart the runtime: only an embedded lockstepd has one.
    pub fn restarter(&self) -> Option<std::sync::Arc<dyn Restarter>> {
        self.embedded.clone().map(|e| std::sync::Arc::new(SharedEmbedded(e)) as std::sync::Arc<dyn Restarter>)
    }

    /// The embedded daemon's state directories (--root, --runroot); None for an endpoint.
    pub async fn embedded_state_dirs(&self) -> Option<Vec<std::path::PathBuf>> {
        match &self.embedded {
            Some(embedded) => Some(embedded.lock().await.state_dirs()),
            None => None,
        }
    }

    /// Stops the embedded daemon, if any. The work's own error wins over a failed stop.
    pub async fn close<T>(self, work: anyhow::Result<T>) -> anyhow::Result<T> {
        let stopped = match &self.embedded {
            Some(embedded) => embedded.lock().await.stop_in_place().await,
            None => Ok(()),
        };
        let value = work?;
        stopped?;
        Ok(value)
    }
}
