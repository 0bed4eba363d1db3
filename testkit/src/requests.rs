//! CRI requests shaped as the kubelet sends them (kuberuntime's sandbox and container configs
//! for a plain pod), for tests and suites alike: a pod with its labels, annotations, log
//! directory and namespace modes; a container of that pod with the kubelet's labels,
//! annotations, masked and read-only paths and seccomp choice; and a bare container that leaves
//! every default to the runtime, as crictl does.

use std::sync::atomic::{AtomicU32, Ordering};

use lockstep_cri::model;

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// The paths the kubelet masks in a container that is not privileged (the default proc mount).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// The paths the kubelet makes read-only in such a container.
pub const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// `name` made unique for this process: `<name>-<pid>-<n>`.
pub fn unique(name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{name}-{}-{n}", std::process::id())
}

/// A pod's sandbox config as the kubelet makes it for a pod named `name` in `namespace`: uid
/// `uid-<name>`, hostname the name (at most 63 characters), log directory
/// `/var/log/pods/<namespace>_<name>_<uid>`, the three pod labels, the config-source annotation,
/// and a PID namespace per container (no shareProcessNamespace).
pub fn pod(namespace: &str, name: &str) -> model::PodSandboxConfig {
    let uid = format!("uid-{name}");
    model::PodSandboxConfig {
        metadata: Some(model::PodSandboxMetadata {
            name: name.into(),
            uid: uid.clone(),
            namespace: namespace.into(),
            attempt: 0,
        }),
        hostname: name.chars().take(63).collect(),
        log_directory: format!("/var/log/pods/{namespace}_{name}_{uid}"),
        labels: [
            (POD_NAME.to_string(), name.to_string()),
            (POD_NAMESPACE.to_string(), namespace.to_string()),
            (POD_UID.to_string(), uid),
        ]
        .into(),
        annotations: [("kubernetes.io/config.source".to_string(), "api".to_string())].into(),
        linux: Some(model::LinuxPodSandboxConfig {
            security_context: Some(model::LinuxSandboxSecurityContext {
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

/// The pod's namespace modes, made if absent.
pub fn namespace_options(config: &mut model::PodSandboxConfig) -> &mut model::NamespaceOption {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default)
}

pub fn run_pod(config: model::PodSandboxConfig) -> model::RunPodSandboxRequest {
    model::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() }
}

/// A container of `pod` as the kubelet configures one: the pod's labels and the container name
/// label, the kubelet's annotations, log path `<name>/0.log`, the pod's namespace modes, the
/// masked and read-only paths, and seccomp Unconfined (what the kubelet sends for a pod that
/// names no profile, unless its seccompDefault is on).
pub fn container(pod: &model::PodSandboxConfig, name: &str, image: &str, command: &[&str]) -> model::ContainerConfig {
    let mut config = bare_container(name, image, command);
    config.labels.extend(pod.labels.clone());
    config.annotations = [
        ("io.kubernetes.container.restartCount".to_string(), "0".to_string()),
        ("io.kubernetes.container.terminationMessagePath".into(), "/dev/termination-log".into()),
        ("io.kubernetes.pod.terminationGracePeriod".into(), "30".into()),
    ]
    .into();
    let namespace_options =
        pod.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.clone());
    let security = security(&mut config);
    security.namespace_options = namespace_options;
    security.masked_paths = MASKED_PATHS.iter().map(|p| p.to_string()).collect();
    security.readonly_paths = READONLY_PATHS.iter().map(|p| p.to_string()).collect();
    security.seccomp = Some(profile(model::security_profile::ProfileType::Unconfined));
    config
}

/// A container config that names only what the CRI needs — metadata, image, command, the
/// container name label, log path `<name>/0.log`, empty resources, a PID namespace of its own —
/// and leaves every security default to the runtime.
pub fn bare_container(name: &str, image: &str, command: &[&str]) -> model::ContainerConfig {
    model::ContainerConfig {
        metadata: Some(model::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: (!image.is_empty()).then(|| model::ImageSpec { image: image.into(), ..Default::default() }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: [(CONTAINER_NAME.to_string(), name.to_string())].into(),
        linux: Some(model::LinuxContainerConfig {
            resources: Some(Default::default()),
            security_context: Some(model::LinuxContainerSecurityContext {
                namespace_options: Some(model::NamespaceOption {
                    pid: model::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// The security context of a container config, made if absent.
pub fn security(config: &mut model::ContainerConfig) -> &mut model::LinuxContainerSecurityContext {
    config.linux.get_or_insert_with(Default::default).security_context.get_or_insert_with(Default::default)
}

pub fn profile(kind: model::security_profile::ProfileType) -> model::SecurityProfile {
    model::SecurityProfile { profile_type: kind as i32, localhost_ref: String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_carries_its_pod_s_labels_and_namespaces_and_the_kubelet_s_defaults() {
        let mut pod = pod("shop", "web");
        namespace_options(&mut pod).network = model::NamespaceMode::Node as i32;
        let config = container(&pod, "app", "sha256:abc", &["sleep", "1"]);
        assert_eq!(config.labels[POD_UID], "uid-web");
        assert_eq!(config.labels[CONTAINER_NAME], "app");
        assert_eq!(config.log_path, "app/0.log");
        let security = config.linux.unwrap().security_context.unwrap();
        assert_eq!(security.namespace_options.unwrap().network, model::NamespaceMode::Node as i32);
        assert_eq!(security.masked_paths.len(), MASKED_PATHS.len());
        assert_eq!(security.seccomp.unwrap().profile_type, model::security_profile::ProfileType::Unconfined as i32);
    }

    #[test]
    fn a_bare_container_leaves_security_to_the_runtime() {
        let config = bare_container("app", "", &["true"]);
        assert!(config.image.is_none());
        let security = config.linux.unwrap().security_context.unwrap();
        assert!(security.masked_paths.is_empty() && security.seccomp.is_none());
    }

    #[test]
    fn unique_names_differ_and_the_pod_s_log_directory_follows_the_kubelet_s_form() {
        assert_ne!(unique("a"), unique("a"));
        let pod = pod("ns", "p");
        assert_eq!(pod.log_directory, "/var/log/pods/ns_p_uid-p");
        assert_eq!(pod.hostname, "p");
    }
}
