//! Identifiers for sandboxes and containers: 64 lowercase hex characters from the kernel's
//! random source, as CRI-O and containerd make them, and the checks for ids that users send.

use std::io::Read;

/// A fresh random id (256 bits, hex).
pub fn random_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `id` can name a file under the state directories: what every RPC checks before
/// using an id from a request in a path.
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_differ() {
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn ids_that_could_escape_a_directory_are_unsafe() {
        assert!(is_safe_id(&random_id().unwrap()));
        for bad in ["", "../etc", "a/b", ".", "x\0y", &"a".repeat(129)] {
            assert!(!is_safe_id(bad), "{bad:?}");
        }
    }
}
