//! The directories of a layer, each recorded once, and those it makes without listing them:
//! after extraction they take their attributes from the layers below, as overlayfs would show
//! them ([`inherit_implicit_dirs`]). Touches only the snapshot it is given.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::paths::open_dir_nofollow;
use super::whiteouts::{below, Below, OVERLAY_XATTR_PREFIX};
use super::{io_err, short, Extracted, UnpackError};

/// The directories of a layer, each recorded once as its parent and its name: a path `depth`
/// components deep costs `depth` small records, not `depth` copies of ever longer paths.
/// Node 0 is the root; a parent always comes before its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirTree {
    pub(super) nodes: Vec<DirNode>,
    pub(super) index: HashMap<(u32, Box<str>), u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DirNode {
    pub(super) parent: u32,
    pub(super) name: Box<str>,
    /// The layer lists it: the times to give it once its children are in.
    pub(super) mtime: Option<i64>,
    /// Made because an entry lies below it, not listed (last made that way).
    pub(super) implicit: bool,
}

impl Default for DirTree {
    fn default() -> Self {
        let root = DirNode { parent: 0, name: "".into(), mtime: None, implicit: false };
        DirTree { nodes: vec![root], index: HashMap::new() }
    }
}

impl DirTree {
    /// The node of `name` under `parent`, recorded now if new.
    pub(super) fn child(&mut self, parent: u32, name: &str) -> u32 {
        let key = (parent, Box::<str>::from(name));
        if let Some(&id) = self.index.get(&key) {
            return id;
        }
        let id = self.nodes.len() as u32;
        self.nodes.push(DirNode { parent, name: key.1.clone(), mtime: None, implicit: false });
        self.index.insert(key, id);
        id
    }

    pub(super) fn node_of(&mut self, components: &[String]) -> u32 {
        components.iter().fold(0, |node, name| self.child(node, name))
    }

    /// The components of a node's path below the root.
    pub(super) fn path(&self, mut id: u32) -> Vec<String> {
        let mut out = Vec::new();
        while id != 0 {
            let node = &self.nodes[id as usize];
            out.push(node.name.to_string());
            id = node.parent;
        }
        out.reverse();
        out
    }

    /// How many directories the layer does not list.
    pub fn implicit_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.implicit).count()
    }
}

/// Gives the directories a layer did not list (`extracted.implicit_dirs`, and its root unless
/// listed) the attributes they have in the layers below (`lowers`, snapshot roots, lowest
/// first): owner, mode, times and extended attributes (not overlayfs's own). Without this a
/// layer holding only `tmp/x` would turn the merged `/tmp` from 1777 into 0755. A path that a
/// lower layer made a file or a symlink fails the layer: lockstep writes through no symlink.
pub fn inherit_implicit_dirs(root: &Path, extracted: &Extracted, lowers: &[PathBuf]) -> Result<(), UnpackError> {
    let top_first: Vec<PathBuf> = lowers.iter().rev().cloned().collect();
    if !extracted.root_listed {
        if let (Some(top), Ok(target)) = (top_first.first(), open_dir_nofollow(root, &[])) {
            let lower = open_dir_nofollow(top, &[]).map_err(|e| io_err("./", "open it below", e))?;
            copy_dir_attributes(&lower, &target, "./")?;
        }
    }
    let nodes = &extracted.dirs.nodes;
    // Absent below: so are its children, which need no look-up (a hostile chain of thousands
    // of implicit directories costs one).
    let mut absent_below = vec![false; nodes.len()];
    for id in 1..nodes.len() {
        let node = &nodes[id];
        if absent_below[node.parent as usize] {
            absent_below[id] = true;
            continue;
        }
        if !node.implicit {
            continue;
        }
        let path = extracted.dirs.path(id as u32);
        let entry = short(&path.join("/"));
        let Ok(target) = open_dir_nofollow(root, &path) else { continue }; // removed or replaced later in the layer
        match below(&top_first, &path).map_err(|e| io_err(&entry, "look it up in the layers below", e))? {
            Below::Absent => absent_below[id] = true,
            Below::NotDir(kind) => {
                let what = if kind == FileType::Symlink { "a symlink" } else { "not a directory" };
                return Err(UnpackError::LowerConflict {
                    entry,
                    reason: format!(
                        "the layer writes below it, and a lower layer made it {what}; lockstep does not write through it"
                    ),
                });
            }
            Below::Dir(dir) => {
                let lower = open_dir_nofollow(&dir, &[]).map_err(|e| io_err(&entry, "open it below", e))?;
                copy_dir_attributes(&lower, &target, &entry)?;
            }
        }
    }
    Ok(())
}

fn copy_dir_attributes(from: &OwnedFd, to: &OwnedFd, entry: &str) -> Result<(), UnpackError> {
    let st = rfs::fstat(from).map_err(|e| io_err(entry, "inspect it below", e))?;
    rfs::fchown(to, Some(rfs::Uid::from_raw(st.st_uid)), Some(rfs::Gid::from_raw(st.st_gid)))
        .map_err(|e| io_err(entry, "chown", e))?;
    rfs::fchmod(to, Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(|e| io_err(entry, "chmod", e))?;
    let mut names = vec![0u8; 64 * 1024];
    let n = match rfs::flistxattr(from, &mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => 0,
        Err(e) => return Err(io_err(entry, "list extended attributes below", e)),
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        let mut value = vec![0u8; 64 * 1024];
        let len = rfs::fgetxattr(from, name.as_str(), &mut value[..])
            .map_err(|e| io_err(entry, "read an extended attribute below", e))?;
        rfs::fsetxattr(to, name.as_str(), &value[..len], XattrFlags::empty())
            .map_err(|e| io_err(entry, "set an extended attribute", e))?;
    }
    let t = |sec: i64, nsec: u64| rfs::Timespec { tv_sec: sec, tv_nsec: nsec as _ };
    let stamps = Timestamps {
        last_access: t(st.st_atime as i64, st.st_atime_nsec as u64),
        last_modification: t(st.st_mtime as i64, st.st_mtime_nsec as u64),
    };
    rfs::futimens(to, &stamps).map_err(|e| io_err(entry, "set times", e))
}
