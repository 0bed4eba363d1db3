//! security-context: what the kubelet's securityContext becomes inside the container —
//! capabilities added and dropped (ALL too) and the default set when none are named,
//! privileged, masked and read-only /proc paths (requested and default), users and groups
//! (image USER by uid and by name, run_as_*, supplemental groups with SupplementalGroupsPolicy
//! Merge and Strict), no_new_privs, seccomp (none, RuntimeDefault, Unconfined, Localhost, and
//! privileged containers ignoring it), read-only rootfs. Everything is read from inside the
//! container (/proc/<pid>/status, id, mountinfo).

use std::time::Duration;

use lockstep_cri::{model, Minor};

use super::conkit::{profile, security, with_kit, with_kit_config, Kit};
use super::containers::IMAGES;
use crate::check;
use crate::framework::{Ctx, Failure, Feature, Need, Test, TestFuture, TestResult};
use lockstep_testkit::fixtures;
use model::security_profile::ProfileType;

const AREA: &str = "security-context";

fn test(name: &'static str, since: Minor, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since, needs, timeout: Duration::from_secs(120), body }
}

const GROUPS_POLICY: &[Need] = &[Need::Registry, Need::Feature(Feature::SupplementalGroupsPolicy)];

pub fn tests() -> Vec<Test> {
    let v30 = Minor::V1_30;
    vec![
        test("An added capability is held and a dropped one is not", v30, IMAGES, |c| Box::pin(add_and_drop(c))),
        test("Dropping ALL and adding one leaves exactly that one", v30, IMAGES, |c| Box::pin(drop_all(c))),
        test("Adding ALL grants every capability the node has", v30, IMAGES, |c| Box::pin(add_all(c))),
        test("A privileged container has the node's capabilities and devices and no masked paths", v30, IMAGES, |c| {
            Box::pin(privileged(c))
        }),
        test("The requested masked paths are hidden and read-only paths are read-only", v30, IMAGES, |c| {
            Box::pin(masked_paths(c))
        }),
        test("run_as_user, run_as_group and supplemental groups set the process's ids", v30, IMAGES, |c| {
            Box::pin(user_and_groups(c))
        }),
        test("An image's USER is used, by uid and by name, with or without a group", v30, IMAGES, |c| {
            Box::pin(image_user(c))
        }),
        test("run_as_username is looked up in the image's /etc/passwd, over the image's USER", v30, IMAGES, |c| {
            Box::pin(run_as_username(c))
        }),
        test(
            "NamespaceMode NODE puts a container in the node's PID, IPC and network namespaces; POD and CONTAINER keep it \
             out",
            v30,
            IMAGES,
            |c| Box::pin(node_namespaces(c)),
        ),
        test("SupplementalGroupsPolicy Merge adds the image's groups of the user", Minor::V1_31, GROUPS_POLICY, |c| {
            Box::pin(groups_policy(c, model::SupplementalGroupsPolicy::Merge))
        }),
        test(
            "SupplementalGroupsPolicy Strict leaves out the image's groups of the user",
            Minor::V1_31,
            GROUPS_POLICY,
            |c| Box::pin(groups_policy(c, model::SupplementalGroupsPolicy::Strict)),
        ),
        test("no_new_privs sets NoNewPrivs for the process", v30, IMAGES, |c| Box::pin(no_new_privs(c))),
        test("seccomp RuntimeDefault refuses a user namespace that Unconfined allows", v30, IMAGES, |c| {
            Box::pin(seccomp_default(c))
        }),
        test("A container with no seccomp profile at all runs unconfined (Seccomp: 0)", v30, IMAGES, |c| {
            Box::pin(seccomp_none(c))
        }),
        test(
            "seccomp RuntimeDefault and Localhost filter the process (Seccomp: 2), Unconfined does not (0)",
            v30,
            IMAGES,
            |c| Box::pin(seccomp_modes(c)),
        ),
        test("A Localhost seccomp profile is applied", v30, IMAGES, |c| Box::pin(seccomp_localhost(c))),
        test(
            "A Localhost profile that blocks sethostname stops it despite SYS_ADMIN; Unconfined does not",
            v30,
            IMAGES,
            |c| Box::pin(seccomp_sethostname(c)),
        ),
        test("A privileged container ignores its seccomp profile", v30, IMAGES, |c| {
            Box::pin(seccomp_privileged(c))
        }),
        test(
            "A container that names no capabilities gets the default set: CHOWN DAC_OVERRIDE FSETID FOWNER SETGID \
             SETUID SETPCAP NET_BIND_SERVICE KILL",
            v30,
            IMAGES,
            |c| Box::pin(default_capabilities(c)),
        ),
        test("A container that names no masked or read-only paths gets the default ones", v30, IMAGES, |c| {
            Box::pin(default_paths(c))
        }),
        test("A read-only rootfs cannot be written, its volumes can; an ordinary rootfs can", v30, IMAGES, |c| {
            Box::pin(readonly_rootfs(c))
        }),
    ]
}

