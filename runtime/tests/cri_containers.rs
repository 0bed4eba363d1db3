//! Containers on a real lockstepd process (the testkit's harness), from images built
//! by the fixtures and pulled from a private docker-registry, run by runc under
//! lockstep-monitor: lifecycle, status fields, logs and their reopening, ExecSync, stop
//! signals and timeouts, OOM kills, resource updates and stats, security contexts (users,
//! capabilities, read-only rootfs, seccomp, privileged), mounts, devices and image volumes,
//! pods with several containers, SIGKILLs of lockstepd (while containers run, and in the middle
//! of a create or a remove), and bad requests. After each, the leak checker looks at the host
//! itself: records, directories, mounts, cgroups, monitors, image holds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockstep_cri::{model, CriClient, Minor};
use lockstep_testkit::fixtures::{self, hostile, registry::LocalRegistry};
use lockstep_testkit::host::{cgroups_of, monitors_of, processes_running, wait_for};
use lockstep_testkit::{cni, leaks, requests, Launch, Lockstepd, Program};
use tonic::Code;

const LOCKSTEPD: &str = env!("CARGO_BIN_EXE_lockstepd");

/// A lockstepd with its own state and a registry holding the shell and user-name images.
struct Node {
    daemon: Lockstepd,
    registry: LocalRegistry,
    kubelet: Option<CriClient>,
}

impl Node {
    async fn start() -> Node {
        let registry = LocalRegistry::start().unwrap();
        let set = fixtures::standard().unwrap();
        let wanted: Vec<_> =
            set.into_iter().filter(|f| [fixtures::SHELL, fixtures::USER_NAME].contains(&f.repo)).collect();
        fixtures::push_all(&registry.host, &wanted).await.unwrap();
        let launch = Launch { short_dir_prefix: Some("lsc-"), log_level: Some("debug"), ..Default::default() };
        let daemon = Lockstepd::prepare(Program::lockstepd(LOCKSTEPD, Minor::V1_36), launch).unwrap();
        let network = cni::network_table(daemon.dir(), &[PathBuf::from(cni::CNI_BIN)]).unwrap();
        let registries_conf = daemon.dir().join("registries.conf");
        std::fs::write(&registries_conf, "").unwrap();
        let config = format!("{network}[image]\nregistries_conf = {:?}\n", registries_conf.display().to_string());
        std::fs::write(daemon.config_path(), config).unwrap();
        let mut node = Node { daemon, registry, kubelet: None };
        node.spawn().await;
        node
    }

    fn dir(&self) -> &Path {
        self.daemon.dir()
    }
    fn root(&self) -> PathBuf {
        self.daemon.root()
    }
    fn runroot(&self) -> PathBuf {
        self.daemon.runroot()
    }
    fn socket(&self) -> PathBuf {
        self.daemon.socket()
    }

    async fn spawn(&mut self) {
        self.daemon.spawn().await.unwrap();
        self.kubelet = Some(self.daemon.kubelet().await);
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self) {
        self.kubelet = None;
        self.daemon.kill();
    }

    /// lockstepd again, as a service under systemd starts it: at most `nofile` open files.
    async fn restart_with_nofile(&mut self, nofile: u32) {
        self.kill();
        self.daemon.set_nofile(Some(nofile));
        self.spawn().await;
    }

    fn kubelet(&mut self) -> &mut CriClient {
        self.kubelet.as_mut().unwrap()
    }

    fn image(&self, repo: &str) -> String {
        format!("{}/{repo}:{}", self.registry.host, fixtures::TAG)
    }

    async fn pull(&mut self, repo: &str) -> String {
        let image = self.image(repo);
        let request = model::PullImageRequest {
            image: Some(model::ImageSpec { image, ..Default::default() }),
            ..Default::default()
        };
        self.kubelet().pull_image(request).await.unwrap().image_ref
    }

    /// A pod on the node's network (no CNI) unless `pod_network`.
    async fn pod(&mut self, name: &str, pod_network: bool) -> (String, model::PodSandboxConfig) {
        let config = pod_config(name, &self.dir().join("logs").join(name), pod_network);
        self.pod_of(config).await
    }

    async fn pod_of(&mut self, config: model::PodSandboxConfig) -> (String, model::PodSandboxConfig) {
        self.pod_on(config, "").await
    }

    /// A pod run by the OCI runtime `handler` ("": the default one).
    async fn pod_on(&mut self, config: model::PodSandboxConfig, handler: &str) -> (String, model::PodSandboxConfig) {
        let request = model::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: handler.into() };
        (self.kubelet().run_pod_sandbox(request).await.unwrap().pod_sandbox_id, config)
    }

    async fn checkpoint(&mut self, id: &str, location: &Path) -> Result<(), tonic::Status> {
        let request = model::CheckpointContainerRequest {
            container_id: id.into(),
            location: location.display().to_string(),
            timeout: 0,
        };
        self.kubelet().checkpoint_container(request).await.map(drop)
    }

    async fn create(
        &mut self,
        pod: &(String, model::PodSandboxConfig),
        config: model::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        let request = model::CreateContainerRequest {
            pod_sandbox_id: pod.0.clone(),
            config: Some(config),
            sandbox_config: Some(pod.1.clone()),
        };
        self.kubelet().create_container(request).await.map(|r| r.container_id)
    }

    async fn run(&mut self, pod: &(String, model::PodSandboxConfig), config: model::ContainerConfig) -> String {
        let id = self.create(pod, config).await.unwrap();
        self.kubelet().start_container(model::StartContainerRequest { container_id: id.clone() }).await.unwrap();
        id
    }

    async fn status(&mut self, id: &str) -> model::ContainerStatus {
        let request = model::ContainerStatusRequest { container_id: id.into(), verbose: false };
        self.kubelet().container_status(request).await.unwrap().status.unwrap()
    }

    async fn verbose(&mut self, id: &str) -> serde_json::Value {
        let request = model::ContainerStatusRequest { container_id: id.into(), verbose: true };
        let info = self.kubelet().container_status(request).await.unwrap().info;
        serde_json::from_str(&info["info"]).unwrap()
    }

    async fn wait_state(&mut self, id: &str, state: model::ContainerState) -> model::ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(id).await;
            if status.state() == state {
                return status;
            }
            assert!(Instant::now() < deadline, "container {id} stays {:?}", status.state());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(&mut self, id: &str, timeout: i64) -> Result<(), tonic::Status> {
        let request = model::StopContainerRequest { container_id: id.into(), timeout };
        self.kubelet().stop_container(request).await.map(|_| ())
    }

    async fn remove(&mut self, id: &str) {
        self.kubelet().remove_container(model::RemoveContainerRequest { container_id: id.into() }).await.unwrap();
    }

    async fn exec(&mut self, id: &str, cmd: &[&str], timeout: i64) -> Result<model::ExecSyncResponse, tonic::Status> {
        let request = model::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        self.kubelet().exec_sync(request).await
    }

    async fn remove_pod(&mut self, id: &str) {
        self.kubelet().stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap();
        self.kubelet().remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap();
    }

    async fn list(&mut self, filter: Option<model::ContainerFilter>) -> Vec<model::Container> {
        self.kubelet().list_containers(model::ListContainersRequest { filter }).await.unwrap().containers
    }

    /// Nothing of the node's containers is left: records, directories, mounts, cgroups,
    /// monitors, image holds.
    fn assert_no_container_leaks(&self) {
        leaks::assert_no_container_leaks(&self.daemon);
    }
}

/// A pod as the kubelet sends it, logging under `log_directory`, on the node's network unless
/// `pod_network`.
fn pod_config(name: &str, log_directory: &Path, pod_network: bool) -> model::PodSandboxConfig {
    let mut config = requests::pod("lockstep-test", name);
    config.log_directory = log_directory.display().to_string();
    if !pod_network {
        requests::namespace_options(&mut config).network = model::NamespaceMode::Node as i32;
    }
    config
}

