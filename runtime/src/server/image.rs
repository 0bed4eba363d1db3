//! Image RPCs: PullImage, ImageStatus, ListImages (and StreamImages), RemoveImage, ImageFsInfo.
//! Validates requests, calls the image service, maps its errors to gRPC codes whose messages
//! name the field or the image.

use std::sync::Arc;

use lockstep_cri::model;
use lockstep_cri::window::StreamOf;
use tonic::Status;

use crate::image::registry::auth::Credentials;
use crate::image::registry::RegistryError;
use crate::image::service::{ImageError, ImageService};
use crate::image::snapshot::SnapshotError;
use crate::image::store::records::ImageRecord;
use crate::metrics::Metrics;

fn status(e: &ImageError) -> Status {
    let message = e.to_string();
    if let Some(status) = super::disk_full::exhausted(e.root(), &message) {
        return status;
    }
    match e.root() {
        ImageError::Reference(_) | ImageError::Auth(_) | ImageError::InvalidHolder(_) => {
            Status::invalid_argument(message)
        }
        ImageError::NotFound(_) => Status::not_found(message),
        ImageError::Blocked(_) | ImageError::RegistriesConf(_) | ImageError::Policy(_) => {
            Status::failed_precondition(message)
        }
        ImageError::Refused { .. } => Status::permission_denied(message),
        ImageError::Registry(r) => match r {
            RegistryError::Unreachable { .. } => Status::unavailable(message),
            RegistryError::NotFound { .. } => Status::not_found(message),
            RegistryError::Denied { .. } => Status::permission_denied(message),
            RegistryError::Stalled { .. } => Status::deadline_exceeded(message),
            RegistryError::Protocol { .. } => Status::unknown(message),
            RegistryError::Setup { .. } | RegistryError::Insecure { .. } => Status::failed_precondition(message),
        },
        ImageError::BadImage { .. } => Status::data_loss(message),
        ImageError::Layer(SnapshotError::Io { .. }) => Status::internal(message),
        ImageError::Layer(_) => Status::data_loss(message),
        ImageError::Store(_) => Status::internal(message),
        ImageError::Several(..) => Status::unknown(message),
        ImageError::Abandoned(_) => Status::cancelled(message),
        ImageError::Deadline { .. } => Status::deadline_exceeded(message),
    }
}

/// The image a request names, or InvalidArgument naming the field.
fn image_field<'a>(spec: &'a Option<model::ImageSpec>, field: &str) -> Result<&'a str, Status> {
    match spec.as_ref().map(|s| s.image.as_str()) {
        Some(image) if !image.is_empty() => Ok(image),
        _ => Err(Status::invalid_argument(format!("{field} is empty: name the image"))),
    }
}

