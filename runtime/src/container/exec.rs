//! ExecSync: a command run in a running container as its own process runs (user, env,
//! capabilities, cgroup), through the OCI runtime's exec, with a timeout and each output
//! stream capped.

use std::time::Duration;

use lockstep_cri::model;

use super::error::ContainerError;
use super::manager::ContainerManager;
use super::record::{ContainerRecord, RecordState};
use crate::oci::OciError;

/// Runs `cmd` with `timeout` seconds (0: none).
pub fn exec_sync(
    containers: &ContainerManager,
    id: &str,
    cmd: &[String],
    timeout: i64,
) -> Result<model::ExecSyncResponse, ContainerError> {
    if cmd.is_empty() {
        return Err(ContainerError::bad_field("cmd", "is empty"));
    }
    if timeout < 0 {
        return Err(ContainerError::bad_field("timeout", format!("{timeout} is negative")));
    }
    let record = running(containers, id)?;
    let mut process = process_of(&record)?;
    process.set_args(Some(cmd.to_vec()));
    process.set_terminal(Some(false));
    let limit = (timeout > 0).then(|| Duration::from_secs(timeout as u64));
    let outcome = containers.runtime_of(&record).exec(id, &process, limit).map_err(|e| match e {
        OciError::NotRunning { .. } | OciError::NotFound { .. } => ContainerError::WrongState {
            id: id.to_string(),
            state: "not running",
            requirement: "commands run only in a running container",
        },
        other => ContainerError::runtime(id, "run a command in")(other),
    })?;
    if outcome.timed_out {
        return Err(ContainerError::ExecTimedOut { id: id.to_string(), cmd: cmd.to_vec(), seconds: timeout });
    }
    Ok(model::ExecSyncResponse { stdout: outcome.stdout, stderr: outcome.stderr, exit_code: outcome.exit_code })
}

/// The record of a running container; any other state is FailedPrecondition's kind.
pub(super) fn running(containers: &ContainerManager, id: &str) -> Result<ContainerRecord, ContainerError> {
    let entry = containers.store.existing(id)?;
    containers.refreshed_in(&entry, &[RecordState::Running], "commands run only in a running container")
}

/// The container's own process spec, from its bundle: what an exec inherits.
pub(super) fn process_of(record: &ContainerRecord) -> Result<oci_spec::runtime::Process, ContainerError> {
    let spec_path = record.bundle().join("config.json");
    let bytes = std::fs::read(&spec_path).map_err(|source| ContainerError::Io {
        action: "read the spec",
        path: spec_path.clone(),
        source,
    })?;
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(&bytes).map_err(|e| ContainerError::Io {
        action: "parse the spec",
        path: spec_path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    Ok(spec.process().clone().unwrap_or_default())
}
