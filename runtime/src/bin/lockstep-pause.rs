//! lockstep-pause: PID 1 of a pod's shared PID namespace. Single-threaded on purpose (it forks).
//! `lockstep-pause --pid-file FILE [--net PATH] [--ipc PATH] [--uts PATH]`: joins the given
//! namespaces, unshares a PID namespace and forks; the child is its PID 1, reaps every child
//! and exits on SIGTERM or SIGINT; the launcher writes "PID STARTTIME" (host pid, start time in
//! clock ticks) to FILE atomically and exits 0. lockstepd kills the child with SIGKILL.
#![deny(unsafe_code)]

use std::path::PathBuf;

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockstep-pause: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args_os().skip(1);
    let mut pid_file = None;
    let mut joins = Vec::new();
    while let Some(flag) = args.next() {
        let value = args.next().map(PathBuf::from).ok_or_else(|| format!("{flag:?} needs a value"))?;
        match flag.to_str() {
            Some("--pid-file") => pid_file = Some(value),
            Some("--net") => joins.push((CloneFlags::CLONE_NEWNET, value)),
            Some("--ipc") => joins.push((CloneFlags::CLONE_NEWIPC, value)),
            Some("--uts") => joins.push((CloneFlags::CLONE_NEWUTS, value)),
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    let pid_file = pid_file.ok_or("--pid-file is required")?;
    for (flag, path) in &joins {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        setns(&file, *flag).map_err(|e| format!("cannot enter {}: {e}", path.display()))?;
    }
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("cannot unshare a PID namespace: {e}"))?;
    let mut blocked = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        blocked.add(signal);
    }
    blocked.thread_block().map_err(|e| format!("cannot block signals: {e}"))?;
    match fork_single_threaded().map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Child => pid_one(&blocked),
        ForkResult::Parent { child } => {
            let start = start_time(child).ok_or_else(|| format!("the pause process {child} died at once"))?;
            let tmp = pid_file.with_extension("tmp");
            std::fs::write(&tmp, format!("{child} {start}\n"))
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &pid_file))
                .map_err(|e| format!("cannot write {}: {e}", pid_file.display()))?;
            Ok(())
        }
    }
}

#[allow(unsafe_code)]
fn fork_single_threaded() -> nix::Result<ForkResult> {
    // SAFETY: this process has a single thread (no runtime, no threads spawned), so the child
    // may run any code after fork.
    unsafe { fork() }
}

/// PID 1 of the pod: reap every child; exit on SIGTERM or SIGINT.
fn pid_one(blocked: &SigSet) -> ! {
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    loop {
        match blocked.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                }
            },
            Ok(Signal::SIGTERM | Signal::SIGINT) => std::process::exit(0),
            _ => {}
        }
    }
}

fn start_time(pid: Pid) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}
