//! The visiting order of the endpoints, computed once per change of the endpoint set so that
//! the request path only indexes into it.

/// The longest schedule kept. Weights whose reduced sum is larger are scaled down
/// proportionally (each stays at least 1), which keeps the ratio within rounding.
const MAX_SCHEDULE: u64 = 1 << 14;

/// Returns the order in which smooth weighted round robin (nginx's algorithm) visits
/// endpoints with the given weights, one full cycle long, as indices into `weights`.
///
/// Equal weights give `0, 1, …, n-1`; weights `[5, 1, 1]` give `0 0 1 0 2 0 0`.
/// Weights of `0` count as `1`.
pub fn smooth_weighted_order(weights: &[u32]) -> Vec<u32> {
    let n = weights.len();
    if n == 0 {
        return Vec::new();
    }
    let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
    if w.iter().all(|&x| x == w[0]) {
        return (0..n as u32).collect();
    }
    let g = w.iter().copied().fold(0, gcd);
    w.iter_mut().for_each(|x| *x /= g);
    let mut total: u64 = w.iter().sum();
    if total > MAX_SCHEDULE {
        let scale = MAX_SCHEDULE as f64 / total as f64;
        w.iter_mut()
            .for_each(|x| *x = ((*x as f64 * scale).round() as u64).max(1));
        total = w.iter().sum();
    }
    let w: Vec<i64> = w.into_iter().map(|x| x as i64).collect();
    let total = total as i64;
    let mut current = vec![0i64; n];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..n {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(best as u32);
    }
    order
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_example_is_interleaved() {
        assert_eq!(smooth_weighted_order(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        assert_eq!(smooth_weighted_order(&[3, 3, 3]), [0, 1, 2]);
        assert_eq!(smooth_weighted_order(&[1]), [0]);
        assert!(smooth_weighted_order(&[]).is_empty());
    }

    #[test]
    fn common_factors_are_reduced() {
        assert_eq!(smooth_weighted_order(&[10, 20]), [1, 0, 1]);
    }

    #[test]
    fn huge_weights_keep_their_ratio() {
        let order = smooth_weighted_order(&[1_000_000, 3_000_000, 1]);
        assert!(order.len() as u64 <= MAX_SCHEDULE + 3);
        let count = |i| order.iter().filter(|&&x| x == i).count() as f64;
        let ratio = count(1) / count(0);
        assert!((ratio - 3.0).abs() < 0.01, "ratio {ratio}");
        assert!(count(2) >= 1.0, "a weight-1 endpoint still gets traffic");
    }
}
