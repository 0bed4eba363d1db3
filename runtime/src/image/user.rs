//! The image config's USER (`user` or `user:group`, each a name or a number), parsed in one
//! place for ImageStatus (what the kubelet checks runAsNonRoot against) and CreateContainer
//! (whom the process runs as), so the two can never disagree. Pure.

/// One part of USER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id<'a> {
    /// Digits (with an optional sign) that make a Linux id.
    Number(u32),
    /// Anything else: a name, looked up in the image's /etc/passwd or /etc/group.
    Name(&'a str),
    /// Digits that make no Linux id (`-1`, `4294967296`): never looked up as a name, where the
    /// image's own files could map them to anything (root).
    OutOfRange(&'a str),
}

/// USER split and classified; `user` is None when USER is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageUser<'a> {
    pub user: Option<Id<'a>>,
    pub group: Option<Id<'a>>,
}

pub fn parse(user: &str) -> ImageUser<'_> {
    if user.is_empty() {
        return ImageUser { user: None, group: None };
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    ImageUser { user: Some(id(user_part)), group: group_part.filter(|g| !g.is_empty()).map(id) }
}

/// `[+-]?digits` is a number, and must fit a u32; anything else is a name.
fn id(part: &str) -> Id<'_> {
    let (negative, digits) = match part.as_bytes().first() {
        Some(b'-') => (true, &part[1..]),
        Some(b'+') => (false, &part[1..]),
        _ => (false, part),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Id::Name(part);
    }
    match digits.parse::<u32>() {
        Ok(0) => Id::Number(0),
        Ok(n) if !negative => Id::Number(n),
        _ => Id::OutOfRange(part),
    }
}

/// What ImageStatus reports (Image.uid, Image.username): a uid only for a valid number, else
/// the user as a name, which the kubelet cannot prove non-root and so refuses under
/// runAsNonRoot.
pub fn for_kubelet(user: &str) -> (Option<i64>, String) {
    match parse(user).user {
        None => (None, String::new()),
        Some(Id::Number(n)) => (Some(i64::from(n)), String::new()),
        Some(Id::Name(name) | Id::OutOfRange(name)) => (None, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_must_be_linux_ids_and_are_never_names() {
        assert_eq!(parse("1000").user, Some(Id::Number(1000)));
        assert_eq!(parse("+7:-0"), ImageUser { user: Some(Id::Number(7)), group: Some(Id::Number(0)) });
        assert_eq!(parse("4294967295").user, Some(Id::Number(u32::MAX)));
        for bad in ["-1", "4294967296", "-4294967295", "99999999999999999999999"] {
            assert_eq!(parse(bad).user, Some(Id::OutOfRange(bad)), "{bad}");
            assert_eq!(for_kubelet(bad), (None, bad.to_string()), "{bad}: a name to the kubelet, not a uid");
        }
        assert_eq!(parse("app:-5").group, Some(Id::OutOfRange("-5")));
        for name in ["app", "1a", "-", "+", "0x10", " 1", "١"] {
            assert_eq!(parse(name).user, Some(Id::Name(name)), "{name:?}");
        }
    }

    #[test]
    fn the_kubelet_sees_a_uid_only_for_a_valid_number() {
        assert_eq!(for_kubelet("1000:1000"), (Some(1000), String::new()));
        assert_eq!(for_kubelet("0"), (Some(0), String::new()));
        assert_eq!(for_kubelet("nobody:nogroup"), (None, "nobody".to_string()));
        assert_eq!(for_kubelet(""), (None, String::new()));
        assert_eq!(parse("app:"), ImageUser { user: Some(Id::Name("app")), group: None });
    }
}
