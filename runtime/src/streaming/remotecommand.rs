//! The remotecommand protocols of exec and attach, over SPDY (`v4.channel.k8s.io` down to
//! `channel.k8s.io`, one SPDY stream per kind, named by its `streamtype` header) and over
//! WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`, their `base64.` forms: channels 0
//! stdin, 1 stdout, 2 stderr, 3 error, 4 resize). The v4 and v5 protocols end with a
//! metav1.Status on the error stream (a non-zero exit as NonZeroExitCode with an ExitCode
//! cause); the older ones with the error's text, nothing on success.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lockstep_cri::model;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::spdy::{self, headers};
use super::websocket::Channels;
use super::{Backend, CommandIo, TermSize};

/// SPDY subprotocols, the client's first that is here wins.
pub const SPDY_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
/// WebSocket subprotocols.
pub const WS_PROTOCOLS: &[&str] =
    &["v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io"];

/// How long a SPDY client may take to open the streams it must (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

/// Exec or attach, with what the request asked for.
#[derive(Debug, Clone)]
pub enum Command {
    Exec(model::ExecRequest),
    Attach(model::AttachRequest),
}

#[derive(Debug, Clone, Copy)]
struct Wants {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Command {
    fn wants(&self) -> Wants {
        let (stdin, stdout, stderr, tty) = match self {
            Command::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Command::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
        };
        // A terminal has one output: stderr is merged into it.
        Wants { stdin, stdout, stderr: stderr && !tty, tty }
    }

    fn describe(&self) -> String {
        match self {
            Command::Exec(r) => format!("{:?}", r.cmd),
            Command::Attach(r) => format!("attach to {}", r.container_id),
        }
    }
}

/// The end of a command as the v4/v5 error stream carries it.
pub fn status_json(command: &str, result: &Result<i32, String>) -> Vec<u8> {
    let value = match result {
        Ok(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The end of a command as v1–v3 carry it: nothing for success, else the message.
pub fn status_text(command: &str, result: &Result<i32, String>) -> Vec<u8> {
    match result {
        Ok(0) => Vec::new(),
        Ok(code) => {
            format!("command terminated with non-zero exit code: error executing command {command}, exit code {code}")
                .into_bytes()
        }
        Err(message) => message.clone().into_bytes(),
    }
}

fn uses_status(protocol: &str) -> bool {
    protocol.starts_with("v4.") || protocol.starts_with("v5.")
}

/// Terminal sizes out of a byte stream of JSON objects (SPDY sends them back to back; a
/// WebSocket message holds one). A broken or oversized one is skipped.
fn resizes(mut raw: mpsc::Receiver<Bytes>) -> mpsc::Receiver<TermSize> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = raw.recv().await {
            pending.extend_from_slice(&chunk);
            let mut used = 0;
            let mut values = serde_json::Deserializer::from_slice(&pending).into_iter::<TermSize>();
            loop {
                match values.next() {
                    Some(Ok(size)) => {
                        used = values.byte_offset();
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(_)) => {
                        used = pending.len();
                        break;
                    }
                    None => {
                        used = pending.len();
                        break;
                    }
                }
            }
            pending.drain(..used);
            if pending.len() > 4096 {
                pending.clear();
            }
        }
    });
    rx
}

async fn run_backend(command: &Command, backend: &Arc<dyn Backend>, io: CommandIo) -> Result<i32, String> {
    match command.clone() {
        Command::Exec(request) => backend.exec(request, io).await,
        Command::Attach(request) => backend.attach(request, io).await.map(|()| 0),
    }
}

/// Serves `command` over an upgraded WebSocket connection.
pub async fn serve_ws(command: Command, protocol: &str, mut channels: Channels, backend: Arc<dyn Backend>) {
    let wants = command.wants();
    let stdin = if wants.stdin { channels.reader(STDIN) } else { None };
    let resize = if wants.tty { channels.reader(RESIZE).map(resizes) } else { None };
    let stdout = wants.stdout.then(|| channels.writer(STDOUT));
    let stderr = wants.stderr.then(|| channels.writer(STDERR));
    let error = channels.writer(ERROR);
    channels.done();
    // An empty message on the first writable channel tells the client the streams are open.
    let first = stdout.as_ref().or(stderr.as_ref()).unwrap_or(&error);
    let _ = first.send(Bytes::new()).await;
    let io = CommandIo { stdin, stdout, stderr, resize, gone: channels.gone.clone() };
    let result = run_backend(&command, &backend, io).await;
    log_end(&command, &result);
    let status = if uses_status(protocol) {
        status_json(&command.describe(), &result)
    } else {
        status_text(&command.describe(), &result)
    };
    if !status.is_empty() {
        let _ = error.send(Bytes::from(status)).await;
    }
    // Dropping the last writer closes the connection once its data is out.
}

fn log_end(command: &Command, result: &Result<i32, String>) {
    match result {
        Ok(code) => tracing::debug!(command = %command.describe(), code, "streamed command ended"),
        Err(e) => tracing::info!(command = %command.describe(), error = %e, "streamed command failed"),
    }
}

/// Copies what the client sends on a SPDY stream into a queue until its FIN.
fn spdy_inbound(mut reader: spdy::StreamReader) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(chunk) = reader.read().await {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// A queue whose contents go out on a SPDY stream, which is finished when the queue closes.
fn spdy_outbound(mut writer: spdy::StreamWriter) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let task = tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if writer.write(data).await.is_err() {
                return;
            }
        }
        writer.finish().await;
    });
    (tx, task)
}