/// A container as a CRI client that leaves the security defaults to lockstepd sends it: image
/// by the ID PullImage returned, log under the pod's directory.
fn container(name: &str, image_id: &str, script: &str) -> model::ContainerConfig {
    let mut config = requests::bare_container(name, image_id, &["sh", "-c", script]);
    config.annotations.insert("lockstep.test/kind".into(), "container".into());
    config
}

use requests::security;

/// The log's entries without timestamps ("stdout F text"), checking each timestamp's form.
fn log_entries(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let (stamp, rest) = line.split_once(' ').unwrap();
            assert_eq!(stamp.len(), 30, "RFC3339Nano with nine digits: {stamp}");
            rest.to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_container_lives_logs_runs_commands_and_leaves_nothing_behind() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let pod = node.pod("life", false).await;
    let script = "trap 'echo bye; exit 0' TERM; echo hello; echo oops >&2; i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.05; done";
    let id = node.create(&pod, container("web", &image_id, script)).await.unwrap();

    // Created: listed and described as the kubelet reads it.
    let listed = node.list(None).await;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].pod_sandbox_id.as_str()), (id.as_str(), pod.0.as_str()));
    assert_eq!(listed[0].state(), model::ContainerState::ContainerCreated);
    let status = node.status(&id).await;
    assert_eq!(status.state(), model::ContainerState::ContainerCreated);
    assert!(status.created_at > 0 && status.started_at == 0);
    assert_eq!(status.metadata.as_ref().unwrap().name, "web");
    assert_eq!(status.image.as_ref().unwrap().image, node.image(fixtures::SHELL), "the name, not the ID");
    assert_eq!(status.image_id, image_id);
    assert!(status.image_ref.contains("@sha256:"), "{}", status.image_ref);
    let log = node.dir().join("logs/life/web/0.log");
    assert_eq!(Path::new(&status.log_path), log);
    assert_eq!(status.labels["io.kubernetes.container.name"], "web");
    assert_eq!(status.annotations["lockstep.test/kind"], "container");
    assert_eq!(status.user.unwrap().linux.unwrap().uid, 0);
    let info = node.verbose(&id).await;
    assert_eq!(info["runtimeHandler"], "crun", "crun, the first handler, works on every cgroup layout");
    assert!(info["pid"].as_i64().unwrap() > 0);
    // The monitor is out of lockstepd's cgroups: a restart of lockstepd's service leaves it.
    let cgroups_of_pid = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let monitors = monitors_of(&node.runroot());
    assert_eq!(monitors.len(), 1);
    // It moves once the container is created, off CreateContainer's path.
    wait_for("the monitor's own cgroup", || cgroups_of_pid(monitors[0] as u32).contains("lockstep-monitors")).await;
    let monitor_cgroups = cgroups_of_pid(monitors[0] as u32);
    let daemon_cgroups = cgroups_of_pid(node.daemon.pid().unwrap());
    assert!(monitor_cgroups.lines().all(|l| !daemon_cgroups.contains(l)), "{monitor_cgroups}\nvs\n{daemon_cgroups}");

    // Running.
    node.kubelet().start_container(model::StartContainerRequest { container_id: id.clone() }).await.unwrap();
    let err = node.kubelet().start_container(model::StartContainerRequest { container_id: id.clone() }).await;
    assert_eq!(err.unwrap_err().code(), Code::FailedPrecondition, "a running container cannot start again");
    let status = node.status(&id).await;
    assert_eq!(status.state(), model::ContainerState::ContainerRunning);
    assert!(status.started_at >= status.created_at);
    let running = Some(model::ContainerStateValue { state: model::ContainerState::ContainerRunning as i32 });
    let by_state = node.list(Some(model::ContainerFilter { state: running, ..Default::default() })).await;
    assert_eq!(by_state.len(), 1);
    let by_label = model::ContainerFilter {
        label_selector: [("io.kubernetes.container.name".to_string(), "db".to_string())].into(),
        ..Default::default()
    };
    assert!(node.list(Some(by_label)).await.is_empty());
    wait_for("the first lines", || log_entries(&log).len() >= 4).await;
    let entries = log_entries(&log);
    assert!(entries.contains(&"stdout F hello".to_string()) && entries.contains(&"stderr F oops".to_string()));

    // ExecSync: output, exit code, the container's own view, the timeout.
    let out = node.exec(&id, &["sh", "-c", "echo out; echo err >&2; hostname; exit 3"], 10).await.unwrap();
    assert_eq!(out.exit_code, 3);
    let node_name = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("out\n{node_name}\n"),
        "a host-network pod has the node's name"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let started = Instant::now();
    let err = node.exec(&id, &["sleep", "4242"], 1).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    assert!(err.message().contains("timed out"), "{}", err.message());
    let started = Instant::now();
    let out = node.exec(&id, &["sh", "-c", "sleep 1000 & echo hi"], 0).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "a background process keeps the pipes open");
    assert!(started.elapsed() < Duration::from_secs(30), "the answer waited for the background process");
    // The container and what an exec leaves behind are out of lockstepd's cgroups in every
    // hierarchy, the v2 one included (crun runs in a pure v1 view on hybrid hosts).
    let daemon_cgroups = cgroups_of_pid(node.daemon.pid().unwrap());
    let init = node.verbose(&id).await["pid"].as_i64().unwrap() as u32;
    let background = processes_running(&["sleep", "1000"]);
    assert_eq!(background.len(), 1, "{background:?}");
    for (what, pid) in [("init", init), ("exec", background[0] as u32)] {
        let cgroups = cgroups_of_pid(pid);
        assert!(cgroups.lines().all(|l| !daemon_cgroups.contains(l)), "{what} {pid}: {cgroups}\nvs\n{daemon_cgroups}");
    }
    let err = node.exec(&id, &["sleep", "1"], -1).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("timeout"), "{}", err.message());

    // ReopenContainerLog after the kubelet renamed the file: no line lost.
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    node.kubelet().reopen_container_log(model::ReopenContainerLogRequest { container_id: id.clone() }).await.unwrap();
    wait_for("lines in the new file", || log_entries(&log).len() >= 3).await;

    // StopContainer: the stop signal first; the trap exits 0.
    node.stop(&id, 10).await.unwrap();
    let status = node.status(&id).await;
    assert_eq!(status.state(), model::ContainerState::ContainerExited);
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert!(status.finished_at >= status.started_at);
    node.stop(&id, 10).await.unwrap();
    let ticks: Vec<u32> = log_entries(&rotated)
        .into_iter()
        .chain(log_entries(&log))
        .filter_map(|e| e.strip_prefix("stdout F tick ").map(|n| n.parse().unwrap()))
        .collect();
    assert_eq!(ticks, (0..ticks.len() as u32).collect::<Vec<_>>(), "every tick once, in order, across the reopen");
    assert!(log_entries(&log).contains(&"stdout F bye".to_string()));
    let err = node.kubelet().reopen_container_log(model::ReopenContainerLogRequest { container_id: id.clone() }).await;
    assert_eq!(err.unwrap_err().code(), Code::FailedPrecondition);

    // RemoveContainer: gone, idempotent; the log stays (the kubelet's).
    node.remove(&id).await;
    node.remove(&id).await;
    assert!(node.list(None).await.is_empty());
    let err =
        node.kubelet().container_status(model::ContainerStatusRequest { container_id: id.clone(), verbose: false });
    assert_eq!(err.await.unwrap_err().code(), Code::NotFound);
    assert!(log.exists());
    assert!(cgroups_of(&id).is_empty(), "cgroups remain: {:?}", cgroups_of(&id));
    node.assert_no_container_leaks();
    node.remove_pod(&pod.0).await;
}

