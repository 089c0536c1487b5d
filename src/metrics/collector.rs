//! The collector: once per tick, drain the shards into run totals and one timeline point, and
//! describe the swarm as a [`Snapshot`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::generator::{GeneratorSample, Sampler};
use super::{Counters, GroupData, Hists, Latency, LatencySummary, Metrics, TICK, summarize};

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
    pub opened: u64,
    pub closed: u64,
    pub errors: u64,
    pub sent: u64,
    pub received: u64,
    #[serde(default)]
    pub in_backoff: u64,
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
    /// Whole-run latency, indexed by [`Latency`].
    pub latency: Vec<LatencySummary>,
    /// Latency over the last second.
    pub latency_recent: Vec<LatencySummary>,
    pub point: Point,
    pub generator: Option<GeneratorSample>,
    /// Recovery, retry pressure and give-ups so far.
    pub storm: super::storm::Storm,
}

impl Snapshot {
    pub fn latency(&self, l: Latency) -> &LatencySummary {
        &self.latency[l as usize]
    }
    pub fn latency_recent(&self, l: Latency) -> &LatencySummary {
        &self.latency_recent[l as usize]
    }
}

const RECENT_TICKS: usize = (1000 / TICK.as_millis()) as usize;
/// Generator samples are taken every this many ticks (once a second).
const SAMPLE_EVERY: u64 = RECENT_TICKS as u64;

/// Run totals of one group.
#[derive(Clone, Debug, Default)]
pub struct GroupTotals {
    pub data: GroupData,
    pub peak_connected: u64,
}

/// Latest generator samples of other processes (worker processes), to add to this one's.
pub type ExternalSamples = Box<dyn Fn() -> Vec<GeneratorSample> + Send>;

pub struct Collector {
    metrics: Arc<Metrics>,
    external: Option<ExternalSamples>,
    epoch: Instant,
    spare: Hists,
    /// Scratch for one interval, one entry per group; reused every tick.
    interval: Vec<GroupData>,
    pub groups: Vec<GroupTotals>,
    /// Attempts per tick and connected at each tick's end, per group (the timeline, split
    /// by group).
    pub group_attempts: Vec<Vec<u64>>,
    pub group_retries: Vec<Vec<u64>>,
    pub group_connected: Vec<Vec<u64>>,
    pub totals: Counters,
    pub hists: Hists,
    recent: VecDeque<(Counters, Hists)>,
    pub points: Vec<Point>,
    /// `points[].attempts`, kept apart for the storm figures of each snapshot.
    attempt_series: Vec<u64>,
    retry_series: Vec<u64>,
    /// Closes per interval for each close code seen, aligned with `points`.
    pub close_series: std::collections::BTreeMap<u16, Vec<u64>>,
    pub peak_connected: u64,
    pub samples: Vec<GeneratorSample>,
    sampler: Sampler,
    ticks: u64,
}

impl Collector {
    pub fn new(metrics: Arc<Metrics>, epoch: Instant) -> Collector {
        let groups = metrics.groups();
        Collector {
            metrics,
            external: None,
            epoch,
            spare: Hists::default(),
            interval: vec![GroupData::default(); groups],
            groups: vec![GroupTotals::default(); groups],
            group_attempts: vec![Vec::new(); groups],
            group_retries: vec![Vec::new(); groups],
            group_connected: vec![Vec::new(); groups],
            totals: Counters::default(),
            hists: Hists::default(),
            recent: VecDeque::with_capacity(RECENT_TICKS + 1),
            points: Vec::new(),
            attempt_series: Vec::new(),
            retry_series: Vec::new(),
            close_series: std::collections::BTreeMap::new(),
            peak_connected: 0,
            samples: Vec::new(),
            sampler: Sampler::new(),
            ticks: 0,
        }
    }

    /// Report the generator as this process plus the processes `samples` describes: memory
    /// and CPU add up; open files are per process, so the largest counts.
    pub fn set_external_samples(&mut self, samples: ExternalSamples) {
        self.external = Some(samples);
    }

