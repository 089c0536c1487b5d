//! Recording what clients experience, without a lock every client shares.
//!
//! Clients record into one of N shards picked by client id; a shard is a small mutex that only
//! the clients of that shard and the collector touch. Every tick ([`TICK`]) the [`Collector`]
//! swaps each shard's interval data out, merges it into run totals and a timeline point, and
//! publishes an `Arc<Snapshot>` on a watch channel — so a slow reader (dashboard, progress
//! lines) can never hold up a client. Histograms are HdrHistograms: interval histograms merge
//! exactly into totals, and totals serialize into results so several runs can be merged later.

mod collector;
pub mod conversation;
pub mod events;
pub mod generator;
pub mod settle;
pub mod storm;
mod summary;

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub use collector::{Collected, Collector, GroupSeries, GroupTotals, Point, Snapshot};
pub use summary::{LatencySummary, decode_histogram, encode_histogram, summarize};

/// Length of one timeline interval.
pub const TICK: Duration = Duration::from_millis(100);

/// Why an attempt failed before the WebSocket handshake got an HTTP answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectError {
    /// Nothing listening (RST to our SYN).
    Refused,
    /// TCP connect, TLS or upgrade took longer than the group's timeout.
    Timeout,
    /// The server or network reset the connection during connect or handshake.
    Reset,
    /// No local address/port left (EADDRNOTAVAIL): the generator ran out of ephemeral ports.
    AddrUnavailable,
    Dns,
    /// A TLS failure other than the ones below.
    Tls,
    /// The server's certificate has expired (or is not valid yet).
    TlsExpired,
    /// The server's certificate is signed by no CA the client trusts (self-signed, say).
    TlsUnknownIssuer,
    /// The server's certificate is for another host name.
    TlsWrongHost,
    /// The server does not speak TLS (wss:// to a plain server) or no version or cipher both
    /// sides know.
    TlsNotTls,
    /// The generator hit its open-file limit (EMFILE/ENFILE).
    FdLimit,
    Other,
    /// The run ended, or the client left, while the attempt was still in progress.
    Cancelled,
    /// The server closed the connection before a complete answer to the upgrade.
    ClosedInHandshake,
    /// What came back to the upgrade request was not HTTP.
    NotHttp,
    /// A 101 answer without a valid upgrade: a wrong Sec-WebSocket-Accept, no Upgrade or
    /// Connection header, or a subprotocol the client did not offer.
    BadUpgrade,
}

impl ConnectError {
    pub const ALL: [ConnectError; 16] = [
        ConnectError::Refused,
        ConnectError::Timeout,
        ConnectError::Reset,
        ConnectError::AddrUnavailable,
        ConnectError::Dns,
        ConnectError::Tls,
        ConnectError::TlsExpired,
        ConnectError::TlsUnknownIssuer,
        ConnectError::TlsWrongHost,
        ConnectError::TlsNotTls,
        ConnectError::FdLimit,
        ConnectError::Other,
        ConnectError::Cancelled,
        ConnectError::ClosedInHandshake,
        ConnectError::NotHttp,
        ConnectError::BadUpgrade,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The kind a name ([`Self::name`]) stands for.
    pub fn from_name(name: &str) -> Option<ConnectError> {
        ConnectError::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            ConnectError::Refused => "refused",
            ConnectError::Timeout => "timeout",
            ConnectError::Reset => "reset",
            ConnectError::AddrUnavailable => "addr_unavailable",
            ConnectError::Dns => "dns",
            ConnectError::Tls => "tls",
            ConnectError::TlsExpired => "tls_expired",
            ConnectError::TlsUnknownIssuer => "tls_unknown_issuer",
            ConnectError::TlsWrongHost => "tls_wrong_host",
            ConnectError::TlsNotTls => "tls_not_tls",
            ConnectError::FdLimit => "fd_limit",
            ConnectError::Other => "other",
            ConnectError::Cancelled => "cancelled",
            ConnectError::ClosedInHandshake => "closed_in_handshake",
            ConnectError::NotHttp => "not_http",
            ConnectError::BadUpgrade => "bad_upgrade",
        }
    }

