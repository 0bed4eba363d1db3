//! CRI calls as the kubelet makes them through a daemon restart: a call that fails because the
//! runtime is down (Unavailable and its kin) is tried again until it answers or a minute has
//! passed. Without `retry` (a soak) every error counts at once.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::Code;

/// How long a call is retried while the runtime is down.
const RETRY_WINDOW: Duration = Duration::from_secs(90);

/// Whether an error says the runtime was not there (killed, restarting), not that it refused.
pub fn transient(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded)
        || (status.code() == Code::Unknown
            && ["transport", "h2 protocol error", "connection", "server is not initialized yet"]
                .iter()
                .any(|m| status.message().contains(m)))
}

/// The outcome of a call, and whether an earlier try of it failed while the runtime was down
/// (then the first try may have done its work before the answer was lost).
pub struct Called<T> {
    pub result: Result<T, tonic::Status>,
    pub retried: bool,
}

/// Calls `call` until it answers, retrying transient failures when `retry`.
pub async fn call<T, F, Fut>(retry: bool, mut call: F) -> Called<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let started = Instant::now();
    let mut retried = false;
    loop {
        match call().await {
            Err(status) if retry && transient(&status) && started.elapsed() < RETRY_WINDOW => {
                retried = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => return Called { result, retried },
        }
    }
}

/// One line of an error, for a finding.
pub fn brief(rpc: &str, status: &tonic::Status) -> String {
    let message: String = status.message().lines().next().unwrap_or_default().chars().take(200).collect();
    format!("{rpc}: {:?}: {message}", status.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_that_is_down_is_transient_and_a_refusal_is_not() {
        assert!(transient(&tonic::Status::unavailable("connection refused")));
        assert!(transient(&tonic::Status::unknown("transport error")));
        assert!(transient(&tonic::Status::unknown("h2 protocol error: error reading a body from connection")));
        // containerd answers so while its CRI plugin starts.
        assert!(transient(&tonic::Status::unknown("server is not initialized yet")));
        assert!(!transient(&tonic::Status::not_found("no such container")));
        assert!(!transient(&tonic::Status::invalid_argument("bad")));
    }

    #[tokio::test]
    async fn a_retried_call_answers_with_the_first_success_and_says_it_was_retried() {
        let mut tries = 0;
        let called = call(true, || {
            tries += 1;
            let n = tries;
            async move {
                if n < 3 {
                    Err(tonic::Status::unavailable("down"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(called.result.ok(), Some(3));
        assert!(called.retried);
        let called = call(false, || async { Err::<(), _>(tonic::Status::unavailable("down")) }).await;
        assert!(called.result.is_err() && !called.retried);
    }
}
