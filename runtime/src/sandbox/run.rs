//! RunPodSandbox: validation, the runtime handler, the kubelet's retries answered with the same
//! id, then creation as a straight line of steps, each registering its undo: record,
//! directory, pinned namespaces, hostname / lo / sysctls, files and /dev/shm, cgroups and the
//! pause process, CNI ADD, network sysctls. A failure rolls back newest first; a DEL that fails
//! stops the rollback and keeps the sandbox NOT_READY for StopPodSandbox to finish.
//! May touch what the manager may (see manager.rs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockstep_cri::model;

use super::error::SandboxError;
use super::manager::SandboxManager;
use super::namespaces::{self, NsKind};
use super::record::{
    HostOrPod, NamespaceModes, Namespaces, NetworkState, PidMode, PodUserNamespace, SandboxFiles, SandboxRecord,
    SandboxState,
};
use super::remove::remove_sandbox_dir;
use super::status::live_state;
use super::stop::del_with_retries;
use super::validate::{self, BadField, PodPlan, SysctlNamespace};
use super::{files, pause};
use crate::cni::network::Bandwidth;
use crate::cni::network::{self, Attachment, POD_IFNAME};
use crate::host::cgroups;
use crate::timing::now_nanos;
use crate::undo::{Undo, Unwound};

pub fn run_pod_sandbox(
    sandboxes: &SandboxManager,
    request: &model::RunPodSandboxRequest,
) -> Result<String, SandboxError> {
    let plan = validate::plan(request, sandboxes.info.config().cgroup_driver)?;
    let oci_handler = resolve_handler(sandboxes, &request.runtime_handler)?;
    let metadata = plan.metadata.clone();
    sandboxes.store.reserved(&metadata, || find_or_create(sandboxes, plan, request, oci_handler))
}

/// Under the metadata's reservation: the sandbox a previous call made, or a new one.
pub(super) fn find_or_create(
    sandboxes: &SandboxManager,
    plan: PodPlan,
    request: &model::RunPodSandboxRequest,
    oci_handler: String,
) -> Result<String, SandboxError> {
    if let Some(found) = sandboxes.store.with_metadata(&plan.metadata) {
        return match live_state(&found) {
            // The kubelet retried a call that timed out: the finished result.
            model::PodSandboxState::SandboxReady => Ok(found.id),
            _ => Err(SandboxError::Exists {
                id: found.id,
                namespace: found.metadata.namespace,
                name: found.metadata.name,
                uid: found.metadata.uid,
                attempt: found.metadata.attempt,
            }),
        };
    }
    let record = create(sandboxes, plan, request.runtime_handler.clone(), oci_handler)?;
    let id = record.id.clone();
    sandboxes.store.insert(record);
    Ok(id)
}

/// The OCI handler of a RuntimeClass handler: configured and working on this node.
fn resolve_handler(sandboxes: &SandboxManager, name: &str) -> Result<String, SandboxError> {
    let handlers = sandboxes.info.handlers();
    match handlers.get(name) {
        Some(h) if h.works() => Ok(h.name.clone()),
        Some(h) => {
            Err(SandboxError::HandlerBroken { handler: h.name.clone(), problem: h.problem.clone().unwrap_or_default() })
        }
        None if name.is_empty() => Err(SandboxError::NoWorkingHandler),
        None => {
            let known: Vec<&str> = handlers.handlers.iter().map(|h| h.name.as_str()).collect();
            Err(SandboxError::BadField(BadField {
                field: "runtime_handler".into(),
                problem: format!("{name:?} is not a configured runtime handler (configured: {known:?})"),
            }))
        }
    }
}

