//! `cargo bench -p lockstep-runtime --bench monitor`: what lockstep-monitor costs per
//! container (resident and proportional memory with N containers running, read from /proc),
//! the latency of the steps it takes part in (spawn until the init pid is reported, start,
//! kill until the exit is recorded, delete) with runc and with crun (in its pure cgroup v1
//! view on a hybrid host), and the handler probe lockstepd runs at start. Real containers from
//! a busybox rootfs, cleaned up afterwards.

#[path = "../tests/lab/mod.rs"]
mod lab;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab::Lab;
use lockstep_runtime::oci::OciRuntime;

const CONTAINERS: usize = 20;
const PROBES: usize = 10;

/// One monitor's memory (KiB) and threads, read while its container runs.
struct MonitorMemory {
    rss: u64,
    pss: u64,
    /// Unique set size: the pages no other process maps, what one more container really adds.
    uss: u64,
    threads: u64,
}

/// The step latencies of `containers` containers in `lab`, and their monitors' memory.
struct Steps {
    spawn: Vec<Duration>,
    start: Vec<Duration>,
    stop: Vec<Duration>,
    delete: Vec<Duration>,
    monitors: Vec<MonitorMemory>,
}

/// Creates and starts `containers` sleeping containers, reads their monitors, then kills,
/// waits for and deletes each, timing every step.
fn lifecycle(lab: &Lab, containers: usize) -> Steps {
    let mut steps =
        Steps { spawn: Vec::new(), start: Vec::new(), stop: Vec::new(), delete: Vec::new(), monitors: Vec::new() };
    let mut pids = Vec::new();
    for i in 0..containers {
        let id = format!("bench-{i}");
        let t = Instant::now();
        let spawned = lab.create(&id, &Lab::config(&["sleep", "1000"])).expect("create");
        steps.spawn.push(t.elapsed());
        let t = Instant::now();
        lab.runtime.start(&id).expect("start");
        steps.start.push(t.elapsed());
        pids.push(spawned.monitor_pid);
    }
    std::thread::sleep(Duration::from_millis(200));
    steps.monitors = pids
        .iter()
        .filter_map(|&pid| {
            Some(MonitorMemory {
                rss: status_kib(pid, "VmRSS:")?,
                pss: rollup_kib(pid, "Pss:")?,
                uss: rollup_kib(pid, "Private_Clean:")? + rollup_kib(pid, "Private_Dirty:")?,
                threads: status_kib(pid, "Threads:")?,
            })
        })
        .collect();
    for i in 0..containers {
        let id = format!("bench-{i}");
        let t = Instant::now();
        lab.runtime.kill(&id, 9, false).expect("kill");
        lab.wait_exit(&id);
        steps.stop.push(t.elapsed());
        let t = Instant::now();
        lab.runtime.delete(&id).expect("delete");
        steps.delete.push(t.elapsed());
    }
    lab.clean_up();
    steps
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it too: keep that short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let containers = if quick { 2 } else { CONTAINERS };
    let hybrid_cgroup2 = lockstep_runtime::host::cgroups::Layout::read().hybrid_unified().map(PathBuf::from);
    let runc = lifecycle(&Lab::new("runc"), containers);
    // crun as lockstepd runs it: in a pure cgroup v1 view on a hybrid host.
    let crun = lifecycle(&Lab::hiding_cgroup2("crun", hybrid_cgroup2.clone()), containers);
    let rss: Vec<u64> = runc.monitors.iter().map(|m| m.rss).collect();
    let pss: Vec<u64> = runc.monitors.iter().map(|m| m.pss).collect();
    let uss: Vec<u64> = runc.monitors.iter().map(|m| m.uss).collect();
    let threads: Vec<u64> = runc.monitors.iter().map(|m| m.threads).collect();

    let probes = if quick { 1 } else { PROBES };
    let tmp = tempfile::Builder::new().prefix("lsk").tempdir_in("/tmp").unwrap();
    let mut probe_times: Vec<(String, Vec<Duration>)> = Vec::new();
    for handler in ["runc", "crun"] {
        let mut times = Vec::new();
        for _ in 0..probes {
            let t = Instant::now();
            let probed = lockstep_runtime::oci::probe_one(
                handler,
                Path::new(handler),
                &tmp.path().join("oci"),
                false,
                Path::new(lockstep_runtime::oci::PROBE_BINARY),
                hybrid_cgroup2.as_deref(),
            );
            times.push(t.elapsed());
            assert!(probed.works(), "{probed:?}");
        }
        probe_times.push((handler.to_string(), times));
    }

    let shims = containerd_shims(containers);

    println!("lockstep-monitor, {containers} runc containers (`sleep`), this host:");
    println!("  resident memory per monitor (VmRSS): {}", summary_kib(&rss));
    println!("  proportional memory per monitor (Pss): {}", summary_kib(&pss));
    println!("  unique memory per monitor (USS: Private_Clean + Private_Dirty): {}", summary_kib(&uss));
    println!("  threads per monitor: {}", summary_count(&threads));
    for (handler, steps) in [("runc", &runc), ("crun", &crun)] {
        println!("  {handler}: spawn monitor + create, until the init pid is reported: {}", summary(&steps.spawn));
        println!("  {handler}: start: {}", summary(&steps.start));
        println!("  {handler}: kill -9 until the monitor recorded the exit: {}", summary(&steps.stop));
        println!("  {handler}: delete: {}", summary(&steps.delete));
    }
    for (handler, times) in &probe_times {
        println!("  probe {handler} (version + probe container + features): {}", summary(times));
    }
    match shims {
        Ok(m) => {
            println!(
                "containerd 1.6 in the same run, {containers} containers started with `ctr run -d` (one shim each):"
            );
            println!("  resident memory per containerd-shim-runc-v2 (VmRSS): {}", summary_kib(&m.rss));
            println!("  proportional memory per shim (Pss): {}", summary_kib(&m.pss));
            println!("  unique memory per shim (USS): {}", summary_kib(&m.uss));
        }
        Err(e) => println!("containerd not measured: {e}"),
    }
}

