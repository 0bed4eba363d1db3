//! The call sequence of one pod's life under a kubelet, against a CRI endpoint: every call
//! timed and recorded, every outcome a kubelet would check checked. On any failure the pod
//! is still deleted and the node-side state removed, as the kubelet's cleanup would.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use lockstep_cri::{model, CriClient};

use super::container_config::{container_config, Kind};
use super::node::{make_log_directory, PodCgroup};
use super::pod_config::{log_directory, sandbox_config, spec, POD_UID};
use super::probe;
use super::{Node, PodDirs};

/// One CRI call: what, how long, and how it ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Call {
    pub rpc: String,
    pub detail: String,
    #[serde(serialize_with = "ms")]
    pub latency: Duration,
    pub error: Option<String>,
}

/// One outcome a kubelet checks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Emulation {
    pub calls: Vec<Call>,
    pub checks: Vec<Check>,
    /// Set when the pod could not be brought up; the rest of `calls` is the cleanup.
    pub aborted: Option<String>,
    /// What a kubelet would log but that does not stop the pod (a failed stats call).
    pub notes: Vec<String>,
}

impl Emulation {
    pub fn passed(&self) -> bool {
        self.aborted.is_none() && self.checks.iter().all(|c| c.ok)
    }

    fn check(&mut self, what: impl Into<String>, ok: bool, detail: impl Into<String>) -> bool {
        self.checks.push(Check { what: what.into(), ok, detail: detail.into() });
        ok
    }
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// How long the emulation waits for a container to reach a state.
const WAIT: Duration = Duration::from_secs(60);
/// The PLEG relist period.
const RELIST: Duration = Duration::from_secs(1);

struct Driver<'a> {
    client: CriClient,
    /// With Evented PLEG: the GetContainerEvents stream, when the runtime serves it (the
    /// kubelet then waits on events and relists only as a fallback).
    events: Option<lockstep_cri::window::StreamOf<model::ContainerEventResponse>>,
    out: Emulation,
    pod: &'a Pod,
    node: &'a Node,
    dirs: PodDirs,
}

impl Driver<'_> {
    /// Times a call and records it.
    async fn call<T, F>(&mut self, rpc: &str, detail: impl Into<String>, call: F) -> Result<T, tonic::Status>
    where
        F: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let started = Instant::now();
        let result = call.await;
        let error = result.as_ref().err().map(|e| format!("{:?}: {}", e.code(), e.message()));
        self.out.calls.push(Call { rpc: rpc.into(), detail: detail.into(), latency: started.elapsed(), error });
        result
    }
}

/// Runs the pod's whole life against the client's endpoint.
pub async fn emulate(client: CriClient, pod: &Pod, node: &Node, hold: Duration) -> Emulation {
    let mut d = Driver { client, events: None, out: Emulation::default(), pod, node, dirs: PodDirs::new(node, pod) };
    let mut sandbox = None;
    let mut cgroup = None;
    let mut containers: Vec<(String, String)> = Vec::new();
    let result = bring_up(&mut d, &mut sandbox, &mut cgroup, &mut containers).await;
    if let Err(reason) = result {
        d.out.aborted = Some(reason);
    } else if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    tear_down(&mut d, sandbox.as_deref(), &containers).await;
    if let Some(cgroup) = cgroup {
        if let Err(busy) = cgroup.remove() {
            d.out.check("the pod cgroup can be removed after deletion", false, busy);
        }
    }
    let _ = d.dirs.remove();
    let _ = std::fs::remove_dir_all(log_directory(pod, node));
    d.out
}

