//! pods: the pod sandbox lifecycle as the kubelet drives it — RunPodSandbox, PodSandboxStatus,
//! ListPodSandbox filters, idempotent stop and remove, kubelet retries, bad input, hostname,
//! DNS, sysctls, namespace options, host network, and survival of a runtime restart. The
//! error codes for bad input, which the kubelet does not look at, are the separate
//! `strictness` area.

use std::time::Duration;

use lockstep_cri::{model, Minor};

use super::podkit::{self, describe, namespace_options, pod_config, run_pod, stop_and_remove, with_pod, within};
use crate::check;
use crate::framework::{call_failed, Ctx, Failure, Need, Test, TestFuture, TestResult};

const AREA: &str = "pods";

fn test(name: &'static str, needs: &'static [Need], body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: AREA, name, since: Minor::V1_30, needs, timeout: Duration::from_secs(60), body }
}

/// Strictness beyond what the CRI and the kubelet require: bad input answered with
/// InvalidArgument naming the field, where any error would do for the kubelet (containerd
/// answers Unknown). Reported in an area of its own, apart from conformance.
const STRICTNESS: &str = "strictness";

fn strict(name: &'static str, body: fn(Ctx) -> TestFuture) -> Test {
    Test { area: STRICTNESS, name, since: Minor::V1_30, needs: &[], timeout: Duration::from_secs(60), body }
}

/// How a test judges a refused request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Judged {
    /// Refused with any error and nothing left behind: what the kubelet needs.
    Refused,
    /// Also InvalidArgument, and the message names the field.
    Strictly,
}

pub fn tests() -> Vec<Test> {
    vec![
        test("RunPodSandbox makes a ready pod whose status carries its metadata, labels and annotations", &[], |c| {
            Box::pin(status_fields(c))
        }),
        test("ListPodSandbox filters by id, state and label selector", &[], |c| Box::pin(list_filters(c))),
        test("StopPodSandbox and RemovePodSandbox are idempotent", &[], |c| Box::pin(idempotent_stop_remove(c))),
        test("StopPodSandbox of an id the runtime never knew succeeds and makes nothing", &[], |c| {
            Box::pin(unknown_sandbox(c, Verb::Stop))
        }),
        test("RemovePodSandbox of an id the runtime never knew succeeds and makes nothing", &[], |c| {
            Box::pin(unknown_sandbox(c, Verb::Remove))
        }),
        test("A retried RunPodSandbox with the same metadata returns the same sandbox", &[], |c| {
            Box::pin(kubelet_retry(c))
        }),
        test("RunPodSandbox without metadata, name or uid is refused and leaves nothing", &[], |c| {
            Box::pin(bad_metadata(c, Judged::Refused))
        }),
        test("A port mapping with port 0 or above 65535 is refused and leaves nothing", &[], |c| {
            Box::pin(bad_ports(c, Judged::Refused))
        }),
        test("An unknown runtime handler is refused and leaves nothing", &[], |c| {
            Box::pin(unknown_handler(c, Judged::Refused))
        }),
        test("The hostname is set in the pod's UTS namespace", &[], |c| Box::pin(hostname(c))),
        test("DNSConfig is written to the pod's resolv.conf", &[Need::ExecInPod], |c| Box::pin(dns_config(c))),
        test("Namespaced sysctls are set inside the pod, not on the node", &[], |c| Box::pin(sysctls(c))),
        test("A sysctl of the pod's eth0 is set inside the pod", &[], |c| Box::pin(eth0_sysctl(c))),
        test(
            "Sysctls of the pod's IPC namespace are set for its containers, not on the node",
            &[Need::ExecInPod],
            |c| Box::pin(ipc_sysctls(c)),
        ),
        test("A sysctl outside the pod's namespaces is refused and leaves nothing", &[], |c| {
            Box::pin(node_sysctl(c, Judged::Refused))
        }),
        test("PodSandboxStatus reports the namespace options, a shared PID namespace too", &[], |c| {
            Box::pin(namespace_modes(c))
        }),
        test("A host-network pod has no IP of its own", &[], |c| Box::pin(host_network(c))),
        Test {
            area: AREA,
            name: "UpdatePodSandboxResources takes a running pod's resized resources; an unknown pod is NotFound",
            since: Minor::V1_33,
            needs: &[],
            timeout: Duration::from_secs(60),
            body: |c| Box::pin(resize(c)),
        },
        test("Pods keep their state and IP across a runtime crash and restart", &[Need::Restart], |c| {
            Box::pin(restart_survival(c))
        }),
        strict("RunPodSandbox without metadata, name or uid is InvalidArgument naming the field", |c| {
            Box::pin(bad_metadata(c, Judged::Strictly))
        }),
        strict("A port mapping with port 0 or above 65535 is InvalidArgument naming the field", |c| {
            Box::pin(bad_ports(c, Judged::Strictly))
        }),
        strict("An unknown runtime handler is InvalidArgument naming it", |c| {
            Box::pin(unknown_handler(c, Judged::Strictly))
        }),
        strict("A sysctl outside the pod's namespaces is InvalidArgument naming it", |c| {
            Box::pin(node_sysctl(c, Judged::Strictly))
        }),
    ]
}

