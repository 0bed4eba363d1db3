//! The container lifecycle's rules: what a recorded container has come to, judged from what its
//! monitor and its OCI runtime say through the `ContainerRuntime` seam — on every read
//! (`observe`), after a lockstepd restart (`recover`), and after a kill (`wait_killed`). No
//! records are written here and nothing but the runtime is touched, so every rule is tested
//! without root against a fake runtime (crashes at each step, a lost monitor, exits while
//! lockstepd was down).

use std::time::{Duration, Instant};

use super::record::{ContainerRecord, ExitInfo, RecordState};
use super::runtime::ContainerRuntime;
use crate::monitor::{ContainerDir, ExitRecord, MonitorError, MonitorState};
use crate::oci::OciStatus;
use crate::timing::now_nanos;

/// The exit code recorded for a container whose monitor was lost before it exited.
pub const UNKNOWN_EXIT: i32 = 255;
/// How long a SIGKILLed container may take to be reaped and recorded.
pub const KILL_WAIT: Duration = Duration::from_secs(30);

/// What a created or running container has come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// As recorded (still created or running, or not a live state at all).
    Unchanged,
    /// It exited: record this.
    Exited(ExitInfo),
}

/// What the record of a live container should say now. A lost monitor's container is taken
/// as exited only on the runtime's word; a monitor that cannot be read changes nothing (it is
/// read again next time).
pub fn observe(record: &ContainerRecord, runtime: &dyn ContainerRuntime) -> Observed {
    if !matches!(record.state, RecordState::Created | RecordState::Running) {
        return Observed::Unchanged;
    }
    match runtime.watch(&ContainerDir::new(&record.run_dir)) {
        Ok(MonitorState::Running { .. }) => Observed::Unchanged,
        Ok(MonitorState::Exited(exit)) => Observed::Exited(exit_info(&exit)),
        // A checkpoint waiting for its StartContainer has no monitor yet.
        Ok(MonitorState::Lost) if record.restore.is_some() => Observed::Unchanged,
        Ok(MonitorState::Lost) if runtime_says_stopped(runtime, &record.id) => {
            Observed::Exited(lost_exit(UNKNOWN_EXIT))
        }
        Ok(MonitorState::Lost) => Observed::Unchanged,
        Err(e) => {
            tracing::warn!(container = %record.id, error = %e, "cannot read the monitor's state");
            Observed::Unchanged
        }
    }
}

/// Whether the OCI runtime says the container has stopped or is gone. Only its word counts:
/// a failed query (a transient fork failure) says no, and is asked again later.
pub fn runtime_says_stopped(runtime: &dyn ContainerRuntime, id: &str) -> bool {
    runtime
        .oci_state(id)
        .is_ok_and(|state| state.is_none_or(|s| !matches!(s.status, OciStatus::Running | OciStatus::Created)))
}

/// What recovery does with a record after a lockstepd restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Keep it as recorded.
    Keep,
    /// A creation or removal that a crash cut short: tear everything down and forget it.
    TearDown,
    /// It exited while lockstepd was down.
    Exited(ExitInfo),
    /// Recorded as created, but a start cut short by the crash had run it: running from now.
    Started,
}

pub fn recover(record: &ContainerRecord, runtime: &dyn ContainerRuntime) -> Recovery {
    match record.state {
        RecordState::Creating | RecordState::Removing => Recovery::TearDown,
        RecordState::Exited => Recovery::Keep,
        RecordState::Created | RecordState::Running => match runtime.watch(&ContainerDir::new(&record.run_dir)) {
            Ok(MonitorState::Running { .. }) => {
                let started = record.state == RecordState::Created
                    && runtime.oci_state(&record.id).ok().flatten().is_some_and(|s| s.status == OciStatus::Running);
                if started {
                    Recovery::Started
                } else {
                    Recovery::Keep
                }
            }
            Ok(MonitorState::Exited(exit)) => Recovery::Exited(exit_info(&exit)),
            Ok(MonitorState::Lost) if record.restore.is_some() => Recovery::Keep,
            Ok(MonitorState::Lost) | Err(_) => {
                if runtime_says_stopped(runtime, &record.id) {
                    Recovery::Exited(lost_exit(UNKNOWN_EXIT))
                } else {
                    tracing::warn!(container = %record.id, "the container runs without its monitor: its output is lost");
                    Recovery::Keep
                }
            }
        },
    }
}

