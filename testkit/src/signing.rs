//! Cosign-format image signatures made by the harness itself: an ECDSA P-256 key generated per
//! test (its public half as the PEM `PUBLIC KEY` a policy names), simple-signing payloads, and
//! the signature manifest pushed beside the image under `sha256-<hex>.sig`, as `cosign sign`
//! stores it. Tests sign fixture images with it, or sign wrongly on purpose.

use anyhow::Context as _;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::json;

use crate::fixtures::oci::sha256;
use crate::fixtures::push::Pusher;

/// The SubjectPublicKeyInfo prefix of an uncompressed P-256 point (RFC 5480).
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A signing key, as `cosign generate-key-pair` makes (P-256).
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

/// One signature as stored: the payload and the signature of it.
#[derive(Clone)]
pub struct Signature {
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

impl SigningKey {
    pub fn generate() -> anyhow::Result<SigningKey> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("cannot read back the generated key"))?;
        Ok(SigningKey { pair, rng })
    }

    /// The public key as a PEM `PUBLIC KEY` block (`cosign.pub`).
    pub fn public_pem(&self) -> String {
        let der = [P256_SPKI_PREFIX, self.pair.public_key().as_ref()].concat();
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body.as_bytes().chunks(64).filter_map(|c| std::str::from_utf8(c).ok()).collect();
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
    }

    /// Signs an arbitrary payload.
    pub fn sign_bytes(&self, payload: Vec<u8>) -> anyhow::Result<Signature> {
        let signature = self.pair.sign(&self.rng, &payload).map_err(|_| anyhow::anyhow!("signing failed"))?;
        Ok(Signature { payload, signature: signature.as_ref().to_vec() })
    }

    /// Signs that `docker_reference` is the image with manifest `manifest_digest`.
    pub fn sign(&self, docker_reference: &str, manifest_digest: &str) -> anyhow::Result<Signature> {
        self.sign_bytes(payload(docker_reference, manifest_digest))
    }
}

/// A simple-signing payload, as cosign writes it.
pub fn payload(docker_reference: &str, manifest_digest: &str) -> Vec<u8> {
    json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

/// Pushes `signatures` as the signature manifest of the image `manifest_digest` in `repo`.
pub async fn push_signatures(
    pusher: &Pusher,
    repo: &str,
    manifest_digest: &str,
    signatures: &[Signature],
) -> anyhow::Result<()> {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for signature in signatures {
        let digest = sha256(&signature.payload);
        pusher.blob(repo, &digest, &signature.payload).await.context("pushing a signed payload")?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&signature.signature);
        layers.push(json!({
            "mediaType": PAYLOAD_MEDIA_TYPE,
            "digest": digest,
            "size": signature.payload.len(),
            "annotations": {SIGNATURE_ANNOTATION: encoded},
        }));
        diff_ids.push(digest);
    }
    let config =
        json!({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}})
            .to_string()
            .into_bytes();
    let config_digest = sha256(&config);
    pusher.blob(repo, &config_digest, &config).await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers,
    })
    .to_string()
    .into_bytes();
    let hex = manifest_digest.strip_prefix("sha256:").context("the manifest digest is not sha256")?;
    pusher.manifest(repo, &format!("sha256-{hex}.sig"), OCI_MANIFEST, &manifest).await
}
