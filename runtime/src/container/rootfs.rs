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
    #[error(transparent)]
    Idmap(#[from] crate::host::idmap::IdmapError),
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

/// A pod's user namespace to shift the owners of a mount's files by (`hostUsers: false`): the
/// namespace's pinned path, the host uid and gid of its root, and a directory where idmapped
/// copies of the image's layers are staged while the overlay is made (overlayfs cannot itself
/// be idmapped; its lower layers can, Linux 5.19). The writable layer is not idmapped — copy-up
/// runs as lockstepd, whom no idmapping maps — but given to the container's root: what the
/// container writes is owned on disk by its host IDs, as with CRI-O.
#[derive(Debug, Clone, Copy)]
pub struct Idmap<'a> {
    pub userns: &'a Path,
    pub root: (u32, u32),
    pub staging: &'a Path,
}

/// Runs `mount` with `layers` replaced by idmapped copies of them attached under the staging
/// directory, then detaches the copies (a mounted overlay holds its layers) and removes the
/// staging directory.
fn with_idmapped_layers(
    idmap: &Idmap<'_>,
    layers: &[PathBuf],
    mount: impl FnOnce(&[PathBuf]) -> Result<(), RootfsError>,
) -> Result<(), RootfsError> {
    use crate::host::idmap;
    let mut attached: Vec<PathBuf> = Vec::new();
    let mut stage = |name: String, source: &Path| -> Result<PathBuf, RootfsError> {
        let at = idmap.staging.join(name);
        create_dir(&at)?;
        let copy = idmap::idmapped_copy(source, idmap.userns)?;
        idmap::attach(&copy, &at)?;
        attached.push(at.clone());
        Ok(at)
    };
    let staged = layers.iter().enumerate().map(|(i, l)| stage(i.to_string(), l)).collect::<Result<Vec<_>, _>>();
    let result = staged.and_then(|lowers| mount(&lowers));
    for at in attached.iter().rev() {
        let _ = umount2(at, MntFlags::MNT_DETACH);
    }
    let _ = crate::fstree::remove_tree(idmap.staging);
    result
}

/// Mounts the container's rootfs at `target`: `layers` under the writable layer kept in
/// `layer_dir` (`upper` and `work` are made there), through idmapped layers with `idmap`. An
/// image without layers gets an empty one.
pub fn mount_rootfs(
    layers: &[PathBuf],
    layer_dir: &Path,
    target: &Path,
    idmap: Option<&Idmap<'_>>,
) -> Result<(), RootfsError> {
    create_dir(&layer_dir.join("upper"))?;
    create_dir(&layer_dir.join("work"))?;
    create_dir(target)?;
    let mut layers = layers.to_vec();
    if layers.is_empty() {
        let empty = layer_dir.join("empty");
        create_dir(&empty)?;
        layers.push(empty);
    }
    if let Some(idmap) = idmap {
        let upper = layer_dir.join("upper");
        std::os::unix::fs::chown(&upper, Some(idmap.root.0), Some(idmap.root.1)).map_err(|source| RootfsError::Io {
            what: "give the container's root the writable layer",
            path: upper,
            source,
        })?;
        return with_idmapped_layers(idmap, &layers, |lowers| mount_overlay(lowers, layer_dir, target));
    }
    mount_overlay(&layers, layer_dir, target)
}

