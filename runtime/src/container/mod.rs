//! Containers: the OCI runtime spec as a pure function of the CRI request, the sandbox, the
//! image and the runtime settings (`spec`), and the parts it is made of — capabilities,
//! seccomp, users and groups, cgroup resources, stop signals — plus `host`, which reads what
//! the pure part needs from the host (the image's passwd, device nodes, mount sources).
//! Around them the container RPCs, one file per family (`create`, `start`, `stop`, `remove`,
//! `status`, `stats`, `pod_stats`, `metric_descriptors`, `pod_metrics`, `update`, `exec`, `logs`, `checkpoint`, `pod`, `recovery`), over the `store` of
//! crash-safe `record`s and the `manager` they share; `runtimes` (the handler registry) gives
//! each container its `runtime` (the seam: its monitor and OCI runtime behind one trait);
//! `lifecycle` holds the rules of what a container has come to, pure but for that seam;
//! `events` sends each change to GetContainerEvents subscribers;
//! `rootfs` its overlay mounts, `usage` its cgroup readings (`usage_detail` the counters and
//! pressure only metrics need), `error` what can go wrong.

pub mod capabilities;
pub mod checkpoint;
pub mod checkpoint_archive;
pub mod create;
pub mod error;
pub mod events;
pub mod exec;
pub mod host;
pub mod inroot;
pub mod lifecycle;
pub mod logs;
mod manager;
pub mod metric_descriptors;
mod pod;
pub mod pod_metrics;
pub mod pod_resources;
pub mod pod_stats;
pub mod record;
mod recovery;
pub mod remove;
pub mod resources;
mod restore;
pub mod rootfs;
pub mod runtime;
pub mod runtimes;
pub mod seccomp;
pub mod signal;
pub mod spec;
pub mod start;
pub mod stats;
pub mod status;
pub mod stop;
pub mod store;
mod streams;
pub mod update;
pub mod usage;
pub mod usage_detail;
pub mod user;

pub use error::ContainerError;
pub use manager::ContainerManager;

/// What kind of gRPC status a bad request deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (a relative path, an unknown capability name).
    InvalidArgument,
    /// Something the request names does not exist (a mount source, a device, a profile).
    NotFound,
    /// The request is fine but this host or sandbox cannot honour it (AppArmor off, a
    /// capability the host lacks, a pid namespace the sandbox does not have).
    FailedPrecondition,
}

/// A request lockstepd cannot turn into a container; `field` names the part of the request
/// at fault the way the CRI does (`linux.security_context.capabilities.add_capabilities[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub kind: ErrorKind,
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError { kind: ErrorKind::InvalidArgument, field: field.into(), message: message.into() }
    }

    pub fn not_found(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError { kind: ErrorKind::NotFound, field: field.into(), message: message.into() }
    }

    pub fn precondition(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError { kind: ErrorKind::FailedPrecondition, field: field.into(), message: message.into() }
    }
}
