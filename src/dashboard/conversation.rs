//! The live figures of the clients' conversations. Each snapshot carries every group's run
//! totals by index ([`Snapshot::conversation`]); here they are joined to the plan's names —
//! samples of one name in several groups add up, histograms exactly — and the last second is
//! the difference from the newest snapshot at least a second older. A dashboard that skips
//! snapshots so loses resolution, never counts.

use std::collections::VecDeque;
use std::sync::Arc;

use hdrhistogram::Histogram;

use crate::metrics::conversation::{ConvData, SampleCounts, StreamCounts};
use crate::metrics::{LatencySummary, Snapshot, summarize};
use crate::plan::Plan;
use crate::results::conversation::Names;

/// The names of each group's conversation samples and streams, in plan order (empty for a
/// group without a conversation).
pub fn names(plan: &Plan) -> Vec<Names> {
    plan.conversation_names()
}

/// One sample (a step that waits for a reply, a periodic request, a reply rule), all groups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepLive {
    pub name: String,
    /// So far.
    pub counts: SampleCounts,
    /// Matched replies per second over the recent window.
    pub matched_per_s: f64,
    pub latency: LatencySummary,
    pub latency_recent: LatencySummary,
}

/// One stream, all groups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamLive {
    pub name: String,
    /// So far.
    pub counts: StreamCounts,
    pub delivered_per_s: f64,
    pub delivery: LatencySummary,
    pub delivery_recent: LatencySummary,
}

/// What the steps panel shows, computed once per new snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Live {
    /// In plan order: the first group's samples first.
    pub steps: Vec<StepLive>,
    pub streams: Vec<StreamLive>,
    pub app_errors: u64,
}

/// Joins snapshots to names and keeps what the recent window needs.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    names: Vec<Names>,
    /// Earlier snapshots' conversations with their time: the oldest is the newest one at
    /// least a second before the latest (or, early in the run, the first one seen).
    earlier: VecDeque<(f64, Arc<Vec<ConvData>>)>,
}

/// Counts and latency of one name, over all groups.
struct Merged<C> {
    name: String,
    counts: C,
    hist: Histogram<u64>,
}

fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is valid")
}

/// The groups' samples (or streams) joined by name, in order of first appearance:
/// `of_names` and `of_data` pick them from a group's names and data, `parts` splits one into
/// counts and histogram, `add` adds counts.
fn merge<C: Default, D>(
    names: &[Names],
    groups: &[ConvData],
    of_names: impl Fn(&Names) -> &[String],
    of_data: impl Fn(&ConvData, usize) -> Option<&D>,
    parts: impl Fn(&D) -> (&C, &Histogram<u64>),
    add: impl Fn(&mut C, &C),
) -> Vec<Merged<C>> {
    let mut out: Vec<Merged<C>> = Vec::new();
    for (g, names) in names.iter().enumerate() {
        for (i, name) in of_names(names).iter().enumerate() {
            let at = match out.iter().position(|m| m.name == *name) {
                Some(at) => at,
                None => {
                    out.push(Merged {
                        name: name.clone(),
                        counts: C::default(),
                        hist: hist(),
                    });
                    out.len() - 1
                }
            };
            if let Some(d) = groups.get(g).and_then(|c| of_data(c, i)) {
                let (counts, h) = parts(d);
                add(&mut out[at].counts, counts);
                let _ = out[at].hist.add(h);
            }
        }
    }
    out
}

fn merge_samples(names: &[Names], groups: &[ConvData]) -> Vec<Merged<SampleCounts>> {
    merge(
        names,
        groups,
        |n| &n.samples,
        |c, i| c.samples.get(i),
        |s| (&s.counts, &s.latency),
        SampleCounts::add,
    )
}

fn merge_streams(names: &[Names], groups: &[ConvData]) -> Vec<Merged<StreamCounts>> {
    merge(
        names,
        groups,
        |n| &n.streams,
        |c, i| c.streams.get(i),
        |s| (&s.counts, &s.delivery),
        StreamCounts::add,
    )
}

/// The window's latency: now minus then (then is empty at the start of the run).
fn recent(now: &Histogram<u64>, then: Option<&Histogram<u64>>) -> LatencySummary {
    let Some(then) = then else {
        return summarize(now, false);
    };
    let mut h = now.clone();
    match h.subtract(then) {
        Ok(()) => summarize(&h, false),
        // Totals only grow, so this does not happen; show nothing rather than a wrong figure.
        Err(_) => LatencySummary::default(),
    }
}

fn per_s(now: u64, then: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        now.saturating_sub(then) as f64 / secs
    } else {
        0.0
    }
}

impl Tracker {
    pub fn new(names: Vec<Names>) -> Tracker {
        Tracker {
            names,
            earlier: VecDeque::new(),
        }
    }

    /// Whether any group holds a conversation (the panel is shown only then).
    pub fn any(&self) -> bool {
        self.names
            .iter()
            .any(|n| !n.samples.is_empty() || !n.streams.is_empty())
    }

