//! The container RPCs end to end over the store and a fake handler registry: no root, no
//! monitor, no OCI runtime. Start, stop (the stop signal ignored, a lost monitor), remove
//! (record, runtime state and name gone; idempotent), status and list after an exit, an OOM kill
//! counted once in lockstepd's metrics, and a container whose handler went away.

use std::path::Path;
use std::sync::Arc;

use lockstep_cri::{model, Minor};

use super::*;
use crate::config::{Config, Handler};
use crate::container::error::ContainerError;
use crate::container::lifecycle::fake::{exit, Fake};
use crate::container::record::{ContainerRecord, RecordState};
use crate::container::runtime::Monitored;
use crate::container::{remove, start, status, stop};
use crate::monitor::MonitorState;
use crate::oci::OciStatus;

/// Every container runs on one fake; `gone` makes every handler unrunnable instead.
struct FakeRuntimes {
    fake: Arc<Fake>,
    gone: bool,
}

impl Runtimes for FakeRuntimes {
    fn for_new(&self, _: &str) -> Result<Arc<dyn ContainerRuntime>, ContainerError> {
        Ok(self.fake.clone())
    }

    fn for_record(&self, record: &ContainerRecord) -> Arc<dyn ContainerRuntime> {
        if self.gone {
            return Arc::new(Monitored {
                handler: record.oci_handler.clone(),
                runtime: Err("is not configured".into()),
                monitor_binary: Err("not needed".into()),
                monitor_cgroups: Vec::new(),
            });
        }
        self.fake.clone()
    }
}

struct Bench {
    _tmp: tempfile::TempDir,
    containers: ContainerManager,
    fake: Arc<Fake>,
}

fn bench(monitor: MonitorState, oci: Option<OciStatus>, gone: bool) -> Bench {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config { root: tmp.path().join("root"), runroot: tmp.path().join("run"), ..Default::default() };
    config.network.cni_config_dir = tmp.path().join("net.d");
    config.network.cni_plugin_dirs = vec![tmp.path().join("bin")];
    config.runtime.handlers = vec![Handler { name: "fake".into(), path: "/nonexistent/fake-runtime".into() }];
    let info = Arc::new(RuntimeInfo::new(Minor::V1_36, config.clone()).unwrap());
    let sandboxes = SandboxManager::recover(info.clone()).unwrap();
    let images = Arc::new(ImageService::open(&config).unwrap());
    let fake = Arc::new(Fake::new(monitor, oci));
    let runtimes = Arc::new(FakeRuntimes { fake: fake.clone(), gone });
    let containers = ContainerManager::assemble(info, sandboxes, images, runtimes).unwrap();
    Bench { _tmp: tmp, containers, fake }
}

fn running() -> MonitorState {
    MonitorState::Running { monitor_pid: 1 }
}

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A container as CreateContainer leaves it (or further along), its record on disk.
fn held(bench: &Bench, state: RecordState, run_dir: &Path) -> ContainerRecord {
    let record = ContainerRecord::for_tests(ID, state, run_dir);
    bench.containers.store.write(&record).unwrap();
    bench.containers.store.insert(record.clone());
    record
}

fn state_of(bench: &Bench) -> (i32, i32) {
    let status = status::container_status(&bench.containers, ID, false).unwrap().status.unwrap();
    (status.state, status.exit_code)
}

#[test]
fn a_created_container_starts_once() {
    let bench = bench(running(), Some(OciStatus::Created), false);
    let dir = bench._tmp.path().join("c");
    held(&bench, RecordState::Created, &dir);

    start::start_container(&bench.containers, ID).unwrap();
    assert_eq!(state_of(&bench).0, model::ContainerState::ContainerRunning as i32);
    assert_eq!(bench.fake.world().oci, Some(OciStatus::Running));

    let again = start::start_container(&bench.containers, ID).unwrap_err();
    assert!(matches!(again, ContainerError::WrongState { state: "running", .. }), "{again}");
}

#[test]
fn a_stop_signal_not_heeded_is_followed_by_sigkill_and_the_exit_is_recorded() {
    let bench = bench(running(), Some(OciStatus::Running), false);
    held(&bench, RecordState::Running, &bench._tmp.path().join("c"));

    stop::stop_container(&bench.containers, ID, 5).unwrap();
    assert_eq!(bench.fake.world().signals, vec![(15, false), (9, true)]);
    assert_eq!(state_of(&bench), (model::ContainerState::ContainerExited as i32, 137));
    let on_disk = bench.containers.store.load().unwrap().records;
    assert_eq!(on_disk[0].1.state, RecordState::Exited, "the exit is on disk before StopContainer answers");

    stop::stop_container(&bench.containers, ID, 5).unwrap();
    assert_eq!(bench.fake.world().signals.len(), 2, "a second stop sends nothing");
}

#[test]
fn a_container_whose_monitor_is_lost_is_stopped_on_the_runtimes_word_without_sigkill() {
    let bench = bench(running(), Some(OciStatus::Running), false);
    held(&bench, RecordState::Running, &bench._tmp.path().join("c"));
    {
        let mut world = bench.fake.world();
        world.monitor = MonitorState::Lost;
        world.stops_after_queries = Some(2);
    }
    stop::stop_container(&bench.containers, ID, 5).unwrap();
    assert_eq!(bench.fake.world().signals, vec![(15, false)]);
    assert_eq!(state_of(&bench), (model::ContainerState::ContainerExited as i32, lifecycle::UNKNOWN_EXIT));
}

