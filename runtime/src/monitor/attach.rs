//! Attach, on the monitor's control socket: `attach stdin=B stdout=B stderr=B` turns the
//! connection into a stream of frames (one kind byte, a 32-bit big-endian length, the bytes).
//! The monitor sends the container's output (kind 1 stdout, 2 stderr) to every attacher as it
//! writes it to the CRI log; an attacher sends stdin (0), the end of its stdin (3) and
//! terminal sizes (4: columns and rows, 16 bits each). With `stdin_once` the first attacher's
//! end of stdin closes the container's. An attacher that falls `QUEUE` frames behind is cut
//! off, so a stalled client never holds up the log. The monitor closes every attach stream
//! once the output has ended. A monitor from before attach answers `error unknown command`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use super::log::Stream;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STDIN_END: u8 = 3;
pub const RESIZE: u8 = 4;
/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 1 << 20;
/// Output frames an attacher may fall behind before it is cut off.
const QUEUE: usize = 256;

/// What an attacher asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachFlags {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl AttachFlags {
    /// The control command that opens an attach stream.
    pub fn command(self) -> String {
        let b = |v: bool| if v { 1 } else { 0 };
        format!("attach stdin={} stdout={} stderr={}", b(self.stdin), b(self.stdout), b(self.stderr))
    }

    /// The flags of an `attach …` command line (its words after `attach`).
    pub fn parse(words: &str) -> Result<AttachFlags, String> {
        let mut flags = AttachFlags { stdin: false, stdout: false, stderr: false };
        for word in words.split_whitespace() {
            let (name, value) = word.split_once('=').ok_or_else(|| format!("{word:?} is not NAME=0|1"))?;
            let value = match value {
                "1" => true,
                "0" => false,
                _ => return Err(format!("{word:?} is not NAME=0|1")),
            };
            match name {
                "stdin" => flags.stdin = value,
                "stdout" => flags.stdout = value,
                "stderr" => flags.stderr = value,
                _ => return Err(format!("unknown attach flag {name:?}")),
            }
        }
        Ok(flags)
    }
}

/// One frame as bytes.
pub fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + data.len());
    out.push(kind);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Reads one frame; None at a clean end of the stream.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..])?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a frame of {len} bytes")));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(Some((head[0], data)))
}

struct Attacher {
    id: u64,
    flags: AttachFlags,
    tx: SyncSender<Vec<u8>>,
}

/// The container's attachers and its input, shared by the output copiers and the control
/// socket.
pub struct Attachers {
    attached: Mutex<(u64, Vec<Attacher>)>,
    /// The container's stdin (the pipe's write end, or the terminal's master); None without
    /// stdin, or once closed.
    stdin: Mutex<Option<File>>,
    stdin_once: bool,
    /// The terminal's master, for resizing.
    terminal: Option<File>,
    ended: Mutex<bool>,
}

impl Attachers {
    pub fn new(stdin: Option<File>, stdin_once: bool, terminal: Option<File>) -> Attachers {
        Attachers {
            attached: Mutex::new((0, Vec::new())),
            stdin: Mutex::new(stdin),
            stdin_once,
            terminal,
            ended: Mutex::new(false),
        }
    }

