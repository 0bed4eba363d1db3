//! The OCI runtime trait over a runc-compatible command line (crun, runc): every call runs the
//! binary with `--root <state dir>`, `--log <file> --log-format json` (so a failure carries the
//! runtime's own message, even when its stderr is the container's), and `--systemd-cgroup`
//! with the systemd cgroup driver. Touches the runtime's state dir and its own log dir.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use oci_spec::runtime::{LinuxResources, Process};
use serde::{Deserialize, Serialize};

use super::{CreateOptions, ExecOptions, ExecOutcome, OciError, OciRuntime, OciState};

/// How to run one handler's binary; serializable, because lockstep-monitor runs `create` too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeCommand {
    /// The handler (RuntimeClass) name.
    pub handler: String,
    /// The runtime binary, resolved.
    pub binary: PathBuf,
    /// The runtime's state directory (`--root`), one per handler.
    pub root: PathBuf,
    /// Where the per-call JSON logs go (each removed after its call).
    pub log_dir: PathBuf,
    /// Pass `--systemd-cgroup` (the cgroup driver is systemd).
    pub systemd_cgroup: bool,
    /// On a hybrid cgroup host, the v2 mount hidden from this runtime because it refuses the
    /// layout (crun 1.8): it runs in a pure cgroup v1 view (`spawn::with_cgroup2_hidden`).
    #[serde(default)]
    pub cgroup2_hidden: Option<PathBuf>,
    /// How long one call (start, state, kill, delete, update, run) may take before the runtime
    /// is killed: a stuck runtime must not pin a container's lock for ever.
    #[serde(default = "default_call_timeout")]
    pub call_timeout: Duration,
}

fn default_call_timeout() -> Duration {
    crate::config::DEFAULT_RUNTIME_CALL_TIMEOUT
}

impl RuntimeCommand {
    /// The layout lockstepd uses: `<oci_dir>/<handler>` for state, `<oci_dir>/<handler>.log`
    /// for the per-call logs.
    pub fn under(oci_dir: &Path, handler: &str, binary: &Path, systemd_cgroup: bool) -> Self {
        RuntimeCommand {
            handler: handler.to_string(),
            binary: binary.to_path_buf(),
            root: oci_dir.join(handler),
            log_dir: oci_dir.join(format!("{handler}.log")),
            systemd_cgroup,
            cgroup2_hidden: None,
            call_timeout: default_call_timeout(),
        }
    }

    /// The same, with calls killed after `timeout`.
    pub fn with_call_timeout(self, timeout: Duration) -> Self {
        RuntimeCommand { call_timeout: timeout, ..self }
    }

    /// The same, run with `cgroup2` hidden (None: the host's own view).
    pub fn hiding_cgroup2(self, cgroup2: Option<PathBuf>) -> Self {
        RuntimeCommand { cgroup2_hidden: cgroup2, ..self }
    }

