//! The OCI runtime spec of a container, as a pure function of the CRI ContainerConfig, a view
//! of its sandbox, a view of its image, the runtime's settings and the facts `host::resolve`
//! read for it. Defaults as secure as CRI-O's: nine capabilities, lockstep's own seccomp
//! profile, masked and read-only /proc and /sys paths. Touches nothing; snapshot-tested.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use lockstep_cri::model;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxNamespace,
    LinuxNamespaceType, LinuxResources, Mount, Process, Root, Spec, User,
};

use super::capabilities::{self, CapSet};
use super::host::{AppArmor, HostFacts, Resolved, ResolvedDevice};
use super::resources;
use super::seccomp::Profile;
use super::signal;
use super::user::ResolvedUser;
use super::SpecError;
use crate::config::CgroupDriver;
use crate::host::idmap::{IdMapping, IdMappings};
use crate::oci::HandlerFeatures;

/// How a container gets one of the namespaces its sandbox decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceSource {
    /// The host's own (hostNetwork, hostIPC, hostPID): no namespace entry at all.
    Host,
    /// Join the sandbox's pinned namespace at this path.
    Join(PathBuf),
    /// A fresh one for this container alone.
    New,
}

/// What a sandbox offers its containers (filled by the sandbox code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxView {
    pub id: String,
    /// The pod's metadata, for the container's annotations.
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    /// The pod's hostname (set when the UTS namespace is not the host's).
    pub hostname: String,
    pub network: NamespaceSource,
    pub ipc: NamespaceSource,
    pub uts: NamespaceSource,
    /// The pod's shared pid namespace, when its containers share one (POD pid mode).
    pub pod_pid: Option<PathBuf>,
    /// The pod's own user namespace (`hostUsers: false`): its pinned path and mappings.
    pub user: Option<(PathBuf, IdMappings)>,
    /// Files and the /dev/shm the sandbox prepared; bind-mounted into each container.
    pub resolv_conf: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub hostname_file: Option<PathBuf>,
    pub shm: Option<PathBuf>,
    /// The kubelet's pod cgroup (cgroupfs path or systemd slice).
    pub cgroup_parent: String,
    /// Whether the pod may run privileged containers.
    pub privileged: bool,
}

/// What the image says about running it (filled by the image code).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageView {
    /// The reference the container was created from, for annotations.
    pub name: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// The image's STOPSIGNAL, "" if none.
    pub stop_signal: String,
    /// The container's root filesystem (the overlay of the image's layers and a writable layer).
    pub rootfs: PathBuf,
}

/// lockstepd's settings and facts that shape every container.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSettings {
    pub cgroup_driver: CgroupDriver,
    /// Give each container its own cgroup namespace (pure cgroup v2 hosts).
    pub cgroup_namespace: bool,
    /// Capabilities a container gets unless it adds or drops.
    pub default_capabilities: CapSet,
    pub default_seccomp: Profile,
    /// A request that names no seccomp profile gets `default_seccomp` (else Unconfined, the
    /// CRI's default).
    pub seccomp_default_when_empty: bool,
    /// What the handler supports.
    pub features: HandlerFeatures,
    pub host: HostFacts,
    /// The host's architecture, as Rust names it (std::env::consts::ARCH).
    pub arch: String,
    /// Key prefixes of annotations the OCI runtime may act on that still reach config.json
    /// (`[runtime] allowed_annotations`); empty: every `run.oci.*` and `org.criu.*` is dropped.
    pub allowed_annotations: Vec<String>,
}

impl RuntimeSettings {
    /// Settings with CRI-O's defaults, for `host`.
    pub fn new(cgroup_driver: CgroupDriver, features: HandlerFeatures, host: HostFacts) -> Self {
        RuntimeSettings {
            cgroup_driver,
            // As containerd: a private cgroup namespace where the host is pure cgroup v2.
            cgroup_namespace: host.pure_cgroup_v2,
            default_capabilities: CapSet::from_names(capabilities::DEFAULT),
            default_seccomp: Profile::runtime_default(),
            seccomp_default_when_empty: false,
            features,
            host,
            arch: std::env::consts::ARCH.to_string(),
            allowed_annotations: Vec::new(),
        }
    }
}

/// Everything `build` reads.
#[derive(Debug, Clone, Copy)]
pub struct SpecInput<'a> {
    /// The container's id.
    pub id: &'a str,
    pub config: &'a model::ContainerConfig,
    pub sandbox: &'a SandboxView,
    pub image: &'a ImageView,
    pub runtime: &'a RuntimeSettings,
    pub resolved: &'a Resolved,
}

/// The spec and what else the container record needs from the same decisions.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltSpec {
    pub spec: Spec,
    /// The signal StopContainer sends first.
    pub stop_signal: i32,
    pub user: ResolvedUser,
    /// Requests honoured only in part, to log (an OOM score raised, an env value not UTF-8).
    pub warnings: Vec<String>,
}