/// Capability numbers by name (linux/capability.h), for reading CapEff.
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

fn bit(name: &str) -> u64 {
    let name = name.trim_start_matches("CAP_");
    CAPABILITIES.iter().position(|c| *c == name).map_or(0, |i| 1u64 << i)
}

fn names(mask: u64) -> Vec<&'static str> {
    CAPABILITIES.iter().enumerate().filter(|(i, _)| mask & (1u64 << i) != 0).map(|(_, n)| *n).collect()
}

/// A hex mask field of a /proc/<pid>/status text.
fn status_mask(status: &str, field: &str) -> Result<u64, Failure> {
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| Failure::fail(format!("/proc/1/status has no {field}")))?;
    let hex = line.split_whitespace().nth(1).unwrap_or("");
    u64::from_str_radix(hex, 16).map_err(|_| Failure::fail(format!("{field} is {hex:?}, not hex")))
}

/// The effective capabilities of the container's process.
async fn cap_eff(kit: &Kit, id: &str) -> Result<u64, Failure> {
    let status = kit.exec_ok(id, &["cat", "/proc/1/status"]).await?;
    status_mask(&status, "CapEff:")
}

/// The node's bounding set, as this process holds it (the harness runs as root on the node).
fn node_capabilities() -> Result<u64, Failure> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Failure::fail(format!("cannot read /proc/self/status: {e}")))?;
    status_mask(&status, "CapBnd:")
}

fn with_caps(config: &mut model::ContainerConfig, add: &[&str], drop: &[&str]) {
    security(config).capabilities = Some(model::Capability {
        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
        drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
        add_ambient_capabilities: vec![],
    });
}

async fn add_and_drop(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "caps", |kit| async move {
        let mut config = kit.shell_config("caps", "exec sleep 3600").await?;
        with_caps(&mut config, &["NET_ADMIN", "SYS_TIME"], &["CHOWN", "KILL"]);
        let id = kit.run(config).await?;
        let eff = cap_eff(&kit, &id).await?;
        for add in ["NET_ADMIN", "SYS_TIME"] {
            check!(eff & bit(add) != 0, "added {add} is missing: CapEff holds {:?}", names(eff));
        }
        for dropped in ["CHOWN", "KILL"] {
            check!(eff & bit(dropped) == 0, "dropped {dropped} is still held: {:?}", names(eff));
        }
        Ok(())
    })
    .await
}

async fn drop_all(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "caps-none", |kit| async move {
        let mut config = kit.shell_config("caps-none", "exec sleep 3600").await?;
        with_caps(&mut config, &["NET_BIND_SERVICE"], &["ALL"]);
        let id = kit.run(config).await?;
        let status = kit.exec_ok(&id, &["cat", "/proc/1/status"]).await?;
        for field in ["CapEff:", "CapBnd:"] {
            let mask = status_mask(&status, field)?;
            check!(mask == bit("NET_BIND_SERVICE"), "{field} holds {:?}, not just NET_BIND_SERVICE", names(mask));
        }
        Ok(())
    })
    .await
}

async fn add_all(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "caps-all", |kit| async move {
        let mut config = kit.shell_config("caps-all", "exec sleep 3600").await?;
        with_caps(&mut config, &["ALL"], &[]);
        let id = kit.run(config).await?;
        let eff = cap_eff(&kit, &id).await?;
        let node = node_capabilities()?;
        check!(eff == node, "CapEff {:?} differs from the node's {:?}", names(eff), names(node));
        Ok(())
    })
    .await
}

