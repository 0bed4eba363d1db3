//! What cadvisor-style metrics (ListPodSandboxMetrics) and PSI need beyond `usage`'s reading:
//! CPU user and system time, CFS throttling, page cache, mapped files, swap, limit hits, peak
//! usage, OOM kills, and the cpu/memory/io pressure files of the v2 cgroup. Parsers over one
//! cgroup directory each (v1 or v2), so a fake tree tests them; reads only.

use std::path::{Path, PathBuf};

use lockstep_cri::model;

use crate::host::cgroups::{controller_dir, hierarchy_dir, unified_dir, unified_path_dir};

/// The counters of one cgroup that `usage::CgroupSample` leaves out; None where the host does
/// not say (a v1 host without swap accounting, a kernel without memory.peak).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupDetail {
    pub cpu_user_ns: Option<u64>,
    pub cpu_system_ns: Option<u64>,
    pub cfs_periods: Option<u64>,
    pub cfs_throttled_periods: Option<u64>,
    pub cfs_throttled_ns: Option<u64>,
    pub cache: Option<u64>,
    pub mapped_file: Option<u64>,
    pub swap: Option<u64>,
    /// Times usage hit the limit (v1 memory.failcnt, v2 memory.events `max`).
    pub failcnt: Option<u64>,
    pub max_usage: Option<u64>,
    pub oom_kills: Option<u64>,
}

/// A cgroup's directory for each controller read here, and whether each is v2.
#[derive(Debug, Clone, Default)]
pub struct Dirs {
    pub cpu: Option<(PathBuf, bool)>,
    pub cpuacct: Option<(PathBuf, bool)>,
    pub memory: Option<(PathBuf, bool)>,
}

impl Dirs {
    /// The cgroups of process `pid` (a container's init); None when it is gone.
    pub fn of_pid(pid: i32) -> Option<Dirs> {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mountinfo = crate::host::cgroups::cgroup_mountinfo()?;
        let dir = |controller| controller_dir(&cgroups, &mountinfo, controller);
        Some(Dirs { cpu: dir("cpu"), cpuacct: dir("cpuacct"), memory: dir("memory") })
    }

