//! container-stop: how StopContainer ends a container — the stop signal first (SIGTERM by
//! default, the image's STOPSIGNAL, or ContainerConfig.stop_signal from 1.33), SIGKILL after
//! the timeout for a process that ignores it, exit codes as the process or the signal made them.

use std::time::{Duration, Instant};

use lockstep_cri::{model, Minor};

use super::conkit::{with_kit, Kit};
use super::containers::IMAGES;
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};
use lockstep_testkit::fixtures;

const AREA: &str = "container-stop";

fn test(name: &'static str, since: Minor, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since, needs, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    let v30 = Minor::V1_30;
    vec![
        test("StopContainer sends SIGTERM: a process that handles it exits with its own code", v30, IMAGES, |c| {
            Box::pin(sigterm(c))
        }),
        test("A process that ignores the stop signal is killed after the timeout, exit code 137", v30, IMAGES, |c| {
            Box::pin(killed_after_timeout(c))
        }),
        test("StopContainer uses the image's STOPSIGNAL", v30, IMAGES, |c| Box::pin(image_stop_signal(c))),
        test("StopContainer uses ContainerConfig.stop_signal over the image's", Minor::V1_33, IMAGES, |c| {
            Box::pin(config_stop_signal(c))
        }),
    ]
}

/// A shell that exits with a code per signal it traps; ready once it wrote /tmp/ready.
fn trapping(traps: &[(&str, u8)]) -> String {
    let mut script: String = traps.iter().map(|(sig, code)| format!("trap 'exit {code}' {sig}; ")).collect();
    script.push_str("touch /tmp/ready; while true; do sleep 1 & wait; done");
    script
}

/// Runs the container and waits until its traps are set.
async fn run_trapping(kit: &Kit, name: &str, config: model::ContainerConfig) -> Result<String, Failure> {
    let id = kit.run(config).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while kit.exec(&id, &["test", "-e", "/tmp/ready"], 10).await.map(|r| r.exit_code).unwrap_or(1) != 0 {
        check!(Instant::now() < deadline, "{name} did not set its traps within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(id)
}

/// StopContainer with `timeout`; how long it took and the exit status.
async fn stop(kit: &Kit, id: &str, timeout: i64) -> Result<(Duration, model::ContainerStatus), Failure> {
    let started = Instant::now();
    let mut client = kit.client();
    client.set_timeout(Some(Duration::from_secs(timeout as u64 + 60)));
    client
        .stop_container(model::StopContainerRequest { container_id: id.into(), timeout })
        .await
        .map_err(|e| call_failed("StopContainer", &e))?;
    let took = started.elapsed();
    let s = kit.status(id).await?;
    check!(
        s.state == model::ContainerState::ContainerExited as i32,
        "StopContainer returned but the container is in state {}",
        s.state
    );
    Ok((took, s))
}

async fn sigterm(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "stop-term", |kit| async move {
        let config = kit.shell_config("stop-term", &trapping(&[("TERM", 42)])).await?;
        let id = run_trapping(&kit, "stop-term", config).await?;
        let (took, s) = stop(&kit, &id, 30).await?;
        check!(s.exit_code == 42, "exit code is {}: the process did not get SIGTERM", s.exit_code);
        check!(took < Duration::from_secs(15), "stopping a process that exits on SIGTERM took {took:?}");
        Ok(())
    })
    .await
}

async fn killed_after_timeout(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "stop-kill", |kit| async move {
        let script = "trap '' TERM; touch /tmp/ready; while true; do sleep 1 & wait; done";
        let config = kit.shell_config("stop-kill", script).await?;
        let id = run_trapping(&kit, "stop-kill", config).await?;
        let (took, s) = stop(&kit, &id, 2).await?;
        check!(
            took >= Duration::from_millis(1900),
            "StopContainer with timeout 2 returned after {took:?}: no grace period"
        );
        check!(took < Duration::from_secs(20), "StopContainer with timeout 2 took {took:?}");
        check!(s.exit_code == 137, "exit code is {}, not 137 (SIGKILL)", s.exit_code);
        Ok(())
    })
    .await
}

async fn image_stop_signal(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "stop-image-signal", |kit| async move {
        let image = kit.image(fixtures::STOP_SIGNAL).await?;
        let script = trapping(&[("TERM", 15), ("USR1", 42)]);
        let config = kit.config("stop-image-signal", &image, &["sh", "-c", &script]);
        let id = run_trapping(&kit, "stop-image-signal", config).await?;
        let (_, s) = stop(&kit, &id, 30).await?;
        check!(
            s.exit_code == 42,
            "exit code is {} (15: SIGTERM was sent): the image's STOPSIGNAL {} was not used",
            s.exit_code,
            fixtures::IMAGE_STOP_SIGNAL
        );
        Ok(())
    })
    .await
}

async fn config_stop_signal(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "stop-config-signal", |kit| async move {
        let image = kit.image(fixtures::STOP_SIGNAL).await?;
        let script = trapping(&[("TERM", 15), ("USR1", 42), ("USR2", 43)]);
        let mut config = kit.config("stop-config-signal", &image, &["sh", "-c", &script]);
        config.stop_signal = model::Signal::Sigusr2 as i32;
        let id = run_trapping(&kit, "stop-config-signal", config).await?;
        let (_, s) = stop(&kit, &id, 30).await?;
        check!(
            s.exit_code == 43,
            "exit code is {} (42: the image's SIGUSR1, 15: SIGTERM): ContainerConfig.stop_signal SIGUSR2 was not used",
            s.exit_code
        );
        Ok(())
    })
    .await
}
