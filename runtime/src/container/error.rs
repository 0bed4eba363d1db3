//! What can go wrong in a container RPC, typed: each variant carries the ids, fields, paths and
//! underlying errors that explain it, and its message says what was being done. Which gRPC code
//! a variant deserves is decided in `server::container`, nowhere in this module's family.

use std::path::PathBuf;

use super::rootfs::RootfsError;
use super::SpecError;
use crate::image::service::ImageError;
use crate::monitor::MonitorError;
use crate::oci::OciError;
use crate::persist::PersistError;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A field of the request is wrong; `field` names it the way the CRI does.
    #[error("{field}: {problem}")]
    BadField { field: String, problem: String },
    /// The request cannot be turned into an OCI spec (the spec builder's verdict, with its kind).
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("container_id {id:?}: no such container")]
    NoSuchContainer { id: String },
    #[error("pod_sandbox_id {id:?}: no such pod sandbox")]
    NoSuchSandbox { id: String },
    /// An image the request names is not in the store.
    #[error("{field} {image:?}: the image is not present; pull it first")]
    ImageNotPresent { field: String, image: String },
    /// An image was removed between its lookup and its hold.
    #[error("config.image.image: image {image} was removed while the container was being created")]
    ImageRemoved { image: String },
    /// A container that another one refers to (namespace_options.target_id) does not exist.
    #[error("{field}: no container {id:?}")]
    NoSuchTarget { field: String, id: String },
    /// The container is not in a state that allows the call.
    #[error("container {id} is {state}: {requirement}")]
    WrongState { id: String, state: &'static str, requirement: &'static str },
    /// The pod sandbox cannot take containers (stopped, broken, or stopped meanwhile).
    #[error("pod_sandbox_id {id:?}: {problem}")]
    SandboxNotReady { id: String, problem: &'static str },
    /// The handler's OCI runtime cannot be run now; `OciError::Unavailable` says why.
    #[error("{0}")]
    HandlerUnavailable(Box<OciError>),
    /// lockstep-monitor, which every container needs, is not installed.
    #[error("{0}")]
    MonitorMissing(String),
    /// The OCI runtime refused or failed.
    #[error("cannot {action} container {id}: {source}")]
    Runtime { id: String, action: &'static str, source: Box<OciError> },
    /// The container's monitor failed or could not be reached.
    #[error("cannot {action} container {id}: {source}")]
    Monitor { id: String, action: &'static str, source: Box<MonitorError> },
    /// A killed container's exit could not be had.
    #[error(transparent)]
    Wait(Box<super::lifecycle::WaitError>),
    /// ExecSync's command outlived its timeout and was killed.
    #[error("command {cmd:?} in container {id} timed out after {seconds}s and was killed")]
    ExecTimedOut { id: String, cmd: Vec<String>, seconds: i64 },
    /// The image store refused (a hold, a release).
    #[error("cannot {action} image {image}: {source}")]
    Image { action: &'static str, image: String, source: Box<ImageError> },
    /// A record could not be written, read or removed.
    #[error("cannot {action} the container record{}: {source}", for_id(id))]
    Record { id: String, action: &'static str, source: Box<PersistError> },
    /// A mount or directory of the container.
    #[error("cannot {action} of container {id}: {source}")]
    Rootfs { id: String, action: &'static str, source: Box<RootfsError> },
    /// The pod's record could not take the change.
    #[error(transparent)]
    Sandbox(Box<crate::sandbox::SandboxError>),
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    /// The container or its runtime handler cannot be checkpointed here (no CRIU, a terminal).
    #[error("container {id} cannot be checkpointed: {problem}")]
    CannotCheckpoint { id: String, problem: String },
    /// A checkpoint archive could not be written, or read for a restore.
    #[error("{action}: {source}")]
    Archive { action: &'static str, source: Box<super::checkpoint_archive::ArchiveError> },
}

fn for_id(id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        format!(" of {id}")
    }
}

impl ContainerError {
    pub fn bad_field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ContainerError::BadField { field: field.into(), problem: problem.into() }
    }

    /// For `map_err`: a record call about container `id`.
    pub fn record(id: &str, action: &'static str) -> impl FnOnce(PersistError) -> ContainerError {
        let id = id.to_string();
        move |source| ContainerError::Record { id, action, source: Box::new(source) }
    }

    /// For `map_err`: an OCI runtime call on container `id`.
    pub fn runtime(id: &str, action: &'static str) -> impl FnOnce(OciError) -> ContainerError {
        let id = id.to_string();
        move |source| match source {
            OciError::Unavailable { .. } => ContainerError::HandlerUnavailable(Box::new(source)),
            source => ContainerError::Runtime { id, action, source: Box::new(source) },
        }
    }

    /// For `map_err`: a monitor call on container `id`.
    pub fn monitor(id: &str, action: &'static str) -> impl FnOnce(MonitorError) -> ContainerError {
        let id = id.to_string();
        move |source| ContainerError::Monitor { id, action, source: Box::new(source) }
    }

    /// For `map_err`: a mount or directory of container `id`.
    pub fn rootfs(id: &str, action: &'static str) -> impl FnOnce(RootfsError) -> ContainerError {
        let id = id.to_string();
        move |source| ContainerError::Rootfs { id, action, source: Box::new(source) }
    }
}

impl ContainerError {
    /// For `map_err`: a checkpoint archive being written or read.
    pub fn archive(action: &'static str) -> impl FnOnce(super::checkpoint_archive::ArchiveError) -> ContainerError {
        move |source| ContainerError::Archive { action, source: Box::new(source) }
    }
}

impl From<super::lifecycle::WaitError> for ContainerError {
    fn from(e: super::lifecycle::WaitError) -> Self {
        ContainerError::Wait(Box::new(e))
    }
}

/// The word for a record state in messages.
pub fn state_word(state: super::record::RecordState) -> &'static str {
    use super::record::RecordState;
    match state {
        RecordState::Creating => "being created",
        RecordState::Created => "created",
        RecordState::Running => "running",
        RecordState::Exited => "exited",
        RecordState::Removing => "being removed",
    }
}