    /// The cgroup at `path` relative to each hierarchy's root (a pod's cgroup parent).
    pub fn of_cgroup(path: &Path) -> Option<Dirs> {
        let mountinfo = crate::host::cgroups::cgroup_mountinfo()?;
        let dir = |controller| hierarchy_dir(&mountinfo, controller, path);
        Some(Dirs { cpu: dir("cpu"), cpuacct: dir("cpuacct"), memory: dir("memory") })
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// `key value` lines (cpu.stat, memory.stat, memory.events, memory.oom_control, cpuacct.stat).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// v1's cpuacct.stat counts in USER_HZ ticks, which Linux fixes at 100 a second for user space.
const NS_PER_USER_HZ_TICK: u64 = 10_000_000;

/// Reads what `dirs` hold; each part that cannot be read stays None.
pub fn detail(dirs: &Dirs) -> CgroupDetail {
    let mut d = CgroupDetail::default();
    if let Some((dir, v2)) = &dirs.cpuacct {
        cpu_times(dir, *v2, &mut d);
    }
    if let Some((dir, v2)) = &dirs.cpu {
        throttling(dir, *v2, &mut d);
    }
    if let Some((dir, v2)) = &dirs.memory {
        memory(dir, *v2, &mut d);
    }
    d
}

fn cpu_times(dir: &Path, v2: bool, d: &mut CgroupDetail) {
    if v2 {
        let Some(stat) = read(&dir.join("cpu.stat")) else { return };
        d.cpu_user_ns = stat_value(&stat, "user_usec").map(|us| us * 1000);
        d.cpu_system_ns = stat_value(&stat, "system_usec").map(|us| us * 1000);
        return;
    }
    // Nanoseconds where the kernel has them (4.6+), else the ticks of cpuacct.stat.
    d.cpu_user_ns = read_u64(&dir.join("cpuacct.usage_user"));
    d.cpu_system_ns = read_u64(&dir.join("cpuacct.usage_sys"));
    if d.cpu_user_ns.is_none() || d.cpu_system_ns.is_none() {
        if let Some(stat) = read(&dir.join("cpuacct.stat")) {
            d.cpu_user_ns = stat_value(&stat, "user").map(|t| t * NS_PER_USER_HZ_TICK);
            d.cpu_system_ns = stat_value(&stat, "system").map(|t| t * NS_PER_USER_HZ_TICK);
        }
    }
}

fn throttling(dir: &Path, v2: bool, d: &mut CgroupDetail) {
    let Some(stat) = read(&dir.join("cpu.stat")) else { return };
    d.cfs_periods = stat_value(&stat, "nr_periods");
    d.cfs_throttled_periods = stat_value(&stat, "nr_throttled");
    d.cfs_throttled_ns =
        if v2 { stat_value(&stat, "throttled_usec").map(|us| us * 1000) } else { stat_value(&stat, "throttled_time") };
}

fn memory(dir: &Path, v2: bool, d: &mut CgroupDetail) {
    let stat = read(&dir.join("memory.stat")).unwrap_or_default();
    if v2 {
        let events = read(&dir.join("memory.events")).unwrap_or_default();
        d.cache = stat_value(&stat, "file");
        d.mapped_file = stat_value(&stat, "file_mapped");
        d.swap = read_u64(&dir.join("memory.swap.current"));
        d.failcnt = stat_value(&events, "max");
        d.max_usage = read_u64(&dir.join("memory.peak"));
        d.oom_kills = stat_value(&events, "oom_kill");
    } else {
        let oom = read(&dir.join("memory.oom_control")).unwrap_or_default();
        d.cache = stat_value(&stat, "total_cache");
        d.mapped_file = stat_value(&stat, "total_mapped_file");
        d.swap = stat_value(&stat, "total_swap");
        d.failcnt = read_u64(&dir.join("memory.failcnt"));
        d.max_usage = read_u64(&dir.join("memory.max_usage_in_bytes"));
        d.oom_kills = stat_value(&oom, "oom_kill");
    }
}

/// Pressure stall information of one cgroup: each resource whose `*.pressure` file is there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pressure {
    pub cpu: Option<model::PsiStats>,
    pub memory: Option<model::PsiStats>,
    pub io: Option<model::PsiStats>,
}

/// The v2 cgroup directory of process `pid` when it is the container's own (`owns_v2_cgroup`).
pub fn unified_of_pid(pid: i32) -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mountinfo = crate::host::cgroups::cgroup_mountinfo()?;
    owns_v2_cgroup(&cgroups).then(|| unified_dir(&cgroups, &mountinfo)).flatten()
}

/// Whether the v2 cgroup in `cgroups` (the text of /proc/<pid>/cgroup) is the process's own:
/// not the root, and on a hybrid host the same path as its v1 memory cgroup. A runtime that
/// placed the container in the unified hierarchy (runc) uses one path in all; one that ran
/// with the v2 mount hidden (crun in a pure v1 view) left it in its parent's v2 cgroup —
/// lockstepd's or the root — whose pressure is not the container's.
pub fn owns_v2_cgroup(cgroups: &str) -> bool {
    let Some(v2) = cgroups.lines().find_map(|l| l.strip_prefix("0::")).map(str::trim) else { return false };
    let memory_v1 = cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "memory").then_some(path.trim())
    });
    v2 != "/" && memory_v1.is_none_or(|v1| v1 == v2)
}

/// The v2 directory of the cgroup at `path` (a pod's cgroup parent), when the host has one.
pub fn unified_of_cgroup(path: &Path) -> Option<PathBuf> {
    let mountinfo = crate::host::cgroups::cgroup_mountinfo()?;
    unified_path_dir(&mountinfo, path).filter(|dir| dir.is_dir())
}

