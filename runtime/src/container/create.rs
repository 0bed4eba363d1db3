//! CreateContainer: validation, the kubelet's retries answered with the same id, then a
//! straight line of steps (record, image hold, rootfs, image volumes, spec, monitor), each
//! registering its undo, so that a failure at any step leaves nothing behind.
//! May touch: the container's record and directories, image holds, mounts, its monitor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockstep_cri::model;

use super::error::ContainerError;
use super::host;
use super::lifecycle;
use super::manager::ContainerManager;
use super::record::{ContainerRecord, RecordState};
use super::remove::remove_container;
use super::runtime::CreateRequest;
use super::signal::SIGKILL;
use super::spec::{self, ImageView, NamespaceSource, RuntimeSettings, SandboxView, SpecInput};
use super::{restore, rootfs, signal};
use crate::image::reference;
use crate::image::store::records::ImageRecord;
use crate::monitor::{ContainerDir, MonitorState};
use crate::sandbox::record::{SandboxRecord, SandboxState};
use crate::timing::now_nanos;
use crate::undo::Undo;

pub fn create_container(
    containers: &ContainerManager,
    request: &model::CreateContainerRequest,
) -> Result<String, ContainerError> {
    let config = request.config.as_ref().ok_or_else(|| ContainerError::bad_field("config", "is missing"))?;
    let metadata =
        config.metadata.as_ref().ok_or_else(|| ContainerError::bad_field("config.metadata", "is missing"))?;
    if metadata.name.is_empty() {
        return Err(ContainerError::bad_field("config.metadata.name", "is empty"));
    }
    let image_name = config.image.as_ref().map(|i| i.image.as_str()).unwrap_or_default();
    if image_name.is_empty() {
        return Err(ContainerError::bad_field("config.image.image", "is empty"));
    }
    let sandbox_id = &request.pod_sandbox_id;
    if !crate::ids::is_safe_id(sandbox_id) {
        return Err(ContainerError::bad_field("pod_sandbox_id", format!("{sandbox_id:?} is not a pod sandbox id")));
    }
    let sandbox =
        containers.sandboxes.get(sandbox_id).ok_or_else(|| ContainerError::NoSuchSandbox { id: sandbox_id.clone() })?;
    let pause_alive = sandbox.namespaces.pause.as_ref().is_none_or(crate::sandbox::pause::alive);
    if sandbox.state != SandboxState::Ready || !pause_alive || !containers.sandboxes.accepts_containers(sandbox_id) {
        return Err(ContainerError::SandboxNotReady {
            id: sandbox_id.clone(),
            problem: "the pod sandbox is not ready (stopped or broken)",
        });
    }

    let key = (sandbox_id.clone(), metadata.name.clone(), metadata.attempt);
    let reservation = containers.store.reservation(&key);
    let _reserved = reservation.lock();
    if let Some(found) = containers.store.named(&key) {
        // The kubelet retried a call that timed out: the container it asked for.
        tracing::info!(container = %found.id, name = %key.1, attempt = key.2, "CreateContainer retried: same id");
        return Ok(found.id);
    }

    let id = crate::ids::random_id().map_err(|source| ContainerError::Io {
        action: "make a container id from",
        path: PathBuf::from("/dev/urandom"),
        source,
    })?;
    let record = match restore::archive_named(image_name) {
        // CRI-O's way of restoring: the image is a checkpoint archive (CheckpointContainer's).
        Some(archive) => {
            let restored = restore::prepare(containers, &id, config, &archive);
            let (config, image, pending) = match restored {
                Ok(prepared) => prepared,
                Err(e) => {
                    let _ = rootfs::remove_dir(&containers.run_root.join(&id));
                    return Err(e);
                }
            };
            let shown = image.id.to_string();
            create_steps(containers, &id, &config, &sandbox, &image, &shown, Some(pending))?
        }
        None => {
            let image = resolve(containers, "config.image.image", image_name)?;
            create_steps(containers, &id, config, &sandbox, &image, image_name, None)?
        }
    };
    containers.store.insert(record.clone());
    // A StopPodSandbox or RemovePodSandbox that began meanwhile may have gone through the
    // pod's containers before this one was listed: it is taken back, not left in a stopped pod.
    if !containers.sandboxes.accepts_containers(sandbox_id) {
        if let Err(e) = remove_container(containers, &id) {
            tracing::warn!(container = %id, error = %e, "cannot take back a container of a pod being stopped");
        }
        return Err(ContainerError::SandboxNotReady {
            id: sandbox_id.clone(),
            problem: "the pod sandbox was stopped while the container was being created",
        });
    }
    containers.publish(model::ContainerEventType::ContainerCreatedEvent, &record);
    Ok(id)
}

