//! `image.signature_policy` end to end, as a kubelet sees it: lockstepd with a
//! containers-policy.json that requires cosign signatures for one namespace of the fixture
//! registry pulls what a generated key signed and refuses (PermissionDenied, naming the policy
//! file, the scope and the reason, storing nothing) what is unsigned, signed by another
//! key, signed for another manifest or another name, or signed with garbage; images outside
//! the scope pull as before. The same for GPG simple signatures (`signedBy`, keys and
//! signatures made by the gpg command line) read from a file lookaside that registries.d names.
//! A malformed policy stops lockstepd at start with the line.

use std::path::Path;

use lockstep_cri::{model, Minor};
use lockstep_testkit::fixtures::{self, oci::Image, push::Pusher, registry::LocalRegistry};
use lockstep_testkit::signing::{self, GpgKey, Signature, SigningKey};
use lockstep_testkit::{Launch, Lockstepd, Program};

const LOCKSTEPD: &str = env!("CARGO_BIN_EXE_lockstepd");

fn program() -> Program {
    Program::lockstepd(LOCKSTEPD, Minor::V1_36)
}

fn shell_image() -> Image {
    fixtures::standard().unwrap().into_iter().find(|f| f.repo == fixtures::SHELL).unwrap().image
}

/// The policy: `signed/` needs a signature by `key.pub` for the repository, `exact/` by the
/// same key under the format's default identity rule, `rejected/` nothing at all.
fn write_policy(dir: &Path, host: &str, key: &SigningKey) -> std::path::PathBuf {
    std::fs::write(dir.join("key.pub"), key.public_pem()).unwrap();
    let policy = serde_json::json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {
            format!("{host}/signed"): [{"type": "sigstoreSigned", "keyPath": "key.pub",
                                        "signedIdentity": {"type": "matchRepository"}}],
            format!("{host}/exact"): [{"type": "sigstoreSigned", "keyPath": dir.join("key.pub")}],
            format!("{host}/rejected"): [{"type": "reject"}],
        }},
    });
    let path = dir.join("policy.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
    path
}