/// The CRI's view of a stored image; `pinned` as `image.pinned_images` says.
pub fn to_cri(record: &ImageRecord, pinned: bool) -> model::Image {
    // The one USER parser CreateContainer uses too: `-1` is a username here, not a uid.
    let (uid, username) = crate::image::user::for_kubelet(&record.config.config.user);
    let uid = uid.map(|value| model::Int64Value { value });
    model::Image {
        id: record.id.to_string(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid,
        username,
        spec: Some(model::ImageSpec { image: record.id.to_string(), ..Default::default() }),
        pinned,
    }
}

pub async fn pull(
    images: &Arc<ImageService>,
    metrics: &Metrics,
    request: model::PullImageRequest,
) -> Result<model::PullImageResponse, Status> {
    let image = image_field(&request.image, "image.image")?;
    let handler = request.image.as_ref().map_or("", |s| s.runtime_handler.as_str());
    if !images.knows_handler(handler) {
        return Err(Status::invalid_argument(format!(
            "image.runtime_handler {handler:?} is not a runtime handler of this lockstepd (it has {})",
            images.handlers().join(", ")
        )));
    }
    let credentials = Credentials::from_cri(request.auth.as_ref()).map_err(Status::invalid_argument)?;
    let stored_before = images.resolve(image).ok().flatten().map(|r| r.id);
    let started = std::time::Instant::now();
    let pulled = images.pull(image, credentials).await;
    match &pulled {
        Ok(record) => {
            let new_bytes = if stored_before.as_ref() == Some(&record.id) { 0 } else { record.size };
            metrics.image_pull(Ok(new_bytes), started.elapsed());
        }
        Err(e) => metrics.image_pull(Err(failure_reason(e)), started.elapsed()),
    }
    let record = pulled.map_err(|e| status(&e))?;
    Ok(model::PullImageResponse { image_ref: record.id.to_string() })
}

/// A failed pull's reason, for the metrics' `reason` label: the kind of its root error.
fn failure_reason(e: &ImageError) -> &'static str {
    match e.root() {
        ImageError::Reference(_) => "bad_reference",
        ImageError::Auth(_) => "bad_credentials",
        ImageError::InvalidHolder(_) => "invalid_holder",
        ImageError::NotFound(_) | ImageError::Registry(RegistryError::NotFound { .. }) => "not_found",
        ImageError::Blocked(_) => "blocked",
        ImageError::RegistriesConf(_) => "registries_conf",
        ImageError::Policy(_) => "signature_policy",
        ImageError::Refused { .. } => "refused_by_policy",
        ImageError::Registry(RegistryError::Unreachable { .. }) => "unreachable",
        ImageError::Registry(RegistryError::Denied { .. }) => "denied",
        ImageError::Registry(RegistryError::Stalled { .. }) => "stalled",
        ImageError::Registry(RegistryError::Protocol { .. }) => "registry_protocol",
        ImageError::Registry(RegistryError::Setup { .. } | RegistryError::Insecure { .. }) => "registry_setup",
        ImageError::BadImage { .. } => "bad_image",
        ImageError::Layer(_) => "layer",
        ImageError::Store(_) => "store",
        ImageError::Several(..) => "several",
        ImageError::Abandoned(_) => "abandoned",
        ImageError::Deadline { .. } => "deadline",
    }
}

pub async fn image_status(
    images: &Arc<ImageService>,
    request: model::ImageStatusRequest,
) -> Result<model::ImageStatusResponse, Status> {
    let image = image_field(&request.image, "image.image")?;
    let Some(record) = images.resolve(image).map_err(|e| status(&e))? else {
        return Ok(model::ImageStatusResponse::default());
    };
    let mut info = std::collections::HashMap::new();
    if request.verbose {
        let config: serde_json::Value = images
            .config_bytes(&record)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| serde_json::to_value(&record.config).unwrap_or_default());
        let layers: Vec<String> = images.layer_dirs(&record).iter().map(|p| p.display().to_string()).collect();
        let detail = serde_json::json!({
            "id": record.id,
            "manifest": record.manifest,
            "imageSpec": config,
            "layers": layers,
            "pulledAt": record.pulled_at,
        });
        info.insert("info".to_string(), detail.to_string());
    }
    Ok(model::ImageStatusResponse { image: Some(to_cri(&record, images.is_pinned(&record))), info })
}

fn listed(images: &ImageService, filter: Option<&model::ImageFilter>) -> Result<Vec<model::Image>, Status> {
    let wanted = filter.and_then(|f| f.image.as_ref()).map(|s| s.image.as_str()).filter(|s| !s.is_empty());
    match wanted {
        None => Ok(images.list().iter().map(|r| to_cri(r, images.is_pinned(r))).collect()),
        Some(image) => match images.resolve(image) {
            Ok(found) => Ok(found.iter().map(|r| to_cri(r, images.is_pinned(r))).collect()),
            Err(ImageError::Reference(e)) => Err(Status::invalid_argument(format!("filter.image.image: {e}"))),
            Err(e) => Err(status(&e)),
        },
    }
}

pub fn list(images: &ImageService, request: model::ListImagesRequest) -> Result<model::ListImagesResponse, Status> {
    Ok(model::ListImagesResponse { images: listed(images, request.filter.as_ref())? })
}