/// The image `name` (field `field` of the request) names in the store.
pub(super) fn resolve(containers: &ContainerManager, field: &str, name: &str) -> Result<ImageRecord, ContainerError> {
    containers
        .images
        .resolve(name)
        .map_err(|e| ContainerError::bad_field(field, format!("{name:?}: {e}")))?
        .ok_or_else(|| ContainerError::ImageNotPresent { field: field.to_string(), image: name.to_string() })
}

fn create_steps(
    containers: &ContainerManager,
    id: &str,
    config: &model::ContainerConfig,
    sandbox: &SandboxRecord,
    image: &ImageRecord,
    image_name: &str,
    restore: Option<restore::Prepared>,
) -> Result<ContainerRecord, ContainerError> {
    let metadata = config.metadata.clone().unwrap_or_default();
    let run_dir = containers.run_root.join(id);
    let layer_dir = containers.layers_root.join(id);
    let runtime = containers.runtimes.for_new(&sandbox.oci_handler)?;
    let log_path = spec::log_file(&sandbox.log_directory, &config.log_path)?;
    let mut record = ContainerRecord {
        id: id.to_string(),
        sandbox_id: sandbox.id.clone(),
        name: metadata.name.clone(),
        attempt: metadata.attempt,
        state: RecordState::Creating,
        created_at: now_nanos(),
        started_at: 0,
        exit: None,
        oci_handler: sandbox.oci_handler.clone(),
        cgroup2_hidden: runtime.cgroup2_hidden().map(PathBuf::from),
        stop_signal: signal::DEFAULT_STOP_SIGNAL,
        init_pid: 0,
        run_dir: run_dir.clone(),
        layer_dir: layer_dir.clone(),
        log_path: log_path.clone(),
        // Named before they are taken (step 4), so that a crash in between leaves nothing held
        // that the rollback at the next start does not release (releasing is idempotent).
        volume_holds: config
            .mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| m.image.as_ref().is_some_and(|img| !img.image.is_empty()))
            .map(|(i, _)| volume_holder(id, i))
            .collect(),
        status_template: String::new(),
        restore: None,
    };

    let mut undo = Undo::new();
    let mut timer = crate::timing::StepTimer::new();
    // 1. The record first: a crash from here on is rolled back at the next start.
    containers.store.write(&record)?;
    let records = containers.store.records().clone();
    let record_id = id.to_string();
    undo.push("remove the container record", move || records.remove(&record_id).map_err(|e| e.to_string()));
    timer.mark("record");

    // 2. The image's layers, held against removal.
    let held = hold(containers, id, &image.id.to_string())?;
    push_release(containers, &mut undo, id.to_string());
    timer.mark("hold");

    // 3. The rootfs: the layers under a writable one; directories swept on failure.
    let (swept_run, swept_layer) = (run_dir.clone(), layer_dir.clone());
    undo.push("remove the container's directories", move || {
        rootfs::remove_dir(&swept_run).map_err(|e| e.to_string())?;
        rootfs::remove_dir(&swept_layer).map_err(|e| e.to_string())
    });
    // A pod with its own user namespace: the image's layers idmapped by it, and the way to
    // the rootfs and the volumes open for search (not listing) to the OCI runtime, which
    // resolves them from inside the namespace (as CRI-O's makeAccessible; RunPodSandbox opened
    // the way to the pod's files).
    let staging = run_dir.join("idmapped");
    let idmap = sandbox.namespaces.user.as_ref().map(|u| rootfs::Idmap {
        userns: &u.path,
        root: u.mappings.root(),
        staging: &staging,
    });
    // The run directory is lockstepd's alone (0700: a mounted rootfs holds setuid binaries),
    // whatever `containers/` allows once a user namespace pod opened it for search.
    crate::persist::restrict_dir(&run_dir, 0o700).map_err(ContainerError::record(id, "create the run directory of"))?;
    if idmap.is_some() {
        crate::host::idmap::make_traversable(&run_dir)
            .map_err(|e| ContainerError::rootfs(id, "open the way to the rootfs")(e.into()))?;
    }
    if let Some(restore) = &restore {
        // The checkpointed container's writable layer, before the overlay is mounted on it.
        restore::fill_writable_layer(restore, &layer_dir.join("upper"))?;
    }
    rootfs::mount_rootfs(&held.layer_dirs, &layer_dir, &record.rootfs(), idmap.as_ref())
        .map_err(ContainerError::rootfs(id, "mount the rootfs"))?;
    timer.mark("rootfs");

    // 4. Image volumes (1.31+), each held and mounted read-only.
    let mut resolved_volumes = BTreeMap::new();
    for (i, m) in config.mounts.iter().enumerate() {
        let Some(volume) = m.image.as_ref().filter(|img| !img.image.is_empty()) else { continue };
        let volume_image = resolve(containers, &format!("config.mounts[{i}].image.image"), &volume.image)?;
        let holder = volume_holder(id, i);
        let held = hold(containers, &holder, &volume_image.id.to_string())?;
        push_release(containers, &mut undo, holder);
        let target = run_dir.join("volumes").join(i.to_string());
        rootfs::mount_image_readonly(&held.layer_dirs, &target, idmap.as_ref())
            .map_err(ContainerError::rootfs(id, "mount an image volume"))?;
        resolved_volumes.insert(volume.image.clone(), target);
    }

    // 5. The spec: what the host says, then the pure builder.
    let run = &image.config.config;
    let image_view = ImageView {
        name: image_name.to_string(),
        entrypoint: run.entrypoint.clone().unwrap_or_default(),
        cmd: run.cmd.clone().unwrap_or_default(),
        env: run.env.clone().unwrap_or_default(),
        working_dir: run.working_dir.clone(),
        user: run.user.clone(),
        stop_signal: run.stop_signal.clone(),
        rootfs: record.rootfs(),
    };
    let mut resolved = host::resolve(config, &record.rootfs(), &run.user)?;
    resolved.image_sub_paths = host::resolve_image_sub_paths(config, &resolved_volumes)?;
    resolved.image_volumes = resolved_volumes;
    // Host paths the kubelet asks to be idmapped (the volumes of a `hostUsers: false` pod):
    // an idmapped copy of each under the run directory, which the spec mounts instead.
    let view = sandbox_view(sandbox);
    for (i, m) in config.mounts.iter().enumerate() {
        let (true, Some(userns)) = (spec::idmapped_mount(m, i, &view)?, &sandbox.namespaces.user) else { continue };
        let copy = run_dir.join("idmapped-mounts").join(i.to_string());
        rootfs::mount_idmapped_copy(Path::new(&m.host_path), &copy, &userns.path)
            .map_err(ContainerError::rootfs(id, "idmap a mount's host path"))?;
        resolved.idmapped_mounts.insert(i, copy);
    }
    resolved.target_pid_namespace = target_pid_namespace(containers, config, &sandbox.id)?;
    let settings = {
        let handlers = containers.info.handlers();
        let features = handlers.get(&sandbox.oci_handler).map(|h| h.features).unwrap_or_default();
        let config = containers.info.config();
        RuntimeSettings {
            seccomp_default_when_empty: config.runtime.seccomp_use_default_when_empty,
            allowed_annotations: config.runtime.allowed_annotations.clone(),
            ..RuntimeSettings::new(config.cgroup_driver, features, containers.host.clone())
        }
    };
    let built = spec::build(&SpecInput {
        id,
        config,
        sandbox: &view,
        image: &image_view,
        runtime: &settings,
        resolved: &resolved,
    })?;
    for warning in &built.warnings {
        tracing::warn!(container = %id, %warning, "CreateContainer honoured a request only in part");
    }
    record.stop_signal = built.stop_signal;
    let bundle = record.bundle();
    let spec_path = bundle.join("config.json");
    let spec_bytes = serde_json::to_vec_pretty(&built.spec).map_err(|e| ContainerError::Io {
        action: "encode the OCI spec for",
        path: spec_path.clone(),
        source: std::io::Error::other(e),
    })?;
    // Not fsynced: the bundle is needed only until the runtime's create has read it, and a
    // crash before that leaves a `creating` record, which recovery rolls back.
    std::fs::create_dir_all(&bundle)
        .and_then(|()| std::fs::write(&spec_path, &spec_bytes))
        .map_err(|source| ContainerError::Io { action: "write", path: spec_path, source })?;
    record.set_template(&status_template(config, image, image_name, &built, log_path.as_deref()));
    timer.mark("spec");

    // 6. The monitor, which runs the runtime's create. Its undo kills, waits, deletes. A
    // restore has none until StartContainer: its processes come back only then.
    match restore {
        Some(restore) => record.restore = Some(restore.pending),
        None => {
            let dir = ContainerDir::new(&run_dir);
            let (undo_runtime, undo_dir, undo_id) = (runtime.clone(), dir.clone(), id.to_string());
            undo.push("kill and delete the container", move || {
                let _ = undo_runtime.signal(&undo_id, SIGKILL, true);
                if matches!(undo_runtime.watch(&undo_dir), Ok(MonitorState::Running { .. })) {
                    let _ = undo_runtime.wait_exit(&undo_dir, &undo_id, lifecycle::KILL_WAIT);
                }
                undo_runtime.delete(&undo_id).map_err(|e| e.to_string())
            });
            let request = CreateRequest {
                container_id: id.to_string(),
                bundle,
                log_path,
                tty: config.tty,
                stdin: config.stdin,
                stdin_once: config.stdin_once,
                restore: None,
            };
            let spawned = runtime.create(&dir, &request).map_err(ContainerError::monitor(id, "create"))?;
            record.init_pid = spawned.init_pid;
            timer.mark("monitor");
        }
    }

    // 7. Created, on disk before the answer.
    record.state = RecordState::Created;
    containers.store.write(&record)?;
    undo.disarm();
    timer.mark("created");
    tracing::debug!(container = %id, steps = %timer, "CreateContainer step times");
    tracing::info!(container = %id, sandbox = %sandbox.id, name = %record.name, attempt = record.attempt,
        from_checkpoint = record.restore.is_some(), "container created");
    Ok(record)
}

