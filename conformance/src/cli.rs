//! The command line: `run` (one minor's profile against an endpoint, or an embedded lockstepd),
//! `skew` (every minor's profile), `fleet` (either on every node of a cluster, as Jobs), `bench`,
//! `list`, `critest` (a critest report judged by an expected list), `soak` and `chaos` (a
//! kubelet-like load, daemon kills, leak accounting), `report --html` (one page from their JSON
//! results), and the hidden `daemon` that the embedded lockstepd runs as.
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
use crate::progress::Progress;
use crate::report::{self, RunReport};
use crate::target::Target;

#[derive(Debug, Parser)]
#[command(
    name = "lockstep-conformance",
    version,
    about = "CRI conformance per Kubernetes minor, against any CRI endpoint",
    long_about = "lockstep-conformance drives the CRI calls that a kubelet of a given Kubernetes minor \
makes (and those critest makes) against any CRI endpoint: lockstepd, containerd, CRI-O. Without \
--endpoint it starts an embedded lockstepd pinned to the minor in a temporary directory.\n\n\
Results go to stdout as tables and, with --json and --junit, to files; progress goes to stderr \
(a progress bar on a terminal, plain lines otherwise).\n\n\
Exit status: 0 all passed, 1 some test failed (or a leak was found), 2 the run could not happen.",
    after_help = "Examples:\n  \
lockstep-conformance run --kube 1.36\n  \
lockstep-conformance run --kube 1.33 --endpoint unix:///run/containerd/containerd.sock --junit out.xml\n  \
lockstep-conformance skew --endpoint unix:///run/crio/crio.sock --json skew.json\n  \
lockstep-conformance list --kube 1.30\n\n\
Run `lockstep-conformance help COMMAND` for a command's flags and examples."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one minor's profile and report.
    #[command(
        long_about = "Run the tests of one Kubernetes minor's profile (the CRI calls its kubelet makes) \
against an endpoint, or against an embedded lockstepd pinned to that minor, then print one line per \
test. Tests listed in --expected may fail without failing the run.",
        after_help = "Examples:\n  \
lockstep-conformance run --kube 1.36\n  \
lockstep-conformance run --kube 1.36 --endpoint unix:///run/containerd/containerd.sock \\\n      \
--expected conformance/expected/containerd.toml --junit containerd.xml --json containerd.json\n  \
lockstep-conformance run --kube 1.33 --focus '^images/' --parallel 4\n  \
lockstep-conformance run --kube 1.36 --registry 127.0.0.1:5000   # fixtures pushed by `fixtures`"
    )]
    Run(RunArgs),
    /// Measure per-operation latency percentiles, optionally against a second runtime.
    #[command(
        long_about = "Measure the latency of CRI operations (p50, p90, p99 and max per operation), the \
daemon's memory, pod bursts and density, against one runtime or two side by side (--vs): the \
ratios are printed.",
        after_help = "Examples:\n  \
lockstep-conformance bench --iterations 50\n  \
lockstep-conformance bench --focus 'pod|container' --json bench.json\n  \
lockstep-conformance bench --endpoint unix:///run/lockstep/lockstep.sock --pid \"$(pidof lockstepd)\" \\\n      \
--vs unix:///run/containerd/containerd.sock --vs-pid \"$(pidof containerd)\""
    )]
    Bench(BenchArgs),
    /// Run a kubelet-like load for many pod cycles, then account for what the runtime left.
    #[command(
        long_about = "Run a kubelet-like load for many pod cycles, then account for what the runtime \
left on the host (mounts, namespaces, veths, IPs, iptables rules, cgroups, helper processes, \
zombies, fds, files, RSS). Exit 1 on any leak. SIGINT finishes the cycles under way, removes \
every pod the run made and still reports.",
        after_help = "Examples:\n  \
lockstep-conformance soak --cycles 50 --concurrency 5\n  \
lockstep-conformance soak --endpoint unix:///run/containerd/containerd.sock --pid \"$(pidof containerd)\" \\\n      \
--state-dir /var/lib/containerd --state-dir /run/containerd --cycles 1000 --json soak.json"
    )]
    Soak(SoakArgs),
    /// The soak's load on a daemon that is SIGKILLed at random moments and started again.
    #[command(
        long_about = "The soak's load on a daemon this command starts, SIGKILLed at seeded random \
moments and started again; every pod is checked after each restart and leaks are accounted at \
the end. The seed is printed: give it again to replay the same kill moments. With --fault, each \
fault is drawn from the kinds given: daemon (the kill above), monitor (a helper of the runtime \
SIGKILLed: a lockstep-monitor, a shim), oci-runtime (a crun/runc call SIGKILLed mid-call), \
disk-full (the runtime's disk filled, then freed), registry-drop (a pull whose connection is cut \
mid-layer).",
        after_help = "Examples:\n  \
lockstep-conformance chaos --kills 10 --seed 15\n  \
lockstep-conformance chaos --kills 20 --seed 15 --fault monitor,oci-runtime,daemon\n  \
lockstep-conformance chaos --kills 4 --seed 15 --fault disk-full,registry-drop --disk-mib 256\n  \
lockstep-conformance chaos --daemon-cmd 'containerd --config /tmp/ctd/config.toml' \\\n      \
--endpoint unix:///tmp/ctd/containerd.sock --state-dir /tmp/ctd/root --kills 5"
    )]
    Chaos(ChaosArgs),
    /// Run every minor's profile against one endpoint and print the matrix.
    #[command(
        long_about = "Run the profile of every Kubernetes minor (1.30 to 1.37) against one endpoint and \
print the version-skew matrix: which kubelet minors the runtime serves correctly.",
        after_help = "Examples:\n  \
lockstep-conformance skew                      # an embedded lockstepd pinned to 1.36\n  \
lockstep-conformance skew --kube 1.33 --json skew-1.33.json\n  \
lockstep-conformance skew --endpoint unix:///run/containerd/containerd.sock \\\n      \
--expected conformance/expected/containerd.toml"
    )]
    Skew(SkewArgs),
    /// Run the conformance or skew profile on every node of a cluster, as Jobs.
    #[command(
        long_about = "Run the conformance or skew profile on every selected node of a cluster, each as a \
privileged Job with the node's CRI socket mounted; print a verdict per node and minor and write one JUnit file. \
The RBAC it needs: conformance/deploy/fleet-rbac.yaml; how to run it: docs/fleet.md. Exit 1 when a node \
fails or times out, 2 when the cluster cannot be reached or refuses.",
        after_help = "Examples:\n  \
lockstep-conformance fleet --image registry.example/lockstep-conformance:0.1 --selector pool=canary \\\n      \
--kube 1.36 --junit fleet.xml\n  \
lockstep-conformance fleet --image IMAGE --profile skew --socket /run/lockstep/lockstep.sock --json fleet.json"
    )]
    Fleet(FleetArgs),
    /// Run one Pod manifest through the CRI calls a kubelet of the minor makes, and report them.
    #[command(after_help = "Examples:\n  \