/// The paths CRI-O and containerd mask by default (overridden by the request's own list).
pub const DEFAULT_MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// The paths mounted read-only by default.
pub const DEFAULT_READONLY_PATHS: [&str; 5] =
    ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const SECURITY: &str = "config.linux.security_context";

/// Builds the container's OCI spec.
pub fn build(input: &SpecInput<'_>) -> Result<BuiltSpec, SpecError> {
    let config = input.config;
    let default_sc = model::LinuxContainerSecurityContext::default();
    let linux = config.linux.as_ref();
    let sc = linux.and_then(|l| l.security_context.as_ref()).unwrap_or(&default_sc);
    if sc.privileged && !input.sandbox.privileged {
        return Err(SpecError::precondition(
            format!("{SECURITY}.privileged"),
            "a privileged container needs a privileged sandbox (the pod's security context)",
        ));
    }
    let mut warnings = Vec::new();

    let caps = container_capabilities(sc, input.runtime)?;
    let mut process = Process::default();
    // oci-spec's default process carries an RLIMIT_NOFILE of 1024: containers inherit the
    // runtime's limits instead, as with containerd and CRI-O.
    process.set_rlimits(None);
    process.set_terminal(Some(config.tty));
    process.set_args(Some(command_line(config, input.image)?));
    process.set_env(Some(environment(config, input.image, input.sandbox, &mut warnings)?));
    process.set_cwd(working_dir(config, input.image)?);
    let user = &input.resolved.user;
    let mut oci_user = User::default();
    oci_user.set_uid(user.uid);
    oci_user.set_gid(user.gid);
    oci_user.set_additional_gids(Some(user.additional_gids.clone()));
    process.set_user(oci_user);
    process.set_capabilities(Some(capability_sets(caps, &ambient_capabilities(sc, caps)?)));
    process.set_no_new_privileges(Some(sc.no_new_privs));
    if let Some(r) = linux.and_then(|l| l.resources.as_ref()) {
        let (score, note) =
            resources::oom_score_adj(r.oom_score_adj, input.runtime.host.oom, "config.linux.resources.oom_score_adj")?;
        process.set_oom_score_adj(Some(score));
        warnings.extend(note);
    }
    process.set_apparmor_profile(apparmor_profile(sc, &input.runtime.host)?);

    let mut root = Root::default();
    root.set_path(input.image.rootfs.clone());
    root.set_readonly(Some(sc.readonly_rootfs));

    let mut spec = Spec::default();
    spec.set_version("1.0.2".to_string());
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_hostname((input.sandbox.uts != NamespaceSource::Host).then(|| input.sandbox.hostname.clone()));
    let (mounts, rootfs_propagation) = mounts(config, sc, input)?;
    spec.set_mounts(Some(mounts));
    spec.set_annotations(Some(annotations(input, &mut warnings)));

    let mut oci_linux = oci_spec::runtime::Linux::default();
    oci_linux.set_namespaces(Some(namespaces(sc, input)?));
    if let Some((_, mappings)) = &input.sandbox.user {
        if sc.privileged {
            return Err(SpecError::invalid(
                format!("{SECURITY}.privileged"),
                "a privileged container cannot run in a pod with a user namespace (hostUsers: false)",
            ));
        }
        // The runtimes join the pinned namespace; crun also reads the mappings to give the
        // container's cgroup to its root, and runc wants them alongside the path.
        let oci = |m: &IdMapping| {
            oci_spec::runtime::LinuxIdMappingBuilder::default()
                .container_id(m.container_id)
                .host_id(m.host_id)
                .size(m.length)
                .build()
                .map_err(|e| SpecError::invalid(format!("{SECURITY}.namespace_options.userns_options"), e.to_string()))
        };
        oci_linux.set_uid_mappings(Some(vec![oci(&mappings.uids)?]));
        oci_linux.set_gid_mappings(Some(vec![oci(&mappings.gids)?]));
    }
    oci_linux.set_cgroups_path(Some(PathBuf::from(cgroups_path(
        input.runtime.cgroup_driver,
        &input.sandbox.cgroup_parent,
        input.id,
    )?)));
    let mut oci_resources = match linux.and_then(|l| l.resources.as_ref()) {
        Some(r) => resources::linux_resources(r, "config.linux.resources")?,
        None => LinuxResources::default(),
    };
    warnings.extend(resources::tolerate_missing_hugetlb(&mut oci_resources, input.runtime.host.hugetlb));
    let (devices, device_rules) = devices(sc.privileged, input.resolved);
    oci_resources.set_devices(Some(device_rules));
    oci_linux.set_devices(Some(devices));
    oci_linux.set_resources(Some(oci_resources));
    oci_linux.set_rootfs_propagation(rootfs_propagation);
    if sc.privileged {
        oci_linux.set_masked_paths(Some(Vec::new()));
        oci_linux.set_readonly_paths(Some(Vec::new()));
    } else {
        let or_default = |given: &[String], default: &[&str]| -> Vec<String> {
            if given.is_empty() {
                default.iter().map(|s| s.to_string()).collect()
            } else {
                given.to_vec()
            }
        };
        oci_linux.set_masked_paths(Some(or_default(&sc.masked_paths, &DEFAULT_MASKED_PATHS)));
        oci_linux.set_readonly_paths(Some(or_default(&sc.readonly_paths, &DEFAULT_READONLY_PATHS)));
        oci_linux.set_seccomp(seccomp_profile(sc, input)?.map(|p| p.render(caps, &input.runtime.arch)));
    }
    spec.set_linux(Some(oci_linux));

    Ok(BuiltSpec { spec, stop_signal: stop_signal(config, input.image)?, user: user.clone(), warnings })
}

