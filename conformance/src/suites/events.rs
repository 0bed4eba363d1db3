//! events: what the kubelet's Evented PLEG reads — GetContainerEvents streams each container's
//! CREATED, STARTED, STOPPED and DELETED with the pod's status and the statuses of the pod's
//! containers after the event (an exit is sent when it happens, without anyone asking for the
//! container's status), and PodSandboxStatus, once it carries a timestamp, carries the statuses
//! of the pod's containers too (the kubelet then takes them from there instead of listing).

use std::time::{Duration, Instant};

use futures::StreamExt;
use lockstep_cri::window::StreamOf;
use lockstep_cri::{model, Minor};

use super::conkit::with_kit;
use super::containers::IMAGES;
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};

const AREA: &str = "events";

fn test(name: &'static str, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    vec![
        test(
            "GetContainerEvents streams CREATED, STARTED, STOPPED and DELETED with the pod's and containers' statuses",
            IMAGES,
            |c| Box::pin(lifecycle(c)),
        ),
        test("PodSandboxStatus with a timestamp carries the statuses of the pod's containers", IMAGES, |c| {
            Box::pin(statuses_in_pod_status(c))
        }),
    ]
}

/// The next event about `id`, waiting at most `wait`.
async fn next_about(
    events: &mut StreamOf<model::ContainerEventResponse>,
    id: &str,
    wait: Duration,
) -> Result<model::ContainerEventResponse, Failure> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            Err(_) => return Err(Failure::fail(format!("no event about container {id} within {wait:?}"))),
            Ok(None) => return Err(Failure::fail("the GetContainerEvents stream ended")),
            Ok(Some(Err(e))) => return Err(call_failed("GetContainerEvents (stream)", &e)),
            Ok(Some(Ok(event))) if event.container_id == id => return Ok(event),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

fn kind(event: &model::ContainerEventResponse) -> String {
    model::ContainerEventType::try_from(event.container_event_type)
        .map(|k| k.as_str_name().to_string())
        .unwrap_or_else(|_| event.container_event_type.to_string())
}

async fn lifecycle(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "events", |kit| async move {
        let mut events = kit
            .client()
            .get_container_events(model::GetEventsRequest {})
            .await
            .map_err(|e| call_failed("GetContainerEvents", &e))?;
        // Exits on its own a moment after it starts: the STOPPED event must come unasked.
        let config = kit.shell_config("events", "sleep 1; exit 3").await?;
        let id = kit.create(config).await?;
        let created = next_about(&mut events, &id, Duration::from_secs(10)).await?;
        check!(
            created.container_event_type == model::ContainerEventType::ContainerCreatedEvent as i32,
            "the first event about the new container is {}, not CONTAINER_CREATED_EVENT",
            kind(&created)
        );
        let pod = created.pod_sandbox_status.clone().unwrap_or_default();
        check!(pod.id == kit.pod.id, "the event names pod {:?}, not {:?}", pod.id, kit.pod.id);
        check!(created.created_at > 0, "the event has no time");

        kit.start(&id).await?;
        let started = next_about(&mut events, &id, Duration::from_secs(10)).await?;
        check!(
            started.container_event_type == model::ContainerEventType::ContainerStartedEvent as i32,
            "after StartContainer the event is {}, not CONTAINER_STARTED_EVENT",
            kind(&started)
        );

        let stopped = next_about(&mut events, &id, Duration::from_secs(30)).await?;
        check!(
            stopped.container_event_type == model::ContainerEventType::ContainerStoppedEvent as i32,
            "after the process exited the event is {}, not CONTAINER_STOPPED_EVENT",
            kind(&stopped)
        );
        let own = stopped.containers_statuses.iter().find(|s| s.id == id);
        check!(own.is_some(), "the STOPPED event's containers_statuses leave the container out");
        let own = own.cloned().unwrap_or_default();
        check!(
            own.state == model::ContainerState::ContainerExited as i32 && own.exit_code == 3,
            "the STOPPED event shows the container in state {} with exit code {}, not EXITED with 3",
            own.state,
            own.exit_code
        );

        kit.client()
            .remove_container(model::RemoveContainerRequest { container_id: id.clone() })
            .await
            .map_err(|e| call_failed("RemoveContainer", &e))?;
        let deleted = next_about(&mut events, &id, Duration::from_secs(10)).await?;
        check!(
            deleted.container_event_type == model::ContainerEventType::ContainerDeletedEvent as i32,
            "after RemoveContainer the event is {}, not CONTAINER_DELETED_EVENT",
            kind(&deleted)
        );
        check!(
            deleted.containers_statuses.iter().all(|s| s.id != id),
            "the DELETED event still lists the removed container"
        );
        Ok(())
    })
    .await
}

async fn statuses_in_pod_status(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "pod-statuses", |kit| async move {
        let running = kit.run_sleeper("sleeper").await?;
        let response = kit
            .client()
            .pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id: kit.pod.id.clone(), verbose: false })
            .await
            .map_err(|e| call_failed("PodSandboxStatus", &e))?;
        if response.timestamp == 0 {
            // The kubelet then lists containers itself: nothing here to judge.
            return Ok(());
        }
        let listed: Vec<&str> = response.containers_statuses.iter().map(|s| s.id.as_str()).collect();
        check!(
            listed.contains(&running.as_str()),
            "PodSandboxStatus has a timestamp but its containers_statuses ({listed:?}) leave out container {running}: \
             a kubelet with Evented PLEG would think the pod has no such container"
        );
        let own = response.containers_statuses.iter().find(|s| s.id == running).cloned().unwrap_or_default();
        check!(own.state == model::ContainerState::ContainerRunning as i32, "the status there is {}", own.state);
        Ok(())
    })
    .await
}
