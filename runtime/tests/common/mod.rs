//! What the pod tests share: a real lockstepd process (its own root, runroot, socket and CNI
//! config, on the real bridge plugin, host-local and portmap), a kubelet-like client, pod
//! configs, and the leak checker that looks at the host itself after each lifecycle.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_cri::{model, CriClient, Minor};

pub const LOCKSTEPD: &str = env!("CARGO_BIN_EXE_lockstepd");
pub const CNI_BIN: &str = "/usr/lib/cni";
/// The same network as ci/setup's default, so tests share its host-local store safely.
pub const NETWORK: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "lockstep",
  "plugins": [
    { "type": "bridge", "bridge": "lockstep0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.88.0.0/16" }]], "routes": [{ "dst": "0.0.0.0/0" }] } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}"#;

/// A lockstepd process with its own state, killed (not just stopped) when dropped.
pub struct Lockstepd {
    pub tmp: tempfile::TempDir,
    pub child: Option<Child>,
    pub plugin_dirs: Vec<PathBuf>,
    /// The --runroot given: `<tmp>/run`, or a symlink to it.
    runroot: PathBuf,
}

/// How a test's lockstepd differs from the default one.
#[derive(Debug, Clone)]
pub struct Options {
    pub plugin_dirs: Vec<PathBuf>,
    /// --runroot is a symlink to the real directory (as /var/run is to /run).
    pub runroot_via_symlink: bool,
    /// More lockstep.toml, appended after the [network] table's keys.
    pub network_toml: String,
    /// More lockstep.toml at the top level (before any table).
    pub top_toml: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            plugin_dirs: vec![PathBuf::from(CNI_BIN)],
            runroot_via_symlink: false,
            network_toml: String::new(),
            top_toml: String::new(),
        }
    }
}

impl Lockstepd {
    pub async fn start() -> Lockstepd {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with_plugins(plugin_dirs: Vec<PathBuf>) -> Lockstepd {
        Self::start_with(Options { plugin_dirs, ..Default::default() }).await
    }

    pub async fn start_with(options: Options) -> Lockstepd {
        let tmp = tempfile::Builder::new().prefix("lockstep-pods-").tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("net.d")).unwrap();
        std::fs::write(tmp.path().join("net.d/10-test.conflist"), NETWORK).unwrap();
        let dirs: Vec<String> = options.plugin_dirs.iter().map(|d| format!("{:?}", d.display().to_string())).collect();
        std::fs::write(
            tmp.path().join("lockstep.toml"),
            format!(
                "{}\n[network]\ncni_config_dir = {:?}\ncni_plugin_dirs = [{}]\n{}\n",
                options.top_toml,
                tmp.path().join("net.d").display().to_string(),
                dirs.join(", "),
                options.network_toml,
            ),
        )
        .unwrap();
        let runroot = if options.runroot_via_symlink {
            std::fs::create_dir_all(tmp.path().join("run")).unwrap();
            std::os::unix::fs::symlink(tmp.path().join("run"), tmp.path().join("run-link")).unwrap();
            tmp.path().join("run-link")
        } else {
            tmp.path().join("run")
        };
        let mut daemon = Lockstepd { tmp, child: None, plugin_dirs: options.plugin_dirs, runroot };
        daemon.spawn().await;
        daemon
    }

    pub fn socket(&self) -> PathBuf {
        self.tmp.path().join("lockstep.sock")
    }
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }
    pub fn runroot(&self) -> PathBuf {
        self.runroot.clone()
    }

    /// Starts (or restarts) the process and waits for its socket.
    pub async fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.tmp.path().join("log")).unwrap();
        let child = Command::new(LOCKSTEPD)
            .arg("--config")
            .arg(self.tmp.path().join("lockstep.toml"))
            .arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.runroot())
            .arg("--listen")
            .arg(self.socket())
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Connectable, not just present: the socket file appears at bind(), before listen().
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(Instant::now() < deadline, "lockstepd did not serve: {}", self.log());
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("lockstepd exited ({status}): {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub async fn kubelet(&self) -> CriClient {
        let channel = lockstep_cri::connect(&format!("unix://{}", self.socket().display()), Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to lockstepd: {e}\n{}", self.log()));
        let mut client = CriClient::new(Minor::V1_36, channel).unwrap();
        client.set_timeout(Some(Duration::from_secs(60)));
        client
    }
}

