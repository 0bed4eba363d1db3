//! Time: where a multi-step operation spends its time, for the debug log (profile before
//! optimising): mark each step as it ends, then print "step 1.2ms, step 0.4ms"; and the
//! CRI's timestamps (nanoseconds since the epoch).

use std::time::{Duration, Instant};

/// Now, in nanoseconds since the Unix epoch (as the CRI's timestamps are).
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or_default()
}

pub struct StepTimer {
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl Default for StepTimer {
    fn default() -> Self {
        StepTimer { last: Instant::now(), steps: Vec::new() }
    }
}

impl StepTimer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The step that just ended.
    pub fn mark(&mut self, step: &'static str) {
        let now = Instant::now();
        self.steps.push((step, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for StepTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (step, took)) in self.steps.iter().enumerate() {
            write!(f, "{}{step} {:.1}ms", if i > 0 { ", " } else { "" }, took.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_listed_in_order() {
        let mut timer = StepTimer::new();
        timer.mark("a");
        timer.mark("b");
        let text = timer.to_string();
        assert!(text.starts_with("a ") && text.contains(", b ") && text.ends_with("ms"), "{text}");
    }
}
