//! Cosign signatures as a registry stores them: the manifest tagged `sha256-<hex>.sig` beside
//! the image, whose layers are "simple signing" payloads, each with its signature in the
//! `dev.cosignproject.cosign/signature` annotation. Parsing the payload and deciding whether
//! its identity is acceptable (the policy's `signedIdentity`) are here; pure, no I/O.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::SignedIdentity;
use crate::image::reference::{Digest, Reference, Target};

/// The media type of a layer that is a signed payload.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The payload's `critical.type`.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// The tag under which an image's signatures are stored.
pub fn signature_tag(manifest: &Digest) -> String {
    format!("sha256-{}.sig", manifest.hex())
}

/// The signature manifest, as much of it as verification reads.
#[derive(Debug, Deserialize)]
pub struct SignatureManifest {
    #[serde(default)]
    pub layers: Vec<SignatureLayer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureLayer {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// What a payload says: the image it signs.
#[derive(Debug, PartialEq, Eq)]
pub struct Payload {
    pub docker_reference: String,
    pub manifest_digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    critical: RawCritical,
    #[serde(default)]
    #[allow(dead_code)]
    optional: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCritical {
    identity: RawIdentity,
    image: RawImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// A cosign payload's JSON, strictly: every critical field present and nothing unknown in them.
pub fn parse_payload(bytes: &[u8]) -> Result<Payload, String> {
    parse_payload_of(bytes, PAYLOAD_TYPE)
}

/// A payload of type `kind` (cosign's and simple signing's differ only in it).
pub fn parse_payload_of(bytes: &[u8], kind: &str) -> Result<Payload, String> {
    let raw: RawPayload = serde_json::from_slice(bytes).map_err(|e| format!("the signed payload is invalid: {e}"))?;
    if raw.critical.kind != kind {
        return Err(format!("the signed payload's type is {:?}, not {kind:?}", raw.critical.kind));
    }
    Ok(Payload {
        docker_reference: raw.critical.identity.docker_reference,
        manifest_digest: raw.critical.image.docker_manifest_digest,
    })
}

/// A docker reference as a signature or policy writes it: the repository, with a tag or a
/// digest only where one was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `registry/repository`, normalised (`docker.io/library/busybox`).
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Identity {
    pub fn parse(text: &str) -> Result<Identity, String> {
        let parsed = crate::image::reference::parse(text).map_err(|e| e.to_string())?;
        if !parsed.qualified {
            return Err(format!("{text:?} names no registry"));
        }
        let before_digest = text.split('@').next().unwrap_or(text);
        let written_tag = before_digest.rsplit('/').next().is_some_and(|last| last.contains(':'));
        let reference = parsed.reference;
        let (tag, digest) = match &reference.target {
            Target::Digest(d) => (None, Some(d.as_str().to_string())),
            Target::Tag(t) if written_tag => (Some(t.clone()), None),
            Target::Tag(_) => (None, None),
        };
        Ok(Identity { name: reference.name(), tag, digest })
    }

    pub fn of(image: &Reference) -> Identity {
        let (tag, digest) = match &image.target {
            Target::Tag(t) => (Some(t.clone()), None),
            Target::Digest(d) => (None, Some(d.as_str().to_string())),
        };
        Identity { name: image.name(), tag, digest }
    }
}

/// Whether a signature for `signed` is acceptable for `image` under `rule`; the reason if not.
pub fn identity_accepted(rule: &SignedIdentity, image: &Reference, signed: &Identity) -> Result<(), String> {
    let image_identity = Identity::of(image);
    let refuse = |wanted: &str| Err(format!("it signs {}, not {wanted}", show(signed)));
    match rule {
        SignedIdentity::MatchExact => {
            if &image_identity == signed {
                Ok(())
            } else {
                refuse(&image.to_string())
            }
        }
        SignedIdentity::MatchRepoDigestOrExact => repo_digest_or_exact(&image_identity, signed),
        SignedIdentity::MatchRepository => {
            if image_identity.name == signed.name {
                Ok(())
            } else {
                refuse(&image_identity.name)
            }
        }
        SignedIdentity::ExactReference(wanted) => {
            let wanted_identity = Identity::parse(wanted)?;
            if &wanted_identity == signed {
                Ok(())
            } else {
                refuse(wanted)
            }
        }
        SignedIdentity::ExactRepository(wanted) => {
            let wanted_identity = Identity::parse(wanted)?;
            if wanted_identity.name == signed.name {
                Ok(())
            } else {
                refuse(&wanted_identity.name)
            }
        }
        SignedIdentity::RemapIdentity { prefix, signed_prefix } => {
            let full = image.to_string();
            let remapped = match full.strip_prefix(prefix.as_str()) {
                Some(rest) if rest.is_empty() || rest.starts_with(['/', ':', '@']) => {
                    Identity::parse(&format!("{signed_prefix}{rest}"))?
                }
                _ => image_identity,
            };
            repo_digest_or_exact(&remapped, signed)
        }
    }
}

/// The default rule: an image pulled by digest needs its repository signed, one pulled by tag
/// needs that very tag signed.
fn repo_digest_or_exact(image: &Identity, signed: &Identity) -> Result<(), String> {
    let accepted = if image.digest.is_some() { image.name == signed.name } else { image == signed };
    if accepted {
        Ok(())
    } else {
        Err(format!("it signs {}, not {}", show(signed), show(image)))
    }
}

fn show(identity: &Identity) -> String {
    match (&identity.tag, &identity.digest) {
        (_, Some(d)) => format!("{}@{d}", identity.name),
        (Some(t), None) => format!("{}:{t}", identity.name),
        (None, None) => identity.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reference::parse;

    fn image(text: &str) -> Reference {
        parse(text).unwrap().reference
    }

    fn signed(text: &str) -> Identity {
        Identity::parse(text).unwrap()
    }

    #[test]
    fn a_payload_is_read_strictly() {
        let good = br#"{"critical":{"identity":{"docker-reference":"r.io/a/b"},"image":{"docker-manifest-digest":"sha256:00"},"type":"cosign container image signature"},"optional":null}"#;
        let payload = parse_payload(good).unwrap();
        assert_eq!(payload.docker_reference, "r.io/a/b");
        assert_eq!(payload.manifest_digest, "sha256:00");
        let other_type = br#"{"critical":{"identity":{"docker-reference":"r.io/a/b"},"image":{"docker-manifest-digest":"sha256:00"},"type":"atomic container signature"}}"#;
        assert!(parse_payload(other_type).unwrap_err().contains("atomic container signature"));
        let extra = br#"{"critical":{"identity":{"docker-reference":"r.io/a/b","x":1},"image":{"docker-manifest-digest":"sha256:00"},"type":"cosign container image signature"}}"#;
        assert!(parse_payload(extra).unwrap_err().contains("unknown field"));
        assert!(parse_payload(b"\x00\x01 not json").is_err());
    }

    #[test]
    fn identities_keep_only_what_was_written() {
        assert_eq!(signed("r.io/a/b"), Identity { name: "r.io/a/b".into(), tag: None, digest: None });
        assert_eq!(signed("r.io:5000/a:v1").tag.as_deref(), Some("v1"));
        assert_eq!(signed("r.io:5000/a").tag, None, "a port is no tag");
        assert!(Identity::parse("busybox").unwrap_err().contains("no registry"));
    }

    #[test]
    fn each_signed_identity_rule_accepts_what_the_format_says() {
        let tagged = image("r.io/team/app:v1");
        let digest = "sha256:".to_string() + &"ab".repeat(32);
        let by_digest = image(&format!("r.io/team/app@{digest}"));
        use SignedIdentity::*;
        // The default: a tag needs the exact tag signed; a digest needs the repository.
        assert!(identity_accepted(&MatchRepoDigestOrExact, &tagged, &signed("r.io/team/app:v1")).is_ok());
        let err = identity_accepted(&MatchRepoDigestOrExact, &tagged, &signed("r.io/team/app")).unwrap_err();
        assert!(err.contains("signs r.io/team/app, not r.io/team/app:v1"), "{err}");
        assert!(identity_accepted(&MatchRepoDigestOrExact, &by_digest, &signed("r.io/team/app")).is_ok());
        assert!(identity_accepted(&MatchRepoDigestOrExact, &by_digest, &signed("r.io/team/other")).is_err());
        assert!(identity_accepted(&MatchRepository, &tagged, &signed("r.io/team/app:v2")).is_ok());
        assert!(identity_accepted(&MatchRepository, &tagged, &signed("r.io/team/other")).is_err());
        assert!(identity_accepted(&MatchExact, &tagged, &signed("r.io/team/app:v1")).is_ok());
        assert!(identity_accepted(&MatchExact, &tagged, &signed("r.io/team/app")).is_err());
        let exact = ExactReference("q.io/x/y:1".into());
        assert!(identity_accepted(&exact, &tagged, &signed("q.io/x/y:1")).is_ok());
        assert!(identity_accepted(&exact, &tagged, &signed("r.io/team/app:v1")).is_err());
        let repo = ExactRepository("q.io/x/y".into());
        assert!(identity_accepted(&repo, &tagged, &signed("q.io/x/y:any")).is_ok());
        let remap = RemapIdentity { prefix: "mirror.local/team".into(), signed_prefix: "r.io/team".into() };
        let mirrored = image("mirror.local/team/app:v1");
        assert!(identity_accepted(&remap, &mirrored, &signed("r.io/team/app:v1")).is_ok());
        assert!(identity_accepted(&remap, &image("mirror.local/teamx/app:v1"), &signed("r.io/teamx/app:v1")).is_err());
    }
}
