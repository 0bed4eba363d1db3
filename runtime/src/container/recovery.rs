//! Recovery before lockstepd serves: container records reconciled with their monitors, the
//! OCI runtimes and the exit records. Running containers stay running; exits that happened
//! while lockstepd was down get their real codes and times; a creation or removal that a crash
//! interrupted is rolled back or finished; monitor directories without a record are swept.

use std::collections::BTreeMap;

use super::lifecycle::{self, Recovery};
use super::manager::{ContainerError, ContainerManager, Entry};
use super::record::{ContainerRecord, RecordState};
use super::rootfs;
use crate::monitor::{self, ContainerDir, MonitorState};
use crate::oci::OciRuntime;

impl ContainerManager {
    pub(super) fn recover(&self) -> Result<(), ContainerError> {
        let loaded = self
            .records
            .load_readable::<ContainerRecord>()
            .map_err(|e| ContainerError::Internal(format!("cannot load the container records: {e}")))?;
        for bad in &loaded.set_aside {
            tracing::error!(container = %bad.id, moved_to = %bad.moved_to.display(), problem = %bad.problem,
                "an unreadable container record was set aside; the container is no longer listed");
        }
        let records = loaded.records;
        let mut kept = BTreeMap::new();
        for (id, mut record) in records {
            match record.state {
                RecordState::Creating | RecordState::Removing => {
                    let what = if record.state == RecordState::Creating { "creation" } else { "removal" };
                    match self
                        .tear_down(&record)
                        .and_then(|()| self.records.remove(&id).map_err(|e| ContainerError::Internal(e.to_string())))
                    {
                        Ok(()) => {
                            tracing::info!(container = %id, "finished the {what} that a crash interrupted: removed");
                            continue;
                        }
                        Err(e) => {
                            // Kept as being removed: RemoveContainer (or the next start) retries.
                            tracing::warn!(container = %id, error = %e, "cannot clean up an interrupted {what}");
                            record.state = RecordState::Removing;
                        }
                    }
                }
                RecordState::Created | RecordState::Running => self.reconcile(&mut record),
                RecordState::Exited => {}
            }
            kept.insert(id, Entry::new(record));
        }
        self.sweep_orphans(&kept);
        tracing::info!(containers = kept.len(), "container records recovered");
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = kept;
        Ok(())
    }

    /// A created or running container after a restart: still there, exited meanwhile, or
    /// started by a StartContainer that the crash cut short (lifecycle::recover decides).
    fn reconcile(&self, record: &mut ContainerRecord) {
        match lifecycle::recover(record, self.watcher_of(record).as_ref()) {
            Recovery::Keep | Recovery::TearDown => return,
            Recovery::Exited(exit) => {
                tracing::info!(container = %record.id, exit_code = exit.exit_code,
                    "the container exited while lockstepd was down");
                record.state = RecordState::Exited;
                record.exit = Some(exit);
            }
            Recovery::Started => {
                tracing::info!(container = %record.id, "a start that a crash cut short had run: the container is running");
                record.state = RecordState::Running;
                record.started_at = super::manager::now_nanos();
            }
        }
        if let Err(e) = self.records.put(&record.id, &*record) {
            tracing::warn!(container = %record.id, error = %e, "cannot persist what recovery found; it is read again later");
        }
    }

    /// Container directories under the runroot without a record: what a removal left after
    /// its record was gone. Their containers are killed and deleted, the directories removed.
    fn sweep_orphans(&self, kept: &BTreeMap<String, std::sync::Arc<Entry>>) {
        let Ok(found) = monitor::find_all(&self.run_root) else { return };
        for (id, state) in found {
            if kept.contains_key(&id) {
                continue;
            }
            let dir = ContainerDir::new(self.run_root.join(&id));
            if let Ok(config) = dir.read_config() {
                let runtime = crate::oci::CommandRuntime::new(config.runtime);
                if matches!(state, MonitorState::Running { .. }) {
                    let _ = runtime.kill(&id, 9, true);
                    let _ = monitor::wait_exit(&dir, &id, std::time::Duration::from_secs(10));
                }
                let _ = runtime.delete(&id);
            }
            match rootfs::remove_dir(dir.path()) {
                Ok(()) => tracing::info!(container = %id, "swept a container directory without a record"),
                Err(e) => tracing::warn!(container = %id, error = %e, "cannot sweep a container directory"),
            }
            let _ = self.images.release(&id);
        }
        let Ok(layers) = std::fs::read_dir(&self.layers_root) else { return };
        for entry in layers.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && crate::ids::is_safe_id(&name) && !kept.contains_key(&name) {
                if let Err(e) = rootfs::remove_dir(&entry.path()) {
                    tracing::warn!(container = %name, error = %e, "cannot sweep a writable layer without a record");
                }
            }
        }
    }
}
