//! A lab for real containers: a busybox rootfs in a short temporary directory, a runtime
//! handler (runc, or crun in a pure cgroup v1 view), specs from container::spec::build with
//! namespaces of their own (no sandbox, no image store needed), lockstep-monitor as the
//! parent, and a cleanup that kills, deletes and removes every container, cgroup and file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use lockstep_cri::model;
use lockstep_runtime::config::CgroupDriver;
use lockstep_runtime::container::host::{self, HostFacts};
use lockstep_runtime::container::spec::{
    self, BuiltSpec, ImageView, NamespaceSource, RuntimeSettings, SandboxView, SpecInput,
};
use lockstep_runtime::monitor::{self, ContainerDir, ExitRecord, MonitorConfig, Spawned};
use lockstep_runtime::oci::{CommandRuntime, OciRuntime, RuntimeCommand};

pub const MONITOR: &str = env!("CARGO_BIN_EXE_lockstep-monitor");

pub struct Lab {
    pub tmp: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub runtime: CommandRuntime,
    pub settings: RuntimeSettings,
    /// The cgroupfs parent of every container of the lab.
    pub cgroup_parent: String,
    ids: Mutex<Vec<String>>,
}

impl Lab {
    /// A lab whose containers run with `handler` (a binary in PATH).
    pub fn new(handler: &str) -> Lab {
        Lab::hiding_cgroup2(handler, None)
    }

    /// A lab whose runtime runs with `cgroup2` hidden (a pure cgroup v1 view of a hybrid host).
    pub fn hiding_cgroup2(handler: &str, cgroup2: Option<PathBuf>) -> Lab {
        // Short, so that socket paths inside stay within 108 bytes.
        let tmp = tempfile::Builder::new().prefix("lsk").tempdir_in("/tmp").unwrap();
        let rootfs = tmp.path().join("rootfs");
        make_rootfs(&rootfs);
        let binary = lockstep_runtime::oci::resolve(Path::new(handler)).expect("the OCI runtime is installed");
        let command = RuntimeCommand::under(&tmp.path().join("oci"), handler, &binary, false);
        let runtime = CommandRuntime::new(command.hiding_cgroup2(cgroup2));
        let features = lockstep_runtime::oci::HandlerFeatures {
            recursive_read_only_mounts: handler == "runc",
            user_namespaces: false,
        };
        let settings = RuntimeSettings::new(CgroupDriver::Cgroupfs, features, HostFacts::read().unwrap());
        let suffix = tmp.path().file_name().unwrap().to_string_lossy().replace('.', "");
        Lab {
            tmp,
            rootfs,
            runtime,
            settings,
            cgroup_parent: format!("/lockstep-test-{suffix}"),
            ids: Mutex::new(Vec::new()),
        }
    }

    pub fn dir(&self, id: &str) -> ContainerDir {
        ContainerDir::new(self.tmp.path().join("c").join(id))
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.tmp.path().join("logs").join(id).join("0.log")
    }

    /// A container config running `args` in the busybox rootfs, leaving the security defaults
    /// to lockstepd.
    pub fn config(args: &[&str]) -> model::ContainerConfig {
        lockstep_testkit::requests::bare_container("test", "", args)
    }

    /// The spec of `config` in this lab: its own network, IPC, UTS and pid namespaces.
    pub fn spec(
        &self,
        id: &str,
        config: &model::ContainerConfig,
    ) -> Result<BuiltSpec, lockstep_runtime::container::SpecError> {
        let sandbox = SandboxView {
            id: "lab".into(),
            pod_name: "lab".into(),
            pod_namespace: "test".into(),
            pod_uid: "lab-uid".into(),
            hostname: "lab".into(),
            network: NamespaceSource::New,
            ipc: NamespaceSource::New,
            uts: NamespaceSource::New,
            pod_pid: None,
            user: None,
            resolv_conf: None,
            hosts: None,
            hostname_file: None,
            shm: None,
            cgroup_parent: self.cgroup_parent.clone(),
            privileged: true,
        };
        let image = ImageView { name: "lab/busybox".into(), rootfs: self.rootfs.clone(), ..Default::default() };
        let resolved = host::resolve(config, &self.rootfs, &image.user)?;
        spec::build(&SpecInput {
            id,
            config,
            sandbox: &sandbox,
            image: &image,
            runtime: &self.settings,
            resolved: &resolved,
        })
    }

    /// Writes the bundle and starts the monitor, which creates the container.
    pub fn create(&self, id: &str, config: &model::ContainerConfig) -> Result<Spawned, monitor::MonitorError> {
        let built = self.spec(id, config).expect("a valid spec");
        self.create_from(id, &built, config.tty, config.stdin)
    }

    pub fn create_from(
        &self,
        id: &str,
        built: &BuiltSpec,
        tty: bool,
        stdin: bool,
    ) -> Result<Spawned, monitor::MonitorError> {
        let dir = self.dir(id);
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&built.spec).unwrap()).unwrap();
        self.ids.lock().unwrap().push(id.to_string());
        let config = self.monitor_config(id, tty, stdin);
        monitor::spawn(Path::new(MONITOR), &dir, &config, Duration::from_secs(30))
    }

    /// Makes the lab clean `id` up, for containers created without `create`.
    pub fn register(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_string());
    }

    pub fn monitor_config(&self, id: &str, tty: bool, stdin: bool) -> MonitorConfig {
        MonitorConfig {
            container_id: id.to_string(),
            runtime: self.runtime.command().clone(),
            bundle: self.dir(id).path().join("bundle"),
            log_path: Some(self.log_path(id)),
            tty,
            stdin,
            stdin_once: false,
            max_log_line: monitor::log::DEFAULT_MAX_LINE,
            cgroups: Vec::new(),
            restore: None,
            cgroup_mounts: None,
        }
    }

    /// create + start.
    pub fn run(&self, id: &str, config: &model::ContainerConfig) -> Spawned {
        let spawned = self.create(id, config).unwrap();
        self.runtime.start(id).unwrap();
        spawned
    }

    pub fn wait_exit(&self, id: &str) -> ExitRecord {
        monitor::wait_exit(&self.dir(id), id, Duration::from_secs(30)).unwrap()
    }

    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// The contents of the log's entries, without timestamps: "stdout F text".
    pub fn log_entries(&self, id: &str) -> Vec<String> {
        self.log(id).lines().map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()).unwrap_or_default()).collect()
    }

    /// Kills, waits for and deletes every container of the lab.
    pub fn clean_up(&self) {
        let ids = std::mem::take(&mut *self.ids.lock().unwrap());
        for id in &ids {
            let _ = self.runtime.kill(id, 9, true);
        }
        for id in &ids {
            let _ = monitor::wait_exit(&self.dir(id), id, Duration::from_secs(10));
            let _ = self.runtime.delete(id);
        }
        remove_cgroups(&self.cgroup_parent);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// Removes a cgroupfs parent (and children left in it) from every hierarchy.
pub fn remove_cgroups(parent: &str) {
    let relative = parent.trim_start_matches('/');
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return };
    for h in hierarchies.flatten() {
        let dir = h.path().join(relative);
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten() {
                if child.path().is_dir() {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// busybox-static with its applets, and a passwd/group with a user and some groups.
fn make_rootfs(rootfs: &Path) {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    if std::fs::hard_link("/bin/busybox", bin.join("busybox")).is_err() {
        std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    }
    let list = std::process::Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nalice:x:1000:\nwheel:x:10:alice\n").unwrap();
}