#[tokio::test]
async fn stop_signals_timeouts_and_oom_kills() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let pod = node.pod("stops", false).await;

    // A process that ignores SIGTERM is killed after the timeout.
    let stubborn = node.run(&pod, container("stubborn", &image_id, "trap '' TERM; while :; do sleep 0.1; done")).await;
    let started = Instant::now();
    node.stop(&stubborn, 2).await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "{took:?}");
    let status = node.status(&stubborn).await;
    assert_eq!((status.exit_code, status.reason.as_str()), (137, "Error"));

    // A long graceful stop under way does not hold back a forced one (a pod deleted with
    // --grace-period=0 after a normal deletion): the second stop kills at once, both return.
    let patient = node.run(&pod, container("patient", &image_id, "trap '' TERM; while :; do sleep 0.1; done")).await;
    let mut first = node.kubelet().clone();
    let request = model::StopContainerRequest { container_id: patient.clone(), timeout: 600 };
    let graceful = tokio::spawn(async move { first.stop_container(request).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    node.stop(&patient, 0).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(30), "the forced stop waited: {:?}", started.elapsed());
    tokio::time::timeout(Duration::from_secs(30), graceful)
        .await
        .expect("the graceful stop returns too")
        .unwrap()
        .unwrap();
    assert_eq!(node.status(&patient).await.exit_code, 137);

    // The request's stop signal (1.33+) is what StopContainer sends first.
    let mut config = container("usr1", &image_id, "trap 'exit 7' USR1; while :; do sleep 0.1; done");
    config.stop_signal = model::Signal::Sigusr1 as i32;
    let usr1 = node.run(&pod, config).await;
    assert_eq!(node.status(&usr1).await.stop_signal, model::Signal::Sigusr1 as i32);
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.stop(&usr1, 30).await.unwrap();
    assert_eq!(node.status(&usr1).await.exit_code, 7);

    // A negative timeout names the field; nothing changes.
    let sleeper = node.run(&pod, container("sleeper", &image_id, "sleep 1000")).await;
    let err = node.stop(&sleeper, -1).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("timeout"), "{}", err.message());
    assert_eq!(node.status(&sleeper).await.state(), model::ContainerState::ContainerRunning);
    // Timeout 0: SIGKILL at once (sh as PID 1 would ignore SIGTERM).
    node.stop(&sleeper, 0).await.unwrap();
    assert_eq!(node.status(&sleeper).await.exit_code, 137);

    // An exit of its own; then an OOM kill in a memory limit.
    let done = node.run(&pod, container("done", &image_id, "exit 4")).await;
    let status = node.wait_state(&done, model::ContainerState::ContainerExited).await;
    assert_eq!((status.exit_code, status.reason.as_str()), (4, "Error"));
    let mut config = container("hog", &image_id, "exec busybox dd if=/dev/zero of=/dev/null bs=96M count=1");
    config.linux.as_mut().unwrap().resources = Some(model::LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        memory_swap_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let hog = node.run(&pod, config).await;
    let status = node.wait_state(&hog, model::ContainerState::ContainerExited).await;
    assert_eq!(status.reason, "OOMKilled", "{status:?}");
    assert_eq!(status.exit_code, 137);

    for id in [stubborn, patient, usr1, sleeper, done, hog] {
        node.remove(&id).await;
    }
    node.assert_no_container_leaks();
    node.remove_pod(&pod.0).await;
}

#[tokio::test]
async fn a_container_whose_monitor_died_still_gets_its_grace_period() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let pod = node.pod("orphan", false).await;
    let out = node.dir().join("orphan-out");
    std::fs::create_dir_all(&out).unwrap();
    // The TERM handler takes a second: a SIGKILL sent at once would leave no file behind.
    let script = "trap 'sleep 1; touch /out/graceful; exit 3' TERM; while :; do sleep 0.1; done";
    let mut config = container("orphan", &image_id, script);
    config.mounts = vec![model::Mount {
        container_path: "/out".into(),
        host_path: out.display().to_string(),
        ..Default::default()
    }];
    let id = node.run(&pod, config).await;
    let monitors = monitors_of(&node.runroot());
    assert_eq!(monitors.len(), 1);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitors[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for("the monitor's end", || monitors_of(&node.runroot()).is_empty()).await;
    assert_eq!(node.status(&id).await.state(), model::ContainerState::ContainerRunning, "the runtime's word");

    let started = Instant::now();
    node.stop(&id, 30).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert!(out.join("graceful").exists(), "the stop signal's handler ran to its end");
    let status = node.status(&id).await;
    assert_eq!(status.state(), model::ContainerState::ContainerExited);
    assert!(status.message.contains("monitor was lost"), "{status:?}");
    node.remove(&id).await;
    node.assert_no_container_leaks();
    node.remove_pod(&pod.0).await;
}

