//! The faults `chaos` makes besides killing the daemon, one module each: a helper of the
//! runtime or its OCI runtime SIGKILLed mid-call (`helpers`), the runtime's disk filled
//! (`disk`), the registry connection cut in the middle of a layer (`registry`). Here: the kinds
//! as the command line names them, and what every fault round reports.

pub mod disk;
pub mod helpers;
pub mod registry;

use std::time::Duration;

use lockstep_cri::CriClient;

/// How long a call made to check a fault's outcome may take before it counts as hung.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// One kind of fault; the seeded generator picks among those selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the daemon and start it again (chaos's first fault).
    Daemon,
    /// SIGKILL one of the runtime's helpers: a lockstep-monitor (or its exec helper), a shim.
    Monitor,
    /// SIGKILL an OCI runtime process (crun, runc) that the daemon or a helper is running.
    OciRuntime,
    /// Fill the runtime's disk while pulls, container writes and logs go on, then free it.
    DiskFull,
    /// Pull through a proxy that cuts the registry connection in the middle of a layer.
    RegistryDrop,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] =
        [FaultKind::Daemon, FaultKind::Monitor, FaultKind::OciRuntime, FaultKind::DiskFull, FaultKind::RegistryDrop];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Daemon => "daemon",
            FaultKind::Monitor => "monitor",
            FaultKind::OciRuntime => "oci-runtime",
            FaultKind::DiskFull => "disk-full",
            FaultKind::RegistryDrop => "registry-drop",
        }
    }

    pub fn parse(text: &str) -> Result<FaultKind, String> {
        FaultKind::ALL.into_iter().find(|k| k.name() == text).ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown fault {text:?}; the faults are {}", names.join(", "))
        })
    }
}

/// What one fault round saw: what was done, each outcome, and what was wrong.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub what: String,
    pub outcomes: Vec<String>,
    pub findings: Vec<String>,
}

impl Round {
    pub fn new(what: impl Into<String>) -> Round {
        Round { what: what.into(), ..Default::default() }
    }
    pub fn saw(&mut self, outcome: impl Into<String>) {
        self.outcomes.push(outcome.into());
    }
    pub fn wrong(&mut self, finding: impl Into<String>) {
        self.findings.push(finding.into());
    }
}

/// A client whose calls give up after ANSWER_DEADLINE (a hang is then DeadlineExceeded).
pub fn bounded(client: CriClient) -> CriClient {
    let mut client = client;
    client.set_timeout(Some(ANSWER_DEADLINE));
    client
}

/// A gRPC error as a short line: code and first line of the message.
pub fn line(status: &tonic::Status) -> String {
    let message: String = status.message().lines().next().unwrap_or_default().chars().take(240).collect();
    format!("{:?}: {message}", status.code())
}

/// Whether an error answers clearly: a code that says what kind of failure it was, and a
/// message (Unknown or an empty message does not; DeadlineExceeded here means a hang).
pub fn clear(status: &tonic::Status) -> bool {
    !matches!(status.code(), tonic::Code::Ok | tonic::Code::Unknown | tonic::Code::DeadlineExceeded)
        && !status.message().trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_is_parsed_back_from_its_name_and_others_are_refused_with_the_list() {
        for kind in FaultKind::ALL {
            assert_eq!(FaultKind::parse(kind.name()), Ok(kind));
        }
        let refused = FaultKind::parse("power-cut").unwrap_err();
        assert!(refused.contains("power-cut") && refused.contains("registry-drop"), "{refused}");
    }

    #[test]
    fn an_unknown_code_or_a_hang_is_not_a_clear_answer() {
        assert!(clear(&tonic::Status::resource_exhausted("no space left on device")));
        assert!(!clear(&tonic::Status::unknown("something")));
        assert!(!clear(&tonic::Status::deadline_exceeded("timeout")));
        assert!(!clear(&tonic::Status::internal("  ")));
    }
}
