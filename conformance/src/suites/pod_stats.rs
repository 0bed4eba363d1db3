//! pod-stats: PodSandboxStats and ListPodSandboxStats as the kubelet's CRI stats provider reads
//! them — the pod's CPU time and memory as the kernel counts them (read from inside the
//! container's own cgroup before and after the call), its network interfaces, its process
//! count and its containers' stats; filters by id and labels; an unknown pod is NotFound.

use std::time::Duration;

use lockstep_cri::{model, Minor};

use super::conkit::{with_kit_config, Kit};
use super::containers::IMAGES;
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};

const AREA: &str = "pod-stats";

fn test(name: &'static str, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    vec![
        test(
            "PodSandboxStats gives the pod's CPU time and memory as the kernel counts them, its network and its containers",
            IMAGES,
            |c| Box::pin(as_the_kernel_counts(c)),
        ),
        test("ListPodSandboxStats filters by id and labels; no match gives none", IMAGES, |c| Box::pin(filters(c))),
        test("PodSandboxStats of an unknown pod is NotFound", &[], |c| Box::pin(unknown(c))),
    ]
}

/// Holds 64 MiB in a shell variable, then spins one core.
pub(super) const BURNER: &str = "x=$(head -c 67108864 /dev/zero | tr '\\0' a); touch /tmp/ready; while :; do :; done";

