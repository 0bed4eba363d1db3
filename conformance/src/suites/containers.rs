//! containers: the container lifecycle as the kubelet drives it — create, start, stop, remove
//! (idempotent, also of a running container), states and timestamps, exit codes and reasons,
//! the ContainerStatus fields the kubelet reads (image_id 1.30+, user 1.31+, stop_signal 1.33+),
//! ListContainers filters, StreamContainers (1.36), a kubelet retry of CreateContainer, and bad
//! requests: refused and nothing running (conformance), refused at once with the code and
//! field (a separate strictness test).

use std::time::Duration;

use futures::StreamExt as _;
use lockstep_cri::{model, Minor};

use super::conkit::{self, security, with_kit, Kit};
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};
use lockstep_testkit::fixtures;

const AREA: &str = "containers";
/// Containers need a test image.
pub const IMAGES: &[Need] = &[Need::Registry];

fn test(name: &'static str, since: Minor, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since, needs, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    let v30 = Minor::V1_30;
    vec![
        test("CreateContainer makes a CREATED container that ListContainers and ContainerStatus report", v30, IMAGES, |c| {
            Box::pin(created(c))
        }),
        test("StartContainer runs it: RUNNING with a start time", v30, IMAGES, |c| Box::pin(started(c))),
        test("A container that exits is EXITED with its exit code, a finish time and reason Error", v30, IMAGES, |c| {
            Box::pin(exits_on_its_own(c))
        }),
        test("A container that exits 0 has reason Completed", v30, IMAGES, |c| Box::pin(completed(c))),
        test("StopContainer and RemoveContainer are idempotent; a removed container is gone", v30, IMAGES, |c| {
            Box::pin(idempotent_stop_remove(c))
        }),
        test("StopContainer of an id the runtime never knew succeeds and makes nothing", v30, &[], |c| {
            Box::pin(unknown_container(c, Verb::Stop))
        }),
        test("RemoveContainer of an id the runtime never knew succeeds and makes nothing", v30, &[], |c| {
            Box::pin(unknown_container(c, Verb::Remove))
        }),
        test("RemoveContainer removes a created and a running container", v30, IMAGES, |c| {
            Box::pin(remove_running(c))
        }),
        test("ListContainers filters by id, state, pod sandbox and label selector", v30, IMAGES, |c| {
            Box::pin(list_filters(c))
        }),
        test(
            "ContainerStatus reports metadata, image, image_ref, labels, annotations, mounts and log path",
            v30,
            IMAGES,
            |c| Box::pin(status_fields(c)),
        ),
        test("ContainerStatus.image_id is the image's ID", v30, IMAGES, |c| Box::pin(status_image_id(c))),
        test("ContainerStatus.user reports the uid, gid and groups the process runs with", Minor::V1_31, IMAGES, |c| {
            Box::pin(status_user(c))
        }),
        test("ContainerStatus.stop_signal reports the container's stop signal", Minor::V1_33, IMAGES, |c| {
            Box::pin(status_stop_signal(c))
        }),
        test(
            "The environment is the image's ENV with the request's envs over it; WORKDIR applies unless the request \
             names one",
            v30,
            IMAGES,
            |c| Box::pin(image_defaults(c)),
        ),
        test(
            "An environment value that is not UTF-8 is accepted and reaches the process, U+FFFD for each bad byte",
            Minor::V1_34,
            IMAGES,
            |c| Box::pin(env_bytes(c)),
        ),
        test("A retried CreateContainer with the same metadata returns the same container", v30, IMAGES, |c| {
            Box::pin(kubelet_retry(c))
        }),
        test("StreamContainers sends what ListContainers lists", Minor::V1_36, &[Need::Registry, Need::Rpc("StreamContainers")], |c| {
            Box::pin(stream_containers(c))
        }),
        test("A container in an unknown or stopped pod sandbox is refused and nothing runs", v30, IMAGES, |c| {
            Box::pin(bad_sandbox(c))
        }),
        test("A container of an image that is not present is refused and nothing runs", v30, IMAGES, |c| {
            Box::pin(bad_image(c))
        }),
        test("A mount whose host path does not exist is refused and nothing runs", v30, IMAGES, |c| {
            Box::pin(bad_mount_source(c))
        }),
        test("A mount with a relative container path is refused and nothing runs", v30, IMAGES, |c| {
            Box::pin(bad_mount_destination(c))
        }),
        test("A capability that does not exist is refused and nothing runs", v30, IMAGES, |c| {
            Box::pin(bad_capability(c))
        }),
        test("A run_as_username that the image does not have is refused and nothing runs", v30, IMAGES, |c| {
            Box::pin(bad_username(c))
        }),
        test("run_as_group without run_as_user is refused and nothing runs", v30, IMAGES, |c| {
            Box::pin(group_without_user(c))
        }),
        test(
            "Bad container requests are refused by CreateContainer with InvalidArgument or NotFound naming the field (strict)",
            v30,
            IMAGES,
            |c| Box::pin(strict_refusals(c)),
        ),
        test("Containers keep their state, exits and logs across a runtime crash and restart", v30, &[Need::Registry, Need::Restart], |c| {
            Box::pin(restart_survival(c))
        }),
    ]
}

