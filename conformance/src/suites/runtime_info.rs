//! runtime-info: what the kubelet asks a runtime before it runs anything — Version on connect,
//! Status for node readiness, runtime handlers and (1.31+) runtime features, RuntimeConfig for
//! the cgroup driver — and, for a runtime pinned to one minor, that the RPCs and the answer
//! fields of later minors are absent (read with the model's own client, past the window).

use std::time::Duration;

use futures::StreamExt;
use lockstep_cri::{model, Minor};

use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};

const AREA: &str = "runtime-info";

fn test(name: &'static str, since: Minor, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since, needs, timeout: Duration::from_secs(30), body }
}

pub fn tests() -> Vec<Test> {
    vec![
        test("Version answers what the kubelet requires", Minor::V1_30, &[], |c| Box::pin(version_fields(c))),
        test("Status reports RuntimeReady and NetworkReady", Minor::V1_30, &[], |c| Box::pin(status_conditions(c))),
        test("Status says the runtime is ready", Minor::V1_30, &[], |c| Box::pin(runtime_ready(c))),
        test("Status returns info only when verbose", Minor::V1_30, &[], |c| Box::pin(status_verbose(c))),
        test("Status lists runtime handlers, the default under the empty name", Minor::V1_30, &[], |c| {
            Box::pin(runtime_handlers(c))
        }),
        test("RuntimeConfig reports a cgroup driver", Minor::V1_30, &[Need::Rpc("RuntimeConfig")], |c| {
            Box::pin(runtime_config(c))
        }),
        test("Status reports the runtime's features to a kubelet of 1.31 or later", Minor::V1_31, &[], |c| {
            Box::pin(runtime_features(c))
        }),
        test(
            "RPCs of later minors are absent, those of its own minor present",
            Minor::V1_30,
            &[Need::PinnedMinor],
            |c| Box::pin(version_lock(c)),
        ),
        Test {
            area: AREA,
            name: "Answer fields of later minors are absent, as the pinned minor's kubelet cannot know them",
            since: Minor::V1_30,
            needs: &[Need::PinnedMinor, Need::Registry],
            timeout: Duration::from_secs(120),
            body: |c| Box::pin(field_lock(c)),
        },
    ]
}

async fn version_fields(ctx: Ctx) -> TestResult {
    // The kubelet's connect check sends an empty request.
    let v = ctx.kubelet().version(model::VersionRequest::default()).await.map_err(|e| call_failed("Version", &e))?;
    for (field, value) in [
        ("version", &v.version),
        ("runtime_name", &v.runtime_name),
        ("runtime_version", &v.runtime_version),
        ("runtime_api_version", &v.runtime_api_version),
    ] {
        check!(!value.is_empty(), "VersionResponse.{field} is empty: the kubelet refuses the runtime");
    }
    check!(v.version == "0.1.0", "VersionResponse.version is {:?}: the kubelet requires \"0.1.0\"", v.version);
    check!(
        v.runtime_api_version == "v1",
        "runtime_api_version is {:?}: kubelets since 1.26 need CRI v1",
        v.runtime_api_version
    );
    Ok(())
}

async fn status(ctx: &Ctx, verbose: bool) -> Result<model::StatusResponse, Failure> {
    ctx.kubelet().status(model::StatusRequest { verbose }).await.map_err(|e| call_failed("Status", &e))
}

fn condition<'a>(status: &'a model::StatusResponse, kind: &str) -> Result<&'a model::RuntimeCondition, Failure> {
    let conditions = status.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    conditions.iter().find(|c| c.r#type == kind).ok_or_else(|| {
        let kinds: Vec<&str> = conditions.iter().map(|c| c.r#type.as_str()).collect();
        Failure::fail(format!("Status has no {kind} condition (has {kinds:?})"))
    })
}

