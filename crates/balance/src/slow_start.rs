//! Slow start: the effective weight of an endpoint that joined the set recently.

use std::time::Duration;

use tokio::time::Instant;

/// The fraction of its weight an endpoint starts with.
pub(crate) const FLOOR: f64 = 0.1;

/// Steps of a ramp: the weights are republished this many times over the window.
pub(crate) const STEPS: u32 = 20;

/// The fraction of its weight an endpoint that joined at `since` has at `now`, ramping
/// linearly from [`FLOOR`] to 1 over `window`; `None` once the ramp is over.
pub(crate) fn fraction(since: Instant, now: Instant, window: Duration) -> Option<f64> {
    let elapsed = now.saturating_duration_since(since);
    (elapsed < window).then(|| FLOOR + (1.0 - FLOOR) * elapsed.as_secs_f64() / window.as_secs_f64())
}

/// Integer weights for the round-robin schedule from effective weights: scaled so that
/// the smallest fraction still counts (a tenth of weight 1 is 1 in 20 of weight 1).
pub(crate) fn schedule_weights(weights: &[f64], ramping: bool) -> Vec<u32> {
    let scale = if ramping { f64::from(STEPS) } else { 1.0 };
    weights
        .iter()
        .map(|w| ((w * scale).round() as u32).max(1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ramps_linearly_from_the_floor() {
        let since = Instant::now();
        let window = Duration::from_secs(10);
        assert_eq!(fraction(since, since, window), Some(FLOOR));
        let half = fraction(since, since + window / 2, window).unwrap();
        assert!((half - 0.55).abs() < 1e-9, "{half}");
        assert_eq!(fraction(since, since + window, window), None);
        assert_eq!(schedule_weights(&[1.0, 0.1], true), [20, 2]);
        assert_eq!(schedule_weights(&[3.0, 1.0], false), [3, 1]);
    }
}