fn state_name(state: i32) -> String {
    model::ContainerState::try_from(state).map(|s| format!("{s:?}")).unwrap_or_else(|_| format!("state {state}"))
}

/// Timestamps are nanoseconds since the epoch: within a minute of the test's clock.
fn recent(what: &str, nanos: i64) -> TestResult {
    let now = conkit::now_nanos();
    let skew = (now - nanos as i128).abs();
    check!(
        skew < 60_000_000_000,
        "{what} is {nanos}, {:.1} s away from now: not nanoseconds since the epoch",
        skew as f64 / 1e9
    );
    Ok(())
}

async fn created(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "created", |kit| async move {
        let config = kit.shell_config("created", "exec sleep 3600").await?;
        let id = kit.create(config.clone()).await?;
        let s = kit.status(&id).await?;
        check!(s.id == id, "status.id is {:?}, not {id:?}", s.id);
        check!(s.state == model::ContainerState::ContainerCreated as i32, "state is {}", state_name(s.state));
        recent("created_at", s.created_at)?;
        check!(s.started_at == 0, "a container never started has started_at {}", s.started_at);
        check!(s.metadata == config.metadata, "metadata {:?} differs from the request's", s.metadata);
        let listed = kit.list(model::ContainerFilter { id: id.clone(), ..Default::default() }).await?;
        check!(listed.len() == 1, "ListContainers by id returned {} containers", listed.len());
        let c = &listed[0];
        check!(c.pod_sandbox_id == kit.pod.id, "pod_sandbox_id is {:?}, not {:?}", c.pod_sandbox_id, kit.pod.id);
        check!(c.state == model::ContainerState::ContainerCreated as i32, "listed state is {}", state_name(c.state));
        check!(c.metadata == config.metadata, "listed metadata {:?}", c.metadata);
        check!(!c.image_ref.is_empty(), "the listed container has no image_ref");
        check!(c.created_at == s.created_at, "listed created_at {} differs from status {}", c.created_at, s.created_at);
        for (k, v) in &config.labels {
            check!(c.labels.get(k) == Some(v), "listed label {k} is {:?}, not {v:?}", c.labels.get(k));
        }
        Ok(())
    })
    .await
}

async fn started(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "started", |kit| async move {
        let config = kit.shell_config("started", "exec sleep 3600").await?;
        let id = kit.create(config).await?;
        kit.start(&id).await?;
        let s = kit.wait_state(&id, model::ContainerState::ContainerRunning).await?;
        recent("started_at", s.started_at)?;
        check!(s.started_at >= s.created_at, "started_at {} is before created_at {}", s.started_at, s.created_at);
        check!(s.finished_at == 0, "a running container has finished_at {}", s.finished_at);
        let running = kit
            .list(model::ContainerFilter {
                state: Some(model::ContainerStateValue { state: model::ContainerState::ContainerRunning as i32 }),
                pod_sandbox_id: kit.pod.id.clone(),
                ..Default::default()
            })
            .await?;
        check!(running.iter().any(|c| c.id == id), "{id} is not in the RUNNING list of its pod");
        Ok(())
    })
    .await
}

async fn exits_on_its_own(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "exits", |kit| async move {
        let id = kit.run_shell_to_exit("exits", "sleep 1; exit 7").await?;
        let s = kit.wait_exit(&id).await?;
        check!(s.exit_code == 7, "exit code is {}, not 7", s.exit_code);
        recent("finished_at", s.finished_at)?;
        check!(s.finished_at >= s.started_at, "finished_at {} is before started_at {}", s.finished_at, s.started_at);
        check!(s.started_at > 0, "an exited container lost its started_at");
        check!(s.reason == "Error", "reason is {:?}; the kubelet shows Error for a non-zero exit", s.reason);
        Ok(())
    })
    .await
}

async fn completed(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "completed", |kit| async move {
        let id = kit.run_shell_to_exit("completed", "exit 0").await?;
        let s = kit.wait_exit(&id).await?;
        check!(s.exit_code == 0, "exit code is {}", s.exit_code);
        check!(s.reason == "Completed", "reason is {:?}, not Completed", s.reason);
        Ok(())
    })
    .await
}

impl Kit {
    /// Creates and starts a shell container that is expected to exit (no wait for RUNNING).
    pub async fn run_shell_to_exit(&self, name: &str, script: &str) -> Result<String, Failure> {
        let config = self.shell_config(name, script).await?;
        let id = self.create(config).await?;
        self.start(&id).await?;
        Ok(id)
    }
}

async fn idempotent_stop_remove(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "idempotent", |kit| async move {
        let id = kit.run_sleeper("idempotent").await?;
        let mut client = kit.client();
        for round in 1..=2 {
            client
                .stop_container(model::StopContainerRequest { container_id: id.clone(), timeout: 0 })
                .await
                .map_err(|e| Failure::fail(format!("StopContainer #{round}: {:?}: {}", e.code(), e.message())))?;
        }
        let s = kit.status(&id).await?;
        check!(
            s.state == model::ContainerState::ContainerExited as i32,
            "after stop, state is {}",
            state_name(s.state)
        );
        for round in 1..=2 {
            client
                .remove_container(model::RemoveContainerRequest { container_id: id.clone() })
                .await
                .map_err(|e| Failure::fail(format!("RemoveContainer #{round}: {:?}: {}", e.code(), e.message())))?;
        }
        gone(&kit, &id).await
    })
    .await
}

