//! lockstepd's configuration: defaults, then /etc/lockstep/lockstep.toml, then the drop-ins in
//! lockstep.toml.d (lexical order, each table merged key by key), then command-line flags.
//! Touches only the files it is told to read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG: &str = "/etc/lockstep/lockstep.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid configuration (after merging {sources}): {message}")]
    Invalid { sources: String, message: String },
}

/// The effective configuration of one lockstepd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent state: images, sandbox and container records.
    pub root: PathBuf,
    /// Runtime state, gone at reboot: pinned namespaces, bundles, exit files.
    pub runroot: PathBuf,
    /// The CRI socket. Empty means `<runroot>/lockstep.sock`.
    pub listen: PathBuf,
    /// tracing filter: error, warn, info, debug, trace, or a full directive.
    pub log_level: String,
    /// How log lines are written to stderr: "text" (for people) or "json" (one object a line).
    pub log_format: LogFormat,
    /// The port of lockstepd's own Prometheus metrics (`GET /metrics`); 0: no endpoint.
    pub metrics_port: u16,
    /// The IP address the metrics endpoint listens on.
    pub metrics_address: String,
    /// How pod cgroups are named, as the kubelet's cgroupDriver: "cgroupfs" or "systemd".
    pub cgroup_driver: CgroupDriver,
    pub runtime: RuntimeSection,
    pub network: NetworkSection,
    pub image: ImageSection,
}

pub use crate::host::cgroups::CgroupDriver;