    /// Close the current interval now.
    pub fn tick(&mut self) -> Snapshot {
        let elapsed = self.epoch.elapsed();
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
        for g in &mut self.interval {
            g.counters = Counters::default();
            g.hists.reset();
        }
        self.metrics.drain_into(&mut self.interval, &mut self.spare);
        for ((((total, interval), attempts), retries), connected) in self
            .groups
            .iter_mut()
            .zip(&self.interval)
            .zip(&mut self.group_attempts)
            .zip(&mut self.group_retries)
            .zip(&mut self.group_connected)
        {
            attempts.push(interval.counters.attempts);
            retries.push(interval.counters.retries);
            total.data.add(interval);
            connected.push(total.data.counters.connected());
            total.peak_connected = total.peak_connected.max(total.data.counters.connected());
            counters.add(&interval.counters);
            hists.add(&interval.hists);
        }
        self.totals.add(&counters);
        self.hists.add(&hists);
        let connected = self.totals.connected();
        self.peak_connected = self.peak_connected.max(connected);
        let point = Point {
            t_ms: elapsed.as_millis() as u64,
            connected,
            attempts: counters.attempts,
            retries: counters.retries,
            opened: counters.opened,
            closed: counters.closed,
            errors: counters.failed_attempts(),
            sent: counters.sent,
            received: counters.received,
            in_backoff: self.totals.in_backoff(),
        };
        self.points.push(point);
        self.attempt_series.push(point.attempts);
        self.retry_series.push(point.retries);
        let n = self.points.len();
        for (code, count) in &counters.close_codes {
            let series = self.close_series.entry(*code).or_default();
            series.resize(n - 1, 0);
            series.push(*count);
        }
        for series in self.close_series.values_mut() {
            series.resize(n, 0);
        }
        self.recent.push_back((counters, hists));
        self.ticks += 1;

        let generator = if self.ticks.is_multiple_of(SAMPLE_EVERY) {
            let mut s = self.sampler.sample(point.t_ms, connected);
            if let Some(external) = &self.external {
                for w in external() {
                    s.rss_bytes += w.rss_bytes;
                    s.cpu_percent = ((s.cpu_percent + w.cpu_percent) * 10.0).round() / 10.0;
                    s.open_fds = s.open_fds.max(w.open_fds);
                }
            }
            self.samples.push(s);
            Some(s)
        } else {
            self.samples.last().copied()
        };

        let mut last_second = Counters::default();
        let mut recent_hists = Hists::default();
        for (c, h) in &self.recent {
            last_second.add(c);
            recent_hists.add(h);
        }
        Snapshot {
            elapsed,
            totals: self.totals.clone(),
            peak_connected: self.peak_connected,
            last_second,
            latency: Latency::ALL
                .iter()
                .map(|l| summarize(self.hists.get(*l), false))
                .collect(),
            latency_recent: Latency::ALL
                .iter()
                .map(|l| summarize(recent_hists.get(*l), false))
                .collect(),
            point,
            generator,
            storm: super::storm::storm_from(
                &self.totals,
                &self.hists,
                &self.attempt_series,
                &self.retry_series,
            ),
        }
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
        m.attempt(who(c), Duration::ZERO, false);
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
        for id in 0..4 {
            m.closed(who(id), Closed::ByPeer(1006));
        }
        m.attempt(who(99), Duration::ZERO, false);
        m.connect_error(who(99), ConnectError::Refused);
        let s2 = c.tick();
        assert_eq!(s2.point.opened, 0);
        assert_eq!(s2.point.closed, 4);
        assert_eq!(s2.point.errors, 1);
        assert_eq!(s2.point.connected, 6);
        assert_eq!(s2.totals.attempts, 11);
        assert_eq!(s2.peak_connected, 10);
        assert_eq!(s2.last_second.opened, 10);
        assert_eq!(s2.latency(Latency::Connect).count, 10);
        assert_eq!(c.points.len(), 2);
        // Per group: ids 0..4 closed are 0, 2 (even) and 1, 3 (odd).
        assert_eq!(c.groups[0].data.counters.opened, 5);
        assert_eq!(c.groups[0].data.counters.connected(), 3);
        assert_eq!(c.groups[1].data.counters.connected(), 3);
        assert_eq!(c.groups[1].peak_connected, 5);
        assert_eq!(c.groups[1].data.counters.failed_attempts(), 1);
        // After a second of quiet ticks the recent window forgets the opens.
        let mut last = s2;
        for _ in 0..RECENT_TICKS {
            last = c.tick();
        }
        assert_eq!(last.last_second.opened, 0);
        assert_eq!(last.latency_recent(Latency::Connect).count, 0);
        assert_eq!(last.latency(Latency::Connect).count, 10);
        assert_eq!(last.totals.close_codes[&1006], 4);
    }
}