async fn bring_up(
    d: &mut Driver<'_>,
    sandbox_id: &mut Option<String>,
    cgroup: &mut Option<PodCgroup>,
    containers: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let failed = |rpc: &str, e: tonic::Status| format!("{rpc} failed: {:?}: {}", e.code(), e.message());
    // Connect (validateServiceConnection, then the runtime's readiness).
    let mut c = d.client.clone();
    let version = d
        .call("Version", "connect check", c.version(model::VersionRequest::default()))
        .await
        .map_err(|e| failed("Version", e))?;
    d.out.check("Version answers version 0.1.0", version.version == "0.1.0", format!("{version:?}"));
    d.call("ImageFsInfo", "image service connect check", c.image_fs_info(model::ImageFsInfoRequest {}))
        .await
        .map_err(|e| failed("ImageFsInfo", e))?;
    match d
        .call("RuntimeConfig", "cgroup driver from the runtime", c.runtime_config(model::RuntimeConfigRequest {}))
        .await
    {
        Err(e) if e.code() != tonic::Code::Unimplemented => return Err(failed("RuntimeConfig", e)),
        _ => {}
    }
    let status = d
        .call("Status", "runtime readiness", c.status(model::StatusRequest { verbose: false }))
        .await
        .map_err(|e| failed("Status", e))?;
    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
    for kind in ["RuntimeReady", "NetworkReady"] {
        let ready = conditions.iter().any(|x| x.r#type == kind && x.status);
        if !d.out.check(format!("Status: {kind}"), ready, format!("{conditions:?}")) {
            return Err(format!("the runtime is not {kind}: the kubelet would not start pods"));
        }
    }
    // hostUsers: false only where the pod's handler says it supports user namespaces, as the
    // kubelet's userns manager checks before it allocates a range.
    if super::pod_config::user_namespace(d.pod).is_some() {
        let handler = spec(d.pod).runtime_class_name.clone().unwrap_or_default();
        let supported = status
            .runtime_handlers
            .iter()
            .find(|h| h.name == handler)
            .is_some_and(|h| h.features.as_ref().is_some_and(|f| f.user_namespaces));
        if !d.out.check(format!("Status: handler {handler:?} supports user namespaces"), supported, String::new()) {
            return Err(format!(
                "can't set `spec.hostUsers: false`, runtime does not support user namespaces (handler {handler:?})"
            ));
        }
    }
    // Evented PLEG subscribes once the runtime is ready; a runtime without events leaves the
    // PLEG to relist.
    match d.call("GetContainerEvents", "Evented PLEG", c.get_container_events(model::GetEventsRequest {})).await {
        Ok(stream) => d.events = Some(stream),
        Err(e) => d.out.notes.push(format!("no container events ({:?}): the PLEG relists", e.code())),
    }

    // GetPodStatus for a new pod: nothing yet.
    let uid = d.pod.metadata.uid.clone().unwrap_or_default();
    let by_uid: HashMap<String, String> = [(POD_UID.to_string(), uid.clone())].into();
    let filter = model::PodSandboxFilter { label_selector: by_uid.clone(), ..Default::default() };
    let existing = d
        .call(
            "ListPodSandbox",
            "GetPodStatus by pod uid",
            c.list_pod_sandbox(model::ListPodSandboxRequest { filter: Some(filter) }),
        )
        .await
        .map_err(|e| failed("ListPodSandbox", e))?;
    d.out.check(
        "no sandbox exists for a new pod",
        existing.items.is_empty(),
        format!("{} found", existing.items.len()),
    );
    let filter = model::ContainerFilter { label_selector: by_uid.clone(), ..Default::default() };
    d.call(
        "ListContainers",
        "GetPodStatus by pod uid",
        c.list_containers(model::ListContainersRequest { filter: Some(filter) }),
    )
    .await
    .map_err(|e| failed("ListContainers", e))?;

    // The sandbox.
    let config = sandbox_config(d.pod, d.node, 0)?;
    make_log_directory(&log_directory(d.pod, d.node)).map_err(|e| format!("cannot make the pod log directory: {e}"))?;
    d.dirs.prepare(d.pod).map_err(|e| format!("cannot make the pod's directories: {e}"))?;
    if !d.node.systemd_cgroups {
        let parent = config.linux.as_ref().map(|l| l.cgroup_parent.clone()).unwrap_or_default();
        *cgroup = Some(PodCgroup::create(&parent).map_err(|e| format!("cannot make the pod cgroup {parent}: {e}"))?);
    }
    let handler = spec(d.pod).runtime_class_name.clone().unwrap_or_default();
    let run = model::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: handler };
    let id = d
        .call("RunPodSandbox", "", c.run_pod_sandbox(run))
        .await
        .map_err(|e| failed("RunPodSandbox", e))?
        .pod_sandbox_id;
    *sandbox_id = Some(id.clone());
    let status = d
        .call(
            "PodSandboxStatus",
            "pod IPs",
            c.pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false }),
        )
        .await
        .map_err(|e| failed("PodSandboxStatus", e))?;
    let sandbox = status.status.ok_or("PodSandboxStatus returned no status: the kubelet treats that as a failure")?;
    let ip = sandbox.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
    let host_network = spec(d.pod).host_network.unwrap_or(false);
    d.out.check(
        "the sandbox is READY with the pod's IP",
        sandbox.state == model::PodSandboxState::SandboxReady as i32 && (host_network || !ip.is_empty()),
        format!("state {}, ip {ip:?}", sandbox.state),
    );
    d.dirs.write_hosts(&ip, &config.hostname).map_err(|e| format!("cannot write the pod's hosts file: {e}"))?;

    // Init containers, one at a time, each to a successful exit; then the app containers.
    let pod_spec = spec(d.pod).clone();
    for container in pod_spec.init_containers.iter().flatten() {
        let cid = start_container(d, &id, &config, container, Kind::Init).await?;
        containers.push((container.name.clone(), cid.clone()));
        let exited = wait_for(d, &cid, model::ContainerState::ContainerExited).await?;
        if !d.out.check(
            format!("init container {} exits 0", container.name),
            exited.exit_code == 0,
            format!("exit code {}, reason {:?}, message {:?}", exited.exit_code, exited.reason, exited.message),
        ) {
            return Err(format!("init container {} failed: the pod does not start", container.name));
        }
        check_log(d, &exited, &container.name);
    }
    for container in &pod_spec.containers {
        let cid = start_container(d, &id, &config, container, Kind::App).await?;
        containers.push((container.name.clone(), cid));
    }
    for (name, cid) in containers.iter().filter(|(n, _)| pod_spec.containers.iter().any(|c| &c.name == n)) {
        let running = wait_for(d, cid, model::ContainerState::ContainerRunning).await?;
        let is_running = running.state == model::ContainerState::ContainerRunning as i32;
        let detail = if is_running {
            format!("started at {}", running.started_at)
        } else {
            format!(
                "exited with code {}, reason {:?}, message {:?}",
                running.exit_code, running.reason, running.message
            )
        };
        if !d.out.check(format!("container {name} is running"), is_running, detail) {
            return Err(format!("container {name} exited: the pod does not run"));
        }
        check_log(d, &running, name);
    }

    // Readiness probes of the app containers, from the node (httpGet, tcpSocket) or by ExecSync.
    let probe_ip = if host_network { "127.0.0.1".to_string() } else { ip.clone() };
    for container in &pod_spec.containers {
        let Some(probe) = &container.readiness_probe else { continue };
        let Some(cid) = containers.iter().find(|(n, _)| *n == container.name).map(|(_, id)| id.clone()) else {
            continue;
        };
        let action = probe::action(probe, container, &probe_ip)?;
        let outcome = readiness(d, &cid, probe, &action).await;
        let what = format!("container {} is ready ({})", container.name, action.describe());
        match outcome {
            Ok(detail) => d.out.check(what, true, detail),
            Err(detail) => d.out.check(what, false, detail),
        };
    }

    // What the stats provider asks.
    let filter = model::ContainerStatsFilter { pod_sandbox_id: id.clone(), ..Default::default() };
    let stats = d
        .call(
            "ListContainerStats",
            "stats provider",
            c.list_container_stats(model::ListContainerStatsRequest { filter: Some(filter) }),
        )
        .await;
    if let Err(e) = stats {
        // The kubelet logs it and its summary API and eviction lack the pod's stats; the pod runs.
        d.out.notes.push(format!(
            "ListContainerStats failed ({:?}: {}): a kubelet's summary API and eviction manager would lack this pod's stats",
            e.code(),
            e.message()
        ));
    }
    Ok(())
}

