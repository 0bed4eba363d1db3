//! The files a container's monitor shares with lockstepd, all in the container's directory
//! under the runroot: the monitor's instructions, its pid, the init's pid, the exit record,
//! the control socket. Records are written crash-safely (persist::write_atomic), so a
//! restarted lockstepd reads them whole or not at all.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::oci::RuntimeCommand;
use crate::persist::{self, PersistError};

/// What lockstepd tells a monitor: which container to create with which runtime, and where
/// its output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub container_id: String,
    pub runtime: RuntimeCommand,
    /// The OCI bundle (config.json; the rootfs it names).
    pub bundle: PathBuf,
    /// The CRI log file (absolute: the pod's log_directory joined with the container's
    /// log_path, see container::spec::log_file); None discards the output.
    pub log_path: Option<PathBuf>,
    /// A terminal instead of pipes (CRI tty).
    pub tty: bool,
    /// Keep stdin open for attach (CRI stdin); otherwise stdin is /dev/null.
    pub stdin: bool,
    /// The first attacher's end of stdin closes the container's (CRI stdin_once).
    #[serde(default)]
    pub stdin_once: bool,
    /// Lines longer than this are split into partial entries.
    pub max_log_line: usize,
    /// Cgroup directories (one per hierarchy) the monitor moves itself into: the one in the
    /// hierarchy hidden from its runtime before the create, the others once it reported.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// The cgroup lines of lockstepd's /proc/self/mountinfo (the monitor's mount table too),
    /// so that the monitor need not read the whole table, every container's overlay mount
    /// included, to find the memory cgroup (issue 19); None: it reads the table itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_mounts: Option<String>,
    /// Restore the processes of a checkpoint instead of creating the container: they run as
    /// soon as the monitor reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreFrom>,
}

/// Where a restore reads the CRIU images, and where CRIU writes its logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreFrom {
    pub images: PathBuf,
    pub work: PathBuf,
}

/// The monitor's own identity, to find it again after a lockstepd restart without mistaking
/// a recycled pid for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorIdentity {
    pub pid: i32,
    /// Field 22 of /proc/<pid>/stat: the start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// How the container ended, written by the monitor when it reaped the init process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code; 128 + n for death by signal n.
    pub exit_code: i32,
    /// The signal that killed the init process, if one did.
    pub signal: Option<i32>,
    /// When the monitor saw the exit, in nanoseconds since the epoch (CRI's finished_at).
    pub exited_at_ns: i64,
    /// The kernel's OOM killer killed a process of the container's memory cgroup.
    pub oom_killed: bool,
}

/// The monitor's answer to lockstepd once `create` is done, one JSON line on its stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// Sent first, right after the monitor detached.
    Monitor { pid: i32 },
    /// The container exists; its init waits for `start`.
    Created { pid: i32 },
    /// Nothing was created; the runtime's (or the monitor's) own message.
    Failed { message: String },
}

/// The container's directory and the names inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDir {
    dir: PathBuf,
}

impl ContainerDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ContainerDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The monitor's instructions (MonitorConfig, JSON).
    pub fn config(&self) -> PathBuf {
        self.dir.join("monitor.json")
    }

    /// The monitor's identity (MonitorIdentity, JSON).
    pub fn monitor(&self) -> PathBuf {
        self.dir.join("monitor.pid")
    }

    /// The monitor's own diagnostics (its stderr).
    pub fn monitor_log(&self) -> PathBuf {
        self.dir.join("monitor.log")
    }

    /// The init's host pid, as the OCI runtime writes it.
    pub fn init_pid(&self) -> PathBuf {
        self.dir.join("init.pid")
    }

    /// The exit record (ExitRecord, JSON), present once the container has exited.
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }

    /// File name of the control socket (bound relative to the directory).
    pub const CONTROL: &'static str = "control.sock";
    /// File name of the console socket a tty container's pty master arrives on.
    pub const CONSOLE: &'static str = "console.sock";

    pub fn write_config(&self, config: &MonitorConfig) -> Result<(), PersistError> {
        write_json(&self.config(), config)
    }

    pub fn read_config(&self) -> Result<MonitorConfig, PersistError> {
        read_json(&self.config())?.ok_or_else(|| PersistError::Io {
            what: "read",
            path: self.config(),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    pub fn read_exit(&self) -> Result<Option<ExitRecord>, PersistError> {
        read_json(&self.exit())
    }

    pub fn read_identity(&self) -> Result<Option<MonitorIdentity>, PersistError> {
        read_json(&self.monitor())
    }
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), PersistError> {
    let bytes = serde_json::to_vec(value).map_err(|source| PersistError::Encode { path: path.into(), source })?;
    persist::write_atomic(path, &bytes)
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, PersistError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| PersistError::Corrupt { path: path.into(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PersistError::Io { what: "read", path: path.into(), source }),
    }
}

/// A process's start time (field 22 of /proc/<pid>/stat), None when it is gone.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_of_this_process_are_stable_and_absent_for_the_dead() {
        let me = std::process::id() as i32;
        let first = start_ticks(me).unwrap();
        assert_eq!(start_ticks(me), Some(first));
        assert_eq!(start_ticks(i32::MAX), None);
    }

    #[test]
    fn records_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ContainerDir::new(tmp.path());
        assert_eq!(dir.read_exit().unwrap(), None);
        let record = ExitRecord { exit_code: 137, signal: Some(9), exited_at_ns: 5, oom_killed: true };
        write_json(&dir.exit(), &record).unwrap();
        assert_eq!(dir.read_exit().unwrap(), Some(record));
        let report: Report = serde_json::from_str(r#"{"created":{"pid":7}}"#).unwrap();
        assert_eq!(report, Report::Created { pid: 7 });
    }
}
