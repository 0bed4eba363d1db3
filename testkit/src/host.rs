//! Probes of the host itself, for tests and their leak checks: processes by command line,
//! lockstep-monitor processes of a runroot, cgroups by name, iptables rules, and running a
//! command or a closure inside a namespace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The pids in /proc.
fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
}

/// Processes whose command line is exactly `args`.
pub fn processes_running(args: &[&str]) -> Vec<i32> {
    let wanted: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    pids().filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted)).collect()
}

/// lockstep-monitor processes whose container directory is under `runroot`.
pub fn monitors_of(runroot: &Path) -> Vec<i32> {
    let wanted = runroot.display().to_string();
    pids()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline);
            text.contains("lockstep-monitor") && text.contains(&wanted)
        })
        .collect()
}

/// Whether `pid` exists (a zombie counts).
pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until `pid` is gone entirely (reaped), at most `limit`.
pub fn wait_gone(pid: i32, limit: Duration) -> bool {
    let started = Instant::now();
    while alive(pid) {
        if started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Polls `check` every 50 ms until it holds; panics after 20 s naming `what`.
pub async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Cgroup directories whose name holds `id`, in any hierarchy (five levels deep at most).
pub fn cgroups_of(id: &str) -> Vec<String> {
    let out = Command::new("find").args(["/sys/fs/cgroup", "-maxdepth", "5", "-name", &format!("*{id}*")]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()).unwrap_or_default()
}

/// The v2 mount of this host when it is a hybrid cgroup host (crun refuses those).
pub fn hybrid_cgroup2() -> Option<PathBuf> {
    lockstep_runtime::host::cgroups::Layout::read().hybrid_unified().map(PathBuf::from)
}

/// The iptables rules (all tables) that mention `id` (a pod's rules carry it in a comment).
pub fn iptables_rules_of(id: &str) -> Vec<String> {
    let rules = Command::new("iptables-save").output().expect("iptables-save runs");
    String::from_utf8_lossy(&rules.stdout).lines().filter(|l| l.contains(id)).map(str::to_string).collect()
}

/// Runs a command inside the namespaces at the given nsenter flags (e.g. "--net=PATH").
pub fn nsenter(flags: &[String], command: &[&str]) -> String {
    let out = Command::new("nsenter").args(flags).args(command).output().expect("nsenter runs");
    assert!(out.status.success(), "nsenter {flags:?} {command:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `work` on a thread inside the network namespace at `netns`.
pub fn in_netns<T: Send + 'static>(netns: &Path, work: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(netns).expect("the namespace exists");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        work()
    })
    .join()
    .expect("the thread in the namespace")
}
