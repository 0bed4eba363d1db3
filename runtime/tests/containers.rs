//! Real containers through runc (and crun in a pure cgroup v1 view), parented by
//! lockstep-monitor, from specs built by container::spec: logs in the CRI format, exit codes
//! and signals, OOM kills, log reopening, monitors outliving their parent, terminals, exec
//! with timeouts, and the security defaults seen from inside the container.

mod lab;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::Lab;
use lockstep_cri::model;
use lockstep_runtime::monitor::{self, MonitorConfig, MonitorState};
use lockstep_runtime::oci::{ExecOptions, OciError, OciRuntime};
use lockstep_testkit::host::{self, processes_running, wait_gone};

fn security(config: &mut model::ContainerConfig) -> &mut model::LinuxContainerSecurityContext {
    config.linux.get_or_insert_with(Default::default).security_context.get_or_insert_with(Default::default)
}

#[test]
fn output_goes_to_the_cri_log_and_the_exit_code_is_recorded() {
    let lab = Lab::new("runc");
    let config = Lab::config(&["sh", "-c", "echo out; echo err >&2; printf 'no newline'; exit 3"]);
    let spawned = lab.run("logs", &config);
    assert!(spawned.init_pid > 0 && spawned.monitor_pid > 0);
    let before = std::time::SystemTime::now();
    let exit = lab.wait_exit("logs");
    assert_eq!((exit.exit_code, exit.signal, exit.oom_killed), (3, None, false));
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    let before_ns = before.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    assert!(exit.exited_at_ns >= before_ns - 2_000_000_000 && exit.exited_at_ns <= now_ns);
    let mut entries = lab.log_entries("logs");
    entries.sort();
    assert_eq!(entries, vec!["stderr F err", "stdout F out", "stdout P no newline"]);
    for line in lab.log("logs").lines() {
        let stamp = line.split(' ').next().unwrap();
        assert_eq!(stamp.len(), 30, "RFC3339Nano with nine digits: {stamp}");
        assert!(stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T');
    }
    assert!(wait_gone(spawned.monitor_pid, Duration::from_secs(10)), "the monitor exits after recording");
}

#[test]
fn a_long_line_is_split_into_partial_entries() {
    let lab = Lab::new("runc");
    // 40000 'x' then a newline: two P entries of 16 KiB and the F rest.
    let config = Lab::config(&["sh", "-c", "head -c 40000 /dev/zero | tr '\\0' x; echo"]);
    lab.run("long", &config);
    assert_eq!(lab.wait_exit("long").exit_code, 0);
    let entries = lab.log_entries("long");
    let tags: Vec<&str> = entries.iter().map(|e| &e[7..8]).collect();
    assert_eq!(tags, vec!["P", "P", "F"]);
    let joined: String = entries.iter().map(|e| &e[9..]).collect();
    assert_eq!(joined, "x".repeat(40000));
}

#[test]
fn a_create_failure_carries_the_runtimes_message_and_leaves_nothing() {
    let lab = Lab::new("runc");
    let err = lab.create("bad", &Lab::config(&["/no/such/binary"])).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, monitor::MonitorError::CreateFailed { .. }), "{text}");
    assert!(text.contains("/no/such/binary") && text.contains("no such file"), "{text}");
    assert_eq!(lab.runtime.state("bad").unwrap(), None, "the runtime keeps no half-created container");
    let cgroup =
        Path::new("/sys/fs/cgroup/memory").join(lab.cgroup_parent.trim_start_matches('/')).join("lockstep-bad");
    assert!(!cgroup.exists(), "no cgroup left: {}", cgroup.display());
    let identity = lab.dir("bad").read_identity().unwrap().unwrap();
    assert!(wait_gone(identity.pid, Duration::from_secs(10)), "the monitor is gone");
}

#[test]
fn a_killed_container_reports_the_signal() {
    let lab = Lab::new("runc");
    lab.run("killed", &Lab::config(&["sleep", "100"]));
    lab.runtime.kill("killed", 9, false).unwrap();
    let exit = lab.wait_exit("killed");
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    assert!(matches!(lab.runtime.kill("killed", 15, false), Err(OciError::NotRunning { .. })));
    lab.runtime.delete("killed").unwrap();
    lab.runtime.delete("killed").unwrap();
    assert_eq!(lab.runtime.state("killed").unwrap(), None);
}

