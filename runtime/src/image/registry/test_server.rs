//! A misbehaving registry for the client's tests: a plain-HTTP server on 127.0.0.1 that answers
//! each request (one per connection) as the test's handler says, bodies streamed as they are
//! written. TLS hellos are hung up on, so the client falls back to plain HTTP as with a real one.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// What the server sends back: a response head (status line and headers, ending in a blank
/// line) and a body.
pub struct Answer {
    pub head: String,
    pub body: Body,
}

pub enum Body {
    Bytes(Vec<u8>),
    /// This many bytes of JSON-looking filler, written 64 KiB at a time.
    Filler(usize),
    /// These bytes, `piece` at a time with a pause of `every` before each; when the client
    /// hangs up, `hung_up` hears of it.
    Trickle {
        bytes: Vec<u8>,
        piece: usize,
        every: std::time::Duration,
        hung_up: std::sync::mpsc::Sender<()>,
    },
}

impl Answer {
    /// A head only (`Content-Length: 0` and `Connection: close` are added).
    pub fn status(status_and_headers: &str) -> Answer {
        Answer {
            head: format!("HTTP/1.1 {status_and_headers}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            body: Body::Bytes(Vec::new()),
        }
    }

    /// 200 with `len` bytes ended by closing the connection (no Content-Length).
    pub fn endless(len: usize) -> Answer {
        Answer {
            head: "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".into(),
            body: Body::Filler(len),
        }
    }
}

/// Serves `handler(path, port)` on a fresh 127.0.0.1 port until the test process ends; the port.
pub fn serve(handler: impl Fn(&str, u16) -> Answer + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local address").port();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handler = handler.clone();
            std::thread::spawn(move || answer(stream, port, &*handler));
        }
    });
    port
}

fn answer(mut stream: TcpStream, port: u16, handler: &dyn Fn(&str, u16) -> Answer) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
        // A TLS ClientHello starts with a handshake record (0x16): not spoken here.
        if head == [0x16] {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let Answer { head, body } = handler(&path, port);
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    match body {
        Body::Bytes(b) => {
            let _ = stream.write_all(&b);
        }
        Body::Trickle { bytes, piece, every, hung_up } => {
            for part in bytes.chunks(piece.max(1)) {
                std::thread::sleep(every);
                if stream.write_all(part).and_then(|()| stream.flush()).is_err() {
                    let _ = hung_up.send(());
                    return;
                }
            }
        }
        Body::Filler(len) => {
            let chunk = vec![b' '; 64 << 10];
            let mut sent = 0;
            while sent < len {
                let n = chunk.len().min(len - sent);
                if stream.write_all(&chunk[..n]).is_err() {
                    return;
                }
                sent += n;
            }
        }
    }
}
