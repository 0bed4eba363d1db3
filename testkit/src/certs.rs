//! Certificates for tests that speak TLS: a CA and a server certificate it signed for one IP
//! address, made by the openssl command line in a directory of the test's.

use std::path::{Path, PathBuf};

/// A CA and a server certificate it signed for `ip`, made with openssl in `dir`.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_certs(dir: &Path, ip: std::net::IpAddr) -> Certs {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl CLI (Debian package openssl, see ci/setup)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=lockstep-test-ca"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=lockstep-test"]].concat());
    std::fs::write(dir.join("ext.cnf"), format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n")).unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    Certs { ca: dir.join("ca.crt"), cert: dir.join("server.crt"), key: dir.join("server.key") }
}