    /// The TLS failures, each its own cause; results.json counts them together as `tls` and
    /// apart in `tls_causes`.
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            ConnectError::Tls
                | ConnectError::TlsExpired
                | ConnectError::TlsUnknownIssuer
                | ConnectError::TlsWrongHost
                | ConnectError::TlsNotTls
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The latency histograms, all in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// TCP connect.
    Connect,
    /// TLS handshake (wss:// only).
    Tls,
    /// Upgrade request sent → 101 received.
    Handshake,
    /// Echo round trip, measured from the intended send time.
    Rtt,
    /// Connection lost → next connection open.
    Reconnect,
    /// Last frame received → heartbeat declared the connection dead.
    DeadDetect,
    /// Generator health: how late an attempt or a send started against its schedule.
    ScheduleLag,
    /// How late each retry's connect started: for a herd told to retry at one instant, the
    /// spread of this is the generator's storm precision.
    RetryLag,
    /// The delay the backoff chose before each retry (Retry-After, budget and alignment
    /// included): what a strategy actually did.
    BackoffDelay,
}

impl Latency {
    pub const ALL: [Latency; 9] = [
        Latency::Connect,
        Latency::Tls,
        Latency::Handshake,
        Latency::Rtt,
        Latency::Reconnect,
        Latency::DeadDetect,
        Latency::ScheduleLag,
        Latency::RetryLag,
        Latency::BackoffDelay,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            Latency::Connect => "connect",
            Latency::Tls => "tls",
            Latency::Handshake => "handshake",
            Latency::Rtt => "rtt",
            Latency::Reconnect => "reconnect",
            Latency::DeadDetect => "dead_detect",
            Latency::ScheduleLag => "schedule_lag",
            Latency::RetryLag => "retry_lag",
            Latency::BackoffDelay => "backoff_delay",
        }
    }
}

/// Percentile summaries of the latencies a user reads (the generator's own lags are kept
/// apart): the `latency_us` of results.json, and what a snapshot shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyTable {
    pub connect: LatencySummary,
    pub tls: LatencySummary,
    pub handshake: LatencySummary,
    pub rtt: LatencySummary,
    pub reconnect: LatencySummary,
    pub dead_detect: LatencySummary,
    /// Not a latency but a time, summarized alike: the delays the backoff chose.
    #[serde(default)]
    pub backoff_delay: LatencySummary,
}

impl LatencyTable {
    /// The histograms this table holds, in its order (the generator's lags are elsewhere).
    pub const KINDS: [Latency; 7] = [
        Latency::Connect,
        Latency::Tls,
        Latency::Handshake,
        Latency::Rtt,
        Latency::Reconnect,
        Latency::DeadDetect,
        Latency::BackoffDelay,
    ];

    /// Every latency of `h` summarized, with the whole histogram kept in each summary.
    pub fn from_hists(h: &Hists) -> LatencyTable {
        LatencyTable::from_fn(|l| summarize(h.get(l), true))
    }

    pub fn from_fn(mut f: impl FnMut(Latency) -> LatencySummary) -> LatencyTable {
        LatencyTable {
            connect: f(Latency::Connect),
            tls: f(Latency::Tls),
            handshake: f(Latency::Handshake),
            rtt: f(Latency::Rtt),
            reconnect: f(Latency::Reconnect),
            dead_detect: f(Latency::DeadDetect),
            backoff_delay: f(Latency::BackoffDelay),
        }
    }

    /// One of [`Self::KINDS`]; `None` for a histogram the table does not hold.
    pub fn get(&self, l: Latency) -> Option<&LatencySummary> {
        match l {
            Latency::Connect => Some(&self.connect),
            Latency::Tls => Some(&self.tls),
            Latency::Handshake => Some(&self.handshake),
            Latency::Rtt => Some(&self.rtt),
            Latency::Reconnect => Some(&self.reconnect),
            Latency::DeadDetect => Some(&self.dead_detect),
            Latency::BackoffDelay => Some(&self.backoff_delay),
            Latency::ScheduleLag | Latency::RetryLag => None,
        }
    }
}

/// How a connection that had opened ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The server (or something on the way) ended it: close frame code, or 1006 without one.
    ByPeer(u16),
    /// The client closed it: end of run, or a policy.
    ByClient,
    /// The heartbeat found it dead; the client aborted it.
    Dead { silent_for: Duration },
    /// The server broke the protocol; the client closed with this code (1002, 1007, 1009).
    Violation(u16),
    /// The conversation closed it with this code (a `close` step, an expect that timed out).
    Policy(u16),
}