/// A device of the node that an unprivileged container does not get.
fn node_device() -> Option<&'static str> {
    ["/dev/kmsg", "/dev/mem", "/dev/loop-control", "/dev/vda", "/dev/sda", "/dev/nvme0"]
        .into_iter()
        .find(|d| std::path::Path::new(d).exists())
}

/// The mount points of the container's process.
async fn mount_points(kit: &Kit, id: &str) -> Result<Vec<(String, String)>, Failure> {
    let text = kit.exec_ok(id, &["cat", "/proc/1/mountinfo"]).await?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(4)?.to_string(), f.get(5)?.to_string()))
        })
        .collect())
}

async fn privileged(ctx: Ctx) -> TestResult {
    let adjust = |c: &mut model::PodSandboxConfig| {
        c.linux.get_or_insert_with(Default::default).security_context.get_or_insert_with(Default::default).privileged =
            true;
    };
    with_kit_config(&ctx, "privileged", adjust, |kit| async move {
        let mut config = kit.shell_config("privileged", "exec sleep 3600").await?;
        let sc = security(&mut config);
        sc.privileged = true;
        // As the kubelet sends a privileged container: no masked or read-only paths.
        sc.masked_paths.clear();
        sc.readonly_paths.clear();
        let id = kit.run(config).await?;
        let eff = cap_eff(&kit, &id).await?;
        let node = node_capabilities()?;
        check!(eff == node, "CapEff {:?} differs from the node's {:?}", names(eff), names(node));
        if let Some(device) = node_device() {
            let r = kit
                .exec(&id, &["test", "-e", device], 30)
                .await
                .map_err(|e| crate::framework::call_failed("ExecSync", &e))?;
            check!(r.exit_code == 0, "the node's {device} is missing in the privileged container");
        }
        let mounts = mount_points(&kit, &id).await?;
        check!(!mounts.iter().any(|(p, _)| p == "/proc/kcore"), "/proc/kcore is masked in a privileged container");
        let sys = mounts.iter().find(|(p, _)| p == "/sys");
        check!(sys.is_some_and(|(_, o)| o.split(',').any(|o| o == "rw")), "/sys is not writable: {sys:?}");
        Ok(())
    })
    .await
}

async fn masked_paths(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "masked", |kit| async move {
        let config = kit.shell_config("masked", "exec sleep 3600").await?;
        let sc = config.linux.as_ref().and_then(|l| l.security_context.clone()).unwrap_or_default();
        let id = kit.run(config).await?;
        let mounts = mount_points(&kit, &id).await?;
        for path in &sc.masked_paths {
            // Only paths the node has can be masked (a bind of /dev/null or an empty tmpfs).
            if !std::path::Path::new(path).exists() {
                continue;
            }
            check!(mounts.iter().any(|(p, _)| p == path), "masked path {path} is not covered by a mount");
        }
        for path in &sc.readonly_paths {
            if !std::path::Path::new(path).exists() {
                continue;
            }
            let mount = mounts.iter().rev().find(|(p, _)| p == path);
            check!(
                mount.is_some_and(|(_, o)| o.split(',').any(|o| o == "ro")),
                "read-only path {path} is not mounted read-only: {mount:?}"
            );
        }
        let r = kit
            .exec(&id, &["sh", "-c", "echo 1 > /proc/sys/kernel/panic"], 30)
            .await
            .map_err(|e| crate::framework::call_failed("ExecSync", &e))?;
        check!(r.exit_code != 0, "writing /proc/sys/kernel/panic succeeded inside the container");
        Ok(())
    })
    .await
}

/// `id -u`, `id -g` and `id -G` of an exec in the container.
async fn ids(kit: &Kit, id: &str) -> Result<(i64, i64, Vec<i64>), Failure> {
    let out = kit.sh(id, "id -u; id -g; id -G").await?;
    let mut lines = out.lines();
    let mut num = || lines.next().and_then(|l| l.trim().parse::<i64>().ok()).unwrap_or(-1);
    let (uid, gid) = (num(), num());
    let groups = out.lines().nth(2).unwrap_or("").split_whitespace().filter_map(|g| g.parse().ok()).collect();
    Ok((uid, gid, groups))
}

