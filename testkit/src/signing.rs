//! Cosign-format image signatures made by the harness itself: an ECDSA P-256 key generated per
//! test (its public half as the PEM `PUBLIC KEY` a policy names), simple-signing payloads, and
//! the signature manifest pushed beside the image under `sha256-<hex>.sig`, as `cosign sign`
//! stores it; and GPG simple signatures made with the `gpg` command line. Tests sign fixture
//! images with them, or sign wrongly on purpose.

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

/// A GPG key of the harness, made and used by the `gpg` command line (Debian's gnupg, which
/// ci/setup installs) in a home of its own: simple signing as `podman push --sign-by` does it.
pub struct GpgKey {
    home: tempfile::TempDir,
}

impl GpgKey {
    pub fn generate(name: &str) -> anyhow::Result<GpgKey> {
        let home = tempfile::Builder::new().prefix("lockstep-gpg-").tempdir().context("cannot make a GPG home")?;
        let key = GpgKey { home };
        let user = format!("{name} <{name}@lockstep.invalid>");
        key.gpg(&["--quick-gen-key", &user, "ed25519", "sign", "never"], None)?;
        Ok(key)
    }

    fn gpg(&self, args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<Vec<u8>> {
        use std::io::Write as _;
        let mut child = std::process::Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("cannot run gpg (Debian package gnupg, see ci/setup)")?;
        let mut input = child.stdin.take().context("gpg's stdin")?;
        input.write_all(stdin.unwrap_or_default()).context("writing to gpg")?;
        drop(input);
        let out = child.wait_with_output().context("waiting for gpg")?;
        if !out.status.success() {
            anyhow::bail!("gpg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    }

    /// The public keyring (`gpg --export`), binary or armored.
    pub fn keyring(&self, armored: bool) -> anyhow::Result<Vec<u8>> {
        self.gpg(if armored { &["--export", "--armor"] } else { &["--export"] }, None)
    }

    /// A simple signature: `payload` signed as an OpenPGP message (compressed, as gpg makes it).
    pub fn sign(&self, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.gpg(&["--sign"], Some(payload))
    }
}

impl Drop for GpgKey {
    fn drop(&mut self) {
        // gpg started an agent for this home: it goes with it.
        let _ = std::process::Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A simple-signing payload, as containers/image writes it.
pub fn simple_payload(docker_reference: &str, manifest_digest: &str) -> Vec<u8> {
    json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": "atomic container signature",
        },
        "optional": {"creator": "lockstep-testkit"},
    })
    .to_string()
    .into_bytes()
}
