//! Finds lockstepd's helper binaries (lockstep-pause, lockstep-monitor): next to the running
//! executable, then — for cargo's test binaries in target/<profile>/deps — one directory up,
//! then in PATH. Reads directory entries only.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("helper binary {name} is neither next to {exe} nor in PATH")]
pub struct HelperNotFound {
    pub name: String,
    pub exe: String,
}

/// The path of helper binary `name`.
pub fn find_helper(name: &str) -> Result<PathBuf, HelperNotFound> {
    let exe = std::env::current_exe().ok();
    let mut candidates = Vec::new();
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        candidates.push(dir.join(name));
        if dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(up) = dir.parent() {
                candidates.push(up.join(name));
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates.into_iter().find(|p| is_executable(p)).ok_or_else(|| HelperNotFound {
        name: name.to_string(),
        exe: exe.map(|e| e.display().to_string()).unwrap_or_else(|| "(unknown executable)".into()),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_binaries_in_path_and_says_where_it_looked() {
        assert!(find_helper("sh").is_ok_and(|p| p.ends_with("sh")));
        let err = find_helper("lockstep-no-such-helper").unwrap_err().to_string();
        assert!(err.contains("lockstep-no-such-helper") && err.contains("PATH"), "{err}");
    }
}
