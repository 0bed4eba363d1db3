//! Reading policy files: what operators write is understood, what is wrong is named (with the
//! line for JSON errors), and the most specific scope governs.

use super::*;
use crate::image::reference::parse;

const P256_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEDJ33ECvbxfphCQJZ9wvshTW7yljs
9xpc5bWyOwhAFhPNKWdaReV4Epk3YvF7eVEGma6KEaYFM58TFtIdtDxPpw==
-----END PUBLIC KEY-----
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn load_text(text: &str) -> Result<Policy, String> {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "key.pub", P256_KEY);
    Policy::load(&write(dir.path(), "policy.json", text)).map_err(|e| e.to_string())
}

fn governing_scope(policy: &Policy, image: &str) -> String {
    policy.requirements_for(&parse(image).unwrap().reference).scope
}

#[test]
fn the_most_specific_scope_governs() {
    let policy = load_text(
        r#"{
  "default": [{"type": "reject"}],
  "transports": {
    "docker": {
      "": [{"type": "insecureAcceptAnything"}],
      "r.example.com:5000/team/app:v1": [{"type": "insecureAcceptAnything"}],
      "r.example.com:5000/team/app": [{"type": "insecureAcceptAnything"}],
      "r.example.com:5000/team": [{"type": "sigstoreSigned", "keyPath": "key.pub"}],
      "r.example.com:5000": [{"type": "reject"}],
      "*.example.com": [{"type": "reject"}]
    },
    "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}
  }
}"#,
    )
    .unwrap();
    assert_eq!(
        governing_scope(&policy, "r.example.com:5000/team/app:v1"),
        "docker scope \"r.example.com:5000/team/app:v1\""
    );
    assert_eq!(
        governing_scope(&policy, "r.example.com:5000/team/app:v2"),
        "docker scope \"r.example.com:5000/team/app\""
    );
    assert_eq!(governing_scope(&policy, "r.example.com:5000/team/sub/x:1"), "docker scope \"r.example.com:5000/team\"");
    assert_eq!(governing_scope(&policy, "r.example.com:5000/other:1"), "docker scope \"r.example.com:5000\"");
    assert_eq!(governing_scope(&policy, "mirror.example.com/other:1"), "docker scope \"*.example.com\"");
    assert_eq!(governing_scope(&policy, "quay.io/other:1"), "the docker transport's default");
    let sigstore = policy.requirements_for(&parse("r.example.com:5000/team/x:1").unwrap().reference);
    match &sigstore.requirements[0] {
        Requirement::SigstoreSigned(rule) => {
            assert_eq!(rule.keys.len(), 1, "the relative keyPath is read beside the policy");
            assert_eq!(rule.signed_identity, SignedIdentity::MatchRepoDigestOrExact, "the format's default");
        }
        other => panic!("{other:?}"),
    }
    let without_docker_default = load_text(r#"{"default": [{"type": "reject"}]}"#).unwrap();
    assert_eq!(governing_scope(&without_docker_default, "quay.io/x:1"), "the policy's default");
}

#[test]
fn a_json_error_names_the_file_and_line() {
    let err = load_text("{\n  \"default\": [\n    {\"type\": \"reject\"},\n  ]\n}\n").unwrap_err();
    assert!(err.contains("policy.json") && err.contains("line 4"), "{err}");
}

#[test]
fn mistakes_are_named() {
    let cases = [
        (r#"{"transports": {}}"#, "no \"default\""),
        (r#"{"default": []}"#, "empty list"),
        (r#"{"default": [{"type": "rejectt"}]}"#, "rejectt"),
        (r#"{"default": [{"type": "reject", "keyPath": "x"}]}"#, "keyPath"),
        (r#"{"default": [{"type": "reject"}], "transport": {}}"#, "transport"),
        (r#"{"default": [{"type": "sigstoreSigned"}]}"#, "exactly one of keyPath"),
        (r#"{"default": [{"type": "sigstoreSigned", "keyPath": "missing.pub"}]}"#, "missing.pub"),
        (r#"{"default": [{"type": "sigstoreSigned", "keyData": "bm90IGEga2V5"}]}"#, "keyData 0"),
        (
            r#"{"default": [{"type": "sigstoreSigned", "keyPath": "key.pub", "signedIdentity": {"type": "exactReference", "dockerReference": "r.io/a"}}]}"#,
            "needs a tag or a digest",
        ),
        (r#"{"default": [{"type": "signedBy", "keyType": "X509", "keyPath": "k"}]}"#, "X509"),
        (
            r#"{"default": [{"type": "reject"}], "transports": {"docker": {"r.io/*/x": [{"type": "reject"}]}}}"#,
            "transports.docker.\"r.io/*/x\"",
        ),
    ];
    for (text, expected) in cases {
        let err = load_text(text).unwrap_err();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn what_cannot_be_verified_is_read_and_named() {
    let policy = load_text(
        r#"{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {
            "b.io": [{"type": "sigstoreSigned", "keyPath": "key.pub", "rekorPublicKeyPath": "key.pub"}],
            "c.io": [{"type": "sigstoreSigned", "fulcio": {"caPath": "/x"}}]
        }}}"#,
    )
    .unwrap();
    let named = policy.unverifiable();
    assert_eq!(named.len(), 2, "{named:?}");
    assert!(named[0].contains("Rekor") && named[1].contains("fulcio"), "{named:?}");
    let missing_keyring =
        r#"{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/pki/absent.gpg"}]}"#;
    assert!(load_text(missing_keyring).unwrap_err().contains("/etc/pki/absent.gpg"));
}

#[test]
fn no_file_named_and_no_system_file_is_no_policy_but_a_named_file_must_exist() {
    if !Path::new(SYSTEM_FILE).exists() {
        assert!(Policy::configured(Path::new("")).unwrap().is_none());
    }
    let err = Policy::configured(Path::new("/nonexistent/policy.json")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/policy.json"), "{err}");
}
