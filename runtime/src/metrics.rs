//! lockstepd's own Prometheus metrics, `container_runtime_lockstep_*` (in the style of CRI-O's
//! `container_runtime_crio_*`): CRI operations by RPC and gRPC code with their latency, image
//! pulls, containers by state, OOM kills, monitor and CNI failures; and the optional HTTP
//! endpoint that serves them (`metrics_port`, off by default). Counting is always on and costs
//! a few atomics a call; only the endpoint is optional. Touches nothing but its own socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Every name starts with this (then `_`).
pub const PREFIX: &str = "container_runtime_lockstep";

/// One CRI call: the RPC's name (`RunPodSandbox`) and its gRPC code's name (`OK`, `NOT_FOUND`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CniOperation {
    operation: String,
}

/// The container states counted, as the CRI names them.
pub const CONTAINER_STATES: [&str; 4] = ["created", "running", "exited", "unknown"];

/// The registry and each metric in it; shared by the gRPC layer, the RPC glue and the endpoint.
pub struct Metrics {
    registry: Registry,
    operations: Family<Operation, Counter>,
    latency: Family<Operation, Histogram>,
    pull_bytes: Counter,
    pull_seconds: Histogram,
    pull_failures: Family<Reason, Counter>,
    containers: Family<State, Gauge>,
    oom_kills: Counter,
    monitor_failures: Counter,
    cni_failures: Family<CniOperation, Counter>,
}

/// Latency buckets: 1 ms to about 4 min, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 19))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let operations = Family::<Operation, Counter>::default();
        let latency = Family::<Operation, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let pull_bytes = Counter::default();
        let pull_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        let pull_failures = Family::<Reason, Counter>::default();
        let containers = Family::<State, Gauge>::default();
        let oom_kills = Counter::default();
        let monitor_failures = Counter::default();
        let cni_failures = Family::<CniOperation, Counter>::default();
        registry.register("operations", "CRI calls answered, by RPC and gRPC code", operations.clone());
        registry.register(
            "operations_latency_seconds",
            "Time from a CRI call's arrival to its answer (a stream's: to its first headers), by RPC and gRPC code",
            latency.clone(),
        );
        registry.register(
            "image_pulls_bytes",
            "Bytes of images pulled that were not stored before",
            pull_bytes.clone(),
        );
        registry.register(
            "image_pulls_duration_seconds",
            "Time PullImage took, successful or not",
            pull_seconds.clone(),
        );
        registry.register("image_pulls_failures", "Failed image pulls, by reason", pull_failures.clone());
        registry.register("containers", "Containers known, by state, when scraped", containers.clone());
        registry.register("containers_oom", "Containers the kernel's OOM killer ended", oom_kills.clone());
        registry.register(
            "monitor_failures",
            "Container calls that failed because a container's monitor (lockstep-monitor) was missing or broken",
            monitor_failures.clone(),
        );
        registry.register("cni_failures", "CNI ADD or DEL that failed, by operation", cni_failures.clone());
        Metrics {
            registry,
            operations,
            latency,
            pull_bytes,
            pull_seconds,
            pull_failures,
            containers,
            oom_kills,
            monitor_failures,
            cni_failures,
        }
    }

    /// Counts one CRI call and its latency.
    pub fn operation(&self, rpc: &str, code: tonic::Code, took: Duration) {
        let labels = Operation { operation: rpc.to_string(), code: code_name(code).to_string() };
        self.operations.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// One PullImage's outcome: Ok with the bytes it brought (0 when the image was stored
    /// already), or the reason it failed.
    pub fn image_pull(&self, outcome: Result<u64, &str>, took: Duration) {
        self.pull_seconds.observe(took.as_secs_f64());
        match outcome {
            Ok(bytes) => {
                self.pull_bytes.inc_by(bytes);
            }
            Err(reason) => {
                self.pull_failures.get_or_create(&Reason { reason: reason.to_string() }).inc();
            }
        }
    }

    pub fn oom_kill(&self) {
        self.oom_kills.inc();
    }

    pub fn monitor_failure(&self) {
        self.monitor_failures.inc();
    }

    /// A failed CNI call: `add` or `del`.
    pub fn cni_failure(&self, operation: &str) {
        self.cni_failures.get_or_create(&CniOperation { operation: operation.to_string() }).inc();
    }

    /// Sets the containers-by-state gauge (each of `CONTAINER_STATES`, 0 when absent).
    pub fn set_containers(&self, counts: &[(&str, i64)]) {
        for state in CONTAINER_STATES {
            let count = counts.iter().filter(|(s, _)| *s == state).map(|(_, n)| n).sum();
            self.containers.get_or_create(&State { state: state.to_string() }).set(count);
        }
    }

    /// The OpenMetrics 1.0 text, which Prometheus asks for first.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// OpenMetrics text as Prometheus' classic text format (0.0.4), for scrapers that do not ask
/// for OpenMetrics (curl, `promtool check metrics`): a counter family is named as its samples
/// (`x_total`, where OpenMetrics names the family `x`), and `# UNIT` and `# EOF` go.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// A gRPC code as Prometheus labels usually spell it (grpc-go's `codes.Code.String()` in upper
/// snake case, as grpc_server_handled_total's `grpc_code`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid metrics_address {address:?}: {message}")]
    Address { address: String, message: String },
    #[error("cannot listen for metrics on {address}: {source}")]
    Listen { address: SocketAddr, source: std::io::Error },
}

