//! The streaming benchmark: one pod with a sleeping container, then Exec round trips of `true`
//! (the Exec call, the upgrade, the streams, the status) over SPDY and over WebSocket, and
//! 100 MiB of stdout through an exec over SPDY (busybox `dd` of /dev/zero in 256 KiB blocks),
//! timed from the upgrade (the URL in hand) and from the first byte, beside the same `dd` (the fixture's
//! busybox) through a plain pipe on the node (`dd … | cat > /dev/null`) as the baseline.
//! `dd`, not `head -c`: busybox's head copies a character at a time and tops out near
//! 250 MiB/s, far below what it is meant to measure here.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use lockstep_cri::{model, Minor};

use super::{measure, Bench, BenchCtx, BenchFuture, BenchResult, Series};
use crate::suites::{podkit, spdy, websocket};
use lockstep_testkit::fixtures;

pub const STREAMING_BENCH: &str = "streaming";
const THROUGHPUT_BYTES: u64 = 100 << 20;
/// `dd`'s block: 400 of them are 100 MiB.
const DD_BLOCK: u64 = 256 << 10;

pub fn benches() -> Vec<Bench> {
    vec![Bench { name: STREAMING_BENCH, since: Minor::V1_30, body: |b| Box::pin(streaming(b)) as BenchFuture }]
}

async fn exec_url(
    client: &mut lockstep_cri::CriClient,
    id: &str,
    cmd: &[&str],
    stderr: bool,
) -> anyhow::Result<String> {
    Ok(client
        .exec(model::ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdout: true,
            stderr,
            ..Default::default()
        })
        .await?
        .url)
}

fn succeeded(status: &[u8]) -> anyhow::Result<()> {
    let value: serde_json::Value = serde_json::from_slice(status).unwrap_or_default();
    if value["status"] != "Success" {
        bail!("the exec ended with {:?}", String::from_utf8_lossy(status));
    }
    Ok(())
}

async fn streaming(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let mut client = bench.ctx.kubelet();
    let image = super::pull_shell(&bench, &mut client).await?;
    let (config, _logs) = super::pod_with_logs("bench-streaming")?;
    let pod = client
        .run_pod_sandbox(model::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await?
        .pod_sandbox_id;
    let measured = async {
        let container = client
            .create_container(model::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(super::containers::container_config(&config, &image)),
                sandbox_config: Some(config.clone()),
            })
            .await?
            .container_id;
        client.start_container(model::StartContainerRequest { container_id: container.clone() }).await?;
        let spdy_round_trip = measure(&bench, "exec round trip over SPDY (true)", |_| {
            let (mut c, id) = (client.clone(), container.clone());
            async move {
                let url = exec_url(&mut c, &id, &["true"], true).await?;
                let streams = spdy::Streams { stdin: None, stdout: true, stderr: true, resize: false };
                let (channels, ended) =
                    spdy::remotecommand(&url, streams, Duration::from_secs(30)).await.map_err(anyhow::Error::msg)?;
                if !ended {
                    bail!("the exec did not end");
                }
                succeeded(channels.get(&3).map(Vec::as_slice).unwrap_or_default())
            }
        })
        .await?;
        let ws_round_trip = measure(&bench, "exec round trip over WebSocket (true)", |_| {
            let (mut c, id) = (client.clone(), container.clone());
            async move {
                let url = exec_url(&mut c, &id, &["true"], true).await?;
                let mut socket =
                    websocket::Socket::connect(&url, websocket::CHANNEL_PROTOCOL).await.map_err(anyhow::Error::msg)?;
                let channels =
                    socket.read_channels(Duration::from_secs(30), |_| false).await.map_err(anyhow::Error::msg)?;
                socket.close().await;
                succeeded(channels.get(&3).map(Vec::as_slice).unwrap_or_default())
            }
        })
        .await?;
        let mut through = Vec::new();
        let mut from_first_byte = Vec::new();
        let dd = format!("dd if=/dev/zero bs={DD_BLOCK} count={}", THROUGHPUT_BYTES / DD_BLOCK);
        for _ in 0..3 {
            let url = exec_url(&mut client.clone(), &container, &["sh", "-c", &dd], false).await?;
            let t = Instant::now();
            let counted = spdy::count_stdout(&url, Duration::from_secs(300)).await.map_err(anyhow::Error::msg)?;
            let end = Instant::now();
            through.push(end - t);
            from_first_byte.push(counted.first_byte.map(|f| end - f).unwrap_or_default());
            succeeded(&counted.status).with_context(|| format!("after {} bytes of stdout", counted.bytes))?;
            if counted.bytes != THROUGHPUT_BYTES {
                bail!("{} bytes of stdout arrived, not {THROUGHPUT_BYTES}", counted.bytes);
            }
        }
        let mut pipe = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{} {dd} 2>/dev/null | cat > /dev/null", fixtures::BUSYBOX))
                .status()
                .await?;
            pipe.push(t.elapsed());
            if !status.success() {
                bail!("the baseline pipe failed: {status}");
            }
        }
        let rate = |d: &[Duration]| {
            let best = d.iter().min().copied().unwrap_or_default().as_secs_f64();
            format!("{:.0} MiB/s (best of {})", (THROUGHPUT_BYTES >> 20) as f64 / best.max(1e-9), d.len())
        };
        let readings = vec![
            ("100 MiB stdout over SPDY, from the upgrade".to_string(), rate(&through)),
            ("100 MiB stdout over SPDY, from the first byte".to_string(), rate(&from_first_byte)),
            ("100 MiB through a plain pipe on the node".to_string(), rate(&pipe)),
        ];
        let series =
            vec![spdy_round_trip, ws_round_trip, Series { op: "100 MiB stdout over SPDY".into(), samples: through }];
        anyhow::Ok((series, readings))
    }
    .await;
    let _ = podkit::stop_and_remove(&mut client, &pod).await;
    let (series, readings) = measured?;
    Ok(BenchResult { series, readings })
}
