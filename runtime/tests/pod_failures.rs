//! Pod sandboxes when things fail for real: a CNI plugin (a wrapper around the real portmap)
//! refuses ADD, DEL or CHECK, or is slow while lockstepd is killed with SIGKILL. Whatever
//! fails, the pod's network is released in the end — no IP, iptables rule, namespace pin or
//! cache entry is left on the host — and nothing of it is forgotten across a restart.

mod common;

use std::path::PathBuf;

use common::*;
use lockstep_cri::model;

async fn faulty_daemon(scratch: &std::path::Path) -> (FaultyPlugin, Lockstepd) {
    let faulty = FaultyPlugin::new(scratch, "portmap");
    let daemon = start_with_plugins(vec![faulty.dir.clone(), PathBuf::from(CNI_BIN)]).await;
    (faulty, daemon)
}

fn with_host_port(mut config: model::PodSandboxConfig) -> model::PodSandboxConfig {
    config.port_mappings = vec![model::PortMapping {
        protocol: model::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 41000 + (std::process::id() % 9000) as i32,
        host_ip: String::new(),
    }];
    config
}

async fn stop(kubelet: &mut lockstep_cri::CriClient, id: &str) -> Result<(), tonic::Status> {
    kubelet.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.map(|_| ())
}

async fn remove(kubelet: &mut lockstep_cri::CriClient, id: &str) -> Result<(), tonic::Status> {
    kubelet.remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.map(|_| ())
}

#[tokio::test]
async fn an_add_that_fails_after_the_bridge_is_rolled_back_live() {
    let scratch = tempfile::tempdir().unwrap();
    let (faulty, daemon) = faulty_daemon(scratch.path()).await;
    let mut kubelet = daemon.kubelet().await;
    faulty.set("add-fails", true);
    let err = kubelet.run_pod_sandbox(run_request(with_host_port(pod(&unique("add-fails"))))).await.unwrap_err();
    assert!(err.message().contains("ADD refused for the test"), "{err:?}");
    let id = faulty.last_id();
    assert!(!id.is_empty());
    assert!(kubelet.list_pod_sandbox(Default::default()).await.unwrap().items.is_empty());
    assert_no_leaks(&daemon, &PodTraces { id, ..Default::default() });
}

#[tokio::test]
async fn a_del_that_fails_during_rollback_keeps_the_pod_until_stop_releases_it() {
    let scratch = tempfile::tempdir().unwrap();
    let (faulty, mut daemon) = faulty_daemon(scratch.path()).await;
    let mut kubelet = daemon.kubelet().await;
    faulty.set("add-fails", true);
    faulty.set("del-fails", true);
    let err = kubelet.run_pod_sandbox(run_request(with_host_port(pod(&unique("del-fails"))))).await.unwrap_err();
    assert!(err.message().contains("ADD refused for the test"), "{err:?}");
    let id = faulty.last_id();

    // Kept, not ready, with the reason; everything the DEL needs is still there.
    let items = kubelet.list_pod_sandbox(Default::default()).await.unwrap().items;
    assert_eq!(items.len(), 1, "the sandbox whose network could not be released is kept: {}", daemon.log());
    assert_eq!((items[0].id.as_str(), items[0].state()), (id.as_str(), model::PodSandboxState::SandboxNotready));
    let info = verbose_info(&mut kubelet, &id).await;
    let problem = info["record"]["problem"].as_str().unwrap_or("");
    assert!(problem.contains("DEL refused for the test"), "the problem is recorded: {info}");
    assert!(daemon.root().join("cni").join(format!("{id}.json")).exists(), "the CNI cache stays for the DEL");
    assert!(
        lockstep_runtime::host::namespaces::is_pinned(&ns_path(&daemon, &id, "net")),
        "the network namespace stays pinned: a DEL without it cannot remove the masquerade rules"
    );
    assert!(!iptables_rules_of(&id).is_empty(), "the bridge's rules wait for the DEL");

    // Nothing is forgotten across a restart; the kubelet's Stop releases the network.
    daemon.kill();
    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    let items = kubelet.list_pod_sandbox(Default::default()).await.unwrap().items;
    assert_eq!(items.len(), 1, "{}", daemon.log());
    assert_eq!(stop(&mut kubelet, &id).await.unwrap_err().code(), tonic::Code::Unavailable);
    faulty.set("del-fails", false);
    stop(&mut kubelet, &id).await.unwrap();
    remove(&mut kubelet, &id).await.unwrap();
    assert_no_leaks(&daemon, &PodTraces { id, ..Default::default() });
}

