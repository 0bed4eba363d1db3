//! Finds the CNI network configuration: the first file by name in the config directory with
//! the extension .conflist, .conf or .json that parses as a network configuration, and checks
//! that every plugin it names is in one of the plugin directories. Reads files only.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A CNI network configuration list (a single .conf is read as a list of one plugin).
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub file: PathBuf,
    pub name: String,
    pub cni_version: String,
    /// Each plugin's configuration, in order, as JSON.
    pub plugins: Vec<serde_json::Value>,
    /// The list's other top-level keys (`disableCheck`, `disableGC`, …), kept as written.
    pub list_keys: serde_json::Map<String, serde_json::Value>,
}

impl NetworkConfig {
    /// The plugin types, in order: the binaries CNI runs.
    pub fn plugin_types(&self) -> Vec<&str> {
        self.plugins.iter().filter_map(|p| p.get("type").and_then(|t| t.as_str())).collect()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CniConfigError {
    #[error("no CNI network configuration in {0}")]
    Missing(PathBuf),
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("CNI plugin {plugin:?} named by {file} is in none of {dirs}")]
    PluginMissing { plugin: String, file: PathBuf, dirs: String },
}

#[derive(Deserialize)]
struct RawList {
    name: Option<String>,
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    plugins: Option<Vec<serde_json::Value>>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    disabled: bool,
}

/// The network configuration to use, and the reason when there is none that works.
pub fn find(config_dir: &Path, plugin_dirs: &[PathBuf]) -> Result<NetworkConfig, CniConfigError> {
    let entries = std::fs::read_dir(config_dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CniConfigError::Missing(config_dir.to_path_buf())
        } else {
            CniConfigError::Read { path: config_dir.to_path_buf(), message: e.to_string() }
        }
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conflist" || x == "conf" || x == "json"))
        .collect();
    files.sort();
    for file in files {
        // A file that does not parse is skipped, as the CNI libraries do; the next one may.
        if let Some(config) = parse(&file) {
            for plugin in config.plugin_types() {
                if !plugin_dirs.iter().any(|d| d.join(plugin).is_file()) {
                    let dirs = plugin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
                    return Err(CniConfigError::PluginMissing { plugin: plugin.to_string(), file, dirs });
                }
            }
            return Ok(config);
        }
    }
    Err(CniConfigError::Missing(config_dir.to_path_buf()))
}

fn parse(file: &Path) -> Option<NetworkConfig> {
    let text = std::fs::read_to_string(file).ok()?;
    let raw: RawList = serde_json::from_str(&text).ok()?;
    let name = raw.name.filter(|n| !n.is_empty())?;
    if raw.disabled {
        return None;
    }
    let (plugins, list_keys) = match (raw.plugins, raw.kind) {
        (Some(plugins), _) if !plugins.is_empty() => {
            let mut keys: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).ok()?;
            for known in ["name", "cniVersion", "plugins"] {
                keys.remove(known);
            }
            (plugins, keys)
        }
        (None, Some(_)) => (vec![serde_json::from_str(&text).ok()?], serde_json::Map::new()),
        _ => return None,
    };
    if plugins.iter().any(|p| p.get("type").and_then(|t| t.as_str()).is_none_or(str::is_empty)) {
        return None;
    }
    Some(NetworkConfig { file: file.to_path_buf(), name, cni_version: raw.cni_version, plugins, list_keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("net.d");
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        for plugin in ["bridge", "loopback"] {
            std::fs::write(bin.join(plugin), "").unwrap();
        }
        (tmp, conf, bin)
    }

    #[test]
    fn picks_the_first_valid_file_by_name() {
        let (_tmp, conf, bin) = setup();
        std::fs::write(conf.join("05-broken.conflist"), "{ not json").unwrap();
        std::fs::write(
            conf.join("10-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bridge"},{"type":"loopback"}]}"#,
        )
        .unwrap();
        std::fs::write(conf.join("20-other.conf"), r#"{"cniVersion":"0.4.0","name":"other","type":"bridge"}"#).unwrap();
        std::fs::write(conf.join("00-readme.txt"), "ignored").unwrap();
        let found = find(&conf, &[bin]).unwrap();
        assert_eq!(found.name, "pods");
        assert_eq!(found.plugin_types(), vec!["bridge", "loopback"]);
    }

    #[test]
    fn a_list_s_own_keys_are_kept() {
        let (_tmp, conf, bin) = setup();
        std::fs::write(
            conf.join("10.conflist"),
            r#"{"cniVersion":"1.1.0","name":"p","disableCheck":true,"disableGC":true,"plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        let found = find(&conf, &[bin]).unwrap();
        assert_eq!(found.list_keys.get("disableCheck"), Some(&serde_json::json!(true)));
        assert_eq!(found.list_keys.get("disableGC"), Some(&serde_json::json!(true)));
        assert!(!found.list_keys.contains_key("plugins") && !found.list_keys.contains_key("name"));
    }

    #[test]
    fn a_single_plugin_conf_is_a_list_of_one() {
        let (_tmp, conf, bin) = setup();
        std::fs::write(conf.join("10.conf"), r#"{"cniVersion":"0.4.0","name":"one","type":"bridge"}"#).unwrap();
        assert_eq!(find(&conf, &[bin]).unwrap().plugin_types(), vec!["bridge"]);
    }

    #[test]
    fn says_why_there_is_no_network() {
        let (tmp, conf, bin) = setup();
        assert_eq!(find(&conf, std::slice::from_ref(&bin)).unwrap_err(), CniConfigError::Missing(conf.clone()));
        let absent = tmp.path().join("absent");
        assert_eq!(find(&absent, std::slice::from_ref(&bin)).unwrap_err(), CniConfigError::Missing(absent.clone()));
        std::fs::write(conf.join("10.conflist"), r#"{"name":"p","plugins":[{"type":"portmap"}]}"#).unwrap();
        let err = find(&conf, &[bin]).unwrap_err().to_string();
        assert!(err.contains("portmap"), "{err}");
    }
}