/// Why a stopped container's exit could not be had.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("container {0} survived SIGKILL")]
    Survived(String),
    #[error("container {id} did not exit after SIGKILL: {source}")]
    Monitor { id: String, source: MonitorError },
    #[error("cannot ask the OCI runtime about container {id}: {source}")]
    Runtime { id: String, source: crate::oci::OciError },
}

/// After SIGKILL: the monitor's record, or (monitor lost) the runtime's word that it stopped.
pub fn wait_killed(runtime: &dyn ContainerRuntime, record: &ContainerRecord) -> Result<ExitInfo, WaitError> {
    let id = record.id.as_str();
    match runtime.wait_exit(&ContainerDir::new(&record.run_dir), id, KILL_WAIT) {
        Ok(exit) => Ok(exit_info(&exit)),
        Err(MonitorError::Lost { .. }) => {
            if stopped_within(runtime, id, KILL_WAIT)? {
                Ok(lost_exit(128 + super::signal::SIGKILL))
            } else {
                Err(WaitError::Survived(id.to_string()))
            }
        }
        Err(source) => Err(WaitError::Monitor { id: id.to_string(), source }),
    }
}

/// Whether the OCI runtime reports the container stopped (or gone) within `timeout`: how an
/// exit is learned when the container's monitor is lost.
pub fn stopped_within(runtime: &dyn ContainerRuntime, id: &str, timeout: Duration) -> Result<bool, WaitError> {
    let deadline = Instant::now() + timeout;
    // Each look runs the runtime: often at first, then at most five a second for long graces.
    let mut pause = Duration::from_millis(20);
    loop {
        let state = runtime.oci_state(id).map_err(|source| WaitError::Runtime { id: id.to_string(), source })?;
        if state.is_none_or(|s| s.status == OciStatus::Stopped) {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// An exit as the monitor recorded it.
pub fn exit_info(exit: &ExitRecord) -> ExitInfo {
    ExitInfo {
        exit_code: exit.exit_code,
        finished_at: exit.exited_at_ns,
        oom_killed: exit.oom_killed,
        message: String::new(),
    }
}

/// An exit whose code nobody recorded: the monitor was killed.
pub fn lost_exit(code: i32) -> ExitInfo {
    ExitInfo {
        exit_code: code,
        finished_at: now_nanos(),
        oom_killed: false,
        message: "the container's monitor was lost; its real exit code is unknown".into(),
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A container runtime in memory: the monitor's and the OCI runtime's answers are set by
    //! the test, and change as signals arrive, as a real container's would.

    use std::path::Path;
    use std::sync::Mutex;
    use std::time::Duration;

    use oci_spec::runtime::{LinuxResources, Process};

    use crate::container::runtime::{ContainerRuntime, CreateRequest};
    use crate::monitor::{ContainerDir, ExitRecord, MonitorError, MonitorState, Spawned};
    use crate::oci::{ExecOutcome, OciError, OciState, OciStatus};

    #[derive(Debug, Clone)]
    pub struct World {
        /// What the monitor says.
        pub monitor: MonitorState,
        /// What the OCI runtime says; None: it does not know the container.
        pub oci: Option<OciStatus>,
        /// The OCI runtime cannot be asked (a fork failure).
        pub oci_fails: bool,
        /// The OCI runtime reports Stopped after this many more state queries.
        pub stops_after_queries: Option<u32>,
        /// A SIGKILL ends the container, recorded by the monitor unless it is lost.
        pub killable: bool,
        pub signals: Vec<(i32, bool)>,
        pub oci_queries: u32,
    }

    pub struct Fake(pub Mutex<World>);

    impl Fake {
        pub fn new(monitor: MonitorState, oci: Option<OciStatus>) -> Fake {
            Fake(Mutex::new(World {
                monitor,
                oci,
                oci_fails: false,
                stops_after_queries: None,
                killable: true,
                signals: Vec::new(),
                oci_queries: 0,
            }))
        }
        pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
            self.0.lock().unwrap()
        }
    }

    pub fn exit(code: i32) -> MonitorState {
        MonitorState::Exited(ExitRecord { exit_code: code, signal: None, exited_at_ns: 42, oom_killed: false })
    }

    impl ContainerRuntime for Fake {
        fn handler(&self) -> &str {
            "fake"
        }
        fn cgroup2_hidden(&self) -> Option<&Path> {
            None
        }
        fn create(&self, _: &ContainerDir, _: &CreateRequest) -> Result<Spawned, MonitorError> {
            Ok(Spawned { monitor_pid: 1, init_pid: 2 })
        }
        fn start(&self, _: &str) -> Result<(), OciError> {
            self.world().oci = Some(OciStatus::Running);
            Ok(())
        }
        fn signal(&self, _: &str, signal: i32, all: bool) -> Result<(), OciError> {
            let mut world = self.world();
            world.signals.push((signal, all));
            if signal == 9 && world.killable {
                world.oci = Some(OciStatus::Stopped);
                if !matches!(world.monitor, MonitorState::Lost) {
                    world.monitor = exit(137);
                }
            }
            Ok(())
        }
        fn watch(&self, _: &ContainerDir) -> Result<MonitorState, MonitorError> {
            Ok(self.world().monitor.clone())
        }
        fn wait_exit(&self, dir: &ContainerDir, id: &str, timeout: Duration) -> Result<ExitRecord, MonitorError> {
            match self.world().monitor.clone() {
                MonitorState::Exited(exit) => Ok(exit),
                MonitorState::Lost => Err(MonitorError::Lost { id: id.into(), log: dir.monitor_log() }),
                MonitorState::Running { .. } => Err(MonitorError::ExitTimeout { id: id.into(), waited: timeout }),
            }
        }
        fn oci_state(&self, id: &str) -> Result<Option<OciState>, OciError> {
            let mut world = self.world();
            world.oci_queries += 1;
            if world.oci_fails {
                return Err(OciError::Failed {
                    handler: "fake".into(),
                    op: "state",
                    id: id.into(),
                    message: "fork".into(),
                });
            }
            if let Some(n) = world.stops_after_queries {
                if n == 0 {
                    world.oci = Some(OciStatus::Stopped);
                } else {
                    world.stops_after_queries = Some(n - 1);
                }
            }
            Ok(world.oci.map(|status| OciState { id: id.into(), status, pid: 2, bundle: Default::default() }))
        }
        fn delete(&self, _: &str) -> Result<(), OciError> {
            self.world().oci = None;
            Ok(())
        }
        fn exec(&self, id: &str, _: &Process, _: Option<Duration>) -> Result<ExecOutcome, OciError> {
            Err(OciError::NotRunning { handler: "fake".into(), id: id.into() })
        }
        fn update(&self, _: &str, _: &LinuxResources) -> Result<(), OciError> {
            Ok(())
        }
        fn reopen_log(&self, _: &ContainerDir) -> Result<(), MonitorError> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{exit, Fake};
    use super::*;

    fn record(state: RecordState) -> ContainerRecord {
        ContainerRecord::for_tests("c1", state, std::path::Path::new("/nonexistent/run/c1"))
    }

    const RUNNING: MonitorState = MonitorState::Running { monitor_pid: 1 };

    #[test]
    fn a_live_container_is_as_its_monitor_says() {
        let fake = Fake::new(RUNNING, Some(OciStatus::Running));
        assert_eq!(observe(&record(RecordState::Running), &fake), Observed::Unchanged);
        fake.world().monitor = exit(3);
        match observe(&record(RecordState::Running), &fake) {
            Observed::Exited(e) => assert_eq!((e.exit_code, e.finished_at, e.message.as_str()), (3, 42, "")),
            other => panic!("{other:?}"),
        }
        // Records that are not live are not looked at.
        for state in [RecordState::Creating, RecordState::Exited, RecordState::Removing] {
            assert_eq!(observe(&record(state), &fake), Observed::Unchanged);
        }
        assert_eq!(fake.world().oci_queries, 0, "the runtime is asked only when the monitor is lost");
    }

    #[test]
    fn a_lost_monitor_s_container_exits_only_on_the_runtime_s_word() {
        let fake = Fake::new(MonitorState::Lost, Some(OciStatus::Running));
        assert_eq!(observe(&record(RecordState::Running), &fake), Observed::Unchanged, "still running");
        fake.world().oci_fails = true;
        assert_eq!(observe(&record(RecordState::Running), &fake), Observed::Unchanged, "no word, no exit");
        fake.world().oci_fails = false;
        for gone in [Some(OciStatus::Stopped), None] {
            fake.world().oci = gone;
            match observe(&record(RecordState::Created), &fake) {
                Observed::Exited(e) => {
                    assert_eq!(e.exit_code, UNKNOWN_EXIT);
                    assert!(e.message.contains("monitor was lost"), "{}", e.message);
                }
                other => panic!("{gone:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_checkpoint_waiting_for_its_start_has_no_monitor_and_is_not_lost() {
        let pending = ContainerRecord {
            restore: Some(crate::container::record::PendingRestore {
                images: "/nonexistent/run/c1/restore/checkpoint".into(),
                stdin: false,
                stdin_once: false,
            }),
            init_pid: 0,
            ..record(RecordState::Created)
        };
        // No monitor, and the runtime knows no such container: still created.
        let fake = Fake::new(MonitorState::Lost, None);
        assert_eq!(observe(&pending, &fake), Observed::Unchanged);
        assert_eq!(recover(&pending, &fake), Recovery::Keep);
        // A crash after StartContainer restored it, before the record said so: running.
        let fake = Fake::new(RUNNING, Some(OciStatus::Running));
        assert_eq!(recover(&pending, &fake), Recovery::Started);
    }

    #[test]
    fn recovery_after_a_crash_at_each_step() {
        // Crashed while creating or removing: torn down, whatever runs.
        let fake = Fake::new(RUNNING, Some(OciStatus::Created));
        assert_eq!(recover(&record(RecordState::Creating), &fake), Recovery::TearDown);
        assert_eq!(recover(&record(RecordState::Removing), &fake), Recovery::TearDown);
        // Crashed after the runtime's create: kept as created.
        assert_eq!(recover(&record(RecordState::Created), &fake), Recovery::Keep);
        // Crashed between the runtime's start and the record: running.
        fake.world().oci = Some(OciStatus::Running);
        assert_eq!(recover(&record(RecordState::Created), &fake), Recovery::Started);
        assert_eq!(recover(&record(RecordState::Running), &fake), Recovery::Keep);
        // An exited record stays as it is.
        assert_eq!(recover(&record(RecordState::Exited), &fake), Recovery::Keep);
    }

    #[test]
    fn exits_while_lockstepd_was_down_keep_their_real_codes() {
        let fake = Fake::new(exit(7), Some(OciStatus::Stopped));
        match recover(&record(RecordState::Running), &fake) {
            Recovery::Exited(e) => assert_eq!((e.exit_code, e.finished_at), (7, 42)),
            other => panic!("{other:?}"),
        }
        // Monitor and container both gone: the exit code is unknown.
        let fake = Fake::new(MonitorState::Lost, None);
        match recover(&record(RecordState::Running), &fake) {
            Recovery::Exited(e) => assert_eq!(e.exit_code, UNKNOWN_EXIT),
            other => panic!("{other:?}"),
        }
        // Monitor gone, container alive: kept (its output is lost, its life is not).
        let fake = Fake::new(MonitorState::Lost, Some(OciStatus::Running));
        assert_eq!(recover(&record(RecordState::Running), &fake), Recovery::Keep);
    }

    #[test]
    fn a_killed_container_s_exit_comes_from_its_monitor_or_the_runtime() {
        let fake = Fake::new(RUNNING, Some(OciStatus::Running));
        fake.signal("c1", 9, true).unwrap();
        assert_eq!(wait_killed(&fake, &record(RecordState::Running)).unwrap().exit_code, 137);

        // Monitor lost: the runtime says stopped after a few looks.
        let fake = Fake::new(MonitorState::Lost, Some(OciStatus::Running));
        fake.world().stops_after_queries = Some(2);
        let exit = wait_killed(&fake, &record(RecordState::Running)).unwrap();
        assert_eq!(exit.exit_code, 137);
        assert!(exit.message.contains("monitor was lost"));
        assert_eq!(fake.world().oci_queries, 3);
    }

    #[test]
    fn a_container_that_never_stops_is_reported_within_the_time_given() {
        let fake = Fake::new(MonitorState::Lost, Some(OciStatus::Running));
        let started = Instant::now();
        assert!(!stopped_within(&fake, "c1", Duration::from_millis(100)).unwrap());
        assert!(started.elapsed() < Duration::from_secs(1));
        fake.world().oci_fails = true;
        assert!(matches!(stopped_within(&fake, "c1", Duration::ZERO), Err(WaitError::Runtime { .. })));
    }
}
