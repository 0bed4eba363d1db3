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