impl Drop for Lockstepd {
    /// A failed test leaves pods behind: release their networks (DEL from the daemon's cache)
    /// and unmount their namespaces, so one failure does not leak into the host.
    fn drop(&mut self) {
        self.kill();
        // The real plugins only: a test's faulty wrapper may still refuse DEL.
        let cache = lockstep_runtime::cni::network::AttachmentCache::new(&self.root());
        for (_, attachment) in cache.all().unwrap_or_default() {
            let plugins = lockstep_runtime::cni::exec::Plugins::new(vec![PathBuf::from(CNI_BIN)]);
            let _ = lockstep_runtime::cni::network::del(&attachment, &plugins);
        }
        for (_, pause) in
            std::fs::read_dir(self.runroot().join("sandboxes")).into_iter().flatten().flatten().filter_map(|e| {
                lockstep_runtime::sandbox::pause::read_pid_file(&e.path()).ok().flatten().map(|p| ((), p))
            })
        {
            let _ = lockstep_runtime::sandbox::pause::kill(&pause);
        }
        let records = lockstep_runtime::persist::RecordDir::new(self.root().join("sandboxes"));
        let records: Vec<(String, lockstep_runtime::sandbox::SandboxRecord)> = records.load_all().unwrap_or_default();
        for (_, record) in records {
            let _ = lockstep_runtime::host::cgroups::remove(&record.pause_cgroups, &record.id);
        }
        for mount in lockstep_runtime::host::mounts::mounts_under(self.tmp.path()).unwrap_or_default() {
            let _ = lockstep_runtime::host::mounts::unmount(&mount);
        }
    }
}

/// A unique pod name for this process and test.
pub fn unique(name: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{name}-{}-{n}", std::process::id())
}