/// Runs a readiness probe until it succeeds (Ok with the last answer) or the wait ends (Err
/// with the last failure). Attempts are spaced by periodSeconds, at most a second here.
async fn readiness(
    d: &mut Driver<'_>,
    container_id: &str,
    probe: &k8s_openapi::api::core::v1::Probe,
    action: &probe::Action,
) -> Result<String, String> {
    let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64).min(RELIST);
    tokio::time::sleep(delay).await;
    let deadline = Instant::now() + WAIT;
    let kube = d.client.minor().to_string();
    loop {
        let attempt = match action {
            probe::Action::Exec { command, timeout_secs } => {
                let mut c = d.client.clone();
                let request = model::ExecSyncRequest {
                    container_id: container_id.to_string(),
                    cmd: command.clone(),
                    timeout: *timeout_secs,
                };
                match d.call("ExecSync", "readiness probe", c.exec_sync(request)).await {
                    Ok(r) if r.exit_code == 0 => Ok(format!("exit 0, stdout {:?}", String::from_utf8_lossy(&r.stdout))),
                    Ok(r) => Err(format!("exit {}, stderr {:?}", r.exit_code, String::from_utf8_lossy(&r.stderr))),
                    Err(e) if e.code() == tonic::Code::DeadlineExceeded => Err("timed out".to_string()),
                    Err(e) => Err(format!("{:?}: {}", e.code(), e.message())),
                }
            }
            probe::Action::Http { host, port, path, timeout } => {
                probe::http_get(host, *port, path, *timeout, &kube).await
            }
            probe::Action::Tcp { host, port, timeout } => probe::tcp_connect(host, *port, *timeout).await,
        };
        match attempt {
            Ok(detail) => return Ok(detail),
            Err(e) if Instant::now() > deadline => return Err(format!("not ready within {WAIT:?}: {e}")),
            Err(_) => tokio::time::sleep(period).await,
        }
    }
}