#[tokio::test]
async fn resources_update_and_security_contexts_apply() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let user_image = node.pull(fixtures::USER_NAME).await;
    let pod = node.pod("secure", false).await;

    // UpdateContainerResources reaches the cgroup and ContainerStatus.
    let id = node.run(&pod, container("limits", &image_id, "sleep 1000")).await;
    let pid = node.verbose(&id).await["pid"].as_i64().unwrap();
    let memory_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .expect("a v1 memory cgroup");
    let update = model::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(model::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    };
    node.kubelet().update_container_resources(update).await.unwrap();
    let limit = std::fs::read_to_string(format!("/sys/fs/cgroup/memory{memory_cgroup}/memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    let resources = node.status(&id).await.resources.unwrap().linux.unwrap();
    assert_eq!((resources.memory_limit_in_bytes, resources.cpu_shares), (64 << 20, 512));

    // Stats from the cgroups, as the kubelet's stats provider reads them.
    let filter = model::ContainerStatsFilter { pod_sandbox_id: pod.0.clone(), ..Default::default() };
    let listed = node.kubelet().list_container_stats(model::ListContainerStatsRequest { filter: Some(filter) });
    let listed = listed.await.unwrap().stats;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].attributes.as_ref().unwrap().id, id);
    let memory = listed[0].memory.unwrap();
    assert!(memory.usage_bytes.unwrap().value > 0 && memory.working_set_bytes.is_some());
    assert!(memory.available_bytes.unwrap().value <= 64 << 20, "available below the limit");
    assert!(listed[0].cpu.as_ref().unwrap().usage_core_nano_seconds.unwrap().value > 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let one = node.kubelet().container_stats(model::ContainerStatsRequest { container_id: id.clone() });
    let one = one.await.unwrap().stats.unwrap();
    assert!(one.cpu.unwrap().usage_nano_cores.is_some(), "a rate from two readings");
    assert!(one.writable_layer.unwrap().fs_id.unwrap().mountpoint.ends_with("upper"));
    node.stop(&id, 0).await.unwrap();
    node.remove(&id).await;

    // Users: numeric, by name from the image's passwd, with supplemental groups.
    let mut config = container("user", &user_image, "id; sleep 1000");
    config.command.clear();
    config.args = vec!["sh".into(), "-c".into(), "id; sleep 1000".into()];
    let sc = security(&mut config);
    sc.run_as_username = "app".into();
    sc.supplemental_groups = vec![4242];
    let user = node.run(&pod, config).await;
    let out = node.exec(&user, &["id"], 10).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("uid=1500") && text.contains("gid=1500") && text.contains("4242"), "{text}");
    let reported = node.status(&user).await.user.unwrap().linux.unwrap();
    assert_eq!((reported.uid, reported.gid), (1500, 1500));
    assert!(reported.supplemental_groups.contains(&4242));

    // Default capabilities, then all dropped; a read-only rootfs; seccomp unset and RuntimeDefault.
    let caps = |out: &model::ExecSyncResponse| {
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string())).unwrap()
    };
    let plain = node.run(&pod, container("plain", &image_id, "sleep 1000")).await;
    let out = node.exec(&plain, &["cat", "/proc/self/status"], 10).await.unwrap();
    assert_eq!(caps(&out), "00000000000005fb", "CRI-O's nine default capabilities");
    let out = node.exec(&plain, &["grep", "-c", "/proc/timer_list", "/proc/self/mountinfo"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "/proc/timer_list is masked by default");
    let out = node.exec(&plain, &["busybox", "unshare", "-U", "true"], 10).await.unwrap();
    assert_eq!(out.exit_code, 0, "no seccomp profile named: unconfined, as the CRI documents");
    let mut confined = container("confined", &image_id, "sleep 1000");
    security(&mut confined).seccomp = Some(model::SecurityProfile {
        profile_type: model::security_profile::ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
    let confined = node.run(&pod, confined).await;
    let out = node.exec(&confined, &["busybox", "unshare", "-U", "true"], 10).await.unwrap();
    assert_ne!(out.exit_code, 0, "RuntimeDefault seccomp refuses a new user namespace");
    let mut config = container("locked", &image_id, "sleep 1000");
    let sc = security(&mut config);
    sc.readonly_rootfs = true;
    sc.no_new_privs = true;
    sc.capabilities = Some(model::Capability { drop_capabilities: vec!["ALL".into()], ..Default::default() });
    let locked = node.run(&pod, config).await;
    let out = node.exec(&locked, &["cat", "/proc/self/status"], 10).await.unwrap();
    assert_eq!(caps(&out), "0000000000000000");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')), "{text}");
    let out = node.exec(&locked, &["touch", "/file"], 10).await.unwrap();
    assert_ne!(out.exit_code, 0, "the rootfs is read-only");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only"), "{out:?}");

    // Seccomp: Unconfined lets the user namespace through; a Localhost profile is applied.
    let mut config = container("unconfined", &image_id, "sleep 1000");
    security(&mut config).seccomp = Some(model::SecurityProfile {
        profile_type: model::security_profile::ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    let unconfined = node.run(&pod, config).await;
    let out = node.exec(&unconfined, &["busybox", "unshare", "-U", "true"], 10).await.unwrap();
    assert_eq!(out.exit_code, 0, "Unconfined: {}", String::from_utf8_lossy(&out.stderr));
    let profile = node.dir().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let mut config = container("localhost", &image_id, "sleep 1000");
    security(&mut config).seccomp = Some(model::SecurityProfile {
        profile_type: model::security_profile::ProfileType::Localhost as i32,
        localhost_ref: profile.display().to_string(),
    });
    let localhost = node.run(&pod, config).await;
    let out = node.exec(&localhost, &["mkdir", "/tmp/refused"], 10).await.unwrap();
    assert_ne!(out.exit_code, 0, "the Localhost profile refuses mkdir");
    let out = node.exec(&localhost, &["touch", "/tmp/allowed"], 10).await.unwrap();
    assert_eq!(out.exit_code, 0, "and allows the rest");

    // A device from the host, under another name.
    let mut config = container("device", &image_id, "sleep 1000");
    config.devices = vec![model::Device {
        container_path: "/dev/xnull".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    let device = node.run(&pod, config).await;
    let out = node.exec(&device, &["sh", "-c", "echo gone > /dev/xnull && test -c /dev/xnull"], 10).await.unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));

    for id in [user, plain, confined, locked, unconfined, localhost, device] {
        node.remove(&id).await;
    }
    node.assert_no_container_leaks();
    node.remove_pod(&pod.0).await;

    // Privileged: every capability lockstepd holds, the host's devices, nothing masked; only
    // in a privileged pod.
    let mut config = pod_config("privileged", &node.dir().join("logs/privileged"), false);
    config.linux.as_mut().unwrap().security_context.as_mut().unwrap().privileged = true;
    let privileged_pod = node.pod_of(config).await;
    let mut config = container("root", &image_id, "sleep 1000");
    security(&mut config).privileged = true;
    let err = node.create(&pod, config.clone()).await;
    assert_eq!(err.unwrap_err().code(), Code::NotFound, "the first pod is gone");
    let root = node.run(&privileged_pod, config).await;
    let out = node.exec(&root, &["cat", "/proc/self/status"], 10).await.unwrap();
    let daemon_pid = node.daemon.pid().unwrap();
    let daemon = std::fs::read_to_string(format!("/proc/{daemon_pid}/status")).unwrap();
    let bounding = daemon.lines().find_map(|l| l.strip_prefix("CapBnd:")).unwrap().trim().to_string();
    assert_eq!(caps(&out), bounding, "all of lockstepd's capabilities");
    let out =
        node.exec(&root, &["sh", "-c", "ls /dev | wc -l; grep -c /proc/timer_list /proc/self/mountinfo"], 10).await;
    let text = String::from_utf8_lossy(&out.unwrap().stdout).to_string();
    let mut lines = text.lines();
    let devices: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!(devices > 20, "the host's devices: {devices}");
    assert_eq!(lines.next().unwrap().trim(), "0", "/proc/timer_list is not masked (no mount over it)");
    node.remove(&root).await;
    node.remove_pod(&privileged_pod.0).await;
    node.assert_no_container_leaks();
}

#[tokio::test]
async fn a_pod_of_several_containers_stops_and_goes_with_its_sandbox() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let pod = node.pod("multi", true).await;
    let web = node
        .run(&pod, container("web", &image_id, "echo pod-local > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"))
        .await;
    let client = node.run(&pod, container("client", &image_id, "sleep 1000")).await;
    let created = node.create(&pod, container("later", &image_id, "sleep 1000")).await.unwrap();
    // The containers share the pod's network: one reaches the other on localhost.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = node.exec(&client, &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"], 10).await.unwrap();
        if out.exit_code == 0 {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "pod-local\n");
            break;
        }
        assert!(Instant::now() < deadline, "no answer from the pod's other container: {out:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... and its IPC namespace and /dev/shm, its hostname, hosts and resolv.conf.
    let out = node.exec(&client, &["sh", "-c", "echo shared > /dev/shm/note"], 10).await.unwrap();
    assert_eq!(out.exit_code, 0);
    let out = node.exec(&web, &["cat", "/dev/shm/note"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "shared\n", "one /dev/shm for the pod");
    let out = node.exec(&client, &["sh", "-c", "hostname; cat /etc/hostname /etc/hosts /etc/resolv.conf"], 10).await;
    let text = String::from_utf8_lossy(&out.unwrap().stdout).to_string();
    let status = node
        .kubelet()
        .pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id: pod.0.clone(), verbose: false });
    let ip = status.await.unwrap().status.unwrap().network.unwrap().ip;
    assert!(text.starts_with("multi\nmulti\n"), "the pod's hostname: {text}");
    assert!(text.contains(&format!("{ip}\tmulti")), "the pod's IP in /etc/hosts: {text}");
    let sandbox_resolv =
        std::fs::read_to_string(node.runroot().join("sandboxes").join(&pod.0).join("resolv.conf")).unwrap();
    assert!(text.ends_with(&sandbox_resolv), "the sandbox's resolv.conf: {text}");
    let by_pod = node.list(Some(model::ContainerFilter { pod_sandbox_id: pod.0.clone(), ..Default::default() })).await;
    assert_eq!(by_pod.len(), 3);

    node.kubelet().stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: pod.0.clone() }).await.unwrap();
    for id in [&web, &client, &created] {
        assert_eq!(node.status(id).await.state(), model::ContainerState::ContainerExited, "{id}");
    }
    // A stopped sandbox takes no new container.
    let err = node.create(&pod, container("late", &image_id, "true")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("pod_sandbox_id"), "{}", err.message());
    node.kubelet().remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: pod.0.clone() }).await.unwrap();
    assert!(node.list(None).await.is_empty());
    for id in [&web, &client, &created] {
        assert!(cgroups_of(id).is_empty(), "cgroups of {id} remain");
    }
    node.assert_no_container_leaks();
}

