//! PodSandboxStatus and ListPodSandbox: records with their live state (READY only while the
//! pause process, if any, lives); the verbose status adds the namespaces and the CNI result.

use std::collections::HashMap;

use lockstep_cri::model;

use super::error::SandboxError;
use super::manager::SandboxManager;
use super::pause;
use super::record::{SandboxRecord, SandboxState};
use crate::filter::sandbox_matches;
use crate::timing::now_nanos;

pub fn pod_sandbox_status(
    sandboxes: &SandboxManager,
    id: &str,
    verbose: bool,
) -> Result<model::PodSandboxStatusResponse, SandboxError> {
    let record = sandboxes.store.get(id).ok_or_else(|| SandboxError::NoSuchSandbox { id: id.to_string() })?.read();
    let status = live_status(&record);
    let mut info = HashMap::new();
    if verbose {
        let cni_result = sandboxes.cni_cache.get(id).ok().flatten().and_then(|a| a.result);
        info.insert("info".to_string(), verbose_info(&record, cni_result));
    }
    Ok(model::PodSandboxStatusResponse {
        status: Some(status),
        info,
        containers_statuses: sandboxes.containers().statuses(id),
        timestamp: now_nanos(),
    })
}

pub fn list_pod_sandboxes(
    sandboxes: &SandboxManager,
    filter: Option<&model::PodSandboxFilter>,
) -> Vec<model::PodSandbox> {
    let entries = sandboxes.store.all();
    let alive = sandboxes.pauses_alive(&entries);
    entries
        .iter()
        .zip(alive)
        .map(|(e, pause_alive)| {
            e.view(|record| {
                let mut s = record.to_pod_sandbox();
                s.state = state_with(record, pause_alive) as i32;
                s
            })
        })
        .filter(|s| sandbox_matches(s, filter))
        .collect()
}

/// The sandbox's status with its live state, without its containers (container events carry
/// this beside their own statuses).
pub fn sandbox_status(sandboxes: &SandboxManager, id: &str) -> Option<model::PodSandboxStatus> {
    sandboxes.store.get(id).map(|entry| live_status(&entry.read()))
}

fn live_status(record: &SandboxRecord) -> model::PodSandboxStatus {
    let mut status = record.to_status();
    status.state = live_state(record) as i32;
    status
}

/// READY only while the record says so and the pause process (if any) lives.
pub(super) fn live_state(record: &SandboxRecord) -> model::PodSandboxState {
    state_with(record, record.namespaces.pause.as_ref().is_none_or(pause::alive))
}

/// READY only while the record says so and `pause_alive` (the pause process, if any, lives).
fn state_with(record: &SandboxRecord, pause_alive: bool) -> model::PodSandboxState {
    if record.state == SandboxState::Ready && pause_alive {
        model::PodSandboxState::SandboxReady
    } else {
        model::PodSandboxState::SandboxNotready
    }
}

/// PodSandboxStatus's verbose `info`: the record, the namespace paths (the network one is
/// what `ip netns exec`-like tools enter) and the pause pid.
fn verbose_info(record: &SandboxRecord, cni_result: Option<serde_json::Value>) -> String {
    serde_json::json!({
        "sandboxID": record.id,
        "cniResult": cni_result,
        "pid": record.namespaces.pause.as_ref().map(|p| p.pid).unwrap_or(0),
        "netns": record.namespaces.network,
        "record": record,
    })
    .to_string()
}
