//! container-resources: the container's cgroup as the process sees it (cgroup v1 or v2 files
//! under /sys/fs/cgroup inside the container) — limits from CreateContainer, changes by
//! UpdateContainerResources, ContainerStatus.resources where the runtime reports it, an OOM
//! kill reported with reason OOMKilled, and the stats RPCs with their filters.

use std::time::Duration;

use lockstep_cri::{model, Minor};

use super::conkit::{resources, with_kit, Kit};
use super::containers::IMAGES;
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};

const AREA: &str = "container-resources";

fn test(name: &'static str, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    vec![
        test("CreateContainer puts the memory limit, CPU quota and shares in the container's cgroup", IMAGES, |c| {
            Box::pin(limits_at_create(c))
        }),
        test("UpdateContainerResources changes the cgroup of a running container", IMAGES, |c| Box::pin(update(c))),
        test("ContainerStatus.resources reports the limits after an update", IMAGES, |c| Box::pin(status_resources(c))),
        test("A container over its memory limit is OOM-killed: exit code 137, reason OOMKilled", IMAGES, |c| {
            Box::pin(oom_killed(c))
        }),
        test(
            "ContainerStats and ListContainerStats report running containers; id and label filters exclude the rest",
            IMAGES,
            |c| Box::pin(stats(c)),
        ),
    ]
}

const MIB: i64 = 1024 * 1024;

/// The container's limits as its cgroup files say, read from inside (v2 or v1 layout).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    memory: i64,
    quota: i64,
    period: i64,
    /// cpu.shares (v1), or cpu.weight (v2) converted back to shares as the kubelet converts.
    weight_or_shares: String,
}

const READ_CGROUP: &str = "if [ -e /sys/fs/cgroup/cgroup.controllers ]; then \
     echo v2; cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu.weight; \
   else \
     echo v1; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us \
       /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/cpu/cpu.shares; \
   fi";

async fn seen(kit: &Kit, id: &str) -> Result<Seen, Failure> {
    let out = kit.sh(id, READ_CGROUP).await?;
    let words: Vec<&str> = out.split_whitespace().collect();
    let num = |w: Option<&&str>| w.and_then(|w| w.parse::<i64>().ok()).unwrap_or(-1);
    match words.first() {
        Some(&"v1") => Ok(Seen {
            memory: num(words.get(1)),
            quota: num(words.get(2)),
            period: num(words.get(3)),
            weight_or_shares: words.get(4).map(|s| s.to_string()).unwrap_or_default(),
        }),
        Some(&"v2") => Ok(Seen {
            memory: num(words.get(1)),
            quota: num(words.get(2)),
            period: num(words.get(3)),
            weight_or_shares: format!("weight {}", words.get(4).unwrap_or(&"?")),
        }),
        _ => Err(Failure::fail(format!("cannot read the container's cgroup files:\n{out}"))),
    }
}

/// cpu.shares as cgroup v2's cpu.weight, the formula runc and crun use.
fn weight_of(shares: i64) -> i64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares - 2) * 9999) / 262_142
}

fn want_shares(seen: &Seen, shares: i64) -> bool {
    seen.weight_or_shares == shares.to_string() || seen.weight_or_shares == format!("weight {}", weight_of(shares))
}

fn limited(memory: i64, quota: i64, shares: i64) -> model::LinuxContainerResources {
    model::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: memory,
        ..Default::default()
    }
}

async fn limits_at_create(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "limits", |kit| async move {
        let mut config = kit.shell_config("limits", "exec sleep 3600").await?;
        *resources(&mut config) = limited(64 * MIB, 50_000, 512);
        let id = kit.run(config).await?;
        let s = seen(&kit, &id).await?;
        check!(s.memory == 64 * MIB, "the memory limit inside is {} (want {})", s.memory, 64 * MIB);
        check!(s.quota == 50_000 && s.period == 100_000, "CPU quota/period inside are {}/{}", s.quota, s.period);
        check!(want_shares(&s, 512), "CPU shares 512 show as {:?}", s.weight_or_shares);
        Ok(())
    })
    .await
}

async fn update_to(kit: &Kit, id: &str, linux: model::LinuxContainerResources) -> TestResult {
    kit.client()
        .update_container_resources(model::UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(linux),
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(|e| call_failed("UpdateContainerResources", &e))
}

async fn update(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "update", |kit| async move {
        let mut config = kit.shell_config("update", "exec sleep 3600").await?;
        *resources(&mut config) = limited(64 * MIB, 50_000, 512);
        let id = kit.run(config).await?;
        update_to(&kit, &id, limited(96 * MIB, 150_000, 1024)).await?;
        let s = seen(&kit, &id).await?;
        check!(s.memory == 96 * MIB, "after the update the memory limit is {} (want {})", s.memory, 96 * MIB);
        check!(s.quota == 150_000, "after the update the CPU quota is {} (want 150000)", s.quota);
        check!(want_shares(&s, 1024), "after the update CPU shares 1024 show as {:?}", s.weight_or_shares);
        let status = kit.status(&id).await?;
        check!(
            status.state == model::ContainerState::ContainerRunning as i32,
            "the container stopped running after the update"
        );
        Ok(())
    })
    .await
}

