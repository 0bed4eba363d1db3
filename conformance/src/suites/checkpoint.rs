//! checkpoint: CheckpointContainer as the kubelet's checkpoint API calls it (an archive path on
//! the node, the container left running), and the restore CRI-O defined: a CreateContainer in
//! another pod whose image is that archive, started to go on where it was — a counter that
//! continues, its writable layer and its open file along. A runtime that cannot checkpoint
//! (UNIMPLEMENTED, or FailedPrecondition for its handler) is skipped with its own words. The
//! archive is written on the node: the harness must run there. Touches only what it makes.

use std::path::Path;
use std::time::{Duration, Instant};

use lockstep_cri::{model, Minor};

use super::conkit::{self, with_kit, Kit};
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};

const AREA: &str = "checkpoint";
const NEEDS: &[Need] = &[Need::Registry];

/// A counter that also leaves a file in its writable layer and holds another open.
const COUNTER: &str = "echo before > /tmp/marker; exec 3>/tmp/held; i=0; \
    while :; do i=$((i+1)); echo tick $i; sleep 0.05; done";

fn test(name: &'static str, body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs: NEEDS, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    vec![
        test(
            "a checkpoint leaves the container running and restores in another pod: the counter goes on, with its \
             writable layer and open file",
            |c| Box::pin(checkpoint_and_restore(c)),
        ),
        test("a checkpoint of an exited container is refused with FailedPrecondition and writes no archive", |c| {
            Box::pin(exited_refused(c))
        }),
        test("a restore from a file that is no checkpoint archive is refused and leaves no container", |c| {
            Box::pin(broken_archive_refused(c))
        }),
    ]
}

/// A place on the node for archives.
fn scratch() -> Result<tempfile::TempDir, Failure> {
    tempfile::Builder::new()
        .prefix("lockstep-conformance-checkpoint-")
        .tempdir()
        .map_err(|e| Failure::fail(format!("cannot make a directory for the archive: {e}")))
}

async fn checkpoint(kit: &Kit, id: &str, location: &Path) -> Result<(), tonic::Status> {
    let request = model::CheckpointContainerRequest {
        container_id: id.into(),
        location: location.display().to_string(),
        timeout: 0,
    };
    kit.client().checkpoint_container(request).await.map(drop)
}

/// A failed checkpoint of a running container: a skip when the runtime says it cannot
/// checkpoint at all, a failure otherwise.
fn cannot_checkpoint(e: &tonic::Status) -> Failure {
    match e.code() {
        tonic::Code::Unimplemented | tonic::Code::FailedPrecondition => {
            Failure::skip(format!("the runtime cannot checkpoint here: {}", e.message()))
        }
        _ => call_failed("CheckpointContainer", e),
    }
}

/// The counter's ticks in a log, in order.
fn ticks(log: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(conkit::parse_log_line)
        .filter_map(|e| e.text.strip_prefix("tick ").and_then(|n| n.trim().parse().ok()))
        .collect()
}

