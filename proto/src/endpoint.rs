//! Connecting to a CRI endpoint: `unix:///path/to.sock` or a bare socket path, as crictl and
//! the kubelet's --container-runtime-endpoint write it.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {0:?} is not a unix socket (write unix:///path/to.sock)")]
    Unsupported(String),
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
}

/// The socket path of an endpoint.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, EndpointError> {
    let path = match endpoint.split_once("://") {
        Some(("unix", rest)) => rest,
        Some(_) => return Err(EndpointError::Unsupported(endpoint.to_string())),
        None => endpoint,
    };
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(EndpointError::Unsupported(endpoint.to_string()))
    }
}

/// Connects to the endpoint, waiting at most `timeout` for the socket to answer.
pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Channel, EndpointError> {
    let path = socket_path(endpoint)?;
    let fail =
        |e: &dyn std::fmt::Display| EndpointError::Connect { endpoint: endpoint.to_string(), message: e.to_string() };
    // The URI is required by the API and unused: the connector below dials the socket.
    Endpoint::try_from("http://[::1]:50051")
        .map_err(|e| fail(&e))?
        .connect_timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| {
            // tonic's transport error hides the cause (no such file, refused) in its source.
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !message.contains(&text) {
                    message = format!("{message}: {text}");
                }
                source = cause.source();
            }
            fail(&message)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_endpoints_as_crictl_writes_them() {
        assert_eq!(
            socket_path("unix:///run/lockstep/lockstep.sock").unwrap(),
            PathBuf::from("/run/lockstep/lockstep.sock")
        );
        assert_eq!(socket_path("/run/x.sock").unwrap(), PathBuf::from("/run/x.sock"));
        assert!(socket_path("tcp://127.0.0.1:1234").is_err());
        assert!(socket_path("unix://relative.sock").is_err());
    }

    #[tokio::test]
    async fn says_why_it_cannot_connect() {
        let err = connect("unix:///nonexistent/dir/x.sock", Duration::from_secs(1)).await.unwrap_err().to_string();
        assert!(err.contains("/nonexistent/dir/x.sock") && err.contains("No such file"), "{err}");
    }
}
