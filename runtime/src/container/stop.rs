//! StopContainer: the stop signal, then SIGKILL after the grace period (0: SIGKILL at once);
//! answers once the exit is recorded. Idempotent as the CRI requires: stopping a stopped,
//! removed or unknown container succeeds (the kubelet retries stops of containers gone).

use std::time::Duration;

use super::error::ContainerError;
use super::lifecycle::{self, UNKNOWN_EXIT};
use super::manager::{send, ContainerManager};
use super::record::RecordState;
use super::signal::SIGKILL;
use super::store::{lock, Entry};
use crate::monitor::{ContainerDir, MonitorError};

pub fn stop_container(containers: &ContainerManager, id: &str, timeout: i64) -> Result<(), ContainerError> {
    if timeout < 0 {
        return Err(ContainerError::bad_field("timeout", format!("{timeout} is negative")));
    }
    if id.is_empty() {
        return Err(ContainerError::bad_field("container_id", "is empty"));
    }
    let Some(entry) = containers.store.known(id) else {
        tracing::debug!(container = %id, "StopContainer of an unknown container: nothing to stop");
        return Ok(());
    };
    let grace = Duration::from_secs(timeout as u64);
    if !grace.is_zero() && signal_stop(containers, &entry)? {
        // The grace period is waited out without the container's lock: a shorter stop (a
        // forced pod deletion), RemoveContainer or StopPodSandbox meanwhile kills at once.
        let record = entry.read();
        let runtime = containers.runtime_of(&record);
        match runtime.wait_exit(&ContainerDir::new(&record.run_dir), id, grace) {
            Ok(exit) => {
                containers.record_exit(&entry, lifecycle::exit_info(&exit));
                return Ok(());
            }
            Err(MonitorError::ExitTimeout { .. }) => {
                tracing::info!(container = %id, ?grace, "stop signal not heeded in time: SIGKILL");
            }
            Err(MonitorError::Lost { .. }) => {
                // No monitor to record the exit: the runtime's word, through the same grace.
                if lifecycle::stopped_within(runtime.as_ref(), id, grace)? {
                    containers.record_exit(&entry, lifecycle::lost_exit(UNKNOWN_EXIT));
                    return Ok(());
                }
                tracing::info!(container = %id, ?grace, "stop signal not heeded in time: SIGKILL");
            }
            Err(e) => return Err(ContainerError::monitor(id, "stop")(e)),
        }
    }
    let _op = lock(&entry.op);
    kill_locked(containers, &entry)
}

/// Sends a running container its stop signal (under its lock); whether one was sent. A
/// container never started runs only the runtime's init, waiting: nothing to warn.
fn signal_stop(containers: &ContainerManager, entry: &Entry) -> Result<bool, ContainerError> {
    let _op = lock(&entry.op);
    let record = containers.refresh(entry);
    if record.state != RecordState::Running {
        return Ok(false);
    }
    send(containers.runtime_of(&record).as_ref(), &record.id, record.stop_signal, false)?;
    Ok(true)
}

/// Kills a created or running container, its lock held by the caller, and records the exit.
pub(super) fn kill_locked(containers: &ContainerManager, entry: &Entry) -> Result<(), ContainerError> {
    let record = containers.refresh(entry);
    if !matches!(record.state, RecordState::Created | RecordState::Running) {
        return Ok(());
    }
    let id = record.id.as_str();
    let runtime = containers.runtime_of(&record);
    send(runtime.as_ref(), id, SIGKILL, true)?;
    let exit = lifecycle::wait_killed(runtime.as_ref(), &record)?;
    containers.record_exit(entry, exit);
    tracing::info!(container = %id, "container stopped");
    Ok(())
}
