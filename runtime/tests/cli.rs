//! The lockstepd binary as an operator meets it: its config command, its errors for bad input
//! (a clear message and a non-zero exit, never a panic), and a clean stop on SIGTERM.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LOCKSTEPD: &str = env!("CARGO_BIN_EXE_lockstepd");

fn lockstepd(args: &[&str]) -> Output {
    Command::new(LOCKSTEPD).args(args).env("RUST_BACKTRACE", "0").output().unwrap()
}

fn fails_clearly(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(stderr.contains(expected), "stderr should mention {expected:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn dirs(tmp: &Path) -> Vec<String> {
    vec![
        "--root".into(),
        tmp.join("root").display().to_string(),
        "--runroot".into(),
        tmp.join("run").display().to_string(),
        "--config".into(),
        tmp.join("lockstep.toml").display().to_string(),
    ]
}

#[test]
fn config_prints_the_effective_config_with_dropins_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("lockstep.toml"), "log_level = \"debug\"\n").unwrap();
    std::fs::create_dir(tmp.path().join("lockstep.toml.d")).unwrap();
    std::fs::write(tmp.path().join("lockstep.toml.d/10.toml"), "cgroup_driver = \"systemd\"\n").unwrap();
    let mut args = dirs(tmp.path());
    args.push("config".into());
    let out = Command::new(LOCKSTEPD).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("log_level = \"debug\""), "{text}");
    assert!(text.contains("cgroup_driver = \"systemd\""), "{text}");
    assert!(text.contains(&format!("listen = \"{}\"", tmp.path().join("run/lockstep.sock").display())), "{text}");
    assert!(text.lines().any(|l| l.starts_with('#')), "the config is commented");
}

#[test]
fn version_names_the_minor() {
    let out = lockstepd(&["--version"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Kubernetes 1."), "{text}");
}

#[test]
fn a_malformed_config_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("lockstep.toml"), "root = \"/x\"\n[runtime\n").unwrap();
    let args = dirs(tmp.path());
    let out = lockstepd(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fails_clearly(&out, "lockstep.toml");
}

#[test]
fn a_missing_config_file_is_refused() {
    fails_clearly(&lockstepd(&["--config", "/nonexistent/lockstep.toml", "config"]), "/nonexistent/lockstep.toml");
}

#[test]
fn a_socket_in_a_directory_that_cannot_exist_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root").display().to_string();
    let runroot = tmp.path().join("run").display().to_string();
    // /proc refuses new directories even to root.
    let out = lockstepd(&["--root", &root, "--runroot", &runroot, "--listen", "/proc/lockstep-missing/lockstep.sock"]);
    fails_clearly(&out, "/proc/lockstep-missing");
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("run/lockstep.sock");
    std::fs::write(tmp.path().join("lockstep.toml"), "").unwrap();
    let args = dirs(tmp.path());
    let mut child = Command::new(LOCKSTEPD).args(&args).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(child.try_wait().unwrap().is_none(), "lockstepd exited early");
        assert!(Instant::now() < deadline, "lockstepd never created its socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(!socket.exists());
}
