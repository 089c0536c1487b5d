//! What will happen: a profile compiled, in one pass ([`compile`]), into checked and typed
//! values — groups with client id ranges and arrival schedules, each group's client behaviour,
//! the embedded server's configuration, the timeline of actions, the thresholds — or into the
//! list of every problem with its line and column. Pure and deterministic from the seed; the
//! swarm only executes it.
//!
//! Nothing after this stage parses or checks what the user wrote again: a value that reaches
//! a [`Plan`] is valid by construction. The pre-flight [`budget`] then lays the plan out over
//! processes and source addresses, and [`capacity`] derives the steps of a capacity search.

pub mod budget;
pub mod capacity;
mod compile;
pub mod conversation;
pub mod decision;
pub mod fleet;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_server;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::Xoshiro128PlusPlus;
use rand_distr::{Distribution, Exp};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use crate::auth::Signer;
use crate::backoff::{Backoff, Strategy};
use crate::profile::{
    AbuseKind, ArrivalPattern, CapacitySettings, Document, ProfileError, TlsSettings, TokenPlace,
};
use crate::proxy::Fault;
use crate::results::threshold::Threshold;
use crate::server::{Action, ServerConfig};

pub use compile::{MAX_SOURCE_ADDRS, MIN_MESSAGE_BYTES, server_config};
pub use decision::{CodeSet, DecisionTable};

/// The seed of a profile that gives none.
pub const DEFAULT_SEED: u64 = 1;

#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub description: Option<String>,
    pub seed: u64,
    pub duration: Duration,
    /// Time clients get to close cleanly once the run ends.
    pub grace: Duration,
    pub target: PlanTarget,
    pub tls: TlsSettings,
    pub groups: Vec<PlanGroup>,
    pub timeline: Vec<PlannedAction>,
    /// The fault proxy, when any group goes through it.
    pub proxy: Option<ProxyPlan>,
    /// Checked at the end (and, with `abort_on_fail`, once a second during the run).
    pub thresholds: Vec<Threshold>,
    /// What `wsstorm compare` runs when no `--strategy` is given (empty: the profile says
    /// nothing).
    pub compare: Vec<Strategy>,
    /// How `wsstorm capacity` steps the load, checked.
    pub capacity: Option<CapacitySettings>,
    /// A run in which nothing connects is what the profile expects, not a failure.
    pub expect_failures: bool,
    /// Processes the run is spread over; set by the [`budget`].
    pub layout: Layout,
    /// The profile as the user wrote it (plus notes of what the command line changed), kept
    /// in the results.
    pub source: String,
    /// `--until recovered`: the run ends once every client has settled, not after `duration`.
    pub until: Option<Until>,
    /// `--events FILE`: the per-connection event log of the clients it picks.
    pub events: Option<crate::metrics::events::EventsSpec>,
    /// The run id clients put in their identity header; `None` until the run knows its start
    /// (shards given a common `--start-at` get it from that, so they share it).
    pub run_id: Option<u32>,
}

/// A short id for one run: the same for every shard of a run given the same profile name,
/// seed and start (the `--start-at` text, or the wall-clock start of an unsharded run).
pub fn run_id(name: &str, seed: u64, start: &str) -> u32 {
    // FNV-1a: stable across processes and builds, unlike the standard library's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name
        .bytes()
        .chain([0])
        .chain(seed.to_le_bytes())
        .chain(start.bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// A run that lasts until every client has settled — arrived, and connected or given up (see
/// [`crate::metrics::settle`]) — after the timeline's last action, or until `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Until {
    pub max: Duration,
}

/// How a run is spread over processes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Client worker processes (0: clients run in the coordinating process).
    pub workers: usize,
    /// Embedded server processes (0: in the coordinating process).
    pub server_processes: usize,
    /// The wsstorm executable child processes are started from (default: this one).
    pub exe: Option<PathBuf>,
    /// What the budget decided and why (processes, source addresses), for the user and the
    /// results.
    pub notes: Vec<String>,
    /// The memory the budget expects the run to use on this machine, user space and kernel
    /// (bytes).
    pub memory: u64,
}

#[derive(Clone, Debug)]
pub enum PlanTarget {
    /// Start the built-in server; its URL is known once it is bound.
    Embedded {
        config: Box<ServerConfig>,
        threads: usize,
    },
    External {
        url: String,
        /// The URL's host (no brackets around an IPv6 address).
        host: String,
    },
}