async fn status_conditions(ctx: Ctx) -> TestResult {
    let status = status(&ctx, false).await?;
    for kind in ["RuntimeReady", "NetworkReady"] {
        let c = condition(&status, kind)?;
        check!(
            c.status || (!c.reason.is_empty() && !c.message.is_empty()),
            "{kind} is false without a reason and message (reason {:?}, message {:?})",
            c.reason,
            c.message
        );
    }
    Ok(())
}

async fn runtime_ready(ctx: Ctx) -> TestResult {
    let status = status(&ctx, false).await?;
    let c = condition(&status, "RuntimeReady")?;
    check!(c.status, "RuntimeReady is false ({}: {}): the node would be NotReady", c.reason, c.message);
    Ok(())
}

async fn status_verbose(ctx: Ctx) -> TestResult {
    let quiet = status(&ctx, false).await?;
    check!(
        quiet.info.is_empty(),
        "Status without verbose returned info keys {:?}",
        quiet.info.keys().collect::<Vec<_>>()
    );
    let verbose = status(&ctx, true).await?;
    check!(!verbose.info.is_empty(), "Status with verbose returned no info");
    Ok(())
}

async fn runtime_handlers(ctx: Ctx) -> TestResult {
    let status = status(&ctx, false).await?;
    check!(
        !status.runtime_handlers.is_empty(),
        "StatusResponse.runtime_handlers is empty (the field came in 1.30): the kubelet then assumes no handler \
         supports recursive read-only mounts or user namespaces"
    );
    check!(
        status.runtime_handlers.iter().any(|h| h.name.is_empty()),
        "no runtime handler has the empty name, which the kubelet looks up for pods without a RuntimeClass \
         (handlers: {:?})",
        status.runtime_handlers.iter().map(|h| &h.name).collect::<Vec<_>>()
    );
    Ok(())
}

async fn runtime_config(ctx: Ctx) -> TestResult {
    let config = ctx
        .kubelet()
        .runtime_config(model::RuntimeConfigRequest {})
        .await
        .map_err(|e| call_failed("RuntimeConfig", &e))?;
    let linux = config.linux.ok_or_else(|| Failure::fail("RuntimeConfigResponse.linux is absent"))?;
    check!(
        model::CgroupDriver::try_from(linux.cgroup_driver).is_ok(),
        "cgroup_driver {} is not a CgroupDriver value: the kubelet fails to start",
        linux.cgroup_driver
    );
    Ok(())
}

/// StatusResponse.features came in 1.31 (KEP-3619): without it the kubelet takes every runtime
/// feature (SupplementalGroupsPolicy, user namespaces with host network) as unsupported.
async fn runtime_features(ctx: Ctx) -> TestResult {
    let status = status(&ctx, false).await?;
    check!(
        status.features.is_some(),
        "StatusResponse.features is absent (Kubernetes 1.31): the kubelet assumes no runtime feature"
    );
    Ok(())
}