/// The standard name of a close code (RFC 6455 §7.4.1 and the IANA registry).
pub fn close_code_name(code: u16) -> &'static str {
    match code {
        1000 => "normal closure",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1005 => "no status received",
        1006 => "abnormal closure",
        1007 => "invalid payload data",
        1008 => "policy violation",
        1009 => "message too big",
        1010 => "mandatory extension",
        1011 => "internal error",
        1012 => "service restart",
        1013 => "try again later",
        1014 => "bad gateway",
        1015 => "TLS handshake",
        3000..=3999 => "registered",
        4000..=4999 => "application",
        _ => "unknown",
    }
}

/// Event counts. Cumulative in totals, per interval in shards.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub attempts: u64,
    /// Attempts that were not a client's first.
    pub retries: u64,
    /// Retries after a failed attempt: every retry wave after a lost client's first.
    #[serde(default)]
    pub repeat_retries: u64,
    pub opened: u64,
    pub closed: u64,
    pub client_closes: u64,
    pub gave_up: u64,
    pub dead_detected: u64,
    /// Connections lost sooner than their group's `flap_below` after they opened.
    #[serde(default)]
    pub flaps: u64,
    /// Subscribed connections that delivered no stream message for `stall_after`.
    #[serde(default)]
    pub stalled: u64,
    /// Connections the client dropped itself (`churn`: a phone losing signal).
    #[serde(default)]
    pub churn_drops: u64,
    /// Clients that left: a session lifetime ended, or a stage's ramp-down.
    #[serde(default)]
    pub sessions_ended: u64,
    /// Clients that arrived: each client's start, each stage visit, each replacement.
    #[serde(default)]
    pub clients_arrived: u64,
    /// Connections given up on a network switch (reset or abandoned).
    #[serde(default)]
    pub network_switches: u64,
    /// Connections a buggy client left open when it opened another (`duplicate_connections`).
    #[serde(default)]
    pub duplicate_connections: u64,
    /// Messages those left-open connections received: the application's second copy.
    #[serde(default)]
    pub duplicate_received: u64,
    pub sent: u64,
    pub received: u64,
    /// Sequenced-stream messages never received.
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub backoff_started: u64,
    pub backoff_ended: u64,
    pub connect_errors: [u64; ConnectError::COUNT],
    pub handshake_status: BTreeMap<u16, u64>,
    pub close_codes: BTreeMap<u16, u64>,
    /// Closes the client sent because the server broke the protocol, by code.
    #[serde(default)]
    pub client_close_codes: BTreeMap<u16, u64>,
    /// What permessage-deflate did, counted when each compressed connection closes.
    #[serde(default)]
    pub compression: CompressionCounters,
}

/// Connections that negotiated permessage-deflate and the payload bytes of their data
/// messages, on the wire and as the client wrote or read them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompressionCounters {
    pub connections: u64,
    pub bytes_in_wire: u64,
    pub bytes_in_inflated: u64,
    pub bytes_out_wire: u64,
    pub bytes_out_deflated: u64,
}

impl CompressionCounters {
    pub fn add(&mut self, o: &CompressionCounters) {
        self.connections += o.connections;
        self.bytes_in_wire += o.bytes_in_wire;
        self.bytes_in_inflated += o.bytes_in_inflated;
        self.bytes_out_wire += o.bytes_out_wire;
        self.bytes_out_deflated += o.bytes_out_deflated;
    }
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.compression.add(&o.compression);
        self.attempts += o.attempts;
        self.retries += o.retries;
        self.repeat_retries += o.repeat_retries;
        self.opened += o.opened;
        self.closed += o.closed;
        self.client_closes += o.client_closes;
        self.gave_up += o.gave_up;
        self.dead_detected += o.dead_detected;
        self.flaps += o.flaps;
        self.stalled += o.stalled;
        self.churn_drops += o.churn_drops;
        self.sessions_ended += o.sessions_ended;
        self.clients_arrived += o.clients_arrived;
        self.network_switches += o.network_switches;
        self.duplicate_connections += o.duplicate_connections;
        self.duplicate_received += o.duplicate_received;
        self.sent += o.sent;
        self.received += o.received;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.backoff_started += o.backoff_started;
        self.backoff_ended += o.backoff_ended;
        for (a, b) in self.connect_errors.iter_mut().zip(o.connect_errors) {
            *a += b;
        }
        for (k, v) in &o.handshake_status {
            *self.handshake_status.entry(*k).or_default() += v;
        }
        for (k, v) in &o.close_codes {
            *self.close_codes.entry(*k).or_default() += v;
        }
        for (k, v) in &o.client_close_codes {
            *self.client_close_codes.entry(*k).or_default() += v;
        }
    }

    pub fn connect_error(&self, e: ConnectError) -> u64 {
        self.connect_errors[e.index()]
    }

    /// Failed attempts: connect errors plus non-101 handshake answers.
    pub fn failed_attempts(&self) -> u64 {
        self.connect_errors.iter().sum::<u64>() + self.handshake_status.values().sum::<u64>()
    }

    /// Connections open now (opened minus closed).
    pub fn connected(&self) -> u64 {
        self.opened.saturating_sub(self.closed)
    }

    pub fn in_backoff(&self) -> u64 {
        self.backoff_started.saturating_sub(self.backoff_ended)
    }
}

