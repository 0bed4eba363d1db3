//! What the `:authority` adapter (runtime/src/authority) costs per request on the client's
//! side of a connection: kubelet-like unary calls (a header block of table references and one
//! Huffman-coded literal, then a DATA frame), with a valid authority (forwarded as received)
//! and with a socket path (every block re-encoded), read through
//! `AuthorityFix` as h2 reads a connection, beside the same reads without it.
//! Run: cargo bench -p lockstep-runtime --bench authority

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lockstep_runtime::authority::AuthorityFix;
use std::hint::black_box;
use tokio::io::AsyncReadExt;

const REQUESTS: usize = 1000;
/// What a read returns at most.
const READ: usize = 16 * 1024;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn literal(block: &mut Vec<u8>, first: u8, name: &[u8], value: &[u8]) {
    block.push(first);
    for s in [name, value] {
        block.push(s.len() as u8); // all below 127
        block.extend_from_slice(s);
    }
}

/// A connection: its first request puts `:path`, `:authority`, content-type, user-agent and
/// te in the table, as grpc-go does; the other requests name them by index and carry
/// grpc-timeout as a Huffman-coded literal, then a 40-octet message.
fn connection(authority: &[u8]) -> Vec<u8> {
    let mut c = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    c.extend(frame(0x4, 0, 0, &[]));
    let mut first = vec![0x83, 0x86];
    // Literals with incremental indexing, names from the static table.
    for (index, value) in [
        (4u8, &b"/runtime.v1.RuntimeService/ListContainers"[..]),
        (1, authority),
        (31, b"application/grpc"),
        (58, b"grpc-go/1.72.0"),
    ] {
        first.push(0x40 | index);
        first.push(value.len() as u8);
        first.extend_from_slice(value);
    }
    literal(&mut first, 0x40, b"te", b"trailers");
    c.extend(frame(0x1, 0x4, 1, &first));
    let message = [0u8; 45];
    c.extend(frame(0x0, 0x1, 1, &message));
    // Table now: 62 te, 63 user-agent, 64 content-type, 65 :authority, 66 :path.
    let mut steady = vec![0x83, 0x86, 0x80 | 66, 0x80 | 65, 0x80 | 64, 0x80 | 63, 0x80 | 62];
    steady.extend_from_slice(&[0x00, 12]);
    steady.extend_from_slice(b"grpc-timeout");
    // "119999953n", Huffman-coded (RFC 7541 Appendix B).
    steady.extend_from_slice(&[0x88, 0x08, 0x5f, 0x7d, 0xf7, 0xdf, 0x6d, 0x9a, 0xbf]);
    for i in 1..REQUESTS as u32 {
        c.extend(frame(0x1, 0x4, 1 + 2 * i, &steady));
        c.extend(frame(0x0, 0x1, 1 + 2 * i, &message));
    }
    c
}

/// Reads `input` through a fresh adapter, as the server would, in reads of `READ` octets.
async fn through(input: &[u8]) -> usize {
    let mut conn = AuthorityFix::new(input);
    let mut buf = vec![0; READ];
    let mut total = 0;
    loop {
        match conn.read(&mut buf).await.expect("a valid connection") {
            0 => return total,
            n => total += black_box(n),
        }
    }
}

/// The same reads without the adapter.
async fn plain(mut input: &[u8]) -> usize {
    let mut buf = vec![0; READ];
    let mut total = 0;
    loop {
        match input.read(&mut buf).await.unwrap() {
            0 => return total,
            n => total += black_box(n),
        }
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let valid = connection(b"localhost");
    let path = connection(b"%2Frun%2Flockstep%2Flockstep.sock");
    assert_eq!(rt.block_on(through(&valid)), valid.len(), "a valid authority passes as it is");
    assert!(rt.block_on(through(&path)) > 0);
    let mut g = c.benchmark_group("authority");
    g.throughput(Throughput::Elements(REQUESTS as u64));
    g.bench_function("valid authority, forwarded", |b| b.iter(|| rt.block_on(through(black_box(&valid)))));
    g.bench_function("socket path, re-encoded", |b| b.iter(|| rt.block_on(through(black_box(&path)))));
    g.bench_function("baseline: the same reads without the adapter", |b| {
        b.iter(|| rt.block_on(plain(black_box(&valid))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