/// The same, of the container's own process (/proc/1/status), which exec may not share.
async fn init_ids(kit: &Kit, id: &str) -> Result<(i64, i64, Vec<i64>), Failure> {
    let status = kit.exec_ok(id, &["cat", "/proc/1/status"]).await?;
    let field = |name: &str| -> Vec<i64> {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect())
            .unwrap_or_default()
    };
    let uid = field("Uid:").first().copied().unwrap_or(-1);
    let gid = field("Gid:").first().copied().unwrap_or(-1);
    Ok((uid, gid, field("Groups:")))
}

async fn user_and_groups(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "user", |kit| async move {
        let mut config = kit.shell_config("user", "exec sleep 3600").await?;
        let sc = security(&mut config);
        sc.run_as_user = Some(model::Int64Value { value: 1000 });
        sc.run_as_group = Some(model::Int64Value { value: 2000 });
        sc.supplemental_groups = vec![3000, 3001];
        let id = kit.run(config).await?;
        for (who, (uid, gid, groups)) in
            [("the container", init_ids(&kit, &id).await?), ("an exec", ids(&kit, &id).await?)]
        {
            check!(uid == 1000 && gid == 2000, "{who} runs as uid {uid} gid {gid}, not 1000 / 2000");
            check!(
                groups.contains(&3000) && groups.contains(&3001),
                "{who}'s supplemental groups {groups:?} lack 3000 and 3001"
            );
        }
        Ok(())
    })
    .await
}

async fn image_user(ctx: Ctx) -> TestResult {
    use fixtures::{IMAGE_EXTRA_GID, IMAGE_GID, IMAGE_UID, IMAGE_USER_UID};
    with_kit(&ctx, "image-user", |kit| async move {
        // (image, USER, uid, gid): a name takes its gid from /etc/passwd unless a group follows.
        let cases = [
            (fixtures::USER_UID, IMAGE_UID.to_string(), IMAGE_UID, 0),
            (fixtures::USER_UID_GROUP, format!("{IMAGE_UID}:{IMAGE_GID}"), IMAGE_UID, IMAGE_GID),
            (fixtures::USER_NAME, fixtures::IMAGE_USER.to_string(), IMAGE_USER_UID, IMAGE_USER_UID),
            (fixtures::USER_NAME_GROUP, format!("{}:extra", fixtures::IMAGE_USER), IMAGE_USER_UID, IMAGE_EXTRA_GID),
        ];
        for (i, (repo, user, want_uid, want_gid)) in cases.into_iter().enumerate() {
            let image = kit.image(repo).await?;
            let id = kit.run(kit.config(&format!("image-user-{i}"), &image, &["sleep", "3600"])).await?;
            let (uid, gid, _) = init_ids(&kit, &id).await?;
            check!(
                uid == want_uid && gid == want_gid,
                "the image's USER {user} gave uid {uid} gid {gid}, not {want_uid} / {want_gid}"
            );
        }
        Ok(())
    })
    .await
}

async fn run_as_username(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "username", |kit| async move {
        let image = kit.image(fixtures::USER_NAME).await?;
        let mut config = kit.config("username", &image, &["sleep", "3600"]);
        // What the kubelet sends for an image whose USER is a name.
        security(&mut config).run_as_username = fixtures::IMAGE_USER.into();
        let id = kit.run(config).await?;
        let (uid, gid, _) = init_ids(&kit, &id).await?;
        check!(
            uid == fixtures::IMAGE_USER_UID && gid == fixtures::IMAGE_USER_UID,
            "run_as_username {} gave uid {uid} gid {gid}, not {}",
            fixtures::IMAGE_USER,
            fixtures::IMAGE_USER_UID
        );
        // Another name than the image's USER: a runtime that ignored the request would run as app.
        let mut config = kit.config("username-root", &image, &["sleep", "3600"]);
        security(&mut config).run_as_username = "root".into();
        let id = kit.run(config).await?;
        let (uid, gid, _) = init_ids(&kit, &id).await?;
        check!(
            uid == 0 && gid == 0,
            "run_as_username root on an image whose USER is {} gave uid {uid} gid {gid}, not 0 / 0",
            fixtures::IMAGE_USER
        );
        let name = kit.exec_ok(&id, &["id", "-un"]).await?;
        check!(name.trim() == "root", "`id -un` says {:?}, not root", name.trim());
        Ok(())
    })
    .await
}