#[test]
fn an_oom_kill_is_detected_from_the_memory_cgroup() {
    let lab = Lab::new("runc");
    let mut config = Lab::config(&["sh", "-c", "dd if=/dev/zero of=/dev/null bs=96M count=1; echo survived"]);
    config.linux.as_mut().unwrap().resources = Some(model::LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        memory_swap_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    lab.run("oom", &config);
    let exit = lab.wait_exit("oom");
    assert!(exit.oom_killed, "{exit:?}");

    let mut fine = Lab::config(&["true"]);
    fine.linux.as_mut().unwrap().resources = config.linux.as_ref().unwrap().resources.clone();
    lab.run("fine", &fine);
    let exit = lab.wait_exit("fine");
    assert_eq!((exit.exit_code, exit.oom_killed), (0, false));
}

#[test]
fn reopening_after_a_rename_loses_no_line() {
    let lab = Lab::new("runc");
    let config =
        Lab::config(&["sh", "-c", "i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); usleep 2000; done"]);
    lab.run("rotate", &config);
    std::thread::sleep(Duration::from_millis(250));
    let path = lab.log_path("rotate");
    let rotated = path.with_extension("log.20261128-000000");
    std::fs::rename(&path, &rotated).unwrap();
    monitor::reopen_log(&lab.dir("rotate")).unwrap();
    assert_eq!(lab.wait_exit("rotate").exit_code, 0);
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&path).unwrap();
    assert!(!old.is_empty() && !new.is_empty(), "both files hold lines");
    let numbers: Vec<u32> =
        old.lines().chain(new.lines()).map(|l| l.rsplit(' ').next().unwrap().parse().unwrap()).collect();
    assert_eq!(numbers, (0..400).collect::<Vec<_>>(), "every line once, in order");
    let err = monitor::reopen_log(&lab.dir("rotate")).unwrap_err();
    assert!(err.to_string().contains("not running"), "{err}");
}

/// Not a test on its own: the stand-in for lockstepd that `the_monitor_survives_its_parent`
/// starts as a separate process.
#[test]
fn standin_for_lockstepd() {
    let Ok(config) = std::env::var("LOCKSTEP_TEST_STANDIN") else { return };
    let config: MonitorConfig = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let dir = monitor::ContainerDir::new(config.bundle.parent().unwrap());
    let spawned = monitor::spawn(Path::new(lab::MONITOR), &dir, &config, Duration::from_secs(30)).unwrap();
    println!("SPAWNED {} {}", spawned.monitor_pid, spawned.init_pid);
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn the_monitor_survives_its_parent() {
    use std::os::unix::process::CommandExt;
    let lab = Lab::new("runc");
    let config = Lab::config(&["sh", "-c", "echo started; sleep 0.3; exit 7"]);
    let built = lab.spec("orphan", &config).unwrap();
    let dir = lab.dir("orphan");
    std::fs::create_dir_all(dir.path().join("bundle")).unwrap();
    std::fs::write(dir.path().join("bundle/config.json"), serde_json::to_vec(&built.spec).unwrap()).unwrap();
    lab.register("orphan");
    let monitor_config = lab.tmp.path().join("standin.json");
    std::fs::write(&monitor_config, serde_json::to_vec(&lab.monitor_config("orphan", false, false)).unwrap()).unwrap();
    // A process of its own group, as lockstepd would be; then the whole group is SIGKILLed.
    let mut standin = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "standin_for_lockstepd", "--nocapture", "--test-threads=1"])
        .env("LOCKSTEP_TEST_STANDIN", &monitor_config)
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(standin.stdout.take().unwrap()).lines();
    let monitor_pid = loop {
        let line = lines.next().expect("the stand-in reports").unwrap();
        // The harness prints "test standin_for_lockstepd ... " on the same line first.
        if let Some((_, rest)) = line.split_once("SPAWNED ") {
            break rest.split(' ').next().unwrap().parse::<i32>().unwrap();
        }
    };
    let group = nix::unistd::Pid::from_raw(-(standin.id() as i32));
    nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    standin.wait().unwrap();
    assert!(host::alive(monitor_pid), "the monitor outlives its parent's process group");
    // A restarted lockstepd finds it, starts the container, and reads its exit.
    let found = monitor::find_all(&lab.tmp.path().join("c")).unwrap();
    assert_eq!(found, vec![("orphan".to_string(), MonitorState::Running { monitor_pid })]);
    lab.runtime.start("orphan").unwrap();
    let exit = lab.wait_exit("orphan");
    assert_eq!((exit.exit_code, exit.signal), (7, None));
    assert_eq!(lab.log_entries("orphan"), vec!["stdout F started"]);
}