/// Command and args as the kubelet means them: the request's command replaces the image's
/// ENTRYPOINT (and then the image's CMD is dropped too); the request's args replace CMD.
pub fn command_line(config: &model::ContainerConfig, image: &ImageView) -> Result<Vec<String>, SpecError> {
    let mut command = config.command.clone();
    let mut args = config.args.clone();
    if command.is_empty() {
        // An ENTRYPOINT of [""] is Docker's way of saying "none".
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
        if args.is_empty() {
            args = image.cmd.clone();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::invalid(
            "config.command",
            "nothing to run: neither the request nor the image gives a command (ENTRYPOINT/CMD)",
        ));
    }
    Ok(command)
}

/// PATH by default, HOSTNAME, TERM for a terminal, then the image's env, then the request's;
/// a later value replaces an earlier one of the same name in place.
fn environment(
    config: &model::ContainerConfig,
    image: &ImageView,
    sandbox: &SandboxView,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, SpecError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |entry: String| {
        let key = entry.split_once('=').map(|(k, _)| k).unwrap_or(&entry).to_string();
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = entry,
            None => env.push((key, entry)),
        }
    };
    set(DEFAULT_PATH.to_string());
    if sandbox.uts != NamespaceSource::Host && !sandbox.hostname.is_empty() {
        set(format!("HOSTNAME={}", sandbox.hostname));
    }
    if config.tty {
        set("TERM=xterm".to_string());
    }
    for entry in &image.env {
        set(entry.clone());
    }
    for (i, kv) in config.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') || kv.key.contains('\0') {
            return Err(SpecError::invalid(
                format!("config.envs[{i}].key"),
                format!("{:?} is not a variable name", kv.key),
            ));
        }
        let value = match std::str::from_utf8(&kv.value) {
            Ok(text) => text.to_string(),
            Err(_) => {
                // config.json is JSON and the runtimes read it as UTF-8: replace what cannot be
                // carried, as containerd and CRI-O end up doing.
                warnings.push(format!(
                    "envs[{i}] ({}) is not valid UTF-8; invalid bytes were replaced with U+FFFD",
                    kv.key
                ));
                String::from_utf8_lossy(&kv.value).into_owned()
            }
        };
        if value.contains('\0') {
            return Err(SpecError::invalid(format!("config.envs[{i}].value"), "contains a NUL byte"));
        }
        set(format!("{}={value}", kv.key));
    }
    Ok(env.into_iter().map(|(_, entry)| entry).collect())
}

fn working_dir(config: &model::ContainerConfig, image: &ImageView) -> Result<PathBuf, SpecError> {
    let (dir, field) = if !config.working_dir.is_empty() {
        (config.working_dir.as_str(), "config.working_dir")
    } else if !image.working_dir.is_empty() {
        (image.working_dir.as_str(), "image.working_dir")
    } else {
        ("/", "")
    };
    if !dir.starts_with('/') {
        return Err(SpecError::invalid(field, format!("{dir:?} is not an absolute path")));
    }
    Ok(PathBuf::from(dir))
}

/// The container's capability set: the defaults with the request's adds and drops, or for a
/// privileged container everything the host holds.
fn container_capabilities(
    sc: &model::LinuxContainerSecurityContext,
    runtime: &RuntimeSettings,
) -> Result<CapSet, SpecError> {
    if sc.privileged {
        return Ok(CapSet::all().intersect(runtime.host.bounding));
    }
    let (add, drop) = sc
        .capabilities
        .as_ref()
        .map(|c| (c.add_capabilities.as_slice(), c.drop_capabilities.as_slice()))
        .unwrap_or((&[], &[]));
    capabilities::effective(
        runtime.default_capabilities,
        add,
        drop,
        runtime.host.bounding,
        &format!("{SECURITY}.capabilities"),
    )
}

