//! The pause process, only for pods that share one PID namespace: lockstep-pause joins the
//! pod's cgroups and namespaces, becomes PID 1 of a new PID namespace, and its launcher writes
//! that pid to `<sandbox dir>/pause.pid` before the pause goes on — so the pid is on disk even
//! if lockstepd dies meanwhile, and a launcher that dies with lockstepd (PDEATHSIG) takes its
//! unrecorded pause with it. Touches that file and the pause process only.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::record::PauseProcess;
use crate::monitor::watch::{ProcessWatch, WatchBudget};

pub const PAUSE_BINARY: &str = "lockstep-pause";
pub const PID_FILE: &str = "pause.pid";

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error(transparent)]
    NotFound(#[from] crate::helpers::HelperNotFound),
    #[error("cannot run {path}: {source}")]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("{path} failed ({status}): {stderr}")]
    Failed { path: PathBuf, status: std::process::ExitStatus, stderr: String },
    #[error("cannot read the pause pid from {path}: {problem}")]
    PidFile { path: PathBuf, problem: String },
    #[error("the pause process {pid} did not die within 5 s of SIGKILL")]
    Undying { pid: i32 },
    #[error(transparent)]
    Write(#[from] crate::persist::PersistError),
}

/// Starts the pause process in the cgroup directories `cgroups` and the namespaces at
/// `namespaces` (kind name, path).
pub fn start(dir: &Path, cgroups: &[PathBuf], namespaces: &[(&str, &Path)]) -> Result<PauseProcess, PauseError> {
    let binary = crate::helpers::find_helper(PAUSE_BINARY)?;
    let pid_file = dir.join(PID_FILE);
    let mut command = Command::new(&binary);
    command.arg("--pid-file").arg(&pid_file);
    for cgroup in cgroups {
        command.arg("--cgroup").arg(cgroup);
    }
    for (kind, path) in namespaces {
        command.arg(format!("--{kind}")).arg(path);
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent;
    // it is all that runs between fork and exec. The launcher then dies with the thread that
    // waits for it, and a pause it has not recorded yet exits with it.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().map_err(|source| PauseError::Spawn { path: binary.clone(), source })?;
    if !output.status.success() {
        return Err(PauseError::Failed {
            path: binary,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    read_pid_file(dir)?.ok_or_else(|| PauseError::PidFile { path: pid_file, problem: "absent".into() })
}

/// The pause process recorded in `dir`, if its launcher got that far.
pub fn read_pid_file(dir: &Path) -> Result<Option<PauseProcess>, PauseError> {
    let path = dir.join(PID_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PauseError::PidFile { path, problem: e.to_string() }),
    };
    parse_pid_file(&text)
        .map(Some)
        .ok_or_else(|| PauseError::PidFile { path, problem: format!("{text:?} is not \"PID START BOOTID\"") })
}

/// "PID START BOOTID" (BOOTID absent in files of older launchers).
fn parse_pid_file(text: &str) -> Option<PauseProcess> {
    let mut fields = text.split_whitespace();
    let pid = fields.next()?.parse().ok()?;
    let start_time = fields.next()?.parse().ok()?;
    let boot_id = fields.next().unwrap_or("").to_string();
    fields.next().is_none().then_some(PauseProcess { pid, start_time, boot_id })
}

/// Writes the pid file `path` atomically and durably (the launcher does, before the pause goes on).
pub fn write_pid_file(path: &Path, pause: &PauseProcess) -> Result<(), PauseError> {
    let line = format!("{} {} {}\n", pause.pid, pause.start_time, pause.boot_id);
    Ok(crate::persist::write_atomic(path, line.as_bytes())?)
}

impl PauseProcess {
    /// The running process `pid`, as a pause process record (this boot).
    pub fn of(pid: i32) -> Option<PauseProcess> {
        Some(PauseProcess { pid, start_time: start_time(pid)?, boot_id: boot_id().to_string() })
    }
}

/// This boot's id; empty when the kernel does not say.
pub fn boot_id() -> &'static str {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    BOOT_ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
    })
}

/// Clock ticks since boot at which `pid` started; None when no such process runs.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    if fields.first() == Some(&"Z") {
        return None; // a zombie has exited; its parent (PID 1 here) reaps it late
    }
    fields.get(19)?.parse().ok()
}

/// Whether the recorded pause process still runs (and is the same process: same boot, same
/// start time).
pub fn alive(pause: &PauseProcess) -> bool {
    (pause.boot_id.is_empty() || pause.boot_id == boot_id()) && start_time(pause.pid) == Some(pause.start_time)
}

/// A pidfd on the recorded pause process while it runs (same boot, same start time), within
/// `budget`.
pub fn watch(pause: &PauseProcess, budget: &Arc<WatchBudget>) -> Option<ProcessWatch> {
    if !pause.boot_id.is_empty() && pause.boot_id != boot_id() {
        return None;
    }
    ProcessWatch::of(pause.pid, pause.start_time, budget)
}

/// Kills the pause process and waits until it is gone. Already gone is fine.
pub fn kill(pause: &PauseProcess) -> Result<(), PauseError> {
    if !alive(pause) {
        return Ok(());
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pause.pid), nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pause) {
        if Instant::now() > deadline {
            return Err(PauseError::Undying { pid: pause.pid });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_of_another_boot_is_not_alive() {
        let me = PauseProcess::of(std::process::id() as i32).unwrap();
        assert!(alive(&me));
        assert!(!alive(&PauseProcess { boot_id: "another-boot".into(), ..me.clone() }));
        assert!(!alive(&PauseProcess { start_time: me.start_time + 1, ..me.clone() }));
        assert!(alive(&PauseProcess { boot_id: String::new(), ..me }), "records without a boot id");
    }

    #[test]
    fn pid_files_round_trip_and_old_ones_read() {
        let tmp = tempfile::tempdir().unwrap();
        let pause = PauseProcess { pid: 42, start_time: 7, boot_id: "b00t".into() };
        write_pid_file(&tmp.path().join(PID_FILE), &pause).unwrap();
        assert_eq!(read_pid_file(tmp.path()).unwrap(), Some(pause));
        assert_eq!(parse_pid_file("42 7\n"), Some(PauseProcess { pid: 42, start_time: 7, boot_id: String::new() }));
        assert_eq!(parse_pid_file("42"), None);
        assert_eq!(parse_pid_file("42 7 b 9"), None);
    }
}
