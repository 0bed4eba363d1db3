//! container-logs: what the kubelet reads from log_directory/log_path — the CRI log format
//! (RFC3339Nano time, stream, P/F tag, text) for stdout and stderr, long lines split into
//! partial entries that join back to the line, and log rotation: the kubelet renames the file
//! and calls ReopenContainerLog; new lines go to a new file, none lost or repeated.

use std::time::Duration;

use lockstep_cri::{model, Minor};

use super::conkit::{self, with_kit};
use super::containers::{counted_without_gaps, COUNTER_SCRIPT, IMAGES};
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};

const AREA: &str = "container-logs";

fn test(name: &'static str, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs, timeout: Duration::from_secs(120), body }
}

pub fn tests() -> Vec<Test> {
    vec![
        test("stdout and stderr are written to log_directory/log_path in the CRI log format", IMAGES, |c| {
            Box::pin(format(c))
        }),
        test("A 40 KiB line comes back whole when its partial entries are joined", IMAGES, |c| Box::pin(long_line(c))),
        test("ReopenContainerLog after a rename: new lines go to a new file, none lost or repeated", IMAGES, |c| {
            Box::pin(reopen(c))
        }),
    ]
}

fn read(path: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::fail(format!("cannot read the container log {}: {e}", path.display())))
}

async fn format(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "log-format", |kit| async move {
        let started = conkit::now_nanos();
        let id =
            kit.run_shell_to_exit("log-format", "echo out-1; echo err-1 >&2; echo out-2; echo; echo 'a  b '").await?;
        kit.wait_exit(&id).await?;
        let text = read(&kit.log_file("log-format"))?;
        let entries = conkit::parse_log(&text).map_err(Failure::fail)?;
        let ended = conkit::now_nanos();
        for e in &entries {
            check!(
                e.time >= started - 5_000_000_000 && e.time <= ended + 5_000_000_000,
                "an entry's time {} is outside the container's life: {text}",
                e.time
            );
        }
        let times: Vec<i128> = entries.iter().filter(|e| e.stream == "stdout").map(|e| e.time).collect();
        check!(times.windows(2).all(|w| w[0] <= w[1]), "stdout entries are out of time order:\n{text}");
        let of = |stream: &str| -> Vec<String> {
            conkit::messages(&entries).into_iter().filter(|(s, _)| s == stream).map(|(_, t)| t).collect()
        };
        check!(of("stdout") == ["out-1", "out-2", "", "a  b "], "stdout lines are {:?}:\n{text}", of("stdout"));
        check!(of("stderr") == ["err-1"], "stderr lines are {:?}:\n{text}", of("stderr"));
        check!(entries.iter().all(|e| !e.partial), "a short line was written as a partial entry:\n{text}");
        Ok(())
    })
    .await
}

async fn long_line(ctx: Ctx) -> TestResult {
    const LEN: usize = 40 * 1024;
    with_kit(&ctx, "log-long", |kit| async move {
        let script = format!("head -c {LEN} /dev/zero | tr '\\0' x; echo; echo after");
        let id = kit.run_shell_to_exit("log-long", &script).await?;
        kit.wait_exit(&id).await?;
        let text = read(&kit.log_file("log-long"))?;
        let entries = conkit::parse_log(&text).map_err(Failure::fail)?;
        let lines = conkit::messages(&entries);
        check!(lines.len() == 2, "the log holds {} messages, not the long line and \"after\"", lines.len());
        check!(
            lines[0].1.len() == LEN && lines[0].1.bytes().all(|b| b == b'x'),
            "the long line came back as {} bytes",
            lines[0].1.len()
        );
        check!(lines[1].1 == "after", "the line after it is {:?}", lines[1].1);
        Ok(())
    })
    .await
}

async fn reopen(ctx: Ctx) -> TestResult {
    with_kit(&ctx, "log-reopen", |kit| async move {
        let id = kit.run_shell("log-reopen", COUNTER_SCRIPT).await?;
        let log = kit.log_file("log-reopen");
        let rotated = log.with_extension("log.1");
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::rename(&log, &rotated).map_err(|e| Failure::fail(format!("cannot rename the log: {e}")))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        kit.client()
            .reopen_container_log(model::ReopenContainerLogRequest { container_id: id.clone() })
            .await
            .map_err(|e| call_failed("ReopenContainerLog", &e))?;
        check!(log.exists(), "ReopenContainerLog returned but {} does not exist", log.display());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let old_len = read(&rotated)?.len();
        kit.client()
            .stop_container(model::StopContainerRequest { container_id: id.clone(), timeout: 0 })
            .await
            .map_err(|e| call_failed("StopContainer", &e))?;
        let old = read(&rotated)?;
        check!(old.len() == old_len, "the renamed file still grew after the reopen");
        let new = read(&log)?;
        check!(!new.is_empty(), "nothing was written to the new log file");
        let lines = counted_without_gaps(&format!("{old}{new}"))?;
        let in_old = counted_without_gaps(&old)?;
        check!(in_old < lines, "every line is in the old file");
        Ok(())
    })
    .await
}
