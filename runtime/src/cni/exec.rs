//! Runs one CNI plugin by the CNI spec: the binary found in the plugin directories, the
//! CNI_* variables in its environment, its network configuration on stdin, its result (or its
//! error object) on stdout. The plugin dies with the thread that ran it (PDEATHSIG), so a killed
//! lockstepd leaves no plugin half-way; recovery DELs what it may have done.
#![allow(unsafe_code)]

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum CniExecError {
    #[error("CNI plugin {plugin:?} is in none of {dirs}")]
    NotFound { plugin: String, dirs: String },
    #[error("cannot run CNI plugin {path}: {source}")]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}{details}")]
    Plugin { plugin: String, command: String, code: i64, msg: String, details: String },
    #[error("CNI plugin {plugin} {command} printed no valid result: {output}")]
    BadOutput { plugin: String, command: String, output: String },
}

/// The CNI_* environment of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    /// The network namespace path; empty on a DEL whose namespace is gone.
    pub netns: &'a Path,
    pub ifname: &'a str,
    /// CNI_ARGS pairs.
    pub args: &'a [(String, String)],
    pub plugin_dirs: &'a [PathBuf],
}

/// Finds the plugin binary `plugin` in `dirs`, in order.
pub fn find_plugin(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniExecError> {
    if !plugin.is_empty() && !plugin.contains('/') {
        if let Some(path) = dirs.iter().map(|d| d.join(plugin)).find(|p| p.is_file()) {
            return Ok(path);
        }
    }
    let dirs = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    Err(CniExecError::NotFound { plugin: plugin.to_string(), dirs })
}

/// Runs `plugin` with `config` on stdin. ADD returns the plugin's result; DEL and CHECK
/// return None (their stdout is empty on success).
pub fn run(
    plugin: &str,
    invocation: &Invocation<'_>,
    config: &serde_json::Value,
) -> Result<Option<serde_json::Value>, CniExecError> {
    let path = find_plugin(plugin, invocation.plugin_dirs)?;
    let cni_path = std::env::join_paths(invocation.plugin_dirs).unwrap_or_default();
    let args: Vec<String> = invocation.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut command = Command::new(&path);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
        .env("CNI_COMMAND", invocation.command)
        .env("CNI_CONTAINERID", invocation.container_id)
        .env("CNI_NETNS", invocation.netns)
        .env("CNI_IFNAME", invocation.ifname)
        .env("CNI_ARGS", args.join(";"))
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent;
    // it is all that runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawn_err = |source| CniExecError::Spawn { path: path.clone(), source };
    let mut child = command.spawn().map_err(spawn_err)?;
    let stdin = serde_json::to_vec(config).unwrap_or_default();
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin that exits without reading its config fails below with its own message.
        let _ = pipe.write_all(&stdin);
    }
    let output = child.wait_with_output().map_err(spawn_err)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let command_name = invocation.command.to_string();
    if !output.status.success() {
        let error: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let msg = error
            .get("msg")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("{} {}", output.status, stderr.trim()));
        let details = error.get("details").and_then(|d| d.as_str()).map(|d| format!(" ({d})")).unwrap_or_default();
        return Err(CniExecError::Plugin {
            plugin: plugin.to_string(),
            command: command_name,
            code: error.get("code").and_then(|c| c.as_i64()).unwrap_or(-1),
            msg,
            details,
        });
    }
    if invocation.command != "ADD" {
        return Ok(None);
    }
    serde_json::from_str(&stdout).map(Some).map_err(|_| CniExecError::BadOutput {
        plugin: plugin.to_string(),
        command: command_name,
        output: stdout.chars().take(300).collect(),
    })
}
