//! What the container suites share: a pod made for containers (its log directory made by the
//! harness, as the kubelet makes it), ContainerConfigs as the kubelet builds them, helpers for
//! the calls every test makes (create, start, status, wait, exec), and cleanup that stops and
//! removes every container and the pod whatever the test body did. Touches only the pods,
//! containers and temporary directories it makes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockstep_cri::{model, CriClient};
use lockstep_testkit::requests;

use super::podkit::{self, Pod};
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, TestResult};
use lockstep_testkit::fixtures::{self, env::RegistryEnv};

/// What a kubelet labels each container with.
pub const CONTAINER_NAME_LABEL: &str = requests::CONTAINER_NAME;

/// How long a test waits for a container to reach a state.
pub const STATE_WAIT: Duration = Duration::from_secs(30);

/// A pod config for container tests: `podkit::pod_config` with a log directory that exists.
pub fn pod_config(purpose: &str, log_dir: &Path) -> model::PodSandboxConfig {
    let mut config = podkit::pod_config(purpose);
    config.log_directory = log_dir.display().to_string();
    config
}

/// A pod under test, the images it may use and the containers made in it.
#[derive(Clone)]
pub struct Kit {
    pub ctx: Ctx,
    pub pod: Pod,
    pub pod_config: model::PodSandboxConfig,
    pub registry: Arc<RegistryEnv>,
    /// The pod's log directory (a temporary directory of the harness).
    pub log_dir: PathBuf,
    created: Arc<Mutex<Vec<String>>>,
}

/// The registry of the run, or a skip (container tests need a test image).
pub fn registry(ctx: &Ctx) -> Result<Arc<RegistryEnv>, Failure> {
    ctx.registry.clone().ok_or_else(|| Failure::skip("no registry with the test images"))
}

