//! Enforcing a signature policy on one pull, before any layer is fetched: the scope that
//! governs the image is found, and each of its requirements must hold. `sigstoreSigned` reads
//! the image's cosign signatures from the registry the image comes from (the same session,
//! so a mirror serves its own copies) and accepts the image when one of them is by a trusted
//! key, for this manifest, with an identity the rule accepts. `signedBy` reads GPG simple
//! signatures from the image's lookaside (registries.d) and accepts the image on the same
//! terms. A refusal says the policy file, the scope and why.

use std::path::Path;

use super::lookaside::Lookaside;
use super::sigstore::{self, Identity, Payload, SignatureManifest, PAYLOAD_MEDIA_TYPE, SIGNATURE_ANNOTATION};
use super::{simple, Policy, PolicyError, Requirement, SignedByRequirement, SignedIdentity, SigstoreRequirement};
use crate::image::error::ImageError;
use crate::image::reference::{Digest, Reference};
use crate::image::registry::{RegistryError, Session};

/// Signature layers read per image at most; more are ignored.
const MAX_SIGNATURES: usize = 16;
/// A signed payload is a few hundred bytes; larger is refused unread.
const MAX_PAYLOAD_BYTES: u64 = 64 << 10;

/// One signature as stored: its payload and the signature bytes, or why it is unusable.
type Stored = Result<(Vec<u8>, Vec<u8>), String>;

/// Checks `image` (whose top-level manifest has digest `manifest`) against `policy`; simple
/// signatures are looked for where the registries.d directory `registries_d` says.
pub async fn enforce(
    policy: &Policy,
    registries_d: &Path,
    image: &Reference,
    manifest: &Digest,
    session: &mut Session<'_>,
) -> Result<(), ImageError> {
    let governing = policy.requirements_for(image);
    let refuse = |reason: String| ImageError::Refused {
        image: image.to_string(),
        policy: policy.path.clone(),
        scope: governing.scope.clone(),
        reason,
    };
    let mut signatures: Option<Vec<Stored>> = None;
    for requirement in governing.requirements {
        match requirement {
            Requirement::InsecureAcceptAnything => {}
            Requirement::Reject => return Err(refuse("the scope rejects every image (\"reject\")".into())),
            Requirement::SignedBy(rule) => {
                let lookaside = Lookaside::load(registries_d).map_err(PolicyError::Lookaside)?;
                let found = lookaside
                    .signatures(image, manifest)
                    .await
                    .map_err(|e| refuse(format!("its simple signatures cannot be read: {e}")))?;
                accept_simple(rule, image, manifest, &found).map_err(|why| {
                    refuse(if found.is_empty() {
                        format!("{why} (looked in {})", lookaside.signature_url(image, manifest, 1))
                    } else {
                        why
                    })
                })?;
            }
            Requirement::SigstoreSigned(rule) => {
                if let Some(why) = &rule.unsupported {
                    return Err(refuse(why.clone()));
                }
                if signatures.is_none() {
                    signatures = Some(read_signatures(session, manifest).await?);
                }
                let stored = signatures.as_deref().unwrap_or_default();
                accept_one(rule, image, manifest, stored).map_err(refuse)?;
            }
        }
    }
    tracing::debug!(%image, scope = %governing.scope, "the signature policy accepts the image");
    Ok(())
}

/// Whether one of `stored` satisfies `rule`; else every signature's reason.
fn accept_one(
    rule: &SigstoreRequirement,
    image: &Reference,
    manifest: &Digest,
    stored: &[Stored],
) -> Result<(), String> {
    if stored.is_empty() {
        return Err(format!(
            "it requires a sigstore signature and the image has none (no {} in the registry)",
            sigstore::signature_tag(manifest)
        ));
    }
    let mut reasons = Vec::new();
    for (i, signature) in stored.iter().enumerate() {
        match signature.as_ref().map_err(Clone::clone).and_then(|(p, s)| verify(rule, image, manifest, p, s)) {
            Ok(()) => return Ok(()),
            Err(why) => reasons.push(format!("signature {i}: {why}")),
        }
    }
    Err(format!("no signature is acceptable: {}", reasons.join("; ")))
}

