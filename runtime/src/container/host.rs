//! What the pure spec builder needs to know from the host, read here: lockstepd's own
//! capability bounding set and OOM score, whether AppArmor is on, the image's user and
//! groups, the device nodes a request names (and all of /dev for privileged containers), that
//! mount sources exist, and Localhost seccomp profiles. Reads only; changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use lockstep_cri::model;

use super::capabilities::CapSet;
use super::resources::OomPolicy;
use super::seccomp::Profile;
use super::user::{self, ResolvedUser};
use super::SpecError;

/// Facts about lockstepd's host, read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// lockstepd's capability bounding set: no container gets more.
    pub bounding: CapSet,
    pub oom: OomPolicy,
    pub apparmor: AppArmor,
    /// /sys/fs/cgroup is the cgroup v2 hierarchy itself (no v1 controllers).
    pub pure_cgroup_v2: bool,
    /// The OCI runtimes can set hugepage limits: hugetlb is a mounted v1 hierarchy, or in the
    /// pure v2 hierarchy's controllers. A hybrid host that keeps it on its v2 mount puts it
    /// out of their reach (runc's v1 manager and crun's v1 view both fail on such limits).
    pub hugetlb: bool,
}

/// Whether the kernel enforces AppArmor, and which profiles are loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppArmor {
    Disabled,
    Enabled { loaded: BTreeSet<String> },
}

impl HostFacts {
    /// Reads /proc/self/status, /proc/self/oom_score_adj and the AppArmor module state.
    pub fn read() -> std::io::Result<HostFacts> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(CapSet::from_hex);
        let bounding = field("CapBnd:").unwrap_or_else(CapSet::all);
        let effective = field("CapEff:").unwrap_or_default();
        let own_score = std::fs::read_to_string("/proc/self/oom_score_adj")?.trim().parse().unwrap_or(0);
        let can_lower = effective.contains(24); // CAP_SYS_RESOURCE
        let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .map(|s| s.trim() == "Y")
            .unwrap_or(false);
        let apparmor = if enabled {
            let profiles = std::fs::read_to_string("/sys/kernel/security/apparmor/profiles").unwrap_or_default();
            // "name (mode)" per line.
            let loaded = profiles.lines().filter_map(|l| l.rsplit_once(" (").map(|(n, _)| n.to_string())).collect();
            AppArmor::Enabled { loaded }
        } else {
            AppArmor::Disabled
        };
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let pure_cgroup_v2 = crate::host::cgroups::Layout::of(&mountinfo) == crate::host::cgroups::Layout::V2;
        let hugetlb = if pure_cgroup_v2 {
            std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .is_ok_and(|c| c.split_whitespace().any(|name| name == "hugetlb"))
        } else {
            crate::host::mounts::mounts(&mountinfo).any(|m| m.fstype == "cgroup" && m.has_super_option("hugetlb"))
        };
        Ok(HostFacts { bounding, oom: OomPolicy { own_score, can_lower }, apparmor, pure_cgroup_v2, hugetlb })
    }
}

/// A device node to create in the container and allow in its device cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDevice {
    /// Where it appears in the container.
    pub path: PathBuf,
    /// 'c' or 'b'.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Cgroup access: some of "rwm".
    pub permissions: String,
}

/// Everything about one container that had to be read from the host. The caller sets
/// `image_volumes` (mounted image volumes, by image reference) and `target_pid_namespace`
/// (the pid namespace of namespace_options.target_id) itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    pub user: ResolvedUser,
    pub devices: Vec<ResolvedDevice>,
    /// All host devices, for a privileged container.
    pub host_devices: Vec<ResolvedDevice>,
    /// The Localhost seccomp profile, when one is asked for.
    pub seccomp_localhost: Option<Profile>,
    pub image_volumes: BTreeMap<String, PathBuf>,
    /// The source of each image volume mount with an image_sub_path (by mount index), resolved
    /// inside its volume; the builder joins the sub path lexically when one is missing here.
    pub image_sub_paths: BTreeMap<usize, PathBuf>,
    /// The idmapped copy of each host path mount that asks for one (by mount index).
    pub idmapped_mounts: BTreeMap<usize, PathBuf>,
    pub target_pid_namespace: Option<PathBuf>,
}