/// The form of lockstepd's log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The longest an OCI runtime call may take unless `runtime_call_timeout_secs` says otherwise:
/// well inside the kubelet's own 2-minute request timeout.
pub const DEFAULT_RUNTIME_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The OCI runtimes, one per runtime handler (RuntimeClass).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// The handler used when a pod names none. Empty: the first configured handler that works.
    pub default_handler: String,
    /// The handlers, in order of preference.
    pub handlers: Vec<Handler>,
    /// On a hybrid cgroup host (v1 hierarchies plus a v2 mount), a handler that refuses the
    /// layout (crun 1.8) runs with the v2 mount hidden from it: on cgroup v1 alone, as the
    /// kubelet sees such a host. false: such a handler is reported as not working.
    pub hybrid_cgroup_v1_view: bool,
    /// A container whose request names no seccomp profile at all (neither `seccomp` nor the
    /// deprecated `seccomp_profile_path`) runs under RuntimeDefault instead of Unconfined, the
    /// CRI's documented default (as CRI-O's seccomp_use_default_when_empty, or the kubelet's
    /// --seccomp-default for every pod).
    pub seccomp_use_default_when_empty: bool,
    /// Key prefixes of annotations the OCI runtime acts on (crun's `run.oci.*`, CRIU's
    /// `org.criu.*`) that may reach a container's config.json, as CRI-O's allowed_annotations.
    /// Empty: every such annotation is left out (and logged); the CRI record keeps them all.
    pub allowed_annotations: Vec<String>,
    /// An OCI runtime call (start, state, kill, delete, update) still running after this many
    /// seconds is killed and fails with DeadlineExceeded: a stuck runtime must not pin a
    /// container's lock, nor a thread per kubelet retry.
    pub runtime_call_timeout_secs: u64,
    /// The address the streaming server (the URLs Exec, Attach and PortForward return)
    /// listens on; the kubelet connects to it, so loopback unless the kubelet runs elsewhere.
    pub stream_address: String,
    /// Its port; 0: a free port chosen at start.
    pub stream_port: u16,
    /// A streaming session through which nothing passed for this long is ended.
    pub stream_idle_timeout_secs: u64,
    /// A PEM certificate chain for the streaming server; with `stream_tls_key` (both or
    /// neither) the server speaks TLS only and its URLs are https://. Empty: plain HTTP.
    pub stream_tls_cert: PathBuf,
    /// The PEM private key of `stream_tls_cert`.
    pub stream_tls_key: PathBuf,
    /// Streaming sessions (exec, attach, port-forward connections) at once; past it a request
    /// is answered 503 Service Unavailable and may be retried with the same URL.
    pub stream_max_sessions: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handler {
    /// The name a RuntimeClass's handler field uses.
    pub name: String,
    /// The OCI runtime binary: an absolute path, or a name looked up in PATH.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// Where CNI network configurations live; the first by file name is used.
    pub cni_config_dir: PathBuf,
    /// Where CNI plugin binaries are looked up, in order.
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// A CNI plugin still running after this many seconds is killed (its call fails).
    pub cni_plugin_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageSection {
    /// containers-registries.conf(5) file. Empty: $CONTAINERS_REGISTRIES_CONF, else
    /// /etc/containers/registries.conf.
    pub registries_conf: PathBuf,
    /// A pull that makes no progress for this many seconds is cancelled: each blob download
    /// must receive 64 KiB (or end) within it, so a trickling registry is cancelled too.
    pub pull_progress_timeout_secs: u64,
    /// A pull not finished after this many seconds is cancelled, however it progresses.
    /// 0: no overall deadline.
    pub pull_timeout_secs: u64,
    /// Per-registry CAs (HOST[:PORT]/*.crt) and client certificates (*.cert + *.key).
    /// Empty: /etc/containers/certs.d.
    pub certs_dir: PathBuf,
    /// A layer whose uncompressed stream passes this many bytes fails its pull (a gzip or zstd
    /// bomb fills no disk).
    pub max_layer_bytes: u64,
    /// A layer of more entries than this (directories it needs but does not list included)
    /// fails its pull.
    pub max_layer_entries: u64,
    /// Images reported `pinned` (the kubelet's image GC leaves them): exact names, prefixes
    /// ending in `*`, or `*keyword*` (crate::pin_patterns).
    pub pinned_images: Vec<String>,
    /// containers-policy.json(5): which images need which signatures. Empty:
    /// /etc/containers/policy.json when it exists, else every image is accepted. A file named
    /// here must exist; it is checked at start and read again at each pull.
    pub signature_policy: PathBuf,
    /// containers-registries.d(5): where GPG simple signatures (`signedBy`) are looked for.
    /// Empty: /etc/containers/registries.d.
    pub registries_d: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/lockstep"),
            runroot: PathBuf::from("/run/lockstep"),
            listen: PathBuf::new(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            metrics_port: 0,
            metrics_address: "127.0.0.1".into(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            runtime: RuntimeSection::default(),
            network: NetworkSection::default(),
            image: ImageSection::default(),
        }
    }
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            default_handler: String::new(),
            handlers: vec![
                Handler { name: "crun".into(), path: PathBuf::from("crun") },
                Handler { name: "runc".into(), path: PathBuf::from("runc") },
            ],
            hybrid_cgroup_v1_view: true,
            seccomp_use_default_when_empty: false,
            allowed_annotations: Vec::new(),
            runtime_call_timeout_secs: DEFAULT_RUNTIME_CALL_TIMEOUT.as_secs(),
            stream_address: "127.0.0.1".into(),
            stream_port: 0,
            stream_idle_timeout_secs: 4 * 3600,
            stream_tls_cert: PathBuf::new(),
            stream_tls_key: PathBuf::new(),
            stream_max_sessions: crate::streaming::DEFAULT_MAX_SESSIONS as u64,
        }
    }
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            cni_config_dir: PathBuf::from("/etc/cni/net.d"),
            cni_plugin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            cni_plugin_timeout_secs: crate::cni::exec::DEFAULT_TIMEOUT.as_secs(),
        }
    }
}

/// The uncompressed bytes one layer may hold by default (`image.max_layer_bytes`): 64 GiB.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 64 << 30;
/// The entries one layer may hold by default (`image.max_layer_entries`): 4 Mi.
pub const DEFAULT_MAX_LAYER_ENTRIES: u64 = 4 << 20;

