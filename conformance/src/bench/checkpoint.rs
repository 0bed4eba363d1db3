//! Checkpoint and restore of a process holding 64 MiB: per iteration, a container whose awk
//! fills a 64 MiB string is checkpointed (CheckpointContainer into an archive on the node, the
//! container left running) and restored in a second pod (CreateContainer from the archive,
//! StartContainer until RUNNING). A runtime that cannot checkpoint gets a reading saying why.

use std::time::{Duration, Instant};

use lockstep_cri::{model, CriClient, Minor};

use super::{pod_with_logs, pull_shell, Bench, BenchCtx, BenchFuture, BenchResult, Series};
use crate::suites::podkit;

/// The benchmark's name; a run that selects it starts a registry with the fixture images.
pub const CHECKPOINT_BENCH: &str = "checkpoint and restore of a 64 MiB process";

/// 64 MiB of spaces in an awk string, then a mark that it is all there, then sleep.
const HOLDER: &str = "awk 'BEGIN { s = sprintf(\"%67108864s\", \"x\"); system(\"touch /tmp/ready\"); \
    while (1) system(\"sleep 3600\") }'";

pub fn benches() -> Vec<Bench> {
    vec![Bench { name: CHECKPOINT_BENCH, since: Minor::V1_30, body: |b| Box::pin(checkpoint(b)) as BenchFuture }]
}

async fn checkpoint(bench: BenchCtx) -> anyhow::Result<BenchResult> {
    let mut client = bench.ctx.kubelet();
    let image = pull_shell(&bench, &mut client).await?;
    let (first_config, first_logs) = pod_with_logs("bench-checkpoint-original")?;
    let (second_config, second_logs) = pod_with_logs("bench-checkpoint-restored")?;
    for i in 0..bench.iterations {
        for logs in [&first_logs, &second_logs] {
            std::fs::create_dir_all(logs.path().join(format!("holder-{i}")))?;
        }
    }
    let first = podkit::run_pod(&mut client, first_config.clone()).await.map_err(|f| anyhow::anyhow!("{f:?}"))?;
    let second = podkit::run_pod(&mut client, second_config.clone()).await.map_err(|f| anyhow::anyhow!("{f:?}"))?;
    let archives = tempfile::Builder::new().prefix("lockstep-bench-checkpoints-").tempdir()?;
    let mut result = BenchResult::default();
    let mut dumps = Vec::new();
    let mut creates = Vec::new();
    let mut starts = Vec::new();
    let mut size = 0;
    let measured: anyhow::Result<()> = async {
        for i in 0..bench.iterations {
            let name = format!("holder-{i}");
            let id =
                create(&mut client, &first, &first_config, container(&name, &image, &["sh", "-c", HOLDER])).await?;
            client.start_container(model::StartContainerRequest { container_id: id.clone() }).await?;
            wait_ready(&mut client, &id).await?;
            let archive = archives.path().join(format!("{name}.tar"));
            let request = model::CheckpointContainerRequest {
                container_id: id.clone(),
                location: archive.display().to_string(),
                timeout: 0,
            };
            let t = Instant::now();
            match client.checkpoint_container(request).await {
                Ok(_) => dumps.push(t.elapsed()),
                Err(e) if matches!(e.code(), tonic::Code::Unimplemented | tonic::Code::FailedPrecondition) => {
                    result.readings.push(("checkpoint".into(), format!("not supported: {}", e.message())));
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
            size = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
            let mut restored = container(&name, &archive.display().to_string(), &[]);
            restored.command.clear();
            let t = Instant::now();
            let restored_id = create(&mut client, &second, &second_config, restored).await?;
            creates.push(t.elapsed());
            let t = Instant::now();
            client.start_container(model::StartContainerRequest { container_id: restored_id.clone() }).await?;
            starts.push(t.elapsed());
            for gone in [id, restored_id] {
                client.stop_container(model::StopContainerRequest { container_id: gone.clone(), timeout: 0 }).await?;
                client.remove_container(model::RemoveContainerRequest { container_id: gone }).await?;
            }
            let _ = std::fs::remove_file(&archive);
            eprintln!("bench {}: {CHECKPOINT_BENCH} {}/{}", bench.label, i + 1, bench.iterations);
        }
        Ok(())
    }
    .await;
    for pod in [&first, &second] {
        let _ = podkit::stop_and_remove(&mut client, pod).await;
    }
    measured?;
    if !dumps.is_empty() {
        let restores = creates.iter().zip(&starts).map(|(c, s)| *c + *s).collect();
        result.series.push(Series { op: "CheckpointContainer (64 MiB process, left running)".into(), samples: dumps });
        result.series.push(Series { op: "restore: CreateContainer from the archive".into(), samples: creates });
        result.series.push(Series { op: "restore: StartContainer (CRIU restore)".into(), samples: starts });
        result.series.push(Series { op: "restore: both".into(), samples: restores });
        result.readings.push(("archive size".into(), format!("{:.1} MiB", size as f64 / (1 << 20) as f64)));
    }
    Ok(result)
}

fn container(name: &str, image: &str, command: &[&str]) -> model::ContainerConfig {
    lockstep_testkit::requests::bare_container(name, image, command)
}

async fn create(
    client: &mut CriClient,
    pod: &str,
    pod_config: &model::PodSandboxConfig,
    config: model::ContainerConfig,
) -> anyhow::Result<String> {
    let request = model::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(pod_config.clone()),
    };
    Ok(client.create_container(request).await?.container_id)
}

/// Until the holder has its 64 MiB (it touches /tmp/ready then).
async fn wait_ready(client: &mut CriClient, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = model::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["test".into(), "-e".into(), "/tmp/ready".into()],
            timeout: 10,
        };
        if client.exec_sync(request).await?.exit_code == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "container {id} did not fill its 64 MiB within a minute");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