impl PlanTarget {
    /// Whether the clients connect to this machine (any 127.x.y.z is then a source address).
    pub fn is_loopback(&self) -> bool {
        match self {
            PlanTarget::Embedded { .. } => true,
            PlanTarget::External { host, .. } => {
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
        }
    }

    /// What the target is, in a few words.
    pub fn describe(&self) -> String {
        match self {
            PlanTarget::Embedded { config, .. } => {
                format!("embedded server on {}{}", config.listen, config.path)
            }
            PlanTarget::External { url, .. } => url.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanGroup {
    pub index: usize,
    pub name: String,
    pub clients: u32,
    /// Global id of the group's first client; ids are contiguous across groups.
    pub first_client: u32,
    /// Arrivals per second, more than 0.
    pub rate: f64,
    pub start: Duration,
    pub pattern: ArrivalPattern,
    /// Connect through the fault proxy.
    pub via_proxy: bool,
    pub behaviour: Arc<ClientBehaviour>,
    /// k6-style stages in place of `rate`/`start`/`pattern`: how many clients are present
    /// over time (see [`fleet::visits`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<fleet::StagePlan>,
    /// In a shard of a plan (`--shard I/N`), which of the group's clients this plan runs:
    /// `clients` is then the shard's share.
    #[serde(default)]
    pub slice: Slice,
}

/// The clients of a group a shard runs: those whose index in the whole group is `index`
/// modulo `count`, out of `of`. Each keeps its id, its arrival time and its RNG seed, so the
/// shards of a plan together are the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    pub index: u32,
    pub count: u32,
    /// The whole group's clients.
    pub of: u32,
}

impl Default for Slice {
    fn default() -> Self {
        Slice {
            index: 0,
            count: 1,
            of: 0,
        }
    }
}

impl Slice {
    /// How many of `clients` the slice `index` of `count` holds.
    pub fn share(index: u32, count: u32, clients: u32) -> u32 {
        clients / count + u32::from(index < clients % count)
    }
}

/// Everything a client of a group needs to know, shared by all clients of the group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientBehaviour {
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    #[serde(with = "header_pairs")]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    #[serde(with = "header_value")]
    pub subprotocols: Option<HeaderValue>,
    pub read_buffer: usize,
    /// Offer permessage-deflate in the upgrade (`compression: deflate`).
    #[serde(default)]
    pub deflate: bool,
    pub socket_recv_buffer: Option<u32>,
    /// Client `i` connects from `source_addrs[i % len]`.
    pub source_addrs: Vec<IpAddr>,
    pub send: Option<SendPlan>,
    pub heartbeat: Option<HeartbeatPlan>,
    pub backoff: Backoff,
    /// Retries rounded up to a multiple of this since the run start (clock-synchronized).
    pub align: Option<Duration>,
    pub on_close: DecisionTable,
    pub on_status: DecisionTable,
    /// A connection lost sooner than this after it opened counts as a flap.
    #[serde(default = "default_flap_below")]
    pub flap_below: Duration,
    /// The identity header's name (lower case), `None` when the group sends none.
    #[serde(default)]
    pub identity_header: Option<String>,
    /// Slow consumer: messages read per second at most.
    pub read_rate: Option<f64>,
    /// Freeze `for` after `after` of every connection.
    pub sleep: Option<SleepPlan>,
    pub auth: Option<AuthPlan>,
    pub subscribe: Option<SubscribePlan>,
    pub abuse: Option<AbusePlan>,
    /// A real application's conversation, compiled once for the group.
    pub conversation: Option<Box<conversation::ConversationPlan>>,
    /// The data feeder (also in the conversation, for its templates; here for the token's).
    pub feeder: Option<conversation::FeederPlan>,
    /// Churn, session lifetimes, a network switch, throttling, duplicate connections.
    #[serde(default)]
    pub fleet: Option<Box<fleet::FleetPlan>>,
}

/// What counts as a flap when the profile does not say.
pub const DEFAULT_FLAP_BELOW: Duration = Duration::from_secs(1);

fn default_flap_below() -> Duration {
    DEFAULT_FLAP_BELOW
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SleepPlan {
    pub after: Duration,
    pub duration: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthPlan {
    pub signer: Signer,
    pub lifetime: Duration,
    /// `refresh`: mint a new token when the old one has expired; `naive`: never.
    pub refresh: bool,
    pub place: TokenPlace,
    /// Mint JWTs instead of wsstorm tokens.
    pub jwt: Option<JwtPlan>,
    /// A refresh takes this long…
    pub refresh_takes: Duration,
    /// …and fails this share of the time (0–1).
    pub refresh_fails: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JwtPlan {
    pub key: crate::script::jwt::JwtKey,
    /// The claims, a JSON object template.
    pub claims: crate::script::template::Template,
    /// Add `iat` / `exp` (from the token lifetime) to the rendered claims.
    pub add_iat: bool,
    pub add_exp: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SubscribePlan {
    pub resume: bool,
    /// The resume position is saved every this many messages (1 = every message).
    pub checkpoint_every: u32,
    /// No stream message for this long: the connection has stalled.
    #[serde(default)]
    pub stall_after: Option<Duration>,
    /// Close a stalled connection and connect again (else only count it).
    #[serde(default)]
    pub reconnect_on_stall: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct AbusePlan {
    pub kind: AbuseKind,
    pub after: Duration,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SendPlan {
    /// Open loop period; `None` for a closed loop.
    pub every: Option<Duration>,
    /// Closed loop: messages kept in flight.
    pub in_flight: u32,
    pub bytes: usize,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct HeartbeatPlan {
    pub ping_every: Duration,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct PlannedAction {
    pub at: Duration,
    pub action: TimelineAction,
}

/// Who carries a timeline action out.
#[derive(Clone, Debug, PartialEq)]
pub enum TimelineAction {
    Server(Action),
    Proxy(Fault),
    /// Remove every proxy fault.
    Heal,
}

impl std::fmt::Display for TimelineAction {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            TimelineAction::Server(a) => write!(f, "{a}"),
            TimelineAction::Proxy(fault) => write!(f, "proxy {fault}"),
            TimelineAction::Heal => write!(f, "proxy heal"),
        }
    }
}

/// The fault proxy a run starts.
#[derive(Clone, Debug)]
pub struct ProxyPlan {
    pub listen: std::net::SocketAddr,
    pub buffer: usize,
}

impl Plan {
    /// Compile a profile; every problem found comes back at once, with its position.
    pub fn compile(doc: &Document) -> Result<Plan, ProfileError> {
        compile::compile(doc)
    }

    /// Read and compile a profile file.
    pub fn load(path: &Path) -> Result<Plan, ProfileError> {
        Plan::compile(&crate::profile::load(path)?)
    }

    /// Parse and compile profile text; `file` names it in messages.
    pub fn from_yaml(text: &str, file: &str) -> Result<Plan, ProfileError> {
        Plan::compile(&crate::profile::parse(text, file)?)
    }

    /// Each group's name and clients, in plan order: what a run's results are counted against.
    pub fn group_clients(&self) -> Vec<(String, u32)> {
        self.groups
            .iter()
            .map(|g| (g.name.clone(), g.clients))
            .collect()
    }

    pub fn total_clients(&self) -> u32 {
        self.groups.iter().map(|g| g.clients).sum()
    }

    /// Each group's conversation sample and stream names, in plan order (empty for a group
    /// without a conversation): what the results and the dashboard join figures to.
    pub fn conversation_names(&self) -> Vec<crate::results::conversation::Names> {
        self.groups
            .iter()
            .map(|g| match g.behaviour.conversation.as_deref() {
                Some(c) => crate::results::conversation::Names {
                    samples: c.samples.clone(),
                    streams: c.streams.iter().map(|s| s.name.clone()).collect(),
                },
                None => Default::default(),
            })
            .collect()
    }

    /// Whether the plan runs the embedded server.
    pub fn is_embedded(&self) -> bool {
        matches!(self.target, PlanTarget::Embedded { .. })
    }

    /// Shard `index` of `count` of this plan: every group keeps the clients whose index in it
    /// is `index` modulo `count`, with their ids, arrival times and seeds. The shards of a
    /// plan run every client exactly once.
    pub fn shard(&self, index: u32, count: u32) -> Result<Plan, String> {
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index}/{count}: the index counts from 0 and must be below the count (0/{count} … {}/{count})",
                count.saturating_sub(1)
            ));
        }
        let clients = self.total_clients();
        if count > clients {
            return Err(format!(
                "{count} shards for {clients} clients: a shard would have none; use at most {clients}"
            ));
        }
        if self.groups.iter().any(|g| g.slice.count > 1) {
            return Err("this plan is a shard already".into());
        }
        let mut plan = self.clone();
        for g in &mut plan.groups {
            g.slice = Slice {
                index,
                count,
                of: g.clients,
            };
            g.clients = Slice::share(index, count, g.clients);
        }
        Ok(plan)
    }

    /// Every group's backoff strategy replaced by `strategy` (base, cap and max_attempts
    /// stay): one run of a comparison.
    pub fn with_strategy(&self, strategy: Strategy) -> Plan {
        let mut plan = self.clone();
        for g in &mut plan.groups {
            Arc::make_mut(&mut g.behaviour).backoff.strategy = strategy;
        }
        plan
    }

    /// Run until every client has settled, or for `max` at most: `duration` becomes `max`
    /// and no longer ends the run early. Refused when `max` would end the run before the
    /// timeline's last action or the last client's arrival (it could never settle).
    pub fn until_recovered(&mut self, max: Duration) -> Result<(), String> {
        let max_text = crate::units::Dur(max);
        if max.is_zero() {
            return Err("--max must be more than 0s".into());
        }
        if let Some(g) = self.groups.iter().find(|g| {
            !g.stages.is_empty()
                || g.behaviour
                    .fleet
                    .as_ref()
                    .is_some_and(|f| f.lifetime.is_some())
        }) {
            return Err(format!(
                "group `{}` has clients that leave (`stages` or `session` lifetimes): a run that keeps changing who is present has nothing to settle; run it for its `duration`",
                g.name
            ));
        }
        if let Some(last) = self.timeline.last()
            && last.at >= max
        {
            return Err(format!(
                "--max {max_text} ends the run before the timeline's last action (`{}` at {}): give a --max after it",
                last.action,
                crate::units::Dur(last.at)
            ));
        }
        let last_arrival = self
            .groups
            .iter()
            .filter_map(|g| g.arrivals(self.seed).last())
            .max();
        if let Some(last) = last_arrival
            && last >= max
        {
            return Err(format!(
                "--max {max_text} ends the run before the last client arrives (at {}): give a --max after it",
                crate::units::Dur(last)
            ));
        }
        self.duration = max;
        self.until = Some(Until { max });
        Ok(())
    }
}

impl PlanGroup {
    /// The global id of this plan's `k`-th client of the group.
    pub fn client_id(&self, k: u32) -> u32 {
        self.first_client + self.slice.index + k * self.slice.count
    }

    /// Offsets from the run start at which this plan's clients of the group arrive, in client
    /// order: in a shard, its slice of the whole group's schedule.
    pub fn arrivals(&self, seed: u64) -> Box<dyn Iterator<Item = Duration> + Send> {
        let slice = self.slice;
        let whole = if slice.count > 1 {
            slice.of
        } else {
            self.clients
        };
        if !self.stages.is_empty() {
            // Each client's first arrival, in client order.
            let mut first = vec![Duration::MAX; whole as usize];
            for v in self.visits() {
                let f = &mut first[v.slot as usize];
                *f = (*f).min(v.arrive);
            }
            return Box::new(
                first
                    .into_iter()
                    .enumerate()
                    .filter(move |(i, _)| *i as u32 % slice.count == slice.index)
                    .map(|(_, t)| t),
            );
        }
        Box::new(
            self.whole_arrivals(seed, whole)
                .enumerate()
                .filter(move |(i, _)| *i as u32 % slice.count == slice.index)
                .map(|(_, t)| t),
        )
    }

    /// With `stages`: this plan's visits of the group, in order of arrival, each with the
    /// index `k` of its client in this plan (see [`PlanGroup::client_id`]).
    pub fn stage_visits(&self) -> Vec<(u32, fleet::Visit)> {
        let slice = self.slice;
        self.visits()
            .into_iter()
            .filter(|v| v.slot % slice.count == slice.index)
            .map(|v| (v.slot / slice.count, v))
            .collect()
    }

    fn visits(&self) -> Vec<fleet::Visit> {
        fleet::visits(self.start, &self.stages)
    }

    fn whole_arrivals(
        &self,
        seed: u64,
        clients: u32,
    ) -> impl Iterator<Item = Duration> + Send + use<> {
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(crate::seed::mix(
            seed,
            0xA5A5_0000 + self.index as u64,
        ));
        let exp = Exp::new(self.rate).expect("a group's rate is more than 0 (units::Rate)");
        let (start, rate, pattern) = (self.start, self.rate, self.pattern);
        let mut t = 0.0f64;
        (0..clients).map(move |i| {
            let secs = match pattern {
                ArrivalPattern::Uniform => f64::from(i) / rate,
                ArrivalPattern::Poisson => {
                    if i > 0 {
                        t += exp.sample(&mut rng);
                    }
                    t
                }
            };
            start + Duration::from_secs_f64(secs)
        })
    }
}

/// Handshake headers travel to worker processes as text; they were valid when the plan was
/// compiled, and a worker that reads one back that is not is told so, not crashed.
mod header_pairs {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

    pub fn serialize<S: Serializer>(
        v: &[(HeaderName, HeaderValue)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(&str, &[u8])> = v.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
        pairs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, D::Error> {
        let pairs: Vec<(String, Vec<u8>)> = Vec::deserialize(d)?;
        pairs
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    HeaderName::from_bytes(k.as_bytes()).map_err(D::Error::custom)?,
                    HeaderValue::from_bytes(&v).map_err(D::Error::custom)?,
                ))
            })
            .collect()
    }
}

mod header_value {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    pub fn serialize<S: Serializer>(v: &Option<HeaderValue>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|v| v.as_bytes()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HeaderValue>, D::Error> {
        Option::<Vec<u8>>::deserialize(d)?
            .map(|v| HeaderValue::from_bytes(&v).map_err(D::Error::custom))
            .transpose()
    }
}