    /// The figures as of `s`.
    pub fn update(&mut self, s: &Snapshot) -> Live {
        let t = s.elapsed.as_secs_f64();
        self.earlier.push_back((t, s.conversation.clone()));
        while self.earlier.len() > 1 && self.earlier[1].0 <= t - 1.0 {
            self.earlier.pop_front();
        }
        // Early in the run the window is the run so far.
        let (then_t, then) = match self.earlier.front() {
            Some((at, c)) if *at <= t - 1.0 => (*at, Some(c.clone())),
            _ => (0.0, None),
        };
        let secs = t - then_t;
        let steps_then = then.as_ref().map(|c| merge_samples(&self.names, c));
        let streams_then = then.as_ref().map(|c| merge_streams(&self.names, c));
        let steps = merge_samples(&self.names, &s.conversation)
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                // Names are merged in the same order each time, so index i is the same name.
                let before = steps_then.as_ref().and_then(|v| v.get(i));
                StepLive {
                    matched_per_s: per_s(
                        m.counts.matched,
                        before.map_or(0, |b| b.counts.matched),
                        secs,
                    ),
                    latency: summarize(&m.hist, false),
                    latency_recent: recent(&m.hist, before.map(|b| &b.hist)),
                    name: m.name,
                    counts: m.counts,
                }
            })
            .collect();
        let streams = merge_streams(&self.names, &s.conversation)
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let before = streams_then.as_ref().and_then(|v| v.get(i));
                StreamLive {
                    delivered_per_s: per_s(
                        m.counts.delivered,
                        before.map_or(0, |b| b.counts.delivered),
                        secs,
                    ),
                    delivery: summarize(&m.hist, false),
                    delivery_recent: recent(&m.hist, before.map(|b| &b.hist)),
                    name: m.name,
                    counts: m.counts,
                }
            })
            .collect();
        Live {
            steps,
            streams,
            app_errors: s.conversation.iter().map(|c| c.app_errors).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn names(samples: &[&str], streams: &[&str]) -> Names {
        Names {
            samples: samples.iter().map(|s| s.to_string()).collect(),
            streams: streams.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Two groups sharing the sample `req`; group 0 matched `a` in `req` at 1 ms each, group
    /// 1 matched `b` at 9 ms each.
    fn snap(t: f64, a: u64, b: u64, delivered: u64) -> Snapshot {
        let mut g0 = ConvData::default();
        g0.sample(1).counts.matched = a;
        for _ in 0..a {
            g0.record_latency(1, Duration::from_millis(1));
        }
        g0.stream(0).counts.delivered = delivered;
        g0.app_errors = 2;
        let mut g1 = ConvData::default();
        g1.sample(0).counts.matched = b;
        g1.sample(0).counts.timeouts = 1;
        for _ in 0..b {
            g1.record_latency(0, Duration::from_millis(9));
        }
        g1.app_errors = 1;
        Snapshot {
            elapsed: Duration::from_secs_f64(t),
            conversation: Arc::new(vec![g0, g1, ConvData::default()]),
            ..Default::default()
        }
    }

    #[test]
    fn samples_of_one_name_add_up_and_the_window_is_the_last_second() {
        let mut tr = Tracker::new(vec![
            names(&["hello", "req"], &["prices"]),
            names(&["req"], &[]),
            Names::default(),
        ]);
        assert!(tr.any());
        // The first second: the run so far.
        let live = tr.update(&snap(0.5, 10, 0, 4));
        let order: Vec<&str> = live.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["hello", "req"], "plan order");
        assert_eq!(live.steps[1].counts.matched, 10);
        assert_eq!(live.steps[1].matched_per_s, 20.0);
        assert_eq!(live.app_errors, 3);
        tr.update(&snap(1.0, 100, 0, 10));
        tr.update(&snap(1.9, 100, 50, 20));
        // 2.0 s: the window starts at the 1.0 s snapshot, where only group 0 had matched.
        let live = tr.update(&snap(2.0, 100, 100, 30));
        let req = &live.steps[1];
        assert_eq!(req.counts.matched, 200);
        assert_eq!(req.counts.timeouts, 1);
        assert_eq!(req.matched_per_s, 100.0);
        // The run: half at 1 ms, half at 9 ms; the last second: all at 9 ms.
        assert_eq!(req.latency.count, 200);
        assert_eq!(req.latency.p50 / 1000, 1, "{:?}", req.latency);
        assert_eq!(req.latency.p99 / 1000, 9);
        assert_eq!(req.latency_recent.count, 100);
        assert_eq!(req.latency_recent.p50 / 1000, 9);
        assert_eq!(live.steps[0].counts, SampleCounts::default());
        assert_eq!(live.streams[0].name, "prices");
        assert_eq!(live.streams[0].counts.delivered, 30);
        assert_eq!(live.streams[0].delivered_per_s, 20.0);
        // The tracker keeps only what the window needs.
        assert_eq!(tr.earlier.len(), 3);
    }

    #[test]
    fn no_conversation_no_panel() {
        let tr = Tracker::new(vec![Names::default(), Names::default()]);
        assert!(!tr.any());
        assert!(!Tracker::default().any());
    }
}