#[derive(Clone, Copy)]
enum Verb {
    Stop,
    Remove,
}

/// The CRI makes both calls idempotent: a container that is already gone (or never was) is not
/// an error. The kubelet's garbage collector and critest's Idempotence specs send such ids.
async fn unknown_container(ctx: Ctx, verb: Verb) -> TestResult {
    let mut client = ctx.kubelet();
    let id = super::podkit::unknown_id();
    for round in 1..=2 {
        let (rpc, answer) = match verb {
            Verb::Stop => (
                "StopContainer",
                client
                    .stop_container(model::StopContainerRequest { container_id: id.clone(), timeout: 0 })
                    .await
                    .map(drop),
            ),
            Verb::Remove => (
                "RemoveContainer",
                client.remove_container(model::RemoveContainerRequest { container_id: id.clone() }).await.map(drop),
            ),
        };
        answer.map_err(|e| {
            Failure::fail(format!(
                "{rpc} #{round} of the unknown id {id}: {:?}: {} (the CRI says a missing container is not an error)",
                e.code(),
                e.message()
            ))
        })?;
    }
    let listed = conkit::list(&ctx, model::ContainerFilter { id: id.clone(), ..Default::default() }).await?;
    check!(listed.is_empty(), "after the calls on the unknown id {id}, ListContainers lists {:?}", ids(&listed));
    Ok(())
}

/// ContainerStatus of `id` is NotFound and ListContainers does not list it.
async fn gone(kit: &Kit, id: &str) -> TestResult {
    match kit.client().container_status(model::ContainerStatusRequest { container_id: id.into(), verbose: false }).await
    {
        Err(e) if e.code() == tonic::Code::NotFound => {}
        Err(e) => {
            return Err(Failure::fail(format!(
                "status of a removed container: {:?} (want NotFound): {}",
                e.code(),
                e.message()
            )))
        }
        Ok(_) => return Err(Failure::fail("a removed container still has a status")),
    }
    let listed = kit.list(model::ContainerFilter { id: id.into(), ..Default::default() }).await?;
    check!(listed.is_empty(), "a removed container is still listed");
    Ok(())
}

async fn remove_running(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "remove-running", |kit| async move {
        let created = kit.create(kit.shell_config("remove-created", "exec sleep 3600").await?).await?;
        kit.client()
            .remove_container(model::RemoveContainerRequest { container_id: created.clone() })
            .await
            .map_err(|e| call_failed("RemoveContainer of a created container", &e))?;
        gone(&kit, &created).await?;
        let id = kit.run_sleeper("remove-running").await?;
        kit.client()
            .remove_container(model::RemoveContainerRequest { container_id: id.clone() })
            .await
            .map_err(|e| call_failed("RemoveContainer of a running container", &e))?;
        gone(&kit, &id).await
    })
    .await
}

fn ids(items: &[model::Container]) -> Vec<&str> {
    items.iter().map(|c| c.id.as_str()).collect()
}

async fn list_filters(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "list", |kit| async move {
        let running = kit.run_sleeper("list-running").await?;
        let config = kit.shell_config("list-created", "exec sleep 3600").await?;
        let created = kit.create(config).await?;
        let state = |s: model::ContainerState| Some(model::ContainerStateValue { state: s as i32 });
        let by_id = kit.list(model::ContainerFilter { id: running.clone(), ..Default::default() }).await?;
        check!(ids(&by_id) == [running.as_str()], "filter by id returned {:?}", ids(&by_id));
        let in_pod =
            kit.list(model::ContainerFilter { pod_sandbox_id: kit.pod.id.clone(), ..Default::default() }).await?;
        let mut found = ids(&in_pod);
        found.sort();
        let mut want = vec![running.as_str(), created.as_str()];
        want.sort();
        check!(found == want, "filter by pod sandbox returned {found:?}, want {want:?}");
        let by_state = kit
            .list(model::ContainerFilter {
                pod_sandbox_id: kit.pod.id.clone(),
                state: state(model::ContainerState::ContainerCreated),
                ..Default::default()
            })
            .await?;
        check!(ids(&by_state) == [created.as_str()], "filter by pod and CREATED returned {:?}", ids(&by_state));
        let selector = [(conkit::CONTAINER_NAME_LABEL.to_string(), "list-running".to_string())]
            .into_iter()
            .chain([("io.kubernetes.pod.uid".to_string(), super::podkit::uid_of(&kit.pod_config))])
            .collect();
        let by_label = kit.list(model::ContainerFilter { label_selector: selector, ..Default::default() }).await?;
        check!(ids(&by_label) == [running.as_str()], "filter by labels returned {:?}", ids(&by_label));
        let nothing = kit
            .list(model::ContainerFilter {
                id: created.clone(),
                state: state(model::ContainerState::ContainerRunning),
                ..Default::default()
            })
            .await?;
        check!(nothing.is_empty(), "id of a CREATED container with state RUNNING matched {:?}", ids(&nothing));
        let other_pod =
            kit.list(model::ContainerFilter { pod_sandbox_id: "0".repeat(64), ..Default::default() }).await?;
        check!(other_pod.is_empty(), "an unknown pod sandbox id matched {:?}", ids(&other_pod));
        Ok(())
    })
    .await
}