/// The container's namespace links (`/proc/self/ns/<kind>` of an exec) against the harness's
/// own, which are the node's.
async fn namespace_links(kit: &Kit, id: &str) -> Result<Vec<(&'static str, bool)>, Failure> {
    let mut same = Vec::new();
    for kind in ["pid", "ipc", "net"] {
        let inside = kit.exec_ok(id, &["readlink", &format!("/proc/self/ns/{kind}")]).await?;
        let node = std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .map_err(|e| Failure::fail(format!("cannot read the node's /proc/self/ns/{kind}: {e}")))?;
        same.push((kind, inside.trim() == node.display().to_string()));
    }
    Ok(same)
}

async fn node_namespaces(ctx: Ctx) -> TestResult {
    let node = |c: &mut model::PodSandboxConfig| {
        c.hostname.clear();
        let options = super::podkit::namespace_options(c);
        options.pid = model::NamespaceMode::Node as i32;
        options.ipc = model::NamespaceMode::Node as i32;
        options.network = model::NamespaceMode::Node as i32;
    };
    with_kit_config(&ctx, "host-namespaces", node, |kit| async move {
        let id = kit.run_sleeper("host-namespaces").await?;
        let apart: Vec<_> = namespace_links(&kit, &id).await?.into_iter().filter(|(_, same)| !same).collect();
        check!(apart.is_empty(), "with pid, ipc and network NODE, the container is not in the node's {apart:?}");
        Ok(())
    })
    .await?;
    with_kit(&ctx, "pod-namespaces", |kit| async move {
        let id = kit.run_sleeper("pod-namespaces").await?;
        let shared: Vec<_> = namespace_links(&kit, &id).await?.into_iter().filter(|(_, same)| *same).collect();
        check!(shared.is_empty(), "with pid CONTAINER, ipc and network POD, the container is in the node's {shared:?}");
        Ok(())
    })
    .await
}

async fn groups_policy(ctx: Ctx, policy: model::SupplementalGroupsPolicy) -> TestResult {
    let adjust = move |c: &mut model::PodSandboxConfig| {
        let sc = c.linux.get_or_insert_with(Default::default).security_context.get_or_insert_with(Default::default);
        sc.supplemental_groups_policy = policy as i32;
        sc.supplemental_groups = vec![3000];
    };
    with_kit_config(&ctx, "groups-policy", adjust, |kit| async move {
        let image = kit.image(fixtures::USER_NAME).await?;
        let mut config = kit.config("groups-policy", &image, &["sleep", "3600"]);
        let sc = security(&mut config);
        sc.run_as_user = Some(model::Int64Value { value: fixtures::IMAGE_USER_UID });
        sc.supplemental_groups = vec![3000];
        sc.supplemental_groups_policy = policy as i32;
        let id = kit.run(config).await?;
        let (_, _, groups) = init_ids(&kit, &id).await?;
        check!(groups.contains(&3000), "the requested group 3000 is missing: {groups:?}");
        let has_image_group = groups.contains(&fixtures::IMAGE_EXTRA_GID);
        let want = policy == model::SupplementalGroupsPolicy::Merge;
        check!(
            has_image_group == want,
            "with policy {policy:?} the image's group {} of {} is {}: groups {groups:?}",
            fixtures::IMAGE_EXTRA_GID,
            fixtures::IMAGE_USER,
            if has_image_group { "present" } else { "absent" }
        );
        let status = kit.status(&id).await?;
        if let Some(user) = status.user.and_then(|u| u.linux) {
            check!(
                user.supplemental_groups.contains(&fixtures::IMAGE_EXTRA_GID) == want,
                "ContainerStatus.user reports groups {:?}, which disagree with policy {policy:?}",
                user.supplemental_groups
            );
        }
        Ok(())
    })
    .await
}

