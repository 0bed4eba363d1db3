//! What runs against a live container: ExecSync, UpdateContainerResources,
//! ReopenContainerLog, and the stats RPCs. May touch: the container's cgroups (through the
//! runtime), its monitor's control socket, its record.

use std::sync::Arc;
use std::time::Duration;

use lockstep_cri::model;

use super::manager::{internal, lock, now_nanos, state_word, ContainerError, ContainerManager, Entry};
use super::record::{ContainerRecord, RecordState};
use super::{resources, stats};
use crate::monitor::ContainerDir;
use crate::oci::OciError;

impl ContainerManager {
    // ---- ContainerStats and ListContainerStats -----------------------------------------

    /// A container's resource usage; an exited one has only its attributes and layer.
    pub fn stats(&self, id: &str) -> Result<model::ContainerStats, ContainerError> {
        let entry = self.existing(id)?;
        Ok(self.stats_of(&self.refresh(&entry)))
    }

    /// The usage of every running container the filter matches.
    pub fn list_stats(&self, filter: Option<&model::ContainerStatsFilter>) -> Vec<model::ContainerStats> {
        let entries: Vec<Arc<Entry>> = self.index.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        entries
            .iter()
            .map(|e| self.refresh(e))
            .filter(|r| r.state == RecordState::Running)
            .filter(|r| {
                filter.is_none_or(|f| {
                    (f.id.is_empty() || f.id == r.id)
                        && (f.pod_sandbox_id.is_empty() || f.pod_sandbox_id == r.sandbox_id)
                        && crate::filter::labels_match(&r.template().labels, &f.label_selector)
                })
            })
            .map(|r| self.stats_of(&r))
            .collect()
    }

    fn stats_of(&self, record: &ContainerRecord) -> model::ContainerStats {
        let template = record.template();
        let attributes = model::ContainerAttributes {
            id: record.id.clone(),
            metadata: template.metadata,
            labels: template.labels,
            annotations: template.annotations,
        };
        let layer = stats::upper_dir(&record.layer_dir);
        let reading =
            (record.state == RecordState::Running).then(|| stats::sample(record.init_pid, now_nanos())).flatten();
        let reading = reading.unwrap_or(stats::CgroupSample { timestamp: now_nanos(), cpu_ns: None, memory: None });
        let previous = lock(&self.samples).insert(record.id.clone(), reading.clone());
        stats::to_cri(attributes, &reading, previous.as_ref(), &layer)
    }

    // ---- UpdateContainerResources, ReopenContainerLog, ExecSync ---------------------------

    pub fn update_resources(
        &self,
        id: &str,
        linux: Option<&model::LinuxContainerResources>,
    ) -> Result<(), ContainerError> {
        let entry = self.existing(id)?;
        let _op = lock(&entry.op);
        let mut record = self.refresh(&entry);
        if !matches!(record.state, RecordState::Created | RecordState::Running) {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {id} is {}: only a created or running container's resources can change",
                state_word(record.state)
            )));
        }
        let Some(linux) = linux else { return Ok(()) };
        let mut oci = resources::linux_resources(linux, "linux")?;
        if let Some(warning) = resources::tolerate_missing_hugetlb(&mut oci, self.host.hugetlb) {
            tracing::warn!(container = %id, %warning, "UpdateContainerResources honoured a request only in part");
        }
        let runtime = self.runtime_of(&record)?;
        runtime.update(id, &oci).map_err(|e| ContainerError::Internal(format!("cannot update container {id}: {e}")))?;
        let mut template = record.template();
        template.resources = Some(model::ContainerResources { linux: Some(linux.clone()), windows: None });
        record.set_template(&template);
        self.records.put(id, &record).map_err(internal("cannot write the container record"))?;
        *entry.record.write().unwrap_or_else(|p| p.into_inner()) = record;
        Ok(())
    }

    pub fn reopen_log(&self, id: &str) -> Result<(), ContainerError> {
        let entry = self.existing(id)?;
        let record = self.refresh(&entry);
        if record.state != RecordState::Running {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {id} is {}: only a running container's log can be reopened",
                state_word(record.state)
            )));
        }
        self.watcher_of(&record)
            .reopen_log(&ContainerDir::new(&record.run_dir))
            .map_err(|e| ContainerError::Internal(format!("cannot reopen the log of container {id}: {e}")))
    }

    /// Runs `cmd` in the container as its own process runs (user, env, capabilities), with
    /// `timeout` seconds (0: none) and each stream capped.
    pub fn exec_sync(&self, id: &str, cmd: &[String], timeout: i64) -> Result<model::ExecSyncResponse, ContainerError> {
        if cmd.is_empty() {
            return Err(ContainerError::InvalidArgument("cmd: is empty".into()));
        }
        if timeout < 0 {
            return Err(ContainerError::InvalidArgument(format!("timeout: {timeout} is negative")));
        }
        let entry = self.existing(id)?;
        let record = self.refresh(&entry);
        if record.state != RecordState::Running {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {id} is {}: commands run only in a running container",
                state_word(record.state)
            )));
        }
        let spec_path = record.bundle().join("config.json");
        let spec: oci_spec::runtime::Spec = std::fs::read(&spec_path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
            .map_err(|e| ContainerError::Internal(format!("cannot read {}: {e}", spec_path.display())))?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(cmd.to_vec()));
        process.set_terminal(Some(false));
        let runtime = self.runtime_of(&record)?;
        let limit = (timeout > 0).then(|| Duration::from_secs(timeout as u64));
        let outcome = runtime.exec(id, &process, limit).map_err(|e| match e {
            OciError::NotRunning { .. } | OciError::NotFound { .. } => {
                ContainerError::FailedPrecondition(format!("container {id} is not running"))
            }
            other => ContainerError::Internal(format!("cannot run {:?} in container {id}: {other}", cmd[0])),
        })?;
        if outcome.timed_out {
            return Err(ContainerError::DeadlineExceeded(format!(
                "command {cmd:?} in container {id} timed out after {timeout}s and was killed"
            )));
        }
        Ok(model::ExecSyncResponse { stdout: outcome.stdout, stderr: outcome.stderr, exit_code: outcome.exit_code })
    }
}
