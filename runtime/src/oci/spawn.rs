//! How OCI runtime processes are started: every signal at its default disposition and none
//! blocked. glibc's posix_spawn (which std uses when it can) leaves its internal signals 32
//! and 33 ignored in the new program, and runc passes an ignored signal on to the container
//! process; a container must start as if from a clean exec. The only unsafe code of `oci`.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
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
