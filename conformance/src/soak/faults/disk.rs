//! A full disk: the runtime's storage on a size-limited filesystem (for an embedded lockstepd, a
//! tmpfs this module mounts as its --root; for a daemon given as a command, a directory the
//! operator put on one), filled to the last byte by a file the harness writes, while a probe
//! pod's app writes its log there and the load goes on. Then: pulls, container writes, new
//! containers and pods must fail with a clear status (naming the cause for a pull), leave nothing
//! half-made listed, the daemon must keep answering and its containers keep running; after the
//! file is removed, pulls, containers and the log work again.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lockstep_cri::model;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::helpers::serving;
use super::{bounded, clear, line, Round};
use crate::soak::load::Load;

/// The file that fills the disk, in the directory given.
const FILLER: &str = ".lockstep-chaos-filler";
/// The probe pod's app: a numbered line every 50 ms, to its log on the full disk.
const WRITER: &str = "i=0; while :; do echo w$i; i=$((i+1)); sleep 0.05; done";
/// A write inside the container's rootfs (its writable layer is on the full disk).
const ROOTFS_WRITE: &str = "head -c 1048576 /dev/zero > /chaos-write && rm /chaos-write";

/// A size-limited tmpfs, unmounted when dropped.
pub struct Tmpfs {
    point: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `point` (made if missing), mode 0711 as lockstepd's root.
    pub fn mount(point: &Path, mib: u64) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(point).with_context(|| format!("cannot make {}", point.display()))?;
        let options = format!("size={mib}m,mode=0711");
        mount(Some("tmpfs"), point, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options.as_str()))
            .with_context(|| format!("cannot mount a {mib} MiB tmpfs on {}", point.display()))?;
        Ok(Tmpfs { point: point.to_path_buf() })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // What the runtime mounted inside is gone with it (the daemon's own sweep ran first).
        let _ = umount2(&self.point, MntFlags::MNT_DETACH);
    }
}

/// Writes `dir/FILLER` until the filesystem refuses (ENOSPC): the bytes written.
fn fill(dir: &Path) -> std::io::Result<u64> {
    let mut file = std::fs::File::create(dir.join(FILLER))?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => return Ok(written),
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => return Err(e),
        }
    }
    // The last partial block: byte by byte would be slow; a smaller chunk once more.
    for size in [4096usize, 1] {
        while let Ok(n) = file.write(&chunk[..size]) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
    }
    Ok(written)
}

const CAUSES: [&str; 6] = ["no space left", "enospc", "disk full", "disk is full", "out of space", "quota"];

/// Whether an error message names a full disk.
pub fn names_disk_full(message: &str) -> bool {
    let lower = message.to_lowercase();
    CAUSES.iter().any(|m| lower.contains(m))
}

/// An error as a line: its code, its start and, when further on, the words naming the cause.
fn cause_line(status: &tonic::Status) -> String {
    let message = status.message().lines().next().unwrap_or_default();
    let start: String = message.chars().take(120).collect();
    let lower = message.to_lowercase();
    let cause = CAUSES.iter().filter_map(|m| lower.find(m)).min().filter(|at| *at + 20 > start.len());
    match cause {
        Some(at) => {
            let tail: String = message.get(at..).unwrap_or_default().chars().take(60).collect();
            format!("{:?}: {start} … {tail}", status.code())
        }
        None => format!("{:?}: {start}", status.code()),
    }
}

