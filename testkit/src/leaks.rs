//! The leak checker: after a lifecycle, it looks at the host itself (not at what lockstepd
//! says) for anything left of a pod or of a daemon's containers — mounts, namespace pins, veths,
//! IP allocations, iptables rules, cgroups, pause processes, records, monitors, image holds.

use std::path::Path;

use lockstep_cri::{model, CriClient};

use crate::host;
use crate::lockstepd::Lockstepd;

/// What the leak checker needs to know about a pod, taken while it was up.
#[derive(Debug, Clone, Default)]
pub struct PodTraces {
    pub id: String,
    pub ip: String,
    /// The host side of the pod's veth.
    pub host_veth: Option<String>,
    pub pause_pid: Option<i32>,
}

/// The verbose PodSandboxStatus info of a sandbox, as JSON.
pub async fn verbose_info(kubelet: &mut CriClient, id: &str) -> serde_json::Value {
    let status = kubelet
        .pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true })
        .await
        .expect("PodSandboxStatus of a pod that runs");
    serde_json::from_str(status.info.get("info").map_or("null", String::as_str)).expect("the info is JSON")
}

/// The traces of a running pod, from its verbose status.
pub async fn traces(kubelet: &mut CriClient, id: &str) -> PodTraces {
    let status = kubelet
        .pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true })
        .await
        .expect("PodSandboxStatus of a pod that runs");
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").map_or("null", String::as_str)).expect("the info is JSON");
    let host_veth = info["cniResult"]["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i.get("sandbox").is_none() && i["name"].as_str().is_some_and(|n| n.starts_with("veth")))
        .and_then(|i| i["name"].as_str().map(str::to_string));
    let pid = info["pid"].as_i64().unwrap_or(0) as i32;
    PodTraces {
        id: id.into(),
        ip: status.status.and_then(|s| s.network).unwrap_or_default().ip,
        host_veth,
        pause_pid: (pid > 0).then_some(pid),
    }
}

/// Asserts that nothing of the pod remains on the host: mounts, namespace pins, veth, IP
/// allocation, iptables rules, cgroups, the pause process.
pub fn assert_no_pod_leaks(daemon: &Lockstepd, pod: &PodTraces) {
    let id = &pod.id;
    assert!(!id.is_empty());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let leaked: Vec<&str> = mountinfo.lines().filter(|l| l.contains(id.as_str())).collect();
    assert!(leaked.is_empty(), "mounts of pod {id} remain: {leaked:#?}");
    let dir = daemon.runroot().join("sandboxes").join(id);
    assert!(!dir.exists(), "{} (namespace pins, files) remains", dir.display());
    assert!(!daemon.root().join("cni").join(format!("{id}.json")).exists(), "the CNI cache entry remains");
    if !pod.ip.is_empty() {
        // A pod on the bridge: its host-side veth was seen while it was up.
        let veth = pod.host_veth.as_ref().unwrap_or_else(|| panic!("pod {id} had an IP but no host veth was found"));
        assert!(!Path::new("/sys/class/net").join(veth).exists(), "veth {veth} of pod {id} remains");
    }
    let store = Path::new("/var/lib/cni/networks/lockstep");
    for entry in std::fs::read_dir(store).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(!text.contains(id.as_str()), "host-local still holds {} for pod {id}", entry.path().display());
    }
    let rules = host::iptables_rules_of(id);
    assert!(rules.is_empty(), "iptables rules of pod {id} remain: {rules:#?}");
    let cgroups = host::cgroups_of(id);
    assert!(cgroups.is_empty(), "cgroups of pod {id} remain: {cgroups:#?}");
    if let Some(pid) = pod.pause_pid {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "the pause process {pid} still runs");
    }
}

/// Asserts that nothing of the daemon's containers is left: records, run directories, image
/// holds, overlay mounts under its directory, monitors.
pub fn assert_no_container_leaks(daemon: &Lockstepd) {
    let entries = |dir: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect()
    };
    let left = entries(&daemon.root().join("containers"));
    assert!(left.is_empty(), "container records or layers remain: {left:?}");
    let left = entries(&daemon.runroot().join("containers"));
    assert!(left.is_empty(), "container run directories remain: {left:?}");
    let left = entries(&daemon.root().join("images/holds"));
    assert!(left.is_empty(), "image holds remain: {left:?}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let ours = daemon.dir().display().to_string();
    let leaked: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&ours) && l.contains("overlay")).collect();
    assert!(leaked.is_empty(), "container mounts remain: {leaked:#?}");
    let monitors = host::monitors_of(&daemon.runroot());
    assert!(monitors.is_empty(), "monitors still run: {monitors:?}");
}
