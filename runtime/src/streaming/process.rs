//! Drives one interactive exec: spawns the prepared reaper and runtime, receives the terminal
//! when there is one, copies stdin, stdout, stderr and resizes between the process and the
//! client's streams, and ends with the exit code. A client that goes away gets the process
//! killed (by the pid the runtime wrote) and reaped before this returns.

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use super::{CommandIo, ExecResult, TermSize};
use crate::oci::PreparedExec;

/// How long output is still read after the process exited (something it left in the
/// background may hold the pipes or the terminal open for ever).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// How long the runtime may take to send the terminal.
const CONSOLE_WAIT: Duration = Duration::from_secs(30);
/// How long a terminal already on its way is still waited for once the runtime has exited.
const TERMINAL_AFTER_EXIT: Duration = Duration::from_secs(2);
/// The buffer the process's output is read into, and the least room a read is given.
const READ_CHUNK: usize = 256 * 1024;
const MIN_READ: usize = 32 * 1024;
/// The size asked for the process's output pipes (the kernel's default cap for them is 1 MiB).
const PIPE_SIZE: i32 = 1024 * 1024;

/// A unix socket the OCI runtime sends an exec's pty master to.
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Binds `<dir>/<name>`; the path must fit a socket address (the caller picks a short dir).
    pub fn bind(dir: &Path, name: &str) -> std::io::Result<ConsoleSocket> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits (at most `wait`) for the runtime to connect and send the terminal.
    async fn receive(&self, wait: Duration) -> std::io::Result<File> {
        let listener = tokio::net::UnixListener::from_std(self.listener.try_clone()?)?;
        let (stream, _) = tokio::time::timeout(wait, listener.accept())
            .await
            .map_err(|_| std::io::Error::other("the runtime sent no terminal"))??;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        tokio::task::spawn_blocking(move || crate::monitor::receive_fd(&stream))
            .await
            .map_err(|e| std::io::Error::other(format!("receiving the terminal panicked: {e}")))?
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A pty master, non-blocking, read and written through the reactor (as a character device:
/// tokio's pipe halves accept one unchecked), plus a handle for resizing it.
struct Pty {
    reader: tokio::sync::Mutex<tokio::net::unix::pipe::Receiver>,
    writer: tokio::sync::Mutex<tokio::net::unix::pipe::Sender>,
    control: File,
}

impl Pty {
    fn new(master: File) -> std::io::Result<Pty> {
        let flags = rustix::fs::fcntl_getfl(&master)?;
        rustix::fs::fcntl_setfl(&master, flags | rustix::fs::OFlags::NONBLOCK)?;
        let reader = tokio::net::unix::pipe::Receiver::from_file_unchecked(master.try_clone()?)?;
        let writer = tokio::net::unix::pipe::Sender::from_file_unchecked(master.try_clone()?)?;
        Ok(Pty { reader: reader.into(), writer: writer.into(), control: master })
    }

    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.reader.lock().await.read(buf).await {
            // The terminal's last holder closed it: the end of output.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            other => other,
        }
    }

    async fn write_all(&self, data: &[u8]) -> std::io::Result<()> {
        self.writer.lock().await.write_all(data).await
    }

    fn resize(&self, size: TermSize) {
        let winsize = rustix::termios::Winsize { ws_row: size.height, ws_col: size.width, ws_xpixel: 0, ws_ypixel: 0 };
        if let Err(e) = rustix::termios::tcsetwinsize(&self.control, winsize) {
            tracing::debug!(error = %e, "cannot resize an exec's terminal");
        }
    }
}

/// Copies `source` to `sink` (or drops it when nobody wants it) until EOF. What a read brings
/// is handed on as a slice of the buffer it landed in (no copy); reads go on into the rest of
/// that buffer, and a new one is taken when less than `MIN_READ` of it is left.
pub(crate) async fn pump(mut source: impl AsyncRead + Unpin, sink: Option<mpsc::Sender<Bytes>>) {
    let mut buf = BytesMut::new();
    loop {
        if buf.capacity() < MIN_READ {
            buf = BytesMut::with_capacity(READ_CHUNK);
        }
        match source.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let data = buf.split().freeze();
                if let Some(sink) = &sink {
                    // Waits while the client is slow: the process blocks on a full pipe.
                    if sink.send(data).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Widens a pipe the process writes its output to, so that it runs on while this side is
/// busy sending (64 KiB, the default, stalls it every two frames). Best effort.
fn widen(pipe: &impl std::os::fd::AsFd) {
    if let Err(e) = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
        tracing::debug!(error = %e, "exec: cannot widen an output pipe");
    }
}

/// 0–255 for an exit, 128 + n for death by signal n.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(255)
}

/// Kills the exec'd process once its pid is known (the runtime writes it as it starts the
/// process), then reaps the reaper, which exits when the process is gone.
async fn kill(exec: &PreparedExec, child: &mut tokio::process::Child) -> std::io::Result<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if let Some(pid) = exec.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("exec: the runtime never wrote the process's pid; killing the runtime");
            let _ = child.start_kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.wait().await
}

/// Runs `exec` with `io`; `console` is the socket whose path the runtime was given (tty).
pub async fn run(mut exec: PreparedExec, console: Option<ConsoleSocket>, io: CommandIo) -> ExecResult {
    use std::process::Stdio;
    use std::sync::Arc;
    let CommandIo { stdin, stdout, stderr, resize, gone } = io;
    let mut command = tokio::process::Command::from(exec.take_command());
    if console.is_some() {
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    } else {
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = command.spawn().map_err(|e| format!("cannot start the exec: {e}"))?;
    let mut outputs = tokio::task::JoinSet::new();
    let mut inputs = tokio::task::JoinSet::new();
    if let Some(console) = console {
        // One receive for the whole wait: dropped half-way (accepted, the descriptor not yet
        // read), the runtime's terminal would be lost with it.
        let receive = console.receive(CONSOLE_WAIT);
        tokio::pin!(receive);
        let master = tokio::select! {
            // The terminal first: a short command may be over (and its helper gone) by the time
            // the runtime's connection is looked at; its output waits in the terminal.
            biased;
            master = &mut receive => master,
            status = child.wait() => {
                let status = status.map_err(|e| format!("cannot wait for the exec: {e}"))?;
                match tokio::time::timeout(TERMINAL_AFTER_EXIT, &mut receive).await {
                    Ok(Ok(master)) => Ok(master),
                    // The runtime exited without sending a terminal: it could not run the process.
                    _ => {
                        return Err(exec.runtime_failure().unwrap_or_else(|| format!("the exec failed ({status})")))
                    }
                }
            }
            _ = gone.cancelled() => {
                let _ = kill(&exec, &mut child).await;
                return Err("the client went away".into());
            }
        };
        let pty = match master.and_then(Pty::new) {
            Ok(pty) => Arc::new(pty),
            Err(e) => {
                let _ = kill(&exec, &mut child).await;
                return Err(format!("cannot take the exec's terminal: {e}"));
            }
        };
        drop(stderr);
        let reader = pty.clone();
        outputs.spawn(async move {
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if let Some(out) = &stdout {
                            if out.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        if let Some(mut stdin) = stdin {
            let writer = pty.clone();
            inputs.spawn(async move {
                while let Some(data) = stdin.recv().await {
                    if writer.write_all(&data).await.is_err() {
                        return;
                    }
                }
            });
        }
        if let Some(mut resize) = resize {
            inputs.spawn(async move {
                while let Some(size) = resize.recv().await {
                    pty.resize(size);
                }
            });
        }
    } else {
        if let Some(out) = child.stdout.take() {
            widen(&out);
            outputs.spawn(pump(out, stdout));
        }
        if let Some(err) = child.stderr.take() {
            widen(&err);
            outputs.spawn(pump(err, stderr));
        }
        if let (Some(mut input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            inputs.spawn(async move {
                while let Some(data) = input.recv().await {
                    if pipe.write_all(&data).await.is_err() {
                        return;
                    }
                }
                // Dropping the pipe is the process's end of input.
            });
        }
    }
    let status = tokio::select! {
        status = child.wait() => status,
        _ = gone.cancelled() => kill(&exec, &mut child).await,
    };
    inputs.abort_all();
    let drained = tokio::time::timeout(OUTPUT_DRAIN, async { while outputs.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::debug!("exec: something still holds the output; ending the stream with what was read");
        outputs.abort_all();
    }
    let status = status.map_err(|e| format!("cannot wait for the exec: {e}"))?;
    if gone.is_cancelled() {
        return Err("the client went away".into());
    }
    if let Some(message) = exec.runtime_failure() {
        return Err(message);
    }
    Ok(exit_code(status))
}