async fn status_fields(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "status", |kit| async move {
        let data = tempfile::Builder::new()
            .prefix("lockstep-conformance-mount-")
            .tempdir()
            .map_err(|e| Failure::fail(format!("cannot make a temp dir: {e}")))?;
        let mut config = kit.shell_config("status", "exec sleep 3600").await?;
        config.mounts.push(model::Mount {
            container_path: "/data".into(),
            host_path: data.path().display().to_string(),
            readonly: true,
            ..Default::default()
        });
        config.annotations.insert("lockstep.conformance/note".into(), "status".into());
        let id = kit.run(config.clone()).await?;
        let s = kit.status(&id).await?;
        check!(s.metadata == config.metadata, "metadata {:?} differs from the request's", s.metadata);
        for (k, v) in &config.labels {
            check!(s.labels.get(k) == Some(v), "label {k} is {:?}, not {v:?}", s.labels.get(k));
        }
        for (k, v) in &config.annotations {
            check!(s.annotations.get(k) == Some(v), "annotation {k} is {:?}, not {v:?}", s.annotations.get(k));
        }
        let shell = kit.registry.fixture(fixtures::SHELL);
        let image = s.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        check!(!image.is_empty(), "status.image is empty: the kubelet shows no image for the container");
        let names_it = image == shell.id()
            || image.ends_with(&format!("{}:{}", fixtures::SHELL, fixtures::TAG))
            || image.contains(shell.top_digest());
        check!(names_it, "status.image {image:?} names neither the image ID nor its tag or digest");
        check!(
            s.image_ref.contains(shell.id()) || s.image_ref.contains(shell.top_digest()),
            "status.image_ref {:?} holds neither the image ID {} nor its digest {}",
            s.image_ref,
            shell.id(),
            shell.top_digest()
        );
        let want_log = kit.log_file("status");
        check!(
            std::path::Path::new(&s.log_path) == want_log,
            "log_path is {:?}; the kubelet reads {}",
            s.log_path,
            want_log.display()
        );
        let mount = s.mounts.iter().find(|m| m.container_path == "/data");
        let Some(mount) = mount else {
            return Err(Failure::fail(format!("status.mounts lacks /data: {:?}", s.mounts)));
        };
        check!(
            mount.host_path == data.path().display().to_string(),
            "the /data mount's host path is {:?}",
            mount.host_path
        );
        check!(mount.readonly, "the /data mount is not reported read-only");
        Ok(())
    })
    .await
}

async fn status_image_id(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "image-id", |kit| async move {
        let id = kit.run_sleeper("image-id").await?;
        let s = kit.status(&id).await?;
        let want = kit.registry.fixture(fixtures::SHELL).id().to_string();
        check!(s.image_id == want, "ContainerStatus.image_id is {:?}, not the image ID {want}", s.image_id);
        let listed = kit.list(model::ContainerFilter { id: id.clone(), ..Default::default() }).await?;
        let listed_id = listed.first().map(|c| c.image_id.clone()).unwrap_or_default();
        check!(listed_id == want, "Container.image_id in ListContainers is {listed_id:?}, not {want}");
        Ok(())
    })
    .await
}

async fn status_user(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "user", |kit| async move {
        let mut config = kit.shell_config("user", "exec sleep 3600").await?;
        let sc = security(&mut config);
        sc.run_as_user = Some(model::Int64Value { value: 1000 });
        sc.run_as_group = Some(model::Int64Value { value: 2000 });
        sc.supplemental_groups = vec![3000];
        let id = kit.run(config).await?;
        let s = kit.status(&id).await?;
        let Some(user) = s.user.and_then(|u| u.linux) else {
            return Err(Failure::fail("ContainerStatus.user.linux is absent (Kubernetes 1.31, KEP-3619)"));
        };
        check!(user.uid == 1000 && user.gid == 2000, "user is uid {} gid {}, not 1000 / 2000", user.uid, user.gid);
        check!(
            user.supplemental_groups.contains(&3000),
            "supplemental_groups {:?} lack 3000",
            user.supplemental_groups
        );
        let inside: Vec<i64> =
            kit.exec_ok(&id, &["id", "-G"]).await?.split_whitespace().filter_map(|g| g.parse().ok()).collect();
        for g in &user.supplemental_groups {
            check!(inside.contains(g), "status reports group {g}, but the process has {inside:?}");
        }
        Ok(())
    })
    .await
}

async fn status_stop_signal(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "stop-signal", |kit| async move {
        let mut config = kit.shell_config("stop-signal", "exec sleep 3600").await?;
        config.stop_signal = model::Signal::Sigusr2 as i32;
        let id = kit.create(config).await?;
        let s = kit.status(&id).await?;
        check!(
            s.stop_signal == model::Signal::Sigusr2 as i32,
            "ContainerStatus.stop_signal is {:?}, not SIGUSR2 (Kubernetes 1.33, KEP-4960)",
            model::Signal::try_from(s.stop_signal)
        );
        Ok(())
    })
    .await
}

