//! The handler registry: which `ContainerRuntime` runs the containers of each RuntimeClass
//! handler, as the handlers were last probed. The container manager asks it for every runtime
//! it uses, so a test can hand the manager a fake instead of lockstep-monitor and crun.

use std::path::PathBuf;
use std::sync::Arc;

use super::error::ContainerError;
use super::record::ContainerRecord;
use super::runtime::{ContainerRuntime, Monitored};
use crate::config::CgroupDriver;
use crate::info::RuntimeInfo;
use crate::monitor;
use crate::oci::{CommandRuntime, OciError, RuntimeCommand};

pub trait Runtimes: Send + Sync {
    /// The runtime a new container of `handler` is made with: the handler must be configured and
    /// its binary present, and lockstep-monitor installed.
    fn for_new(&self, handler: &str) -> Result<Arc<dyn ContainerRuntime>, ContainerError>;
    /// The runtime of an existing container, run as when it was created. A container whose
    /// handler cannot be run now is still watched through its monitor; only the calls to its
    /// OCI runtime fail (`OciError::Unavailable`, with the reason).
    fn for_record(&self, record: &ContainerRecord) -> Arc<dyn ContainerRuntime>;
}

/// The real registry: lockstep-monitor and each handler's OCI runtime command line.
pub struct Handlers {
    info: Arc<RuntimeInfo>,
    /// The lockstep-monitor binary, or why it was not found.
    monitor_binary: Result<PathBuf, String>,
    /// The cgroup (one directory per hierarchy) every lockstep-monitor moves itself into.
    monitor_cgroups: Vec<PathBuf>,
}

impl Handlers {
    /// Finds lockstep-monitor and makes the monitors' cgroup (see `monitor_cgroups`).
    pub fn new(info: Arc<RuntimeInfo>) -> Handlers {
        let monitor_cgroups = monitor_cgroups(info.config().cgroup_driver);
        let monitor_binary = crate::helpers::find_helper(monitor::BINARY).map_err(|e| e.to_string());
        Handlers { info, monitor_binary, monitor_cgroups }
    }

    /// How a handler's OCI runtime is run, in lockstepd's layout; why not when it cannot be.
    fn command(&self, handler: &str) -> Result<RuntimeCommand, OciError> {
        let unavailable =
            |problem: &str| OciError::Unavailable { handler: handler.to_string(), problem: problem.to_string() };
        let handlers = self.info.handlers();
        let probed = handlers.get(handler).ok_or_else(|| unavailable("is not configured"))?;
        let config = self.info.config();
        let systemd = config.cgroup_driver == CgroupDriver::Systemd;
        let timeout = std::time::Duration::from_secs(config.runtime.runtime_call_timeout_secs.max(1));
        let command = probed
            .command(&config.runroot.join("oci"), systemd)
            .ok_or_else(|| unavailable("its binary was not found"))?;
        Ok(command.with_call_timeout(timeout))
    }

    fn monitored(&self, handler: &str, runtime: Result<CommandRuntime, String>) -> Arc<dyn ContainerRuntime> {
        Arc::new(Monitored {
            handler: handler.to_string(),
            runtime,
            monitor_binary: self.monitor_binary.clone(),
            monitor_cgroups: self.monitor_cgroups.clone(),
        })
    }
}

impl Runtimes for Handlers {
    fn for_new(&self, handler: &str) -> Result<Arc<dyn ContainerRuntime>, ContainerError> {
        let command = self.command(handler).map_err(|e| ContainerError::HandlerUnavailable(Box::new(e)))?;
        self.monitor_binary.as_ref().map_err(|problem| ContainerError::MonitorMissing(problem.clone()))?;
        Ok(self.monitored(handler, Ok(CommandRuntime::new(command))))
    }

    fn for_record(&self, record: &ContainerRecord) -> Arc<dyn ContainerRuntime> {
        let runtime = self
            .command(&record.oci_handler)
            .map(|command| CommandRuntime::new(command.hiding_cgroup2(record.cgroup2_hidden.clone())))
            .map_err(|e| match e {
                OciError::Unavailable { problem, .. } => problem,
                other => other.to_string(),
            });
        self.monitored(&record.oci_handler, runtime)
    }
}

/// The monitors' own cgroup, made when missing: out of lockstepd's, so that a restart of its
/// service (systemd's KillMode=control-group) does not take the monitors along, and their memory
/// is not charged to it. Without one (no cgroupfs access) they stay in lockstepd's, with a warning.
fn monitor_cgroups(driver: CgroupDriver) -> Vec<PathBuf> {
    use crate::host::cgroups;
    let made = cgroups::plan(driver, "", "monitors").and_then(|planned| {
        cgroups::create(&planned.missing)?;
        Ok(planned.leaves)
    });
    made.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no cgroup of their own for the monitors: they stay in lockstepd's");
        Vec::new()
    })
}
