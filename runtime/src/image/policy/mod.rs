//! Image signature policy in containers-policy.json(5), the file CRI-O and podman read: a
//! `default` list of requirements and per-transport scopes, of which only the `docker`
//! transport concerns a registry pull. `load` reads and checks the file (a syntax error names
//! its line); `requirements_for` picks the scope that governs an image, most specific first.
//! Enforcing the requirements against a registry is `check.rs`; keys are `keys.rs`, cosign
//! signatures `sigstore.rs`, GPG simple signatures `simple.rs` and where those are kept
//! (registries.d lookasides) `lookaside.rs`.

pub mod check;
pub mod keys;
pub mod lookaside;
pub mod sigstore;
pub mod simple;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::reference::Reference;
use keys::PublicKey;

/// The system's policy file, read when lockstep.toml names none and it exists.
pub const SYSTEM_FILE: &str = "/etc/containers/policy.json";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the signature policy {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the signature policy {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the signature lookaside configuration (registries.d) is invalid: {0}")]
    Lookaside(String),
}

/// A policy, read and checked.
#[derive(Debug, Clone)]
pub struct Policy {
    pub path: PathBuf,
    default: Vec<Requirement>,
    /// The `docker` transport's scopes (`""` is the transport's own default).
    docker: BTreeMap<String, Vec<Requirement>>,
}

/// One requirement of a scope; an image must satisfy all of its scope's.
#[derive(Debug, Clone)]
pub enum Requirement {
    InsecureAcceptAnything,
    Reject,
    /// GPG simple signing: a signature by a key of the keyring, found in the lookaside.
    SignedBy(SignedByRequirement),
    SigstoreSigned(SigstoreRequirement),
}

/// `signedBy`: a simple signature by a key of `keys`, for an identity `signed_identity` accepts.
#[derive(Debug, Clone)]
pub struct SignedByRequirement {
    pub keys: Vec<pgp::composed::SignedPublicKey>,
    pub signed_identity: SignedIdentity,
}

/// `sigstoreSigned`: a cosign signature by one of `keys`, for an identity `signed_identity`
/// accepts.
#[derive(Debug, Clone)]
pub struct SigstoreRequirement {
    pub keys: Vec<PublicKey>,
    pub signed_identity: SignedIdentity,
    /// Set when the requirement asks for what this build cannot check (Fulcio certificates,
    /// Rekor bundles, a PKI): pulls it governs fail rather than pass unchecked.
    pub unsupported: Option<String>,
}

/// Which identities in a signature are accepted for the image being pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    ExactReference(String),
    ExactRepository(String),
    RemapIdentity { prefix: String, signed_prefix: String },
}

/// The scope that governs an image and its requirements.
#[derive(Debug)]
pub struct Governing<'a> {
    /// For messages: `docker scope "127.0.0.1:5000/signed"`, `the default`.
    pub scope: String,
    pub requirements: &'a [Requirement],
}

impl Policy {
    /// The policy of lockstep.toml's `image.signature_policy`: that file (which must exist)
    /// when named; else the system file when it exists; else none (every image accepted).
    pub fn configured(path: &Path) -> Result<Option<Policy>, PolicyError> {
        if !path.as_os_str().is_empty() {
            return Policy::load(path).map(Some);
        }
        let system = Path::new(SYSTEM_FILE);
        if system.exists() {
            Policy::load(system).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads and checks a policy file, its keys included.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read(path).map_err(|source| PolicyError::Read { path: path.into(), source })?;
        let invalid = |message: String| PolicyError::Invalid { path: path.into(), message };
        let raw: RawPolicy = serde_json::from_slice(&text).map_err(|e| invalid(json_error(&e)))?;
        let base = path.parent().unwrap_or(Path::new("/"));
        let default = raw.default.ok_or_else(|| invalid("it has no \"default\" list".into()))?;
        let default = build_list(default, base).map_err(|e| invalid(format!("default: {e}")))?;
        let mut docker = BTreeMap::new();
        for (transport, scopes) in raw.transports {
            for (scope, list) in scopes {
                let place = format!("transports.{transport}.{scope:?}");
                if transport == "docker" {
                    check_docker_scope(&scope).map_err(|e| invalid(format!("{place}: {e}")))?;
                }
                let list = build_list(list, base).map_err(|e| invalid(format!("{place}: {e}")))?;
                if transport == "docker" {
                    docker.insert(scope, list);
                }
            }
        }
        Ok(Policy { path: path.into(), default, docker })
    }

    /// The requirements that govern `image`: its own scope, its repository, each namespace
    /// above it, its registry, wildcard domains (`*.example.com`), the docker transport's
    /// default, then the policy's default — the first that the policy names.
    pub fn requirements_for(&self, image: &Reference) -> Governing<'_> {
        for scope in docker_scopes(image) {
            if let Some(list) = self.docker.get(&scope) {
                return Governing { scope: format!("docker scope {scope:?}"), requirements: list };
            }
        }
        if let Some(list) = self.docker.get("") {
            return Governing { scope: "the docker transport's default".into(), requirements: list };
        }
        Governing { scope: "the policy's default".into(), requirements: &self.default }
    }

