//! Attaches a pod to the CNI network and detaches it, by the CNI spec: ADD through the list's
//! plugins in order (each gets the previous result as prevResult), DEL in reverse order with
//! the cached result. (No CHECK: lockstepd never runs it, as containerd and CRI-O do not; so
//! `disableCheck` holds trivially.) An attachment is cached crash-safely under
//! `<root>/cni/<id>.json` before ADD runs and with its result after, so DEL works after a crash
//! or a restart even when the configuration on disk has changed since.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::NetworkConfig;
use super::exec::{self, CniExecError, Invocation, Plugins};
use crate::persist::{PersistError, RecordDir};

/// Traffic limits of a pod in bits per second (`kubernetes.io/{ingress,egress}-bandwidth`),
/// for the CNI bandwidth capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    pub ingress: Option<u64>,
    pub egress: Option<u64>,
}

/// The file name of lockstep's own default network (written by ci/setup). Only this network's
/// host-local range follows UpdateRuntimeConfig's pod CIDR; an operator's own file is never
/// changed.
pub const DEFAULT_NETWORK_FILE: &str = "10-lockstep.conflist";
/// The interface the pod gets, as every Kubernetes runtime names it.
pub const POD_IFNAME: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(transparent)]
    Exec(#[from] CniExecError),
    #[error(transparent)]
    Cache(#[from] PersistError),
}

/// One pod's attachment to one network: what ADD ran with, and its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// The network configuration list exactly as ADD used it (pod CIDR applied).
    pub config: Value,
    /// CNI_ARGS.
    pub args: Vec<(String, String)>,
    /// Capability arguments (portMappings, bandwidth), given to plugins that declare them.
    pub capabilities: serde_json::Map<String, Value>,
    /// ADD's result; None while ADD has not finished.
    pub result: Option<Value>,
}

impl Attachment {
    pub fn network_name(&self) -> &str {
        self.config.get("name").and_then(Value::as_str).unwrap_or("")
    }

    fn cni_version(&self) -> &str {
        self.config.get("cniVersion").and_then(Value::as_str).unwrap_or("")
    }

    fn plugins(&self) -> Vec<Value> {
        self.config.get("plugins").and_then(Value::as_array).cloned().unwrap_or_default()
    }

