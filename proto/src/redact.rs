//! AuthConfig carries registry secrets (upstream marks them debug_redact from 1.34 on); its
//! Debug, in every minor, names which secrets are set and prints none of them.

macro_rules! redacted_debug {
    ($module:path) => {
        impl std::fmt::Debug for $module {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let secret = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
                f.debug_struct("AuthConfig")
                    .field("username", &self.username)
                    .field("password", &secret(&self.password))
                    .field("auth", &secret(&self.auth))
                    .field("server_address", &self.server_address)
                    .field("identity_token", &secret(&self.identity_token))
                    .field("registry_token", &secret(&self.registry_token))
                    .finish()
            }
        }
    };
}

redacted_debug!(crate::model::AuthConfig);
#[cfg(feature = "v1_30")]
redacted_debug!(crate::v1_30::AuthConfig);
#[cfg(feature = "v1_31")]
redacted_debug!(crate::v1_31::AuthConfig);
#[cfg(feature = "v1_32")]
redacted_debug!(crate::v1_32::AuthConfig);
#[cfg(feature = "v1_33")]
redacted_debug!(crate::v1_33::AuthConfig);
#[cfg(feature = "v1_34")]
redacted_debug!(crate::v1_34::AuthConfig);
#[cfg(feature = "v1_35")]
redacted_debug!(crate::v1_35::AuthConfig);
#[cfg(feature = "v1_36")]
redacted_debug!(crate::v1_36::AuthConfig);

#[cfg(test)]
mod tests {
    #[test]
    fn debug_never_prints_a_secret() {
        let auth = crate::model::AuthConfig {
            username: "alice".into(),
            password: "hunter2".into(),
            registry_token: "tok-123".into(),
            ..Default::default()
        };
        let shown = format!("{auth:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("hunter2") && !shown.contains("tok-123"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
