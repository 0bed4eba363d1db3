//! lockstep-pause run directly: a launcher that cannot record its pause process leaves none
//! running, and a recorded one is the pod's PID 1 in the cgroups it was given.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PAUSE: &str = env!("CARGO_BIN_EXE_lockstep-pause");

/// Live (not zombie) processes whose command line mentions `marker`.
fn processes_mentioning(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) && !stat.contains(") Z ") && !stat.is_empty() {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_launcher_that_cannot_write_the_pid_file_leaves_no_pause_running() {
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("no-such-dir").join("pause.pid");
    std::fs::write(tmp.path().join("no-such-dir"), "a file, not a directory").unwrap();
    let out = Command::new(PAUSE).arg("--pid-file").arg(&pid_file).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-dir"), "{}", String::from_utf8_lossy(&out.stderr));
    let marker = pid_file.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = processes_mentioning(&marker);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = processes_mentioning(&marker);
    }
    for pid in &left {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(left.is_empty(), "an unrecorded pause process kept running: {left:?}");
}

#[test]
fn a_recorded_pause_is_pid_one_of_its_namespace_and_named_by_the_pid_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(PAUSE).arg("--pid-file").arg(tmp.path().join("pause.pid")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pause = lockstep_runtime::sandbox::pause::read_pid_file(tmp.path()).unwrap().unwrap();
    assert!(lockstep_runtime::sandbox::pause::alive(&pause));
    assert_eq!(pause.boot_id, lockstep_runtime::sandbox::pause::boot_id());
    let status = std::fs::read_to_string(format!("/proc/{}/status", pause.pid)).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.trim_end().ends_with("\t1"), "{nspid}");
    lockstep_runtime::sandbox::pause::kill(&pause).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}/cmdline", pause.pid)).exists()
            || !lockstep_runtime::sandbox::pause::alive(&pause)
    );
}