/// The lists learn of exits from a pidfd per monitor (one poll for all) instead of reading each
/// monitor's files (issue 19): a container that exits by itself is listed EXITED by lists alone,
/// no ContainerStatus between, with its exit code, while the others stay as they were.
#[tokio::test]
async fn lists_alone_see_a_container_exit_by_itself_while_the_others_stay() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let pod = node.pod("lists", false).await;
    let script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 7";
    let quitter = node.run(&pod, container("quitter", &image_id, script)).await;
    let sleeper = node.run(&pod, container("sleeper", &image_id, "sleep 1000")).await;
    let waiting = node.create(&pod, container("waiting", &image_id, "sleep 1000")).await.unwrap();
    let states = |listed: Vec<model::Container>| -> std::collections::HashMap<String, model::ContainerState> {
        listed.into_iter().map(|c| (c.id.clone(), c.state())).collect()
    };
    // The first list takes a watch on every monitor.
    let before = states(node.list(None).await);
    assert_eq!(before[&quitter], model::ContainerState::ContainerRunning);
    node.exec(&quitter, &["touch", "/tmp/go"], 10).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = states(node.list(None).await);
        if now[&quitter] == model::ContainerState::ContainerExited {
            break now;
        }
        assert!(Instant::now() < deadline, "ListContainers never listed the exit: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(after[&sleeper], model::ContainerState::ContainerRunning);
    assert_eq!(after[&waiting], model::ContainerState::ContainerCreated);
    let running = Some(model::ContainerStateValue { state: model::ContainerState::ContainerRunning as i32 });
    let listed = node.list(Some(model::ContainerFilter { state: running, ..Default::default() })).await;
    assert_eq!(listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec![sleeper.as_str()]);
    assert_eq!(node.status(&quitter).await.exit_code, 7, "the exit the monitor recorded");

    node.remove_pod(&pod.0).await;
    assert!(node.list(None).await.is_empty());
    node.assert_no_container_leaks();
}

#[tokio::test]
async fn containers_survive_a_lockstepd_crash_with_their_real_exits() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let pod = node.pod("crash", false).await;
    let ticker = node
        .run(&pod, container("ticker", &image_id, "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.05; done"))
        .await;
    let quitter = node.run(&pod, container("quitter", &image_id, "sleep 1; exit 5")).await;
    let waiting = node.create(&pod, container("waiting", &image_id, "echo started; sleep 1000")).await.unwrap();
    let old_ticker_pid = node.verbose(&ticker).await["pid"].as_i64().unwrap();

    node.kill();
    let down_since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    // The ticker as a kill between the runtime's start and the record's update leaves it (a
    // window too short to hit with a real kill): recorded as created, running.
    let ticker_record = node.root().join(format!("containers/{ticker}.json"));
    let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&ticker_record).unwrap()).unwrap();
    record["state"] = serde_json::to_value(lockstep_runtime::container::record::RecordState::Created).unwrap();
    std::fs::write(&ticker_record, serde_json::to_vec(&record).unwrap()).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.spawn().await;

    let states: std::collections::HashMap<String, model::ContainerState> =
        node.list(None).await.into_iter().map(|c| (c.id.clone(), c.state())).collect();
    assert_eq!(states.len(), 3);
    assert_eq!(states[&ticker], model::ContainerState::ContainerRunning);
    assert_eq!(states[&quitter], model::ContainerState::ContainerExited);
    assert_eq!(states[&waiting], model::ContainerState::ContainerCreated);
    let status = node.status(&quitter).await;
    assert_eq!((status.exit_code, status.reason.as_str()), (5, "Error"), "the real exit code");
    assert!(status.finished_at >= down_since - 1_000_000_000, "it exited while lockstepd was down");
    assert_eq!(node.verbose(&ticker).await["pid"].as_i64().unwrap(), old_ticker_pid, "the same process runs on");

    // A kubelet retry of CreateContainer with the same metadata: the same container.
    let again = node.create(&pod, container("waiting", &image_id, "echo started; sleep 1000")).await.unwrap();
    assert_eq!(again, waiting);
    node.kubelet().start_container(model::StartContainerRequest { container_id: waiting.clone() }).await.unwrap();
    assert_eq!(node.status(&waiting).await.state(), model::ContainerState::ContainerRunning);

    // The ticker's log has no gap across the crash; it is re-attached for stop.
    node.stop(&ticker, 0).await.unwrap();
    let log = node.dir().join("logs/crash/ticker/0.log");
    let ticks: Vec<u32> = log_entries(&log)
        .into_iter()
        .filter_map(|e| e.strip_prefix("stdout F tick ").map(|n| n.parse().unwrap()))
        .collect();
    assert!(ticks.len() > 30, "ticks before, during and after the crash: {}", ticks.len());
    assert_eq!(ticks, (0..ticks.len() as u32).collect::<Vec<_>>());

    node.remove_pod(&pod.0).await;
    assert!(node.list(None).await.is_empty());
    node.assert_no_container_leaks();
}

#[tokio::test]
async fn bad_requests_name_their_field_and_leave_nothing_behind() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    // A cgroup parent of the test's own, to see that no container cgroup is left in it.
    let parent = format!("/lockstep-bad-{}", std::process::id());
    let mut config = pod_config("bad", &node.dir().join("logs/bad"), false);
    config.linux.as_mut().unwrap().cgroup_parent = parent.clone();
    let pod = node.pod_of(config).await;
    let children = || -> Vec<PathBuf> {
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|h| {
                std::fs::read_dir(h.path().join(parent.trim_start_matches('/'))).into_iter().flatten().flatten()
            })
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    };
    let good = || container("bad", &image_id, "sleep 1000");

    let mut cases: Vec<(&str, model::ContainerConfig, Code, &str)> = Vec::new();
    let mut absent_image = good();
    absent_image.image =
        Some(model::ImageSpec { image: format!("{}/lockstep/absent:1", node.registry.host), ..Default::default() });
    cases.push(("absent image", absent_image, Code::NotFound, "config.image.image"));
    let mut missing_source = good();
    missing_source.mounts = vec![model::Mount {
        container_path: "/data".into(),
        host_path: "/nonexistent/lockstep/source".into(),
        ..Default::default()
    }];
    cases.push(("missing mount source", missing_source, Code::NotFound, "config.mounts[0].host_path"));
    let mut relative = good();
    relative.mounts =
        vec![model::Mount { container_path: "data".into(), host_path: "/tmp".into(), ..Default::default() }];
    cases.push(("relative destination", relative, Code::InvalidArgument, "config.mounts[0].container_path"));
    let mut relative_source = good();
    relative_source.mounts =
        vec![model::Mount { container_path: "/data".into(), host_path: "tmp".into(), ..Default::default() }];
    cases.push(("relative source", relative_source, Code::InvalidArgument, "config.mounts[0].host_path"));
    let mut unknown_cap = good();
    security(&mut unknown_cap).capabilities =
        Some(model::Capability { add_capabilities: vec!["CAP_TELEPORT".into()], ..Default::default() });
    cases.push(("unknown capability", unknown_cap, Code::InvalidArgument, "add_capabilities[0]"));
    let mut absent_user = good();
    security(&mut absent_user).run_as_username = "nobody-here".into();
    cases.push(("absent user", absent_user, Code::NotFound, "run_as_username"));
    let mut apparmor = good();
    security(&mut apparmor).apparmor = Some(model::SecurityProfile {
        profile_type: model::security_profile::ProfileType::Localhost as i32,
        localhost_ref: "lockstep-test-profile".into(),
    });
    cases.push(("AppArmor profile", apparmor, Code::FailedPrecondition, "apparmor"));
    let mut no_name = good();
    no_name.metadata = Some(model::ContainerMetadata { name: String::new(), attempt: 0 });
    cases.push(("no name", no_name, Code::InvalidArgument, "config.metadata.name"));

    for (what, config, code, field) in cases {
        let err = node.create(&pod, config).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(err.message().contains(field), "{what}: {}", err.message());
        node.assert_no_container_leaks();
        assert!(children().is_empty(), "{what}: container cgroups remain: {:?}", children());
    }
    // A target_id (shared PID namespace with one container) in another pod is refused.
    let other_pod = node.pod("other", false).await;
    let elsewhere = node.run(&other_pod, container("elsewhere", &image_id, "sleep 1000")).await;
    let mut targeted = good();
    security(&mut targeted).namespace_options = Some(model::NamespaceOption {
        pid: model::NamespaceMode::Target as i32,
        target_id: elsewhere.clone(),
        ..Default::default()
    });
    let err = node.create(&pod, targeted).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("target_id"), "{}", err.message());
    assert!(children().is_empty(), "container cgroups remain: {:?}", children());
    node.remove_pod(&other_pod.0).await;
    let unknown = (String::from("0123456789abcdef"), pod.1.clone());
    let err = node.create(&unknown, good()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("pod_sandbox_id"), "{}", err.message());
    assert!(node.list(None).await.is_empty());
    let err = node.stop("0123456789abcdef", -1).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("timeout"), "{}", err.message());
    // A container lockstepd never knew is stopped at once: StopContainer is idempotent.
    node.stop("0123456789abcdef", 0).await.unwrap();
    let err = node.stop("", 0).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    node.assert_no_container_leaks();
    node.remove_pod(&pod.0).await;
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join(parent.trim_start_matches('/')));
    }
}

