//! The leak accounting, read from the host and scoped to the runtime under test: a snapshot
//! before the load and one after it (mounts and namespace pins under its state directories, its
//! helper processes and their zombies, its open fds, files under its state directories), and the
//! traces of the run's own pods anywhere on the host (mounts, host-local IPs, veths, iptables
//! rules, cgroups, processes naming their ids). Other runtimes on the host are never counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// More open fds than at the start, beyond this, is a leak (gRPC connections come and go).
pub const FD_SLACK: usize = 8;
/// Where the host-local IPAM plugin keeps its allocations, one directory per network.
const HOST_LOCAL: &str = "/var/lib/cni/networks";

/// What belongs to the runtime under test.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub daemon_pid: Option<u32>,
    /// Its state directories (lockstepd's root and runroot; containerd's root and state).
    pub state_dirs: Vec<PathBuf>,
    /// A process whose command line holds one of these is the runtime's helper (a monitor
    /// names its runroot, a shim its daemon's socket).
    pub helper_marks: Vec<String>,
}

/// The host as the runtime under test shapes it, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Mount points under the state directories (namespace pins apart).
    pub mounts: BTreeSet<String>,
    /// Namespace pins (nsfs mounts) under the state directories.
    pub namespaces: BTreeSet<String>,
    pub helpers: BTreeSet<i32>,
    /// Zombies whose parent is the daemon or one of its helpers.
    pub zombies: BTreeSet<i32>,
    pub fds: Option<usize>,
    pub rss_kib: Option<u64>,
    pub rss_anon_kib: Option<u64>,
    /// Files under each state directory's entries (`<dir>/<entry>` → count).
    pub files: BTreeMap<String, usize>,
}

/// One kind of resource: how many were there before, after, and what is left over.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Line {
    pub resource: &'static str,
    pub before: usize,
    pub after: usize,
    /// What remains that the runtime should have released (empty: no leak).
    pub leaked: Vec<String>,
}

/// The accounting of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Accounting {
    pub lines: Vec<Line>,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// The anonymous part of those (heap and stacks: what a leak grows).
    pub rss_anon_before_kib: Option<u64>,
    pub rss_anon_after_kib: Option<u64>,
    /// The host interfaces the run's pods had while up, each checked gone at the end.
    pub veths_seen: usize,
}

impl Accounting {
    pub fn leaks(&self) -> usize {
        self.lines.iter().map(|l| l.leaked.len()).sum()
    }
}

fn under(path: &str, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| Path::new(path).starts_with(d))
}

/// `/proc/self/mountinfo`'s mount points with their filesystem type.
fn mountinfo() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?;
            Some((unescape(point), fstype.to_string()))
        })
        .collect()
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push((bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every process: pid, parent, state letter, command line.
pub(crate) fn processes() -> Vec<(i32, i32, char, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name may hold spaces and parentheses: the fields start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        all.push((pid, ppid, state, cmdline));
    }
    all
}

/// Counts files (not directories) under `dir`, not following symlinks, on this filesystem
/// walk only (mounts under it are walked too: a leaked rootfs shows its files).
fn count_files(dir: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(_) => count += 1,
                Err(_) => {}
            }
        }
    }
    count
}