async fn status(ctx: &Ctx, id: &str) -> Result<model::PodSandboxStatus, Failure> {
    let response = ctx
        .kubelet()
        .pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false })
        .await
        .map_err(|e| call_failed("PodSandboxStatus", &e))?;
    response.status.ok_or_else(|| Failure::fail("PodSandboxStatusResponse.status is absent: the kubelet fails the pod"))
}

async fn status_fields(ctx: Ctx) -> TestResult {
    let config = pod_config("status");
    let expected = config.clone();
    with_pod(&ctx.clone(), config, |pod| async move {
        let s = status(&ctx, &pod.id).await?;
        check!(s.id == pod.id, "status.id is {:?}, not {:?}", s.id, pod.id);
        check!(s.state() == model::PodSandboxState::SandboxReady, "state is {:?}", s.state());
        check!(s.metadata == expected.metadata, "metadata {:?} differs from the request's", s.metadata);
        check!(s.created_at > 0, "created_at is {}", s.created_at);
        let ip = s.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
        check!(ip.parse::<std::net::IpAddr>().is_ok(), "network.ip {ip:?} is not an IP: the kubelet has no pod IP");
        for (k, v) in &expected.labels {
            check!(s.labels.get(k) == Some(v), "label {k} is {:?}, not {v:?}", s.labels.get(k));
        }
        for (k, v) in &expected.annotations {
            check!(s.annotations.get(k) == Some(v), "annotation {k} is {:?}, not {v:?}", s.annotations.get(k));
        }
        Ok(())
    })
    .await
}

async fn list(ctx: &Ctx, filter: model::PodSandboxFilter) -> Result<Vec<model::PodSandbox>, Failure> {
    ctx.kubelet()
        .list_pod_sandbox(model::ListPodSandboxRequest { filter: Some(filter) })
        .await
        .map(|r| r.items)
        .map_err(|e| call_failed("ListPodSandbox", &e))
}

fn state(s: model::PodSandboxState) -> Option<model::PodSandboxStateValue> {
    Some(model::PodSandboxStateValue { state: s as i32 })
}

async fn list_filters(ctx: Ctx) -> TestResult {
    let mut client = ctx.kubelet();
    let (a, b) = (pod_config("list-a"), pod_config("list-b"));
    let uid_a = podkit::uid_of(&a);
    let id_a = run_pod(&mut client, a).await?;
    let id_b = match run_pod(&mut client, b).await {
        Ok(id) => id,
        Err(e) => {
            let _ = stop_and_remove(&mut client, &id_a).await;
            return Err(e);
        }
    };
    let checked = async {
        client
            .stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id_b.clone() })
            .await
            .map_err(|e| call_failed("StopPodSandbox", &e))?;
        let by_id = list(&ctx, model::PodSandboxFilter { id: id_a.clone(), ..Default::default() }).await?;
        check!(by_id.len() == 1 && by_id[0].id == id_a, "filter by id returned {:?}", ids(&by_id));
        let selector = [("io.kubernetes.pod.uid".to_string(), uid_a.clone())].into();
        let by_label = list(&ctx, model::PodSandboxFilter { label_selector: selector, ..Default::default() }).await?;
        check!(by_label.len() == 1 && by_label[0].id == id_a, "filter by pod uid label returned {:?}", ids(&by_label));
        let ready = list(
            &ctx,
            model::PodSandboxFilter { state: state(model::PodSandboxState::SandboxReady), ..Default::default() },
        )
        .await?;
        check!(ready.iter().any(|s| s.id == id_a), "{id_a} is missing from the READY list");
        check!(!ready.iter().any(|s| s.id == id_b), "stopped {id_b} is in the READY list");
        let not_ready = list(
            &ctx,
            model::PodSandboxFilter { state: state(model::PodSandboxState::SandboxNotready), ..Default::default() },
        )
        .await?;
        check!(not_ready.iter().any(|s| s.id == id_b), "stopped {id_b} is missing from the NOTREADY list");
        let nothing = list(
            &ctx,
            model::PodSandboxFilter {
                id: id_b.clone(),
                state: state(model::PodSandboxState::SandboxReady),
                ..Default::default()
            },
        )
        .await?;
        check!(nothing.is_empty(), "id {id_b} and state READY together matched {:?}", ids(&nothing));
        Ok(())
    }
    .await;
    let a_gone = stop_and_remove(&mut client, &id_a).await;
    let b_gone = stop_and_remove(&mut client, &id_b).await;
    checked.and(a_gone).and(b_gone)
}

