//! The test framework: a test is written once against the model, tagged with the first
//! Kubernetes minor it applies to and what it needs from the runtime; a run for one minor
//! sends every call through that minor's window, so the runtime sees what that minor's
//! kubelet would send. Outcomes: Passed, Failed(reason) or Skipped(reason).

mod context;
pub mod raw_grpc;
mod runner;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use lockstep_cri::Minor;

pub use context::{Ctx, RuntimeIdentity};
pub use runner::{run, RunOptions, Selection};

/// What a test body returns: Ok is a pass.
pub type TestResult = Result<(), Failure>;
pub type TestFuture = Pin<Box<dyn Future<Output = TestResult> + Send>>;

/// Why a test did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The runtime did something a kubelet would not accept.
    Fail(String),
    /// The test does not apply to this runtime; the reason says why.
    Skip(String),
}

impl Failure {
    pub fn fail(reason: impl Into<String>) -> Self {
        Failure::Fail(reason.into())
    }
    pub fn skip(reason: impl Into<String>) -> Self {
        Failure::Skip(reason.into())
    }
}

/// Fails the test with a formatted reason unless the condition holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($reason:tt)+) => {
        if !$cond {
            return Err($crate::framework::Failure::Fail(format!($($reason)+)));
        }
    };
}

/// Something a test needs from the runtime beyond the minor's RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The runtime says which Kubernetes minor it is pinned to (runtime_version "…+k8s.1.NN").
    PinnedMinor,
    /// An RPC whose absence the kubelet tolerates (it falls back): RuntimeConfig, Stream*,
    /// UpdatePodSandboxResources. A runtime without it is skipped, not failed; the report's
    /// RPC surface line says what it lacks.
    Rpc(&'static str),
    /// A feature the runtime reports in Status (features, or its default handler's features).
    Feature(Feature),
    /// A runtime handler (RuntimeClass) the runtime reports in Status.
    Handler(&'static str),
    /// The harness can kill and restart the runtime: only an embedded lockstepd, not a given
    /// endpoint (whose process the harness does not own).
    Restart,
    /// A command run inside a pod (ExecSync in a container of the shell fixture image): needs
    /// the fixture registry, and the runtime's containers and ExecSync (core RPCs, so a runtime
    /// without them fails such a test rather than skipping it).
    ExecInPod,
    /// A registry holding the fixture images (started for the run, or `--registry`).
    Registry,
    /// A registry started for this run, whose storage the test may tamper with.
    LocalRegistry,
    /// A registry that wants credentials (started for this run).
    AuthRegistry,
}

/// The runtime features that Status reports (1.30+ handler features, 1.31+ runtime features).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    SupplementalGroupsPolicy,
    UserNamespacesHostNetwork,
    RecursiveReadOnlyMounts,
    UserNamespaces,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::SupplementalGroupsPolicy => "supplemental_groups_policy",
            Feature::UserNamespacesHostNetwork => "user_namespaces_host_network",
            Feature::RecursiveReadOnlyMounts => "recursive_read_only_mounts (default handler)",
            Feature::UserNamespaces => "user_namespaces (default handler)",
        }
    }

    /// Whether a Status answer reports the feature.
    pub fn reported_by(self, status: &lockstep_cri::model::StatusResponse) -> bool {
        let features = status.features.as_ref();
        let default_handler =
            status.runtime_handlers.iter().find(|h| h.name.is_empty()).and_then(|h| h.features.as_ref());
        match self {
            Feature::SupplementalGroupsPolicy => features.is_some_and(|f| f.supplemental_groups_policy),
            Feature::UserNamespacesHostNetwork => features.is_some_and(|f| f.user_namespaces_host_network),
            Feature::RecursiveReadOnlyMounts => default_handler.is_some_and(|f| f.recursive_read_only_mounts),
            Feature::UserNamespaces => default_handler.is_some_and(|f| f.user_namespaces),
        }
    }
}

/// One conformance test.
#[derive(Clone)]
pub struct Test {
    /// The area (suite) it belongs to, e.g. "runtime-info".
    pub area: &'static str,
    /// What it checks, as a sentence a release engineer can read.
    pub name: &'static str,
    /// The first minor it applies to.
    pub since: Minor,
    pub needs: &'static [Need],
    /// How long it may take before it counts as failed.
    pub timeout: Duration,
    pub body: fn(Ctx) -> TestFuture,
}

impl Test {
    /// `area/name`, what --focus and --skip match against.
    pub fn id(&self) -> String {
        format!("{}/{}", self.area, self.name)
    }
}

/// How one test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
    /// Failed, as the runtime's expected-failures list says it does (and why).
    ExpectedFailure {
        expected: String,
        actual: String,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::Skipped(_) => "skipped",
            Outcome::ExpectedFailure { .. } => "expected-failure",
        }
    }
    pub fn reason(&self) -> String {
        match self {
            Outcome::Passed => String::new(),
            Outcome::Failed(r) | Outcome::Skipped(r) => r.clone(),
            Outcome::ExpectedFailure { expected, actual } => format!("expected: {expected} (got: {actual})"),
        }
    }
}

/// A test's outcome and how long it took.
#[derive(Debug, Clone)]
pub struct TestReport {
    pub area: &'static str,
    pub name: &'static str,
    pub since: Minor,
    pub outcome: Outcome,
    pub duration: Duration,
}

pub use context::call_failed;
pub use runner::profile;
