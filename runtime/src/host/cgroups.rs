//! Every cgroup path and write of lockstepd, in one place: the host's layout (`Layout`: v1,
//! hybrid or v2), the cgroup of a process for a controller (`controller_dir`), joining a cgroup
//! (`join`), the cgroup mounts as stats read them (`cgroup_mountinfo`: cached a few seconds, as
//! /proc/self/mountinfo grows with every container), and the cgroups of lockstepd's helper
//! processes. The pause process's: a child of
//! the pod's cgroup parent in every mounted hierarchy (each v1 hierarchy and the v2 one), so
//! that the pod's limits apply to it and a restart of lockstepd's own service
//! (KillMode=control-group) does not take it along. The monitors' (`lockstep-monitors`, one for
//! all, planned the same way under the default parent), for the second reason. Only the
//! directories lockstepd created are removed, deepest first. Touches /sys/fs/cgroup below the
//! pods' parents only.
//!
//! With the systemd driver the slice's cgroupfs path is used directly (`kubepods-pod1.slice` is
//! `/kubepods.slice/kubepods-pod1.slice`) instead of asking systemd for a transient scope over
//! D-Bus: these hosts have no systemd to test that against.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the cgroup mounts read from /proc/self/mountinfo are reused.
const CGROUP_MOUNTS_TTL: Duration = Duration::from_secs(5);

/// The lines of /proc/self/mountinfo that are cgroup (v1 or v2) mounts, read at most once per
/// CGROUP_MOUNTS_TTL. The whole file holds every container's overlay mount with its long
/// options, and the kernel formats it afresh at each read: stats read it for every container,
/// which made ListPodSandboxStats quadratic in the pods (BENCHMARKS.md, issue 12). None when
/// it cannot be read.
pub fn cgroup_mountinfo() -> Option<Arc<str>> {
    static CACHE: Mutex<Option<(Instant, Arc<str>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, text)) = cache.as_ref() {
        if at.elapsed() < CGROUP_MOUNTS_TTL {
            return Some(text.clone());
        }
    }
    let full = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let cgroup_lines: String = full
        .lines()
        .filter(|line| {
            let fstype = line.split_once(" - ").and_then(|(_, rest)| rest.split(' ').next());
            matches!(fstype, Some("cgroup" | "cgroup2"))
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    let text: Arc<str> = cgroup_lines.into();
    *cache = Some((Instant::now(), text.clone()));
    Some(text)
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io { what, path: path.to_path_buf(), source }
}

/// How cgroup paths are named: cgroupfs paths, or systemd slices and scopes (the kubelet's
/// --cgroup-driver; `cgroup_driver` in lockstep.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// How the host mounts its cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Only v1 hierarchies (a tmpfs at /sys/fs/cgroup holding one mount per controller).
    V1,
    /// v1 hierarchies for the controllers, and the v2 hierarchy mounted inside the same tmpfs
    /// (systemd's /sys/fs/cgroup/unified) with no controllers of its own.
    Hybrid { unified: PathBuf },
    /// The v2 unified hierarchy at /sys/fs/cgroup.
    V2,
}

impl Layout {
    /// The layout that `mountinfo` (the text of /proc/self/mountinfo) shows.
    pub fn of(mountinfo: &str) -> Layout {
        let tree = Path::new("/sys/fs/cgroup");
        let mounts: Vec<crate::host::mounts::Mount> = crate::host::mounts::mounts(mountinfo).collect();
        // The last mount at a path is the one seen there.
        match mounts.iter().rev().find(|m| m.point == tree).map(|m| m.fstype) {
            Some("cgroup2") => Layout::V2,
            Some("tmpfs") => mounts
                .into_iter()
                .find(|m| m.fstype == "cgroup2" && m.point.parent() == Some(tree))
                .map_or(Layout::V1, |m| Layout::Hybrid { unified: m.point }),
            _ => Layout::V1,
        }
    }

    /// This host's layout; V1 when the mount table cannot be read.
    pub fn read() -> Layout {
        std::fs::read_to_string("/proc/self/mountinfo").map(|text| Layout::of(&text)).unwrap_or(Layout::V1)
    }

    /// The v2 mount of a hybrid host: what a runtime that refuses the hybrid layout must not see.
    pub fn hybrid_unified(&self) -> Option<&Path> {
        match self {
            Layout::Hybrid { unified } => Some(unified),
            Layout::V1 | Layout::V2 => None,
        }
    }
}