/// Image check and pull, CreateContainer, StartContainer: startContainer in kuberuntime.
async fn start_container(
    d: &mut Driver<'_>,
    sandbox_id: &str,
    sandbox_config: &model::PodSandboxConfig,
    container: &Container,
    kind: Kind,
) -> Result<String, String> {
    let failed =
        |rpc: &str, e: tonic::Status| format!("{rpc} for {} failed: {:?}: {}", container.name, e.code(), e.message());
    let mut c = d.client.clone();
    let image = container.image.clone().unwrap_or_default();
    let spec_of = |image: &str| model::ImageSpec {
        image: image.to_string(),
        user_specified_image: image.to_string(),
        ..Default::default()
    };
    let status = d
        .call(
            "ImageStatus",
            image.clone(),
            c.image_status(model::ImageStatusRequest { image: Some(spec_of(&image)), verbose: false }),
        )
        .await
        .map_err(|e| failed("ImageStatus", e))?;
    let policy = container.image_pull_policy.clone().unwrap_or_else(|| {
        if image.ends_with(":latest") || !image.rsplit('/').next().unwrap_or("").contains(':') {
            "Always"
        } else {
            "IfNotPresent"
        }
        .into()
    });
    let image_ref = match status.image {
        Some(found) if policy != "Always" => found.id,
        _ => {
            let pull = model::PullImageRequest {
                image: Some(spec_of(&image)),
                auth: None,
                sandbox_config: Some(sandbox_config.clone()),
            };
            d.call("PullImage", image.clone(), c.pull_image(pull)).await.map_err(|e| failed("PullImage", e))?.image_ref
        }
    };
    let config = container_config(d.pod, container, kind, 0, &image_ref, d.node, &d.dirs)?;
    let create = model::CreateContainerRequest {
        pod_sandbox_id: sandbox_id.to_string(),
        config: Some(config),
        sandbox_config: Some(sandbox_config.clone()),
    };
    let id = d
        .call("CreateContainer", container.name.clone(), c.create_container(create))
        .await
        .map_err(|e| failed("CreateContainer", e))?
        .container_id;
    d.call(
        "StartContainer",
        container.name.clone(),
        c.start_container(model::StartContainerRequest { container_id: id.clone() }),
    )
    .await
    .map_err(|e| failed("StartContainer", e))?;
    Ok(id)
}