fn create(
    sandboxes: &SandboxManager,
    plan: PodPlan,
    runtime_handler: String,
    oci_handler: String,
) -> Result<SandboxRecord, SandboxError> {
    let id = crate::ids::random_id().map_err(|source| SandboxError::Io {
        action: "make a sandbox id from",
        path: PathBuf::from("/dev/urandom"),
        source,
    })?;
    let dir = sandboxes.runroot_sandboxes.join(&id);
    let ns_dir = dir.join("ns");
    let own = |mode: HostOrPod, kind: NsKind| (mode == HostOrPod::Pod).then(|| ns_dir.join(kind.name()));
    let mut record = SandboxRecord {
        id: id.clone(),
        state: SandboxState::Creating,
        created_at: now_nanos(),
        metadata: plan.metadata.clone(),
        labels: plan.labels.clone(),
        annotations: plan.annotations.clone(),
        runtime_handler,
        oci_handler,
        hostname: plan.hostname.clone(),
        log_directory: plan.log_directory.clone(),
        cgroup_parent: plan.cgroup_parent.clone(),
        dns: plan.dns.clone(),
        port_mappings: plan.port_mappings.clone(),
        sysctls: plan.sysctls.clone(),
        security: plan.security.clone(),
        namespace_modes: NamespaceModes {
            network: plan.namespace_options.network,
            pid: plan.namespace_options.pid,
            ipc: plan.namespace_options.ipc,
            target_id: plan.namespace_options.target_id.clone(),
        },
        namespaces: Namespaces {
            network: own(plan.network, NsKind::Net),
            ipc: own(plan.ipc, NsKind::Ipc),
            uts: own(plan.uts, NsKind::Uts),
            pid_mode: plan.pid,
            pause: None,
            user: None,
        },
        files: SandboxFiles {
            hostname: dir.join("hostname"),
            resolv_conf: dir.join("resolv.conf"),
            hosts: dir.join("hosts"),
            shm: if plan.ipc == HostOrPod::Pod { dir.join("shm") } else { PathBuf::from("/dev/shm") },
            dir: dir.clone(),
        },
        pause_cgroups: Vec::new(),
        network: NetworkState::default(),
        problem: None,
        resources: None,
    };

    let mut undo = Undo::new();
    match build(sandboxes, &mut record, &plan, &mut undo) {
        Ok(()) => {
            undo.disarm();
            Ok(record)
        }
        Err(e) => {
            let unwound = undo.unwind();
            if let Some(step) = unwound.held_by {
                keep_half_made(sandboxes, record, &e, step, &unwound);
            }
            Err(e)
        }
    }
}

/// A failed creation whose rollback stopped at a guard (a CNI DEL that failed): the sandbox
/// stays, not ready, with what holds it, so that StopPodSandbox, RemovePodSandbox and the
/// recovery retry the release. The kubelet finds it by its pod's labels.
fn keep_half_made(
    sandboxes: &SandboxManager,
    mut record: SandboxRecord,
    cause: &SandboxError,
    step: &str,
    unwound: &Unwound,
) {
    let id = record.id.clone();
    let failures: Vec<String> = unwound.failures.iter().map(ToString::to_string).collect();
    record.state = SandboxState::NotReady;
    match sandboxes.cni_cache.get(&id) {
        Ok(Some(attachment)) => {
            record.network.cni_network = attachment.network_name().to_string();
            record.network.attached = true;
        }
        Ok(None) => {}
        Err(_) => record.network.attached = true,
    }
    record.problem = Some(format!(
        "creation failed ({cause}) and its rollback stopped at \"{step}\" ({}); StopPodSandbox retries the release",
        failures.join("; ")
    ));
    if let Err(e) = sandboxes.store.write(&record) {
        // The creating record stays on disk: the next start rolls it back.
        tracing::error!(sandbox = %id, error = %e, "cannot record the half-made sandbox");
    }
    tracing::warn!(sandbox = %id, problem = record.problem.as_deref().unwrap_or(""), "half-made sandbox kept");
    sandboxes.store.insert(record);
}