/// A call refused while the disk is full must say so: RESOURCE_EXHAUSTED, or INTERNAL naming it.
fn refused(call: &str, status: &tonic::Status, round: &mut Round) {
    let code_fits = matches!(status.code(), tonic::Code::ResourceExhausted | tonic::Code::Internal);
    if code_fits && names_disk_full(status.message()) {
        round.saw(format!("{call}: {}", cause_line(status)));
    } else {
        round.wrong(format!(
            "{call} answered {}, not RESOURCE_EXHAUSTED or INTERNAL naming the full disk",
            cause_line(status)
        ));
    }
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

/// The state of a container, as a name.
fn state_name(state: i32) -> String {
    model::ContainerState::try_from(state).map_or(state.to_string(), |s| format!("{s:?}"))
}

/// One round: a probe pod writing its log into `dir`, the disk filled, the checks, the disk
/// freed, the checks again. `image` is a fixture the store does not hold (pulled, then removed).
pub async fn round(load: &Load, dir: &Path, image: &str, n: usize) -> Round {
    let mut round = Round::new(format!("disk-full: {} filled", dir.display()));
    let logs = dir.join(format!("lockstep-chaos-logs-{n}-{}", std::process::id()));
    let probe = match ProbePod::start(load, &logs).await {
        Ok(probe) => probe,
        Err(e) => {
            round.wrong(format!("the probe pod did not start before the fill: {e}"));
            let _ = std::fs::remove_dir_all(&logs);
            return round;
        }
    };
    load.marks.open_window();
    let filled = tokio::task::spawn_blocking({
        let dir = dir.to_path_buf();
        move || fill(&dir)
    })
    .await;
    match filled {
        Ok(Ok(bytes)) => round.saw(format!("filled with {:.1} MiB", bytes as f64 / (1 << 20) as f64)),
        Ok(Err(e)) => round.wrong(format!("cannot fill {}: {e}", dir.display())),
        Err(e) => round.wrong(format!("cannot fill {}: {e}", dir.display())),
    }
    full(load, &probe, image, &mut round).await;
    let log_at_free = lines_in(&probe.log);
    if let Err(e) = std::fs::remove_file(dir.join(FILLER)) {
        round.wrong(format!("cannot remove the filler: {e}"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    freed(load, &probe, image, log_at_free, &mut round).await;
    load.marks.close_window();
    for pod in &probe.pods {
        if let Err(e) = load.remove_pod(pod).await {
            round.wrong(format!("the probe pod could not be removed after the disk was freed: {e}"));
        }
    }
    let _ = std::fs::remove_dir_all(&logs);
    round
}

/// The probe: a pod whose app writes its log on the full disk.
struct ProbePod {
    config: model::PodSandboxConfig,
    /// The pod, and any other the round made.
    pods: Vec<String>,
    pod: String,
    writer: String,
    log: PathBuf,
}

impl ProbePod {
    async fn start(load: &Load, logs: &Path) -> Result<ProbePod, String> {
        let mut config = load.pod_config("disk-probe")?;
        for name in ["writer", "during", "after"] {
            std::fs::create_dir_all(logs.join(name)).map_err(|e| format!("cannot make {}: {e}", logs.display()))?;
        }
        config.log_directory = logs.display().to_string();
        let pod = load.run_pod(&config).await?;
        let writer = load.container(&pod, &config, "writer", &["sh", "-c", WRITER]);
        let writer = match load.create_start(&pod, &config, writer).await {
            Ok(writer) => writer,
            Err(e) => {
                let _ = load.remove_pod(&pod).await;
                return Err(e);
            }
        };
        let probe = ProbePod { config, pods: vec![pod.clone()], pod, writer, log: logs.join("writer/0.log") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while lines_in(&probe.log) < 2 {
            if Instant::now() > deadline {
                let _ = load.remove_pod(&probe.pod).await;
                return Err(format!("the writer's log {} stays empty", probe.log.display()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(probe)
    }
}

async fn exec(load: &Load, container: &str, script: &str) -> Result<model::ExecSyncResponse, tonic::Status> {
    let mut client = bounded(load.client());
    let cmd = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    client.exec_sync(model::ExecSyncRequest { container_id: container.to_string(), cmd, timeout: 20 }).await
}

async fn pull(load: &Load, image: &str) -> Result<String, tonic::Status> {
    let mut client = bounded(load.client());
    client.set_timeout(Some(Duration::from_secs(120)));
    let spec = Some(model::ImageSpec { image: image.to_string(), ..Default::default() });
    client.pull_image(model::PullImageRequest { image: spec, ..Default::default() }).await.map(|r| r.image_ref)
}

async fn image_listed(load: &Load, image: &str) -> Result<bool, tonic::Status> {
    let mut client = bounded(load.client());
    let spec = Some(model::ImageSpec { image: image.to_string(), ..Default::default() });
    Ok(client.image_status(model::ImageStatusRequest { image: spec, verbose: false }).await?.image.is_some())
}

/// What must hold while the disk is full.
async fn full(load: &Load, probe: &ProbePod, image: &str, round: &mut Round) {
    match exec(load, &probe.writer, ROOTFS_WRITE).await {
        Ok(r) if r.exit_code != 0 => {
            let stderr = String::from_utf8_lossy(&r.stderr);
            round.saw(format!(
                "a write to the container's rootfs: exit code {} ({})",
                r.exit_code,
                stderr.lines().next().unwrap_or_default()
            ));
        }
        Ok(_) => round.saw("a write to the container's rootfs succeeded (the writable layer is elsewhere)"),
        Err(e) if clear(&e) => round.saw(format!("ExecSync of a rootfs write: {}", line(&e))),
        Err(e) => round.wrong(format!("ExecSync of a rootfs write: {}", line(&e))),
    }
    match pull(load, image).await {
        Ok(_) => round.saw(format!("PullImage {image} fitted in what was left")),
        Err(e) => refused("PullImage", &e, round),
    }
    match image_listed(load, image).await {
        Ok(false) => round.saw("no image listed after the failed pull"),
        Ok(true) => {} // fitted (said above)
        Err(e) => round.wrong(format!("ImageStatus: {}", line(&e))),
    }
    let during = load.container(&probe.pod, &probe.config, "during", &["sh", "-c", "echo during"]);
    let mut client = bounded(load.client());
    let request = model::CreateContainerRequest {
        pod_sandbox_id: probe.pod.clone(),
        config: Some(during),
        sandbox_config: Some(probe.config.clone()),
    };
    match client.create_container(request).await {
        Ok(r) => round.saw(format!("CreateContainer succeeded ({})", &r.container_id[..r.container_id.len().min(13)])),
        Err(e) => {
            refused("CreateContainer", &e, round);
            let filter = model::ContainerFilter { pod_sandbox_id: probe.pod.clone(), ..Default::default() };
            match client.list_containers(model::ListContainersRequest { filter: Some(filter) }).await {
                Ok(listed) => {
                    let half =
                        listed.containers.iter().filter(|c| c.metadata.as_ref().is_some_and(|m| m.name == "during"));
                    if half.count() > 0 {
                        round.wrong("the failed CreateContainer left a container listed");
                    }
                }
                Err(e) => round.wrong(format!("ListContainers: {}", line(&e))),
            }
        }
    }
    match load.pod_config("disk-full") {
        Ok(config) => {
            let uid = config.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
            match client.run_pod_sandbox(lockstep_testkit::requests::run_pod(config)).await {
                Ok(r) => {
                    round.saw("RunPodSandbox succeeded");
                    load.remember_pod(&r.pod_sandbox_id);
                    let _ = load.remove_pod(&r.pod_sandbox_id).await;
                }
                Err(e) => {
                    refused("RunPodSandbox", &e, round);
                    let left = load.pods_of_uid(&uid).await;
                    for pod in &left {
                        load.remember_pod(pod);
                    }
                    if !left.is_empty() {
                        round.wrong(format!("the failed RunPodSandbox left {} pod(s) listed", left.len()));
                    }
                }
            }
        }
        Err(e) => round.wrong(e),
    }
    serving(load, round).await;
    match load.status(&probe.writer).await {
        Ok(s) if s.state == model::ContainerState::ContainerRunning as i32 => {
            round.saw("the app writing its log on the full disk keeps running")
        }
        Ok(s) => round.wrong(format!(
            "the app writing its log on the full disk is {} (exit code {})",
            state_name(s.state),
            s.exit_code
        )),
        Err(e) => round.wrong(format!("the writer: {e}")),
    }
}

/// What must hold once the disk has room again.
async fn freed(load: &Load, probe: &ProbePod, image: &str, log_at_free: usize, round: &mut Round) {
    match pull(load, image).await {
        Ok(_) => {
            round.saw("after: PullImage succeeded");
            let mut client = bounded(load.client());
            let spec = Some(model::ImageSpec { image: image.to_string(), ..Default::default() });
            if let Err(e) = client.remove_image(model::RemoveImageRequest { image: spec }).await {
                round.wrong(format!("after: RemoveImage: {}", line(&e)));
            }
        }
        Err(e) => round.wrong(format!("after: PullImage: {}", line(&e))),
    }
    let after = load.container(&probe.pod, &probe.config, "after", &["sh", "-c", "echo after"]);
    match load.create_start(&probe.pod, &probe.config, after).await {
        Ok(id) => match load.wait_state(&id, model::ContainerState::ContainerExited).await {
            Ok((_, 0)) => round.saw("after: a new container ran and exited 0"),
            Ok((_, code)) => round.wrong(format!("after: `echo after` exited {code}")),
            Err(e) => round.wrong(format!("after: {e}")),
        },
        Err(e) => round.wrong(format!("after: {e}")),
    }
    match exec(load, &probe.writer, ROOTFS_WRITE).await {
        Ok(r) if r.exit_code == 0 => round.saw("after: a write to the container's rootfs succeeded"),
        Ok(r) => round.wrong(format!(
            "after: a write to the container's rootfs exited {} ({})",
            r.exit_code,
            String::from_utf8_lossy(&r.stderr).lines().next().unwrap_or_default()
        )),
        Err(e) => round.wrong(format!("after: ExecSync: {}", line(&e))),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = lines_in(&probe.log);
        if now > log_at_free + 2 {
            round.saw(format!("after: the app's log goes on ({log_at_free} → {now} lines)"));
            break;
        }
        if Instant::now() > deadline {
            round.wrong(format!(
                "after: the app's log stays at {now} lines (was {log_at_free} when the disk was freed)"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tmpfs_is_filled_to_enospc_and_names_of_the_cause_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Tmpfs::mount(&dir.path().join("disk"), 2).unwrap();
        let written = fill(&dir.path().join("disk")).unwrap();
        let full = std::fs::write(dir.path().join("disk/more"), b"x");
        drop(disk);
        assert!(written > (1 << 20) && written <= (2 << 20), "{written}");
        assert_eq!(full.map_err(|e| e.raw_os_error()), Err(Some(nix::libc::ENOSPC)));
        assert!(names_disk_full("write sha256:ab: No space left on device (os error 28)"));
        assert!(!names_disk_full("connection refused"));
        let long = format!("cannot write /{}: No space left on device (os error 28)", "x".repeat(200));
        let shown = cause_line(&tonic::Status::internal(long));
        assert!(
            shown.starts_with("Internal: cannot write") && shown.ends_with("No space left on device (os error 28)"),
            "{shown}"
        );
        let mut round = Round::new("t");
        refused("PullImage", &tonic::Status::data_loss("layer: No space left on device"), &mut round);
        refused("PullImage", &tonic::Status::internal("cannot write: permission denied"), &mut round);
        refused("PullImage", &tonic::Status::resource_exhausted("No space left on device"), &mut round);
        assert_eq!((round.findings.len(), round.outcomes.len()), (2, 1), "{round:?}");
    }
}