    /// Prepares a command for one of this runtime's processes (the runtime itself, or the
    /// helper that runs it): default signals, and the cgroup view it needs.
    fn prepare(&self, cmd: &mut Command) -> Result<(), OciError> {
        super::spawn::with_default_signals(cmd);
        if let Some(cgroup2) = &self.cgroup2_hidden {
            super::spawn::with_cgroup2_hidden(cmd, cgroup2).map_err(|source| OciError::Io {
                what: "hide the cgroup v2 mount from the runtime at",
                path: cgroup2.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// An OCI runtime driven through its command line.
#[derive(Debug, Clone)]
pub struct CommandRuntime {
    command: RuntimeCommand,
}

/// What one runtime call left behind: its exit status, stdout, stderr and JSON log.
struct CallOutput {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    log: String,
}

static CALLS: AtomicU64 = AtomicU64::new(0);

impl CommandRuntime {
    pub fn new(command: RuntimeCommand) -> Self {
        CommandRuntime { command }
    }

    pub fn command(&self) -> &RuntimeCommand {
        &self.command
    }

    /// Whether the runtime keeps state for `id` (both crun and runc keep `<root>/<id>/`).
    fn knows(&self, id: &str) -> bool {
        self.command.root.join(id).exists()
    }

    /// A fresh log file name for one call.
    fn log_file(&self, op: &str) -> PathBuf {
        let n = CALLS.fetch_add(1, Ordering::Relaxed);
        self.command.log_dir.join(format!("{op}-{}-{n}.json", std::process::id()))
    }

    /// The binary with the global flags, `op` and its arguments.
    fn base(&self, log: &Path, op: &str) -> Result<Command, OciError> {
        std::fs::create_dir_all(&self.command.log_dir).map_err(|source| OciError::Io {
            what: "create directory",
            path: self.command.log_dir.clone(),
            source,
        })?;
        let mut cmd = Command::new(&self.command.binary);
        self.command.prepare(&mut cmd)?;
        cmd.arg("--root").arg(&self.command.root).arg("--log").arg(log).arg("--log-format").arg("json");
        if self.command.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd.arg(op);
        Ok(cmd)
    }

    fn spawn(&self, cmd: &mut Command) -> Result<Child, OciError> {
        cmd.spawn().map_err(|source| OciError::Spawn { binary: self.command.binary.clone(), source })
    }

    /// Runs `op` with `args`, stdin closed and stdout/stderr captured, in a process group of its
    /// own: past the call timeout the whole group is killed and reaped, and the call is TimedOut.
    fn call(&self, op: &'static str, id: &str, args: &[OsString]) -> Result<CallOutput, OciError> {
        use std::os::unix::process::CommandExt as _;
        let log = self.log_file(op);
        let mut cmd = self.base(&log, op)?;
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = self.spawn(&mut cmd)?;
        let (read_tx, readers_done) = mpsc::channel();
        let stdout = child.stdout.take().map(|s| CappedOutput::collect(s, CALL_OUTPUT_CAP, read_tx.clone()));
        let stderr = child.stderr.take().map(|s| CappedOutput::collect(s, CALL_OUTPUT_CAP, read_tx));
        let group = child.id() as i32;
        let (done_tx, done) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = done_tx.send(());
            status
        });
        let timeout = self.command.call_timeout;
        let timed_out = done.recv_timeout(timeout).is_err();
        if timed_out {
            // The runtime leads its own group (process_group(0)): it and whatever it started.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), nix::sys::signal::Signal::SIGKILL);
        }
        let status = waiter.join().map_err(|_| OciError::Parse {
            handler: self.command.handler.clone(),
            op,
            id: id.into(),
            message: "the waiting thread panicked".into(),
        })?;
        let log_text = take_log(&log);
        if timed_out {
            return Err(OciError::TimedOut {
                handler: self.command.handler.clone(),
                op,
                id: id.into(),
                after: timeout,
            });
        }
        let status = status.map_err(|source| OciError::Spawn { binary: self.command.binary.clone(), source })?;
        // Both streams to their end, unless a process the runtime left holds them open.
        let deadline = std::time::Instant::now() + EXEC_OUTPUT_DRAIN;
        for _ in stdout.iter().chain(stderr.iter()) {
            if readers_done.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).is_err() {
                break;
            }
        }
        let stdout = stdout.map(|o| o.take().0).unwrap_or_default();
        let stderr = stderr.map(|o| o.take().0).unwrap_or_default();
        Ok(CallOutput { status, stdout, stderr, log: log_text })
    }

    /// `call` that must succeed.
    fn call_ok(&self, op: &'static str, id: &str, args: &[OsString]) -> Result<CallOutput, OciError> {
        let out = self.call(op, id, args)?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(self.failed(op, id, &out.log, &out.stderr, out.status))
        }
    }

    fn failed(&self, op: &'static str, id: &str, log: &str, stderr: &[u8], status: ExitStatus) -> OciError {
        let message = runtime_message(log, stderr).unwrap_or_else(|| format!("exited with {status}"));
        let handler = self.command.handler.clone();
        let id = id.to_string();
        if matches!(op, "kill" | "state" | "delete" | "start" | "update" | "exec") && !self.knows(&id) {
            return OciError::NotFound { handler, id };
        }
        if op == "kill" && (message.contains("not running") || message.contains("No such process")) {
            return OciError::NotRunning { handler, id };
        }
        OciError::Failed { handler, op, id, message }
    }

    /// An exec's process spec as the runtime reads it (`--process`).
    fn encode_process(&self, id: &str, process: &Process) -> Result<Vec<u8>, OciError> {
        serde_json::to_vec(process).map_err(|e| OciError::Parse {
            handler: self.command.handler.clone(),
            op: "exec",
            id: id.into(),
            message: format!("cannot encode the process: {e}"),
        })
    }

    /// `<runtime> run --bundle B id` in the foreground: the container's exit code (the probe).
    pub fn run(&self, id: &str, bundle: &Path) -> Result<i32, OciError> {
        let args = [OsString::from("--bundle"), bundle.into(), id.into()];
        let out = self.call("run", id, &args)?;
        match out.status.code() {
            Some(0) => Ok(0),
            // A runtime that fails to set the container up says why in its log.
            _ => match runtime_message(&out.log, &[]) {
                Some(message) => {
                    Err(OciError::Failed { handler: self.command.handler.clone(), op: "run", id: id.into(), message })
                }
                None => Ok(exit_code(out.status)),
            },
        }
    }

    /// Runs `cmd` (a create or a restore) with the container's stdio from `options`, to its end.
    fn run_with_stdio(
        &self,
        op: &'static str,
        id: &str,
        mut cmd: Command,
        log: &Path,
        options: CreateOptions<'_>,
    ) -> Result<(), OciError> {
        cmd.stdin(options.stdin).stdout(options.stdout).stderr(options.stderr);
        let mut child = self.spawn(&mut cmd)?;
        // The runtime's stdio belongs to the container: drop our copies of the pipe ends now.
        drop(cmd);
        let status = child.wait();
        let log_text = take_log(log);
        let status = status.map_err(|source| OciError::Spawn { binary: self.command.binary.clone(), source })?;
        if status.success() {
            Ok(())
        } else {
            let message = runtime_message(&log_text, &[]).unwrap_or_else(|| format!("exited with {status}"));
            Err(OciError::Failed { handler: self.command.handler.clone(), op, id: id.into(), message })
        }
    }
}

impl OciRuntime for CommandRuntime {
    fn handler(&self) -> &str {
        &self.command.handler
    }

