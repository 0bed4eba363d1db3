//! Disk usage of a directory tree the unpacker did not write (containers' writable layers),
//! for ImageFsInfo and container stats. Reads only.

use std::path::Path;

use super::Usage;

/// Disk usage of a directory tree (apparent bytes of regular files, and inodes), for trees
/// this module did not write (container layers).
pub fn measure(path: &Path) -> Usage {
    let mut usage = Usage::default();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            usage.inodes += 1;
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                usage.bytes += meta.len();
            }
        }
    }
    usage
}