/// Moves the calling process into the cgroup `dir` ("0" is the writer itself; a child forked
/// afterwards is born there).
pub fn join(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("cgroup.procs"), "0")
}

/// The directory of the cgroup named in `cgroups` (the text of /proc/<pid>/cgroup) for
/// `controller`, and whether it is the v2 unified hierarchy: the v1 hierarchy of that
/// controller when one is mounted (hybrid hosts keep the controllers there), else v2.
pub fn controller_dir(cgroups: &str, mountinfo: &str, controller: &str) -> Option<(PathBuf, bool)> {
    let mut v1 = None;
    let mut v2 = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == controller) {
            v1 = Some(path.to_string());
        } else if controllers.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    if let Some(path) = v1 {
        let (mount, root) =
            find_mount(mountinfo, |fstype, options| fstype == "cgroup" && options.split(',').any(|o| o == controller))?;
        return Some((join_cgroup(&mount, &root, &path), false));
    }
    let path = v2?;
    let (mount, root) = find_mount(mountinfo, |fstype, _| fstype == "cgroup2")?;
    Some((join_cgroup(&mount, &root, &path), true))
}

/// The directory of cgroup `path` (relative to a hierarchy's root) for `controller`, and
/// whether it is v2: in the controller's v1 hierarchy when one is mounted, else in v2.
pub fn hierarchy_dir(mountinfo: &str, controller: &str, path: &Path) -> Option<(PathBuf, bool)> {
    let path = path.to_string_lossy();
    if let Some((mount, root)) =
        find_mount(mountinfo, |fstype, options| fstype == "cgroup" && options.split(',').any(|o| o == controller))
    {
        return Some((join_cgroup(&mount, &root, &path), false));
    }
    let (mount, root) = find_mount(mountinfo, |fstype, _| fstype == "cgroup2")?;
    Some((join_cgroup(&mount, &root, &path), true))
}

/// The directory of the v2 cgroup of a process (from `cgroups`, the text of /proc/<pid>/cgroup):
/// on a v2 host its only cgroup, on a hybrid one its place in the controller-less unified
/// hierarchy (which still has the `*.pressure` files); None on a v1-only host.
pub fn unified_dir(cgroups: &str, mountinfo: &str) -> Option<PathBuf> {
    let path = cgroups.lines().find_map(|line| line.strip_prefix("0::"))?;
    let (mount, root) = find_mount(mountinfo, |fstype, _| fstype == "cgroup2")?;
    Some(join_cgroup(&mount, &root, path))
}

/// The directory of cgroup `path` (relative to a hierarchy's root) in the v2 hierarchy, if
/// one is mounted (hybrid or v2 host).
pub fn unified_path_dir(mountinfo: &str, path: &Path) -> Option<PathBuf> {
    let (mount, root) = find_mount(mountinfo, |fstype, _| fstype == "cgroup2")?;
    Some(join_cgroup(&mount, &root, &path.to_string_lossy()))
}

/// A pod's cgroup (its cgroup parent) relative to a hierarchy's root, by the cgroup driver:
/// the path itself under cgroupfs, the slice's path under systemd.
pub fn parent_path(driver: CgroupDriver, parent: &str) -> PathBuf {
    let path = match driver {
        CgroupDriver::Cgroupfs => PathBuf::from(parent),
        CgroupDriver::Systemd => slice_path(parent),
    };
    path.strip_prefix("/").map(Path::to_path_buf).unwrap_or(path)
}

/// The mount point and mounted root of the first mount whose type and super options match.
fn find_mount(mountinfo: &str, matches: impl Fn(&str, &str) -> bool) -> Option<(PathBuf, String)> {
    crate::host::mounts::mounts(mountinfo).find(|m| matches(m.fstype, m.super_options)).map(|m| (m.point, m.root))
}

/// `<mount point>/<cgroup path relative to the mounted root>`.
fn join_cgroup(mount: &Path, root: &str, path: &str) -> PathBuf {
    let relative = path.strip_prefix(root).filter(|_| root != "/").unwrap_or(path);
    mount.join(relative.trim_start_matches('/'))
}

