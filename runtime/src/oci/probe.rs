//! Finds each configured OCI runtime and checks that it really runs containers on this host:
//! a throwaway container (a read-only rootfs holding only busybox, `sh -c "exit 42"`, in a
//! cgroup of its own) is run with each handler, so a runtime that refuses this host's cgroup
//! layout is reported with its own message. On a hybrid cgroup host a runtime that refuses
//! the layout (crun 1.8) is probed again in a pure cgroup v1 view (the v2 mount hidden from it,
//! as the kubelet sees such a host) and, if it works there, always runs in that view. The
//! default handler is the configured default, or else the first one that works. Touches
//! `<runroot>/oci/probe*` and the probe's cgroups.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::command::{CommandRuntime, RuntimeCommand};
use super::OciRuntime;
use crate::config::{CgroupDriver, Config, RuntimeSection};
use crate::host::idmap::{IdMapping, IdMappings, MappedChild};

/// The static binary the probe container runs (Debian's busybox-static).
pub const PROBE_BINARY: &str = "/bin/busybox";
/// What the probe container exits with: no stand-in that merely exits 0 passes.
const PROBE_EXIT: i32 = 42;

/// What a handler can do beyond the basics, as CRI's RuntimeHandlerFeatures reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerFeatures {
    /// The runtime honours the `rro` mount option: a probe container found a submount of an
    /// `rro` bind mount read-only (a runtime's own feature list is not taken on trust).
    pub recursive_read_only_mounts: bool,
    /// The runtime runs a container in a user namespace that lockstepd made and pinned (a
    /// pod's with `hostUsers: false`), on a rootfs idmapped by that namespace: a probe
    /// container saw the mapping in /proc/self/uid_map and its root owning the rootfs.
    pub user_namespaces: bool,
}

/// What a probe container checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// That the runtime runs a container at all.
    Runs,
    /// That a bind mount with `rro` is read-only in its submounts too.
    RecursiveReadOnly,
    /// That the runtime joins a pinned user namespace and the idmapped rootfs looks right.
    UserNamespace,
}

/// The mapping of the user namespace probe: container root is this host uid and gid (far
/// from any a kubelet hands out: it allocates multiples of 65536 from 65536 up).
const PROBE_USERNS_HOST_ID: u32 = 3_000_000_000;

/// One configured handler and what the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedHandler {
    pub name: String,
    /// The binary, resolved through PATH.
    pub path: Option<PathBuf>,
    /// The first line of `--version`, when it ran.
    pub version: Option<String>,
    /// Why the handler cannot be used; None when it works.
    pub problem: Option<String>,
    pub features: HandlerFeatures,
    /// How the handler was checked: "container" (a probe container ran) or why only its
    /// `--version` could be checked.
    pub checked_by: String,
    /// How long the probe took.
    pub took: Duration,
    /// The hybrid host's v2 mount, hidden from this runtime, which refuses it.
    pub cgroup2_hidden: Option<PathBuf>,
}

impl ProbedHandler {
    pub fn works(&self) -> bool {
        self.problem.is_none()
    }

    /// How to run this handler, in lockstepd's layout (`<runroot>/oci`); None when its binary
    /// was not found.
    pub fn command(&self, oci_dir: &Path, systemd_cgroup: bool) -> Option<RuntimeCommand> {
        let command = RuntimeCommand::under(oci_dir, &self.name, self.path.as_deref()?, systemd_cgroup);
        Some(command.hiding_cgroup2(self.cgroup2_hidden.clone()))
    }
}

/// Every configured handler, probed, and the one used when a pod names none.
#[derive(Debug, Clone)]
pub struct HandlerSet {
    pub handlers: Vec<ProbedHandler>,
    default: Option<usize>,
}

impl HandlerSet {
    /// The handler for pods that name none, if any handler works.
    pub fn default_handler(&self) -> Option<&ProbedHandler> {
        self.default.map(|i| &self.handlers[i])
    }

    /// The handlers that work, in configured order.
    pub fn working(&self) -> impl Iterator<Item = &ProbedHandler> {
        self.handlers.iter().filter(|h| h.works())
    }

    /// A handler by the name a RuntimeClass uses; "" means the default.
    pub fn get(&self, name: &str) -> Option<&ProbedHandler> {
        if name.is_empty() {
            return self.default_handler();
        }
        self.handlers.iter().find(|h| h.name == name)
    }
}

