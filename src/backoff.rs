//! Retry policies as pure functions of (attempt, previous delay, rng).
//!
//! The formulas follow the well-known AWS architecture note on backoff and jitter, because that
//! is the vocabulary users compare against: *full jitter* spreads a herd uniformly over the whole
//! window, *equal jitter* keeps half the window as a floor, *decorrelated jitter* grows from the
//! previous delay instead of from the attempt number. `exponential` and `fixed` are the
//! lock-step policies a storm test wants to show failing.
//!
//! [`Retry`] is what one client carries between attempts (failure count, attempt number,
//! previous delay, retry budget) and decides the next delay from. The swarm's clients and the
//! virtual-time model (`wsstorm model`) both call it, so a modelled strategy is the code that
//! runs, not a copy of it.

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

/// A validated backoff policy. `max_attempts` counts consecutive failed attempts; that count
/// resets when a connection opens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub strategy: Strategy,
    pub base: Duration,
    pub cap: Duration,
    pub multiplier: f64,
    pub max_attempts: Option<u32>,
    /// The attempt number (and decorrelated jitter's previous delay) go back to the start
    /// only once a connection has stayed open this long; `None`: as soon as one opens. A
    /// server that accepts and drops at once then meets a growing delay, not a hot loop.
    #[serde(default)]
    pub reset_after: Option<Duration>,
    /// A per-client token bucket every retry spends from; an empty bucket holds the retry
    /// until a token refills.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// A fixed delay (a server's Retry-After, an `on_close` `retry-after:`) gets up to this
    /// share of itself added at random, so a herd told "come back in 2s" does not.
    #[serde(default)]
    pub retry_after_jitter: f64,
}

/// A retry budget: `size` retries at most in a burst, `refill` more per second.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub size: u32,
    pub refill: f64,
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
            reset_after: None,
            budget: None,
            retry_after_jitter: 0.0,
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

/// One client's retry state between attempts. Small and `Copy`: a swarm holds one per client,
/// and the model ten million.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Retry {
    /// Consecutive failed attempts (for `max_attempts`).
    failures: u32,
    /// Retries since the counter last reset: the backoff's attempt number.
    retries: u32,
    /// The delay chosen before the last retry, in nanoseconds (decorrelated jitter grows
    /// from it).
    previous_ns: u64,
    /// Budget tokens left, as of `budget_at_ms`.
    tokens: f32,
    /// Milliseconds since the run start when `tokens` was last brought up to date.
    budget_at_ms: u32,
}

/// What the client does next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Next {
    /// Try again after this delay.
    Wait(Duration),
    /// Give up (`max_attempts` reached or the decision was to stop).
    GiveUp,
}

impl Retry {
    /// A client's state before its first attempt: a full budget.
    pub fn new(policy: &Backoff) -> Retry {
        Retry {
            tokens: policy.budget.map_or(0.0, |b| b.size as f32),
            ..Retry::default()
        }
    }

    /// Consecutive failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// An attempt failed (refused, timed out, answered with a status).
    pub fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// A connection opened.
    pub fn opened(&mut self, policy: &Backoff) {
        self.failures = 0;
        if policy.reset_after.is_none() {
            self.reset();
        }
    }

    /// A connection that had opened ended after `lived`.
    pub fn lost(&mut self, policy: &Backoff, lived: Duration) {
        if policy.reset_after.is_some_and(|stable| lived >= stable) {
            self.reset();
        }
    }

    fn reset(&mut self) {
        self.retries = 0;
        self.previous_ns = 0;
    }

    /// Decide the delay before the next attempt, `now` since the run start. `fixed` is a
    /// delay the client's own close-code policy asked for (`retry-after:`), `server` the
    /// server's Retry-After: both are honoured (with `retry_after_jitter` added), the
    /// server's as a floor under the backoff. `stop` gives up whatever the budget.
    pub fn next(
        &mut self,
        policy: &Backoff,
        stop: bool,
        fixed: Option<Duration>,
        server: Option<Duration>,
        now: Duration,
        rng: &mut impl Rng,
    ) -> Next {
        if stop || !policy.allows(self.failures) {
            return Next::GiveUp;
        }
        let jittered = |d: Duration, rng: &mut _| {
            if policy.retry_after_jitter > 0.0 {
                d + d.mul_f64(uniform(rng, 0.0, policy.retry_after_jitter))
            } else {
                d
            }
        };
        let mut delay = match fixed {
            Some(d) => jittered(d, rng),
            None => policy.delay(self.retries, Duration::from_nanos(self.previous_ns), rng),
        };
        if let Some(ra) = server {
            delay = delay.max(jittered(ra, rng));
        }
        if let Some(b) = policy.budget {
            delay += self.spend(b, now + delay);
        }
        self.retries = self.retries.saturating_add(1);
        self.previous_ns = delay.as_nanos().min(u128::from(u64::MAX)) as u64;
        Next::Wait(delay)
    }

    /// Spend a budget token for a retry at `at`; how much longer it must wait for one.
    fn spend(&mut self, b: Budget, at: Duration) -> Duration {
        let at_ms = at.as_millis().min(u128::from(u32::MAX)) as u32;
        let refilled = f64::from(at_ms.saturating_sub(self.budget_at_ms)) / 1000.0 * b.refill;
        let tokens = (f64::from(self.tokens) + refilled).min(f64::from(b.size));
        self.budget_at_ms = self.budget_at_ms.max(at_ms);
        if tokens >= 1.0 - 1e-6 {
            self.tokens = (tokens - 1.0).max(0.0) as f32;
            return Duration::ZERO;
        }
        // Wait for the missing share of a token, which the retry then spends.
        let wait = Duration::from_secs_f64((1.0 - tokens) / b.refill);
        self.tokens = 0.0;
        let ms = u64::from(self.budget_at_ms) + wait.as_millis() as u64;
        self.budget_at_ms = ms.min(u64::from(u32::MAX)) as u32;
        wait
    }
}