/// Until the container reaches `state` (or has exited, which ends any wait): from the events
/// when the runtime sends them (after one look at its status), else by PLEG relists.
async fn wait_for(
    d: &mut Driver<'_>,
    id: &str,
    state: model::ContainerState,
) -> Result<model::ContainerStatus, String> {
    if d.events.is_some() {
        match wait_for_event(d, id, state).await {
            Ok(status) => return Ok(status),
            Err(reason) => {
                d.out.notes.push(format!("{reason}; the PLEG relists"));
                d.events = None;
            }
        }
    }
    relist_until(d, id, state).await
}

/// GetPodStatus's ContainerStatus of one container.
async fn pod_status_of(d: &mut Driver<'_>, id: &str) -> Result<Option<model::ContainerStatus>, String> {
    let mut c = d.client.clone();
    d.call(
        "ContainerStatus",
        "GetPodStatus",
        c.container_status(model::ContainerStatusRequest { container_id: id.to_string(), verbose: false }),
    )
    .await
    .map(|response| response.status)
    .map_err(|e| format!("ContainerStatus {id} failed: {:?}: {}", e.code(), e.message()))
}

/// Whether a status is what a wait for `state` waits for.
fn reached(status: &model::ContainerStatus, state: model::ContainerState) -> bool {
    status.state == state as i32 || status.state == model::ContainerState::ContainerExited as i32
}

/// Evented PLEG: the container's status as the events carry it, until it reaches `state`.
async fn wait_for_event(
    d: &mut Driver<'_>,
    id: &str,
    state: model::ContainerState,
) -> Result<model::ContainerStatus, String> {
    use futures::StreamExt;
    let now = pod_status_of(d, id).await?.unwrap_or_default();
    if reached(&now, state) {
        return Ok(now);
    }
    let Some(mut events) = d.events.take() else { return Err("no event stream".into()) };
    let deadline = Instant::now() + WAIT;
    let waited = Instant::now();
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match tokio::time::timeout(left, events.next()).await {
            Err(_) => break Err(format!("no event brought container {id} to {state:?} within {WAIT:?}")),
            Ok(None) => break Err("the event stream ended".into()),
            Ok(Some(Err(e))) => break Err(format!("the event stream failed: {:?}: {}", e.code(), e.message())),
            Ok(Some(Ok(event))) => event,
        };
        // Each event is recorded as a call of the stream, timed from the start of the wait.
        let kind = model::ContainerEventType::try_from(event.container_event_type)
            .map(|k| k.as_str_name().to_string())
            .unwrap_or_else(|_| event.container_event_type.to_string());
        d.out.calls.push(Call {
            rpc: "GetContainerEvents".into(),
            detail: format!("{kind} {}", event.container_id),
            latency: waited.elapsed(),
            error: None,
        });
        if let Some(status) = event.containers_statuses.into_iter().find(|s| s.id == id && reached(s, state)) {
            break Ok(status);
        }
    };
    d.events = Some(events);
    outcome
}

/// PLEG relists until the container reaches `state` (or has exited, which ends any wait).
async fn relist_until(
    d: &mut Driver<'_>,
    id: &str,
    state: model::ContainerState,
) -> Result<model::ContainerStatus, String> {
    let deadline = Instant::now() + WAIT;
    let mut c = d.client.clone();
    loop {
        let _ =
            d.call("ListPodSandbox", "PLEG relist", c.list_pod_sandbox(model::ListPodSandboxRequest::default())).await;
        let _ =
            d.call("ListContainers", "PLEG relist", c.list_containers(model::ListContainersRequest::default())).await;
        let status = pod_status_of(d, id).await?.ok_or_else(|| format!("ContainerStatus {id} returned no status"))?;
        let exited = status.state == model::ContainerState::ContainerExited as i32;
        if status.state == state as i32 || exited {
            return Ok(status);
        }
        if Instant::now() > deadline {
            return Err(format!("container {id} did not reach {state:?} within {WAIT:?} (state {})", status.state));
        }
        tokio::time::sleep(RELIST).await;
    }
}

/// The kubelet reads container logs at log_directory/log_path, in the CRI log format.
fn check_log(d: &mut Driver<'_>, status: &model::ContainerStatus, name: &str) {
    let path = std::path::PathBuf::from(&status.log_path);
    let text = std::fs::read_to_string(&path);
    let ok = match &text {
        Ok(t) => t.lines().all(is_cri_log_line),
        Err(_) => false,
    };
    let detail = match text {
        Ok(t) => format!("{}: {} lines", path.display(), t.lines().count()),
        Err(e) => format!("{}: {e}", path.display()),
    };
    d.out.check(format!("container {name} logs where the kubelet reads them, in the CRI format"), ok, detail);
}

