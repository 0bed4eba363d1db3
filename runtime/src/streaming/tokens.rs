//! The single-use tokens in streaming URLs: Exec, Attach and PortForward store their request
//! under a random token; the first connection that names it takes it, and a token nobody took
//! within its lifetime is gone. A bounded number wait at once (the kubelet's cache holds 1000).

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a token waits for its connection (the kubelet's default).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How many tokens may wait at once.
pub const MAX_PENDING: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{MAX_PENDING} streaming requests already wait for their connection")]
    Full,
    #[error("cannot read random bytes for a token: {0}")]
    Random(std::io::Error),
}

/// Requests waiting for their connection, by token.
pub struct Tokens<T> {
    ttl: Duration,
    pending: Mutex<HashMap<String, (T, Instant)>>,
}

impl<T> Tokens<T> {
    pub fn new(ttl: Duration) -> Self {
        Tokens { ttl, pending: Mutex::new(HashMap::new()) }
    }

    /// Stores `request` under a fresh token.
    pub fn insert(&self, request: T) -> Result<String, TokenError> {
        let token = fresh_token().map_err(TokenError::Random)?;
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
        if pending.len() >= MAX_PENDING {
            return Err(TokenError::Full);
        }
        pending.insert(token.clone(), (request, now));
        Ok(token)
    }

    /// The request of `token`, once: a second take, or one after the lifetime, finds nothing.
    pub fn take(&self, token: &str) -> Option<T> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (request, at) = pending.remove(token)?;
        (at.elapsed() < self.ttl).then_some(request)
    }
}

/// 16 random bytes from the kernel, URL-safe base64 without padding.
fn fresh_token() -> std::io::Result<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_taken_once() {
        let tokens = Tokens::new(TOKEN_TTL);
        let a = tokens.insert("exec").unwrap();
        let b = tokens.insert("attach").unwrap();
        assert_ne!(a, b);
        assert!(a.len() >= 22 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{a}");
        assert_eq!(tokens.take(&a), Some("exec"));
        assert_eq!(tokens.take(&a), None, "reused");
        assert_eq!(tokens.take("made-up"), None);
        assert_eq!(tokens.take(&b), Some("attach"));
    }

    #[test]
    fn a_token_expires() {
        let tokens = Tokens::new(Duration::from_millis(30));
        let a = tokens.insert(1).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(tokens.take(&a), None);
    }

    #[test]
    fn waiting_tokens_are_bounded_and_expired_ones_make_room() {
        let tokens = Tokens::new(Duration::from_millis(50));
        for i in 0..MAX_PENDING {
            tokens.insert(i).unwrap();
        }
        assert!(matches!(tokens.insert(0), Err(TokenError::Full)));
        std::thread::sleep(Duration::from_millis(80));
        assert!(tokens.insert(0).is_ok());
    }
}
