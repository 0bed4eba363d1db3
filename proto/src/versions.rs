//! The manifests in versions/ (one per minor), embedded at build time: the upstream cri-api
//! tag, the RPC lists, what the minor adds and which kubelet feature uses it, its status.

use serde::Deserialize;

/// What versions/1.NN.toml says about one minor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub minor: String,
    pub cri_api_tag: String,
    pub status: Status,
    #[serde(default)]
    pub note: Option<String>,
    pub image_service: Vec<String>,
    pub runtime_service: Vec<String>,
    pub adds: Vec<Addition>,
    /// RPCs older than this minor with the minor that added each (the oldest manifest only).
    #[serde(default)]
    pub added_before: std::collections::BTreeMap<String, String>,
}

/// Whether upstream has released the minor's cri-api, or only a pre-release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Released,
    Provisional,
}

/// One thing that a minor adds to the CRI, and the kubelet feature that uses it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addition {
    pub what: String,
    pub kubelet_feature: String,
}

impl Manifest {
    /// Every RPC as `Service.Rpc`, sorted: the form of `Minor::rpcs`.
    pub fn rpcs(&self) -> Vec<String> {
        let runtime = self.runtime_service.iter().map(|r| format!("RuntimeService.{r}"));
        let image = self.image_service.iter().map(|r| format!("ImageService.{r}"));
        let mut all: Vec<String> = image.chain(runtime).collect();
        all.sort();
        all
    }
}

/// The Kubernetes minor that added `rpc` (a bare RPC name): the first carried minor whose
/// proto has it, or what the oldest manifest says of an older one. None for an RPC no carried
/// minor has.
pub fn added_in(rpc: &str) -> Option<String> {
    let oldest = crate::Minor::ALL[0];
    if let Some(minor) = oldest.manifest().added_before.get(rpc) {
        return Some(minor.clone());
    }
    crate::Minor::ALL.iter().find(|m| m.has_rpc(rpc)).map(|m| m.to_string())
}

pub(crate) const SOURCES: [&str; 8] = [
    include_str!("../../versions/1.30.toml"),
    include_str!("../../versions/1.31.toml"),
    include_str!("../../versions/1.32.toml"),
    include_str!("../../versions/1.33.toml"),
    include_str!("../../versions/1.34.toml"),
    include_str!("../../versions/1.35.toml"),
    include_str!("../../versions/1.36.toml"),
    include_str!("../../versions/1.37.toml"),
];

#[cfg(test)]
mod tests {
    use crate::Minor;

    #[test]
    fn each_manifest_lists_exactly_the_rpcs_compiled_from_its_proto() {
        for minor in Minor::ALL {
            let manifest = minor.manifest();
            assert_eq!(manifest.minor, minor.to_string());
            let compiled: Vec<String> = minor.rpcs().iter().map(|r| r.to_string()).collect();
            assert_eq!(manifest.rpcs(), compiled, "versions/{minor}.toml and proto/cri/{minor}/api.proto disagree");
        }
    }

    #[test]
    fn each_rpc_is_added_by_the_first_minor_that_has_it_or_by_what_the_oldest_says() {
        assert_eq!(super::added_in("RuntimeConfig").as_deref(), Some("1.28"));
        assert_eq!(super::added_in("Version").as_deref(), Some("1.30"));
        assert_eq!(super::added_in("UpdatePodSandboxResources").as_deref(), Some("1.33"));
        assert_eq!(super::added_in("StreamImages").as_deref(), Some("1.36"));
        assert_eq!(super::added_in("NoSuchRpc"), None);
        for (rpc, minor) in &Minor::ALL[0].manifest().added_before {
            assert!(Minor::ALL[0].has_rpc(rpc), "{rpc} is said to be older than 1.30 but 1.30 lacks it");
            assert!(minor.as_str() < "1.30", "{rpc}: {minor}");
        }
        for later in &Minor::ALL[1..] {
            assert!(later.manifest().added_before.is_empty(), "only the oldest manifest says what came before it");
        }
    }

    #[test]
    fn only_the_newest_minor_is_provisional() {
        for minor in Minor::ALL {
            let provisional = minor.manifest().status == super::Status::Provisional;
            assert_eq!(provisional, minor == Minor::V1_37, "{minor}");
        }
    }

    #[test]
    fn every_minor_with_a_wire_change_says_what_uses_it() {
        for pair in Minor::ALL.windows(2) {
            let (older, newer) = (pair[0], pair[1]);
            if older.rpcs() != newer.rpcs() {
                assert!(!newer.manifest().adds.is_empty(), "{newer} adds RPCs but lists no additions");
            }
        }
    }
}
