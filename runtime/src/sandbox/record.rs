//! The sandbox record: everything lockstepd knows about one pod sandbox, persisted crash-safely
//! as `<root>/sandboxes/<id>.json`. Containers (CreateContainer) read it to build their specs:
//! which namespaces to join (by path), the files to bind-mount, the cgroup parent, the log
//! directory. Pure data and conversions to CRI messages; touches nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lockstep_cri::model;
use serde::{Deserialize, Serialize};

use crate::host::idmap::IdMappings;

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// RunPodSandbox is (or was, before a crash) making it; recovery rolls it back.
    Creating,
    /// Made completely: reported SANDBOX_READY while its namespaces (and pause) live.
    Ready,
    /// Stopped (StopPodSandbox) or found broken at recovery: SANDBOX_NOTREADY.
    NotReady,
}

/// The pod behind the sandbox, as the kubelet names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
}

/// Whether the pod has its own namespace of a kind or shares the node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostOrPod {
    Host,
    Pod,
}

/// The PID namespace the pod's containers get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PidMode {
    /// One PID namespace for the whole pod, held by the pause process (its PID 1).
    Pod,
    /// Each container has its own (the default).
    Container,
    /// The node's.
    Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: u16,
    /// 0: the port is only declared, not published on the host.
    pub host_port: u16,
    pub host_ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsSettings {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// The pod's namespaces: a path per kind that containers join (`setns`), or None for the
/// node's own namespace of that kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// `<runroot>/sandboxes/<id>/ns/net` when the pod has its own network.
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid_mode: PidMode,
    /// The pause process (PID 1 of the pod's PID namespace) when `pid_mode` is Pod. Its PID
    /// namespace is `/proc/<pid>/ns/pid`.
    pub pause: Option<PauseProcess>,
    /// The pod's own user namespace (`hostUsers: false`), which owns the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<PodUserNamespace>,
}

/// A pod's user namespace: where it is pinned and how it maps IDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodUserNamespace {
    /// `<runroot>/sandboxes/<id>/ns/user`.
    pub path: PathBuf,
    pub mappings: IdMappings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseProcess {
    pub pid: i32,
    /// Its start time (clock ticks since boot, /proc/<pid>/stat field 22): a pid reused by
    /// another process has another start time.
    pub start_time: u64,
    /// The boot it ran in (/proc/sys/kernel/random/boot_id): after a reboot the same pid and
    /// start time may name another process. Empty in records older than this field.
    #[serde(default)]
    pub boot_id: String,
}

impl Namespaces {
    /// The PID namespace containers join, when the pod shares one.
    pub fn pid_path(&self) -> Option<PathBuf> {
        self.pause.as_ref().map(|p| PathBuf::from(format!("/proc/{}/ns/pid", p.pid)))
    }
}

/// Files prepared for the pod's containers to bind-mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxFiles {
    /// `<runroot>/sandboxes/<id>`: everything of the pod that ends at reboot.
    pub dir: PathBuf,
    /// /etc/hostname for the containers.
    pub hostname: PathBuf,
    /// /etc/resolv.conf, from DNSConfig or else the node's.
    pub resolv_conf: PathBuf,
    /// /etc/hosts: localhost, and the pod's IP under its hostname.
    pub hosts: PathBuf,
    /// /dev/shm: a tmpfs of the pod's own, or the node's /dev/shm with host IPC.
    pub shm: PathBuf,
}

/// The security context the kubelet gave the sandbox, kept for the containers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySettings {
    pub privileged: bool,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    pub readonly_rootfs: bool,
    /// SecurityProfile as "runtime/default", "unconfined" or "localhost/<ref>".
    pub seccomp: String,
    pub apparmor: String,
    pub selinux: Option<[String; 4]>,
}

/// The pod's network attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkState {
    /// The CNI network's name; empty with host networking.
    pub cni_network: String,
    /// CNI ADD succeeded and no DEL has succeeded since: the cached result
    /// (`<root>/cni/<id>.json`) must be DELeted.
    pub attached: bool,
    /// The pod's IPs, the primary first (IPv4 before IPv6).
    pub ips: Vec<String>,
}

