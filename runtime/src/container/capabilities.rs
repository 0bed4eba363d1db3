//! Linux capabilities by name and number, the default set (CRI-O's nine), and the CRI's
//! add/drop rules (ALL included). A container never gets a capability the daemon's own
//! bounding set lacks (these VMs have no CAP_SYS_RESOURCE; runc then fails to start).
//! Pure: the host's set is an input.

use super::SpecError;

/// Every capability the kernel defines, by number (capability.h).
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// CRI-O's default capabilities: what a container gets unless it adds or drops.
pub const DEFAULT: [&str; 9] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
];

/// A set of capabilities, as the kernel's 64-bit masks (/proc/<pid>/status CapBnd).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    /// Every capability this table knows.
    pub fn all() -> CapSet {
        CapSet((1u64 << NAMES.len()) - 1)
    }

    /// A `CapBnd:` style hex mask.
    pub fn from_hex(hex: &str) -> Option<CapSet> {
        u64::from_str_radix(hex.trim(), 16).ok().map(CapSet)
    }

    pub fn contains(self, number: usize) -> bool {
        number < 64 && self.0 & (1 << number) != 0
    }

    pub fn insert(&mut self, number: usize) {
        self.0 |= 1 << number;
    }

    pub fn remove(&mut self, number: usize) {
        self.0 &= !(1 << number);
    }

    pub fn intersect(self, other: CapSet) -> CapSet {
        CapSet(self.0 & other.0)
    }

    /// The names, in number order.
    pub fn names(self) -> Vec<&'static str> {
        NAMES.iter().enumerate().filter(|(n, _)| self.contains(*n)).map(|(_, name)| *name).collect()
    }

    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> CapSet {
        let mut set = CapSet::default();
        for name in names {
            if let Some(n) = number(name) {
                set.insert(n);
            }
        }
        set
    }
}

/// The number of a capability written as the CRI and pod specs do: `NET_ADMIN`,
/// `CAP_NET_ADMIN`, any case.
pub fn number(name: &str) -> Option<usize> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    NAMES.iter().position(|n| *n == full)
}

/// The capabilities a container gets: `base` (the defaults), then the CRI's lists: `ALL` in
/// add grants everything, `ALL` in drop empties the set, then the named adds, then the named
/// drops. The result never exceeds `host`. Unknown names are errors naming the field; so are
/// named adds the host itself does not hold (through `ALL` they are left out quietly).
pub fn effective(
    base: CapSet,
    add: &[String],
    drop: &[String],
    host: CapSet,
    field: &str,
) -> Result<CapSet, SpecError> {
    let is_all = |s: &String| s.trim().eq_ignore_ascii_case("ALL");
    // (position in the request, capability number) of each named capability.
    let parse = |list: &[String], which: &str| -> Result<Vec<(usize, usize)>, SpecError> {
        list.iter()
            .enumerate()
            .filter(|(_, name)| !is_all(name))
            .map(|(i, name)| {
                number(name).map(|n| (i, n)).ok_or_else(|| {
                    SpecError::invalid(
                        format!("{field}.{which}[{i}]"),
                        format!("{name:?} is not a Linux capability (known: CAP_CHOWN … CAP_CHECKPOINT_RESTORE)"),
                    )
                })
            })
            .collect()
    };
    let adds = parse(add, "add_capabilities")?;
    let drops = parse(drop, "drop_capabilities")?;
    if let Some((i, n)) = adds.iter().find(|(_, n)| !host.contains(*n)) {
        return Err(SpecError::precondition(
            format!("{field}.add_capabilities[{i}]"),
            format!("{} is not in lockstepd's own bounding set, so no container here can have it", NAMES[*n]),
        ));
    }
    // As containerd and CRI-O apply them: ALL first, then named adds, then named drops.
    let mut caps = base;
    if add.iter().any(is_all) {
        caps = CapSet::all();
    }
    if drop.iter().any(is_all) {
        caps = CapSet::default();
    }
    for (_, n) in &adds {
        caps.insert(*n);
    }
    for (_, n) in &drops {
        caps.remove(*n);
    }
    Ok(caps.intersect(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn defaults() -> CapSet {
        CapSet::from_names(DEFAULT)
    }

    #[test]
    fn names_are_accepted_with_or_without_the_prefix_in_any_case() {
        assert_eq!(number("NET_ADMIN"), Some(12));
        assert_eq!(number("cap_net_admin"), Some(12));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("NET_ADMINISTRATOR"), None);
    }

    #[test]
    fn add_and_drop_change_the_defaults() {
        let caps = effective(defaults(), &strings(&["NET_ADMIN"]), &strings(&["KILL"]), CapSet::all(), "f").unwrap();
        assert!(caps.contains(12) && !caps.contains(5) && caps.contains(0));
        assert_eq!(caps.names().len(), 9);
    }

    #[test]
    fn drop_all_keeps_only_the_adds() {
        let caps = effective(defaults(), &strings(&["NET_RAW"]), &strings(&["ALL"]), CapSet::all(), "f").unwrap();
        assert_eq!(caps.names(), vec!["CAP_NET_RAW"]);
    }

    #[test]
    fn add_all_grants_what_the_host_holds_minus_the_drops() {
        let host = CapSet(CapSet::all().0 & !(1 << 24)); // no CAP_SYS_RESOURCE, as on these VMs
        let caps = effective(defaults(), &strings(&["all"]), &strings(&["SYS_ADMIN"]), host, "f").unwrap();
        assert!(!caps.contains(24), "never more than the host holds");
        assert!(!caps.contains(21), "the drop still applies");
        assert_eq!(caps.names().len(), 39);
    }

    #[test]
    fn unknown_names_and_names_the_host_lacks_are_errors_naming_the_field() {
        let err = effective(defaults(), &strings(&["CHOWN", "FLY"]), &[], CapSet::all(), "caps").unwrap_err();
        assert_eq!(err.field, "caps.add_capabilities[1]");
        assert!(err.message.contains("\"FLY\""), "{}", err.message);
        let err = effective(defaults(), &[], &strings(&["NOPE"]), CapSet::all(), "caps").unwrap_err();
        assert_eq!(err.field, "caps.drop_capabilities[0]");
        let host = CapSet(CapSet::all().0 & !(1 << 24));
        let err = effective(defaults(), &strings(&["SYS_RESOURCE"]), &[], host, "caps").unwrap_err();
        assert_eq!(
            (err.kind, err.field.as_str()),
            (super::super::ErrorKind::FailedPrecondition, "caps.add_capabilities[0]")
        );
    }

    #[test]
    fn host_masks_parse() {
        let set = CapSet::from_hex("000001fffeffffff").unwrap();
        assert!(!set.contains(24) && set.contains(21) && set.contains(40));
    }
}
