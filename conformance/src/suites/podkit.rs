//! What the pod and networking suites share: kubelet-like pod configs with unique names, a pod
//! that is always stopped and removed after the test body, and the pod's namespaces found from
//! the host on any runtime — lockstepd reports its pinned namespace paths in verbose
//! PodSandboxStatus info; containerd reports its pause container's runtime spec (the network
//! namespace path) and pid (/proc/<pid>/ns/*). Tests enter them on a throwaway thread.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use lockstep_cri::{model, CriClient};
use lockstep_testkit::requests;

use crate::framework::{call_failed, Ctx, Failure, TestResult};

pub const NAMESPACE: &str = "lockstep-conformance";

/// A pod config as the kubelet makes it (the testkit's), with a unique name and uid and the
/// test's purpose as an annotation.
pub fn pod_config(purpose: &str) -> model::PodSandboxConfig {
    let mut config = requests::pod(NAMESPACE, &requests::unique(purpose));
    config.annotations.insert("lockstep.conformance/purpose".into(), purpose.into());
    config
}

pub use requests::namespace_options;

/// An id no runtime has ever handed out, shaped as critest makes its own (a random UUID): a hash
/// of the process id, the clock and a counter, so two tests never share one.
pub fn unknown_id() -> String {
    use sha2::Digest as _;
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let hash = sha2::Sha256::digest(format!("{}-{nanos}-{n}", std::process::id()));
    let hex: String = hash.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

pub fn uid_of(config: &model::PodSandboxConfig) -> String {
    config.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default()
}

/// A running pod as the tests see it.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub ip: String,
    pub netns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    /// Where the runtime says the pod's resolv.conf is, when it says.
    pub resolv_conf: Option<PathBuf>,
}

pub async fn run_pod(client: &mut CriClient, config: model::PodSandboxConfig) -> Result<String, Failure> {
    client
        .run_pod_sandbox(model::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
        .await
        .map(|r| r.pod_sandbox_id)
        .map_err(|e| call_failed("RunPodSandbox", &e))
}

pub async fn describe(client: &mut CriClient, id: &str) -> Result<Pod, Failure> {
    let status = client
        .pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true })
        .await
        .map_err(|e| call_failed("PodSandboxStatus", &e))?;
    let info: serde_json::Value =
        status.info.get("info").and_then(|i| serde_json::from_str(i).ok()).unwrap_or_default();
    let ip = status.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default();
    Ok(Pod {
        id: id.to_string(),
        ip,
        netns: namespace_path(&info, "network", "net"),
        utsns: namespace_path(&info, "uts", "uts"),
        resolv_conf: info["record"]["files"]["resolv_conf"].as_str().map(PathBuf::from),
    })
}

/// A pod namespace from verbose info: lockstepd's pinned path, else a path in containerd's
/// runtime spec, else the pause process's /proc/<pid>/ns/<proc_name>.
fn namespace_path(info: &serde_json::Value, spec_type: &str, proc_name: &str) -> Option<PathBuf> {
    if let Some(p) = info["record"]["namespaces"][spec_type].as_str() {
        return Some(PathBuf::from(p));
    }
    if info.get("record").is_some() {
        return None; // lockstepd: no path means the node's namespace
    }
    let from_spec = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|ns| ns["type"] == spec_type)
        .map(|ns| ns["path"].as_str().unwrap_or("").to_string());
    match from_spec {
        None => None, // not in the spec: the node's namespace
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        Some(_) => {
            let pid = info["pid"].as_i64().filter(|p| *p > 0)?;
            Some(PathBuf::from(format!("/proc/{pid}/ns/{proc_name}")))
        }
    }
}

pub async fn stop_and_remove(client: &mut CriClient, id: &str) -> TestResult {
    client
        .stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id.into() })
        .await
        .map_err(|e| call_failed("StopPodSandbox", &e))?;
    client
        .remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: id.into() })
        .await
        .map_err(|e| call_failed("RemovePodSandbox", &e))?;
    Ok(())
}

