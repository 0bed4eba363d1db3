//! What a killed lockstepd leaves on the host, released after a failed test or run: its
//! monitors and their containers (as each OCI runtime sees them), its pods' networks (CNI DEL
//! from its attachment cache), pause processes and their cgroups, and every mount under its
//! directory. Best effort: each step goes on whatever the others did.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockstep_runtime::oci::{CommandRuntime, OciRuntime, OciStatus, RuntimeCommand};

use crate::cni::CNI_BIN;
use crate::host;

/// Releases what the daemon with this directory, root and runroot made.
pub fn release(dir: &Path, root: &Path, runroot: &Path) {
    for pid in host::monitors_of(runroot) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    release_containers(&runroot.join("oci"));
    release_pods(root, runroot);
    for mount in lockstep_runtime::host::mounts::mounts_under(dir).unwrap_or_default() {
        let _ = lockstep_runtime::host::mounts::unmount(&mount);
    }
}

/// Kills and deletes every container of each handler, as lockstepd runs it (crun in its pure
/// cgroup v1 view on a hybrid host).
fn release_containers(oci_dir: &Path) {
    let hybrid_cgroup2 = host::hybrid_cgroup2();
    for (handler, view) in [("runc", None), ("crun", hybrid_cgroup2)] {
        let Some(binary) = lockstep_runtime::oci::resolve(Path::new(handler)) else { continue };
        let command = RuntimeCommand::under(oci_dir, handler, &binary, false).hiding_cgroup2(view);
        let runtime = CommandRuntime::new(command);
        for entry in std::fs::read_dir(oci_dir.join(handler)).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let _ = runtime.kill(&id, 9, true);
            // A plain delete refuses a container still running: wait (a little) for the kill.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline
                && runtime.state(&id).ok().flatten().is_some_and(|s| s.status != OciStatus::Stopped)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = runtime.delete(&id);
        }
    }
}

/// DEL of each cached attachment with the real plugins only (a test's faulty wrapper may still
/// refuse it), then the pause processes and their cgroups.
fn release_pods(root: &Path, runroot: &Path) {
    let plugins = lockstep_runtime::cni::exec::Plugins::new(vec![PathBuf::from(CNI_BIN)]);
    let cache = lockstep_runtime::cni::network::AttachmentCache::new(root);
    for (_, attachment) in cache.all().unwrap_or_default() {
        let _ = lockstep_runtime::cni::network::del(&attachment, &plugins);
    }
    for entry in std::fs::read_dir(runroot.join("sandboxes")).into_iter().flatten().flatten() {
        if let Ok(Some(pause)) = lockstep_runtime::sandbox::pause::read_pid_file(&entry.path()) {
            let _ = lockstep_runtime::sandbox::pause::kill(&pause);
        }
    }
    let records = lockstep_runtime::persist::RecordDir::new(root.join("sandboxes"));
    let records: Vec<(String, lockstep_runtime::sandbox::SandboxRecord)> = records.load_all().unwrap_or_default();
    for (_, record) in records {
        let _ = lockstep_runtime::host::cgroups::remove(&record.pause_cgroups, &record.id);
    }
}