async fn wait_for_ticks(log: &Path, what: &str, done: impl Fn(&[u64]) -> bool) -> Result<Vec<u64>, Failure> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = ticks(log);
        if done(&seen) {
            return Ok(seen);
        }
        if Instant::now() > deadline {
            return Err(Failure::fail(format!("{what}: the log {} has ticks {seen:?}", log.display())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn checkpoint_and_restore(ctx: Ctx) -> TestResult {
    let dir = scratch()?;
    let archive = dir.path().join("counter.tar");
    let restore_ctx = ctx.clone();
    with_kit(&ctx, "checkpoint-original", |kit| async move {
        let id = kit.run_shell("counter", COUNTER).await?;
        let log = kit.log_file("counter");
        wait_for_ticks(&log, "the counter before the checkpoint", |t| t.len() >= 5).await?;
        checkpoint(&kit, &id, &archive).await.map_err(|e| cannot_checkpoint(&e))?;
        let at_checkpoint = ticks(&log).last().copied().unwrap_or(0);
        check!(archive.is_file(), "CheckpointContainer answered OK but wrote no archive at {}", archive.display());
        let status = kit.status(&id).await?;
        check!(
            status.state() == model::ContainerState::ContainerRunning,
            "the checkpointed container is {:?}, not left running",
            status.state()
        );
        wait_for_ticks(&log, "the original after its checkpoint", |t| t.last().is_some_and(|&n| n > at_checkpoint + 2))
            .await?;
        let image = kit.shell().await?;
        with_kit(&restore_ctx, "checkpoint-restored", |other| async move {
            let mut config = other.config("counter", &archive.display().to_string(), &[]);
            config.command.clear();
            let restored = other.create(config).await?;
            let status = other.status(&restored).await?;
            check!(
                status.state() == model::ContainerState::ContainerCreated,
                "the restored container is {:?} before StartContainer, not created",
                status.state()
            );
            check!(
                status.image_id == image,
                "the restored container's image is {:?}, not the checkpointed one's {image:?}",
                status.image_id
            );
            other.start(&restored).await?;
            other.wait_state(&restored, model::ContainerState::ContainerRunning).await?;
            let seen = wait_for_ticks(&other.log_file("counter"), "the restored counter", |t| t.len() >= 3).await?;
            check!(
                seen[0] > 1 && seen[0] <= at_checkpoint + 1,
                "the restored counter starts at {} after a checkpoint at {at_checkpoint}: it did not go on",
                seen[0]
            );
            check!(seen.windows(2).all(|w| w[1] == w[0] + 1), "the restored counter skips: {seen:?}");
            let marker = other.exec_ok(&restored, &["cat", "/tmp/marker"]).await?;
            check!(marker == "before\n", "the writable layer's /tmp/marker is {marker:?} after the restore");
            let held = other.sh(&restored, "for fd in /proc/[0-9]*/fd/3; do readlink $fd || true; done").await?;
            check!(held.contains("/tmp/held"), "no restored process holds /tmp/held open (fd 3 links: {held:?})");
            Ok(())
        })
        .await
    })
    .await
}

async fn exited_refused(ctx: Ctx) -> TestResult {
    let dir = scratch()?;
    let archive = dir.path().join("exited.tar");
    with_kit(&ctx, "checkpoint-exited", |kit| async move {
        let id = kit.create(kit.shell_config("done", "exit 0").await?).await?;
        kit.start(&id).await?;
        kit.wait_exit(&id).await?;
        match checkpoint(&kit, &id, &archive).await {
            Ok(()) => Err(Failure::fail("CheckpointContainer of an exited container succeeded")),
            Err(e) if e.code() == tonic::Code::Unimplemented => Err(cannot_checkpoint(&e)),
            Err(e) => {
                check!(
                    e.code() == tonic::Code::FailedPrecondition,
                    "CheckpointContainer of an exited container: {:?} {:?}, not FailedPrecondition",
                    e.code(),
                    e.message()
                );
                check!(!archive.exists(), "a refused checkpoint left an archive at {}", archive.display());
                Ok(())
            }
        }
    })
    .await
}

async fn broken_archive_refused(ctx: Ctx) -> TestResult {
    let dir = scratch()?;
    let bogus = dir.path().join("bogus.tar");
    std::fs::write(&bogus, "no archive, only words\n")
        .map_err(|e| Failure::fail(format!("cannot write {}: {e}", bogus.display())))?;
    with_kit(&ctx, "checkpoint-broken", |kit| async move {
        // Only a runtime that checkpoints is asked to restore.
        let probe = kit.run_shell("probe", "exec sleep 3600").await?;
        let probe_archive = bogus.with_file_name("probe.tar");
        checkpoint(&kit, &probe, &probe_archive).await.map_err(|e| cannot_checkpoint(&e))?;
        let mut config = kit.config("restored", &bogus.display().to_string(), &[]);
        config.command.clear();
        match kit.try_create(config).await {
            Ok(id) => {
                kit.adopt(&id);
                Err(Failure::fail(format!("CreateContainer from {} succeeded: container {id}", bogus.display())))
            }
            Err(e) => {
                check!(
                    matches!(e.code(), tonic::Code::InvalidArgument | tonic::Code::NotFound),
                    "CreateContainer from a broken archive: {:?} {:?}, not InvalidArgument",
                    e.code(),
                    e.message()
                );
                let listed = kit
                    .list(model::ContainerFilter { pod_sandbox_id: kit.pod.id.clone(), ..Default::default() })
                    .await?;
                check!(listed.len() == 1, "the refused restore left containers in the pod: {listed:?}");
                Ok(())
            }
        }
    })
    .await
}