/// Probes every configured handler of `config`, in parallel.
pub fn probe_handlers(config: &Config) -> HandlerSet {
    let oci_dir = config.runroot.join("oci");
    let systemd = config.cgroup_driver == CgroupDriver::Systemd;
    let section: &RuntimeSection = &config.runtime;
    let cgroup2 = if section.hybrid_cgroup_v1_view {
        crate::host::cgroups::Layout::read().hybrid_unified().map(Path::to_path_buf)
    } else {
        None
    };
    let handlers: Vec<ProbedHandler> = std::thread::scope(|scope| {
        let probes: Vec<_> = section
            .handlers
            .iter()
            .map(|h| {
                let (oci_dir, cgroup2) = (&oci_dir, cgroup2.as_deref());
                scope.spawn(move || probe_one(&h.name, &h.path, oci_dir, systemd, Path::new(PROBE_BINARY), cgroup2))
            })
            .collect();
        probes
            .into_iter()
            .zip(&section.handlers)
            .map(|(probe, h)| {
                probe.join().unwrap_or_else(|_| ProbedHandler {
                    name: h.name.clone(),
                    path: None,
                    version: None,
                    problem: Some("the probe panicked".into()),
                    features: HandlerFeatures::default(),
                    checked_by: "nothing".into(),
                    took: Duration::ZERO,
                    cgroup2_hidden: None,
                })
            })
            .collect()
    });
    let default = if section.default_handler.is_empty() {
        handlers.iter().position(ProbedHandler::works)
    } else {
        handlers.iter().position(|h| h.name == section.default_handler && h.works())
    };
    HandlerSet { handlers, default }
}

/// Probes one handler: its binary, its version, then a real container. `hybrid_cgroup2` is
/// the v2 mount of a hybrid host: if the runtime refuses the layout, the container is tried
/// again with that mount hidden from it.
pub fn probe_one(
    name: &str,
    binary: &Path,
    oci_dir: &Path,
    systemd: bool,
    busybox: &Path,
    hybrid_cgroup2: Option<&Path>,
) -> ProbedHandler {
    let started = Instant::now();
    let mut probed = ProbedHandler {
        name: name.to_string(),
        path: None,
        version: None,
        problem: None,
        features: HandlerFeatures::default(),
        checked_by: "nothing".into(),
        took: Duration::ZERO,
        cgroup2_hidden: None,
    };
    let Some(path) = resolve(binary) else {
        probed.problem = Some(format!("{} not found (PATH and absolute path checked)", binary.display()));
        return probed;
    };
    probed.path = Some(path.clone());
    match Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => {
            probed.version = String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string);
        }
        Ok(out) => {
            probed.problem = Some(format!(
                "{} --version failed ({}): {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            probed.took = started.elapsed();
            return probed;
        }
        Err(e) => {
            probed.problem = Some(format!("cannot run {}: {e}", path.display()));
            probed.took = started.elapsed();
            return probed;
        }
    }
    let mut runtime = CommandRuntime::new(RuntimeCommand::under(oci_dir, name, &path, systemd));
    if busybox.is_file() {
        probed.checked_by = "container".into();
        if let Err(problem) = run_probe_container(&runtime, oci_dir, busybox, systemd, Probe::Runs) {
            probed.problem = Some(problem.clone());
            // Only a refusal of the hybrid layout (crun: "cgroups in hybrid mode not supported")
            // is answered with the v1 view; any other failure stays the handler's problem.
            if let Some(cgroup2) = hybrid_cgroup2.filter(|_| problem.contains("hybrid")) {
                let hiding = CommandRuntime::new(runtime.command().clone().hiding_cgroup2(Some(cgroup2.into())));
                if run_probe_container(&hiding, oci_dir, busybox, systemd, Probe::Runs).is_ok() {
                    probed.problem = None;
                    probed.cgroup2_hidden = Some(cgroup2.into());
                    probed.checked_by = format!(
                        "container, in a pure cgroup v1 view ({} hidden) as it refuses this hybrid host: {problem}",
                        cgroup2.display()
                    );
                    runtime = hiding;
                }
            }
        }
    } else {
        probed.checked_by =
            format!("--version only: {} (busybox-static) is missing, so no probe container ran", busybox.display());
    }
    if probed.works() && busybox.is_file() {
        let feature = |probe: Probe, missing: &'static str| {
            run_probe_container(&runtime, oci_dir, busybox, systemd, probe)
                .inspect_err(|problem| tracing::info!(handler = name, %problem, "{missing}"))
                .is_ok()
        };
        // The two feature probes at once: each is a container start (tens of ms).
        let (rro, userns) = std::thread::scope(|scope| {
            let userns = scope.spawn(|| feature(Probe::UserNamespace, "no user namespaces"));
            let rro = feature(Probe::RecursiveReadOnly, "no recursive read-only mounts");
            (rro, userns.join().unwrap_or(false))
        });
        probed.features = HandlerFeatures { recursive_read_only_mounts: rro, user_namespaces: userns };
    }
    probed.took = started.elapsed();
    probed
}

