//! Live figures for Prometheus: `--metrics-listen ADDR` serves `GET /metrics` in the
//! OpenMetrics text format (or the Prometheus text format 0.0.4, for a scraper that does not
//! ask for OpenMetrics), so Grafana can show a swarm next to the server it hits.
//!
//! A reader of what the run already publishes, like the dashboard: a run's figures come from
//! the snapshot the collector puts on its watch channel every tick (the clients record into
//! their shards as before; a scrape never touches them), a server's or proxy's from the summary
//! its atomics give at any moment. The run's last snapshot, taken once every close is counted,
//! stays served until the process exits, with `wsstorm_run_finished` 1: its counters are the
//! totals of results.json. The encoding is `prometheus-client`'s, the official Rust client's;
//! the HTTP side is [`crate::net::metrics_http`].

mod buckets;
mod figures;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use buckets::{BOUNDS_US, Buckets, buckets};
pub use figures::{RunFigures, ServiceFigures};

use crate::metrics::Snapshot;
use crate::net::metrics_http::{MetricsHttp, Page, Render};
use crate::proxy::ProxySummary;
use crate::server::ServerSummary;

/// Every metric's name starts with this and `_`.
pub const PREFIX: &str = "wsstorm";

/// The labels every series carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    /// `run`: the profile's name.
    pub run: Option<String>,
    /// `shard`: which part of a run split over machines this process is (e.g. `3/20`).
    pub shard: Option<String>,
}

impl Labels {
    fn pairs(&self) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
        let mut v = Vec::new();
        if let Some(s) = &self.shard {
            v.push((Cow::Borrowed("shard"), Cow::Owned(s.clone())));
        }
        if let Some(r) = &self.run {
            v.push((Cow::Borrowed("run"), Cow::Owned(r.clone())));
        }
        v
    }
}

/// The text format a scrape is answered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (what Prometheus asks for first).
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    Prometheus,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it (with a weight above 0), else the
    /// Prometheus text format, which every scraper (and curl) reads.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let open_metrics = accept.unwrap_or("").split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !zero
        });
        if open_metrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// `figures` as text, every name prefixed with `wsstorm_` and every series carrying `labels`.
pub fn encode(
    figures: Box<dyn Collector>,
    labels: &Labels,
    format: Format,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix_and_labels(PREFIX, labels.pairs().into_iter());
    registry.register_collector(figures);
    let mut out = String::new();
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?
        }
    }
    Ok(out)
}

/// The summary fields of the embedded server that are gauges; the rest are counters.
const SERVER_GAUGES: &[&str] = &["open", "handshake_queue_peak"];
/// The proxy's.
const PROXY_GAUGES: &[&str] = &["open"];

/// What the endpoint shows.
enum Source {
    /// Nothing yet (a scrape gets an empty exposition).
    Nothing,
    /// A run's snapshots: the latest one, or the last one once the run is over.
    Run {
        snapshots: watch::Receiver<Arc<Snapshot>>,
        clients: u64,
    },
    Server(Box<dyn Fn() -> ServerSummary + Send>),
    Proxy(Box<dyn Fn() -> crate::proxy::ProxySummary + Send>),
}

/// A `/metrics` endpoint, serving until dropped.
pub struct Exporter {
    http: MetricsHttp,
    source: Arc<Mutex<Source>>,
}

impl Exporter {
    /// Listen on `addr` now (an error when it cannot: the port taken, say), showing nothing
    /// until told what to show.
    pub fn start(addr: SocketAddr, labels: Labels) -> std::io::Result<Exporter> {
        let source = Arc::new(Mutex::new(Source::Nothing));
        let shown = source.clone();
        let render: Render = Arc::new(move |accept| {
            let format = Format::from_accept(accept);
            let figures: Box<dyn Collector> = match &*lock(&shown) {
                Source::Nothing => Box::new(Empty),
                Source::Run { snapshots, clients } => Box::new(RunFigures {
                    snapshot: snapshots.borrow().clone(),
                    clients: *clients,
                }),
                Source::Server(summary) => Box::new(server_figures(&summary())),
                Source::Proxy(summary) => Box::new(proxy_figures(&summary())),
            };
            let body = encode(figures, &labels, format)
                .map_err(|_| "the figures could not be encoded".to_string())?;
            Ok(Page {
                content_type: format.content_type().to_string(),
                body,
            })
        });
        Ok(Exporter {
            http: MetricsHttp::start(addr, render)?,
            source,
        })
    }

    /// Show the run whose snapshots these are, of `clients` clients; once its last snapshot is
    /// published (and the sender gone) that one stays.
    pub fn follow_run(&self, snapshots: watch::Receiver<Arc<Snapshot>>, clients: u64) {
        *lock(&self.source) = Source::Run { snapshots, clients };
    }

    /// Show a server's counters, read at each scrape.
    pub fn show_server(&self, summary: impl Fn() -> ServerSummary + Send + 'static) {
        *lock(&self.source) = Source::Server(Box::new(summary));
    }

    /// Show a proxy's counters, read at each scrape.
    pub fn show_proxy(&self, summary: impl Fn() -> ProxySummary + Send + 'static) {
        *lock(&self.source) = Source::Proxy(Box::new(summary));
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }
}

/// The embedded server's counters as metric families (`wsstorm_server_…`).
pub fn server_figures(s: &ServerSummary) -> ServiceFigures {
    ServiceFigures {
        kind: "server",
        summary: serde_json::to_value(s).unwrap_or_default(),
        gauges: SERVER_GAUGES,
    }
}

/// The fault proxy's counters as metric families (`wsstorm_proxy_…`).
pub fn proxy_figures(s: &ProxySummary) -> ServiceFigures {
    ServiceFigures {
        kind: "proxy",
        summary: serde_json::to_value(s).unwrap_or_default(),
        gauges: PROXY_GAUGES,
    }
}

#[derive(Debug)]
struct Empty;

impl Collector for Empty {
    fn encode(
        &self,
        _: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