fn hold(
    containers: &ContainerManager,
    holder: &str,
    image_id: &str,
) -> Result<crate::image::service::HeldImage, ContainerError> {
    containers.images.hold(holder, image_id).map_err(|source| match source {
        crate::image::service::ImageError::NotFound(_) => ContainerError::ImageRemoved { image: image_id.to_string() },
        source => ContainerError::Image { action: "hold", image: image_id.to_string(), source: Box::new(source) },
    })
}

fn push_release(containers: &ContainerManager, undo: &mut Undo, holder: String) {
    let images = containers.images.clone();
    undo.push("release the image hold", move || images.release(&holder).map_err(|e| e.to_string()));
}

/// The pid namespace of namespace_options.target_id: a container of the same pod only.
fn target_pid_namespace(
    containers: &ContainerManager,
    config: &model::ContainerConfig,
    sandbox_id: &str,
) -> Result<Option<PathBuf>, ContainerError> {
    let options =
        config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.as_ref());
    let Some(options) = options.filter(|o| o.pid == model::NamespaceMode::Target as i32) else {
        return Ok(None);
    };
    let field = "config.linux.security_context.namespace_options.target_id";
    let target = containers
        .store
        .get(&options.target_id)
        .map(|e| containers.refresh(&e))
        .ok_or_else(|| ContainerError::NoSuchTarget { field: field.to_string(), id: options.target_id.clone() })?;
    if target.sandbox_id != sandbox_id {
        return Err(ContainerError::bad_field(
            field,
            format!("container {:?} is not in pod sandbox {sandbox_id:?}", options.target_id),
        ));
    }
    if !matches!(target.state, RecordState::Created | RecordState::Running) || target.init_pid <= 0 {
        return Err(ContainerError::WrongState {
            id: options.target_id.clone(),
            state: "not running",
            requirement: "a target pid namespace must be a running container's (config.linux.security_context.namespace_options.target_id)",
        });
    }
    Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", target.init_pid))))
}

