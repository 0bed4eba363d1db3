//! Tests of spec::build: snapshots (insta) of the whole spec for representative requests,
//! and the rules one by one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lockstep_cri::model;

use super::*;
use crate::container::host::{AppArmor, HostFacts, ResolvedDevice};
use crate::container::resources::OomPolicy;
use crate::container::ErrorKind;

/// This VM's facts: no CAP_SYS_RESOURCE, score 0 and no way to lower it, no AppArmor.
fn host() -> HostFacts {
    HostFacts {
        bounding: CapSet(CapSet::all().0 & !(1 << 24)),
        oom: OomPolicy { own_score: 0, can_lower: false },
        apparmor: AppArmor::Disabled,
        pure_cgroup_v2: false,
        hugetlb: true,
    }
}

fn runtime() -> RuntimeSettings {
    let mut settings = RuntimeSettings::new(
        CgroupDriver::Cgroupfs,
        HandlerFeatures { recursive_read_only_mounts: true, user_namespaces: false },
        host(),
    );
    settings.arch = "x86_64".into();
    settings
}

fn sandbox() -> SandboxView {
    SandboxView {
        id: "sb1".into(),
        pod_name: "web".into(),
        pod_namespace: "default".into(),
        pod_uid: "uid-1".into(),
        hostname: "web-0".into(),
        network: NamespaceSource::Join("/run/lockstep/ns/net/sb1".into()),
        ipc: NamespaceSource::Join("/run/lockstep/ns/ipc/sb1".into()),
        uts: NamespaceSource::Join("/run/lockstep/ns/uts/sb1".into()),
        pod_pid: None,
        user: None,
        resolv_conf: Some("/run/lockstep/sandboxes/sb1/resolv.conf".into()),
        hosts: Some("/run/lockstep/sandboxes/sb1/hosts".into()),
        hostname_file: Some("/run/lockstep/sandboxes/sb1/hostname".into()),
        shm: Some("/run/lockstep/sandboxes/sb1/shm".into()),
        cgroup_parent: "/kubepods/besteffort/poduid-1".into(),
        privileged: false,
    }
}

fn image() -> ImageView {
    ImageView {
        name: "registry.local/busybox:1".into(),
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo hello".into()],
        env: vec!["PATH=/bin:/usr/bin".into(), "IMAGE_ONLY=1".into(), "SHARED=image".into()],
        working_dir: "/srv".into(),
        user: String::new(),
        stop_signal: String::new(),
        rootfs: "/var/lib/lockstep/containers/c1/rootfs".into(),
    }
}