/// The container's own process environment (/proc/1/environ) as `KEY=value` lines.
async fn init_environment(kit: &Kit, id: &str) -> Result<Vec<String>, Failure> {
    let text = kit.sh(id, "tr '\\0' '\\n' < /proc/1/environ").await?;
    Ok(text.lines().map(String::from).collect())
}

async fn image_defaults(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "image-env", |kit| async move {
        let image = kit.image(fixtures::ENV).await?;
        let mut config = kit.config("image-env", &image, &["sleep", "3600"]);
        for (key, value) in [("LOCKSTEP_BOTH", "request"), ("LOCKSTEP_FROM_REQUEST", "request")] {
            config.envs.push(model::KeyValue { key: key.into(), value: value.as_bytes().to_vec() });
        }
        let id = kit.run(config).await?;
        let want = ["LOCKSTEP_FROM_IMAGE=image", "LOCKSTEP_BOTH=request", "LOCKSTEP_FROM_REQUEST=request"];
        for (who, env) in [
            ("the container's process", init_environment(&kit, &id).await?),
            ("an exec", kit.exec_ok(&id, &["env"]).await?.lines().map(String::from).collect()),
        ] {
            for w in want {
                check!(env.iter().any(|e| e == w), "{who} lacks {w}: its environment is {env:?}");
            }
            check!(
                env.iter().filter(|e| e.starts_with("LOCKSTEP_BOTH=")).count() == 1,
                "{who} has LOCKSTEP_BOTH more than once: {env:?}"
            );
            check!(env.iter().any(|e| e.starts_with("PATH=")), "{who} lost the image's PATH: {env:?}");
        }
        let cwd = kit.exec_ok(&id, &["readlink", "/proc/1/cwd"]).await?;
        check!(cwd.trim() == fixtures::IMAGE_WORKDIR, "the process runs in {:?}, not the image's WORKDIR", cwd.trim());
        let mut elsewhere = kit.config("image-env-workdir", &image, &["sleep", "3600"]);
        elsewhere.working_dir = "/tmp".into();
        let id = kit.run(elsewhere).await?;
        let cwd = kit.exec_ok(&id, &["readlink", "/proc/1/cwd"]).await?;
        check!(cwd.trim() == "/tmp", "with working_dir /tmp the process runs in {:?}", cwd.trim());
        Ok(())
    })
    .await
}

/// From 1.34 KeyValue.value is bytes, so a kubelet can send a value that is not UTF-8 (here
/// Latin-1 "café" and a lone 0xff). The runtime must take it; the OCI runtime's config.json is
/// JSON, which holds only Unicode, so each bad byte becomes U+FFFD (as Go's encoding/json writes
/// it for containerd and CRI-O) and the rest arrives unchanged.
async fn env_bytes(ctx: Ctx) -> TestResult {
    const VALUE: &[u8] = b"caf\xe9 \xff";
    with_kit(&ctx, "env-bytes", |kit| async move {
        let mut config = kit.shell_config("env-bytes", "exec sleep 3600").await?;
        config.envs.push(model::KeyValue { key: "LOCKSTEP_BYTES".into(), value: VALUE.to_vec() });
        let id = kit.run(config).await?;
        let r = kit
            .exec(&id, &["sh", "-c", "printf %s \"$LOCKSTEP_BYTES\""], 30)
            .await
            .map_err(|e| call_failed("ExecSync", &e))?;
        let want = String::from_utf8_lossy(VALUE);
        check!(
            r.stdout == want.as_bytes(),
            "the value arrived as {:?} ({:?}), not {want:?}",
            String::from_utf8_lossy(&r.stdout),
            r.stdout
        );
        Ok(())
    })
    .await
}

async fn kubelet_retry(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "retry", |kit| async move {
        let config = kit.shell_config("retry", "exec sleep 3600").await?;
        let (a, b) = (kit.clone(), kit.clone());
        let (first, second) = tokio::join!(a.try_create(config.clone()), b.try_create(config.clone()));
        let third = kit.try_create(config).await;
        let fail = |which: &str, e: tonic::Status| {
            Failure::fail(format!(
                "the {which} call failed instead of returning the same id: {:?}: {}",
                e.code(),
                e.message()
            ))
        };
        let first = first.map_err(|e| fail("first", e))?;
        let second = second.map_err(|e| fail("concurrent", e))?;
        let third = third.map_err(|e| fail("later", e))?;
        check!(first == second, "two concurrent calls made two containers ({first} and {second})");
        check!(first == third, "a retry after the first finished made another container ({third})");
        Ok(())
    })
    .await
}

async fn stream_containers(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "stream", |kit| async move {
        let id = kit.run_sleeper("stream").await?;
        let filter = model::ContainerFilter { pod_sandbox_id: kit.pod.id.clone(), ..Default::default() };
        let listed = kit.list(filter.clone()).await?;
        let mut stream = kit
            .client()
            .stream_containers(model::StreamContainersRequest { filter: Some(filter) })
            .await
            .map_err(|e| call_failed("StreamContainers", &e))?;
        let mut streamed = Vec::new();
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| call_failed("StreamContainers (receiving)", &e))?;
            streamed.extend(item.containers);
        }
        check!(ids(&streamed) == ids(&listed), "streamed {:?}, listed {:?}", ids(&streamed), ids(&listed));
        check!(ids(&streamed) == [id.as_str()], "the stream has {:?}, not the pod's container", ids(&streamed));
        Ok(())
    })
    .await
}

