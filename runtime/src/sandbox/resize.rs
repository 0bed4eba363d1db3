//! What UpdatePodSandboxResources leaves in a sandbox's record: the pod-level resources after an
//! in-place resize (1.33+). The kubelet has already set them on the pod's cgroup; the runtime
//! keeps them with the pod (its verbose status shows them). Validation of the values is the
//! container family's (`container::pod_resources`), which calls this.

use super::error::SandboxError;
use super::manager::SandboxManager;
use super::record::PodResources;
use super::store::lock;

/// Records `resources` for sandbox `id`, on disk before it answers.
pub fn record_resources(sandboxes: &SandboxManager, id: &str, resources: PodResources) -> Result<(), SandboxError> {
    let entry = sandboxes.store.get(id).ok_or_else(|| SandboxError::NoSuchSandbox { id: id.to_string() })?;
    let _op = lock(&entry.op);
    if entry.is_removed() {
        return Err(SandboxError::NoSuchSandbox { id: id.to_string() });
    }
    let mut record = entry.read();
    record.resources = Some(resources);
    sandboxes.store.save(&entry, record)
}
