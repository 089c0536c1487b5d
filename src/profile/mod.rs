//! The YAML behaviour profile: what the user wrote, as serde types, and nothing else.
//!
//! This module only reads: serde checks structure, types and units (`deny_unknown_fields`
//! everywhere, unit types from [`crate::units`]) and its errors carry a line and column. What
//! the values mean and whether they fit together is the plan's business: [`crate::plan`]
//! compiles a [`Document`] into a checked, typed plan in one pass, and names each problem by
//! its path, which [`locate`] turns back into a line and column.
//!
//! The enums here are the vocabulary users write (`full-jitter`, `drop-all`, `downstream`);
//! later stages use them as they are rather than keep copies. The schema imports no runtime
//! module.

mod conversation;
mod fleet;
mod locate;
mod read;
mod schema;

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::backoff::Strategy;
use crate::units::{ByteRate, ByteSize, Dur, Percent, Rate};

pub use conversation::*;
pub use fleet::*;
pub use locate::locate;
pub use read::{Document, MAX_DEPTH, MAX_PROFILE_BYTES, load, parse};
pub use schema::schema;

/// A wsstorm behaviour profile: who connects to what, how they behave, and what happens to
/// them when.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Names the run in reports and in the results directory.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Seed of the run's random choices (arrival gaps, backoff jitter, shares); default 1.
    #[serde(default)]
    pub seed: Option<u64>,
    /// How long the run lasts.
    pub duration: Dur,
    /// Time clients get at the end of the run to close cleanly before they are cut.
    #[serde(default)]
    pub grace: Option<Dur>,
    pub target: Target,
    /// The simulated clients, in groups that share a behaviour.
    pub groups: Vec<Group>,
    /// Faults scheduled during the run.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// What `wsstorm compare` runs when no `--strategy` is given.
    #[serde(default)]
    pub compare: Option<CompareSettings>,
    /// Pass/fail conditions on the run's figures (`rtt.p99 < 50ms`); any failure exits 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<ThresholdSpec>,
    /// How `wsstorm capacity` steps the load up until the thresholds break.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacitySettings>,
    /// The run is expected to connect nothing (a target that refuses everyone): without it, a
    /// run in which no connection ever opened fails (exit 1), so a wrong port is not a pass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expect_failures: bool,
}

/// A capacity search: one run per step, the load raised each step, until a threshold fails or
/// `max` is reached.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapacitySettings {
    /// What grows from step to step.
    pub vary: CapacityVary,
    /// The group whose load is stepped (needed when the profile has several).
    #[serde(default)]
    pub group: Option<String>,
    /// Load of the first step: clients held, new connections per second, or messages per
    /// second across the group, as `vary` says.
    pub start: f64,
    /// Added each step (default: `start`). Give `step` or `factor`, not both.
    #[serde(default)]
    pub step: Option<f64>,
    /// Multiplied each step (e.g. 2 doubles the load).
    #[serde(default)]
    pub factor: Option<f64>,
    /// The ceiling: no step goes above it.
    pub max: f64,
    /// How long each step holds its load (after the ramp, for `connections`).
    pub hold: Dur,
    /// A regression gate: exit 1 when the last good step is below this load.
    #[serde(default)]
    pub expect: Option<f64>,
}

