//! What a test gets: a client that speaks as the chosen minor's kubelet, the endpoint, and
//! what the runtime said about itself before the run.

use std::time::Duration;

use lockstep_cri::{model, CriClient, Minor};

use super::Failure;

/// The runtime under test, as its Version answer describes it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RuntimeIdentity {
    pub name: String,
    pub version: String,
    pub api_version: String,
    /// The minor the runtime says it is pinned to (lockstepd: runtime_version "…+k8s.1.NN").
    pub pinned_minor: Option<String>,
}

impl RuntimeIdentity {
    pub fn from_version(v: &model::VersionResponse) -> Self {
        let pinned_minor =
            v.runtime_version.split_once("+k8s.").and_then(|(_, m)| m.parse::<Minor>().ok()).map(|m| m.to_string());
        RuntimeIdentity {
            name: v.runtime_name.clone(),
            version: v.runtime_version.clone(),
            api_version: v.runtime_api_version.clone(),
            pinned_minor,
        }
    }
}

/// Everything a test body may use. Cheap to clone: every test gets its own.
#[derive(Clone)]
pub struct Ctx {
    pub minor: Minor,
    pub endpoint: String,
    pub runtime: RuntimeIdentity,
    /// Which optional RPCs the runtime serves (probed once per run).
    pub surface: crate::surface::Surface,
    /// The runtime's Status at the start of the run (features and handlers), as this minor sees it.
    pub status: model::StatusResponse,
    channel: tonic::transport::Channel,
    restarter: Option<std::sync::Arc<dyn crate::target::Restarter>>,
    /// The registries of the run, for tests that pull.
    pub registry: Option<std::sync::Arc<lockstep_testkit::fixtures::env::RegistryEnv>>,
}

impl Ctx {
    pub fn new(
        minor: Minor,
        endpoint: String,
        runtime: RuntimeIdentity,
        surface: crate::surface::Surface,
        status: model::StatusResponse,
        channel: tonic::transport::Channel,
    ) -> Self {
        Ctx { minor, endpoint, runtime, surface, status, channel, restarter: None, registry: None }
    }

    pub fn with_registry(
        mut self,
        registry: Option<std::sync::Arc<lockstep_testkit::fixtures::env::RegistryEnv>>,
    ) -> Self {
        self.registry = registry;
        self
    }

    /// Lets tests kill and restart the runtime (an embedded lockstepd; not a given endpoint).
    pub fn with_restarter(mut self, restarter: std::sync::Arc<dyn crate::target::Restarter>) -> Self {
        self.restarter = Some(restarter);
        self
    }

    pub fn can_restart(&self) -> bool {
        self.restarter.is_some()
    }

    /// Kills the runtime (SIGKILL) and starts it again on the same state.
    pub async fn restart_runtime(&self) -> Result<(), Failure> {
        let restarter = self.restarter.as_ref().ok_or_else(|| Failure::skip("the runtime cannot be restarted"))?;
        restarter.restart().await.map_err(|e| Failure::fail(format!("restarting the runtime failed: {e:#}")))
    }

    /// The pid of a runtime this run can restart (it changes with each restart); None for a
    /// given endpoint.
    pub async fn restartable_pid(&self) -> Option<u32> {
        match &self.restarter {
            Some(restarter) => restarter.pid().await,
            None => None,
        }
    }

    /// Kills the runtime (SIGKILL) and leaves it down until `start_runtime`.
    pub async fn kill_runtime(&self) -> Result<(), Failure> {
        let restarter = self.restarter.as_ref().ok_or_else(|| Failure::skip("the runtime cannot be restarted"))?;
        restarter.kill().await.map_err(|e| Failure::fail(format!("killing the runtime failed: {e:#}")))
    }

    /// Starts the runtime that `kill_runtime` ended, on the same state.
    pub async fn start_runtime(&self) -> Result<(), Failure> {
        let restarter = self.restarter.as_ref().ok_or_else(|| Failure::skip("the runtime cannot be restarted"))?;
        restarter.start().await.map_err(|e| Failure::fail(format!("starting the runtime again failed: {e:#}")))
    }

    /// The connection, for clients of other kinds (the model's own, unwindowed).
    pub fn channel(&self) -> tonic::transport::Channel {
        self.channel.clone()
    }

    /// A client that speaks as this run's kubelet.
    pub fn kubelet(&self) -> CriClient {
        let mut client =
            CriClient::new(self.minor, self.channel.clone()).expect("the conformance build carries every minor");
        client.set_timeout(Some(Duration::from_secs(60)));
        client
    }

    /// A client that speaks as the kubelet of another minor.
    pub fn kubelet_of(&self, minor: Minor) -> CriClient {
        CriClient::new(minor, self.channel.clone()).expect("the conformance build carries every minor")
    }
}

/// Turns a gRPC error into a failure that says which call failed and, where the code tells
/// something about the runtime's CRI surface, what that means.
pub fn call_failed(rpc: &str, status: &tonic::Status) -> Failure {
    let mut reason = format!("{rpc} failed: {:?}: {}", status.code(), status.message());
    if status.code() == tonic::Code::Unimplemented {
        let first = Minor::ALL.into_iter().find(|m| m.has_rpc(rpc));
        match first {
            Some(Minor::V1_30) => reason.push_str(&format!(
                " — the runtime does not serve {rpc}, which every minor from 1.30 on has: it speaks an older CRI or has not built it"
            )),
            Some(m) => reason.push_str(&format!(" — the runtime does not serve {rpc}, which Kubernetes {m} added")),
            None => {}
        }
    }
    Failure::Fail(reason)
}