async fn pull(kubelet: &mut lockstep_cri::CriClient, image: &str) -> Result<String, tonic::Status> {
    let spec = Some(model::ImageSpec { image: image.to_string(), ..Default::default() });
    kubelet.pull_image(model::PullImageRequest { image: spec, ..Default::default() }).await.map(|r| r.image_ref)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_requiring_signatures_admits_what_the_key_signed_and_refuses_the_rest() {
    let registry = LocalRegistry::start().unwrap();
    let host = registry.host.clone();
    let pusher = Pusher::new(&host, None).unwrap();
    let image = shell_image();
    let digest = image.manifest_digest.clone();
    let key = SigningKey::generate().unwrap();
    let stranger = SigningKey::generate().unwrap();
    let other_digest = format!("sha256:{}", "0".repeat(64));
    let signed = |repo: &str| key.sign(&format!("{host}/{repo}"), &digest).unwrap();
    let cases: Vec<(&str, Vec<Signature>)> = vec![
        ("signed/good", vec![signed("signed/good")]),
        // A wrong signature beside a good one: one acceptable signature is enough.
        ("signed/two", vec![stranger.sign(&format!("{host}/signed/two"), &digest).unwrap(), signed("signed/two")]),
        ("signed/unsigned", vec![]),
        ("signed/stranger", vec![stranger.sign(&format!("{host}/signed/stranger"), &digest).unwrap()]),
        ("signed/elsewhere", vec![key.sign(&format!("{host}/signed/elsewhere"), &other_digest).unwrap()]),
        ("signed/renamed", vec![signed("signed/good")]),
        ("signed/garbage", vec![Signature { payload: b"not json".to_vec(), signature: b"not a signature".to_vec() }]),
        ("signed/notjson", vec![key.sign_bytes(b"\x00 signed, but not a payload".to_vec()).unwrap()]),
        ("exact/app", vec![signed("exact/app")]),
        ("rejected/app", vec![]),
        ("free/app", vec![]),
    ];
    for (repo, signatures) in &cases {
        pusher.image(repo, &["v1"], &image).await.unwrap();
        if !signatures.is_empty() {
            signing::push_signatures(&pusher, repo, &digest, signatures).await.unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(dir.path(), &host, &key);
    let config = format!("[image]\nsignature_policy = \"{}\"\n", policy.display());
    let daemon = Lockstepd::start(program(), Launch::default(), &config).await.unwrap();
    let mut kubelet = daemon.kubelet().await;

    let refusals = [
        ("signed/unsigned:v1", "signed", "has none"),
        ("signed/stranger:v1", "signed", "not made by the policy's key (ECDSA P-256)"),
        ("signed/elsewhere:v1", "signed", "it signs manifest sha256:000"),
        ("signed/renamed:v1", "signed", "signed/good, not"),
        ("signed/garbage:v1", "signed", "not made by the policy's key"),
        ("signed/notjson:v1", "signed", "the signed payload is invalid"),
        ("exact/app:v1", "exact", "exact/app, not"),
        ("rejected/app:v1", "rejected", "rejects every image"),
    ];
    for (refused, scope, reason) in refusals {
        let name = format!("{host}/{refused}");
        let err = pull(&mut kubelet, &name).await.expect_err(refused);
        let message = err.message();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{refused}: {message}");
        assert!(message.contains(&policy.display().to_string()), "{refused}: names the policy: {message}");
        assert!(message.contains(&format!("docker scope \"{host}/{scope}\"")), "{refused}: the scope: {message}");
        assert!(message.contains(reason), "{refused}: {message}");
    }
    // Refused before any layer: the store holds nothing at all.
    let store = daemon.root().join("images");
    for sub in ["records", "snapshots", "blobs/sha256"] {
        let left: Vec<_> =
            std::fs::read_dir(store.join(sub)).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "a refused pull left {sub}: {left:?}");
    }

    for accepted in ["signed/good:v1", "signed/two:v1", "free/app:v1"] {
        let id =
            pull(&mut kubelet, &format!("{host}/{accepted}")).await.unwrap_or_else(|e| panic!("{accepted}: {e:?}"));
        assert_eq!(id, image.config_digest, "{accepted}");
    }
    // The default identity rule: by digest the repository must be signed (it is); by tag the
    // signature must name that tag (it names the repository alone, as cosign writes it).
    pull(&mut kubelet, &format!("{host}/exact/app@{digest}")).await.unwrap();
    let listed = kubelet.list_images(model::ListImagesRequest::default()).await.unwrap().images;
    let names: Vec<&String> = listed.iter().flat_map(|i| &i.repo_tags).collect();
    assert_eq!(names.len(), 3, "only the accepted tags: {names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_requiring_gpg_signatures_reads_them_from_the_lookaside() {
    let registry = LocalRegistry::start().unwrap();
    let host = registry.host.clone();
    let pusher = Pusher::new(&host, None).unwrap();
    let image = shell_image();
    let digest = image.manifest_digest.clone();
    let key = GpgKey::generate("trusted").unwrap();
    let stranger = GpgKey::generate("stranger").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sigstore = dir.path().join("sigstore");
    let registries_d = dir.path().join("registries.d");
    std::fs::create_dir_all(&registries_d).unwrap();
    std::fs::write(
        registries_d.join("default.yaml"),
        format!("default-docker:\n  lookaside: file://{}\n", sigstore.display()),
    )
    .unwrap();
    let hex = digest.trim_start_matches("sha256:");
    let store = |repo: &str, signature: Vec<u8>| {
        let at = sigstore.join(format!("{repo}@sha256={hex}"));
        std::fs::create_dir_all(&at).unwrap();
        std::fs::write(at.join("signature-1"), signature).unwrap();
    };
    let payload = |repo: &str| signing::simple_payload(&format!("{host}/{repo}:v1"), &digest);
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("gpg/good", Some(key.sign(&payload("gpg/good")).unwrap())),
        ("gpg/armored", Some(key.sign(&payload("gpg/armored")).unwrap())),
        ("gpg/unsigned", None),
        ("gpg/stranger", Some(stranger.sign(&payload("gpg/stranger")).unwrap())),
        ("gpg/renamed", Some(key.sign(&payload("gpg/good")).unwrap())),
        ("gpg/garbage", Some(b"not an OpenPGP message".to_vec())),
        ("gpg/cosigntype", Some(key.sign(&signing::payload(&format!("{host}/gpg/cosigntype:v1"), &digest)).unwrap())),
    ];
    for (repo, signature) in cases {
        pusher.image(repo, &["v1"], &image).await.unwrap();
        if let Some(signature) = signature {
            store(repo, signature);
        }
    }
    std::fs::write(dir.path().join("trusted.gpg"), key.keyring(false).unwrap()).unwrap();
    std::fs::write(dir.path().join("trusted.asc"), key.keyring(true).unwrap()).unwrap();
    let policy = serde_json::json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {
            format!("{host}/gpg"): [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "trusted.gpg"}],
            format!("{host}/gpg/armored"): [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "trusted.asc"}],
        }},
    });
    let policy_path = dir.path().join("policy.json");
    std::fs::write(&policy_path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
    let config = format!(
        "[image]\nsignature_policy = \"{}\"\nregistries_d = \"{}\"\n",
        policy_path.display(),
        registries_d.display()
    );
    let daemon = Lockstepd::start(program(), Launch::default(), &config).await.unwrap();
    let mut kubelet = daemon.kubelet().await;

    for (refused, reason) in [
        ("gpg/unsigned:v1", "has none (looked in file://"),
        ("gpg/stranger:v1", "not made by a key of the policy's keyring"),
        ("gpg/renamed:v1", "signs 127.0.0.1"),
        ("gpg/garbage:v1", "not an OpenPGP signed message"),
        ("gpg/cosigntype:v1", "not \"atomic container signature\""),
    ] {
        let err = pull(&mut kubelet, &format!("{host}/{refused}")).await.expect_err(refused);
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{refused}: {}", err.message());
        assert!(err.message().contains(reason), "{refused}: {}", err.message());
    }
    for accepted in ["gpg/good:v1", "gpg/armored:v1"] {
        let id =
            pull(&mut kubelet, &format!("{host}/{accepted}")).await.unwrap_or_else(|e| panic!("{accepted}: {e:?}"));
        assert_eq!(id, image.config_digest);
    }
}

#[tokio::test]
async fn a_malformed_policy_stops_lockstepd_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, "{\n  \"default\": [\n    {\"type\": \"insecureAcceptAnything\"},\n  ]\n}\n").unwrap();
    let config = format!("[image]\nsignature_policy = \"{}\"\n", policy.display());
    let err = Lockstepd::start(program(), Launch::default(), &config).await.err().expect("lockstepd refuses to start");
    let message = format!("{err:#}");
    assert!(message.contains(&policy.display().to_string()) && message.contains("line 4"), "{message}");

    let missing = dir.path().join("absent.json");
    let config = format!("[image]\nsignature_policy = \"{}\"\n", missing.display());
    let err = Lockstepd::start(program(), Launch::default(), &config).await.err().expect("a named policy must exist");
    assert!(format!("{err:#}").contains("absent.json"), "{err:#}");
}
