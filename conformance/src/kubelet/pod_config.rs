//! The PodSandboxConfig that the kubelet builds for a pod (kuberuntime_sandbox.go): metadata,
//! labels, annotations, hostname, DNS, log directory, port mappings, cgroup parent, security
//! context, namespaces and sysctls. A pure function of the pod and the node's settings.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use lockstep_cri::model;

use super::{resources, Node};

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";

/// The labels every sandbox and container of the pod carries.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let m = &pod.metadata;
    [
        (POD_NAME, m.name.clone().unwrap_or_default()),
        (POD_NAMESPACE, m.namespace.clone().unwrap_or_default()),
        (POD_UID, m.uid.clone().unwrap_or_default()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub fn spec(pod: &Pod) -> &PodSpec {
    static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
    pod.spec.as_ref().unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
}

/// `<pod logs dir>/<namespace>_<name>_<uid>`, which the kubelet creates before RunPodSandbox.
pub fn log_directory(pod: &Pod, node: &Node) -> std::path::PathBuf {
    let m = &pod.metadata;
    node.pod_logs_dir.join(format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    ))
}

pub fn sandbox_config(pod: &Pod, node: &Node, attempt: u32) -> Result<model::PodSandboxConfig, String> {
    let spec = spec(pod);
    let m = &pod.metadata;
    let host_network = spec.host_network.unwrap_or(false);
    let mut labels: HashMap<String, String> = m.labels.clone().unwrap_or_default().into_iter().collect();
    labels.extend(pod_labels(pod));
    let mut annotations: HashMap<String, String> = m.annotations.clone().unwrap_or_default().into_iter().collect();
    // What the kubelet's config source adds to every pod it admits.
    annotations.entry("kubernetes.io/config.source".into()).or_insert_with(|| "api".into());
    annotations.entry("kubernetes.io/config.seen".into()).or_insert_with(|| node.seen.clone());
    let hostname = if host_network {
        String::new()
    } else {
        let name = spec.hostname.clone().unwrap_or_else(|| m.name.clone().unwrap_or_default());
        name.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_string()
    };
    let port_mappings = spec.containers.iter().flat_map(port_mappings).collect();
    Ok(model::PodSandboxConfig {
        metadata: Some(model::PodSandboxMetadata {
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname,
        log_directory: log_directory(pod, node).display().to_string(),
        dns_config: Some(dns_config(pod, node)),
        port_mappings,
        labels,
        annotations,
        linux: Some(linux(pod, node)?),
        windows: None,
    })
}

fn protocol(name: Option<&str>) -> i32 {
    match name {
        Some("UDP") => model::Protocol::Udp as i32,
        Some("SCTP") => model::Protocol::Sctp as i32,
        _ => model::Protocol::Tcp as i32,
    }
}

/// Every declared port of a container (the kubelet's MakePortMappings); CNI's portmap maps
/// those with a host port.
pub fn port_mappings(c: &Container) -> Vec<model::PortMapping> {
    c.ports
        .iter()
        .flatten()
        .map(|p| model::PortMapping {
            protocol: protocol(p.protocol.as_deref()),
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect()
}

/// DNS as the kubelet's dns configurer computes it for the pod's dnsPolicy.
fn dns_config(pod: &Pod, node: &Node) -> model::DnsConfig {
    let spec = spec(pod);
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirst" => !host_network && !node.cluster_dns.is_empty(),
        "ClusterFirstWithHostNet" => !node.cluster_dns.is_empty(),
        _ => false,
    };
    let mut dns = match policy {
        "None" => model::DnsConfig::default(),
        _ if cluster => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let domain = &node.cluster_domain;
            let mut searches = vec![format!("{ns}.svc.{domain}"), format!("svc.{domain}"), domain.clone()];
            searches.extend(node.host_dns.searches.iter().cloned());
            model::DnsConfig { servers: node.cluster_dns.clone(), searches, options: vec!["ndots:5".into()] }
        }
        _ => node.host_dns.clone(),
    };
    if let Some(extra) = &spec.dns_config {
        dns.servers.extend(extra.nameservers.iter().flatten().cloned());
        dns.searches.extend(extra.searches.iter().flatten().cloned());
        for option in extra.options.iter().flatten() {
            let name = option.name.clone().unwrap_or_default();
            dns.options.retain(|o| o.split(':').next() != Some(name.as_str()));
            dns.options.push(match &option.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    dns
}

/// The user namespace of a pod with `hostUsers: false`, as the kubelet's userns manager
/// allocates it: 65536 IDs from a multiple of 65536 above the node's own (here picked by a
/// hash of the pod's uid, where the kubelet keeps a bitmap), the same for uids and gids.
/// None for any other pod (a kubelet whose UserNamespacesSupport gate is off sends nothing).
pub fn user_namespace(pod: &Pod) -> Option<model::UserNamespace> {
    if spec(pod).host_users != Some(false) {
        return None;
    }
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let slot = uid.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3)) % 1024;
    let range = || vec![model::IdMapping { container_id: 0, host_id: 65536 * (1 + slot as u32), length: 65536 }];
    Some(model::UserNamespace { mode: model::NamespaceMode::Pod as i32, uids: range(), gids: range() })
}

/// The pod's namespace modes: host namespaces are NODE, a shared process namespace is POD,
/// and `hostUsers: false` a user namespace of the pod's own.
pub fn namespace_options(pod: &Pod) -> model::NamespaceOption {
    let spec = spec(pod);
    let node_or = |host: Option<bool>, otherwise: model::NamespaceMode| {
        if host.unwrap_or(false) {
            model::NamespaceMode::Node as i32
        } else {
            otherwise as i32
        }
    };
    let pid_default = if spec.share_process_namespace.unwrap_or(false) {
        model::NamespaceMode::Pod
    } else {
        model::NamespaceMode::Container
    };
    model::NamespaceOption {
        network: node_or(spec.host_network, model::NamespaceMode::Pod),
        pid: node_or(spec.host_pid, pid_default),
        ipc: node_or(spec.host_ipc, model::NamespaceMode::Pod),
        target_id: String::new(),
        userns_options: user_namespace(pod),
    }
}

fn linux(pod: &Pod, node: &Node) -> Result<model::LinuxPodSandboxConfig, String> {
    let spec = spec(pod);
    let sc = spec.security_context.clone().unwrap_or_default();
    let privileged = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .any(|c| c.security_context.as_ref().and_then(|s| s.privileged).unwrap_or(false));
    let mut supplemental_groups: Vec<i64> = sc.fs_group.into_iter().collect();
    supplemental_groups.extend(sc.supplemental_groups.iter().flatten());
    let policy = match sc.supplemental_groups_policy.as_deref() {
        Some("Strict") => model::SupplementalGroupsPolicy::Strict,
        _ => model::SupplementalGroupsPolicy::Merge,
    };
    Ok(model::LinuxPodSandboxConfig {
        cgroup_parent: resources::cgroup_parent(pod, node.systemd_cgroups)?,
        security_context: Some(model::LinuxSandboxSecurityContext {
            namespace_options: Some(namespace_options(pod)),
            run_as_user: sc.run_as_user.map(|value| model::Int64Value { value }),
            run_as_group: sc.run_as_group.map(|value| model::Int64Value { value }),
            supplemental_groups,
            supplemental_groups_policy: policy as i32,
            privileged,
            // The kubelet runs every sandbox under the runtime's default profile.
            seccomp: Some(model::SecurityProfile {
                profile_type: model::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        }),
        sysctls: sc.sysctls.iter().flatten().map(|s| (s.name.clone(), s.value.clone())).collect(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::manifest::parse;

    const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  uid: 11111111-2222-4333-8444-555555555555
  labels: {app: web}
  annotations: {team: blue}
spec:
  shareProcessNamespace: true
  securityContext:
    runAsUser: 1000
    fsGroup: 2000
    supplementalGroups: [3000]
    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: '0'}]
  dnsConfig:
    nameservers: [10.0.0.53]
    options: [{name: ndots, value: '2'}, {name: edns0}]
  containers:
  - name: app
    image: busybox
    ports: [{containerPort: 8080, hostPort: 18080}, {containerPort: 53, protocol: UDP}]
    securityContext: {privileged: true}
";

    #[test]
    fn the_sandbox_config_carries_what_the_kubelet_sends() {
        let pod = parse(POD, "p").unwrap();
        let node = Node::for_tests();
        let config = sandbox_config(&pod, &node, 0).unwrap();
        let meta = config.metadata.as_ref().unwrap();
        assert_eq!((meta.name.as_str(), meta.namespace.as_str(), meta.attempt), ("web", "shop", 0));
        assert_eq!(config.labels["app"], "web");
        assert_eq!(config.labels[POD_UID], "11111111-2222-4333-8444-555555555555");
        assert_eq!(config.annotations["team"], "blue");
        assert_eq!(config.hostname, "web");
        assert!(config.log_directory.ends_with("/shop_web_11111111-2222-4333-8444-555555555555"));
        assert_eq!(config.port_mappings.len(), 2);
        assert_eq!(config.port_mappings[0].host_port, 18080);
        assert_eq!(config.port_mappings[1].protocol, model::Protocol::Udp as i32);
        let dns = config.dns_config.as_ref().unwrap();
        assert_eq!(dns.servers, vec!["10.96.0.10", "10.0.0.53"]);
        assert_eq!(&dns.searches[..3], ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]);
        assert_eq!(dns.options, vec!["ndots:2", "edns0"]);
        let linux = config.linux.as_ref().unwrap();
        assert_eq!(linux.cgroup_parent, "/kubepods/besteffort/pod11111111-2222-4333-8444-555555555555");
        assert_eq!(linux.sysctls["net.ipv4.ip_unprivileged_port_start"], "0");
        let sc = linux.security_context.as_ref().unwrap();
        assert!(sc.privileged);
        assert_eq!(sc.run_as_user, Some(model::Int64Value { value: 1000 }));
        assert_eq!(sc.supplemental_groups, vec![2000, 3000]);
        let ns = sc.namespace_options.as_ref().unwrap();
        assert_eq!((ns.network, ns.pid, ns.ipc), (0, model::NamespaceMode::Pod as i32, 0));
    }

    #[test]
    fn host_network_pods_get_no_hostname_and_the_hosts_dns() {
        let pod = parse(&POD.replace("shareProcessNamespace: true", "hostNetwork: true"), "p").unwrap();
        let config = sandbox_config(&pod, &Node::for_tests(), 1).unwrap();
        assert_eq!(config.hostname, "");
        let ns = config.linux.unwrap().security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network, model::NamespaceMode::Node as i32);
        assert_eq!(config.dns_config.unwrap().servers, vec!["192.0.2.1", "10.0.0.53"]);
    }
}