/// How the pause's own cgroup (the leaf) is named: `lockstep-<sandbox id>`.
const LEAF_PREFIX: &str = "lockstep-";

/// The pause process's cgroup directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseCgroups {
    /// One per hierarchy: where the pause process goes.
    pub leaves: Vec<PathBuf>,
    /// Those of the leaves and their parents that do not exist yet, parents first.
    pub missing: Vec<PathBuf>,
}

/// Where the pause of sandbox `id` goes under `parent` in each mounted hierarchy.
pub fn plan(driver: CgroupDriver, parent: &str, id: &str) -> Result<PauseCgroups, CgroupError> {
    let mountinfo = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(mountinfo).map_err(io("read", mountinfo))?;
    let relative = relative_path(driver, parent, id);
    let mut cgroups = PauseCgroups { leaves: Vec::new(), missing: Vec::new() };
    for root in hierarchies(&text) {
        let leaf = root.join(&relative);
        let mut dir = root.clone();
        for part in relative.components() {
            dir.push(part);
            if !dir.exists() {
                cgroups.missing.push(dir.clone());
            }
        }
        cgroups.leaves.push(leaf);
    }
    Ok(cgroups)
}

/// The pause's cgroup relative to a hierarchy's root: `<parent>/lockstep-<id>` under cgroupfs,
/// `<slice path>/lockstep-<id>.scope` under systemd. An empty parent is `/lockstep` (cgroupfs)
/// or `system.slice` (systemd), as for containers.
pub fn relative_path(driver: CgroupDriver, parent: &str, id: &str) -> PathBuf {
    match driver {
        CgroupDriver::Cgroupfs => {
            parent_path(driver, if parent.is_empty() { "/lockstep" } else { parent }).join(format!("{LEAF_PREFIX}{id}"))
        }
        CgroupDriver::Systemd => parent_path(driver, if parent.is_empty() { "system.slice" } else { parent })
            .join(format!("{LEAF_PREFIX}{id}.scope")),
    }
}

/// A systemd slice's cgroup path: `a-b.slice` is `/a.slice/a-b.slice`; a path is taken as it is.
fn slice_path(slice: &str) -> PathBuf {
    if slice.contains('/') {
        return PathBuf::from(slice);
    }
    let name = slice.strip_suffix(".slice").unwrap_or(slice);
    let mut path = PathBuf::from("/");
    if name == "-" {
        return path;
    }
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    path
}

/// The mount point of each cgroup hierarchy (v1 and v2) mounted at its root, once each.
pub fn hierarchies(mountinfo: &str) -> Vec<PathBuf> {
    let mut seen = std::collections::BTreeSet::new();
    crate::host::mounts::mounts(mountinfo)
        .filter(|m| matches!(m.fstype, "cgroup" | "cgroup2") && m.root == "/" && seen.insert(m.device))
        .map(|m| m.point)
        .collect()
}

/// Creates `missing` in order (parents first). A new cpuset v1 cgroup starts with no CPUs
/// and no memory nodes and takes no process: it gets its parent's.
pub fn create(missing: &[PathBuf]) -> Result<(), CgroupError> {
    for dir in missing {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("create the cgroup", dir)(e)),
        }
        if dir.join("cpuset.cpus").exists() && !dir.join("cgroup.controllers").exists() {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let Some(parent) = dir.parent() else { continue };
                let from = parent.join(file);
                let value = std::fs::read_to_string(&from).map_err(io("read", &from))?;
                let to = dir.join(file);
                std::fs::write(&to, value.trim()).map_err(io("write", &to))?;
            }
        }
    }
    Ok(())
}

/// Of the directories lockstepd created for sandbox `id`'s pause, its own (the leaves), not
/// their parents.
pub fn leaves(created: &[PathBuf], id: &str) -> Vec<PathBuf> {
    created.iter().filter(|d| is_leaf(d, id)).cloned().collect()
}

/// The pause's own cgroup of sandbox `id` (a parent may be named `lockstep-…` too).
fn is_leaf(dir: &Path, id: &str) -> bool {
    let leaf = format!("{LEAF_PREFIX}{id}");
    dir.file_name().is_some_and(|n| n.to_str() == Some(leaf.as_str()) || n.to_str() == Some(&format!("{leaf}.scope")))
}

