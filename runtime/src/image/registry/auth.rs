//! Registry credentials from a CRI AuthConfig and the challenge a registry answers with
//! (`WWW-Authenticate: Basic …` or `Bearer realm=…,service=…,scope=…`). Pure; no I/O.

use base64::Engine as _;

/// What the kubelet handed over for this pull.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token for the token endpoint (docker's "identitytoken").
    pub identity_token: String,
    /// A bearer token sent to the registry as is.
    pub registry_token: String,
    /// The registry these are for (`HOST[:PORT]`, or a URL); empty: the one the image names.
    pub server_address: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &(!self.password.is_empty()).then_some("<redacted>"))
            .field("identity_token", &(!self.identity_token.is_empty()).then_some("<redacted>"))
            .field("registry_token", &(!self.registry_token.is_empty()).then_some("<redacted>"))
            .field("server_address", &self.server_address)
            .finish()
    }
}

impl Credentials {
    /// From PullImageRequest.auth: `auth` (base64 "user:password") fills in the user and
    /// password when they are not given separately.
    pub fn from_cri(auth: Option<&lockstep_cri::model::AuthConfig>) -> Result<Credentials, String> {
        let Some(a) = auth else { return Ok(Credentials::default()) };
        let mut c = Credentials {
            username: a.username.clone(),
            password: a.password.clone(),
            identity_token: a.identity_token.clone(),
            registry_token: a.registry_token.clone(),
            server_address: a.server_address.clone(),
        };
        if !a.auth.is_empty() && c.username.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(a.auth.trim())
                .map_err(|_| "auth.auth is not base64".to_string())?;
            let text = String::from_utf8(decoded).map_err(|_| "auth.auth is not UTF-8 once decoded".to_string())?;
            let (user, password) =
                text.split_once(':').ok_or_else(|| "auth.auth does not decode to user:password".to_string())?;
            c.username = user.to_string();
            c.password = password.to_string();
        }
        Ok(c)
    }

    /// These credentials for a request to `registry` during a pull of an image on `named`:
    /// all of them when `registry` is the one they are for (`server_address`, else `named`),
    /// none otherwise, so a mirror or another search registry never receives them.
    pub fn for_registry(&self, named: &str, registry: &str) -> Credentials {
        let meant = if self.server_address.is_empty() { named.to_string() } else { registry_of(&self.server_address) };
        if same_registry(&meant, registry) {
            self.clone()
        } else {
            Credentials::default()
        }
    }

    pub fn has_basic(&self) -> bool {
        !self.username.is_empty()
    }

    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// The registry a server address names: `https://index.docker.io/v1/` is `docker.io`,
/// `https://reg.io:5000/x` is `reg.io:5000`.
fn registry_of(server_address: &str) -> String {
    let rest = server_address.split_once("://").map_or(server_address, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

fn same_registry(a: &str, b: &str) -> bool {
    let docker = |r: &str| {
        let r = r.to_ascii_lowercase();
        match r.as_str() {
            "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
            _ => r,
        }
    };
    docker(a) == docker(b)
}

/// A parsed WWW-Authenticate header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parses `Scheme k="v", k2=v2`; unknown schemes give None.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    let mut fields = std::collections::HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        fields.insert(key, value.to_string());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: fields.remove("realm")?,
            service: fields.remove("service"),
            scope: fields.remove("scope"),
        }),
        _ => None,
    }
}

/// application/x-www-form-urlencoded, for the token endpoint.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                b' ' => "+".to_string(),
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_cri::model::AuthConfig;

    #[test]
    fn challenges_parse() {
        assert_eq!(parse_challenge("Basic realm=\"Registry Realm\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.io/token\",service=\"registry.io\",scope=\"repository:a/b:pull\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.io/token".into(),
                service: Some("registry.io".into()),
                scope: Some("repository:a/b:pull".into())
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://x/t, service=s"),
            Some(Challenge::Bearer { realm: "http://x/t".into(), service: Some("s".into()), scope: None })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=\"x\""), None, "no realm");
    }

    #[test]
    fn auth_string_and_fields() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        let c = Credentials::from_cri(Some(&AuthConfig { auth: encoded, ..Default::default() })).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("alice", "s3cret:x"));
        let err = Credentials::from_cri(Some(&AuthConfig { auth: "!!".into(), ..Default::default() })).unwrap_err();
        assert!(err.contains("auth.auth"), "{err}");
        let c = Credentials::from_cri(Some(&AuthConfig {
            username: "bob".into(),
            password: "pw".into(),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(c.basic_header(), "Basic Ym9iOnB3");
        assert!(!format!("{c:?}").contains("pw\""), "{c:?}");
    }

    #[test]
    fn credentials_are_for_one_registry() {
        let c = Credentials { username: "u".into(), ..Default::default() };
        assert!(c.for_registry("reg.io:5000", "reg.io:5000").has_basic(), "no server address: the image's registry");
        assert!(!c.for_registry("reg.io:5000", "mirror.io").has_basic());
        for (address, registry) in [
            ("reg.io:5000", "reg.io:5000"),
            ("https://reg.io:5000/v2/", "reg.io:5000"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("REG.io", "reg.io"),
        ] {
            let c = Credentials { server_address: address.into(), ..c.clone() };
            assert!(c.for_registry("elsewhere.io", registry).has_basic(), "{address} is {registry}");
            assert!(!c.for_registry(registry, "mirror.io").has_basic(), "{address} is not mirror.io");
        }
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form_encode(&[("scope", "repository:a/b:pull"), ("x", "a b")]),
            "scope=repository%3Aa%2Fb%3Apull&x=a+b"
        );
    }
}