/// What the spec builder needs of the sandbox.
fn sandbox_view(sandbox: &SandboxRecord) -> SandboxView {
    let source = |path: &Option<PathBuf>| match path {
        Some(p) => NamespaceSource::Join(p.clone()),
        None => NamespaceSource::Host,
    };
    SandboxView {
        id: sandbox.id.clone(),
        pod_name: sandbox.metadata.name.clone(),
        pod_namespace: sandbox.metadata.namespace.clone(),
        pod_uid: sandbox.metadata.uid.clone(),
        hostname: sandbox.hostname.clone(),
        network: source(&sandbox.namespaces.network),
        ipc: source(&sandbox.namespaces.ipc),
        uts: source(&sandbox.namespaces.uts),
        pod_pid: sandbox.namespaces.pid_path(),
        user: sandbox.namespaces.user.as_ref().map(|u| (u.path.clone(), u.mappings)),
        resolv_conf: Some(sandbox.files.resolv_conf.clone()),
        hosts: Some(sandbox.files.hosts.clone()),
        hostname_file: Some(sandbox.files.hostname.clone()),
        shm: Some(sandbox.files.shm.clone()),
        cgroup_parent: sandbox.cgroup_parent.clone(),
        privileged: sandbox.security.privileged,
    }
}

/// The status fields fixed at creation.
fn status_template(
    config: &model::ContainerConfig,
    image: &ImageRecord,
    requested: &str,
    built: &spec::BuiltSpec,
    log_path: Option<&Path>,
) -> model::ContainerStatus {
    // The kubelet creates containers by image ID; it shows the name, as containerd gives it.
    let shown = if reference::parse_image_id(requested).is_some() {
        image.repo_tags.first().cloned().unwrap_or_else(|| requested.to_string())
    } else {
        requested.to_string()
    };
    let image_id = image.id.to_string();
    let image_ref = image.repo_digests.first().cloned().unwrap_or_else(|| image_id.clone());
    let given = config.image.clone().unwrap_or_default();
    model::ContainerStatus {
        metadata: config.metadata.clone(),
        image: Some(model::ImageSpec { image: shown, image_ref: image_ref.clone(), ..given }),
        image_ref,
        image_id,
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        mounts: config.mounts.clone(),
        log_path: log_path.map(|p| p.display().to_string()).unwrap_or_default(),
        resources: Some(model::ContainerResources {
            linux: config.linux.as_ref().and_then(|l| l.resources.clone()),
            windows: None,
        }),
        user: Some(built.user.to_cri()),
        stop_signal: signal::to_cri(built.stop_signal) as i32,
        ..Default::default()
    }
}