lockstep-conformance kubelet --kube 1.36 --pod conformance/examples/init-and-app.yaml\n  \
lockstep-conformance kubelet --kube 1.36 --pod pod.yaml --endpoint unix:///run/containerd/containerd.sock --hold 30")]
    Kubelet(KubeletArgs),
    /// Build the test images and push them to a registry, for air-gapped CI.
    #[command(
        long_about = "Build the test images from busybox-static and push them to a registry (for \
air-gapped CI): then `run --registry HOST:PORT` pulls from it. Prints each pushed reference.",
        after_help = "Example:\n  lockstep-conformance fixtures --registry 127.0.0.1:5000 --without-large"
    )]
    Fixtures {
        /// The registry, HOST:PORT, reached over plain HTTP.
        #[arg(long)]
        registry: String,
        /// Leave out the ~200 MB benchmark image.
        #[arg(long)]
        without_large: bool,
    },
    /// Judge a critest run by a runtime's expected failures and skips.
    #[command(
        long_about = "Judge a critest run (its Ginkgo JSON report) by a runtime's expected failures and \
skips (conformance/expected/critest-<runtime>.toml): exit 1 on any difference from the list.",
        after_help = "Example:\n  \
lockstep-conformance critest --report critest.json --expected conformance/expected/critest-lockstep.toml"
    )]
    Critest {
        /// critest's JSON report (`critest -ginkgo.json-report FILE`, `critest-env run --report FILE`).
        #[arg(long, value_name = "FILE")]
        report: PathBuf,
        /// The runtime's expected critest outcomes.
        #[arg(long, value_name = "FILE")]
        expected: PathBuf,
    },
    /// Write one self-contained HTML page from the JSON results of other commands.
    #[command(
        long_about = "Write one self-contained HTML page (no network fetches) from JSON results of run, skew, \
bench, soak and chaos: the skew matrix as a grid, each suite with its failures shown, latency plots runtime \
beside runtime, reliability figures. Exit 2 on a file that does not parse or comes from a newer harness.",
        after_help = "Examples:\n  lockstep-conformance skew --json skew.json && lockstep-conformance bench --vs \
unix:///run/containerd/containerd.sock --json bench.json\n  lockstep-conformance report --html report.html \
skew.json bench.json"
    )]
    Report {
        /// Where to write the page.
        #[arg(long, value_name = "FILE")]
        html: PathBuf,
        /// The results (`--json` files of run, skew, bench, soak, chaos), in the page's order.
        #[arg(required = true, value_name = "JSON")]
        results: Vec<PathBuf>,
    },
    /// List the tests of one minor's profile, or of every minor.
    #[command(
        long_about = "List the tests (`area/name  (since 1.NN)`) of one minor's profile, or without --kube \
of every minor: what --focus, --skip and the expected-failure lists match against.",
        after_help = "Examples:\n  lockstep-conformance list --kube 1.30\n  lockstep-conformance list | grep '^images/'"
    )]
    List {
        /// The Kubernetes minor, e.g. 1.36.
        #[arg(long)]
        kube: Option<String>,
    },
    /// Write the man pages (lockstep-conformance.1 and one per command) into DIR.
    #[command(hide = true)]
    Man {
        /// The directory for the pages (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
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
    /// Write the JSON report here; `-` for stdout (the table then goes to stderr).
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
    /// A lockstep.toml for the embedded lockstepd (ignored with --endpoint), e.g. one naming
    /// its default handler.
    #[arg(long, value_name = "FILE")]
    lockstepd_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FleetProfile {
    /// One minor's profile (`run --kube`).
    Run,
    /// Every minor's profile (`skew`).
    Skew,
}

#[derive(Debug, clap::Args)]
struct FleetArgs {
    /// The kubeconfig. Default: KUBECONFIG, then ~/.kube/config, then the pod's service account.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Only nodes with these labels, `key=value,...` (any label selector). Default: every node.
    #[arg(long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// What each node runs.
    #[arg(long, value_enum, default_value = "run")]
    profile: FleetProfile,
    /// The Kubernetes minor of the run profile, e.g. 1.36.
    #[arg(long, default_value = "1.36")]
    kube: String,
    /// The harness image each Job runs (lockstep-conformance on its PATH; docs/fleet.md).
    #[arg(long)]
    image: String,
    /// The CRI socket's path on the nodes.
    #[arg(long, default_value = "/run/containerd/containerd.sock", value_name = "PATH")]
    socket: String,
    /// The namespace of the Jobs (it must exist; conformance/deploy/fleet-rbac.yaml makes it).
    #[arg(long, default_value = "lockstep-conformance")]
    namespace: String,
    /// Per node: a Job without a result by then is ended (activeDeadlineSeconds) and deleted.
    #[arg(long, default_value = "30m", value_name = "DURATION", value_parser = crate::fleet::parse_duration)]
    timeout: Duration,
    /// A registry holding the fixtures, reachable from the nodes (as for `run`).
    #[arg(long, value_name = "HOST:PORT")]
    registry: Option<String>,
    /// Write JUnit XML here: one testsuite per node.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write every node's verdict and reports as JSON here; `-` for stdout (the table then goes
    /// to stderr).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// How often the Jobs are listed.
    #[arg(long, default_value = "2s", value_parser = crate::fleet::parse_duration_ms, hide = true)]
    poll_interval: Duration,
}

#[derive(Debug, clap::Args)]
struct KubeletArgs {
    /// The Kubernetes minor whose kubelet to emulate.
    #[arg(long)]
    kube: String,
    /// The Pod manifest (YAML or JSON).
    #[arg(long, value_name = "FILE")]
    pod: PathBuf,
    /// The CRI endpoint. Without it, an embedded lockstepd for the minor.
    #[arg(long)]
    endpoint: Option<String>,
    /// The kubelet's root for pod volumes and files (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    kubelet_dir: Option<PathBuf>,
    /// Where pod log directories are made (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pod_logs_dir: Option<PathBuf>,
    /// The kubelet's clusterDNS (repeatable); without it pods get the host's resolv.conf.
    #[arg(long, value_name = "IP")]
    cluster_dns: Vec<String>,
    /// Keep the pod running this many seconds before deleting it.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    hold: u64,
    /// Write the calls and checks as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The registry that replaces $(LOCKSTEP_REGISTRY) in the manifest, HOST:PORT, holding the
    /// fixture images (`lockstep-conformance fixtures`). Without it, a manifest that uses the
    /// placeholder gets a private docker-registry with the fixtures, started for the run.
    #[arg(long, value_name = "HOST:PORT")]
    registry: Option<String>,
    /// A lockstep.toml for the embedded lockstepd (ignored with --endpoint), e.g. one naming
    /// its default handler.
    #[arg(long, value_name = "FILE")]
    lockstepd_config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SkewArgs {
    /// The CRI endpoint. Without it, an embedded lockstepd pinned to --kube.
    #[arg(long)]
    endpoint: Option<String>,
    /// The minor of the embedded lockstepd (ignored with --endpoint).
    #[arg(long, default_value = "1.36")]
    kube: String,
    /// Write the matrix, with every run's report, as JSON here; `-` for stdout (the table then
    /// goes to stderr).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The runtime's expected failures (as for `run`).
    #[arg(long, value_name = "FILE")]
    expected: Option<PathBuf>,
    /// A registry holding the fixtures (as for `run`).
    #[arg(long, value_name = "HOST:PORT")]
    registry: Option<String>,
    /// Run only tests whose area/name matches this regex.
    #[arg(long, value_name = "REGEX")]
    focus: Option<String>,
    /// Leave out tests whose area/name matches this regex.
    #[arg(long, value_name = "REGEX")]
    skip: Option<String>,
    /// How many tests run at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    parallel: usize,
    /// A lockstep.toml for the embedded lockstepd (ignored with --endpoint), e.g. one naming
    /// its default handler.
    #[arg(long, value_name = "FILE")]
    lockstepd_config: Option<PathBuf>,
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
    /// A lockstep.toml for the embedded lockstepd (ignored with --endpoint), e.g. one naming
    /// its default handler.
    #[arg(long, value_name = "FILE")]
    lockstepd_config: Option<PathBuf>,
    /// Pods in the burst benchmark.
    #[arg(long, default_value_t = 50)]
    burst_pods: usize,
    /// Pods started and torn down at once (the burst, and filling the node for density).
    #[arg(long, default_value_t = 10)]
    burst_concurrency: usize,
    /// Pods kept running in the density benchmark.
    #[arg(long, default_value_t = 250)]
    density_pods: usize,
    /// Seconds of the density benchmark's 1 s relist loop.
    #[arg(long, default_value_t = 60)]
    relist_secs: u64,
    /// Seconds the density benchmark leaves the daemon idle while counting its CPU time.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Containers created (one in ten started) for the ListContainers benchmark.
    #[arg(long, default_value_t = 1000)]
    listed_containers: usize,
    /// Restarts of an embedded lockstepd with the density pods (start-up time).
    #[arg(long, default_value_t = 3)]
    restarts: usize,
}

/// The load of `soak` and `chaos`.
#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// The Kubernetes minor whose kubelet to speak as.
    #[arg(long, default_value = "1.36")]
    kube: String,
    /// Steady pods, up for the whole run (an app that runs, a container that exited).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pods: usize,
    /// Pod cycles at once.
    #[arg(long, default_value_t = 5, value_name = "C")]
    concurrency: usize,
    /// Every this many cycles, an image is pulled and removed (0: never).
    #[arg(long, default_value_t = 10, value_name = "N")]
    image_every: usize,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// A registry holding the fixtures (`lockstep-conformance fixtures`). Without it, a private
    /// docker-registry with them is started for the run.
    #[arg(long, value_name = "HOST:PORT")]
    registry: Option<String>,
    /// A lockstep.toml for the embedded lockstepd.
    #[arg(long, value_name = "FILE")]
    lockstepd_config: Option<PathBuf>,
    /// The runtime's state directories (repeatable), e.g. containerd's root and state: mounts,
    /// namespace pins and files under them are accounted. Known for an embedded lockstepd.
    #[arg(long, value_name = "DIR")]
    state_dir: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SoakArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// The runtime to soak. Without it, an embedded lockstepd for the minor.
    #[arg(long)]
    endpoint: Option<String>,
    /// The pid of the --endpoint daemon, for its fds and RSS (known for an embedded one).
    #[arg(long)]
    pid: Option<u32>,
    /// Pod cycles to run.
    #[arg(long, default_value_t = 100, value_name = "M")]
    cycles: usize,
}

#[derive(Debug, clap::Args)]
struct ChaosArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// A daemon to start, kill and start again (run as `sh -c "exec CMD"`), serving --endpoint.
    /// Without both, an embedded lockstepd.
    #[arg(long, value_name = "CMD")]
    daemon_cmd: Option<String>,
    /// The CRI endpoint of --daemon-cmd.
    #[arg(long)]
    endpoint: Option<String>,
    /// How many faults are made (with the default --fault daemon: how many times the daemon is
    /// SIGKILLed and started again).
    #[arg(long, default_value_t = 10, value_name = "K")]
    kills: usize,
    /// The kinds of fault each one is drawn from, by the seed (repeatable, or comma-separated):
    /// daemon, monitor, oci-runtime, disk-full, registry-drop. Default: daemon.
    #[arg(long = "fault", value_name = "KIND", value_delimiter = ',')]
    faults: Vec<String>,
    /// disk-full with the embedded lockstepd: its --root is a tmpfs of this many MiB.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    disk_mib: u64,
    /// disk-full with --daemon-cmd: a directory on the daemon's size-limited filesystem (the
    /// operator mounts one, e.g. a tmpfs as its root), which the harness fills with a file.
    #[arg(long, value_name = "DIR")]
    disk_dir: Option<PathBuf>,
    /// The seed of the kill moments (printed; give it again to replay a run). Default: the clock.
    #[arg(long)]
    seed: Option<u64>,
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
        Command::Man { dir } => man(&dir).map(|()| ExitCode::SUCCESS),
        Command::List { kube } => list(kube.as_deref()).map(|()| ExitCode::SUCCESS),
        Command::Critest { report, expected } => critest(&report, &expected),
        Command::Report { html, results } => report_html(&html, &results).map(|()| ExitCode::SUCCESS),
        Command::Fixtures { registry, without_large } => {
            tokio_runtime().and_then(|rt| rt.block_on(fixtures(&registry, !without_large))).map(|()| ExitCode::SUCCESS)
        }
        Command::Run(args) => tokio_runtime().and_then(|rt| rt.block_on(run(args))),
        Command::Bench(args) => tokio_runtime().and_then(|rt| rt.block_on(bench(args))),
        Command::Skew(args) => tokio_runtime().and_then(|rt| rt.block_on(skew(args))),
        Command::Soak(args) => tokio_runtime().and_then(|rt| rt.block_on(soak(args))),
        Command::Chaos(args) => tokio_runtime().and_then(|rt| rt.block_on(chaos(args))),
        Command::Kubelet(args) => tokio_runtime().and_then(|rt| rt.block_on(kubelet(args))),
        Command::Fleet(args) => tokio_runtime().and_then(|rt| rt.block_on(fleet(args))),
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

/// lockstep-conformance's command line as clap sees it: for man pages and help checks.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn man(dir: &std::path::Path) -> anyhow::Result<()> {
    for page in lockstep_runtime::manpages::write_all(command(), "1", dir)? {
        println!("{}", page.display());
    }
    Ok(())
}

