//! What the streaming server (Exec, Attach) asks of a container: that it runs, and an
//! interactive exec prepared as ExecSync's process is (the container's own user, environment,
//! capabilities, cgroup and security context, from its config.json), run through the
//! container's OCI runtime under the monitor's exec reaper. May touch: the container's
//! bundle (read), the runtime's per-call files.

use std::path::Path;

use super::manager::{state_word, ContainerError, ContainerManager};
use super::record::{ContainerRecord, RecordState};
use crate::oci::{CommandRuntime, PreparedExec};

impl ContainerManager {
    /// The container's record if it is running: Exec and Attach refuse any other before a
    /// URL is handed out.
    pub fn running_for_stream(&self, id: &str, what: &str) -> Result<ContainerRecord, ContainerError> {
        let entry = self.existing(id)?;
        let record = self.refresh(&entry);
        if record.state != RecordState::Running {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {id} is {}: {what} needs a running container",
                state_word(record.state)
            )));
        }
        Ok(record)
    }

    /// `cmd` prepared to run in running container `id`, with a terminal sent to `console`
    /// when given.
    pub fn prepare_stream_exec(
        &self,
        id: &str,
        cmd: &[String],
        console: Option<&Path>,
    ) -> Result<PreparedExec, ContainerError> {
        if cmd.is_empty() {
            return Err(ContainerError::InvalidArgument("cmd: is empty".into()));
        }
        let record = self.running_for_stream(id, "exec")?;
        let spec_path = record.bundle().join("config.json");
        let spec: oci_spec::runtime::Spec = std::fs::read(&spec_path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
            .map_err(|e| ContainerError::Internal(format!("cannot read {}: {e}", spec_path.display())))?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(cmd.to_vec()));
        process.set_terminal(Some(console.is_some()));
        process.set_console_size(None);
        let command = self.command(&record.oci_handler)?.hiding_cgroup2(record.cgroup2_hidden.clone());
        let reaper = self
            .monitor_binary
            .as_ref()
            .map_err(|problem| ContainerError::FailedPrecondition(format!("cannot exec: {problem}")))?;
        // As ExecSync: a runtime in a pure v1 view leaves the process in the reaper's v2 cgroup.
        let hidden = record.cgroup2_hidden.as_deref();
        let reaper_cgroup = hidden.and_then(|h| self.monitor_cgroups.iter().find(|c| c.starts_with(h)));
        CommandRuntime::new(command)
            .prepare_exec(id, &process, console, reaper, reaper_cgroup.map(|c| c.as_path()))
            .map_err(|e| ContainerError::Internal(format!("cannot prepare {:?} in container {id}: {e}", cmd[0])))
    }
}