/// One pod sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub state: SandboxState,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub metadata: Metadata,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// As the request named it ("" for the default).
    pub runtime_handler: String,
    /// The OCI runtime handler it resolved to.
    pub oci_handler: String,
    pub hostname: String,
    pub log_directory: String,
    pub cgroup_parent: String,
    pub dns: Option<DnsSettings>,
    pub port_mappings: Vec<PortMapping>,
    pub sysctls: BTreeMap<String, String>,
    pub security: SecuritySettings,
    /// The namespace options as requested, for PodSandboxStatus.
    pub namespace_modes: NamespaceModes,
    pub namespaces: Namespaces,
    pub files: SandboxFiles,
    /// The cgroup directories lockstepd made for the pause process (its own cgroup in each
    /// hierarchy, and any parent that was missing); removed when the pause is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pause_cgroups: Vec<PathBuf>,
    pub network: NetworkState,
    /// Why a sandbox is NotReady when lockstepd found it so (recovery), for verbose status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The pod-level resources of the last UpdatePodSandboxResources (in-place resize, 1.33+),
    /// as the kubelet set them on the pod's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<PodResources>,
}

/// A pod's resources after a resize: its overhead and its containers' total, in OCI terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<oci_spec::runtime::LinuxResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<oci_spec::runtime::LinuxResources>,
    /// When the kubelet sent them, Unix nanoseconds.
    pub updated_at: i64,
}

/// NamespaceOption as requested (enum numbers of the CRI).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceModes {
    pub network: i32,
    pub pid: i32,
    pub ipc: i32,
    pub target_id: String,
}

impl SandboxRecord {
    fn cri_state(&self) -> model::PodSandboxState {
        match self.state {
            SandboxState::Ready => model::PodSandboxState::SandboxReady,
            SandboxState::Creating | SandboxState::NotReady => model::PodSandboxState::SandboxNotready,
        }
    }

    fn cri_metadata(&self) -> model::PodSandboxMetadata {
        model::PodSandboxMetadata {
            name: self.metadata.name.clone(),
            uid: self.metadata.uid.clone(),
            namespace: self.metadata.namespace.clone(),
            attempt: self.metadata.attempt,
        }
    }

    /// The ListPodSandbox entry.
    pub fn to_pod_sandbox(&self) -> model::PodSandbox {
        model::PodSandbox {
            id: self.id.clone(),
            metadata: Some(self.cri_metadata()),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            labels: self.labels.clone().into_iter().collect(),
            annotations: self.annotations.clone().into_iter().collect(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }

    /// The PodSandboxStatus.
    pub fn to_status(&self) -> model::PodSandboxStatus {
        let mut ips = self.network.ips.iter();
        let network = model::PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| model::PodIp { ip: ip.clone() }).collect(),
        };
        let modes = &self.namespace_modes;
        model::PodSandboxStatus {
            id: self.id.clone(),
            metadata: Some(self.cri_metadata()),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            network: Some(network),
            linux: Some(model::LinuxPodSandboxStatus {
                namespaces: Some(model::Namespace {
                    options: Some(model::NamespaceOption {
                        network: modes.network,
                        pid: modes.pid,
                        ipc: modes.ipc,
                        target_id: modes.target_id.clone(),
                        userns_options: self.namespaces.user.as_ref().map(|u| {
                            let cri = |m: &crate::host::idmap::IdMapping| model::IdMapping {
                                host_id: m.host_id,
                                container_id: m.container_id,
                                length: m.length,
                            };
                            model::UserNamespace {
                                mode: model::NamespaceMode::Pod as i32,
                                uids: vec![cri(&u.mappings.uids)],
                                gids: vec![cri(&u.mappings.gids)],
                            }
                        }),
                    }),
                }),
            }),
            labels: self.labels.clone().into_iter().collect(),
            annotations: self.annotations.clone().into_iter().collect(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }
}

/// A SecurityProfile as one string (see SecuritySettings::seccomp).
pub fn profile_string(profile: Option<&model::SecurityProfile>) -> String {
    use model::security_profile::ProfileType;
    match profile {
        None => String::new(),
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => "runtime/default".into(),
            Ok(ProfileType::Unconfined) => "unconfined".into(),
            Ok(ProfileType::Localhost) => format!("localhost/{}", p.localhost_ref),
            Err(_) => String::new(),
        },
    }
}
