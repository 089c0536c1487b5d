//! The `conversation` section of results.json: each named step, request and reply rule with
//! its counts and latency, each stream with its losses and delivery latency, application
//! errors by value, token refreshes. Samples of the same name in several groups are added
//! (counts summed, histograms merged exactly); a group's own figures are in its entry.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::metrics::LatencySummary;
use crate::metrics::conversation::{ConvData, SampleCounts, StreamCounts};
use crate::metrics::summarize;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationResults {
    /// By name: steps that wait for a reply, periodic requests, reply rules.
    pub steps: BTreeMap<String, StepResults>,
    pub streams: BTreeMap<String, StreamResults>,
    pub app_errors: AppErrorResults,
    /// Connections the conversation closed itself (a `close` step, an expect that failed with
    /// `on_timeout: close|reconnect`), by the code it sent. Not losses: the storm figures do
    /// not count them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub closes: BTreeMap<String, u64>,
    /// Token refreshes made and failed (`auth.refresh`).
    #[serde(default)]
    pub token_refreshes: u64,
    #[serde(default)]
    pub token_refresh_failures: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepResults {
    #[serde(flatten)]
    pub counts: SampleCounts,
    /// Send → the matching reply (µs), for steps and requests that wait for one.
    pub latency_us: LatencySummary,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamResults {
    #[serde(flatten)]
    pub counts: StreamCounts,
    /// Publish time (the message's own field) → received, µs. Needs synchronized clocks.
    pub delivery_latency_us: LatencySummary,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppErrorResults {
    pub count: u64,
    /// Application errors per message received, in percent.
    pub rate: f64,
    /// By the value of the `by` field (at most 64 values; the rest under `(other)`).
    pub by_value: BTreeMap<String, u64>,
}

/// The names the plan gave a group's samples and streams, by index.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub samples: Vec<String>,
    pub streams: Vec<String>,
}

/// Accumulates [`ConvData`] of several groups by name.
#[derive(Default)]
pub struct Merge {
    steps: BTreeMap<String, (SampleCounts, Histogram<u64>)>,
    streams: BTreeMap<String, (StreamCounts, Histogram<u64>)>,
    app: AppErrorResults,
    closes: BTreeMap<String, u64>,
    refreshes: u64,
    refresh_failures: u64,
    any: bool,
}

fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is valid")
}

impl Merge {
    pub fn add(&mut self, d: &ConvData, names: &Names) {
        // A group without a conversation may still have seen close reasons (kept in the
        // same data): those go to `totals.close_reasons`, not here. Token refreshes are a
        // conversation's figures even without one (`auth.refresh`).
        let refreshed = d.refreshes > 0 || d.refresh_failures > 0;
        if names.samples.is_empty() && names.streams.is_empty() && !refreshed {
            return;
        }
        self.any = true;
        for (code, n) in &d.closes {
            *self.closes.entry(code.to_string()).or_default() += n;
        }
        for (i, name) in names.samples.iter().enumerate() {
            let e = self
                .steps
                .entry(name.clone())
                .or_insert_with(|| (SampleCounts::default(), hist()));
            if let Some(s) = d.samples.get(i) {
                e.0.add(&s.counts);
                let _ = e.1.add(&s.latency);
            }
        }
        for (i, name) in names.streams.iter().enumerate() {
            let e = self
                .streams
                .entry(name.clone())
                .or_insert_with(|| (StreamCounts::default(), hist()));
            if let Some(s) = d.streams.get(i) {
                e.0.add(&s.counts);
                let _ = e.1.add(&s.delivery);
            }
        }
        self.app.count += d.app_errors;
        for (k, v) in &d.app_errors_by {
            *self.app.by_value.entry(k.clone()).or_default() += v;
        }
        self.refreshes += d.refreshes;
        self.refresh_failures += d.refresh_failures;
    }

    /// The section, or `None` when no group held a conversation or refreshed a token.
    pub fn finish(self, received: u64) -> Option<ConversationResults> {
        if !self.any {
            return None;
        }
        let mut app = self.app;
        app.rate = if received > 0 {
            (app.count as f64 * 100.0 / received as f64 * 1000.0).round() / 1000.0
        } else {
            0.0
        };
        Some(ConversationResults {
            steps: self
                .steps
                .into_iter()
                .map(|(k, (counts, h))| {
                    (
                        k,
                        StepResults {
                            counts,
                            latency_us: summarize(&h, true),
                        },
                    )
                })
                .collect(),
            streams: self
                .streams
                .into_iter()
                .map(|(k, (counts, h))| {
                    (
                        k,
                        StreamResults {
                            counts,
                            delivery_latency_us: summarize(&h, true),
                        },
                    )
                })
                .collect(),
            app_errors: app,
            closes: self.closes,
            token_refreshes: self.refreshes,
            token_refresh_failures: self.refresh_failures,
        })
    }
}

/// Close reasons by code, as results.json writes them: the most frequent first is up to the
/// reader; here they are by code, then reason.
pub fn close_reasons(d: &ConvData) -> BTreeMap<String, BTreeMap<String, u64>> {
    d.close_reasons
        .iter()
        .map(|(code, reasons)| (code.to_string(), reasons.clone()))
        .collect()
}
