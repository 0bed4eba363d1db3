//! lockstepd in-process, pinned to one minor or another, answering real CRI calls on a real
//! unix socket: runtime info, version-locked surfaces, and bad input.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockstep_cri::model;
use lockstep_cri::model::runtime_service_client::RuntimeServiceClient;
use lockstep_cri::Minor;
use lockstep_runtime::config::Config;
use tokio::sync::oneshot;

struct Daemon {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), lockstep_runtime::daemon::DaemonError>>>,
    _tmp: tempfile::TempDir,
}

impl Daemon {
    async fn start(minor: Minor) -> Daemon {
        let tmp = tempfile::tempdir().unwrap();
        let mut config =
            Config { root: tmp.path().join("root"), runroot: tmp.path().join("run"), ..Default::default() };
        config.network.cni_config_dir = tmp.path().join("net.d");
        let socket = config.socket_path();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(lockstep_runtime::daemon::run(config, minor, async {
            let _ = stopped.await;
        }));
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Daemon { socket, stop: Some(stop), task: Some(task), _tmp: tmp }
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    async fn channel(&self) -> tonic::transport::Channel {
        lockstep_cri::connect(&self.endpoint(), Duration::from_secs(5)).await.unwrap()
    }

    /// A client of the minor's kubelet.
    async fn kubelet(&self, minor: Minor) -> lockstep_cri::CriClient {
        lockstep_cri::CriClient::new(minor, self.channel().await).unwrap()
    }

    /// A client that sends and reads the model's messages unchanged.
    async fn raw(&self) -> RuntimeServiceClient<tonic::transport::Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        assert!(!self.socket.exists(), "a clean stop removes the socket");
    }
}

#[tokio::test]
async fn version_reports_the_pinned_minor() {
    let daemon = Daemon::start(Minor::V1_33).await;
    let v = daemon.kubelet(Minor::V1_33).await.version(Default::default()).await.unwrap();
    assert_eq!(v.version, "0.1.0", "the kubelet refuses any other");
    assert_eq!(v.runtime_name, "lockstep");
    assert_eq!(v.runtime_api_version, "v1");
    assert!(v.runtime_version.contains("1.33"), "{}", v.runtime_version);
    daemon.stop().await;
}

#[tokio::test]
async fn stream_rpcs_exist_from_1_36_only() {
    let old = Daemon::start(Minor::V1_35).await;
    let mut kubelet = old.kubelet(Minor::V1_35).await;
    let err = match kubelet.stream_containers(Default::default()).await {
        Ok(_) => panic!("a 1.35 lockstepd has no StreamContainers"),
        Err(e) => e,
    };
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(kubelet.list_containers(Default::default()).await.unwrap().containers.is_empty());
    old.stop().await;

    let new = Daemon::start(Minor::V1_36).await;
    let mut kubelet = new.kubelet(Minor::V1_36).await;
    let mut stream = kubelet.stream_containers(Default::default()).await.unwrap();
    use futures::StreamExt;
    let first = stream.next().await.expect("one message").unwrap();
    assert!(first.containers.is_empty());
    assert!(stream.next().await.is_none());
    let listed = kubelet.list_containers(Default::default()).await.unwrap();
    assert!(listed.containers.is_empty());
    new.stop().await;
}

#[tokio::test]
async fn fields_of_later_minors_are_absent_from_answers() {
    let daemon = Daemon::start(Minor::V1_30).await;
    let status = daemon.raw().await.status(model::StatusRequest::default()).await.unwrap().into_inner();
    assert!(status.status.is_some());
    assert_eq!(status.features, None, "StatusResponse.features came in 1.31");
    daemon.stop().await;

    let daemon = Daemon::start(Minor::V1_31).await;
    let status = daemon.raw().await.status(model::StatusRequest::default()).await.unwrap().into_inner();
    assert!(status.features.is_some());
    daemon.stop().await;
}

