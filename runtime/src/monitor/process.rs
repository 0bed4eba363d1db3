//! The body of `lockstep-monitor <container dir>`: detach from lockstepd (fork, setsid),
//! become a child subreaper, run the OCI runtime's `create` with the container's stdio (pipes,
//! or a terminal through the console socket), report the init pid (or the runtime's message)
//! on stdout, then copy the output into the CRI log, answer the control socket, reap the init
//! (and any orphan) and write the exit record. Plain threads, no async runtime.
//! Touches the container's directory, its log file and the processes it parents.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::attach::Attachers;
use super::control;
use super::files::{self, ContainerDir, ExitRecord, MonitorConfig, MonitorIdentity, Report};
use super::log::{CriLog, LineSplitter, Stream};
use super::oom::OomWatch;
use super::sys;
use crate::oci::{CommandRuntime, CreateOptions, OciError, OciRuntime};

/// How long the output may keep flowing after the init exited (processes outside the
/// container's pid namespace can hold the pipes open); then the exit is recorded anyway.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// lockstep-monitor's main. The process that lockstepd started exits at once (after the
/// fork); the detached child carries on and exits when the container has.
pub fn main(dir: &Path) -> ExitCode {
    let dir = match std::path::absolute(dir) {
        Ok(dir) => ContainerDir::new(dir),
        Err(e) => return fail(&format!("cannot resolve {}: {e}", dir.display())),
    };
    let config = match dir.read_config() {
        Ok(config) => config,
        Err(e) => return fail(&format!("cannot read the monitor's instructions: {e}")),
    };
    match sys::fork_away() {
        Ok(false) => return ExitCode::SUCCESS,
        Ok(true) => {}
        Err(e) => return fail(&format!("cannot fork: {e}")),
    }
    let _ = nix::unistd::setsid();
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return fail(&format!("cannot become a child subreaper: {e}"));
    }
    let me = std::process::id() as i32;
    report(&Report::Monitor { pid: me });
    let identity = MonitorIdentity { pid: me, start_ticks: files::start_ticks(me).unwrap_or(0) };
    if let Err(e) = files::write_json(&dir.monitor(), &identity) {
        return fail(&e.to_string());
    }
    if let Err(e) = std::env::set_current_dir(dir.path()) {
        return fail(&format!("cannot enter {}: {e}", dir.path().display()));
    }
    match Monitor::create(&dir, &config) {
        Ok(monitor) => monitor.run(),
        Err(message) => {
            let _ = std::fs::remove_file(ContainerDir::CONTROL);
            fail(&message)
        }
    }
}

/// Moves the monitor into its own cgroups (one per hierarchy); a failure leaves it where it is.
fn move_into(cgroups: &[std::path::PathBuf]) {
    for cgroup in cgroups {
        if let Err(e) = crate::host::cgroups::join(cgroup) {
            eprintln!(
                "lockstep-monitor: cannot move into {}: {e}; staying in lockstepd's cgroup there",
                cgroup.display()
            );
        }
    }
}

/// The monitor's cgroups inside (`inside` true) or outside the hierarchy hidden from its
/// runtime (`RuntimeCommand::cgroup2_hidden`); without a hidden one, all are outside.
fn hidden_hierarchy(config: &MonitorConfig, inside: bool) -> Vec<std::path::PathBuf> {
    let hidden = config.runtime.cgroup2_hidden.as_deref();
    let is_inside = |cgroup: &std::path::PathBuf| hidden.is_some_and(|h| cgroup.starts_with(h));
    config.cgroups.iter().filter(|c| is_inside(c) == inside).cloned().collect()
}

/// Reports a failure to lockstepd (and the monitor log) and ends the monitor.
fn fail(message: &str) -> ExitCode {
    eprintln!("lockstep-monitor: {message}");
    report(&Report::Failed { message: message.to_string() });
    ExitCode::FAILURE
}

