//! The CRI socket: its parent directory is created, a stale socket left by a dead daemon is
//! replaced, a socket that a live daemon answers on is refused, and the new one is mode 0660
//! and appears only once it listens.
//! Touches only the socket path and its parent directory.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create the socket's directory {path}: {source}")]
    Directory { path: PathBuf, source: std::io::Error },
    #[error("another daemon is already listening on {0}; stop it or choose another --listen path")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

/// Binds the CRI socket at `path` (mode 0660) and returns the listener.
pub fn listen(path: &Path) -> Result<tokio::net::UnixListener, SocketError> {
    let io = |what, source| SocketError::Io { what, path: path.to_path_buf(), source };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|source| SocketError::Directory { path: parent.to_path_buf(), source })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => return Err(SocketError::NotASocket(path.to_path_buf())),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(SocketError::InUse(path.to_path_buf())),
            // Nobody answers: a daemon died without cleaning up.
            Err(_) => std::fs::remove_file(path).map_err(|e| io("remove the stale socket", e))?,
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspect", e)),
    }
    // Bound and listening under a temporary name, then renamed into place: a client that sees
    // the socket can connect (between bind() and listen() a connect is refused).
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}", std::process::id()));
    let tmp_io = |what, source| SocketError::Io { what, path: tmp.clone(), source };
    let _ = std::fs::remove_file(&tmp);
    let listener = tokio::net::UnixListener::bind(&tmp).map_err(|e| tmp_io("listen on", e))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| tmp_io("chmod", e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| io("move the socket into place at", e)));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_parent_and_sets_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b/lockstep.sock");
        let _listener = listen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        std::os::unix::net::UnixStream::connect(&path).expect("listening once it is there");
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("lockstep.sock")], "no temporary name is left");
    }

    #[tokio::test]
    async fn replaces_a_stale_socket_and_refuses_a_live_one() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // stale: file stays, nobody listens
        assert!(path.exists());
        let live = listen(&path).expect("a stale socket is replaced");
        let err = listen(&path).unwrap_err();
        assert!(matches!(err, SocketError::InUse(_)), "{err}");
        drop(live);
    }

    #[tokio::test]
    async fn never_removes_a_file_that_is_not_a_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("precious");
        std::fs::write(&path, "data").unwrap();
        assert!(matches!(listen(&path).unwrap_err(), SocketError::NotASocket(_)));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }
}
