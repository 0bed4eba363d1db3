//! The pause process, only for pods that share one PID namespace: lockstep-pause joins the
//! pod's namespaces, becomes PID 1 of a new PID namespace, and its launcher writes that pid to
//! `<sandbox dir>/pause.pid` before exiting — so the pid is on disk even if lockstepd dies
//! meanwhile. Touches that file and the pause process only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::record::PauseProcess;

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
}

/// Starts the pause process in the namespaces at `paths` (kind name, path).
pub fn start(dir: &Path, namespaces: &[(&str, &Path)]) -> Result<PauseProcess, PauseError> {
    let binary = crate::helpers::find_helper(PAUSE_BINARY)?;
    let pid_file = dir.join(PID_FILE);
    let mut command = Command::new(&binary);
    command.arg("--pid-file").arg(&pid_file);
    for (kind, path) in namespaces {
        command.arg(format!("--{kind}")).arg(path);
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
    let (pid, start_time) = text
        .split_once(' ')
        .and_then(|(p, s)| Some((p.trim().parse::<i32>().ok()?, s.trim().parse::<u64>().ok()?)))
        .ok_or_else(|| PauseError::PidFile { path: path.clone(), problem: format!("{text:?} is not \"PID START\"") })?;
    Ok(Some(PauseProcess { pid, start_time }))
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

/// Whether the recorded pause process still runs (and is the same process).
pub fn alive(pause: &PauseProcess) -> bool {
    start_time(pause.pid) == Some(pause.start_time)
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
