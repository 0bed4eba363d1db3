//! The OCI and Docker schema 2 documents a pull reads: image index / manifest list, manifest,
//! image config; and picking the linux manifest of the host's architecture. Pure; no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::image::reference::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// What a pull accepts, most preferred first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image index or a Docker manifest list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

/// An image manifest, OCI or Docker schema 2.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config that a runtime uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
}

/// What the container runs with (the config's `config` object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// What a manifest endpoint returned, by its media type.
#[derive(Debug, Clone)]
pub enum Document {
    Index(Index),
    Manifest(Manifest),
}

/// Decodes a manifest response; `content_type` is the response header (may be empty or wrong,
/// so the document's own mediaType and shape decide when they can).
pub fn decode(content_type: &str, bytes: &[u8]) -> Result<Document, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        schema_version: u32,
        #[serde(default)]
        media_type: String,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not valid JSON: {e}"))?;
    let media_type = if probe.media_type.is_empty() { content_type } else { probe.media_type.as_str() };
    let media_type = media_type.split(';').next().unwrap_or("").trim();
    if probe.schema_version == 1 || media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
        return Err("Docker schema 1 manifests are not supported (deprecated since 2017); push the image again with a current tool".into());
    }
    let is_index =
        [OCI_INDEX, DOCKER_LIST].contains(&media_type) || (probe.manifests.is_some() && probe.layers.is_none());
    if is_index {
        serde_json::from_slice(bytes).map(Document::Index).map_err(|e| format!("invalid image index: {e}"))
    } else if [OCI_MANIFEST, DOCKER_MANIFEST].contains(&media_type) || probe.layers.is_some() {
        serde_json::from_slice(bytes).map(Document::Manifest).map_err(|e| format!("invalid image manifest: {e}"))
    } else {
        Err(format!("unsupported manifest media type {media_type:?}"))
    }
}

/// The host's architecture as OCI names it, and its variant where that matters.
pub fn host_platform() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    }
}

/// The entry of an index for linux on `arch` (and `variant`, when the index gives one).
pub fn pick<'a>(index: &'a Index, arch: &str, variant: Option<&str>) -> Result<&'a Descriptor, String> {
    let linux = |d: &&Descriptor| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch);
    let exact = index.manifests.iter().filter(linux).find(|d| {
        let v = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        variant.is_none() || v.is_none() || v == variant
    });
    exact.ok_or_else(|| {
        let offered: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| {
                format!(
                    "{}/{}{}",
                    p.os,
                    p.architecture,
                    p.variant.as_deref().map(|v| format!("/{v}")).unwrap_or_default()
                )
            })
            .collect();
        format!("the image index has no manifest for linux/{arch} (it offers {})", offered.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn an_index_yields_the_linux_manifest_of_the_host() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"arm","os":"linux","variant":"v6"}}}},
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}},
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"windows"}}}},
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            digest('a'),
            digest('b'),
            digest('c'),
            digest('d')
        );
        let Document::Index(index) = decode("", json.as_bytes()).unwrap() else { panic!("not an index") };
        assert_eq!(pick(&index, "amd64", None).unwrap().digest.to_string(), digest('d'));
        assert_eq!(pick(&index, "arm", Some("v7")).unwrap().digest.to_string(), digest('b'));
        let err = pick(&index, "riscv64", None).unwrap_err();
        assert!(err.contains("linux/riscv64") && err.contains("linux/arm/v7"), "{err}");
    }

    #[test]
    fn manifests_of_both_kinds_decode_and_schema1_is_refused() {
        let json = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":5}},"layers":[]}}"#,
            digest('e')
        );
        let decoded = decode(OCI_MANIFEST, json.as_bytes());
        assert!(matches!(decoded, Ok(Document::Manifest(_))), "{decoded:?}");
        assert!(matches!(decode("text/plain", json.as_bytes()), Ok(Document::Manifest(_))));
        let err = decode("", br#"{"schemaVersion":1,"fsLayers":[]}"#).unwrap_err();
        assert!(err.contains("schema 1"), "{err}");
        assert!(decode("", b"<html>").unwrap_err().contains("not valid JSON"));
    }
}