/// Runs a probe container and removes every trace of it; Err is the runtime's own message.
fn run_probe_container(
    runtime: &CommandRuntime,
    oci_dir: &Path,
    busybox: &Path,
    systemd: bool,
    probe: Probe,
) -> Result<(), String> {
    // Unique per probe: two probes of one handler at once (tests, the hidden-view retry) must
    // not share a container id, a bundle or a cgroup.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let handler = &runtime.command().handler;
    let suffix = format!("{handler}-{}-{n}", std::process::id());
    let id = format!("lockstep-probe-{suffix}");
    // The user namespace probe's runtime resolves the bundle from inside the namespace, so the
    // way to it is opened for search (not listing): outside `oci/`, whose runtime logs and
    // exec processes stay lockstepd's alone.
    let bundle = match probe {
        Probe::UserNamespace => oci_dir.with_file_name("userns-probe").join(format!("probe-{suffix}")),
        _ => oci_dir.join(format!("probe-{suffix}")),
    };
    let cgroup =
        if systemd { format!("system.slice:lockstep-probe:{suffix}") } else { format!("/lockstep-probe-{suffix}") };
    let result = (|| {
        write_probe_bundle(&bundle, busybox, &cgroup, probe)
            .map_err(|e| format!("cannot write the probe bundle: {e}"))?;
        if probe == Probe::UserNamespace {
            prepare_user_namespace(&bundle).map_err(|e| format!("cannot prepare the user namespace probe: {e}"))?;
        }
        match runtime.run(&id, &bundle) {
            Ok(PROBE_EXIT) => Ok(()),
            Ok(code) if probe == Probe::RecursiveReadOnly => {
                Err(format!("a submount of an rro bind mount was writable (the probe exited with {code})"))
            }
            Ok(3) if probe == Probe::UserNamespace => {
                Err("the container's root did not own its idmapped rootfs (the probe exited with 3)".into())
            }
            Ok(code) if probe == Probe::UserNamespace => {
                Err(format!("the container did not see the user namespace's mapping (the probe exited with {code})"))
            }
            Ok(code) => Err(format!(
                "the probe container exited with {code} instead of {PROBE_EXIT}: {} does not run containers",
                runtime.command().binary.display()
            )),
            Err(e) => Err(match e {
                super::OciError::Failed { message, .. } => message,
                other => other.to_string(),
            }),
        }
    })();
    let _ = runtime.delete(&id);
    if probe == Probe::RecursiveReadOnly {
        let _ = nix::mount::umount2(&bundle.join(RRO_SUBMOUNT), nix::mount::MntFlags::MNT_DETACH);
    }
    if probe == Probe::UserNamespace {
        for pinned in [USERNS_PIN, "rootfs"] {
            let _ = nix::mount::umount2(&bundle.join(pinned), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(&bundle);
    if !systemd {
        remove_cgroup_dirs(cgroup.trim_start_matches('/'));
    }
    result
}

/// Where the user namespace probe pins its user namespace, in the bundle.
const USERNS_PIN: &str = "userns";

/// The probe's mappings: 65536 IDs from PROBE_USERNS_HOST_ID.
fn probe_mappings() -> IdMappings {
    let range = IdMapping { container_id: 0, host_id: PROBE_USERNS_HOST_ID, length: 65536 };
    IdMappings { uids: range, gids: range }
}

/// Makes and pins a user namespace at `<bundle>/userns` and idmaps the rootfs by it, as
/// RunPodSandbox and CreateContainer do for a pod with `hostUsers: false`.
fn prepare_user_namespace(bundle: &Path) -> Result<(), String> {
    let child = MappedChild::spawn(nix::sched::CloneFlags::empty(), &probe_mappings()).map_err(|e| e.to_string())?;
    let pin = bundle.join(USERNS_PIN);
    std::fs::write(&pin, b"").map_err(|e| format!("cannot create {}: {e}", pin.display()))?;
    let bind = |source: &Path, target: &Path| {
        nix::mount::mount(Some(source), target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| format!("cannot bind-mount {} onto {}: {e}", source.display(), target.display()))
    };
    bind(&child.namespace("user"), &pin)?;
    child.finish();
    let rootfs = bundle.join("rootfs");
    crate::host::idmap::make_traversable(bundle).map_err(|e| e.to_string())?;
    bind(&rootfs, &rootfs)?;
    crate::host::idmap::idmap_in_place(&rootfs, &pin).map_err(|e| e.to_string())
}

/// Where the recursive read-only probe's bind mount has its submount (a tmpfs), in the bundle.
const RRO_SUBMOUNT: &str = "rro/sub";

/// A bundle whose read-only rootfs holds empty mount points; busybox is bind-mounted as sh.
/// The recursive read-only probe also bind-mounts `<bundle>/rro` (holding a tmpfs at `sub`)
/// with `rro` at /rro and exits with PROBE_EXIT only if writing there fails.
fn write_probe_bundle(bundle: &Path, busybox: &Path, cgroup: &str, probe: Probe) -> std::io::Result<()> {
    let rootfs = bundle.join("rootfs");
    for dir in ["bin", "proc", "dev", "rro"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    std::fs::write(rootfs.join("bin/sh"), b"")?;
    std::fs::write(rootfs.join("bin/busybox"), b"")?;
    let mut mounts = vec![
        serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        serde_json::json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=64k"]}),
        serde_json::json!({"destination": "/bin/sh", "type": "bind", "source": busybox, "options": ["rbind", "ro", "nosuid", "nodev"]}),
        serde_json::json!({"destination": "/bin/busybox", "type": "bind", "source": busybox, "options": ["rbind", "ro", "nosuid", "nodev"]}),
    ];
    let mut namespaces = vec![
        serde_json::json!({"type": "pid"}),
        serde_json::json!({"type": "ipc"}),
        serde_json::json!({"type": "uts"}),
        serde_json::json!({"type": "mount"}),
    ];
    let mut id_mappings = None;
    let script = match probe {
        Probe::Runs => format!("exit {PROBE_EXIT}"),
        Probe::RecursiveReadOnly => {
            let submount = bundle.join(RRO_SUBMOUNT);
            std::fs::create_dir_all(&submount)?;
            nix::mount::mount(
                Some("tmpfs"),
                &submount,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some("size=64k,mode=755"),
            )
            .map_err(std::io::Error::from)?;
            mounts.push(serde_json::json!({
                "destination": "/rro", "type": "bind", "source": bundle.join("rro"),
                "options": ["rbind", "ro", "rro", "rprivate"]
            }));
            // Both writes must fail: the bind mount itself and its submount.
            format!("echo > /rro/sub/probe && exit 1; echo > /rro/probe && exit 2; exit {PROBE_EXIT}")
        }
        Probe::UserNamespace => {
            namespaces.insert(0, serde_json::json!({"type": "user", "path": bundle.join(USERNS_PIN)}));
            let m = probe_mappings().uids;
            let range = serde_json::json!([{"containerID": m.container_id, "hostID": m.host_id, "size": m.length}]);
            id_mappings = Some(range);
            // Root of the namespace owns the (on disk root-owned) rootfs only through the
            // idmapped mount; the kernel shows the mapping lockstepd wrote.
            format!(
                "[ \"$(/bin/busybox stat -c %u:%g /bin)\" = 0:0 ] || exit 3; read -r c h l < /proc/self/uid_map; \
                 [ \"$c $h $l\" = \"0 {} {}\" ] || exit 4; exit {PROBE_EXIT}",
                m.host_id, m.length
            )
        }
    };
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroup,
            "namespaces": namespaces,
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"]
        }
    });
    let mut spec = spec;
    if let Some(range) = id_mappings {
        spec["linux"]["uidMappings"] = range.clone();
        spec["linux"]["gidMappings"] = range;
    }
    std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec)?)
}

