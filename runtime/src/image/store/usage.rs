//! What ImageFsInfo reports: the bytes and inodes of the image store (snapshots and blobs)
//! and of the containers' writable layers, each with the directory that names its
//! filesystem. Reads only.

use std::path::{Path, PathBuf};

use super::state::Store;
use crate::image::unpack::Usage;

/// What ImageFsInfo reports.
#[derive(Debug, Clone)]
pub struct FsUsage {
    pub images: Filesystem,
    pub containers: Filesystem,
}

#[derive(Debug, Clone)]
pub struct Filesystem {
    /// A directory on the filesystem (what the kubelet stats).
    pub mountpoint: PathBuf,
    pub usage: Usage,
}

impl Store {
    /// Usage of the image store and of the containers' writable layers. Containers whose
    /// layers sit on the image store's filesystem get the same directory: the kubelet takes
    /// two different ones for a split disk (KubeletSeparateDiskGC) and stats each (cadvisor),
    /// so both must exist. Blocking.
    pub fn usage(&self) -> FsUsage {
        let mut images = Usage::default();
        for chain in self.snapshots.list() {
            let u = self.snapshots.usage(&chain);
            images.bytes += u.bytes;
            images.inodes += u.inodes;
        }
        if let Ok(entries) = std::fs::read_dir(self.layout.blobs()) {
            for e in entries.flatten() {
                images.inodes += 1;
                images.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        let containers = crate::image::unpack::measure(&self.containers_dir);
        let device = |p: &Path| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::dev(&m)).ok();
        let same_filesystem = device(&self.layout.base).is_some_and(|d| device(&self.containers_dir) == Some(d));
        let containers_mountpoint =
            if same_filesystem { self.layout.base.clone() } else { self.containers_dir.clone() };
        FsUsage {
            images: Filesystem { mountpoint: self.layout.base.clone(), usage: images },
            containers: Filesystem { mountpoint: containers_mountpoint, usage: containers },
        }
    }
}
