//! Checks a RunPodSandbox request before anything is created and turns it into a `PodPlan`:
//! metadata, hostname, DNS, port mappings, namespace modes, sysctls (each must belong to a
//! namespace the pod owns), cgroup parent per driver, bandwidth annotations, the security
//! context kept for the containers. Pure: touches nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;

use lockstep_cri::model;

use crate::cni::network::Bandwidth;

use super::record::{
    profile_string, DnsSettings, HostOrPod, Metadata, PidMode, PortMapping, Protocol, SecuritySettings,
};
use crate::config::CgroupDriver;
use crate::host::idmap::{IdMapping, IdMappings};

/// A request field that is wrong, and why. Becomes InvalidArgument naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct BadField {
    pub field: String,
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> BadField {
    BadField { field: field.into(), problem: problem.into() }
}

/// What a valid request asks for.
#[derive(Debug, Clone)]
pub struct PodPlan {
    pub metadata: Metadata,
    pub hostname: String,
    pub log_directory: String,
    pub dns: Option<DnsSettings>,
    pub port_mappings: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub cgroup_parent: String,
    pub network: HostOrPod,
    pub ipc: HostOrPod,
    /// UTS follows the network: a host-network pod has the node's hostname.
    pub uts: HostOrPod,
    pub pid: PidMode,
    pub sysctls: BTreeMap<String, String>,
    pub namespace_options: model::NamespaceOption,
    /// The pod's own user namespace (`hostUsers: false`), by its mappings; None: the node's.
    pub userns: Option<IdMappings>,
    /// The kubelet's bandwidth annotations, for the CNI bandwidth capability.
    pub bandwidth: Option<Bandwidth>,
    pub security: SecuritySettings,
}

/// Which namespace a sysctl lives in, by the kernel's (and the kubelet's) rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNamespace {
    Net,
    Ipc,
    Uts,
}

pub fn sysctl_namespace(name: &str) -> Option<SysctlNamespace> {
    let dotted = name.replace('/', ".");
    if dotted.starts_with("net.") {
        Some(SysctlNamespace::Net)
    } else if dotted == "kernel.sem"
        || dotted.starts_with("kernel.shm")
        || dotted.starts_with("kernel.msg")
        || dotted.starts_with("fs.mqueue.")
    {
        Some(SysctlNamespace::Ipc)
    } else if dotted == "kernel.hostname" || dotted == "kernel.domainname" {
        Some(SysctlNamespace::Uts)
    } else {
        None
    }
}

/// Characters that would break CNI_ARGS (`K=V;K=V`) or a file name, or are invisible.
fn plain_text(s: &str) -> bool {
    !s.chars().any(|c| c == ';' || c == '=' || c.is_whitespace() || c.is_control())
}

