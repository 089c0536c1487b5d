//! What a scrape shows: a run's snapshot, or a server's or proxy's counters, as metric
//! families (the names are the ones the README lists, under the `wsstorm_` prefix the registry
//! adds).

use std::fmt;
use std::sync::Arc;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::buckets::buckets;
use crate::metrics::{ConnectError, Latency, LatencyTable, Snapshot};

/// A run's figures as of one snapshot.
#[derive(Debug)]
pub struct RunFigures {
    pub snapshot: Arc<Snapshot>,
    /// Clients in the run (the plan's, which no snapshot holds).
    pub clients: u64,
}

impl Collector for RunFigures {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &self.snapshot;
        let t = &s.totals;
        let e = &mut e;
        counter(
            e,
            "connect_attempts",
            "Connection attempts: each client's first and its retries.",
            t.attempts,
        )?;
        counter(
            e,
            "retries",
            "Attempts that were not a client's first.",
            t.retries,
        )?;
        counter(
            e,
            "connections_opened",
            "WebSocket connections opened (101 received).",
            t.opened,
        )?;
        counter(
            e,
            "connections_closed",
            "Connections that ended, however they ended: close_codes, client_closes and client_close_codes add up to it.",
            t.closed,
        )?;
        counter_by(
            e,
            "close_codes",
            "Connections the server or the network closed, by close code (1006: without a close frame).",
            "code",
            t.close_codes.iter().map(|(c, n)| (c.to_string(), *n)),
        )?;
        counter(
            e,
            "client_closes",
            "Connections the clients closed themselves: end of run, a dead connection, a conversation's close.",
            t.client_closes,
        )?;
        counter_by(
            e,
            "client_close_codes",
            "Closes the clients sent because the server broke the protocol, by close code.",
            "code",
            t.client_close_codes
                .iter()
                .map(|(c, n)| (c.to_string(), *n)),
        )?;
        counter_by(
            e,
            "connect_errors",
            "Attempts that failed before an HTTP answer to the upgrade, by kind.",
            "kind",
            ConnectError::ALL
                .iter()
                .map(|k| (k.name().to_string(), t.connect_error(*k))),
        )?;
        counter_by(
            e,
            "handshake_status",
            "Upgrades answered with a status other than 101, by status.",
            "status",
            t.handshake_status.iter().map(|(c, n)| (c.to_string(), *n)),
        )?;
        counter(e, "messages_sent", "Messages the clients sent.", t.sent)?;
        counter(
            e,
            "messages_received",
            "Messages the clients received.",
            t.received,
        )?;
        counter(
            e,
            "gave_up",
            "Clients that stopped reconnecting (a stop decision, or max_attempts reached).",
            t.gave_up,
        )?;
        counter(
            e,
            "dead_detected",
            "Connections the clients' heartbeat found dead.",
            t.dead_detected,
        )?;
        gauge(e, "clients", None, "Clients in the run.", self.clients)?;
        gauge(e, "connected", None, "Connections open now.", t.connected())?;
        gauge(
            e,
            "in_backoff",
            None,
            "Clients waiting out a backoff delay now.",
            t.in_backoff(),
        )?;
        gauge(
            e,
            "peak_connected",
            None,
            "Most connections open at once so far.",
            s.peak_connected,
        )?;
        gauge(
            e,
            "elapsed",
            Some(&Unit::Seconds),
            "Time since the run started.",
            s.elapsed.as_secs_f64(),
        )?;
        gauge(
            e,
            "schedule_lag_p99",
            Some(&Unit::Seconds),
            "How late the generator started attempts and sends against its schedule over the last second, 99th percentile: high means the generator, not the target, was the bottleneck.",
            s.lag_recent.p99 as f64 / 1e6,
        )?;
        gauge(
            e,
            "run_finished",
            None,
            "1 once the run is over and every close counted: the figures are final and equal the totals of results.json.",
            u64::from(s.finished),
        )?;
        for kind in LatencyTable::KINDS {
            let h = s.hists.as_ref().map(|h| h.get(kind));
            histogram(e, kind.name(), latency_help(kind), h)?;
        }
        Ok(())
    }
}

