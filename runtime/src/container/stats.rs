//! ContainerStats and ListContainerStats: each container's cgroup reading (`usage`) with the
//! one before it, for CPU rates, and PSI from its v2 cgroup where the kernel has it; an exited
//! container has only its attributes and layer.

use lockstep_cri::model;

use super::error::ContainerError;
use super::manager::ContainerManager;
use super::record::{ContainerRecord, RecordState};
use super::{usage, usage_detail};
use crate::timing::now_nanos;

pub fn container_stats(containers: &ContainerManager, id: &str) -> Result<model::ContainerStats, ContainerError> {
    let entry = containers.store.existing(id)?;
    Ok(stats_of(containers, &containers.refresh(&entry)))
}

/// The usage of every running container the filter matches.
pub fn list_container_stats(
    containers: &ContainerManager,
    filter: Option<&model::ContainerStatsFilter>,
) -> Vec<model::ContainerStats> {
    let entries = containers.store.all();
    containers.refresh_live(&entries);
    entries
        .iter()
        .filter(|e| e.view(|r| r.state == RecordState::Running))
        .map(|e| e.read())
        .filter(|r| {
            filter.is_none_or(|f| {
                (f.id.is_empty() || f.id == r.id)
                    && (f.pod_sandbox_id.is_empty() || f.pod_sandbox_id == r.sandbox_id)
                    && crate::filter::labels_match(&r.template().labels, &f.label_selector)
            })
        })
        .map(|r| stats_of(containers, &r))
        .collect()
}

pub(super) fn stats_of(containers: &ContainerManager, record: &ContainerRecord) -> model::ContainerStats {
    let template = record.template();
    let attributes = model::ContainerAttributes {
        id: record.id.clone(),
        metadata: template.metadata,
        labels: template.labels,
        annotations: template.annotations,
    };
    let layer = usage::upper_dir(&record.layer_dir);
    let reading = (record.state == RecordState::Running).then(|| usage::sample(record.init_pid, now_nanos())).flatten();
    let reading = reading.unwrap_or(usage::CgroupSample { timestamp: now_nanos(), cpu_ns: None, memory: None });
    let previous = containers.store.swap_sample(&record.id, reading.clone());
    let mut stats = usage::to_cri(attributes, &reading, previous.as_ref(), &layer);
    if reading.cpu_ns.is_some() || reading.memory.is_some() {
        if let Some(dir) = usage_detail::unified_of_pid(record.init_pid) {
            with_pressure(&mut stats, usage_detail::pressure(&dir), reading.timestamp);
        }
    }
    stats
}

/// Puts PSI readings into a container's stats (a 1.33+ kubelet reads them; older minors' answers
/// drop the fields).
fn with_pressure(stats: &mut model::ContainerStats, pressure: usage_detail::Pressure, timestamp: i64) {
    if let Some(cpu) = stats.cpu.as_mut() {
        cpu.psi = pressure.cpu;
    }
    if let Some(memory) = stats.memory.as_mut() {
        memory.psi = pressure.memory;
    }
    stats.io = pressure.io.map(|psi| model::IoUsage { timestamp, psi: Some(psi) });
}
