//! The latency histogram's bucket layout: log-linear, like HdrHistogram's.
//!
//! Values are whole microseconds. Below 128 µs every microsecond has its own bucket. Above,
//! each power-of-two range `[2^e, 2^(e+1))` is cut into 64 equal buckets, so a bucket is
//! never wider than 1/64 of its lower bound. A percentile is reported as the middle of the
//! bucket holding it, which is therefore within half a microsecond of the true value below
//! 128 µs and within 1/128 (0.78 %) of it above: two significant digits. Values of
//! 2^27 µs (about 134 s) and more share the top bucket.
//!
//! 1,408 buckets of 8 bytes: 11 KiB per stripe.

use std::time::Duration;

/// log2 of the number of buckets per power of two.
const SUB_BITS: u32 = 6;
/// The top power-of-two range is `[2^MAX_EXP, 2^(MAX_EXP+1))` µs.
const MAX_EXP: u32 = 26;
/// The largest value with a bucket of its own; larger values are counted in the top one.
const MAX_MICROS: u64 = (1 << (MAX_EXP + 1)) - 1;

/// How many buckets a histogram has.
pub(crate) const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) << SUB_BITS;

/// The bucket a value (in microseconds) is counted in. A handful of integer instructions.
#[inline]
pub(crate) fn index(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    // The power of two at or below `v`, never less than 2^SUB_BITS: below 128 µs the shift is
    // 0 and every microsecond is a bucket.
    let exp = 63 - (v | (1 << SUB_BITS)).leading_zeros();
    let shift = exp - SUB_BITS;
    ((shift as usize) << SUB_BITS) + (v >> shift) as usize
}

/// The values counted in bucket `i`, in microseconds: `[lower, upper)`.
pub(crate) fn bounds(i: usize) -> (u64, u64) {
    let shift = (i >> SUB_BITS).saturating_sub(1);
    let lower = ((i - (shift << SUB_BITS)) as u64) << shift;
    (lower, lower + (1 << shift))
}

/// The upper bounds (µs) of the buckets written to Prometheus: the powers of two from
/// 128 µs to 2^26 µs (67 s). They are bucket boundaries, so the cumulative counts are exact.
pub(crate) fn export_bounds() -> impl Iterator<Item = u64> {
    (SUB_BITS + 1..=MAX_EXP).map(|e| 1u64 << e)
}

/// The value at quantile `q` (0..=1) of the values counted in `buckets`, by nearest rank,
/// as the middle of its bucket (never above `max`, the largest value recorded). Zero when
/// nothing was recorded.
pub(crate) fn quantile(buckets: &[u64], count: u64, q: f64, max: Duration) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    // Nearest rank: the smallest value with at least q·count values at or below it.
    let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let (lower, upper) = bounds(i);
            let middle = Duration::from_nanos((lower + upper) * 500);
            return middle.min(max);
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_in_its_bucket() {
        let mut values: Vec<u64> = (0..100_000).collect();
        values.extend((0..=MAX_EXP + 1).flat_map(|e| {
            let p = 1u64 << e;
            [p - 1, p, p + 1, p + p / 3]
        }));
        for v in values {
            let i = index(v);
            assert!(i < BUCKETS, "{v} -> {i}");
            let (lower, upper) = bounds(i);
            let v = v.min(MAX_MICROS);
            assert!(lower <= v && v < upper, "{v} not in [{lower}, {upper})");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        assert_eq!(bounds(0), (0, 1));
        for i in 1..BUCKETS {
            assert_eq!(bounds(i - 1).1, bounds(i).0, "gap before bucket {i}");
            let (lower, upper) = bounds(i);
            if lower >= 128 {
                assert!((upper - lower) * 64 <= lower, "bucket {i} too wide");
            }
        }
        assert_eq!(bounds(BUCKETS - 1).1, MAX_MICROS + 1);
    }

    #[test]
    fn exported_bounds_are_bucket_boundaries() {
        for b in export_bounds() {
            assert_eq!(bounds(index(b)).0, b);
        }
        assert_eq!(export_bounds().count(), 20);
    }

    /// Percentiles of a spread of values (1 µs to 30 s, skewed like latencies) are within
    /// the documented bound of the exact nearest-rank percentiles.
    #[test]
    fn percentiles_within_error_bound() {
        let mut values: Vec<u64> = (0..20_000u64)
            .map(|i| {
                // A deterministic log-uniform spread.
                let x = (i * 7919 % 20_000) as f64 / 20_000.0;
                (30_000_000f64.powf(x)) as u64
            })
            .collect();
        let mut buckets = vec![0u64; BUCKETS];
        for &v in &values {
            buckets[index(v)] += 1;
        }
        values.sort_unstable();
        let max = Duration::from_micros(*values.last().unwrap());
        let count = values.len() as u64;
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let rank = ((q * count as f64).ceil() as usize).clamp(1, values.len());
            let exact = values[rank - 1] as f64;
            let got = quantile(&buckets, count, q, max).as_secs_f64() * 1e6;
            let bound = (exact / 128.0).max(0.5);
            assert!(
                (got - exact).abs() <= bound,
                "q{q}: got {got} µs, exact {exact} µs"
            );
        }
    }

    #[test]
    fn empty_histogram_reads_zero() {
        assert_eq!(
            quantile(&[0; BUCKETS], 0, 0.99, Duration::ZERO),
            Duration::ZERO
        );
    }
}
