//! The command line: `run` (one minor's profile against an endpoint, or an embedded lockstepd),
//! `list`, and the hidden `daemon` that the embedded lockstepd runs as.
//! Exit codes: 0 all passed, 1 some failed, 2 the run could not happen.

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use clap::{Parser, Subcommand};
use lockstep_cri::Minor;
use regex::Regex;

use crate::framework::{self, Ctx, RunOptions, RuntimeIdentity, Selection};
use crate::report::{self, RunReport};
use crate::target::Embedded;

#[derive(Debug, Parser)]
#[command(
    name = "lockstep-conformance",
    version,
    about = "CRI conformance per Kubernetes minor, against any CRI endpoint"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one minor's profile and report.
    Run(RunArgs),
    /// Measure per-operation latency percentiles, optionally against a second runtime.
    Bench(BenchArgs),
    /// List the tests of one minor's profile.
    List {
        /// The Kubernetes minor, e.g. 1.36.
        #[arg(long)]
        kube: String,
    },
    /// Run lockstepd pinned to a minor (what `run` starts when no --endpoint is given).
    #[command(hide = true)]
    Daemon {
        #[arg(long)]
        kube: String,
        /// lockstepd's own flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The Kubernetes minor whose kubelet to speak as, e.g. 1.36.
    #[arg(long)]
    kube: String,
    /// The CRI endpoint, e.g. unix:///run/containerd/containerd.sock. Without it, an embedded
    /// lockstepd for the minor is started in a temporary directory.
    #[arg(long)]
    endpoint: Option<String>,
    /// Write JUnit XML here.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run only tests whose area/name matches this regex.
    #[arg(long, value_name = "REGEX")]
    focus: Option<String>,
    /// Leave out tests whose area/name matches this regex.
    #[arg(long, value_name = "REGEX")]
    skip: Option<String>,
    /// The runtime's expected failures (conformance/expected/<runtime>.toml): listed tests that
    /// fail do not fail the run; listed tests that pass do.
    #[arg(long, value_name = "FILE")]
    expected: Option<PathBuf>,
    /// How many tests run at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    parallel: usize,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// The Kubernetes minor whose kubelet to speak as.
    #[arg(long, default_value = "1.36")]
    kube: String,
    /// The runtime to measure. Without it, an embedded lockstepd for the minor.
    #[arg(long)]
    endpoint: Option<String>,
    /// A second runtime measured in the same run, e.g. containerd's socket; ratios are printed.
    #[arg(long, value_name = "ENDPOINT")]
    vs: Option<String>,
    /// The pid of the --endpoint daemon, for memory readings (known for an embedded one).
    #[arg(long)]
    pid: Option<u32>,
    /// The pid of the --vs daemon, for memory readings.
    #[arg(long)]
    vs_pid: Option<u32>,
    /// Iterations per operation.
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Run only benchmarks whose name matches this regex.
    #[arg(long, value_name = "REGEX")]
    focus: Option<String>,
    /// Write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let result = match cli.command {
        Command::Daemon { kube, args } => daemon(&kube, args).map(|()| ExitCode::SUCCESS),
        Command::List { kube } => list(&kube).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => tokio_runtime().and_then(|rt| rt.block_on(run(args))),
        Command::Bench(args) => tokio_runtime().and_then(|rt| rt.block_on(bench(args))),
    };
    result.unwrap_or_else(|e| {
        eprintln!("lockstep-conformance: {e:#}");
        ExitCode::from(2)
    })
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")
}

fn parse_minor(kube: &str) -> anyhow::Result<Minor> {
    kube.parse::<Minor>().map_err(|e| anyhow!("--kube: {e}"))
}

fn daemon(kube: &str, args: Vec<OsString>) -> anyhow::Result<()> {
    let minor = parse_minor(kube)?;
    let argv = std::iter::once(OsString::from("lockstepd")).chain(args);
    let cli = <lockstep_runtime::cli::Cli as Parser>::try_parse_from(argv)?;
    lockstep_runtime::cli::run(minor, cli)
}

fn list(kube: &str) -> anyhow::Result<()> {
    let minor = parse_minor(kube)?;
    for test in framework::profile(&crate::suites::all(), minor, &Selection::default()) {
        println!("{}  (since {})", test.id(), test.since);
    }
    Ok(())
}