    fn create(&self, id: &str, bundle: &Path, options: CreateOptions<'_>) -> Result<(), OciError> {
        let log = self.log_file("create");
        let mut cmd = self.base(&log, "create")?;
        cmd.arg("--bundle").arg(bundle).arg("--pid-file").arg(options.pid_file);
        if let Some(socket) = options.console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(id);
        self.run_with_stdio("create", id, cmd, &log, options)
    }

    fn start(&self, id: &str) -> Result<(), OciError> {
        self.call_ok("start", id, &[id.into()]).map(drop)
    }

    fn state(&self, id: &str) -> Result<Option<OciState>, OciError> {
        if !self.knows(id) {
            return Ok(None);
        }
        let out = match self.call_ok("state", id, &[id.into()]) {
            Ok(out) => out,
            Err(OciError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&out.stdout).map(Some).map_err(|e| OciError::Parse {
            handler: self.command.handler.clone(),
            op: "state",
            id: id.into(),
            message: e.to_string(),
        })
    }

    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError> {
        if !self.knows(id) {
            return Err(OciError::NotFound { handler: self.command.handler.clone(), id: id.into() });
        }
        let mut args: Vec<OsString> = Vec::new();
        if all {
            args.push("--all".into());
        }
        args.push(id.into());
        args.push(signal.to_string().into());
        self.call_ok("kill", id, &args).map(drop)
    }

    fn delete(&self, id: &str) -> Result<(), OciError> {
        if !self.knows(id) {
            return Ok(());
        }
        match self.call_ok("delete", id, &[id.into()]) {
            Ok(_) | Err(OciError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn exec(&self, id: &str, process: &Process, options: ExecOptions) -> Result<ExecOutcome, OciError> {
        let log = self.log_file("exec");
        let process_file = log.with_extension("process.json");
        let pid_file = log.with_extension("pid");
        let json = self.encode_process(id, process)?;
        let result = (|| {
            // The process carries the container's whole environment: the owner's alone.
            write_private(&process_file, &json).map_err(|source| OciError::Io {
                what: "write",
                path: process_file.clone(),
                source,
            })?;
            let mut cmd = self.base(&log, "exec")?;
            cmd.arg("--process").arg(&process_file).arg("--pid-file").arg(&pid_file);
            if let Some(reaper) = &options.reaper {
                cmd.arg("--detach").arg(id);
                let mut through = Command::new(reaper);
                // Joined first: the view hides the very mount the cgroup is reached through.
                if let Some(cgroup) = &options.reaper_cgroup {
                    super::spawn::joining_cgroup(&mut through, cgroup).map_err(|source| OciError::Io {
                        what: "join",
                        path: cgroup.clone(),
                        source,
                    })?;
                }
                self.command.prepare(&mut through)?;
                through.arg("exec").arg(cmd.get_program()).args(cmd.get_args());
                cmd = through;
            } else {
                cmd.arg(id);
            }
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let child = self.spawn(&mut cmd)?;
            self.wait_exec(id, child, &pid_file, options)
        })();
        let log_text = take_log(&log);
        let _ = std::fs::remove_file(&process_file);
        let _ = std::fs::remove_file(&pid_file);
        match result {
            Err(e) => Err(e),
            // runc and crun exit 255 (crun) or 1 (runc) with a log message when they could not
            // run the process at all (no such container, not running, bad binary).
            Ok(outcome) if !outcome.timed_out && has_error(&log_text) => {
                let status_text = format!("exited with {}", outcome.exit_code);
                let message = runtime_message(&log_text, &outcome.stderr).unwrap_or(status_text);
                if !self.knows(id) {
                    return Err(OciError::NotFound { handler: self.command.handler.clone(), id: id.into() });
                }
                Err(OciError::Failed { handler: self.command.handler.clone(), op: "exec", id: id.into(), message })
            }
            Ok(outcome) => Ok(outcome),
        }
    }

    fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), OciError> {
        let file = self.log_file("update").with_extension("resources.json");
        let json = serde_json::to_vec(resources).map_err(|e| OciError::Parse {
            handler: self.command.handler.clone(),
            op: "update",
            id: id.into(),
            message: format!("cannot encode the resources: {e}"),
        })?;
        std::fs::write(&file, json).map_err(|source| OciError::Io { what: "write", path: file.clone(), source })?;
        let result = self.call_ok("update", id, &["--resources".into(), file.clone().into(), id.into()]);
        let _ = std::fs::remove_file(&file);
        result.map(drop)
    }

    fn checkpoint_support(&self) -> Result<(), String> {
        let version = Command::new(&self.command.binary)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {} --version: {e}", self.command.binary.display()))?;
        // crun lists its build features, "+CRIU" among them when it has the support (Debian
        // 12's 1.8.1 has not: it knows no `checkpoint` command); runc always has it.
        let version = String::from_utf8_lossy(&version.stdout);
        if version.contains("crun version") && !version.contains("+CRIU") {
            return Err(format!("{} was built without CRIU support", self.command.binary.display()));
        }
        crate::helpers::find_helper_in("criu", None, std::env::var_os("PATH").as_deref())
            .map(drop)
            .map_err(|_| "criu is not installed (not found on the PATH)".to_string())
    }

    fn checkpoint(&self, id: &str, images: &Path, work: &Path, timeout: Duration) -> Result<(), OciError> {
        let args: [OsString; 6] = [
            "--image-path".into(),
            images.into(),
            "--work-path".into(),
            work.into(),
            "--leave-running".into(),
            id.into(),
        ];
        let patient = CommandRuntime::new(self.command.clone().with_call_timeout(timeout));
        patient.call_ok("checkpoint", id, &args).map(drop)
    }

    fn restore(
        &self,
        id: &str,
        bundle: &Path,
        images: &Path,
        work: &Path,
        options: CreateOptions<'_>,
    ) -> Result<(), OciError> {
        let log = self.log_file("restore");
        let mut cmd = self.base(&log, "restore")?;
        cmd.arg("--detach")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(options.pid_file)
            .arg("--image-path")
            .arg(images)
            .arg("--work-path")
            .arg(work)
            .arg(id);
        self.run_with_stdio("restore", id, cmd, &log, options)
    }
}

/// An interactive exec, ready to spawn: the reaper (`lockstep-monitor exec`) running the
/// runtime's `exec --detach`, so that the reaper exits with the process's status; the
/// process's stdio is the command's (or the terminal sent to `console_socket`). The files it
/// uses go when this is dropped.
pub struct PreparedExec {
    /// Taken once (`take_command`) and spawned with the stdio the process should have.
    command: Command,
    /// Where the runtime writes the process's pid (to kill it when the client goes).
    pub pid_file: PathBuf,
    log_file: PathBuf,
    process_file: PathBuf,
}

impl PreparedExec {
    /// The command to spawn; a second call gets a command that runs nothing useful.
    pub fn take_command(&mut self) -> Command {
        std::mem::replace(&mut self.command, Command::new("/nonexistent/taken"))
    }

    /// The process's pid, once the runtime has written it.
    pub fn pid(&self) -> Option<i32> {
        read_pid(&self.pid_file)
    }

    /// The runtime's own message when it could not run the process (its JSON log holds an
    /// error); None when it ran it.
    pub fn runtime_failure(&self) -> Option<String> {
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        has_error(&log).then(|| runtime_message(&log, &[])).flatten()
    }
}

impl Drop for PreparedExec {
    fn drop(&mut self) {
        for file in [&self.log_file, &self.process_file, &self.pid_file] {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl CommandRuntime {
    /// Prepares `process` to run in container `id` interactively, under `reaper` (joined to
    /// `reaper_cgroup` first, as `exec` does), its terminal sent to `console_socket`.
    pub fn prepare_exec(
        &self,
        id: &str,
        process: &Process,
        console_socket: Option<&Path>,
        reaper: &Path,
        reaper_cgroup: Option<&Path>,
    ) -> Result<PreparedExec, OciError> {
        let log_file = self.log_file("exec");
        let prepared = PreparedExec {
            command: Command::new(reaper),
            pid_file: log_file.with_extension("pid"),
            process_file: log_file.with_extension("process.json"),
            log_file,
        };
        let json = self.encode_process(id, process)?;
        let mut prepared = prepared;
        // The process carries the container's whole environment: the owner's alone.
        write_private(&prepared.process_file, &json).map_err(|source| OciError::Io {
            what: "write",
            path: prepared.process_file.clone(),
            source,
        })?;
        let mut cmd = self.base(&prepared.log_file, "exec")?;
        cmd.arg("--process").arg(&prepared.process_file).arg("--pid-file").arg(&prepared.pid_file).arg("--detach");
        if let Some(socket) = console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(id);
        let through = &mut prepared.command;
        if let Some(cgroup) = reaper_cgroup {
            super::spawn::joining_cgroup(through, cgroup).map_err(|source| OciError::Io {
                what: "join",
                path: cgroup.to_path_buf(),
                source,
            })?;
        }
        self.command.prepare(through)?;
        through.arg("exec").arg(cmd.get_program()).args(cmd.get_args());
        Ok(prepared)
    }
}

impl CommandRuntime {
    /// Waits for an exec'd runtime, collecting its output; at the timeout kills the process it
    /// runs (its pid is in `pid_file`), so that the runtime reaps it and exits, and reaps the
    /// runtime itself: nothing is left for PID 1 to collect.
    fn wait_exec(
        &self,
        id: &str,
        mut child: Child,
        pid_file: &Path,
        options: ExecOptions,
    ) -> Result<ExecOutcome, OciError> {
        let cap = options.output_cap;
        let (read_tx, readers_done) = mpsc::channel();
        let stdout = child.stdout.take().map(|s| CappedOutput::collect(s, cap, read_tx.clone()));
        let stderr = child.stderr.take().map(|s| CappedOutput::collect(s, cap, read_tx.clone()));
        drop(read_tx);
        let runtime_pid = child.id();
        let (done_tx, done) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = done_tx.send(());
            status
        });
        let mut timed_out = false;
        let finished = match options.timeout {
            None => done.recv().is_ok(),
            Some(timeout) => done.recv_timeout(timeout).is_ok(),
        };
        if !finished {
            timed_out = true;
            // The process inside the container; the runtime waits for it and then exits.
            match read_pid(pid_file) {
                Some(pid) => signal(pid, libc::SIGKILL),
                None => signal(runtime_pid as i32, libc::SIGKILL),
            }
            if done.recv_timeout(Duration::from_secs(10)).is_err() {
                tracing::warn!(container = id, "exec: the runtime did not exit after its process was killed");
                signal(runtime_pid as i32, libc::SIGKILL);
            }
        }
        let status = waiter
            .join()
            .map_err(|_| OciError::Parse {
                handler: self.command.handler.clone(),
                op: "exec",
                id: id.into(),
                message: "the waiting thread panicked".into(),
            })?
            .map_err(|source| OciError::Spawn { binary: self.command.binary.clone(), source })?;
        // A process the command left in the background may hold the pipes open for ever: what
        // was written until then is the answer, not a wait without end.
        let deadline = std::time::Instant::now() + EXEC_OUTPUT_DRAIN;
        for _ in stdout.iter().chain(stderr.iter()) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if readers_done.recv_timeout(left).is_err() {
                tracing::debug!(
                    container = id,
                    "exec: a process still holds the output pipes; answering with what was read"
                );
                break;
            }
        }
        let (stdout, out_cut) = stdout.map(|o| o.take()).unwrap_or_default();
        let (stderr, err_cut) = stderr.map(|o| o.take()).unwrap_or_default();
        Ok(ExecOutcome { exit_code: exit_code(status), stdout, stderr, timed_out, truncated: out_cut || err_cut })
    }
}

/// The most of a call's stdout or stderr kept (`state` prints a few hundred bytes).
const CALL_OUTPUT_CAP: usize = 1 << 20;

/// How long the output of an exec'd command is still read after its runtime exited (a process
/// it left in the background may keep the pipes open).
const EXEC_OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// One output stream of an exec, read on a thread of its own into a buffer that can be taken at
/// any time: at most `cap` bytes kept, and whether some were dropped.
struct CappedOutput(std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>);

impl CappedOutput {
    fn collect(mut reader: impl Read + Send + 'static, cap: usize, done: mpsc::Sender<()>) -> CappedOutput {
        let shared = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), false)));
        let buffer = shared.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut kept = buffer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        let room = cap.saturating_sub(kept.0.len());
                        kept.0.extend_from_slice(&buf[..n.min(room)]);
                        kept.1 |= n > room;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        });
        CappedOutput(shared)
    }

    fn take(self) -> (Vec<u8>, bool) {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// Writes `bytes` to `path`, a file only its owner may read (0600, whatever the umask).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::File::options().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|pid| *pid > 0)
}

