//! `lockstep-monitor exec RUNTIME ARGS…`, ExecSync's helper: runs the OCI runtime's
//! `exec --detach` as a child subreaper, so the exec'd process becomes this process's child
//! when the runtime returns, waits for it and exits with its status (128 + n for signal n).
//! The process writes straight to the pipes this helper inherited from lockstepd. Run
//! undetached, runc would instead copy its output and wait until every process holding the
//! pipes is gone: a command that leaves a process in the background would never be answered.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// The helper's own failures (the runtime never ran, or the process could not be followed),
/// as runc and crun report theirs: a code no `sh -c` exit status takes without a signal.
const HELPER_FAILED: u8 = 125;

pub fn main(args: &[OsString]) -> ExitCode {
    let Some((runtime, runtime_args)) = args.split_first() else {
        eprintln!("usage: lockstep-monitor exec RUNTIME ARGS… (ARGS hold --detach and --pid-file FILE)");
        return ExitCode::from(2);
    };
    match run(runtime, runtime_args) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("lockstep-monitor exec: {message}");
            ExitCode::from(HELPER_FAILED)
        }
    }
}

fn run(runtime: &OsString, args: &[OsString]) -> Result<u8, String> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("cannot become a child subreaper: {e}"))?;
    let pid_file = args
        .windows(2)
        .find(|pair| pair[0] == "--pid-file")
        .map(|pair| PathBuf::from(&pair[1]))
        .ok_or("no --pid-file among the runtime's arguments")?;
    let status = Command::new(runtime)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", runtime.to_string_lossy()))?;
    if !status.success() {
        // The runtime could not start the process; its log says why.
        return Ok(status.code().map_or(HELPER_FAILED, |c| c.clamp(0, 255) as u8));
    }
    let text = std::fs::read_to_string(&pid_file).map_err(|e| format!("cannot read {}: {e}", pid_file.display()))?;
    let pid: i32 = text.trim().parse().map_err(|_| format!("{} holds no pid: {text:?}", pid_file.display()))?;
    let pid = Pid::from_raw(pid);
    loop {
        // Other orphans of the runtime may reach this subreaper too: reaped and ignored.
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return Ok(code.clamp(0, 255) as u8),
            Ok(WaitStatus::Signaled(p, signal, _)) if p == pid => return Ok(128u8.saturating_add(signal as u8)),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("the exec'd process {pid} did not become this helper's child: {e}")),
        }
    }
}