struct Memory {
    rss: Vec<u64>,
    pss: Vec<u64>,
    uss: Vec<u64>,
}

/// containerd's per-container process for comparison: a private containerd (ci/containerd),
/// a busybox image imported from a docker-archive tarball built here, `ctr run -d` n times,
/// then the shims' memory; everything is stopped and removed afterwards.
fn containerd_shims(n: usize) -> Result<Memory, String> {
    use std::process::Command;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no repository root")?.to_path_buf();
    let script = repo.join("ci/containerd");
    let tmp = tempfile::Builder::new().prefix("lskctd").tempdir_in("/tmp").map_err(|e| e.to_string())?;
    let dir = tmp.path().to_path_buf();
    let run = |cmd: &mut Command| -> Result<String, String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    // ctr puts containers in cgroups /<namespace>/<id>: a namespace of our own, removed after.
    let namespace = format!("lockstep-bench-{}", std::process::id());
    struct Stop(std::path::PathBuf, std::path::PathBuf, String);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = std::process::Command::new(&self.0).arg("stop").arg(&self.1).output();
            lab::remove_cgroups(&self.2);
        }
    }
    run(Command::new(&script).arg("start").arg(&dir))?;
    let _stop = Stop(script.clone(), dir.clone(), namespace.clone());
    let sock = dir.join("containerd.sock");
    let ctr = || {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&sock).arg("-n").arg(&namespace);
        c
    };
    // A docker-archive image: the lab's busybox rootfs as its one layer.
    let lab = Lab::new("runc");
    let img = dir.join("img");
    std::fs::create_dir_all(&img).map_err(|e| e.to_string())?;
    run(Command::new("tar").arg("-C").arg(&lab.rootfs).arg("-cf").arg(img.join("layer.tar")).arg("."))?;
    let digest = run(Command::new("sha256sum").arg(img.join("layer.tar")))?;
    let digest = digest.split_whitespace().next().unwrap_or_default().to_string();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sleep", "1000"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]}
    });
    std::fs::write(img.join("config.json"), config.to_string()).map_err(|e| e.to_string())?;
    let manifest = serde_json::json!([{"Config": "config.json", "RepoTags": ["lockstep.test/busybox:bench"], "Layers": ["layer.tar"]}]);
    std::fs::write(img.join("manifest.json"), manifest.to_string()).map_err(|e| e.to_string())?;
    let archive = dir.join("image.tar");
    run(Command::new("tar").arg("-C").arg(&img).arg("-cf").arg(&archive).args([
        "manifest.json",
        "config.json",
        "layer.tar",
    ]))?;
    run(ctr().args(["image", "import"]).arg(&archive))?;
    for i in 0..n {
        run(ctr().args(["run", "-d", "lockstep.test/busybox:bench", &format!("bench-{i}")]))?;
    }
    std::thread::sleep(Duration::from_millis(200));
    let needle = sock.to_string_lossy().into_owned();
    let shims: Vec<i32> = std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("containerd-shim") && c.contains(&needle)
            })
        })
        .collect();
    if shims.len() != n {
        return Err(format!("expected {n} shims, found {}", shims.len()));
    }
    let rss = shims.iter().filter_map(|pid| status_kib(*pid, "VmRSS:")).collect();
    let pss = shims.iter().filter_map(|pid| rollup_kib(*pid, "Pss:")).collect();
    let uss = shims
        .iter()
        .filter_map(|pid| Some(rollup_kib(*pid, "Private_Clean:")? + rollup_kib(*pid, "Private_Dirty:")?))
        .collect();
    Ok(Memory { rss, pss, uss })
}

fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn rollup_kib(pid: i32, field: &str) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn summary(samples: &[Duration]) -> String {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.1} ms, p95 {:.1} ms, min {:.1} ms, max {:.1} ms (n={})",
        at(0.5),
        at(0.95),
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    )
}

fn summary_kib(samples: &[u64]) -> String {
    let mut s = samples.to_vec();
    s.sort_unstable();
    if s.is_empty() {
        return "unreadable".into();
    }
    format!("median {} KiB, max {} KiB (n={})", s[s.len() / 2], s[s.len() - 1], s.len())
}

fn summary_count(samples: &[u64]) -> String {
    let mut s = samples.to_vec();
    s.sort_unstable();
    s.get(s.len() / 2).map(|m| format!("{m}")).unwrap_or_else(|| "unreadable".into())
}
