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

/// Makes `cmd` join the cgroup `dir` (writing 0, "this process", to its cgroup.procs) between
/// fork and exec, so that what it starts is born there. A failure leaves it where it was.
pub fn joining_cgroup<'c>(cmd: &'c mut Command, dir: &Path) -> std::io::Result<&'c mut Command> {
    let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} holds a NUL byte", dir.display()))
    })?;
    // SAFETY: the closure runs in the forked child before exec; it only makes the open, write
    // and close system calls on a string allocated before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
            Ok(())
        });
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::mount::{mount, umount2, MntFlags, MsFlags};

    fn mounted(point: &Path) -> bool {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(point.to_str().unwrap()))
    }

    #[test]
    fn the_hidden_mount_is_gone_for_the_program_only_even_under_a_shared_tree() {
        // A stand-in for a systemd host's /sys/fs/cgroup: a shared tmpfs holding a mount.
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        let hidden = tree.join("unified");
        std::fs::create_dir_all(&tree).unwrap();
        mount(Some("tmpfs"), &tree, Some("tmpfs"), MsFlags::empty(), Some("size=1m")).unwrap();
        mount(None::<&str>, &tree, None::<&str>, MsFlags::MS_SHARED, None::<&str>).unwrap();
        std::fs::create_dir_all(&hidden).unwrap();
        mount(Some("tmpfs"), &hidden, Some("tmpfs"), MsFlags::empty(), Some("size=1m")).unwrap();

        let script = format!("grep -q ' {} ' /proc/self/mountinfo && exit 1; exit 0", hidden.display());
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(&script);
        with_cgroup2_hidden(&mut cmd, &hidden).unwrap();
        let status = cmd.status().unwrap();
        let still_here = mounted(&hidden);
        let _ = umount2(&hidden, MntFlags::MNT_DETACH);
        umount2(&tree, MntFlags::MNT_DETACH).unwrap();
        assert!(status.success(), "the program saw the mount: {status}");
        assert!(still_here, "the detach propagated back to this namespace");
    }

    #[test]
    fn a_program_is_born_in_the_cgroup_it_joins() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let Some(pids) = mountinfo.lines().find_map(|l| {
            let point = l.split(' ').nth(4)?;
            (l.contains(" - cgroup ") && l.ends_with(",pids")).then(|| Path::new(point).to_path_buf())
        }) else {
            eprintln!("no v1 pids hierarchy here");
            return;
        };
        let dir = pids.join(format!("lockstep-spawn-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("/bin/cat");
        cmd.arg("/proc/self/cgroup");
        joining_cgroup(&mut cmd, &dir).unwrap();
        let output = cmd.output().unwrap();
        let _ = std::fs::remove_dir(&dir);
        let text = String::from_utf8_lossy(&output.stdout);
        let wanted = format!("pids:/{}", dir.strip_prefix(&pids).unwrap().display());
        assert!(text.lines().any(|l| l.ends_with(&wanted)), "{text}");
    }
}
