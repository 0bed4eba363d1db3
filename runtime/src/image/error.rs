//! The one error of the image service, typed so that `server/image.rs` alone decides the gRPC
//! code (see [`ImageError::root`]). Touches nothing.

use super::policy::PolicyError;
use super::reference::ReferenceError;
use super::registries_conf::{self, RegistriesConfError};
use super::registry::RegistryError;
use super::snapshot::SnapshotError;
use super::store::BlobError;
use crate::persist::PersistError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("auth: {0}")]
    Auth(String),
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error(transparent)]
    Blocked(#[from] registries_conf::Unusable),
    #[error(transparent)]
    RegistriesConf(#[from] RegistriesConfError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{reference}: {detail}")]
    BadImage { reference: String, detail: String },
    #[error(transparent)]
    Layer(#[from] SnapshotError),
    #[error("image store: {0}")]
    Store(#[from] PersistError),
    #[error("{0}")]
    Several(String, Box<ImageError>),
    #[error("holder {0:?} is not a valid container ID")]
    InvalidHolder(String),
    #[error("the pull of {0} was cancelled: every caller gave up waiting for it")]
    Abandoned(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{image} is refused by the signature policy {} ({scope}): {reason}", .policy.display())]
    Refused { image: String, policy: std::path::PathBuf, scope: String, reason: String },
    #[error("the pull of {image} did not finish within {} s (image.pull_timeout_secs); it was cancelled", .after.as_secs())]
    Deadline { image: String, after: std::time::Duration },
}

impl ImageError {
    pub(super) fn is_not_found(&self) -> bool {
        matches!(self, ImageError::NotFound(_) | ImageError::Registry(RegistryError::NotFound { .. }))
    }
    /// A pull stopped from outside (abandoned, or past its deadline): no other source is tried.
    pub(super) fn is_stop(&self) -> bool {
        matches!(self, ImageError::Abandoned(_) | ImageError::Deadline { .. })
    }
    /// The error that decides the gRPC code.
    pub fn root(&self) -> &ImageError {
        match self {
            ImageError::Several(_, inner) => inner.root(),
            other => other,
        }
    }
}

impl From<BlobError> for ImageError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Io(p) => ImageError::Store(p),
            mismatch => ImageError::BadImage { reference: "blob".into(), detail: mismatch.to_string() },
        }
    }
}