#[tokio::test]
async fn a_crash_in_the_middle_of_create_container_leaks_nothing() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let pod = node.pod("midway", false).await;
    // lockstepd is SIGKILLed at several instants of a CreateContainer; whatever the instant,
    // after the restart the container either exists whole or left nothing behind.
    for (round, delay_ms) in [5u64, 20, 40, 60, 90, 130].into_iter().enumerate() {
        let socket = node.socket();
        let request = model::CreateContainerRequest {
            pod_sandbox_id: pod.0.clone(),
            config: Some(container(&format!("c{round}"), &image_id, "sleep 1000")),
            sandbox_config: Some(pod.1.clone()),
        };
        let call = tokio::spawn(async move {
            let channel =
                lockstep_cri::connect(&format!("unix://{}", socket.display()), Duration::from_secs(5)).await.ok()?;
            let mut client = CriClient::new(Minor::V1_36, channel).ok()?;
            client.create_container(request).await.ok().map(|r| r.container_id)
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        node.kill();
        let answered = call.await.unwrap();
        node.spawn().await;
        let listed = node.list(None).await;
        if let Some(id) = &answered {
            assert!(listed.iter().any(|c| &c.id == id), "an answered CreateContainer survives the crash");
        }
        for c in &listed {
            assert_eq!(c.state(), model::ContainerState::ContainerCreated, "round {round}: {c:?}");
            node.remove(&c.id).await;
        }
        node.assert_no_container_leaks();
    }
    node.remove_pod(&pod.0).await;
}

#[tokio::test]
async fn a_crash_in_the_middle_of_remove_container_is_finished_at_restart() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let pod = node.pod("unmade", false).await;
    for (round, delay_ms) in [5u64, 20, 40, 70].into_iter().enumerate() {
        let id = node.run(&pod, container(&format!("c{round}"), &image_id, "sleep 1000")).await;
        let socket = node.socket();
        let request = model::RemoveContainerRequest { container_id: id.clone() };
        let call = tokio::spawn(async move {
            let channel =
                lockstep_cri::connect(&format!("unix://{}", socket.display()), Duration::from_secs(5)).await.ok()?;
            let mut client = CriClient::new(Minor::V1_36, channel).ok()?;
            client.remove_container(request).await.ok()
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        node.kill();
        let answered = call.await.unwrap().is_some();
        node.spawn().await;
        let listed = node.list(None).await;
        if answered {
            assert!(listed.is_empty(), "an answered RemoveContainer stays done: {listed:?}");
        }
        for c in &listed {
            // Not removed yet: it was not even marked, so it still runs.
            assert_eq!(c.state(), model::ContainerState::ContainerRunning, "round {round}: {c:?}");
            node.remove(&c.id).await;
        }
        node.assert_no_container_leaks();
        assert!(cgroups_of(&id).is_empty(), "cgroups of {id} remain");
    }
    node.remove_pod(&pod.0).await;
}

#[tokio::test]
async fn host_paths_and_image_volumes_are_mounted_and_released() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let two_layers = node.pull(fixtures::USER_NAME).await;
    let pod = node.pod("volumes", false).await;
    let host_dir = node.dir().join("host-data");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("greeting"), "from the host\n").unwrap();

    let mut config = container("volumes", &image_id, "sleep 1000");
    config.mounts = vec![
        model::Mount {
            container_path: "/host".into(),
            host_path: host_dir.display().to_string(),
            readonly: true,
            ..Default::default()
        },
        model::Mount {
            container_path: "/scratch".into(),
            host_path: host_dir.display().to_string(),
            ..Default::default()
        },
        // One layer (a read-only bind) and two layers (an overlay without an upper layer).
        model::Mount {
            container_path: "/vol/one".into(),
            image: Some(model::ImageSpec { image: image_id.clone(), ..Default::default() }),
            ..Default::default()
        },
        model::Mount {
            container_path: "/vol/two".into(),
            image: Some(model::ImageSpec { image: two_layers.clone(), ..Default::default() }),
            image_sub_path: "etc".into(),
            ..Default::default()
        },
    ];
    let mut missing = config.clone();
    missing.metadata.as_mut().unwrap().name = "missing-sub-path".into();
    missing.mounts[3].image_sub_path = "no/such/dir".into();
    let err = node.create(&pod, missing).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(err.message().contains("config.mounts[3].image_sub_path"), "{}", err.message());
    node.assert_no_container_leaks();
    let id = node.run(&pod, config).await;
    for cmd in ["cat /host/greeting", "echo written > /scratch/new; cat /scratch/new"] {
        let out = node.exec(&id, &["sh", "-c", cmd], 10).await.unwrap();
        assert_eq!(out.exit_code, 0, "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(std::fs::read_to_string(host_dir.join("new")).unwrap(), "written\n", "a writable bind reaches the host");
    let out = node.exec(&id, &["touch", "/host/nope"], 10).await.unwrap();
    assert_ne!(out.exit_code, 0, "a readonly bind refuses writes");
    let out =
        node.exec(&id, &["sh", "-c", "test -x /vol/one/bin/busybox && grep app /vol/two/passwd"], 10).await.unwrap();
    assert_eq!(out.exit_code, 0, "the image volumes hold the images' files: {}", String::from_utf8_lossy(&out.stderr));
    for target in ["/vol/one/new", "/vol/two/new"] {
        let out = node.exec(&id, &["touch", target], 10).await.unwrap();
        assert_ne!(out.exit_code, 0, "{target}: an image volume is read-only");
    }
    let holds = std::fs::read_dir(node.root().join("images/holds")).unwrap().count();
    assert_eq!(holds, 3, "the container's own image and both volumes are held");
    node.remove(&id).await;
    node.assert_no_container_leaks();
    node.remove_pod(&pod.0).await;
}

/// A container whose record was lost (lockstepd killed, the record gone): the restart's sweep
/// removes its directories and ends its image holds, those of its image volumes too (issue
/// 14, item 14: they were left, keeping their layers for ever).
#[tokio::test]
async fn the_restart_sweep_releases_the_holds_of_image_volumes() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let pod = node.pod("swept", false).await;
    let mut config = container("swept", &image_id, "sleep 1000");
    config.mounts = vec![model::Mount {
        container_path: "/vol".into(),
        image: Some(model::ImageSpec { image: image_id.clone(), ..Default::default() }),
        ..Default::default()
    }];
    let id = node.run(&pod, config).await;
    let holds = node.root().join("images/holds");
    assert_eq!(std::fs::read_dir(&holds).unwrap().count(), 2, "the container's image and its volume are held");
    node.kill();
    let record = node.root().join("containers").join(format!("{id}.json"));
    std::fs::remove_file(&record).unwrap();
    node.spawn().await;
    assert!(node.list(None).await.is_empty());
    node.assert_no_container_leaks();
    node.remove_pod(&pod.0).await;
}

#[tokio::test]
async fn a_container_created_while_its_pod_stops_is_not_left_in_the_stopped_pod() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    for round in 0..3 {
        let pod = node.pod(&format!("race-{round}"), false).await;
        let request = model::CreateContainerRequest {
            pod_sandbox_id: pod.0.clone(),
            config: Some(container("late", &image_id, "sleep 1000")),
            sandbox_config: Some(pod.1.clone()),
        };
        let (mut creator, mut stopper) = (node.kubelet().clone(), node.kubelet().clone());
        let create = tokio::spawn(async move { creator.create_container(request).await });
        let stop = model::StopPodSandboxRequest { pod_sandbox_id: pod.0.clone() };
        stopper.stop_pod_sandbox(stop).await.unwrap();
        let created = create.await.unwrap();
        let filter = model::ContainerFilter { pod_sandbox_id: pod.0.clone(), ..Default::default() };
        for c in node.list(Some(filter)).await {
            assert_eq!(c.state(), model::ContainerState::ContainerExited, "round {round}: {created:?}");
        }
        node.remove_pod(&pod.0).await;
    }
    node.assert_no_container_leaks();
}