/// The steps of creation, each registering its undo; `record` is filled on the way.
fn build(
    sandboxes: &SandboxManager,
    record: &mut SandboxRecord,
    plan: &PodPlan,
    undo: &mut Undo,
) -> Result<(), SandboxError> {
    let id = record.id.clone();
    let dir = record.files.dir.clone();
    let ns_dir = dir.join("ns");
    let mut timer = crate::timing::StepTimer::new();
    // 1. The record first: a crash from here on is rolled back at the next start.
    sandboxes.store.write(record)?;
    let records = sandboxes.store.records().clone();
    let record_id = id.clone();
    undo.push("remove the sandbox record", move || records.remove(&record_id));
    timer.mark("record");

    // 2. The sandbox directory; its sweep unmounts anything left under it. lockstepd's alone
    //    (0700): its shm is a 1777 tmpfs, and a pod with a user namespace opens `sandboxes/`
    //    for search to its containers' runtime.
    crate::persist::restrict_dir(&dir, 0o700).map_err(SandboxError::record(&id, "create the directory of"))?;
    if plan.userns.is_some() {
        // The OCI runtime finds the pod's files (hostname, hosts, resolv.conf, shm) from inside
        // the pod's user namespace: the way there is opened for search, not listing.
        crate::host::idmap::make_traversable(&dir)
            .map_err(|e| SandboxError::namespaces(&id, "open the way to the pod's files")(e.into()))?;
    }
    std::fs::create_dir_all(&ns_dir).map_err(|source| SandboxError::Io {
        action: "create",
        path: ns_dir.clone(),
        source,
    })?;
    let (swept, cache, swept_id) = (dir.clone(), sandboxes.cni_cache.clone(), id.clone());
    undo.push("remove the sandbox directory", move || remove_sandbox_dir(&cache, &swept_id, &swept));
    timer.mark("dir");

    // 3. Namespaces, pinned.
    let kinds: Vec<NsKind> = [(plan.network, NsKind::Net), (plan.ipc, NsKind::Ipc), (plan.uts, NsKind::Uts)]
        .into_iter()
        .filter(|(mode, _)| *mode == HostOrPod::Pod)
        .map(|(_, k)| k)
        .collect();
    let (pinned, user) = match &plan.userns {
        None => {
            (namespaces::pin(&ns_dir, &kinds).map_err(SandboxError::namespaces(&id, "create the namespaces"))?, None)
        }
        Some(mappings) => {
            let (user, pinned) = namespaces::pin_with_user_namespace(&ns_dir, &kinds, mappings)
                .map_err(SandboxError::namespaces(&id, "create the user namespace and the namespaces it owns"))?;
            (pinned, Some(PodUserNamespace { path: user, mappings: *mappings }))
        }
    };
    let mut unpinned: Vec<PathBuf> = pinned.values().cloned().collect();
    unpinned.extend(user.as_ref().map(|u| u.path.clone()));
    record.namespaces.user = user;
    undo.push("unpin the namespaces", move || unpinned.iter().try_for_each(|p| namespaces::unpin(p)));
    timer.mark("pin");

    // 4. Inside them: hostname, lo up, the IPC and UTS sysctls (the network's wait for its
    //    interfaces: net.ipv4.conf.eth0.* exists only after ADD).
    let (net_sysctls, other_sysctls): (BTreeMap<_, _>, BTreeMap<_, _>) = plan
        .sysctls
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(name, _)| validate::sysctl_namespace(name) == Some(SysctlNamespace::Net));
    configure_namespaces(record, plan, &other_sysctls)?;
    timer.mark("configure");

    // 5. /dev/shm and the files containers mount, owned by the container's root when the pod
    //    has a user namespace (host root is nobody there).
    let owner = plan.userns.as_ref().map(|m| m.root());
    if plan.ipc == HostOrPod::Pod {
        files::mount_shm(&record.files.shm, owner).map_err(SandboxError::files(&id, "make /dev/shm"))?;
        let shm = record.files.shm.clone();
        undo.push("unmount /dev/shm", move || crate::host::mounts::unmount(&shm));
    }
    // Without a hostname of its own the pod's UTS namespace keeps the node's (copied at
    // unshare); the files say the same, as containerd's do.
    let hostname =
        if plan.uts == HostOrPod::Pod && !plan.hostname.is_empty() { plan.hostname.clone() } else { node_hostname() };
    files::write_hostname(&record.files.hostname, &hostname).map_err(SandboxError::files(&id, "write hostname"))?;
    files::write_resolv_conf(&record.files.resolv_conf, plan.dns.as_ref())
        .map_err(SandboxError::files(&id, "write resolv.conf"))?;
    if plan.network == HostOrPod::Pod {
        files::write_hosts(&record.files.hosts, &hostname, None).map_err(SandboxError::files(&id, "write hosts"))?;
    } else {
        files::copy_node_hosts(&record.files.hosts).map_err(SandboxError::files(&id, "write hosts"))?;
    }
    if let Some(owner) = owner {
        let f = &record.files;
        files::give_to(&[&f.hostname, &f.resolv_conf, &f.hosts], owner)
            .map_err(SandboxError::files(&id, "give the pod's files to its root"))?;
    }
    timer.mark("files");

    // 6. The pause process, only for a shared PID namespace.
    if plan.pid == PidMode::Pod {
        let joins: Vec<(&str, &Path)> = [
            // The user namespace first: the others belong to it.
            ("user", record.namespaces.user.as_ref().map(|u| u.path.as_path())),
            ("net", record.namespaces.network.as_deref()),
            ("ipc", record.namespaces.ipc.as_deref()),
            ("uts", record.namespaces.uts.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, p)| Some((k, p?)))
        .collect();
        let cgroups = cgroups::plan(sandboxes.info.config().cgroup_driver, &plan.cgroup_parent, &id)
            .map_err(SandboxError::cgroups(&id, "find the cgroups"))?;
        if !cgroups.missing.is_empty() {
            // On disk before the first mkdir: a crash after it is undone by the recovery.
            record.pause_cgroups = cgroups.missing.clone();
            sandboxes.store.write(record)?;
            let (made, owner) = (cgroups.missing.clone(), id.clone());
            undo.push("remove the pause's cgroups", move || cgroups::remove(&made, &owner));
            cgroups::create(&cgroups.missing).map_err(SandboxError::cgroups(&id, "make the pause's cgroup"))?;
        }
        let started =
            pause::start(&dir, &cgroups.leaves, &joins).map_err(SandboxError::pause(&id, "start the pause process"))?;
        let killed = started.clone();
        undo.push("kill the pause process", move || pause::kill(&killed));
        record.namespaces.pause = Some(started);
    }
    timer.mark("pause");

    // 7. The network.
    if let Some(netns) = record.namespaces.network.clone() {
        let attachment = attach(sandboxes, record, &netns, plan.bandwidth.as_ref(), undo)?;
        record.network =
            NetworkState { cni_network: attachment.network_name().to_string(), attached: true, ips: attachment.ips() };
        files::write_hosts(&record.files.hosts, &hostname, record.network.ips.first().map(String::as_str))
            .map_err(SandboxError::files(&id, "write hosts"))?;
    }
    if !net_sysctls.is_empty() {
        write_sysctls(record, &net_sysctls)?;
    }
    timer.mark("cni");

    // 8. Ready, on disk before the answer.
    record.state = SandboxState::Ready;
    sandboxes.store.write(record)?;
    timer.mark("ready");
    tracing::debug!(sandbox = %id, steps = %timer, "RunPodSandbox step times");
    tracing::info!(sandbox = %id, pod = %format!("{}/{}", plan.metadata.namespace, plan.metadata.name),
        ip = record.network.ips.first().map(String::as_str).unwrap_or(""), "pod sandbox ready");
    Ok(())
}