fn signal(pid: i32, sig: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::try_from(sig).unwrap_or(nix::sys::signal::Signal::SIGKILL),
    );
}

/// 0–255 for an exit, 128 + n for death by signal n (as shells and kubelets read it).
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(255)
}

/// Removes the per-call files (`<op>-<pid>-<n>.json`, `.process.json`, `.pid`) that a killed
/// lockstepd left in each handler's log directory under `oci_dir`: every call removes its own
/// when it ends, so a file of another pid is one whose daemon died mid-call. Called at start,
/// with the root locked (no other daemon writes there). Returns how many went.
pub fn sweep_call_files(oci_dir: &Path) -> usize {
    let me = std::process::id().to_string();
    let mut removed = 0;
    let log_dirs = std::fs::read_dir(oci_dir).into_iter().flatten().flatten();
    for dir in log_dirs.filter(|d| d.file_name().to_string_lossy().ends_with(".log")) {
        for file in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or_default();
            let mut parts = stem.rsplitn(3, '-');
            let (Some(n), Some(pid), Some(_op)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let ours = n.parse::<u64>().is_ok() && pid.parse::<u32>().is_ok();
            if ours && pid != me && std::fs::remove_file(file.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Reads and removes a call's log file.
fn take_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let _ = std::fs::remove_file(path);
    text
}

fn has_error(log: &str) -> bool {
    log_errors(log).next().is_some()
}

/// The error messages of a runtime's JSON log, oldest first.
fn log_errors(log: &str) -> impl Iterator<Item = String> + '_ {
    log.lines().filter_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        let level = entry.get("level")?.as_str()?;
        matches!(level, "error" | "fatal" | "panic").then(|| entry.get("msg")?.as_str().map(str::to_string)).flatten()
    })
}

