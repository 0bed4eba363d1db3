//! lockstep-pause: PID 1 of a pod's shared PID namespace. Single-threaded on purpose (it forks).
//! `lockstep-pause --pid-file FILE [--cgroup DIR]... [--user PATH] [--net PATH] [--ipc PATH]
//! [--uts PATH]`: moves itself into each cgroup DIR, joins the given namespaces (the user
//! namespace first: it owns the others, and the PID namespace then belongs to it too),
//! unshares a PID namespace and forks; the child is its PID 1 (in a user namespace, as its
//! root), reaps every child and exits on SIGTERM or SIGINT. The
//! launcher writes "PID STARTTIME BOOTID" to FILE (atomically, durably) and only then lets the
//! child go on: a child whose launcher failed or died before that exits at once, so no pause
//! process runs that FILE does not name. lockstepd kills the child with SIGKILL.
#![deny(unsafe_code)]

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use lockstep_runtime::host::cgroups;
use lockstep_runtime::sandbox::{pause, record::PauseProcess};
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
    let mut cgroups = Vec::new();
    let mut joins = Vec::new();
    while let Some(flag) = args.next() {
        let value = args.next().map(PathBuf::from).ok_or_else(|| format!("{flag:?} needs a value"))?;
        match flag.to_str() {
            Some("--pid-file") => pid_file = Some(value),
            Some("--cgroup") => cgroups.push(value),
            Some("--user") => joins.push((CloneFlags::CLONE_NEWUSER, value)),
            Some("--net") => joins.push((CloneFlags::CLONE_NEWNET, value)),
            Some("--ipc") => joins.push((CloneFlags::CLONE_NEWIPC, value)),
            Some("--uts") => joins.push((CloneFlags::CLONE_NEWUTS, value)),
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    let pid_file = pid_file.ok_or("--pid-file is required")?;
    // The user namespace first, whatever the order of the flags.
    joins.sort_by_key(|(flag, _)| *flag != CloneFlags::CLONE_NEWUSER);
    let in_user_namespace = joins.iter().any(|(flag, _)| *flag == CloneFlags::CLONE_NEWUSER);
    for dir in &cgroups {
        // The child forked below is born in the cgroup.
        cgroups::join(dir).map_err(|e| format!("cannot join the cgroup {}: {e}", dir.display()))?;
    }
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
    let (go_read, go_write) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
    match fork_single_threaded().map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Child => {
            drop(go_write);
            wait_for_go(go_read);
            if in_user_namespace {
                become_namespace_root();
            }
            pid_one(&blocked)
        }
        ForkResult::Parent { child } => {
            drop(go_read);
            let recorded = PauseProcess::of(child.as_raw())
                .ok_or_else(|| format!("the pause process {child} died at once"))
                .and_then(|p| pause::write_pid_file(&pid_file, &p).map_err(|e| e.to_string()));
            if let Err(e) = recorded {
                // Nobody would know of it: it must not outlive this failure.
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(e);
            }
            let mut go_write = go_write;
            go_write.write_all(b"g").map_err(|e| format!("cannot let the pause process {child} go on: {e}"))
        }
    }
}

#[allow(unsafe_code)]
fn fork_single_threaded() -> nix::Result<ForkResult> {
    // SAFETY: this process has a single thread (no runtime, no threads spawned), so the child
    // may run any code after fork.
    unsafe { fork() }
}

/// Blocks until the launcher has recorded this process; exits if the launcher failed or died
/// first (the pipe then ends without a byte).
fn wait_for_go(mut go: std::io::PipeReader) {
    let mut byte = [0u8; 1];
    if !matches!(go.read(&mut byte), Ok(1)) {
        std::process::exit(1);
    }
}

/// Becomes root of the user namespace joined (the host uid and gid its root maps to) rather
/// than the host's root, which is nobody there. Best effort: the pause holds the namespace
/// either way.
fn become_namespace_root() {
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    let _ = nix::unistd::setgroups(&[]);
    let _ = nix::unistd::setresgid(root_gid, root_gid, root_gid);
    let _ = nix::unistd::setresuid(root_uid, root_uid, root_uid);
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
