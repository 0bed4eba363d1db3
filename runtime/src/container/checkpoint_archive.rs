//! The checkpoint archive of one container, in the layout CRI-O writes for the kubelet's
//! checkpoint API, so that tools made for those (checkpointctl) read ours: `config.dump`,
//! `spec.dump` (the OCI spec), `checkpoint/` (CRIU's images), `rootfs-diff.tar` (the files of
//! the writable layer), `deleted.files` (what the container deleted from its image, JSON),
//! `stats-dump` (CRIU's) and `container.log`. Written from a checkpointed container, read back
//! for a restore. Touches only the directories and files it is given.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CONFIG_DUMP: &str = "config.dump";
pub const SPEC_DUMP: &str = "spec.dump";
pub const IMAGES_DIR: &str = "checkpoint";
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
pub const DELETED_FILES: &str = "deleted.files";
pub const STATS_DUMP: &str = "stats-dump";
pub const CONTAINER_LOG: &str = "container.log";

/// The archive's `config.dump`: which container was checkpointed, from which image, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDump {
    pub id: String,
    /// The container's CRI name (metadata.name).
    pub name: String,
    /// The image as the container's status showed it.
    #[serde(default)]
    pub rootfs_image: String,
    /// The image's ID (`sha256:…`): what a restore creates the new container from.
    #[serde(default)]
    pub rootfs_image_ref: String,
    /// The image's name (its first tag), for people.
    #[serde(default)]
    pub rootfs_image_name: String,
    /// The OCI runtime that ran it ("runc").
    #[serde(default, rename = "runtime")]
    pub oci_runtime: String,
    /// RFC 3339.
    #[serde(default)]
    pub created_time: String,
    #[serde(default)]
    pub checkpointed_time: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// The file is not a checkpoint archive this runtime can restore.
    #[error("{path} is not a checkpoint archive: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::Io { what, path, source }
}

/// Writes `value` as pretty JSON to `dir/name`.
pub fn write_json(dir: &Path, name: &str, value: &impl Serialize) -> Result<(), ArchiveError> {
    let path = dir.join(name);
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| ArchiveError::Io {
        what: "encode",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&path, bytes).map_err(io("write", &path))
}

/// The writable layer `upper` (an overlayfs upper directory) as `dir/rootfs-diff.tar`, and its
/// whiteouts (files deleted from the image) as `dir/deleted.files`.
pub fn write_rootfs_diff(upper: &Path, dir: &Path) -> Result<(), ArchiveError> {
    let target = dir.join(ROOTFS_DIFF);
    let file = File::create(&target).map_err(io("create", &target))?;
    let mut builder = tar::Builder::new(BufWriter::new(file));
    builder.follow_symlinks(false);
    let mut deleted = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let full = upper.join(&relative);
        let mut entries: Vec<_> = std::fs::read_dir(&full)
            .map_err(io("read directory", &full))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io("read directory", &full))?;
        entries.sort();
        for name in entries {
            let relative = relative.join(&name);
            let path = upper.join(&relative);
            let meta = std::fs::symlink_metadata(&path).map_err(io("stat", &path))?;
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                deleted.push(format!("/{}", relative.display()));
                continue;
            }
            builder.append_path_with_name(&path, &relative).map_err(io("archive", &path))?;
            if meta.is_dir() {
                pending.push(relative);
            }
        }
    }
    let mut writer = builder.into_inner().map_err(io("write", &target))?;
    writer.flush().map_err(io("write", &target))?;
    write_json(dir, DELETED_FILES, &deleted)
}