#[test]
fn stopping_an_unknown_container_succeeds_and_a_negative_timeout_is_refused() {
    let bench = bench(running(), None, false);
    stop::stop_container(&bench.containers, ID, 0).unwrap();
    let err = stop::stop_container(&bench.containers, ID, -1).unwrap_err();
    assert!(matches!(&err, ContainerError::BadField { field, .. } if field == "timeout"), "{err}");
}

#[test]
fn an_exit_seen_by_the_monitor_shows_in_list_and_status() {
    let bench = bench(exit(3), Some(OciStatus::Stopped), false);
    held(&bench, RecordState::Running, &bench._tmp.path().join("c"));
    let listed = status::list_containers(&bench.containers, None);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, model::ContainerState::ContainerExited as i32);
    assert_eq!(state_of(&bench).1, 3);
}

#[test]
fn removing_a_running_container_kills_it_deletes_it_and_frees_its_name_and_is_idempotent() {
    let bench = bench(running(), Some(OciStatus::Running), false);
    let dir = bench._tmp.path().join("c");
    std::fs::create_dir_all(&dir).unwrap();
    held(&bench, RecordState::Running, &dir);

    remove::remove_container(&bench.containers, ID).unwrap();
    assert_eq!(bench.fake.world().signals, vec![(9, true)]);
    assert_eq!(bench.fake.world().oci, None, "the runtime's state is deleted");
    assert!(!dir.exists(), "the container's directory is gone");
    assert!(bench.containers.store.get(ID).is_none());
    assert!(bench.containers.store.load().unwrap().records.is_empty());
    assert!(bench.containers.store.named(&("pod".into(), "app".into(), 0)).is_none());
    assert!(status::list_containers(&bench.containers, None).is_empty());

    remove::remove_container(&bench.containers, ID).unwrap();
    let gone = status::container_status(&bench.containers, ID, false).unwrap_err();
    assert!(matches!(gone, ContainerError::NoSuchContainer { .. }), "{gone}");
}

#[test]
fn a_container_whose_handler_went_away_cannot_start_but_can_be_removed() {
    let bench = bench(running(), None, true);
    let dir = bench._tmp.path().join("c");
    std::fs::create_dir_all(&dir).unwrap();
    held(&bench, RecordState::Created, &dir);

    let err = start::start_container(&bench.containers, ID).unwrap_err();
    assert!(matches!(err, ContainerError::HandlerUnavailable(_)), "{err}");
    assert!(err.to_string().contains("\"fake\": is not configured"), "{err}");

    remove::remove_container(&bench.containers, ID).unwrap();
    assert!(!dir.exists());
    assert!(bench.containers.store.get(ID).is_none());
}

fn kinds(events: &mut tokio::sync::mpsc::Receiver<model::ContainerEventResponse>) -> Vec<(String, i32, usize)> {
    std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| (e.container_id, e.container_event_type, e.containers_statuses.len()))
        .collect()
}

#[test]
fn subscribers_see_start_stop_and_remove_in_order_with_the_pods_statuses() {
    let bench = bench(running(), Some(OciStatus::Created), false);
    held(&bench, RecordState::Created, &bench._tmp.path().join("c"));
    let mut events = bench.containers.subscribe();

    start::start_container(&bench.containers, ID).unwrap();
    stop::stop_container(&bench.containers, ID, 0).unwrap();
    stop::stop_container(&bench.containers, ID, 0).unwrap();
    remove::remove_container(&bench.containers, ID).unwrap();
    use model::ContainerEventType as Kind;
    assert_eq!(
        kinds(&mut events),
        vec![
            (ID.into(), Kind::ContainerStartedEvent as i32, 1),
            (ID.into(), Kind::ContainerStoppedEvent as i32, 1),
            (ID.into(), Kind::ContainerDeletedEvent as i32, 0),
        ],
        "one STOPPED for two stops; the DELETED event no longer lists the container"
    );
}

#[test]
fn an_exit_while_lockstepd_was_down_is_the_first_subscribers_first_event() {
    let bench = bench(exit(3), Some(OciStatus::Stopped), false);
    let record = held(&bench, RecordState::Running, &bench._tmp.path().join("c"));
    bench.containers.store.hold_all(Default::default());
    assert!(bench.containers.store.load().unwrap().records.iter().any(|(id, _)| id == &record.id));

    crate::container::recovery::recover(&bench.containers).unwrap();
    let mut first = bench.containers.subscribe();
    let mut second = bench.containers.subscribe();
    let got = std::iter::from_fn(|| first.try_recv().ok()).collect::<Vec<_>>();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].container_event_type, model::ContainerEventType::ContainerStoppedEvent as i32);
    assert_eq!(got[0].containers_statuses[0].exit_code, 3);
    assert!(second.try_recv().is_err(), "the backlog goes to the first subscriber only");
}

#[test]
fn an_oom_kill_is_counted_once_in_the_metrics_and_the_census_sees_the_exit() {
    let oom = crate::monitor::ExitRecord { exit_code: 137, signal: Some(9), exited_at_ns: 42, oom_killed: true };
    let bench = bench(MonitorState::Exited(oom), Some(OciStatus::Stopped), false);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    bench.containers.set_metrics(metrics.clone());
    held(&bench, RecordState::Running, &bench._tmp.path().join("c"));
    assert_eq!(bench.containers.census(), vec![("running", 1)], "as recorded, before anyone looked");
    for _ in 0..2 {
        status::list_containers(&bench.containers, None);
    }
    let text = metrics.encode();
    assert!(text.contains("container_runtime_lockstep_containers_oom_total 1\n"), "{text}");
    assert_eq!(bench.containers.census(), vec![("exited", 1)]);
}