/// The name of the image hold of a container's image volume mount `index`.
fn volume_holder(id: &str, index: usize) -> String {
    format!("{id}-v{index}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reference::Digest;
    use crate::image::registry::manifest::{ImageConfig, RootFs};

    fn image() -> ImageRecord {
        let id = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        ImageRecord {
            id: id.clone(),
            repo_tags: vec!["registry.test/shop/web:1".into()],
            repo_digests: vec![format!("registry.test/shop/web@sha256:{}", "b".repeat(64))],
            manifest: id,
            config: ImageConfig {
                architecture: "amd64".into(),
                os: "linux".into(),
                created: None,
                config: Default::default(),
                rootfs: RootFs { kind: "layers".into(), diff_ids: vec![] },
            },
            layers: vec![],
            size: 1,
            pulled_at: 0,
        }
    }

    fn built(stop_signal: i32) -> spec::BuiltSpec {
        spec::BuiltSpec {
            spec: Default::default(),
            stop_signal,
            user: super::super::user::ResolvedUser { uid: 7, gid: 8, additional_gids: vec![8, 9] },
            warnings: vec![],
        }
    }

    #[test]
    fn the_template_names_the_image_as_the_kubelet_shows_it() {
        let image = image();
        let config = model::ContainerConfig {
            metadata: Some(model::ContainerMetadata { name: "web".into(), attempt: 1 }),
            image: Some(model::ImageSpec {
                image: image.id.to_string(),
                user_specified_image: "shop/web:1".into(),
                ..Default::default()
            }),
            mounts: vec![model::Mount { container_path: "/data".into(), ..Default::default() }],
            ..Default::default()
        };
        // Created by ID, as the kubelet does: the status shows the tag, the digest and the ID.
        let t = status_template(&config, &image, &image.id.to_string(), &built(10), Some(Path::new("/logs/web/1.log")));
        let spec = t.image.unwrap();
        assert_eq!(spec.image, "registry.test/shop/web:1");
        assert_eq!(spec.user_specified_image, "shop/web:1");
        assert!(t.image_ref.starts_with("registry.test/shop/web@sha256:bbbb"), "{}", t.image_ref);
        assert_eq!(t.image_id, image.id.to_string());
        assert_eq!((t.log_path.as_str(), t.mounts.len()), ("/logs/web/1.log", 1));
        assert_eq!(t.stop_signal, model::Signal::Sigusr1 as i32);
        let user = t.user.unwrap().linux.unwrap();
        assert_eq!((user.uid, user.gid, user.supplemental_groups), (7, 8, vec![8, 9]));
        // Created by name: the name as given.
        let t = status_template(&config, &image, "shop/web:1", &built(15), None);
        assert_eq!(t.image.unwrap().image, "shop/web:1");
        assert_eq!((t.log_path.as_str(), t.stop_signal), ("", model::Signal::Sigterm as i32));
    }
}
