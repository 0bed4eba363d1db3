//! One lockstepd process, for the tests and for the harness's embedded runtime: a directory of
//! its own (lockstep.toml, root, runroot, socket, log), started and waited for until it serves,
//! crashed (SIGKILL) and started again on the same state, stopped (SIGTERM), and on drop killed
//! with everything it left on the host released (see `sweep`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use lockstep_cri::{CriClient, Minor};

/// How long a start may take before it is an error.
const SERVE_DEADLINE: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The program that runs lockstepd, and the minor it serves.
#[derive(Debug, Clone)]
pub struct Program {
    path: PathBuf,
    args: Vec<OsString>,
    pub minor: Minor,
}

impl Program {
    /// The lockstepd binary at `path`, built for `minor`.
    pub fn lockstepd(path: impl Into<PathBuf>, minor: Minor) -> Program {
        Program { path: path.into(), args: Vec::new(), minor }
    }

    /// `lockstep-conformance daemon --kube 1.NN` at `path`: lockstepd for any minor.
    pub fn conformance_daemon(path: impl Into<PathBuf>, minor: Minor) -> Program {
        let args = vec!["daemon".into(), "--kube".into(), minor.to_string().into()];
        Program { path: path.into(), args, minor }
    }
}

/// How a daemon's process is started, beyond its program.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Make the temporary directory under /tmp with this prefix (short paths keep the sockets
    /// inside within 108 bytes); None: the system's temporary directory, prefix "lockstepd-".
    pub short_dir_prefix: Option<&'static str>,
    /// --runroot is a symlink to the real directory (as /var/run is to /run).
    pub runroot_via_symlink: bool,
    /// The open-file limit lockstepd gets (e.g. systemd's default soft limit, 1024); None: ours.
    pub nofile: Option<u32>,
    /// --log-level; None: lockstepd's default.
    pub log_level: Option<&'static str>,
    /// Environment variables set for the process (beyond those it inherits).
    pub env: Vec<(String, String)>,
}

/// A lockstepd process with its own state, killed (not just stopped) and swept when dropped.
pub struct Lockstepd {
    dir: tempfile::TempDir,
    program: Program,
    launch: Launch,
    runroot: PathBuf,
    child: Option<Child>,
}

impl Lockstepd {
    /// Makes the daemon's directory but starts nothing: write `config_path()` (and what it
    /// names under `dir()`), then `spawn`.
    pub fn prepare(program: Program, launch: Launch) -> anyhow::Result<Lockstepd> {
        let dir = match launch.short_dir_prefix {
            Some(prefix) => tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp"),
            None => tempfile::Builder::new().prefix("lockstepd-").tempdir(),
        }
        .context("cannot create the daemon's temporary directory")?;
        let runroot = if launch.runroot_via_symlink {
            std::fs::create_dir_all(dir.path().join("run")).context("cannot create the runroot")?;
            std::os::unix::fs::symlink(dir.path().join("run"), dir.path().join("run-link"))
                .context("cannot link the runroot")?;
            dir.path().join("run-link")
        } else {
            dir.path().join("run")
        };
        Ok(Lockstepd { dir, program, launch, runroot, child: None })
    }

    /// Prepares a daemon whose lockstep.toml is `config` and starts it.
    pub async fn start(program: Program, launch: Launch, config: &str) -> anyhow::Result<Lockstepd> {
        let mut daemon = Lockstepd::prepare(program, launch)?;
        std::fs::write(daemon.config_path(), config).context("cannot write lockstep.toml")?;
        daemon.spawn().await?;
        Ok(daemon)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("lockstep.toml")
    }
    pub fn root(&self) -> PathBuf {
        self.dir().join("root")
    }
    /// The --runroot given: `<dir>/run`, or a symlink to it.
    pub fn runroot(&self) -> PathBuf {
        self.runroot.clone()
    }
    pub fn socket(&self) -> PathBuf {
        self.dir().join("lockstep.sock")
    }
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }
    pub fn minor(&self) -> Minor {
        self.program.minor
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("lockstepd.log")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    /// Changes the open-file limit of the next `spawn`.
    pub fn set_nofile(&mut self, nofile: Option<u32>) {
        self.launch.nofile = nofile;
    }

    /// Starts the process (again, on the state a `kill` left) and waits until its socket
    /// accepts connections.
    pub async fn spawn(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_none() {
                bail!("lockstepd still runs; kill it first");
            }
        }
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("cannot open the daemon's log")?;
        let mut command = match self.launch.nofile {
            None => Command::new(&self.program.path),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")]).arg(&self.program.path);
                sh
            }
        };
        command
            .args(&self.program.args)
            .arg("--config")
            .arg(self.config_path())
            .arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.runroot())
            .arg("--listen")
            .arg(self.socket());
        if let Some(level) = self.launch.log_level {
            command.args(["--log-level", level]);
        }
        let child = command
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.program.path.display()))?;
        self.child = Some(child);
        self.wait_serving().await
    }

    /// Connectable, not just present: the socket file appears at bind(), before listen().
    async fn wait_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SERVE_DEADLINE;
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = self.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                bail!("lockstepd exited ({status}) before serving:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("lockstepd did not serve within {SERVE_DEADLINE:?}:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// SIGKILL, as a crash: what it started keeps running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A crash and a start on the same state.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    /// SIGTERM, then SIGKILL after 10 s; an error when it did not stop cleanly.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("lockstepd stopped with {status}:\n{}", self.log_tail());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("lockstepd ignored SIGTERM for {STOP_GRACE:?}:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A CRI client of the daemon's minor, with a generous deadline per call.
    pub async fn client(&self) -> anyhow::Result<CriClient> {
        let channel = lockstep_cri::connect(&self.endpoint(), Duration::from_secs(5))
            .await
            .with_context(|| format!("cannot connect to lockstepd:\n{}", self.log_tail()))?;
        let mut client = CriClient::new(self.program.minor, channel)?;
        client.set_timeout(Some(Duration::from_secs(120)));
        Ok(client)
    }

    /// `client`, for tests: a failure to connect fails the test with the daemon's log.
    pub async fn kubelet(&self) -> CriClient {
        match self.client().await {
            Ok(client) => client,
            Err(e) => panic!("{e:#}"),
        }
    }
}

impl Drop for Lockstepd {
    /// A failed test (or run) leaves pods and containers behind: kill the daemon, then release
    /// what it made on the host, so one failure does not leak into the next.
    fn drop(&mut self) {
        self.kill();
        crate::sweep::release(self.dir.path(), &self.root(), &self.runroot());
    }
}