/// Serves `command` over an upgraded SPDY session.
pub async fn serve_spdy(
    command: Command,
    protocol: &str,
    session: spdy::Session,
    mut incoming: mpsc::Receiver<spdy::Incoming>,
    backend: Arc<dyn Backend>,
) {
    let wants = command.wants();
    let resizable = !matches!(protocol, "v2.channel.k8s.io" | "channel.k8s.io");
    let mut streams: std::collections::HashMap<String, spdy::Incoming> = Default::default();
    let needed = |streams: &std::collections::HashMap<String, spdy::Incoming>| {
        streams.contains_key("error")
            && (!wants.stdin || streams.contains_key("stdin"))
            && (!wants.stdout || streams.contains_key("stdout"))
            && (!wants.stderr || streams.contains_key("stderr"))
            && (!(wants.tty && resizable) || streams.contains_key("resize"))
    };
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while !needed(&streams) {
        tokio::select! {
            next = incoming.recv() => match next {
                Some(stream) => {
                    let kind = headers::get(&stream.headers, "streamtype").unwrap_or("").to_string();
                    streams.insert(kind, stream);
                }
                None => return,
            },
            _ = &mut deadline => {
                tracing::info!(command = %command.describe(), "the client did not open its streams in time");
                session.close().await;
                return;
            }
        }
    }
    // Streams opened later are refused.
    tokio::spawn(async move {
        while let Some(mut extra) = incoming.recv().await {
            extra.writer.reset().await;
        }
    });
    let mut take = |kind: &str| streams.remove(kind);
    let stdin = take("stdin").filter(|_| wants.stdin).map(|s| spdy_inbound(s.reader));
    let resize = take("resize").filter(|_| wants.tty).map(|s| resizes(spdy_inbound(s.reader)));
    let mut outputs = Vec::new();
    let mut output = |stream: Option<spdy::Incoming>, wanted: bool| {
        let stream = stream.filter(|_| wanted)?;
        let (tx, task) = spdy_outbound(stream.writer);
        outputs.push(task);
        Some(tx)
    };
    let stdout = output(take("stdout"), wants.stdout);
    let stderr = output(take("stderr"), wants.stderr);
    let Some(error) = take("error") else { return };
    let mut error_writer = error.writer;
    let gone: CancellationToken = session.gone();
    let io = CommandIo { stdin, stdout, stderr, resize, gone };
    let result = run_backend(&command, &backend, io).await;
    log_end(&command, &result);
    let status = if uses_status(protocol) {
        status_json(&command.describe(), &result)
    } else {
        status_text(&command.describe(), &result)
    };
    // Output first: the client returns once the error stream ends.
    for task in outputs {
        let _ = task.await;
    }
    if !status.is_empty() {
        let _ = error_writer.write(Bytes::from(status)).await;
    }
    error_writer.finish().await;
    session.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_become_the_status_clients_read() {
        let ok: serde_json::Value = serde_json::from_slice(&status_json("[true]", &Ok(0))).unwrap();
        assert_eq!(ok["status"], "Success");
        let failed: serde_json::Value = serde_json::from_slice(&status_json("[false]", &Ok(3))).unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let broken: serde_json::Value =
            serde_json::from_slice(&status_json("[x]", &Err("no such file".into()))).unwrap();
        assert_eq!((broken["status"].as_str(), broken["message"].as_str()), (Some("Failure"), Some("no such file")));
        assert!(status_text("[true]", &Ok(0)).is_empty());
        assert!(String::from_utf8(status_text("[false]", &Ok(1))).unwrap().contains("exit code 1"));
    }

    #[tokio::test]
    async fn resize_objects_are_read_back_to_back_and_across_chunks() {
        let (tx, rx) = mpsc::channel(8);
        let mut sizes = resizes(rx);
        tx.send(Bytes::from_static(br#"{"Width":80,"Height":24}{"Width":1"#)).await.unwrap();
        tx.send(Bytes::from_static(br#"00,"Height":40}"#)).await.unwrap();
        tx.send(Bytes::from_static(b"garbage")).await.unwrap();
        tx.send(Bytes::from_static(br#"{"Width":7,"Height":8}"#)).await.unwrap();
        drop(tx);
        assert_eq!(sizes.recv().await, Some(TermSize { width: 80, height: 24 }));
        assert_eq!(sizes.recv().await, Some(TermSize { width: 100, height: 40 }));
        assert_eq!(sizes.recv().await, Some(TermSize { width: 7, height: 8 }));
        assert_eq!(sizes.recv().await, None);
    }
}
