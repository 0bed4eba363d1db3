//! Where lockstepd finds its helper binaries (lockstep-monitor, …): next to its own
//! executable first, as an installed or built tree lays them out, then through PATH.
//! Reads only the file system.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("helper binary {name} not found next to {beside} nor in PATH")]
pub struct HelperNotFound {
    pub name: String,
    pub beside: String,
}

/// The helper `name`: beside the running executable, else in PATH.
pub fn find_helper(name: &str) -> Result<PathBuf, HelperNotFound> {
    let exe = std::env::current_exe().ok();
    let beside = exe.as_deref().and_then(Path::parent);
    find_helper_in(name, beside, std::env::var_os("PATH").as_deref())
}

/// `find_helper` with the executable's directory and PATH given, for tests. Test binaries live
/// in target/<profile>/deps, so the parent of that directory is tried as well.
pub fn find_helper_in(
    name: &str,
    exe_dir: Option<&Path>,
    path: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, HelperNotFound> {
    let mut candidates = Vec::new();
    if let Some(dir) = exe_dir {
        candidates.push(dir.join(name));
        if dir.file_name().is_some_and(|n| n == "deps") {
            candidates.extend(dir.parent().map(|p| p.join(name)));
        }
    }
    if let Some(path) = path {
        candidates.extend(std::env::split_paths(path).map(|d| d.join(name)));
    }
    candidates.into_iter().find(|p| is_executable(p)).ok_or_else(|| HelperNotFound {
        name: name.to_string(),
        beside: exe_dir.map(|d| d.display().to_string()).unwrap_or_else(|| "lockstepd".into()),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn beside_the_executable_wins_over_path() {
        let tmp = tempfile::tempdir().unwrap();
        let (here, there) = (tmp.path().join("here"), tmp.path().join("there"));
        std::fs::create_dir_all(&here).unwrap();
        std::fs::create_dir_all(&there).unwrap();
        executable(&here.join("helper"));
        executable(&there.join("helper"));
        let found = find_helper_in("helper", Some(&here), Some(there.as_os_str())).unwrap();
        assert_eq!(found, here.join("helper"));
        let found = find_helper_in("helper", Some(tmp.path()), Some(there.as_os_str())).unwrap();
        assert_eq!(found, there.join("helper"), "PATH is the fallback");
    }

    #[test]
    fn a_test_binary_in_deps_finds_helpers_one_level_up() {
        let tmp = tempfile::tempdir().unwrap();
        let deps = tmp.path().join("deps");
        std::fs::create_dir_all(&deps).unwrap();
        executable(&tmp.path().join("helper"));
        assert_eq!(find_helper_in("helper", Some(&deps), None).unwrap(), tmp.path().join("helper"));
    }

    #[test]
    fn a_missing_or_non_executable_helper_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("helper"), "not executable").unwrap();
        let err = find_helper_in("helper", Some(tmp.path()), None).unwrap_err();
        assert!(err.to_string().contains("helper") && err.to_string().contains("PATH"), "{err}");
    }
}