fn ids(items: &[model::PodSandbox]) -> Vec<&str> {
    items.iter().map(|s| s.id.as_str()).collect()
}

async fn idempotent_stop_remove(ctx: Ctx) -> TestResult {
    let mut client = ctx.kubelet();
    let id = run_pod(&mut client, pod_config("idempotent")).await?;
    for round in 1..=2 {
        client
            .stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id.clone() })
            .await
            .map_err(|e| Failure::fail(format!("StopPodSandbox #{round}: {:?}: {}", e.code(), e.message())))?;
    }
    let stopped = status(&ctx, &id).await?;
    check!(stopped.state() == model::PodSandboxState::SandboxNotready, "after stop, state is {:?}", stopped.state());
    for round in 1..=2 {
        client
            .remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: id.clone() })
            .await
            .map_err(|e| Failure::fail(format!("RemovePodSandbox #{round}: {:?}: {}", e.code(), e.message())))?;
    }
    match client.pod_sandbox_status(model::PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: false }).await
    {
        Err(e) if e.code() == tonic::Code::NotFound => {}
        Err(e) => return Err(Failure::fail(format!("status of a removed pod: {:?} (want NotFound)", e.code()))),
        Ok(_) => return Err(Failure::fail("a removed pod still has a status")),
    }
    let listed = list(&ctx, model::PodSandboxFilter { id: id.clone(), ..Default::default() }).await?;
    check!(listed.is_empty(), "a removed pod is still listed");
    Ok(())
}

#[derive(Clone, Copy)]
enum Verb {
    Stop,
    Remove,
}