/// The request's ambient capabilities, each of which the container must also hold.
fn ambient_capabilities(sc: &model::LinuxContainerSecurityContext, caps: CapSet) -> Result<CapSet, SpecError> {
    let mut ambient = CapSet::default();
    let names = sc.capabilities.as_ref().map(|c| c.add_ambient_capabilities.as_slice()).unwrap_or(&[]);
    for (i, name) in names.iter().enumerate() {
        let field = format!("{SECURITY}.capabilities.add_ambient_capabilities[{i}]");
        let n = capabilities::number(name)
            .ok_or_else(|| SpecError::invalid(&field, format!("{name:?} is not a Linux capability")))?;
        if !caps.contains(n) {
            return Err(SpecError::invalid(
                field,
                format!(
                    "{} is not among the container's capabilities, so it cannot be ambient",
                    capabilities::NAMES[n]
                ),
            ));
        }
        ambient.insert(n);
    }
    Ok(ambient)
}

fn capability_sets(caps: CapSet, ambient: &CapSet) -> LinuxCapabilities {
    let set = |s: CapSet| -> Capabilities {
        s.names()
            .into_iter()
            .filter_map(|n| serde_json::from_value::<Capability>(n.into()).ok())
            .collect::<HashSet<_>>()
    };
    let mut sets = LinuxCapabilities::default();
    sets.set_bounding(Some(set(caps)));
    sets.set_effective(Some(set(caps)));
    sets.set_permitted(Some(set(caps)));
    sets.set_inheritable(Some(set(*ambient)));
    sets.set_ambient(Some(set(*ambient)));
    sets
}

/// AppArmor: a profile by name when the kernel enforces AppArmor; RuntimeDefault and
/// Unconfined need nothing when it does not; a named profile then is an error, as it cannot
/// be applied.
#[allow(deprecated)] // the old string field is read when the new one is absent
fn apparmor_profile(sc: &model::LinuxContainerSecurityContext, host: &HostFacts) -> Result<Option<String>, SpecError> {
    use model::security_profile::ProfileType;
    let field = format!("{SECURITY}.apparmor");
    let (kind, name) = match &sc.apparmor {
        Some(p) => {
            (ProfileType::try_from(p.profile_type).unwrap_or(ProfileType::RuntimeDefault), p.localhost_ref.clone())
        }
        None => match sc.apparmor_profile.as_str() {
            "" | "runtime/default" => (ProfileType::RuntimeDefault, String::new()),
            "unconfined" => (ProfileType::Unconfined, String::new()),
            other => (ProfileType::Localhost, other.trim_start_matches("localhost/").to_string()),
        },
    };
    if sc.privileged || kind == ProfileType::Unconfined {
        return Ok(None);
    }
    match (&host.apparmor, kind) {
        (AppArmor::Disabled, ProfileType::Localhost) => Err(SpecError::precondition(
            field,
            format!("AppArmor is not enabled on this host, so profile {name:?} cannot be applied"),
        )),
        (AppArmor::Disabled, _) => Ok(None),
        (AppArmor::Enabled { loaded }, ProfileType::Localhost) => {
            if loaded.contains(&name) {
                Ok(Some(name))
            } else {
                Err(SpecError::not_found(field, format!("AppArmor profile {name:?} is not loaded")))
            }
        }
        (AppArmor::Enabled { loaded }, _) => {
            // lockstep ships no AppArmor profile of its own yet; use one the host provides.
            const DEFAULT: &str = "lockstep-default";
            if loaded.contains(DEFAULT) {
                Ok(Some(DEFAULT.to_string()))
            } else {
                Err(SpecError::precondition(
                    field,
                    format!("RuntimeDefault needs the AppArmor profile {DEFAULT:?} loaded on this host"),
                ))
            }
        }
    }
}

/// The seccomp profile to render: RuntimeDefault, Unconfined (none), or the Localhost profile
/// read by `host::resolve`. The `seccomp` message decides when present (its zero value is
/// RuntimeDefault); else the deprecated `seccomp_profile_path`, whose empty value the CRI
/// documents as unconfined (RuntimeDefault when the daemon is configured so).
#[allow(deprecated)] // the old string field is read when the new one is absent
fn seccomp_profile<'a>(
    sc: &model::LinuxContainerSecurityContext,
    input: &'a SpecInput<'_>,
) -> Result<Option<&'a Profile>, SpecError> {
    use model::security_profile::ProfileType;
    let kind = match &sc.seccomp {
        Some(p) => ProfileType::try_from(p.profile_type).map_err(|_| {
            SpecError::invalid(
                format!("{SECURITY}.seccomp.profile_type"),
                format!("{} is not a profile type", p.profile_type),
            )
        })?,
        None => match sc.seccomp_profile_path.as_str() {
            "" if input.runtime.seccomp_default_when_empty => ProfileType::RuntimeDefault,
            "" | "unconfined" => ProfileType::Unconfined,
            "runtime/default" | "docker/default" => ProfileType::RuntimeDefault,
            p if p.starts_with("localhost/") => ProfileType::Localhost,
            other => {
                return Err(SpecError::invalid(
                    format!("{SECURITY}.seccomp_profile_path"),
                    format!("{other:?} is not runtime/default, unconfined or localhost/<path>"),
                ))
            }
        },
    };
    match kind {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault => Ok(Some(&input.runtime.default_seccomp)),
        ProfileType::Localhost => input.resolved.seccomp_localhost.as_ref().map(Some).ok_or_else(|| {
            SpecError::precondition(format!("{SECURITY}.seccomp.localhost_ref"), "the Localhost profile was not read")
        }),
    }
}