#[test]
fn a_terminal_container_logs_through_its_pty() {
    let lab = Lab::new("runc");
    let mut config = Lab::config(&["sh", "-c", "tty; echo hello; exit 4"]);
    config.tty = true;
    lab.run("tty", &config);
    assert_eq!(lab.wait_exit("tty").exit_code, 4);
    let entries = lab.log_entries("tty");
    assert!(entries.iter().all(|e| e.starts_with("stdout ")), "a terminal has one stream: {entries:?}");
    assert!(entries.iter().any(|e| e.contains("/dev/pts/0")), "{entries:?}");
    assert!(entries.iter().any(|e| e.contains("hello")), "{entries:?}");
}

fn exec_process(lab: &Lab, id: &str, args: &[&str]) -> oci_spec::runtime::Process {
    let built = lab.spec(id, &Lab::config(args)).unwrap();
    let mut process = built.spec.process().clone().unwrap();
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    process
}

#[test]
fn exec_captures_output_and_exit_code_and_caps_the_size() {
    let lab = Lab::new("runc");
    lab.run("exec", &Lab::config(&["sleep", "100"]));
    let options =
        ExecOptions { timeout: Some(Duration::from_secs(20)), output_cap: 1 << 20, reaper: None, reaper_cgroup: None };
    let process = exec_process(&lab, "exec", &["sh", "-c", "echo hi; echo oops >&2; exit 5"]);
    let outcome = lab.runtime.exec("exec", &process, options.clone()).unwrap();
    assert_eq!(
        (outcome.exit_code, outcome.stdout.as_slice(), outcome.stderr.as_slice()),
        (5, &b"hi\n"[..], &b"oops\n"[..])
    );
    assert!(!outcome.timed_out && !outcome.truncated);
    let big = exec_process(&lab, "exec", &["sh", "-c", "head -c 100000 /dev/zero"]);
    let outcome = lab.runtime.exec("exec", &big, ExecOptions { output_cap: 1000, ..options.clone() }).unwrap();
    assert_eq!((outcome.stdout.len(), outcome.truncated, outcome.exit_code), (1000, true, 0));
    let missing = exec_process(&lab, "exec", &["/no/such/tool"]);
    let err = lab.runtime.exec("exec", &missing, options).unwrap_err().to_string();
    assert!(err.contains("/no/such/tool"), "{err}");
}

#[test]
fn a_timed_out_exec_is_killed_and_reaped() {
    let lab = Lab::new("runc");
    lab.run("slow", &Lab::config(&["sleep", "100"]));
    let process = exec_process(&lab, "slow", &["sleep", "4242"]);
    let started = Instant::now();
    let options =
        ExecOptions { timeout: Some(Duration::from_millis(500)), output_cap: 1024, reaper: None, reaper_cgroup: None };
    let outcome = lab.runtime.exec("slow", &process, options).unwrap();
    assert!(outcome.timed_out);
    assert_eq!(outcome.exit_code, 137);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(processes_running(&["sleep", "4242"]), Vec::<i32>::new(), "no leftover, not even a zombie");
}

