//! Whether the kernel's OOM killer struck a container: the `oom_kill` counter of its memory
//! cgroup (cgroup v1 `memory.oom_control`, v2 `memory.events`), read when the container starts
//! and again when it exits. The cgroup is found from /proc/<pid>/cgroup and the mount table,
//! so it works for either cgroup driver. Reads /proc and the cgroup file system only.

use std::path::{Path, PathBuf};

/// The OOM counter of one container's memory cgroup, and its value at the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomWatch {
    counter_file: PathBuf,
    baseline: u64,
}

impl OomWatch {
    /// Watches the memory cgroup that `pid` is in, found through `cgroup_mounts` (mountinfo's
    /// cgroup lines) or else /proc/self/mountinfo; None when no memory controller is found.
    pub fn for_pid(pid: i32, cgroup_mounts: Option<&str>) -> Option<OomWatch> {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mountinfo = match cgroup_mounts {
            Some(lines) => lines.to_string(),
            None => std::fs::read_to_string("/proc/self/mountinfo").ok()?,
        };
        let counter_file = memory_counter_file(&cgroups, &mountinfo)?;
        let baseline = read_oom_kills(&counter_file)?;
        Some(OomWatch { counter_file, baseline })
    }

    pub fn counter_file(&self) -> &Path {
        &self.counter_file
    }

    /// Whether an OOM kill happened in the cgroup since the watch began.
    pub fn oom_killed(&self) -> bool {
        read_oom_kills(&self.counter_file).is_some_and(|n| n > self.baseline)
    }
}

/// The `oom_kill` line of memory.oom_control (v1) or memory.events (v2).
fn read_oom_kills(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok())
}

/// The file holding the OOM counter of the memory cgroup named in `cgroups` (the text of
/// /proc/<pid>/cgroup), located through `mountinfo`: the v1 memory hierarchy when mounted
/// (hybrid hosts keep memory there), else the v2 unified hierarchy.
pub fn memory_counter_file(cgroups: &str, mountinfo: &str) -> Option<PathBuf> {
    // A v2 hierarchy without the memory controller has no memory.events.
    match crate::host::cgroups::controller_dir(cgroups, mountinfo, "memory")? {
        (dir, false) => Some(dir.join("memory.oom_control")),
        (dir, true) => Some(dir.join("memory.events")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn the_v1_memory_hierarchy_wins_on_a_hybrid_host() {
        let cgroups = "4:memory:/pods/c1\n1:cpu:/pods/c1\n0::/pods/c1\n";
        assert_eq!(
            memory_counter_file(cgroups, HYBRID).unwrap(),
            Path::new("/sys/fs/cgroup/memory/pods/c1/memory.oom_control")
        );
    }

    #[test]
    fn a_pure_v2_host_uses_memory_events() {
        let mountinfo = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            memory_counter_file("0::/kubepods/c1\n", mountinfo).unwrap(),
            Path::new("/sys/fs/cgroup/kubepods/c1/memory.events")
        );
    }

    #[test]
    fn a_mount_of_a_sub_tree_is_accounted_for() {
        let mountinfo = "35 31 0:32 /outer /mnt/mem rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            memory_counter_file("4:memory:/outer/c1\n", mountinfo).unwrap(),
            Path::new("/mnt/mem/c1/memory.oom_control")
        );
        assert_eq!(crate::host::mounts::unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn this_process_has_a_readable_counter() {
        let watch = OomWatch::for_pid(std::process::id() as i32, None).expect("a memory cgroup");
        assert!(!watch.oom_killed());
        // lockstepd hands its monitors the cgroup lines of its mount table: the same counter.
        let lines = crate::host::cgroups::cgroup_mountinfo().expect("cgroup mounts");
        let given = OomWatch::for_pid(std::process::id() as i32, Some(&lines)).expect("a memory cgroup");
        assert_eq!(given.counter_file(), watch.counter_file());
    }
}
