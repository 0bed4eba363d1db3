//! The pod sandbox state rules over the store, without root and without namespaces: a
//! kubelet retry of RunPodSandbox gets the ready sandbox back and a not-ready one is refused;
//! READY holds only while the pause process lives; StopPodSandbox closes the pod to new
//! containers and is idempotent; RemovePodSandbox forgets it and is idempotent.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use lockstep_cri::{model, Minor};

use super::error::SandboxError;
use super::manager::SandboxManager;
use super::record::{
    Metadata, NamespaceModes, Namespaces, NetworkState, PauseProcess, PidMode, SandboxFiles, SandboxRecord,
    SandboxState,
};
use super::validate::tests::request;
use super::{remove, run, status, stop, validate};
use crate::config::{CgroupDriver, Config, Handler};
use crate::info::RuntimeInfo;

fn manager(tmp: &Path) -> Arc<SandboxManager> {
    let mut config = Config { root: tmp.join("root"), runroot: tmp.join("run"), ..Default::default() };
    config.network.cni_config_dir = tmp.join("net.d");
    config.network.cni_plugin_dirs = vec![tmp.join("bin")];
    config.runtime.handlers = vec![Handler { name: "fake".into(), path: "/nonexistent/fake-runtime".into() }];
    SandboxManager::recover(Arc::new(RuntimeInfo::new(Minor::V1_36, config).unwrap())).unwrap()
}

const ID: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// A sandbox with host namespaces and no pause: nothing of the node to release.
fn held(sandboxes: &SandboxManager, tmp: &Path, state: SandboxState) -> SandboxRecord {
    let dir = tmp.join("run/sandboxes").join(ID);
    std::fs::create_dir_all(&dir).unwrap();
    let record = SandboxRecord {
        id: ID.into(),
        state,
        created_at: 1,
        metadata: Metadata { name: "web".into(), uid: "u1".into(), namespace: "default".into(), attempt: 0 },
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        runtime_handler: String::new(),
        oci_handler: "fake".into(),
        hostname: "web".into(),
        log_directory: String::new(),
        cgroup_parent: String::new(),
        dns: None,
        port_mappings: Vec::new(),
        sysctls: BTreeMap::new(),
        security: Default::default(),
        namespace_modes: NamespaceModes::default(),
        namespaces: Namespaces {
            network: None,
            ipc: None,
            uts: None,
            pid_mode: PidMode::Node,
            pause: None,
            user: None,
        },
        files: SandboxFiles {
            hostname: dir.join("hostname"),
            resolv_conf: dir.join("resolv.conf"),
            hosts: dir.join("hosts"),
            shm: "/dev/shm".into(),
            dir,
        },
        pause_cgroups: Vec::new(),
        network: NetworkState::default(),
        problem: None,
        resources: None,
    };
    sandboxes.store.write(&record).unwrap();
    sandboxes.store.insert(record.clone());
    record
}

fn state(sandboxes: &SandboxManager) -> i32 {
    status::pod_sandbox_status(sandboxes, ID, false).unwrap().status.unwrap().state
}

#[test]
fn a_retried_run_gets_the_ready_sandbox_and_a_stopped_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let sandboxes = manager(tmp.path());
    held(&sandboxes, tmp.path(), SandboxState::Ready);
    let request = request();
    let plan = || validate::plan(&request, CgroupDriver::Cgroupfs).unwrap();

    let again = run::find_or_create(&sandboxes, plan(), &request, "fake".into()).unwrap();
    assert_eq!(again, ID);

    stop::stop_pod_sandbox(&sandboxes, ID).unwrap();
    let refused = run::find_or_create(&sandboxes, plan(), &request, "fake".into()).unwrap_err();
    assert!(matches!(refused, SandboxError::Exists { ref id, .. } if id == ID), "{refused}");
    assert!(refused.to_string().contains("raise config.metadata.attempt"), "{refused}");
}

#[test]
fn a_sandbox_is_ready_only_while_its_pause_lives() {
    let tmp = tempfile::tempdir().unwrap();
    let sandboxes = manager(tmp.path());
    let mut record = held(&sandboxes, tmp.path(), SandboxState::Ready);
    assert_eq!(state(&sandboxes), model::PodSandboxState::SandboxReady as i32);

    record.namespaces.pause = Some(PauseProcess { pid: i32::MAX, start_time: 1, boot_id: String::new() });
    let entry = sandboxes.store.get(ID).unwrap();
    sandboxes.store.save(&entry, record).unwrap();
    assert_eq!(state(&sandboxes), model::PodSandboxState::SandboxNotready as i32);
    let listed = status::list_pod_sandboxes(&sandboxes, None);
    assert_eq!(listed[0].state, model::PodSandboxState::SandboxNotready as i32);
}

#[test]
fn a_stopped_sandbox_takes_no_containers_and_stopping_again_or_an_unknown_one_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let sandboxes = manager(tmp.path());
    held(&sandboxes, tmp.path(), SandboxState::Ready);
    assert!(sandboxes.accepts_containers(ID));

    stop::stop_pod_sandbox(&sandboxes, ID).unwrap();
    assert!(!sandboxes.accepts_containers(ID));
    assert_eq!(state(&sandboxes), model::PodSandboxState::SandboxNotready as i32);
    let on_disk = sandboxes.store.load().unwrap().records;
    assert_eq!(on_disk[0].1.state, SandboxState::NotReady, "the stop is on disk before it answers");

    stop::stop_pod_sandbox(&sandboxes, ID).unwrap();
    stop::stop_pod_sandbox(&sandboxes, &"0".repeat(64)).unwrap();
}

#[test]
fn a_removed_sandbox_is_forgotten_with_its_directory_and_removing_again_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let sandboxes = manager(tmp.path());
    let record = held(&sandboxes, tmp.path(), SandboxState::Ready);

    remove::remove_pod_sandbox(&sandboxes, ID).unwrap();
    assert!(!record.files.dir.exists());
    assert!(sandboxes.store.load().unwrap().records.is_empty());
    assert!(status::list_pod_sandboxes(&sandboxes, None).is_empty());
    let gone = status::pod_sandbox_status(&sandboxes, ID, false).unwrap_err();
    assert!(matches!(gone, SandboxError::NoSuchSandbox { .. }), "{gone}");
    assert!(!sandboxes.accepts_containers(ID));

    remove::remove_pod_sandbox(&sandboxes, ID).unwrap();
}

#[test]
fn resized_resources_are_kept_on_disk_and_a_removed_pod_takes_none() {
    let tmp = tempfile::tempdir().unwrap();
    let sandboxes = manager(tmp.path());
    held(&sandboxes, tmp.path(), SandboxState::Ready);
    let update = super::record::PodResources { updated_at: 7, ..Default::default() };
    super::resize::record_resources(&sandboxes, ID, update.clone()).unwrap();
    let on_disk = sandboxes.store.load().unwrap().records;
    assert_eq!(on_disk[0].1.resources, Some(update.clone()));

    remove::remove_pod_sandbox(&sandboxes, ID).unwrap();
    let gone = super::resize::record_resources(&sandboxes, ID, update).unwrap_err();
    assert!(matches!(gone, SandboxError::NoSuchSandbox { .. }), "{gone}");
}