async fn status_resources(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "status-resources", |kit| async move {
        let mut config = kit.shell_config("status-resources", "exec sleep 3600").await?;
        *resources(&mut config) = limited(64 * MIB, 50_000, 512);
        let id = kit.run(config).await?;
        update_to(&kit, &id, limited(96 * MIB, 150_000, 1024)).await?;
        let status = kit.status(&id).await?;
        let Some(linux) = status.resources.and_then(|r| r.linux) else {
            return Err(Failure::skip(
                "the runtime does not report ContainerStatus.resources (optional; in-place resize reads it)",
            ));
        };
        check!(linux.memory_limit_in_bytes == 96 * MIB, "reported memory limit {}", linux.memory_limit_in_bytes);
        check!(linux.cpu_quota == 150_000, "reported CPU quota {}", linux.cpu_quota);
        check!(linux.cpu_shares == 1024, "reported CPU shares {}", linux.cpu_shares);
        Ok(())
    })
    .await
}

async fn oom_killed(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "oom", |kit| async move {
        let mut config = kit.shell_config("oom", "sleep 0.5; tail /dev/zero").await?;
        // No swap limit means the node's (these VMs have no swap): the limit alone decides.
        resources(&mut config).memory_limit_in_bytes = 32 * MIB;
        let id = kit.create(config).await?;
        kit.start(&id).await?;
        let s = kit.wait_exit(&id).await?;
        check!(s.exit_code == 137, "exit code is {}, not 137 (SIGKILL by the OOM killer)", s.exit_code);
        check!(s.reason == "OOMKilled", "reason is {:?}, not OOMKilled", s.reason);
        Ok(())
    })
    .await
}

fn stats_ids(stats: &[model::ContainerStats]) -> Vec<String> {
    let mut ids: Vec<String> = stats.iter().filter_map(|s| s.attributes.as_ref()).map(|a| a.id.clone()).collect();
    ids.sort();
    ids
}

async fn list_stats(kit: &Kit, filter: Option<model::ContainerStatsFilter>) -> Result<Vec<String>, Failure> {
    let r = kit
        .client()
        .list_container_stats(model::ListContainerStatsRequest { filter })
        .await
        .map_err(|e| call_failed("ListContainerStats", &e))?;
    Ok(stats_ids(&r.stats))
}

/// critest's stats specs: one container by id, every container with no filter, and a label
/// selector that must leave out a container whose label has another value.
async fn stats(ctx: Ctx) -> TestResult {
    const LABEL: &str = "lockstep.conformance/stats";
    with_kit(&ctx, "stats", |kit| async move {
        let mut ids = Vec::new();
        for name in ["stats-a", "stats-b"] {
            let mut config = kit.shell_config(name, "exec sleep 3600").await?;
            config.labels.insert(LABEL.into(), name.into());
            ids.push(kit.run(config).await?);
        }
        let (a, b) = (ids[0].clone(), ids[1].clone());
        let one = kit
            .client()
            .container_stats(model::ContainerStatsRequest { container_id: a.clone() })
            .await
            .map_err(|e| call_failed("ContainerStats", &e))?
            .stats
            .ok_or_else(|| Failure::fail("ContainerStatsResponse.stats is absent"))?;
        let attributes = one.attributes.clone().unwrap_or_default();
        check!(attributes.id == a, "ContainerStats of {a} reports attributes.id {:?}", attributes.id);
        let name = attributes.metadata.map(|m| m.name).unwrap_or_default();
        check!(name == "stats-a", "ContainerStats reports the container's name as {name:?}");
        let cpu = one.cpu.as_ref().map_or(0, |c| c.timestamp);
        let memory = one.memory.as_ref().map_or(0, |m| m.timestamp);
        check!(cpu != 0 && memory != 0, "ContainerStats has cpu.timestamp {cpu} and memory.timestamp {memory}");
        let by_id = list_stats(&kit, Some(model::ContainerStatsFilter { id: a.clone(), ..Default::default() })).await?;
        check!(by_id == [a.clone()], "ListContainerStats filtered by id {a} gave {by_id:?}");
        let everything = list_stats(&kit, None).await?;
        check!(
            everything.contains(&a) && everything.contains(&b),
            "ListContainerStats with no filter lacks the pod's containers: {everything:?}"
        );
        let selector = |v: &str| [(LABEL.to_string(), v.to_string())].into();
        let labelled = list_stats(
            &kit,
            Some(model::ContainerStatsFilter { label_selector: selector("stats-b"), ..Default::default() }),
        )
        .await?;
        check!(labelled == [b.clone()], "ListContainerStats with {LABEL}=stats-b gave {labelled:?}, not just {b}");
        let none = list_stats(
            &kit,
            Some(model::ContainerStatsFilter { label_selector: selector("stats-c"), ..Default::default() }),
        )
        .await?;
        check!(none.is_empty(), "ListContainerStats with {LABEL}=stats-c, which no container has, gave {none:?}");
        let in_pod = list_stats(
            &kit,
            Some(model::ContainerStatsFilter { pod_sandbox_id: kit.pod.id.clone(), ..Default::default() }),
        )
        .await?;
        let mut want = vec![a, b];
        want.sort();
        check!(in_pod == want, "ListContainerStats filtered by the pod gave {in_pod:?}, not {want:?}");
        Ok(())
    })
    .await
}
