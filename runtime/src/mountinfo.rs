//! /proc/self/mountinfo, read line by line into the fields lockstepd looks at: which cgroup
//! hierarchies are mounted where, what is mounted under a directory, whether a host is hybrid.
//! Pure parsing; reading the file is the caller's.

use std::path::PathBuf;

/// One line of mountinfo:
/// `<id> <parent> <maj:min> <root> <mount point> <options> [optional…] - <type> <source> <super options>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount<'a> {
    /// `maj:min` of the mounted file system (one per cgroup hierarchy).
    pub device: &'a str,
    /// The mounted root inside that file system, unescaped.
    pub root: String,
    /// Where it is mounted, unescaped.
    pub point: PathBuf,
    pub fstype: &'a str,
    /// The file system's own options (for cgroup v1, its controllers).
    pub super_options: &'a str,
}

impl Mount<'_> {
    /// Whether `option` is among the super options (a v1 hierarchy's controller).
    pub fn has_super_option(&self, option: &str) -> bool {
        self.super_options.split(',').any(|o| o == option)
    }
}

/// The mounts of `text`, in its order (a later mount at a path covers an earlier one).
/// Malformed lines are skipped.
pub fn mounts(text: &str) -> impl Iterator<Item = Mount<'_>> {
    text.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut fields = left.split(' ');
        let device = fields.nth(2)?;
        let root = unescape(fields.next()?);
        let point = PathBuf::from(unescape(fields.next()?));
        let mut right = right.split(' ');
        let (fstype, _source, super_options) = (right.next()?, right.next()?, right.next().unwrap_or(""));
        Some(Mount { device, root, point, fstype, super_options })
    })
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_and_unescaped() {
        let text = "35 31 0:32 /outer /mnt/a\\040b rw,relatime shared:5 - cgroup cgroup rw,memory\nnot a mount line\n";
        let found: Vec<Mount> = mounts(text).collect();
        assert_eq!(
            found,
            vec![Mount {
                device: "0:32",
                root: "/outer".into(),
                point: PathBuf::from("/mnt/a b"),
                fstype: "cgroup",
                super_options: "rw,memory",
            }]
        );
        assert!(found[0].has_super_option("memory") && !found[0].has_super_option("mem"));
    }

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
