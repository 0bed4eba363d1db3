//! user-namespaces: pods with `hostUsers: false` (NamespaceOption.userns_options mode POD, as
//! the kubelet sends it: one range of 65536 IDs from a multiple of 65536, container ID 0
//! first), for runtimes whose default handler reports user_namespaces — the mapping seen
//! from inside, the container's root a non-root uid on the node, the image's files owned by
//! that root and writable, one user namespace per pod shared by its containers; NODE mode
//! keeping the node's; and the options no pod may have refused without leaving a pod
//! behind. Touches only the pods and containers it makes.

use std::time::Duration;

use lockstep_cri::{model, Minor};

use super::conkit::{with_kit_config, Kit};
use super::podkit;
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Feature, Need, Test, TestFuture, TestResult};

const AREA: &str = "user-namespaces";
const USERNS: &[Need] = &[Need::Registry, Need::Feature(Feature::UserNamespaces)];

/// The host ID of the test pods' container root: a multiple of 65536, as the kubelet
/// allocates, far above the node's own users.
const HOST_ID: u32 = 65536 * 29;
const LENGTH: u32 = 65536;

fn test(name: &'static str, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    vec![
        test(
            "hostUsers: false: the container sees the pod's mapping, and its root is a non-root uid on the node",
            USERNS,
            |c| Box::pin(mapping_seen(c)),
        ),
        test(
            "hostUsers: false: the container's root owns the image's files and can write its rootfs, /etc/hosts \
             and /dev/shm",
            USERNS,
            |c| Box::pin(root_owns_its_files(c)),
        ),
        test(
            "hostUsers: false: a host path mounted with the pod's mappings is idmapped: the node's root's files are \
             the container root's, and what that root writes is the node root's",
            USERNS,
            |c| Box::pin(idmapped_volume(c)),
        ),
        test("hostUsers: false: the pod's containers share one user namespace, not the node's", USERNS, |c| {
            Box::pin(one_namespace_per_pod(c))
        }),
        test("userns_options NODE keeps the node's user namespace", &[Need::Registry], |c| Box::pin(node_mode(c))),
        test(
            "userns_options no pod can have (CONTAINER, TARGET, two ranges, container ID 0 unmapped) are refused and \
             leave no pod",
            &[],
            |c| Box::pin(refused(c)),
        ),
    ]
}

fn range(container_id: u32, host_id: u32, length: u32) -> model::IdMapping {
    model::IdMapping { container_id, host_id, length }
}

/// userns_options as the kubelet sends them for `hostUsers: false`.
fn pod_userns() -> model::UserNamespace {
    model::UserNamespace {
        mode: model::NamespaceMode::Pod as i32,
        uids: vec![range(0, HOST_ID, LENGTH)],
        gids: vec![range(0, HOST_ID, LENGTH)],
    }
}

fn with_userns(options: model::UserNamespace) -> impl FnOnce(&mut model::PodSandboxConfig) {
    move |config| podkit::namespace_options(config).userns_options = Some(options)
}

/// The three numbers of each line of a uid_map or gid_map.
fn map_lines(text: &str) -> Vec<Vec<u64>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        .collect()
}

/// The container's init process on the node, from verbose ContainerStatus (lockstepd,
/// containerd and CRI-O all put a JSON object with "pid" in the info map).
async fn host_pid(kit: &Kit, id: &str) -> Result<i32, Failure> {
    let status = kit
        .client()
        .container_status(model::ContainerStatusRequest { container_id: id.into(), verbose: true })
        .await
        .map_err(|e| call_failed("ContainerStatus", &e))?;
    status
        .info
        .values()
        .filter_map(|v| serde_json::from_str::<serde_json::Value>(v).ok())
        .find_map(|v| v["pid"].as_i64().filter(|p| *p > 0))
        .map(|p| p as i32)
        .ok_or_else(|| Failure::fail("verbose ContainerStatus names no pid of the running container"))
}