async fn no_new_privs(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "nnp", |kit| async move {
        for (name, on) in [("nnp-on", true), ("nnp-off", false)] {
            let mut config = kit.shell_config(name, "exec sleep 3600").await?;
            security(&mut config).no_new_privs = on;
            let id = kit.run(config).await?;
            let status = kit.exec_ok(&id, &["cat", "/proc/1/status"]).await?;
            let value = status.lines().find(|l| l.starts_with("NoNewPrivs:")).and_then(|l| l.split_whitespace().nth(1));
            check!(value == Some(if on { "1" } else { "0" }), "no_new_privs {on} gave NoNewPrivs {value:?}");
        }
        Ok(())
    })
    .await
}

/// Whether `unshare -U true` works in a container with the seccomp profile `kind`.
async fn user_namespace_allowed(kit: &Kit, name: &str, kind: ProfileType) -> Result<bool, Failure> {
    let mut config = kit.shell_config(name, "exec sleep 3600").await?;
    security(&mut config).seccomp = Some(profile(kind));
    let id = kit.run(config).await?;
    let r = kit
        .exec(&id, &["unshare", "-U", "true"], 30)
        .await
        .map_err(|e| crate::framework::call_failed("ExecSync", &e))?;
    Ok(r.exit_code == 0)
}

async fn seccomp_default(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "seccomp", |kit| async move {
        let unconfined = user_namespace_allowed(&kit, "seccomp-unconfined", ProfileType::Unconfined).await?;
        if !unconfined {
            return Err(Failure::skip("this node refuses user namespaces even without seccomp"));
        }
        let default = user_namespace_allowed(&kit, "seccomp-default", ProfileType::RuntimeDefault).await?;
        check!(!default, "`unshare -U` works under RuntimeDefault: the profile lets a process make user namespaces");
        Ok(())
    })
    .await
}

async fn seccomp_localhost(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "seccomp-localhost", |kit| async move {
        let dir = tempfile::Builder::new()
            .prefix("lockstep-conformance-seccomp-")
            .tempdir()
            .map_err(|e| Failure::fail(format!("cannot make a temp dir: {e}")))?;
        let path = dir.path().join("no-mkdir.json");
        let profile_json = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
        });
        std::fs::write(&path, profile_json.to_string())
            .map_err(|e| Failure::fail(format!("cannot write {}: {e}", path.display())))?;
        let mut config = kit.shell_config("seccomp-localhost", "exec sleep 3600").await?;
        security(&mut config).seccomp = Some(model::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: path.display().to_string(),
        });
        let id = kit.run(config).await?;
        let r = kit
            .exec(&id, &["mkdir", "/tmp/refused"], 30)
            .await
            .map_err(|e| crate::framework::call_failed("ExecSync", &e))?;
        check!(r.exit_code != 0, "mkdir worked under a Localhost profile that refuses mkdir");
        kit.exec_ok(&id, &["touch", "/tmp/allowed"]).await?;
        Ok(())
    })
    .await
}

async fn readonly_rootfs(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "readonly", |kit| async move {
        let volume = tempfile::Builder::new()
            .prefix("lockstep-conformance-volume-")
            .tempdir()
            .map_err(|e| Failure::fail(format!("cannot make a temp dir: {e}")))?;
        let mut config = kit.shell_config("readonly", "exec sleep 3600").await?;
        security(&mut config).readonly_rootfs = true;
        config.mounts.push(model::Mount {
            container_path: "/data".into(),
            host_path: volume.path().display().to_string(),
            ..Default::default()
        });
        let id = kit.run(config).await?;
        let r = kit
            .exec(&id, &["touch", "/written"], 30)
            .await
            .map_err(|e| crate::framework::call_failed("ExecSync", &e))?;
        check!(r.exit_code != 0, "writing to a read-only rootfs succeeded");
        kit.exec_ok(&id, &["touch", "/data/written"]).await?;
        check!(volume.path().join("written").exists(), "a file written to the volume is not on the node");
        let writable = kit.run_sleeper("writable").await?;
        kit.exec_ok(&writable, &["touch", "/written"]).await?;
        Ok(())
    })
    .await
}

