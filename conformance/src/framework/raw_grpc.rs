//! One unary gRPC call over the runtime's unix socket with hyper's HTTP/2 client alone, for the
//! few tests that must see the runtime's own answer: tonic's channel enforces a call's deadline
//! in the client too (answering CANCELLED "Timeout expired" itself), which would hide the runtime's.

use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Calls `path` (`/runtime.v1.ImageService/PullImage`) with `message` and a `grpc-timeout` of
/// `deadline`, and returns the runtime's status (OK included) without enforcing the deadline here.
pub async fn unary_status(
    endpoint: &str,
    path: &str,
    message: &impl prost::Message,
    deadline: Duration,
) -> anyhow::Result<tonic::Status> {
    let socket = lockstep_cri::socket_path(endpoint)?;
    let stream = tokio::net::UnixStream::connect(&socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    // The gRPC frame: uncompressed flag, big-endian length, the message.
    let encoded = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + encoded.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(encoded.len())?);
    frame.put_slice(&encoded);
    let request = http::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", format!("{}m", deadline.as_millis().max(1)))
        .body(Full::new(Bytes::from(frame)))?;
    let response = sender.send_request(request).await?;
    // A trailers-only answer (an error) carries grpc-status in its headers.
    let status = match tonic::Status::from_header_map(response.headers()) {
        Some(status) => status,
        None => {
            let collected = response.into_body().collect().await?;
            let trailers = collected.trailers().cloned().unwrap_or_default();
            tonic::Status::from_header_map(&trailers)
                .ok_or_else(|| anyhow::anyhow!("{path}: the answer has no grpc-status"))?
        }
    };
    driver.abort();
    Ok(status)
}