/// `since` rounded up to the next multiple of `align` (both since the run start): clients that
/// retry "on the next full second".
pub fn align_up(since: Duration, align: Duration) -> Duration {
    let step = align.as_nanos().max(1);
    let aligned = since.as_nanos().div_ceil(step) * step;
    Duration::from_nanos(aligned.min(u128::from(u64::MAX)) as u64)
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
            ..Backoff::default()
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

    fn wait(n: Next) -> Duration {
        match n {
            Next::Wait(d) => d,
            Next::GiveUp => panic!("gave up"),
        }
    }

    #[test]
    fn the_attempt_number_resets_on_open_or_only_after_a_stable_connection() {
        let z = Duration::ZERO;
        let eager = policy(Strategy::Exponential);
        let mut r = Retry::new(&eager);
        for _ in 0..3 {
            r.next(&eager, false, None, None, z, &mut rng());
        }
        r.opened(&eager);
        r.lost(&eager, Duration::from_millis(5));
        let d = wait(r.next(&eager, false, None, None, z, &mut rng()));
        assert_eq!(d.as_millis(), 100, "reset on open");

        let patient = Backoff {
            reset_after: Some(Duration::from_secs(10)),
            ..eager
        };
        let mut r = Retry::new(&patient);
        for _ in 0..3 {
            r.next(&patient, false, None, None, z, &mut rng());
        }
        r.opened(&patient);
        r.lost(&patient, Duration::from_secs(1));
        let d = wait(r.next(&patient, false, None, None, z, &mut rng()));
        assert_eq!(d.as_millis(), 800, "a flap keeps growing the delay");
        r.opened(&patient);
        r.lost(&patient, Duration::from_secs(10));
        let d = wait(r.next(&patient, false, None, None, z, &mut rng()));
        assert_eq!(d.as_millis(), 100, "a stable connection resets it");
        assert_eq!(r.failures(), 0, "opens reset the failure count either way");
    }

    #[test]
    fn max_attempts_and_stop_give_up() {
        let p = policy(Strategy::Fixed);
        let mut r = Retry::new(&p);
        for _ in 0..4 {
            r.failed();
            assert!(matches!(
                r.next(&p, false, None, None, Duration::ZERO, &mut rng()),
                Next::Wait(_)
            ));
        }
        r.failed();
        assert_eq!(
            r.next(&p, false, None, None, Duration::ZERO, &mut rng()),
            Next::GiveUp
        );
        let mut fresh = Retry::new(&p);
        assert_eq!(
            fresh.next(&p, true, None, None, Duration::ZERO, &mut rng()),
            Next::GiveUp
        );
    }

    #[test]
    fn the_budget_holds_retries_once_spent() {
        // 3 tokens, one more every 2s; fixed 100ms delays.
        let p = Backoff {
            budget: Some(Budget {
                size: 3,
                refill: 0.5,
            }),
            max_attempts: None,
            ..policy(Strategy::Fixed)
        };
        let mut r = Retry::new(&p);
        let mut now = Duration::ZERO;
        let mut delays = Vec::new();
        for _ in 0..5 {
            let d = wait(r.next(&p, false, None, None, now, &mut rng()));
            delays.push(d.as_millis());
            now += d;
        }
        // Three retries from the bucket (which refills 0.05 per 100ms meanwhile), then each
        // waits for its token: the 4th finds 0.15 and waits 1.7s for the rest, the 5th a
        // whole token's 2s less the 100ms of its own delay.
        assert_eq!(&delays[..3], &[100, 100, 100]);
        assert!((1790..=1810).contains(&delays[3]), "{delays:?}");
        assert!((1990..=2010).contains(&delays[4]), "{delays:?}");
    }

    #[test]
    fn retry_after_is_a_floor_and_takes_jitter() {
        let z = Duration::ZERO;
        let p = policy(Strategy::Fixed);
        let mut r = Retry::new(&p);
        let two = Duration::from_secs(2);
        assert_eq!(wait(r.next(&p, false, None, Some(two), z, &mut rng())), two);
        assert_eq!(wait(r.next(&p, false, Some(two), None, z, &mut rng())), two);
        let j = Backoff {
            retry_after_jitter: 0.5,
            max_attempts: None,
            ..p
        };
        let mut r = Retry::new(&j);
        let mut g = rng();
        let ds: Vec<f64> = (0..1000)
            .map(|_| wait(r.next(&j, false, None, Some(two), z, &mut g)).as_secs_f64())
            .collect();
        assert!(ds.iter().all(|d| (2.0..=3.0).contains(d)), "within 2s..3s");
        let mean = ds.iter().sum::<f64>() / ds.len() as f64;
        assert!((mean - 2.5).abs() < 0.05, "spread over the window: {mean}");
    }

    #[test]
    fn align_up_rounds_to_the_grid() {
        let s = Duration::from_secs(1);
        assert_eq!(align_up(Duration::from_millis(1), s), s);
        assert_eq!(align_up(s, s), s);
        assert_eq!(align_up(Duration::from_millis(2300), s), 3 * s);
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
