//! The SPDY/3.1 side of the streaming URLs, as the kubelet and the API server speak it: one
//! stream per kind named by its `streamtype` header (remotecommand `v4.channel.k8s.io`), or an
//! error and a data stream per connection (`portforward.k8s.io`). Built on lockstepd's SPDY
//! module (`lockstep_runtime::streaming::spdy`), which containerd's Go server checks from the
//! other side. Results come back as channel maps like the WebSocket client's (1 stdout,
//! 2 stderr, 3 error).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use lockstep_runtime::streaming::spdy::dial::{dial, DialError};
use lockstep_runtime::streaming::spdy::{Headers, Session, StreamReader};

pub const REMOTECOMMAND: &str = "v4.channel.k8s.io";
pub const PORTFORWARD: &str = "portforward.k8s.io";

/// What an exec or attach asks the server for.
#[derive(Debug, Clone, Default)]
pub struct Streams {
    /// Sent on stdin, which then closes; empty: stdin stays open until the end (as a
    /// terminal's does; containerd ends a tty exec's output when its stdin closes); None: no
    /// stdin stream.
    pub stdin: Option<Vec<u8>>,
    pub stdout: bool,
    pub stderr: bool,
    /// A resize stream opens (for a tty).
    pub resize: bool,
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

async fn open(
    session: &Session,
    pairs: &[(&str, &str)],
) -> Result<lockstep_runtime::streaming::spdy::Incoming, String> {
    tokio::time::timeout(Duration::from_secs(30), session.open(headers(pairs)))
        .await
        .map_err(|_| "the server did not answer a SYN_STREAM".to_string())?
        .map_err(|e| e.to_string())
}

async fn read_all(mut reader: StreamReader) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(chunk) = reader.read().await {
        all.extend_from_slice(&chunk);
    }
    all
}

