//! The ContainerConfig that the kubelet builds for a container (kuberuntime_container.go and
//! _linux.go): metadata, image, command and args with $(VAR) expansion, env, mounts (volumes,
//! the termination log, the kubelet's /etc/hosts), labels, annotations, log path, resources
//! and security context. A pure function of the pod, the container and the node's layout.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod, SecurityContext};
use lockstep_cri::model;

use super::pod_config::{namespace_options, pod_labels, port_mappings, spec};
use super::{resources, Node, PodDirs};

pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// Where a container sits in the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Init,
    App,
}

/// /proc paths the kubelet asks runtimes to mask for the Default procMount.
pub use lockstep_testkit::requests::{MASKED_PATHS, READONLY_PATHS};

pub fn container_config(
    pod: &Pod,
    c: &Container,
    kind: Kind,
    restart_count: u32,
    image_ref: &str,
    node: &Node,
    dirs: &PodDirs,
) -> Result<model::ContainerConfig, String> {
    let spec = spec(pod);
    let env: Vec<(String, String)> =
        c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect();
    let lookup: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand_all = |list: &Option<Vec<String>>| list.iter().flatten().map(|a| expand(a, &lookup)).collect::<Vec<_>>();
    let mut labels = pod_labels(pod);
    labels.insert(CONTAINER_NAME.into(), c.name.clone());
    let grace = spec.termination_grace_period_seconds.unwrap_or(30);
    let termination_path = c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into());
    let mut annotations: HashMap<String, String> = [
        ("io.kubernetes.container.hash", format!("{:x}", container_hash(c))),
        ("io.kubernetes.container.restartCount", restart_count.to_string()),
        ("io.kubernetes.container.terminationMessagePath", termination_path.clone()),
        (
            "io.kubernetes.container.terminationMessagePolicy",
            c.termination_message_policy.clone().unwrap_or_else(|| "File".into()),
        ),
        ("io.kubernetes.pod.terminationGracePeriod", grace.to_string()),
        ("io.kubernetes.container.type", if kind == Kind::Init { "init" } else { "container" }.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if c.ports.as_ref().is_some_and(|p| !p.is_empty()) {
        let ports: Vec<serde_json::Value> = port_mappings(c)
            .iter()
            .map(|p| serde_json::json!({"containerPort": p.container_port, "protocol": protocol_name(p.protocol)}))
            .collect();
        annotations.insert("io.kubernetes.container.ports".into(), serde_json::Value::Array(ports).to_string());
    }
    Ok(model::ContainerConfig {
        metadata: Some(model::ContainerMetadata { name: c.name.clone(), attempt: restart_count }),
        image: Some(model::ImageSpec {
            image: image_ref.to_string(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .iter()
            .map(|(key, value)| model::KeyValue { key: key.clone(), value: value.clone().into_bytes() })
            .collect(),
        mounts: mounts(pod, c, restart_count, &termination_path, dirs)?,
        labels,
        annotations,
        log_path: format!("{}/{restart_count}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(model::LinuxContainerConfig {
            resources: Some(resources::linux_resources(pod, c, node.memory_capacity, &node.hugepage_sizes)?),
            security_context: Some(security_context(pod, c)),
        }),
        ..Default::default()
    })
}

fn protocol_name(p: i32) -> &'static str {
    match model::Protocol::try_from(p) {
        Ok(model::Protocol::Udp) => "UDP",
        Ok(model::Protocol::Sctp) => "SCTP",
        _ => "TCP",
    }
}

/// `$(VAR)` expands to the variable's value, `$$` to `$`; an unknown `$(VAR)` stays as is.
pub fn expand(text: &str, env: &HashMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(close) = after.strip_prefix('(').and_then(|a| a.find(')').map(|j| j + 1)) {
            let name = &after[1..close];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[i..i + 1 + close + 1]),
            }
            rest = &after[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A stable hash of the container's spec (the kubelet uses it to see spec changes).
fn container_hash(c: &Container) -> u64 {
    let text = serde_json::to_string(c).unwrap_or_default();
    text.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

fn mounts(
    pod: &Pod,
    c: &Container,
    restart_count: u32,
    termination_path: &str,
    dirs: &PodDirs,
) -> Result<Vec<model::Mount>, String> {
    let spec = spec(pod);
    let mut mounts = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let volume = spec.volumes.iter().flatten().find(|v| v.name == vm.name).ok_or_else(|| {
            format!("container {:?} mounts volume {:?}, which the pod does not declare", c.name, vm.name)
        })?;
        let mut host_path = match (&volume.host_path, &volume.empty_dir) {
            (Some(h), _) => std::path::PathBuf::from(&h.path),
            (None, Some(_)) => dirs.empty_dir(&volume.name),
            (None, None) => return Err(format!("volume {:?} is neither hostPath nor emptyDir", volume.name)),
        };
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            host_path = host_path.join(sub);
        }
        let propagation = match vm.mount_propagation.as_deref() {
            Some("HostToContainer") => model::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => model::MountPropagation::PropagationBidirectional,
            _ => model::MountPropagation::PropagationPrivate,
        };
        mounts.push(model::Mount {
            container_path: vm.mount_path.clone(),
            host_path: host_path.display().to_string(),
            readonly: vm.read_only.unwrap_or(false),
            propagation: propagation as i32,
            recursive_read_only: vm.recursive_read_only.as_deref() == Some("Enabled"),
            ..Default::default()
        });
    }
    // The kubelet manages /etc/hosts of pods on the pod network, unless a volume covers it.
    let host_network = spec.host_network.unwrap_or(false);
    if !host_network && !mounts.iter().any(|m| m.container_path == "/etc/hosts") {
        mounts.push(model::Mount {
            container_path: "/etc/hosts".into(),
            host_path: dirs.etc_hosts().display().to_string(),
            ..Default::default()
        });
    }
    mounts.push(model::Mount {
        container_path: termination_path.to_string(),
        host_path: dirs.termination_log(&c.name, restart_count).display().to_string(),
        ..Default::default()
    });
    // A pod with a user namespace gets its volumes idmapped by the runtime, with the pod's
    // own mapping: its root owns what the node's root made for it.
    if let Some(userns) = super::pod_config::user_namespace(pod) {
        for m in &mut mounts {
            m.uid_mappings = userns.uids.clone();
            m.gid_mappings = userns.gids.clone();
        }
    }
    Ok(mounts)
}

fn security_context(pod: &Pod, c: &Container) -> model::LinuxContainerSecurityContext {
    let spec = spec(pod);
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let sc: SecurityContext = c.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged.unwrap_or(false);
    let caps = sc.capabilities.clone().unwrap_or_default();
    let seccomp = sc.seccomp_profile.clone().or(pod_sc.seccomp_profile.clone());
    let seccomp = seccomp.map(|p| match p.type_.as_str() {
        "RuntimeDefault" => model::SecurityProfile {
            profile_type: model::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        },
        "Localhost" => model::SecurityProfile {
            profile_type: model::security_profile::ProfileType::Localhost as i32,
            localhost_ref: p.localhost_profile.unwrap_or_default(),
        },
        _ => model::SecurityProfile::default_unconfined(),
    });
    let mut supplemental_groups: Vec<i64> = pod_sc.fs_group.into_iter().collect();
    supplemental_groups.extend(pod_sc.supplemental_groups.iter().flatten());
    let default_proc = sc.proc_mount.as_deref().unwrap_or("Default") == "Default";
    let (masked, readonly) = if privileged || !default_proc {
        (vec![], vec![])
    } else {
        (MASKED_PATHS.iter().map(|p| p.to_string()).collect(), READONLY_PATHS.iter().map(|p| p.to_string()).collect())
    };
    model::LinuxContainerSecurityContext {
        capabilities: Some(model::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            add_ambient_capabilities: vec![],
        }),
        privileged,
        namespace_options: Some(namespace_options(pod)),
        run_as_user: sc.run_as_user.or(pod_sc.run_as_user).map(|value| model::Int64Value { value }),
        run_as_group: sc.run_as_group.or(pod_sc.run_as_group).map(|value| model::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups,
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        masked_paths: masked,
        readonly_paths: readonly,
        seccomp: Some(seccomp.unwrap_or_else(model::SecurityProfile::default_unconfined)),
        supplemental_groups_policy: match pod_sc.supplemental_groups_policy.as_deref() {
            Some("Strict") => model::SupplementalGroupsPolicy::Strict as i32,
            _ => model::SupplementalGroupsPolicy::Merge as i32,
        },
        ..Default::default()
    }
}

trait Unconfined {
    fn default_unconfined() -> Self;
}

impl Unconfined for model::SecurityProfile {
    /// The kubelet's default without seccompDefault: Unconfined.
    fn default_unconfined() -> Self {
        model::SecurityProfile {
            profile_type: model::security_profile::ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::manifest::parse;

    const POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, uid: 11111111-2222-4333-8444-555555555555}
spec:
  terminationGracePeriodSeconds: 5
  volumes:
  - {name: cache, emptyDir: {}}
  - {name: data, hostPath: {path: /srv/data}}
  containers:
  - name: app
    image: busybox
    command: [sh, -c]
    args: ['echo $(GREETING) $$HOME $(MISSING)']
    env: [{name: GREETING, value: hello}]
    ports: [{containerPort: 8080}]
    volumeMounts:
    - {name: cache, mountPath: /cache}
    - {name: data, mountPath: /data, readOnly: true, mountPropagation: HostToContainer}
    securityContext:
      runAsUser: 1000
      allowPrivilegeEscalation: false
      capabilities: {add: [NET_ADMIN], drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
";

    #[test]
    fn the_container_config_carries_what_the_kubelet_sends() {
        let pod = parse(POD, "p").unwrap();
        let node = Node::for_tests();
        let dirs = PodDirs::new(&node, &pod);
        let c = &spec(&pod).containers[0];
        let config = container_config(&pod, c, Kind::App, 2, "sha256:abc", &node, &dirs).unwrap();
        assert_eq!(config.metadata.as_ref().unwrap().attempt, 2);
        let image = config.image.as_ref().unwrap();
        assert_eq!((image.image.as_str(), image.user_specified_image.as_str()), ("sha256:abc", "busybox"));
        assert_eq!(config.args, vec!["echo hello $HOME $(MISSING)"]);
        assert_eq!(config.log_path, "app/2.log");
        assert_eq!(config.labels[CONTAINER_NAME], "app");
        assert_eq!(config.annotations["io.kubernetes.container.restartCount"], "2");
        assert_eq!(config.annotations["io.kubernetes.pod.terminationGracePeriod"], "5");
        assert_eq!(config.annotations["io.kubernetes.container.ports"], r#"[{"containerPort":8080,"protocol":"TCP"}]"#);
        let paths: Vec<&str> = config.mounts.iter().map(|m| m.container_path.as_str()).collect();
        assert_eq!(paths, vec!["/cache", "/data", "/etc/hosts", "/dev/termination-log"]);
        assert!(config.mounts[0].host_path.ends_with("/volumes/kubernetes.io~empty-dir/cache"));
        assert!(config.mounts[1].readonly);
        assert_eq!(config.mounts[1].propagation, model::MountPropagation::PropagationHostToContainer as i32);
        let sc = config.linux.unwrap().security_context.unwrap();
        assert!(sc.no_new_privs);
        assert_eq!(sc.run_as_user, Some(model::Int64Value { value: 1000 }));
        assert_eq!(sc.capabilities.unwrap().drop_capabilities, vec!["ALL"]);
        assert_eq!(sc.masked_paths.len(), MASKED_PATHS.len());
        assert_eq!(sc.seccomp.unwrap().profile_type, model::security_profile::ProfileType::RuntimeDefault as i32);
    }

    #[test]
    fn expansion_follows_the_kubelet_rules() {
        let env: HashMap<&str, &str> = [("A", "1"), ("B", "two")].into();
        assert_eq!(expand("$(A)-$(B)", &env), "1-two");
        assert_eq!(expand("$$(A) $", &env), "$(A) $");
        assert_eq!(expand("$(C) $(A", &env), "$(C) $(A");
    }

    #[test]
    fn a_mount_of_an_undeclared_volume_is_refused() {
        let pod = parse(&POD.replace("name: cache, mountPath", "name: nope, mountPath"), "p").unwrap();
        let node = Node::for_tests();
        let dirs = PodDirs::new(&node, &pod);
        let err = container_config(&pod, &spec(&pod).containers[0], Kind::App, 0, "x", &node, &dirs).unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }
}
