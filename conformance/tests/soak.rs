//! `soak` and `chaos` as a user runs them: a short soak of an embedded lockstepd finds no leak
//! and says so in its table and JSON, Ctrl-C ends a soak with every pod removed and the counts
//! printed, a short chaos run checks every restart, chaos refuses a runtime it cannot restart,
//! and each of chaos's other faults (monitors and crun killed, a full disk, a registry dropped
//! mid-layer) is made for real against an embedded lockstepd, whose answers are judged.

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
    // Every pod had a veth while up (6 cycles and a steady pod at least), and none is left.
    let veths =
        report["accounting"].as_array().unwrap().iter().find(|l| l["resource"] == "veths of the run's pods").unwrap();
    assert!(report["veths_seen"].as_u64().unwrap() >= 7, "{}", report["veths_seen"]);
    assert_eq!(veths["after"], 0);
    // The daemon's memory, and the anonymous part of it (what a leak would grow), both ends.
    for (whole, anon) in [("rss_before_kib", "rss_anon_before_kib"), ("rss_after_kib", "rss_anon_after_kib")] {
        let (whole, anon) = (report[whole].as_u64().unwrap(), report[anon].as_u64().unwrap());
        assert!(anon > 0 && anon < whole, "anonymous {anon} KiB of {whole} KiB");
    }
    assert!(table.contains("of which anonymous (heap, stacks)"), "{table}");
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

/// A chaos run of `faults` against an embedded lockstepd: its exit code, JSON report, stderr.
fn chaos_with(faults: &str, kills: &str, seed: &str) -> (Option<i32>, serde_json::Value, String) {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("chaos.json");
    let out = Command::new(BIN)
        .args(["chaos", "--kills", kills, "--seed", seed, "--fault", faults])
        .args(["--pods", "1", "--concurrency", "2", "--image-every", "0", "--json"])
        .arg(&report)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let table = String::from_utf8_lossy(&out.stdout);
    let json = std::fs::read_to_string(&report).map(|t| serde_json::from_str(&t).unwrap()).unwrap_or_default();
    (out.status.code(), json, format!("{table}\n{stderr}"))
}

fn outcomes(report: &serde_json::Value) -> Vec<String> {
    report["chaos"]["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.as_str().map(str::to_string))
        .collect()
}

#[test]
fn chaos_kills_monitors_and_crun_mid_call_and_lockstepd_reports_every_container_truthfully() {
    let (code, report, output) = chaos_with("monitor,oci-runtime", "4", "15");
    assert_eq!(code, Some(0), "{output}");
    let chaos = &report["chaos"];
    assert_eq!(chaos["monitor_kills"].as_u64().unwrap() + chaos["oci_runtime_kills"].as_u64().unwrap(), 4, "{chaos}");
    assert_eq!(chaos["kills"], 0, "no daemon kill was drawn");
    assert_eq!(chaos["fault_findings"], 0, "{output}");
    assert_eq!(report["leaks"], 0, "{output}");
    let outcomes = outcomes(&report);
    let killed = outcomes.iter().filter(|o| o.contains("SIGKILL pid")).count();
    assert!(killed >= 2, "most faults found a process to kill: {outcomes:?}");
    // Each victim that served a container was judged by what the runtime said of it.
    assert!(outcomes.iter().any(|o| o.contains("container ")), "{outcomes:?}");
}

#[test]
fn chaos_fills_lockstepd_s_disk_and_every_call_says_so_and_all_works_once_it_is_freed() {
    let (code, report, output) = chaos_with("disk-full", "1", "15");
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(report["chaos"]["disk_full_rounds"], 1);
    assert_eq!(report["chaos"]["fault_findings"], 0, "{output}");
    assert_eq!(report["leaks"], 0, "{output}");
    let outcomes = outcomes(&report).join("\n");
    // The regression of lockstepd's DATA_LOSS for a pull onto a full disk.
    assert!(outcomes.contains("PullImage: ResourceExhausted"), "{outcomes}");
    for seen in ["no image listed after the failed pull", "after: PullImage succeeded", "after: the app's log goes on"]
    {
        assert!(outcomes.contains(seen), "{seen}: {outcomes}");
    }
    // The tmpfs the harness mounted as lockstepd's root is gone with the run.
    let root = outcomes.split("disk-full: ").nth(2).and_then(|t| t.split(" filled").next()).unwrap_or_default();
    assert!(root.ends_with("/root"), "{outcomes}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(root), "{root} is still mounted");
}

#[test]
fn chaos_drops_the_registry_mid_layer_and_the_pull_fails_clean_then_resumes_or_succeeds() {
    let (code, report, output) = chaos_with("registry-drop", "1", "15");
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(report["chaos"]["registry_drops"], 1);
    assert_eq!(report["chaos"]["fault_findings"], 0, "{output}");
    assert_eq!(report["leaks"], 0, "{output}");
    let outcomes = outcomes(&report).join("\n");
    for seen in [
        "PullImage Unavailable",
        "no image listed after the failed pull",
        "no partial download left",
        "cut once: the pull went on and succeeded",
        "not cut: pulled",
    ] {
        assert!(outcomes.contains(seen), "{seen}: {outcomes}");
    }
}

#[test]
fn chaos_refuses_an_unknown_fault_and_a_disk_full_it_cannot_make() {
    let out = Command::new(BIN).args(["chaos", "--fault", "daemon,power-cut"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("power-cut") && stderr.contains("registry-drop"), "{stderr}");
    let out = Command::new(BIN)
        .args(["chaos", "--fault", "disk-full", "--daemon-cmd", "true", "--endpoint", "unix:///tmp/none.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--disk-dir"), "{stderr}");
}
