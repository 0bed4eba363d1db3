//! PSI and the cadvisor counters of a real container (runc, which also places a container in
//! the controller-less unified hierarchy of a hybrid host; crun in a pure v1 view, which does
//! not): what `container::usage_detail` reads is the kernel's own account of that container.

mod lab;

use std::time::Duration;

use lab::Lab;
use lockstep_runtime::container::usage_detail::{self, Dirs};
use lockstep_runtime::host::cgroups::Layout;

/// The container's line of /proc/<pid>/cgroup for the v2 hierarchy (`0::<path>`).
fn unified_line(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string)
}

#[test]
fn a_spinning_container_has_cpu_pressure_and_user_time_where_the_host_has_a_v2_cgroup_for_it() {
    let lab = Lab::new("runc");
    let spawned = lab.run("spin", &Lab::config(&["sh", "-c", "while :; do :; done"]));
    std::thread::sleep(Duration::from_millis(1500));

    let detail = usage_detail::detail(&Dirs::of_pid(spawned.init_pid).expect("the container runs"));
    assert!(
        detail.cpu_user_ns.is_some_and(|ns| ns >= 500_000_000),
        "1.5 s of spinning should be at least 0.5 s of user time: {detail:?}"
    );
    assert!(detail.cache.is_some() && detail.oom_kills == Some(0), "{detail:?}");

    let line = unified_line(spawned.init_pid);
    let layout = Layout::read();
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", spawned.init_pid)).unwrap();
    let has_own_v2 = !matches!(layout, Layout::V1) && usage_detail::owns_v2_cgroup(&cgroups);
    let dir = usage_detail::unified_of_pid(spawned.init_pid);
    if !has_own_v2 {
        assert_eq!(dir, None, "no v2 cgroup of its own ({line:?} on {layout:?}): no PSI");
        eprintln!("SKIPPED the PSI half: the container has no v2 cgroup of its own here ({line:?}, {layout:?})");
        return;
    }
    let dir = dir.expect("the container's v2 directory");
    if !dir.join("cpu.pressure").exists() {
        eprintln!("SKIPPED the PSI half: the kernel has no pressure files in {} (PSI off)", dir.display());
        return;
    }
    let pressure = usage_detail::pressure(&dir);
    let cpu = pressure.cpu.expect("cpu.pressure is there");
    assert!(cpu.some.is_some(), "{cpu:?}");
    assert!(pressure.memory.is_some() && pressure.io.is_some(), "{pressure:?}");
    let text = std::fs::read_to_string(dir.join("cpu.pressure")).unwrap();
    let total: u64 = text.lines().next().and_then(|l| l.rsplit("total=").next()?.trim().parse().ok()).unwrap();
    assert!(cpu.some.unwrap().total <= total, "the reading came before the file read again: {text}");
}

#[test]
fn a_container_under_crun_in_a_pure_v1_view_has_no_psi_of_its_own() {
    let Some(cgroup2) = lockstep_testkit::host::hybrid_cgroup2() else {
        eprintln!("SKIPPED: not a hybrid cgroup host");
        return;
    };
    let lab = Lab::hiding_cgroup2("crun", Some(cgroup2));
    let spawned = lab.run("v1", &Lab::config(&["sleep", "30"]));
    let line = unified_line(spawned.init_pid);
    let dir = usage_detail::unified_of_pid(spawned.init_pid);
    // The v2 cgroup it was left in (the root, or its parent's) is not its own: its pressure
    // would be the node's or lockstepd's, so none rather than a wrong one.
    assert_eq!(dir, None, "crun in a v1 view left the container in v2 cgroup {line:?}");
}