    /// A plugin's stdin, as libcni builds it: its own config, the list's name and version,
    /// the previous result, and the capability arguments it declared.
    fn plugin_stdin(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.as_object().cloned().unwrap_or_default();
        conf.insert("name".into(), json!(self.network_name()));
        conf.insert("cniVersion".into(), json!(self.cni_version()));
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        let wanted = plugin.get("capabilities").and_then(Value::as_object);
        let runtime: serde_json::Map<String, Value> = self
            .capabilities
            .iter()
            .filter(|(cap, _)| wanted.is_some_and(|w| w.get(*cap).and_then(Value::as_bool) == Some(true)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        Value::Object(conf)
    }

    fn invocation<'a>(&'a self, command: &'a str, netns: &'a Path, plugins: &'a Plugins) -> Invocation<'a> {
        Invocation { command, container_id: &self.container_id, netns, ifname: &self.ifname, args: &self.args, plugins }
    }

    /// The IPs ADD assigned, IPv4 first, without prefix lengths.
    pub fn ips(&self) -> Vec<String> {
        let Some(result) = &self.result else { return Vec::new() };
        let mut ips: Vec<std::net::IpAddr> = result
            .get("ips")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.get("address").and_then(Value::as_str))
            .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
            .collect();
        ips.sort_by_key(|ip| ip.is_ipv6());
        ips.dedup();
        ips.into_iter().map(|ip| ip.to_string()).collect()
    }
}

/// The configuration list ADD will use: the found one (its own keys such as disableGC kept),
/// with the pod CIDR as host-local's range when the list is lockstep's own default network and
/// a CIDR is known.
pub fn effective_config(found: &NetworkConfig, pod_cidr: &str) -> Value {
    let mut plugins = found.plugins.clone();
    let ours = found.file.file_name().is_some_and(|f| f == DEFAULT_NETWORK_FILE);
    let cidrs: Vec<&str> = pod_cidr.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
    if ours && !cidrs.is_empty() {
        for plugin in &mut plugins {
            if let Some(ipam) = plugin.get_mut("ipam").and_then(Value::as_object_mut) {
                if ipam.get("type").and_then(Value::as_str) == Some("host-local") {
                    let ranges: Vec<Value> = cidrs.iter().map(|c| json!([{ "subnet": c }])).collect();
                    ipam.remove("subnet");
                    ipam.insert("ranges".into(), Value::Array(ranges));
                }
            }
        }
    }
    let mut list = found.list_keys.clone();
    list.insert("cniVersion".into(), json!(found.cni_version));
    list.insert("name".into(), json!(found.name));
    list.insert("plugins".into(), Value::Array(plugins));
    Value::Object(list)
}

/// ADD through every plugin; on success the attachment holds the final result. On failure the
/// plugins that succeeded are not undone here: the caller DELs (a DEL is safe either way).
pub fn add(attachment: &mut Attachment, plugins: &Plugins) -> Result<(), CniError> {
    let mut prev: Option<Value> = None;
    let netns = attachment.netns.clone();
    for plugin in attachment.plugins() {
        let kind = plugin.get("type").and_then(Value::as_str).unwrap_or("").to_string();
        let stdin = attachment.plugin_stdin(&plugin, prev.as_ref());
        let started = std::time::Instant::now();
        prev = exec::run(&kind, &attachment.invocation("ADD", &netns, plugins), &stdin)?;
        tracing::debug!(plugin = %kind, ms = started.elapsed().as_secs_f64() * 1000.0, "CNI ADD");
    }
    attachment.result = prev;
    Ok(())
}

/// DEL through every plugin in reverse order with the cached result. Idempotent by the spec:
/// plugins succeed on what is already gone. A namespace that is gone is passed as empty.
pub fn del(attachment: &Attachment, plugins: &Plugins) -> Result<(), CniError> {
    let netns =
        if crate::host::namespaces::is_pinned(&attachment.netns) { attachment.netns.clone() } else { PathBuf::new() };
    // A DEL that a killed lockstepd started runs on: this one starts where it ends.
    exec::wait_for_earlier_del(&attachment.container_id, plugins);
    for plugin in attachment.plugins().iter().rev() {
        let kind = plugin.get("type").and_then(Value::as_str).unwrap_or("");
        let stdin = attachment.plugin_stdin(plugin, attachment.result.as_ref());
        let started = std::time::Instant::now();
        exec::run(kind, &attachment.invocation("DEL", &netns, plugins), &stdin)?;
        tracing::debug!(plugin = %kind, ms = started.elapsed().as_secs_f64() * 1000.0, "CNI DEL");
    }
    Ok(())
}

/// The cached attachments, one per sandbox id, under `<root>/cni`.
#[derive(Debug, Clone)]
pub struct AttachmentCache {
    dir: RecordDir,
}

impl AttachmentCache {
    pub fn new(root: &Path) -> Self {
        AttachmentCache { dir: RecordDir::new(root.join("cni")) }
    }
    pub fn put(&self, id: &str, attachment: &Attachment) -> Result<(), PersistError> {
        self.dir.put(id, attachment)
    }
    pub fn get(&self, id: &str) -> Result<Option<Attachment>, PersistError> {
        self.dir.get(id)
    }
    pub fn remove(&self, id: &str) -> Result<(), PersistError> {
        self.dir.remove(id)
    }
    pub fn all(&self) -> Result<Vec<(String, Attachment)>, PersistError> {
        self.dir.load_all()
    }
    /// Every readable attachment; an unreadable one is set aside (`<id>.json.corrupt`) and logged.
    pub fn all_readable(&self) -> Result<Vec<(String, Attachment)>, PersistError> {
        let loaded = self.dir.load_readable()?;
        for bad in &loaded.set_aside {
            tracing::error!(sandbox = %bad.id, moved_to = %bad.moved_to.display(), problem = %bad.problem,
                "an unreadable CNI cache entry was set aside: its network cannot be DELeted");
        }
        Ok(loaded.records)
    }
}

/// The bandwidth plugin's capability argument for the pod's limits (bits per second).
pub fn bandwidth_capability(limits: &Bandwidth) -> Value {
    let mut out = serde_json::Map::new();
    for (rate, burst, bits) in
        [("ingressRate", "ingressBurst", limits.ingress), ("egressRate", "egressBurst", limits.egress)]
    {
        if let Some(bits) = bits {
            out.insert(rate.into(), json!(bits));
            // As containerd does: no burst limit to speak of.
            out.insert(burst.into(), json!(i32::MAX));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(file: &str) -> NetworkConfig {
        NetworkConfig {
            file: PathBuf::from("/etc/cni/net.d").join(file),
            name: "lockstep".into(),
            cni_version: "1.0.0".into(),
            plugins: vec![
                json!({"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}}),
                json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            ],
            list_keys: [("disableGC".to_string(), json!(true))].into_iter().collect(),
        }
    }

    #[test]
    fn the_pod_cidr_changes_only_lockstep_s_own_network() {
        let ours = effective_config(&found(DEFAULT_NETWORK_FILE), "10.77.1.0/24");
        assert_eq!(ours["plugins"][0]["ipam"]["ranges"], json!([[{"subnet": "10.77.1.0/24"}]]));
        let theirs = effective_config(&found("20-operator.conflist"), "10.77.1.0/24");
        assert_eq!(theirs["plugins"][0]["ipam"]["ranges"], json!([[{"subnet": "10.88.0.0/16"}]]));
        let unset = effective_config(&found(DEFAULT_NETWORK_FILE), "");
        assert_eq!(unset["plugins"][0]["ipam"]["ranges"], json!([[{"subnet": "10.88.0.0/16"}]]));
        assert_eq!(unset["disableGC"], json!(true), "the list's own keys are kept");
    }

    #[test]
    fn capability_arguments_go_only_to_plugins_that_declare_them() {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("portMappings".into(), json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]));
        let attachment = Attachment {
            container_id: "c".into(),
            netns: PathBuf::from("/x"),
            ifname: "eth0".into(),
            config: effective_config(&found(DEFAULT_NETWORK_FILE), ""),
            args: vec![],
            capabilities,
            result: None,
        };
        let plugins = attachment.plugins();
        let bridge = attachment.plugin_stdin(&plugins[0], None);
        assert!(bridge.get("runtimeConfig").is_none());
        assert_eq!(bridge["name"], "lockstep");
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.9/16"}]});
        let portmap = attachment.plugin_stdin(&plugins[1], Some(&prev));
        assert_eq!(portmap["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(portmap["prevResult"], prev);
    }

    #[test]
    fn ips_come_ipv4_first_without_prefix() {
        let attachment = Attachment {
            container_id: "c".into(),
            netns: PathBuf::new(),
            ifname: "eth0".into(),
            config: json!({}),
            args: vec![],
            capabilities: Default::default(),
            result: Some(json!({"ips": [{"address": "fd00::5/64"}, {"address": "10.88.0.5/16"}]})),
        };
        assert_eq!(attachment.ips(), vec!["10.88.0.5".to_string(), "fd00::5".to_string()]);
    }

    #[test]
    fn bandwidth_limits_become_the_capability() {
        let bw = bandwidth_capability(&Bandwidth { ingress: Some(10_000_000), egress: None });
        assert_eq!(bw["ingressRate"], 10_000_000);
        assert_eq!(bw["ingressBurst"], i32::MAX);
        assert!(bw.get("egressRate").is_none());
    }
}
