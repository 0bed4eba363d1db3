//! Namespace files on the host: whether a path is a pinned namespace (a bind mount of an
//! nsfs file, as sandboxes pin theirs). Reads file metadata only.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Whether `path` is a pinned namespace: a file on nsfs, not on its directory's file system.
pub fn is_pinned(path: &Path) -> bool {
    let (Ok(file), Some(Ok(dir))) = (std::fs::metadata(path), path.parent().map(std::fs::metadata)) else {
        return false;
    };
    file.dev() != dir.dev()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_file_is_not_a_pinned_namespace_and_a_namespace_file_is() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("net");
        std::fs::write(&plain, b"").unwrap();
        assert!(!is_pinned(&plain));
        assert!(!is_pinned(&tmp.path().join("missing")));
        // /proc/self/ns/net is on nsfs, its directory on procfs.
        assert!(is_pinned(Path::new("/proc/self/ns/net")));
    }
}