/// One histogram per [`Latency`], plus how many attempts each client made over the run.
/// Created small and auto-resizing, so an idle shard costs little; 3 significant figures.
#[derive(Clone, Debug)]
pub struct Hists {
    latency: [Histogram<u64>; Latency::COUNT],
    /// Attempts per client, recorded once when the client's task ends (a count, not a time).
    pub attempts_per_client: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is valid")
}

impl Default for Hists {
    fn default() -> Self {
        Hists {
            latency: std::array::from_fn(|_| histogram()),
            attempts_per_client: histogram(),
        }
    }
}

impl Hists {
    pub fn get(&self, l: Latency) -> &Histogram<u64> {
        &self.latency[l as usize]
    }

    fn record(&mut self, l: Latency, d: Duration) {
        // Zero is not representable in a histogram with lowest value 1; a sub-µs sample is 1µs.
        let us = (d.as_micros() as u64).max(1);
        let _ = self.latency[l as usize].record(us);
    }

    pub fn add(&mut self, o: &Hists) {
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            let _ = a.add(b);
        }
        let _ = self.attempts_per_client.add(&o.attempts_per_client);
    }

    /// Empty again. A histogram with no sample is all zeros already and is left alone: each
    /// is at least 16 KiB of counts, and zeroing every one of every shard ten times a second
    /// was half of what an idle worker process did.
    pub fn reset(&mut self) {
        for h in self
            .latency
            .iter_mut()
            .chain(std::iter::once(&mut self.attempts_per_client))
        {
            if !h.is_empty() {
                h.reset();
            }
        }
    }
}

/// What one group recorded: counts and distributions.
#[derive(Clone, Debug, Default)]
pub struct GroupData {
    pub counters: Counters,
    pub hists: Hists,
    /// What conversations recorded (empty without one).
    pub conv: conversation::ConvData,
}

impl GroupData {
    /// Empty again, keeping the histograms' allocations: a tick's scratch, reused.
    pub fn clear(&mut self) {
        self.counters = Counters::default();
        self.hists.reset();
        self.conv = Default::default();
    }

    pub fn add(&mut self, o: &GroupData) {
        self.counters.add(&o.counters);
        self.hists.add(&o.hists);
        if !o.conv.is_empty() {
            self.conv.add(&o.conv);
        }
    }

    /// For the pipe from a worker process: counters as they are, histograms encoded (empty
    /// ones as empty strings, which is most of them in most intervals).
    pub fn to_wire(&self) -> WireGroup {
        let enc = |h: &Histogram<u64>| {
            if h.is_empty() {
                String::new()
            } else {
                encode_histogram(h)
            }
        };
        WireGroup {
            counters: self.counters.clone(),
            hists: self
                .hists
                .latency
                .iter()
                .chain(std::iter::once(&self.hists.attempts_per_client))
                .map(enc)
                .collect(),
            conv: self.conv.to_wire(),
        }
    }

    pub fn from_wire(w: &WireGroup) -> Result<GroupData, String> {
        let mut hists = Hists::default();
        let slots = hists
            .latency
            .iter_mut()
            .chain(std::iter::once(&mut hists.attempts_per_client));
        for (slot, enc) in slots.zip(&w.hists) {
            if !enc.is_empty() {
                *slot = decode_histogram(enc)?;
            }
        }
        Ok(GroupData {
            counters: w.counters.clone(),
            hists,
            conv: conversation::ConvData::from_wire(&w.conv)?,
        })
    }
}

/// One group's interval data as a worker process sends it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WireGroup {
    pub counters: Counters,
    /// Encoded histograms in [`Latency`] order, then attempts per client; "" when empty.
    pub hists: Vec<String>,
    #[serde(default, skip_serializing_if = "conversation::WireConv::is_empty")]
    pub conv: conversation::WireConv,
}

struct ShardData {
    groups: Vec<GroupData>,
}