/// How a bad request came out.
enum Refusal {
    /// CreateContainer refused it.
    AtCreate(tonic::Status),
    /// CreateContainer accepted it and StartContainer refused it.
    AtStart(tonic::Status),
}

/// Sends a bad request as the kubelet would (create, then start); the container must never
/// run, and a refused CreateContainer must leave nothing listed in the pod.
async fn never_runs(kit: &Kit, what: &str, sandbox: &str, config: model::ContainerConfig) -> Result<Refusal, Failure> {
    let filter = model::ContainerFilter { pod_sandbox_id: sandbox.into(), ..Default::default() };
    let before = kit.list(filter.clone()).await?.len();
    if let Some(name) = config.metadata.as_ref().map(|m| m.name.clone()) {
        let _ = std::fs::create_dir_all(kit.log_dir.join(name));
    }
    let created = kit
        .client()
        .create_container(model::CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(config),
            sandbox_config: Some(kit.pod_config.clone()),
        })
        .await;
    let id = match created {
        // A runtime without CreateContainer refuses everything: that tells nothing about this input.
        Err(e) if e.code() == tonic::Code::Unimplemented => return Err(call_failed("CreateContainer", &e)),
        Err(e) => {
            let after = kit.list(filter).await?.len();
            check!(after == before, "{what}: the refused CreateContainer left a container listed");
            return Ok(Refusal::AtCreate(e));
        }
        Ok(r) => r.container_id,
    };
    kit.adopt(&id);
    match kit.client().start_container(model::StartContainerRequest { container_id: id.clone() }).await {
        Ok(_) => {
            let s = kit.status(&id).await?;
            Err(Failure::fail(format!(
                "{what}: CreateContainer and StartContainer both succeeded (state {}, exit code {})",
                state_name(s.state),
                s.exit_code
            )))
        }
        Err(e) if e.code() == tonic::Code::Unimplemented => Err(call_failed("StartContainer", &e)),
        Err(e) => {
            let s = kit.status(&id).await?;
            check!(
                s.state != model::ContainerState::ContainerRunning as i32,
                "{what}: StartContainer failed but the container runs"
            );
            Ok(Refusal::AtStart(e))
        }
    }
}

async fn bad_sandbox(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "bad-sandbox", |kit| async move {
        let config = kit.shell_config("bad-sandbox", "exec sleep 3600").await?;
        never_runs(&kit, "an unknown pod sandbox", &"0".repeat(64), config.clone()).await?;
        // A second pod, stopped, as the kubelet sees one while it tears a pod down.
        let log_dir = kit.log_dir.join("stopped-pod");
        let _ = std::fs::create_dir_all(&log_dir);
        let pod_config = conkit::pod_config("stopped", &log_dir);
        let mut client = kit.client();
        let stopped = super::podkit::run_pod(&mut client, pod_config.clone()).await?;
        let result = async {
            client
                .stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: stopped.clone() })
                .await
                .map_err(|e| call_failed("StopPodSandbox", &e))?;
            let in_stopped = kit.with_pod_config(pod_config);
            never_runs(&in_stopped, "a stopped pod sandbox", &stopped, config).await.map(drop)
        }
        .await;
        let removed = super::podkit::stop_and_remove(&mut client, &stopped).await;
        result.and(removed)
    })
    .await
}

async fn bad_image(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "bad-image", |kit| async move {
        let absent = format!("{}/lockstep/never-pulled:1", kit.registry.host);
        let config = kit.config("bad-image", &absent, &["sh"]);
        never_runs(&kit, "an image that is not present", &kit.pod.id, config).await.map(drop)
    })
    .await
}

/// A path under a fresh temporary directory that does not exist (removed with the directory,
/// in case a runtime creates it).
fn missing_path() -> Result<(tempfile::TempDir, String), Failure> {
    let dir = tempfile::Builder::new()
        .prefix("lockstep-conformance-missing-")
        .tempdir()
        .map_err(|e| Failure::fail(format!("cannot make a temp dir: {e}")))?;
    let path = dir.path().join("does-not-exist").display().to_string();
    Ok((dir, path))
}

async fn bad_mount_source(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "bad-mount-source", |kit| async move {
        let (_dir, missing) = missing_path()?;
        let mut config = kit.shell_config("bad-mount-source", "exec sleep 3600").await?;
        config.mounts.push(model::Mount { container_path: "/data".into(), host_path: missing, ..Default::default() });
        never_runs(&kit, "a mount of a missing host path", &kit.pod.id, config).await.map(drop)
    })
    .await
}

async fn bad_mount_destination(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "bad-mount-destination", |kit| async move {
        let dir = tempfile::tempdir().map_err(|e| Failure::fail(format!("cannot make a temp dir: {e}")))?;
        let mut config = kit.shell_config("bad-mount-destination", "exec sleep 3600").await?;
        config.mounts.push(model::Mount {
            container_path: "relative/data".into(),
            host_path: dir.path().display().to_string(),
            ..Default::default()
        });
        never_runs(&kit, "a relative mount destination", &kit.pod.id, config).await.map(drop)
    })
    .await
}