async fn mapping_seen(ctx: Ctx) -> TestResult {
    with_kit_config(&ctx, "userns-mapping", with_userns(pod_userns()), |kit| async move {
        let id = kit.run_shell("mapped", "exec sleep 3600").await?;
        let expected = vec![vec![0, u64::from(HOST_ID), u64::from(LENGTH)]];
        for file in ["uid_map", "gid_map"] {
            let text = kit.exec_ok(&id, &["cat", &format!("/proc/self/{file}")]).await?;
            check!(
                map_lines(&text) == expected,
                "/proc/self/{file} in the container is {text:?}, not 0 {HOST_ID} {LENGTH}"
            );
        }
        let inside = kit.sh(&id, "id -u; id -g").await?;
        check!(inside.split_whitespace().eq(["0", "0"]), "the container's user is {inside:?}, not root (0 0)");
        let pid = host_pid(&kit, &id).await?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| Failure::fail(format!("cannot read /proc/{pid}/status on the node: {e}")))?;
        for key in ["Uid:", "Gid:"] {
            let ids: Vec<&str> = status
                .lines()
                .find(|l| l.starts_with(key))
                .map(|l| l.split_whitespace().skip(1).collect())
                .unwrap_or_default();
            check!(
                ids.len() == 4 && ids.iter().all(|v| *v == HOST_ID.to_string()),
                "on the node the container's root has {key} {ids:?}, not {HOST_ID}"
            );
        }
        Ok(())
    })
    .await
}

async fn root_owns_its_files(ctx: Ctx) -> TestResult {
    with_kit_config(&ctx, "userns-files", with_userns(pod_userns()), |kit| async move {
        let id = kit.run_shell("owner", "exec sleep 3600").await?;
        let owners = kit.sh(&id, "stat -c %u:%g / /bin /etc /bin/sh").await?;
        check!(
            owners.split_whitespace().all(|o| o == "0:0") && owners.split_whitespace().count() == 4,
            "the image's root-owned files are {owners:?} to the container's root, not 0:0"
        );
        let wrote = kit
            .sh(&id, "echo a > /made-by-root && echo '# by root' >> /etc/hosts && echo s > /dev/shm/s && stat -c %u /made-by-root /dev/shm/s")
            .await?;
        check!(
            wrote.split_whitespace().eq(["0", "0"]),
            "files the container's root made are owned by {wrote:?} as it sees them, not 0"
        );
        Ok(())
    })
    .await
}

async fn idmapped_volume(ctx: Ctx) -> TestResult {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let volume = tempfile::Builder::new()
        .prefix("lockstep-conformance-idmap-")
        .tempdir()
        .map_err(|e| Failure::fail(format!("cannot make a directory on the node: {e}")))?;
    let secret = volume.path().join("secret");
    std::fs::write(&secret, "only root reads this\n")
        .and_then(|()| std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| Failure::fail(format!("cannot write {}: {e}", secret.display())))?;
    let dir = volume.path().to_path_buf();
    with_kit_config(&ctx, "userns-volume", with_userns(pod_userns()), |kit| async move {
        let mut config = kit.shell_config("volume", "exec sleep 3600").await?;
        let userns = pod_userns();
        config.mounts.push(model::Mount {
            container_path: "/volume".into(),
            host_path: dir.display().to_string(),
            uid_mappings: userns.uids,
            gid_mappings: userns.gids,
            ..Default::default()
        });
        let id = kit.run(config).await?;
        let seen = kit
            .sh(&id, "stat -c %u:%g /volume /volume/secret && cat /volume/secret && echo w > /volume/written")
            .await?;
        let mut lines = seen.lines();
        check!(
            lines.next() == Some("0:0") && lines.next() == Some("0:0"),
            "the node root's directory and 0600 file are {seen:?} inside, not the container root's (0:0)"
        );
        check!(
            lines.next() == Some("only root reads this"),
            "the container's root cannot read a 0600 file of the volume: {seen:?}"
        );
        let written = std::fs::metadata(dir.join("written"))
            .map_err(|e| Failure::fail(format!("the container's write did not reach the node: {e}")))?;
        check!(
            (written.uid(), written.gid()) == (0, 0),
            "a file the container's root wrote is owned by {}:{} on the node, not by its root (0:0)",
            written.uid(),
            written.gid()
        );
        Ok(())
    })
    .await
}