/// Runs a pod, hands it to `body`, then stops and removes it whatever the body did.
pub async fn with_pod<F, Fut>(ctx: &Ctx, config: model::PodSandboxConfig, body: F) -> TestResult
where
    F: FnOnce(Pod) -> Fut,
    Fut: Future<Output = TestResult>,
{
    let mut client = ctx.kubelet();
    let id = run_pod(&mut client, config).await?;
    let result = match describe(&mut client, &id).await {
        Ok(pod) => body(pod).await,
        Err(e) => Err(e),
    };
    let cleaned = stop_and_remove(&mut client, &id).await;
    result.and(cleaned)
}

/// Runs `work` on a thread inside the namespace at `path` (of kind `flag`).
pub fn within<T: Send + 'static>(
    path: &std::path::Path,
    flag: nix::sched::CloneFlags,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    let file = std::fs::File::open(path).map_err(|e| Failure::fail(format!("cannot open {}: {e}", path.display())))?;
    let shown = path.display().to_string();
    std::thread::spawn(move || {
        nix::sched::setns(&file, flag).map_err(|e| Failure::fail(format!("cannot enter {shown}: {e}")))?;
        Ok(work())
    })
    .join()
    .map_err(|_| Failure::fail("the namespace thread panicked"))?
}

pub fn net_flag() -> nix::sched::CloneFlags {
    nix::sched::CloneFlags::CLONE_NEWNET
}

/// The pod's network namespace, or a failure saying the runtime did not reveal it.
pub fn netns(pod: &Pod) -> Result<PathBuf, Failure> {
    pod.netns.clone().ok_or_else(|| {
        Failure::fail(format!(
            "PodSandboxStatus(verbose) of {} reveals no network namespace (lockstepd: info.record.namespaces; \
             containerd: info.runtimeSpec / info.pid)",
            pod.id
        ))
    })
}

/// `ip -o addr` as seen inside a network namespace.
pub fn addresses(netns: &std::path::Path) -> Result<String, Failure> {
    within(netns, net_flag(), || {
        // A child forked from this thread starts in its network namespace.
        std::process::Command::new("ip").args(["-o", "addr", "show"]).output()
    })?
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .map_err(|e| Failure::fail(format!("cannot run ip: {e}")))
}

/// Whether `addrs` (from `addresses`) shows `ip` on eth0.
pub fn eth0_carries(addrs: &str, ip: &str) -> bool {
    addrs.lines().any(|l| l.contains(" eth0 ") && l.contains(&format!(" {ip}/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_ids_are_uuids_and_never_repeat() {
        let (a, b) = (unknown_id(), unknown_id());
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, vec![8, 4, 4, 4, 12], "{a}");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{a}");
    }

    #[test]
    fn namespaces_are_found_in_lockstepd_s_and_containerd_s_verbose_info() {
        let lockstep = json!({"pid": 0, "record": {"namespaces": {"network": "/run/l/ns/net", "uts": "/run/l/ns/uts", "ipc": null}}});
        assert_eq!(namespace_path(&lockstep, "network", "net"), Some(PathBuf::from("/run/l/ns/net")));
        assert_eq!(namespace_path(&lockstep, "ipc", "ipc"), None, "null: the node's IPC namespace");
        let containerd = json!({"pid": 4242, "runtimeSpec": {"linux": {"namespaces": [
            {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network", "path": "/x/netns/cni-1"}]}}});
        assert_eq!(namespace_path(&containerd, "network", "net"), Some(PathBuf::from("/x/netns/cni-1")));
        assert_eq!(namespace_path(&containerd, "uts", "uts"), Some(PathBuf::from("/proc/4242/ns/uts")));
        let host_network = json!({"pid": 7, "runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}]}}});
        assert_eq!(namespace_path(&host_network, "network", "net"), None);
    }
}
