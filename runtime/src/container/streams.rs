//! What the streaming server (Exec, Attach) asks of a container: that it runs, and an
//! interactive exec prepared as ExecSync's process is (the container's own user, environment,
//! capabilities, cgroup and security context, from its config.json), run through the
//! container's OCI runtime under the monitor's exec reaper. May touch: the container's
//! bundle (read), the runtime's per-call files.

use std::path::Path;

use super::error::ContainerError;
use super::exec;
use super::manager::ContainerManager;
use super::record::{ContainerRecord, RecordState};
use crate::oci::PreparedExec;

impl ContainerManager {
    /// The container's record if it is running: Exec and Attach refuse any other before a
    /// URL is handed out (FailedPrecondition), and an unknown id (NotFound).
    pub fn running_for_stream(&self, id: &str, requirement: &'static str) -> Result<ContainerRecord, ContainerError> {
        let entry = self.store.existing(id)?;
        self.refreshed_in(&entry, &[RecordState::Running], requirement)
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
            return Err(ContainerError::bad_field("cmd", "is empty"));
        }
        let record = self.running_for_stream(id, "exec needs a running container")?;
        let mut process = exec::process_of(&record)?;
        process.set_args(Some(cmd.to_vec()));
        process.set_terminal(Some(console.is_some()));
        process.set_console_size(None);
        self.runtime_of(&record)
            .prepare_exec(id, &process, console)
            .map_err(ContainerError::runtime(id, "prepare an exec in"))
    }
}
