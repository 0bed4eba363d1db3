//! `soak` and `chaos` as a user runs them: a short soak of an embedded lockstepd finds no leak
//! and says so in its table and JSON, Ctrl-C ends a soak with every pod removed and the counts
//! printed, a short chaos run checks every restart, and chaos refuses a runtime it cannot
//! restart.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_lockstep-conformance");

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_short_soak_of_lockstepd_accounts_for_everything_and_finds_no_leak() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("soak.json");
    let out = Command::new(BIN)
        .args(["soak", "--cycles", "6", "--pods", "1", "--concurrency", "3", "--image-every", "3", "--json"])
        .arg(&report)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("verdict: no leaks"), "{table}");
    let report = json(&report);
    assert_eq!(report["cycles_done"], 6);
    assert_eq!(report["leaks"], 0);
    assert_eq!(report["images_cycled"], 2);
    let resources: Vec<&str> =
        report["accounting"].as_array().unwrap().iter().map(|l| l["resource"].as_str().unwrap()).collect();
    for resource in ["mounts", "network/IPC/UTS namespace pins", "iptables rules of the run's pods", "zombies"] {
        assert!(resources.contains(&resource), "{resource} is accounted: {resources:?}");
    }
    // Every pod had a veth while up, and none is left.
    let veths =
        report["accounting"].as_array().unwrap().iter().find(|l| l["resource"] == "veths of the run's pods").unwrap();
    assert!(veths["before"].as_u64().unwrap() >= 7, "{veths}");
    assert_eq!(veths["after"], 0);
}

#[test]
fn ctrl_c_ends_a_soak_with_its_pods_removed_and_the_counts_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("soak.json");
    let mut child = Command::new(BIN)
        .args(["soak", "--cycles", "100000", "--pods", "1", "--concurrency", "2", "--json"])
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("steady pods up") {
            break;
        }
    }
    assert!(seen.contains("steady pods up"), "the soak never got going: {seen}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{table}\n{seen}{}", rest.join("\n"));
    assert!(table.contains("(interrupted)") && table.contains("verdict: no leaks"), "{table}");
    let report = json(&report);
    assert_eq!(report["interrupted"], true);
    assert_eq!(report["leaks"], 0, "the pods the soak made are all gone: {report}");
}

#[test]
fn a_short_chaos_run_checks_every_restart_and_replays_by_its_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("chaos.json");
    let out = Command::new(BIN)
        .args(["chaos", "--kills", "3", "--seed", "7", "--pods", "1", "--concurrency", "2", "--json"])
        .arg(&report)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{table}\n{stderr}");
    assert!(stderr.contains("seed 7 (replay with --seed 7)"), "{stderr}");
    let report = json(&report);
    assert_eq!(report["chaos"]["kills"], 3);
    assert_eq!(report["chaos"]["verified"], 3);
    assert_eq!(report["chaos"]["pods_lost"], 0);
    assert_eq!(report["leaks"], 0);
}

#[test]
fn chaos_refuses_an_endpoint_it_cannot_restart() {
    let out =
        Command::new(BIN).args(["chaos", "--endpoint", "unix:///run/containerd/containerd.sock"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot restart") && stderr.contains("--daemon-cmd"), "{stderr}");
}