async fn bad_capability(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "bad-capability", |kit| async move {
        let mut config = kit.shell_config("bad-capability", "exec sleep 3600").await?;
        security(&mut config).capabilities =
            Some(model::Capability { add_capabilities: vec!["CAP_LOCKSTEP_NONSENSE".into()], ..Default::default() });
        never_runs(&kit, "an unknown capability", &kit.pod.id, config).await.map(drop)
    })
    .await
}

async fn bad_username(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "bad-username", |kit| async move {
        let mut config = kit.shell_config("bad-username", "exec sleep 3600").await?;
        security(&mut config).run_as_username = "lockstep-nobody-by-that-name".into();
        never_runs(&kit, "a run_as_username absent from the image", &kit.pod.id, config).await.map(drop)
    })
    .await
}

/// The CRI: run_as_group is honoured only with run_as_user or run_as_username (a gid alone
/// would pair the image's user with a group the pod did not ask for).
async fn group_without_user(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "group-only", |kit| async move {
        let mut config = kit.shell_config("group-only", "exec sleep 3600").await?;
        security(&mut config).run_as_group = Some(model::Int64Value { value: 2000 });
        never_runs(&kit, "run_as_group without run_as_user", &kit.pod.id, config).await.map(drop)
    })
    .await
}

/// Every bad request of this suite, and the code and words a strict runtime refuses it with.
async fn strict_refusals(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "strict", |kit| async move {
        use tonic::Code::{InvalidArgument, NotFound};
        let base = kit.shell_config("strict", "exec sleep 3600").await?;
        let (_dir, missing) = missing_path()?;
        // (what, sandbox, config, code, words of which the message must hold one: field or value)
        let mut cases: Vec<(&str, String, model::ContainerConfig, tonic::Code, Vec<String>)> = Vec::new();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let unknown = "0".repeat(64);
        cases.push((
            "an unknown pod sandbox",
            unknown.clone(),
            base.clone(),
            NotFound,
            words(&[&unknown, "pod_sandbox_id"]),
        ));
        let absent = format!("{}/lockstep/never-pulled:1", kit.registry.host);
        cases.push((
            "an image that is not present",
            kit.pod.id.clone(),
            kit.config("strict", &absent, &["sh"]),
            NotFound,
            words(&[&absent, "config.image"]),
        ));
        let mut c = base.clone();
        c.mounts.push(model::Mount {
            container_path: "/data".into(),
            host_path: missing.clone(),
            ..Default::default()
        });
        cases.push(("a missing mount source", kit.pod.id.clone(), c, NotFound, words(&["host_path", &missing])));
        let mut c = base.clone();
        c.mounts.push(model::Mount {
            container_path: "relative/data".into(),
            host_path: std::env::temp_dir().display().to_string(),
            ..Default::default()
        });
        cases.push((
            "a relative mount destination",
            kit.pod.id.clone(),
            c,
            InvalidArgument,
            words(&["container_path", "relative/data"]),
        ));
        let mut c = base.clone();
        security(&mut c).capabilities =
            Some(model::Capability { add_capabilities: vec!["CAP_LOCKSTEP_NONSENSE".into()], ..Default::default() });
        cases.push((
            "an unknown capability",
            kit.pod.id.clone(),
            c,
            InvalidArgument,
            words(&["add_capabilities", "CAP_LOCKSTEP_NONSENSE"]),
        ));
        let mut c = base.clone();
        security(&mut c).run_as_username = "lockstep-nobody-by-that-name".into();
        cases.push((
            "a run_as_username absent from the image",
            kit.pod.id.clone(),
            c,
            NotFound,
            words(&["run_as_username", "lockstep-nobody-by-that-name"]),
        ));
        let mut problems = Vec::new();
        for (i, (what, sandbox, mut config, code, words)) in cases.into_iter().enumerate() {
            // Each its own name: a runtime that accepted one must not take the next for a retry.
            config.metadata = Some(model::ContainerMetadata { name: format!("strict-{i}"), attempt: 0 });
            let names_it = |m: &str| words.iter().any(|w| m.contains(w.as_str()));
            match never_runs(&kit, what, &sandbox, config).await {
                Ok(Refusal::AtCreate(e)) if e.code() == code && names_it(e.message()) => {}
                Ok(Refusal::AtCreate(e)) => problems.push(format!(
                    "{what}: CreateContainer answered {:?} {:?} (want {code:?} naming one of {words:?})",
                    e.code(),
                    e.message()
                )),
                Ok(Refusal::AtStart(e)) => problems.push(format!(
                    "{what}: CreateContainer accepted it; StartContainer refused it ({:?}: {})",
                    e.code(),
                    e.message()
                )),
                Err(Failure::Fail(reason)) => problems.push(reason),
                Err(skip) => return Err(skip),
            }
        }
        // A negative timeout is a caller's mistake: refused, not taken as zero.
        let id = kit.run_sleeper("strict-timeouts").await?;
        match kit.exec(&id, &["true"], -1).await {
            Err(e) if e.code() == InvalidArgument && e.message().contains("timeout") => {}
            Err(e) => problems.push(format!("ExecSync timeout -1: {:?} {:?}", e.code(), e.message())),
            Ok(r) => problems.push(format!("ExecSync timeout -1 was accepted (exit code {})", r.exit_code)),
        }
        let stop =
            kit.client().stop_container(model::StopContainerRequest { container_id: id.clone(), timeout: -1 }).await;
        match stop {
            Err(e) if e.code() == InvalidArgument && e.message().contains("timeout") => {}
            Err(e) => problems.push(format!("StopContainer timeout -1: {:?} {:?}", e.code(), e.message())),
            Ok(_) => problems.push("StopContainer timeout -1 was accepted".into()),
        }
        check!(problems.is_empty(), "{}", problems.join("; "));
        Ok(())
    })
    .await
}

