//! `results.json`: what a run was. A public contract (schema `wsstorm.results/1`, documented in
//! the README): fields are only ever added, never renamed or removed, within a schema version.

mod build;
pub mod capacity;
pub mod conversation;
pub mod effects;
pub mod merge;
pub mod threshold;

pub use build::Record;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::metrics::generator::GeneratorSample;
use crate::metrics::{ConnectError, Counters, LatencySummary, Point};
pub use crate::metrics::{GroupSeries, LatencyTable};
use crate::server::ServerSummary;

pub use crate::metrics::storm::{Counts, Recovery, Storm, storm_from};

pub const SCHEMA: &str = "wsstorm.results/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub schema: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub seed: u64,
    /// The run id every client put in its identity header (`X-Wsstorm-Client:
    /// <run_id>-<client>-<attempt>`): 8 hex digits, shared by the shards of one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Wall-clock start, RFC 3339.
    pub started_at: String,
    /// From the first arrival to the end of the run (the deadline, or the interruption).
    pub duration_ms: u64,
    pub end_reason: EndReason,
    /// How a run `--until recovered` was to end, and when it settled; absent for a run of the
    /// profile's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Until>,
    /// The URL the clients connected to.
    pub target: String,
    pub totals: Totals,
    pub latency_us: LatencyTable,
    /// How the swarm weathered losing connections: recovery, retry pressure, give-ups.
    #[serde(default)]
    pub storm: Storm,
    /// What the clients' conversations measured (steps, streams, application errors), when
    /// any group held one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<conversation::ConversationResults>,
    /// The same figures for each group of the profile, in profile order.
    #[serde(default)]
    pub groups: Vec<GroupResults>,
    pub timeline: Timeline,
    pub generator: Generator,
    /// Counters of the embedded target, when the run used it.
    #[serde(default)]
    pub server: Option<ServerSummary>,
    /// Counters of the fault proxy, when the run used it.
    #[serde(default)]
    pub proxy: Option<crate::proxy::ProxySummary>,
    /// Each threshold with its measured value and verdict, in the order given (profile
    /// first, then `--threshold`). Empty when the run had none.
    #[serde(default)]
    pub thresholds: Vec<crate::results::threshold::ThresholdResult>,
    /// The profile that ran, as YAML (command-line overrides included).
    pub profile: String,
    /// What went wrong around the run (a fault not applied, a worker process that died, clients
    /// that did not close in time), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Why the run failed as a run (nothing ever connected, a worker process died), when it
    /// did; the exit code is then 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// The run was `wsstorm model`'s, in virtual time with no sockets: its figures are what
    /// the plan's rules produce, not what a network and a machine measured.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub modelled: bool,
    /// How the model ran and what it left out (modelled runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelInfo>,
    /// The shard of a plan this run was (`--shard I/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<merge::ShardInfo>,
    /// A merged run (`wsstorm merge`): each part's own health, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<merge::ShardHealth>,
    /// The per-connection event log (`--events`): its file, the clients it followed, lines
    /// written and events dropped (past `--events-max`, or while the writer fell behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<crate::metrics::events::EventsSummary>,
}

/// What results.json says about a modelled run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The fixed network round trip every attempt paid (µs).
    pub rtt_us: u64,
    /// Events the model processed (attempts, answers, closes).
    pub events: u64,
    /// Wall-clock time the model took (ms).
    pub wall_ms: u64,
    /// What the profile asks for that the model leaves out; its figures are as if absent.
    pub not_modelled: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// Ran for the whole duration.
    Completed,
    /// Interrupted (Ctrl-C, SIGTERM); figures cover the time that ran.
    Interrupted,
    /// Stopped from the dashboard (`q`); figures cover the time that ran.
    Stopped,
    /// Stopped by a failing threshold with `abort_on_fail`; figures cover the time that ran.
    Aborted,
    /// A run `--until recovered` settled: every client connected or gave up.
    Settled,
    /// A run `--until recovered` reached its `--max` before it settled.
    MaxReached,
}

