//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and
//! ListPodSandbox, one file per family (`run`, `stop`, `remove`, `status`) over the `store` of
//! crash-safe records (`<root>/sandboxes/<id>.json`) and the `manager` they share, and the
//! `recovery` that runs before lockstepd serves; `error` says what can go wrong. Blocking
//! code: the gRPC layer calls it off the async workers.

pub mod error;
pub mod files;
mod manager;
pub mod namespaces;
pub mod pause;
pub mod record;
mod recovery;
pub mod remove;
mod reservations;
pub mod resize;
#[cfg(test)]
mod rpc_tests;
pub mod run;
pub mod status;
pub mod stop;
pub mod store;
pub mod validate;

pub use error::SandboxError;
pub use manager::{NoContainers, PodContainers, SandboxManager};
pub use record::SandboxRecord;