#[tokio::test]
async fn status_checks_for_real() {
    let daemon = Daemon::start(Minor::V1_36).await;
    let status = daemon.kubelet(Minor::V1_36).await.status(model::StatusRequest { verbose: true }).await.unwrap();
    let conditions = status.status.unwrap().conditions;
    let get = |kind: &str| conditions.iter().find(|c| c.r#type == kind).unwrap().clone();
    // ci/setup installs runc; the test's CNI directory is empty.
    assert!(get("RuntimeReady").status, "{:?}", get("RuntimeReady"));
    let network = get("NetworkReady");
    assert!(!network.status);
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(network.message.contains("net.d"), "{}", network.message);
    assert!(status.runtime_handlers.iter().any(|h| h.name == "runc"));
    assert!(status.info.contains_key("handlers"));
    daemon.stop().await;
}

#[tokio::test]
async fn runtime_config_and_pod_cidr() {
    let daemon = Daemon::start(Minor::V1_36).await;
    let mut kubelet = daemon.kubelet(Minor::V1_36).await;
    let config = kubelet.runtime_config(Default::default()).await.unwrap();
    assert_eq!(config.linux.unwrap().cgroup_driver(), model::CgroupDriver::Cgroupfs);

    let update = |cidr: &str| model::UpdateRuntimeConfigRequest {
        runtime_config: Some(model::RuntimeConfig {
            network_config: Some(model::NetworkConfig { pod_cidr: cidr.to_string() }),
        }),
    };
    kubelet.update_runtime_config(update("10.88.0.0/16")).await.unwrap();
    let err = kubelet.update_runtime_config(update("10.88.0.0/99")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("pod_cidr"), "{}", err.message());
    let status = kubelet.status(model::StatusRequest { verbose: true }).await.unwrap();
    assert_eq!(status.info["podCIDR"], "10.88.0.0/16");
    daemon.stop().await;
}

#[tokio::test]
async fn checkpoint_requests_are_checked_field_by_field() {
    let daemon = Daemon::start(Minor::V1_36).await;
    let mut kubelet = daemon.kubelet(Minor::V1_36).await;
    let err = kubelet.checkpoint_container(Default::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("container_id"), "{}", err.message());
    let request = |location: &str| model::CheckpointContainerRequest {
        container_id: "0".repeat(64),
        location: location.into(),
        timeout: 0,
    };
    let err = kubelet.checkpoint_container(request("relative/checkpoint.tar")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("location"), "{}", err.message());
    let err = kubelet.checkpoint_container(request("/nonexistent-dir/checkpoint.tar")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("location"), "{}", err.message());
    let err = kubelet.checkpoint_container(request("/tmp/checkpoint.tar")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    daemon.stop().await;
}

#[tokio::test]
async fn one_daemon_per_root() {
    let first = Daemon::start(Minor::V1_36).await;
    let root = first._tmp.path().join("root");
    let config = Config { root: root.clone(), runroot: first._tmp.path().join("run2"), ..Default::default() };
    let err = lockstep_runtime::daemon::run(config, Minor::V1_36, async {}).await.unwrap_err();
    assert!(err.to_string().contains("already uses --root"), "{err}");
    assert!(Path::new(&first.socket).exists(), "the first daemon's socket is untouched");
    first.stop().await;
}

/// Any host user could read a layer's setuid files or device nodes, or plant files in a lower
/// layer, through world-readable state directories: lockstepd narrows them at every start.
#[tokio::test]
async fn state_directories_are_closed_to_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (root, run) = (tmp.path().join("root"), tmp.path().join("run"));
    // As an older lockstepd (or an operator's mkdir) left them.
    for dir in [root.join("images/tmp"), root.join("containers"), run.join("sandboxes")] {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for dir in [&root, &root.join("images"), &root.join("images/tmp"), &root.join("containers"), &run] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(run.join("sandboxes"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut config = Config { root: root.clone(), runroot: run.clone(), ..Default::default() };
    config.network.cni_config_dir = tmp.path().join("net.d");
    let socket = config.socket_path();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(lockstep_runtime::daemon::run(config, Minor::V1_36, async {
        let _ = stopped.await;
    }));
    for _ in 0..500 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(socket.exists(), "the daemon did not start");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    for (dir, expected) in [
        (root.clone(), 0o711),
        (run.clone(), 0o711),
        (root.join("images"), 0o700),
        (root.join("images/tmp"), 0o700),
        (root.join("containers"), 0o700),
        (run.join("sandboxes"), 0o700),
        (root.join("sandboxes"), 0o700),
        (root.join("cni"), 0o700),
        (run.join("oci"), 0o700),
    ] {
        assert_eq!(mode(&dir), expected, "{} is {:o}", dir.display(), mode(&dir));
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