/// The runtime's own explanation: the last error of its JSON log, else its stderr.
pub(crate) fn runtime_message(log: &str, stderr: &[u8]) -> Option<String> {
    if let Some(last) = log_errors(log).last() {
        return Some(last);
    }
    let text = String::from_utf8_lossy(stderr).trim().to_string();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_of_the_json_log_is_the_message() {
        let log = concat!(
            "{\"level\":\"warning\",\"msg\":\"ignored\",\"time\":\"t\"}\n",
            "{\"level\":\"error\",\"msg\":\"first\",\"time\":\"t\"}\n",
            "not json at all\n",
            "{\"msg\":\"cgroups in hybrid mode not supported\",\"level\":\"error\",\"time\":\"t\"}\n",
        );
        assert_eq!(runtime_message(log, b"stderr text").unwrap(), "cgroups in hybrid mode not supported");
        assert_eq!(runtime_message("", b"  from stderr \n").unwrap(), "from stderr");
        assert_eq!(runtime_message("", b""), None);
    }

    #[test]
    fn output_beyond_the_cap_is_read_and_dropped() {
        let read = |len: usize| {
            let (done_tx, done) = mpsc::channel();
            let output = CappedOutput::collect(std::io::Cursor::new(vec![7u8; len]), 1000, done_tx);
            done.recv_timeout(Duration::from_secs(10)).unwrap();
            output.take()
        };
        let (kept, cut) = read(20_000);
        assert_eq!((kept.len(), cut), (1000, true));
        let (kept, cut) = read(100);
        assert_eq!((kept.len(), cut), (100, false));
    }

    #[test]
    fn a_restart_removes_the_call_files_of_the_daemon_killed_mid_call_and_keeps_others() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("crun.log");
        std::fs::create_dir_all(&logs).unwrap();
        let me = std::process::id();
        let left = ["start-1-54.json", "exec-1-7.process.json", "exec-1-7.pid"];
        let kept = [format!("kill-{me}-3.json"), "notes.txt".to_string()];
        for name in left.iter().map(|s| s.to_string()).chain(kept.clone()) {
            std::fs::write(logs.join(name), "x").unwrap();
        }
        std::fs::create_dir_all(tmp.path().join("crun/c1")).unwrap();
        assert_eq!(sweep_call_files(tmp.path()), 3);
        let mut remaining: Vec<String> =
            std::fs::read_dir(&logs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        remaining.sort();
        let mut expected = kept.to_vec();
        expected.sort();
        assert_eq!(remaining, expected);
        assert!(tmp.path().join("crun/c1").exists(), "the runtime's own state is not touched");
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let rt =
            CommandRuntime::new(RuntimeCommand::under(tmp.path(), "ghost", Path::new("/nonexistent/ghost"), false));
        std::fs::create_dir_all(tmp.path().join("ghost/c1")).unwrap();
        let err = rt.start("c1").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ghost"), "{err}");
    }

    /// Whether `pid` has exited (gone, or a zombie waiting for its parent), waiting a while for
    /// a SIGKILL to land.
    fn ends(pid: i32) -> bool {
        for _ in 0..500 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat) if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) => return true,
                Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        false
    }

    #[test]
    fn a_runtime_that_hangs_is_killed_with_what_it_started_and_the_call_times_out() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let pids = tmp.path().join("pids");
        let script = tmp.path().join("hanging-runtime");
        // `state` hangs in a child of its own (as a runtime waiting on a stuck cgroup write might);
        // every other call answers at once.
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncase \" $* \" in *\" state \"*) sleep 1000 & echo \"$$ $!\" > {}; wait ;; esac\nexit 0\n",
                pids.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let command =
            RuntimeCommand::under(tmp.path(), "hang", &script, false).with_call_timeout(Duration::from_millis(300));
        let rt = CommandRuntime::new(command);
        std::fs::create_dir_all(tmp.path().join("hang/c1")).unwrap();

        let err = rt.state("c1").unwrap_err();
        assert!(matches!(err, OciError::TimedOut { op: "state", .. }), "{err}");
        assert!(err.to_string().contains("no answer within"), "{err}");
        let text = std::fs::read_to_string(&pids).unwrap();
        let (runtime, child) = text.trim().split_once(' ').unwrap();
        assert!(ends(runtime.parse().unwrap()), "the runtime was killed and reaped");
        assert!(ends(child.parse().unwrap()), "what it started went with it");
        rt.start("c1").expect("a call that answers is unaffected");
    }
}
