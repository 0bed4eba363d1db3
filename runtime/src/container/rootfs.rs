//! A container's root filesystem: an overlay of the image's layer snapshots (read-only) and a
//! writable layer of the container's own, mounted in lockstepd's (the host's) mount namespace
//! so that it outlives a lockstepd restart; also read-only image volumes. Touches only the
//! directories it is given and the mounts it makes there.
//!
//! An overlay whose options fit mount(2)'s one page is mounted with them; a longer one (about
//! 37 layers and more; registries allow 127) through the new mount API, one `lowerdir+` per
//! layer (Linux 6.8 and later), where no page limit applies.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The kernel limit on mount options (one page).
const MAX_OPTIONS: usize = 4095;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot {what} {path}: {source}")]
    Mount { what: &'static str, path: PathBuf, source: nix::Error },
    #[error(
        "the image has {layers} layers whose paths do not fit one overlay mount's options ({len} bytes), \
         and this kernel cannot take them one by one (fsconfig lowerdir+, Linux 6.8): {source}"
    )]
    TooManyLayers { layers: usize, len: usize, source: std::io::Error },
    #[error(transparent)]
    Mounts(#[from] crate::host::mounts::MountError),
    #[error("{path} stays mounted after repeated unmounts; the directory is kept")]
    StillMounted { path: PathBuf },
}

fn create_dir(path: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(path).map_err(|source| RootfsError::Io { what: "create", path: path.into(), source })
}

/// The overlay options for `layers` (lowest first, as the image lists them: overlayfs wants the
/// top first) with the writable layer in `layer_dir`.
pub fn overlay_options(layers: &[PathBuf], layer_dir: &Path) -> String {
    let lower: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        layer_dir.join("upper").display(),
        layer_dir.join("work").display()
    )
}

/// Mounts the container's rootfs at `target`: `layers` under the writable layer kept in
/// `layer_dir` (`upper` and `work` are made there). An image without layers gets an empty one.
pub fn mount_rootfs(layers: &[PathBuf], layer_dir: &Path, target: &Path) -> Result<(), RootfsError> {
    create_dir(&layer_dir.join("upper"))?;
    create_dir(&layer_dir.join("work"))?;
    create_dir(target)?;
    let mut layers = layers.to_vec();
    if layers.is_empty() {
        let empty = layer_dir.join("empty");
        create_dir(&empty)?;
        layers.push(empty);
    }
    let options = overlay_options(&layers, layer_dir);
    if options.len() > MAX_OPTIONS {
        let writable = Some((layer_dir.join("upper"), layer_dir.join("work")));
        return mount_overlay_by_parts(&layers, writable.as_ref(), target, options.len());
    }
    mount(Some("overlay"), target, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .map_err(|source| RootfsError::Mount { what: "mount the overlay rootfs on", path: target.into(), source })
}

/// Mounts an overlay of `layers` (lowest first) at `target` through the new mount API: each
/// layer is a `lowerdir+` parameter of its own, so the length of all their paths together
/// does not matter; with `writable` (upper, work) a writable one, else read-only. `len` is the
/// length the options would have had, for the error on a kernel without `lowerdir+`.
fn mount_overlay_by_parts(
    layers: &[PathBuf],
    writable: Option<&(PathBuf, PathBuf)>,
    target: &Path,
    len: usize,
) -> Result<(), RootfsError> {
    use rustix::mount::{self as m, FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};
    let failed = |what: &'static str| {
        move |e: rustix::io::Errno| RootfsError::Io { what, path: target.into(), source: e.into() }
    };
    let fs = m::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| RootfsError::TooManyLayers {
        layers: layers.len(),
        len,
        source: e.into(),
    })?;
    for (i, layer) in layers.iter().rev().enumerate() {
        m::fsconfig_set_string(&fs, "lowerdir+", layer.as_path()).map_err(|e| match e {
            // The first one refused: an overlayfs older than `lowerdir+`.
            rustix::io::Errno::INVAL if i == 0 => {
                RootfsError::TooManyLayers { layers: layers.len(), len, source: e.into() }
            }
            e => RootfsError::Io {
                what: "give overlayfs a lower layer for",
                path: target.into(),
                source: std::io::Error::new(e.kind(), format!("layer {}: {e}", layer.display())),
            },
        })?;
    }
    if let Some((upper, work)) = writable {
        m::fsconfig_set_string(&fs, "upperdir", upper.as_path())
            .map_err(failed("give overlayfs the upper layer for"))?;
        m::fsconfig_set_string(&fs, "workdir", work.as_path())
            .map_err(failed("give overlayfs the work directory for"))?;
    }
    m::fsconfig_create(&fs).map_err(failed("create the overlay for"))?;
    let attributes = if writable.is_some() { MountAttrFlags::empty() } else { MountAttrFlags::MOUNT_ATTR_RDONLY };
    let mounted =
        m::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attributes).map_err(failed("mount the overlay for"))?;
    m::move_mount(&mounted, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(failed("attach the overlay at"))
}