/// A pod config as the kubelet sends it.
pub fn pod(name: &str) -> model::PodSandboxConfig {
    let uid = format!("uid-{name}");
    model::PodSandboxConfig {
        metadata: Some(model::PodSandboxMetadata {
            name: name.into(),
            uid: uid.clone(),
            namespace: "lockstep-test".into(),
            attempt: 0,
        }),
        hostname: "web-0".into(),
        log_directory: format!("/var/log/pods/lockstep-test_{name}_{uid}"),
        labels: [
            ("io.kubernetes.pod.name".to_string(), name.to_string()),
            ("io.kubernetes.pod.namespace".to_string(), "lockstep-test".to_string()),
            ("io.kubernetes.pod.uid".to_string(), uid),
        ]
        .into(),
        annotations: [("lockstep.test/owner".to_string(), "runtime-tests".to_string())].into(),
        linux: Some(model::LinuxPodSandboxConfig {
            security_context: Some(model::LinuxSandboxSecurityContext {
                // As the kubelet sends it without shareProcessNamespace.
                namespace_options: Some(model::NamespaceOption {
                    pid: model::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn run_request(config: model::PodSandboxConfig) -> model::RunPodSandboxRequest {
    model::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() }
}

/// What the leak checker needs to know about a pod, taken while it was up.
#[derive(Debug, Clone, Default)]
pub struct PodTraces {
    pub id: String,
    pub ip: String,
    /// The host side of the pod's veth.
    pub host_veth: Option<String>,
    pub pause_pid: Option<i32>,
}

pub async fn traces(kubelet: &mut CriClient, id: &str) -> PodTraces {
    let status = kubelet
        .pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true })
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    let host_veth = info["cniResult"]["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i.get("sandbox").is_none() && i["name"].as_str().is_some_and(|n| n.starts_with("veth")))
        .and_then(|i| i["name"].as_str().map(str::to_string));
    let pid = info["pid"].as_i64().unwrap_or(0) as i32;
    PodTraces {
        id: id.into(),
        ip: status.status.unwrap().network.unwrap_or_default().ip,
        host_veth,
        pause_pid: (pid > 0).then_some(pid),
    }
}

/// Asserts that nothing of the pod remains on the host: mounts, namespace pins, veth, IP
/// allocation, iptables rules, cgroups, the pause process.
pub fn assert_no_leaks(daemon: &Lockstepd, pod: &PodTraces) {
    let id = &pod.id;
    assert!(!id.is_empty());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leaked: Vec<&str> = mountinfo.lines().filter(|l| l.contains(id.as_str())).collect();
    assert!(leaked.is_empty(), "mounts of pod {id} remain: {leaked:#?}");
    let dir = daemon.runroot().join("sandboxes").join(id);
    assert!(!dir.exists(), "{} (namespace pins, files) remains", dir.display());
    assert!(!daemon.root().join("cni").join(format!("{id}.json")).exists(), "the CNI cache entry remains");
    if !pod.ip.is_empty() {
        // A pod on the bridge: its host-side veth was seen while it was up.
        let veth = pod.host_veth.as_ref().unwrap_or_else(|| panic!("pod {id} had an IP but no host veth was found"));
        assert!(!Path::new("/sys/class/net").join(veth).exists(), "veth {veth} of pod {id} remains");
    }
    let store = Path::new("/var/lib/cni/networks/lockstep");
    for entry in std::fs::read_dir(store).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(!text.contains(id.as_str()), "host-local still holds {} for pod {id}", entry.path().display());
    }
    let rules = Command::new("iptables-save").output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    let leaked: Vec<&str> = rules.lines().filter(|l| l.contains(id.as_str())).collect();
    assert!(leaked.is_empty(), "iptables rules of pod {id} remain: {leaked:#?}");
    let cgroups = Command::new("find").args(["/sys/fs/cgroup", "-maxdepth", "4", "-name", &format!("*{id}*")]).output();
    let cgroups = String::from_utf8_lossy(&cgroups.unwrap().stdout).to_string();
    assert!(cgroups.trim().is_empty(), "cgroups of pod {id} remain: {cgroups}");
    if let Some(pid) = pod.pause_pid {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "the pause process {pid} still runs");
    }
}

/// Runs a command inside the namespaces at the given nsenter flags (e.g. "--net=PATH").
pub fn nsenter(flags: &[String], command: &[&str]) -> String {
    let out = Command::new("nsenter").args(flags).args(command).output().unwrap();
    assert!(out.status.success(), "nsenter {flags:?} {command:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pinned path of one of the pod's namespaces.
pub fn ns_path(daemon: &Lockstepd, id: &str, kind: &str) -> PathBuf {
    daemon.runroot().join("sandboxes").join(id).join("ns").join(kind)
}

/// Runs `work` on a thread inside the network namespace at `netns`.
pub fn in_netns<T: Send + 'static>(netns: &Path, work: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(netns).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        work()
    })
    .join()
    .unwrap()
}

/// A wrapper around one real CNI plugin whose faults a test switches on and off with files:
/// `add-fails`, `del-fails`, `check-fails` (the plugin answers a CNI error), `add-slow`,
/// `del-slow` (it announces `<command>-started` and sleeps before the real plugin runs),
/// `add-hangs` (it never finishes).
/// It records the sandbox id of the last ADD.
pub struct FaultyPlugin {
    /// Put it first in the daemon's plugin directories.
    pub dir: PathBuf,
    scratch: PathBuf,
}

impl FaultyPlugin {
    pub fn new(scratch: &Path, plugin: &str) -> FaultyPlugin {
        let dir = scratch.join("faulty-plugins");
        std::fs::create_dir_all(&dir).unwrap();
        let s = scratch.display();
        let script = format!(
            r#"#!/bin/sh
fail() {{ echo "{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"$CNI_COMMAND refused for the test\"}}"; exit 1; }}
slow() {{ touch {s}/$1-started; sleep "$2"; }}
case "$CNI_COMMAND" in
ADD) echo "$CNI_CONTAINERID" >{s}/id.tmp && mv {s}/id.tmp {s}/id
     [ -e {s}/add-slow ] && slow add 3
     [ -e {s}/add-hangs ] && exec sleep 600
     [ -e {s}/add-fails ] && fail ;;
DEL) [ -e {s}/del-slow ] && slow del 2
     [ -e {s}/del-fails ] && fail ;;
CHECK) [ -e {s}/check-fails ] && fail ;;
esac
exec {CNI_BIN}/{plugin} "$@"
"#
        );
        let path = dir.join(plugin);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        FaultyPlugin { dir, scratch: scratch.to_path_buf() }
    }

    pub fn set(&self, fault: &str, on: bool) {
        let path = self.scratch.join(fault);
        if on {
            std::fs::write(path, "").unwrap();
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The sandbox id of the last ADD.
    pub fn last_id(&self) -> String {
        std::fs::read_to_string(self.scratch.join("id")).unwrap_or_default().trim().to_string()
    }

    /// Waits until a slow `command` ("add", "del") has started.
    pub async fn wait_started(&self, command: &str) {
        let marker = self.scratch.join(format!("{command}-started"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !marker.exists() {
            assert!(Instant::now() < deadline, "the slow {command} never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = std::fs::remove_file(marker);
    }
}

/// The iptables rules (all tables) whose comment names the pod.
pub fn iptables_rules_of(id: &str) -> Vec<String> {
    let rules = Command::new("iptables-save").output().unwrap();
    String::from_utf8_lossy(&rules.stdout).lines().filter(|l| l.contains(id)).map(str::to_string).collect()
}

/// The verbose PodSandboxStatus info of a sandbox, as JSON.
pub async fn verbose_info(kubelet: &mut CriClient, id: &str) -> serde_json::Value {
    let status = kubelet
        .pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true })
        .await
        .unwrap();
    serde_json::from_str(&status.info["info"]).unwrap()
}
