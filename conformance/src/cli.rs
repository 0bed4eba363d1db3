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
    /// Build the test images from busybox-static and push them to a registry (for air-gapped
    /// CI): then `run --registry HOST:PORT` pulls from it.
    Fixtures {
        /// The registry, HOST:PORT, reached over plain HTTP.
        #[arg(long)]
        registry: String,
        /// Leave out the ~200 MB benchmark image.
        #[arg(long)]
        without_large: bool,
    },
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
    /// A registry holding the fixtures (`lockstep-conformance fixtures`). Without it, the
    /// image tests start private docker-registries for the run.
    #[arg(long, value_name = "HOST:PORT")]
    registry: Option<String>,
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
        Command::Fixtures { registry, without_large } => {
            tokio_runtime().and_then(|rt| rt.block_on(fixtures(&registry, !without_large))).map(|()| ExitCode::SUCCESS)
        }
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

async fn fixtures(registry: &str, with_large: bool) -> anyhow::Result<()> {
    let pushed = crate::fixtures::env::push_everything(registry, with_large).await?;
    for line in pushed {
        println!("{line}");
    }
    Ok(())
}

/// The registries for the image tests, when the selected tests pull.
async fn registry_env(
    minor: Minor,
    options: &RunOptions,
    given: Option<&str>,
) -> anyhow::Result<Option<std::sync::Arc<crate::fixtures::env::RegistryEnv>>> {
    use crate::fixtures::env::RegistryEnv;
    use framework::Need;
    let selected = framework::profile(&crate::suites::all(), minor, &options.selection);
    let pulls = selected
        .iter()
        .any(|t| t.needs.iter().any(|n| matches!(n, Need::Registry | Need::LocalRegistry | Need::AuthRegistry)));
    if !pulls {
        return Ok(None);
    }
    let env = match given {
        Some(host) => RegistryEnv::existing(host)?,
        None => RegistryEnv::start().await.context("cannot start the fixture registries")?,
    };
    Ok(Some(std::sync::Arc::new(env)))
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
        None => Some(Embedded::start(minor).await?),
    };
    let endpoint = args.endpoint.clone().or_else(|| embedded.as_ref().map(|e| e.endpoint.clone())).unwrap_or_default();
    let registry = match registry_env(minor, &options, args.registry.as_deref()).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(embedded) = embedded {
                let _ = embedded.stop().await;
            }
            return Err(e);
        }
    };
    let result = run_against(minor, &endpoint, &options, registry).await;
    if let Some(embedded) = embedded {
        let stopped = embedded.stop().await;
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
    let pulls = options.focus.as_ref().is_none_or(|f| f.is_match(crate::bench::images::PULL_BENCH));
    let measured = async {
        let registry = if pulls {
            eprintln!("bench: building the large image and pushing it to a private registry");
            Some(std::sync::Arc::new(crate::fixtures::env::RegistryEnv::for_bench().await?))
        } else {
            None
        };
        let mut runtimes = vec![];
        let ctx = connect(minor, &primary).await?.with_registry(registry.clone());
        runtimes.push(Runtime { label: ctx.runtime.name.clone(), ctx, daemon_pid: primary_pid });
        if let Some(vs) = &args.vs {
            let ctx = connect(minor, vs).await?.with_registry(registry.clone());
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
    registry: Option<std::sync::Arc<crate::fixtures::env::RegistryEnv>>,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let ctx = connect(minor, endpoint).await?.with_registry(registry);
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
