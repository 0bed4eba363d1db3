//! Layer fetch: each missing layer streamed from the registry into its unpacker (a blocking
//! thread) through a small channel, several at once, then committed lowest first; a layer that
//! another pull is fetching is waited for instead (`shared_layers`); a download whose
//! connection breaks goes on from where it broke (an HTTP Range), a few times at most, so the
//! unpacker sees one unbroken stream. Touches the network and,
//! through [`Snapshots`], `<root>/images/{tmp,snapshots}`.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;

use super::shared_layers::{Fetch, LayersInFlight};
use super::Stop;
use crate::image::error::ImageError;
use crate::image::reference::Digest;
use crate::image::registry::{RegistryError, Session};
use crate::image::snapshot::{Expected, SnapshotError, Snapshots, Unpacked};
use crate::image::store::records::LayerRecord;

/// Layers downloaded and unpacked at once per pull.
const PARALLEL_LAYERS: usize = 3;
/// Chunks buffered between a download and its unpacker (each up to a few tens of KiB).
const CHANNEL_CHUNKS: usize = 8;

const CANCELLED: &str = "cancelled because another layer failed";
/// Times one layer's download may go on after its connection broke.
const MAX_RESUMES: u32 = 3;

/// Downloads and unpacks the layers that have no snapshot yet, several at once, then commits
/// them lowest first, each on top of the snapshots below it; `committed` counts the layers
/// committed (also those of a pull that fails later). A layer another pull is fetching is
/// waited for, and fetched here only if that pull did not commit it.
pub(super) async fn fetch_layers(
    snapshots: &Snapshots,
    session: &Session<'_>,
    layers: &[LayerRecord],
    chains: &[Digest],
    in_flight: &Arc<LayersInFlight>,
    committed: &AtomicU64,
    stop: &Stop,
) -> Result<(), ImageError> {
    let cancel = AtomicBool::new(false);
    let missing: Vec<usize> = (0..layers.len()).filter(|&i| !snapshots.exists(&chains[i])).collect();
    let missing_chains: Vec<Digest> = missing.iter().map(|&i| chains[i].clone()).collect();
    // Held until the commits below are done: pulls waiting for these layers wake then.
    let (_claim, fetches) = in_flight.claim(&missing_chains);
    let mut jobs = Vec::new();
    for (i, fetch) in missing.into_iter().zip(fetches) {
        let cancel = &cancel;
        let layer = &layers[i];
        let chain = &chains[i];
        jobs.push(async move {
            if matches!(fetch, Fetch::After(_)) {
                stop.unless_stopped(async {
                    fetch.settled().await;
                    Ok::<_, ImageError>(())
                })
                .await?;
                if snapshots.exists(chain) {
                    return Ok((i, None));
                }
            }
            let result = fetch_layer(snapshots, session, layer, cancel, stop).await;
            if result.is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
            result.map(|unpacked| (i, Some(unpacked)))
        });
    }
    let results: Vec<Result<(usize, Option<Unpacked>), ImageError>> =
        futures::stream::iter(jobs).buffer_unordered(PARALLEL_LAYERS).collect().await;
    let mut unpacked: Vec<Option<Unpacked>> = (0..layers.len()).map(|_| None).collect();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok((i, u)) => unpacked[i] = u,
            Err(e) => errors.push(e),
        }
    }
    // The first real failure, not the cancellations it caused (what was unpacked goes).
    if let Some(i) =
        errors.iter().position(|e| !matches!(e, ImageError::BadImage { detail, .. } if detail == CANCELLED))
    {
        return Err(errors.swap_remove(i));
    }
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let snapshots = snapshots.clone();
    let chains = chains.to_vec();
    let (count, result) = tokio::task::spawn_blocking(move || -> (u64, Result<(), SnapshotError>) {
        let mut count = 0;
        for (i, layer) in unpacked.into_iter().enumerate() {
            let Some(layer) = layer else { continue };
            let lowers: Vec<PathBuf> = chains[..i].iter().map(|c| snapshots.fs_dir(c)).collect();
            if let Err(e) = snapshots.commit(layer, &chains[i], &lowers) {
                return (count, Err(e));
            }
            count += 1;
        }
        (count, Ok(()))
    })
    .await
    .map_err(|e| ImageError::BadImage { reference: "layers".into(), detail: format!("committing failed: {e}") })?;
    committed.fetch_add(count, Ordering::Relaxed);
    Ok(result?)
}