#[tokio::test]
async fn a_rollback_that_fails_at_restart_is_finished_by_stop() {
    let scratch = tempfile::tempdir().unwrap();
    let (faulty, mut daemon) = faulty_daemon(scratch.path()).await;
    let kubelet = daemon.kubelet().await;
    faulty.set("add-slow", true);
    let pending = tokio::spawn({
        let mut k = kubelet.clone();
        async move { k.run_pod_sandbox(run_request(with_host_port(pod(&unique("rollback-fails"))))).await }
    });
    faulty.wait_started("add").await;
    let id = faulty.last_id();
    daemon.kill();
    assert!(pending.await.unwrap().is_err());

    // The bridge ran; the rollback's DEL fails at the restart: the sandbox is kept.
    faulty.set("add-slow", false);
    faulty.set("del-fails", true);
    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    let items = kubelet.list_pod_sandbox(Default::default()).await.unwrap().items;
    assert_eq!(items.len(), 1, "{}", daemon.log());
    assert_eq!(items[0].state(), model::PodSandboxState::SandboxNotready);
    assert!(!iptables_rules_of(&id).is_empty(), "the bridge's rules wait for the DEL");

    faulty.set("del-fails", false);
    stop(&mut kubelet, &id).await.unwrap();
    remove(&mut kubelet, &id).await.unwrap();
    assert_no_leaks(&daemon, &PodTraces { id, ..Default::default() });
}

#[tokio::test]
async fn a_stop_queued_behind_a_remove_does_not_bring_the_sandbox_back() {
    let scratch = tempfile::tempdir().unwrap();
    let (faulty, mut daemon) = faulty_daemon(scratch.path()).await;
    let mut kubelet = daemon.kubelet().await;
    let id = kubelet.run_pod_sandbox(run_request(pod(&unique("stop-vs-remove")))).await.unwrap().pod_sandbox_id;
    let pod_traces = traces(&mut kubelet, &id).await;

    // Remove without a prior Stop, slowed down in its DEL; a Stop arrives meanwhile.
    faulty.set("del-slow", true);
    let removing = tokio::spawn({
        let (mut k, id) = (kubelet.clone(), id.clone());
        async move { remove(&mut k, &id).await }
    });
    faulty.wait_started("del").await;
    let stopping = tokio::spawn({
        let (mut k, id) = (kubelet.clone(), id.clone());
        async move { stop(&mut k, &id).await }
    });
    removing.await.unwrap().unwrap();
    // The Stop finds the sandbox removed: done, as for any unknown one (StopPodSandbox is
    // idempotent), and it must not bring the sandbox back.
    stopping.await.unwrap().unwrap();
    assert!(kubelet.list_pod_sandbox(Default::default()).await.unwrap().items.is_empty(), "not listed again");
    faulty.set("del-slow", false);
    assert!(!daemon.root().join("sandboxes").join(format!("{id}.json")).exists(), "the record stays removed");

    daemon.kill();
    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    assert!(kubelet.list_pod_sandbox(Default::default()).await.unwrap().items.is_empty(), "no ghost sandbox");
    assert_no_leaks(&daemon, &pod_traces);
}