#[test]
fn find_all_tells_running_exited_and_lost_apart() {
    let lab = Lab::new("runc");
    let running = lab.run("a-running", &Lab::config(&["sleep", "100"]));
    lab.run("b-exited", &Lab::config(&["true"]));
    lab.wait_exit("b-exited");
    let lost = lab.run("c-lost", &Lab::config(&["sleep", "100"]));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(lost.monitor_pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(wait_gone(lost.monitor_pid, Duration::from_secs(10)));
    let found = monitor::find_all(&lab.tmp.path().join("c")).unwrap();
    let states: Vec<(&str, &MonitorState)> = found.iter().map(|(id, s)| (id.as_str(), s)).collect();
    assert_eq!(states[0], ("a-running", &MonitorState::Running { monitor_pid: running.monitor_pid }));
    assert!(matches!(states[1], ("b-exited", MonitorState::Exited(e)) if e.exit_code == 0));
    assert_eq!(states[2], ("c-lost", &MonitorState::Lost));
    // The lost monitor's container is still there for lockstepd to kill and delete.
    lab.runtime.kill("c-lost", 9, false).unwrap();
}

/// Runs `args` with `config`'s security settings and returns (exit code, log lines).
fn run_to_end(lab: &Lab, id: &str, config: &model::ContainerConfig) -> (i32, Vec<String>) {
    lab.run(id, config);
    let exit = lab.wait_exit(id);
    (exit.exit_code, lab.log_entries(id))
}

#[test]
fn the_default_capabilities_and_seccomp_profile_apply() {
    let lab = Lab::new("runc");
    // A user namespace needs no capability, so only seccomp can refuse it.
    let script = "grep -E 'CapEff|SigIgn|Seccomp:' /proc/self/status; unshare -U true 2>/dev/null && echo userns-allowed || echo userns-denied";
    let (code, lines) = run_to_end(&lab, "defaults", &Lab::config(&["sh", "-c", script]));
    assert_eq!(code, 0, "{lines:?}");
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE
    assert!(lines.contains(&"stdout F CapEff:\t00000000000005fb".to_string()), "{lines:?}");
    // No profile named at all: unconfined, as the CRI documents the empty profile.
    assert!(lines.contains(&"stdout F Seccomp:\t0".to_string()), "{lines:?}");
    assert!(lines.contains(&"stdout F userns-allowed".to_string()), "{lines:?}");
    // The monitor (a Rust program, which ignores SIGPIPE) hands on no ignored signal.
    assert!(lines.contains(&"stdout F SigIgn:\t0000000000000000".to_string()), "{lines:?}");

    let mut runtime_default = Lab::config(&["sh", "-c", script]);
    security(&mut runtime_default).seccomp = Some(model::SecurityProfile {
        profile_type: model::security_profile::ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
    let (_, lines) = run_to_end(&lab, "runtime-default", &runtime_default);
    assert!(lines.contains(&"stdout F Seccomp:\t2".to_string()), "{lines:?}");
    assert!(lines.contains(&"stdout F userns-denied".to_string()), "{lines:?}");

    let mut unconfined = Lab::config(&["sh", "-c", script]);
    security(&mut unconfined).seccomp = Some(model::SecurityProfile {
        profile_type: model::security_profile::ProfileType::Unconfined as i32,
        ..Default::default()
    });
    let (_, lines) = run_to_end(&lab, "unconfined", &unconfined);
    assert!(lines.contains(&"stdout F userns-allowed".to_string()), "{lines:?}");

    let mut admin = Lab::config(&["sh", "-c", "unshare -n true && echo netns-allowed"]);
    security(&mut admin).capabilities =
        Some(model::Capability { add_capabilities: vec!["SYS_ADMIN".into()], ..Default::default() });
    let (_, lines) = run_to_end(&lab, "admin", &admin);
    assert!(lines.contains(&"stdout F netns-allowed".to_string()), "{lines:?}");
}

#[test]
fn a_localhost_seccomp_profile_applies() {
    let lab = Lab::new("runc");
    let profile = lab.tmp.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let mut config = Lab::config(&["sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?"]);
    security(&mut config).seccomp = Some(model::SecurityProfile {
        profile_type: model::security_profile::ProfileType::Localhost as i32,
        localhost_ref: profile.display().to_string(),
    });
    let (_, lines) = run_to_end(&lab, "localhost", &config);
    assert!(lines.iter().any(|l| l.contains("Permission denied")), "{lines:?}");
    assert!(lines.contains(&"stdout F rc=1".to_string()), "{lines:?}");
}

#[test]
fn users_groups_and_a_read_only_rootfs_apply() {
    let lab = Lab::new("runc");
    let mut config = Lab::config(&["sh", "-c", "id; touch /file 2>&1; echo rc=$?"]);
    let sc = security(&mut config);
    sc.run_as_username = "alice".into();
    sc.run_as_group = Some(model::Int64Value { value: 3000 });
    sc.supplemental_groups = vec![4000];
    sc.readonly_rootfs = true;
    let (_, lines) = run_to_end(&lab, "user", &config);
    assert!(lines.contains(&"stdout F uid=1000(alice) gid=3000 groups=10(wheel),3000,4000".to_string()), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("Read-only file system")), "{lines:?}");
    let mut strict = config.clone();
    security(&mut strict).supplemental_groups_policy = model::SupplementalGroupsPolicy::Strict as i32;
    security(&mut strict).readonly_rootfs = false;
    let (_, lines) = run_to_end(&lab, "strict", &strict);
    assert!(lines.contains(&"stdout F uid=1000(alice) gid=3000 groups=3000,4000".to_string()), "{lines:?}");
}

#[test]
fn a_privileged_container_gets_the_hosts_capabilities_and_devices() {
    let lab = Lab::new("runc");
    let mut config = Lab::config(&["sh", "-c", "grep CapEff /proc/self/status; ls /dev/kmsg && echo has-kmsg"]);
    security(&mut config).privileged = true;
    let (code, lines) = run_to_end(&lab, "privileged", &config);
    assert_eq!(code, 0, "{lines:?}");
    let host = lockstep_runtime::container::host::HostFacts::read().unwrap().bounding;
    assert!(lines.contains(&format!("stdout F CapEff:\t{:016x}", host.0)), "{lines:?}");
    assert!(lines.contains(&"stdout F has-kmsg".to_string()), "{lines:?}");
}

#[test]
fn resources_apply_and_update() {
    let lab = Lab::new("runc");
    let mut config = Lab::config(&["sleep", "100"]);
    config.linux.as_mut().unwrap().resources =
        Some(model::LinuxContainerResources { memory_limit_in_bytes: 64 << 20, cpu_shares: 512, ..Default::default() });
    lab.run("limits", &config);
    let cgroup = |controller: &str, file: &str| {
        let path = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(lab.cgroup_parent.trim_start_matches('/'))
            .join("lockstep-limits")
            .join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
    };
    assert_eq!(cgroup("memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(cgroup("cpu", "cpu.shares"), "512");
    let update =
        model::LinuxContainerResources { memory_limit_in_bytes: 128 << 20, cpu_shares: 1024, ..Default::default() };
    let resources = lockstep_runtime::container::resources::linux_resources(&update, "resources").unwrap();
    lab.runtime.update("limits", &resources).unwrap();
    assert_eq!(cgroup("memory", "memory.limit_in_bytes"), (128u64 << 20).to_string());
    assert_eq!(cgroup("cpu", "cpu.shares"), "1024");
}

#[test]
fn crun_runs_containers_in_a_pure_cgroup_v1_view() {
    let Some(cgroup2) = host::hybrid_cgroup2() else {
        eprintln!("this host has no hybrid cgroup layout to hide; crun's probe test covers it");
        return;
    };
    let tmp = tempfile::Builder::new().prefix("lsk").tempdir_in("/tmp").unwrap();
    let busybox = Path::new(lockstep_runtime::oci::PROBE_BINARY);
    let probed = lockstep_runtime::oci::probe_one(
        "crun",
        Path::new("crun"),
        &tmp.path().join("oci"),
        false,
        busybox,
        Some(&cgroup2),
    );
    assert!(probed.works(), "{probed:?}");
    assert_eq!(probed.cgroup2_hidden.as_deref(), Some(cgroup2.as_path()));
    assert!(probed.checked_by.contains("pure cgroup v1 view"), "{}", probed.checked_by);
    assert!(
        probed.checked_by.contains("cgroups in hybrid mode not supported"),
        "its refusal is kept: {}",
        probed.checked_by
    );

    let lab = Lab::hiding_cgroup2("crun", Some(cgroup2.clone()));
    let config = Lab::config(&["sh", "-c", "echo from crun; sleep 30"]);
    let built = lab.spec("crun", &config).unwrap();
    let spawned = lab.create_from("crun", &built, false, false).unwrap();
    lab.runtime.start("crun").unwrap();
    // The container sits in its v1 cgroups; the host keeps its v2 mount.
    let cgroups_path = built.spec.linux().as_ref().unwrap().cgroups_path().clone().unwrap();
    let procs = Path::new("/sys/fs/cgroup/memory").join(cgroups_path.strip_prefix("/").unwrap()).join("cgroup.procs");
    let members = std::fs::read_to_string(&procs).unwrap();
    assert!(members.lines().any(|p| p == spawned.init_pid.to_string()), "{}: {members}", procs.display());
    assert_eq!(host::hybrid_cgroup2().as_deref(), Some(cgroup2.as_path()), "hidden from crun only");
    // ExecSync's way: through lockstep-monitor exec, which must run crun in the same view.
    let options = ExecOptions {
        timeout: Some(Duration::from_secs(20)),
        output_cap: 1024,
        reaper: Some(lab::MONITOR.into()),
        reaper_cgroup: None,
    };
    let exec =
        lab.runtime.exec("crun", &exec_process(&lab, "crun", &["sh", "-c", "echo in; exit 4"]), options).unwrap();
    assert_eq!((exec.exit_code, exec.stdout.as_slice()), (4, &b"in\n"[..]));
    lab.runtime.kill("crun", 9, false).unwrap();
    let exit = lab.wait_exit("crun");
    assert_eq!(exit.signal, Some(9));
    assert_eq!(lab.log_entries("crun"), vec!["stdout F from crun"]);
    assert!(matches!(lab.runtime.kill("crun", 15, false), Err(OciError::NotRunning { .. })));
    lab.runtime.delete("crun").unwrap();
    assert_eq!(lab.runtime.state("crun").unwrap(), None);
    assert!(!procs.exists(), "crun removed its v1 cgroups");
    lab.clean_up();
}

#[test]
fn the_probe_reports_what_this_hosts_cgroup_layout_allows() {
    let tmp = tempfile::Builder::new().prefix("lsk").tempdir_in("/tmp").unwrap();
    let oci = tmp.path().join("oci");
    let busybox = Path::new(lockstep_runtime::oci::PROBE_BINARY);
    let crun = lockstep_runtime::oci::probe_one("crun", Path::new("crun"), &oci, false, busybox, None);
    let runc = lockstep_runtime::oci::probe_one("runc", Path::new("runc"), &oci, false, busybox, None);
    assert!(runc.works(), "{runc:?}");
    assert!(runc.features.recursive_read_only_mounts, "runc 1.1 lists rro");
    // runc takes a hybrid host as it is: it is never given the v1 view.
    let runc_offered_the_view = lockstep_runtime::oci::probe_one(
        "runc",
        Path::new("runc"),
        &oci,
        false,
        busybox,
        host::hybrid_cgroup2().as_deref(),
    );
    assert_eq!(runc_offered_the_view.cgroup2_hidden, None);
    let hybrid =
        std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers").is_ok_and(|c| !c.trim().is_empty());
    if hybrid {
        let problem = crun.problem.as_deref().unwrap_or("");
        assert!(problem.contains("cgroups in hybrid mode not supported"), "crun's own words: {crun:?}");
    } else {
        assert!(crun.works(), "{crun:?}");
    }
    assert!(std::fs::read_dir(&oci).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with("probe")));
}

#[test]
fn bidirectional_mounts_reach_the_host_whatever_the_cgroup_view() {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    for (handler, cgroup2) in [("runc", None), ("crun", host::hybrid_cgroup2())] {
        let lab = Lab::hiding_cgroup2(handler, cgroup2);
        let shared = lab.tmp.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        mount(Some("tmpfs"), &shared, Some("tmpfs"), MsFlags::empty(), Some("size=1m")).unwrap();
        mount(None::<&str>, &shared, None::<&str>, MsFlags::MS_SHARED, None::<&str>).unwrap();
        let mut config = Lab::config(&[
            "sh",
            "-c",
            "mkdir /mnt/shared/inner && mount -t tmpfs tmpfs /mnt/shared/inner && touch /mnt/shared/inner/made-inside",
        ]);
        security(&mut config).privileged = true;
        config.mounts.push(model::Mount {
            container_path: "/mnt/shared".into(),
            host_path: shared.to_string_lossy().into_owned(),
            propagation: model::MountPropagation::PropagationBidirectional as i32,
            ..Default::default()
        });
        lab.run(handler, &config);
        let exit = lab.wait_exit(handler);
        let seen = shared.join("inner/made-inside").exists();
        let _ = umount2(&shared.join("inner"), MntFlags::MNT_DETACH);
        umount2(&shared, MntFlags::MNT_DETACH).unwrap();
        assert_eq!(exit.exit_code, 0, "{handler}: {:?}", lab.log_entries(handler));
        assert!(seen, "{handler}: the container's mount reached the host");
        lab.clean_up();
    }
}

#[test]
fn output_without_a_log_path_is_drained_and_dropped() {
    let lab = Lab::new("runc");
    // More than a pipe holds: the container would block if nobody read its output.
    let built = lab.spec("quiet", &Lab::config(&["sh", "-c", "head -c 300000 /dev/zero; exit 2"])).unwrap();
    let dir = lab.dir("quiet");
    std::fs::create_dir_all(dir.path().join("bundle")).unwrap();
    std::fs::write(dir.path().join("bundle/config.json"), serde_json::to_vec(&built.spec).unwrap()).unwrap();
    lab.register("quiet");
    let config = MonitorConfig { log_path: None, ..lab.monitor_config("quiet", false, false) };
    monitor::spawn(Path::new(lab::MONITOR), &dir, &config, Duration::from_secs(30)).unwrap();
    lab.runtime.start("quiet").unwrap();
    assert_eq!(lab.wait_exit("quiet").exit_code, 2);
    assert!(!lab.tmp.path().join("logs").exists(), "no log was written anywhere");
}