/// Resolves the image_sub_path of each image volume mount inside its mounted `volumes`
/// (image → mount point): a symlink in the image cannot lead the bind mount to the host's files.
pub fn resolve_image_sub_paths(
    config: &model::ContainerConfig,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<BTreeMap<usize, PathBuf>, SpecError> {
    let mut resolved = BTreeMap::new();
    for (i, mount) in config.mounts.iter().enumerate() {
        let (Some(image), false) = (mount.image.as_ref(), mount.image_sub_path.is_empty()) else { continue };
        let Some(root) = volumes.get(&image.image) else { continue };
        let field = format!("config.mounts[{i}].image_sub_path");
        let source = super::inroot::resolve(root, Path::new(&mount.image_sub_path))
            .map_err(|e| SpecError::precondition(field.clone(), format!("{:?}: {e}", mount.image_sub_path)))?;
        if std::fs::symlink_metadata(&source).is_err() {
            return Err(SpecError::not_found(
                field,
                format!("{:?} does not exist in image {}", mount.image_sub_path, image.image),
            ));
        }
        resolved.insert(i, source);
    }
    Ok(resolved)
}

/// Reads what `config` needs from the host: the user from the image at `rootfs`, devices,
/// mount sources (which must exist), the Localhost seccomp profile.
pub fn resolve(config: &model::ContainerConfig, rootfs: &Path, image_user: &str) -> Result<Resolved, SpecError> {
    let security = config.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let privileged = security.is_some_and(|s| s.privileged);
    let mut resolved = Resolved { user: user::resolve(rootfs, security, image_user)?, ..Default::default() };
    for (i, device) in config.devices.iter().enumerate() {
        resolved.devices.push(resolve_device(device, &format!("config.devices[{i}]"))?);
    }
    for (i, mount) in config.mounts.iter().enumerate() {
        let is_image = mount.image.as_ref().is_some_and(|img| !img.image.is_empty());
        if is_image || mount.host_path.is_empty() {
            continue; // image volumes are the caller's; an empty host_path is spec's error
        }
        let field = format!("config.mounts[{i}].host_path");
        if !Path::new(&mount.host_path).is_absolute() {
            return Err(SpecError::invalid(field, format!("{:?} is not an absolute path", mount.host_path)));
        }
        if let Err(e) = std::fs::metadata(&mount.host_path) {
            return Err(if e.kind() == std::io::ErrorKind::NotFound {
                SpecError::not_found(field, format!("{} does not exist", mount.host_path))
            } else {
                SpecError::precondition(field, format!("cannot use {}: {e}", mount.host_path))
            });
        }
    }
    if privileged {
        resolved.host_devices = host_devices(Path::new("/dev"));
    }
    if let Some(path) = localhost_seccomp(security) {
        let field = "config.linux.security_context.seccomp.localhost_ref";
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SpecError::not_found(field, format!("seccomp profile {path} does not exist"))
            } else {
                SpecError::precondition(field, format!("cannot read seccomp profile {path}: {e}"))
            }
        })?;
        let profile = Profile::parse(&text).map_err(|e| SpecError::invalid(field, format!("{path}: {e}")))?;
        resolved.seccomp_localhost = Some(profile);
    }
    Ok(resolved)
}

/// The Localhost profile path a security context asks for (new field or the deprecated one).
#[allow(deprecated)] // the old string field is read when the new one is absent
pub fn localhost_seccomp(security: Option<&model::LinuxContainerSecurityContext>) -> Option<String> {
    let sc = security?;
    if let Some(profile) = &sc.seccomp {
        return (profile.profile_type == model::security_profile::ProfileType::Localhost as i32)
            .then(|| profile.localhost_ref.clone());
    }
    sc.seccomp_profile_path.strip_prefix("localhost/").map(|p| format!("/{}", p.trim_start_matches('/')))
}

fn resolve_device(device: &model::Device, field: &str) -> Result<ResolvedDevice, SpecError> {
    if !device.permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(SpecError::invalid(
            format!("{field}.permissions"),
            format!("{:?} is not made of r, w and m", device.permissions),
        ));
    }
    if !device.container_path.starts_with('/') {
        return Err(SpecError::invalid(
            format!("{field}.container_path"),
            format!("{:?} is not an absolute path", device.container_path),
        ));
    }
    let meta = std::fs::metadata(&device.host_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SpecError::not_found(format!("{field}.host_path"), format!("{} does not exist", device.host_path))
        } else {
            SpecError::precondition(format!("{field}.host_path"), format!("cannot use {}: {e}", device.host_path))
        }
    })?;
    let mut resolved = device_node(Path::new(&device.container_path), &meta).ok_or_else(|| {
        SpecError::invalid(format!("{field}.host_path"), format!("{} is not a device node", device.host_path))
    })?;
    resolved.permissions = if device.permissions.is_empty() { "rwm".into() } else { device.permissions.clone() };
    Ok(resolved)
}

