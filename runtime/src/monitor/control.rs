//! The monitor's control socket (`control.sock` in the container's directory): one text
//! command per connection, one line back. `reopen` reopens the CRI log (ReopenContainerLog),
//! `ping` answers with the monitor's pid, `attach …` turns the connection into an attach
//! stream (`attach`). Both ends live in this module; paths longer than a unix socket address
//! allows are reached via /proc/self/fd.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::attach::{AttachFlags, Attachers};
use super::log::CriLog;

/// sun_path holds 108 bytes, the terminating NUL included.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the monitor of {dir} is not running (no control socket answers): {source}")]
    NotRunning { dir: PathBuf, source: std::io::Error },
    #[error("talking to the monitor of {dir}: {source}")]
    Io { dir: PathBuf, source: std::io::Error },
    #[error("the monitor of {dir} refused {command}: {message}")]
    Refused { dir: PathBuf, command: String, message: String },
}

/// Sends `command` to the monitor whose directory is `dir`; its reply after "ok".
pub fn request(dir: &Path, command: &str) -> Result<String, ControlError> {
    let io = |source| ControlError::Io { dir: dir.to_path_buf(), source };
    let mut stream = connect(dir, super::files::ContainerDir::CONTROL)
        .map_err(|source| ControlError::NotRunning { dir: dir.to_path_buf(), source })?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(io)?;
    stream.set_write_timeout(Some(Duration::from_secs(10))).map_err(io)?;
    stream.write_all(format!("{command}\n").as_bytes()).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(stream.take(4096)).read_line(&mut reply).map_err(io)?;
    let reply = reply.trim_end();
    match reply.strip_prefix("ok") {
        Some(rest) => Ok(rest.trim().to_string()),
        None => Err(ControlError::Refused {
            dir: dir.to_path_buf(),
            command: command.to_string(),
            message: reply.strip_prefix("error ").unwrap_or(reply).to_string(),
        }),
    }
}

/// Connects to the socket `name` in `dir`, however long the directory's path.
pub fn connect(dir: &Path, name: &str) -> std::io::Result<UnixStream> {
    let direct = dir.join(name);
    if direct.as_os_str().len() <= MAX_SOCKET_PATH {
        return UnixStream::connect(direct);
    }
    let handle = std::fs::File::open(dir)?;
    UnixStream::connect(format!("/proc/self/fd/{}/{name}", handle.as_raw_fd()))
}

/// A path by which other processes (the OCI runtime) reach the socket `name` in the
/// monitor's working directory, short enough for a socket address.
pub fn reachable_path(dir: &Path, name: &str) -> PathBuf {
    let direct = dir.join(name);
    if direct.as_os_str().len() <= MAX_SOCKET_PATH {
        direct
    } else {
        PathBuf::from(format!("/proc/{}/cwd/{name}", std::process::id()))
    }
}

/// Binds `name` in the current directory (the monitor works in its container's directory,
/// so no path length limit applies), replacing a stale socket.
pub fn bind_here(name: &str) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(name) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(name)
}

/// Answers control connections, one at a time, for the monitor's life; attach streams go on
/// on threads of their own.
pub fn serve(listener: UnixListener, log: Arc<CriLog>, attachers: Arc<Attachers>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        let Ok(reader) = conn.try_clone() else { continue };
        if BufReader::new(reader.take(256)).read_line(&mut line).is_err() {
            continue;
        }
        let reply = match line.trim() {
            "reopen" => match log.reopen() {
                Ok(()) => "ok\n".to_string(),
                Err(e) => format!("error cannot reopen {}: {e}\n", log.path().unwrap_or(Path::new("")).display()),
            },
            "ping" => format!("ok {}\n", std::process::id()),
            attach if attach.starts_with("attach") => match AttachFlags::parse(&attach["attach".len()..]) {
                Ok(flags) => {
                    let attachers = attachers.clone();
                    let spawned =
                        std::thread::Builder::new().stack_size(128 * 1024).spawn(move || attachers.serve(conn, flags));
                    if spawned.is_err() {
                        eprintln!("lockstep-monitor: cannot start an attach thread");
                    }
                    continue;
                }
                Err(e) => format!("error {e}\n"),
            },
            other => format!("error unknown command {other:?}\n"),
        };
        let _ = conn.write_all(reply.as_bytes());
    }
}
