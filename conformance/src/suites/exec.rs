//! exec: ExecSync as the kubelet uses it for exec probes and preStop hooks — stdout, stderr
//! and the exit code; a timeout that ends the command and answers DeadlineExceeded (which
//! cri-client turns into a probe timeout) with no process left behind; the container's
//! environment, user and working directory; and a refusal for a container that is not running.

use std::time::{Duration, Instant};

use lockstep_cri::{model, Minor};

use super::conkit::{security, with_kit};
use super::containers::IMAGES;
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};

const AREA: &str = "exec";

fn test(name: &'static str, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    vec![
        test("ExecSync returns stdout, stderr and the exit code", IMAGES, |c| Box::pin(output(c))),
        test("ExecSync runs with the container's environment, user and working directory", IMAGES, |c| {
            Box::pin(environment(c))
        }),
        test("ExecSync past its timeout answers DeadlineExceeded and leaves no process behind", IMAGES, |c| {
            Box::pin(timeout(c))
        }),
        test("ExecSync in an exited container fails", IMAGES, |c| Box::pin(exited(c))),
    ]
}

async fn output(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "exec-output", |kit| async move {
        let id = kit.run_sleeper("exec-output").await?;
        let r = kit
            .exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"], 30)
            .await
            .map_err(|e| call_failed("ExecSync", &e))?;
        check!(r.exit_code == 3, "exit code is {}, not 3", r.exit_code);
        check!(r.stdout == b"out\n", "stdout is {:?}", String::from_utf8_lossy(&r.stdout));
        check!(r.stderr == b"err\n", "stderr is {:?}", String::from_utf8_lossy(&r.stderr));
        let ok = kit.exec(&id, &["echo", "hello"], 0).await.map_err(|e| call_failed("ExecSync (no timeout)", &e))?;
        check!(
            ok.exit_code == 0 && ok.stdout == b"hello\n",
            "`echo hello` gave {:?} with exit {}",
            ok.stdout,
            ok.exit_code
        );
        Ok(())
    })
    .await
}

async fn environment(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "exec-env", |kit| async move {
        let mut config = kit.shell_config("exec-env", "exec sleep 3600").await?;
        config.envs.push(model::KeyValue { key: "LOCKSTEP_GREETING".into(), value: b"hello there".to_vec() });
        config.working_dir = "/tmp".into();
        security(&mut config).run_as_user = Some(model::Int64Value { value: 4321 });
        let id = kit.run(config).await?;
        let out = kit.sh(&id, "echo \"$LOCKSTEP_GREETING\"; id -u; pwd").await?;
        let lines: Vec<&str> = out.lines().collect();
        check!(lines == ["hello there", "4321", "/tmp"], "env, uid and cwd of the exec are {lines:?}");
        Ok(())
    })
    .await
}

async fn timeout(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "exec-timeout", |kit| async move {
        let id = kit.run_sleeper("exec-timeout").await?;
        let started = Instant::now();
        let result = kit.exec(&id, &["sleep", "4242"], 1).await;
        let took = started.elapsed();
        match result {
            Err(e) if e.code() == tonic::Code::DeadlineExceeded => {}
            Err(e) => {
                return Err(Failure::fail(format!(
                    "ExecSync past its timeout answered {:?} ({}); cri-client reports a probe timeout only for DeadlineExceeded",
                    e.code(),
                    e.message()
                )))
            }
            Ok(r) => {
                return Err(Failure::fail(format!(
                    "ExecSync past its 1 s timeout succeeded after {took:?} with exit code {}",
                    r.exit_code
                )))
            }
        }
        check!(took < Duration::from_secs(10), "a 1 s timeout took {took:?} to answer");
        // The command must not outlive its timeout (critest: no `sleep` left).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ps = kit.exec_ok(&id, &["ps", "-o", "args"]).await?;
            if !ps.lines().any(|l| l.contains("sleep 4242")) {
                return Ok(());
            }
            check!(Instant::now() < deadline, "the timed-out command still runs 10 s later:\n{ps}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

async fn exited(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "exec-exited", |kit| async move {
        let id = kit.run_shell_to_exit("exec-exited", "exit 0").await?;
        kit.wait_exit(&id).await?;
        match kit.exec(&id, &["true"], 10).await {
            Err(_) => Ok(()),
            Ok(r) => {
                Err(Failure::fail(format!("ExecSync in an exited container succeeded (exit code {})", r.exit_code)))
            }
        }
    })
    .await
}