/// The pod's namespaces, for a throwaway thread to enter.
fn pod_namespaces(record: &SandboxRecord) -> Vec<(NsKind, &Path)> {
    [
        (NsKind::Net, &record.namespaces.network),
        (NsKind::Ipc, &record.namespaces.ipc),
        (NsKind::Uts, &record.namespaces.uts),
    ]
    .into_iter()
    .filter_map(|(kind, path)| Some((kind, path.as_deref()?)))
    .collect()
}

fn configure_namespaces(
    record: &SandboxRecord,
    plan: &PodPlan,
    sysctls: &BTreeMap<String, String>,
) -> Result<(), SandboxError> {
    let enter = pod_namespaces(record);
    if enter.is_empty() {
        return Ok(());
    }
    let hostname = (plan.uts == HostOrPod::Pod && !plan.hostname.is_empty()).then_some(plan.hostname.as_str());
    let net = plan.network == HostOrPod::Pod;
    let outcome = namespaces::within(&enter, || {
        if let Some(h) = hostname {
            namespaces::set_hostname(h)?;
        }
        if net {
            namespaces::loopback_up()?;
        }
        Ok(first_refused_sysctl(sysctls))
    })
    .map_err(SandboxError::namespaces(&record.id, "set up the namespaces"))?;
    refused_sysctl(outcome)
}