/// For a runtime pinned to this run's minor, what it sends (read with the model's client, so the
/// window hides nothing) holds no field that a later minor added: Status.features (1.31),
/// RuntimeFeatures.user_namespaces_host_network (1.36), ContainerStatus.user (1.31) and
/// stop_signal (1.33, made visible by an image with a STOPSIGNAL), ImageSpec.image_ref (1.36),
/// and the PSI and IO stats (1.33).
async fn field_lock(ctx: Ctx) -> TestResult {
    use lockstep_cri::model::runtime_service_client::RuntimeServiceClient;
    let pinned = ctx.runtime.pinned_minor.clone().unwrap_or_default();
    if pinned != ctx.minor.to_string() {
        return Err(Failure::skip(format!("the runtime is pinned to {pinned}, this run is for {}", ctx.minor)));
    }
    let minor = ctx.minor;
    let before = |added: Minor| minor < added;
    let mut raw = RuntimeServiceClient::new(ctx.channel());
    let mut wrong = Vec::new();
    let status = raw.status(model::StatusRequest { verbose: false }).await.map_err(|e| call_failed("Status", &e))?;
    let status = status.into_inner();
    if before(Minor::V1_31) && status.features.is_some() {
        wrong.push("Status.features (1.31)".to_string());
    }
    if before(Minor::V1_36) && status.features.is_some_and(|f| f.user_namespaces_host_network) {
        wrong.push("RuntimeFeatures.user_namespaces_host_network (1.36)".to_string());
    }
    super::conkit::with_kit(&ctx, "field-lock", |kit| async move {
        let image = kit.image(lockstep_testkit::fixtures::STOP_SIGNAL).await?;
        let id = kit.run(kit.config("field-lock", &image, &["sleep", "3600"])).await?;
        let s = raw
            .container_status(model::ContainerStatusRequest { container_id: id.clone(), verbose: false })
            .await
            .map_err(|e| call_failed("ContainerStatus", &e))?
            .into_inner()
            .status
            .unwrap_or_default();
        if before(Minor::V1_31) && s.user.is_some() {
            wrong.push("ContainerStatus.user (1.31)".into());
        }
        if before(Minor::V1_33) && s.stop_signal != 0 {
            wrong.push(format!("ContainerStatus.stop_signal (1.33): {}", s.stop_signal));
        }
        if before(Minor::V1_36) && s.image.as_ref().is_some_and(|i| !i.image_ref.is_empty()) {
            wrong.push("ContainerStatus.image.image_ref (1.36)".into());
        }
        let stats = raw
            .container_stats(model::ContainerStatsRequest { container_id: id })
            .await
            .map_err(|e| call_failed("ContainerStats", &e))?
            .into_inner()
            .stats
            .unwrap_or_default();
        let psi = stats.cpu.as_ref().is_some_and(|c| c.psi.is_some())
            || stats.memory.as_ref().is_some_and(|m| m.psi.is_some());
        if before(Minor::V1_33) && (psi || stats.io.is_some()) {
            wrong.push("ContainerStats psi or io (1.33)".into());
        }
        check!(wrong.is_empty(), "a runtime pinned to {minor} sends {}", wrong.join(", "));
        Ok(())
    })
    .await
}

/// For a runtime pinned to this run's minor: every RPC of the model that the minor lacks is
/// absent (no route), and every RPC that the minor has is routed (built or not).
async fn version_lock(ctx: Ctx) -> TestResult {
    let pinned = ctx.runtime.pinned_minor.clone().unwrap_or_default();
    if pinned != ctx.minor.to_string() {
        return Err(Failure::skip(format!("the runtime is pinned to {pinned}, this run is for {}", ctx.minor)));
    }
    let mut client = ctx.kubelet();
    let mut wrong = Vec::new();
    // Harmless probes: reads, and a resize of a sandbox that does not exist.
    let probes: [(&str, Result<(), tonic::Status>); 6] = [
        ("RuntimeConfig", client.runtime_config(Default::default()).await.map(drop)),
        ("UpdatePodSandboxResources", client.update_pod_sandbox_resources(Default::default()).await.map(drop)),
        ("StreamPodSandboxes", first(client.stream_pod_sandboxes(Default::default()).await).await),
        ("StreamContainers", first(client.stream_containers(Default::default()).await).await),
        ("StreamImages", first(client.stream_images(Default::default()).await).await),
        ("StreamPodSandboxMetrics", first(client.stream_pod_sandbox_metrics(Default::default()).await).await),
    ];
    for (rpc, result) in probes {
        let absent = matches!(&result, Err(s) if crate::surface::rpc_absent(s));
        let expected_absent = !ctx.minor.has_rpc(rpc);
        if absent != expected_absent {
            wrong.push(format!(
                "{rpc} is {} but Kubernetes {} {} it",
                if absent { "absent" } else { "served" },
                ctx.minor,
                if expected_absent { "lacks" } else { "has" }
            ));
        }
    }
    check!(wrong.is_empty(), "{}", wrong.join("; "));
    Ok(())
}

/// The first message of a server stream, or the error the call or the stream gave.
async fn first<M>(stream: Result<lockstep_cri::window::StreamOf<M>, tonic::Status>) -> Result<(), tonic::Status> {
    match stream?.next().await {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}