pub fn plan(request: &model::RunPodSandboxRequest, driver: CgroupDriver) -> Result<PodPlan, BadField> {
    let config = request.config.as_ref().ok_or_else(|| bad("config", "is missing"))?;
    let meta = config.metadata.as_ref().ok_or_else(|| bad("config.metadata", "is missing"))?;
    for (field, value) in [("name", &meta.name), ("uid", &meta.uid), ("namespace", &meta.namespace)] {
        if value.is_empty() {
            return Err(bad(format!("config.metadata.{field}"), "is empty"));
        }
        if !plain_text(value) || value.len() > 253 {
            return Err(bad(
                format!("config.metadata.{field}"),
                format!("{value:?} has whitespace, control characters, ';' or '=', or is longer than 253 bytes"),
            ));
        }
    }
    let metadata = Metadata {
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        namespace: meta.namespace.clone(),
        attempt: meta.attempt,
    };

    let linux = config.linux.clone().unwrap_or_default();
    let security = linux.security_context.clone().unwrap_or_default();
    let options = security.namespace_options.clone().unwrap_or_default();
    let network = host_or_pod(options.network, "network")?;
    let ipc = host_or_pod(options.ipc, "ipc")?;
    let pid = match model::NamespaceMode::try_from(options.pid) {
        Ok(model::NamespaceMode::Pod) => PidMode::Pod,
        Ok(model::NamespaceMode::Container) => PidMode::Container,
        Ok(model::NamespaceMode::Node) => PidMode::Node,
        Ok(model::NamespaceMode::Target) => {
            return Err(bad(
                "config.linux.security_context.namespace_options.pid",
                "TARGET applies to containers, not to a pod sandbox",
            ))
        }
        Err(_) => {
            return Err(bad(
                "config.linux.security_context.namespace_options.pid",
                format!("{} is not a NamespaceMode", options.pid),
            ))
        }
    };
    let uts = network;
    let userns = user_namespace(options.userns_options.as_ref(), network, ipc, pid)?;

    if !config.hostname.is_empty() {
        let h = &config.hostname;
        if h.len() > 64 || !plain_text(h) || h.contains('/') {
            return Err(bad("config.hostname", format!("{h:?} is not a valid hostname (at most 64 bytes, no '/')")));
        }
    }
    if !config.log_directory.is_empty() && !config.log_directory.starts_with('/') {
        return Err(bad("config.log_directory", format!("{:?} is not an absolute path", config.log_directory)));
    }

    let dns = config.dns_config.as_ref().map(dns_settings).transpose()?;
    let port_mappings =
        config.port_mappings.iter().enumerate().map(|(i, p)| port_mapping(i, p)).collect::<Result<Vec<_>, _>>()?;
    if network == HostOrPod::Host && !port_mappings.is_empty() {
        // The kubelet drops them for host-network pods; a port of the host is the pod's port.
        tracing::debug!("port mappings of a host-network pod are ignored");
    }

    let cgroup_parent = cgroup_parent(&linux.cgroup_parent, driver)?;

    let mut sysctls = BTreeMap::new();
    for (name, value) in &linux.sysctls {
        let field = format!("config.linux.sysctls[{name:?}]");
        if name.is_empty() || name.contains("..") || name.starts_with(['.', '/']) || !plain_text(name) {
            return Err(bad(field, "is not a sysctl name"));
        }
        if value.contains('\n') || value.contains('\0') {
            return Err(bad(field, "the value has a newline or NUL"));
        }
        let owned = match sysctl_namespace(name) {
            None => return Err(bad(field, "is not a namespaced sysctl: setting it would change the whole node")),
            Some(SysctlNamespace::Net) => network == HostOrPod::Pod,
            Some(SysctlNamespace::Ipc) => ipc == HostOrPod::Pod,
            Some(SysctlNamespace::Uts) => uts == HostOrPod::Pod,
        };
        if !owned {
            return Err(bad(field, "belongs to a namespace the pod shares with the node (host network or host IPC)"));
        }
        sysctls.insert(name.clone(), value.clone());
    }

    let bandwidth = bandwidth(&config.annotations)?;
    let security = security_settings(&security);

    Ok(PodPlan {
        metadata,
        hostname: config.hostname.clone(),
        log_directory: config.log_directory.clone(),
        dns,
        port_mappings,
        labels: config.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        annotations: config.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        cgroup_parent,
        network,
        ipc,
        uts,
        pid,
        sysctls,
        namespace_options: options,
        userns,
        bandwidth,
        security,
    })
}

const USERNS: &str = "config.linux.security_context.namespace_options.userns_options";

/// The pod's user namespace: NODE (or nothing) is the node's; POD is one of its own with
/// exactly one range of uids and one of gids, each mapping container ID 0, as the kubelet
/// sends for `hostUsers: false`. CONTAINER and TARGET have no meaning for a pod's user
/// namespace. A pod with a user namespace owns its network, IPC and PID namespaces
/// (Status reports user_namespaces_host_network=false).
fn user_namespace(
    options: Option<&model::UserNamespace>,
    network: HostOrPod,
    ipc: HostOrPod,
    pid: PidMode,
) -> Result<Option<IdMappings>, BadField> {
    let Some(options) = options else { return Ok(None) };
    let mode = model::NamespaceMode::try_from(options.mode)
        .map_err(|_| bad(format!("{USERNS}.mode"), format!("{} is not a NamespaceMode", options.mode)))?;
    match mode {
        model::NamespaceMode::Node => {
            if !options.uids.is_empty() || !options.gids.is_empty() {
                return Err(bad(
                    format!("{USERNS}.uids"),
                    "mappings are only for mode POD: with NODE the pod uses the node's user namespace",
                ));
            }
            return Ok(None);
        }
        model::NamespaceMode::Container | model::NamespaceMode::Target => {
            return Err(bad(
                format!("{USERNS}.mode"),
                format!("{} is not supported for a pod's user namespace (POD or NODE)", mode.as_str_name()),
            ));
        }
        model::NamespaceMode::Pod => {}
    }
    let uids = one_mapping(&options.uids, "uids")?;
    let gids = one_mapping(&options.gids, "gids")?;
    for (kind, shared) in
        [("network", network == HostOrPod::Host), ("ipc", ipc == HostOrPod::Host), ("pid", pid == PidMode::Node)]
    {
        if shared {
            return Err(bad(
                format!("config.linux.security_context.namespace_options.{kind}"),
                "NODE cannot be combined with a user namespace of the pod's own (userns_options.mode POD)",
            ));
        }
    }
    Ok(Some(IdMappings { uids, gids }))
}