#[tokio::test]
async fn a_shared_pid_pod_under_a_new_cgroup_parent_leaves_no_cgroup_behind() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let parent = format!("/lockstep-parent-{}", std::process::id());
    let mut config = pod_config("shared-pid", &node.dir().join("logs/shared-pid"), false);
    let linux = config.linux.as_mut().unwrap();
    linux.cgroup_parent = parent.clone();
    linux.security_context.as_mut().unwrap().namespace_options.as_mut().unwrap().pid = model::NamespaceMode::Pod as i32;
    let pod = node.pod_of(config).await;
    let id = node.run(&pod, container("app", &image_id, "sleep 1000")).await;
    let made = || -> Vec<PathBuf> {
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|h| h.path().join(parent.trim_start_matches('/')))
            .filter(|p| p.exists())
            .collect()
    };
    assert!(!made().is_empty(), "the pod's cgroup parent was made");
    // As the kubelet does: the pod stopped (its containers too), then each container removed,
    // then the pod.
    node.kubelet().stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: pod.0.clone() }).await.unwrap();
    node.remove(&id).await;
    node.remove_pod(&pod.0).await;
    assert!(made().is_empty(), "cgroups lockstepd made for the pod remain: {:?}", made());
    node.assert_no_container_leaks();
}

/// An image whose USER is a number no uid can be (`-1`, `4294967296`) and whose /etc/passwd
/// names exactly that number as uid 0: ImageStatus gives the kubelet a username, not a uid (so
/// runAsNonRoot refuses the pod), and CreateContainer refuses it, naming the user, instead of
/// looking the number up as a name and running the container as root.
#[tokio::test]
async fn image_users_that_are_numbers_but_no_uids_never_run_as_root() {
    let mut node = Node::start().await;
    let cases = [(hostile::USER_MINUS_ONE, "-1"), (hostile::USER_OVERFLOW, "4294967296")];
    let set: Vec<_> = cases.iter().map(|(repo, user)| hostile::user_named_like_a_number(repo, user).unwrap()).collect();
    fixtures::push_all(&node.registry.host, &set).await.unwrap();
    let pod = node.pod("numbers", false).await;
    for (i, (repo, user)) in cases.into_iter().enumerate() {
        let image_id = node.pull(repo).await;
        let request = model::ImageStatusRequest {
            image: Some(model::ImageSpec { image: image_id.clone(), ..Default::default() }),
            verbose: false,
        };
        let image = node.kubelet().image_status(request).await.unwrap().image.unwrap();
        assert_eq!((image.uid.map(|u| u.value), image.username.as_str()), (None, user), "{repo}");
        let err = node.create(&pod, container(&format!("c{i}"), &image_id, "id -u")).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
        assert!(err.message().contains(&format!("{user:?}")), "the message names the user: {}", err.message());
    }
    assert!(node.list(None).await.is_empty());
    node.assert_no_container_leaks();
    node.remove_pod(&pod.0).await;
}

/// 125 layers (registries allow 127) are more than one overlay mount's options can name: the
/// image pulls, its container runs and sees every layer, and goes without a trace.
#[tokio::test]
async fn an_image_of_125_layers_pulls_runs_and_goes() {
    let mut node = Node::start().await;
    let set = [hostile::many_layers(hostile::MANY_LAYERS, 125).unwrap()];
    fixtures::push_all(&node.registry.host, &set).await.unwrap();
    let image_id = node.pull(hostile::MANY_LAYERS).await;
    let pod = node.pod("layers", false).await;
    let id = node.run(&pod, container("many", &image_id, "cat /layers/top; ls /layers | wc -l")).await;
    let status = node.wait_state(&id, model::ContainerState::ContainerExited).await;
    assert_eq!(status.exit_code, 0, "{}", status.message);
    let entries = log_entries(&node.dir().join("logs/layers/many/0.log"));
    assert_eq!(entries, vec!["stdout F 124".to_string(), "stdout F 125".to_string()], "the top layer wins, all show");
    node.remove(&id).await;
    node.assert_no_container_leaks();
    node.remove_pod(&pod.0).await;
    let request =
        model::RemoveImageRequest { image: Some(model::ImageSpec { image: image_id.clone(), ..Default::default() }) };
    node.kubelet().remove_image(request).await.unwrap();
    let snapshots = node.root().join("images/snapshots");
    let left = std::fs::read_dir(&snapshots).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "every layer's snapshot goes with the image");
}

/// A pod writes a directory chain 5,000 deep into its writable layer, on a lockstepd that may
/// open 1,024 files (systemd's default): RemoveContainer still removes it (std's
/// remove_dir_all keeps a file open per level and failed with EMFILE, for ever).
#[tokio::test]
async fn a_tree_deeper_than_lockstepd_may_open_files_goes_with_its_container() {
    let mut node = Node::start().await;
    node.restart_with_nofile(1024).await;
    let image_id = node.pull(fixtures::SHELL).await;
    let pod = node.pod("deep", false).await;
    // Chains of 1,000 (whose paths mkdir can still name) moved one under the other.
    let script = "p=d; i=1; while [ $i -lt 1000 ]; do p=$p/d; i=$((i+1)); done; mkdir -p /deep/$p || exit 1; \
                  n=1; while [ $n -lt 5 ]; do busybox mv /deep /deep.old && mkdir -p /deep/$p && \
                  busybox mv /deep.old /deep/$p/x || exit 1; n=$((n+1)); done; echo built";
    let id = node.run(&pod, container("deep", &image_id, script)).await;
    let status = node.wait_state(&id, model::ContainerState::ContainerExited).await;
    assert_eq!(status.exit_code, 0, "{}", status.message);
    let layers = node.root().join("containers");
    assert!(lockstep_runtime::image::unpack::measure(&layers).inodes > 1_000, "the chain is in the writable layer");
    node.remove(&id).await;
    node.assert_no_container_leaks();
    node.remove_pod(&pod.0).await;
}

/// Files under `dir` that any local user could read: readable by others, and every directory
/// from `dir` down to them searchable by others (a 0711 directory hides names, not files
/// whose names can be guessed). `dir` itself is taken as reachable, as /var/lib/lockstep is.
fn readable_by_others(dir: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            let mode = meta.permissions().mode() & 0o7777;
            // Another filesystem (a container's rootfs, a pod's shm): its own content, not state.
            if meta.is_dir() && mode & 0o001 != 0 && meta.dev() == std::fs::metadata(dir).unwrap().dev() {
                pending.push(path);
            } else if meta.is_file() && mode & 0o004 != 0 {
                found.push((path, mode));
            }
        }
    }
    found
}

