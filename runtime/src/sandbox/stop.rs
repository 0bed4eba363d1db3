//! StopPodSandbox: the pod's containers first, then what a stopped pod no longer holds — the
//! pause process and its cgroup, the network (CNI DEL, retried), /dev/shm. Idempotent as the
//! CRI requires: stopping a stopped, removed or unknown sandbox succeeds.

use std::time::Duration;

use super::error::SandboxError;
use super::manager::SandboxManager;
use super::pause;
use super::record::{SandboxRecord, SandboxState};
use super::store::lock;
use crate::cni::exec::Plugins;
use crate::cni::network::{self, Attachment};
use crate::host::{cgroups, mounts};

pub fn stop_pod_sandbox(sandboxes: &SandboxManager, id: &str) -> Result<(), SandboxError> {
    let Some(entry) = sandboxes.store.get(id) else {
        tracing::debug!(sandbox = %id, "StopPodSandbox of an unknown pod sandbox: nothing to stop");
        return Ok(());
    };
    let _op = lock(&entry.op);
    if entry.is_removed() {
        return Ok(());
    }
    entry.close();
    let mut record = entry.read();
    sandboxes.containers().stop_all(id).map_err(|problem| SandboxError::Containers {
        id: id.to_string(),
        action: "stop",
        problem,
    })?;
    let released = release(sandboxes, &mut record);
    // What the release got to is what readers see, even when it failed half-way.
    entry.show(record.clone());
    released?;
    record.state = SandboxState::NotReady;
    sandboxes.store.save(&entry, record)
}

/// What stopping releases: the pause process, the network (DEL, retried), /dev/shm.
/// Each step is idempotent; the record says what is still held.
pub(super) fn release(sandboxes: &SandboxManager, record: &mut SandboxRecord) -> Result<(), SandboxError> {
    let id = record.id.clone();
    if let Some(p) = &record.namespaces.pause {
        pause::kill(p).map_err(SandboxError::pause(&id, "stop the pause process"))?;
    }
    // The pause's own cgroup goes now; the parents lockstepd made for it still hold the
    // stopped containers' cgroups until RemoveContainer, so they go with the pod (`remove`).
    let leaves = cgroups::leaves(&record.pause_cgroups, &id);
    if !leaves.is_empty() {
        cgroups::remove(&leaves, &id).map_err(SandboxError::cgroups(&id, "remove the pause's cgroups"))?;
        // Forgotten at once: a directory of the same name made later is someone else's.
        record.pause_cgroups.retain(|dir| !leaves.contains(dir));
        sandboxes.store.write(record)?;
    }
    // The cache entry, not the record's flag, says whether a DEL is owed: a crash or a failed
    // rollback may leave an attachment the record does not know of.
    if let Some(attachment) = sandboxes.cni_cache.get(&id).map_err(SandboxError::cni_cache(&id, "read"))? {
        del_with_retries(&attachment, &sandboxes.plugins).map_err(SandboxError::detach(&id))?;
        sandboxes.cni_cache.remove(&id).map_err(SandboxError::cni_cache(&id, "remove"))?;
    }
    if record.network.attached {
        record.network.attached = false;
        // Persist at once: a DEL that succeeded must not be needed again after a crash.
        sandboxes.store.write(record)?;
    }
    if record.files.shm.starts_with(&record.files.dir) {
        mounts::unmount(&record.files.shm).map_err(SandboxError::mounts(&id, "unmount /dev/shm"))?;
    }
    Ok(())
}

/// DEL, tried three times with a pause between tries (100 ms, then 200 ms): a plugin may
/// fail for a moment (the iptables lock, a busy store). The last failure is returned.
pub(super) fn del_with_retries(attachment: &Attachment, plugins: &Plugins) -> Result<(), network::CniError> {
    const TRIES: u32 = 3;
    let mut attempt = 1;
    loop {
        match network::del(attachment, plugins) {
            Ok(()) => return Ok(()),
            Err(e) if attempt == TRIES => return Err(e),
            Err(e) => {
                tracing::warn!(sandbox = %attachment.container_id, attempt, error = %e, "CNI DEL failed; retrying");
                std::thread::sleep(Duration::from_millis(100 << (attempt - 1)));
                attempt += 1;
            }
        }
    }
}