/// Removes a cgroupfs cgroup from every mounted hierarchy (the runtime usually has already).
pub(crate) fn remove_cgroup_dirs(relative: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return };
    for hierarchy in hierarchies.flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join(relative));
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(relative));
}

/// An absolute path as is (if it exists); a bare name through PATH.
pub fn resolve(binary: &Path) -> Option<PathBuf> {
    if binary.is_absolute() || binary.components().count() > 1 {
        return binary.is_file().then(|| binary.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|dir| dir.join(binary)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Handler;

    fn config(tmp: &Path, handlers: &[(&str, &str)], default: &str) -> Config {
        let mut config = Config { root: tmp.join("root"), runroot: tmp.join("run"), ..Default::default() };
        config.runtime = RuntimeSection {
            default_handler: default.into(),
            handlers: handlers.iter().map(|(n, p)| Handler { name: n.to_string(), path: p.into() }).collect(),
            hybrid_cgroup_v1_view: true,
            ..RuntimeSection::default()
        };
        config
    }

    #[test]
    fn the_default_is_the_first_handler_that_works() {
        let tmp = tempfile::tempdir().unwrap();
        let set = probe_handlers(&config(tmp.path(), &[("ghost", "/nonexistent/ghost-runtime"), ("runc", "runc")], ""));
        assert!(!set.handlers[0].works());
        assert!(set.handlers[0].problem.as_ref().unwrap().contains("not found"));
        assert!(set.handlers[1].works(), "{:?}", set.handlers[1]);
        assert_eq!(set.default_handler().unwrap().name, "runc");
        assert_eq!(set.get("").unwrap().name, "runc");
        assert_eq!(set.working().count(), 1);
        assert_eq!(set.handlers[1].checked_by, "container");
        assert!(std::fs::read_dir(tmp.path().join("run/oci")).unwrap().all(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            !name.starts_with("probe")
        }));
    }

    #[test]
    fn recursive_read_only_is_reported_only_where_a_submount_is_really_read_only() {
        let tmp = tempfile::tempdir().unwrap();
        // A runc that drops `rro` from each bundle: it runs containers, its rro mounts are not.
        let stripped = tmp.path().join("runc-without-rro");
        std::fs::write(
            &stripped,
            "#!/bin/sh\nprev=\nfor a in \"$@\"; do\n  [ \"$prev\" = --bundle ] && sed -i 's/\"rro\",//g' \"$a/config.json\"\n  \
             prev=$a\ndone\nexec runc \"$@\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&stripped, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let stripped = stripped.to_string_lossy().into_owned();
        let set = probe_handlers(&config(tmp.path(), &[("runc", "runc"), ("stripped", &stripped)], ""));
        assert!(set.handlers[0].features.recursive_read_only_mounts, "{:?}", set.handlers[0]);
        assert!(set.handlers[1].works(), "{:?}", set.handlers[1]);
        assert!(!set.handlers[1].features.recursive_read_only_mounts, "a runtime that ignores rro");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let here = tmp.path().to_string_lossy().into_owned();
        assert!(!mountinfo.contains(&here), "the probe left a mount under {here}");
    }

    #[test]
    fn a_configured_default_that_does_not_work_leaves_no_default() {
        let tmp = tempfile::tempdir().unwrap();
        let set =
            probe_handlers(&config(tmp.path(), &[("ghost", "/nonexistent/ghost-runtime"), ("runc", "runc")], "ghost"));
        assert!(set.default_handler().is_none());
    }

    #[test]
    fn a_binary_that_fails_its_version_check_does_not_work() {
        let tmp = tempfile::tempdir().unwrap();
        let set = probe_handlers(&config(tmp.path(), &[("liar", "false")], ""));
        assert!(set.handlers[0].problem.as_ref().unwrap().contains("--version failed"));
        assert!(set.default_handler().is_none());
    }

    #[test]
    fn a_binary_that_only_exits_zero_is_not_a_runtime() {
        // `true` accepts --version and every command line, and runs no container.
        let tmp = tempfile::tempdir().unwrap();
        let set = probe_handlers(&config(tmp.path(), &[("pretender", "true")], ""));
        let problem = set.handlers[0].problem.as_deref().unwrap();
        assert!(problem.contains("exited with 0 instead of 42"), "{problem}");
    }
}
