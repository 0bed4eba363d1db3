//! RemovePodSandbox: the pod's containers removed, the sandbox stopped (as StopPodSandbox),
//! then everything else of it — the cgroup parents made for its pause, the pinned
//! namespaces, its directory, its record. Idempotent.

use std::path::Path;

use super::error::{SandboxDirError, SandboxError};
use super::manager::SandboxManager;
use super::namespaces;
use super::stop::release;
use super::store::lock;
use crate::cni::network::AttachmentCache;
use crate::host::{cgroups, mounts};

pub fn remove_pod_sandbox(sandboxes: &SandboxManager, id: &str) -> Result<(), SandboxError> {
    let Some(entry) = sandboxes.store.get(id) else { return Ok(()) };
    let _op = lock(&entry.op);
    if entry.is_removed() {
        return Ok(());
    }
    entry.close();
    let mut record = entry.read();
    sandboxes.containers().remove_all(id).map_err(|problem| SandboxError::Containers {
        id: id.to_string(),
        action: "remove",
        problem,
    })?;
    let released = release(sandboxes, &mut record);
    entry.show(record.clone());
    released?;
    if !record.pause_cgroups.is_empty() {
        // The pod's containers are gone: the parents made for its pause can go (one that
        // another pod uses stays).
        cgroups::remove(&record.pause_cgroups, id).map_err(SandboxError::cgroups(id, "remove the pause's cgroups"))?;
        record.pause_cgroups.clear();
        sandboxes.store.save(&entry, record.clone())?;
    }
    // The recorded pins by their own paths first: they are known even when mountinfo's
    // resolved paths would not match.
    let ns = &record.namespaces;
    let user = ns.user.as_ref().map(|u| u.path.clone());
    for pin in [&ns.network, &ns.ipc, &ns.uts, &user].into_iter().flatten() {
        namespaces::unpin(pin).map_err(SandboxError::namespaces(id, "unpin a namespace"))?;
    }
    remove_sandbox_dir(&sandboxes.cni_cache, id, &record.files.dir).map_err(SandboxError::dir(id))?;
    sandboxes.store.forget(&entry, id)?;
    tracing::info!(sandbox = %id, "pod sandbox removed");
    Ok(())
}

/// Unmounts everything under a sandbox directory (namespace pins, shm), then removes it —
/// never while the sandbox's CNI attachment is cached: a DEL without the pinned network
/// namespace cannot remove what the plugins set up on the host (the bridge's masquerade rules).
pub(super) fn remove_sandbox_dir(cache: &AttachmentCache, id: &str, dir: &Path) -> Result<(), SandboxDirError> {
    if cache.get(id)?.is_some() {
        return Err(SandboxDirError::AttachmentCached(dir.to_path_buf()));
    }
    for mount in mounts::mounts_under(dir)? {
        mounts::unmount(&mount)?;
    }
    crate::fstree::remove_tree(dir).map_err(|source| SandboxDirError::Remove { path: dir.to_path_buf(), source })
}
