//! The attach and port-forward benchmark: Attach round trips over SPDY (the call, the upgrade,
//! a line written on stdin and read back from a container running `cat`), and 1 GiB sent by
//! a server in the pod's network namespace through a port-forward over SPDY, timed, beside the
//! same bytes over a plain loopback TCP connection on the node as the baseline.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use lockstep_cri::{model, Minor};

use super::{measure, Bench, BenchCtx, BenchFuture, BenchResult, Series};
use crate::suites::{podkit, spdy};

pub const STREAMING_IO_BENCH: &str = "streaming-io";
const FORWARD_BYTES: u64 = 1 << 30;
const ROUNDS: usize = 3;

pub fn benches() -> Vec<Bench> {
    vec![Bench { name: STREAMING_IO_BENCH, since: Minor::V1_30, body: |b| Box::pin(streaming_io(b)) as BenchFuture }]
}

/// Accepts `rounds` connections on `listener`, sending each `FORWARD_BYTES` of zeros.
fn zero_server(listener: std::net::TcpListener, rounds: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let block = vec![0u8; 256 * 1024];
        for _ in 0..rounds {
            let Ok((mut conn, _)) = listener.accept() else { return };
            let mut left = FORWARD_BYTES;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                if conn.write_all(&block[..n]).is_err() {
                    break;
                }
                left -= n as u64;
            }
        }
    })
}

/// The baseline: the same bytes over loopback TCP on the node, read in 256 KiB pieces.
fn loopback_rounds() -> anyhow::Result<Vec<Duration>> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("cannot listen on the node")?;
    let port = listener.local_addr()?.port();
    let server = zero_server(listener, ROUNDS);
    let mut rounds = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).context("cannot connect on the node")?;
        let mut n = 0u64;
        loop {
            match conn.read(&mut buf)? {
                0 => break,
                k => n += k as u64,
            }
        }
        rounds.push(t.elapsed());
        if n != FORWARD_BYTES {
            bail!("{n} bytes came over loopback, not {FORWARD_BYTES}");
        }
    }
    let _ = server.join();
    Ok(rounds)
}

fn cat_config(pod: &model::PodSandboxConfig, image: &str) -> model::ContainerConfig {
    let mut config = super::containers::container_config(pod, image);
    config.command = vec!["cat".into()];
    config.stdin = true;
    config
}

async fn streaming_io(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let mut client = bench.ctx.kubelet();
    let image = super::pull_shell(&bench, &mut client).await?;
    let (config, _logs) = super::pod_with_logs("bench-streaming-io")?;
    let pod = client
        .run_pod_sandbox(model::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await?
        .pod_sandbox_id;
    let measured = async {
        let container = client
            .create_container(model::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(cat_config(&config, &image)),
                sandbox_config: Some(config.clone()),
            })
            .await?
            .container_id;
        client.start_container(model::StartContainerRequest { container_id: container.clone() }).await?;
        let attach = measure(&bench, "attach round trip over SPDY (a line through cat)", |i| {
            let (mut c, id) = (client.clone(), container.clone());
            async move {
                let request =
                    model::AttachRequest { container_id: id, stdin: true, stdout: true, ..Default::default() };
                let url = c.attach(request).await?.url;
                let line = format!("ping-{i}\n");
                spdy::attach_echo(&url, line.as_bytes(), Duration::from_secs(30)).await.map_err(anyhow::Error::msg)
            }
        })
        .await?;

        let described = podkit::describe(&mut client, &pod).await.map_err(|f| anyhow::anyhow!("{f:?}"))?;
        let netns = podkit::netns(&described).map_err(|f| anyhow::anyhow!("{f:?}"))?;
        let listener = podkit::within(&netns, podkit::net_flag(), || std::net::TcpListener::bind(("127.0.0.1", 0)))
            .map_err(|f| anyhow::anyhow!("{f:?}"))?
            .context("cannot listen in the pod's network namespace")?;
        let port = listener.local_addr()?.port();
        let server = zero_server(listener, ROUNDS);
        let mut forward = Vec::new();
        for _ in 0..ROUNDS {
            let request = model::PortForwardRequest { pod_sandbox_id: pod.clone(), port: vec![i32::from(port)] };
            let url = client.clone().port_forward(request).await?.url;
            let t = Instant::now();
            let (n, errors) =
                spdy::count_forward(&url, port, Duration::from_secs(600)).await.map_err(anyhow::Error::msg)?;
            forward.push(t.elapsed());
            if n != FORWARD_BYTES {
                bail!(
                    "{n} bytes came through the port-forward, not {FORWARD_BYTES} ({:?})",
                    String::from_utf8_lossy(&errors)
                );
            }
        }
        let _ = server.join();
        let loopback = tokio::task::spawn_blocking(loopback_rounds).await??;
        let rate = |d: &[Duration]| {
            let best = d.iter().min().copied().unwrap_or_default().as_secs_f64();
            format!("{:.0} MiB/s (best of {})", (FORWARD_BYTES >> 20) as f64 / best.max(1e-9), d.len())
        };
        let readings = vec![
            ("1 GiB port-forward over SPDY".to_string(), rate(&forward)),
            ("1 GiB over loopback TCP on the node".to_string(), rate(&loopback)),
        ];
        let series = vec![attach, Series { op: "1 GiB port-forward over SPDY".into(), samples: forward }];
        anyhow::Ok((series, readings))
    }
    .await;
    let _ = podkit::stop_and_remove(&mut client, &pod).await;
    let (series, readings) = measured?;
    Ok(BenchResult { series, readings })
}