#[tokio::test]
async fn a_pause_process_killed_from_outside_makes_the_pod_not_ready_for_good() {
    let mut daemon = start().await;
    let mut kubelet = daemon.kubelet().await;
    let mut config = pod(&unique("pause-killed"));
    let options = namespace_options(&mut config);
    options.pid = model::NamespaceMode::Pod as i32;
    let id = kubelet.run_pod_sandbox(run_request(config.clone())).await.unwrap().pod_sandbox_id;
    let pod_traces = traces(&mut kubelet, &id).await;
    let pid = pod_traces.pause_pid.expect("a pause process");
    // Listed READY first: the list then holds a pidfd on the pause process, which must tell.
    let listed = |items: Vec<model::PodSandbox>| items.iter().find(|p| p.id == id).map(|p| p.state());
    let items = kubelet.list_pod_sandbox(Default::default()).await.unwrap().items;
    assert_eq!(listed(items), Some(model::PodSandboxState::SandboxReady));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let not_ready = loop {
        let items = kubelet.list_pod_sandbox(Default::default()).await.unwrap().items;
        if pod_status(&mut kubelet, &id).await.state() == model::PodSandboxState::SandboxNotready
            && listed(items) == Some(model::PodSandboxState::SandboxNotready)
        {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(not_ready, "a pod whose pause process died is not ready, in its status and in the list");

    // The kubelet's retry with the same metadata is not handed the dead sandbox.
    let err = kubelet.run_pod_sandbox(run_request(config)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");

    daemon.kill();
    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    let items = kubelet.list_pod_sandbox(Default::default()).await.unwrap().items;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].state(), model::PodSandboxState::SandboxNotready);
    let info = verbose_info(&mut kubelet, &id).await;
    assert!(info["record"]["problem"].as_str().unwrap_or("").contains("pause"), "{info}");
    stop(&mut kubelet, &id).await.unwrap();
    remove(&mut kubelet, &id).await.unwrap();
    assert_no_leaks(&daemon, &pod_traces);
}

#[tokio::test]
async fn a_restart_never_tears_down_a_live_pod_s_network() {
    let scratch = tempfile::tempdir().unwrap();
    let (faulty, mut daemon) = faulty_daemon(scratch.path()).await;
    let mut kubelet = daemon.kubelet().await;
    let id = kubelet.run_pod_sandbox(run_request(with_host_port(pod(&unique("check"))))).await.unwrap().pod_sandbox_id;
    let before = traces(&mut kubelet, &id).await;
    let rules = iptables_rules_of(&id);
    assert!(!rules.is_empty());

    // A plugin that would fail CHECK (an upgrade, a transient error) must not cost the pod its network.
    faulty.set("check-fails", true);
    daemon.kill();
    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    let items = kubelet.list_pod_sandbox(Default::default()).await.unwrap().items;
    assert_eq!(items[0].state(), model::PodSandboxState::SandboxReady, "{}", daemon.log());
    let addr = nsenter(&[format!("--net={}", ns_path(&daemon, &id, "net").display())], &["ip", "-o", "addr"]);
    assert!(addr.contains(&format!("inet {}/", before.ip)), "the pod keeps its address: {addr}");
    assert_eq!(iptables_rules_of(&id), rules, "the pod keeps its host rules");
    faulty.set("check-fails", false);
    stop(&mut kubelet, &id).await.unwrap();
    remove(&mut kubelet, &id).await.unwrap();
    assert_no_leaks(&daemon, &before);
}

#[tokio::test]
async fn a_corrupt_record_is_set_aside_and_the_others_are_served() {
    let mut daemon = start().await;
    let mut kubelet = daemon.kubelet().await;
    let id = kubelet.run_pod_sandbox(run_request(pod(&unique("corrupt")))).await.unwrap().pod_sandbox_id;
    let pod_traces = traces(&mut kubelet, &id).await;
    daemon.kill();
    let bad = daemon.root().join("sandboxes").join(format!("{}.json", "b".repeat(64)));
    std::fs::write(&bad, b"{\"id\": \"torn").unwrap();

    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    let items = kubelet.list_pod_sandbox(Default::default()).await.unwrap().items;
    assert_eq!(items.len(), 1, "{}", daemon.log());
    assert_eq!((items[0].id.as_str(), items[0].state()), (id.as_str(), model::PodSandboxState::SandboxReady));
    assert!(!bad.exists());
    assert!(bad.with_extension("json.corrupt").exists(), "the unreadable record is kept aside for a person");
    assert!(daemon.log().contains(&"b".repeat(64)), "the log names it");
    stop(&mut kubelet, &id).await.unwrap();
    remove(&mut kubelet, &id).await.unwrap();
    assert_no_leaks(&daemon, &pod_traces);
}

#[tokio::test]
async fn a_runroot_reached_through_a_symlink_works_to_the_end() {
    let daemon = start_with(Options { runroot_via_symlink: true, ..Default::default() }).await;
    let mut kubelet = daemon.kubelet().await;
    let id = kubelet.run_pod_sandbox(run_request(pod(&unique("symlink")))).await.unwrap().pod_sandbox_id;
    let pod_traces = traces(&mut kubelet, &id).await;
    stop(&mut kubelet, &id).await.unwrap();
    remove(&mut kubelet, &id).await.unwrap();
    assert_no_leaks(&daemon, &pod_traces);
}

/// Kills lockstepd while `rpc` ("stop" or "remove") waits in a slow DEL, restarts it, and
/// checks that the kubelet's next Stop and Remove release everything.
async fn kill_during(rpc: &'static str) {
    let scratch = tempfile::tempdir().unwrap();
    let (faulty, mut daemon) = faulty_daemon(scratch.path()).await;
    let mut kubelet = daemon.kubelet().await;
    let id = kubelet.run_pod_sandbox(run_request(with_host_port(pod(&unique(rpc))))).await.unwrap().pod_sandbox_id;
    let pod_traces = traces(&mut kubelet, &id).await;
    faulty.set("del-slow", true);
    let pending = tokio::spawn({
        let (mut k, id) = (kubelet.clone(), id.clone());
        async move {
            if rpc == "stop" {
                stop(&mut k, &id).await
            } else {
                remove(&mut k, &id).await
            }
        }
    });
    faulty.wait_started("del").await;
    daemon.kill();
    assert!(pending.await.unwrap().is_err());
    faulty.set("del-slow", false);

    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    let items = kubelet.list_pod_sandbox(Default::default()).await.unwrap().items;
    assert_eq!(items.len(), 1, "the sandbox is still known: {}", daemon.log());
    stop(&mut kubelet, &id).await.unwrap();
    remove(&mut kubelet, &id).await.unwrap();
    assert_no_leaks(&daemon, &pod_traces);
}

#[tokio::test]
async fn a_kill_during_stop_is_finished_by_the_next_stop() {
    kill_during("stop").await;
}

#[tokio::test]
async fn a_kill_during_remove_is_finished_by_the_next_remove() {
    kill_during("remove").await;
}

/// What a reboot takes away from the host: the iptables rules that name the pod.
fn forget_rules_of(id: &str) {
    let mut chains = Vec::new();
    for line in iptables_rules_of(id).iter().filter(|l| l.starts_with("-A ")) {
        if let Some(target) = line.split(" -j ").nth(1).map(str::trim).filter(|t| t.starts_with("CNI-")) {
            chains.push(target.to_string());
        }
        let deleted = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("iptables -w -t nat -D {}", &line[3..]))
            .status()
            .unwrap();
        assert!(deleted.success(), "cannot delete {line}");
    }
    for chain in chains {
        let _ = std::process::Command::new("iptables").args(["-w", "-t", "nat", "-X", &chain]).status();
    }
}

