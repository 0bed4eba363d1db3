//! Restoring a checkpoint, CRI-O's way: a CreateContainer whose image is a checkpoint archive
//! (CheckpointContainer's) makes a container of the archive's image, command and writable
//! layer in the pod it names; its StartContainer then restores the dumped processes instead
//! of starting the command (`start`). May touch: the new container's run directory.

use std::path::{Path, PathBuf};

use lockstep_cri::model;

use super::checkpoint_archive as archive;
use super::create::resolve;
use super::error::ContainerError;
use super::manager::ContainerManager;
use super::record::PendingRestore;
use crate::image::store::records::ImageRecord;

/// A checkpoint archive unpacked for a new container.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Where it was unpacked (the new container's `<run_dir>/restore`).
    pub dir: PathBuf,
    /// What StartContainer needs: the CRIU images and the stdin asked for.
    pub pending: PendingRestore,
}

/// The checkpoint archive `image` (config.image.image) names: an absolute path to a file.
/// Image references are never absolute paths, so nothing else is taken for one.
pub fn archive_named(image: &str) -> Option<PathBuf> {
    let path = Path::new(image);
    (path.is_absolute() && path.is_file()).then(|| path.to_path_buf())
}

/// Unpacks `archive` for container `id` and works out the container to make: the request's
/// configuration, with the image the checkpointed container ran, and its command, working
/// directory and environment where the request gives none.
pub fn prepare(
    containers: &ContainerManager,
    id: &str,
    config: &model::ContainerConfig,
    archive: &Path,
) -> Result<(model::ContainerConfig, ImageRecord, Prepared), ContainerError> {
    if config.tty {
        return Err(ContainerError::bad_field("config.tty", "a container restored from a checkpoint has no terminal"));
    }
    let dir = containers.run_root.join(id).join("restore");
    std::fs::create_dir_all(&dir).map_err(|source| ContainerError::Io {
        action: "create",
        path: dir.clone(),
        source,
    })?;
    let unpacked = archive::unpack(archive, &dir)
        .map_err(ContainerError::archive("config.image.image: read the checkpoint archive"))?;
    let dumped = &unpacked.config;
    let image = [&dumped.rootfs_image_ref, &dumped.rootfs_image_name]
        .into_iter()
        .filter(|name| !name.is_empty())
        .find_map(|name| resolve(containers, "config.image.image", name).ok())
        .ok_or_else(|| ContainerError::ImageNotPresent {
            field: "config.image.image (the checkpoint's image)".into(),
            image: if dumped.rootfs_image_name.is_empty() {
                dumped.rootfs_image_ref.clone()
            } else {
                dumped.rootfs_image_name.clone()
            },
        })?;

    let mut restored = config.clone();
    restored.image = Some(model::ImageSpec { image: image.id.to_string(), ..config.image.clone().unwrap_or_default() });
    if let Some(process) = unpacked.spec.process() {
        if restored.command.is_empty() && restored.args.is_empty() {
            restored.command = process.args().clone().unwrap_or_default();
        }
        if restored.working_dir.is_empty() {
            restored.working_dir = process.cwd().display().to_string();
        }
        if restored.envs.is_empty() {
            restored.envs = process
                .env()
                .iter()
                .flatten()
                .filter_map(|pair| pair.split_once('='))
                .map(|(key, value)| model::KeyValue { key: key.into(), value: value.into() })
                .collect();
        }
    }
    let pending =
        PendingRestore { images: unpacked.images.clone(), stdin: config.stdin, stdin_once: config.stdin_once };
    Ok((restored, image, Prepared { dir, pending }))
}

/// Makes `upper`, the new container's empty writable layer, what the checkpointed one was.
pub fn fill_writable_layer(prepared: &Prepared, upper: &Path) -> Result<(), ContainerError> {
    std::fs::create_dir_all(upper).map_err(|source| ContainerError::Io {
        action: "create",
        path: upper.to_path_buf(),
        source,
    })?;
    archive::restore_rootfs_diff(&prepared.dir, upper)
        .map_err(ContainerError::archive("config.image.image: restore the checkpoint's writable layer"))
}