/// Whether one of the simple signatures `found` satisfies `rule`; else every one's reason.
fn accept_simple(
    rule: &SignedByRequirement,
    image: &Reference,
    manifest: &Digest,
    found: &[Vec<u8>],
) -> Result<(), String> {
    if found.is_empty() {
        return Err("it requires a GPG simple signature and the image has none".into());
    }
    let mut reasons = Vec::new();
    for (i, signature) in found.iter().enumerate() {
        let checked = simple::verify(&rule.keys, signature)
            .and_then(|payload| payload_accepted(&rule.signed_identity, image, manifest, &payload));
        match checked {
            Ok(()) => return Ok(()),
            Err(why) => reasons.push(format!("signature-{}: {why}", i + 1)),
        }
    }
    Err(format!("no signature is acceptable: {}", reasons.join("; ")))
}

fn verify(
    rule: &SigstoreRequirement,
    image: &Reference,
    manifest: &Digest,
    payload: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    if !rule.keys.iter().any(|key| key.verifies(payload, signature)) {
        let kinds: Vec<&str> = rule.keys.iter().map(|k| k.kind).collect();
        return Err(format!("not made by the policy's key ({})", kinds.join(", ")));
    }
    let payload = sigstore::parse_payload(payload)?;
    payload_accepted(&rule.signed_identity, image, manifest, &payload)
}

/// A verified payload must sign this manifest under a name the rule accepts.
fn payload_accepted(
    rule: &SignedIdentity,
    image: &Reference,
    manifest: &Digest,
    payload: &Payload,
) -> Result<(), String> {
    if payload.manifest_digest != manifest.as_str() {
        return Err(format!("it signs manifest {}, not {manifest}", payload.manifest_digest));
    }
    let signed = Identity::parse(&payload.docker_reference)
        .map_err(|e| format!("its docker-reference is not a reference: {e}"))?;
    sigstore::identity_accepted(rule, image, &signed)
}

/// The image's signatures: none when the registry has no signature tag for it.
async fn read_signatures(session: &mut Session<'_>, manifest: &Digest) -> Result<Vec<Stored>, ImageError> {
    let tag = sigstore::signature_tag(manifest);
    let fetched = match session.manifest(&tag, None).await {
        Ok(f) => f,
        Err(RegistryError::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let parsed: SignatureManifest = match serde_json::from_slice(&fetched.bytes) {
        Ok(m) => m,
        Err(e) => return Ok(vec![Err(format!("the signature manifest {tag} is invalid: {e}"))]),
    };
    let mut stored = Vec::new();
    for layer in parsed.layers.iter().filter(|l| l.media_type == PAYLOAD_MEDIA_TYPE).take(MAX_SIGNATURES) {
        stored.push(read_one(session, layer).await?);
    }
    if stored.is_empty() {
        stored.push(Err(format!("the signature manifest {tag} holds no {PAYLOAD_MEDIA_TYPE} layer")));
    }
    Ok(stored)
}

async fn read_one(session: &mut Session<'_>, layer: &sigstore::SignatureLayer) -> Result<Stored, ImageError> {
    use base64::Engine as _;
    let Some(encoded) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
        return Ok(Err(format!("no {SIGNATURE_ANNOTATION} annotation")));
    };
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return Ok(Err(format!("the {SIGNATURE_ANNOTATION} annotation is not base64")));
    };
    if layer.size > MAX_PAYLOAD_BYTES {
        return Ok(Err(format!("a payload of {} bytes, more than {MAX_PAYLOAD_BYTES}", layer.size)));
    }
    let payload = match crate::image::pull::read_blob(session, &layer.digest, layer.size).await {
        Ok(p) => p,
        Err(ImageError::BadImage { detail, .. }) => return Ok(Err(detail)),
        Err(ImageError::Registry(e @ RegistryError::NotFound { .. })) => return Ok(Err(e.to_string())),
        Err(e) => return Err(e),
    };
    Ok(Ok((payload, signature)))
}