/// The base mounts every container gets, then the sandbox's files, then the request's mounts
/// (each replacing a base mount at the same place), parents before children. Also the rootfs
/// propagation the request's mounts need.
fn mounts(
    config: &model::ContainerConfig,
    sc: &model::LinuxContainerSecurityContext,
    input: &SpecInput<'_>,
) -> Result<(Vec<Mount>, Option<String>), SpecError> {
    let sandbox = input.sandbox;
    let ro_sys = if sc.privileged { "rw" } else { "ro" };
    let mut base = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", ro_sys]),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", ro_sys]),
    ];
    let shm = match (&sandbox.shm, &sandbox.ipc) {
        (Some(path), _) => bind("/dev/shm", path, &["rbind", "nosuid", "noexec", "nodev"]),
        (None, NamespaceSource::Host) => {
            bind("/dev/shm", Path::new("/dev/shm"), &["rbind", "nosuid", "noexec", "nodev"])
        }
        (None, _) => mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
    };
    base.push(shm);
    let file_mode = if sc.readonly_rootfs { "ro" } else { "rw" };
    for (dest, source) in [
        ("/etc/resolv.conf", &sandbox.resolv_conf),
        ("/etc/hostname", &sandbox.hostname_file),
        ("/etc/hosts", &sandbox.hosts),
    ] {
        if let Some(source) = source {
            base.push(bind(dest, source, &["rbind", "rprivate", file_mode]));
        }
    }

    let mut requested: Vec<Mount> = Vec::new();
    let mut propagation = None::<&str>;
    let mut seen = BTreeMap::new();
    for (i, m) in config.mounts.iter().enumerate() {
        let field = |name: &str| format!("config.mounts[{i}].{name}");
        let dest = clean_absolute(&m.container_path).ok_or_else(|| {
            SpecError::invalid(field("container_path"), format!("{:?} is not an absolute path", m.container_path))
        })?;
        if let Some(first) = seen.insert(dest.clone(), i) {
            return Err(SpecError::invalid(
                field("container_path"),
                format!("{} is already mounted by config.mounts[{first}]", dest.display()),
            ));
        }
        let idmapped = idmapped_mount(m, i, sandbox)?;
        let image = m.image.as_ref().filter(|img| !img.image.is_empty());
        let source = match image {
            _ if idmapped => input.resolved.idmapped_mounts.get(&i).cloned().ok_or_else(|| {
                SpecError::precondition(field("uid_mappings"), "the idmapped copy of the host path is not prepared")
            })?,
            Some(img) => {
                let root = input.resolved.image_volumes.get(&img.image).ok_or_else(|| {
                    SpecError::precondition(field("image"), format!("image volume {:?} is not prepared", img.image))
                })?;
                if m.image_sub_path.is_empty() {
                    root.clone()
                } else {
                    let sub = Path::new(&m.image_sub_path);
                    if sub.is_absolute() || sub.components().any(|c| !matches!(c, Component::Normal(_))) {
                        return Err(SpecError::invalid(
                            field("image_sub_path"),
                            format!("{:?} must be a relative path inside the image", m.image_sub_path),
                        ));
                    }
                    input.resolved.image_sub_paths.get(&i).cloned().unwrap_or_else(|| root.join(sub))
                }
            }
            None if m.host_path.is_empty() => return Err(SpecError::invalid(field("host_path"), "is empty")),
            None => PathBuf::from(&m.host_path),
        };
        let mut options = vec!["rbind"];
        let mode =
            model::MountPropagation::try_from(m.propagation).unwrap_or(model::MountPropagation::PropagationPrivate);
        options.push(match mode {
            model::MountPropagation::PropagationPrivate => "rprivate",
            model::MountPropagation::PropagationHostToContainer => {
                propagation = propagation.or(Some("rslave"));
                "rslave"
            }
            model::MountPropagation::PropagationBidirectional => {
                propagation = Some("rshared");
                "rshared"
            }
        });
        if image.is_some() {
            options.extend(["ro", "nosuid", "nodev"]);
        } else if m.recursive_read_only {
            if !m.readonly {
                return Err(SpecError::invalid(field("recursive_read_only"), "needs readonly as well"));
            }
            if mode != model::MountPropagation::PropagationPrivate {
                return Err(SpecError::invalid(field("recursive_read_only"), "needs private propagation"));
            }
            if !input.runtime.features.recursive_read_only_mounts {
                return Err(SpecError::precondition(
                    field("recursive_read_only"),
                    "this runtime handler cannot make mounts recursively read-only",
                ));
            }
            options.push("rro");
        } else {
            options.push(if m.readonly { "ro" } else { "rw" });
        }
        requested.push(bind(&dest.to_string_lossy(), &source, &options));
    }
    // Parents before children, so a mount inside another lands on top of it.
    requested.sort_by_key(|m| m.destination().components().count());
    let overridden: HashSet<PathBuf> = requested.iter().map(|m| m.destination().clone()).collect();
    base.retain(|m| !overridden.contains(m.destination()));
    base.extend(requested);
    Ok((base, propagation.map(str::to_string)))
}

fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(kind.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn bind(dest: &str, source: &Path, options: &[&str]) -> Mount {
    let mut m = mount(dest, "bind", "", options);
    m.set_source(Some(source.to_path_buf()));
    m
}

/// An absolute path without `.`/`..` games; None when relative (or escaping upwards).
fn clean_absolute(path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    if !path.is_absolute() {
        return None;
    }
    let mut clean = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(part) => clean.push(part),
            // Popping happens in the guard; popping past "/" means the path escapes.
            Component::ParentDir if !clean.pop() => return None,
            _ => {}
        }
    }
    Some(clean)
}

fn namespaces(
    sc: &model::LinuxContainerSecurityContext,
    input: &SpecInput<'_>,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let ns = |kind: LinuxNamespaceType, path: Option<&Path>| {
        let mut n = LinuxNamespace::default();
        n.set_typ(kind);
        n.set_path(path.map(Path::to_path_buf));
        n
    };
    let mut list = vec![ns(LinuxNamespaceType::Mount, None)];
    let sandbox = input.sandbox;
    for (kind, source) in [
        (LinuxNamespaceType::Network, &sandbox.network),
        (LinuxNamespaceType::Ipc, &sandbox.ipc),
        (LinuxNamespaceType::Uts, &sandbox.uts),
    ] {
        match source {
            NamespaceSource::Host => {}
            NamespaceSource::Join(path) => list.push(ns(kind, Some(path))),
            NamespaceSource::New => list.push(ns(kind, None)),
        }
    }
    let options = sc.namespace_options.clone().unwrap_or_default();
    let field = format!("{SECURITY}.namespace_options");
    match model::NamespaceMode::try_from(options.pid).unwrap_or(model::NamespaceMode::Container) {
        model::NamespaceMode::Container => list.push(ns(LinuxNamespaceType::Pid, None)),
        model::NamespaceMode::Node => {}
        model::NamespaceMode::Pod => {
            let path = sandbox.pod_pid.as_deref().ok_or_else(|| {
                SpecError::precondition(format!("{field}.pid"), "the sandbox has no shared pid namespace (POD mode)")
            })?;
            list.push(ns(LinuxNamespaceType::Pid, Some(path)));
        }
        model::NamespaceMode::Target => {
            let path = input.resolved.target_pid_namespace.as_deref().ok_or_else(|| {
                SpecError::precondition(
                    format!("{field}.target_id"),
                    format!("no pid namespace of container {:?}", options.target_id),
                )
            })?;
            list.push(ns(LinuxNamespaceType::Pid, Some(path)));
        }
    }
    if let Some((path, _)) = user_namespace(&options, input.sandbox, &field)? {
        // First: the pod's other namespaces belong to it.
        list.insert(0, ns(LinuxNamespaceType::User, Some(path)));
    }
    if input.runtime.cgroup_namespace {
        list.push(ns(LinuxNamespaceType::Cgroup, None));
    }
    Ok(list)
}

