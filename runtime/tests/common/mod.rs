//! What the pod tests share: the testkit's lockstepd harness on this crate's binary (its own
//! root, runroot, socket and the test CNI network on the real bridge, host-local and portmap
//! plugins), kubelet-shaped pods in one namespace, and the leak checker.
#![allow(dead_code, unused_imports)]

use std::path::PathBuf;

use lockstep_cri::{model, Minor};
pub use lockstep_testkit::cni::{FaultyPlugin, CNI_BIN};
pub use lockstep_testkit::host::{in_netns, iptables_rules_of, nsenter};
pub use lockstep_testkit::leaks::{assert_no_pod_leaks as assert_no_leaks, traces, verbose_info, PodTraces};
pub use lockstep_testkit::requests::{namespace_options, run_pod as run_request, unique};
pub use lockstep_testkit::Lockstepd;
use lockstep_testkit::{cni, requests, Launch, Program};

pub const LOCKSTEPD: &str = env!("CARGO_BIN_EXE_lockstepd");
/// The namespace of every pod of these tests.
pub const NAMESPACE: &str = "lockstep-test";

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

pub async fn start() -> Lockstepd {
    start_with(Options::default()).await
}

pub async fn start_with_plugins(plugin_dirs: Vec<PathBuf>) -> Lockstepd {
    start_with(Options { plugin_dirs, ..Default::default() }).await
}

/// lockstepd (this crate's, 1.36) on the test network, logging at debug.
pub async fn start_with(options: Options) -> Lockstepd {
    let launch = Launch {
        short_dir_prefix: None,
        runroot_via_symlink: options.runroot_via_symlink,
        nofile: None,
        log_level: Some("debug"),
        env: Vec::new(),
    };
    let mut daemon = Lockstepd::prepare(Program::lockstepd(LOCKSTEPD, Minor::V1_36), launch).unwrap();
    let network = cni::network_table(daemon.dir(), &options.plugin_dirs).unwrap();
    let config = format!("{}\n{network}{}\n", options.top_toml, options.network_toml);
    std::fs::write(daemon.config_path(), config).unwrap();
    daemon.spawn().await.unwrap();
    daemon
}

/// A pod of these tests as the kubelet sends it.
pub fn pod(name: &str) -> model::PodSandboxConfig {
    requests::pod(NAMESPACE, name)
}

/// PodSandboxStatus of a pod that exists (not verbose), as the kubelet reads it.
pub async fn pod_status(kubelet: &mut lockstep_cri::CriClient, id: &str) -> model::PodSandboxStatus {
    kubelet
        .pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false })
        .await
        .expect("PodSandboxStatus of an existing pod")
        .status
        .expect("a status")
}

/// The pinned path of one of the pod's namespaces.
pub fn ns_path(daemon: &Lockstepd, id: &str, kind: &str) -> PathBuf {
    daemon.runroot().join("sandboxes").join(id).join("ns").join(kind)
}