fn one_mapping(given: &[model::IdMapping], kind: &str) -> Result<IdMapping, BadField> {
    let field = format!("{USERNS}.{kind}");
    let [only] = given else {
        return Err(bad(field, format!("mode POD takes exactly one mapping, got {}", given.len())));
    };
    if only.container_id != 0 {
        return Err(bad(
            format!("{field}[0].container_id"),
            format!("is {}: the mapping must map container ID 0 (the container's root)", only.container_id),
        ));
    }
    if only.length == 0 {
        return Err(bad(format!("{field}[0].length"), "is 0: the mapping maps nothing"));
    }
    if u64::from(only.host_id) + u64::from(only.length) > u64::from(u32::MAX) {
        return Err(bad(
            format!("{field}[0]"),
            format!(
                "host IDs {}..{} go past the last ID",
                only.host_id,
                u64::from(only.host_id) + u64::from(only.length)
            ),
        ));
    }
    Ok(IdMapping { container_id: only.container_id, host_id: only.host_id, length: only.length })
}

fn security_settings(sc: &model::LinuxSandboxSecurityContext) -> SecuritySettings {
    SecuritySettings {
        privileged: sc.privileged,
        run_as_user: sc.run_as_user.map(|v| v.value),
        run_as_group: sc.run_as_group.map(|v| v.value),
        supplemental_groups: sc.supplemental_groups.clone(),
        readonly_rootfs: sc.readonly_rootfs,
        seccomp: profile_string(sc.seccomp.as_ref()),
        apparmor: profile_string(sc.apparmor.as_ref()),
        selinux: sc.selinux_options.clone().map(|s| [s.user, s.role, s.r#type, s.level]),
    }
}

/// The bandwidth annotations the kubelet passes through, as limits in bits per second.
fn bandwidth<'a>(
    annotations: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<Option<Bandwidth>, BadField> {
    let mut limits = Bandwidth { ingress: None, egress: None };
    for (key, value) in annotations {
        let slot = match key.as_str() {
            "kubernetes.io/ingress-bandwidth" => &mut limits.ingress,
            "kubernetes.io/egress-bandwidth" => &mut limits.egress,
            _ => continue,
        };
        *slot = Some(parse_quantity(value).ok_or_else(|| {
            bad(
                format!("config.annotations[{key:?}]"),
                format!("{value:?} is not a positive quantity in bits per second (such as 10M, 1.5Gi or 1e6)"),
            )
        })?);
    }
    Ok((limits.ingress.is_some() || limits.egress.is_some()).then_some(limits))
}

/// A Kubernetes resource quantity (`1.5M`, `10Mi`, `1e6`, `500m`), rounded up to a whole
/// number as Kubernetes' Quantity.Value() does; None unless it is positive and fits in u64.
pub fn parse_quantity(text: &str) -> Option<u64> {
    let text = text.strip_prefix('+').unwrap_or(text);
    let number_len = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || number.len() > 30 {
        return None;
    }
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let (mut exp10, binary): (i64, u32) = match suffix {
        "" => (0, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exponent => {
            let power = exponent.strip_prefix(['e', 'E'])?;
            let unsigned = power.strip_prefix(['+', '-']).unwrap_or(power);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) || unsigned.len() > 3 {
                return None;
            }
            (power.parse().ok()?, 0)
        }
    };
    exp10 -= fraction.len() as i64;
    let scaled = digits.checked_mul(1u128.checked_shl(binary)?)?;
    let value = if exp10 >= 0 {
        scaled.checked_mul(10u128.checked_pow(u32::try_from(exp10).ok()?)?)?
    } else {
        let divisor = 10u128.checked_pow(u32::try_from(-exp10).ok()?)?;
        scaled.div_ceil(divisor)
    };
    u64::try_from(value).ok().filter(|v| *v > 0)
}

fn host_or_pod(mode: i32, kind: &str) -> Result<HostOrPod, BadField> {
    let field = format!("config.linux.security_context.namespace_options.{kind}");
    match model::NamespaceMode::try_from(mode) {
        // A sandbox is the pod: CONTAINER means the same as POD here, as in containerd and CRI-O.
        Ok(model::NamespaceMode::Pod | model::NamespaceMode::Container) => Ok(HostOrPod::Pod),
        Ok(model::NamespaceMode::Node) => Ok(HostOrPod::Host),
        Ok(model::NamespaceMode::Target) => Err(bad(field, "TARGET applies to a container's PID namespace only")),
        Err(_) => Err(bad(field, format!("{mode} is not a NamespaceMode"))),
    }
}

fn dns_settings(dns: &model::DnsConfig) -> Result<DnsSettings, BadField> {
    for (i, server) in dns.servers.iter().enumerate() {
        if server.parse::<IpAddr>().is_err() {
            return Err(bad(format!("config.dns_config.servers[{i}]"), format!("{server:?} is not an IP address")));
        }
    }
    for (list, values) in [("searches", &dns.searches), ("options", &dns.options)] {
        for (i, value) in values.iter().enumerate() {
            if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) || value.len() > 253 {
                return Err(bad(
                    format!("config.dns_config.{list}[{i}]"),
                    format!("{value:?} must be one non-empty word without whitespace"),
                ));
            }
        }
    }
    Ok(DnsSettings { servers: dns.servers.clone(), searches: dns.searches.clone(), options: dns.options.clone() })
}

fn port_mapping(i: usize, p: &model::PortMapping) -> Result<PortMapping, BadField> {
    let field = |f: &str| format!("config.port_mappings[{i}].{f}");
    let protocol = match model::Protocol::try_from(p.protocol) {
        Ok(model::Protocol::Tcp) => Protocol::Tcp,
        Ok(model::Protocol::Udp) => Protocol::Udp,
        Ok(model::Protocol::Sctp) => Protocol::Sctp,
        Err(_) => return Err(bad(field("protocol"), format!("{} is not TCP (0), UDP (1) or SCTP (2)", p.protocol))),
    };
    if !(1..=65535).contains(&p.container_port) {
        return Err(bad(field("container_port"), format!("{} is not a port between 1 and 65535", p.container_port)));
    }
    if !(0..=65535).contains(&p.host_port) {
        return Err(bad(field("host_port"), format!("{} is not a port between 1 and 65535 (or 0: none)", p.host_port)));
    }
    if !p.host_ip.is_empty() && p.host_ip.parse::<IpAddr>().is_err() {
        return Err(bad(field("host_ip"), format!("{:?} is not an IP address", p.host_ip)));
    }
    Ok(PortMapping {
        protocol,
        container_port: p.container_port as u16,
        host_port: p.host_port as u16,
        host_ip: p.host_ip.clone(),
    })
}

/// cgroupfs: an absolute path (`/kubepods/burstable/pod<uid>`); systemd: a slice name
/// (`kubepods-burstable-pod<uid>.slice`), or a path whose last component is one. Empty: none.
fn cgroup_parent(parent: &str, driver: CgroupDriver) -> Result<String, BadField> {
    const FIELD: &str = "config.linux.cgroup_parent";
    if parent.is_empty() {
        return Ok(String::new());
    }
    if !plain_text(parent) || parent.split('/').any(|part| part == "..") {
        return Err(bad(FIELD, format!("{parent:?} is not a cgroup name")));
    }
    match driver {
        CgroupDriver::Cgroupfs if !parent.starts_with('/') => Err(bad(
            FIELD,
            format!(
                "{parent:?} is not a cgroupfs path (the cgroup driver is cgroupfs; a systemd slice name was sent?)"
            ),
        )),
        // The kubelet sends a slice name; critest a path ("/test.slice"). As CRI-O, the last
        // component must be a slice.
        CgroupDriver::Systemd
            if !parent.rsplit('/').next().is_some_and(|slice| slice.len() > ".slice".len() && slice.ends_with(".slice")) =>
        {
            Err(bad(
                FIELD,
                format!(
                    "{parent:?} is not a systemd slice like kubepods-pod1.slice or /test.slice (the cgroup driver is systemd)"
                ),
            ))
        }
        _ => Ok(parent.to_string()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A minimal RunPodSandbox request as the kubelet sends it (pod "web" of "default").
    pub(in crate::sandbox) fn request() -> model::RunPodSandboxRequest {
        model::RunPodSandboxRequest {
            config: Some(model::PodSandboxConfig {
                metadata: Some(model::PodSandboxMetadata {
                    name: "web".into(),
                    uid: "u1".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                hostname: "web".into(),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        }
    }

    fn field_of(r: model::RunPodSandboxRequest) -> String {
        plan(&r, CgroupDriver::Cgroupfs).unwrap_err().field
    }

    #[test]
    fn a_minimal_request_is_a_pod_with_its_own_namespaces() {
        let p = plan(&request(), CgroupDriver::Cgroupfs).unwrap();
        assert_eq!((p.network, p.ipc, p.uts, p.pid), (HostOrPod::Pod, HostOrPod::Pod, HostOrPod::Pod, PidMode::Pod));
    }

    #[test]
    fn bad_fields_are_named() {
        let mut r = request();
        r.config = None;
        assert_eq!(field_of(r), "config");
        let mut r = request();
        r.config.as_mut().unwrap().metadata = None;
        assert_eq!(field_of(r), "config.metadata");
        let mut r = request();
        r.config.as_mut().unwrap().metadata.as_mut().unwrap().uid.clear();
        assert_eq!(field_of(r), "config.metadata.uid");
        let mut r = request();
        r.config.as_mut().unwrap().metadata.as_mut().unwrap().name = "a;b".into();
        assert_eq!(field_of(r), "config.metadata.name");
        for (port, field) in [(0, "container_port"), (65536, "container_port")] {
            let mut r = request();
            r.config.as_mut().unwrap().port_mappings =
                vec![model::PortMapping { container_port: port, ..Default::default() }];
            assert_eq!(field_of(r), format!("config.port_mappings[0].{field}"));
        }
        let mut r = request();
        r.config.as_mut().unwrap().port_mappings =
            vec![model::PortMapping { container_port: 80, host_port: 70000, ..Default::default() }];
        assert_eq!(field_of(r), "config.port_mappings[0].host_port");
        let mut r = request();
        r.config.as_mut().unwrap().port_mappings =
            vec![model::PortMapping { protocol: 7, container_port: 80, ..Default::default() }];
        assert_eq!(field_of(r), "config.port_mappings[0].protocol");
        let mut r = request();
        r.config.as_mut().unwrap().dns_config =
            Some(model::DnsConfig { options: vec!["ndots:5".into(), "a\nb".into()], ..Default::default() });
        assert_eq!(field_of(r), "config.dns_config.options[1]");
        let mut r = request();
        r.config.as_mut().unwrap().dns_config =
            Some(model::DnsConfig { servers: vec!["dns.example".into()], ..Default::default() });
        assert_eq!(field_of(r), "config.dns_config.servers[0]");
    }

    fn with_userns(
        mode: model::NamespaceMode,
        uids: &[(u32, u32, u32)],
        gids: &[(u32, u32, u32)],
    ) -> model::RunPodSandboxRequest {
        let ids = |list: &[(u32, u32, u32)]| {
            list.iter()
                .map(|&(container_id, host_id, length)| model::IdMapping { container_id, host_id, length })
                .collect()
        };
        let mut r = request();
        let linux = r.config.as_mut().unwrap().linux.get_or_insert_with(Default::default);
        linux.security_context = Some(model::LinuxSandboxSecurityContext {
            namespace_options: Some(model::NamespaceOption {
                userns_options: Some(model::UserNamespace { mode: mode as i32, uids: ids(uids), gids: ids(gids) }),
                ..Default::default()
            }),
            ..Default::default()
        });
        r
    }

    #[test]
    fn a_pod_user_namespace_takes_one_range_mapping_container_root() {
        use model::NamespaceMode::{Container, Node, Pod, Target};
        let kubelet = [(0, 65536, 65536)];
        let p = plan(&with_userns(Pod, &kubelet, &kubelet), CgroupDriver::Cgroupfs).unwrap();
        let range = IdMapping { container_id: 0, host_id: 65536, length: 65536 };
        assert_eq!(p.userns, Some(IdMappings { uids: range, gids: range }));
        assert_eq!(plan(&with_userns(Node, &[], &[]), CgroupDriver::Cgroupfs).unwrap().userns, None);
        assert_eq!(plan(&request(), CgroupDriver::Cgroupfs).unwrap().userns, None);

        // critest's refusals, and the rest of what cannot be a pod's user namespace.
        let field = |r| field_of(r);
        let two = [(0, 1000, 100000), (0, 2000, 100000)];
        assert_eq!(field(with_userns(Pod, &two, &two)), format!("{USERNS}.uids"));
        assert_eq!(field(with_userns(Pod, &kubelet, &[])), format!("{USERNS}.gids"));
        let no_root = [(1, 1000, 100000)];
        assert_eq!(field(with_userns(Pod, &no_root, &no_root)), format!("{USERNS}.uids[0].container_id"));
        assert_eq!(field(with_userns(Pod, &[(0, 1000, 0)], &kubelet)), format!("{USERNS}.uids[0].length"));
        assert_eq!(field(with_userns(Pod, &kubelet, &[(0, u32::MAX - 5, 10)])), format!("{USERNS}.gids[0]"));
        assert_eq!(field(with_userns(Container, &[], &[])), format!("{USERNS}.mode"));
        assert_eq!(field(with_userns(Target, &[], &[])), format!("{USERNS}.mode"));
        assert_eq!(field(with_userns(Node, &kubelet, &kubelet)), format!("{USERNS}.uids"));
        let mut host_network = with_userns(Pod, &kubelet, &kubelet);
        let sc = host_network.config.as_mut().unwrap().linux.as_mut().unwrap().security_context.as_mut().unwrap();
        sc.namespace_options.as_mut().unwrap().network = Node as i32;
        assert_eq!(field(host_network), "config.linux.security_context.namespace_options.network");
    }

    #[test]
    fn sysctls_must_belong_to_a_namespace_the_pod_owns() {
        let with = |name: &str, network: model::NamespaceMode| {
            let mut r = request();
            let linux = r.config.as_mut().unwrap().linux.get_or_insert_with(Default::default);
            linux.sysctls.insert(name.into(), "1".into());
            linux.security_context = Some(model::LinuxSandboxSecurityContext {
                namespace_options: Some(model::NamespaceOption { network: network as i32, ..Default::default() }),
                ..Default::default()
            });
            plan(&r, CgroupDriver::Cgroupfs)
        };
        assert!(with("net.ipv4.ip_unprivileged_port_start", model::NamespaceMode::Pod).is_ok());
        assert!(with("kernel.shm_rmid_forced", model::NamespaceMode::Pod).is_ok());
        let err = with("kernel.panic", model::NamespaceMode::Pod).unwrap_err();
        assert!(err.field.contains("kernel.panic") && err.problem.contains("not a namespaced"), "{err}");
        assert!(with("net.ipv4.ip_forward", model::NamespaceMode::Node).is_err(), "host network: net.* is the node's");
    }

    #[test]
    fn bandwidth_quantities_are_kubernetes_quantities() {
        for (q, bits) in [
            ("10M", 10_000_000),
            ("1.5M", 1_500_000),
            ("1e6", 1_000_000),
            ("1E3", 1_000),
            (".5k", 500),
            ("1Ki", 1024),
            ("2Pi", 2 << 50),
            ("1E", 1_000_000_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("+3G", 3_000_000_000),
            ("1500m", 2),
            ("25e-1", 3),
        ] {
            assert_eq!(parse_quantity(q), Some(bits), "{q}");
        }
        for q in ["", ".", "lots", "-1M", "0", "0.0", "1e", "1.2.3", "1 M", "1Mi5", "99999999999999999999E", "1e99999"]
        {
            assert_eq!(parse_quantity(q), None, "{q:?} is refused");
        }
    }

    #[test]
    fn bandwidth_annotations_are_limits_named_by_their_annotation() {
        let mut r = request();
        let annotations = &mut r.config.as_mut().unwrap().annotations;
        annotations.insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
        let p = plan(&r, CgroupDriver::Cgroupfs).unwrap();
        assert_eq!(p.bandwidth, Some(Bandwidth { ingress: Some(10_000_000), egress: None }));
        assert_eq!(plan(&request(), CgroupDriver::Cgroupfs).unwrap().bandwidth, None);
        r.config.as_mut().unwrap().annotations.insert("kubernetes.io/egress-bandwidth".into(), "lots".into());
        assert_eq!(field_of(r), "config.annotations[\"kubernetes.io/egress-bandwidth\"]");
    }

    #[test]
    fn cgroup_parents_follow_the_driver() {
        assert!(cgroup_parent("/kubepods/pod1", CgroupDriver::Cgroupfs).is_ok());
        assert!(cgroup_parent("kubepods-pod1.slice", CgroupDriver::Cgroupfs).is_err());
        assert!(cgroup_parent("kubepods-pod1.slice", CgroupDriver::Systemd).is_ok());
        assert!(cgroup_parent("/kubepods/pod1", CgroupDriver::Systemd).is_err());
        assert!(cgroup_parent("/kubepods/../etc", CgroupDriver::Cgroupfs).is_err());
        // critest's GetCgroupParent under the systemd driver; CRI-O judges the last component.
        assert!(cgroup_parent("/test.slice", CgroupDriver::Systemd).is_ok());
        assert!(cgroup_parent("/kubepods.slice/kubepods-pod1.slice", CgroupDriver::Systemd).is_ok());
        assert!(cgroup_parent("/test.slice/", CgroupDriver::Systemd).is_err());
        assert!(cgroup_parent("/.slice", CgroupDriver::Systemd).is_err());
        assert!(cgroup_parent("/kubepods.slice/x", CgroupDriver::Systemd).is_err());
    }

    #[test]
    fn host_modes_and_target() {
        let mut r = request();
        r.config.as_mut().unwrap().linux = Some(model::LinuxPodSandboxConfig {
            security_context: Some(model::LinuxSandboxSecurityContext {
                namespace_options: Some(model::NamespaceOption {
                    network: model::NamespaceMode::Node as i32,
                    ipc: model::NamespaceMode::Node as i32,
                    pid: model::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let p = plan(&r, CgroupDriver::Cgroupfs).unwrap();
        assert_eq!(
            (p.network, p.ipc, p.uts, p.pid),
            (HostOrPod::Host, HostOrPod::Host, HostOrPod::Host, PidMode::Node)
        );
        r.config.as_mut().unwrap().linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options =
            Some(model::NamespaceOption { network: model::NamespaceMode::Target as i32, ..Default::default() });
        assert_eq!(field_of(r), "config.linux.security_context.namespace_options.network");
    }

    mod properties {
        //! RunPodSandbox requests as any minor's kubelet could send them (a real request's
        //! encoding, mutated): each is planned or refused naming a field, never a panic.
        use proptest::prelude::*;
        use prost::Message;

        use super::*;
        use crate::wire_cases::{in_every_minor, mutated};

        fn seed() -> Vec<u8> {
            let mut request = request();
            let config = request.config.get_or_insert_with(Default::default);
            config.log_directory = "/var/log/pods/default_web_u1".into();
            config.port_mappings.push(model::PortMapping { container_port: 80, host_port: 8080, ..Default::default() });
            config.dns_config = Some(model::DnsConfig { servers: vec!["10.0.0.10".into()], ..Default::default() });
            let linux = config.linux.get_or_insert_with(Default::default);
            linux.cgroup_parent = "/kubepods/besteffort/podu1".into();
            linux.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
            request.encode_to_vec()
        }

        proptest! {
            #[test]
            fn any_run_request_of_any_minor_is_planned_or_refused_by_field(bytes in mutated(seed())) {
                for request in in_every_minor!(&bytes, RunPodSandboxRequest).into_iter().flatten() {
                    for driver in [CgroupDriver::Cgroupfs, CgroupDriver::Systemd] {
                        if let Err(e) = plan(&request, driver) {
                            prop_assert!(!e.field.is_empty(), "{e:?}");
                        }
                    }
                }
            }
        }
    }
}