fn list(kube: Option<&str>) -> anyhow::Result<()> {
    let tests = match kube {
        Some(kube) => framework::profile(&crate::suites::all(), parse_minor(kube)?, &Selection::default()),
        None => crate::suites::all(),
    };
    for test in tests {
        println!("{}  (since {})", test.id(), test.since);
    }
    Ok(())
}

fn critest(report: &std::path::Path, expected: &std::path::Path) -> anyhow::Result<ExitCode> {
    let specs = crate::critest::read_report(report)?;
    let expected = crate::critest::Expected::load(expected)?;
    let verdict = crate::critest::judge(&specs, &expected);
    for problem in &verdict.problems {
        println!("  {problem}");
    }
    println!(
        "critest: {} passed, {} failed, {} skipped; {}",
        verdict.passed,
        verdict.failed,
        verdict.skipped,
        if verdict.ok() {
            "every failure and skip is listed with its reason".to_string()
        } else {
            format!("{} differences from the expected list", verdict.problems.len())
        }
    );
    Ok(if verdict.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn report_html(html: &std::path::Path, results: &[PathBuf]) -> anyhow::Result<()> {
    let inputs = results.iter().map(|path| crate::html::read(path)).collect::<Result<Vec<_>, _>>()?;
    let page = crate::html::render(&inputs)?;
    std::fs::write(html, page).with_context(|| format!("cannot write {}", html.display()))?;
    eprintln!("report: wrote {} from {} results", html.display(), inputs.len());
    Ok(())
}

async fn fixtures(registry: &str, with_large: bool) -> anyhow::Result<()> {
    // One step without a count (the testkit pushes them all at once): a spinner, or two lines.
    let progress = Progress::start("fixtures", None, "");
    progress.note(&format!("building the test images and pushing them to {registry}"));
    let pushed = lockstep_testkit::fixtures::env::push_everything(registry, with_large).await;
    progress.finish();
    let pushed = pushed?;
    progress.note(&format!("{} references pushed", pushed.len()));
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
) -> anyhow::Result<Option<std::sync::Arc<lockstep_testkit::fixtures::env::RegistryEnv>>> {
    use framework::Need;
    use lockstep_testkit::fixtures::env::RegistryEnv;
    let selected = framework::profile(&crate::suites::all(), minor, &options.selection);
    let pulls = selected.iter().any(|t| {
        t.needs.iter().any(|n| matches!(n, Need::Registry | Need::LocalRegistry | Need::AuthRegistry | Need::ExecInPod))
    });
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
    let expected = load_expected(&args.expected)?;
    let target = Target::open(minor, args.endpoint.clone(), None, args.lockstepd_config.as_deref()).await?;
    let result = async {
        let registry = registry_env(minor, &options, args.registry.as_deref()).await?;
        run_against(minor, &target.endpoint, &options, target.restarter(), registry).await
    }
    .await;
    let result = target.close(result).await;
    let mut report = result?;
    expected.apply(&mut report.tests);
    if json_to_stdout(&args.json) {
        eprint!("{}", report::to_table(&report, std::io::stderr().is_terminal()));
    } else {
        print!("{}", report::to_table(&report, std::io::stdout().is_terminal()));
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, report::to_junit(&report)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        write_json(path, &report::to_json(&report))?;
    }
    Ok(if report.counts().failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn skew(args: SkewArgs) -> anyhow::Result<ExitCode> {
    let embedded_minor = parse_minor(&args.kube)?;
    let selection = Selection { focus: regex("--focus", &args.focus)?, skip: regex("--skip", &args.skip)? };
    let options = RunOptions { selection, parallel: args.parallel };
    let expected = load_expected(&args.expected)?;
    let target = Target::open(embedded_minor, args.endpoint.clone(), None, args.lockstepd_config.as_deref()).await?;
    let rows = async {
        // One set of registries for every minor: the newest profile holds every test that pulls.
        let registry = registry_env(Minor::MODEL, &options, args.registry.as_deref()).await?;
        let mut rows = Vec::new();
        let progress = Progress::start("skew", Some(Minor::ALL.len() as u64), "minors");
        for minor in Minor::ALL {
            progress.note(&format!("Kubernetes {minor}"));
            let mut report =
                run_against(minor, &target.endpoint, &options, target.restarter(), registry.clone()).await?;
            expected.apply(&mut report.tests);
            let counts = report.counts();
            progress.note(&format!("Kubernetes {minor}: {} passed, {} failed", counts.passed, counts.failed));
            rows.push(crate::skew::Row { minor, report });
            progress.inc(1);
        }
        progress.finish();
        anyhow::Ok(rows)
    }
    .await;
    let rows = target.close(rows).await?;
    if json_to_stdout(&args.json) {
        eprint!("{}", crate::skew::to_table(&rows));
    } else {
        print!("{}", crate::skew::to_table(&rows));
    }
    if let Some(path) = &args.json {
        write_json(path, &crate::skew::to_json(&rows))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--json -`: the JSON report goes to stdout (a fleet Job's log), so the table goes to stderr.
fn json_to_stdout(json: &Option<PathBuf>) -> bool {
    json.as_deref() == Some(std::path::Path::new("-"))
}

/// Writes a JSON report to the file, or to stdout for `-` (in one write, after everything else).
fn write_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    if path == std::path::Path::new("-") {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        return out.write_all(text.as_bytes()).and_then(|()| out.flush()).context("cannot write to stdout");
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

async fn fleet(args: FleetArgs) -> anyhow::Result<ExitCode> {
    use crate::fleet::{self, FleetOptions, JobTemplate, Profile};
    let (profile, minors) = match args.profile {
        FleetProfile::Run => {
            let minor = parse_minor(&args.kube)?;
            (Profile::Run { kube: minor.to_string() }, vec![minor])
        }
        FleetProfile::Skew => (Profile::Skew, Minor::ALL.to_vec()),
    };
    let options = FleetOptions {
        kubeconfig: args.kubeconfig,
        selector: args.selector,
        template: JobTemplate {
            run_id: String::new(),
            namespace: args.namespace,
            image: args.image,
            socket: args.socket,
            profile,
            timeout: args.timeout,
            registry: args.registry,
        },
        poll: args.poll_interval,
    };
    let results = match fleet::run(options).await {
        Ok(results) => results,
        Err(e) => {
            eprintln!("lockstep-conformance: fleet: {e}");
            return Ok(ExitCode::from(e.exit_code()));
        }
    };
    if json_to_stdout(&args.json) {
        eprint!("{}", fleet::verdict::to_table(&results, &minors));
    } else {
        print!("{}", fleet::verdict::to_table(&results, &minors));
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, fleet::verdict::to_junit(&results))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        write_json(path, &fleet::verdict::to_json(&results))?;
    }
    Ok(if results.iter().all(|r| r.passed()) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn kubelet(args: KubeletArgs) -> anyhow::Result<ExitCode> {
    use crate::kubelet;
    let minor = parse_minor(&args.kube)?;
    let text = kubelet::manifest::read(&args.pod)?;
    let shown = args.pod.display().to_string();
    // Checked before anything starts: a manifest that is not a Pod ends the run at once.
    let mut pod = kubelet::manifest::parse(&text, &shown)?;
    let scratch = tempfile::Builder::new().prefix("lockstep-kubelet-").tempdir().context("cannot make a temp dir")?;
    let kubelet_dir = args.kubelet_dir.clone().unwrap_or_else(|| scratch.path().join("kubelet"));
    let pod_logs_dir = args.pod_logs_dir.clone().unwrap_or_else(|| scratch.path().join("pods"));
    let target = Target::open(minor, args.endpoint.clone(), None, args.lockstepd_config.as_deref()).await?;
    let result = async {
        let ctx = connect(minor, &target.endpoint).await?;
        // The registry behind $(LOCKSTEP_REGISTRY); the uid stays the one given above.
        let _registry = if kubelet::manifest::uses_registry(&text) {
            let env = match &args.registry {
                Some(host) => lockstep_testkit::fixtures::env::RegistryEnv::existing(host)?,
                None => {
                    eprintln!("kubelet: starting a private registry with the fixture images for $(LOCKSTEP_REGISTRY)");
                    lockstep_testkit::fixtures::env::RegistryEnv::standard_only()
                        .await
                        .context("cannot start the fixture registry")?
                }
            };
            let uid = pod.metadata.uid.clone();
            pod = kubelet::manifest::parse_with_registry(&text, &shown, &env.host)?;
            pod.metadata.uid = uid;
            Some(env)
        } else {
            None
        };
        let mut client = ctx.kubelet();
        // The kubelet takes its cgroup driver from the runtime when the runtime says.
        let systemd = match client.runtime_config(lockstep_cri::model::RuntimeConfigRequest {}).await {
            Ok(r) => r.linux.is_some_and(|l| l.cgroup_driver == lockstep_cri::model::CgroupDriver::Systemd as i32),
            Err(_) => false,
        };
        let node = kubelet::Node::new(kubelet_dir, pod_logs_dir, systemd, args.cluster_dns.clone());
        let emulation = kubelet::emulate(ctx.kubelet(), &pod, &node, Duration::from_secs(args.hold)).await;
        anyhow::Ok((ctx.runtime.name.clone(), emulation))
    }
    .await;
    let (runtime, emulation) = target.close(result).await?;
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    print!("{}", kubelet::report::to_table(&emulation, &name, &runtime, &minor.to_string()));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&emulation)?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if emulation.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn load_expected(path: &Option<PathBuf>) -> anyhow::Result<crate::expected::Expected> {
    match path {
        Some(path) => crate::expected::Expected::load(path, &crate::suites::all()),
        None => Ok(crate::expected::Expected::default()),
    }
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
    let surface = crate::surface::probe(channel.clone()).await;
    // A runtime whose Status fails still gets a report: the tests that need Status say why.
    let status = client.status(lockstep_cri::model::StatusRequest { verbose: false }).await.unwrap_or_default();
    Ok(Ctx::new(minor, endpoint.to_string(), RuntimeIdentity::from_version(&version), surface, status, channel))
}

async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    use crate::bench::run::{self as bench_run, Options, Runtime};
    let minor = parse_minor(&args.kube)?;
    let options = Options {
        iterations: args.iterations.max(1),
        concurrency: args.concurrency.max(1),
        focus: regex("--focus", &args.focus)?,
        sizes: crate::bench::Sizes {
            burst_pods: args.burst_pods.max(1),
            burst_concurrency: args.burst_concurrency.max(1),
            density_pods: args.density_pods.max(1),
            relist_secs: args.relist_secs.max(1),
            idle_secs: args.idle_secs.max(1),
            listed_containers: args.listed_containers.max(1),
            restarts: args.restarts,
        },
    };
    let target = Target::open(minor, args.endpoint.clone(), args.pid, args.lockstepd_config.as_deref()).await?;
    let selected = |name: &str| options.focus.as_ref().is_none_or(|f| f.is_match(name));
    let pulls = selected(crate::bench::images::PULL_BENCH) || selected(crate::bench::images::SHARED_PULL_BENCH);
    let containers = selected(crate::bench::containers::CONTAINER_BENCH)
        || selected(crate::bench::streaming::STREAMING_BENCH)
        || selected(crate::bench::streaming_io::STREAMING_IO_BENCH)
        || selected(crate::bench::events::EVENTS_BENCH)
        || selected(crate::bench::userns::USERNS_BENCH)
        || selected(crate::bench::checkpoint::CHECKPOINT_BENCH)
        || crate::bench::density::NAMES.iter().any(|name| selected(name));
    let measured = async {
        let registry = if pulls || containers {
            eprintln!("bench: building the fixture images and pushing them to a private registry");
            Some(std::sync::Arc::new(
                lockstep_testkit::fixtures::env::RegistryEnv::for_benches(pulls, containers).await?,
            ))
        } else {
            None
        };
        let mut runtimes = vec![];
        let mut ctx = connect(minor, &target.endpoint).await?.with_registry(registry.clone());
        if let Some(restarter) = target.restarter() {
            ctx = ctx.with_restarter(restarter);
        }
        runtimes.push(Runtime { label: ctx.runtime.name.clone(), ctx, daemon_pid: target.pid });
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
    let measured = target.close(measured).await;
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
    registry: Option<std::sync::Arc<lockstep_testkit::fixtures::env::RegistryEnv>>,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let mut ctx = connect(minor, endpoint).await?.with_registry(registry);
    if let Some(restarter) = restarter {
        ctx = ctx.with_restarter(restarter);
    }
    let runtime = ctx.runtime.clone();
    let surface = ctx.surface.clone();
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

/// The registry of a soak or chaos run: the user's, or a private one with the fixtures.
async fn load_registry(given: Option<&str>) -> anyhow::Result<lockstep_testkit::fixtures::env::RegistryEnv> {
    use lockstep_testkit::fixtures::env::RegistryEnv;
    match given {
        Some(host) => RegistryEnv::existing(host),
        None => {
            eprintln!("soak: starting a private registry with the fixture images");
            RegistryEnv::standard_only().await.context("cannot start the fixture registry")
        }
    }
}

/// Prints a soak or chaos report, writes its JSON, and picks the exit code.
fn finish_soak(report: &crate::soak::Report, json: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    print!("{}", crate::soak::report::to_table(report));
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&crate::soak::report::to_json(report))?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if report.failed() {
        ExitCode::from(1)
    } else if report.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn shape(load: &LoadArgs, cycles: usize, retry: bool) -> crate::soak::load::Shape {
    crate::soak::load::Shape {
        pods: load.pods,
        cycles,
        concurrency: load.concurrency.max(1),
        image_every: load.image_every,
        retry,
    }
}

async fn soak(args: SoakArgs) -> anyhow::Result<ExitCode> {
    use crate::soak::{accounting::Scope, load::Load, Images};
    let minor = parse_minor(&args.load.kube)?;
    let target = Target::open(minor, args.endpoint.clone(), args.pid, args.load.lockstepd_config.as_deref()).await?;
    let scope = match target.embedded_state_dirs().await {
        Some(dirs) => {
            let runroot = dirs.last().map(|d| d.display().to_string()).unwrap_or_default();
            Scope { daemon_pid: target.pid, state_dirs: dirs, helper_marks: vec![runroot] }
        }
        None => {
            let socket = lockstep_cri::socket_path(&target.endpoint)?.display().to_string();
            Scope { daemon_pid: args.pid, state_dirs: args.load.state_dir.clone(), helper_marks: vec![socket] }
        }
    };
    let result = async {
        let registry = load_registry(args.load.registry.as_deref()).await?;
        let ctx = connect(minor, &target.endpoint).await?;
        let mut client = ctx.kubelet();
        let images = Images::pull(&mut client, &registry).await?;
        let logs =
            tempfile::Builder::new().prefix("lockstep-soak-logs-").tempdir().context("cannot make a temp dir")?;
        let shape = shape(&args.load, args.cycles, false);
        let load =
            std::sync::Arc::new(Load::new(client, images.image, images.churn, logs.path(), shape, scope.daemon_pid));
        let runtime = format!("{} {}", ctx.runtime.name, ctx.runtime.version);
        anyhow::Ok(crate::soak::soak(load, scope, runtime).await)
    }
    .await;
    let report = target.close(result).await?;
    finish_soak(&report, args.load.json.as_deref())
}

async fn chaos(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    use crate::soak::chaos::{self as chaos_run, CommandDaemon, Daemon, FaultSupport, Faults};
    use crate::soak::faults::{registry::Proxy, FaultKind};
    use crate::soak::{accounting::Scope, load::Load, Images};
    let minor = parse_minor(&args.load.kube)?;
    let mut kinds = Vec::new();
    for name in &args.faults {
        let kind = FaultKind::parse(name.trim()).map_err(anyhow::Error::msg)?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    let disk_full = kinds.contains(&FaultKind::DiskFull);
    let scratch = tempfile::Builder::new().prefix("lockstep-chaos-").tempdir().context("cannot make a temp dir")?;
    let (mut daemon, endpoint, scope, disk_dir) = match (&args.daemon_cmd, &args.endpoint) {
        (None, Some(endpoint)) => anyhow::bail!(
            "chaos must kill and restart the runtime, and it can only restart a daemon it starts itself: \
             {endpoint} alone is a runtime it cannot restart. Give the daemon's command line with \
             --daemon-cmd 'CMD' (and --endpoint for its socket), or neither for an embedded lockstepd"
        ),
        (Some(_), None) => anyhow::bail!("--daemon-cmd needs --endpoint: the socket the daemon serves"),
        (Some(command), Some(endpoint)) => {
            if disk_full && args.disk_dir.is_none() {
                anyhow::bail!(
                    "--fault disk-full with --daemon-cmd needs --disk-dir: a directory on the daemon's \
                     size-limited filesystem (mount one, e.g. a tmpfs as its root, before the run)"
                );
            }
            let log = scratch.path().join("daemon.log");
            let daemon = CommandDaemon::start(command.clone(), endpoint.clone(), log, minor).await?;
            let socket = lockstep_cri::socket_path(endpoint)?.display().to_string();
            let scope = Scope { daemon_pid: None, state_dirs: args.load.state_dir.clone(), helper_marks: vec![socket] };
            (Daemon::Command(daemon), endpoint.clone(), scope, args.disk_dir.clone())
        }
        (None, None) => {
            let disk = disk_full.then_some(args.disk_mib);
            let embedded =
                crate::target::Embedded::start_on(minor, args.load.lockstepd_config.as_deref(), disk).await?;
            let dirs = embedded.state_dirs();
            let root = dirs.first().cloned();
            let runroot = dirs.last().map(|d| d.display().to_string()).unwrap_or_default();
            let endpoint = embedded.endpoint.clone();
            let scope = Scope { daemon_pid: None, state_dirs: dirs, helper_marks: vec![runroot] };
            (Daemon::Embedded(embedded), endpoint, scope, if disk_full { root } else { None })
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let what = if names.is_empty() { "daemon".to_string() } else { names.join(", ") };
    eprintln!("chaos: seed {seed} (replay with --seed {seed}), {} faults ({what})", args.kills);
    let result = async {
        let registry = load_registry(args.load.registry.as_deref()).await?;
        let proxy = match kinds.contains(&FaultKind::RegistryDrop) {
            true => Some(Proxy::start(&registry.host).await?),
            false => None,
        };
        let ctx = connect(minor, &endpoint).await?;
        let mut client = ctx.kubelet();
        let images = Images::pull(&mut client, &registry).await?;
        let logs =
            tempfile::Builder::new().prefix("lockstep-soak-logs-").tempdir().context("cannot make a temp dir")?;
        let shape = shape(&args.load, usize::MAX, true);
        let load = std::sync::Arc::new(Load::new(client, images.image, images.churn, logs.path(), shape, None));
        let runtime = format!("{} {}", ctx.runtime.name, ctx.runtime.version);
        let mut scope = scope;
        scope.daemon_pid = daemon.pid();
        let faults = Faults { kills: args.kills, seed, kinds, disk_dir };
        let support = FaultSupport { registry: &registry, proxy };
        anyhow::Ok(chaos_run::chaos(load, &mut daemon, scope, runtime, faults, support).await)
    }
    .await;
    daemon.stop().await;
    finish_soak(&result?, args.load.json.as_deref())
}
