//! The fleet's behaviours compiled ([`FleetPlan`], one per group, behind the behaviour's
//! `Arc`), random durations drawn from a client's own RNG ([`RandomDur`]), and a group's
//! `stages` laid out as each client's visits ([`visits`]): who is present from when to when.

use std::time::Duration;

use rand::{Rng, RngExt};
use rand_distr::{Distribution as _, Exp1};
use serde::{Deserialize, Serialize};

use crate::profile::{Behaviour, Distribution, Group, Stage, SwitchMode};

/// A random duration: `mean` shaped by `distribution`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandomDur {
    pub mean: Duration,
    pub distribution: Distribution,
}

impl RandomDur {
    /// One draw, from the client's seeded RNG so a run is reproducible.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        let factor: f64 = match self.distribution {
            Distribution::Exponential => Exp1.sample(rng),
            Distribution::Uniform => 2.0 * rng.random::<f64>(),
            Distribution::Fixed => 1.0,
        };
        // Capped at a day: an exponential's tail has no end, a timer does.
        self.mean.mul_f64(factor).min(Duration::from_secs(86_400))
    }
}

/// What a group's clients do to their own connections.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetPlan {
    /// Each connection is dropped (reset) this long after it opened.
    pub churn: Option<RandomDur>,
    /// A client leaves (1000) this long after it arrived; a new one takes its place.
    pub lifetime: Option<RandomDur>,
    pub switch: Option<SwitchPlan>,
    pub throttle: Option<ThrottlePlan>,
    /// Open a second connection this long after the first opened, leaving the first open.
    pub duplicate_after: Option<Duration>,
}

