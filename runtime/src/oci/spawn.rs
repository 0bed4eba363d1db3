//! How OCI runtime processes are started: every signal at its default disposition and none
//! blocked. glibc's posix_spawn (which std uses when it can) leaves its internal signals 32
//! and 33 ignored in the new program, and runc passes an ignored signal on to the container
//! process; a container must start as if from a clean exec. Also the pure cgroup v1 view for a
//! runtime that refuses a hybrid host (see `with_cgroup2_hidden`). The only unsafe code of `oci`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Makes `cmd` reset every catchable signal to SIG_DFL and unblock all signals in the child,
/// between fork and exec.
pub fn with_default_signals(cmd: &mut Command) -> &mut Command {
    // The kernel's sigaction with every field zero is SIG_DFL, no flags, an empty mask,
    // whatever the architecture's field order; a zero sigset unblocks everything. The raw
    // system calls reach glibc's internal signals, which its wrappers refuse to touch.
    const SIGSET_SIZE: usize = 8;
    // SAFETY: the closure runs in the forked child before exec; it only makes the
    // rt_sigaction and rt_sigprocmask system calls (async-signal-safe) on stack memory, and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let zero = [0u64; 8];
            for signal in 1..=64 {
                if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                    libc::syscall(
                        libc::SYS_rt_sigaction,
                        signal,
                        zero.as_ptr(),
                        std::ptr::null_mut::<u64>(),
                        SIGSET_SIZE,
                    );
                }
            }
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                zero.as_ptr(),
                std::ptr::null_mut::<u64>(),
                SIGSET_SIZE,
            );
            Ok(())
        })
    }
}

/// Makes `cmd` run in a mount namespace of its own in which `cgroup2`, the v2 hierarchy of a
/// hybrid host (mounted inside the v1 hierarchies' tmpfs, /sys/fs/cgroup/unified), is
/// detached: the program sees a pure cgroup v1 host, as the kubelet sees a hybrid one. The
/// cgroup tmpfs and everything under it become slaves first, so the detach does not propagate
/// back to the host; every other mount keeps its propagation (a container's rshared mounts
/// still reach the host). The namespace goes away with the program.
pub fn with_cgroup2_hidden<'c>(cmd: &'c mut Command, cgroup2: &Path) -> std::io::Result<&'c mut Command> {
    let c_path = |path: &Path| {
        CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} holds a NUL byte", path.display()))
        })
    };
    let tree = c_path(cgroup2.parent().unwrap_or(cgroup2))?;
    let hidden = c_path(cgroup2)?;
    // SAFETY: the closure runs in the forked child before exec; it only makes the unshare,
    // mount and umount2 system calls on strings allocated before the fork, and allocates
    // nothing (an OS error needs no allocation).
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::MS_REC | libc::MS_SLAVE;
            let none = std::ptr::null::<libc::c_char>();
            if libc::mount(none, tree.as_ptr(), none, flags, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::umount2(hidden.as_ptr(), libc::MNT_DETACH) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}