pub fn stream(
    images: &ImageService,
    request: model::StreamImagesRequest,
) -> Result<StreamOf<model::StreamImagesResponse>, Status> {
    let images = listed(images, request.filter.as_ref())?;
    Ok(Box::pin(futures::stream::iter([Ok(model::StreamImagesResponse { images })])))
}

pub async fn remove(
    images: &Arc<ImageService>,
    request: model::RemoveImageRequest,
) -> Result<model::RemoveImageResponse, Status> {
    let image = image_field(&request.image, "image.image")?;
    images.remove(image).await.map_err(|e| status(&e))?;
    Ok(model::RemoveImageResponse {})
}

pub async fn fs_info(images: &Arc<ImageService>) -> Result<model::ImageFsInfoResponse, Status> {
    let images = images.clone();
    let measured = tokio::task::spawn_blocking(move || images.usage())
        .await
        .map_err(|e| Status::internal(format!("measuring the image store failed: {e}")))?;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
    let usage = |fs: crate::image::service::Filesystem| model::FilesystemUsage {
        timestamp: now,
        fs_id: Some(model::FilesystemIdentifier { mountpoint: fs.mountpoint.display().to_string() }),
        used_bytes: Some(model::UInt64Value { value: fs.usage.bytes }),
        inodes_used: Some(model::UInt64Value { value: fs.usage.inodes }),
    };
    Ok(model::ImageFsInfoResponse {
        image_filesystems: vec![usage(measured.images)],
        container_filesystems: vec![usage(measured.containers)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reference::Digest;
    use crate::image::registry::manifest::ImageConfig;

    fn record(user: &str) -> ImageRecord {
        let mut config = ImageConfig::default();
        config.config.user = user.to_string();
        ImageRecord {
            id: Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap(),
            repo_tags: vec!["docker.io/library/x:1".into()],
            repo_digests: vec![],
            manifest: Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap(),
            config,
            layers: vec![],
            size: 7,
            pulled_at: 0,
        }
    }

    #[test]
    fn user_becomes_uid_or_username() {
        let uid = |u: &str| to_cri(&record(u), false).uid.map(|v| v.value);
        assert_eq!((uid("1000"), to_cri(&record("1000"), false).username), (Some(1000), String::new()));
        assert_eq!(uid("1000:1000"), Some(1000));
        assert_eq!((uid("nobody"), to_cri(&record("nobody:nogroup"), false).username), (None, "nobody".to_string()));
        assert_eq!((uid(""), to_cri(&record(""), false).username), (None, String::new()));
        let image = to_cri(&record("0"), false);
        assert_eq!(image.spec.unwrap().image, image.id, "the spec names the image by ID, as containerd does");
    }

    /// chaos --fault disk-full found a pull onto a full disk answered DATA_LOSS ("layer entry
    /// …: cannot write file: No space left on device"), which says the image is corrupt.
    #[test]
    fn a_pull_that_meets_a_full_disk_is_resource_exhausted_and_a_corrupt_layer_stays_data_loss() {
        use crate::image::unpack::UnpackError;
        let layer = Digest::parse(&format!("sha256:{}", "c".repeat(64))).unwrap();
        let unpack = |source| ImageError::Layer(SnapshotError::Unpack { layer: layer.clone(), source });
        let full = unpack(UnpackError::Io {
            entry: "data/kept".into(),
            what: "write file",
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
        let answered = status(&full);
        assert_eq!(answered.code(), tonic::Code::ResourceExhausted);
        assert!(answered.message().contains("No space left on device"), "{}", answered.message());
        // Several sources tried: the code is the last one's.
        let several = ImageError::Several("mirror: …; registry: …".into(), Box::new(full));
        assert_eq!(status(&several).code(), tonic::Code::ResourceExhausted);
        let corrupt = unpack(UnpackError::Corrupt { format: "gzip", detail: "bad header".into() });
        assert_eq!(status(&corrupt).code(), tonic::Code::DataLoss);
    }
}