    /// Requirements this build reads but cannot verify, named for a warning at start.
    pub fn unverifiable(&self) -> Vec<String> {
        let scopes = std::iter::once(("default".to_string(), &self.default))
            .chain(self.docker.iter().map(|(s, l)| (format!("docker {s:?}"), l)));
        let mut found = Vec::new();
        for (scope, list) in scopes {
            for requirement in list {
                if let Requirement::SigstoreSigned(SigstoreRequirement { unsupported: Some(why), .. }) = requirement {
                    found.push(format!("{scope}: {why}"));
                }
            }
        }
        found
    }
}

/// The scopes of a docker reference, most specific first (containers-policy.json(5)); the
/// lookasides of registries.d are matched the same way.
fn docker_scopes(image: &Reference) -> Vec<String> {
    let mut scopes = vec![image.to_string()];
    let mut name = image.name();
    loop {
        scopes.push(name.clone());
        match name.rfind('/') {
            Some(i) => name.truncate(i),
            None => break,
        }
    }
    // The registry without its port, then each parent domain as a wildcard.
    let mut host = image.registry.split(':').next().unwrap_or_default();
    while let Some(dot) = host.find('.') {
        host = &host[dot + 1..];
        scopes.push(format!("*.{host}"));
    }
    scopes
}

fn check_docker_scope(scope: &str) -> Result<(), String> {
    if scope.is_empty() {
        return Ok(());
    }
    if let Some(domain) = scope.strip_prefix("*.") {
        if domain.is_empty() || domain.contains(['/', ':', '*']) {
            return Err("a wildcard scope is `*.` and a domain, with no port or path".into());
        }
        return Ok(());
    }
    if scope.contains('*') || scope.chars().any(char::is_whitespace) {
        return Err("a scope is a registry, a repository or an image, or `*.domain`".into());
    }
    Ok(())
}

/// `serde_json`'s message, which ends with the line and column.
fn json_error(e: &serde_json::Error) -> String {
    if e.is_syntax() || e.is_eof() {
        format!("not valid JSON: {e}")
    } else {
        e.to_string()
    }
}

fn build_list(raw: Vec<RawRequirement>, base: &Path) -> Result<Vec<Requirement>, String> {
    if raw.is_empty() {
        return Err("an empty list of requirements (use [{\"type\": \"insecureAcceptAnything\"}] to accept)".into());
    }
    raw.into_iter().enumerate().map(|(i, r)| build(r, base).map_err(|e| format!("requirement {i}: {e}"))).collect()
}

fn build(raw: RawRequirement, base: &Path) -> Result<Requirement, String> {
    match raw {
        RawRequirement::InsecureAcceptAnything {} => Ok(Requirement::InsecureAcceptAnything),
        RawRequirement::Reject {} => Ok(Requirement::Reject),
        RawRequirement::SignedBy { key_type, key_path, key_paths, key_data, signed_identity } => {
            if key_type != "GPGKeys" {
                return Err(format!("signedBy keyType {key_type:?} is not known (GPGKeys is)"));
            }
            let sources = [key_path.is_some(), key_paths.is_some(), key_data.is_some()];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err("signedBy needs exactly one of keyPath, keyPaths, keyData".into());
            }
            let mut keys = Vec::new();
            for path in key_path.into_iter().chain(key_paths.into_iter().flatten()) {
                let path = if path.is_absolute() { path } else { base.join(path) };
                let bytes =
                    std::fs::read(&path).map_err(|e| format!("cannot read the keyring {}: {e}", path.display()))?;
                keys.extend(simple::parse_keyring(&bytes).map_err(|e| format!("the keyring {}: {e}", path.display()))?);
            }
            if let Some(data) = key_data {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| format!("keyData is not base64: {e}"))?;
                keys.extend(simple::parse_keyring(&bytes).map_err(|e| format!("keyData: {e}"))?);
            }
            let signed_identity = signed_identity.map(build_identity).transpose()?;
            Ok(Requirement::SignedBy(SignedByRequirement {
                keys,
                signed_identity: signed_identity.unwrap_or(SignedIdentity::MatchRepoDigestOrExact),
            }))
        }
        RawRequirement::SigstoreSigned(raw) => build_sigstore(raw, base).map(Requirement::SigstoreSigned),
    }
}

