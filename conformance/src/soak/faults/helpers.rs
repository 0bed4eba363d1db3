//! Killing the runtime's helpers and its OCI runtime mid-call: SIGKILL a helper process (a
//! lockstep-monitor or its exec helper, a containerd shim: found as the accounting finds them,
//! by the runroot or socket in their command line), or a crun/runc process whose parent is the
//! daemon or a helper, caught while a call runs. Afterwards, per the CRI: the container it
//! served is reported truthfully (EXITED once its process is gone, RUNNING while it lives), the
//! runtime answers calls, and a killed child of the daemon is reaped. The pod hit is marked, so
//! the load tells the cycle it broke from a real failure (its teardown must still succeed).

use std::time::{Duration, Instant};

use lockstep_cri::model;

use super::{bounded, line, Round};
use crate::soak::accounting::{processes, Scope};
use crate::soak::chaos::Rng;
use crate::soak::load::{lock, Load};

/// How long a killed container's runtime may take to report it EXITED.
const TRUTH_DEADLINE: Duration = Duration::from_secs(20);
/// How long the container is watched after the kill (its process may die of it a moment later,
/// e.g. of SIGPIPE when it next writes to the killed monitor's pipe).
const WATCH: Duration = Duration::from_secs(3);
/// How long an OCI runtime kill waits for a crun/runc call to be under way.
const CATCH_WINDOW: Duration = Duration::from_secs(5);

/// The process a fault killed and what of the run it served.
#[derive(Debug, Clone)]
struct Victim {
    pid: i32,
    command: String,
    container: Option<String>,
    pod: Option<String>,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(13)]
}