/// The CRI makes both calls idempotent: a sandbox that is already gone (or never was) is not
/// an error. The kubelet's garbage collector and critest's Idempotence specs send such ids.
async fn unknown_sandbox(ctx: Ctx, verb: Verb) -> TestResult {
    let mut client = ctx.kubelet();
    let id = podkit::unknown_id();
    for round in 1..=2 {
        let (rpc, answer) = match verb {
            Verb::Stop => (
                "StopPodSandbox",
                client.stop_pod_sandbox(model::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.map(drop),
            ),
            Verb::Remove => (
                "RemovePodSandbox",
                client
                    .remove_pod_sandbox(model::RemovePodSandboxRequest { pod_sandbox_id: id.clone() })
                    .await
                    .map(drop),
            ),
        };
        answer.map_err(|e| {
            Failure::fail(format!(
                "{rpc} #{round} of the unknown id {id}: {:?}: {} (the CRI says a missing sandbox is not an error)",
                e.code(),
                e.message()
            ))
        })?;
    }
    let listed = list(&ctx, model::PodSandboxFilter { id: id.clone(), ..Default::default() }).await?;
    check!(listed.is_empty(), "after the calls on the unknown id {id}, ListPodSandbox lists {:?}", ids(&listed));
    Ok(())
}

async fn kubelet_retry(ctx: Ctx) -> TestResult {
    let config = pod_config("retry");
    let (mut a, mut b) = (ctx.kubelet(), ctx.kubelet());
    let (first, second) = tokio::join!(run_pod(&mut a, config.clone()), run_pod(&mut b, config.clone()));
    let mut cleanup = Vec::new();
    if let Ok(id) = &first {
        cleanup.push(id.clone());
    }
    if let Ok(id) = &second {
        cleanup.push(id.clone());
    }
    let third = run_pod(&mut a, config).await;
    if let Ok(id) = &third {
        cleanup.push(id.clone());
    }
    cleanup.sort();
    cleanup.dedup();
    for id in &cleanup {
        stop_and_remove(&mut a, id).await?;
    }
    let (first, second, third) = (first?, second.map_err(retry_failed)?, third.map_err(retry_failed)?);
    check!(first == second, "two concurrent calls made two sandboxes ({first} and {second})");
    check!(first == third, "a retry after the first finished made another sandbox ({third})");
    Ok(())
}

fn retry_failed(f: Failure) -> Failure {
    match f {
        Failure::Fail(reason) => Failure::fail(format!("the retry failed instead of returning the same id: {reason}")),
        other => other,
    }
}

/// The call must fail — `Strictly`: with InvalidArgument and a message naming `field` — and
/// nothing of the refused pod (found by its uid label: other tests run pods meanwhile) is listed.
async fn refused(ctx: &Ctx, request: model::RunPodSandboxRequest, field: &str, judged: Judged) -> TestResult {
    // From the labels: they stay when a test spoils the metadata.
    let uid = request.config.as_ref().and_then(|c| c.labels.get("io.kubernetes.pod.uid").cloned()).unwrap_or_default();
    let outcome = ctx.kubelet().run_pod_sandbox(request).await;
    // Whatever the outcome, nothing of the pod stays for the tests that follow.
    let mut left = Vec::new();
    if !uid.is_empty() {
        let selector = [("io.kubernetes.pod.uid".to_string(), uid)].into();
        left = list(ctx, model::PodSandboxFilter { label_selector: selector, ..Default::default() }).await?;
        for sandbox in &left {
            let _ = stop_and_remove(&mut ctx.kubelet(), &sandbox.id).await;
        }
    }
    let e = match outcome {
        Ok(_) => return Err(Failure::fail(format!("a request with a bad {field} was accepted"))),
        Err(e) => e,
    };
    if judged == Judged::Strictly {
        check!(
            e.code() == tonic::Code::InvalidArgument,
            "bad {field}: {:?} (want InvalidArgument): {}",
            e.code(),
            e.message()
        );
        check!(e.message().contains(field), "the message does not name {field}: {}", e.message());
    }
    check!(left.is_empty(), "a refused request left a sandbox behind: {:?}", ids(&left));
    Ok(())
}

fn request(config: model::PodSandboxConfig) -> model::RunPodSandboxRequest {
    model::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() }
}

async fn bad_metadata(ctx: Ctx, judged: Judged) -> TestResult {
    let mut no_metadata = pod_config("bad");
    no_metadata.metadata = None;
    refused(&ctx, request(no_metadata), "metadata", judged).await?;
    let mut no_name = pod_config("bad");
    if let Some(m) = no_name.metadata.as_mut() {
        m.name.clear();
    }
    refused(&ctx, request(no_name), "name", judged).await?;
    let mut no_uid = pod_config("bad");
    if let Some(m) = no_uid.metadata.as_mut() {
        m.uid.clear();
    }
    refused(&ctx, request(no_uid), "uid", judged).await
}

async fn bad_ports(ctx: Ctx, judged: Judged) -> TestResult {
    for (container_port, host_port, field) in [(0, 8080, "container_port"), (80, 65536, "host_port")] {
        let mut config = pod_config("bad-port");
        config.port_mappings = vec![model::PortMapping {
            protocol: model::Protocol::Tcp as i32,
            container_port,
            host_port,
            host_ip: String::new(),
        }];
        refused(&ctx, request(config), field, judged).await?;
    }
    Ok(())
}

async fn unknown_handler(ctx: Ctx, judged: Judged) -> TestResult {
    let r = model::RunPodSandboxRequest {
        config: Some(pod_config("handler")),
        runtime_handler: "lockstep-no-such-handler".into(),
    };
    refused(&ctx, r, "lockstep-no-such-handler", judged).await
}

async fn hostname(ctx: Ctx) -> TestResult {
    let config = pod_config("hostname");
    let wanted = config.hostname.clone();
    with_pod(&ctx.clone(), config, |pod| async move {
        let uts = pod.utsns.clone().ok_or_else(|| Failure::fail("the pod's UTS namespace is not revealed"))?;
        let seen = within(&uts, nix::sched::CloneFlags::CLONE_NEWUTS, || {
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default()
        })?;
        check!(seen.trim() == wanted, "the pod's hostname is {:?}, not {wanted:?}", seen.trim());
        let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        check!(node.trim() != wanted, "the node's hostname changed");
        Ok(())
    })
    .await
}

