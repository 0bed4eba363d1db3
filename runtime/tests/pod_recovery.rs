//! lockstepd killed with SIGKILL — a real crash of the real process — around pod sandboxes:
//! ready pods survive a restart with their state, IP and working namespaces; a pod half-made
//! at the kill (mid CNI ADD, made slow by a wrapper plugin) is rolled back without a trace.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use lockstep_cri::model;

#[tokio::test]
async fn ready_pods_survive_a_kill_and_restart() {
    let mut daemon = start().await;
    let mut kubelet = daemon.kubelet().await;
    let mut config = pod(&unique("survivor"));
    let options = namespace_options(&mut config);
    options.pid = model::NamespaceMode::Pod as i32;
    let id = kubelet.run_pod_sandbox(run_request(config)).await.unwrap().pod_sandbox_id;
    // The pod's directory is lockstepd's alone: its shm is a 1777 tmpfs, and `sandboxes/` may
    // be open for search once a user namespace pod runs.
    assert_eq!(sandbox_dir_mode(&daemon, &id), 0o700);
    let stopped_id = kubelet.run_pod_sandbox(run_request(pod(&unique("stopped")))).await.unwrap().pod_sandbox_id;
    let stopped_traces = traces(&mut kubelet, &stopped_id).await;
    kubelet.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: stopped_id.clone() }).await.unwrap();
    let before = traces(&mut kubelet, &id).await;

    daemon.kill();
    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    let items = kubelet.list_pod_sandbox(Default::default()).await.unwrap().items;
    let state = |wanted: &str| items.iter().find(|s| s.id == wanted).map(|s| s.state());
    assert_eq!(state(&id), Some(model::PodSandboxState::SandboxReady), "{}", daemon.log());
    assert_eq!(state(&stopped_id), Some(model::PodSandboxState::SandboxNotready));
    let after = traces(&mut kubelet, &id).await;
    assert_eq!(after.ip, before.ip, "the IP survives");
    assert_eq!(after.pause_pid, before.pause_pid, "the pause process survives");
    let addr = nsenter(&[format!("--net={}", ns_path(&daemon, &id, "net").display())], &["ip", "-o", "addr"]);
    assert!(addr.contains(&format!("inet {}/", before.ip)), "the namespace still works: {addr}");

    // The network is released after the restart, from the cache.
    for pod in [&id, &stopped_id] {
        kubelet.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
        kubelet.remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    }
    assert_no_leaks(&daemon, &before);
    assert_no_leaks(&daemon, &stopped_traces);
}

/// The permission bits of a sandbox's directory.
fn sandbox_dir_mode(daemon: &lockstep_testkit::Lockstepd, id: &str) -> u32 {
    let dir = daemon.runroot().join("sandboxes").join(id);
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir).unwrap().permissions()) & 0o777
}

