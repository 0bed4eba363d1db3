//! lockstepd's command line, flags named as CRI-O names them. The binary supplies the minor.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use lockstep_cri::Minor;

use crate::config::{CgroupDriver, Config, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "lockstepd",
    about = "A CRI container runtime pinned to one Kubernetes minor",
    long_about = "lockstepd serves the Container Runtime Interface (CRI v1) to a kubelet on a Unix socket, \
running pods and containers with an OCI runtime (crun or runc) and CNI plugins. Each build serves \
exactly one Kubernetes minor: `lockstepd --version` names it.\n\n\
Without a subcommand, lockstepd runs the daemon in the foreground until SIGTERM or SIGINT. Settings \
come from /etc/lockstep/lockstep.toml, its drop-in directory /etc/lockstep/lockstep.toml.d, then \
the flags below.",
    after_help = "Examples:\n  \
lockstepd --version                      the version and the Kubernetes minor it serves\n  \
lockstepd config > lockstep.toml         the effective configuration, commented\n  \
lockstepd --log-level debug              run the daemon with the default configuration\n  \
lockstepd --root /tmp/ls/root --runroot /tmp/ls/run --listen /tmp/ls/cri.sock\n  \
crictl --runtime-endpoint unix:///run/lockstep/lockstep.sock version",
    disable_version_flag = true
)]
pub struct Cli {
    /// Config file (default /etc/lockstep/lockstep.toml, if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Drop-in directory (default: the config file's path + ".d").
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Persistent state (default /var/lib/lockstep).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Runtime state (default /run/lockstep).
    #[arg(long, global = true, value_name = "DIR")]
    pub runroot: Option<PathBuf>,
    /// The CRI socket (default <runroot>/lockstep.sock).
    #[arg(long, global = true, value_name = "PATH")]
    pub listen: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// cgroupfs or systemd; must match the kubelet's cgroupDriver.
    #[arg(long, global = true, value_name = "DRIVER", value_parser = parse_driver)]
    pub cgroup_driver: Option<CgroupDriver>,
    /// Print the version and the Kubernetes minor this build serves.
    #[arg(long, short = 'V')]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration, as a commented TOML file.
    #[command(
        long_about = "Print the effective configuration (defaults, then the config file and its drop-ins, \
then the flags) as a commented TOML file: a starting point for /etc/lockstep/lockstep.toml.",
        after_help = "Examples:\n  lockstepd config\n  lockstepd --cgroup-driver systemd config > /etc/lockstep/lockstep.toml"
    )]
    Config,
    /// Write lockstepd's man pages (lockstepd.8 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        /// The directory for the pages (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// lockstepd's command line as clap sees it: for man pages and help checks.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn parse_driver(text: &str) -> Result<CgroupDriver, String> {
    match text {
        "cgroupfs" => Ok(CgroupDriver::Cgroupfs),
        "systemd" => Ok(CgroupDriver::Systemd),
        other => Err(format!("{other:?} is neither cgroupfs nor systemd")),
    }
}

impl Cli {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            config_dir: self.config_dir.clone(),
            root: self.root.clone(),
            runroot: self.runroot.clone(),
            listen: self.listen.clone(),
            log_level: self.log_level.clone(),
            cgroup_driver: self.cgroup_driver,
        }
    }
}

/// lockstepd's whole main, for the minor the binary was built for.
pub fn main(minor: Minor) -> anyhow::Result<()> {
    run(minor, Cli::parse())
}

/// Runs what the command line asks, as a lockstepd pinned to `minor`.
pub fn run(minor: Minor, cli: Cli) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if cli.version {
        println!("lockstepd {} (Kubernetes {minor}, CRI v1)", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if let Some(Command::Man { dir }) = &cli.command {
        for page in crate::manpages::write_all(command(), "8", dir)? {
            println!("{}", page.display());
        }
        return Ok(());
    }
    let config = Config::load(&cli.overrides())?;
    if let Some(Command::Config) = cli.command {
        print!("{}", config.render());
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("invalid log_level {:?}", config.log_level))?;
    use std::io::IsTerminal as _;
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        // One JSON object a line: timestamp, level, target, fields (message among them), spans.
        crate::config::LogFormat::Json => logs.json().flatten_event(true).init(),
        crate::config::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    cap_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(crate::daemon::run(config, minor, crate::daemon::stop_signal()))?;
    Ok(())
}

/// Two malloc arenas for the whole daemon, before its threads start. glibc gives threads that
/// meet on a lock arenas of their own, up to eight per core; lockstepd's blocking work runs on
/// a pool whose threads come and go, and each arena keeps the pages its freed chunks leave
/// behind. Measured by `lockstep-conformance soak` (RELIABILITY.md): the daemon's heap stays
/// under 3 MiB, but with the default arenas its RSS rose more over 1,000 cycles, and more
/// under a loaded host; its allocations are too few for two arenas to contend.
#[allow(unsafe_code)]
fn cap_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
