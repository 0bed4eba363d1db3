//! Runs one CNI plugin by the CNI spec: the binary found in the plugin directories, the
//! CNI_* variables in its environment, its network configuration on stdin, its result (or its
//! error object) on stdout. The config is written by a thread of its own (a plugin may write
//! before it reads), and a plugin still running at the deadline is killed. An ADD dies with the
//! thread that ran it (PDEATHSIG): recovery DELs what it may have done. A DEL is left to finish
//! when lockstepd dies, and the next DEL of that sandbox waits for it: a DEL cut short cannot
//! always be redone (the bridge plugin finds the pod's addresses, hence its masquerade rules,
//! on the interface that its first DEL already deleted).
#![allow(unsafe_code)]

use std::io::{Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a plugin may run when the configuration says nothing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

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
    #[error("CNI plugin {path} {command} did not finish within {after:?} and was killed")]
    Timeout { path: PathBuf, command: String, after: Duration },
}

/// Where plugins are found, in order, and how long one may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugins {
    pub dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

impl Plugins {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Plugins { dirs, timeout: DEFAULT_TIMEOUT }
    }
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
    pub plugins: &'a Plugins,
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
    let dirs = &invocation.plugins.dirs;
    let path = find_plugin(plugin, dirs)?;
    let cni_path = std::env::join_paths(dirs).unwrap_or_default();
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
    if invocation.command != "DEL" {
        die_with_parent(&mut command);
    }
    let output = run_to_end(command, &path, invocation, config)?;
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

/// The plugin is killed when the thread that runs it ends (lockstepd killed, say).
fn die_with_parent(command: &mut Command) {
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
}

/// Plugin processes (a binary of `dirs`, or a script there run by its interpreter) running a
/// DEL for `container_id`: one that a killed lockstepd left to finish, and its IPAM child.
fn dels_running_for(container_id: &str, dirs: &[PathBuf]) -> Vec<i32> {
    let wanted_id = format!("CNI_CONTAINERID={container_id}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let a_plugin = cmdline
            .split(|b| *b == 0)
            .take(2)
            .any(|arg| dirs.iter().any(|d| Path::new(std::ffi::OsStr::from_bytes(arg)).starts_with(d)));
        if !a_plugin {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if vars.contains(&wanted_id.as_bytes()) && vars.contains(&b"CNI_COMMAND=DEL".as_slice()) {
            found.push(pid);
        }
    }
    found
}

/// Waits until no DEL of `container_id` that an earlier lockstepd started still runs (killed
/// at the plugins' deadline), so that this DEL starts where that one ended.
pub fn wait_for_earlier_del(container_id: &str, plugins: &Plugins) {
    let deadline = Instant::now() + plugins.timeout;
    loop {
        let running = dels_running_for(container_id, &plugins.dirs);
        if running.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for pid in running {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            return;
        }
        tracing::debug!(sandbox = %container_id, pids = ?running, "waiting for the CNI DEL a killed lockstepd started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns the plugin, feeds it `config` from a thread of its own, collects stdout and stderr,
/// and waits for it to exit — killing it at the invocation's deadline.
fn run_to_end(
    mut command: Command,
    path: &Path,
    invocation: &Invocation<'_>,
    config: &serde_json::Value,
) -> Result<std::process::Output, CniExecError> {
    let timeout = invocation.plugins.timeout;
    let deadline = Instant::now() + timeout;
    let spawn_err = |source| CniExecError::Spawn { path: path.to_path_buf(), source };
    let mut child = command.spawn().map_err(spawn_err)?;
    let input = serde_json::to_vec(config).unwrap_or_default();
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin that exits without reading its config fails below with its own message;
        // the write then ends with EPIPE.
        std::thread::spawn(move || pipe.write_all(&input));
    }
    let (sender, received) = mpsc::channel();
    for (stream, pipe) in [
        (0, child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>)),
        (1, child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>)),
    ] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            let _ = sender.send((stream, bytes));
        });
    }
    drop(sender);
    let timed_out = |mut child: std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
        CniExecError::Timeout { path: path.to_path_buf(), command: invocation.command.to_string(), after: timeout }
    };
    // Both streams end when the plugin exits (or at the deadline, if it hangs or a child of
    // it holds them open).
    let mut streams = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((stream, bytes)) => streams[stream] = bytes,
            Err(_) => return Err(timed_out(child)),
        }
    }
    let mut pause = Duration::from_micros(200);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(spawn_err)? {
            break status;
        }
        if Instant::now() >= deadline {
            return Err(timed_out(child));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let [stdout, stderr] = streams;
    Ok(std::process::Output { status, stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::{Duration, Instant};

    /// A plugin directory with one shell script `plugin`.
    fn plugin(script: &str) -> (tempfile::TempDir, Vec<PathBuf>) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("plugin");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dirs = vec![tmp.path().to_path_buf()];
        (tmp, dirs)
    }

    /// Runs the plugin on another thread; None when it has not returned within `limit`.
    fn run_within(
        dirs: Vec<PathBuf>,
        timeout: Duration,
        config: serde_json::Value,
        limit: Duration,
    ) -> Option<Result<Option<serde_json::Value>, CniExecError>> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let plugins = Plugins { dirs, timeout };
            let invocation = Invocation {
                command: "ADD",
                container_id: "c1",
                netns: Path::new("/x"),
                ifname: "eth0",
                args: &[],
                plugins: &plugins,
            };
            let _ = tx.send(run("plugin", &invocation, &config));
        });
        rx.recv_timeout(limit).ok()
    }

    #[test]
    fn a_plugin_that_hangs_is_killed_at_the_deadline() {
        let (tmp, dirs) = plugin(&format!("echo $$ > {}/pid; exec sleep 600", "$(dirname $0)"));
        let started = Instant::now();
        let outcome = run_within(dirs, Duration::from_millis(500), serde_json::json!({}), Duration::from_secs(20))
            .expect("run returns after the deadline");
        let err = outcome.unwrap_err();
        assert!(matches!(err, CniExecError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("plugin") && err.to_string().contains("ADD"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid = std::fs::read_to_string(tmp.path().join("pid")).unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        assert!(stat.is_empty(), "the plugin was killed and reaped: {stat}");
    }

    #[test]
    fn a_plugin_that_writes_much_before_reading_its_config_does_not_deadlock() {
        // 1 MiB out before reading stdin, with a config larger than a pipe's buffer.
        let (_tmp, dirs) =
            plugin("head -c 1048576 /dev/zero | tr '\\0' ' '; cat >/dev/null; echo '{\"cniVersion\":\"1.0.0\"}'");
        let config = serde_json::json!({ "padding": "x".repeat(256 * 1024) });
        let outcome = run_within(dirs, Duration::from_secs(30), config, Duration::from_secs(20))
            .expect("no deadlock between the config on stdin and the output on stdout");
        assert_eq!(outcome.unwrap(), Some(serde_json::json!({"cniVersion": "1.0.0"})));
    }
}