fn latency_help(l: Latency) -> &'static str {
    match l {
        Latency::Connect => "TCP connect time of the connections opened.",
        Latency::Tls => "TLS handshake time (wss:// only).",
        Latency::Handshake => "Upgrade request sent to 101 received.",
        Latency::Rtt => "Echo round trip, from the intended send time.",
        Latency::Reconnect => "Connection lost to the client's next connection open.",
        Latency::DeadDetect => {
            "Last frame received to the heartbeat declaring the connection dead."
        }
        Latency::BackoffDelay => "The delays the backoff chose before retries.",
        Latency::ScheduleLag | Latency::RetryLag => "How late the generator was.",
    }
}

/// A server's or a proxy's counters, read from the summary it writes into results.json: every
/// number there is a counter but the few `gauges`, every map a counter by close code.
#[derive(Debug)]
pub struct ServiceFigures {
    /// `server` or `proxy`: the names' second part, and results.json's key.
    pub kind: &'static str,
    pub summary: serde_json::Value,
    pub gauges: &'static [&'static str],
}

impl Collector for ServiceFigures {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let Some(fields) = self.summary.as_object() else {
            return Ok(());
        };
        for (field, value) in fields {
            let name = format!("{}_{field}", self.kind);
            let help = service_help(self.kind, field);
            if let Some(n) = value.as_u64() {
                if self.gauges.contains(&field.as_str()) {
                    gauge(&mut e, &name, None, &help, n)?;
                } else {
                    counter(&mut e, &name, &help, n)?;
                }
            } else if let Some(by_code) = value.as_object() {
                counter_by(
                    &mut e,
                    &name,
                    &help,
                    "code",
                    by_code
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))),
                )?;
            }
        }
        Ok(())
    }
}

fn service_help(kind: &str, field: &str) -> String {
    let known = match (kind, field) {
        ("server", "accepted") | ("proxy", "accepted") => "TCP connections accepted.",
        ("server", "upgraded") => "WebSocket upgrades completed (101 sent).",
        ("server", "rejected_503") => {
            "Upgrades answered 503: accept-rate capacity, or a full handshake queue."
        }
        ("server", "rejected_404") => "Upgrades to another path, answered 404.",
        ("server", "rejected_401") => "Upgrades without a valid token, answered 401.",
        ("server", "failed_handshakes") => "Upgrades that failed for other reasons.",
        ("server", "handshakes_wasted") => {
            "Handshakes the server paid service time for whose client had already left."
        }
        ("server", "handshake_queue_peak") => "Most handshakes waiting at once.",
        ("server", "open") | ("proxy", "open") => "Connections open now.",
        ("server", "messages_echoed") => "Messages echoed back.",
        ("server", "closes_sent") => "Close frames the server sent, by close code.",
        ("server", "drained") => "Connections closed by a drain, with its close code.",
        ("server", "node_restart_closes") => {
            "Connections closed because their node restarted (rolling restart)."
        }
        ("server", "refused_max_connections") => "Upgrades refused at max_connections.",
        ("server", "refused_per_ip") => "Upgrades refused at max_connections_per_ip.",
        ("server", "lifetime_closes") => "Connections closed at max_lifetime.",
        ("server", "rejected_403") => "Upgrades from an Origin not allowed, answered 403.",
        ("proxy", "upstream_errors") => "Upstream connects that failed.",
        ("proxy", "cut") => "Connections closed by a cut fault.",
        ("proxy", "idle_timeouts") => "Connections closed by an idle timeout.",
        ("proxy", "bytes_upstream") => "Bytes forwarded from clients to the upstream.",
        ("proxy", "bytes_downstream") => "Bytes forwarded from the upstream to clients.",
        _ => "",
    };
    if known.is_empty() {
        format!("The {kind}'s {field} figure, as results.json's {kind}.{field}.")
    } else {
        known.to_string()
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

/// A counter with one label, one series per value.
fn counter_by(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (String, u64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        let labels = [(label, value.as_str())];
        ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    unit: Option<&Unit>,
    help: &str,
    v: N,
) -> fmt::Result {
    let m = e.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

/// A latency histogram in seconds; empty when there is none yet.
fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: Option<&Histogram<u64>>,
) -> fmt::Result {
    let b = match h {
        Some(h) => buckets(h),
        None => buckets(&Histogram::new(3).expect("3 significant figures is valid")),
    };
    let mut m = e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(b.sum_seconds, b.count, &b.per_bucket(), None)
}
