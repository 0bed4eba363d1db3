//! Where simple signatures are kept: containers-registries.d(5), the `*.yaml` files of a
//! directory (default `/etc/containers/registries.d`) that give a `lookaside` (older name:
//! `sigstore`) URL per docker scope and a `default-docker` one; with none,
//! `file:///var/lib/containers/sigstore`, as containers/image reads. An image's signatures are
//! `<lookaside>/<repository path>@sha256=<hex>/signature-<n>`, n from 1 until one is missing.
//! Reads those files and fetches over file://, http:// and https://.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::simple::MAX_SIGNATURE_BYTES;
use crate::image::reference::{Digest, Reference};

/// The directory read when lockstep.toml names none.
pub const SYSTEM_DIR: &str = "/etc/containers/registries.d";
/// The lookaside used where no file gives one.
pub const DEFAULT_LOOKASIDE: &str = "file:///var/lib/containers/sigstore";
/// Signatures read per image at most.
const MAX_SIGNATURES: usize = 16;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    default_docker: Option<Entry>,
    #[serde(default)]
    docker: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Entry {
    lookaside: Option<String>,
    sigstore: Option<String>,
    // Read so that files written for podman load; writing is not lockstepd's business.
    #[allow(dead_code)]
    lookaside_staging: Option<String>,
    #[allow(dead_code)]
    sigstore_staging: Option<String>,
    #[allow(dead_code)]
    use_sigstore_attachments: Option<bool>,
}

impl Entry {
    fn url(&self) -> Option<&str> {
        self.lookaside.as_deref().or(self.sigstore.as_deref())
    }
}

/// The lookaside configuration of a directory.
#[derive(Debug, Default)]
pub struct Lookaside {
    default_docker: Option<String>,
    docker: BTreeMap<String, String>,
}

impl Lookaside {
    /// Reads every `*.yaml` of `dir` (empty: the system directory); a missing directory is no
    /// configuration. Two files naming one scope is an error, as in containers/image.
    pub fn load(dir: &Path) -> Result<Lookaside, String> {
        let dir = if dir.as_os_str().is_empty() { Path::new(SYSTEM_DIR) } else { dir };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lookaside::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
        };
        let mut files: Vec<PathBuf> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "yaml")).collect();
        files.sort();
        let mut config = Lookaside::default();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let file: File = serde_yaml::from_str(&text).map_err(|e| format!("{} is invalid: {e}", path.display()))?;
            if let Some(url) = file.default_docker.as_ref().and_then(Entry::url) {
                if config.default_docker.is_some() {
                    return Err(format!("{}: default-docker is set in another file too", path.display()));
                }
                config.default_docker = Some(url.to_string());
            }
            for (scope, entry) in file.docker {
                let Some(url) = entry.url() else { continue };
                if config.docker.insert(scope.clone(), url.to_string()).is_some() {
                    return Err(format!("{}: docker scope {scope:?} is set in another file too", path.display()));
                }
            }
        }
        Ok(config)
    }

    /// The lookaside base URL for `image`: its most specific scope's, else the default's.
    pub fn base_for(&self, image: &Reference) -> &str {
        super::docker_scopes(image)
            .iter()
            .find_map(|scope| self.docker.get(scope))
            .or(self.default_docker.as_ref())
            .map_or(DEFAULT_LOOKASIDE, String::as_str)
    }

    /// The URL of the `n`th (from 1) signature of `image`'s manifest `manifest`.
    pub fn signature_url(&self, image: &Reference, manifest: &Digest, n: usize) -> String {
        let base = self.base_for(image).trim_end_matches('/');
        format!("{base}/{}@sha256={}/signature-{n}", image.repository, manifest.hex())
    }

    /// The signatures of `image`'s manifest, in order, until the first missing one.
    pub async fn signatures(&self, image: &Reference, manifest: &Digest) -> Result<Vec<Vec<u8>>, String> {
        let mut found = Vec::new();
        for n in 1..=MAX_SIGNATURES {
            let url = self.signature_url(image, manifest, n);
            match fetch(&url).await? {
                Some(bytes) => found.push(bytes),
                None => break,
            }
        }
        Ok(found)
    }
}

/// One signature: None when there is none at `url`.
async fn fetch(url: &str) -> Result<Option<Vec<u8>>, String> {
    if let Some(path) = url.strip_prefix("file://") {
        let path = PathBuf::from(path);
        return match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read the signature {}: {e}", path.display())),
            Ok(meta) if meta.len() > MAX_SIGNATURE_BYTES as u64 => {
                Err(format!("the signature {} is larger than {MAX_SIGNATURE_BYTES} bytes", path.display()))
            }
            Ok(_) => std::fs::read(&path).map(Some).map_err(|e| format!("cannot read {}: {e}", path.display())),
        };
    }
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!("the lookaside {url:?} is neither file://, http:// nor https://"));
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let response = client.get(url).send().await.map_err(|e| format!("cannot fetch the signature {url}: {e}"))?;
    match response.status() {
        reqwest::StatusCode::NOT_FOUND => Ok(None),
        s if s.is_success() => {
            let bytes = response.bytes().await.map_err(|e| format!("cannot read the signature {url}: {e}"))?;
            if bytes.len() > MAX_SIGNATURE_BYTES {
                return Err(format!("the signature {url} is larger than {MAX_SIGNATURE_BYTES} bytes"));
            }
            Ok(Some(bytes.to_vec()))
        }
        s => Err(format!("fetching the signature {url} answered HTTP {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_scope_gives_the_lookaside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "default-docker:\n  lookaside: https://sigs.example.com/all\ndocker:\n  r.io/team:\n    lookaside: file:///srv/team\n  r.io:\n    sigstore: https://r.io/sigs\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("ignored.txt"), "not yaml: [").unwrap();
        let config = Lookaside::load(dir.path()).unwrap();
        let image = |s: &str| crate::image::reference::parse(s).unwrap().reference;
        assert_eq!(config.base_for(&image("r.io/team/app:1")), "file:///srv/team");
        assert_eq!(config.base_for(&image("r.io/other:1")), "https://r.io/sigs", "the legacy key");
        assert_eq!(config.base_for(&image("q.io/x:1")), "https://sigs.example.com/all");
        let digest = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        assert_eq!(
            config.signature_url(&image("r.io/team/app:1"), &digest, 2),
            format!("file:///srv/team/team/app@sha256={}/signature-2", "ab".repeat(32))
        );
        assert_eq!(Lookaside::default().base_for(&image("q.io/x:1")), DEFAULT_LOOKASIDE);
    }

    #[test]
    fn a_scope_in_two_files_and_bad_yaml_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "docker:\n  r.io:\n    lookaside: file:///a\n").unwrap();
        std::fs::write(dir.path().join("b.yaml"), "docker:\n  r.io:\n    lookaside: file:///b\n").unwrap();
        let err = Lookaside::load(dir.path()).unwrap_err();
        assert!(err.contains("b.yaml") && err.contains("r.io"), "{err}");
        std::fs::write(dir.path().join("b.yaml"), "docker: [\n").unwrap();
        assert!(Lookaside::load(dir.path()).unwrap_err().contains("b.yaml"));
        assert!(Lookaside::load(&dir.path().join("absent")).is_ok(), "no directory, no configuration");
    }
}