/// The container's CPU time (ns) and working set (bytes) as its own cgroup says, read from
/// inside it (the cgroup file system a runtime mounts shows the container's own cgroup).
pub(super) async fn kernel_counts(kit: &Kit, id: &str) -> Result<(u64, u64), Failure> {
    let script = "if [ -e /sys/fs/cgroup/cpu.stat ]; then \
          echo cpu $(( $(sed -n 's/^usage_usec //p' /sys/fs/cgroup/cpu.stat) * 1000 )); \
          echo mem $(( $(cat /sys/fs/cgroup/memory.current) - $(sed -n 's/^inactive_file //p' /sys/fs/cgroup/memory.stat) )); \
        else \
          echo cpu $(cat /sys/fs/cgroup/cpuacct/cpuacct.usage); \
          echo mem $(( $(cat /sys/fs/cgroup/memory/memory.usage_in_bytes) - $(sed -n 's/^total_inactive_file //p' /sys/fs/cgroup/memory/memory.stat) )); \
        fi";
    let out = kit.sh(id, script).await?;
    let field = |name: &str| -> Option<u64> {
        out.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    match (field("cpu"), field("mem")) {
        (Some(cpu), Some(mem)) => Ok((cpu, mem)),
        _ => Err(Failure::fail(format!("cannot read the container's own cgroup from inside it: {out:?}"))),
    }
}

async fn pod_stats(kit: &Kit) -> Result<model::PodSandboxStats, Failure> {
    kit.client()
        .pod_sandbox_stats(model::PodSandboxStatsRequest { pod_sandbox_id: kit.pod.id.clone() })
        .await
        .map_err(|e| call_failed("PodSandboxStats", &e))?
        .stats
        .ok_or_else(|| Failure::fail("PodSandboxStats answered without stats"))
}

/// A pod cgroup made as the kubelet makes one before RunPodSandbox (cgroupfs paths, in every
/// mounted hierarchy), removed when dropped.
pub(super) struct PodCgroup {
    pub(super) parent: String,
    dirs: Vec<std::path::PathBuf>,
}

impl PodCgroup {
    pub(super) fn make() -> Result<PodCgroup, Failure> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Failure::fail(format!("cannot read the mount table: {e}")))?;
        let name = format!("lockstep-conformance-pod-{}-{}", std::process::id(), crate::suites::podkit::unknown_id());
        let dirs: Vec<_> =
            lockstep_runtime::host::cgroups::hierarchies(&mountinfo).into_iter().map(|root| root.join(&name)).collect();
        lockstep_runtime::host::cgroups::create(&dirs)
            .map_err(|e| Failure::fail(format!("cannot make the pod's cgroup as the kubelet would: {e}")))?;
        Ok(PodCgroup { parent: format!("/{name}"), dirs })
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

async fn as_the_kernel_counts(ctx: Ctx) -> TestResult {
    let pod_cgroup = PodCgroup::make()?;
    let parent = pod_cgroup.parent.clone();
    let set_parent = move |config: &mut model::PodSandboxConfig| {
        config.linux.get_or_insert_with(Default::default).cgroup_parent = parent;
    };
    let result = with_kit_config(&ctx, "pod-stats", set_parent, |kit| async move {
        let id = kit.run_shell("burner", BURNER).await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while kit.exec(&id, &["test", "-e", "/tmp/ready"], 10).await.map(|r| r.exit_code).unwrap_or(1) != 0 {
            check!(std::time::Instant::now() < deadline, "the burner did not fill its 64 MiB within 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (cpu_before, mem_before) = kernel_counts(&kit, &id).await?;
        let stats = pod_stats(&kit).await?;
        let (cpu_after, mem_after) = kernel_counts(&kit, &id).await?;

        let attributes = stats.attributes.clone().unwrap_or_default();
        check!(attributes.id == kit.pod.id, "the stats are of pod {:?}, not {:?}", attributes.id, kit.pod.id);
        let linux = stats.linux.unwrap_or_default();
        let cpu = linux.cpu.and_then(|c| c.usage_core_nano_seconds).map(|v| v.value);
        check!(cpu.is_some(), "no CPU time for the pod");
        let cpu = cpu.unwrap_or(0);
        // The pod's cgroup may hold a pause process too: a hair more than its one container.
        check!(
            cpu >= cpu_before && cpu <= cpu_after + cpu_after / 100,
            "the pod's CPU time is {cpu} ns; the container's own cgroup said {cpu_before} before the call and {cpu_after} after"
        );
        let working_set = linux.memory.and_then(|m| m.working_set_bytes).map(|v| v.value).unwrap_or(0);
        let (low, high) = (mem_before.min(mem_after), mem_before.max(mem_after));
        check!(
            working_set >= low - low / 10 && working_set <= high + high / 10 + (8 << 20),
            "the pod's working set is {working_set} bytes; the container's cgroup said {mem_before} and {mem_after}"
        );
        check!(working_set >= 64 << 20, "the pod's working set is {working_set} bytes, below the 64 MiB it holds");

        let listed: Vec<&str> =
            linux.containers.iter().filter_map(|c| c.attributes.as_ref()).map(|a| a.id.as_str()).collect();
        check!(listed.contains(&id.as_str()), "the pod's stats leave out its container {id} (listed: {listed:?})");
        let processes = linux.process.and_then(|p| p.process_count).map(|v| v.value).unwrap_or(0);
        check!(processes >= 1, "the pod's process count is {processes}");
        let network = linux.network.unwrap_or_default();
        let eth0 = network.default_interface.unwrap_or_default();
        check!(eth0.name == "eth0", "the default interface is {:?}, not the pod's eth0", eth0.name);
        check!(eth0.rx_bytes.is_some() && eth0.tx_bytes.is_some(), "eth0 has no byte counts");
        check!(network.interfaces.iter().all(|i| i.name != "lo"), "loopback is listed among the pod's interfaces");
        Ok(())
    })
    .await;
    drop(pod_cgroup);
    result
}

async fn filters(ctx: Ctx) -> TestResult {
    let pod_cgroup = PodCgroup::make()?;
    let parent = pod_cgroup.parent.clone();
    let set_parent = move |config: &mut model::PodSandboxConfig| {
        config.linux.get_or_insert_with(Default::default).cgroup_parent = parent;
    };
    let result = with_kit_config(&ctx, "pod-stats-filter", set_parent, |kit| async move {
        let list = |filter: model::PodSandboxStatsFilter| {
            let mut client = kit.client();
            async move {
                client
                    .list_pod_sandbox_stats(model::ListPodSandboxStatsRequest { filter: Some(filter) })
                    .await
                    .map(|r| r.stats.into_iter().filter_map(|s| s.attributes).map(|a| a.id).collect::<Vec<_>>())
                    .map_err(|e| call_failed("ListPodSandboxStats", &e))
            }
        };
        let by_id = list(model::PodSandboxStatsFilter { id: kit.pod.id.clone(), ..Default::default() }).await?;
        check!(by_id == vec![kit.pod.id.clone()], "by id: {by_id:?}");
        let labels = kit.pod_config.labels.clone();
        let by_labels = list(model::PodSandboxStatsFilter { label_selector: labels, ..Default::default() }).await?;
        check!(by_labels.contains(&kit.pod.id), "by the pod's labels: {by_labels:?}");
        let none = list(model::PodSandboxStatsFilter {
            label_selector: [("lockstep.test/none".to_string(), "none".to_string())].into(),
            ..Default::default()
        })
        .await?;
        check!(none.is_empty(), "a selector that matches no pod gave {none:?}");
        Ok(())
    })
    .await;
    drop(pod_cgroup);
    result
}

async fn unknown(ctx: Ctx) -> TestResult {
    let answer =
        ctx.kubelet().pod_sandbox_stats(model::PodSandboxStatsRequest { pod_sandbox_id: "0".repeat(64) }).await;
    match answer {
        Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
        Err(status) => Err(Failure::fail(format!("answered {:?}: {}, not NotFound", status.code(), status.message()))),
        Ok(_) => Err(Failure::fail("answered stats for a pod that does not exist")),
    }
}