/// `<RFC3339Nano> <stdout|stderr> <P|F> <text>`.
pub fn is_cri_log_line(line: &str) -> bool {
    let mut parts = line.splitn(4, ' ');
    let (time, stream, tag) = (parts.next(), parts.next(), parts.next());
    time.is_some_and(|t| t.len() >= 20 && t.contains('T'))
        && matches!(stream, Some("stdout") | Some("stderr"))
        && matches!(tag, Some("P") | Some("F"))
}

/// KillPod, then garbage collection: stop the running containers with the grace period (the
/// kubelet's last relist says which run: exited init containers are not stopped), stop the
/// sandbox, remove containers and sandbox, and check nothing of the pod is listed.
async fn tear_down(d: &mut Driver<'_>, sandbox_id: Option<&str>, containers: &[(String, String)]) {
    let mut c = d.client.clone();
    let grace = spec(d.pod).termination_grace_period_seconds.unwrap_or(30);
    let listed =
        d.call("ListContainers", "PLEG relist", c.list_containers(model::ListContainersRequest::default())).await;
    let running: Vec<String> = match listed {
        Ok(r) => r
            .containers
            .into_iter()
            .filter(|x| x.state == model::ContainerState::ContainerRunning as i32)
            .map(|x| x.id)
            .collect(),
        // Without a relist, stop them all (StopContainer of a stopped container is harmless).
        Err(_) => containers.iter().map(|(_, id)| id.clone()).collect(),
    };
    for (name, id) in containers.iter().rev().filter(|(_, id)| running.contains(id)) {
        let stop = model::StopContainerRequest { container_id: id.clone(), timeout: grace };
        let result = d.call("StopContainer", name.clone(), c.stop_container(stop)).await;
        d.out.check(
            format!("StopContainer {name}"),
            result.is_ok(),
            result.err().map(|e| e.message().to_string()).unwrap_or_default(),
        );
    }
    if let Some(id) = sandbox_id {
        let result = d
            .call("StopPodSandbox", "", c.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id.into() }))
            .await;
        d.out.check(
            "StopPodSandbox",
            result.is_ok(),
            result.err().map(|e| e.message().to_string()).unwrap_or_default(),
        );
    }
    for (name, id) in containers {
        let result = d
            .call(
                "RemoveContainer",
                name.clone(),
                c.remove_container(model::RemoveContainerRequest { container_id: id.clone() }),
            )
            .await;
        d.out.check(
            format!("RemoveContainer {name}"),
            result.is_ok(),
            result.err().map(|e| e.message().to_string()).unwrap_or_default(),
        );
    }
    if let Some(id) = sandbox_id {
        let result = d
            .call(
                "RemovePodSandbox",
                "",
                c.remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: id.into() }),
            )
            .await;
        d.out.check(
            "RemovePodSandbox",
            result.is_ok(),
            result.err().map(|e| e.message().to_string()).unwrap_or_default(),
        );
        let uid = d.pod.metadata.uid.clone().unwrap_or_default();
        let filter =
            model::PodSandboxFilter { label_selector: [(POD_UID.to_string(), uid)].into(), ..Default::default() };
        if let Ok(left) = d
            .call(
                "ListPodSandbox",
                "after deletion",
                c.list_pod_sandbox(model::ListPodSandboxRequest { filter: Some(filter) }),
            )
            .await
        {
            d.out.check(
                "no sandbox of the pod is listed after deletion",
                left.items.is_empty(),
                format!("{} left", left.items.len()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines() {
        assert!(is_cri_log_line("2026-11-28T09:00:00.123456789Z stdout F hello world"));
        assert!(is_cri_log_line("2026-11-28T09:00:00.123456789+00:00 stderr P "));
        assert!(!is_cri_log_line("hello world"));
        assert!(!is_cri_log_line("2026-11-28T09:00:00Z stdin F x"));
    }
}
