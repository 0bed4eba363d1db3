//! What can go wrong in a pod sandbox RPC, typed: each variant carries the sandbox id, the
//! step that failed and the underlying error. Which gRPC code a variant deserves is decided in
//! `server::sandbox`, nowhere in this module's family.

use std::path::PathBuf;

use super::files::FilesError;
use super::namespaces::NsError;
use super::pause::PauseError;
use super::validate::BadField;
use crate::cni::config::CniConfigError;
use crate::cni::network::CniError;
use crate::host::cgroups::CgroupError;
use crate::host::mounts::MountError;
use crate::persist::PersistError;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A field of the request is wrong.
    #[error(transparent)]
    BadField(#[from] BadField),
    #[error("pod sandbox {id:?} not found")]
    NoSuchSandbox { id: String },
    /// A sandbox of the same metadata exists and is not ready.
    #[error(
        "pod sandbox {id} of {namespace}/{name} (uid {uid}, attempt {attempt}) exists and is not ready; remove it \
         or raise config.metadata.attempt"
    )]
    Exists { id: String, namespace: String, name: String, uid: String, attempt: u32 },
    /// The runtime handler is configured but its OCI runtime does not work on this node.
    #[error("runtime_handler {handler:?}: the OCI runtime does not work on this node: {problem}")]
    HandlerBroken { handler: String, problem: String },
    #[error("runtime_handler \"\": no configured OCI runtime works")]
    NoWorkingHandler,
    /// No CNI network configuration is usable yet (the kubelet retries).
    #[error("the pod network is not ready: {0}")]
    NetworkNotReady(Box<CniConfigError>),
    /// CNI ADD failed.
    #[error("cannot attach pod sandbox {id} to network {network:?}: {source}")]
    Attach { id: String, network: String, source: Box<CniError> },
    /// CNI DEL failed, after retries (the kubelet retries the stop).
    #[error("cannot detach pod sandbox {id} from its network: {source}")]
    Detach { id: String, source: Box<CniError> },
    /// The sandbox's containers could not be stopped or removed first.
    #[error("cannot {action} the containers of {id}: {problem}")]
    Containers { id: String, action: &'static str, problem: String },
    #[error("cannot {action} the sandbox record{}: {source}", of(id))]
    Record { id: String, action: &'static str, source: Box<PersistError> },
    #[error("cannot {action} the CNI cache entry of {id}: {source}")]
    CniCache { id: String, action: &'static str, source: Box<PersistError> },
    #[error("cannot {action} of pod sandbox {id}: {source}")]
    Namespaces { id: String, action: &'static str, source: Box<NsError> },
    #[error("cannot {action} of pod sandbox {id}: {source}")]
    Pause { id: String, action: &'static str, source: Box<PauseError> },
    #[error("cannot {action} of pod sandbox {id}: {source}")]
    Cgroups { id: String, action: &'static str, source: Box<CgroupError> },
    #[error("cannot {action} of pod sandbox {id}: {source}")]
    Files { id: String, action: &'static str, source: Box<FilesError> },
    #[error("cannot {action} of pod sandbox {id}: {source}")]
    Mounts { id: String, action: &'static str, source: Box<MountError> },
    #[error("cannot remove the directory of pod sandbox {id}: {source}")]
    Dir { id: String, source: Box<SandboxDirError> },
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

fn of(id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        format!(" of {id}")
    }
}

/// Why a sandbox directory stays.
#[derive(Debug, thiserror::Error)]
pub enum SandboxDirError {
    #[error("{0} stays: its CNI attachment is still cached, and a DEL needs the network namespace pinned there")]
    AttachmentCached(PathBuf),
    #[error(transparent)]
    Cache(#[from] PersistError),
    #[error(transparent)]
    Mounts(#[from] MountError),
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
}

/// `map_err` helpers: the step of sandbox `id` that failed, with its error.
impl SandboxError {
    pub fn record(id: &str, action: &'static str) -> impl FnOnce(PersistError) -> SandboxError {
        let id = id.to_string();
        move |source| SandboxError::Record { id, action, source: Box::new(source) }
    }
    pub fn cni_cache(id: &str, action: &'static str) -> impl FnOnce(PersistError) -> SandboxError {
        let id = id.to_string();
        move |source| SandboxError::CniCache { id, action, source: Box::new(source) }
    }
    pub fn namespaces(id: &str, action: &'static str) -> impl FnOnce(NsError) -> SandboxError {
        let id = id.to_string();
        move |source| SandboxError::Namespaces { id, action, source: Box::new(source) }
    }
    pub fn pause(id: &str, action: &'static str) -> impl FnOnce(PauseError) -> SandboxError {
        let id = id.to_string();
        move |source| SandboxError::Pause { id, action, source: Box::new(source) }
    }
    pub fn cgroups(id: &str, action: &'static str) -> impl FnOnce(CgroupError) -> SandboxError {
        let id = id.to_string();
        move |source| SandboxError::Cgroups { id, action, source: Box::new(source) }
    }
    pub fn files(id: &str, action: &'static str) -> impl FnOnce(FilesError) -> SandboxError {
        let id = id.to_string();
        move |source| SandboxError::Files { id, action, source: Box::new(source) }
    }
    pub fn mounts(id: &str, action: &'static str) -> impl FnOnce(MountError) -> SandboxError {
        let id = id.to_string();
        move |source| SandboxError::Mounts { id, action, source: Box::new(source) }
    }
    pub fn dir(id: &str) -> impl FnOnce(SandboxDirError) -> SandboxError {
        let id = id.to_string();
        move |source| SandboxError::Dir { id, source: Box::new(source) }
    }
    pub fn detach(id: &str) -> impl FnOnce(CniError) -> SandboxError {
        let id = id.to_string();
        move |source| SandboxError::Detach { id, source: Box::new(source) }
    }
}