/// A pod with a user namespace of its own (hostUsers: false) and a shared PID namespace:
/// after a kill and restart it is READY with its pause; the pinned user namespace still has
/// the pod's mapping and owns the network namespace; removed, it leaves nothing.
#[tokio::test]
async fn a_user_namespace_pod_survives_a_kill_and_leaves_nothing() {
    let mut daemon = start().await;
    let mut kubelet = daemon.kubelet().await;
    let mut config = pod(&unique("userns"));
    let options = namespace_options(&mut config);
    options.pid = model::NamespaceMode::Pod as i32;
    let range = || vec![model::IdMapping { container_id: 0, host_id: 65536 * 31, length: 65536 }];
    options.userns_options =
        Some(model::UserNamespace { mode: model::NamespaceMode::Pod as i32, uids: range(), gids: range() });
    let id = kubelet.run_pod_sandbox(run_request(config)).await.unwrap().pod_sandbox_id;
    let before = traces(&mut kubelet, &id).await;
    // Others may search the pod's directory (its OCI runtime works from inside the user
    // namespace), never list or change it.
    assert_eq!(sandbox_dir_mode(&daemon, &id), 0o701);
    let pause = before.pause_pid.expect("a pause process");
    let pause_status = std::fs::read_to_string(format!("/proc/{pause}/status")).unwrap();
    assert!(
        pause_status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().skip(1).all(|u| u == "2031616")),
        "the pause runs as the pod's root (host uid 2031616): {pause_status}"
    );

    daemon.kill();
    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    let status = pod_status(&mut kubelet, &id).await;
    assert_eq!(status.state(), model::PodSandboxState::SandboxReady, "{}", daemon.log());
    let userns = status.linux.unwrap().namespaces.unwrap().options.unwrap().userns_options.expect("userns_options");
    assert_eq!(userns.uids, range(), "PodSandboxStatus reports the pod's mapping");
    let user = ns_path(&daemon, &id, "user");
    let map = nsenter(&[format!("--user={}", user.display())], &["cat", "/proc/self/uid_map"]);
    assert_eq!(map.split_whitespace().collect::<Vec<_>>(), ["0", "2031616", "65536"], "{map}");
    // The pod's network namespace still works from inside its user namespace.
    let addr = nsenter(
        &[format!("--user={}", user.display()), format!("--net={}", ns_path(&daemon, &id, "net").display())],
        &["ip", "-o", "addr"],
    );
    assert!(addr.contains(&format!("inet {}/", before.ip)), "the namespace still works: {addr}");

    kubelet.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    kubelet.remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    assert_no_leaks(&daemon, &before);
}

/// A plugin directory whose `plugin` announces its ADD (the sandbox id in `marker`) and then
/// takes 3 s before running the real plugin.
fn slow_plugin_dir(tmp: &Path, plugin: &str) -> (PathBuf, PathBuf) {
    let dir = tmp.join("slow-plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let marker = tmp.join("add-started");
    let script = format!(
        "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ]; then echo \"$CNI_CONTAINERID\" >{marker}.tmp; mv {marker}.tmp {marker}; sleep 3; fi\nexec {CNI_BIN}/{plugin} \"$@\"\n",
        marker = marker.display()
    );
    let path = dir.join(plugin);
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, marker)
}