async fn one_namespace_per_pod(ctx: Ctx) -> TestResult {
    with_kit_config(&ctx, "userns-shared", with_userns(pod_userns()), |kit| async move {
        let first = kit.run_shell("first", "exec sleep 3600").await?;
        let second = kit.run_shell("second", "exec sleep 3600").await?;
        let a = kit.exec_ok(&first, &["readlink", "/proc/self/ns/user"]).await?;
        let b = kit.exec_ok(&second, &["readlink", "/proc/self/ns/user"]).await?;
        let node = std::fs::read_link("/proc/self/ns/user")
            .map_err(|e| Failure::fail(format!("cannot read the node's user namespace: {e}")))?;
        check!(a.trim() == b.trim(), "the pod's containers are in different user namespaces: {a:?} and {b:?}");
        check!(Some(a.trim()) != node.to_str(), "the container is in the node's user namespace ({})", node.display());
        Ok(())
    })
    .await
}

async fn node_mode(ctx: Ctx) -> TestResult {
    let node = model::UserNamespace { mode: model::NamespaceMode::Node as i32, ..Default::default() };
    with_kit_config(&ctx, "userns-node", with_userns(node), |kit| async move {
        let id = kit.run_shell("node", "exec sleep 3600").await?;
        let inside = kit.exec_ok(&id, &["cat", "/proc/self/uid_map"]).await?;
        let ours = std::fs::read_to_string("/proc/self/uid_map")
            .map_err(|e| Failure::fail(format!("cannot read the node's uid_map: {e}")))?;
        check!(map_lines(&inside) == map_lines(&ours), "NODE mode shows uid_map {inside:?}, the node's is {ours:?}");
        Ok(())
    })
    .await
}

async fn refused(ctx: Ctx) -> TestResult {
    let two = vec![range(0, 1000, 100_000), range(0, 200_000, 100_000)];
    let cases = [
        ("CONTAINER", model::UserNamespace { mode: model::NamespaceMode::Container as i32, ..Default::default() }),
        ("TARGET", model::UserNamespace { mode: model::NamespaceMode::Target as i32, ..Default::default() }),
        ("two ranges", model::UserNamespace { mode: model::NamespaceMode::Pod as i32, uids: two.clone(), gids: two }),
        (
            "container ID 0 unmapped",
            model::UserNamespace {
                mode: model::NamespaceMode::Pod as i32,
                uids: vec![range(1, 1000, 100_000)],
                gids: vec![range(1, 1000, 100_000)],
            },
        ),
    ];
    let mut client = ctx.kubelet();
    for (what, options) in cases {
        let mut config = podkit::pod_config("userns-refused");
        with_userns(options)(&mut config);
        let uid = podkit::uid_of(&config);
        let answer = client
            .run_pod_sandbox(model::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
            .await;
        if let Ok(made) = answer {
            let _ = podkit::stop_and_remove(&mut client, &made.pod_sandbox_id).await;
            return Err(Failure::fail(format!("RunPodSandbox with userns_options {what} made a pod")));
        }
        let left = client
            .list_pod_sandbox(model::ListPodSandboxRequest::default())
            .await
            .map_err(|e| call_failed("ListPodSandbox", &e))?
            .items;
        check!(
            !left.iter().any(|p| p.metadata.as_ref().is_some_and(|m| m.uid == uid)),
            "a refused RunPodSandbox (userns_options {what}) left a pod behind"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lines_read_the_kernels_padded_columns() {
        assert_eq!(map_lines("         0    1900544      65536\n"), vec![vec![0, 1_900_544, 65536]]);
        assert_eq!(map_lines("0 0 4294967295\n\n"), vec![vec![0, 0, 4_294_967_295]]);
    }
}
