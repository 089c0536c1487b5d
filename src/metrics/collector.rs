//! The collector: once per tick, drain the shards into run totals and one timeline point, and
//! describe the swarm as a [`Snapshot`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::conversation::ConvData;
use super::generator::{GeneratorSample, Sampler};
use std::collections::BTreeMap;

use super::{
    Counters, GroupData, Hists, Latency, LatencySummary, LatencyTable, Metrics, TICK, summarize,
};

/// One timeline interval. Counts are events in the interval; `connected` and `in_backoff` are
/// the gauges at its end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub t_ms: u64,
    pub connected: u64,
    pub attempts: u64,
    /// Attempts that were not a client's first.
    #[serde(default)]
    pub retries: u64,
    /// Retries after a failed attempt (waves after the first).
    #[serde(default)]
    pub repeat_retries: u64,
    pub opened: u64,
    pub closed: u64,
    pub errors: u64,
    pub sent: u64,
    pub received: u64,
    #[serde(default)]
    pub in_backoff: u64,
    /// Connections the heartbeat found dead in the interval.
    #[serde(default)]
    pub dead_detected: u64,
    /// The interval's own percentiles (µs), read exactly from the interval's histograms:
    /// echo round trip, upgrade handshake and TCP connect. Absent when the interval had no
    /// sample of that kind (absent, not 0: nothing was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_p50_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_p99_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_p50_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_p99_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_p99_us: Option<u64>,
    /// How late the generator was against its own schedule in the interval (attempts and
    /// scheduled sends), p99 and worst: when a run warns of lag, this says when it was late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_p99_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_max_us: Option<u64>,
}

/// The `q` quantile of an interval's histogram, `None` without samples.
fn interval_quantile(h: &hdrhistogram::Histogram<u64>, q: f64) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q))
}

/// What the swarm looks like now. Published on a watch channel; readers that fall behind just
/// see a later snapshot.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub totals: Counters,
    pub peak_connected: u64,
    /// Events in the last second (the most recent ticks).
    pub last_second: Counters,
    /// Whole-run latency.
    pub latency: LatencyTable,
    /// Latency over the last second.
    pub latency_recent: LatencyTable,
    /// How late the generator was against its schedule over the last second.
    pub lag_recent: LatencySummary,
    pub point: Point,
    pub generator: Option<GeneratorSample>,
    /// Recovery, retry pressure and give-ups so far.
    pub storm: super::storm::Storm,
    /// What went wrong around the run so far.
    pub warnings: Vec<String>,
    /// Each group's conversation so far (run totals, indexed like the plan's groups, samples
    /// and streams); empty when no group has recorded any. Totals rather than the last second,
    /// so a reader that skips snapshots loses no counts: it gets any window by subtracting an
    /// earlier snapshot's. Shared, so cloning a snapshot stays cheap.
    pub conversation: Arc<Vec<ConvData>>,
    /// The run-wide histograms (what `latency` summarizes), for readers that need whole
    /// distributions (the Prometheus exporter). Copied once a second, not every tick (a copy
    /// of wide histograms takes about half a millisecond), so they may be up to a second older
    /// than the counters; always as fresh as the counters in the last snapshot. `None` in
    /// virtual time.
    pub hists: Option<Arc<Hists>>,
    /// The run is over: this is its last snapshot, taken after the clients closed, and its
    /// totals are the ones results.json reports.
    pub finished: bool,
}

const RECENT_TICKS: usize = (1000 / TICK.as_millis()) as usize;
/// Generator samples are taken every this many ticks (once a second).
const SAMPLE_EVERY: u64 = RECENT_TICKS as u64;

/// One group's share of the timeline, one entry per timeline point.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupSeries {
    /// Attempts in each interval.
    pub attempts: Vec<u64>,
    /// Attempts that were retries, in each interval.
    #[serde(default)]
    pub retries: Vec<u64>,
    /// Retries after a failed attempt, in each interval.
    #[serde(default)]
    pub repeat_retries: Vec<u64>,
    /// Open connections at each interval's end.
    pub connected: Vec<u64>,
}

