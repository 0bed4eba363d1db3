//! pod-metrics: ListMetricDescriptors and ListPodSandboxMetrics as the kubelet's CRI metrics
//! collector reads them for /metrics/cadvisor — cadvisor's metric names, every metric described
//! and carrying one value per label key (else the kubelet drops it), and a pod's and its
//! container's CPU time and working set as the kernel counts them.

use std::collections::HashMap;
use std::time::Duration;

use lockstep_cri::{model, Minor};

use super::conkit::with_kit_config;
use super::containers::IMAGES;
use super::pod_stats::{kernel_counts, PodCgroup, BURNER};
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};

const AREA: &str = "pod-metrics";

fn test(name: &'static str, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    vec![
        test("ListMetricDescriptors names cadvisor's CPU and memory metrics, each with its label keys", &[], |c| {
            Box::pin(descriptors(c))
        }),
        test(
            "ListPodSandboxMetrics gives a pod's and its container's CPU time and working set as the kernel counts them, each metric described",
            IMAGES,
            |c| Box::pin(as_the_kernel_counts(c)),
        ),
    ]
}

/// The metrics the kubelet's cadvisor endpoint is read for by `kubectl top`-style dashboards.
const CORE: [&str; 2] = ["container_cpu_usage_seconds_total", "container_memory_working_set_bytes"];

async fn list_descriptors(ctx: &Ctx) -> Result<HashMap<String, Vec<String>>, Failure> {
    let descriptors = ctx
        .kubelet()
        .list_metric_descriptors(model::ListMetricDescriptorsRequest {})
        .await
        .map_err(|e| call_failed("ListMetricDescriptors", &e))?
        .descriptors;
    let count = descriptors.len();
    let by_name: HashMap<String, Vec<String>> = descriptors.into_iter().map(|d| (d.name, d.label_keys)).collect();
    check!(
        by_name.len() == count,
        "ListMetricDescriptors names a metric twice ({count} descriptors, {} names)",
        by_name.len()
    );
    Ok(by_name)
}

async fn descriptors(ctx: Ctx) -> TestResult {
    let by_name = list_descriptors(&ctx).await?;
    for name in CORE {
        let keys = by_name.get(name);
        check!(keys.is_some(), "no descriptor of {name} (described: {:?})", by_name.keys().collect::<Vec<_>>());
        check!(keys.is_some_and(|k| k.iter().any(|k| k == "id")), "{name} has no `id` label: {keys:?}");
    }
    Ok(())
}

/// The value of the first metric named `name`.
fn value(metrics: &[model::Metric], name: &str) -> Option<u64> {
    metrics.iter().find(|m| m.name == name).and_then(|m| m.value.as_ref()).map(|v| v.value)
}

async fn as_the_kernel_counts(ctx: Ctx) -> TestResult {
    let by_name = list_descriptors(&ctx).await?;
    let pod_cgroup = PodCgroup::make()?;
    let parent = pod_cgroup.parent.clone();
    let set_parent = move |config: &mut model::PodSandboxConfig| {
        config.linux.get_or_insert_with(Default::default).cgroup_parent = parent;
    };
    let result = with_kit_config(&ctx, "pod-metrics", set_parent, |kit| async move {
        let id = kit.run_shell("burner", BURNER).await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while kit.exec(&id, &["test", "-e", "/tmp/ready"], 10).await.map(|r| r.exit_code).unwrap_or(1) != 0 {
            check!(std::time::Instant::now() < deadline, "the burner did not fill its 64 MiB within 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (cpu_before, mem_before) = kernel_counts(&kit, &id).await?;
        let all = kit
            .client()
            .list_pod_sandbox_metrics(model::ListPodSandboxMetricsRequest {})
            .await
            .map_err(|e| call_failed("ListPodSandboxMetrics", &e))?
            .pod_metrics;
        let (cpu_after, mem_after) = kernel_counts(&kit, &id).await?;

        // Every metric of every pod must be one the kubelet can turn into Prometheus.
        for metric in all.iter().flat_map(|p| p.metrics.iter().chain(p.container_metrics.iter().flat_map(|c| &c.metrics))) {
            let keys = by_name.get(&metric.name);
            check!(keys.is_some(), "{} is sent but not described: the kubelet drops it", metric.name);
            let keys = keys.map(Vec::len).unwrap_or(0);
            check!(
                metric.label_values.len() == keys,
                "{} carries {} label values for {keys} keys: the kubelet drops it",
                metric.name,
                metric.label_values.len()
            );
        }
        let pod = all.iter().find(|p| p.pod_sandbox_id == kit.pod.id);
        check!(pod.is_some(), "no metrics for pod {}", kit.pod.id);
        let pod = pod.cloned().unwrap_or_default();
        let container = pod.container_metrics.iter().find(|c| c.container_id == id);
        check!(container.is_some(), "no metrics for the pod's running container {id}");
        let metrics = container.map(|c| c.metrics.clone()).unwrap_or_default();

        let cpu = value(&metrics, "container_cpu_usage_seconds_total");
        check!(cpu.is_some(), "no container_cpu_usage_seconds_total for the container");
        let cpu = cpu.unwrap_or(0);
        // Whole seconds on the wire (a uint64): floor of the kernel's count, give or take one.
        let (low, high) = (cpu_before / 1_000_000_000, cpu_after / 1_000_000_000 + 1);
        check!(
            cpu >= low.saturating_sub(1) && cpu <= high,
            "container_cpu_usage_seconds_total is {cpu}; the container's cgroup said {cpu_before} ns before and {cpu_after} ns after"
        );
        let working_set = value(&metrics, "container_memory_working_set_bytes").unwrap_or(0);
        let (low, high) = (mem_before.min(mem_after), mem_before.max(mem_after));
        check!(
            working_set >= low - low / 10 && working_set <= high + high / 10,
            "container_memory_working_set_bytes is {working_set}; the container's cgroup said {mem_before} and {mem_after}"
        );
        check!(working_set >= 64 << 20, "the working set is {working_set} bytes, below the 64 MiB the container holds");
        let pod_ws = value(&pod.metrics, "container_memory_working_set_bytes").unwrap_or(0);
        check!(
            pod_ws >= working_set - working_set / 10,
            "the pod's working set ({pod_ws}) is below its container's ({working_set})"
        );
        Ok(())
    })
    .await;
    drop(pod_cgroup);
    result
}