impl Scope {
    /// The host now, as far as this runtime is concerned.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (point, fstype) in mountinfo() {
            if under(&point, &self.state_dirs) {
                if fstype == "nsfs" {
                    snapshot.namespaces.insert(point);
                } else {
                    snapshot.mounts.insert(point);
                }
            }
        }
        let processes = processes();
        let daemon = self.daemon_pid.map(|p| p as i32);
        snapshot.helpers = self.helpers_among(&processes);
        for (pid, ppid, state, _) in &processes {
            if *state == 'Z' && (Some(*ppid) == daemon || snapshot.helpers.contains(ppid)) {
                snapshot.zombies.insert(*pid);
            }
        }
        if let Some(pid) = self.daemon_pid {
            snapshot.fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count());
            snapshot.rss_kib = crate::bench::rss_kib(pid);
            snapshot.rss_anon_kib = crate::bench::rss_anon_kib(pid);
        }
        for dir in &self.state_dirs {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let count = if path.is_dir() { count_files(&path) } else { 1 };
                snapshot.files.insert(path.display().to_string(), count);
            }
        }
        snapshot
    }

    /// The runtime's helpers among `processes` (`processes()`): those whose command line holds
    /// one of its marks, not the daemon nor this harness.
    pub(crate) fn helpers_among(&self, processes: &[(i32, i32, char, String)]) -> BTreeSet<i32> {
        let me = std::process::id() as i32;
        let daemon = self.daemon_pid.map(|p| p as i32);
        processes
            .iter()
            .filter(|(pid, _, _, cmdline)| {
                *pid != me
                    && Some(*pid) != daemon
                    && !cmdline.contains("lockstep-conformance")
                    && self.helper_marks.iter().any(|m| !m.is_empty() && cmdline.contains(m.as_str()))
            })
            .map(|(pid, ..)| *pid)
            .collect()
    }

    /// What `after` holds that `before` did not, and every trace of `ids` (the run's pods and
    /// containers, with `veths` the host interfaces their pods had) left on the host.
    pub fn account(&self, before: &Snapshot, after: &Snapshot, ids: &[String], veths: &[String]) -> Accounting {
        let new = |b: &BTreeSet<String>, a: &BTreeSet<String>| a.difference(b).cloned().collect::<Vec<_>>();
        let new_pids = |b: &BTreeSet<i32>, a: &BTreeSet<i32>| {
            a.difference(b).map(|pid| format!("pid {pid}: {}", cmdline(*pid))).collect::<Vec<_>>()
        };
        let mut lines = Vec::new();
        // Mounts: under the state directories, or anywhere naming one of the run's ids.
        let mut mounts = new(&before.mounts, &after.mounts);
        for (point, _) in mountinfo() {
            if !under(&point, &self.state_dirs) && ids.iter().any(|id| point.contains(id.as_str())) {
                mounts.push(point);
            }
        }
        lines.push(Line { resource: "mounts", before: before.mounts.len(), after: after.mounts.len(), leaked: mounts });
        lines.push(Line {
            resource: "network/IPC/UTS namespace pins",
            before: before.namespaces.len(),
            after: after.namespaces.len(),
            leaked: new(&before.namespaces, &after.namespaces),
        });
        let present: Vec<String> =
            veths.iter().filter(|v| Path::new("/sys/class/net").join(v).exists()).cloned().collect();
        lines.push(Line { resource: "veths of the run's pods", before: 0, after: present.len(), leaked: present });
        let ips = host_local_of(ids);
        lines.push(Line { resource: "host-local IPs of the run's pods", before: 0, after: ips.len(), leaked: ips });
        let rules = iptables_of(ids);
        lines.push(Line { resource: "iptables rules of the run's pods", before: 0, after: rules.len(), leaked: rules });
        let cgroups = cgroups_of(ids);
        lines.push(Line { resource: "cgroups of the run's pods", before: 0, after: cgroups.len(), leaked: cgroups });
        let mut helpers = new_pids(&before.helpers, &after.helpers);
        for (pid, _, _, cmdline) in processes() {
            let known = after.helpers.contains(&pid) || Some(pid as u32) == self.daemon_pid;
            if !known && pid != std::process::id() as i32 && ids.iter().any(|id| cmdline.contains(id.as_str())) {
                helpers.push(format!("pid {pid}: {cmdline}"));
            }
        }
        lines.push(Line {
            resource: "monitor/shim processes",
            before: before.helpers.len(),
            after: after.helpers.len(),
            leaked: helpers,
        });
        lines.push(Line {
            resource: "zombies",
            before: before.zombies.len(),
            after: after.zombies.len(),
            leaked: new_pids(&before.zombies, &after.zombies),
        });
        if let (Some(b), Some(a)) = (before.fds, after.fds) {
            let leaked =
                if a > b + FD_SLACK { vec![format!("{} more open fds than at the start", a - b)] } else { vec![] };
            lines.push(Line { resource: "daemon's open fds", before: b, after: a, leaked });
        }
        let mut grown = Vec::new();
        for (path, &count) in &after.files {
            let was = before.files.get(path).copied().unwrap_or(0);
            if count > was {
                grown.push(format!("{path}: {was} → {count} files"));
            }
        }
        lines.push(Line {
            resource: "files under the state dirs",
            before: before.files.values().sum(),
            after: after.files.values().sum(),
            leaked: grown,
        });
        Accounting {
            lines,
            rss_before_kib: before.rss_kib,
            rss_after_kib: after.rss_kib,
            rss_anon_before_kib: before.rss_anon_kib,
            rss_anon_after_kib: after.rss_anon_kib,
            veths_seen: veths.len(),
        }
    }
}

