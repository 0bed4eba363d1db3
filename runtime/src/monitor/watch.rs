//! lockstepd's pidfds on running monitors and pause processes: one poll(2) tells which of many
//! have exited, so a list of a thousand containers or pods asks the kernel once instead of
//! reading files per item. Bounded by a share of lockstepd's open-file limit. Touches /proc only.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::files::{self, ContainerDir};

/// How many processes may be watched at once: a quarter of the open-file limit, so that the
/// watches never starve sockets, logs and streams of descriptors.
#[derive(Debug)]
pub struct WatchBudget {
    left: AtomicUsize,
}

impl WatchBudget {
    pub fn new(watches: usize) -> Arc<WatchBudget> {
        Arc::new(WatchBudget { left: AtomicUsize::new(watches) })
    }

    /// A quarter of this process's soft RLIMIT_NOFILE (/proc/self/limits; 1,024 when unreadable).
    pub fn from_nofile() -> Arc<WatchBudget> {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let soft = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse::<usize>().ok())
            .unwrap_or(1024);
        WatchBudget::new(soft / 4)
    }

    fn take(&self) -> bool {
        self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }

    /// Whether a watch could be taken now.
    pub fn available(&self) -> bool {
        self.left.load(Ordering::Acquire) > 0
    }
}

/// A pidfd on one running process (a monitor, a pause process), its share of the budget given back when dropped.
#[derive(Debug)]
pub struct ProcessWatch {
    pidfd: OwnedFd,
    budget: Arc<WatchBudget>,
}

impl Drop for ProcessWatch {
    fn drop(&mut self) {
        self.budget.left.fetch_add(1, Ordering::AcqRel);
    }
}

impl ProcessWatch {
    /// A watch on the monitor of `dir`, if it runs (its identity file names a live process
    /// started when the monitor was) and the budget allows one. A monitor that exits after
    /// this makes the watch readable; one that had exited before gives no watch.
    pub fn open(dir: &ContainerDir, budget: &Arc<WatchBudget>) -> Option<ProcessWatch> {
        let identity = dir.read_identity().ok()??;
        ProcessWatch::of(identity.pid, identity.start_ticks, budget)
    }

    /// A watch on the process `pid` if it runs and started at `start_ticks` (clock ticks since
    /// boot, /proc/PID/stat's field 22): a pod's pause process, a monitor.
    pub fn of(pid: i32, start_ticks: u64, budget: &Arc<WatchBudget>) -> Option<ProcessWatch> {
        if !budget.take() {
            return None;
        }
        let pidfd = match super::sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(_) => {
                budget.left.fetch_add(1, Ordering::AcqRel);
                return None;
            }
        };
        let watch = ProcessWatch { pidfd, budget: budget.clone() };
        // Checked after the pidfd exists: a pid reused before pidfd_open has another start time.
        (files::start_ticks(pid) == Some(start_ticks)).then_some(watch)
    }
}

/// The watch one item (a container's monitor, a pod's pause process) holds while it lives,
/// shared with the lists that poll it.
#[derive(Debug, Default)]
pub struct HeldWatch(Mutex<Option<Arc<ProcessWatch>>>);

impl HeldWatch {
    /// The watch held, if any.
    pub fn get(&self) -> Option<Arc<ProcessWatch>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Holds `watch` (or lets go of the one held, with None); returns it as held.
    pub fn set(&self, watch: Option<ProcessWatch>) -> Option<Arc<ProcessWatch>> {
        let watch = watch.map(Arc::new);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = watch.clone();
        watch
    }
}

/// For each watch, whether its process may have exited: one poll(2) for all. A poll that fails
/// says yes for every watch (the caller then looks at each on disk).
pub fn exited(watches: &[&ProcessWatch]) -> Vec<bool> {
    let mut fds: Vec<PollFd<'_>> = watches.iter().map(|w| PollFd::new(w.pidfd.as_fd(), PollFlags::POLLIN)).collect();
    if fds.is_empty() {
        return Vec::new();
    }
    match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => vec![false; fds.len()],
        Ok(_) => fds.iter().map(|f| f.revents().is_none_or(|r| !r.is_empty())).collect(),
        Err(_) => vec![true; fds.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A monitor as lockstepd finds it: a process whose identity file names it.
    fn identify(dir: &ContainerDir, pid: u32) {
        let identity = files::MonitorIdentity { pid: pid as i32, start_ticks: files::start_ticks(pid as i32).unwrap() };
        files::write_json(&dir.monitor(), &identity).unwrap();
    }

    #[test]
    fn a_watch_turns_readable_when_its_process_exits_and_not_before() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ContainerDir::new(tmp.path());
        let budget = WatchBudget::new(4);
        let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        identify(&dir, child.id());
        let watch = ProcessWatch::open(&dir, &budget).expect("a live process is watched");
        let me = tempfile::tempdir().unwrap();
        let mine = ContainerDir::new(me.path());
        identify(&mine, std::process::id());
        let alive = ProcessWatch::open(&mine, &budget).unwrap();
        assert_eq!(exited(&[&watch, &alive]), vec![false, false]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(exited(&[&watch, &alive]), vec![true, false], "only the process that ended");
    }

    #[test]
    fn no_watch_for_a_reused_pid_an_absent_identity_or_past_the_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ContainerDir::new(tmp.path());
        let budget = WatchBudget::new(1);
        assert!(ProcessWatch::open(&dir, &budget).is_none(), "no identity file");
        let me = std::process::id() as i32;
        let stale = files::MonitorIdentity { pid: me, start_ticks: files::start_ticks(me).unwrap() + 1 };
        files::write_json(&dir.monitor(), &stale).unwrap();
        assert!(ProcessWatch::open(&dir, &budget).is_none(), "the pid belongs to another process now");
        assert!(budget.available(), "a refused watch gives its share back");
        identify(&dir, std::process::id());
        let first = ProcessWatch::open(&dir, &budget).unwrap();
        assert!(ProcessWatch::open(&dir, &budget).is_none(), "the budget is spent");
        drop(first);
        assert!(ProcessWatch::open(&dir, &budget).is_some(), "a dropped watch gives its share back");
    }
}
