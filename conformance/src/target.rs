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
    pub endpoint: String,
}

impl Embedded {
    /// Starts lockstepd for `minor` on its defaults, in a fresh temporary directory.
    pub async fn start(minor: Minor) -> anyhow::Result<Embedded> {
        let dir =
            tempfile::Builder::new().prefix("lockstep-conformance-").tempdir().context("cannot create a temp dir")?;
        let socket = dir.path().join("lockstep.sock");
        let config = dir.path().join("lockstep.toml");
        std::fs::write(&config, "# empty: lockstepd's defaults\n").context("cannot write the embedded config")?;
        let log = std::fs::File::create(dir.path().join("lockstepd.log")).context("cannot create the daemon log")?;
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let path = |p: PathBuf| p.into_os_string();
        let child = tokio::process::Command::new(exe)
            .arg("daemon")
            .arg("--kube")
            .arg(minor.to_string())
            .arg("--config")
            .arg(path(config))
            .arg("--root")
            .arg(path(dir.path().join("root")))
            .arg("--runroot")
            .arg(path(dir.path().join("run")))
            .arg("--listen")
            .arg(path(socket.clone()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the embedded lockstepd")?;
        let mut embedded = Embedded { child, dir, endpoint: format!("unix://{}", socket.display()) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if let Some(status) = embedded.child.try_wait()? {
                bail!("the embedded lockstepd exited ({status}) before serving:\n{}", embedded.log_tail());
            }
            if Instant::now() > deadline {
                bail!("the embedded lockstepd did not serve within 30 s:\n{}", embedded.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(embedded)
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

/// The runtime a command works against: the given endpoint, or an embedded lockstepd for the
/// command's minor that `close` stops.
pub struct Target {
    pub endpoint: String,
    /// The daemon's pid when known (always for an embedded one), for memory readings.
    pub pid: Option<u32>,
    embedded: Option<Embedded>,
}

impl Target {
    pub async fn open(minor: Minor, endpoint: Option<String>, pid: Option<u32>) -> anyhow::Result<Target> {
        match endpoint {
            Some(endpoint) => Ok(Target { endpoint, pid, embedded: None }),
            None => {
                let embedded = Embedded::start(minor).await?;
                Ok(Target { endpoint: embedded.endpoint.clone(), pid: embedded.pid(), embedded: Some(embedded) })
            }
        }
    }

    /// Stops the embedded daemon, if any. The work's own error wins over a failed stop.
    pub async fn close<T>(self, work: anyhow::Result<T>) -> anyhow::Result<T> {
        let stopped = match self.embedded {
            Some(embedded) => embedded.stop().await,
            None => Ok(()),
        };
        let value = work?;
        stopped?;
        Ok(value)
    }
}
