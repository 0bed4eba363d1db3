//! Who a container's process runs as: run_as_user / run_as_username / run_as_group from the
//! request, else the image's USER, resolved in the image's own /etc/passwd and /etc/group;
//! supplemental groups merged with the image's memberships (policy Merge) or taken from the
//! request alone (Strict, 1.31+). `resolve` reads the two files from the rootfs; the rules
//! are in `resolve_with`, which is pure.

use std::path::Path;

use lockstep_cri::model;

use super::SpecError;

/// The identity of the container's process, as OCI's process.user and CRI's ContainerUser
/// take it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// The groups of the process: the primary group, then the supplemental ones, sorted.
    pub additional_gids: Vec<u32>,
}

impl ResolvedUser {
    /// CRI's ContainerUser (ContainerStatus.user, 1.31+).
    pub fn to_cri(&self) -> model::ContainerUser {
        model::ContainerUser {
            linux: Some(model::LinuxContainerUser {
                uid: i64::from(self.uid),
                gid: i64::from(self.gid),
                supplemental_groups: self.additional_gids.iter().map(|g| i64::from(*g)).collect(),
            }),
        }
    }
}

const FIELD: &str = "config.linux.security_context";
/// The largest /etc/passwd or /etc/group read from an image.
const MAX_ACCOUNT_FILE: u64 = 8 << 20;

/// Resolves the user from the request's security context and the image's USER, reading
/// `<rootfs>/etc/passwd` and `<rootfs>/etc/group` (absent files are empty).
pub fn resolve(
    rootfs: &Path,
    security: Option<&model::LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<ResolvedUser, SpecError> {
    // The image's files, resolved inside the image: its links cannot point at the host's.
    let read = |name: &str| -> Result<String, SpecError> {
        let path = Path::new("etc").join(name);
        match super::inroot::read_small_file(rootfs, &path, MAX_ACCOUNT_FILE) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()),
            Err(e) => {
                Err(SpecError::precondition("image", format!("cannot read the image's /{}: {e}", path.display())))
            }
        }
    };
    resolve_with(&read("passwd")?, &read("group")?, security, image_user)
}