/// Whether mount `i` asks to be idmapped (the kubelet's volumes of a `hostUsers: false` pod):
/// only by the pod's own mapping, which lockstepd idmaps it with (the pod's user namespace).
pub fn idmapped_mount(m: &model::Mount, i: usize, sandbox: &SandboxView) -> Result<bool, SpecError> {
    if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
        return Ok(false);
    }
    let field = |name: &str| format!("config.mounts[{i}].{name}");
    let Some((_, pod)) = &sandbox.user else {
        return Err(SpecError::precondition(
            field("uid_mappings"),
            "an idmapped mount needs a pod with a user namespace of its own (hostUsers: false)",
        ));
    };
    if m.image.as_ref().is_some_and(|img| !img.image.is_empty()) {
        return Err(SpecError::invalid(
            field("uid_mappings"),
            "an image volume is idmapped with the pod already; it takes no mappings of its own",
        ));
    }
    for (name, given, ours) in
        [("uid_mappings", &m.uid_mappings, &pod.uids), ("gid_mappings", &m.gid_mappings, &pod.gids)]
    {
        if !is_the_range(given, ours) {
            return Err(SpecError::invalid(
                field(name),
                format!(
                    "must be the pod's own mapping ({} {} {}), as the kubelet sends it; got {} ranges",
                    ours.container_id,
                    ours.host_id,
                    ours.length,
                    given.len()
                ),
            ));
        }
    }
    Ok(true)
}

/// Whether `given` is exactly the one range `ours`.
fn is_the_range(given: &[model::IdMapping], ours: &IdMapping) -> bool {
    matches!(given, [only] if only.container_id == ours.container_id
        && only.host_id == ours.host_id && only.length == ours.length)
}

/// The pod's user namespace, which every container of the pod shares: a container's own
/// userns_options (the kubelet repeats the pod's) must agree with the pod's.
fn user_namespace<'s>(
    options: &model::NamespaceOption,
    sandbox: &'s SandboxView,
    field: &str,
) -> Result<Option<&'s (PathBuf, IdMappings)>, SpecError> {
    let field = format!("{field}.userns_options");
    let Some(asked) = &options.userns_options else { return Ok(sandbox.user.as_ref()) };
    match (model::NamespaceMode::try_from(asked.mode), &sandbox.user) {
        (Ok(model::NamespaceMode::Node), None) => Ok(None),
        (Ok(model::NamespaceMode::Node), Some(_)) => Err(SpecError::invalid(
            format!("{field}.mode"),
            "is NODE but the pod has a user namespace of its own (POD); its containers share it",
        )),
        (Ok(model::NamespaceMode::Pod), None) => Err(SpecError::precondition(
            format!("{field}.mode"),
            "is POD but the pod sandbox was made without a user namespace",
        )),
        (Ok(model::NamespaceMode::Pod), Some(pod)) => {
            // The kubelet repeats the pod's mappings; none at all means the pod's too.
            let same = |given: &[model::IdMapping], ours: &IdMapping| given.is_empty() || is_the_range(given, ours);
            if !same(&asked.uids, &pod.1.uids) || !same(&asked.gids, &pod.1.gids) {
                return Err(SpecError::invalid(
                    format!("{field}.uids"),
                    "the mappings differ from the pod sandbox's: a pod's containers share its user namespace",
                ));
            }
            Ok(Some(pod))
        }
        (Ok(mode), _) => Err(SpecError::invalid(
            format!("{field}.mode"),
            format!("{} is not supported for a user namespace (POD or NODE)", mode.as_str_name()),
        )),
        (Err(_), _) => {
            Err(SpecError::invalid(format!("{field}.mode"), format!("{} is not a NamespaceMode", asked.mode)))
        }
    }
}

/// The container's cgroup under the pod's: `<parent>/lockstep-<id>` for cgroupfs,
/// `<slice>:lockstep:<id>` for systemd.
pub fn cgroups_path(driver: CgroupDriver, parent: &str, id: &str) -> Result<String, SpecError> {
    let field = "sandbox.cgroup_parent";
    match driver {
        CgroupDriver::Cgroupfs => {
            let parent = if parent.is_empty() { "/lockstep" } else { parent };
            if !parent.starts_with('/') || parent.ends_with(".slice") {
                return Err(SpecError::invalid(
                    field,
                    format!("{parent:?} is not a cgroupfs path (the cgroup driver is cgroupfs)"),
                ));
            }
            Ok(format!("{}/lockstep-{id}", parent.trim_end_matches('/')))
        }
        CgroupDriver::Systemd => {
            let parent = if parent.is_empty() { "system.slice" } else { parent };
            let slice = Path::new(parent).file_name().and_then(|n| n.to_str()).unwrap_or(parent);
            if !slice.ends_with(".slice") {
                return Err(SpecError::invalid(
                    field,
                    format!("{parent:?} is not a systemd slice (the cgroup driver is systemd)"),
                ));
            }
            Ok(format!("{slice}:lockstep:{id}"))
        }
    }
}