/// Upgrades `url` to SPDY with `protocol`; a refusal is an error naming the status.
pub async fn connect(url: &str, protocol: &str) -> Result<Session, String> {
    match dial(url, &[protocol]).await {
        Ok(dialed) if dialed.protocol == protocol => Ok(dialed.session),
        Ok(dialed) => Err(format!("{url} chose protocol {:?}, not {protocol}", dialed.protocol)),
        Err(DialError::Refused { status, body }) => Err(format!("{url} refused the SPDY upgrade: {status} {body}")),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

/// Runs an exec or attach URL to its end, or for `limit`: the bytes of stdout (1), stderr (2)
/// and the error stream (3, only once it ended), and whether the error stream ended.
pub async fn remotecommand(
    url: &str,
    streams: Streams,
    limit: Duration,
) -> Result<(BTreeMap<u8, Vec<u8>>, bool), String> {
    let session = connect(url, REMOTECOMMAND).await?;
    // The order client-go opens them in.
    let error = open(&session, &[("streamtype", "error")]).await?;
    let stdin = match &streams.stdin {
        Some(_) => Some(open(&session, &[("streamtype", "stdin")]).await?),
        None => None,
    };
    let stdout = if streams.stdout { Some(open(&session, &[("streamtype", "stdout")]).await?) } else { None };
    let stderr = if streams.stderr { Some(open(&session, &[("streamtype", "stderr")]).await?) } else { None };
    let _resize = if streams.resize { Some(open(&session, &[("streamtype", "resize")]).await?) } else { None };
    // Held open until the end unless it is written and closed here.
    let mut _open_stdin = None;
    if let (Some(mut stdin), Some(data)) = (stdin, streams.stdin) {
        if data.is_empty() {
            _open_stdin = Some(stdin);
        } else {
            stdin.writer.write(Bytes::from(data)).await.map_err(|e| e.to_string())?;
            stdin.writer.finish().await;
        }
    }
    let collect = |reader: StreamReader| {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let filled = buffer.clone();
        let task = tokio::spawn(async move {
            let mut reader = reader;
            while let Some(chunk) = reader.read().await {
                filled.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&chunk);
            }
        });
        (task, buffer)
    };
    let out = stdout.map(|s| collect(s.reader));
    let err = stderr.map(|s| collect(s.reader));
    let status = tokio::time::timeout(limit, read_all(error.reader)).await;
    let mut channels = BTreeMap::new();
    let finished = status.is_ok();
    if let Ok(status) = status {
        channels.insert(3, status);
    }
    for (channel, collected) in [(1u8, out), (2, err)] {
        if let Some((task, buffer)) = collected {
            // After the error stream, the output streams end too; before, what came so far.
            let wait = if finished { Duration::from_secs(10) } else { Duration::from_millis(100) };
            let _ = tokio::time::timeout(wait, task).await;
            let data = std::mem::take(&mut *buffer.lock().unwrap_or_else(|p| p.into_inner()));
            channels.insert(channel, data);
        }
    }
    session.gone().cancel();
    Ok((channels, finished))
}

/// Sends `data` to `port` through a port-forward URL and returns what came back on the data
/// stream and the error stream (both until the server ends them).
pub async fn forward(url: &str, port: u16, data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let session = connect(url, PORTFORWARD).await?;
    let port = port.to_string();
    let error = open(&session, &[("streamtype", "error"), ("port", &port), ("requestid", "0")]).await?;
    let mut stream = open(&session, &[("streamtype", "data"), ("port", &port), ("requestid", "0")]).await?;
    stream.writer.write(Bytes::copy_from_slice(data)).await.map_err(|e| e.to_string())?;
    let limit = Duration::from_secs(30);
    let got = tokio::time::timeout(limit, read_all(stream.reader)).await.map_err(|_| "no end of data".to_string())?;
    let errors = tokio::time::timeout(limit, read_all(error.reader))
        .await
        .map_err(|_| "no end of the error stream".to_string())?;
    session.gone().cancel();
    Ok((got, errors))
}

/// What `count_stdout` saw: the bytes of stdout, when the first of them came, and the error
/// stream.
pub struct Counted {
    pub bytes: u64,
    pub first_byte: Option<std::time::Instant>,
    pub status: Vec<u8>,
}

/// Runs an exec URL that asks for stdout only, counting its bytes without keeping them.
pub async fn count_stdout(url: &str, limit: Duration) -> Result<Counted, String> {
    let session = connect(url, REMOTECOMMAND).await?;
    let error = open(&session, &[("streamtype", "error")]).await?;
    let mut stdout = open(&session, &[("streamtype", "stdout")]).await?;
    let counted = async {
        let (mut n, mut first) = (0u64, None);
        while let Some(chunk) = stdout.reader.read().await {
            first.get_or_insert_with(std::time::Instant::now);
            n += chunk.len() as u64;
        }
        (n, first)
    };
    let both = async { tokio::join!(counted, read_all(error.reader)) };
    let result = tokio::time::timeout(limit, both).await.map_err(|_| format!("the exec did not end within {limit:?}"));
    session.gone().cancel();
    let ((bytes, first_byte), status) = result?;
    Ok(Counted { bytes, first_byte, status })
}

/// Forwards `port` through a port-forward URL without sending anything, counting what the
/// pod's side sends until it ends: how many bytes, and the error stream.
pub async fn count_forward(url: &str, port: u16, limit: Duration) -> Result<(u64, Vec<u8>), String> {
    let session = connect(url, PORTFORWARD).await?;
    let port = port.to_string();
    let error = open(&session, &[("streamtype", "error"), ("port", &port), ("requestid", "0")]).await?;
    // Its write side stays open: some servers end the whole connection at the client's end of data.
    let mut data = open(&session, &[("streamtype", "data"), ("port", &port), ("requestid", "0")]).await?;
    let counted = async {
        let mut n = 0u64;
        while let Some(chunk) = data.reader.read().await {
            n += chunk.len() as u64;
        }
        n
    };
    let result =
        tokio::time::timeout(limit, counted).await.map_err(|_| format!("the data did not end within {limit:?}"));
    let errors = tokio::time::timeout(Duration::from_secs(2), read_all(error.reader)).await.unwrap_or_default();
    session.gone().cancel();
    Ok((result?, errors))
}

/// Attaches through an attach URL (stdin and stdout), writes `line` and waits until it comes
/// back on stdout (a container running `cat`), then goes away.
pub async fn attach_echo(url: &str, line: &[u8], limit: Duration) -> Result<(), String> {
    let session = connect(url, REMOTECOMMAND).await?;
    let _error = open(&session, &[("streamtype", "error")]).await?;
    let mut stdin = open(&session, &[("streamtype", "stdin")]).await?;
    let mut stdout = open(&session, &[("streamtype", "stdout")]).await?;
    stdin.writer.write(Bytes::copy_from_slice(line)).await.map_err(|e| e.to_string())?;
    let echoed = async {
        let mut seen = Vec::new();
        while let Some(chunk) = stdout.reader.read().await {
            seen.extend_from_slice(&chunk);
            if seen.windows(line.len()).any(|w| w == line) {
                return Ok(());
            }
        }
        Err(format!("stdout ended after {:?}", String::from_utf8_lossy(&seen)))
    };
    let result = tokio::time::timeout(limit, echoed).await.map_err(|_| format!("no echo within {limit:?}"));
    session.gone().cancel();
    result?
}
