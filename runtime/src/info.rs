//! What lockstepd says about itself: its version and pinned minor, whether it can run
//! containers and wire pods (checked for real, each time it is asked), the cgroup driver, and
//! the pod CIDR that the kubelet hands over (kept crash-safely under --root).

use std::path::PathBuf;
use std::sync::Mutex;

use lockstep_cri::{model, Minor};
use serde::{Deserialize, Serialize};

use crate::cni;
use crate::config::{CgroupDriver, Config};
use crate::oci::{probe_handlers, HandlerSet};
use crate::persist::{self, PersistError};

/// The CRI version string the kubelet requires (it refuses any other).
pub const CRI_VERSION: &str = "0.1.0";
pub const RUNTIME_NAME: &str = "lockstep";
pub const RUNTIME_API_VERSION: &str = "v1";

/// Runtime-wide facts and settings.
#[derive(Debug)]
pub struct RuntimeInfo {
    minor: Minor,
    config: Config,
    handlers: Mutex<HandlerSet>,
    network_file: PathBuf,
    network: Mutex<NetworkSettings>,
}

/// What UpdateRuntimeConfig has told us.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSettings {
    pub pod_cidr: String,
}

impl RuntimeInfo {
    /// Probes the configured OCI runtimes and reads the stored network settings.
    pub fn new(minor: Minor, config: Config) -> Result<Self, PersistError> {
        let handlers = probe_handlers(&config);
        let network_file = config.root.join("network.json");
        let network = match std::fs::read(&network_file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| PersistError::Corrupt { path: network_file.clone(), source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NetworkSettings::default(),
            Err(source) => return Err(PersistError::Io { what: "read", path: network_file, source }),
        };
        Ok(RuntimeInfo { minor, config, handlers: Mutex::new(handlers), network_file, network: Mutex::new(network) })
    }

    pub fn minor(&self) -> Minor {
        self.minor
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The OCI runtime handlers as last probed.
    pub fn handlers(&self) -> HandlerSet {
        lock(&self.handlers).clone()
    }

    pub fn version(&self) -> model::VersionResponse {
        model::VersionResponse {
            version: CRI_VERSION.into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: format!("{}+k8s.{}", env!("CARGO_PKG_VERSION"), self.minor),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }
    }

    /// RuntimeReady and NetworkReady from real checks, the handlers that work and their features.
    pub fn status(&self, verbose: bool) -> model::StatusResponse {
        let handlers = {
            let mut handlers = lock(&self.handlers);
            // A runtime installed after start makes the node ready without a restart.
            if handlers.default_handler().is_none() {
                *handlers = probe_handlers(&self.config);
            }
            handlers.clone()
        };
        let runtime_ready = match handlers.default_handler() {
            Some(_) => condition("RuntimeReady", None),
            None => {
                let problems: Vec<String> = handlers
                    .handlers
                    .iter()
                    .map(|h| format!("{}: {}", h.name, h.problem.as_deref().unwrap_or("not the configured default")))
                    .collect();
                condition(
                    "RuntimeReady",
                    Some(("NoOCIRuntime", format!("no configured OCI runtime works ({})", problems.join("; ")))),
                )
            }
        };
        let network = cni::config::find(&self.config.network.cni_config_dir, &self.config.network.cni_plugin_dirs);
        let network_ready = match &network {
            Ok(_) => condition("NetworkReady", None),
            Err(e) => condition("NetworkReady", Some(("NetworkPluginNotReady", e.to_string()))),
        };
        // The default handler is listed under the empty name too: that is what the kubelet
        // looks up for a pod without a RuntimeClass.
        let default_entry = handlers.default_handler().map(|h| (String::new(), h));
        let runtime_handlers = default_entry
            .into_iter()
            .chain(handlers.working().map(|h| (h.name.clone(), h)))
            .map(|(name, h)| model::RuntimeHandler {
                name,
                features: Some(model::RuntimeHandlerFeatures {
                    // What the runtime itself supports (`<runtime> features`).
                    recursive_read_only_mounts: h.features.recursive_read_only_mounts,
                    // Pods with `hostUsers: false`: the handler passed the user namespace probe.
                    user_namespaces: h.features.user_namespaces,
                }),
            })
            .collect();
        let mut info = std::collections::HashMap::new();
        if verbose {
            info.insert("config".to_string(), self.config.render());
            let detail: Vec<serde_json::Value> = handlers
                .handlers
                .iter()
                .map(|h| {
                    serde_json::json!({
                        "name": h.name,
                        "path": h.path,
                        "version": h.version,
                        "problem": h.problem,
                        "checked_by": h.checked_by,
                        "probe_ms": h.took.as_secs_f64() * 1000.0,
                        "recursive_read_only_mounts": h.features.recursive_read_only_mounts,
                        "user_namespaces": h.features.user_namespaces,
                        "default": handlers.default_handler().is_some_and(|d| d.name == h.name),
                    })
                })
                .collect();
            info.insert("handlers".to_string(), serde_json::Value::Array(detail).to_string());
            let cni = match &network {
                Ok(c) => serde_json::json!({"file": c.file, "name": c.name, "plugins": c.plugin_types()}),
                Err(e) => serde_json::json!({"error": e.to_string()}),
            };
            info.insert("cni".to_string(), cni.to_string());
            info.insert("podCIDR".to_string(), self.network_settings().pod_cidr);
        }
        model::StatusResponse {
            status: Some(model::RuntimeStatus { conditions: vec![runtime_ready, network_ready] }),
            info,
            runtime_handlers,
            features: Some(model::RuntimeFeatures {
                // Merge and Strict are honoured by the spec builder (container::user).
                supplemental_groups_policy: true,
                user_namespaces_host_network: false,
            }),
        }
    }

    pub fn runtime_config(&self) -> model::RuntimeConfigResponse {
        let driver = match self.config.cgroup_driver {
            CgroupDriver::Systemd => model::CgroupDriver::Systemd,
            CgroupDriver::Cgroupfs => model::CgroupDriver::Cgroupfs,
        };
        model::RuntimeConfigResponse { linux: Some(model::LinuxRuntimeConfiguration { cgroup_driver: driver as i32 }) }
    }

    pub fn network_settings(&self) -> NetworkSettings {
        lock(&self.network).clone()
    }

    /// Stores the pod CIDR (crash-safely) before answering; an empty CIDR changes nothing,
    /// as the kubelet sends its whole config and may not know the CIDR yet.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<(), PersistError> {
        let mut network = lock(&self.network);
        if cidr.is_empty() || network.pod_cidr == cidr {
            return Ok(());
        }
        let updated = NetworkSettings { pod_cidr: cidr.to_string() };
        let bytes = serde_json::to_vec_pretty(&updated)
            .map_err(|source| PersistError::Encode { path: self.network_file.clone(), source })?;
        persist::write_atomic(&self.network_file, &bytes)?;
        *network = updated;
        Ok(())
    }
}

fn condition(kind: &str, problem: Option<(&str, String)>) -> model::RuntimeCondition {
    let (reason, message) = problem.map(|(r, m)| (r.to_string(), m)).unwrap_or_default();
    model::RuntimeCondition { r#type: kind.to_string(), status: reason.is_empty(), reason, message }
}

/// A poisoned lock only means another request panicked mid-update of plain data; go on.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Checks a pod CIDR: an IPv4 or IPv6 prefix, as the kubelet's --pod-cidr gives it.
pub fn parse_cidr(cidr: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (addr, len) = cidr.split_once('/').ok_or_else(|| format!("{cidr:?} has no prefix length"))?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match len.parse::<u8>() {
        Ok(n) if n <= max => Ok((addr, n)),
        _ => Err(format!("{len:?} is not a prefix length between 0 and {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Handler;

    fn config(tmp: &std::path::Path) -> Config {
        let mut config = Config { root: tmp.join("root"), runroot: tmp.join("run"), ..Default::default() };
        config.network.cni_config_dir = tmp.join("net.d");
        config.network.cni_plugin_dirs = vec![tmp.join("bin")];
        config
    }

    #[test]
    fn version_carries_the_pinned_minor() {
        let tmp = tempfile::tempdir().unwrap();
        let info = RuntimeInfo::new(Minor::V1_33, config(tmp.path())).unwrap();
        let v = info.version();
        assert_eq!(
            (v.version.as_str(), v.runtime_name.as_str(), v.runtime_api_version.as_str()),
            ("0.1.0", "lockstep", "v1")
        );
        assert!(v.runtime_version.starts_with(env!("CARGO_PKG_VERSION")) && v.runtime_version.ends_with("1.33"));
    }

    #[test]
    fn status_says_why_it_is_not_ready() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = config(tmp.path());
        config.runtime.handlers = vec![Handler { name: "ghost".into(), path: "/nonexistent/runtime".into() }];
        let status = RuntimeInfo::new(Minor::V1_36, config).unwrap().status(false);
        let conditions = status.status.unwrap().conditions;
        let runtime = &conditions[0];
        assert_eq!(
            (runtime.r#type.as_str(), runtime.status, runtime.reason.as_str()),
            ("RuntimeReady", false, "NoOCIRuntime")
        );
        assert!(runtime.message.contains("ghost") && runtime.message.contains("not found"), "{}", runtime.message);
        let network = &conditions[1];
        assert_eq!((network.r#type.as_str(), network.status), ("NetworkReady", false));
        assert!(network.message.contains("net.d"), "{}", network.message);
        assert!(status.runtime_handlers.is_empty());
    }

    #[test]
    fn status_is_ready_with_a_runtime_and_a_network() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = config(tmp.path());
        config.runtime.handlers = vec![Handler { name: "runc".into(), path: "runc".into() }];
        std::fs::create_dir_all(tmp.path().join("net.d")).unwrap();
        std::fs::create_dir_all(tmp.path().join("bin")).unwrap();
        std::fs::write(tmp.path().join("bin/bridge"), "").unwrap();
        std::fs::write(tmp.path().join("net.d/10.conflist"), r#"{"name":"n","plugins":[{"type":"bridge"}]}"#).unwrap();
        let status = RuntimeInfo::new(Minor::V1_36, config).unwrap().status(true);
        assert!(status.status.unwrap().conditions.iter().all(|c| c.status));
        let names: Vec<&str> = status.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, vec!["", "runc"], "the default, then each working handler");
        assert!(status.info.contains_key("handlers") && status.info.contains_key("config"));
    }

    #[test]
    fn the_pod_cidr_survives_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let info = RuntimeInfo::new(Minor::V1_36, config(tmp.path())).unwrap();
        info.set_pod_cidr("10.88.0.0/16").unwrap();
        info.set_pod_cidr("").unwrap();
        let again = RuntimeInfo::new(Minor::V1_36, config(tmp.path())).unwrap();
        assert_eq!(again.network_settings().pod_cidr, "10.88.0.0/16");
    }

    #[test]
    fn cidrs_are_checked() {
        assert!(parse_cidr("10.88.0.0/16").is_ok());
        assert!(parse_cidr("fd00::/64").is_ok());
        assert!(parse_cidr("10.88.0.0/33").is_err());
        assert!(parse_cidr("10.88.0.0").is_err());
        assert!(parse_cidr("banana/8").is_err());
    }
}