/// The mode of a run that lasts until every client has settled.
pub const UNTIL_RECOVERED: &str = "recovered";

/// A run that lasted until its clients settled rather than for the profile's duration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Until {
    /// `recovered`: until every client was connected or had given up, after the timeline's
    /// last action.
    pub mode: String,
    /// The longest the run could last (`--max`).
    pub max_ms: u64,
    /// When the run settled: the first of the ticks that held it; `null` = it did not before
    /// `max_ms`.
    pub settled_at_ms: Option<u64>,
}

impl Until {
    /// A run `--until recovered` with cap `max` that settled at `settled_at` (or did not).
    pub fn recovered(max: std::time::Duration, settled_at: Option<std::time::Duration>) -> Until {
        Until {
            mode: UNTIL_RECOVERED.to_string(),
            max_ms: max.as_millis() as u64,
            settled_at_ms: settled_at.map(|t| t.as_millis() as u64),
        }
    }

    /// `settled at 3.2 s (every client connected or gave up; cap 5m)`, or that it did not.
    pub fn describe(&self) -> String {
        let cap = crate::units::Dur(std::time::Duration::from_millis(self.max_ms));
        match self.settled_at_ms {
            Some(ms) => format!(
                "settled at {:.1} s (every client connected or gave up; cap {cap})",
                ms as f64 / 1000.0
            ),
            None => format!("NOT settled within the cap of {cap} (--max)"),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub clients: u64,
    /// Every attempt ends in exactly one of: opened, a connect error, a handshake status.
    pub connect_attempts: u64,
    pub opened: u64,
    /// Highest number of open connections, sampled every timeline interval.
    pub peak_connected: u64,
    /// Open connections at the end of the run, before clients closed.
    pub connected_at_end: u64,
    /// Connections the clients closed themselves (end of run, dead connection detected).
    pub client_closes: u64,
    /// Clients that stopped reconnecting (a `stop` decision or max_attempts reached).
    pub gave_up: u64,
    pub connect_errors: ConnectErrors,
    /// Non-101 answers to the upgrade, by HTTP status.
    pub handshake_status: BTreeMap<String, u64>,
    /// Closes the server or the network caused, as the client saw them; 1006 = ended without a
    /// close frame.
    pub close_codes: BTreeMap<String, u64>,
    /// Closes the client sent because the server broke the protocol (RFC 6455 §7.4.1): 1002 a
    /// protocol error (reserved opcode or bits, a masked frame, bad fragmentation), 1007
    /// invalid UTF-8 in a text message, 1009 a message or frame over the client's limit.
    #[serde(default)]
    pub client_close_codes: BTreeMap<String, u64>,
    /// Connections the heartbeat found dead (pong timeout).
    pub dead_detected: u64,
    /// Connections lost (closed by the server or the network, or found dead) sooner than
    /// their group's `reconnect.flap_below` (default 1s) after they opened.
    #[serde(default)]
    pub flaps: u64,
    /// Subscribed connections that delivered no stream message for their group's
    /// `subscribe.stall_after` while open (ghost connections).
    #[serde(default)]
    pub stalled: u64,
    /// Connections the clients dropped themselves (`behaviour.churn`), reconnecting after
    /// their backoff: not in `close_codes`, which are the server's and the network's doing.
    #[serde(default)]
    pub churn_drops: u64,
    /// Clients that left (closing with 1000 if connected): a `session` lifetime ended or a
    /// stage ramped down.
    #[serde(default)]
    pub sessions_ended: u64,
    /// Clients that arrived: one per client without `session`/`stages`; with them, every
    /// stage visit and every replacement of a client that left.
    #[serde(default)]
    pub clients_arrived: u64,
    /// Connections given up on a network switch (`behaviour.network_switch`).
    #[serde(default)]
    pub network_switches: u64,
    /// Connections a client left open when it opened another (`duplicate_connections`):
    /// the server holds them as well as the clients' own.
    #[serde(default)]
    pub duplicate_connections: u64,
    /// Messages the left-open connections received (delivered twice to the application).
    #[serde(default)]
    pub duplicate_received: u64,
    pub messages: Messages,
    /// The reason texts of close frames, by close code then reason, with counts (at most 64
    /// reasons per code; the rest under `(other)`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub close_reasons: BTreeMap<String, BTreeMap<String, u64>>,
    /// permessage-deflate, when any connection negotiated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionTotals>,
}

/// Payload bytes of the data messages of compressed connections, counted as each closed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompressionTotals {
    /// Connections that negotiated permessage-deflate.
    pub connections: u64,
    /// Received, as on the wire, and as inflated for the client.
    pub bytes_in_wire: u64,
    pub bytes_in_inflated: u64,
    /// Sent, as on the wire, and as the client wrote them before deflating.
    pub bytes_out_wire: u64,
    pub bytes_out_deflated: u64,
    /// Wire bytes over uncompressed bytes, both ways together (0.1: the wire carried a tenth).
    pub ratio: f64,
}

impl CompressionTotals {
    fn from(c: &crate::metrics::CompressionCounters) -> Option<CompressionTotals> {
        let wire = c.bytes_in_wire + c.bytes_out_wire;
        let plain = c.bytes_in_inflated + c.bytes_out_deflated;
        (c.connections > 0).then(|| CompressionTotals {
            connections: c.connections,
            bytes_in_wire: c.bytes_in_wire,
            bytes_in_inflated: c.bytes_in_inflated,
            bytes_out_wire: c.bytes_out_wire,
            bytes_out_deflated: c.bytes_out_deflated,
            ratio: if plain == 0 {
                1.0
            } else {
                wire as f64 / plain as f64
            },
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectErrors {
    pub refused: u64,
    pub timeout: u64,
    pub reset: u64,
    pub addr_unavailable: u64,
    pub dns: u64,
    pub tls: u64,
    /// The generator ran out of file descriptors.
    #[serde(default)]
    pub fd_limit: u64,
    pub other: u64,
    /// Attempts still in progress when the run ended.
    #[serde(default)]
    pub cancelled: u64,
    /// The server closed the connection before a complete answer to the upgrade (counted in
    /// `reset` before this field existed).
    #[serde(default)]
    pub closed_in_handshake: u64,
    /// The answer to the upgrade was not HTTP (counted in `other` before).
    #[serde(default)]
    pub not_http: u64,
    /// A 101 without a valid upgrade: a wrong Sec-WebSocket-Accept, no Upgrade or Connection
    /// header, an unoffered subprotocol (counted in `other` before).
    #[serde(default)]
    pub bad_upgrade: u64,
    /// `tls` by cause: `expired`, `unknown_issuer`, `wrong_host`, `not_tls` (wss:// to a plain
    /// server, or no common version), `other`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tls_causes: BTreeMap<String, u64>,
    /// One error text per kind (the first seen), e.g. `refused`: "connect to 127.0.0.1:9:
    /// Connection refused (os error 111)". Whole run only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub examples: BTreeMap<String, String>,
}

impl ConnectErrors {
    /// Every kind with its count, in a fixed order; the names are the JSON field names.
    pub fn kinds(&self) -> [(&'static str, u64); 12] {
        [
            ("refused", self.refused),
            ("timeout", self.timeout),
            ("reset", self.reset),
            ("addr_unavailable", self.addr_unavailable),
            ("dns", self.dns),
            ("tls", self.tls),
            ("fd_limit", self.fd_limit),
            ("other", self.other),
            ("cancelled", self.cancelled),
            ("closed_in_handshake", self.closed_in_handshake),
            ("not_http", self.not_http),
            ("bad_upgrade", self.bad_upgrade),
        ]
    }

    pub fn total(&self) -> u64 {
        self.kinds().iter().map(|(_, n)| n).sum()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Messages {
    pub sent: u64,
    pub received: u64,
    /// Sequenced-stream messages never received.
    #[serde(default)]
    pub lost: u64,
    /// Sequenced-stream messages received more than once.
    #[serde(default)]
    pub duplicated: u64,
    /// Sequenced-stream messages that arrived after a later one.
    #[serde(default)]
    pub out_of_order: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupResults {
    pub name: String,
    pub totals: Totals,
    pub latency_us: LatencyTable,
    pub storm: Storm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<conversation::ConversationResults>,
    /// The group's share of the run's timeline, one entry per point of `timeline.points`.
    #[serde(default)]
    pub timeline: GroupSeries,
    /// What the group recorded, whole (counters and histograms), so that `wsstorm merge` can
    /// add runs up exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<merge::Raw>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub interval_ms: u64,
    pub points: Vec<Point>,
    /// Timeline actions as they fired.
    #[serde(default)]
    pub actions: Vec<FiredAction>,
    /// Closes per interval for each close code seen, aligned with `points`.
    #[serde(default)]
    pub close_codes: BTreeMap<String, Vec<u64>>,
    /// Non-101 answers to the upgrade per interval for each HTTP status seen, aligned with
    /// `points`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handshake_status: BTreeMap<String, Vec<u64>>,
    /// What followed each action of `actions`, until the next one or the end: losses,
    /// retry pressure, recovery, latency before and after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<effects::Effect>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FiredAction {
    pub t_ms: u64,
    pub action: String,
    /// Connections open on the target when it fired.
    pub connections: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Generator {
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    pub peak_rss_bytes: u64,
    pub fd_limit: u64,
    /// How late attempts and sends started against their schedule.
    pub schedule_lag_us: LatencySummary,
    /// How late retries started: the spread between the earliest and the p99 of a herd
    /// scheduled for one instant is the generator's storm precision.
    #[serde(default)]
    pub retry_lag_us: LatencySummary,
    /// Once a second: memory, CPU, open files, open connections.
    pub samples: Vec<GeneratorSample>,
    /// When the generator itself may have distorted the figures.
    pub warnings: Vec<String>,
    /// How the run was laid out over processes and source addresses, as the pre-flight budget
    /// decided it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layout: Vec<String>,
    /// The memory the pre-flight budget predicted for the run on this machine, user space
    /// and kernel, in bytes: to set against what the run really took (`samples`, and the
    /// machine's own figures).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_predicted_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub fn totals_from(c: &Counters, clients: u64, peak: u64, connected_at_end: u64) -> Totals {
    let e = |k| c.connect_error(k);
    Totals {
        clients,
        connect_attempts: c.attempts,
        opened: c.opened,
        peak_connected: peak,
        connected_at_end,
        client_closes: c.client_closes,
        gave_up: c.gave_up,
        connect_errors: ConnectErrors {
            refused: e(ConnectError::Refused),
            timeout: e(ConnectError::Timeout),
            reset: e(ConnectError::Reset),
            addr_unavailable: e(ConnectError::AddrUnavailable),
            dns: e(ConnectError::Dns),
            tls: ConnectError::ALL
                .iter()
                .filter(|k| k.is_tls())
                .map(|k| e(*k))
                .sum(),
            fd_limit: e(ConnectError::FdLimit),
            other: e(ConnectError::Other),
            cancelled: e(ConnectError::Cancelled),
            closed_in_handshake: e(ConnectError::ClosedInHandshake),
            not_http: e(ConnectError::NotHttp),
            bad_upgrade: e(ConnectError::BadUpgrade),
            tls_causes: ConnectError::ALL
                .iter()
                .filter(|k| k.is_tls() && e(**k) > 0)
                .map(|k| {
                    let cause = k.name().strip_prefix("tls_").unwrap_or("other");
                    (cause.to_string(), e(*k))
                })
                .collect(),
            examples: BTreeMap::new(),
        },
        handshake_status: c
            .handshake_status
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        close_codes: c
            .close_codes
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        client_close_codes: c
            .client_close_codes
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        dead_detected: c.dead_detected,
        flaps: c.flaps,
        stalled: c.stalled,
        churn_drops: c.churn_drops,
        sessions_ended: c.sessions_ended,
        clients_arrived: c.clients_arrived,
        network_switches: c.network_switches,
        duplicate_connections: c.duplicate_connections,
        duplicate_received: c.duplicate_received,
        close_reasons: BTreeMap::new(),
        compression: CompressionTotals::from(&c.compression),
        messages: Messages {
            sent: c.sent,
            received: c.received,
            lost: c.lost,
            duplicated: c.duplicated,
            out_of_order: c.out_of_order,
        },
    }
}

/// Figures that say the generator, not the target, may have been the bottleneck.
pub fn generator_warnings(
    lag: &LatencySummary,
    samples: &[GeneratorSample],
    fd_limit: u64,
    totals: &Totals,
) -> Vec<String> {
    let mut w = Vec::new();
    if lag.p99 > 100_000 {
        w.push(format!(
            "the generator was late against its own schedule: p99 lag {:.1} ms (max {:.1} ms); latency figures include that delay",
            lag.p99 as f64 / 1000.0,
            lag.max as f64 / 1000.0
        ));
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    if let Some(max_cpu) = samples.iter().map(|s| s.cpu_percent).reduce(f64::max)
        && max_cpu > 90.0 * cores
    {
        w.push(format!(
            "the generator used {max_cpu:.0}% CPU ({cores} cores available): it may have been the bottleneck"
        ));
    }
    if let Some(max_fds) = samples.iter().map(|s| s.open_fds).max()
        && fd_limit > 0
        && max_fds * 10 > fd_limit * 9
    {
        w.push(format!(
            "the generator used {max_fds} of its {fd_limit} file descriptors"
        ));
    }
    if totals.connect_errors.fd_limit > 0 {
        w.push(format!(
            "{} attempts failed because the generator ran out of file descriptors (limit {fd_limit}): use fewer clients per process",
            totals.connect_errors.fd_limit
        ));
    }
    if totals.connect_errors.addr_unavailable > 0 {
        w.push(format!(
            "{} attempts failed because the generator ran out of local ports: spread clients over more source addresses",
            totals.connect_errors.addr_unavailable
        ));
    }
    w
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a wsstorm results file: {message}")]
    Format { path: String, message: String },
}

impl Results {
    /// The figures thresholds read.
    pub fn figures(&self) -> crate::results::threshold::Figures<'_> {
        crate::results::threshold::Figures {
            totals: &self.totals,
            latency: &self.latency_us,
            storm: &self.storm,
            conversation: self.conversation.as_ref(),
        }
    }

    /// `Some(true)` when every threshold passed, `None` when there were none.
    pub fn thresholds_passed(&self) -> Option<bool> {
        (!self.thresholds.is_empty()).then(|| self.thresholds.iter().all(|t| t.passed))
    }

    /// Write `results.json` into `dir` (created if needed); returns the file's path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ResultsError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| ResultsError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("results.json");
        let json = serde_json::to_string_pretty(self).expect("results serialize");
        // Write then rename, so a reader never sees half a file.
        let tmp = dir.join(".results.json.tmp");
        std::fs::write(&tmp, json + "\n").map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(path)
    }

    pub fn read(path: &Path) -> Result<Results, ResultsError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Io {
            path: p.clone(),
            source,
        })?;
        let r: Results = serde_json::from_str(&text).map_err(|e| ResultsError::Format {
            path: p.clone(),
            message: e.to_string(),
        })?;
        if r.schema != SCHEMA {
            return Err(ResultsError::Format {
                path: p,
                message: format!("schema is `{}`, this wsstorm reads `{SCHEMA}`", r.schema),
            });
        }
        Ok(r)
    }
}
