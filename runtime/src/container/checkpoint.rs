//! CheckpointContainer: a running container's processes dumped with CRIU through its OCI
//! runtime (which leaves them running), packed with its spec, its writable layer and its log
//! into the archive the kubelet names (`checkpoint_archive` has the layout). The restore is a
//! CreateContainer whose image is such an archive (`create`, `start`).
//! May touch: the container's run directory (a scratch directory, removed), the archive.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lockstep_cri::model;

use super::checkpoint_archive::{self as archive, ConfigDump};
use super::error::ContainerError;
use super::manager::ContainerManager;
use super::record::{ContainerRecord, RecordState};
use super::store::lock;
use crate::monitor::log::rfc3339_nano;

/// How long a checkpoint may take when the request gives no timeout.
pub const DEFAULT_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(300);

/// The scratch directory of a checkpoint under the container's run directory.
const SCRATCH: &str = "checkpoint";

pub fn checkpoint_container(
    containers: &ContainerManager,
    request: &model::CheckpointContainerRequest,
) -> Result<(), ContainerError> {
    let id = request.container_id.as_str();
    if id.is_empty() {
        return Err(ContainerError::bad_field("container_id", "is empty"));
    }
    let location = archive_location(&request.location)?;
    let timeout = match request.timeout {
        t if t < 0 => return Err(ContainerError::bad_field("timeout", format!("{t} is negative"))),
        0 => DEFAULT_CHECKPOINT_TIMEOUT,
        t => Duration::from_secs(t as u64),
    };
    let entry = containers.store.existing(id)?;
    let _op = lock(&entry.op);
    let record =
        containers.refreshed_in(&entry, &[RecordState::Running], "only a running container can be checkpointed")?;
    let runtime = containers.runtime_of(&record);
    let refuse = |problem: String| ContainerError::CannotCheckpoint { id: id.to_string(), problem };
    runtime.checkpoint_support().map_err(&refuse)?;
    let template = record.template();
    if template.metadata.is_none() {
        return Err(refuse("its record has lost the container's configuration".into()));
    }
    if containers.sandboxes.get(&record.sandbox_id).is_some_and(|s| s.namespaces.user.is_some()) {
        return Err(refuse("its pod has a user namespace, which this runtime does not checkpoint".into()));
    }
    let bundle_spec = record.bundle().join("config.json");
    let spec: oci_spec::runtime::Spec = std::fs::read(&bundle_spec)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| refuse(format!("its OCI spec {} cannot be read", bundle_spec.display())))?;
    if spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false) {
        return Err(refuse("it has a terminal (tty), which CRIU cannot take along".into()));
    }

    let scratch = record.run_dir.join(SCRATCH);
    let _ = crate::fstree::remove_tree(&scratch);
    let made = write_archive(containers, &record, &template, &spec, &scratch, &location, timeout);
    if let Err(e) = crate::fstree::remove_tree(&scratch) {
        tracing::warn!(container = %id, error = %e, "cannot remove the checkpoint's scratch directory");
    }
    let size = made?;
    tracing::info!(container = %id, archive = %location.display(), size, "container checkpointed");
    Ok(())
}

/// The kubelet's `location`: an absolute path to a file to write, in an existing directory.
fn archive_location(location: &str) -> Result<PathBuf, ContainerError> {
    let field = "location";
    if location.is_empty() {
        return Err(ContainerError::bad_field(field, "is empty"));
    }
    let path = PathBuf::from(location);
    if !path.is_absolute() {
        return Err(ContainerError::bad_field(field, format!("{location:?} is not an absolute path")));
    }
    if path.is_dir() {
        return Err(ContainerError::bad_field(field, format!("{location:?} is a directory, not the archive to write")));
    }
    if !path.parent().is_some_and(Path::is_dir) {
        return Err(ContainerError::bad_field(field, format!("the directory of {location:?} does not exist")));
    }
    Ok(path)
}

/// Dumps the container into `scratch` and packs it as the archive at `location`; its size.
fn write_archive(
    containers: &ContainerManager,
    record: &ContainerRecord,
    template: &model::ContainerStatus,
    spec: &oci_spec::runtime::Spec,
    scratch: &Path,
    location: &Path,
    timeout: Duration,
) -> Result<u64, ContainerError> {
    let id = record.id.as_str();
    let content = scratch.join("archive");
    let images = content.join(archive::IMAGES_DIR);
    let work = scratch.join("work");
    for dir in [&images, &work] {
        std::fs::create_dir_all(dir).map_err(|source| ContainerError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
    }
    let runtime = containers.runtime_of(record);
    let mut timer = crate::timing::StepTimer::new();
    runtime.checkpoint(id, &images, &work, timeout).map_err(ContainerError::runtime(id, "checkpoint"))?;
    timer.mark("dump");
    // CRIU's own figures (freezing and dump times), which checkpointctl shows.
    let _ = std::fs::copy(work.join(archive::STATS_DUMP), content.join(archive::STATS_DUMP));
    if let Some(log) = &record.log_path {
        let _ = std::fs::copy(log, content.join(archive::CONTAINER_LOG));
    }
    archive::write_json(&content, archive::SPEC_DUMP, spec).map_err(ContainerError::archive("write the spec dump"))?;
    archive::write_json(&content, archive::CONFIG_DUMP, &config_dump(record, template))
        .map_err(ContainerError::archive("write the config dump"))?;
    archive::write_rootfs_diff(&record.layer_dir.join("upper"), &content)
        .map_err(ContainerError::archive("archive the writable layer"))?;
    timer.mark("layer");
    let size = archive::pack(&content, location).map_err(ContainerError::archive("write the checkpoint archive"))?;
    timer.mark("pack");
    tracing::debug!(container = %id, steps = %timer, "CheckpointContainer step times");
    Ok(size)
}

fn config_dump(record: &ContainerRecord, template: &model::ContainerStatus) -> ConfigDump {
    let at = |nanos: i64| rfc3339_nano(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64));
    ConfigDump {
        id: record.id.clone(),
        name: record.name.clone(),
        rootfs_image: template.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
        rootfs_image_ref: template.image_id.clone(),
        rootfs_image_name: template.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
        oci_runtime: record.oci_handler.clone(),
        created_time: at(record.created_at),
        checkpointed_time: rfc3339_nano(SystemTime::now()),
    }
}