/// Packs the files of `dir` into the tar `target`, whole or not at all (a temporary file beside
/// it, renamed). The archive's size.
pub fn pack(dir: &Path, target: &Path) -> Result<u64, ArchiveError> {
    let name = target.file_name().ok_or_else(|| ArchiveError::Invalid {
        path: target.to_path_buf(),
        problem: "the location names no file".into(),
    })?;
    let partial = target.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let written = (|| {
        let file = File::create(&partial).map_err(io("create", &partial))?;
        let mut builder = tar::Builder::new(BufWriter::new(file));
        builder.follow_symlinks(false);
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(io("read directory", dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io("read directory", dir))?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            if path.is_dir() {
                builder.append_dir_all(&name, &path).map_err(io("archive", &path))?;
            } else {
                builder.append_path_with_name(&path, &name).map_err(io("archive", &path))?;
            }
        }
        let writer = builder.into_inner().map_err(io("write", &partial))?;
        let file = writer.into_inner().map_err(|e| ArchiveError::Io {
            what: "write",
            path: partial.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io("sync", &partial))?;
        std::fs::rename(&partial, target).map_err(io("rename into place", target))?;
        std::fs::metadata(target).map(|m| m.len()).map_err(io("stat", target))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// What a restore needs of an unpacked archive.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub config: ConfigDump,
    pub spec: oci_spec::runtime::Spec,
    /// The CRIU images.
    pub images: PathBuf,
}

/// Unpacks the archive at `archive` into `dir` (an empty directory) with the image
/// unpacker's checks (nothing outside `dir`), and reads what a restore needs.
pub fn unpack(archive: &Path, dir: &Path) -> Result<Unpacked, ArchiveError> {
    let invalid = |problem: String| ArchiveError::Invalid { path: archive.to_path_buf(), problem };
    let file = File::open(archive).map_err(io("open", archive))?;
    crate::image::unpack::extract(BufReader::new(file), dir).map_err(|e| invalid(e.to_string()))?;
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| invalid(format!("{name} cannot be read: {e}")));
    let config: ConfigDump =
        serde_json::from_slice(&read(CONFIG_DUMP)?).map_err(|e| invalid(format!("{CONFIG_DUMP} is not valid: {e}")))?;
    let spec: oci_spec::runtime::Spec =
        serde_json::from_slice(&read(SPEC_DUMP)?).map_err(|e| invalid(format!("{SPEC_DUMP} is not valid: {e}")))?;
    let images = dir.join(IMAGES_DIR);
    if !images.join("inventory.img").is_file() {
        return Err(invalid(format!("{IMAGES_DIR}/ holds no CRIU images (no inventory.img)")));
    }
    Ok(Unpacked { config, spec, images })
}

/// Makes `upper`, the new container's empty writable layer, hold what the checkpointed one
/// held: the files of `rootfs-diff.tar`, and a whiteout for each file of `deleted.files`.
pub fn restore_rootfs_diff(dir: &Path, upper: &Path) -> Result<(), ArchiveError> {
    let invalid = |problem: String| ArchiveError::Invalid { path: dir.to_path_buf(), problem };
    let diff = dir.join(ROOTFS_DIFF);
    if diff.exists() {
        let file = File::open(&diff).map_err(io("open", &diff))?;
        crate::image::unpack::extract(BufReader::new(file), upper)
            .map_err(|e| invalid(format!("{ROOTFS_DIFF}: {e}")))?;
    }
    let listed = dir.join(DELETED_FILES);
    if !listed.exists() {
        return Ok(());
    }
    let text = std::fs::read(&listed).map_err(io("read", &listed))?;
    let deleted: Vec<String> =
        serde_json::from_slice(&text).map_err(|e| invalid(format!("{DELETED_FILES} is not valid: {e}")))?;
    for path in deleted {
        let relative = inside(&path)
            .ok_or_else(|| invalid(format!("{DELETED_FILES}: {path:?} is not a path inside the rootfs")))?;
        let target = upper.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        // An overlayfs whiteout: a character device 0:0 hides the image's file.
        nix::sys::stat::mknod(&target, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
            .map_err(|e| ArchiveError::Io { what: "make a whiteout at", path: target.clone(), source: e.into() })?;
    }
    Ok(())
}

/// `path` ("/etc/motd" or "etc/motd") relative to the rootfs, if it stays inside it.
fn inside(path: &str) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => relative.push(part),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!relative.as_os_str().is_empty()).then_some(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_paths_stay_inside_the_rootfs() {
        assert_eq!(inside("/etc/motd"), Some(PathBuf::from("etc/motd")));
        assert_eq!(inside("tmp/./x"), Some(PathBuf::from("tmp/x")));
        assert_eq!(inside("/../etc/shadow"), None);
        assert_eq!(inside("a/../../b"), None);
        assert_eq!(inside("/"), None);
    }

    #[test]
    fn the_writable_layer_round_trips_files_and_deletions() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        std::fs::create_dir_all(upper.join("tmp/deep")).unwrap();
        std::fs::write(upper.join("tmp/deep/count"), "42").unwrap();
        std::os::unix::fs::symlink("deep/count", upper.join("tmp/link")).unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/motd"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let archive = tmp.path().join("archive");
        std::fs::create_dir(&archive).unwrap();
        write_rootfs_diff(&upper, &archive).unwrap();
        let deleted: Vec<String> =
            serde_json::from_slice(&std::fs::read(archive.join(DELETED_FILES)).unwrap()).unwrap();
        assert_eq!(deleted, vec!["/etc/motd".to_string()]);

        let fresh = tmp.path().join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        restore_rootfs_diff(&archive, &fresh).unwrap();
        assert_eq!(std::fs::read_to_string(fresh.join("tmp/deep/count")).unwrap(), "42");
        assert_eq!(std::fs::read_link(fresh.join("tmp/link")).unwrap(), Path::new("deep/count"));
        let whiteout = std::fs::symlink_metadata(fresh.join("etc/motd")).unwrap();
        assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0, "the deletion is a whiteout again");
    }

    #[test]
    fn a_file_that_is_no_archive_is_refused_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let bogus = tmp.path().join("bogus.tar");
        std::fs::write(&bogus, b"not a tar at all, just words").unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let err = unpack(&bogus, &out).unwrap_err();
        assert!(matches!(err, ArchiveError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("bogus.tar"), "{err}");

        // A real tar without the dumps.
        let dir = tmp.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("hello"), "hi").unwrap();
        let tar = tmp.path().join("plain.tar");
        pack(&dir, &tar).unwrap();
        let out = tmp.path().join("out2");
        std::fs::create_dir(&out).unwrap();
        let err = unpack(&tar, &out).unwrap_err();
        assert!(err.to_string().contains(CONFIG_DUMP), "{err}");
    }
}