/// A container's environment (secrets from the kubelet) reaches lockstepd's files: its
/// records, the exec process it hands the OCI runtime, the pod's CNI records. No other local
/// user may read any of them, during an exec or after.
#[tokio::test]
async fn no_state_file_is_readable_by_other_users() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let pod = node.pod("private", true).await;
    let mut config = container("app", &image_id, "sleep 60");
    config.envs.push(model::KeyValue { key: "API_TOKEN".into(), value: b"s3cr3t-value".to_vec() });
    let id = node.run(&pod, config).await;
    node.wait_state(&id, model::ContainerState::ContainerRunning).await;

    // While an exec runs: its process (with the whole environment) is on disk.
    let mut client = node.kubelet().clone();
    let request =
        model::ExecSyncRequest { container_id: id.clone(), cmd: vec!["sleep".into(), "2".into()], timeout: 10 };
    let exec = tokio::spawn(async move { client.exec_sync(request).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut open = readable_by_others(&node.root());
    open.extend(readable_by_others(&node.runroot()));
    assert_eq!(exec.await.unwrap().unwrap().exit_code, 0);
    open.extend(readable_by_others(&node.root()));
    open.extend(readable_by_others(&node.runroot()));
    assert!(open.is_empty(), "readable by any local user: {open:#?}");

    node.remove_pod(&pod.0).await;
}

/// The numbers a counter container printed ("stdout F tick N"), in order.
fn ticks(log: &Path) -> Vec<u64> {
    log_entries(log).iter().filter_map(|e| e.strip_prefix("stdout F tick ").and_then(|n| n.parse().ok())).collect()
}

const COUNTER: &str = "echo before > /tmp/marker; exec 3>/tmp/held; i=0; \
    while :; do i=$((i+1)); echo $i > /tmp/count; echo tick $i; sleep 0.05; done";

#[tokio::test]
async fn a_checkpoint_restores_in_a_new_pod_where_its_counter_goes_on() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let first = node.pod_on(pod_config("original", &node.dir().join("logs/original"), false), "runc").await;
    let id = node.run(&first, container("counter", &image_id, COUNTER)).await;
    let log = node.dir().join("logs/original/counter/0.log");
    wait_for("a few ticks", || ticks(&log).len() >= 5).await;

    let archive = node.dir().join("counter.tar");
    node.checkpoint(&id, &archive).await.unwrap();
    let at_checkpoint = *ticks(&log).last().unwrap();
    // The original runs on (the kubelet's forensic checkpoint leaves it be).
    assert_eq!(node.status(&id).await.state(), model::ContainerState::ContainerRunning);
    wait_for("ticks after the checkpoint", || ticks(&log).last().is_some_and(|&t| t > at_checkpoint + 3)).await;
    let listed = std::process::Command::new("tar").arg("tf").arg(&archive).output().unwrap();
    let names = String::from_utf8_lossy(&listed.stdout);
    for name in ["config.dump", "spec.dump", "checkpoint/inventory.img", "rootfs-diff.tar", "deleted.files"] {
        assert!(names.lines().any(|l| l.trim_end_matches('/') == name), "{name} is not in the archive:\n{names}");
    }

    // Restored in another pod: created from the archive, its processes back at StartContainer.
    let second = node.pod_on(pod_config("restored", &node.dir().join("logs/restored"), false), "runc").await;
    let mut restored = container("counter", &archive.display().to_string(), "");
    restored.command.clear();
    let restored_id = node.create(&second, restored).await.unwrap();
    let status = node.status(&restored_id).await;
    assert_eq!(status.state(), model::ContainerState::ContainerCreated);
    assert_eq!(status.image_id, image_id, "the checkpointed container's image");
    node.kubelet().start_container(model::StartContainerRequest { container_id: restored_id.clone() }).await.unwrap();
    assert_eq!(node.status(&restored_id).await.state(), model::ContainerState::ContainerRunning);
    let restored_log = node.dir().join("logs/restored/counter/0.log");
    wait_for("the restored counter's ticks", || ticks(&restored_log).len() >= 3).await;
    let after = ticks(&restored_log);
    // It goes on from where the checkpoint took it (not from 1), one by one.
    assert!(
        after[0] > 1 && after[0] <= at_checkpoint + 1,
        "restored at {} after a checkpoint at {at_checkpoint}",
        after[0]
    );
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    // The writable layer and the open file came along.
    let out = node.exec(&restored_id, &["cat", "/tmp/marker"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\n");
    let out =
        node.exec(&restored_id, &["sh", "-c", "for fd in /proc/[0-9]*/fd/3; do readlink $fd; done"], 10).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("/tmp/held"), "{:?}", String::from_utf8_lossy(&out.stdout));

    // A lockstepd crash loses neither the restored container nor one waiting for its start.
    let pid = node.verbose(&restored_id).await["pid"].as_i64().unwrap();
    let mut waiting = container("waiting", &archive.display().to_string(), "");
    waiting.command.clear();
    let waiting_id = node.create(&second, waiting).await.unwrap();
    node.kill();
    node.spawn().await;
    assert_eq!(node.status(&restored_id).await.state(), model::ContainerState::ContainerRunning);
    assert_eq!(node.verbose(&restored_id).await["pid"].as_i64().unwrap(), pid, "the same process");
    assert_eq!(node.status(&waiting_id).await.state(), model::ContainerState::ContainerCreated);
    node.kubelet().start_container(model::StartContainerRequest { container_id: waiting_id.clone() }).await.unwrap();
    wait_for("the second restore's ticks", || ticks(&node.dir().join("logs/restored/waiting/0.log")).len() >= 2).await;

    // Both go like any container.
    node.stop(&restored_id, 0).await.unwrap();
    assert_eq!(node.status(&restored_id).await.state(), model::ContainerState::ContainerExited);
    node.remove_pod(&second.0).await;
    node.remove_pod(&first.0).await;
    node.assert_no_container_leaks();
}

#[tokio::test]
async fn checkpoints_that_cannot_be_and_broken_archives_are_refused_leaving_nothing() {
    let mut node = Node::start().await;
    let image_id = node.pull(fixtures::SHELL).await;
    let pod = node.pod_on(pod_config("refusals", &node.dir().join("logs/refusals"), false), "runc").await;
    let archive = node.dir().join("refused.tar");

    // An exited container has no processes to dump.
    let done = node.run(&pod, container("done", &image_id, "exit 0")).await;
    node.wait_state(&done, model::ContainerState::ContainerExited).await;
    let err = node.checkpoint(&done, &archive).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(!archive.exists(), "no archive for a refused checkpoint");
    // Nor does a created one.
    let created = node.create(&pod, container("created", &image_id, "sleep 1000")).await.unwrap();
    let err = node.checkpoint(&created, &archive).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    node.remove(&created).await;
    node.remove(&done).await;
    // A handler without CRIU (Debian 12's crun) says so.
    let crun_pod = node.pod_on(pod_config("on-crun", &node.dir().join("logs/on-crun"), false), "crun").await;
    let on_crun = node.run(&crun_pod, container("sleeper", &image_id, "sleep 1000")).await;
    let err = node.checkpoint(&on_crun, &archive).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("CRIU"), "{}", err.message());
    node.remove_pod(&crun_pod.0).await;

    // Archives a restore cannot use: not a tar, a tar without the dumps, a cut-off one.
    let not_tar = node.dir().join("words.tar");
    std::fs::write(&not_tar, "just some words, no archive").unwrap();
    let plain = node.dir().join("plain.tar");
    let status = std::process::Command::new("tar").arg("cf").arg(&plain).arg("-C").arg("/etc").arg("hostname").status();
    assert!(status.unwrap().success());
    let running = node.run(&pod, container("counter", &image_id, COUNTER)).await;
    let good = node.dir().join("good.tar");
    node.checkpoint(&running, &good).await.unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = node.dir().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for (i, broken) in [&not_tar, &plain, &cut].into_iter().enumerate() {
        let mut config = container(&format!("broken-{i}"), &broken.display().to_string(), "");
        config.command.clear();
        let err = node.create(&pod, config).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}: {}", broken.display(), err.message());
        assert!(err.message().contains("config.image.image"), "{}", err.message());
        let listed = node.list(None).await;
        assert_eq!(listed.len(), 1, "only the counter is listed: {listed:?}");
    }
    node.remove_pod(&pod.0).await;
    node.assert_no_container_leaks();
}