    fn lock_attached(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Attacher>)> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends output to every attacher that wants `stream`.
    pub fn broadcast(&self, stream: Stream, data: &[u8]) {
        let kind = match stream {
            Stream::Stdout => STDOUT,
            Stream::Stderr => STDERR,
        };
        let mut attached = self.lock_attached();
        if attached.1.is_empty() {
            return;
        }
        let bytes = frame(kind, data);
        attached.1.retain(|a| {
            let wanted = if kind == STDOUT { a.flags.stdout } else { a.flags.stderr };
            if !wanted {
                return true;
            }
            match a.tx.try_send(bytes.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    eprintln!("lockstep-monitor: attacher {} fell {QUEUE} frames behind; cut off", a.id);
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }

    /// The output has ended: every attach stream closes once its queue is written.
    pub fn close_all(&self) {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.lock_attached().1.clear();
    }

    /// Serves one attach connection (after its command was read) until either side ends.
    pub fn serve(self: &Arc<Self>, conn: UnixStream, flags: AttachFlags) {
        let _ = conn.set_read_timeout(None);
        let _ = conn.set_write_timeout(None);
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let Ok(mut writer) = conn.try_clone() else { return };
        let id = {
            let mut attached = self.lock_attached();
            if *self.ended.lock().unwrap_or_else(|p| p.into_inner()) {
                let _ = writer.write_all(b"error the container's output has ended\n");
                return;
            }
            attached.0 += 1;
            let id = attached.0;
            attached.1.push(Attacher { id, flags, tx });
            id
        };
        if writer.write_all(b"ok\n").is_err() {
            self.lock_attached().1.retain(|a| a.id != id);
            return;
        }
        let output = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || {
            for bytes in rx {
                if writer.write_all(&bytes).is_err() {
                    break;
                }
            }
            let _ = writer.shutdown(std::net::Shutdown::Both);
        });
        let mut reader = conn;
        let mut stdin_open = flags.stdin;
        while let Ok(Some((kind, data))) = read_frame(&mut reader) {
            match kind {
                STDIN if stdin_open => {
                    let mut stdin = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(file) = stdin.as_mut() {
                        if file.write_all(&data).is_err() {
                            *stdin = None;
                        }
                    }
                }
                STDIN_END if stdin_open => {
                    stdin_open = false;
                    if self.stdin_once {
                        // The container's stdin closes with its first attacher's.
                        *self.stdin.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    }
                }
                RESIZE if data.len() == 4 => {
                    if let Some(terminal) = &self.terminal {
                        let size = rustix::termios::Winsize {
                            ws_col: u16::from_be_bytes([data[0], data[1]]),
                            ws_row: u16::from_be_bytes([data[2], data[3]]),
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        let _ = rustix::termios::tcsetwinsize(terminal, size);
                    }
                }
                _ => {}
            }
        }
        // The attacher went away: its output stops too.
        self.lock_attached().1.retain(|a| a.id != id);
        if let Ok(handle) = output {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_and_bad_ones_are_refused() {
        let flags = AttachFlags { stdin: true, stdout: true, stderr: false };
        let command = flags.command();
        assert_eq!(command, "attach stdin=1 stdout=1 stderr=0");
        assert_eq!(AttachFlags::parse(command.strip_prefix("attach").unwrap()).unwrap(), flags);
        assert!(AttachFlags::parse("stdin=yes").is_err());
        assert!(AttachFlags::parse("color=1").is_err());
    }

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut bytes = frame(STDOUT, b"tick");
        bytes.extend(frame(STDIN_END, b""));
        let mut r = std::io::Cursor::new(bytes);
        assert_eq!(read_frame(&mut r).unwrap(), Some((STDOUT, b"tick".to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), Some((STDIN_END, vec![])));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let mut huge = vec![STDIN];
        huge.extend_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
        assert!(read_frame(&mut std::io::Cursor::new(huge)).is_err());
    }

    #[test]
    fn every_attacher_gets_the_output_and_stdin_once_closes_stdin() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let attachers = Arc::new(Attachers::new(Some(File::from(write)), true, None));
        let flags = AttachFlags { stdin: true, stdout: true, stderr: true };
        let mut clients = Vec::new();
        for _ in 0..2 {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let a = attachers.clone();
            std::thread::spawn(move || a.serve(theirs, flags));
            let mut ok = [0u8; 3];
            let mut c = ours;
            c.read_exact(&mut ok).unwrap();
            assert_eq!(&ok, b"ok\n");
            clients.push(c);
        }
        attachers.broadcast(Stream::Stdout, b"out");
        attachers.broadcast(Stream::Stderr, b"err");
        for c in &mut clients {
            assert_eq!(read_frame(c).unwrap(), Some((STDOUT, b"out".to_vec())));
            assert_eq!(read_frame(c).unwrap(), Some((STDERR, b"err".to_vec())));
        }
        clients[0].write_all(&frame(STDIN, b"typed")).unwrap();
        clients[0].write_all(&frame(STDIN_END, b"")).unwrap();
        let mut container_stdin = File::from(read);
        let mut got = Vec::new();
        container_stdin.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"typed", "stdin reached the container and closed with the first attacher's");
        attachers.close_all();
        for c in &mut clients {
            assert_eq!(read_frame(c).unwrap(), None, "the attach stream ends with the output");
        }
    }
}
