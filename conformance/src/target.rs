//! The runtime under test: a given endpoint, or an embedded lockstepd started for the run's
//! minor in a temporary directory (this binary re-executed as `daemon`) and stopped after it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use lockstep_cri::Minor;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A lockstepd that this process started, with its own root, runroot and socket.
pub struct Embedded {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
    minor: Minor,
    pub endpoint: String,
}

impl Embedded {
    /// Starts lockstepd for `minor` in a fresh temporary directory, on its defaults or on
    /// `config` (a lockstep.toml, copied there so that restarts read the same).
    pub async fn start(minor: Minor, config: Option<&std::path::Path>) -> anyhow::Result<Embedded> {
        let dir =
            tempfile::Builder::new().prefix("lockstep-conformance-").tempdir().context("cannot create a temp dir")?;
        let text = match config {
            Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
            None => "# empty: lockstepd's defaults\n".to_string(),
        };
        std::fs::write(dir.path().join("lockstep.toml"), text).context("cannot write the embedded config")?;
        let socket = dir.path().join("lockstep.sock");
        let child = Self::spawn(dir.path(), minor)?;
        let mut embedded = Embedded { child, dir, minor, endpoint: format!("unix://{}", socket.display()) };
        embedded.wait_serving().await?;
        Ok(embedded)
    }

    /// Kills lockstepd with SIGKILL, as a crash, and starts it again on the same state.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.start_again().await
    }

    /// Kills lockstepd with SIGKILL, as a crash (what it started keeps running).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("cannot kill the embedded lockstepd")?;
        let _ = std::fs::remove_file(self.dir.path().join("lockstep.sock"));
        Ok(())
    }

    /// Starts lockstepd again on the state of the one `kill` ended.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            bail!("the embedded lockstepd still runs; kill it first");
        }
        self.child = Self::spawn(self.dir.path(), self.minor)?;
        self.wait_serving().await
    }

    fn spawn(dir: &std::path::Path, minor: Minor) -> anyhow::Result<tokio::process::Child> {
        let socket = dir.join("lockstep.sock");
        let config = dir.join("lockstep.toml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("lockstepd.log"))
            .context("cannot open the daemon log")?;
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let path = |p: PathBuf| p.into_os_string();
        tokio::process::Command::new(exe)
            .arg("daemon")
            .arg("--kube")
            .arg(minor.to_string())
            .arg("--config")
            .arg(path(config))
            .arg("--root")
            .arg(path(dir.join("root")))
            .arg("--runroot")
            .arg(path(dir.join("run")))
            .arg("--listen")
            .arg(path(socket))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the embedded lockstepd")
    }

    async fn wait_serving(&mut self) -> anyhow::Result<()> {
        let socket = self.dir.path().join("lockstep.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if let Some(status) = self.child.try_wait()? {
                bail!("the embedded lockstepd exited ({status}) before serving:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("the embedded lockstepd did not serve within 30 s:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("lockstepd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 10 s; the temporary directory goes with it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_in_place().await
    }

    /// As `stop`, for an embedded daemon shared with the tests (behind a lock).
    pub async fn stop_in_place(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("the embedded lockstepd stopped with {status}:\n{}", self.log_tail());
                }
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the embedded lockstepd ignored SIGTERM for 10 s:\n{}", self.log_tail());
            }
        }
        Ok(())
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