#[tokio::test]
async fn after_a_reboot_pods_are_not_ready_and_their_network_is_released() {
    let mut daemon = start().await;
    let mut kubelet = daemon.kubelet().await;
    let mut config = pod(&unique("reboot"));
    let options = namespace_options(&mut config);
    options.pid = model::NamespaceMode::Pod as i32;
    let id = kubelet.run_pod_sandbox(run_request(config)).await.unwrap().pod_sandbox_id;
    let pod_traces = traces(&mut kubelet, &id).await;

    // The reboot: every process gone, /run (the runroot) empty, iptables empty; /var/lib (root
    // and host-local's IP store) kept.
    daemon.kill();
    let pid = nix::unistd::Pid::from_raw(pod_traces.pause_pid.unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    for mount in lockstep_runtime::host::mounts::mounts_under(&daemon.runroot()).unwrap() {
        lockstep_runtime::host::mounts::unmount(&mount).unwrap();
    }
    std::fs::remove_dir_all(daemon.runroot()).unwrap();
    forget_rules_of(&id);

    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    let items = kubelet.list_pod_sandbox(Default::default()).await.unwrap().items;
    assert_eq!(items.len(), 1, "{}", daemon.log());
    assert_eq!(items[0].state(), model::PodSandboxState::SandboxNotready);
    let info = verbose_info(&mut kubelet, &id).await;
    assert!(info["record"]["problem"].as_str().unwrap_or("").contains("no longer pinned"), "{info}");
    stop(&mut kubelet, &id).await.unwrap();
    remove(&mut kubelet, &id).await.unwrap();
    assert_no_leaks(&daemon, &pod_traces);
}

#[tokio::test]
async fn a_plugin_that_hangs_is_killed_and_the_pod_rolled_back() {
    let scratch = tempfile::tempdir().unwrap();
    let faulty = FaultyPlugin::new(scratch.path(), "portmap");
    let daemon = start_with(Options {
        plugin_dirs: vec![faulty.dir.clone(), PathBuf::from(CNI_BIN)],
        network_toml: "cni_plugin_timeout_secs = 2".into(),
        ..Default::default()
    })
    .await;
    let mut kubelet = daemon.kubelet().await;
    faulty.set("add-hangs", true);
    let started = std::time::Instant::now();
    let call = kubelet.run_pod_sandbox(run_request(with_host_port(pod(&unique("hangs")))));
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), call)
        .await
        .expect("RunPodSandbox returns once the plugin's deadline passed")
        .unwrap_err();
    assert!(err.message().contains("did not finish within 2s"), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let id = faulty.last_id();
    assert!(kubelet.list_pod_sandbox(Default::default()).await.unwrap().items.is_empty());
    assert_no_leaks(&daemon, &PodTraces { id, ..Default::default() });
}