impl Default for ImageSection {
    fn default() -> Self {
        ImageSection {
            registries_conf: PathBuf::new(),
            pull_progress_timeout_secs: 60,
            pull_timeout_secs: 3600,
            certs_dir: PathBuf::new(),
            max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
            max_layer_entries: DEFAULT_MAX_LAYER_ENTRIES,
            pinned_images: Vec::new(),
            signature_policy: PathBuf::new(),
            registries_d: PathBuf::new(),
        }
    }
}

/// What the command line says about configuration: files to read and values that win.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`: must exist when given. Absent: /etc/lockstep/lockstep.toml if it exists.
    pub config_file: Option<PathBuf>,
    /// `--config-dir DIR`: drop-ins. Absent: `<config file>.d`.
    pub config_dir: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub runroot: Option<PathBuf>,
    pub listen: Option<PathBuf>,
    pub log_level: Option<String>,
    pub cgroup_driver: Option<CgroupDriver>,
}

impl Config {
    /// Defaults, then the config file, then its drop-ins, then the flags.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let (file, required) = match &overrides.config_file {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let dir = overrides.config_dir.clone().unwrap_or_else(|| {
            let mut d = file.clone().into_os_string();
            d.push(".d");
            PathBuf::from(d)
        });
        let mut sources = Vec::new();
        let mut merged = toml::Table::new();
        if required || file.exists() {
            merge(&mut merged, read_table(&file)?);
            sources.push(file.display().to_string());
        }
        for dropin in dropins(&dir)? {
            merge(&mut merged, read_table(&dropin)?);
            sources.push(dropin.display().to_string());
        }
        let mut config: Config =
            toml::Value::Table(merged).try_into().map_err(|e: toml::de::Error| ConfigError::Invalid {
                sources: if sources.is_empty() { "no files".into() } else { sources.join(", ") },
                message: e.message().to_string(),
            })?;
        config.apply(overrides);
        config.validate().map_err(|message| ConfigError::Invalid { sources: sources.join(", "), message })?;
        Ok(config)
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.root {
            self.root = v.clone();
        }
        if let Some(v) = &o.runroot {
            self.runroot = v.clone();
        }
        if let Some(v) = &o.listen {
            self.listen = v.clone();
        }
        if let Some(v) = &o.log_level {
            self.log_level = v.clone();
        }
        if let Some(v) = o.cgroup_driver {
            self.cgroup_driver = v;
        }
    }

    fn validate(&self) -> Result<(), String> {
        for (name, path) in [("root", &self.root), ("runroot", &self.runroot)] {
            if !path.is_absolute() {
                return Err(format!("{name} must be an absolute path, not {:?}", path.display().to_string()));
            }
        }
        if !self.listen.as_os_str().is_empty() && !self.listen.is_absolute() {
            return Err(format!("listen must be an absolute path, not {:?}", self.listen.display().to_string()));
        }
        if self.metrics_address.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("metrics_address must be an IP address, not {:?}", self.metrics_address));
        }
        if self.runtime.handlers.is_empty() {
            return Err("runtime.handlers is empty: lockstepd needs at least one OCI runtime".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in &self.runtime.handlers {
            if h.name.is_empty() {
                return Err("runtime.handlers: a handler has an empty name".into());
            }
            if !seen.insert(&h.name) {
                return Err(format!("runtime.handlers: handler {:?} is configured twice", h.name));
            }
        }
        let default = &self.runtime.default_handler;
        if !default.is_empty() && !seen.contains(default) {
            return Err(format!("runtime.default_handler {default:?} is not one of runtime.handlers"));
        }
        if self.runtime.allowed_annotations.iter().any(String::is_empty) {
            return Err(
                "runtime.allowed_annotations: an empty prefix would allow every annotation; name prefixes".into()
            );
        }
        for pattern in &self.image.pinned_images {
            crate::pin_patterns::PinPattern::parse(pattern).map_err(|e| format!("image.pinned_images: {e}"))?;
        }
        let (cert, key) = (&self.runtime.stream_tls_cert, &self.runtime.stream_tls_key);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            let (set, unset) = if key.as_os_str().is_empty() {
                ("stream_tls_cert", "stream_tls_key")
            } else {
                ("stream_tls_key", "stream_tls_cert")
            };
            return Err(format!("runtime.{set} is set but runtime.{unset} is not: TLS needs both (or neither)"));
        }
        if self.runtime.stream_max_sessions == 0 {
            return Err("runtime.stream_max_sessions must be at least 1".into());
        }
        if self.network.cni_plugin_timeout_secs == 0 {
            return Err("network.cni_plugin_timeout_secs must be at least 1".into());
        }
        if self.image.pull_progress_timeout_secs == 0 {
            return Err("image.pull_progress_timeout_secs must be at least 1".into());
        }
        if self.image.max_layer_bytes == 0 || self.image.max_layer_entries == 0 {
            return Err("image.max_layer_bytes and image.max_layer_entries must be at least 1".into());
        }
        Ok(())
    }

    /// The socket path: `listen`, or `<runroot>/lockstep.sock`.
    pub fn socket_path(&self) -> PathBuf {
        if self.listen.as_os_str().is_empty() {
            self.runroot.join("lockstep.sock")
        } else {
            self.listen.clone()
        }
    }

    /// Where containers keep their writable layers (`<root>/containers/<id>/`): the container
    /// manager puts them there, and ImageFsInfo reports this directory's filesystem.
    pub fn container_layers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The streaming server's TLS files, when both are set.
    pub fn stream_tls(&self) -> Option<crate::streaming::tls::TlsFiles> {
        let (cert, key) = (&self.runtime.stream_tls_cert, &self.runtime.stream_tls_key);
        (!cert.as_os_str().is_empty() && !key.as_os_str().is_empty())
            .then(|| crate::streaming::tls::TlsFiles { cert: cert.clone(), key: key.clone() })
    }

    pub fn pull_progress_timeout(&self) -> Duration {
        Duration::from_secs(self.image.pull_progress_timeout_secs)
    }

    /// The overall deadline of one pull, if any.
    pub fn pull_timeout(&self) -> Option<Duration> {
        (self.image.pull_timeout_secs > 0).then(|| Duration::from_secs(self.image.pull_timeout_secs))
    }

    /// The CNI plugins as the configuration sets them: where, and how long one may run.
    pub fn cni_plugins(&self) -> crate::cni::exec::Plugins {
        crate::cni::exec::Plugins {
            dirs: self.network.cni_plugin_dirs.clone(),
            timeout: Duration::from_secs(self.network.cni_plugin_timeout_secs),
        }
    }

    /// The effective configuration as a commented TOML file that `load` reads back unchanged.
    pub fn render(&self) -> String {
        let q = |p: &Path| toml_string(&p.display().to_string());
        let mut s = String::new();
        let _ = writeln!(s, "# lockstepd's effective configuration (defaults, files, drop-ins, flags).\n");
        let _ = writeln!(s, "# Persistent state: images, sandbox and container records.\nroot = {}", q(&self.root));
        let _ = writeln!(
            s,
            "# Runtime state, gone at reboot: namespaces, bundles, exit files.\nrunroot = {}",
            q(&self.runroot)
        );
        let _ = writeln!(
            s,
            "# The CRI socket (the kubelet's --container-runtime-endpoint).\nlisten = {}",
            q(&self.socket_path())
        );
        let _ = writeln!(
            s,
            "# error, warn, info, debug, trace, or a tracing directive.\nlog_level = {}",
            toml_string(&self.log_level)
        );
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        let _ = writeln!(s, "# Log lines on stderr: text, or json (one object a line).\nlog_format = \"{format}\"");
        let _ = writeln!(
            s,
            "# lockstepd's own Prometheus metrics on http://<metrics_address>:<metrics_port>/metrics; port 0: off.\n\
             metrics_port = {}\nmetrics_address = {}",
            self.metrics_port,
            toml_string(&self.metrics_address)
        );
        let driver = match self.cgroup_driver {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        };
        let _ =
            writeln!(s, "# Must match the kubelet's cgroupDriver: cgroupfs or systemd.\ncgroup_driver = \"{driver}\"");
        let _ = writeln!(
            s,
            "\n[runtime]\n# The handler for pods that name none; empty: the first configured one that works."
        );
        let _ = writeln!(s, "default_handler = {}", toml_string(&self.runtime.default_handler));
        let _ = writeln!(
            s,
            "# On a hybrid cgroup host, a handler that refuses the layout (crun 1.8) runs with the v2 mount\n\
             # hidden from it (cgroup v1 alone, as the kubelet sees the host); false: it is not used.\n\
             hybrid_cgroup_v1_view = {}",
            self.runtime.hybrid_cgroup_v1_view
        );
        let _ = writeln!(
            s,
            "# A container whose request names no seccomp profile runs Unconfined, as the CRI documents;\n\
             # true: RuntimeDefault instead (like the kubelet's --seccomp-default).\n\
             seccomp_use_default_when_empty = {}",
            self.runtime.seccomp_use_default_when_empty
        );
        let allowed: Vec<String> = self.runtime.allowed_annotations.iter().map(|p| toml_string(p)).collect();
        let _ = writeln!(
            s,
            "# Key prefixes of annotations the OCI runtime acts on (crun's run.oci.*, CRIU's org.criu.*) that\n\
             # may reach a container's config.json; empty: all such annotations are left out, with a warning.\n\
             allowed_annotations = [{}]",
            allowed.join(", ")
        );
        let _ = writeln!(
            s,
            "# An OCI runtime call still running after this many seconds is killed (DeadlineExceeded).\n\
             runtime_call_timeout_secs = {}",
            self.runtime.runtime_call_timeout_secs
        );
        let _ = writeln!(
            s,
            "# The streaming server behind Exec, Attach and PortForward (the kubelet connects to it);\n\
             # port 0: a free port chosen at start. A session idle this long is ended.\n\
             stream_address = {}\nstream_port = {}\nstream_idle_timeout_secs = {}",
            toml_string(&self.runtime.stream_address),
            self.runtime.stream_port,
            self.runtime.stream_idle_timeout_secs
        );
        let _ = writeln!(
            s,
            "# TLS for it: a PEM certificate chain and its key, both or neither (empty: plain HTTP).\n\
             stream_tls_cert = {}\nstream_tls_key = {}",
            q(&self.runtime.stream_tls_cert),
            q(&self.runtime.stream_tls_key)
        );
        let _ = writeln!(
            s,
            "# Streaming sessions at once; past it a request is answered 503 and may be retried.\n\
             stream_max_sessions = {}",
            self.runtime.stream_max_sessions
        );
        for h in &self.runtime.handlers {
            let _ = writeln!(s, "\n# An OCI runtime, selected by a RuntimeClass whose handler is its name.");
            let _ = writeln!(s, "[[runtime.handlers]]\nname = {}\npath = {}", toml_string(&h.name), q(&h.path));
        }
        let _ = writeln!(s, "\n[network]\n# CNI network configurations; the first by file name is used.");
        let _ = writeln!(s, "cni_config_dir = {}", q(&self.network.cni_config_dir));
        let dirs: Vec<String> = self.network.cni_plugin_dirs.iter().map(|d| q(d)).collect();
        let _ =
            writeln!(s, "# CNI plugin binaries are looked up here, in order.\ncni_plugin_dirs = [{}]", dirs.join(", "));
        let _ = writeln!(
            s,
            "# A CNI plugin still running after this many seconds is killed.\ncni_plugin_timeout_secs = {}",
            self.network.cni_plugin_timeout_secs
        );
        let _ = writeln!(s, "\n[image]\n# containers-registries.conf(5); empty: $CONTAINERS_REGISTRIES_CONF or /etc/containers/registries.conf.");
        let _ = writeln!(s, "registries_conf = {}", q(&self.image.registries_conf));
        let _ = writeln!(
            s,
            "# A pull that makes no progress for this long is cancelled (each blob must receive 64 KiB or end within it)."
        );
        let _ = writeln!(s, "pull_progress_timeout_secs = {}", self.image.pull_progress_timeout_secs);
        let _ =
            writeln!(s, "# A pull not finished after this long is cancelled, however it progresses; 0: no deadline.");
        let _ = writeln!(s, "pull_timeout_secs = {}", self.image.pull_timeout_secs);
        let _ = writeln!(
            s,
            "# Per-registry CAs (HOST[:PORT]/*.crt) and client certificates; empty: /etc/containers/certs.d."
        );
        let _ = writeln!(s, "certs_dir = {}", q(&self.image.certs_dir));
        let _ = writeln!(
            s,
            "# A layer whose uncompressed tar passes this many bytes fails its pull (64 GiB: a gzip or zstd bomb stops here)."
        );
        let _ = writeln!(s, "max_layer_bytes = {}", self.image.max_layer_bytes);
        let _ = writeln!(
            s,
            "# A layer of more entries fails its pull, the directories it needs but does not list counted too."
        );
        let _ = writeln!(s, "max_layer_entries = {}", self.image.max_layer_entries);
        let pinned: Vec<String> = self.image.pinned_images.iter().map(|p| toml_string(p)).collect();
        let _ = writeln!(
            s,
            "# Images reported pinned, which the kubelet's image GC leaves: exact names, `prefix*` or `*keyword*`."
        );
        let _ = writeln!(s, "pinned_images = [{}]", pinned.join(", "));
        let _ = writeln!(
            s,
            "# containers-policy.json(5), the signatures images need; empty: /etc/containers/policy.json when present."
        );
        let _ = writeln!(s, "signature_policy = {}", q(&self.image.signature_policy));
        let _ = writeln!(
            s,
            "# containers-registries.d(5), where signedBy's signatures are; empty: /etc/containers/registries.d."
        );
        let _ = writeln!(s, "registries_d = {}", q(&self.image.registries_d));
        s
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Syntax { path: path.into(), message: e.to_string() })
}