fn regex(flag: &str, text: &Option<String>) -> anyhow::Result<Option<Regex>> {
    text.as_deref().map(|t| Regex::new(t).map_err(|e| anyhow!("{flag}: {e}"))).transpose()
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let minor = parse_minor(&args.kube)?;
    let selection = Selection { focus: regex("--focus", &args.focus)?, skip: regex("--skip", &args.skip)? };
    let options = RunOptions { selection, parallel: args.parallel };
    let expected = match &args.expected {
        Some(path) => crate::expected::Expected::load(path, &crate::suites::all())?,
        None => crate::expected::Expected::default(),
    };
    let embedded = match &args.endpoint {
        Some(_) => None,
        None => Some(std::sync::Arc::new(tokio::sync::Mutex::new(Embedded::start(minor).await?))),
    };
    let endpoint = match (&args.endpoint, &embedded) {
        (Some(e), _) => e.clone(),
        (None, Some(e)) => e.lock().await.endpoint.clone(),
        (None, None) => String::new(),
    };
    let restarter = embedded
        .clone()
        .map(|e| std::sync::Arc::new(crate::target::SharedEmbedded(e)) as std::sync::Arc<dyn crate::target::Restarter>);
    let result = run_against(minor, &endpoint, &options, restarter).await;
    if let Some(embedded) = embedded {
        let stopped = embedded.lock().await.stop_in_place().await;
        if result.is_ok() {
            stopped?;
        }
    }
    let mut report = result?;
    expected.apply(&mut report.tests);
    print!("{}", report::to_table(&report, std::io::stdout().is_terminal()));
    if let Some(path) = &args.junit {
        std::fs::write(path, report::to_junit(&report)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report::to_json(&report))?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if report.counts().failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Connects to an endpoint and asks who it is.
async fn connect(minor: Minor, endpoint: &str) -> anyhow::Result<Ctx> {
    let channel = lockstep_cri::connect(endpoint, Duration::from_secs(10)).await?;
    let mut client = lockstep_cri::CriClient::new(minor, channel.clone())?;
    client.set_timeout(Some(Duration::from_secs(10)));
    let version = client
        .version(Default::default())
        .await
        .map_err(|e| anyhow!("{endpoint} does not answer Version: {:?}: {}", e.code(), e.message()))?;
    Ok(Ctx::new(minor, endpoint.to_string(), RuntimeIdentity::from_version(&version), channel))
}

async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    use crate::bench::run::{self as bench_run, Options, Runtime};
    let minor = parse_minor(&args.kube)?;
    let options = Options {
        iterations: args.iterations.max(1),
        concurrency: args.concurrency.max(1),
        focus: regex("--focus", &args.focus)?,
    };
    let embedded = match &args.endpoint {
        Some(_) => None,
        None => Some(Embedded::start(minor).await?),
    };
    let primary = args.endpoint.clone().or_else(|| embedded.as_ref().map(|e| e.endpoint.clone())).unwrap_or_default();
    let primary_pid = args.pid.or_else(|| embedded.as_ref().and_then(|e| e.pid()));
    let measured = async {
        let mut runtimes = vec![];
        let ctx = connect(minor, &primary).await?;
        runtimes.push(Runtime { label: ctx.runtime.name.clone(), ctx, daemon_pid: primary_pid });
        if let Some(vs) = &args.vs {
            let ctx = connect(minor, vs).await?;
            let mut label = ctx.runtime.name.clone();
            if label == runtimes[0].label {
                label.push_str(" (vs)");
            }
            runtimes.push(Runtime { label, ctx, daemon_pid: args.vs_pid });
        }
        anyhow::Ok(bench_run::run(&crate::bench::all(), &runtimes, &options).await)
    }
    .await;
    if let Some(embedded) = embedded {
        let stopped = embedded.stop().await;
        if measured.is_ok() {
            stopped?;
        }
    }
    let report = measured?;
    print!("{}", bench_run::to_table(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&bench_run::to_json(&report))?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    let failed = report.results.iter().flat_map(|(_, r)| r).any(|r| r.is_err());
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn run_against(
    minor: Minor,
    endpoint: &str,
    options: &RunOptions,
    restarter: Option<std::sync::Arc<dyn crate::target::Restarter>>,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let mut ctx = connect(minor, endpoint).await?;
    if let Some(restarter) = restarter {
        ctx = ctx.with_restarter(restarter);
    }
    let runtime = ctx.runtime.clone();
    let surface = crate::surface::probe(ctx.channel()).await;
    let tests = framework::run(&crate::suites::all(), &ctx, options).await;
    Ok(RunReport {
        kube: minor.to_string(),
        endpoint: endpoint.to_string(),
        runtime,
        surface,
        tests,
        duration: started.elapsed(),
    })
}
