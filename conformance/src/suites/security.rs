//! security-context: what the kubelet's securityContext becomes inside the container —
//! capabilities added and dropped (ALL too; the default set is each runtime's policy, not
//! conformance), privileged, masked and read-only /proc paths, users and groups (image USER by
//! uid and by name, run_as_*, supplemental groups with SupplementalGroupsPolicy Merge and
//! Strict), no_new_privs, seccomp RuntimeDefault / Unconfined / Localhost, read-only rootfs.
//! Everything is read from inside the container (/proc/1/status, id, mountinfo).

use std::time::Duration;

use lockstep_cri::{model, Minor};

use super::conkit::{profile, security, with_kit, with_kit_config, Kit};
use super::containers::IMAGES;
use crate::check;
use crate::fixtures;
use crate::framework::{Ctx, Failure, Feature, Need, Test, TestFuture, TestResult};
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
        test("An image's USER is used, by uid and by name", v30, IMAGES, |c| Box::pin(image_user(c))),
        test("run_as_username is looked up in the image's /etc/passwd", v30, IMAGES, |c| Box::pin(run_as_username(c))),
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
        test("A Localhost seccomp profile is applied", v30, IMAGES, |c| Box::pin(seccomp_localhost(c))),
        test("A read-only rootfs cannot be written; its volumes can", v30, IMAGES, |c| Box::pin(readonly_rootfs(c))),
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
        let eff = cap_eff(&kit, &id).await?;
        check!(eff == bit("NET_BIND_SERVICE"), "CapEff holds {:?}, not just NET_BIND_SERVICE", names(eff));
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
    with_kit(&ctx, "image-user", |kit| async move {
        let by_uid = kit.image(fixtures::USER_UID).await?;
        let id = kit.run(kit.config("image-uid", &by_uid, &["sleep", "3600"])).await?;
        let (uid, _, _) = init_ids(&kit, &id).await?;
        check!(uid == fixtures::IMAGE_UID, "the image's USER {} gave uid {uid}", fixtures::IMAGE_UID);
        let by_name = kit.image(fixtures::USER_NAME).await?;
        let id = kit.run(kit.config("image-username", &by_name, &["sleep", "3600"])).await?;
        let (uid, gid, _) = init_ids(&kit, &id).await?;
        check!(
            uid == fixtures::IMAGE_USER_UID && gid == fixtures::IMAGE_USER_UID,
            "the image's USER {} gave uid {uid} gid {gid}, not {} from its /etc/passwd",
            fixtures::IMAGE_USER,
            fixtures::IMAGE_USER_UID
        );
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
        Ok(())
    })
    .await
}
