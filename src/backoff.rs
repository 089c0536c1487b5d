//! Retry policies as pure functions of (attempt, previous delay, rng).
//!
//! The formulas follow the well-known AWS architecture note on backoff and jitter, because that
//! is the vocabulary users compare against: *full jitter* spreads a herd uniformly over the whole
//! window, *equal jitter* keeps half the window as a floor, *decorrelated jitter* grows from the
//! previous delay instead of from the attempt number. `exponential` and `fixed` are the
//! lock-step policies a storm test wants to show failing.

use std::time::Duration;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Retry at once.
    None,
    /// Always `base`.
    Fixed,
    /// `min(cap, base * multiplier^attempt)`: every client on the same grid.
    Exponential,
    /// `uniform(0, min(cap, base * 2^attempt))`.
    FullJitter,
    /// `v/2 + uniform(0, v/2)` with `v = min(cap, base * 2^attempt)`.
    EqualJitter,
    /// `min(cap, uniform(base, previous * 3))`.
    DecorrelatedJitter,
}

impl Strategy {
    pub const ALL: [Strategy; 6] = [
        Strategy::None,
        Strategy::Fixed,
        Strategy::Exponential,
        Strategy::FullJitter,
        Strategy::EqualJitter,
        Strategy::DecorrelatedJitter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::Fixed => "fixed",
            Strategy::Exponential => "exponential",
            Strategy::FullJitter => "full-jitter",
            Strategy::EqualJitter => "equal-jitter",
            Strategy::DecorrelatedJitter => "decorrelated-jitter",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Strategy, String> {
        Strategy::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Strategy::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown strategy `{s}`, expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated backoff policy. `max_attempts` counts consecutive failed attempts; the counter
/// resets when a connection opens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub strategy: Strategy,
    pub base: Duration,
    pub cap: Duration,
    pub multiplier: f64,
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    /// What a careful client does when the profile says nothing: full jitter from 100 ms to 30 s.
    fn default() -> Self {
        Backoff {
            strategy: Strategy::FullJitter,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
            multiplier: 2.0,
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (0 for the first retry after a loss or failure).
    /// `previous` is the delay used before the last retry (`Duration::ZERO` if none).
    pub fn delay(&self, attempt: u32, previous: Duration, rng: &mut impl Rng) -> Duration {
        let base = self.base.as_secs_f64();
        let cap = self.cap.as_secs_f64();
        let exp = |mult: f64| (base * mult.powi(attempt.min(1024) as i32)).min(cap);
        let secs = match self.strategy {
            Strategy::None => 0.0,
            Strategy::Fixed => base.min(cap),
            Strategy::Exponential => exp(self.multiplier),
            Strategy::FullJitter => uniform(rng, 0.0, exp(2.0)),
            Strategy::EqualJitter => {
                let v = exp(2.0);
                v / 2.0 + uniform(rng, 0.0, v / 2.0)
            }
            Strategy::DecorrelatedJitter => {
                let prev = previous.as_secs_f64().max(base);
                uniform(rng, base, prev * 3.0).min(cap)
            }
        };
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// Whether a client that has failed `failures` times in a row may try again.
    pub fn allows(&self, failures: u32) -> bool {
        self.max_attempts.is_none_or(|max| failures < max)
    }
}

fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro128PlusPlus;

    fn policy(strategy: Strategy) -> Backoff {
        Backoff {
            strategy,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            multiplier: 2.0,
            max_attempts: Some(5),
        }
    }

    fn rng() -> Xoshiro128PlusPlus {
        Xoshiro128PlusPlus::seed_from_u64(7)
    }

    #[test]
    fn deterministic_policies_are_exact() {
        let mut r = rng();
        let z = Duration::ZERO;
        assert_eq!(policy(Strategy::None).delay(3, z, &mut r), Duration::ZERO);
        assert_eq!(
            policy(Strategy::Fixed).delay(9, z, &mut r),
            Duration::from_millis(100)
        );
        let e = policy(Strategy::Exponential);
        let ms = |a| e.delay(a, z, &mut rng()).as_millis();
        assert_eq!([ms(0), ms(1), ms(2), ms(3)], [100, 200, 400, 800]);
        assert_eq!(ms(7), 10_000, "capped");
        assert_eq!(ms(1000), 10_000, "huge attempt numbers do not overflow");
        let e3 = Backoff {
            multiplier: 3.0,
            ..e
        };
        assert_eq!(e3.delay(2, z, &mut r).as_millis(), 900);
    }

    #[test]
    fn jitter_policies_stay_in_bounds() {
        let mut r = rng();
        let z = Duration::ZERO;
        for attempt in 0..20 {
            let window = (0.1 * 2f64.powi(attempt as i32)).min(10.0);
            for _ in 0..2000 {
                let f = policy(Strategy::FullJitter)
                    .delay(attempt, z, &mut r)
                    .as_secs_f64();
                assert!((0.0..=window).contains(&f), "full {f} > {window}");
                let q = policy(Strategy::EqualJitter)
                    .delay(attempt, z, &mut r)
                    .as_secs_f64();
                assert!((window / 2.0 - 1e-9..=window).contains(&q), "equal {q}");
            }
        }
        let mut prev = Duration::ZERO;
        for _ in 0..5000 {
            let d = policy(Strategy::DecorrelatedJitter).delay(0, prev, &mut r);
            let lo = Duration::from_millis(100);
            let hi = (prev.max(lo) * 3).min(Duration::from_secs(10));
            assert!(
                d >= lo.min(hi) && d <= hi,
                "decorrelated {d:?} prev {prev:?}"
            );
            prev = d;
        }
    }

    #[test]
    fn full_jitter_is_uniform_over_the_window() {
        // 10 buckets over [0, 800ms) at attempt 3; each should get ~10% of 20k draws.
        let mut r = rng();
        let mut buckets = [0u32; 10];
        for _ in 0..20_000 {
            let d = policy(Strategy::FullJitter).delay(3, Duration::ZERO, &mut r);
            buckets[(d.as_secs_f64() / 0.08) as usize] += 1;
        }
        for b in buckets {
            assert!((1800..2200).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn equal_jitter_mean_is_three_quarters_of_the_window() {
        let mut r = rng();
        let n = 20_000;
        let sum: f64 = (0..n)
            .map(|_| {
                policy(Strategy::EqualJitter)
                    .delay(2, Duration::ZERO, &mut r)
                    .as_secs_f64()
            })
            .sum();
        let mean = sum / n as f64;
        assert!((mean - 0.3).abs() < 0.005, "mean {mean}");
    }

    #[test]
    fn max_attempts() {
        let p = policy(Strategy::Fixed);
        assert!(p.allows(4));
        assert!(!p.allows(5));
        let unbounded = Backoff {
            max_attempts: None,
            ..p
        };
        assert!(unbounded.allows(u32::MAX - 1));
    }

    #[test]
    fn same_seed_same_delays() {
        let p = policy(Strategy::FullJitter);
        let a: Vec<_> = (0..10)
            .map(|i| p.delay(i, Duration::ZERO, &mut rng()))
            .collect();
        let b: Vec<_> = (0..10)
            .map(|i| p.delay(i, Duration::ZERO, &mut rng()))
            .collect();
        assert_eq!(a, b);
    }
}