/// Mounts an image read-only at `target` (an image volume): its only layer bound read-only,
/// or an overlay of its layers without a writable one.
pub fn mount_image_readonly(layers: &[PathBuf], target: &Path) -> Result<(), RootfsError> {
    create_dir(target)?;
    match layers {
        [] => Ok(()),
        [only] => {
            let fail = |source| RootfsError::Mount { what: "bind the image volume on", path: target.into(), source };
            mount(Some(only.as_path()), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(fail)?;
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(|source| {
                let _ = unmount(target);
                RootfsError::Mount { what: "make read-only the image volume", path: target.into(), source }
            })
        }
        many => {
            let lower: Vec<String> = many.iter().rev().map(|p| p.display().to_string()).collect();
            let options = format!("lowerdir={}", lower.join(":"));
            if options.len() > MAX_OPTIONS {
                return mount_overlay_by_parts(many, None, target, options.len());
            }
            mount(Some("overlay"), target, Some("overlay"), MsFlags::MS_RDONLY, Some(options.as_str()))
                .map_err(|source| RootfsError::Mount { what: "mount the image volume on", path: target.into(), source })
        }
    }
}

/// Unmounts whatever is mounted at `target` (detached); not mounted is fine.
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(source) => Err(RootfsError::Mount { what: "unmount", path: target.into(), source }),
    }
}

/// Unmounts everything at or under `dir` (deepest first), then removes it. Absent is fine.
pub fn remove_dir(dir: &Path) -> Result<(), RootfsError> {
    // Until nothing is mounted there: a mount point may hold several stacked mounts, and
    // the removal must never walk into one (a propagated host directory).
    let mut rounds = 0;
    loop {
        let mounted = crate::host::mounts::mounts_under(dir)?;
        if mounted.is_empty() {
            break;
        }
        rounds += 1;
        if rounds > 8 {
            return Err(RootfsError::StillMounted { path: mounted[0].clone() });
        }
        for target in &mounted {
            unmount(target)?;
        }
    }
    crate::fstree::remove_tree(dir).map_err(|source| RootfsError::Io { what: "remove", path: dir.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_list_the_top_layer_first() {
        let layers = vec![PathBuf::from("/s/base"), PathBuf::from("/s/top")];
        assert_eq!(
            overlay_options(&layers, Path::new("/c/1")),
            "lowerdir=/s/top:/s/base,upperdir=/c/1/upper,workdir=/c/1/work"
        );
    }

    #[test]
    fn a_rootfs_is_writable_above_read_only_layers_and_removed_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let (base, top) = (tmp.path().join("base"), tmp.path().join("top"));
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&top).unwrap();
        std::fs::write(base.join("a"), "base").unwrap();
        std::fs::write(top.join("a"), "top").unwrap();
        let target = tmp.path().join("run/rootfs");
        mount_rootfs(&[base.clone(), top.clone()], &tmp.path().join("layer"), &target).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "top", "the upper image layer wins");
        std::fs::write(target.join("b"), "new").unwrap();
        assert!(!base.join("b").exists() && !top.join("b").exists(), "writes go to the container's layer");
        assert!(tmp.path().join("layer/upper/b").exists());
        let volume = tmp.path().join("run/volume");
        mount_image_readonly(&[base.clone(), top], &volume).unwrap();
        assert!(std::fs::write(volume.join("c"), "x").is_err(), "an image volume is read-only");
        remove_dir(&tmp.path().join("run")).unwrap();
        assert!(!tmp.path().join("run").exists());
        assert!(crate::host::mounts::mounts_under(tmp.path()).unwrap().is_empty());
        remove_dir(&tmp.path().join("run")).unwrap();
    }

    /// 125 layers (registries allow 127) with paths as long as the store's: far more than
    /// mount(2)'s one page of options. Every layer shows, the topmost wins, writes go up.
    #[test]
    fn images_of_many_layers_mount_and_go() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("var/lib/lockstep/images/snapshots");
        let layers: Vec<PathBuf> = (0..125)
            .map(|i| {
                let fs = store.join(format!("{i:064x}")).join("fs");
                std::fs::create_dir_all(fs.join("layers")).unwrap();
                std::fs::write(fs.join(format!("layers/{i:03}")), i.to_string()).unwrap();
                std::fs::write(fs.join("layers/top"), i.to_string()).unwrap();
                fs
            })
            .collect();
        assert!(overlay_options(&layers, tmp.path()).len() > MAX_OPTIONS * 2);
        let target = tmp.path().join("run/rootfs");
        mount_rootfs(&layers, &tmp.path().join("layer"), &target).unwrap();
        assert_eq!(std::fs::read_dir(target.join("layers")).unwrap().count(), 126, "every layer's file and top");
        assert_eq!(std::fs::read_to_string(target.join("layers/top")).unwrap(), "124", "the last layer wins");
        std::fs::write(target.join("layers/new"), "x").unwrap();
        assert!(tmp.path().join("layer/upper/layers/new").exists(), "writes go to the container's layer");
        let volume = tmp.path().join("run/volume");
        mount_image_readonly(&layers, &volume).unwrap();
        assert_eq!(std::fs::read_to_string(volume.join("layers/000")).unwrap(), "0");
        assert!(std::fs::write(volume.join("c"), "x").is_err(), "an image volume is read-only");
        remove_dir(&tmp.path().join("run")).unwrap();
        assert!(crate::host::mounts::mounts_under(tmp.path()).unwrap().is_empty());
    }
}