/// An overlay of `layers` (lowest first) under the writable layer in `layer_dir` at `target`.
fn mount_overlay(layers: &[PathBuf], layer_dir: &Path, target: &Path) -> Result<(), RootfsError> {
    let options = overlay_options(layers, layer_dir);
    if options.len() > MAX_OPTIONS {
        let writable = Some((layer_dir.join("upper"), layer_dir.join("work")));
        return mount_overlay_by_parts(layers, writable.as_ref(), target, options.len());
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

/// Attaches at `target` an idmapped copy of the mount at `source` (a host path the kubelet
/// asks to be idmapped by the pod's user namespace at `userns`): a directory or a file, as
/// `source` is (symlinks followed). The copy holds that mount alone, not its submounts, and
/// propagates nothing.
pub fn mount_idmapped_copy(source: &Path, target: &Path, userns: &Path) -> Result<(), RootfsError> {
    let is_dir = std::fs::metadata(source)
        .map_err(|e| RootfsError::Io {
            what: "find the host path of an idmapped mount",
            path: source.into(),
            source: e,
        })?
        .is_dir();
    if is_dir {
        create_dir(target)?;
    } else {
        if let Some(parent) = target.parent() {
            create_dir(parent)?;
        }
        std::fs::File::create(target).map_err(|source| RootfsError::Io {
            what: "create",
            path: target.into(),
            source,
        })?;
    }
    let copy = crate::host::idmap::idmapped_copy(source, userns)?;
    Ok(crate::host::idmap::attach(&copy, target)?)
}

/// Mounts an image read-only at `target` (an image volume): its only layer bound read-only,
/// or an overlay of its layers without a writable one; through idmapped layers with `idmap`.
pub fn mount_image_readonly(layers: &[PathBuf], target: &Path, idmap: Option<&Idmap<'_>>) -> Result<(), RootfsError> {
    create_dir(target)?;
    if let Some(idmap) = idmap {
        return with_idmapped_layers(idmap, layers, |lowers| mount_image_layers(lowers, target));
    }
    mount_image_layers(layers, target)
}

fn mount_image_layers(layers: &[PathBuf], target: &Path) -> Result<(), RootfsError> {
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
    remove_dirs(&[dir], &[])
}

/// Unmounts everything at or under each of `dirs` (deepest first), then removes them. Absent
/// is fine. `known`: mount points made there (a container's rootfs), unmounted first, each with
/// what is mounted below it (a lazy unmount takes it along) and never through a symlink: the
/// mount table, which holds every container's overlay and is formatted afresh at each read, is
/// then usually read once, to find nothing, for all of `dirs` (issue 19: three reads a
/// RemoveContainer made teardown quadratic in the containers on the node).
pub fn remove_dirs(dirs: &[&Path], known: &[&Path]) -> Result<(), RootfsError> {
    for point in known {
        // Stacked mounts come off one at a time; at most as many rounds as below.
        for _ in 0..8 {
            match umount2(*point, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) => continue,
                Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => break,
                Err(source) => return Err(RootfsError::Mount { what: "unmount", path: point.to_path_buf(), source }),
            }
        }
    }
    // Until nothing is mounted there: a mount point may hold several stacked mounts, and
    // the removal must never walk into one (a propagated host directory).
    let mut rounds = 0;
    loop {
        let mut mounted = Vec::new();
        for dir in crate::host::mounts::mounts_under_each(dirs)? {
            mounted.extend(dir);
        }
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
    for dir in dirs {
        crate::fstree::remove_tree(dir).map_err(|source| RootfsError::Io {
            what: "remove",
            path: dir.into(),
            source,
        })?;
    }
    Ok(())
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
        mount_rootfs(&[base.clone(), top.clone()], &tmp.path().join("layer"), &target, None).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "top", "the upper image layer wins");
        std::fs::write(target.join("b"), "new").unwrap();
        assert!(!base.join("b").exists() && !top.join("b").exists(), "writes go to the container's layer");
        assert!(tmp.path().join("layer/upper/b").exists());
        let volume = tmp.path().join("run/volume");
        mount_image_readonly(&[base.clone(), top], &volume, None).unwrap();
        assert!(std::fs::write(volume.join("c"), "x").is_err(), "an image volume is read-only");
        remove_dir(&tmp.path().join("run")).unwrap();
        assert!(!tmp.path().join("run").exists());
        assert!(crate::host::mounts::mounts_under(tmp.path()).unwrap().is_empty());
        remove_dir(&tmp.path().join("run")).unwrap();
    }

    /// A container's run directory and writable layer go in one call: the rootfs (known, with
    /// a mount stacked on it and one below it) and a mount found only in the mount table.
    #[test]
    fn known_and_unknown_mounts_under_several_directories_all_go() {
        let tmp = tempfile::tempdir().unwrap();
        let (base, run, layer) = (tmp.path().join("base"), tmp.path().join("run"), tmp.path().join("layer"));
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("a"), "base").unwrap();
        let target = run.join("rootfs");
        mount_rootfs(std::slice::from_ref(&base), &layer, &target, None).unwrap();
        let tmpfs = |at: &Path| {
            std::fs::create_dir_all(at).unwrap();
            mount(Some("tmpfs"), at, Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
        };
        tmpfs(&target.join("proc"));
        tmpfs(&target);
        tmpfs(&run.join("volume"));
        remove_dirs(&[&run, &layer], &[&target]).unwrap();
        assert!(!run.exists() && !layer.exists());
        assert!(crate::host::mounts::mounts_under(tmp.path()).unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(base.join("a")).unwrap(), "base", "the image layer is untouched");
        remove_dirs(&[&run, &layer], &[&target]).unwrap();
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
        mount_rootfs(&layers, &tmp.path().join("layer"), &target, None).unwrap();
        assert_eq!(std::fs::read_dir(target.join("layers")).unwrap().count(), 126, "every layer's file and top");
        assert_eq!(std::fs::read_to_string(target.join("layers/top")).unwrap(), "124", "the last layer wins");
        std::fs::write(target.join("layers/new"), "x").unwrap();
        assert!(tmp.path().join("layer/upper/layers/new").exists(), "writes go to the container's layer");
        let volume = tmp.path().join("run/volume");
        mount_image_readonly(&layers, &volume, None).unwrap();
        assert_eq!(std::fs::read_to_string(volume.join("layers/000")).unwrap(), "0");
        assert!(std::fs::write(volume.join("c"), "x").is_err(), "an image volume is read-only");
        remove_dir(&tmp.path().join("run")).unwrap();
        assert!(crate::host::mounts::mounts_under(tmp.path()).unwrap().is_empty());
    }

    /// A pod with a user namespace mapping its root to host uid 200000: through the idmapped
    /// layers, files root owns on disk are 200000's; the writable layer is 200000's own; the
    /// image's layers on disk do not change; no staging mount stays.
    #[test]
    fn idmapped_layers_shift_owners_without_touching_the_disk() {
        use crate::host::idmap::{IdMapping, IdMappings, MappedChild};
        use std::os::unix::fs::MetadataExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let range = IdMapping { container_id: 0, host_id: 200_000, length: 65536 };
        let child =
            MappedChild::spawn(nix::sched::CloneFlags::empty(), &IdMappings { uids: range, gids: range }).unwrap();
        let userns = tmp.path().join("userns");
        std::fs::write(&userns, b"").unwrap();
        mount(Some(&child.namespace("user")), &userns, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        child.finish();
        let (base, top) = (tmp.path().join("base"), tmp.path().join("top"));
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&top).unwrap();
        std::fs::write(base.join("a"), "base").unwrap();
        std::fs::write(top.join("t"), "top").unwrap();
        std::os::unix::fs::chown(top.join("t"), Some(1000), Some(1000)).unwrap();
        let layer = tmp.path().join("layer");
        let staging = tmp.path().join("run/idmapped");
        let idmap = Idmap { userns: &userns, root: (200_000, 200_000), staging: &staging };
        let target = tmp.path().join("run/rootfs");
        mount_rootfs(&[base.clone(), top.clone()], &layer, &target, Some(&idmap)).unwrap();
        let owner = |p: &Path| std::fs::metadata(p).map(|m| (m.uid(), m.gid())).unwrap();
        assert_eq!(owner(&target.join("a")), (200_000, 200_000), "a lower layer's root-owned file");
        assert_eq!(owner(&target.join("t")), (201_000, 201_000), "uid 1000 of the image");
        assert_eq!(owner(&target), (200_000, 200_000), "the root directory is the writable layer's");
        assert_eq!(owner(&layer.join("upper")), (200_000, 200_000));
        assert_eq!(owner(&base.join("a")), (0, 0), "the disk is untouched");
        assert!(!staging.exists(), "the staging directory is gone");
        let volume = tmp.path().join("run/volume");
        mount_image_readonly(&[base.clone(), top.clone()], &volume, Some(&idmap)).unwrap();
        assert_eq!(owner(&volume.join("t")), (201_000, 201_000));
        mount_image_readonly(std::slice::from_ref(&base), &tmp.path().join("run/single"), Some(&idmap)).unwrap();
        assert_eq!(owner(&tmp.path().join("run/single/a")), (200_000, 200_000));
        remove_dir(&tmp.path().join("run")).unwrap();
        nix::mount::umount2(&userns, MntFlags::MNT_DETACH).unwrap();
        assert!(crate::host::mounts::mounts_under(tmp.path()).unwrap().is_empty());
    }
}