/// One layer: its download here, its unpacking on a blocking thread.
async fn fetch_layer(
    snapshots: &Snapshots,
    session: &Session<'_>,
    layer: &LayerRecord,
    cancel: &AtomicBool,
    stop: &Stop,
) -> Result<Unpacked, ImageError> {
    let mut session = session.fork();
    let mut blob = stop.unless_stopped(session.blob(&layer.digest)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
    let snapshots = snapshots.clone();
    let expected = Expected { digest: layer.digest.clone(), size: layer.size, diff_id: layer.diff_id.clone() };
    let unpacker = tokio::task::spawn_blocking(move || {
        snapshots.unpack(&expected, ChannelReader { rx, current: bytes::Bytes::new(), pos: 0, ended: false })
    });
    let mut received: u64 = 0;
    let mut resumes = 0;
    let download: Result<(), ImageError> = async {
        loop {
            if cancel.load(Ordering::Relaxed) {
                let _ = tx.send(Chunk::Failed(CANCELLED.into())).await;
                return Err(ImageError::BadImage { reference: layer.digest.to_string(), detail: CANCELLED.into() });
            }
            let next = tokio::select! {
                biased;
                _ = stop.stopped() => {
                    let error = stop.error();
                    let _ = tx.send(Chunk::Failed(error.to_string())).await;
                    return Err(error);
                }
                next = blob.chunk() => next,
            };
            match next {
                Ok(Some(bytes)) => {
                    received += bytes.len() as u64;
                    if received > layer.size {
                        let detail = format!(
                            "the registry sent more than the {} bytes the manifest gives for layer {}",
                            layer.size, layer.digest
                        );
                        let _ = tx.send(Chunk::Failed(detail.clone())).await;
                        return Err(ImageError::BadImage { reference: layer.digest.to_string(), detail });
                    }
                    if tx.send(Chunk::Data(bytes)).await.is_err() {
                        return Ok(()); // the unpacker stopped: its error tells why
                    }
                }
                Ok(None) => {
                    let _ = tx.send(Chunk::End).await;
                    return Ok(());
                }
                Err(e @ RegistryError::Unreachable { .. }) if resumes < MAX_RESUMES && received > 0 => {
                    resumes += 1;
                    tracing::info!(layer = %layer.digest, received, error = %e, "a layer download broke; going on from there");
                    match stop.unless_stopped(session.blob_from(&layer.digest, received)).await {
                        Ok(rest) => blob = rest,
                        Err(e) => {
                            let _ = tx.send(Chunk::Failed(e.to_string())).await;
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Chunk::Failed(e.to_string())).await;
                    return Err(e.into());
                }
            }
        }
    }
    .await;
    drop(tx);
    let unpacked = unpacker.await.map_err(|e| ImageError::BadImage {
        reference: layer.digest.to_string(),
        detail: format!("the unpacker failed: {e}"),
    })?;
    download?;
    Ok(unpacked?)
}

/// What a download hands to its unpacker.
enum Chunk {
    Data(bytes::Bytes),
    End,
    Failed(String),
}

/// The blocking side of a download: bytes arrive through a channel.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    current: bytes::Bytes,
    pos: usize,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(bytes)) => {
                    self.current = bytes;
                    self.pos = 0;
                }
                Some(Chunk::End) => {
                    self.ended = true;
                    return Ok(0);
                }
                Some(Chunk::Failed(why)) => return Err(std::io::Error::other(format!("download failed: {why}"))),
                None => return Err(std::io::Error::other("download interrupted")),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
