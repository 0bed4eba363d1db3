//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and
//! ListPodSandbox over crash-safe records (`<root>/sandboxes/<id>.json`), and the recovery that
//! runs before lockstepd serves. Blocking code: the gRPC layer calls it off the async workers.

pub mod cgroups;
mod create;
pub mod files;
mod manager;
pub mod namespaces;
pub mod pause;
pub mod record;
mod recovery;
mod reservations;
pub mod validate;

pub use manager::{Cause, NoContainers, PodContainers, SandboxError, SandboxManager};
pub use record::SandboxRecord;