/// The address the endpoint listens on: `metrics_address` (an IP) and `metrics_port`.
pub fn endpoint_address(address: &str, port: u16) -> Result<SocketAddr, EndpointError> {
    let ip: std::net::IpAddr = address.parse().map_err(|e: std::net::AddrParseError| EndpointError::Address {
        address: address.into(),
        message: e.to_string(),
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// Serves `GET /metrics` on `address` until the returned task is aborted; `census` is asked for
/// the containers by state at each scrape. Anything else is 404; a method other than GET, 405.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    census: Arc<dyn Fn() -> Vec<(&'static str, i64)> + Send + Sync>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), EndpointError> {
    let listener =
        tokio::net::TcpListener::bind(address).await.map_err(|source| EndpointError::Listen { address, source })?;
    let bound = listener.local_addr().map_err(|source| EndpointError::Listen { address, source })?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (metrics, census) = (metrics.clone(), census.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let accept = request.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
                    let response = respond(&metrics, &*census, request.method(), request.uri().path(), accept);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                    tracing::debug!(error = %e, "metrics connection ended");
                }
            });
        }
    });
    Ok((bound, task))
}

/// OpenMetrics' content type; Prometheus asks for it and reads it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format's, for every other client.
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

fn respond(
    metrics: &Metrics,
    census: &(dyn Fn() -> Vec<(&'static str, i64)> + Send + Sync),
    method: &http::Method,
    path: &str,
    accept: Option<&str>,
) -> http::Response<String> {
    let reply = |status: http::StatusCode, content_type: &str, body: String| {
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(http::header::CONTENT_TYPE, value);
        }
        response
    };
    if path != "/metrics" {
        return reply(http::StatusCode::NOT_FOUND, "text/plain", "lockstepd serves /metrics only\n".into());
    }
    if method != http::Method::GET && method != http::Method::HEAD {
        return reply(http::StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET /metrics\n".into());
    }
    metrics.set_containers(&census());
    let text = metrics.encode();
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        reply(http::StatusCode::OK, OPENMETRICS, text)
    } else {
        reply(http::StatusCode::OK, CLASSIC, classic_text(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, starts: &str) -> Option<f64> {
        text.lines().find(|l| l.starts_with(starts)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn calls_pulls_and_failures_show_under_their_names_and_labels() {
        let m = Metrics::new();
        m.operation("RunPodSandbox", tonic::Code::Ok, Duration::from_millis(3));
        m.operation("RunPodSandbox", tonic::Code::Ok, Duration::from_millis(5));
        m.operation("ContainerStatus", tonic::Code::NotFound, Duration::from_micros(200));
        m.image_pull(Ok(1000), Duration::from_secs(1));
        m.image_pull(Err("not_found"), Duration::from_millis(100));
        m.oom_kill();
        m.cni_failure("add");
        m.set_containers(&[("running", 2), ("exited", 1)]);
        let text = m.encode();
        let ops = "container_runtime_lockstep_operations_total{operation=\"RunPodSandbox\",code=\"OK\"}";
        assert_eq!(line_value(&text, ops), Some(2.0), "{text}");
        let not_found = "container_runtime_lockstep_operations_total{operation=\"ContainerStatus\",code=\"NOT_FOUND\"}";
        assert_eq!(line_value(&text, not_found), Some(1.0));
        let count =
            "container_runtime_lockstep_operations_latency_seconds_count{operation=\"RunPodSandbox\",code=\"OK\"}";
        assert_eq!(line_value(&text, count), Some(2.0));
        assert_eq!(line_value(&text, "container_runtime_lockstep_image_pulls_bytes_total"), Some(1000.0));
        let failed = "container_runtime_lockstep_image_pulls_failures_total{reason=\"not_found\"}";
        assert_eq!(line_value(&text, failed), Some(1.0));
        assert_eq!(line_value(&text, "container_runtime_lockstep_image_pulls_duration_seconds_count"), Some(2.0));
        assert_eq!(line_value(&text, "container_runtime_lockstep_containers{state=\"running\"}"), Some(2.0));
        assert_eq!(line_value(&text, "container_runtime_lockstep_containers{state=\"created\"}"), Some(0.0));
        assert_eq!(line_value(&text, "container_runtime_lockstep_containers_oom_total"), Some(1.0));
        assert_eq!(line_value(&text, "container_runtime_lockstep_cni_failures_total{operation=\"add\"}"), Some(1.0));
        assert_eq!(line_value(&text, "container_runtime_lockstep_monitor_failures_total"), Some(0.0));
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn only_get_metrics_is_served() {
        let m = Metrics::new();
        let census = || vec![("running", 1)];
        let ok = respond(&m, &census, &http::Method::GET, "/metrics", None);
        assert_eq!(ok.status(), http::StatusCode::OK);
        assert!(ok.body().contains("container_runtime_lockstep_containers{state=\"running\"} 1"), "{}", ok.body());
        assert!(ok.headers()[http::header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
        assert!(!ok.body().contains("# EOF"), "classic text has no EOF");
        let om =
            respond(&m, &census, &http::Method::GET, "/metrics", Some("application/openmetrics-text;version=1.0.0"));
        assert!(om.body().trim_end().ends_with("# EOF"), "{}", om.body());
        assert_eq!(respond(&m, &census, &http::Method::GET, "/", None).status(), http::StatusCode::NOT_FOUND);
        let post = respond(&m, &census, &http::Method::POST, "/metrics", None);
        assert_eq!(post.status(), http::StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn classic_text_names_counter_families_as_their_samples() {
        let om = "# HELP a_ops Calls.\n# TYPE a_ops counter\n# UNIT a_ops calls\na_ops_total{x=\"1\"} 2\n\
                  # HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP a_ops_total Calls.\n# TYPE a_ops_total counter\na_ops_total{x=\"1\"} 2\n# HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n"
        );
    }

    #[test]
    fn the_address_is_an_ip_and_a_port() {
        assert_eq!(endpoint_address("127.0.0.1", 9090).unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(endpoint_address("::1", 1).unwrap().to_string(), "[::1]:1");
        assert!(endpoint_address("localhost", 1).is_err(), "a name, not an IP");
    }
}