/// Run totals of one group, and its series.
#[derive(Clone, Debug, Default)]
pub struct GroupTotals {
    pub data: GroupData,
    pub peak_connected: u64,
    pub series: GroupSeries,
}

/// What a finished collector hands over: everything the run recorded, for the results.
#[derive(Debug, Default)]
pub struct Collected {
    pub totals: Counters,
    pub hists: Hists,
    pub peak_connected: u64,
    pub points: Vec<Point>,
    /// Closes per interval for each close code seen, aligned with `points`.
    pub close_series: BTreeMap<u16, Vec<u64>>,
    /// Non-101 answers to the upgrade per interval for each HTTP status seen, aligned with
    /// `points`.
    pub status_series: BTreeMap<u16, Vec<u64>>,
    pub groups: Vec<GroupTotals>,
    pub samples: Vec<GeneratorSample>,
    /// What went wrong around the run.
    pub warnings: Vec<String>,
    /// One error text per connect-error kind seen.
    pub connect_error_examples: BTreeMap<String, String>,
}

pub struct Collector {
    metrics: Arc<Metrics>,
    epoch: Instant,
    spare: Hists,
    /// The last second's histograms added up; reused every tick (a fresh set is zeroed whole).
    recent_sum: Hists,
    /// Scratch for one interval, one entry per group; reused every tick.
    interval: Vec<GroupData>,
    recent: VecDeque<(Counters, Hists)>,
    /// `points[].attempts` and `.retries`, kept apart for the storm figures of each snapshot.
    attempt_series: Vec<u64>,
    retry_series: Vec<u64>,
    repeat_series: Vec<u64>,
    sampler: Sampler,
    ticks: u64,
    /// Sample this process's memory and CPU every second (not in virtual time: the model's
    /// seconds are not the process's).
    sample: bool,
    /// What the run recorded so far.
    run: Collected,
    /// The last copy of the run's histograms handed to a snapshot.
    shared_hists: Option<Arc<Hists>>,
}

impl Collector {
    pub fn new(metrics: Arc<Metrics>, epoch: Instant) -> Collector {
        let groups = metrics.groups();
        Collector {
            metrics,
            epoch,
            spare: Hists::default(),
            recent_sum: Hists::default(),
            interval: vec![GroupData::default(); groups],
            recent: VecDeque::with_capacity(RECENT_TICKS + 1),
            attempt_series: Vec::new(),
            retry_series: Vec::new(),
            repeat_series: Vec::new(),
            sampler: Sampler::new(),
            ticks: 0,
            sample: true,
            run: Collected {
                groups: vec![GroupTotals::default(); groups],
                ..Collected::default()
            },
            shared_hists: None,
        }
    }

    /// A collector whose ticks are given their time ([`Self::tick_at`], [`Self::finish_at`])
    /// by a simulation in virtual time; it takes no generator samples.
    pub fn virtual_time(metrics: Arc<Metrics>) -> Collector {
        Collector {
            sample: false,
            ..Collector::new(metrics, Instant::now())
        }
    }

    /// What the run recorded so far.
    pub fn run(&self) -> &Collected {
        &self.run
    }

    /// Close the last interval and hand over everything recorded (the collector is left
    /// empty).
    pub fn finish(&mut self) -> Collected {
        let elapsed = self.epoch.elapsed();
        self.finish_at(elapsed)
    }

    /// [`Self::finish`] with the last interval closed at `elapsed`.
    pub fn finish_at(&mut self, elapsed: Duration) -> Collected {
        self.tick_at(elapsed);
        self.hand_over()
    }

    /// [`Self::finish`], and the run's last snapshot ([`Snapshot::finished`]): its totals are
    /// the ones handed over, its histograms the whole run's.
    pub fn finish_with_snapshot(&mut self) -> (Collected, Snapshot) {
        let elapsed = self.epoch.elapsed();
        let mut last = self.close_interval(elapsed, true);
        last.finished = true;
        (self.hand_over(), last)
    }

    fn hand_over(&mut self) -> Collected {
        self.run.warnings = self.metrics.warnings();
        self.run.connect_error_examples = self.metrics.connect_error_examples();
        let groups = self.run.groups.len();
        std::mem::replace(
            &mut self.run,
            Collected {
                groups: vec![GroupTotals::default(); groups],
                ..Collected::default()
            },
        )
    }