/// Padded so two shards never share a cache line.
#[repr(align(128))]
struct Shard(Mutex<ShardData>);

/// Who records: a client and its group (figures are kept per group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Who {
    pub client: u32,
    pub group: u16,
}

/// Timings of one successful attempt.
#[derive(Clone, Copy, Debug)]
pub struct OpenTimings {
    pub connect: Duration,
    pub tls: Option<Duration>,
    pub handshake: Duration,
    /// Time since the previous connection of this client was lost, if it had one.
    pub reconnect: Option<Duration>,
}

pub struct Metrics {
    shards: Box<[Shard]>,
    groups: usize,
    /// The latest generator sample of each worker process, pushed by the coordinator's reader
    /// of that worker (once a second each, far from the hot path).
    workers: Mutex<Vec<Option<generator::GeneratorSample>>>,
    /// What went wrong around the run (a fault not applied, a worker that died), for the
    /// dashboard, the summary and results.json: printed to stderr it would garble the
    /// dashboard or vanish behind it. Rare, so one lock is fine.
    warnings: Mutex<Vec<String>>,
    /// One error text per connect-error kind, the first seen, for results.json. `have` says
    /// which kinds have one without taking the lock, so a storm of refusals pays one load.
    examples: Mutex<BTreeMap<&'static str, String>>,
    have_example: [std::sync::atomic::AtomicBool; ConnectError::COUNT],
    /// The per-connection event log, when the run keeps one: set once before clients start.
    events: std::sync::OnceLock<events::EventLog>,
}

impl Metrics {
    /// Metrics for a swarm of `groups` groups.
    pub fn new(groups: usize) -> Metrics {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .saturating_mul(4)
            .next_power_of_two()
            .max(8);
        let groups = groups.max(1);
        Metrics {
            shards: (0..n)
                .map(|_| {
                    Shard(Mutex::new(ShardData {
                        groups: vec![GroupData::default(); groups],
                    }))
                })
                .collect(),
            groups,
            workers: Mutex::new(Vec::new()),
            warnings: Mutex::new(Vec::new()),
            examples: Mutex::new(BTreeMap::new()),
            have_example: std::array::from_fn(|_| std::sync::atomic::AtomicBool::new(false)),
            events: std::sync::OnceLock::new(),
        }
    }

    /// Log the chosen clients' events to `log` from now on (once: a second log is refused).
    pub fn log_events(&self, log: events::EventLog) -> Result<(), events::EventLog> {
        self.events.set(log)
    }

    /// The event log, if the run keeps one.
    pub fn event_log(&self) -> Option<&events::EventLog> {
        self.events.get()
    }

    /// Log `event` when `who` is a chosen client of the event log (made only then).
    #[inline]
    fn event(&self, who: Who, event: impl FnOnce() -> events::Event) {
        if let Some(log) = self.events.get() {
            log.record(who.client, who.group, event);
        }
    }

    /// The text of the connect error `client`'s attempt is about to end with, for the event
    /// log (made only for a chosen client).
    pub fn event_error_text(&self, client: u32, text: &dyn Fn() -> String) {
        if let Some(log) = self.events.get() {
            log.record(client, 0, || events::Event::ErrorText(text()));
        }
    }

