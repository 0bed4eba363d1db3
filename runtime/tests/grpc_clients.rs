//! gRPC clients other than Go's against a real lockstepd process: Python's grpcio (gRPC
//! C-core), which sends the socket path as `:authority`, with its defaults and with the
//! authorities other clients send (empty, the path, `unix:<path>`), and a hand-built HTTP/2
//! client that splits, pads and table-references a socket-path authority.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use common::{start, Lockstepd};
use lockstep_cri::model;
use lockstep_runtime::authority::{SERVER_HEADER_TABLE_SIZE, SERVER_MAX_FRAME_SIZE};
use prost::Message;

/// Calls Version three times and Status once on one channel; prints each Version answer in hex.
const GRPCIO_CLIENT: &str = r#"
import sys, grpc
target = sys.argv[1]
options = [("grpc.default_authority", sys.argv[2])] if len(sys.argv) > 2 else []
with grpc.insecure_channel(target, options=options) as channel:
    version = channel.unary_unary("/runtime.v1.RuntimeService/Version")
    for _ in range(3):
        print(version(b"", timeout=20).hex())
    channel.unary_unary("/runtime.v1.RuntimeService/Status")(b"", timeout=20)
"#;

/// Whether python3 has grpcio. Outside CI a machine without it skips (with a message); in CI
/// (ci/setup installs it) its absence fails the test.
fn have_grpcio() -> bool {
    let found = Command::new("python3").args(["-c", "import grpc"]).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "CI must have python3 with grpcio (ci/setup installs it)");
        eprintln!("SKIPPED: python3 lacks grpcio (python3 -m pip install grpcio, or run ci/setup)");
    }
    found
}

/// Runs the grpcio client against `daemon` and returns its Version answers.
fn grpcio_versions(daemon: &Lockstepd, authority: Option<&str>) -> Vec<model::VersionResponse> {
    let target = format!("unix://{}", daemon.socket().display());
    let mut command = Command::new("python3");
    command.args(["-c", GRPCIO_CLIENT, &target]);
    command.args(authority);
    let out = command.output().expect("python3 runs");
    assert!(
        out.status.success(),
        "grpcio with :authority {authority:?} failed: {}\nlockstepd's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|hex| {
            let bytes: Vec<u8> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            model::VersionResponse::decode(&bytes[..]).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn grpcio_with_its_defaults_calls_version() {
    if !have_grpcio() {
        return;
    }
    let daemon = start().await;
    let versions = grpcio_versions(&daemon, None);
    assert_eq!(versions.len(), 3);
    for v in versions {
        assert_eq!(
            (v.version.as_str(), v.runtime_name.as_str(), v.runtime_api_version.as_str()),
            ("0.1.0", "lockstep", "v1")
        );
    }
}

#[tokio::test]
async fn grpcio_with_an_empty_path_or_unix_authority_calls_version() {
    if !have_grpcio() {
        return;
    }
    let daemon = start().await;
    let path = daemon.socket().display().to_string();
    for authority in [String::new(), path.clone(), format!("unix:{path}"), "localhost".to_string()] {
        let versions = grpcio_versions(&daemon, Some(&authority));
        assert_eq!(versions.len(), 3, "{authority:?}");
        assert!(versions.iter().all(|v| v.runtime_name == "lockstep"), "{authority:?}");
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A literal with incremental indexing, its name from the static table (RFC 7541 5.1, 6.2.1).
fn indexed_literal(block: &mut Vec<u8>, name: u8, value: &[u8]) {
    assert!(value.len() < 127);
    block.extend_from_slice(&[0x40 | name, value.len() as u8]);
    block.extend_from_slice(value);
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn read_frame(conn: &mut UnixStream) -> Frame {
    let mut head = [0u8; 9];
    conn.read_exact(&mut head).expect("a frame from lockstepd");
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0; len];
    conn.read_exact(&mut payload).unwrap();
    Frame { kind: head[3], flags: head[4], stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]), payload }
}

#[tokio::test]
async fn a_split_padded_and_table_referenced_socket_path_authority_is_served() {
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const CONTINUATION: u8 = 0x9;
    let daemon = start().await;
    let path = daemon.socket();
    let mut conn = tokio::task::spawn_blocking(move || UnixStream::connect(path)).await.unwrap().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    conn.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();

    // The server's settings are the ones the adapter assumes (defaults unless announced).
    let settings = read_frame(&mut conn);
    assert_eq!((settings.kind, settings.flags & 1), (SETTINGS, 0));
    for s in settings.payload.chunks(6) {
        let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]) as usize;
        match u16::from_be_bytes([s[0], s[1]]) {
            0x1 => assert_eq!(value, SERVER_HEADER_TABLE_SIZE, "SETTINGS_HEADER_TABLE_SIZE"),
            0x5 => assert_eq!(value, SERVER_MAX_FRAME_SIZE, "SETTINGS_MAX_FRAME_SIZE"),
            _ => {}
        }
    }

    // Stream 1: :path, :authority and content-type become table entries 64, 63 and 62; the
    // block is cut inside the authority, HEADERS padded and with a priority.
    let mut block = vec![0x83, 0x86]; // POST, http
    indexed_literal(&mut block, 4, b"/runtime.v1.RuntimeService/Version");
    let cut = block.len() + 6;
    indexed_literal(&mut block, 1, daemon.socket().display().to_string().as_bytes());
    indexed_literal(&mut block, 31, b"application/grpc");
    block.extend_from_slice(&[0x00, 2, b't', b'e', 8]);
    block.extend_from_slice(b"trailers");
    let mut first = vec![4, 0, 0, 0, 0, 200]; // pad length; dependency 0, weight 201
    first.extend_from_slice(&block[..cut]);
    first.extend_from_slice(&[0; 4]);
    let empty_message = [0u8; 5];
    let mut request = frame(HEADERS, 0x8 | 0x20, 1, &first);
    request.extend(frame(CONTINUATION, 0x4, 1, &block[cut..]));
    request.extend(frame(0x0, 0x1, 1, &empty_message));
    // Stream 3: every field by index, the authority as entry 63.
    let again = [0x83, 0x86, 0x80 | 64, 0x80 | 63, 0x80 | 62, 0x00, 2, b't', b'e', 8];
    let mut again = again.to_vec();
    again.extend_from_slice(b"trailers");
    request.extend(frame(HEADERS, 0x4, 3, &again));
    request.extend(frame(0x0, 0x1, 3, &empty_message));
    conn.write_all(&request).unwrap();

    let mut answered = Vec::new();
    while answered.len() < 2 {
        let f = read_frame(&mut conn);
        assert_ne!(f.kind, RST_STREAM, "stream {} reset: {:?}\n{}", f.stream, f.payload, daemon.log());
        if f.kind == 0x0 && !f.payload.is_empty() {
            let version = model::VersionResponse::decode(&f.payload[5..]).unwrap();
            assert_eq!(version.runtime_name, "lockstep");
            answered.push(f.stream);
        }
    }
    answered.sort();
    assert_eq!(answered, vec![1, 3]);
}