/// Removes the directories lockstepd created (as `create` got them), deepest first; gone is
/// fine. A parent that another pod's cgroup still uses stays. The leaves are retried for a
/// moment: the killed pause may not have left its cgroup yet.
pub fn remove(created: &[PathBuf], id: &str) -> Result<(), CgroupError> {
    let mut dirs: Vec<&PathBuf> = created.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let is_leaf = is_leaf(dir, id);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                // A parent with other children: cgroupfs says EBUSY, a plain directory ENOTEMPTY.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) && !is_leaf => {
                    tracing::debug!(cgroup = %dir.display(), "a cgroup lockstepd created is still in use; it stays");
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(io("remove the cgroup", dir)(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_named_from_what_is_mounted_at_sys_fs_cgroup() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(Layout::of(hybrid), Layout::Hybrid { unified: PathBuf::from("/sys/fs/cgroup/unified") });
        assert_eq!(Layout::of(hybrid).hybrid_unified(), Some(Path::new("/sys/fs/cgroup/unified")));
        let pure_v2 = "31 23 0:28 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(Layout::of(pure_v2), Layout::V2);
        let pure_v1 = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        assert_eq!(Layout::of(pure_v1), Layout::V1);
        let v2_elsewhere = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            41 23 0:38 / /mnt/cgroup2 rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(Layout::of(v2_elsewhere), Layout::V1, "a v2 mount elsewhere does not make a hybrid host");
    }

    #[test]
    fn a_controller_is_found_in_its_v1_hierarchy_before_v2_and_sub_tree_mounts_count() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let cgroups = "4:memory:/pods/c1\n1:cpu:/pods/c1\n0::/pods/c1\n";
        assert_eq!(
            controller_dir(cgroups, hybrid, "memory"),
            Some((PathBuf::from("/sys/fs/cgroup/memory/pods/c1"), false))
        );
        assert_eq!(
            controller_dir(cgroups, hybrid, "pids"),
            Some((PathBuf::from("/sys/fs/cgroup/unified/pods/c1"), true))
        );
        let sub_tree = "35 31 0:32 /outer /mnt/mem rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            controller_dir("4:memory:/outer/c1\n", sub_tree, "memory"),
            Some((PathBuf::from("/mnt/mem/c1"), false))
        );
    }

    #[test]
    fn each_hierarchy_once_and_only_at_its_root() {
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
            40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
            50 31 0:29 / /mnt/cpu-again rw,relatime - cgroup cgroup rw,cpu\n\
            51 31 0:38 /sub /mnt/sub rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            hierarchies(mountinfo),
            ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"].map(PathBuf::from)
        );
    }

    #[test]
    fn the_pause_goes_under_the_pod_s_parent_by_the_driver() {
        let id = "abc";
        assert_eq!(
            relative_path(CgroupDriver::Cgroupfs, "/kubepods/burstable/pod1", id),
            Path::new("kubepods/burstable/pod1/lockstep-abc")
        );
        assert_eq!(relative_path(CgroupDriver::Cgroupfs, "", id), Path::new("lockstep/lockstep-abc"));
        assert_eq!(
            relative_path(CgroupDriver::Systemd, "kubepods-burstable-pod1.slice", id),
            Path::new("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/lockstep-abc.scope")
        );
        assert_eq!(relative_path(CgroupDriver::Systemd, "/test.slice", id), Path::new("test.slice/lockstep-abc.scope"));
        assert_eq!(relative_path(CgroupDriver::Systemd, "-.slice", id), Path::new("lockstep-abc.scope"));
    }

    #[test]
    fn only_what_was_created_is_removed_and_a_used_parent_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("pod");
        let leaf = parent.join("lockstep-abc");
        create(&[parent.clone(), leaf.clone()]).unwrap();
        let other = parent.join("someone-else");
        std::fs::create_dir(&other).unwrap();
        remove(&[parent.clone(), leaf.clone()], "abc").unwrap();
        assert!(!leaf.exists() && other.exists(), "the leaf went, the parent in use stayed");
        std::fs::remove_dir(&other).unwrap();
        remove(&[parent.clone(), leaf.clone()], "abc").unwrap();
        assert!(!parent.exists(), "and went once unused");
        assert_eq!(
            leaves(&[tmp.path().join("lockstep-x"), leaf.clone()], "abc"),
            vec![leaf],
            "a parent named lockstep-… is no leaf"
        );
    }
}