/// The `Seccomp:` mode (0 off, 1 strict, 2 filter) of the container's process and of an
/// exec's (`cat` reading its own /proc/self/status, as critest reads it).
async fn seccomp_mode(kit: &Kit, id: &str) -> Result<(String, String), Failure> {
    let field = |status: &str| {
        status
            .lines()
            .find(|l| l.starts_with("Seccomp:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("(no Seccomp line)")
            .to_string()
    };
    let init = field(&kit.exec_ok(id, &["cat", "/proc/1/status"]).await?);
    let exec = field(&kit.exec_ok(id, &["cat", "/proc/self/status"]).await?);
    Ok((init, exec))
}

/// A shell container whose security context carries `seccomp` (None: neither field set).
async fn run_with_seccomp(kit: &Kit, name: &str, seccomp: Option<model::SecurityProfile>) -> Result<String, Failure> {
    let mut config = kit.shell_config(name, "exec sleep 3600").await?;
    // The kit never sets the deprecated seccomp_profile_path: `None` leaves both fields empty.
    security(&mut config).seccomp = seccomp;
    kit.run(config).await
}

/// The CRI: a nil profile is Unconfined (the kubelet sends one only with seccompDefault off and
/// no pod profile; critest sends none). A runtime that applies its default profile here breaks
/// workloads that ran unconfined before.
async fn seccomp_none(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "seccomp-none", |kit| async move {
        let id = run_with_seccomp(&kit, "seccomp-none", None).await?;
        let (init, exec) = seccomp_mode(&kit, &id).await?;
        check!(
            init == "0" && exec == "0",
            "with neither seccomp nor seccomp_profile_path set, Seccomp is {init} for the container and {exec} for \
             an exec, not 0 (unconfined): a nil profile means Unconfined"
        );
        Ok(())
    })
    .await
}

/// Writes a Localhost profile that allows everything but `denied`; the directory goes with the guard.
fn localhost_profile(denied: &[&str]) -> Result<(tempfile::TempDir, String), Failure> {
    let dir = tempfile::Builder::new()
        .prefix("lockstep-conformance-seccomp-")
        .tempdir()
        .map_err(|e| Failure::fail(format!("cannot make a temp dir: {e}")))?;
    let path = dir.path().join("profile.json");
    let profile_json = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": denied, "action": "SCMP_ACT_ERRNO"}],
    });
    std::fs::write(&path, profile_json.to_string())
        .map_err(|e| Failure::fail(format!("cannot write {}: {e}", path.display())))?;
    Ok((dir, path.display().to_string()))
}

fn localhost(path: &str) -> model::SecurityProfile {
    model::SecurityProfile { profile_type: ProfileType::Localhost as i32, localhost_ref: path.into() }
}

async fn seccomp_modes(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "seccomp-modes", |kit| async move {
        let (_dir, path) = localhost_profile(&["sethostname"])?;
        for (name, seccomp, want) in [
            ("seccomp-runtime-default", profile(ProfileType::RuntimeDefault), "2"),
            ("seccomp-localhost", localhost(&path), "2"),
            ("seccomp-unconfined", profile(ProfileType::Unconfined), "0"),
        ] {
            let id = run_with_seccomp(&kit, name, Some(seccomp.clone())).await?;
            let (init, exec) = seccomp_mode(&kit, &id).await?;
            check!(
                init == want && exec == want,
                "seccomp {:?} gave Seccomp {init} for the container and {exec} for an exec, not {want}",
                ProfileType::try_from(seccomp.profile_type).unwrap_or(ProfileType::RuntimeDefault)
            );
        }
        Ok(())
    })
    .await
}

/// Whether `hostname <new>` works in a container running `config`.
async fn sethostname_works(kit: &Kit, config: model::ContainerConfig) -> Result<bool, Failure> {
    let id = kit.run(config).await?;
    let r = kit
        .exec(&id, &["hostname", "lockstep-renamed"], 30)
        .await
        .map_err(|e| crate::framework::call_failed("ExecSync", &e))?;
    Ok(r.exit_code == 0)
}