    /// Close the current interval now.
    pub fn tick(&mut self) -> Snapshot {
        let elapsed = self.epoch.elapsed();
        self.tick_at(elapsed)
    }

    /// Close the current interval, `elapsed` into the run.
    pub fn tick_at(&mut self, elapsed: Duration) -> Snapshot {
        self.close_interval(elapsed, false)
    }

    /// Close the current interval; `fresh_hists` copies the run's histograms into the
    /// snapshot whatever the tick.
    fn close_interval(&mut self, elapsed: Duration, fresh_hists: bool) -> Snapshot {
        // Reuse the oldest interval's histograms once the window is full.
        let mut hists = match self.recent.len() {
            n if n >= RECENT_TICKS => {
                let (_, mut h) = self.recent.pop_front().expect("non-empty");
                h.reset();
                h
            }
            _ => Hists::default(),
        };
        let mut counters = Counters::default();
        self.interval.iter_mut().for_each(GroupData::clear);
        self.metrics.drain_into(&mut self.interval, &mut self.spare);
        let run = &mut self.run;
        for (total, interval) in run.groups.iter_mut().zip(&self.interval) {
            total.data.add(interval);
            let connected = total.data.counters.connected();
            total.series.attempts.push(interval.counters.attempts);
            total.series.retries.push(interval.counters.retries);
            total
                .series
                .repeat_retries
                .push(interval.counters.repeat_retries);
            total.series.connected.push(connected);
            total.peak_connected = total.peak_connected.max(connected);
            counters.add(&interval.counters);
            hists.add(&interval.hists);
        }
        run.totals.add(&counters);
        run.hists.add(&hists);
        let connected = run.totals.connected();
        run.peak_connected = run.peak_connected.max(connected);
        let point = Point {
            t_ms: elapsed.as_millis() as u64,
            connected,
            attempts: counters.attempts,
            retries: counters.retries,
            repeat_retries: counters.repeat_retries,
            opened: counters.opened,
            closed: counters.closed,
            errors: counters.failed_attempts(),
            sent: counters.sent,
            received: counters.received,
            in_backoff: run.totals.in_backoff(),
            dead_detected: counters.dead_detected,
            rtt_p50_us: interval_quantile(hists.get(Latency::Rtt), 0.5),
            rtt_p99_us: interval_quantile(hists.get(Latency::Rtt), 0.99),
            handshake_p50_us: interval_quantile(hists.get(Latency::Handshake), 0.5),
            handshake_p99_us: interval_quantile(hists.get(Latency::Handshake), 0.99),
            connect_p99_us: interval_quantile(hists.get(Latency::Connect), 0.99),
            lag_p99_us: interval_quantile(hists.get(Latency::ScheduleLag), 0.99),
            lag_max_us: interval_quantile(hists.get(Latency::ScheduleLag), 1.0),
        };
        run.points.push(point);
        self.attempt_series.push(point.attempts);
        self.retry_series.push(point.retries);
        self.repeat_series.push(point.repeat_retries);
        let n = run.points.len();
        push_series(&mut run.close_series, &counters.close_codes, n);
        push_series(&mut run.status_series, &counters.handshake_status, n);
        self.recent.push_back((counters, hists));
        self.ticks += 1;

        let generator = if self.sample && self.ticks.is_multiple_of(SAMPLE_EVERY) {
            // The generator is this process plus its worker processes: memory and CPU add
            // up; open files are per process, so the largest counts.
            let mut s = self.sampler.sample(point.t_ms, connected);
            for w in self.metrics.worker_samples() {
                s.rss_bytes += w.rss_bytes;
                s.cpu_percent = ((s.cpu_percent + w.cpu_percent) * 10.0).round() / 10.0;
                s.open_fds = s.open_fds.max(w.open_fds);
            }
            self.run.samples.push(s);
            Some(s)
        } else {
            self.run.samples.last().copied()
        };

        let mut last_second = Counters::default();
        self.recent_sum.reset();
        for (c, h) in &self.recent {
            last_second.add(c);
            self.recent_sum.add(h);
        }
        let recent_hists = &self.recent_sum;
        // The first tick's and then once a second, like the generator samples.
        if self.sample
            && (fresh_hists || self.ticks == 1 || self.ticks.is_multiple_of(SAMPLE_EVERY))
        {
            self.shared_hists = Some(Arc::new(self.run.hists.clone()));
        }
        let run = &self.run;
        // One clone of the run's conversation per tick, and none for runs without one.
        let conversation = if run.groups.iter().all(|g| g.data.conv.is_empty()) {
            Arc::default()
        } else {
            Arc::new(run.groups.iter().map(|g| g.data.conv.clone()).collect())
        };
        Snapshot {
            elapsed,
            totals: run.totals.clone(),
            peak_connected: run.peak_connected,
            last_second,
            latency: LatencyTable::from_fn(|l| summarize(run.hists.get(l), false)),
            latency_recent: LatencyTable::from_fn(|l| summarize(recent_hists.get(l), false)),
            lag_recent: summarize(recent_hists.get(Latency::ScheduleLag), false),
            point,
            generator,
            storm: super::storm::storm_from(
                &run.totals,
                &run.hists,
                &self.attempt_series,
                &self.retry_series,
                &self.repeat_series,
            ),
            warnings: self.metrics.warnings(),
            conversation,
            hists: self.shared_hists.clone(),
            finished: false,
        }
    }
}