async fn dns_config(ctx: Ctx) -> TestResult {
    let mut config = pod_config("dns");
    config.dns_config = Some(model::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec![format!("{}.svc.cluster.local", podkit::NAMESPACE), "svc.cluster.local".into()],
        options: vec!["ndots:5".into(), "edns0".into()],
    });
    let sandbox_config = config.clone();
    with_pod(&ctx.clone(), config, |pod| async move {
        // What a container of the pod reads (Need::ExecInPod), and the runtime's file where it says.
        let inside = super::conkit::exec_in_pod(&ctx, &pod.id, &sandbox_config, &["cat", "/etc/resolv.conf"]).await?;
        let mut texts = vec![("/etc/resolv.conf in a container of the pod".to_string(), inside)];
        if let Some(path) = pod.resolv_conf.clone() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Failure::fail(format!("cannot read {}: {e}", path.display())))?;
            texts.push((path.display().to_string(), text));
        }
        for (source, text) in texts {
            for line in [
                "nameserver 10.96.0.10",
                &format!("search {}.svc.cluster.local svc.cluster.local", podkit::NAMESPACE),
                "options ndots:5 edns0",
            ] {
                check!(text.lines().any(|l| l == line), "{source} lacks {line:?}:\n{text}");
            }
        }
        Ok(())
    })
    .await
}

async fn sysctls(ctx: Ctx) -> TestResult {
    let mut config = pod_config("sysctl");
    config
        .linux
        .get_or_insert_with(Default::default)
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "81".into());
    with_pod(&ctx.clone(), config, |pod| async move {
        let netns = podkit::netns(&pod)?;
        let inside = within(&netns, podkit::net_flag(), || {
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap_or_default()
        })?;
        check!(inside.trim() == "81", "net.ipv4.ip_unprivileged_port_start is {:?} inside the pod", inside.trim());
        let node = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap_or_default();
        check!(node.trim() != "81", "the node's own sysctl changed");
        Ok(())
    })
    .await
}

/// critest's safe and unsafe sysctl specs: kernel.shm_rmid_forced and fs.mqueue.msg_max live in
/// the IPC namespace, so a container of the pod reads them and the node keeps its own.
async fn ipc_sysctls(ctx: Ctx) -> TestResult {
    const SET: [(&str, &str, &str); 2] = [
        ("kernel.shm_rmid_forced", "/proc/sys/kernel/shm_rmid_forced", "1"),
        ("fs.mqueue.msg_max", "/proc/sys/fs/mqueue/msg_max", "100"),
    ];
    let node_before: Vec<String> =
        SET.iter().map(|(_, path, _)| std::fs::read_to_string(path).unwrap_or_default().trim().to_string()).collect();
    let mut config = pod_config("ipc-sysctl");
    let sysctls = &mut config.linux.get_or_insert_with(Default::default).sysctls;
    for (name, _, value) in SET {
        sysctls.insert(name.into(), value.into());
    }
    let sandbox_config = config.clone();
    with_pod(&ctx.clone(), config, |pod| async move {
        let paths: Vec<&str> = SET.iter().map(|(_, path, _)| *path).collect();
        let cmd: Vec<&str> = std::iter::once("cat").chain(paths.iter().copied()).collect();
        let inside = super::conkit::exec_in_pod(&ctx, &pod.id, &sandbox_config, &cmd).await?;
        let seen: Vec<&str> = inside.lines().map(str::trim).collect();
        for (i, (name, path, value)) in SET.iter().enumerate() {
            check!(seen.get(i) == Some(value), "{name} reads {:?} in a container of the pod, not {value}", seen.get(i));
            let node = std::fs::read_to_string(path).unwrap_or_default();
            check!(
                node.trim() == node_before[i],
                "the node's {name} changed from {} to {}",
                node_before[i],
                node.trim()
            );
        }
        Ok(())
    })
    .await
}