/// Device nodes and cgroup rules: everything denied, then the standard pseudo-devices and
/// the requested devices allowed; a privileged container gets every host device.
fn devices(privileged: bool, resolved: &Resolved) -> (Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>) {
    let rule = |allow: bool, kind: Option<LinuxDeviceType>, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(allow);
        r.set_typ(kind);
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    };
    let node = |d: &ResolvedDevice| {
        let mut n = LinuxDevice::default();
        n.set_path(d.path.clone());
        n.set_typ(if d.kind == 'b' { LinuxDeviceType::B } else { LinuxDeviceType::C });
        n.set_major(d.major);
        n.set_minor(d.minor);
        n.set_file_mode(Some(d.file_mode));
        n.set_uid(Some(d.uid));
        n.set_gid(Some(d.gid));
        n
    };
    if privileged {
        let mut nodes: Vec<LinuxDevice> = resolved.host_devices.iter().map(node).collect();
        nodes.extend(resolved.devices.iter().map(node));
        return (nodes, vec![rule(true, None, None, None, "rwm")]);
    }
    let mut rules = vec![rule(false, None, None, None, "rwm")];
    // null, zero, full, random, urandom, tty, ptmx, and the pty slaves.
    for (major, minor) in
        [(1, Some(3)), (1, Some(5)), (1, Some(7)), (1, Some(8)), (1, Some(9)), (5, Some(0)), (5, Some(2)), (136, None)]
    {
        rules.push(rule(true, Some(LinuxDeviceType::C), Some(major), minor, "rwm"));
    }
    for d in &resolved.devices {
        let kind = if d.kind == 'b' { LinuxDeviceType::B } else { LinuxDeviceType::C };
        rules.push(rule(true, Some(kind), Some(d.major), Some(d.minor), &d.permissions));
    }
    (resolved.devices.iter().map(node).collect(), rules)
}

/// Key prefixes of annotations that OCI runtimes act on: crun reads `run.oci.*` (a seccomp
/// filter replaced, a library loaded from a host path, hooks, handlers), CRIU `org.criu.*`.
pub const RUNTIME_ANNOTATION_PREFIXES: [&str; 2] = ["run.oci.", "org.criu."];

/// The request's annotations, but those an OCI runtime would act on unless `allowed` names
/// them (each dropped key becomes a warning), and lockstep's own about the container and its pod.
fn annotations(input: &SpecInput<'_>, warnings: &mut Vec<String>) -> HashMap<String, String> {
    let allowed = &input.runtime.allowed_annotations;
    let mut out = HashMap::new();
    let mut dropped = Vec::new();
    for (key, value) in &input.config.annotations {
        let runtime_key = RUNTIME_ANNOTATION_PREFIXES.iter().any(|p| key.starts_with(p));
        if runtime_key && !allowed.iter().any(|p| !p.is_empty() && key.starts_with(p.as_str())) {
            dropped.push(key);
        } else {
            out.insert(key.clone(), value.clone());
        }
    }
    dropped.sort();
    warnings.extend(dropped.into_iter().map(|key| {
        format!(
            "annotation {key:?} left out of the OCI spec: the OCI runtime would act on it \
             (allow it with [runtime] allowed_annotations)"
        )
    }));
    let name = input.config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "container".to_string()),
        ("io.kubernetes.cri.container-name", name),
        ("io.kubernetes.cri.image-name", input.image.name.clone()),
        ("io.kubernetes.cri.sandbox-id", input.sandbox.id.clone()),
        ("io.kubernetes.cri.sandbox-name", input.sandbox.pod_name.clone()),
        ("io.kubernetes.cri.sandbox-namespace", input.sandbox.pod_namespace.clone()),
        ("io.kubernetes.cri.sandbox-uid", input.sandbox.pod_uid.clone()),
    ] {
        out.insert(k.to_string(), v);
    }
    out
}

/// The container's log file: the sandbox's log_directory joined with the request's log_path,
/// which must be relative and stay inside it. None when either is empty: the output is
/// then read and dropped.
pub fn log_file(log_directory: &str, log_path: &str) -> Result<Option<PathBuf>, SpecError> {
    if log_directory.is_empty() || log_path.is_empty() {
        return Ok(None);
    }
    if !log_directory.starts_with('/') {
        return Err(SpecError::invalid(
            "sandbox_config.log_directory",
            format!("{log_directory:?} is not an absolute path"),
        ));
    }
    let relative = Path::new(log_path);
    if relative.is_absolute() || relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(SpecError::invalid(
            "config.log_path",
            format!("{log_path:?} must be a relative path inside the pod's log directory"),
        ));
    }
    Ok(Some(Path::new(log_directory).join(relative)))
}

/// The request's stop signal (1.33+), else the image's STOPSIGNAL, else SIGTERM.
pub fn stop_signal(config: &model::ContainerConfig, image: &ImageView) -> Result<i32, SpecError> {
    if let Some(n) = signal::from_cri(config.stop_signal) {
        return Ok(n);
    }
    if image.stop_signal.is_empty() {
        return Ok(signal::DEFAULT_STOP_SIGNAL);
    }
    signal::parse(&image.stop_signal)
        .ok_or_else(|| SpecError::precondition("image.stop_signal", format!("{:?} is not a signal", image.stop_signal)))
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