/// Polls until `path` exists (a container's sign of life through a shared volume).
async fn wait_file(path: &std::path::Path) -> TestResult {
    let deadline = std::time::Instant::now() + conkit::STATE_WAIT;
    while !path.exists() {
        check!(
            std::time::Instant::now() < deadline,
            "{} did not appear within {:?}",
            path.display(),
            conkit::STATE_WAIT
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn restart_survival(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "restart", |kit| async move {
        let shared = tempfile::Builder::new()
            .prefix("lockstep-conformance-shared-")
            .tempdir()
            .map_err(|e| Failure::fail(format!("cannot make a temp dir: {e}")))?;
        let volume = model::Mount {
            container_path: "/shared".into(),
            host_path: shared.path().display().to_string(),
            ..Default::default()
        };
        let runner = kit.run_sleeper("restart-runner").await?;
        let mut counter = kit.shell_config("restart-counter", COUNTER_SCRIPT).await?;
        counter.mounts.push(volume.clone());
        let counter = kit.run(counter).await?;
        let mut exiter = kit
            .shell_config(
                "restart-exiter",
                "while [ ! -e /shared/go ]; do sleep 0.05; done; touch /shared/exiting; exit 3",
            )
            .await?;
        exiter.mounts.push(volume);
        let exiter = kit.run(exiter).await?;
        let waiting = kit.create(kit.shell_config("restart-created", "exec sleep 3600").await?).await?;

        // Kill the runtime; while it is down, one container exits. It is started again
        // whatever happens, so that the tests after this one have a runtime.
        kit.ctx.kill_runtime().await?;
        let go = std::fs::write(shared.path().join("go"), "");
        if go.is_ok() {
            wait_file(&shared.path().join("exiting")).await.ok();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        kit.ctx.start_runtime().await?;
        go.map_err(|e| Failure::fail(format!("cannot write to the shared volume: {e}")))?;

        let s = kit.status(&runner).await?;
        check!(
            s.state == model::ContainerState::ContainerRunning as i32,
            "the running container is {} after the restart",
            state_name(s.state)
        );
        kit.exec_ok(&runner, &["true"]).await?;
        let s = kit.status(&exiter).await?;
        check!(
            s.state == model::ContainerState::ContainerExited as i32 && s.exit_code == 3,
            "the container that exited while the runtime was down is {} with exit code {} (want EXITED, 3)",
            state_name(s.state),
            s.exit_code
        );
        let s = kit.status(&waiting).await?;
        check!(
            s.state == model::ContainerState::ContainerCreated as i32,
            "the created container is {}",
            state_name(s.state)
        );
        kit.start(&waiting).await?;
        kit.wait_state(&waiting, model::ContainerState::ContainerRunning).await?;
        let listed =
            kit.list(model::ContainerFilter { pod_sandbox_id: kit.pod.id.clone(), ..Default::default() }).await?;
        check!(listed.len() == 4, "after the restart the pod lists {} containers, not 4", listed.len());

        // The counter kept logging across the restart: no line lost, none repeated.
        tokio::time::sleep(Duration::from_millis(500)).await;
        kit.client()
            .stop_container(model::StopContainerRequest { container_id: counter.clone(), timeout: 0 })
            .await
            .map_err(|e| call_failed("StopContainer", &e))?;
        let text = std::fs::read_to_string(kit.log_file("restart-counter"))
            .map_err(|e| Failure::fail(format!("cannot read the counter's log: {e}")))?;
        counted_without_gaps(&text)?;
        Ok(())
    })
    .await
}

/// Prints 0, 1, 2, … on stdout, one line every 20 ms.
pub const COUNTER_SCRIPT: &str = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.02; done";

/// The stdout lines of a counter's CRI log are 0, 1, 2, … with none missing or repeated.
pub fn counted_without_gaps(log: &str) -> Result<usize, Failure> {
    let entries = conkit::parse_log(log).map_err(Failure::fail)?;
    let numbers: Vec<String> =
        conkit::messages(&entries).into_iter().filter(|(s, _)| s == "stdout").map(|(_, t)| t).collect();
    check!(!numbers.is_empty(), "the counter logged nothing");
    for (i, n) in numbers.iter().enumerate() {
        check!(*n == i.to_string(), "line {i} of the counter's log is {n:?}: a line was lost or repeated");
    }
    Ok(numbers.len())
}