/// Add one interval's `counts` by key to `series` (one entry per point, `n` points now): a key
/// seen for the first time gets zeros before, and every key not seen gets a zero.
fn push_series(series: &mut BTreeMap<u16, Vec<u64>>, counts: &BTreeMap<u16, u64>, n: usize) {
    for (key, count) in counts {
        let s = series.entry(*key).or_default();
        s.resize(n - 1, 0);
        s.push(*count);
    }
    for s in series.values_mut() {
        s.resize(n, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Closed, ConnectError, OpenTimings, Who};

    fn who(client: u32) -> Who {
        Who {
            client,
            group: (client % 2) as u16,
        }
    }

    fn open(m: &Metrics, c: u32) {
        m.attempt(who(c), Duration::ZERO, false, false);
        m.opened(
            who(c),
            OpenTimings {
                connect: Duration::from_micros(50),
                tls: None,
                handshake: Duration::from_micros(80),
                reconnect: None,
            },
        );
    }

    #[test]
    fn ticks_build_totals_points_and_windows() {
        let m = Arc::new(Metrics::new(2));
        let mut c = Collector::new(m.clone(), Instant::now());
        for id in 0..10 {
            open(&m, id);
        }
        let s1 = c.tick();
        assert_eq!(s1.point.opened, 10);
        assert_eq!(s1.point.connected, 10);
        // The interval's own percentiles, exact; none where nothing was measured.
        assert_eq!(s1.point.handshake_p99_us, Some(80));
        assert_eq!(s1.point.handshake_p50_us, Some(80));
        assert_eq!(s1.point.connect_p99_us, Some(50));
        assert_eq!(s1.point.rtt_p99_us, None);
        // On time: recorded as the histograms' lowest value, 1 µs.
        assert_eq!(s1.point.lag_max_us, Some(1));
        for id in 0..4 {
            m.closed(who(id), Closed::ByPeer(1006));
        }
        // Late against the schedule: the interval's own lag, not the run's.
        m.attempt(who(99), Duration::from_micros(1500), false, false);
        m.connect_error(who(99), ConnectError::Refused);
        m.handshake_status(who(98), 503);
        m.closed(
            who(5),
            Closed::Dead {
                silent_for: Duration::from_secs(1),
            },
        );
        m.received(who(6), Some(Duration::from_micros(900)));
        let s2 = c.tick();
        assert_eq!(s2.point.dead_detected, 1);
        assert_eq!(s2.point.rtt_p99_us, Some(900));
        assert_eq!(s2.point.lag_p99_us, Some(1500));
        assert_eq!(s2.point.lag_max_us, Some(1500));
        assert_eq!(
            s2.point.handshake_p99_us, None,
            "no handshake in this interval"
        );
        assert_eq!(c.run().status_series[&503], vec![0, 1]);
        assert_eq!(c.run().close_series[&1006], vec![0, 4]);
        assert_eq!(s2.point.opened, 0);
        assert_eq!(s2.point.closed, 5);
        assert_eq!(s2.point.errors, 2);
        assert_eq!(s2.point.connected, 5);
        assert_eq!(s2.totals.attempts, 11);
        assert_eq!(s2.peak_connected, 10);
        assert_eq!(s2.last_second.opened, 10);
        assert_eq!(s2.latency.connect.count, 10);
        assert_eq!(c.run().points.len(), 2);
        // Per group: ids 0..4 closed are 0, 2 (even) and 1, 3 (odd).
        assert_eq!(c.run().groups[0].data.counters.opened, 5);
        assert_eq!(c.run().groups[0].data.counters.connected(), 3);
        assert_eq!(
            c.run().groups[1].data.counters.connected(),
            2,
            "5 found dead"
        );
        assert_eq!(c.run().groups[1].peak_connected, 5);
        assert_eq!(c.run().groups[1].data.counters.failed_attempts(), 1);
        // After a second of quiet ticks the recent window forgets the opens.
        let mut last = s2;
        for _ in 0..RECENT_TICKS {
            last = c.tick();
        }
        assert_eq!(last.last_second.opened, 0);
        assert_eq!(last.latency_recent.connect.count, 0);
        assert_eq!(last.latency.connect.count, 10);
        assert_eq!(last.totals.close_codes[&1006], 4);
    }

    #[test]
    fn snapshots_share_the_run_histograms_once_a_second_and_last_the_final_ones() {
        let m = Arc::new(Metrics::new(2));
        let mut c = Collector::new(m.clone(), Instant::now());
        open(&m, 1);
        let first = c.tick();
        let shared = first.hists.clone().expect("the first tick shares them");
        assert_eq!(shared.get(Latency::Connect).len(), 1);
        open(&m, 2);
        let second = c.tick();
        assert!(
            Arc::ptr_eq(second.hists.as_ref().unwrap(), &shared),
            "not copied again within the second"
        );
        for _ in 2..SAMPLE_EVERY {
            c.tick();
        }
        let a_second_on = c.tick();
        assert_eq!(a_second_on.hists.unwrap().get(Latency::Connect).len(), 2);
        assert!(!a_second_on.finished);
        open(&m, 3);
        m.closed(who(3), Closed::ByClient);
        let (collected, last) = c.finish_with_snapshot();
        assert!(last.finished);
        assert_eq!(last.totals, collected.totals);
        assert_eq!(last.totals.closed, 1);
        assert_eq!(last.hists.unwrap().get(Latency::Connect).len(), 3);
        // Virtual time shares none.
        let mut v = Collector::virtual_time(Arc::new(Metrics::new(1)));
        assert!(v.tick_at(TICK).hists.is_none());
    }

    #[test]
    fn snapshots_carry_the_conversation_so_far_and_only_with_one() {
        let m = Arc::new(Metrics::new(2));
        let mut c = Collector::new(m.clone(), Instant::now());
        open(&m, 1);
        assert!(
            c.tick().conversation.is_empty(),
            "no conversation, nothing cloned"
        );
        m.conversation(who(1), |d| {
            d.sample(1).counts.matched += 2;
            d.record_latency(1, Duration::from_millis(3));
        });
        let s1 = c.tick();
        m.conversation(who(1), |d| d.sample(1).counts.matched += 5);
        m.conversation(who(2), |d| d.stream(0).counts.lost += 1);
        let s2 = c.tick();
        // Run totals per group, by index: the earlier snapshot is left as it was.
        assert_eq!(s1.conversation.len(), 2);
        assert_eq!(s1.conversation[1].samples[1].counts.matched, 2);
        assert_eq!(s2.conversation[1].samples[1].counts.matched, 7);
        assert_eq!(s2.conversation[1].samples[1].latency.len(), 1);
        assert_eq!(s2.conversation[0].streams[0].counts.lost, 1);
    }
}
