//! lockstepd's command line, flags named as CRI-O names them. The binary supplies the minor.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use lockstep_cri::Minor;

use crate::config::{CgroupDriver, Config, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "lockstepd",
    about = "A CRI container runtime pinned to one Kubernetes minor",
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
    Config,
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(crate::daemon::run(config, minor, crate::daemon::stop_signal()))?;
    Ok(())
}
