//! A pod's containers for StopPodSandbox and RemovePodSandbox: all killed at once (each under
//! its own lock), or all removed; the sandbox family calls this through `PodContainers`.

use super::manager::ContainerManager;
use super::record::RecordState;
use super::remove::remove_container;
use super::stop::kill_locked;
use super::store::lock;
use crate::sandbox::PodContainers;

impl PodContainers for ContainerManager {
    fn stop_all(&self, sandbox_id: &str) -> Result<(), String> {
        let entries = self.store.of_sandbox(sandbox_id);
        let problems: Vec<String> = std::thread::scope(|scope| {
            let stops: Vec<_> = entries
                .iter()
                .map(|e| {
                    scope.spawn(move || {
                        let _op = lock(&e.op);
                        kill_locked(self, e)
                    })
                })
                .collect();
            stops
                .into_iter()
                .filter_map(|s| match s.join() {
                    Ok(stopped) => stopped.err().map(|e| e.to_string()),
                    Err(_) => Some("a stop panicked".to_string()),
                })
                .collect()
        });
        several(problems)
    }

    fn remove_all(&self, sandbox_id: &str) -> Result<(), String> {
        let ids: Vec<String> = self.store.of_sandbox(sandbox_id).iter().map(|e| e.read().id).collect();
        several(ids.iter().filter_map(|id| remove_container(self, id).err().map(|e| e.to_string())).collect())
    }

    fn statuses(&self, sandbox_id: &str) -> Vec<lockstep_cri::model::ContainerStatus> {
        let entries = self.store.of_sandbox(sandbox_id);
        let records = entries.iter().map(|e| self.refresh(e));
        records.filter(|r| r.state != RecordState::Removing).map(|r| r.to_status()).collect()
    }
}

fn several(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