/// Writes sysctls inside the pod's namespaces.
fn write_sysctls(record: &SandboxRecord, sysctls: &BTreeMap<String, String>) -> Result<(), SandboxError> {
    let enter = pod_namespaces(record);
    let outcome = namespaces::within(&enter, || Ok(first_refused_sysctl(sysctls)))
        .map_err(SandboxError::namespaces(&record.id, "enter the namespaces"))?;
    refused_sysctl(outcome)
}

/// CNI ADD, cached before it runs and after; registers the DEL.
fn attach(
    sandboxes: &SandboxManager,
    record: &SandboxRecord,
    netns: &Path,
    bandwidth: Option<&Bandwidth>,
    undo: &mut Undo,
) -> Result<Attachment, SandboxError> {
    let net = &sandboxes.info.config().network;
    let found = crate::cni::config::find(&net.cni_config_dir, &net.cni_plugin_dirs)
        .map_err(|e| SandboxError::NetworkNotReady(Box::new(e)))?;
    let mut capabilities = serde_json::Map::new();
    let ports: Vec<serde_json::Value> = record
        .port_mappings
        .iter()
        .filter(|p| p.host_port != 0)
        .map(|p| {
            serde_json::json!({"hostPort": p.host_port, "containerPort": p.container_port,
                "protocol": p.protocol.name(), "hostIP": p.host_ip})
        })
        .collect();
    if !ports.is_empty() {
        capabilities.insert("portMappings".into(), serde_json::Value::Array(ports));
    }
    if let Some(limits) = bandwidth {
        capabilities.insert("bandwidth".into(), network::bandwidth_capability(limits));
    }
    let mut attachment = Attachment {
        container_id: record.id.clone(),
        netns: netns.to_path_buf(),
        ifname: POD_IFNAME.into(),
        config: network::effective_config(&found, &sandboxes.info.network_settings().pod_cidr),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), record.metadata.namespace.clone()),
            ("K8S_POD_NAME".into(), record.metadata.name.clone()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), record.id.clone()),
            ("K8S_POD_UID".into(), record.metadata.uid.clone()),
        ],
        capabilities,
        result: None,
    };
    sandboxes.cni_cache.put(&record.id, &attachment).map_err(SandboxError::cni_cache(&record.id, "write"))?;
    let cache = sandboxes.cni_cache.clone();
    let plugins = sandboxes.plugins.clone();
    let cached = attachment.clone();
    let id = record.id.clone();
    // A guard: while the DEL has not succeeded, the namespace it needs stays pinned.
    undo.push_guard("CNI DEL", move || -> Result<(), network::CniError> {
        // The cache holds the result once ADD finished: DEL with it.
        let latest = cache.get(&id).ok().flatten().unwrap_or(cached);
        del_with_retries(&latest, &plugins)?;
        Ok(cache.remove(&id)?)
    });
    network::add(&mut attachment, &sandboxes.plugins).map_err(|e| SandboxError::Attach {
        id: record.id.clone(),
        network: found.name.clone(),
        source: Box::new(e),
    })?;
    sandboxes.cni_cache.put(&record.id, &attachment).map_err(SandboxError::cni_cache(&record.id, "write"))?;
    Ok(attachment)
}

/// Writes each sysctl as the calling thread sees it; the first the kernel refuses, and why.
fn first_refused_sysctl(sysctls: &BTreeMap<String, String>) -> Option<(String, String)> {
    sysctls
        .iter()
        .find_map(|(name, value)| namespaces::write_sysctl(name, value).err().map(|e| (name.clone(), e.to_string())))
}

fn refused_sysctl(refused: Option<(String, String)>) -> Result<(), SandboxError> {
    match refused {
        None => Ok(()),
        Some((name, problem)) => Err(SandboxError::BadField(BadField {
            field: format!("config.linux.sysctls[{name:?}]"),
            problem: format!("cannot be set in the pod's namespaces: {problem}"),
        })),
    }
}

fn node_hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default()
}