    /// Keep `text` (made only if needed) as the example of connect errors of kind `e`, unless
    /// one is kept already.
    pub fn connect_error_example(&self, e: ConnectError, text: impl FnOnce() -> String) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.have_example[e.index()].load(Relaxed) {
            return;
        }
        let mut ex = self.examples.lock().unwrap_or_else(PoisonError::into_inner);
        ex.entry(e.name()).or_insert_with(text);
        self.have_example[e.index()].store(true, Relaxed);
    }

    /// The example of each connect-error kind seen so far, by kind name.
    pub fn connect_error_examples(&self) -> BTreeMap<String, String> {
        self.examples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// Say that something went wrong around the run; the same words are not repeated.
    pub fn warn(&self, message: impl Into<String>) {
        let message = message.into();
        let mut w = self.warnings.lock().unwrap_or_else(PoisonError::into_inner);
        if !w.contains(&message) {
            w.push(message);
        }
    }

    /// Everything said so far, in order.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Worker process `index` reports how the generator fares there.
    pub fn worker_sample(&self, index: usize, sample: generator::GeneratorSample) {
        let mut w = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        if w.len() <= index {
            w.resize(index + 1, None);
        }
        w[index] = Some(sample);
    }

    /// The latest sample of every worker process that sent one.
    pub fn worker_samples(&self) -> Vec<generator::GeneratorSample> {
        let w = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        w.iter().flatten().copied().collect()
    }

    pub fn groups(&self) -> usize {
        self.groups
    }

    fn with(&self, who: Who, f: impl FnOnce(&mut GroupData)) {
        let shard = &self.shards[who.client as usize & (self.shards.len() - 1)];
        let mut data = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut data.groups[usize::from(who.group)]);
    }

    /// An attempt starts, `lag` after its intended time; `retry` unless it is the client's
    /// first, `after_failure` when the client's previous attempt failed (a wave after the
    /// first).
    pub fn attempt(&self, who: Who, lag: Duration, retry: bool, after_failure: bool) {
        self.event(who, || events::Event::Attempt { retry });
        self.with(who, |s| {
            s.counters.attempts += 1;
            s.counters.retries += u64::from(retry);
            s.counters.repeat_retries += u64::from(retry && after_failure);
            s.hists.record(Latency::ScheduleLag, lag);
            if retry {
                s.hists.record(Latency::RetryLag, lag);
            }
        });
    }

    pub fn opened(&self, who: Who, t: OpenTimings) {
        self.event(who, || events::Event::Open {
            connect: t.connect,
            handshake: t.handshake,
        });
        self.with(who, |s| {
            s.counters.opened += 1;
            s.hists.record(Latency::Connect, t.connect);
            if let Some(tls) = t.tls {
                s.hists.record(Latency::Tls, tls);
            }
            s.hists.record(Latency::Handshake, t.handshake);
            if let Some(r) = t.reconnect {
                s.hists.record(Latency::Reconnect, r);
            }
        });
    }

    pub fn connect_error(&self, who: Who, e: ConnectError) {
        self.event(who, || events::Event::Error { kind: e.name() });
        self.with(who, |s| s.counters.connect_errors[e.index()] += 1);
    }

    pub fn handshake_status(&self, who: Who, status: u16) {
        self.event(who, || events::Event::Status { status });
        self.with(who, |s| {
            *s.counters.handshake_status.entry(status).or_default() += 1
        });
    }

    /// A compressed connection ended having moved these payload bytes.
    pub fn compressed(&self, who: Who, c: crate::net::deflate::Counts) {
        self.with(who, |s| {
            s.counters.compression.add(&CompressionCounters {
                connections: 1,
                bytes_in_wire: c.in_wire,
                bytes_in_inflated: c.in_inflated,
                bytes_out_wire: c.out_wire,
                bytes_out_deflated: c.out_deflated,
            })
        });
    }

    pub fn closed(&self, who: Who, how: Closed) {
        if let Some(log) = self.events.get()
            && log.chosen(who.client)
        {
            use events::{By, Event};
            let (code, by) = match how {
                Closed::ByPeer(1006) => (Some(1006), By::Network),
                Closed::ByPeer(code) => (Some(code), By::Server),
                // The client's close frame: 1000, at the end of the run as when it leaves.
                Closed::ByClient => (Some(1000), By::Client),
                Closed::Dead { silent_for } => {
                    log.record(who.client, who.group, || Event::Dead { silent_for });
                    (None, By::Client)
                }
                Closed::Violation(code) | Closed::Policy(code) => (Some(code), By::Client),
            };
            log.record(who.client, who.group, || Event::Close {
                code,
                by,
                cause: None,
            });
        }
        self.count_closed(who, how);
    }

    /// A client left (a session lifetime, a stage's ramp-down), closing its connection with
    /// 1000: counted as the client's close, logged with its cause.
    pub fn left(&self, who: Who) {
        self.log_own_close(who, Some(1000), events::Cause::Leave);
        self.count_closed(who, Closed::ByClient);
    }

    fn log_own_close(&self, who: Who, code: Option<u16>, cause: events::Cause) {
        self.event(who, || events::Event::Close {
            code,
            by: events::By::Client,
            cause: Some(cause),
        });
    }

    fn count_closed(&self, who: Who, how: Closed) {
        self.with(who, |s| {
            s.counters.closed += 1;
            match how {
                Closed::ByPeer(code) => *s.counters.close_codes.entry(code).or_default() += 1,
                Closed::ByClient => s.counters.client_closes += 1,
                Closed::Dead { silent_for } => {
                    s.counters.client_closes += 1;
                    s.counters.dead_detected += 1;
                    s.hists.record(Latency::DeadDetect, silent_for);
                }
                Closed::Violation(code) => {
                    *s.counters.client_close_codes.entry(code).or_default() += 1
                }
                Closed::Policy(code) => {
                    // The client's own choice, like the close at the end of a run: not a
                    // loss the storm figures count, nor the server's fault.
                    s.counters.client_closes += 1;
                    *s.conv.closes.entry(code).or_default() += 1
                }
            }
        });
    }

    /// A connection was lost soon after it opened (a flap).
    pub fn flap(&self, who: Who) {
        self.with(who, |s| s.counters.flaps += 1);
    }

    /// A subscribed connection stopped delivering (a ghost, or a stream gone quiet).
    pub fn stalled(&self, who: Who) {
        self.with(who, |s| s.counters.stalled += 1);
    }

    /// A fleet behaviour of the client ended its connection (`churn`, `network_switch`,
    /// `duplicate_connections`): it is no longer the client's, but nobody closed it with a code.
    pub fn fleet_closed(&self, who: Who, cause: events::Cause, f: impl FnOnce(&mut Counters)) {
        self.log_own_close(who, None, cause);
        self.with(who, |s| {
            s.counters.closed += 1;
            f(&mut s.counters);
        });
    }

    /// Count a fleet event that closes nothing (an arrival, a departure between connections,
    /// a message on a left-open connection).
    pub fn fleet(&self, who: Who, f: impl FnOnce(&mut Counters)) {
        self.with(who, |s| f(&mut s.counters));
    }

    pub fn gave_up(&self, who: Who) {
        self.event(who, || events::Event::GiveUp);
        self.with(who, |s| s.counters.gave_up += 1);
    }

    /// The client waits `delay` before its next attempt.
    pub fn backoff_started(&self, who: Who, delay: Duration) {
        self.event(who, || events::Event::Backoff { delay });
        self.with(who, |s| {
            s.counters.backoff_started += 1;
            s.hists.record(Latency::BackoffDelay, delay);
        });
    }

    pub fn backoff_ended(&self, who: Who) {
        self.with(who, |s| s.counters.backoff_ended += 1);
    }

    pub fn sent(&self, who: Who, lag: Duration) {
        self.with(who, |s| {
            s.counters.sent += 1;
            s.hists.record(Latency::ScheduleLag, lag);
        });
    }

    /// A message sent that had no schedule of its own (a conversation's step or answer).
    pub fn sent_unscheduled(&self, who: Who) {
        self.with(who, |s| s.counters.sent += 1);
    }

    pub fn received(&self, who: Who, rtt: Option<Duration>) {
        self.with(who, |s| {
            s.counters.received += 1;
            if let Some(rtt) = rtt {
                s.hists.record(Latency::Rtt, rtt);
            }
        });
    }

    /// A client's task ended after `attempts` attempts; `lost` is the number of stream
    /// messages it never received (final only now: a late arrival can still fill a gap).
    pub fn client_done(&self, who: Who, attempts: u32, lost: u64) {
        self.with(who, |s| {
            // A client (a stage visit) gone before its first attempt tried nothing: no sample.
            if attempts > 0 {
                let _ = s.hists.attempts_per_client.record(u64::from(attempts));
            }
            s.counters.lost += lost;
        });
    }

    /// Record what a conversation did (samples, streams, application errors).
    pub fn conversation(&self, who: Who, f: impl FnOnce(&mut conversation::ConvData)) {
        self.with(who, |s| f(&mut s.conv));
    }

    /// The reason text of a close frame with `code`, when it had one.
    pub fn close_reason(&self, who: Who, code: u16, reason: &str) {
        if !reason.is_empty() {
            self.event(who, || events::Event::Reason {
                code,
                reason: reason.to_string(),
            });
            self.with(who, |s| s.conv.close_reason(code, reason));
        }
    }

    /// A sequenced-stream message that was a duplicate, or that arrived after a later one.
    pub fn stream_anomaly(&self, who: Who, duplicated: bool, out_of_order: bool) {
        self.with(who, |s| {
            s.counters.duplicated += u64::from(duplicated);
            s.counters.out_of_order += u64::from(out_of_order);
        });
    }

    /// Add what another process recorded (a worker's interval) as if it had been recorded
    /// here; the collector's next tick takes it with the rest.
    pub fn absorb(&self, group: usize, data: &GroupData) {
        let mut s = self.shards[0]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = s.groups.get_mut(group) {
            g.add(data);
        }
    }

    /// Move every shard's interval data into `out` (one entry per group), leaving the shards
    /// empty. `spare` is swapped in so no shard allocates on the hot path after warm-up.
    pub fn drain_into(&self, out: &mut [GroupData], spare: &mut Hists) {
        for shard in self.shards.iter() {
            for (g, acc) in out.iter_mut().enumerate() {
                let taken_counters;
                let taken_conv;
                {
                    let mut s = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
                    let data = &mut s.groups[g];
                    taken_counters = std::mem::take(&mut data.counters);
                    // Taken whole: only groups with a conversation have any, and a tick's
                    // few allocations to start again are off every client's path.
                    taken_conv = std::mem::take(&mut data.conv);
                    std::mem::swap(&mut data.hists, spare);
                }
                acc.counters.add(&taken_counters);
                if !taken_conv.is_empty() {
                    acc.conv.add(&taken_conv);
                }
                acc.hists.add(spare);
                spare.reset();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_data_survives_the_wire() {
        let mut g = GroupData::default();
        g.counters.attempts = 7;
        g.counters.close_codes.insert(1006, 3);
        g.hists.record(Latency::Rtt, Duration::from_micros(1500));
        let _ = g.hists.attempts_per_client.record(4);
        let w = g.to_wire();
        assert_eq!(w.hists.iter().filter(|h| !h.is_empty()).count(), 2);
        let json = serde_json::to_string(&w).unwrap();
        let back = GroupData::from_wire(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back.counters, g.counters);
        assert_eq!(back.hists.get(Latency::Rtt).len(), 1);
        assert_eq!(back.hists.attempts_per_client.max(), 4);
        let m = Metrics::new(2);
        m.absorb(1, &back);
        let mut out = vec![GroupData::default(); 2];
        m.drain_into(&mut out, &mut Hists::default());
        assert_eq!(out[1].counters.attempts, 7);
        assert_eq!(out[0].counters.attempts, 0);
    }

    fn who(client: u32) -> Who {
        Who {
            client,
            group: (client % 2) as u16,
        }
    }

    #[test]
    fn shards_drain_exactly_per_group() {
        let m = Metrics::new(2);
        for c in 0..1000u32 {
            m.attempt(who(c), Duration::from_micros(5), false, false);
            if c % 10 == 0 {
                m.connect_error(who(c), ConnectError::Refused);
            } else {
                m.opened(
                    who(c),
                    OpenTimings {
                        connect: Duration::from_micros(100 + u64::from(c)),
                        tls: None,
                        handshake: Duration::from_micros(200),
                        reconnect: None,
                    },
                );
            }
        }
        m.closed(who(3), Closed::ByPeer(1006));
        m.closed(who(5), Closed::ByPeer(1006));
        m.closed(
            who(4),
            Closed::Dead {
                silent_for: Duration::from_secs(3),
            },
        );
        m.client_done(who(7), 3, 10);
        // Gone before its first attempt (a stage visit that left at once): no sample.
        m.client_done(who(9), 0, 0);
        m.stream_anomaly(who(7), true, false);
        let mut out = vec![GroupData::default(); 2];
        let mut spare = Hists::default();
        m.drain_into(&mut out, &mut spare);
        let (even, odd) = (&out[0].counters, &out[1].counters);
        assert_eq!(even.attempts + odd.attempts, 1000);
        assert_eq!(even.attempts, 500);
        assert_eq!(even.opened + odd.opened, 900);
        assert_eq!(
            even.connect_error(ConnectError::Refused),
            100,
            "c % 10 == 0 is even"
        );
        assert_eq!(odd.connect_error(ConnectError::Refused), 0);
        assert_eq!(odd.close_codes[&1006], 2);
        assert_eq!(even.dead_detected, 1);
        assert_eq!(even.client_closes, 1);
        assert_eq!(odd.lost, 10);
        assert_eq!(odd.duplicated, 1);
        assert_eq!(out[1].hists.attempts_per_client.len(), 1);
        assert_eq!(out[1].hists.attempts_per_client.max(), 3);
        assert_eq!(
            out[0].hists.get(Latency::Connect).len() + out[1].hists.get(Latency::Connect).len(),
            900
        );
        assert_eq!(out[0].hists.get(Latency::ScheduleLag).len(), 500);
        // Drained: a second drain adds nothing.
        let mut again = vec![GroupData::default(); 2];
        m.drain_into(&mut again, &mut spare);
        assert_eq!(again[0].counters, Counters::default());
        assert_eq!(again[1].hists.get(Latency::Connect).len(), 0);
    }
}