fn cmdline(pid: i32) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&bytes).replace('\0', " ").trim().chars().take(200).collect()
}

/// host-local allocation files (in any network) that name one of `ids`.
fn host_local_of(ids: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for network in std::fs::read_dir(HOST_LOCAL).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(network.path()).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if ids.iter().any(|id| text.contains(id.as_str())) {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found
}

/// iptables rules (every table) naming one of `ids` (the bridge plugin's comments do).
fn iptables_of(ids: &[String]) -> Vec<String> {
    let Ok(out) = std::process::Command::new("iptables-save").output() else { return Vec::new() };
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().filter(|l| ids.iter().any(|id| l.contains(id.as_str()))).map(str::to_string).collect()
}

/// Cgroup directories, in every hierarchy, whose name holds one of `ids`.
fn cgroups_of(ids: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if ids.iter().any(|id| name.contains(id.as_str())) {
                found.push(entry.path().display().to_string());
            }
            if depth < 8 {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    use nix::mount::{mount, umount2, MntFlags, MsFlags};

    /// Pins a new network namespace at `path` (a bind mount, as runtimes pin a pod's).
    fn pin_new_netns(path: &Path) {
        std::fs::write(path, "").unwrap();
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            mount(Some("/proc/thread-self/ns/net"), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_mount_a_namespace_pin_and_a_file_left_in_the_state_dirs_are_leaks_and_others_are_not() {
        let state = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(state.path().join("containers/c1/rootfs")).unwrap();
        let scope = Scope { daemon_pid: None, state_dirs: vec![state.path().to_path_buf()], helper_marks: vec![] };
        let before = scope.snapshot();
        let rootfs = state.path().join("containers/c1/rootfs");
        mount(Some("tmpfs"), &rootfs, Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
        let pin = state.path().join("netns-pod1");
        pin_new_netns(&pin);
        std::fs::write(state.path().join("containers/c1/config.json"), "{}").unwrap();
        // What another runtime leaves outside the scope is not this one's leak.
        mount(Some("tmpfs"), elsewhere.path(), Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
        let after = scope.snapshot();
        let accounting = scope.account(&before, &after, &[], &[]);
        for path in [&rootfs, &pin, &elsewhere.path().to_path_buf()] {
            let _ = umount2(path.as_path(), MntFlags::MNT_DETACH);
        }
        let leaked = |resource: &str| accounting.lines.iter().find(|l| l.resource == resource).unwrap().leaked.clone();
        assert_eq!(leaked("mounts"), [rootfs.display().to_string()]);
        assert_eq!(leaked("network/IPC/UTS namespace pins"), [pin.display().to_string()]);
        let files = leaked("files under the state dirs");
        assert_eq!(files.len(), 2, "the pin's file and config.json: {files:?}");
        assert_eq!(accounting.leaks(), 4);
    }

    #[test]
    fn a_leftover_naming_a_pod_of_the_run_is_found_anywhere_on_the_host() {
        let elsewhere = tempfile::tempdir().unwrap();
        let id = format!("soakleaktest{}", std::process::id());
        let point = elsewhere.path().join(&id);
        std::fs::create_dir_all(&point).unwrap();
        let scope = Scope::default();
        let before = scope.snapshot();
        mount(Some("tmpfs"), &point, Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
        let accounting = scope.account(&before, &scope.snapshot(), std::slice::from_ref(&id), &[]);
        let _ = umount2(point.as_path(), MntFlags::MNT_DETACH);
        let mounts = accounting.lines.iter().find(|l| l.resource == "mounts").unwrap();
        assert_eq!(mounts.leaked, [point.display().to_string()]);
    }

    #[test]
    fn mountinfo_escapes_are_read_back() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
