//! Image references: parsing and normalising them as the kubelet and containerd do
//! (`busybox` → `docker.io/library/busybox:latest`), digests, and image IDs. Pure functions;
//! touches nothing.

use std::fmt;

/// The registry that unqualified names belong to, as docker and containerd name it.
pub const DOCKER_HUB: &str = "docker.io";
const LEGACY_HUB: &str = "index.docker.io";
const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

fn bad(reference: &str, reason: impl Into<String>) -> ReferenceError {
    ReferenceError { reference: reference.to_string(), reason: reason.into() }
}

/// A content digest, `sha256:<64 hex>` (the only algorithm registries use in practice).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(text: &str) -> Result<Digest, String> {
        let Some((algorithm, hex)) = text.split_once(':') else {
            return Err(format!("digest {text:?} has no algorithm (expected sha256:<64 hex digits>)"));
        };
        if algorithm != "sha256" {
            return Err(format!("digest algorithm {algorithm:?} is not supported (only sha256)"));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("digest {text:?} is not sha256 followed by 64 lowercase hex digits"));
        }
        Ok(Digest(text.to_string()))
    }

    /// The digest of bytes computed here; always well-formed.
    pub fn from_sha256(hash: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex(hash)))
    }

    /// `sha256:…`
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits, safe as a file name.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Digest::parse(&text)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A normalised reference: registry, repository, and a tag or a digest (a digest wins when a
/// reference has both, as in containerd).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `127.0.0.1:5000`, `registry.example.com`
    pub registry: String,
    /// `library/busybox`
    pub repository: String,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// `registry/repository`
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag or digest as the registry's manifest URL wants it.
    pub fn target_str(&self) -> &str {
        match &self.target {
            Target::Tag(t) => t,
            Target::Digest(d) => d.as_str(),
        }
    }

    pub fn with_target(&self, target: Target) -> Reference {
        Reference { registry: self.registry.clone(), repository: self.repository.clone(), target }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Tag(t) => write!(f, "{}/{}:{t}", self.registry, self.repository),
            Target::Digest(d) => write!(f, "{}/{}@{d}", self.registry, self.repository),
        }
    }
}

/// What a user-supplied image string means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Whether the string named a registry itself (`quay.io/x`, `localhost/x`,
    /// `127.0.0.1:5000/x`) rather than relying on the default.
    pub qualified: bool,
    /// The registry-less repository path as written (`busybox`, `team/app`).
    pub path: String,
    /// The reference, normalised against docker.io when unqualified.
    pub reference: Reference,
}

impl Parsed {
    /// The same short name resolved against another registry (unqualified-search-registries):
    /// `busybox` on `127.0.0.1:5000` is `127.0.0.1:5000/busybox`, on docker.io it is
    /// `docker.io/library/busybox`.
    pub fn on_registry(&self, registry: &str) -> Reference {
        let registry = if registry == LEGACY_HUB { DOCKER_HUB } else { registry };
        let repository = if registry == DOCKER_HUB && !self.path.contains('/') {
            format!("library/{}", self.path)
        } else {
            self.path.clone()
        };
        Reference { registry: registry.to_string(), repository, target: self.reference.target.clone() }
    }
}

/// Parses and normalises an image reference as the kubelet and containerd do.
pub fn parse(text: &str) -> Result<Parsed, ReferenceError> {
    if text.is_empty() {
        return Err(bad(text, "it is empty"));
    }
    if text.trim() != text || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(text, "it contains whitespace or control characters"));
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(Digest::parse(digest).map_err(|e| bad(text, e))?)),
        None => (text, None),
    };
    // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag).map_err(|e| bad(text, e))?;
    }
    if name.is_empty() {
        return Err(bad(text, "the repository name is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(text, format!("the name is longer than {MAX_NAME_LEN} characters")));
    }
    if digest.is_none() && tag.is_none() && is_hex64(name) {
        return Err(bad(text, "64 hex digits are an image ID, not a repository name"));
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" || first != first.to_lowercase() => {
            (Some(first), path)
        }
        _ => (None, name),
    };
    if let Some(domain) = domain {
        check_domain(domain).map_err(|e| bad(text, e))?;
    }
    for component in path.split('/') {
        check_path_component(component).map_err(|e| bad(text, e))?;
    }
    let target = match (digest, tag) {
        (Some(d), _) => Target::Digest(d),
        (None, Some(t)) => Target::Tag(t.to_string()),
        (None, None) => Target::Tag("latest".to_string()),
    };
    let parsed = Parsed {
        qualified: domain.is_some(),
        path: path.to_string(),
        reference: Reference { registry: String::new(), repository: String::new(), target },
    };
    let reference = parsed.on_registry(domain.unwrap_or(DOCKER_HUB));
    Ok(Parsed { reference, ..parsed })
}

fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("tag {tag:?} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"))
    }
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(format!("registry {domain:?} has an unclosed IPv6 bracket"));
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("registry {domain:?} is not a valid IPv6 address"));
        }
        (None, after.strip_prefix(':'))
    } else {
        match domain.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry {domain:?} has an invalid port"));
        }
    }
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(format!("registry {domain:?} is not a valid host name"));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn check_path_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("the repository path has an empty component".into());
    }
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("repository name component {c:?} must be lowercase"));
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            expect_alnum = false;
            i += 1;
            continue;
        }
        if expect_alnum {
            return Err(format!("repository name component {c:?} has a separator where a letter or digit belongs"));
        }
        let sep_len = match bytes[i] {
            b'.' => 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => bytes[i..].iter().take_while(|&&b| b == b'-').count(),
            other => {
                return Err(format!("repository name component {c:?} contains {:?}", other as char));
            }
        };
        i += sep_len;
        expect_alnum = true;
    }
    if expect_alnum {
        return Err(format!("repository name component {c:?} ends with a separator"));
    }
    Ok(())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An image ID as users send it: `sha256:<64 hex>` or the bare 64 hex digits.
pub fn parse_image_id(text: &str) -> Option<Digest> {
    if is_hex64(text) {
        Digest::parse(&format!("sha256:{}", text.to_ascii_lowercase())).ok()
    } else {
        Digest::parse(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(text: &str) -> String {
        parse(text).unwrap().reference.to_string()
    }

    #[test]
    fn short_names_normalise_like_containerd() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("team/app"), "docker.io/team/app:latest");
        assert_eq!(norm("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("index.docker.io/library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b:v1");
        assert_eq!(norm("[::1]:5000/app"), "[::1]:5000/app:latest");
        assert_eq!(norm("quay.io/team/app-x__y.z:v1.0_rc-1"), "quay.io/team/app-x__y.z:v1.0_rc-1");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(norm(&format!("busybox@{d}")), format!("docker.io/library/busybox@{d}"));
        assert_eq!(norm(&format!("busybox:1.36@{d}")), format!("docker.io/library/busybox@{d}"), "digest wins");
        assert!(!parse("busybox").unwrap().qualified);
        assert!(parse("localhost:5000/busybox").unwrap().qualified);
    }

    #[test]
    fn short_names_resolve_against_search_registries() {
        let p = parse("busybox:1").unwrap();
        assert_eq!(p.on_registry("127.0.0.1:5000").to_string(), "127.0.0.1:5000/busybox:1");
        assert_eq!(p.on_registry("docker.io").to_string(), "docker.io/library/busybox:1");
    }

    #[test]
    fn malformed_references_say_why() {
        for (text, why) in [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("busybox:", "tag"),
            ("busybox:-x", "tag"),
            ("busybox@sha256:abc", "64"),
            ("busybox@md5:0123", "algorithm"),
            ("a//b", "empty component"),
            ("a/-b", "separator"),
            ("a/b-", "ends with"),
            ("a b", "whitespace"),
            ("a/b!c", "contains"),
            ("reg.io:x/a", "port"),
            ("bad_host.io/a", "host name"),
            (&"a".repeat(64), "image ID"),
            (&format!("{}/x", "a".repeat(300)), "longer than"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.reference, text);
            assert!(err.to_string().contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn image_ids_with_or_without_algorithm() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(parse_image_id(&hex).unwrap().to_string(), format!("sha256:{hex}"));
        assert_eq!(parse_image_id(&format!("sha256:{hex}")).unwrap().hex(), hex);
        assert!(parse_image_id("busybox").is_none());
    }

    proptest! {
        /// Whatever a user sends: no panic, and a normalised reference parses to itself.
        #[test]
        fn normalising_is_idempotent(text in "[a-zA-Z0-9:/@._\\-\\[\\]]{0,80}") {
            if let Ok(parsed) = parse(&text) {
                let once = parsed.reference.to_string();
                let twice = parse(&once).unwrap().reference.to_string();
                prop_assert_eq!(&once, &twice);
                prop_assert!(parse(&once).unwrap().qualified);
            }
        }

        #[test]
        fn valid_names_round_trip(
            registry in "(([a-z0-9]{1,8}\\.)[a-z]{2,5}(:[0-9]{1,5})?)",
            path in "[a-z0-9]{1,8}(([._]|__|-{1,2})[a-z0-9]{1,8}){0,2}(/[a-z0-9]{1,8}){0,2}",
            tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        ) {
            let text = format!("{registry}/{path}:{tag}");
            let r = parse(&text).unwrap().reference;
            prop_assert_eq!(&r.registry, &registry);
            prop_assert_eq!(&r.repository, &path);
            prop_assert_eq!(r.target, Target::Tag(tag));
        }
    }
}