fn build_sigstore(raw: RawSigstore, base: &Path) -> Result<SigstoreRequirement, String> {
    let sources = [raw.key_path.is_some(), raw.key_paths.is_some(), raw.key_data.is_some(), raw.key_datas.is_some()];
    let with_keys = sources.iter().filter(|s| **s).count();
    let keyless = raw.fulcio.is_some() || raw.pki.is_some();
    if with_keys + usize::from(keyless) != 1 {
        return Err("sigstoreSigned needs exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio, pki".into());
    }
    let mut keys = Vec::new();
    let paths = raw.key_path.into_iter().chain(raw.key_paths.into_iter().flatten());
    for path in paths {
        let path = if path.is_absolute() { path } else { base.join(path) };
        let text = std::fs::read(&path).map_err(|e| format!("cannot read the key {}: {e}", path.display()))?;
        keys.extend(keys::parse_pem(&text).map_err(|e| format!("the key {}: {e}", path.display()))?);
    }
    for (i, data) in raw.key_data.into_iter().chain(raw.key_datas.into_iter().flatten()).enumerate() {
        let text = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("keyData {i} is not base64: {e}"))?;
        keys.extend(keys::parse_pem(&text).map_err(|e| format!("keyData {i}: {e}"))?);
    }
    let rekor = raw.rekor_public_key_path.is_some()
        || raw.rekor_public_key_paths.is_some()
        || raw.rekor_public_key_data.is_some()
        || raw.rekor_public_key_datas.is_some();
    let unsupported = if keyless {
        Some("sigstoreSigned with fulcio or pki (keyless signing) is not supported by lockstepd".to_string())
    } else if rekor {
        Some("sigstoreSigned with a Rekor public key (transparency log bundles) is not supported by lockstepd".into())
    } else {
        None
    };
    let signed_identity = raw.signed_identity.map(build_identity).transpose()?;
    Ok(SigstoreRequirement {
        keys,
        signed_identity: signed_identity.unwrap_or(SignedIdentity::MatchRepoDigestOrExact),
        unsupported,
    })
}

fn build_identity(raw: RawIdentity) -> Result<SignedIdentity, String> {
    let parse = |what: &str, text: &str| {
        super::reference::parse(text).map(|_| ()).map_err(|e| format!("signedIdentity {what}: {e}"))
    };
    Ok(match raw {
        RawIdentity::MatchExact {} => SignedIdentity::MatchExact,
        RawIdentity::MatchRepoDigestOrExact {} => SignedIdentity::MatchRepoDigestOrExact,
        RawIdentity::MatchRepository {} => SignedIdentity::MatchRepository,
        RawIdentity::ExactReference { docker_reference } => {
            parse("dockerReference", &docker_reference)?;
            let identity = sigstore::Identity::parse(&docker_reference)?;
            if identity.tag.is_none() && identity.digest.is_none() {
                return Err("signedIdentity exactReference needs a tag or a digest in dockerReference".into());
            }
            SignedIdentity::ExactReference(docker_reference)
        }
        RawIdentity::ExactRepository { docker_repository } => {
            parse("dockerRepository", &docker_repository)?;
            SignedIdentity::ExactRepository(docker_repository)
        }
        RawIdentity::RemapIdentity { prefix, signed_prefix } => {
            if prefix.is_empty() || signed_prefix.is_empty() {
                return Err("signedIdentity remapIdentity needs prefix and signedPrefix".into());
            }
            SignedIdentity::RemapIdentity { prefix, signed_prefix }
        }
    })
}

// --- The file as written -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<Vec<RawRequirement>>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<RawRequirement>>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields, rename_all_fields = "camelCase")]
enum RawRequirement {
    #[serde(rename = "insecureAcceptAnything")]
    InsecureAcceptAnything {},
    #[serde(rename = "reject")]
    Reject {},
    #[serde(rename = "signedBy")]
    SignedBy {
        key_type: String,
        key_path: Option<PathBuf>,
        key_paths: Option<Vec<PathBuf>>,
        key_data: Option<String>,
        signed_identity: Option<RawIdentity>,
    },
    #[serde(rename = "sigstoreSigned")]
    SigstoreSigned(RawSigstore),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSigstore {
    key_path: Option<PathBuf>,
    key_paths: Option<Vec<PathBuf>>,
    key_data: Option<String>,
    key_datas: Option<Vec<String>>,
    fulcio: Option<serde_json::Value>,
    pki: Option<serde_json::Value>,
    rekor_public_key_path: Option<PathBuf>,
    rekor_public_key_paths: Option<Vec<PathBuf>>,
    rekor_public_key_data: Option<String>,
    rekor_public_key_datas: Option<Vec<String>>,
    signed_identity: Option<RawIdentity>,
}

#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields, rename_all_fields = "camelCase")]
enum RawIdentity {
    #[serde(rename = "matchExact")]
    MatchExact {},
    #[serde(rename = "matchRepoDigestOrExact")]
    MatchRepoDigestOrExact {},
    #[serde(rename = "matchRepository")]
    MatchRepository {},
    #[serde(rename = "exactReference")]
    ExactReference { docker_reference: String },
    #[serde(rename = "exactRepository")]
    ExactRepository { docker_repository: String },
    #[serde(rename = "remapIdentity")]
    RemapIdentity { prefix: String, signed_prefix: String },
}

#[cfg(test)]
mod tests;
