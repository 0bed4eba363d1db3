//! Optional TLS on the streaming server: a PEM certificate chain and its PEM private key, read
//! once at start (`stream_tls_cert`, `stream_tls_key`: both or neither). With them the URLs
//! are https:// and every connection is a TLS one before any HTTP is read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the server's certificate chain and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the streaming TLS {what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the streaming TLS certificate file {path} holds no PEM certificate ({reason})")]
    NoCertificate { path: PathBuf, reason: String },
    #[error("the streaming TLS key file {path} holds no PEM private key ({reason})")]
    NoKey { path: PathBuf, reason: String },
    #[error("the streaming TLS certificate {cert} and key {key} do not go together: {source}")]
    Mismatch { cert: PathBuf, key: PathBuf, source: rustls::Error },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.into(), source })
}

/// The acceptor for `files`: the chain in file order (the server's certificate first).
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let pem = read("certificate", &files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate { path: files.cert.clone(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: files.cert.clone(), reason: "the file is empty".into() });
    }
    let key = PrivateKeyDer::from_pem_slice(&read("key", &files.key)?)
        .map_err(|e| TlsError::NoKey { path: files.key.clone(), reason: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|source| TlsError::Mismatch { cert: files.cert.clone(), key: files.key.clone(), source })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_pem_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "not a certificate\n").unwrap();
        std::fs::write(&key, "not a key\n").unwrap();
        let err = acceptor(&TlsFiles { cert: cert.clone(), key }).err().unwrap();
        assert!(matches!(&err, TlsError::NoCertificate { path, .. } if *path == cert), "{err}");
        let missing = TlsFiles { cert: dir.path().join("absent.pem"), key: dir.path().join("k.pem") };
        let err = acceptor(&missing).err().unwrap().to_string();
        assert!(err.contains("absent.pem"), "{err}");
    }
}