/// Pulls a fixture image (as the kubelet's EnsureImageExists) and returns its image ref (ID).
pub async fn pull(ctx: &Ctx, registry: &RegistryEnv, repo: &str) -> Result<String, Failure> {
    let reference = registry.fixture(repo).reference(&registry.host);
    let response = ctx
        .kubelet()
        .pull_image(model::PullImageRequest {
            image: Some(model::ImageSpec { image: reference.clone(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .map_err(|e| call_failed("PullImage", &e))?;
    check!(!response.image_ref.is_empty(), "PullImage of {reference} returned no image_ref");
    Ok(response.image_ref)
}

/// Makes a temporary log directory, runs a pod whose log_directory it is, hands the pod to
/// `body`, then stops and removes every container the kit made, the pod and the directory.
pub async fn with_kit<F, Fut>(ctx: &Ctx, purpose: &str, body: F) -> TestResult
where
    F: FnOnce(Kit) -> Fut,
    Fut: Future<Output = TestResult>,
{
    with_kit_config(ctx, purpose, |_| {}, body).await
}

/// As `with_kit`, with a chance to change the pod's config first.
pub async fn with_kit_config<F, Fut>(
    ctx: &Ctx,
    purpose: &str,
    adjust: impl FnOnce(&mut model::PodSandboxConfig),
    body: F,
) -> TestResult
where
    F: FnOnce(Kit) -> Fut,
    Fut: Future<Output = TestResult>,
{
    let registry = registry(ctx)?;
    let log_dir = tempfile::Builder::new()
        .prefix("lockstep-conformance-logs-")
        .tempdir()
        .map_err(|e| Failure::fail(format!("cannot make a log directory: {e}")))?;
    let mut config = pod_config(purpose, log_dir.path());
    adjust(&mut config);
    let mut client = ctx.kubelet();
    let id = podkit::run_pod(&mut client, config.clone()).await?;
    let kit = match podkit::describe(&mut client, &id).await {
        Ok(pod) => Ok(Kit {
            ctx: ctx.clone(),
            pod,
            pod_config: config,
            registry,
            log_dir: log_dir.path().to_path_buf(),
            created: Arc::new(Mutex::new(Vec::new())),
        }),
        Err(e) => Err(e),
    };
    let (result, cleaned) = match kit {
        Ok(kit) => {
            let result = body(kit.clone()).await;
            (result, kit.clean_up().await)
        }
        Err(e) => (Err(e), Ok(())),
    };
    let pod_gone = podkit::stop_and_remove(&mut client, &id).await;
    result.and(cleaned).and(pod_gone)
}

impl Kit {
    pub fn client(&self) -> CriClient {
        self.ctx.kubelet()
    }

    /// A ContainerConfig as the kubelet builds it for `name` running `command` in `image`
    /// (an image ref from `pull`), in this kit's pod (the testkit's `requests::container`), with
    /// the name the pod spec gave the image.
    pub fn config(&self, name: &str, image: &str, command: &[&str]) -> model::ContainerConfig {
        let mut config = requests::container(&self.pod_config, name, image, command);
        if let Some(spec) = config.image.as_mut() {
            // The kubelet sends the image ID it resolved and the name the pod spec gave.
            spec.user_specified_image = self
                .registry
                .standard
                .iter()
                .find(|f| f.id() == image)
                .map_or_else(|| image.to_string(), |f| f.reference(&self.registry.host));
        }
        config
    }

    /// The shell image's ref, pulled.
    pub async fn shell(&self) -> Result<String, Failure> {
        self.image(fixtures::SHELL).await
    }

    /// A fixture image's ref, pulled.
    pub async fn image(&self, repo: &str) -> Result<String, Failure> {
        pull(&self.ctx, &self.registry, repo).await
    }

    /// `config` for a shell container running `script` with `sh -c`.
    pub async fn shell_config(&self, name: &str, script: &str) -> Result<model::ContainerConfig, Failure> {
        let image = self.shell().await?;
        Ok(self.config(name, &image, &["sh", "-c", script]))
    }

    /// CreateContainer as the kubelet calls it (it makes the container's log directory first).
    pub async fn create(&self, config: model::ContainerConfig) -> Result<String, Failure> {
        self.try_create(config).await.map_err(|e| call_failed("CreateContainer", &e))
    }

    /// CreateContainer, the gRPC error kept for tests of refusals.
    pub async fn try_create(&self, config: model::ContainerConfig) -> Result<String, tonic::Status> {
        let name = config.metadata.as_ref().map(|m| m.name.clone()).filter(|n| !n.is_empty());
        if let Some(name) = name.filter(|_| !config.log_path.is_empty()) {
            let _ = std::fs::create_dir_all(self.log_dir.join(name));
        }
        let id = self
            .client()
            .create_container(model::CreateContainerRequest {
                pod_sandbox_id: self.pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(self.pod_config.clone()),
            })
            .await?
            .container_id;
        self.adopt(&id);
        Ok(id)
    }

    /// The same kit (cleanup included) sending `config` as the sandbox config of its calls.
    pub fn with_pod_config(&self, config: model::PodSandboxConfig) -> Kit {
        Kit { pod_config: config, ..self.clone() }
    }

    /// Adds a container to those cleaned up after the test.
    pub fn adopt(&self, id: &str) {
        let mut created = self.created.lock().unwrap_or_else(|p| p.into_inner());
        if !created.iter().any(|c| c == id) {
            created.push(id.to_string());
        }
    }

    pub async fn start(&self, id: &str) -> TestResult {
        self.client()
            .start_container(model::StartContainerRequest { container_id: id.into() })
            .await
            .map(drop)
            .map_err(|e| call_failed("StartContainer", &e))
    }

    /// Creates and starts a container and waits until it runs.
    pub async fn run(&self, config: model::ContainerConfig) -> Result<String, Failure> {
        let id = self.create(config).await?;
        self.start(&id).await?;
        self.wait_state(&id, model::ContainerState::ContainerRunning).await?;
        Ok(id)
    }

    /// Runs a shell container with `script`, waits until it runs.
    pub async fn run_shell(&self, name: &str, script: &str) -> Result<String, Failure> {
        let config = self.shell_config(name, script).await?;
        self.run(config).await
    }

    /// Runs a shell container that sleeps, for exec tests.
    pub async fn run_sleeper(&self, name: &str) -> Result<String, Failure> {
        self.run_shell(name, "exec sleep 3600").await
    }

    pub async fn status(&self, id: &str) -> Result<model::ContainerStatus, Failure> {
        status(&self.ctx, id).await
    }

    /// Polls ContainerStatus until the container reaches `state`; a container that exits while
    /// a test waits for RUNNING fails with its exit code and log.
    pub async fn wait_state(&self, id: &str, state: model::ContainerState) -> Result<model::ContainerStatus, Failure> {
        let deadline = Instant::now() + STATE_WAIT;
        loop {
            let s = self.status(id).await?;
            if s.state == state as i32 {
                return Ok(s);
            }
            if s.state == model::ContainerState::ContainerExited as i32 {
                let log = std::fs::read_to_string(&s.log_path).unwrap_or_default();
                return Err(Failure::fail(format!(
                    "container {id} exited (code {}, reason {:?}, message {:?}) while waiting for {state:?}; log:\n{log}",
                    s.exit_code, s.reason, s.message
                )));
            }
            check!(
                Instant::now() < deadline,
                "container {id} did not reach {state:?} within {STATE_WAIT:?} (state {:?})",
                s.state()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the container has exited and returns its status.
    pub async fn wait_exit(&self, id: &str) -> Result<model::ContainerStatus, Failure> {
        let deadline = Instant::now() + STATE_WAIT;
        loop {
            let s = self.status(id).await?;
            if s.state == model::ContainerState::ContainerExited as i32 {
                return Ok(s);
            }
            check!(Instant::now() < deadline, "container {id} did not exit within {STATE_WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// ExecSync with a timeout in seconds (0: none).
    pub async fn exec(&self, id: &str, cmd: &[&str], timeout: i64) -> Result<model::ExecSyncResponse, tonic::Status> {
        let mut client = self.client();
        if timeout > 0 {
            client.set_timeout(Some(Duration::from_secs(timeout as u64 + 30)));
        }
        client
            .exec_sync(model::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
    }

    /// ExecSync that must exit 0; its stdout.
    pub async fn exec_ok(&self, id: &str, cmd: &[&str]) -> Result<String, Failure> {
        let r = self.exec(id, cmd, 30).await.map_err(|e| call_failed("ExecSync", &e))?;
        check!(
            r.exit_code == 0,
            "`{}` exited {} in the container: stdout {:?}, stderr {:?}",
            cmd.join(" "),
            r.exit_code,
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        Ok(String::from_utf8_lossy(&r.stdout).into_owned())
    }

    /// `sh -c script` through ExecSync, which must exit 0; its stdout.
    pub async fn sh(&self, id: &str, script: &str) -> Result<String, Failure> {
        self.exec_ok(id, &["sh", "-c", script]).await
    }

    /// The containers of the pod that ListContainers reports.
    pub async fn list(&self, filter: model::ContainerFilter) -> Result<Vec<model::Container>, Failure> {
        list(&self.ctx, filter).await
    }

    /// Where the kubelet reads a container's log: log_directory/log_path.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}/0.log"))
    }

    /// Stops (timeout 0) and removes every container the kit made; the first error is kept.
    async fn clean_up(&self) -> TestResult {
        let ids: Vec<String> = self.created.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut client = self.client();
        let mut result = Ok(());
        for id in ids.iter().rev() {
            let stopped = client.stop_container(model::StopContainerRequest { container_id: id.clone(), timeout: 0 });
            if let Err(e) = stopped.await {
                if e.code() != tonic::Code::NotFound && result.is_ok() {
                    result = Err(call_failed("StopContainer (cleanup)", &e));
                }
            }
            let removed = client.remove_container(model::RemoveContainerRequest { container_id: id.clone() });
            if let Err(e) = removed.await {
                if e.code() != tonic::Code::NotFound && result.is_ok() {
                    result = Err(call_failed("RemoveContainer (cleanup)", &e));
                }
            }
        }
        result
    }
}

/// Runs `cmd` inside a pod that a test made without a kit (Need::ExecInPod): a shell container
/// with no log file is created in it, the command is run by ExecSync (it must exit 0), and the
/// container is removed again. Returns the command's stdout.
pub async fn exec_in_pod(
    ctx: &Ctx,
    pod_id: &str,
    pod_config: &model::PodSandboxConfig,
    cmd: &[&str],
) -> Result<String, Failure> {
    let registry = registry(ctx)?;
    let image = pull(ctx, &registry, fixtures::SHELL).await?;
    let kit = Kit {
        ctx: ctx.clone(),
        pod: Pod { id: pod_id.into(), ip: String::new(), netns: None, utsns: None, resolv_conf: None },
        pod_config: pod_config.clone(),
        registry,
        log_dir: PathBuf::new(),
        created: Arc::new(Mutex::new(Vec::new())),
    };
    let mut config = kit.config("exec-in-pod", &image, &["sleep", "3600"]);
    // No log file: the pod's log directory may be the node's /var/log/pods.
    config.log_path.clear();
    let result = async {
        let id = kit.run(config).await?;
        kit.exec_ok(&id, cmd).await
    }
    .await;
    let cleaned = kit.clean_up().await;
    let out = result?;
    cleaned?;
    Ok(out)
}

pub use requests::{profile, security};

/// The resources of a config, made if absent.
pub fn resources(config: &mut model::ContainerConfig) -> &mut model::LinuxContainerResources {
    config.linux.get_or_insert_with(Default::default).resources.get_or_insert_with(Default::default)
}

pub async fn status(ctx: &Ctx, id: &str) -> Result<model::ContainerStatus, Failure> {
    let response = ctx
        .kubelet()
        .container_status(model::ContainerStatusRequest { container_id: id.into(), verbose: false })
        .await
        .map_err(|e| call_failed("ContainerStatus", &e))?;
    response.status.ok_or_else(|| Failure::fail("ContainerStatusResponse.status is absent: the kubelet fails the pod"))
}

pub async fn list(ctx: &Ctx, filter: model::ContainerFilter) -> Result<Vec<model::Container>, Failure> {
    ctx.kubelet()
        .list_containers(model::ListContainersRequest { filter: Some(filter) })
        .await
        .map(|r| r.containers)
        .map_err(|e| call_failed("ListContainers", &e))
}

/// One entry of a CRI log file: `<RFC3339Nano> <stream> <P|F> <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Nanoseconds since the epoch.
    pub time: i128,
    pub stream: String,
    pub partial: bool,
    pub text: String,
}

/// Parses a CRI log file; a line that is not in the format is an error naming it.
pub fn parse_log(text: &str) -> Result<Vec<LogEntry>, String> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            parse_log_line(line).ok_or_else(|| format!("line {} is not in the CRI log format: {line:?}", i + 1))
        })
        .collect()
}

pub fn parse_log_line(line: &str) -> Option<LogEntry> {
    let mut parts = line.splitn(4, ' ');
    let time = rfc3339_nanos(parts.next()?)?;
    let stream = parts.next()?;
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let partial = match parts.next()? {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    Some(LogEntry { time, stream: stream.into(), partial, text: parts.next().unwrap_or("").into() })
}

/// The messages of a log: partial entries joined with what follows them, per stream, in order.
pub fn messages(entries: &[LogEntry]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending: Vec<(String, String)> = Vec::new();
    for e in entries {
        let slot = match pending.iter().position(|(s, _)| *s == e.stream) {
            Some(i) => i,
            None => {
                pending.push((e.stream.clone(), String::new()));
                pending.len() - 1
            }
        };
        pending[slot].1.push_str(&e.text);
        if !e.partial {
            let (stream, text) = pending.remove(slot);
            out.push((stream, text));
        }
    }
    out.extend(pending);
    out
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to nanoseconds since the epoch.
pub fn rfc3339_nanos(text: &str) -> Option<i128> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: i128 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.find(|c: char| !c.is_ascii_digit()).unwrap_or(fraction.len());
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = fraction[..digits].parse::<i128>().ok()? * 10i128.pow(9 - digits as u32);
        rest = &fraction[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && &rest[3..4] == ":" => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
    Some(secs as i128 * 1_000_000_000 + nanos)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the epoch, now.
pub fn now_nanos() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps_are_read_with_their_fraction_and_offset() {
        assert_eq!(rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_nanos("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(rfc3339_nanos("1970-01-01T01:00:00.000000001+01:00"), Some(1));
        assert_eq!(rfc3339_nanos("2026-11-28T09:00:00.123456789Z"), Some(1_795_856_400_123_456_789));
        assert_eq!(rfc3339_nanos("2026-11-28 09:00:00Z"), None);
        assert_eq!(rfc3339_nanos("2026-11-28T09:00:00"), None);
        assert_eq!(rfc3339_nanos("2026-13-28T09:00:00Z"), None);
        assert_eq!(rfc3339_nanos("2026-11-28T09:00:00.1234567890Z"), None);
    }

    #[test]
    fn partial_entries_join_the_next_entry_of_their_stream() {
        let log = "2026-11-28T09:00:00.1Z stdout P ab\n\
                   2026-11-28T09:00:00.2Z stderr F err\n\
                   2026-11-28T09:00:00.3Z stdout F cd\n\
                   2026-11-28T09:00:00.4Z stdout F \n";
        let entries = parse_log(log).unwrap();
        assert!(entries[0].partial && !entries[1].partial);
        assert_eq!(
            messages(&entries),
            vec![
                ("stderr".to_string(), "err".to_string()),
                ("stdout".to_string(), "abcd".to_string()),
                ("stdout".to_string(), String::new())
            ]
        );
        assert!(parse_log("hello\n").unwrap_err().contains("line 1"));
        assert!(parse_log_line("2026-11-28T09:00:00Z stdin F x").is_none());
        assert!(parse_log_line("2026-11-28T09:00:00Z stdout X x").is_none());
    }
}
