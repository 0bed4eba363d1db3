//! Seccomp profiles: lockstep's own RuntimeDefault (data in seccomp_default.json) and
//! Localhost profiles from files, in one format — OCI's linux.seccomp plus capability and
//! architecture conditions per rule (`includes`/`excludes`), as the common container profiles
//! write them — rendered for one container's capabilities and the host's architecture. Pure:
//! reading a Localhost file is `host`'s job.

use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSyscall};
use serde::Deserialize;

use super::capabilities::CapSet;

/// The RuntimeDefault profile, as shipped.
pub const DEFAULT_PROFILE: &str = include_str!("seccomp_default.json");

#[derive(Debug, thiserror::Error)]
#[error("not a seccomp profile: {0}")]
pub struct ProfileError(String);

/// A profile before it is rendered for a container.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    /// OCI style: the architectures, as is.
    #[serde(default)]
    pub architectures: Vec<Arch>,
    /// Or per native architecture, the architectures it also runs.
    #[serde(default)]
    pub arch_map: Vec<ArchMap>,
    #[serde(default)]
    pub syscalls: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: Arch,
    #[serde(default)]
    pub sub_architectures: Vec<Arch>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub names: Vec<String>,
    /// Docker-style profiles name a single syscall with `name`.
    #[serde(default)]
    pub name: Option<String>,
    pub action: LinuxSeccompAction,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    pub includes: Condition,
    #[serde(default)]
    pub excludes: Condition,
}

/// When a rule applies: the container holds all (includes) / none (excludes) of `caps`, and
/// the host runs one of `arches` (Rust's names: x86_64, aarch64, …).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub caps: Vec<String>,
    #[serde(default)]
    pub arches: Vec<String>,
}

impl Profile {
    pub fn parse(json: &str) -> Result<Profile, ProfileError> {
        let profile: Profile = serde_json::from_str(json).map_err(|e| ProfileError(e.to_string()))?;
        for (i, rule) in profile.syscalls.iter().enumerate() {
            if rule.names.is_empty() && rule.name.is_none() {
                return Err(ProfileError(format!("syscalls[{i}] names no system call")));
            }
        }
        Ok(profile)
    }

    /// lockstep's RuntimeDefault.
    pub fn runtime_default() -> Profile {
        // The file is part of the build and covered by a test; a broken one is a build bug.
        Profile::parse(DEFAULT_PROFILE).unwrap_or_else(|e| panic!("seccomp_default.json: {e}"))
    }

    /// The OCI linux.seccomp for a container holding `caps`, on a host of architecture `arch`.
    pub fn render(&self, caps: CapSet, arch: &str) -> LinuxSeccomp {
        let holds =
            |names: &[String]| names.iter().all(|n| super::capabilities::number(n).is_some_and(|c| caps.contains(c)));
        let holds_any =
            |names: &[String]| names.iter().any(|n| super::capabilities::number(n).is_some_and(|c| caps.contains(c)));
        let arch_ok = |cond: &Condition| cond.arches.is_empty() || cond.arches.iter().any(|a| a == arch);
        let syscalls: Vec<LinuxSyscall> = self
            .syscalls
            .iter()
            .filter(|r| holds(&r.includes.caps) && arch_ok(&r.includes))
            .filter(|r| r.excludes.caps.is_empty() || !holds_any(&r.excludes.caps))
            .filter(|r| r.excludes.arches.is_empty() || !r.excludes.arches.iter().any(|a| a == arch))
            .map(|r| {
                let mut names = r.names.clone();
                names.extend(r.name.clone());
                let mut syscall = LinuxSyscall::default();
                syscall.set_names(names);
                syscall.set_action(r.action);
                syscall.set_errno_ret(r.errno_ret);
                if !r.args.is_empty() {
                    syscall.set_args(Some(r.args.clone()));
                }
                syscall
            })
            .collect();
        let mut seccomp = LinuxSeccomp::default();
        seccomp.set_default_action(self.default_action);
        seccomp.set_default_errno_ret(self.default_errno_ret);
        let architectures = if !self.architectures.is_empty() {
            self.architectures.clone()
        } else {
            native(arch)
                .and_then(|native| self.arch_map.iter().find(|m| m.architecture == native))
                .map(|m| std::iter::once(m.architecture).chain(m.sub_architectures.iter().copied()).collect())
                .unwrap_or_default()
        };
        if !architectures.is_empty() {
            seccomp.set_architectures(Some(architectures));
        }
        seccomp.set_syscalls(Some(syscalls));
        seccomp
    }
}

