//! The tower layer that ends a call whose client deadline (`grpc-timeout`) has passed with
//! DEADLINE_EXCEEDED, as the gRPC protocol asks of a server. tonic's own deadline answers
//! CANCELLED ("Timeout expired"), which a client whose timer fires late (critest's "public image
//! should timeout if requested" on a loaded machine) reports instead of DEADLINE_EXCEEDED; this
//! layer sits inside tonic's and fires a millisecond earlier, so its answer is the one sent.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How much earlier than tonic's timer this layer's fires: one tick of tokio's timer wheel.
const AHEAD: Duration = Duration::from_millis(1);

#[derive(Clone, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
}

/// The timeout a `grpc-timeout` value gives: at most 8 digits and a unit (H, M, S, m, u, n).
/// None for a malformed value, which then sets no deadline (tonic rejects it first anyway).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(amount * 3600),
        'M' => Duration::from_secs(amount * 60),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

impl<S, B, R> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let timeout = request.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
        let Some(timeout) = timeout else {
            return Box::pin(self.inner.call(request));
        };
        let method = request.uri().path().to_string();
        let answer = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(timeout.saturating_sub(AHEAD), answer).await {
                Ok(response) => response,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "{method}: the client's deadline ({timeout:?}, grpc-timeout) passed before the answer"
                ))
                .into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer as _, Service as _};

    #[test]
    fn grpc_timeout_values_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn malformed_grpc_timeout_values_set_no_deadline() {
        for value in ["", "S", "123456789S", "10s", "1.5S", "-1S", "10", "１S"] {
            assert_eq!(parse_grpc_timeout(value), None, "{value:?}");
        }
    }

    fn slow_service(
        delay: Duration,
    ) -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<String>,
        Error = Infallible,
        Future = impl Future<Output = Result<http::Response<String>, Infallible>> + Send + 'static,
    > + Send {
        tower::service_fn(move |_request: http::Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(http::Response::new("answered".to_string()))
        })
    }

    fn request(timeout: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri("/runtime.v1.ImageService/PullImage");
        if let Some(timeout) = timeout {
            builder = builder.header("grpc-timeout", timeout);
        }
        builder.body(()).expect("a valid request")
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_answers_deadline_exceeded_naming_the_rpc() {
        let mut service = DeadlineLayer.layer(slow_service(Duration::from_secs(5)));
        let response = service.call(request(Some("20m"))).await.expect("an answer");
        let status = tonic::Status::from_header_map(response.headers()).expect("a grpc-status header");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("PullImage"), "{}", status.message());
        assert!(response.body().is_empty());
    }

    #[tokio::test]
    async fn a_call_within_its_deadline_or_without_one_is_answered() {
        let mut service = DeadlineLayer.layer(slow_service(Duration::from_millis(5)));
        for timeout in [Some("10S"), None] {
            let response = service.call(request(timeout)).await.expect("an answer");
            assert!(response.headers().get("grpc-status").is_none());
            assert_eq!(response.body(), "answered");
        }
    }
}
