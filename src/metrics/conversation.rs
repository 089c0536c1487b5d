//! What conversations recorded, per group: each named sample (a step that waits for a reply, a
//! periodic request, a reply rule) with its counts and latency histogram, each stream with its
//! losses and delivery latency, application errors by value, close reasons by code, token
//! refreshes. Indexed as the plan numbers samples and streams; the names are joined on in the
//! results. Mergeable like the rest: counts add, histograms add exactly.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{decode_histogram, encode_histogram, histogram};

/// Distinct application-error values and close reasons kept per group; the rest are counted
/// under [`OTHER`], so a server that puts ids in its error texts cannot grow memory without
/// bound.
pub const MAX_VALUES: usize = 64;
pub const OTHER: &str = "(other)";

#[derive(Clone, Debug)]
pub struct SampleData {
    pub counts: SampleCounts,
    pub latency: Histogram<u64>,
}

impl Default for SampleData {
    fn default() -> Self {
        SampleData {
            counts: SampleCounts::default(),
            latency: histogram(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleCounts {
    /// Messages sent (requests, the send before an expect, answers of a reply rule).
    pub sent: u64,
    /// Expected messages that arrived (replies, acks, matches of a reply rule).
    pub matched: u64,
    pub timeouts: u64,
    /// Replies that were application errors (`app_errors`) carrying the request's id.
    pub errors: u64,
    /// Periodic sends skipped because `max_in_flight` requests were awaiting replies.
    #[serde(default)]
    pub skipped: u64,
    /// Requests still awaiting their reply when their connection ended (neither answered nor
    /// timed out).
    #[serde(default)]
    pub abandoned: u64,
}

impl SampleCounts {
    pub fn add(&mut self, o: &SampleCounts) {
        self.sent += o.sent;
        self.matched += o.matched;
        self.timeouts += o.timeouts;
        self.errors += o.errors;
        self.skipped += o.skipped;
        self.abandoned += o.abandoned;
    }
}

#[derive(Clone, Debug)]
pub struct StreamData {
    pub counts: StreamCounts,
    pub delivery: Histogram<u64>,
}

impl Default for StreamData {
    fn default() -> Self {
        StreamData {
            counts: StreamCounts::default(),
            delivery: histogram(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamCounts {
    pub delivered: u64,
    /// Final once the client's task ends (a late arrival fills its gap).
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Stream messages whose sequence field could not be read.
    pub unreadable: u64,
}

impl StreamCounts {
    pub fn add(&mut self, o: &StreamCounts) {
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.unreadable += o.unreadable;
    }
}

#[derive(Clone, Debug, Default)]
pub struct ConvData {
    pub samples: Vec<SampleData>,
    pub streams: Vec<StreamData>,
    pub app_errors: u64,
    pub app_errors_by: BTreeMap<String, u64>,
    /// Close reasons (non-empty) by close code.
    pub close_reasons: BTreeMap<u16, BTreeMap<String, u64>>,
    /// Connections the conversation itself closed (a `close` step, a failed expect), by the
    /// code it sent.
    pub closes: BTreeMap<u16, u64>,
    pub refreshes: u64,
    pub refresh_failures: u64,
}

fn bounded(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    if let Some(v) = map.get_mut(key) {
        *v += n;
    } else if map.len() < MAX_VALUES {
        map.insert(key.to_string(), n);
    } else {
        *map.entry(OTHER.to_string()).or_default() += n;
    }
}

impl ConvData {
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
            && self.streams.is_empty()
            && self.app_errors == 0
            && self.close_reasons.is_empty()
            && self.closes.is_empty()
            && self.refreshes == 0
            && self.refresh_failures == 0
    }

    pub fn sample(&mut self, i: usize) -> &mut SampleData {
        if self.samples.len() <= i {
            self.samples.resize_with(i + 1, SampleData::default);
        }
        &mut self.samples[i]
    }

    pub fn stream(&mut self, i: usize) -> &mut StreamData {
        if self.streams.len() <= i {
            self.streams.resize_with(i + 1, StreamData::default);
        }
        &mut self.streams[i]
    }

    pub fn record_latency(&mut self, sample: usize, d: Duration) {
        let us = (d.as_micros() as u64).max(1);
        let _ = self.sample(sample).latency.record(us);
    }

    pub fn record_delivery(&mut self, stream: usize, d: Duration) {
        let us = (d.as_micros() as u64).max(1);
        let _ = self.stream(stream).delivery.record(us);
    }

    pub fn app_error(&mut self, value: Option<&str>) {
        self.app_errors += 1;
        if let Some(v) = value {
            bounded(&mut self.app_errors_by, v, 1);
        }
    }

    pub fn close_reason(&mut self, code: u16, reason: &str) {
        let by_code = self.close_reasons.entry(code).or_default();
        bounded(by_code, reason, 1);
    }

    pub fn add(&mut self, o: &ConvData) {
        for (i, s) in o.samples.iter().enumerate() {
            let me = self.sample(i);
            me.counts.add(&s.counts);
            let _ = me.latency.add(&s.latency);
        }
        for (i, s) in o.streams.iter().enumerate() {
            let me = self.stream(i);
            me.counts.add(&s.counts);
            let _ = me.delivery.add(&s.delivery);
        }
        self.app_errors += o.app_errors;
        for (k, v) in &o.app_errors_by {
            bounded(&mut self.app_errors_by, k, *v);
        }
        for (code, reasons) in &o.close_reasons {
            let by_code = self.close_reasons.entry(*code).or_default();
            for (k, v) in reasons {
                bounded(by_code, k, *v);
            }
        }
        for (code, n) in &o.closes {
            *self.closes.entry(*code).or_default() += n;
        }
        self.refreshes += o.refreshes;
        self.refresh_failures += o.refresh_failures;
    }

    pub fn to_wire(&self) -> WireConv {
        let enc = |h: &Histogram<u64>| {
            if h.is_empty() {
                String::new()
            } else {
                encode_histogram(h)
            }
        };
        WireConv {
            samples: self
                .samples
                .iter()
                .map(|s| (s.counts.clone(), enc(&s.latency)))
                .collect(),
            streams: self
                .streams
                .iter()
                .map(|s| (s.counts.clone(), enc(&s.delivery)))
                .collect(),
            app_errors: self.app_errors,
            app_errors_by: self.app_errors_by.clone(),
            close_reasons: self.close_reasons.clone(),
            closes: self.closes.clone(),
            refreshes: self.refreshes,
            refresh_failures: self.refresh_failures,
        }
    }

    pub fn from_wire(w: &WireConv) -> Result<ConvData, String> {
        let dec = |s: &str| {
            if s.is_empty() {
                Ok(histogram())
            } else {
                decode_histogram(s)
            }
        };
        Ok(ConvData {
            samples: w
                .samples
                .iter()
                .map(|(c, h)| {
                    Ok(SampleData {
                        counts: c.clone(),
                        latency: dec(h)?,
                    })
                })
                .collect::<Result<_, String>>()?,
            streams: w
                .streams
                .iter()
                .map(|(c, h)| {
                    Ok(StreamData {
                        counts: c.clone(),
                        delivery: dec(h)?,
                    })
                })
                .collect::<Result<_, String>>()?,
            app_errors: w.app_errors,
            app_errors_by: w.app_errors_by.clone(),
            close_reasons: w.close_reasons.clone(),
            closes: w.closes.clone(),
            refreshes: w.refreshes,
            refresh_failures: w.refresh_failures,
        })
    }
}

/// [`ConvData`] as a worker process sends it: histograms encoded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WireConv {
    pub samples: Vec<(SampleCounts, String)>,
    pub streams: Vec<(StreamCounts, String)>,
    pub app_errors: u64,
    pub app_errors_by: BTreeMap<String, u64>,
    pub close_reasons: BTreeMap<u16, BTreeMap<String, u64>>,
    #[serde(default)]
    pub closes: BTreeMap<u16, u64>,
    pub refreshes: u64,
    pub refresh_failures: u64,
}

impl WireConv {
    pub fn is_empty(&self) -> bool {
        *self == WireConv::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_exactly_and_survives_the_wire() {
        let mut a = ConvData::default();
        a.sample(2).counts.sent = 3;
        a.record_latency(2, Duration::from_millis(5));
        a.stream(0).counts.lost = 4;
        a.record_delivery(0, Duration::from_millis(1));
        a.app_error(Some("E42"));
        a.close_reason(4000, "bye");
        let back = ConvData::from_wire(
            &serde_json::from_str(&serde_json::to_string(&a.to_wire()).unwrap()).unwrap(),
        )
        .unwrap();
        let mut sum = ConvData::default();
        sum.add(&back);
        sum.add(&a);
        assert_eq!(sum.samples.len(), 3);
        assert_eq!(sum.samples[2].counts.sent, 6);
        assert_eq!(sum.samples[2].latency.len(), 2);
        assert_eq!(sum.streams[0].counts.lost, 8);
        assert_eq!(sum.app_errors_by["E42"], 2);
        assert_eq!(sum.close_reasons[&4000]["bye"], 2);
    }

    #[test]
    fn distinct_values_are_bounded() {
        let mut a = ConvData::default();
        for i in 0..MAX_VALUES + 10 {
            a.app_error(Some(&format!("id-{i}")));
        }
        assert_eq!(a.app_errors_by.len(), MAX_VALUES + 1);
        assert_eq!(a.app_errors_by[OTHER], 10);
        assert_eq!(a.app_errors, (MAX_VALUES + 10) as u64);
    }
}
