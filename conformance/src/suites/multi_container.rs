//! multi-container: what containers of one pod share — the network (one serves on localhost,
//! another reaches it), the IPC and UTS namespaces and the pod's hostname, a volume, and with
//! a shared PID namespace each other's processes (and without one, not); and what they keep
//! apart: each its own log file.

use std::time::Duration;

use lockstep_cri::{model, Minor};

use super::conkit::{with_kit, with_kit_config, Kit};
use super::containers::IMAGES;
use super::podkit::namespace_options;
use crate::check;
use crate::framework::{Ctx, Failure, Need, Test, TestFuture, TestResult};
use lockstep_testkit::fixtures;

const AREA: &str = "multi-container";

fn test(name: &'static str, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    vec![
        test("A container reaches another of its pod on localhost", IMAGES, |c| Box::pin(localhost(c))),
        test("Containers of a pod share its network, IPC and UTS namespaces and hostname", IMAGES, |c| {
            Box::pin(shared_namespaces(c))
        }),
        test("Containers of a pod share a volume", IMAGES, |c| Box::pin(shared_volume(c))),
        test("Each container of a pod writes its own log file", IMAGES, |c| Box::pin(own_logs(c))),
        test("With a shared PID namespace, containers see each other's processes", IMAGES, |c| Box::pin(shared_pid(c))),
        test("Without a shared PID namespace, each container has its own", IMAGES, |c| Box::pin(own_pid(c))),
    ]
}

async fn localhost(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "localhost", |kit| async move {
        let web = kit.image(fixtures::WEB).await?;
        // The image's own CMD: busybox httpd on WEB_PORT.
        let server = kit.run(kit.config("web", &web, &[])).await?;
        let client = kit.run_sleeper("client").await?;
        let url = format!("http://127.0.0.1:{}/index.html", fixtures::WEB_PORT);
        let mut last = String::new();
        for _ in 0..50 {
            let r = kit.exec(&client, &["wget", "-q", "-O", "-", &url], 30).await;
            match r {
                Ok(r) if r.exit_code == 0 => {
                    let body = String::from_utf8_lossy(&r.stdout);
                    check!(body == "lockstep web fixture\n", "the server answered {body:?}");
                    let s = kit.status(&server).await?;
                    check!(s.state == model::ContainerState::ContainerRunning as i32, "the server stopped");
                    return Ok(());
                }
                Ok(r) => last = String::from_utf8_lossy(&r.stderr).into_owned(),
                Err(e) => last = format!("{:?}: {}", e.code(), e.message()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Failure::fail(format!("the client never reached {url} in the pod: {last}")))
    })
    .await
}

/// readlink of /proc/self/ns/<kind> from an exec in each container.
async fn namespace(kit: &Kit, id: &str, kind: &str) -> Result<String, Failure> {
    Ok(kit.exec_ok(id, &["readlink", &format!("/proc/1/ns/{kind}")]).await?.trim().to_string())
}

async fn shared_namespaces(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "namespaces", |kit| async move {
        let a = kit.run_sleeper("a").await?;
        let b = kit.run_sleeper("b").await?;
        for kind in ["net", "ipc", "uts"] {
            let (na, nb) = (namespace(&kit, &a, kind).await?, namespace(&kit, &b, kind).await?);
            check!(na == nb, "the containers are in different {kind} namespaces: {na} and {nb}");
        }
        let own = std::fs::read_link("/proc/self/ns/net").map(|p| p.display().to_string()).unwrap_or_default();
        check!(namespace(&kit, &a, "net").await? != own, "the pod's containers are in the node's network namespace");
        let hostname = kit.exec_ok(&b, &["hostname"]).await?;
        check!(
            hostname.trim() == kit.pod_config.hostname,
            "a container's hostname is {:?}, not the pod's {:?}",
            hostname.trim(),
            kit.pod_config.hostname
        );
        Ok(())
    })
    .await
}

async fn shared_volume(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "volume", |kit| async move {
        let dir = tempfile::Builder::new()
            .prefix("lockstep-conformance-volume-")
            .tempdir()
            .map_err(|e| Failure::fail(format!("cannot make a temp dir: {e}")))?;
        let mount = model::Mount {
            container_path: "/shared".into(),
            host_path: dir.path().display().to_string(),
            ..Default::default()
        };
        let mut writer =
            kit.shell_config("writer", "echo written by the writer > /shared/note; exec sleep 3600").await?;
        writer.mounts.push(mount.clone());
        let mut reader = kit.shell_config("reader", "exec sleep 3600").await?;
        reader.mounts.push(mount);
        kit.run(writer).await?;
        let reader = kit.run(reader).await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = kit.exec(&reader, &["cat", "/shared/note"], 30).await;
            if let Some(r) = r.ok().filter(|r| r.exit_code == 0) {
                check!(
                    r.stdout == b"written by the writer\n",
                    "the reader sees {:?}",
                    String::from_utf8_lossy(&r.stdout)
                );
                return Ok(());
            }
            check!(std::time::Instant::now() < deadline, "the reader never saw the writer's file");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

async fn own_logs(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "logs", |kit| async move {
        for name in ["first", "second"] {
            kit.run_shell(name, &format!("echo I am {name}; exec sleep 3600")).await?;
        }
        for (name, other) in [("first", "second"), ("second", "first")] {
            let path = kit.log_file(name);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let text = loop {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if text.contains(&format!("I am {name}")) || std::time::Instant::now() > deadline {
                    break text;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            check!(text.contains(&format!("I am {name}")), "{}'s log lacks its line: {text:?}", path.display());
            check!(!text.contains(&format!("I am {other}")), "{}'s log holds {other}'s line: {text:?}", path.display());
        }
        Ok(())
    })
    .await
}

/// The command lines of the processes an exec in `id` sees.
async fn processes(kit: &Kit, id: &str) -> Result<String, Failure> {
    kit.exec_ok(id, &["ps", "-o", "args"]).await
}

async fn shared_pid(ctx: Ctx) -> TestResult {
    let adjust = |c: &mut model::PodSandboxConfig| namespace_options(c).pid = model::NamespaceMode::Pod as i32;
    with_kit_config(&ctx, "shared-pid", adjust, |kit| async move {
        kit.run_shell("a", "exec sleep 4243").await?;
        let b = kit.run_sleeper("b").await?;
        let seen = processes(&kit, &b).await?;
        check!(seen.contains("sleep 4243"), "with pid POD, b does not see a's process:\n{seen}");
        Ok(())
    })
    .await
}

async fn own_pid(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "own-pid", |kit| async move {
        kit.run_shell("a", "exec sleep 4244").await?;
        let b = kit.run_sleeper("b").await?;
        let seen = processes(&kit, &b).await?;
        check!(!seen.contains("sleep 4244"), "with pid CONTAINER, b sees a's process:\n{seen}");
        let first = seen.lines().nth(1).unwrap_or("");
        check!(first.contains("sleep 3600"), "b's own process is not PID 1 of its namespace:\n{seen}");
        Ok(())
    })
    .await
}