fn config() -> model::ContainerConfig {
    model::ContainerConfig {
        metadata: Some(model::ContainerMetadata { name: "app".into(), attempt: 0 }),
        image: Some(model::ImageSpec { image: "registry.local/busybox:1".into(), ..Default::default() }),
        envs: vec![
            model::KeyValue { key: "SHARED".into(), value: b"config".to_vec() },
            model::KeyValue { key: "ONLY_CONFIG".into(), value: b"2".to_vec() },
        ],
        labels: [("io.kubernetes.container.name".to_string(), "app".to_string())].into(),
        annotations: [("io.kubernetes.container.restartCount".to_string(), "0".to_string())].into(),
        log_path: "app/0.log".into(),
        linux: Some(model::LinuxContainerConfig {
            resources: Some(model::LinuxContainerResources::default()),
            security_context: Some(model::LinuxContainerSecurityContext {
                seccomp: Some(model::SecurityProfile::default()),
                // What the kubelet sends for a pod that does not share its process namespace.
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

fn resolved() -> Resolved {
    Resolved { user: ResolvedUser { uid: 0, gid: 0, additional_gids: vec![0] }, ..Default::default() }
}

fn security(config: &mut model::ContainerConfig) -> &mut model::LinuxContainerSecurityContext {
    config.linux.get_or_insert_with(Default::default).security_context.get_or_insert_with(Default::default)
}

fn build_with(
    config: &model::ContainerConfig,
    sandbox: &SandboxView,
    image: &ImageView,
    runtime: &RuntimeSettings,
    resolved: &Resolved,
) -> Result<BuiltSpec, SpecError> {
    build(&SpecInput { id: "c1", config, sandbox, image, runtime, resolved })
}

fn built(config: &model::ContainerConfig) -> BuiltSpec {
    build_with(config, &sandbox(), &image(), &runtime(), &resolved()).unwrap()
}

fn error(config: &model::ContainerConfig) -> SpecError {
    build_with(config, &sandbox(), &image(), &runtime(), &resolved()).unwrap_err()
}

/// The spec as stable JSON: maps sorted (serde_json's Map is ordered), capability sets sorted,
/// and unless `full_seccomp`, the RuntimeDefault syscall list reduced to its size.
fn snapshot(built: &BuiltSpec, full_seccomp: bool) -> String {
    let mut json = serde_json::to_value(&built.spec).unwrap();
    if let Some(caps) = json.pointer_mut("/process/capabilities").and_then(|c| c.as_object_mut()) {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    if !full_seccomp {
        if let Some(syscalls) = json.pointer_mut("/linux/seccomp/syscalls") {
            let rules = syscalls.as_array().map(|a| a.len()).unwrap_or(0);
            *syscalls = format!("<RuntimeDefault: {rules} rules>").into();
        }
    }
    let extra = serde_json::json!({
        "stop_signal": built.stop_signal,
        "user": [built.user.uid, built.user.gid, &built.user.additional_gids],
        "warnings": &built.warnings,
    });
    format!("{}\n{}", serde_json::to_string_pretty(&json).unwrap(), serde_json::to_string_pretty(&extra).unwrap())
}

#[test]
fn snapshot_plain_container() {
    let mut config = config();
    config.mounts = vec![
        model::Mount {
            container_path: "/data".into(),
            host_path: "/srv/data".into(),
            readonly: true,
            ..Default::default()
        },
        model::Mount {
            container_path: "/data/cache".into(),
            host_path: "/srv/cache".into(),
            propagation: model::MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        },
        model::Mount {
            container_path: "/etc/hosts".into(),
            host_path: "/var/lib/kubelet/pods/uid-1/etc-hosts".into(),
            ..Default::default()
        },
    ];
    insta::assert_snapshot!(snapshot(&built(&config), true));
}

#[test]
fn snapshot_privileged_container() {
    let mut config = config();
    security(&mut config).privileged = true;
    let sandbox = SandboxView { privileged: true, ..sandbox() };
    let device = |path: &str, kind, major, minor| ResolvedDevice {
        path: PathBuf::from(path),
        kind,
        major,
        minor,
        file_mode: 0o660,
        uid: 0,
        gid: 6,
        permissions: "rwm".into(),
    };
    let resolved =
        Resolved { host_devices: vec![device("/dev/null", 'c', 1, 3), device("/dev/vda", 'b', 253, 0)], ..resolved() };
    let built = build_with(&config, &sandbox, &image(), &runtime(), &resolved).unwrap();
    insta::assert_snapshot!(snapshot(&built, false));
}

#[test]
fn snapshot_run_as_user_with_groups() {
    let mut config = config();
    let sc = security(&mut config);
    sc.run_as_user = Some(model::Int64Value { value: 1000 });
    sc.run_as_group = Some(model::Int64Value { value: 3000 });
    sc.supplemental_groups = vec![4000];
    sc.no_new_privs = true;
    sc.readonly_rootfs = true;
    sc.capabilities = Some(model::Capability {
        add_capabilities: vec!["NET_RAW".into()],
        drop_capabilities: vec!["ALL".into()],
        add_ambient_capabilities: vec!["NET_RAW".into()],
    });
    let resolved =
        Resolved { user: ResolvedUser { uid: 1000, gid: 3000, additional_gids: vec![3000, 4000] }, ..resolved() };
    let built = build_with(&config, &sandbox(), &image(), &runtime(), &resolved).unwrap();
    insta::assert_snapshot!(snapshot(&built, false));
}

#[test]
fn snapshot_tty_container() {
    let mut config = config();
    config.tty = true;
    config.stdin = true;
    config.command = vec!["/bin/sh".into()];
    insta::assert_snapshot!(snapshot(&built(&config), false));
}

#[test]
fn snapshot_resources() {
    let mut config = config();
    config.linux.as_mut().unwrap().resources = Some(model::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 128 << 20,
        memory_swap_limit_in_bytes: 128 << 20,
        oom_score_adj: -998,
        cpuset_cpus: "0".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![model::HugepageLimit { page_size: "2MB".into(), limit: 0 }],
        unified: [("memory.high".to_string(), "100000000".to_string())].into(),
    });
    config.stop_signal = model::Signal::Sigusr1 as i32;
    insta::assert_snapshot!(snapshot(&built(&config), false));
}

#[test]
fn annotations_the_oci_runtime_acts_on_stay_out_of_the_spec_unless_allowed() {
    let mut config = config();
    for (k, v) in [
        ("run.oci.seccomp_bpf_data", "AAAA"),
        ("run.oci.hooks.prestart", "/usr/bin/evil"),
        ("run.oci.keep_original_groups", "1"),
        ("org.criu.config", "/tmp/criu.conf"),
        ("example.com/run.oci.lookalike", "kept"),
    ] {
        config.annotations.insert(k.into(), v.into());
    }
    let keys = |built: &BuiltSpec| -> Vec<String> {
        let mut keys: Vec<String> = built.spec.annotations().clone().unwrap().into_keys().collect();
        keys.retain(|k| !k.starts_with("io.kubernetes.cri."));
        keys.sort();
        keys
    };
    let dropped = built(&config);
    assert_eq!(keys(&dropped), ["example.com/run.oci.lookalike", "io.kubernetes.container.restartCount"]);
    assert_eq!(dropped.warnings.len(), 4, "one warning per dropped key: {:?}", dropped.warnings);
    assert!(dropped.warnings[0].contains("\"org.criu.config\""), "{:?}", dropped.warnings);
    assert!(dropped.warnings[1].contains("\"run.oci.hooks.prestart\""), "{:?}", dropped.warnings);

    let allowing = RuntimeSettings {
        allowed_annotations: vec!["run.oci.keep_original_groups".into(), "org.criu.".into()],
        ..runtime()
    };
    let allowed = build_with(&config, &sandbox(), &image(), &allowing, &resolved()).unwrap();
    assert_eq!(
        keys(&allowed),
        [
            "example.com/run.oci.lookalike",
            "io.kubernetes.container.restartCount",
            "org.criu.config",
            "run.oci.keep_original_groups"
        ]
    );
    assert_eq!(allowed.warnings.len(), 2, "{:?}", allowed.warnings);
}

#[test]
fn hugepage_limits_are_dropped_with_a_warning_where_no_runtime_can_set_them() {
    let mut config = config();
    config.linux.as_mut().unwrap().resources = Some(model::LinuxContainerResources {
        memory_limit_in_bytes: 128 << 20,
        hugepage_limits: vec![
            model::HugepageLimit { page_size: "2MB".into(), limit: 0 },
            model::HugepageLimit { page_size: "1GB".into(), limit: 0 },
        ],
        ..Default::default()
    });
    let mut settings = runtime();
    settings.host.hugetlb = false;
    let built = build_with(&config, &sandbox(), &image(), &settings, &resolved()).unwrap();
    let resources = built.spec.linux().as_ref().unwrap().resources().clone().unwrap();
    assert_eq!(resources.hugepage_limits(), &None);
    assert_eq!(resources.memory().as_ref().unwrap().limit(), Some(128 << 20), "the rest stays");
    assert!(
        built.warnings.iter().any(|w| w.contains("hugepage limits 2MB=0, 1GB=0 not applied")),
        "{:?}",
        built.warnings
    );

    settings.host.hugetlb = true;
    let built = build_with(&config, &sandbox(), &image(), &settings, &resolved()).unwrap();
    let resources = built.spec.linux().as_ref().unwrap().resources().clone().unwrap();
    assert_eq!(resources.hugepage_limits().as_ref().map(Vec::len), Some(2));
    assert!(built.warnings.is_empty(), "{:?}", built.warnings);
}

#[test]
fn snapshot_host_namespaces() {
    let mut config = config();
    security(&mut config).namespace_options =
        Some(model::NamespaceOption { pid: model::NamespaceMode::Node as i32, ..Default::default() });
    let sandbox = SandboxView {
        network: NamespaceSource::Host,
        ipc: NamespaceSource::Host,
        uts: NamespaceSource::Host,
        shm: None,
        hostname_file: None,
        ..sandbox()
    };
    let built = build_with(&config, &sandbox, &image(), &runtime(), &resolved()).unwrap();
    insta::assert_snapshot!(snapshot(&built, false));
}

#[test]
fn snapshot_seccomp_localhost() {
    let mut config = config();
    security(&mut config).seccomp = Some(model::SecurityProfile {
        profile_type: model::security_profile::ProfileType::Localhost as i32,
        localhost_ref: "/etc/lockstep/seccomp/no-mkdir.json".into(),
    });
    let profile = Profile::parse(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let resolved = Resolved { seccomp_localhost: Some(profile), ..resolved() };
    let built = build_with(&config, &sandbox(), &image(), &runtime(), &resolved).unwrap();
    insta::assert_snapshot!(snapshot(&built, true));
}

#[test]
fn command_and_args_merge_as_the_kubelet_expects() {
    let image = image();
    let run = |command: &[&str], args: &[&str], image: &ImageView| {
        let config = model::ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        command_line(&config, image)
    };
    assert_eq!(run(&[], &[], &image).unwrap(), vec!["/bin/sh", "-c", "echo hello"]);
    assert_eq!(run(&[], &["echo bye"], &image).unwrap(), vec!["/bin/sh", "-c", "echo bye"]);
    assert_eq!(run(&["/app"], &[], &image).unwrap(), vec!["/app"], "a command drops the image's CMD");
    assert_eq!(run(&["/app"], &["-v"], &image).unwrap(), vec!["/app", "-v"]);
    let no_entrypoint = ImageView { entrypoint: vec!["".into()], ..image.clone() };
    assert_eq!(run(&[], &[], &no_entrypoint).unwrap(), vec!["echo hello"]);
    let empty = ImageView { entrypoint: vec![], cmd: vec![], ..image };
    assert_eq!(run(&[], &[], &empty).unwrap_err().field, "config.command");
}

#[test]
fn env_comes_from_image_then_config_and_survives_bad_bytes() {
    let mut config = config();
    config.envs.push(model::KeyValue { key: "BINARY".into(), value: vec![b'a', 0xff, b'b'] });
    let built = built(&config);
    let env = built.spec.process().as_ref().unwrap().env().clone().unwrap();
    assert_eq!(env[0], "PATH=/bin:/usr/bin", "the image's PATH replaces the default in place");
    assert!(env.contains(&"SHARED=config".to_string()) && !env.contains(&"SHARED=image".to_string()));
    assert!(env.contains(&"HOSTNAME=web-0".to_string()) && env.contains(&"IMAGE_ONLY=1".to_string()));
    assert!(env.contains(&"BINARY=a\u{fffd}b".to_string()));
    assert!(built.warnings.iter().any(|w| w.contains("BINARY") && w.contains("UTF-8")));
    let mut config = self::config();
    config.envs.push(model::KeyValue { key: "A=B".into(), value: vec![] });
    assert_eq!(error(&config).field, "config.envs[2].key");
}

#[test]
fn mount_rules() {
    let with_mount = |m: model::Mount| {
        let mut config = config();
        config.mounts = vec![m];
        config
    };
    let base = model::Mount { container_path: "/data".into(), host_path: "/srv".into(), ..Default::default() };
    let err = error(&with_mount(model::Mount { container_path: "data".into(), ..base.clone() }));
    assert_eq!((err.kind, err.field.as_str()), (ErrorKind::InvalidArgument, "config.mounts[0].container_path"));
    let err = error(&with_mount(model::Mount { recursive_read_only: true, ..base.clone() }));
    assert_eq!(err.field, "config.mounts[0].recursive_read_only");
    let rro = model::Mount { recursive_read_only: true, readonly: true, ..base.clone() };
    let no_rro = RuntimeSettings {
        features: HandlerFeatures { recursive_read_only_mounts: false, user_namespaces: false },
        ..runtime()
    };
    let err = build_with(&with_mount(rro.clone()), &sandbox(), &image(), &no_rro, &resolved()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    let options = built(&with_mount(rro)).spec.mounts().clone().unwrap().last().unwrap().options().clone().unwrap();
    assert!(options.contains(&"rro".to_string()));
    let shared = model::Mount { propagation: model::MountPropagation::PropagationBidirectional as i32, ..base.clone() };
    let spec = built(&with_mount(shared)).spec;
    assert_eq!(spec.linux().as_ref().unwrap().rootfs_propagation().as_deref(), Some("rshared"));
    let mut twice = config();
    twice.mounts = vec![base.clone(), model::Mount { container_path: "/data/".into(), ..base.clone() }];
    assert!(error(&twice).message.contains("already mounted by config.mounts[0]"));
    let image_volume = model::Mount {
        host_path: String::new(),
        image: Some(model::ImageSpec { image: "registry.local/data:1".into(), ..Default::default() }),
        image_sub_path: "sub/dir".into(),
        ..base.clone()
    };
    let err = error(&with_mount(image_volume.clone()));
    assert_eq!(err.field, "config.mounts[0].image");
    let resolved = Resolved {
        image_volumes: BTreeMap::from([("registry.local/data:1".to_string(), PathBuf::from("/vol/data"))]),
        ..resolved()
    };
    let spec = build_with(&with_mount(image_volume.clone()), &sandbox(), &image(), &runtime(), &resolved).unwrap().spec;
    let last = spec.mounts().clone().unwrap().pop().unwrap();
    assert_eq!(last.source().as_deref(), Some(std::path::Path::new("/vol/data/sub/dir")));
    assert!(last.options().clone().unwrap().contains(&"ro".to_string()));
    let escape = model::Mount { image_sub_path: "../etc".into(), ..image_volume };
    let err = build_with(&with_mount(escape), &sandbox(), &image(), &runtime(), &resolved).unwrap_err();
    assert_eq!(err.field, "config.mounts[0].image_sub_path");
}

#[test]
fn security_rules() {
    let mut config = config();
    security(&mut config).privileged = true;
    let err = error(&config);
    assert_eq!(
        (err.kind, err.field.as_str()),
        (ErrorKind::FailedPrecondition, "config.linux.security_context.privileged")
    );

    let mut config = self::config();
    security(&mut config).capabilities =
        Some(model::Capability { add_capabilities: vec!["CAP_NOPE".into()], ..Default::default() });
    assert_eq!(error(&config).field, "config.linux.security_context.capabilities.add_capabilities[0]");

    let mut config = self::config();
    security(&mut config).capabilities =
        Some(model::Capability { add_ambient_capabilities: vec!["NET_ADMIN".into()], ..Default::default() });
    assert_eq!(error(&config).field, "config.linux.security_context.capabilities.add_ambient_capabilities[0]");

    let mut config = self::config();
    security(&mut config).apparmor = Some(model::SecurityProfile {
        profile_type: model::security_profile::ProfileType::Localhost as i32,
        localhost_ref: "my-profile".into(),
    });
    let err = error(&config);
    assert_eq!(err.field, "config.linux.security_context.apparmor");
    assert!(err.message.contains("AppArmor is not enabled"), "{}", err.message);
    security(&mut config).apparmor = Some(model::SecurityProfile::default());
    assert!(
        built(&config).spec.process().as_ref().unwrap().apparmor_profile().is_none(),
        "RuntimeDefault: nothing to apply"
    );

    let mut config = self::config();
    security(&mut config).seccomp = Some(model::SecurityProfile {
        profile_type: model::security_profile::ProfileType::Unconfined as i32,
        ..Default::default()
    });
    assert!(built(&config).spec.linux().as_ref().unwrap().seccomp().is_none());
    // Nothing named at all: Unconfined, as the CRI documents the empty seccomp_profile_path;
    // RuntimeDefault when the daemon is configured so (the kubelet's --seccomp-default).
    security(&mut config).seccomp = None;
    assert!(built(&config).spec.linux().as_ref().unwrap().seccomp().is_none(), "unconfined when unset");
    let defaulting = RuntimeSettings { seccomp_default_when_empty: true, ..runtime() };
    let spec = build_with(&config, &sandbox(), &image(), &defaulting, &resolved()).unwrap().spec;
    assert!(spec.linux().as_ref().unwrap().seccomp().is_some(), "RuntimeDefault when configured so");
    // The deprecated string field, when the message is absent.
    #[allow(deprecated)]
    for (path, confined) in [("runtime/default", true), ("docker/default", true), ("unconfined", false)] {
        security(&mut config).seccomp_profile_path = path.into();
        assert_eq!(built(&config).spec.linux().as_ref().unwrap().seccomp().is_some(), confined, "{path}");
    }
    #[allow(deprecated)]
    {
        security(&mut config).seccomp_profile_path = "strict".into();
    }
    assert_eq!(error(&config).field, "config.linux.security_context.seccomp_profile_path");
    // A present message with its zero value is RuntimeDefault, whatever the old field says.
    security(&mut config).seccomp = Some(model::SecurityProfile::default());
    assert!(built(&config).spec.linux().as_ref().unwrap().seccomp().is_some(), "RuntimeDefault named");
    security(&mut config).seccomp = Some(model::SecurityProfile { profile_type: 7, ..Default::default() });
    assert_eq!(error(&config).field, "config.linux.security_context.seccomp.profile_type");

    let mut config = self::config();
    security(&mut config).masked_paths = vec!["/proc/only-this".into()];
    let linux = built(&config).spec.linux().clone().unwrap();
    assert_eq!(linux.masked_paths().clone().unwrap(), vec!["/proc/only-this"]);
    assert_eq!(linux.readonly_paths().clone().unwrap().len(), DEFAULT_READONLY_PATHS.len());
}

#[test]
fn namespace_rules() {
    let with_pid = |mode: model::NamespaceMode| {
        let mut config = config();
        security(&mut config).namespace_options =
            Some(model::NamespaceOption { pid: mode as i32, target_id: "other".into(), ..Default::default() });
        config
    };
    let err = error(&with_pid(model::NamespaceMode::Pod));
    assert_eq!(err.field, "config.linux.security_context.namespace_options.pid");
    let sandbox = SandboxView { pod_pid: Some("/proc/42/ns/pid".into()), ..sandbox() };
    let spec =
        build_with(&with_pid(model::NamespaceMode::Pod), &sandbox, &image(), &runtime(), &resolved()).unwrap().spec;
    let pid = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .find(|n| n.typ() == LinuxNamespaceType::Pid);
    assert_eq!(pid.unwrap().path().as_deref(), Some(std::path::Path::new("/proc/42/ns/pid")));
    assert_eq!(
        error(&with_pid(model::NamespaceMode::Target)).field,
        "config.linux.security_context.namespace_options.target_id"
    );
    let mut config = config();
    security(&mut config).namespace_options = Some(model::NamespaceOption {
        pid: model::NamespaceMode::Container as i32,
        userns_options: Some(model::UserNamespace { mode: model::NamespaceMode::Pod as i32, ..Default::default() }),
        ..Default::default()
    });
    assert_eq!(error(&config).kind, ErrorKind::FailedPrecondition);
}

#[test]
fn cgroup_paths_follow_the_driver() {
    assert_eq!(cgroups_path(CgroupDriver::Cgroupfs, "/kubepods/pod1", "c1").unwrap(), "/kubepods/pod1/lockstep-c1");
    assert_eq!(cgroups_path(CgroupDriver::Cgroupfs, "", "c1").unwrap(), "/lockstep/lockstep-c1");
    assert_eq!(
        cgroups_path(CgroupDriver::Systemd, "kubepods-besteffort-pod1.slice", "c1").unwrap(),
        "kubepods-besteffort-pod1.slice:lockstep:c1"
    );
    assert!(cgroups_path(CgroupDriver::Systemd, "/kubepods/pod1", "c1").unwrap_err().message.contains("systemd slice"));
    assert!(cgroups_path(CgroupDriver::Cgroupfs, "kubepods.slice", "c1").is_err());
}

#[test]
fn stop_signal_precedence() {
    let mut config = config();
    let mut image = image();
    assert_eq!(stop_signal(&config, &image).unwrap(), 15);
    image.stop_signal = "SIGQUIT".into();
    assert_eq!(stop_signal(&config, &image).unwrap(), 3);
    config.stop_signal = model::Signal::Sigint as i32;
    assert_eq!(stop_signal(&config, &image).unwrap(), 2);
    config.stop_signal = 0;
    image.stop_signal = "SIGNOPE".into();
    assert_eq!(stop_signal(&config, &image).unwrap_err().field, "image.stop_signal");
}

#[test]
fn log_files_stay_inside_the_pods_log_directory() {
    let dir = "/var/log/pods/ns_web_uid";
    assert_eq!(log_file(dir, "app/0.log").unwrap(), Some(PathBuf::from("/var/log/pods/ns_web_uid/app/0.log")));
    assert_eq!(log_file("", "app/0.log").unwrap(), None);
    assert_eq!(log_file(dir, "").unwrap(), None);
    assert_eq!(log_file(dir, "../other/0.log").unwrap_err().field, "config.log_path");
    assert_eq!(log_file(dir, "/etc/passwd").unwrap_err().field, "config.log_path");
    assert_eq!(log_file("relative", "0.log").unwrap_err().field, "sandbox_config.log_directory");
}

mod properties {
    //! CreateContainer requests as any minor's kubelet could send them (a real request's
    //! encoding, mutated): the spec builder answers each with a spec or an error that names
    //! the field at fault, and never panics.
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::wire_cases::{in_every_minor, mutated};

    fn seed() -> Vec<u8> {
        let mut config = config();
        config.mounts.push(model::Mount {
            container_path: "/data".into(),
            host_path: "/var/lib/data".into(),
            readonly: true,
            ..Default::default()
        });
        let linux = config.linux.get_or_insert_with(Default::default);
        linux.resources = Some(model::LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        });
        let security = linux.security_context.get_or_insert_with(Default::default);
        security.capabilities = Some(model::Capability {
            add_capabilities: vec!["NET_ADMIN".into()],
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
        security.run_as_user = Some(model::Int64Value { value: 1000 });
        model::CreateContainerRequest { pod_sandbox_id: "p1".into(), config: Some(config), ..Default::default() }
            .encode_to_vec()
    }

    proptest! {
        #[test]
        fn any_create_request_of_any_minor_gets_a_spec_or_an_error_naming_its_field(bytes in mutated(seed())) {
            for request in in_every_minor!(&bytes, CreateContainerRequest).into_iter().flatten() {
                let Some(config) = request.config else { continue };
                if let Err(e) = build_with(&config, &sandbox(), &image(), &runtime(), &resolved()) {
                    prop_assert!(!e.field.is_empty(), "{e}");
                }
            }
        }
    }
}

#[test]
fn a_container_of_a_user_namespace_pod_joins_it_first_with_its_mappings() {
    use crate::host::idmap::{IdMapping, IdMappings};
    let range = IdMapping { container_id: 0, host_id: 65536, length: 65536 };
    let userns = Some((PathBuf::from("/run/l/sb1/ns/user"), IdMappings { uids: range, gids: range }));
    let pod = SandboxView { user: userns, ..sandbox() };
    let with_userns = |mode: model::NamespaceMode, ids: Vec<model::IdMapping>| {
        let mut config = config();
        security(&mut config).namespace_options = Some(model::NamespaceOption {
            pid: model::NamespaceMode::Container as i32,
            userns_options: Some(model::UserNamespace { mode: mode as i32, uids: ids.clone(), gids: ids }),
            ..Default::default()
        });
        config
    };
    let kubelet = vec![model::IdMapping { container_id: 0, host_id: 65536, length: 65536 }];
    for config in [config(), with_userns(model::NamespaceMode::Pod, kubelet.clone())] {
        let spec = build_with(&config, &pod, &image(), &runtime(), &resolved()).unwrap().spec;
        let linux = spec.linux().as_ref().unwrap();
        let first = &linux.namespaces().as_ref().unwrap()[0];
        assert_eq!(first.typ(), LinuxNamespaceType::User);
        assert_eq!(first.path().as_deref(), Some(std::path::Path::new("/run/l/sb1/ns/user")));
        for mappings in [linux.uid_mappings(), linux.gid_mappings()] {
            let m = &mappings.as_ref().unwrap()[0];
            assert_eq!((m.container_id(), m.host_id(), m.size()), (0, 65536, 65536));
        }
    }
    let field = "config.linux.security_context.namespace_options.userns_options";
    let refused = |config: &model::ContainerConfig, sandbox: &SandboxView| {
        build_with(config, sandbox, &image(), &runtime(), &resolved()).unwrap_err()
    };
    let other = vec![model::IdMapping { container_id: 0, host_id: 131072, length: 65536 }];
    let e = refused(&with_userns(model::NamespaceMode::Pod, other), &pod);
    assert_eq!((e.kind, e.field.as_str()), (ErrorKind::InvalidArgument, format!("{field}.uids").as_str()));
    let e = refused(&with_userns(model::NamespaceMode::Node, vec![]), &pod);
    assert_eq!((e.kind, e.field.as_str()), (ErrorKind::InvalidArgument, format!("{field}.mode").as_str()));
    let e = refused(&with_userns(model::NamespaceMode::Pod, kubelet), &sandbox());
    assert_eq!((e.kind, e.field.as_str()), (ErrorKind::FailedPrecondition, format!("{field}.mode").as_str()));
    let mut privileged = config();
    security(&mut privileged).privileged = true;
    let e = refused(&privileged, &SandboxView { privileged: true, ..pod.clone() });
    assert_eq!(e.field, "config.linux.security_context.privileged");
    // Without a user namespace, no user entry and no mappings.
    let spec = built(&config()).spec;
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.namespaces().as_ref().unwrap().iter().all(|n| n.typ() != LinuxNamespaceType::User));
    assert!(linux.uid_mappings().is_none());
}
