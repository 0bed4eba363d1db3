//! lockstepd's side of attach: opens the attach stream on the container's monitor control
//! socket (`monitor::attach` has the frames) and moves a client's streams through it until
//! the container's output ends or the client goes.

use std::io::{Read as _, Write as _};
use std::path::Path;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::CommandIo;
use crate::monitor::attach::{self, AttachFlags};
use crate::monitor::control;
use crate::monitor::ContainerDir;

/// Opens an attach stream to the monitor of the container in `dir` (blocking).
pub fn open(dir: &Path, flags: AttachFlags) -> Result<std::os::unix::net::UnixStream, String> {
    let mut conn = control::connect(dir, ContainerDir::CONTROL)
        .map_err(|e| format!("the container's monitor does not answer ({e}): is the container running?"))?;
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    conn.write_all(format!("{}\n", flags.command()).as_bytes()).map_err(|e| format!("attach: {e}"))?;
    // The reply line, byte by byte: frames follow it at once.
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.len() < 512 {
        match conn.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => reply.push(byte[0]),
            Ok(_) => break,
            Err(e) => return Err(format!("attach: no answer from the container's monitor: {e}")),
        }
    }
    let reply = String::from_utf8_lossy(&reply).into_owned();
    if reply.starts_with("error unknown command") {
        return Err("the container's monitor predates attach (it was started by an older lockstepd); \
                    attach works for containers created since"
            .into());
    }
    if reply != "ok" {
        return Err(format!("the container's monitor refused attach: {}", reply.trim_start_matches("error ")));
    }
    let _ = conn.set_read_timeout(None);
    Ok(conn)
}

/// Moves `io` through an open attach stream until the output ends or the client goes.
pub async fn run(conn: std::os::unix::net::UnixStream, io: CommandIo) -> Result<(), String> {
    conn.set_nonblocking(true).map_err(|e| e.to_string())?;
    let conn = tokio::net::UnixStream::from_std(conn).map_err(|e| e.to_string())?;
    let (mut read, mut write) = conn.into_split();
    let CommandIo { stdin, stdout, stderr, resize, gone } = io;
    let output = async move {
        loop {
            let mut head = [0u8; 5];
            if read.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if len > attach::MAX_FRAME {
                return;
            }
            let mut data = vec![0u8; len];
            if read.read_exact(&mut data).await.is_err() {
                return;
            }
            let sink = match head[0] {
                attach::STDOUT => stdout.as_ref(),
                attach::STDERR => stderr.as_ref(),
                _ => None,
            };
            if let Some(sink) = sink {
                if sink.send(Bytes::from(data)).await.is_err() {
                    return;
                }
            }
        }
    };
    let input = async move {
        let (mut stdin, mut resize) = (stdin, resize);
        loop {
            let frame = tokio::select! {
                data = async { stdin.as_mut()?.recv().await.map(Some) }, if stdin.is_some() => match data {
                    Some(Some(data)) => attach::frame(attach::STDIN, &data),
                    _ => {
                        stdin = None;
                        attach::frame(attach::STDIN_END, b"")
                    }
                },
                size = async { resize.as_mut()?.recv().await }, if resize.is_some() => match size {
                    Some(size) => {
                        let mut b = size.width.to_be_bytes().to_vec();
                        b.extend_from_slice(&size.height.to_be_bytes());
                        attach::frame(attach::RESIZE, &b)
                    }
                    None => {
                        resize = None;
                        continue;
                    }
                },
                else => std::future::pending::<Vec<u8>>().await,
            };
            if write.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    let input = tokio::spawn(input);
    tokio::select! {
        _ = output => {}
        _ = gone.cancelled() => {}
    }
    // Ending the input closes our side: the monitor forgets this attacher.
    input.abort();
    Ok(())
}
