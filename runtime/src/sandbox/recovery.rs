//! Recovery before lockstepd serves: a sandbox whose creation a crash interrupted is rolled
//! back completely (pause killed, CNI DEL from the cache, mounts and files removed, record
//! gone); a ready one is checked (pinned namespaces, pause) and kept, or marked not ready with
//! the reason; a stopped one whose release failed is released again. CNI attachments and
//! sandbox directories without a record are released and swept.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::SandboxError;
use super::manager::SandboxManager;
use super::pause;
use super::record::{SandboxRecord, SandboxState};
use super::remove::remove_sandbox_dir;
use super::stop::{del_with_retries, release};
use super::store::Entry;
use crate::host::cgroups;

pub(super) fn recover(sandboxes: &SandboxManager) -> Result<(), SandboxError> {
    let loaded = sandboxes.store.load().map_err(SandboxError::record("", "load"))?;
    for bad in &loaded.set_aside {
        tracing::error!(sandbox = %bad.id, moved_to = %bad.moved_to.display(), problem = %bad.problem,
            "an unreadable sandbox record was set aside; its network and namespaces are released");
    }
    let records = loaded.records;
    let mut kept = BTreeMap::new();
    for (id, mut record) in records {
        match record.state {
            SandboxState::Creating => match roll_back(sandboxes, &mut record) {
                Ok(()) => {
                    tracing::info!(sandbox = %id, "rolled back a sandbox whose creation was interrupted");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "cannot roll back an interrupted sandbox; kept as not ready");
                    record.state = SandboxState::NotReady;
                    record.problem = Some(format!("creation was interrupted and rollback failed: {e}"));
                    // StopPodSandbox and RemovePodSandbox finish the release from the cache.
                    record.network.attached = !matches!(sandboxes.cni_cache.get(&id), Ok(None));
                }
            },
            SandboxState::Ready => {
                if let Some(problem) = check_ready(&record) {
                    tracing::warn!(sandbox = %id, %problem, "sandbox no longer ready");
                    record.state = SandboxState::NotReady;
                    record.problem = Some(problem);
                    // Its namespaces may be gone (a reboot): release what still can be.
                    if let Err(e) = release(sandboxes, &mut record) {
                        tracing::warn!(sandbox = %id, error = %e, "cannot release the broken sandbox yet");
                    }
                }
            }
            SandboxState::NotReady => {
                // Its release may have failed or been cut short: finish it (each step is idempotent).
                if let Err(e) = release(sandboxes, &mut record) {
                    tracing::warn!(sandbox = %id, error = %e, "cannot release a stopped sandbox yet; StopPodSandbox retries");
                }
            }
        }
        sandboxes.store.write(&record)?;
        kept.insert(id, Entry::new(record));
    }
    release_orphan_attachments(sandboxes, &kept);
    sweep_orphans(sandboxes, &kept);
    let count = kept.len();
    sandboxes.store.hold_all(kept);
    if count > 0 {
        tracing::info!(sandboxes = count, "sandboxes recovered");
    }
    Ok(())
}

/// Undoes every step creation may have taken, whichever it reached.
fn roll_back(sandboxes: &SandboxManager, record: &mut SandboxRecord) -> Result<(), SandboxError> {
    let id = record.id.clone();
    if let Some(p) = pause::read_pid_file(&record.files.dir).map_err(SandboxError::pause(&id, "read the pid file"))? {
        pause::kill(&p).map_err(SandboxError::pause(&id, "kill the pause process"))?;
    }
    cgroups::remove(&record.pause_cgroups, &id).map_err(SandboxError::cgroups(&id, "remove the pause's cgroups"))?;
    if let Some(attachment) = sandboxes.cni_cache.get(&id).map_err(SandboxError::cni_cache(&id, "read"))? {
        del_with_retries(&attachment, &sandboxes.plugins).map_err(SandboxError::detach(&id))?;
        sandboxes.cni_cache.remove(&id).map_err(SandboxError::cni_cache(&id, "remove"))?;
    }
    remove_sandbox_dir(&sandboxes.cni_cache, &id, &record.files.dir).map_err(SandboxError::dir(&id))?;
    sandboxes.store.records().remove(&id).map_err(SandboxError::record(&id, "remove"))
}

/// CNI attachments cached for no sandbox (a record lost or set aside): DEL them, so that
/// their IPs and host rules are released. One whose DEL fails stays for the next start, and
/// so does its sandbox directory (the network namespace that the DEL needs).
fn release_orphan_attachments(sandboxes: &SandboxManager, kept: &BTreeMap<String, Arc<Entry>>) {
    let attachments = match sandboxes.cni_cache.all_readable() {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the CNI cache; orphan attachments are not released");
            return;
        }
    };
    for (id, attachment) in attachments.into_iter().filter(|(id, _)| !kept.contains_key(id)) {
        match del_with_retries(&attachment, &sandboxes.plugins) {
            Ok(()) => match sandboxes.cni_cache.remove(&id) {
                Ok(()) => tracing::info!(sandbox = %id, "released the network of a sandbox without a record"),
                Err(e) => tracing::warn!(sandbox = %id, error = %e, "cannot remove a released CNI cache entry"),
            },
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "cannot release the network of a sandbox without a record; retried at the next start")
            }
        }
    }
}

/// Why a ready sandbox is not ready any more, if it is not.
fn check_ready(record: &SandboxRecord) -> Option<String> {
    let ns = &record.namespaces;
    let user = ns.user.as_ref().map(|u| u.path.clone());
    for path in [&ns.network, &ns.ipc, &ns.uts, &user].into_iter().flatten() {
        if !crate::host::namespaces::is_pinned(path) {
            return Some(format!("namespace {} is no longer pinned (a reboot?)", path.display()));
        }
    }
    if let Some(p) = &ns.pause {
        if !pause::alive(p) {
            return Some(format!("the pause process {} has exited", p.pid));
        }
    }
    // No CNI CHECK here, as in containerd and CRI-O: a plugin that fails CHECK for a
    // moment (an upgrade, a lock) must not cost a running pod its network or its restart.
    None
}

/// Sandbox directories under the runroot that no record names: unmount and remove them.
fn sweep_orphans(sandboxes: &SandboxManager, kept: &BTreeMap<String, Arc<Entry>>) {
    let Ok(entries) = std::fs::read_dir(&sandboxes.runroot_sandboxes) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !kept.contains_key(&name) {
            // A pause of a record set aside (unreadable) still runs: it goes with its directory.
            if let Ok(Some(pause)) = pause::read_pid_file(&entry.path()) {
                if let Err(e) = pause::kill(&pause) {
                    tracing::warn!(sandbox = %name, error = %e, "cannot stop the pause of a sandbox without a record");
                }
            }
            if let Err(e) = remove_sandbox_dir(&sandboxes.cni_cache, &name, &entry.path()) {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot sweep a leftover sandbox directory");
            }
        }
    }
}
