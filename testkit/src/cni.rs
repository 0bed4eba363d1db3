//! The CNI side of a test node: the plugins' directory, the bridge network every test daemon
//! uses (the same as ci/setup's default, so they share its host-local store safely), and a
//! wrapper around a real plugin whose faults a test switches on and off.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const CNI_BIN: &str = "/usr/lib/cni";

/// The same network as ci/setup's default.
pub const NETWORK: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "lockstep",
  "plugins": [
    { "type": "bridge", "bridge": "lockstep0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.88.0.0/16" }]], "routes": [{ "dst": "0.0.0.0/0" }] } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}"#;

/// Writes NETWORK into `<dir>/net.d` and returns the [network] table that points lockstepd at
/// it and at `plugin_dirs`.
pub fn network_table(dir: &Path, plugin_dirs: &[PathBuf]) -> std::io::Result<String> {
    std::fs::create_dir_all(dir.join("net.d"))?;
    std::fs::write(dir.join("net.d/10-test.conflist"), NETWORK)?;
    let dirs: Vec<String> = plugin_dirs.iter().map(|d| format!("{:?}", d.display().to_string())).collect();
    Ok(format!(
        "[network]\ncni_config_dir = {:?}\ncni_plugin_dirs = [{}]\n",
        dir.join("net.d").display().to_string(),
        dirs.join(", ")
    ))
}

/// A wrapper around one real CNI plugin whose faults a test switches on and off with files:
/// `add-fails`, `del-fails`, `check-fails` (the plugin answers a CNI error), `add-slow`,
/// `del-slow` (it announces `<command>-started` and sleeps before the real plugin runs),
/// `add-hangs` (it never finishes).
/// It records the sandbox id of the last ADD.
pub struct FaultyPlugin {
    /// Put it first in the daemon's plugin directories.
    pub dir: PathBuf,
    scratch: PathBuf,
}

impl FaultyPlugin {
    pub fn new(scratch: &Path, plugin: &str) -> FaultyPlugin {
        let dir = scratch.join("faulty-plugins");
        std::fs::create_dir_all(&dir).unwrap();
        let s = scratch.display();
        let script = format!(
            r#"#!/bin/sh
fail() {{ echo "{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"$CNI_COMMAND refused for the test\"}}"; exit 1; }}
slow() {{ touch {s}/$1-started; sleep "$2"; }}
case "$CNI_COMMAND" in
ADD) echo "$CNI_CONTAINERID" >{s}/id.tmp && mv {s}/id.tmp {s}/id
     [ -e {s}/add-slow ] && slow add 3
     [ -e {s}/add-hangs ] && exec sleep 600
     [ -e {s}/add-fails ] && fail ;;
DEL) [ -e {s}/del-slow ] && slow del 2
     [ -e {s}/del-fails ] && fail ;;
CHECK) [ -e {s}/check-fails ] && fail ;;
esac
exec {CNI_BIN}/{plugin} "$@"
"#
        );
        let path = dir.join(plugin);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        FaultyPlugin { dir, scratch: scratch.to_path_buf() }
    }

    pub fn set(&self, fault: &str, on: bool) {
        let path = self.scratch.join(fault);
        if on {
            std::fs::write(path, "").unwrap();
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The sandbox id of the last ADD.
    pub fn last_id(&self) -> String {
        std::fs::read_to_string(self.scratch.join("id")).unwrap_or_default().trim().to_string()
    }

    /// Waits until a slow `command` ("add", "del") has started.
    pub async fn wait_started(&self, command: &str) {
        let marker = self.scratch.join(format!("{command}-started"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !marker.exists() {
            assert!(Instant::now() < deadline, "the slow {command} never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = std::fs::remove_file(marker);
    }
}
