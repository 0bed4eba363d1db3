//! The tower layer that counts each CRI call for lockstepd's metrics: the RPC from the request
//! path, the gRPC code from the response headers (an error is a trailers-only answer whose
//! headers carry `grpc-status`; a success carries it in trailers, so no header means OK), and
//! the time to the answer's headers. Only `/runtime.v1.*` paths are counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> MetricsLayer {
        MetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The RPC a gRPC path names: `/runtime.v1.RuntimeService/RunPodSandbox` → `RunPodSandbox`.
fn rpc_of(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (service.starts_with("runtime.v1.") && !method.is_empty() && !method.contains('/')).then_some(method)
}

/// The code a response's headers give: `grpc-status` when present (an error), else OK.
fn code_of(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

impl<S, B, R> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let rpc = rpc_of(request.uri().path()).map(str::to_string);
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            if let (Some(rpc), Ok(response)) = (rpc, &response) {
                metrics.operation(&rpc, code_of(response.headers()), started.elapsed());
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rpc_is_the_method_of_a_cri_path() {
        assert_eq!(rpc_of("/runtime.v1.RuntimeService/RunPodSandbox"), Some("RunPodSandbox"));
        assert_eq!(rpc_of("/runtime.v1.ImageService/PullImage"), Some("PullImage"));
        assert_eq!(rpc_of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(rpc_of("/runtime.v1.RuntimeService/"), None);
        assert_eq!(rpc_of("/"), None);
    }

    #[test]
    fn no_grpc_status_header_is_ok_and_a_header_names_the_error() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_of(&headers), tonic::Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(code_of(&headers), tonic::Code::NotFound);
    }
}