/// net.ipv4.conf.eth0.* exists only once the network plugin made eth0: the runtime must set
/// it after CNI ADD.
async fn eth0_sysctl(ctx: Ctx) -> TestResult {
    let mut config = pod_config("eth0-sysctl");
    config
        .linux
        .get_or_insert_with(Default::default)
        .sysctls
        .insert("net.ipv4.conf.eth0.arp_announce".into(), "2".into());
    with_pod(&ctx.clone(), config, |pod| async move {
        let netns = podkit::netns(&pod)?;
        let inside = within(&netns, podkit::net_flag(), || {
            std::fs::read_to_string("/proc/sys/net/ipv4/conf/eth0/arp_announce").unwrap_or_default()
        })?;
        check!(inside.trim() == "2", "net.ipv4.conf.eth0.arp_announce is {:?} inside the pod", inside.trim());
        Ok(())
    })
    .await
}

async fn node_sysctl(ctx: Ctx, judged: Judged) -> TestResult {
    let mut config = pod_config("node-sysctl");
    config.linux.get_or_insert_with(Default::default).sysctls.insert("kernel.panic".into(), "1".into());
    refused(&ctx, request(config), "kernel.panic", judged).await
}

async fn namespace_modes(ctx: Ctx) -> TestResult {
    let mut config = pod_config("pidns");
    namespace_options(&mut config).pid = model::NamespaceMode::Pod as i32;
    with_pod(&ctx.clone(), config, |pod| async move {
        let s = status(&ctx, &pod.id).await?;
        let options = s.linux.clone().and_then(|l| l.namespaces).and_then(|n| n.options).unwrap_or_default();
        check!(options.pid() == model::NamespaceMode::Pod, "pid mode is reported as {:?}", options.pid());
        check!(options.network() == model::NamespaceMode::Pod, "network mode is reported as {:?}", options.network());
        check!(s.state() == model::PodSandboxState::SandboxReady, "state is {:?}", s.state());
        Ok(())
    })
    .await
}

async fn host_network(ctx: Ctx) -> TestResult {
    let mut config = pod_config("hostnet");
    config.hostname.clear();
    namespace_options(&mut config).network = model::NamespaceMode::Node as i32;
    with_pod(&ctx.clone(), config, |pod| async move {
        check!(pod.ip.is_empty(), "a host-network pod reports IP {:?}; the kubelet uses the node's", pod.ip);
        let s = status(&ctx, &pod.id).await?;
        let options = s.linux.and_then(|l| l.namespaces).and_then(|n| n.options).unwrap_or_default();
        check!(options.network() == model::NamespaceMode::Node, "network mode is reported as {:?}", options.network());
        Ok(())
    })
    .await
}

async fn restart_survival(ctx: Ctx) -> TestResult {
    with_pod(&ctx.clone(), pod_config("restart"), |pod| async move {
        ctx.restart_runtime().await?;
        let after = describe(&mut ctx.kubelet(), &pod.id).await?;
        check!(after.ip == pod.ip, "the IP changed across the restart: {} -> {}", pod.ip, after.ip);
        let s = status(&ctx, &pod.id).await?;
        check!(s.state() == model::PodSandboxState::SandboxReady, "after the restart the pod is {:?}", s.state());
        let netns = podkit::netns(&after)?;
        let addrs = podkit::addresses(&netns)?;
        check!(podkit::eth0_carries(&addrs, &pod.ip), "after the restart eth0 no longer carries {}:\n{addrs}", pod.ip);
        Ok(())
    })
    .await
}

/// After an in-place resize the kubelet hands the pod-level resources to the runtime (1.33+).
async fn resize(ctx: Ctx) -> TestResult {
    let inner = ctx.clone();
    with_pod(&ctx, pod_config("resize"), |pod| async move {
        let ctx = inner;
        let resources = model::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        };
        let mut client = ctx.kubelet();
        client
            .update_pod_sandbox_resources(model::UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: pod.id.clone(),
                overhead: None,
                resources: Some(resources.clone()),
            })
            .await
            .map_err(|e| call_failed("UpdatePodSandboxResources", &e))?;
        let status = status(&ctx, &pod.id).await?;
        check!(
            status.state == model::PodSandboxState::SandboxReady as i32,
            "after UpdatePodSandboxResources the pod is in state {}",
            status.state
        );
        let unknown = client
            .update_pod_sandbox_resources(model::UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: podkit::unknown_id(),
                overhead: None,
                resources: Some(resources),
            })
            .await;
        match unknown {
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Failure::fail(format!("an unknown pod: {:?} {}, not NotFound", s.code(), s.message()))),
            Ok(_) => Err(Failure::fail("UpdatePodSandboxResources of an unknown pod succeeded")),
        }
    })
    .await
}
