//! lockstepd's side of lockstep-monitor: start one for a container and wait for its report
//! (the init pid, or the runtime's own message), ask it to reopen the log, wait for and read
//! the exit record, and find the monitors that still run after a lockstepd restart.
//! Touches the container directories and signals only the monitors it finds there.

use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::control::{self, ControlError};
use super::files::{self, ContainerDir, ExitRecord, MonitorConfig, Report};
use crate::persist::PersistError;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    State(#[from] PersistError),
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot start {binary}: {source}")]
    Spawn { binary: PathBuf, source: std::io::Error },
    /// The OCI runtime (or the monitor) could not create the container: its own words.
    #[error("creating container {id} failed: {message}")]
    CreateFailed { id: String, message: String },
    #[error("the monitor of container {id} ended without a report ({log}: {tail})")]
    NoReport { id: String, log: PathBuf, tail: String },
    #[error("the monitor of container {id} did not report within {waited:?}; it was killed")]
    Timeout { id: String, waited: Duration },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the exit of container {id} was not recorded within {waited:?}")]
    ExitTimeout { id: String, waited: Duration },
    #[error("the monitor of container {id} is gone and left no exit record (see {log})")]
    Lost { id: String, log: PathBuf },
}

/// A container that its monitor created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    pub monitor_pid: i32,
    /// The container's init process (host pid), waiting for `start`.
    pub init_pid: i32,
}

/// What a container's monitor is doing, as read from its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorState {
    /// The monitor runs (the container has not exited yet).
    Running { monitor_pid: i32 },
    /// The container exited and the monitor recorded it.
    Exited(ExitRecord),
    /// No monitor and no exit record: it was killed, or never got far.
    Lost,
}

/// Starts lockstep-monitor for the container whose directory is `dir`, and waits (at most
/// `timeout`) until the container is created or has failed to be.
pub fn spawn(
    binary: &Path,
    dir: &ContainerDir,
    config: &MonitorConfig,
    timeout: Duration,
) -> Result<Spawned, MonitorError> {
    let id = &config.container_id;
    std::fs::create_dir_all(dir.path()).map_err(|source| MonitorError::Io {
        what: "create directory",
        path: dir.path().into(),
        source,
    })?;
    for stale in [dir.exit(), dir.init_pid(), dir.monitor()] {
        let _ = std::fs::remove_file(stale);
    }
    dir.write_config(config)?;
    let log_path = dir.monitor_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| MonitorError::Io { what: "open", path: log_path.clone(), source })?;
    let (ours, theirs) = UnixStream::pair().map_err(|source| MonitorError::Io {
        what: "create a socket pair for",
        path: dir.path().into(),
        source,
    })?;
    let mut command = Command::new(binary);
    command
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::from(log))
        // One malloc arena: the monitor's threads copy a few bytes at a time.
        .env("MALLOC_ARENA_MAX", "1");
    let spawned = command.spawn();
    // Our copy of the monitor's end must close, or the report channel never reaches EOF.
    drop(command);
    let mut first = spawned.map_err(|source| MonitorError::Spawn { binary: binary.into(), source })?;
    // That process forks the real monitor and exits at once.
    let _ = first.wait();

    let started = Instant::now();
    let mut reader = BufReader::new(ours);
    let mut monitor_pid = None;
    loop {
        let left = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        let _ = reader.get_ref().set_read_timeout(Some(left));
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(no_report(id, &log_path)),
            Ok(_) => match serde_json::from_str::<Report>(line.trim()) {
                Ok(Report::Monitor { pid }) => monitor_pid = Some(pid),
                Ok(Report::Created { pid }) => {
                    let monitor_pid = monitor_pid.unwrap_or(0);
                    return Ok(Spawned { monitor_pid, init_pid: pid });
                }
                Ok(Report::Failed { message }) => return Err(MonitorError::CreateFailed { id: id.clone(), message }),
                Err(_) => continue,
            },
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if let Some(pid) = monitor_pid {
                    signal_if_ours(dir, pid, nix::sys::signal::Signal::SIGKILL);
                }
                return Err(MonitorError::Timeout { id: id.clone(), waited: timeout });
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(MonitorError::Io { what: "read the report of", path: dir.path().into(), source })
            }
        }
    }
}

fn no_report(id: &str, log: &Path) -> MonitorError {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail = text.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
    MonitorError::NoReport { id: id.to_string(), log: log.to_path_buf(), tail }
}

/// Asks the monitor to reopen the container's log file (ReopenContainerLog).
pub fn reopen_log(dir: &ContainerDir) -> Result<(), MonitorError> {
    control::request(dir.path(), "reopen")?;
    Ok(())
}

/// The monitor's state, from its identity file, its process and its exit record.
pub fn state(dir: &ContainerDir) -> Result<MonitorState, MonitorError> {
    if let Some(record) = dir.read_exit()? {
        return Ok(MonitorState::Exited(record));
    }
    if let Some(identity) = dir.read_identity()? {
        if files::start_ticks(identity.pid) == Some(identity.start_ticks) && !is_zombie(identity.pid) {
            return Ok(MonitorState::Running { monitor_pid: identity.pid });
        }
    }
    // The monitor may have written its record and exited between the two reads.
    Ok(match dir.read_exit()? {
        Some(record) => MonitorState::Exited(record),
        None => MonitorState::Lost,
    })
}

/// Waits until the container's exit is recorded; at most `timeout`.
pub fn wait_exit(dir: &ContainerDir, id: &str, timeout: Duration) -> Result<ExitRecord, MonitorError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match state(dir)? {
            MonitorState::Exited(record) => return Ok(record),
            MonitorState::Lost => {
                return Err(MonitorError::Lost { id: id.to_string(), log: dir.monitor_log() });
            }
            MonitorState::Running { .. } if started.elapsed() >= timeout => {
                return Err(MonitorError::ExitTimeout { id: id.to_string(), waited: timeout });
            }
            MonitorState::Running { .. } => {
                std::thread::sleep(pause.min(timeout.saturating_sub(started.elapsed())));
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
    }
}

/// Every container directory under `containers` and its monitor's state: what a restarted
/// lockstepd reconciles its records with.
pub fn find_all(containers: &Path) -> Result<Vec<(String, MonitorState)>, MonitorError> {
    let entries = match std::fs::read_dir(containers) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(MonitorError::Io { what: "list", path: containers.into(), source }),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| MonitorError::Io { what: "list", path: containers.into(), source })?;
        if !entry.path().is_dir() {
            continue;
        }
        let dir = ContainerDir::new(entry.path());
        if dir.config().exists() {
            found.push((entry.file_name().to_string_lossy().into_owned(), state(&dir)?));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// A zombie has exited already: its exit record is as good as written.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Signals the monitor only if the pid still belongs to it.
fn signal_if_ours(dir: &ContainerDir, pid: i32, signal: nix::sys::signal::Signal) {
    let Ok(Some(identity)) = dir.read_identity() else { return };
    if identity.pid == pid && files::start_ticks(pid) == Some(identity.start_ticks) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}
