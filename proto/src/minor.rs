//! The Kubernetes minors that Lockstep knows, which of them this build compiled, and the RPC
//! list of each minor's proto (known for every minor, compiled or not).

use std::fmt;
use std::str::FromStr;

include!(concat!(env!("OUT_DIR"), "/rpcs.rs"));

/// A Kubernetes minor whose CRI Lockstep carries, oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Minor {
    V1_30,
    V1_31,
    V1_32,
    V1_33,
    V1_34,
    V1_35,
    V1_36,
    V1_37,
}

impl Minor {
    /// Every minor, oldest first.
    pub const ALL: [Minor; 8] = [
        Minor::V1_30,
        Minor::V1_31,
        Minor::V1_32,
        Minor::V1_33,
        Minor::V1_34,
        Minor::V1_35,
        Minor::V1_36,
        Minor::V1_37,
    ];
    /// The newest minor, whose types are the model.
    pub const MODEL: Minor = Minor::V1_37;

    /// The minor number: 33 for 1.33.
    pub fn number(self) -> u32 {
        30 + self as u32
    }

    /// Whether this build carries the minor's module (its cargo feature, or the model).
    pub fn is_compiled(self) -> bool {
        match self {
            Minor::V1_30 => cfg!(feature = "v1_30"),
            Minor::V1_31 => cfg!(feature = "v1_31"),
            Minor::V1_32 => cfg!(feature = "v1_32"),
            Minor::V1_33 => cfg!(feature = "v1_33"),
            Minor::V1_34 => cfg!(feature = "v1_34"),
            Minor::V1_35 => cfg!(feature = "v1_35"),
            Minor::V1_36 => cfg!(feature = "v1_36"),
            Minor::V1_37 => true,
        }
    }

    /// The minors this build carries, oldest first.
    pub fn compiled() -> impl Iterator<Item = Minor> {
        Self::ALL.into_iter().filter(|m| m.is_compiled())
    }

    /// The RPCs of this minor's proto, as `Service.Rpc`, sorted.
    pub fn rpcs(self) -> &'static [&'static str] {
        match self {
            Minor::V1_30 => RPCS_1_30,
            Minor::V1_31 => RPCS_1_31,
            Minor::V1_32 => RPCS_1_32,
            Minor::V1_33 => RPCS_1_33,
            Minor::V1_34 => RPCS_1_34,
            Minor::V1_35 => RPCS_1_35,
            Minor::V1_36 => RPCS_1_36,
            Minor::V1_37 => RPCS_1_37,
        }
    }

    /// What versions/1.NN.toml says about this minor.
    pub fn manifest(self) -> &'static crate::versions::Manifest {
        static PARSED: std::sync::OnceLock<Vec<crate::versions::Manifest>> = std::sync::OnceLock::new();
        let all = PARSED.get_or_init(|| {
            crate::versions::SOURCES
                .iter()
                .map(|text| toml::from_str(text).expect("versions/*.toml is checked by the crate's tests"))
                .collect()
        });
        &all[self as usize]
    }

    /// Whether this minor's proto has the RPC (`Service.Rpc`, or a bare RPC name).
    pub fn has_rpc(self, rpc: &str) -> bool {
        self.rpcs().iter().any(|r| *r == rpc || r.split_once('.').is_some_and(|(_, name)| name == rpc))
    }
}

impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.number())
    }
}

/// A string that names no minor Lockstep carries.
#[derive(Debug, thiserror::Error)]
#[error("unknown Kubernetes minor {0:?}: Lockstep carries 1.30 to 1.37")]
pub struct ParseMinorError(String);

impl FromStr for Minor {
    type Err = ParseMinorError;

    /// Accepts `1.33`, `v1.33`, `v1_33` and `1.33.4` (a patch is ignored).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bare = text.trim().trim_start_matches('v').replace('_', ".");
        let mut parts = bare.split('.');
        let (major, minor) = (parts.next(), parts.next());
        let patch_ok = parts.next().is_none_or(|p| p.parse::<u32>().is_ok()) && parts.next().is_none();
        match (major, minor.and_then(|m| m.parse::<u32>().ok())) {
            (Some("1"), Some(n)) if patch_ok => {
                Self::ALL.into_iter().find(|m| m.number() == n).ok_or_else(|| ParseMinorError(text.to_string()))
            }
            _ => Err(ParseMinorError(text.to_string())),
        }
    }
}

/// A minor whose module this build did not compile (its cargo feature is off).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("this build does not carry Kubernetes {0} (cargo feature v1_{n} is off)", n = .0.number())]
pub struct NotCompiled(pub Minor);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spellings_people_use() {
        for text in ["1.33", "v1.33", "v1_33", "1.33.4", " 1.33 "] {
            assert_eq!(text.parse::<Minor>().unwrap(), Minor::V1_33, "{text}");
        }
    }

    #[test]
    fn refuses_minors_it_does_not_carry() {
        for text in ["1.29", "1.38", "2.33", "1", "", "1.x", "1.33.4.5", "1.33.x"] {
            assert!(text.parse::<Minor>().is_err(), "{text}");
        }
    }

    #[test]
    fn displays_as_kubernetes_writes_it() {
        assert_eq!(Minor::V1_30.to_string(), "1.30");
        assert_eq!(Minor::MODEL.to_string(), "1.37");
    }

    #[test]
    fn knows_which_minor_has_which_rpc() {
        assert!(!Minor::V1_35.has_rpc("StreamContainers"));
        assert!(Minor::V1_36.has_rpc("RuntimeService.StreamContainers"));
        assert!(!Minor::V1_32.has_rpc("UpdatePodSandboxResources"));
        assert!(Minor::V1_33.has_rpc("UpdatePodSandboxResources"));
    }
}
