//! The three places the monitor needs `unsafe`: forking itself away from lockstepd, taking
//! ownership of the pty master that the OCI runtime passes over the console socket, and
//! lockstepd's pidfd on a monitor (pidfd_open, which libc does not wrap).
//! Nothing else in the crate forks or adopts raw descriptors.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use nix::unistd::{fork, ForkResult};

/// Forks; the parent returns `false` (and should exit at once), the child `true`.
pub fn fork_away() -> nix::Result<bool> {
    // SAFETY: called first thing in lockstep-monitor's main, before any thread exists, so the
    // child inherits no lock held by another thread; both sides then only run ordinary code.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => Ok(false),
        ForkResult::Child => Ok(true),
    }
}

/// Receives one file descriptor sent with SCM_RIGHTS (runc and crun send the pty master this
/// way, with the terminal's name as the payload).
pub fn receive_fd(stream: &UnixStream) -> std::io::Result<File> {
    let mut payload = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut payload)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let message = recvmsg::<UnixAddr>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut received = Vec::new();
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received.extend(fds);
        }
    }
    // SAFETY: each descriptor was just created in this process by recvmsg(SCM_RIGHTS) and is
    // referred to by nothing else; wrapping it in a File makes it owned (and closed) once.
    let mut files: Vec<File> = received.into_iter().map(|fd| unsafe { File::from_raw_fd(fd) }).collect();
    if files.is_empty() {
        return Err(std::io::Error::other("the console socket carried no file descriptor"));
    }
    Ok(files.swap_remove(0))
}

/// A pidfd of `pid` (pidfd_open(2), Linux 5.3), close-on-exec: readable once that process has
/// exited, and never another process's, whatever pid is reused later.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1; it reads and
    // writes none of this process's memory.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just made this descriptor for this process and nothing else refers to
    // it; the OwnedFd closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