/// `/proc/<pid>/stat`'s command name, state and parent, while the process exists.
fn stat(pid: i32) -> Option<(String, char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Whether a process runs (exists and is not a zombie).
pub fn alive(pid: i64) -> bool {
    i32::try_from(pid).ok().and_then(stat).is_some_and(|(_, state, _)| !matches!(state, 'Z' | 'X'))
}

fn is_oci_runtime(comm: &str) -> bool {
    matches!(comm, "crun" | "runc")
}

/// The run's container (and its pod), or pod, that a command line names.
fn served(load: &Load, command: &str) -> (Option<String>, Option<String>) {
    let ledger = lock(&load.ledger);
    for (pod, entry) in &ledger.pods {
        if let Some(container) = entry.containers.iter().find(|c| command.contains(c.as_str())) {
            return (Some(container.clone()), Some(pod.clone()));
        }
    }
    let pod = ledger.pods.keys().find(|p| command.contains(p.as_str())).cloned();
    (None, pod)
}

/// SIGKILL one of the runtime's helpers, picked by `rng` among those serving the run's pods
/// (any helper when none does), and check what the runtime says afterwards.
pub async fn kill_helper(load: &Load, scope: &Scope, rng: &mut Rng) -> Round {
    let all = processes();
    let marked = scope.helpers_among(&all);
    let helpers: Vec<(i32, String)> = all
        .iter()
        .filter(|(pid, ..)| marked.contains(pid))
        .filter(|(pid, ..)| stat(*pid).is_some_and(|(comm, ..)| !is_oci_runtime(&comm)))
        .map(|(pid, _, _, cmdline)| (*pid, cmdline.clone()))
        .collect();
    let serving: Vec<&(i32, String)> = helpers.iter().filter(|(_, c)| served(load, c).1.is_some()).collect();
    let pool: Vec<&(i32, String)> = if serving.is_empty() { helpers.iter().collect() } else { serving };
    if pool.is_empty() {
        let mut round = Round::new("monitor: no helper was running");
        round.saw("nothing to kill");
        return round;
    }
    let (pid, command) = pool[(rng.next_u64() % pool.len() as u64) as usize].clone();
    let (container, pod) = served(load, &command);
    let victim = Victim { pid, command, container, pod };
    // The container's own process, as the runtime gave it before the kill.
    let process = match &victim.container {
        Some(c) => load.pid_of(c).await,
        None => None,
    };
    let mut round = Round::new(format!("monitor: SIGKILL pid {} ({})", victim.pid, brief_command(&victim.command)));
    kill(load, &victim);
    after_kill(load, scope, &victim, process, &mut round).await;
    round
}

/// Waits (CATCH_WINDOW at most) for a crun/runc process run by the daemon or a helper, SIGKILLs
/// it, and checks what the runtime says afterwards.
pub async fn kill_oci_runtime(load: &Load, scope: &Scope) -> Round {
    let daemon = scope.daemon_pid.map(|p| p as i32);
    let started = Instant::now();
    let mut parents = std::collections::BTreeSet::new();
    let mut refreshed: Option<Instant> = None;
    let found = loop {
        if refreshed.is_none_or(|at| at.elapsed() > Duration::from_millis(100)) {
            let all = processes();
            parents = scope.helpers_among(&all);
            parents.extend(daemon);
            refreshed = Some(Instant::now());
        }
        let caught = std::fs::read_dir("/proc").into_iter().flatten().flatten().find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let (comm, state, ppid) = stat(pid)?;
            (is_oci_runtime(&comm) && state != 'Z' && parents.contains(&ppid)).then_some(pid)
        });
        if let Some(pid) = caught {
            break Some(pid);
        }
        if started.elapsed() > CATCH_WINDOW {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let Some(pid) = found else {
        let mut round = Round::new("oci-runtime: no crun/runc call was under way");
        round.saw(format!("none caught within {CATCH_WINDOW:?}"));
        return round;
    };
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let command = String::from_utf8_lossy(&bytes).replace('\0', " ").trim().to_string();
    let (container, pod) = served(load, &command);
    let victim = Victim { pid, command, container, pod };
    let mut round = Round::new(format!("oci-runtime: SIGKILL pid {} ({})", pid, brief_command(&victim.command)));
    // A pod or container still being made is not in the ledger, and the error of its
    // RunPodSandbox may not name it: every cycle under way meanwhile may be the one hit.
    let unknown = victim.pod.is_none() && ids_in(&victim.command).next().is_some();
    if unknown {
        load.marks.open_window();
    }
    kill(load, &victim);
    after_kill(load, scope, &victim, None, &mut round).await;
    if unknown {
        load.marks.close_window();
    }
    round
}

/// The container and pod ids (64 hex digits) a command line names.
fn ids_in(command: &str) -> impl Iterator<Item = &str> {
    command
        .split(|c: char| c.is_whitespace() || c == '/')
        .filter(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The program and the OCI runtime's operation, without the long paths.
fn brief_command(command: &str) -> String {
    if command.trim().is_empty() {
        return "its command line was gone: it had just ended".to_string();
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    let program = words.first().map(|w| w.rsplit('/').next().unwrap_or(w)).unwrap_or_default();
    let op = words.iter().skip(1).find(|w| {
        ["create", "start", "kill", "delete", "state", "exec", "update", "run", "pause", "resume", "checkpoint"]
            .contains(w)
    });
    match op {
        Some(op) => format!("{program} {op}"),
        None => program.to_string(),
    }
}

fn kill(load: &Load, victim: &Victim) {
    if let Some(pod) = &victim.pod {
        load.marks.hit(pod);
    }
    // A container the ledger does not know yet (its CreateContainer is under way).
    for id in ids_in(&victim.command) {
        load.marks.hit_id(id);
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim.pid), nix::sys::signal::Signal::SIGKILL);
}

/// What must hold after a helper or OCI runtime was killed.
async fn after_kill(load: &Load, scope: &Scope, victim: &Victim, process: Option<i64>, round: &mut Round) {
    reaped(scope, victim, round).await;
    match &victim.container {
        Some(container) => truthful(load, container, process, round).await,
        None => match &victim.pod {
            // A shim serves a whole pod: each of its containers is judged.
            Some(pod) => {
                round.saw(format!("it served pod {}", short(pod)));
                let containers = lock(&load.ledger).pods.get(pod).map(|p| p.containers.clone()).unwrap_or_default();
                for container in containers {
                    truthful(load, &container, None, round).await;
                }
            }
            None => round.saw("it served none of the run's pods"),
        },
    }
    serving(load, round).await;
}

/// A killed child of the daemon (or of a helper) must not stay a zombie.
async fn reaped(scope: &Scope, victim: &Victim, round: &mut Round) {
    let daemon = scope.daemon_pid.map(|p| p as i32);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match stat(victim.pid) {
            None => return,
            Some((_, 'Z', ppid)) if Instant::now() > deadline => {
                let all = processes();
                if Some(ppid) == daemon || scope.helpers_among(&all).contains(&ppid) {
                    round.wrong(format!("pid {} stays a zombie of pid {ppid} (the runtime's)", victim.pid));
                } else {
                    round.saw(format!("pid {} is a zombie of pid {ppid}, not the runtime's", victim.pid));
                }
                return;
            }
            Some(_) if Instant::now() > deadline => {
                round.wrong(format!("pid {} survived SIGKILL for 5 s", victim.pid));
                return;
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The container a killed process served must be reported as it is, watched for WATCH: EXITED
/// once its process is gone (within TRUTH_DEADLINE of that), never EXITED while it runs.
async fn truthful(load: &Load, container: &str, process: Option<i64>, round: &mut Round) {
    let short_id = short(container);
    let mut client = bounded(load.client());
    let started = Instant::now();
    let mut gone_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let request = model::ContainerStatusRequest { container_id: container.to_string(), verbose: true };
        let response = match client.container_status(request).await {
            Err(e) if e.code() == tonic::Code::NotFound => {
                round.saw(format!("container {short_id}: removed by its cycle meanwhile"));
                return;
            }
            Err(e) => {
                round.wrong(format!("container {short_id}: ContainerStatus: {}", line(&e)));
                return;
            }
            Ok(r) => r,
        };
        let Some(status) = response.status else {
            round.wrong(format!("container {short_id}: ContainerStatus without a status"));
            return;
        };
        let reported_pid = response
            .info
            .get("info")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
            .and_then(|v| v["pid"].as_i64())
            .filter(|p| *p > 0);
        let pid = process.or(reported_pid);
        let lives = pid.map(alive);
        if lives == Some(false) && gone_since.is_none() {
            gone_since = Some(Instant::now());
        }
        let state = model::ContainerState::try_from(status.state).map_or("?".to_string(), |s| format!("{s:?}"));
        match model::ContainerState::try_from(status.state) {
            Ok(model::ContainerState::ContainerExited) if lives == Some(true) => {
                round.wrong(format!(
                    "container {short_id}: reported EXITED (code {}) while its process {} runs",
                    status.exit_code,
                    pid.unwrap_or_default()
                ));
                return;
            }
            Ok(model::ContainerState::ContainerExited) => {
                let why = if status.message.is_empty() { status.reason.clone() } else { status.message.clone() };
                round.saw(format!(
                    "container {short_id}: EXITED with code {} {:.1?} after the kill ({why})",
                    status.exit_code,
                    started.elapsed()
                ));
                return;
            }
            Ok(model::ContainerState::ContainerRunning) => {
                if let Some(since) = gone_since {
                    if since.elapsed() > TRUTH_DEADLINE {
                        round.wrong(format!(
                            "container {short_id}: reported RUNNING {:.0?} after its process {} ended",
                            since.elapsed(),
                            pid.unwrap_or_default()
                        ));
                        return;
                    }
                } else if started.elapsed() > WATCH {
                    let how = pid.and_then(|p| i32::try_from(p).ok()).and_then(stat).map(|(_, s, _)| s);
                    round.saw(format!(
                        "container {short_id}: RUNNING {WATCH:?} after the kill, its process {} alive (state {})",
                        pid.unwrap_or_default(),
                        how.unwrap_or('?')
                    ));
                    return;
                }
            }
            _ => {
                let process = match lives {
                    Some(true) => "its process lives",
                    Some(false) => "its process is gone",
                    None => "no process known",
                };
                round.saw(format!("container {short_id}: {state}, {process}"));
                return;
            }
        }
    }
}

/// The runtime answers the calls the kubelet makes every second.
pub async fn serving(load: &Load, round: &mut Round) {
    let mut client = bounded(load.client());
    if let Err(e) = client.version(model::VersionRequest::default()).await {
        round.wrong(format!("Version: {}", line(&e)));
    }
    if let Err(e) = client.list_pod_sandbox(model::ListPodSandboxRequest::default()).await {
        round.wrong(format!("ListPodSandbox: {}", line(&e)));
    }
    if let Err(e) = client.list_containers(model::ListContainersRequest::default()).await {
        round.wrong(format!("ListContainers: {}", line(&e)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_shortened_to_its_program_and_operation() {
        let crun = "/usr/bin/crun --root /tmp/x/run/oci/crun --log /tmp/x/run/oci/crun.log/start-1-2.json start abc";
        assert_eq!(brief_command(crun), "crun start");
        assert_eq!(brief_command("/usr/lib/lockstep/lockstep-monitor /tmp/x/run/containers/abc"), "lockstep-monitor");
        let id = "a".repeat(64);
        let create = format!("crun --root /r/oci/crun create --bundle /r/containers/{id}/bundle {id}");
        assert_eq!(ids_in(&create).collect::<Vec<_>>(), [id.as_str(), id.as_str()]);
        assert_eq!(ids_in("crun state abc").count(), 0);
    }

    #[test]
    fn this_process_is_alive_and_its_stat_is_read() {
        let me = std::process::id() as i32;
        let (_, state, ppid) = stat(me).unwrap();
        assert!(state != 'Z' && ppid > 0);
        assert!(alive(i64::from(me)));
        assert!(!alive(i64::from(i32::MAX)));
    }
}