/// libseccomp's name for a Rust architecture name.
fn native(arch: &str) -> Option<Arch> {
    Some(match arch {
        "x86_64" => Arch::ScmpArchX86_64,
        "x86" => Arch::ScmpArchX86,
        "aarch64" => Arch::ScmpArchAarch64,
        "arm" => Arch::ScmpArchArm,
        "powerpc64" => Arch::ScmpArchPpc64le,
        "s390x" => Arch::ScmpArchS390x,
        "riscv64" => Arch::ScmpArchRiscv64,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::capabilities::{CapSet, DEFAULT};

    fn rules_for(seccomp: &LinuxSeccomp, name: &str) -> Vec<LinuxSyscall> {
        seccomp
            .syscalls()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn the_default_profile_parses_and_denies_by_default() {
        let profile = Profile::runtime_default();
        assert_eq!(profile.default_action, LinuxSeccompAction::ScmpActErrno);
        let seccomp = profile.render(CapSet::from_names(DEFAULT), "x86_64");
        let arches = seccomp.architectures().clone().unwrap();
        assert_eq!(arches, vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]);
        assert!(!rules_for(&seccomp, "read").is_empty());
        assert!(rules_for(&seccomp, "mount").is_empty());
        assert!(rules_for(&seccomp, "keyctl").is_empty(), "not allowed at all");
    }

    #[test]
    fn namespace_creation_needs_cap_sys_admin() {
        let profile = Profile::runtime_default();
        let plain = profile.render(CapSet::from_names(DEFAULT), "x86_64");
        let unshare = rules_for(&plain, "unshare");
        assert_eq!(unshare.len(), 1);
        let arg = &unshare[0].args().clone().unwrap()[0];
        assert_eq!((arg.value(), arg.value_two()), (0x7E02_0080, Some(0)), "only without CLONE_NEW* flags");
        assert!(rules_for(&plain, "setns").is_empty());
        let clone3 = rules_for(&plain, "clone3");
        assert_eq!((clone3[0].action(), clone3[0].errno_ret()), (LinuxSeccompAction::ScmpActErrno, Some(38)));

        let admin = profile.render(CapSet::from_names(DEFAULT.iter().copied().chain(["CAP_SYS_ADMIN"])), "x86_64");
        let unshare = rules_for(&admin, "unshare");
        assert_eq!(unshare.len(), 1);
        assert!(unshare[0].args().is_none(), "unrestricted with CAP_SYS_ADMIN");
        assert_eq!(rules_for(&admin, "setns").len(), 1);
        assert!(rules_for(&admin, "clone3").iter().all(|r| r.action() == LinuxSeccompAction::ScmpActAllow));
    }

    #[test]
    fn arch_conditions_and_oci_profiles() {
        let profile = Profile::runtime_default();
        assert!(rules_for(&profile.render(CapSet::default(), "aarch64"), "arch_prctl").is_empty());
        let oci = r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
                      "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#;
        let rendered = Profile::parse(oci).unwrap().render(CapSet::default(), "x86_64");
        assert_eq!(rendered.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(rules_for(&rendered, "mkdir")[0].errno_ret(), Some(13));
        assert!(Profile::parse(r#"{"syscalls":[]}"#).is_err(), "defaultAction is required");
        assert!(
            Profile::parse(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ALLOW"}]}"#).is_err()
        );
    }
}