impl FleetPlan {
    /// Most connections one client holds at once: its own, plus the one `duplicate_connections`
    /// leaves open and the one a silent network switch abandons (both kept until the run
    /// ends). The pre-flight budget counts sockets, ports and the target's files by it.
    pub fn most_connections(&self) -> u64 {
        1 + u64::from(self.duplicate_after.is_some())
            + u64::from(self.switch.is_some_and(|s| s.mode == SwitchMode::Silent))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwitchPlan {
    /// After the client's first open.
    pub after: Duration,
    /// Share of the clients that switch, 0–1.
    pub share: f64,
    pub mode: SwitchMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottlePlan {
    pub after: Duration,
    pub lasts: Duration,
    pub delay: Duration,
}

/// How long a throttled client's read window stays open at each wake: long enough to take
/// everything that queued up while it slept, short next to any sensible `delay`.
pub const THROTTLE_WINDOW: Duration = Duration::from_millis(5);

impl ThrottlePlan {
    /// Whether a connection opened at `opened` may read at `now`, and when that changes (None:
    /// never again). Windows fall due at `opened + after + k·delay`; the client opens one when
    /// it next runs, however late, and reads for [`THROTTLE_WINDOW`] from then: a busy machine
    /// makes its reads later, never skips them. `window_end` is the one piece of state, the
    /// end of the window opened last (its start tells which window that was).
    pub fn gate<T>(&self, opened: T, now: T, window_end: &mut T) -> (bool, Option<T>)
    where
        T: Copy
            + Ord
            + std::ops::Add<Duration, Output = T>
            + std::ops::Sub<Duration, Output = T>
            + std::ops::Sub<T, Output = Duration>,
    {
        let from = opened + self.after;
        let until = from + self.lasts;
        if now < from {
            return (true, Some(from));
        }
        if now >= until {
            return (true, None);
        }
        if now < *window_end {
            return (true, Some(*window_end));
        }
        // At least twice the window (as the plan checks), so the gate shuts in between.
        let delay = self.delay.max(THROTTLE_WINDOW * 2);
        let index = |t: T| ((t - from).as_nanos() / delay.as_nanos()) as u32;
        let due = index(now);
        // None opened since the throttle began, or the last one opened in an earlier window.
        let fresh = *window_end < from + THROTTLE_WINDOW;
        if fresh || index(*window_end - THROTTLE_WINDOW) < due {
            *window_end = now + THROTTLE_WINDOW;
            return (true, Some(*window_end));
        }
        (false, Some((from + delay * (due + 1)).min(until)))
    }
}

/// Check and compile a behaviour's fleet keys; `None` when it has none.
pub(super) fn compile(
    g: &Group,
    b: &Behaviour,
    sources: usize,
    at: &dyn Fn(&str) -> String,
    bad: &mut dyn FnMut(String, String),
) -> Option<Box<FleetPlan>> {
    let mut problem = |path: &str, message: String| bad(at(path), message);
    let zero = || "must be longer than 0s".to_string();
    let churn = b.churn.as_ref().map(|c| {
        if c.mean_between_drops.0.is_zero() {
            problem("behaviour.churn.mean_between_drops", zero());
        }
        RandomDur {
            mean: c.mean_between_drops.0,
            distribution: c.distribution,
        }
    });
    let lifetime = b.session.as_ref().map(|s| {
        if s.lifetime.mean.0.is_zero() {
            problem("behaviour.session.lifetime.mean", zero());
        }
        RandomDur {
            mean: s.lifetime.mean.0,
            distribution: s.lifetime.distribution,
        }
    });
    let throttle = b.throttle.as_ref().map(|t| {
        if t.lasts.0.is_zero() {
            problem("behaviour.throttle.for", zero());
        }
        if t.delay.0 < THROTTLE_WINDOW * 2 {
            problem(
                "behaviour.throttle.delay",
                format!(
                    "{} is shorter than twice the {}ms read window: throttle by 10ms or more",
                    t.delay,
                    THROTTLE_WINDOW.as_millis()
                ),
            );
        }
        ThrottlePlan {
            after: t.after.0,
            lasts: t.lasts.0,
            delay: t.delay.0,
        }
    });
    let duplicate_after = b.duplicate_connections.as_ref().map(|d| d.after.0);
    let switch = b.network_switch.as_ref().map(|s| SwitchPlan {
        after: s.after.0,
        share: s.share.0,
        mode: s.mode,
    });
    if b.throttle.is_some() && b.read.is_some() {
        problem(
            "behaviour.throttle",
            "throttles the reads `read.max_rate` already paces: give one of the two".into(),
        );
    }
    if switch.is_some() && sources < 2 {
        bad(
            at("behaviour.network_switch"),
            format!(
                "moves a client to another source address, and the group has {sources}: give `source_addrs` at least two (e.g. `[127.0.0.2, 127.0.0.3]`)"
            ),
        );
    }
    if b.session.is_some() && !g.stages.is_empty() {
        bad(
            at("behaviour.session"),
            "replaces a leaving client at once, while `stages` decide who is present: use one or the other".into(),
        );
    }
    let plan = FleetPlan {
        churn,
        lifetime,
        switch,
        throttle,
        duplicate_after,
    };
    (plan != FleetPlan::default()).then(|| Box::new(plan))
}

/// A group's stages as planned: from 0 clients at the group's start, a straight line to each
/// `target` over its `duration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagePlan {
    pub duration: Duration,
    pub target: u32,
}

/// The most arrivals a group's stages may make over the run: each is planned up front.
pub const MAX_STAGE_ARRIVALS: u64 = 1_000_000;

/// Check a group's stages against its `clients`.
pub(super) fn stages(
    g: &Group,
    at: &dyn Fn(&str) -> String,
    bad: &mut dyn FnMut(String, String),
) -> Vec<StagePlan> {
    match (&g.arrival, g.stages.is_empty()) {
        (Some(_), false) => bad(
            at("stages"),
            "the group has an `arrival` too: give either `arrival` (a rate) or `stages` (targets over time), not both".into(),
        ),
        (None, true) => bad(
            at("arrival").trim_end_matches(".arrival").to_string(),
            "missing field `arrival`: give `arrival: { rate: 100/s }` or `stages: [{ duration: 10s, target: 100 }, …]`".into(),
        ),
        _ => {}
    }
    let peak = g.stages.iter().map(|s: &Stage| s.target).max();
    if peak == Some(0) {
        // `clients: 0` is refused too: the stages are what is wrong.
        bad(
            at("stages"),
            "the stages must reach at least 1 client: give a stage a `target` above 0".into(),
        );
    } else if let Some(peak) = peak
        && peak != g.clients
    {
        bad(
            at("clients"),
            format!(
                "is {}, and the stages reach at most {peak} clients: set `clients: {peak}` (the clients the group needs at its peak)",
                g.clients
            ),
        );
    }
    // Every arrival is a visit built before the run: an oscillating profile must not make
    // millions of them.
    let arrivals: u64 = g
        .stages
        .iter()
        .scan(0u32, |at, s| {
            let up = s.target.saturating_sub(*at);
            *at = s.target;
            Some(u64::from(up))
        })
        .sum();
    if arrivals > MAX_STAGE_ARRIVALS {
        bad(
            at("stages"),
            format!(
                "the stages bring in {arrivals} clients in all (each rise counts its arrivals), more than {MAX_STAGE_ARRIVALS}: use fewer or smaller rises, or `arrival` with `session` lifetimes for a steady turnover"
            ),
        );
    }
    g.stages
        .iter()
        .map(|s| StagePlan {
            duration: s.duration.0,
            target: s.target,
        })
        .collect()
}

/// One client's stay: client `slot` of the group is present from `arrive` until `leave` (None:
/// the end of the run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Visit {
    pub slot: u32,
    pub arrive: Duration,
    pub leave: Option<Duration>,
}

/// Every visit the stages make, in order of arrival. The `k`-th client of a ramp from `a` to
/// `b` over `d` arrives `(k - a) / (b - a) · d` into it (the last exactly at its end); on the
/// way down the newest leaves first, the last one at the ramp's end.
pub fn visits(start: Duration, stages: &[StagePlan]) -> Vec<Visit> {
    let mut out: Vec<Visit> = Vec::new();
    // Index in `out` of each present slot's open visit.
    let mut present: Vec<usize> = Vec::new();
    let mut t0 = start;
    for s in stages {
        let a = present.len() as u32;
        let b = s.target;
        let span = |k: u32, of: u32| -> Duration {
            if of == 0 {
                Duration::ZERO
            } else {
                s.duration.mul_f64(f64::from(k) / f64::from(of))
            }
        };
        if b > a {
            for k in 1..=(b - a) {
                present.push(out.len());
                out.push(Visit {
                    slot: a + k - 1,
                    arrive: t0 + span(k, b - a),
                    leave: None,
                });
            }
        } else {
            for k in 1..=(a - b) {
                let i = present.pop().expect("a present slot to remove");
                out[i].leave = Some(t0 + span(k, a - b));
            }
        }
        t0 += s.duration;
    }
    out.sort_by_key(|v| (v.arrive, v.slot));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn st(secs: u64, target: u32) -> StagePlan {
        StagePlan {
            duration: Duration::from_secs(secs),
            target,
        }
    }

    #[test]
    fn visits_follow_the_stages() {
        let v = visits(Duration::ZERO, &[st(4, 4), st(2, 4), st(2, 0), st(1, 2)]);
        let secs = |d: Duration| d.as_secs_f64();
        let arrivals: Vec<f64> = v.iter().map(|v| secs(v.arrive)).collect();
        assert_eq!(arrivals, [1.0, 2.0, 3.0, 4.0, 8.5, 9.0]);
        // Newest first on the way down: slot 3 leaves at 6.5, slot 0 at 8.
        let leaves: Vec<Option<f64>> = v.iter().map(|v| v.leave.map(secs)).collect();
        assert_eq!(
            leaves,
            [Some(8.0), Some(7.5), Some(7.0), Some(6.5), None, None]
        );
        assert_eq!(v[4].slot, 0);
        assert_eq!(v[5].slot, 1);
    }

    #[test]
    fn shards_of_a_staged_group_make_the_whole() {
        let yaml = "
name: t
duration: 10s
target: embedded
groups:
  - name: g
    clients: 7
    stages: [{ duration: 2s, target: 7 }, { duration: 1s, target: 2 }, { duration: 1s, target: 5 }]
";
        let plan = crate::plan::Plan::from_yaml(yaml, "t").unwrap();
        let whole = plan.groups[0].stage_visits();
        let whole_ids: Vec<(u32, Visit)> = whole
            .iter()
            .map(|(k, v)| (plan.groups[0].client_id(*k), *v))
            .collect();
        let mut parts = Vec::new();
        for i in 0..3 {
            let shard = plan.shard(i, 3).unwrap();
            let g = &shard.groups[0];
            parts.extend(g.stage_visits().iter().map(|(k, v)| (g.client_id(*k), *v)));
            // A shard's first arrivals are its clients' first visits.
            let firsts: Vec<Duration> = g.arrivals(1).collect();
            assert_eq!(firsts.len() as u32, g.clients);
        }
        parts.sort_by_key(|(id, v)| (v.arrive, *id));
        let mut expected = whole_ids.clone();
        expected.sort_by_key(|(id, v)| (v.arrive, *id));
        assert_eq!(parts, expected);
        // Client id = slot: the same client comes back for the second ramp-up.
        assert!(whole_ids.iter().all(|(id, v)| *id == v.slot));
        assert_eq!(whole.len(), 7 + 3);
    }

    #[test]
    fn a_zero_duration_stage_jumps() {
        let v = visits(Duration::from_secs(1), &[st(0, 3)]);
        assert!(v.iter().all(|v| v.arrive == Duration::from_secs(1)));
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn throttle_windows() {
        let t = ThrottlePlan {
            after: Duration::from_secs(1),
            lasts: Duration::from_secs(2),
            delay: Duration::from_millis(500),
        };
        let at = |ms: u64| Duration::from_millis(ms);
        let mut end = at(0);
        assert_eq!(t.gate(at(0), at(500), &mut end), (true, Some(at(1000))));
        // The first window opens when the client runs, 2 ms late, and lasts 5 ms from then.
        assert_eq!(t.gate(at(0), at(1002), &mut end), (true, Some(at(1007))));
        assert_eq!(t.gate(at(0), at(1005), &mut end), (true, Some(at(1007))));
        assert_eq!(t.gate(at(0), at(1007), &mut end), (false, Some(at(1500))));
        assert_eq!(t.gate(at(0), at(1499), &mut end), (false, Some(at(1500))));
        // A client that runs 300 ms late still gets the window it missed.
        assert_eq!(t.gate(at(0), at(1800), &mut end), (true, Some(at(1805))));
        assert_eq!(t.gate(at(0), at(1806), &mut end), (false, Some(at(2000))));
        assert_eq!(t.gate(at(0), at(2999), &mut end), (true, Some(at(3004))));
        assert_eq!(t.gate(at(0), at(3000), &mut end), (true, None));
    }

    #[test]
    fn draws_have_their_mean() {
        let mut rng = rand::rngs::Xoshiro128PlusPlus::seed_from_u64(7);
        for distribution in [Distribution::Exponential, Distribution::Uniform] {
            let d = RandomDur {
                mean: Duration::from_secs(2),
                distribution,
            };
            let n = 20_000;
            let sum: f64 = (0..n).map(|_| d.sample(&mut rng).as_secs_f64()).sum();
            let mean = sum / f64::from(n);
            assert!((mean - 2.0).abs() < 0.06, "{distribution:?}: mean {mean}");
        }
        let fixed = RandomDur {
            mean: Duration::from_secs(2),
            distribution: Distribution::Fixed,
        };
        assert_eq!(fixed.sample(&mut rng), Duration::from_secs(2));
    }
}