#[cfg(test)]
impl CapacitySettings {
    /// 100 to 450 in steps of 100 (or as a test changes it), 5 s each, expecting 200: the
    /// search the plan's and the results' tests share.
    pub(crate) fn example(vary: CapacityVary) -> CapacitySettings {
        CapacitySettings {
            vary,
            group: None,
            start: 100.0,
            step: None,
            factor: None,
            max: 450.0,
            hold: Dur(std::time::Duration::from_secs(5)),
            expect: Some(200.0),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityVary {
    /// Clients connected and held (arrival rate as the group says).
    Connections,
    /// New connections per second, arriving for the whole hold.
    ConnectionRate,
    /// Echo messages per second across the group (each client's `send.every` is set from it).
    MessageRate,
}

impl CapacityVary {
    pub fn name(self) -> &'static str {
        match self {
            CapacityVary::Connections => "connections",
            CapacityVary::ConnectionRate => "connection-rate",
            CapacityVary::MessageRate => "message-rate",
        }
    }
    /// The unit a step's load is written in.
    pub fn unit(self) -> &'static str {
        match self {
            CapacityVary::Connections => "clients",
            CapacityVary::ConnectionRate => "connections/s",
            CapacityVary::MessageRate => "messages/s",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareSettings {
    /// Backoff strategies to run the profile with, one run each, every group alike.
    pub strategies: Vec<Strategy>,
}

/// `target: embedded`, `target: ws://host:port/path`, or the long form with settings.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub url: String,
    pub server: ServerSettings,
    pub tls: TlsSettings,
    /// Put the fault proxy between the clients and the target (groups may opt out).
    pub via_proxy: bool,
    pub proxy: ProxySettings,
}

/// The long form of `target`: a URL with settings.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TargetMap {
    /// `embedded`, or a ws:// or wss:// URL.
    url: String,
    #[serde(default)]
    server: ServerSettings,
    #[serde(default)]
    tls: TlsSettings,
    /// Put the fault proxy between the clients and the target (groups may opt out).
    #[serde(default)]
    via_proxy: bool,
    #[serde(default)]
    proxy: ProxySettings,
}

/// The fault proxy a run starts when `via_proxy` is set.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    pub listen: String,
    /// Bytes read per chunk (and queued per direction when nothing holds chunks back).
    pub buffer: ByteSize,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            listen: "127.0.0.1:0".into(),
            buffer: ByteSize(16 * 1024),
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Target;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`embedded`, a ws:// or wss:// URL, or a map with `url`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Target, E> {
                Ok(Target {
                    url: v.to_string(),
                    server: ServerSettings::default(),
                    tls: TlsSettings::default(),
                    via_proxy: false,
                    proxy: ProxySettings::default(),
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Target, A::Error> {
                let m = TargetMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Target {
                    url: m.url,
                    server: m.server,
                    tls: m.tls,
                    via_proxy: m.via_proxy,
                    proxy: m.proxy,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Target {
    pub fn is_embedded(&self) -> bool {
        self.url == "embedded"
    }
}

/// Settings of the embedded target server (ignored for external targets).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Where the embedded server listens; port 0 picks a free port.
    pub listen: String,
    /// The upgrade path; other paths get HTTP 404.
    pub path: String,
    /// Handshakes accepted per second; excess handshakes get HTTP 503 with Retry-After.
    pub accept_rate: Option<Rate>,
    /// Burst the accept-rate bucket allows (default: a tenth of a second's worth, at least 1).
    pub accept_burst: Option<u32>,
    /// The Retry-After value sent with a 503.
    pub retry_after: Dur,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    pub backlog: u32,
    /// Worker threads of the embedded server's own runtime when it runs inside `wsstorm run`.
    pub threads: usize,
    /// Largest message (and frame) accepted; bigger ones are closed with 1009.
    pub max_message: ByteSize,
    /// Per-connection limit on messages received.
    pub rate_limit: Option<RateLimit>,
    /// The server pings its clients and drops those that do not answer.
    pub heartbeat: Option<Heartbeat>,
    /// Connections that receive nothing for a while are dropped (like a load balancer or NAT).
    pub idle_timeout: Option<IdleTimeout>,
    /// Handshakes cost server time: the capacity model that turns storms metastable.
    pub handshake: Option<HandshakeCost>,
    /// HMAC-signed tokens checked at the handshake and during the session.
    pub auth: Option<ServerAuth>,
    /// A sequenced stream published to every subscribed client.
    pub stream: Option<StreamSettings>,
    /// What the server does with a client that reads slower than it is sent to.
    pub backpressure: Backpressure,
    /// Kernel send buffer (SO_SNDBUF) of each server socket; default: the kernel's.
    pub socket_send_buffer: Option<ByteSize>,
    /// CPU priority of the embedded target inside `wsstorm run`: the nice value its threads
    /// (and the fault proxy's, which share them) are set to, 0 (default) to 19. On a machine
    /// the target shares with the swarm, a high value lets the clients keep their schedule (a
    /// storm's connect()s start together) and a starved server shows as latency, as it would
    /// on a loaded server of its own.
    pub nice: u8,
    /// Serve wss:// with a certificate generated at start.
    pub tls: Option<ServerTls>,
    /// Speak Socket.IO v4 (Engine.IO 4) to `protocol: socket.io` clients: the open packet,
    /// namespace connects, events echoed, acks answered, and Engine.IO's heartbeat in place of
    /// `heartbeat`: ping `2` every `ping_every` (pingInterval, Socket.IO's default 25s), drop
    /// a client whose pong `3` is `timeout` late (pingTimeout, default 20s).
    pub socket_io: Option<Heartbeat>,
    /// Most connections held open at once; more are refused as `over_limit` says.
    pub max_connections: Option<u64>,
    /// Most connections held open at once from one source IP address.
    pub max_connections_per_ip: Option<u64>,
    /// How a connection over `max_connections` or `max_connections_per_ip` is refused:
    /// `reject` (HTTP 503 with Retry-After, default) or `close-1013` (upgrade, then close
    /// with 1013 try again later).
    pub over_limit: OverLimit,
    /// The oldest a connection may get: the server closes it this long after it opened (as
    /// load balancers and API gateways cap a connection's age).
    pub max_lifetime: Option<Dur>,
    /// Spread of `max_lifetime`: each connection's lifetime is drawn uniformly within ± this,
    /// so connections opened together do not all expire together (default 0s).
    pub lifetime_jitter: Option<Dur>,
    /// How a connection at `max_lifetime` is closed: a close code (default 1001 going away)
    /// or `abrupt` (TCP closed without a close frame).
    pub lifetime_close: Option<LifetimeClose>,
    /// Origins allowed to connect (`https://app.example`); an upgrade with another Origin, or
    /// none, gets HTTP 403. Empty (default): any.
    pub allowed_origins: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OverLimit {
    /// HTTP 503 at the handshake, with Retry-After from `retry_after`.
    #[default]
    Reject,
    /// Accept the upgrade, then close with 1013 (try again later).
    #[serde(rename = "close-1013")]
    Close1013,
}

/// `lifetime_close: 1001` or `lifetime_close: abrupt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum LifetimeClose {
    /// A close frame with this code.
    Code(u16),
    /// `abrupt`: the TCP connection closed without a close frame.
    Abrupt(AbruptWord),
}

// By hand rather than `untagged`: serde's untagged errors say only "did not match any
// variant".
impl<'de> Deserialize<'de> for LifetimeClose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "a close code such as 1001, or `abrupt`";
        impl serde::de::Visitor<'_> for V {
            type Value = LifetimeClose;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<LifetimeClose, E> {
                u16::try_from(v)
                    .map(LifetimeClose::Code)
                    .map_err(|_| E::custom(format!("{v} is not a close code, expected {EXPECTED}")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<LifetimeClose, E> {
                Err(E::custom(format!(
                    "{v} is not a close code, expected {EXPECTED}"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LifetimeClose, E> {
                match v {
                    "abrupt" => Ok(LifetimeClose::Abrupt(AbruptWord::Abrupt)),
                    _ => Err(E::custom(format!(
                        "unknown close `{v}`, expected {EXPECTED}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AbruptWord {
    Abrupt,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub max: Rate,
    /// `close` (1008 policy violation) or `error` (an error message; the message is dropped).
    #[serde(default)]
    pub action: RateLimitAction,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RateLimitAction {
    #[default]
    Close,
    Error,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdleTimeout {
    pub after: Dur,
    /// `silent`: stop answering without closing (a NAT entry that expired: nobody is told);
    /// `close`: close the TCP connection (a load balancer that cuts idle connections).
    #[serde(default)]
    pub mode: IdleMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IdleMode {
    #[default]
    Silent,
    Close,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandshakeCost {
    /// Server time one handshake costs.
    pub service_time: Dur,
    /// Handshakes served at once.
    #[serde(default = "one")]
    pub workers: u32,
    /// Handshakes that may wait; beyond it the server answers 503 at once.
    pub queue: u32,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerAuth {
    /// Shared HMAC-SHA256 secret; clients of a run against the embedded target use it too.
    #[serde(default = "default_secret")]
    pub secret: String,
    /// What a session whose token expires (or is revoked) meets: `close` (4001 on expiry,
    /// 4003 on `revoke`; the default) or `ghost` (it stays open, pings answered, but nothing
    /// is delivered to it any more: a ghost connection).
    #[serde(default)]
    pub on_expiry: AuthExpiry,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AuthExpiry {
    #[default]
    Close,
    Ghost,
}

pub fn default_secret() -> String {
    "wsstorm-demo-secret".into()
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// Messages published per second to every subscriber.
    pub rate: Rate,
    #[serde(default = "default_message_bytes")]
    pub bytes: ByteSize,
    /// How many recent messages are kept for clients that resume.
    #[serde(default = "default_history")]
    pub history: u32,
    /// Order of a resumed connection's messages: `in-order` (the kept backlog, then live; the
    /// default) or `after-live` (live messages first, the backlog after them: out of order).
    #[serde(default)]
    pub replay: Replay,
    /// `drop` (default): a subscription ends with its connection. `keep`: the server keeps a
    /// session per client identity (the identity header) with its subscriptions across
    /// reconnects; a connection that subscribes again without resuming adds one more.
    #[serde(default)]
    pub sessions: Sessions,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Replay {
    #[default]
    InOrder,
    AfterLive,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Sessions {
    #[default]
    Drop,
    Keep,
}

fn default_history() -> u32 {
    10_000
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Backpressure {
    /// Bytes queued for one client before the policy applies.
    pub buffer: ByteSize,
    pub on_full: OnFull,
}

impl Default for Backpressure {
    fn default() -> Self {
        Backpressure {
            buffer: ByteSize(256 * 1024),
            on_full: OnFull::Drop,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnFull {
    /// Drop new messages for that client (counted).
    #[default]
    Drop,
    /// Close with 1008 (policy violation).
    #[serde(rename = "close-1008")]
    Close1008,
    /// Close with 1009 (message too big: the backlog is).
    #[serde(rename = "close-1009")]
    Close1009,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub certificate: CertKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CertKind {
    /// Signed by a CA generated for the run; clients with `trust_embedded_ca` connect.
    Valid,
    /// Signed by itself: no client trusts it.
    SelfSigned,
    /// Signed by the run's CA but expired yesterday.
    Expired,
    /// Signed by the run's CA for another host name.
    WrongHost,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:0".into(),
            path: "/ws".into(),
            accept_rate: None,
            accept_burst: None,
            retry_after: Dur(std::time::Duration::from_secs(1)),
            backlog: 4096,
            threads: 1,
            max_message: ByteSize(64 * 1024),
            rate_limit: None,
            heartbeat: None,
            idle_timeout: None,
            handshake: None,
            auth: None,
            stream: None,
            backpressure: Backpressure::default(),
            socket_send_buffer: None,
            nice: 0,
            tls: None,
            socket_io: None,
            max_connections: None,
            max_connections_per_ip: None,
            over_limit: OverLimit::Reject,
            max_lifetime: None,
            lifetime_jitter: None,
            lifetime_close: None,
            allowed_origins: Vec::new(),
        }
    }
}

/// TLS options for `wss://` targets.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// A PEM file of CA certificates to trust instead of the built-in web roots.
    pub ca_file: Option<String>,
    /// Accept any certificate. For testing only: nothing is verified.
    pub insecure_skip_verify: bool,
    /// The name to verify the certificate against (default: the URL's host).
    pub server_name: Option<String>,
    /// Trust the CA the embedded target generated for this run (embedded wss:// only).
    pub trust_embedded_ca: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = fleet::arrival_or_stages)]
pub struct Group {
    pub name: String,
    /// How many clients the group runs.
    pub clients: u32,
    /// How the clients arrive: a rate (`arrival`) or k6-style `stages`, one of the two.
    #[serde(default)]
    pub arrival: Option<Arrival>,
    /// Ramp up, hold, ramp down: the number of clients present follows these steps from 0 at
    /// the start of the run (in place of `arrival`; `clients` is their highest target).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<Stage>,
    #[serde(default = "default_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_timeout")]
    pub handshake_timeout: Dur,
    /// Extra handshake headers: Origin, Authorization, Cookie, …
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Offered in Sec-WebSocket-Protocol.
    #[serde(default)]
    pub subprotocols: Vec<String>,
    /// The most a connection reads from its socket at once (default 512 B; 64 KiB at most),
    /// into a buffer its thread's connections share: no connection keeps a read buffer. A
    /// frame longer than that is read into its own buffer, as much at once as is there.
    #[serde(default = "default_read_buffer")]
    pub read_buffer: ByteSize,
    /// Kernel receive buffer (SO_RCVBUF) of each client socket; default: the kernel's, which
    /// grows to megabytes on loopback. Small values model constrained (mobile, IoT) clients.
    #[serde(default)]
    pub socket_recv_buffer: Option<ByteSize>,
    /// Go through the fault proxy (default: `target.via_proxy`).
    #[serde(default)]
    pub via_proxy: Option<bool>,
    /// Local addresses to connect from, client by client in turn: `127.0.0.2`, or a range
    /// `127.0.0.2-127.0.0.101`. Spreads clients over addresses (ports per address run out near
    /// 28k) and gives a partition something to split.
    #[serde(default)]
    pub source_addrs: Vec<String>,
    /// `deflate`: offer permessage-deflate (RFC 7692) and compress messages when the server
    /// accepts; a server that declines gets a plain connection. Default: off. Each compressed
    /// connection carries a compressor (~230 KiB) once it sends and an inflater (~40 KiB) once
    /// it receives.
    #[serde(default)]
    pub compression: Option<Compression>,
    /// The header each upgrade request carries so the server's logs can be matched to this
    /// run: `<run>-<client>-<attempt>` (e.g. `1a2b3c4d-17-3`). Default `X-Wsstorm-Client`;
    /// another name (`X-Request-Id`), or `none` to send none.
    #[serde(default)]
    pub identity_header: Option<String>,
    #[serde(default)]
    pub behaviour: Behaviour,
}

/// Per-message compression a group's clients offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// permessage-deflate (RFC 7692).
    Deflate,
}

fn default_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}

/// What each client's own read buffer started at when it had one. Bigger reads cost no
/// memory per idle connection now; a connection that is sent many small messages at a time
/// reads them in fewer system calls, and holds what it read until it has handed it out.
fn default_read_buffer() -> ByteSize {
    ByteSize(512)
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Arrival {
    /// New clients per second.
    pub rate: Rate,
    /// When the first client of the group starts.
    #[serde(default)]
    pub start: Dur,
    #[serde(default)]
    pub pattern: ArrivalPattern,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ArrivalPattern {
    /// Evenly spaced: client i starts at start + i / rate.
    #[default]
    Uniform,
    /// Exponential gaps with the given mean rate (independent users arriving).
    Poisson,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Send an echo message every `every`; the round trip is measured.
    #[serde(default)]
    pub send: Option<Send>,
    #[serde(default)]
    pub heartbeat: Option<Heartbeat>,
    /// Slow consumer: read at most this many messages per second.
    #[serde(default)]
    pub read: Option<Read>,
    /// Half-open client: freeze (no reads, no pongs, no sends) for a while, then wake.
    #[serde(default)]
    pub sleep: Option<Sleep>,
    /// Connect with an HMAC token that expires.
    #[serde(default)]
    pub auth: Option<ClientAuth>,
    /// Subscribe to the target's sequenced stream and count lost/duplicated messages.
    #[serde(default)]
    pub subscribe: Option<Subscribe>,
    /// Send one malformed frame after the connection opens.
    #[serde(default)]
    pub abuse: Option<Abuse>,
    /// Hold a real application's conversation: steps, periodic requests, reply rules,
    /// streams, application errors (see the README, "Testing your own server").
    #[serde(default)]
    pub conversation: Option<Conversation>,
    /// A CSV or JSONL file whose rows feed `{{feed.COLUMN}}` in templates.
    #[serde(default)]
    pub feeder: Option<Feeder>,
    #[serde(default)]
    pub reconnect: Reconnect,
    /// The client drops its own connections at random (a phone losing signal).
    #[serde(default)]
    pub churn: Option<Churn>,
    /// Clients leave after a random lifetime and new ones take their place.
    #[serde(default)]
    pub session: Option<Session>,
    /// A share of the clients switches networks once and reconnects from another address.
    #[serde(default)]
    pub network_switch: Option<NetworkSwitch>,
    /// A background tab: reads (and so pongs) late, but not frozen.
    #[serde(default)]
    pub throttle: Option<Throttle>,
    /// A buggy client opens a second connection and leaves the first open.
    #[serde(default)]
    pub duplicate_connections: Option<DuplicateConnections>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Read {
    pub max_rate: Rate,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    /// Time after each open before the client freezes.
    pub after: Dur,
    /// How long it stays frozen.
    pub duration: Dur,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// Lifetime of each token the client obtains.
    pub lifetime: Dur,
    /// `refresh`: get a new token before reconnecting when it has expired, and after a
    /// 401/4001; `naive`: keep reconnecting with the token it has.
    pub on_expiry: Expiry,
    /// Where the token goes: `header` (Authorization: Bearer) or `query` (?token=).
    #[serde(default)]
    pub send_as: TokenPlace,
    /// HMAC secret (default: the embedded target's).
    #[serde(default)]
    pub secret: Option<String>,
    /// Mint JSON Web Tokens instead of wsstorm's own tokens.
    #[serde(default)]
    pub jwt: Option<Jwt>,
    /// A refresh takes time and may fail (default: instant, never fails).
    #[serde(default)]
    pub refresh: Option<Refresh>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Expiry {
    Refresh,
    Naive,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TokenPlace {
    #[default]
    Header,
    Query,
    /// Only where a template says `{{token}}`.
    None,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    /// Ask to resume after a reconnect from the last position saved.
    #[serde(default)]
    pub resume: bool,
    /// Save the position only every N messages (at-least-once: resuming replays the rest);
    /// default: every message.
    #[serde(default)]
    pub checkpoint_every: Option<u32>,
    /// A connection that delivers no stream message for this long has stalled (a ghost:
    /// open, answering pings, delivering nothing); counted in `totals.stalled`.
    #[serde(default)]
    pub stall_after: Option<Dur>,
    /// What a client does with a stalled connection: `reconnect` (close it with 4000 and
    /// connect again; the default) or `count` (only count it and keep waiting).
    #[serde(default)]
    pub on_stall: OnStall,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnStall {
    #[default]
    Reconnect,
    Count,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Abuse {
    pub kind: AbuseKind,
    /// Time after the open when the frame is sent.
    #[serde(default)]
    pub after: Dur,
    /// Declared size of the `oversized` frame (default 1MiB).
    #[serde(default)]
    pub bytes: Option<ByteSize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AbuseKind {
    /// A text frame whose payload is not UTF-8 (expect 1007).
    InvalidUtf8,
    /// A frame larger than the server accepts (expect 1009).
    Oversized,
    /// A frame with reserved opcode 0x3 (expect 1002).
    ReservedOpcode,
    /// A client frame without a mask (expect 1002).
    Unmasked,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Send {
    /// Open loop: a message every this often, whatever the replies do.
    #[serde(default)]
    pub every: Option<Dur>,
    /// Closed loop: keep this many messages in flight, sending the next as an echo returns.
    #[serde(default)]
    pub in_flight: Option<u32>,
    #[serde(default = "default_message_bytes")]
    pub bytes: ByteSize,
}

fn default_message_bytes() -> ByteSize {
    ByteSize(64)
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub ping_every: Dur,
    /// A pong that does not arrive within this time marks the connection dead.
    pub timeout: Dur,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    #[serde(default)]
    pub backoff: BackoffSettings,
    /// Per close code (`1000`, a range `4000-4999`, or `default`): `retry` or `stop`.
    /// A connection that ended without a close frame counts as 1006.
    #[serde(default)]
    pub on_close: BTreeMap<String, Decision>,
    /// Per HTTP status of a refused handshake (`401`, `5xx`, or `default`).
    #[serde(default)]
    pub on_status: BTreeMap<String, Decision>,
    /// A connection the server or the network ends sooner than this after it opened is a
    /// flap, counted in `totals.flaps` (default 1s): a server that accepts and drops at once.
    #[serde(default)]
    pub flap_below: Option<Dur>,
}

/// What a client does after a close or a refused handshake. Written `retry`, `stop`,
/// `refresh-auth`, or `{ retry-after: 2s }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Reconnect after the backoff delay.
    Retry,
    /// Give up (counted in gave_up).
    Stop,
    /// Get a new token, then reconnect after the backoff delay.
    RefreshAuth,
    /// Reconnect after this delay (politely, e.g. after 1001 going away), not the backoff.
    RetryAfter(Dur),
}

impl<'de> Deserialize<'de> for Decision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "`retry`, `stop`, `refresh-auth` or `{ retry-after: <duration> }`";
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Decision;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Decision, E> {
                match v {
                    "retry" => Ok(Decision::Retry),
                    "stop" => Ok(Decision::Stop),
                    "refresh-auth" => Ok(Decision::RefreshAuth),
                    _ => Err(E::custom(format!(
                        "unknown decision `{v}`, expected {EXPECTED}"
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Decision, A::Error> {
                let key: String = map
                    .next_key()?
                    .ok_or_else(|| serde::de::Error::custom(format!("expected {EXPECTED}")))?;
                if key != "retry-after" {
                    return Err(serde::de::Error::custom(format!(
                        "unknown decision `{key}`, expected {EXPECTED}"
                    )));
                }
                let d: Dur = map.next_value()?;
                if map.next_key::<String>()?.is_some() {
                    return Err(serde::de::Error::custom(
                        "`retry-after` takes no other keys",
                    ));
                }
                Ok(Decision::RetryAfter(d))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffSettings {
    pub strategy: Strategy,
    #[serde(default = "default_base")]
    pub base: Dur,
    #[serde(default = "default_cap")]
    pub cap: Dur,
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Consecutive failed attempts before the client gives up (counted in `gave_up`).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Round every retry up to the next multiple of this since the run start: clients that
    /// retry "on the next full second" (synchronized by the clock, not by the failure).
    #[serde(default)]
    pub align: Option<Dur>,
    /// Go back to the first delay only once a connection has stayed open this long (default:
    /// as soon as one opens). Against a server that accepts and drops at once (flapping), the
    /// delay keeps growing instead of looping hot.
    #[serde(default)]
    pub reset_after: Option<Dur>,
    /// A per-client retry budget (token bucket): every retry spends a token; with none left
    /// the retry waits for the next one.
    #[serde(default)]
    pub budget: Option<RetryBudget>,
    /// Add up to this share at random to a fixed delay: a server's Retry-After or an
    /// `on_close` `retry-after:` (default 0%: obeyed to the letter, in lock-step).
    #[serde(default)]
    pub retry_after_jitter: Option<Percent>,
}

/// `{ size: 10, refill: 1/s }`: at most `size` retries in a burst, `refill` more per unit of
/// time.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    pub size: u32,
    pub refill: Rate,
}

fn default_base() -> Dur {
    Dur(std::time::Duration::from_millis(100))
}
fn default_cap() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}
fn default_multiplier() -> f64 {
    2.0
}

impl Default for BackoffSettings {
    fn default() -> Self {
        BackoffSettings {
            strategy: Strategy::FullJitter,
            base: default_base(),
            cap: default_cap(),
            multiplier: default_multiplier(),
            max_attempts: None,
            align: None,
            reset_after: None,
            budget: None,
            retry_after_jitter: None,
        }
    }
}

/// One timeline entry as written: `{ at: 10s, action: drop-all, mode: abrupt }`. The fields
/// that an action does not take are rejected by [`validate`], which keeps the YAML flat.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    pub at: Dur,
    pub action: ActionKind,
    /// drop-all: abrupt, reset or close; cut and idle-timeout: reset or fin.
    #[serde(default)]
    pub mode: Option<DropMode>,
    /// Close code for `mode: close`.
    #[serde(default)]
    pub code: Option<u16>,
    /// Share of the connections (partition: of the source addresses) affected.
    #[serde(default)]
    pub share: Option<Percent>,
    /// How long `restart` refuses new connections.
    #[serde(default)]
    pub down_for: Option<Dur>,
    /// latency: added delay; slicer: time between pieces.
    #[serde(default)]
    pub delay: Option<Dur>,
    /// latency: ± this much, uniformly.
    #[serde(default)]
    pub jitter: Option<Dur>,
    /// bandwidth: bytes per second.
    #[serde(default)]
    pub rate: Option<ByteRate>,
    /// slicer: piece size.
    #[serde(default)]
    pub bytes: Option<ByteSize>,
    /// idle-timeout: how long a connection may carry nothing.
    #[serde(default)]
    pub after: Option<Dur>,
    /// Proxy faults: how long the fault lasts (default: until `heal` or the end).
    #[serde(default)]
    pub duration: Option<Dur>,
    /// Proxy faults: both (default), upstream (client to server) or downstream.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// refuse: also cut the connections already open.
    #[serde(default)]
    pub cut_existing: Option<bool>,
    /// drain, rolling-restart: the window the closes are spread over (each connection at its
    /// own seeded offset, uniformly).
    #[serde(default)]
    pub over: Option<Dur>,
    /// rolling-restart: how many nodes the embedded target runs as behind its balancer.
    #[serde(default)]
    pub nodes: Option<u32>,
    /// rolling-restart: time between one node's restart and the next's.
    #[serde(default)]
    pub every: Option<Dur>,
    /// drain: also stop accepting (the listener closes, new connections are refused) until
    /// the drain's window is over.
    #[serde(default)]
    pub refuse_new: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// The embedded server drops its connections.
    DropAll,
    /// The embedded server drops everything and refuses connections for `down_for`.
    Restart,
    /// The embedded server stops answering a share of its connections without closing them
    /// (a hung process, a dead peer): only heartbeats can tell.
    Hang,
    /// The embedded server de-authorizes a share of its open sessions: each is closed with
    /// 4003, or ghosted with `server.auth.on_expiry: ghost`.
    Revoke,
    /// Proxy: close a share of the connections now (reset or fin).
    Cut,
    /// Proxy: stop forwarding without closing.
    Blackhole,
    /// Proxy: delay ± jitter.
    Latency,
    /// Proxy: limit bytes per second.
    Bandwidth,
    /// Proxy: forward in small pieces with pauses.
    Slicer,
    /// Proxy: close connections idle for `after`.
    IdleTimeout,
    /// Proxy: refuse new connections (for `duration`, or until `heal`).
    Refuse,
    /// Proxy: blackhole the clients of a share of source addresses.
    Partition,
    /// Proxy: remove every fault in force.
    Heal,
    /// The embedded server closes a share of its connections with a close frame (`code`,
    /// default 1001), spread over `over`; new connections are still accepted.
    Drain,
    /// The embedded server runs as `nodes` nodes behind a balancer and restarts them one at a
    /// time, `every` apart: each node drains its connections (`code`, default 1012, over
    /// `over`) and takes no new ones until the next node's turn.
    RollingRestart,
}

impl ActionKind {
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::DropAll => "drop-all",
            ActionKind::Restart => "restart",
            ActionKind::Hang => "hang",
            ActionKind::Revoke => "revoke",
            ActionKind::Cut => "cut",
            ActionKind::Blackhole => "blackhole",
            ActionKind::Latency => "latency",
            ActionKind::Bandwidth => "bandwidth",
            ActionKind::Slicer => "slicer",
            ActionKind::IdleTimeout => "idle-timeout",
            ActionKind::Refuse => "refuse",
            ActionKind::Partition => "partition",
            ActionKind::Heal => "heal",
            ActionKind::Drain => "drain",
            ActionKind::RollingRestart => "rolling-restart",
        }
    }

    /// Whether the fault proxy carries this action out (otherwise the embedded server does).
    pub fn is_proxy(self) -> bool {
        !matches!(
            self,
            ActionKind::DropAll
                | ActionKind::Restart
                | ActionKind::Hang
                | ActionKind::Revoke
                | ActionKind::Drain
                | ActionKind::RollingRestart
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DropMode {
    /// TCP closed with FIN and no close frame: clients see 1006. (`fin` is the same.)
    #[serde(alias = "fin")]
    #[schemars(transform = schema::alias("fin"))]
    Abrupt,
    /// TCP reset (RST): clients see 1006, usually as a reset.
    Reset,
    /// A close frame with `code` (1001 going away, 1012 service restart, …).
    Close,
}

/// A threshold as a profile writes it: the expression alone, or with options.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ThresholdSpec {
    Expr(String),
    Full(ThresholdOptions),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdOptions {
    pub expr: String,
    /// Stop the run as soon as the threshold fails (checked once a second).
    #[serde(default)]
    pub abort_on_fail: bool,
    /// Not checked for aborting before this much of the run (let the load ramp up).
    #[serde(default)]
    pub delay: Option<Dur>,
}

// By hand rather than `untagged`: serde's untagged errors say only "did not match any
// variant", and a misspelt `abort_on_fial` deserves its own message.
impl<'de> Deserialize<'de> for ThresholdSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ThresholdSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an expression like `rtt.p99 < 50ms`, or { expr, abort_on_fail, delay }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ThresholdSpec, E> {
                Ok(ThresholdSpec::Expr(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<ThresholdSpec, A::Error> {
                ThresholdOptions::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(ThresholdSpec::Full)
            }
        }
        d.deserialize_any(V)
    }
}

impl ThresholdSpec {
    pub fn expr(&self) -> &str {
        match self {
            ThresholdSpec::Expr(e) => e,
            ThresholdSpec::Full(o) => &o.expr,
        }
    }
}

/// Which way data flows: `upstream` is client → server, `downstream` server → client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    #[default]
    Both,
    Upstream,
    Downstream,
}

impl Direction {
    /// Whether data flowing `up` (client → server) or down is in this direction.
    pub fn covers(self, up: bool) -> bool {
        match self {
            Direction::Both => true,
            Direction::Upstream => up,
            Direction::Downstream => !up,
        }
    }
}

/// A problem in a profile, with its place in the file when it is known.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted path of the offending value (`groups[0].behaviour.reconnect`); empty for the root.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{file}: cannot read profile: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}