/// One JSON line on stdout, the channel lockstepd waits on.
fn report(report: &Report) {
    if let Ok(mut line) = serde_json::to_vec(report) {
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
}

/// Where the container's output comes from once it is created.
enum Output {
    Pipes { stdout: File, stderr: File },
    Terminal { master: File },
}

/// A created container and everything the monitor holds for it.
struct Monitor {
    dir: ContainerDir,
    config: MonitorConfig,
    init: Pid,
    output: Output,
    /// Held open so that the container's stdin stays open until attach closes it.
    stdin: Option<OwnedFd>,
    log: Arc<CriLog>,
    control: UnixListener,
    oom: Option<OomWatch>,
}

impl Monitor {
    /// Opens the log and the control socket, then runs the OCI runtime's `create`.
    fn create(dir: &ContainerDir, config: &MonitorConfig) -> Result<Monitor, String> {
        let log = match &config.log_path {
            Some(path) => {
                CriLog::open(path).map_err(|e| format!("cannot open the container log {}: {e}", path.display()))?
            }
            None => CriLog::discard(),
        };
        let control = control::bind_here(ContainerDir::CONTROL)
            .map_err(|e| format!("cannot bind {}: {e}", dir.path().join(ContainerDir::CONTROL).display()))?;
        // A runtime in a pure cgroup v1 view leaves the container in its parent's v2 cgroup: that
        // must be the monitors' own before the create, not lockstepd's (whose service restart
        // would kill it). The other hierarchies follow after the report, off the create's path.
        move_into(&hidden_hierarchy(config, true));
        let runtime = CommandRuntime::new(config.runtime.clone());
        let pid_file = dir.init_pid();
        let _ = std::fs::remove_file(&pid_file);
        let (stdin_for_container, stdin_kept) = if config.stdin && !config.tty {
            let (read, write) = pipe()?;
            (Stdio::from(read), Some(write))
        } else {
            (Stdio::null(), None)
        };
        let (output, console) = if config.tty {
            let listener = control::bind_here(ContainerDir::CONSOLE)
                .map_err(|e| format!("cannot bind the console socket: {e}"))?;
            (None, Some(listener))
        } else {
            let (out_read, out_write) = pipe()?;
            let (err_read, err_write) = pipe()?;
            (Some((File::from(out_read), File::from(out_write), File::from(err_read), File::from(err_write))), None)
        };
        let console_path = console.as_ref().map(|_| control::reachable_path(dir.path(), ContainerDir::CONSOLE));
        let (stdout, stderr, output) = match output {
            Some((out_read, out_write, err_read, err_write)) => (
                Stdio::from(out_write),
                Stdio::from(err_write),
                Some(Output::Pipes { stdout: out_read, stderr: err_read }),
            ),
            // With a terminal the runtime's own stdio stays ours (it prints nothing on success).
            None => (Stdio::null(), Stdio::null(), None),
        };
        let options = CreateOptions {
            pid_file: &pid_file,
            console_socket: console_path.as_deref(),
            stdin: stdin_for_container,
            stdout,
            stderr,
        };
        let created = match &config.restore {
            Some(from) => runtime.restore(&config.container_id, &config.bundle, &from.images, &from.work, options),
            None => runtime.create(&config.container_id, &config.bundle, options),
        };
        if let Err(e) = created {
            let _ = std::fs::remove_file(ContainerDir::CONSOLE);
            return Err(match e {
                OciError::Failed { message, .. } => message,
                other => other.to_string(),
            });
        }
        let output = match (output, console) {
            (Some(output), _) => output,
            (None, Some(console)) => {
                let master = receive_console(&console);
                let _ = std::fs::remove_file(ContainerDir::CONSOLE);
                Output::Terminal { master: master? }
            }
            (None, None) => return Err("no output was set up".into()),
        };
        let init = read_pid(&pid_file)?;
        Ok(Monitor {
            dir: dir.clone(),
            config: config.clone(),
            init,
            output,
            stdin: stdin_kept,
            log: Arc::new(log),
            control,
            oom: OomWatch::for_pid(init.as_raw(), config.cgroup_mounts.as_deref()),
        })
    }

    /// Reports the pid, copies output, reaps the init, records the exit.
    fn run(self) -> ExitCode {
        report(&Report::Created { pid: self.init.as_raw() });
        // lockstepd reads until EOF: stdout must not stay open.
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stdout(&null);
        }
        // Only now, off CreateContainer's path: on cgroup v1 each move waits for an RCU grace
        // period, about 1.5 ms per hierarchy (17 ms for 11 here).
        move_into(&hidden_hierarchy(&self.config, false));
        if self.oom.is_none() {
            eprintln!("lockstep-monitor: no memory cgroup found for pid {}; OOM kills go unnoticed", self.init);
        }
        let (done_tx, done) = mpsc::channel::<()>();
        let max = self.config.max_log_line;
        let mut copiers = 0;
        // Attachers write to the container's stdin (the pipe, or the terminal) and resize it.
        let (stdin, terminal) = match &self.output {
            Output::Pipes { .. } => (self.stdin.map(File::from), None),
            Output::Terminal { master } => {
                let input = if self.config.stdin { master.try_clone().ok() } else { None };
                (input, master.try_clone().ok())
            }
        };
        let attachers = Arc::new(Attachers::new(stdin, self.config.stdin_once, terminal));
        match self.output {
            Output::Pipes { stdout, stderr } => {
                for (source, stream) in [(stdout, Stream::Stdout), (stderr, Stream::Stderr)] {
                    spawn_copier(source, stream, self.log.clone(), attachers.clone(), max, done_tx.clone());
                    copiers += 1;
                }
            }
            Output::Terminal { master } => {
                spawn_copier(master, Stream::Stdout, self.log.clone(), attachers.clone(), max, done_tx.clone());
                copiers += 1;
            }
        }
        drop(done_tx);
        let log = self.log.clone();
        let control = self.control;
        let served = attachers.clone();
        let _ = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || control::serve(control, log, served));

        let (exit_code, signal) = reap_until(self.init);
        let exited_at = SystemTime::now();
        let deadline = Instant::now() + DRAIN_AFTER_EXIT;
        for _ in 0..copiers {
            let left = deadline.saturating_duration_since(Instant::now());
            if done.recv_timeout(left).is_err() {
                eprintln!(
                    "lockstep-monitor: output still open {DRAIN_AFTER_EXIT:?} after the exit; recording it anyway"
                );
                break;
            }
        }
        attachers.close_all();
        let record = ExitRecord {
            exit_code,
            signal,
            exited_at_ns: exited_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0),
            oom_killed: self.oom.as_ref().is_some_and(OomWatch::oom_killed),
        };
        // No control requests once the exit is recorded: whoever reads the record finds the
        // monitor done.
        let _ = std::fs::remove_file(ContainerDir::CONTROL);
        let written = files::write_json(&self.dir.exit(), &record);
        reap_orphans();
        match written {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lockstep-monitor: cannot record the exit of {}: {e}", self.config.container_id);
                ExitCode::FAILURE
            }
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))
}