async fn seccomp_sethostname(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "seccomp-hostname", |kit| async move {
        let (_dir, path) = localhost_profile(&["sethostname"])?;
        let mut unconfined = kit.shell_config("hostname-unconfined", "exec sleep 3600").await?;
        with_caps(&mut unconfined, &["SYS_ADMIN"], &[]);
        check!(
            sethostname_works(&kit, unconfined).await?,
            "`hostname` failed with SYS_ADMIN and seccomp Unconfined: nothing should block it"
        );
        let mut blocked = kit.shell_config("hostname-blocked", "exec sleep 3600").await?;
        with_caps(&mut blocked, &["SYS_ADMIN"], &[]);
        security(&mut blocked).seccomp = Some(localhost(&path));
        check!(
            !sethostname_works(&kit, blocked).await?,
            "`hostname` worked under a Localhost profile that refuses sethostname"
        );
        Ok(())
    })
    .await
}

async fn seccomp_privileged(ctx: Ctx) -> TestResult {
    let adjust = |c: &mut model::PodSandboxConfig| {
        c.linux.get_or_insert_with(Default::default).security_context.get_or_insert_with(Default::default).privileged =
            true;
    };
    with_kit_config(&ctx, "seccomp-privileged", adjust, |kit| async move {
        let (_dir, path) = localhost_profile(&["sethostname"])?;
        let mut config = kit.shell_config("seccomp-privileged", "exec sleep 3600").await?;
        let sc = security(&mut config);
        sc.privileged = true;
        sc.masked_paths.clear();
        sc.readonly_paths.clear();
        sc.seccomp = Some(localhost(&path));
        check!(
            sethostname_works(&kit, config).await?,
            "`hostname` failed in a privileged container: its Localhost profile was applied, but privileged \
             containers run without seccomp"
        );
        Ok(())
    })
    .await
}

/// CRI-O's nine; what lockstepd and CRI-O give. containerd and Docker give five more (MKNOD,
/// NET_RAW, SETFCAP, SYS_CHROOT, AUDIT_WRITE), which this test reports.
const DEFAULT_CAPABILITIES: [&str; 9] =
    ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "SETGID", "SETUID", "SETPCAP", "NET_BIND_SERVICE", "KILL"];

async fn default_capabilities(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "caps-default", |kit| async move {
        let mut config = kit.shell_config("caps-default", "exec sleep 3600").await?;
        // As the kubelet sends a container whose securityContext names no capabilities.
        security(&mut config).capabilities = None;
        let id = kit.run(config).await?;
        let status = kit.exec_ok(&id, &["cat", "/proc/1/status"]).await?;
        let want = DEFAULT_CAPABILITIES.iter().fold(0u64, |m, c| m | bit(c)) & node_capabilities()?;
        for field in ["CapEff:", "CapBnd:"] {
            let got = status_mask(&status, field)?;
            let extra: Vec<_> = names(got & !want);
            let missing: Vec<_> = names(want & !got);
            check!(
                got == want,
                "{field} of a container that names no capabilities: extra {extra:?}, missing {missing:?} \
                 (the default set is {DEFAULT_CAPABILITIES:?})"
            );
        }
        Ok(())
    })
    .await
}

/// The kubelet always sends its own lists, except for a privileged container; critest sends
/// none: then the runtime's defaults apply, which cover at least the kubelet's lists.
async fn default_paths(ctx: Ctx) -> TestResult {
    use crate::kubelet::container_config::{MASKED_PATHS, READONLY_PATHS};
    with_kit(&ctx, "paths-default", |kit| async move {
        let mut config = kit.shell_config("paths-default", "exec sleep 3600").await?;
        let sc = security(&mut config);
        sc.masked_paths.clear();
        sc.readonly_paths.clear();
        let id = kit.run(config).await?;
        let mounts = mount_points(&kit, &id).await?;
        let mut problems = Vec::new();
        for path in MASKED_PATHS.iter().filter(|p| std::path::Path::new(p).exists()) {
            if !mounts.iter().any(|(p, _)| p == path) {
                problems.push(format!("{path} is not masked"));
            }
        }
        for path in READONLY_PATHS.iter().filter(|p| std::path::Path::new(p).exists()) {
            let mount = mounts.iter().rev().find(|(p, _)| p == path);
            if !mount.is_some_and(|(_, o)| o.split(',').any(|o| o == "ro")) {
                problems.push(format!("{path} is not mounted read-only ({mount:?})"));
            }
        }
        check!(problems.is_empty(), "with no masked or read-only paths requested: {}", problems.join("; "));
        Ok(())
    })
    .await
}