/// The rules of `resolve`, with the files' contents given.
pub fn resolve_with(
    passwd: &str,
    group: &str,
    security: Option<&model::LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<ResolvedUser, SpecError> {
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let default = model::LinuxContainerSecurityContext::default();
    let sc = security.unwrap_or(&default);
    let run_as_user = sc.run_as_user.as_ref().map(|v| v.value);
    let run_as_group = sc.run_as_group.as_ref().map(|v| v.value);
    let username = sc.run_as_username.as_str();

    // (uid, the passwd entry's name if any, gid if the request or image fixed it)
    let (uid, name, mut gid) = if let Some(uid) = run_as_user {
        let uid = id(uid, &format!("{FIELD}.run_as_user"))?;
        (uid, users.iter().find(|u| u.uid == uid).map(|u| u.name.clone()), None)
    } else if !username.is_empty() {
        let entry = users.iter().find(|u| u.name == username).ok_or_else(|| {
            SpecError::not_found(
                format!("{FIELD}.run_as_username"),
                format!("user {username:?} is not in the image's /etc/passwd"),
            )
        })?;
        (entry.uid, Some(entry.name.clone()), None)
    } else {
        if run_as_group.is_some() {
            return Err(SpecError::invalid(
                format!("{FIELD}.run_as_group"),
                "run_as_group needs run_as_user or run_as_username",
            ));
        }
        from_image_user(image_user, &users, &groups)?
    };
    if let Some(g) = run_as_group {
        gid = Some(id(g, &format!("{FIELD}.run_as_group"))?);
    }
    // The primary group: as fixed above, else the passwd entry's, else 0.
    let gid = gid.unwrap_or_else(|| users.iter().find(|u| u.uid == uid).map(|u| u.gid).unwrap_or(0));

    let mut additional = vec![gid];
    for (i, g) in sc.supplemental_groups.iter().enumerate() {
        additional.push(id(*g, &format!("{FIELD}.supplemental_groups[{i}]"))?);
    }
    let strict = sc.supplemental_groups_policy == model::SupplementalGroupsPolicy::Strict as i32;
    if !strict {
        if let Some(name) = &name {
            additional.extend(groups.iter().filter(|g| g.members.iter().any(|m| m == name)).map(|g| g.gid));
        }
    }
    additional.sort_unstable();
    additional.dedup();
    Ok(ResolvedUser { uid, gid, additional_gids: additional })
}

/// The image's USER: "", "name", "uid", "name:group", "uid:gid" (and mixes).
fn from_image_user(
    user: &str,
    users: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<(u32, Option<String>, Option<u32>), SpecError> {
    let field = "image.user";
    use crate::image::user::{parse, Id};
    let out_of_range = |part: &str, what: &str| {
        SpecError::precondition(
            field,
            format!(
                "the image's USER {user:?}: {part:?} is a number but no valid {what} (0 to 4294967295); \
                 lockstep does not look it up as a name"
            ),
        )
    };
    let parsed = parse(user);
    let (uid, name) = match parsed.user {
        None => return Ok((0, users.iter().find(|u| u.uid == 0).map(|u| u.name.clone()), None)),
        Some(Id::Number(uid)) => (uid, users.iter().find(|u| u.uid == uid).map(|u| u.name.clone())),
        Some(Id::OutOfRange(part)) => return Err(out_of_range(part, "uid")),
        Some(Id::Name(user_part)) => {
            let entry = users.iter().find(|u| u.name == user_part).ok_or_else(|| {
                SpecError::not_found(field, format!("the image's USER {user_part:?} is not in its /etc/passwd"))
            })?;
            (entry.uid, Some(entry.name.clone()))
        }
    };
    let gid = match parsed.group {
        None => None,
        Some(Id::Number(gid)) => Some(gid),
        Some(Id::OutOfRange(part)) => return Err(out_of_range(part, "gid")),
        Some(Id::Name(g)) => Some(groups.iter().find(|e| e.name == g).map(|e| e.gid).ok_or_else(|| {
            SpecError::not_found(field, format!("the image's USER group {g:?} is not in its /etc/group"))
        })?),
    };
    Ok((uid, name, gid))
}

fn id(value: i64, field: &str) -> Result<u32, SpecError> {
    u32::try_from(value).map_err(|_| SpecError::invalid(field, format!("{value} is not a valid Linux id")))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// `name:password:uid:gid:gecos:home:shell`; malformed lines are skipped, as libc does.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// `name:password:gid:member,member`.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n# comment\nbroken line\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nalice:x:1000:\nwheel:x:10:alice,bob\naudio:x:29:alice\n";

    fn sc() -> model::LinuxContainerSecurityContext {
        model::LinuxContainerSecurityContext::default()
    }

    fn resolve(sc: &model::LinuxContainerSecurityContext, image_user: &str) -> Result<ResolvedUser, SpecError> {
        resolve_with(PASSWD, GROUP, Some(sc), image_user)
    }

    #[test]
    fn no_user_anywhere_is_root() {
        assert_eq!(resolve(&sc(), "").unwrap(), ResolvedUser { uid: 0, gid: 0, additional_gids: vec![0] });
    }

    #[test]
    fn the_image_user_by_name_brings_its_group_and_memberships() {
        let user = resolve(&sc(), "alice").unwrap();
        assert_eq!(user, ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![10, 29, 1000] });
        let user = resolve(&sc(), "www:wheel").unwrap();
        assert_eq!((user.uid, user.gid), (33, 10));
        let user = resolve(&sc(), "4242:4343").unwrap();
        assert_eq!(user, ResolvedUser { uid: 4242, gid: 4343, additional_gids: vec![4343] });
    }

    #[test]
    fn run_as_user_wins_and_takes_the_passwd_group_unless_run_as_group() {
        let mut s = sc();
        s.run_as_user = Some(model::Int64Value { value: 1000 });
        assert_eq!(resolve(&s, "www").unwrap().gid, 1000);
        s.run_as_group = Some(model::Int64Value { value: 3000 });
        s.supplemental_groups = vec![4000];
        let user = resolve(&s, "www").unwrap();
        assert_eq!(user, ResolvedUser { uid: 1000, gid: 3000, additional_gids: vec![10, 29, 3000, 4000] });
        s.supplemental_groups_policy = model::SupplementalGroupsPolicy::Strict as i32;
        let user = resolve(&s, "www").unwrap();
        assert_eq!(user.additional_gids, vec![3000, 4000], "Strict ignores the image's /etc/group");
    }

    #[test]
    fn run_as_username_is_looked_up_in_the_image() {
        let mut s = sc();
        s.run_as_username = "www".into();
        assert_eq!(resolve(&s, "").unwrap().uid, 33);
        s.run_as_username = "mallory".into();
        let err = resolve(&s, "").unwrap_err();
        assert_eq!(err.field, "config.linux.security_context.run_as_username");
        assert!(err.message.contains("mallory"), "{}", err.message);
    }

    #[test]
    fn bad_requests_name_their_field() {
        let mut s = sc();
        s.run_as_group = Some(model::Int64Value { value: 5 });
        assert_eq!(resolve(&s, "").unwrap_err().field, "config.linux.security_context.run_as_group");
        let mut s = sc();
        s.run_as_user = Some(model::Int64Value { value: -1 });
        assert_eq!(resolve(&s, "").unwrap_err().field, "config.linux.security_context.run_as_user");
        let err = resolve(&sc(), "nobody-here").unwrap_err();
        assert_eq!(err.field, "image.user");
    }

    /// `USER -1` with a passwd line naming a user "-1" with uid 0: a number out of range is
    /// refused, never looked up as a name (that was root, past runAsNonRoot).
    #[test]
    fn numeric_users_out_of_range_are_refused_not_looked_up() {
        let passwd = "root:x:0:0::/root:/bin/sh\n-1:x:0:0::/:/bin/sh\n4294967296:x:0:0::/:/bin/sh\n";
        let group = "root:x:0:\n-1:x:0:\n";
        for user in ["-1", "4294967296", "-1:0", "0:-1"] {
            let err = resolve_with(passwd, group, Some(&sc()), user).unwrap_err();
            assert_eq!(err.field, "image.user", "{user}");
            assert!(err.message.contains(&format!("{user:?}")) && err.message.contains("no valid"), "{}", err.message);
        }
        assert_eq!(resolve_with(passwd, group, Some(&sc()), "+1000").unwrap().uid, 1000);
    }

    #[test]
    fn a_rootfs_without_etc_files_is_fine_for_numeric_users() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = sc();
        s.run_as_user = Some(model::Int64Value { value: 7 });
        assert_eq!(
            super::resolve(tmp.path(), Some(&s), "").unwrap(),
            ResolvedUser { uid: 7, gid: 0, additional_gids: vec![0] }
        );
    }
}