fn read_pid(path: &Path) -> Result<Pid, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(Pid::from_raw(pid)),
        _ => Err(format!("{} holds no pid: {text:?}", path.display())),
    }
}

/// Takes the pty master the runtime sent during `create` (it connected before create
/// returned, so the connection is waiting).
fn receive_console(listener: &UnixListener) -> Result<File, String> {
    listener.set_nonblocking(true).map_err(|e| format!("console socket: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                return sys::receive_fd(&stream).map_err(|e| format!("cannot receive the terminal: {e}"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("the runtime sent no terminal: {e}")),
        }
    }
}

/// Copies one output stream into the log, and to the attachers, until EOF (a terminal's
/// master reads EIO once the container side is closed), then says so on `done`.
fn spawn_copier(
    mut source: File,
    stream: Stream,
    log: Arc<CriLog>,
    attachers: Arc<Attachers>,
    max: usize,
    done: mpsc::Sender<()>,
) {
    let copy = move || {
        let mut splitter = LineSplitter::new(max);
        let mut sink = Sink { log, stream, failed: false };
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let at = SystemTime::now();
                    splitter.push(&buf[..n], &mut |content, partial| sink.write(content, partial, at));
                    attachers.broadcast(stream, &buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let at = SystemTime::now();
        splitter.finish(&mut |content, partial| sink.write(content, partial, at));
        let _ = done.send(());
    };
    if std::thread::Builder::new().stack_size(64 * 1024).spawn(copy).is_err() {
        eprintln!("lockstep-monitor: cannot start the {} copier", stream.name());
    }
}

/// One stream's side of the log; a failing disk is reported once, and copying goes on.
struct Sink {
    log: Arc<CriLog>,
    stream: Stream,
    failed: bool,
}

impl Sink {
    fn write(&mut self, content: &[u8], partial: bool, at: SystemTime) {
        if let Err(e) = self.log.write_entry(self.stream, partial, content, at) {
            if !self.failed {
                let path = self.log.path().map(|p| p.display().to_string()).unwrap_or_default();
                eprintln!("lockstep-monitor: cannot write {path}: {e}");
                self.failed = true;
            }
        }
    }
}

/// Reaps children (the monitor is a subreaper: orphans of the container land here too) until
/// the init exits; its exit code and, when a signal killed it, the signal.
fn reap_until(init: Pid) -> (i32, Option<i32>) {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == init => return (code, None),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == init => {
                return (128 + signal as i32, Some(signal as i32))
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                // The init is not our child (it cannot happen with runc or crun): watch it go.
                eprintln!("lockstep-monitor: cannot wait for {init}: {e}; its exit code is unknown");
                while PathBuf::from(format!("/proc/{init}")).exists() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return (255, None);
            }
        }
    }
}

/// Collects whatever else has already died, without waiting.
fn reap_orphans() {
    while let Ok(status) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