fn device_node(path: &Path, meta: &std::fs::Metadata) -> Option<ResolvedDevice> {
    let kind = if meta.file_type().is_char_device() {
        'c'
    } else if meta.file_type().is_block_device() {
        'b'
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(ResolvedDevice {
        path: path.to_path_buf(),
        kind,
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        file_mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        permissions: "rwm".into(),
    })
}

/// Every device node under `dev`, as a privileged container sees them; the directories the
/// runtime mounts itself (pts, shm, mqueue) and the console are left out.
pub fn host_devices(dev: &Path) -> Vec<ResolvedDevice> {
    let mut found = Vec::new();
    let mut stack = vec![dev.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                let skip = ["pts", "shm", "mqueue", "fd", ".lxc", ".lxd-mounts", ".udev"];
                if dir == dev && entry.file_name().to_str().is_some_and(|n| skip.contains(&n)) {
                    continue;
                }
                stack.push(path);
            } else if path != dev.join("console") {
                found.extend(device_node(&path, &meta));
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_facts_read() {
        let facts = HostFacts::read().unwrap();
        assert!(facts.bounding.contains(0), "root holds CAP_CHOWN");
        let v2_root = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok();
        assert_eq!(facts.pure_cgroup_v2, v2_root);
        // /proc/cgroups: "hugetlb <hierarchy> …", hierarchy 0 when it sits on the v2 mount.
        let cgroups = std::fs::read_to_string("/proc/cgroups").unwrap();
        let v1_hugetlb = cgroups.lines().any(|l| l.starts_with("hugetlb\t") && l.split('\t').nth(1) != Some("0"));
        if !v2_root {
            assert_eq!(facts.hugetlb, v1_hugetlb, "{cgroups}");
        }
    }

    #[test]
    fn devices_are_resolved_from_their_nodes() {
        let device = model::Device {
            container_path: "/dev/xnull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        };
        let resolved = resolve_device(&device, "devices[0]").unwrap();
        assert_eq!((resolved.kind, resolved.major, resolved.minor), ('c', 1, 3));
        assert_eq!(resolved.permissions, "rw");
        let missing = model::Device { host_path: "/dev/nothing-here".into(), ..device.clone() };
        let err = resolve_device(&missing, "devices[0]").unwrap_err();
        assert_eq!((err.kind, err.field.as_str()), (super::super::ErrorKind::NotFound, "devices[0].host_path"));
        let not_a_device = model::Device { host_path: "/etc/hostname".into(), ..device.clone() };
        assert!(resolve_device(&not_a_device, "devices[0]").unwrap_err().message.contains("not a device"));
        let bad_perms = model::Device { permissions: "rwx".into(), ..device };
        assert_eq!(resolve_device(&bad_perms, "devices[0]").unwrap_err().field, "devices[0].permissions");
    }

    #[test]
    fn host_devices_include_null_and_skip_pts() {
        let devices = host_devices(Path::new("/dev"));
        assert!(devices.iter().any(|d| d.path == Path::new("/dev/null")));
        assert!(!devices.iter().any(|d| d.path.starts_with("/dev/pts")));
    }

    #[test]
    fn missing_mount_sources_are_not_found_errors() {
        let config = model::ContainerConfig {
            mounts: vec![
                model::Mount { container_path: "/a".into(), host_path: "/etc".into(), ..Default::default() },
                model::Mount { container_path: "/b".into(), host_path: "/nonexistent/x".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve(&config, tmp.path(), "").unwrap_err();
        assert_eq!((err.kind, err.field.as_str()), (super::super::ErrorKind::NotFound, "config.mounts[1].host_path"));
    }

    #[test]
    fn localhost_profiles_are_read_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("profile.json");
        std::fs::write(&file, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        let mut config = model::ContainerConfig::default();
        let profile = |path: &Path| model::SecurityProfile {
            profile_type: model::security_profile::ProfileType::Localhost as i32,
            localhost_ref: path.display().to_string(),
        };
        config.linux = Some(model::LinuxContainerConfig {
            security_context: Some(model::LinuxContainerSecurityContext {
                seccomp: Some(profile(&file)),
                ..Default::default()
            }),
            resources: None,
        });
        assert!(resolve(&config, tmp.path(), "").unwrap().seccomp_localhost.is_some());
        std::fs::write(&file, "not json").unwrap();
        let err = resolve(&config, tmp.path(), "").unwrap_err();
        assert_eq!(err.field, "config.linux.security_context.seccomp.localhost_ref");
        config.linux.as_mut().unwrap().security_context.as_mut().unwrap().seccomp =
            Some(profile(&tmp.path().join("gone")));
        assert_eq!(resolve(&config, tmp.path(), "").unwrap_err().kind, super::super::ErrorKind::NotFound);
    }
}