/// Kills lockstepd while `plugin`'s ADD runs, restarts it, and checks that the pod is gone
/// without a trace.
async fn kill_during_add_of(plugin: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let (slow, marker) = slow_plugin_dir(scratch.path(), plugin);
    let mut daemon = start_with_plugins(vec![slow, PathBuf::from(CNI_BIN)]).await;
    let kubelet = daemon.kubelet().await;
    let mut config = pod(&unique(&format!("crash-{plugin}")));
    config.port_mappings = vec![model::PortMapping {
        protocol: model::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 40000 + (std::process::id() % 20000) as i32,
        host_ip: String::new(),
    }];
    let pending = tokio::spawn({
        let mut k = kubelet.clone();
        async move { k.run_pod_sandbox(run_request(config)).await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the ADD never started: {}", daemon.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let id = std::fs::read_to_string(&marker).unwrap().trim().to_string();
    assert!(daemon.runroot().join("sandboxes").join(&id).exists(), "the pod was half made at the kill");
    daemon.kill();
    assert!(pending.await.unwrap().is_err(), "the caller saw the crash");

    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    assert!(kubelet.list_pod_sandbox(Default::default()).await.unwrap().items.is_empty(), "{}", daemon.log());
    assert!(daemon.log().contains("rolled back"), "{}", daemon.log());
    assert!(!daemon.root().join("sandboxes").join(format!("{id}.json")).exists());
    // The killed plugin's `sleep` may outlive it by a moment; nothing else of it remains.
    assert_no_leaks(&daemon, &PodTraces { id, ..Default::default() });
}

#[tokio::test]
async fn a_kill_before_the_bridge_ran_is_rolled_back() {
    kill_during_add_of("bridge").await;
}

#[tokio::test]
async fn a_kill_after_the_bridge_ran_is_rolled_back_with_a_cni_del() {
    kill_during_add_of("portmap").await;
}

#[tokio::test]
async fn a_failing_del_keeps_the_pod_attached_until_a_retry_succeeds() {
    // A portmap whose DEL fails while a "broken" file exists: a real plugin failure.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("flaky-plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let broken = scratch.path().join("broken");
    let script = format!(
        "#!/bin/sh\nif [ \"$CNI_COMMAND\" = DEL ] && [ -e {broken} ]; then\n  echo '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"DEL refused for the test\"}}'; exit 1\nfi\nexec {CNI_BIN}/portmap \"$@\"\n",
        broken = broken.display()
    );
    std::fs::write(dir.join("portmap"), script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.join("portmap"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut daemon = start_with_plugins(vec![dir, PathBuf::from(CNI_BIN)]).await;
    let mut kubelet = daemon.kubelet().await;
    let id = kubelet.run_pod_sandbox(run_request(pod(&unique("flaky-del")))).await.unwrap().pod_sandbox_id;
    let pod_traces = traces(&mut kubelet, &id).await;

    std::fs::write(&broken, "").unwrap();
    let err = kubelet.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("DEL refused for the test"), "{}", err.message());
    assert!(daemon.root().join("cni").join(format!("{id}.json")).exists(), "the cache stays for the retry");
    // Still refused after a crash and restart: the pod stays, attached, for the kubelet's retry.
    daemon.kill();
    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    assert_eq!(kubelet.list_pod_sandbox(Default::default()).await.unwrap().items.len(), 1);

    std::fs::remove_file(&broken).unwrap();
    kubelet.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    kubelet.remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: id }).await.unwrap();
    assert_no_leaks(&daemon, &pod_traces);
}

/// Found by `lockstep-conformance chaos`: lockstepd killed during the bridge plugin's DEL left
/// the pod's masquerade rules behind for good (the plugin, killed with lockstepd, had deleted
/// the pod's interface; the retried DEL found no address to tear the rules down by). Now the
/// DEL runs to its end and the retry after the restart starts only then.
#[tokio::test]
async fn a_kill_during_the_bridge_s_del_lets_it_finish_and_the_retry_waits_for_it() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("slow-del-plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let (slow, calls) = (scratch.path().join("slow"), scratch.path().join("calls"));
    let script = format!(
        "#!/bin/sh\n[ \"$CNI_COMMAND\" = DEL ] || exec {CNI_BIN}/bridge \"$@\"\necho \"begin $$\" >>{calls}\n[ -e {slow} ] && sleep 2\n{CNI_BIN}/bridge \"$@\"\nrc=$?\necho \"end $$\" >>{calls}\nexit $rc\n",
        calls = calls.display(),
        slow = slow.display()
    );
    std::fs::write(dir.join("bridge"), script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.join("bridge"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut daemon = start_with_plugins(vec![dir, PathBuf::from(CNI_BIN)]).await;
    let mut kubelet = daemon.kubelet().await;
    let id = kubelet.run_pod_sandbox(run_request(pod(&unique("killed-del")))).await.unwrap().pod_sandbox_id;
    let pod_traces = traces(&mut kubelet, &id).await;
    assert!(!iptables_rules_of(&id).is_empty(), "the bridge made the pod's masquerade rules");

    std::fs::write(&slow, "").unwrap();
    let stopping = tokio::spawn({
        let mut k = kubelet.clone();
        let pod_sandbox_id = id.clone();
        async move { k.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id }).await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&calls).unwrap_or_default().contains("begin") {
        assert!(Instant::now() < deadline, "the DEL never started: {}", daemon.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemon.kill();
    assert!(stopping.await.unwrap().is_err(), "the caller saw the crash");
    std::fs::remove_file(&slow).unwrap();

    daemon.spawn().await.unwrap();
    let mut kubelet = daemon.kubelet().await;
    kubelet.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    kubelet.remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    let calls: Vec<String> =
        std::fs::read_to_string(&calls).unwrap().lines().map(|l| l[..l.find(' ').unwrap()].to_string()).collect();
    assert_eq!(calls, ["begin", "end", "begin", "end"], "the first DEL ended before the retry began");
    assert_no_leaks(&daemon, &pod_traces);
}