/// The drop-in files of `dir` (`*.toml`), in lexical order; none when the directory is absent.
fn dropins(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ConfigError::Read { path: dir.into(), source }),
    };
    let mut files = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::Read { path: dir.into(), source })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.insert(entry.file_name(), path);
        }
    }
    Ok(files.into_values().collect())
}

/// Merges `over` into `base`: tables key by key, everything else (arrays too) replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load_from(file: &Path) -> Result<Config, ConfigError> {
        Config::load(&Overrides { config_file: Some(file.into()), ..Default::default() })
    }

    #[test]
    fn file_then_dropins_in_order_then_flags() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(
            tmp.path(),
            "lockstep.toml",
            "root = \"/srv/a\"\nlog_level = \"debug\"\n[network]\ncni_config_dir = \"/x\"\n",
        );
        write(tmp.path(), "lockstep.toml.d/20-b.toml", "root = \"/srv/b\"\n");
        write(
            tmp.path(),
            "lockstep.toml.d/10-a.toml",
            "root = \"/srv/ignored\"\n[network]\ncni_plugin_dirs = [\"/p\"]\n",
        );
        write(tmp.path(), "lockstep.toml.d/README", "not toml at all [[[");
        let config = Config::load(&Overrides {
            config_file: Some(file),
            runroot: Some("/run/flag".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.root, Path::new("/srv/b"), "the later drop-in wins");
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.network.cni_config_dir, Path::new("/x"), "tables merge key by key");
        assert_eq!(config.network.cni_plugin_dirs, vec![PathBuf::from("/p")]);
        assert_eq!(config.runroot, Path::new("/run/flag"), "flags win");
        assert_eq!(config.socket_path(), Path::new("/run/flag/lockstep.sock"));
    }

    #[test]
    fn rendered_config_reads_back_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config =
            Config { listen: "/tmp/x.sock".into(), cgroup_driver: CgroupDriver::Systemd, ..Default::default() };
        config.runtime.default_handler = "runc".into();
        config.runtime.allowed_annotations = vec!["run.oci.keep_original_groups".into(), "org.criu.\"x\"".into()];
        config.log_level = "lockstepd=debug,\"quoted\"".into();
        config.log_format = LogFormat::Json;
        config.metrics_port = 9537;
        config.metrics_address = "::1".into();
        config.runtime.stream_tls_cert = "/etc/lockstep/stream.crt".into();
        config.runtime.stream_tls_key = "/etc/lockstep/stream.key".into();
        config.runtime.stream_max_sessions = 7;
        config.image.signature_policy = "/etc/lockstep/policy.json".into();
        config.image.registries_d = "/etc/lockstep/registries.d".into();
        let file = write(tmp.path(), "effective.toml", &config.render());
        assert_eq!(load_from(&file).unwrap(), config);
    }

    #[test]
    fn malformed_file_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(tmp.path(), "bad.toml", "root = [unclosed\n");
        let err = load_from(&file).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("not valid TOML"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(tmp.path(), "c.toml", "rooot = \"/x\"\n");
        let err = load_from(&file).unwrap_err().to_string();
        assert!(err.contains("rooot"), "{err}");
        let file = write(tmp.path(), "d.toml", "cgroup_driver = \"systemdd\"\n");
        let err = load_from(&file).unwrap_err().to_string();
        assert!(err.contains("systemdd"), "{err}");
        let file = write(tmp.path(), "e.toml", "root = \"relative/dir\"\n");
        let err = load_from(&file).unwrap_err().to_string();
        assert!(err.contains("root must be an absolute path"), "{err}");
        let file = write(tmp.path(), "f.toml", "[runtime]\ndefault_handler = \"kata\"\n");
        let err = load_from(&file).unwrap_err().to_string();
        assert!(err.contains("kata"), "{err}");
        let file = write(tmp.path(), "g.toml", "[runtime]\nallowed_annotations = [\"\"]\n");
        let err = load_from(&file).unwrap_err().to_string();
        assert!(err.contains("allowed_annotations"), "{err}");
        let file = write(tmp.path(), "h.toml", "metrics_address = \"localhost\"\n");
        let err = load_from(&file).unwrap_err().to_string();
        assert!(err.contains("metrics_address must be an IP address"), "{err}");
        let file = write(tmp.path(), "i.toml", "log_format = \"xml\"\n");
        let err = load_from(&file).unwrap_err().to_string();
        assert!(err.contains("xml"), "{err}");
    }

    #[test]
    fn streaming_tls_needs_both_files_and_sessions_a_positive_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(tmp.path(), "a.toml", "[runtime]\nstream_tls_cert = \"/c.pem\"\n");
        let err = load_from(&file).unwrap_err().to_string();
        assert!(err.contains("stream_tls_cert is set but runtime.stream_tls_key is not"), "{err}");
        let file = write(tmp.path(), "b.toml", "[runtime]\nstream_tls_key = \"/k.pem\"\n");
        let err = load_from(&file).unwrap_err().to_string();
        assert!(err.contains("stream_tls_key is set but runtime.stream_tls_cert is not"), "{err}");
        let file =
            write(tmp.path(), "c.toml", "[runtime]\nstream_tls_cert = \"/c.pem\"\nstream_tls_key = \"/k.pem\"\n");
        let both = load_from(&file).unwrap().stream_tls().unwrap();
        assert_eq!((both.cert.as_path(), both.key.as_path()), (Path::new("/c.pem"), Path::new("/k.pem")));
        assert_eq!(Config::default().stream_tls(), None, "no TLS unless configured");
        let file = write(tmp.path(), "d.toml", "[runtime]\nstream_max_sessions = 0\n");
        let err = load_from(&file).unwrap_err().to_string();
        assert!(err.contains("stream_max_sessions must be at least 1"), "{err}");
    }

    #[test]
    fn a_named_config_file_must_exist_but_the_default_may_not() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load_from(&tmp.path().join("missing.toml")).unwrap_err().to_string();
        assert!(err.contains("missing.toml"), "{err}");
        let config =
            Config::load(&Overrides { config_dir: Some(tmp.path().join("no-such-dir")), ..Default::default() });
        // The default file is absent on a test machine; either way, no error for its absence.
        if !Path::new(DEFAULT_CONFIG).exists() {
            assert_eq!(config.unwrap(), Config::default());
        }
    }
}