/// A pod's v2 directory whose pressure is its containers': only when each of them (their v2
/// directories, None for one without) lies inside it. Under a runtime that leaves containers at
/// the unified root (crun in a pure v1 view of a hybrid host) the pod's v2 cgroup holds none of
/// their work, and its pressure would be a false zero.
pub fn pod_pressure_dir(pod: Option<PathBuf>, containers: &[Option<PathBuf>]) -> Option<PathBuf> {
    let pod = pod?;
    containers.iter().all(|c| c.as_deref().is_some_and(|c| c.starts_with(&pod))).then_some(pod)
}

/// The pressure files of the v2 cgroup `dir`; a kernel without PSI (or booted with psi=0)
/// has no such files, and each resource is then None.
pub fn pressure(dir: &Path) -> Pressure {
    let of = |name: &str| read(&dir.join(name)).and_then(|text| psi(&text));
    Pressure { cpu: of("cpu.pressure"), memory: of("memory.pressure"), io: of("io.pressure") }
}

/// A pressure file: `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and a `full` line
/// (the root's cpu.pressure before 5.13 has only `some`).
fn psi(text: &str) -> Option<model::PsiStats> {
    let line = |kind: &str| {
        let rest = text.lines().find_map(|l| l.strip_prefix(kind)?.strip_prefix(' '))?;
        let mut data = model::PsiData::default();
        for field in rest.split_whitespace() {
            let (key, value) = field.split_once('=')?;
            match key {
                "avg10" => data.avg10 = value.parse().ok()?,
                "avg60" => data.avg60 = value.parse().ok()?,
                "avg300" => data.avg300 = value.parse().ok()?,
                "total" => data.total = value.parse().ok()?,
                _ => {}
            }
        }
        Some(data)
    };
    let some = line("some")?;
    Some(model::PsiStats { some: Some(some), full: line("full") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn a_v1_tree_gives_times_throttling_cache_swap_limit_hits_peak_and_oom_kills() {
        let cpuacct = tree(&[("cpuacct.stat", "user 250\nsystem 50\n")]);
        let cpu = tree(&[("cpu.stat", "nr_periods 40\nnr_throttled 7\nthrottled_time 123456789\n")]);
        let memory = tree(&[
            ("memory.stat", "cache 1\ntotal_cache 4096\ntotal_mapped_file 8192\ntotal_swap 512\n"),
            ("memory.failcnt", "3\n"),
            ("memory.max_usage_in_bytes", "70000000\n"),
            ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
        ]);
        let dirs = Dirs {
            cpu: Some((cpu.path().into(), false)),
            cpuacct: Some((cpuacct.path().into(), false)),
            memory: Some((memory.path().into(), false)),
        };
        let d = detail(&dirs);
        assert_eq!((d.cpu_user_ns, d.cpu_system_ns), (Some(2_500_000_000), Some(500_000_000)), "ticks of 10 ms");
        assert_eq!((d.cfs_periods, d.cfs_throttled_periods, d.cfs_throttled_ns), (Some(40), Some(7), Some(123456789)));
        assert_eq!((d.cache, d.mapped_file, d.swap), (Some(4096), Some(8192), Some(512)), "total_ keys, not cache");
        assert_eq!((d.failcnt, d.max_usage, d.oom_kills), (Some(3), Some(70_000_000), Some(2)));
    }

    #[test]
    fn v1_nanosecond_files_win_over_ticks() {
        let cpuacct = tree(&[
            ("cpuacct.usage_user", "1234\n"),
            ("cpuacct.usage_sys", "99\n"),
            ("cpuacct.stat", "user 1\nsystem 1\n"),
        ]);
        let d = detail(&Dirs { cpuacct: Some((cpuacct.path().into(), false)), ..Default::default() });
        assert_eq!((d.cpu_user_ns, d.cpu_system_ns), (Some(1234), Some(99)));
    }

    #[test]
    fn a_v2_tree_gives_the_same_in_its_own_files() {
        let dir = tree(&[
            (
                "cpu.stat",
                "usage_usec 9\nuser_usec 6\nsystem_usec 3\nnr_periods 10\nnr_throttled 4\nthrottled_usec 2000\n",
            ),
            ("memory.stat", "anon 1\nfile 4096\nfile_mapped 1024\n"),
            ("memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n"),
            ("memory.swap.current", "0\n"),
            ("memory.peak", "88\n"),
        ]);
        let both = Some((dir.path().to_path_buf(), true));
        let d = detail(&Dirs { cpu: both.clone(), cpuacct: both.clone(), memory: both });
        assert_eq!((d.cpu_user_ns, d.cpu_system_ns), (Some(6000), Some(3000)));
        assert_eq!((d.cfs_periods, d.cfs_throttled_periods, d.cfs_throttled_ns), (Some(10), Some(4), Some(2_000_000)));
        assert_eq!((d.cache, d.mapped_file, d.swap), (Some(4096), Some(1024), Some(0)));
        assert_eq!((d.failcnt, d.max_usage, d.oom_kills), (Some(5), Some(88), Some(1)));
    }

    #[test]
    fn missing_files_leave_parts_unknown() {
        let empty = tree(&[]);
        let none = Some((empty.path().to_path_buf(), false));
        assert_eq!(detail(&Dirs { cpu: none.clone(), cpuacct: none.clone(), memory: none }), CgroupDetail::default());
    }

    #[test]
    fn pressure_files_give_some_and_full() {
        let dir = tree(&[
            (
                "cpu.pressure",
                "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
            ),
            (
                "memory.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            ),
        ]);
        let p = pressure(dir.path());
        let cpu = p.cpu.unwrap();
        let some = cpu.some.unwrap();
        assert_eq!((some.avg10, some.avg60, some.total), (1.5, 0.25, 123456));
        assert_eq!(cpu.full.map(|f| f.total), Some(7));
        assert!(p.memory.is_some());
        assert_eq!(p.io, None, "no io.pressure file, no io pressure");
        assert_eq!(psi("some avg10=x total=1\n"), None, "a line that does not parse is no reading");
    }

    #[test]
    fn a_v2_cgroup_is_the_containers_own_only_where_it_matches_its_v1_one() {
        let runc_hybrid = "5:memory:/kubepods/pod1/c1\n1:cpu:/kubepods/pod1/c1\n0::/kubepods/pod1/c1\n";
        assert!(owns_v2_cgroup(runc_hybrid));
        let crun_v1_view = "5:memory:/kubepods/pod1/c1\n1:cpu:/kubepods/pod1/c1\n0::/system.slice/lockstepd.service\n";
        assert!(!owns_v2_cgroup(crun_v1_view), "lockstepd's own v2 cgroup, inherited");
        assert!(!owns_v2_cgroup("5:memory:/kubepods/pod1/c1\n0::/\n"), "the root");
        assert!(owns_v2_cgroup("0::/kubepods/pod1/c1\n"), "a v2 host");
        assert!(!owns_v2_cgroup("0::/\n"));
        assert!(!owns_v2_cgroup("5:memory:/x\n"), "a v1 host");
    }

    #[test]
    fn a_pod_has_pressure_only_when_its_v2_cgroup_holds_every_container() {
        let pod = || Some(PathBuf::from("/sys/fs/cgroup/unified/kubepods/pod1"));
        let inside = Some(PathBuf::from("/sys/fs/cgroup/unified/kubepods/pod1/c1"));
        assert_eq!(pod_pressure_dir(pod(), std::slice::from_ref(&inside)), pod());
        assert_eq!(pod_pressure_dir(pod(), &[]), pod(), "no container: the pod's own reading");
        assert_eq!(pod_pressure_dir(pod(), &[inside, None]), None, "a container at the unified root");
        let elsewhere = Some(PathBuf::from("/sys/fs/cgroup/unified/other"));
        assert_eq!(pod_pressure_dir(pod(), &[elsewhere]), None);
        assert_eq!(pod_pressure_dir(None, &[]), None);
    }

    #[test]
    fn this_process_has_cgroup_detail_on_this_host() {
        let d = detail(&Dirs::of_pid(std::process::id() as i32).unwrap());
        assert!(d.cpu_user_ns.is_some() && d.cache.is_some(), "{d:?}");
    }
}
