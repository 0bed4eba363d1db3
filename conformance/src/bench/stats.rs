//! Percentiles of latency samples, by the nearest-rank method.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Percentiles {
    pub n: usize,
    #[serde(serialize_with = "ms")]
    pub min: Duration,
    #[serde(serialize_with = "ms")]
    pub p50: Duration,
    #[serde(serialize_with = "ms")]
    pub p95: Duration,
    #[serde(serialize_with = "ms")]
    pub p99: Duration,
    #[serde(serialize_with = "ms")]
    pub max: Duration,
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// None for no samples.
pub fn percentiles(samples: &[Duration]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = |p: f64| sorted[((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    Some(Percentiles {
        n: sorted.len(),
        min: sorted[0],
        p50: rank(50.0),
        p95: rank(95.0),
        p99: rank(99.0),
        max: sorted[sorted.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = percentiles(&samples).unwrap();
        assert_eq!((p.n, p.min, p.max), (100, Duration::from_millis(1), Duration::from_millis(100)));
        assert_eq!(
            (p.p50, p.p95, p.p99),
            (Duration::from_millis(50), Duration::from_millis(95), Duration::from_millis(99))
        );
        let one = percentiles(&[Duration::from_millis(7)]).unwrap();
        assert_eq!((one.p50, one.p99), (Duration::from_millis(7), Duration::from_millis(7)));
        assert!(percentiles(&[]).is_none());
    }
}
