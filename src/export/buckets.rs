//! An HdrHistogram of microseconds as a classic Prometheus histogram in seconds: counts under
//! fixed bounds, cumulative, the last (`+Inf`) equal to the count.

use hdrhistogram::Histogram;

/// The bucket bounds, in microseconds (1 ms to 60 s); `+Inf` follows.
pub const BOUNDS_US: [u64; 15] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// A histogram as Prometheus reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Buckets {
    /// Values at or under each bound of [`BOUNDS_US`], then under `+Inf` (all of them).
    pub cumulative: [u64; BOUNDS_US.len() + 1],
    /// Values recorded: exact.
    pub count: u64,
    /// Their sum in seconds, each value as the histogram keeps it: exact below 2.048 ms, to
    /// 3 significant figures above.
    pub sum_seconds: f64,
}

impl Buckets {
    /// The bounds in seconds, `+Inf` last, with the number of values in each bucket alone (not
    /// cumulative): what the encoder adds up.
    pub fn per_bucket(&self) -> Vec<(f64, u64)> {
        let mut below = 0;
        BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.cumulative)
            .map(|(le, c)| {
                let n = c - below;
                below = c;
                (le, n)
            })
            .collect()
    }
}

/// `h` (microseconds) in buckets. A value counts under a bound when the histogram's bucket
/// it fell in starts at or under it, as HdrHistogram's own `count_between` counts.
pub fn buckets(h: &Histogram<u64>) -> Buckets {
    let mut each = [0u64; BOUNDS_US.len() + 1];
    let mut sum_us: u128 = 0;
    for v in h.iter_recorded() {
        let at = v.value_iterated_to();
        let n = v.count_at_value();
        let low = h.lowest_equivalent(at);
        let i = BOUNDS_US
            .iter()
            .position(|&b| low <= b)
            .unwrap_or(BOUNDS_US.len());
        each[i] += n;
        sum_us += u128::from(h.median_equivalent(at)) * u128::from(n);
    }
    let mut cumulative = each;
    for i in 1..cumulative.len() {
        cumulative[i] += cumulative[i - 1];
    }
    Buckets {
        cumulative,
        count: h.len(),
        sum_seconds: sum_us as f64 / 1e6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[(u64, u64)]) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for &(v, n) in values {
            h.record_n(v, n).unwrap();
        }
        h
    }

    #[test]
    fn counts_land_under_their_bounds_cumulatively_and_inf_is_the_count() {
        // 1 ms exactly is under 1 ms; 1.001 ms is not.
        let h = hist(&[
            (50, 3),
            (1_000, 2),
            (1_001, 1),
            (7_000, 4),
            (1_200_000, 5),
            (90_000_000, 1),
        ]);
        let b = buckets(&h);
        assert_eq!(b.count, 16);
        assert_eq!(
            b.cumulative,
            [5, 6, 6, 10, 10, 10, 10, 10, 10, 10, 15, 15, 15, 15, 15, 16]
        );
        assert_eq!(b.cumulative[BOUNDS_US.len()], b.count);
        assert!(b.cumulative.windows(2).all(|w| w[0] <= w[1]));
        let each = b.per_bucket();
        assert_eq!(each.len(), 16);
        assert_eq!(each[0], (0.001, 5));
        assert_eq!(each[1], (0.0025, 1));
        assert_eq!(each[3], (0.01, 4));
        assert_eq!(each[10], (2.5, 5));
        assert_eq!(each[15], (f64::INFINITY, 1));
        assert_eq!(each.iter().map(|(_, n)| n).sum::<u64>(), b.count);
    }

    #[test]
    fn the_sum_is_exact_where_the_histogram_is() {
        // Under 2048 µs HdrHistogram at 3 significant figures keeps every microsecond.
        let h = hist(&[(1, 1), (250, 2), (2_047, 3)]);
        let b = buckets(&h);
        assert_eq!(b.count, 6);
        assert!(
            (b.sum_seconds - 0.006_642).abs() < 1e-12,
            "{}",
            b.sum_seconds
        );
        // Above, to its resolution.
        let h = hist(&[(1_234_567, 10)]);
        let b = buckets(&h);
        assert!(
            (b.sum_seconds / 12.345_67 - 1.0).abs() < 1e-3,
            "{}",
            b.sum_seconds
        );
    }

    #[test]
    fn an_empty_histogram_is_all_zeros() {
        let b = buckets(&Histogram::<u64>::new(3).unwrap());
        assert_eq!(b.count, 0);
        assert_eq!(b.sum_seconds, 0.0);
        assert!(b.cumulative.iter().all(|&c| c == 0));
    }
}
