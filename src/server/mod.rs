//! The embedded target: a WebSocket server with the behaviours and faults that make the
//! article's failure modes reproducible — echo, a sequenced stream with resume, HMAC auth with
//! expiry, limits (size, UTF-8, protocol, rate), backpressure for slow clients, heartbeats, idle
//! timeouts, a handshake capacity model, generated TLS certificates, and timeline faults.
//!
//! Shape follows mini-redis: the caller binds ([`Server::bind`]), then [`Server::run`] accepts
//! until the shutdown token fires. One accept loop owns the listener and the accept-rate token
//! bucket, so admission needs no lock. Each connection is one task ([`connection`]) that watches
//! the order channel; a [`ServerHandle`] publishes orders (drop-all, restart, hang).
//!
//! Inside `wsstorm run` the server gets its own runtime and threads ([`EmbeddedServer::start`])
//! so the clients' runtime and the server's do not silently share worker threads.

mod connection;
pub mod identity;
pub mod processes;
pub mod socketio;
pub mod stream;
pub mod tls;
mod upgrade;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::net::background::{Background, Service, Threads};
use crate::net::listener::{Reservation, listen_shared};
use crate::net::striped::Striped;

use crate::auth::Signer;
use crate::profile::{CertKind, IdleMode, OnFull, OverLimit, RateLimitAction};

/// The handshake capacity model: `workers` handshakes at a time, `service_time` each, at most
/// `queue` waiting.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct HandshakeCost {
    pub service_time: Duration,
    pub workers: u32,
    pub queue: u32,
}

/// Per-connection limit on messages received.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub action: RateLimitAction,
}

/// The server pings every `ping_every` and drops a client whose pong is `timeout` late.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    pub ping_every: Duration,
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct IdleTimeout {
    pub after: Duration,
    pub mode: IdleMode,
}

/// The sequenced stream published to every subscriber.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Messages published per second.
    pub rate: f64,
    pub bytes: usize,
    /// Messages kept for clients that resume.
    pub history: usize,
    /// A resumed connection gets live messages first and the kept backlog after them.
    #[serde(default)]
    pub replay_after_live: bool,
    /// Subscriptions outlive their connection: kept per client identity.
    #[serde(default)]
    pub keep_sessions: bool,
}

/// Bytes queued for one client before `on_full` applies.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Backpressure {
    pub limit: usize,
    pub on_full: OnFull,
}

/// Everything the embedded server does, resolved from the profile by the plan. Serializable:
/// the processes of a multi-process server are given it as it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub path: String,
    /// Handshakes admitted per second; `None` admits all.
    pub accept_rate: Option<f64>,
    pub accept_burst: Option<u32>,
    pub retry_after: Duration,
    pub backlog: u32,
    /// The most a connection reads at once, into a buffer its thread's connections share.
    pub read_buffer: usize,
    pub max_message: usize,
    pub rate_limit: Option<RateLimit>,
    pub heartbeat: Option<Heartbeat>,
    pub idle_timeout: Option<IdleTimeout>,
    pub handshake: Option<HandshakeCost>,
    pub auth_secret: Option<String>,
    pub stream: Option<StreamConfig>,
    pub backpressure: Backpressure,
    pub socket_send_buffer: Option<usize>,
    /// CPU priority (nice) of the server's threads inside `wsstorm run`.
    pub nice: u8,
    pub tls: Option<CertKind>,
    /// Share the port with other server processes (SO_REUSEPORT).
    pub reuse_port: bool,
    /// Speak Socket.IO v4 (Engine.IO 4) on every connection; its ping is the heartbeat.
    #[serde(default)]
    pub socket_io: Option<socketio::SocketIo>,
    /// Headers that carry a client's identity (`<run>-<client>-<attempt>`), lower case: the
    /// ones the run's groups send.
    #[serde(default = "identity::default_headers")]
    pub identity_headers: Vec<String>,
    /// A session whose token expired (or was revoked) stays open but gets nothing (ghost)
    /// instead of being closed.
    #[serde(default)]
    pub auth_ghost: bool,
    /// Connection caps and how a connection over them is refused.
    #[serde(default)]
    pub limits: ConnectionLimits,
    /// The oldest a connection may get before the server closes it.
    #[serde(default)]
    pub max_lifetime: Option<Lifetime>,
    /// Origins allowed to upgrade; empty: any. Others get 403.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Nodes the target runs as behind its balancer (a rolling restart's `nodes`; 1: one).
    #[serde(default = "one_node")]
    pub nodes: u32,
}

impl ServerConfig {
    /// Whether an upgrade with this `Origin` passes `allowed_origins`. An Origin's scheme and
    /// host are case-insensitive (RFC 6454) and it has no path, so the whole value compares
    /// without regard to ASCII case.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(origin))
    }
}

fn one_node() -> u32 {
    1
}

/// Most nodes a rolling restart may run the target as.
pub const MAX_NODES: usize = 32;

/// `max_connections` and `max_connections_per_ip`: connections held at once, counted from the
/// admitted upgrade request to the end of the session.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct ConnectionLimits {
    pub max: Option<u64>,
    pub per_ip: Option<u64>,
    pub over_limit: OverLimit,
}

/// A connection is closed `after` ± `jitter` (uniform, seeded by its id) from its upgrade,
/// with `close` (a code; `None`: abruptly).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Lifetime {
    pub after: Duration,
    pub jitter: Duration,
    pub close: Option<u16>,
}

impl Lifetime {
    /// Connection `id`'s lifetime: `after` ± `jitter`, the same for the same id.
    pub(crate) fn of(&self, id: u64) -> Duration {
        if self.jitter.is_zero() {
            return self.after;
        }
        // A mix of its own, so the draw is not the one `in_share` makes for this id.
        let u = crate::seed::unit(id, 0x6c69_6665);
        // The plan keeps `jitter` below `after`.
        self.after.saturating_sub(self.jitter) + self.jitter.mul_f64(2.0 * u)
    }
}

/// A fault the timeline fires at the server.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Drop a share of the open connections.
    DropAll { mode: DropMode, share: f64 },
    /// Drop every connection abruptly and refuse new ones (closed listener) for `down_for`.
    Restart { down_for: Duration },
    /// Stop serving a share of the open connections without closing them.
    Hang { share: f64 },
    /// De-authorize a share of the open sessions: closed with 4003, or ghosted.
    Revoke { share: f64 },
    /// Close a share of the connections open when it fired with `code`, each at its own
    /// seeded offset within `over`; new connections are accepted meanwhile, unless
    /// `refuse_new` closes the listener for the window.
    Drain {
        code: u16,
        over: Duration,
        share: f64,
        refuse_new: bool,
    },
    /// One node's turn in a rolling restart of `nodes`: the balancer sends it no new
    /// connections for `out_for`, and the connections it holds are closed (`mode`) each at its
    /// own seeded offset within `over`.
    RestartNode {
        node: u32,
        nodes: u32,
        mode: DropMode,
        over: Duration,
        out_for: Duration,
    },
}

impl Action {
    /// How long after it fires the action is still closing connections: a run is not done
    /// with its timeline (nor settled) before then.
    pub fn lasts(&self) -> Duration {
        match *self {
            Action::Drain { over, .. } => over,
            Action::RestartNode { over, out_for, .. } => over.max(out_for),
            Action::DropAll { .. }
            | Action::Restart { .. }
            | Action::Hang { .. }
            | Action::Revoke { .. } => Duration::ZERO,
        }
    }

    /// Where within `over` connection `id` is closed by the order `seq`: uniform, seeded, and
    /// not the draw `in_share` makes for the same pair.
    pub(crate) fn offset(id: u64, seq: u64, over: Duration) -> Duration {
        let u = crate::seed::unit(crate::seed::mix(seq, id), 0x6472_6169);
        over.mul_f64(u)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DropMode {
    /// Close the TCP connection (FIN) without a close frame.
    Abrupt,
    /// Reset the TCP connection (RST, SO_LINGER 0).
    Reset,
    /// Send a close frame with this code, then close.
    Close(u16),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let share = |f: &mut std::fmt::Formatter, share: f64| {
            if share < 1.0 {
                write!(f, " share {}%", share * 100.0)
            } else {
                Ok(())
            }
        };
        match self {
            Action::DropAll { mode, share: s } => {
                write!(f, "drop-all ")?;
                match mode {
                    DropMode::Abrupt => write!(f, "abrupt")?,
                    DropMode::Reset => write!(f, "reset")?,
                    DropMode::Close(c) => write!(f, "close {c}")?,
                }
                share(f, *s)
            }
            Action::Restart { down_for } => {
                write!(f, "restart down_for {}", crate::units::Dur(*down_for))
            }
            Action::Hang { share: s } => {
                write!(f, "hang")?;
                share(f, *s)
            }
            Action::Revoke { share: s } => {
                write!(f, "revoke")?;
                share(f, *s)
            }
            Action::Drain {
                code,
                over,
                share: s,
                refuse_new,
            } => {
                write!(f, "drain close {code} over {}", crate::units::Dur(*over))?;
                share(f, *s)?;
                if *refuse_new {
                    write!(f, " refusing new connections")?;
                }
                Ok(())
            }
            Action::RestartNode {
                node,
                nodes,
                mode,
                over,
                ..
            } => {
                write!(f, "restart node {}/{nodes} ", node + 1)?;
                match mode {
                    DropMode::Abrupt => write!(f, "abrupt")?,
                    DropMode::Reset => write!(f, "reset")?,
                    DropMode::Close(c) => write!(f, "close {c}")?,
                }
                if !over.is_zero() {
                    write!(f, " over {}", crate::units::Dur(*over))?;
                }
                Ok(())
            }
        }
    }
}

/// What the connection tasks are told; `seq` picks a different share for every order.
/// Orders go out on a broadcast channel, not a watch: two actions fired at the same instant
/// must both arrive.
#[derive(Clone, Copy, Debug)]
struct Order {
    seq: u64,
    action: Action,
    /// When it fired: a drain or a node restart closes the connections open then, not those
    /// accepted while it runs.
    fired: Instant,
}

/// Orders queued for a connection that has not read them yet; more than this many fired
/// faster than a connection task runs would be lost (and reported as lagged).
const ORDER_BACKLOG: usize = 256;

/// Declares the server's counters once: the atomics the server updates and the plain struct
/// that goes into results.json. `events` happen at most a few times per connection (accepts,
/// refusals, closes) and are plain shared atomics; `per_message` are bumped for every message
/// and are striped per thread ([`crate::net::striped`]) so that connection tasks on different cores never
/// write the same cache line.
macro_rules! server_counters {
    (
        events { $($(#[$doc:meta])* $name:ident),* $(,)? }
        per_message { $($(#[$mdoc:meta])* $hot:ident),* $(,)? }
    ) => {
        /// Server-side counters, shared by every connection of one server process.
        #[derive(Debug, Default)]
        pub struct ServerStats {
            $(pub $name: AtomicU64,)*
            per_message: Striped<PerMessage>,
            /// Close frames the server sent, by code. A lock, but taken once per connection
            /// at most (when the server closes it), never per message.
            pub closes_sent: Mutex<BTreeMap<u16, u64>>,
            /// What went wrong in the server (a listener that could not come back): for the
            /// results, not stderr, where it would garble the dashboard.
            pub warnings: Mutex<Vec<String>>,
            /// Connections open now on each node of a rolling restart (node 0 without one):
            /// what a node's restart reports as the connections it closes.
            node_open: [AtomicU64; MAX_NODES],
        }

        /// One thread's share of the per-message counters.
        #[derive(Debug, Default)]
        struct PerMessage {
            $($hot: AtomicU64,)*
        }

        /// The embedded target's counters at the end of a run.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        pub struct ServerSummary {
            $($(#[$doc])* #[serde(default)] pub $name: u64,)*
            $($(#[$mdoc])* #[serde(default)] pub $hot: u64,)*
            #[serde(default)]
            pub closes_sent: BTreeMap<String, u64>,
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub warnings: Vec<String>,
        }

        impl ServerSummary {
            /// Add another process's counters (peaks add up too: they are per process).
            pub fn add(&mut self, o: &ServerSummary) {
                $(self.$name += o.$name;)*
                $(self.$hot += o.$hot;)*
                for (k, v) in &o.closes_sent {
                    *self.closes_sent.entry(k.clone()).or_default() += v;
                }
                self.warnings.extend(o.warnings.iter().cloned());
            }
        }

        impl ServerStats {
            /// Exact whenever it is read: every count is in a shared atomic or a stripe the
            /// moment it happens.
            pub fn summary(&self) -> ServerSummary {
                ServerSummary {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    $($hot: self
                        .per_message
                        .all()
                        .map(|s| s.$hot.load(Ordering::Relaxed))
                        .sum(),)*
                    closes_sent: self
                        .closes_sent
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .iter()
                        .map(|(k, v)| (k.to_string(), *v))
                        .collect(),
                    warnings: self
                        .warnings
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone(),
                }
            }
        }
    };
}

server_counters! {
    events {
        /// TCP connections accepted.
        accepted,
        /// Upgrades completed (101 sent).
        upgraded,
        /// 503 answers: accept-rate capacity or a full handshake queue.
        rejected_503,
        rejected_404,
        /// 401 answers: missing, forged or expired token.
        rejected_401,
        /// Upgrades that failed for other reasons (bad request, client gone, timeout).
        failed_handshakes,
        /// Handshakes the server paid service time for, whose client had already left.
        handshakes_wasted,
        /// Most handshakes waiting at once (capacity model).
        handshake_queue_peak,
        /// Connections open now.
        open,
        dropped_by_action,
        hung,
        /// Connections the server's heartbeat found dead.
        dead_detected,
        idle_timeouts,
        /// Sessions closed with 4001 when their token expired.
        auth_expired,
        /// Written by the one publisher task only.
        stream_published,
        /// Clients closed for not keeping up (backpressure `close-1008`/`close-1009`).
        backpressure_closed,
        accept_errors,
        /// Socket.IO namespace connects answered (`40…`).
        socket_io_connects,
        /// Socket.IO connections dropped for a pong (`3`) later than `ping_timeout`.
        socket_io_ping_timeouts,
        /// Upgrades that carried a client identity header.
        identified,
        /// Upgrades of a client identity that already held an open connection.
        duplicate_connections,
        /// Sessions de-authorized by the `revoke` action.
        revoked,
        /// Sessions kept open without delivery after their token expired or was revoked
        /// (`auth.on_expiry: ghost`).
        ghosted,
        /// Subscriptions added to a kept session that already had one (`stream.sessions:
        /// keep`, a client that subscribes again instead of resuming).
        duplicate_subscriptions,
        /// Kept sessions forgotten, longest idle first, when the identity ledger held its
        /// cap ([`identity::MAX_KEPT`]).
        sessions_forgotten,
        /// Connections closed by a `drain` (with its close code, within its window).
        drained,
        /// Connections closed because their node restarted (`rolling-restart`).
        node_restart_closes,
        /// Upgrades refused (503, or upgraded and closed with 1013) because `max_connections`
        /// were held.
        refused_max_connections,
        /// Upgrades refused because their source IP held `max_connections_per_ip`.
        refused_per_ip,
        /// Connections closed at `max_lifetime`.
        lifetime_closes,
        /// 403 answers: an Origin not in `allowed_origins`, or none.
        rejected_403,
    }
    per_message {
        messages_echoed,
        /// Messages refused by a connection's rate limit (a flooder's every message).
        rate_limited,
        /// Stream messages sent (live and replayed).
        stream_sent,
        stream_replayed,
        /// Messages dropped for clients that did not keep up (backpressure `drop`).
        backpressure_dropped,
        /// Engine.IO pings (`2`) sent and pongs (`3`) received.
        socket_io_pings,
        socket_io_pongs,
        /// Socket.IO events acknowledged (`43…`); events without an ack id are echoed and
        /// counted in `messages_echoed`.
        socket_io_acks,
        /// Of `stream_sent`, the extra copies a connection got for its duplicate subscriptions.
        stream_duplicate_copies,
        /// Messages (stream and echoes) withheld from ghost sessions.
        ghost_withheld,
    }
}

impl ServerStats {
    /// The calling thread's share of the per-message counters; look it up at each bump.
    fn per_message(&self) -> &PerMessage {
        self.per_message.local()
    }

    fn count_close(&self, code: u16) {
        *self
            .closes_sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(code)
            .or_default() += 1;
    }
}

/// Tokens the `revoke` action de-authorized, as (subject, expiry in ms since the epoch). A
/// token past its expiry is refused as expired anyway, so expired ones are pruned as new ones
/// come in (when the set has doubled since the last pruning): it holds at most about twice
/// the tokens still valid, however long `wsstorm serve` runs.
#[derive(Default)]
struct RevokedTokens(Mutex<RevokedSet>);

#[derive(Default)]
struct RevokedSet {
    keys: std::collections::HashSet<(u32, u64)>,
    prune_at: usize,
}

impl RevokedTokens {
    fn revoke(&self, key: (u32, u64), now_ms: u64) {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if set.keys.len() >= set.prune_at {
            set.keys.retain(|&(_, expires)| expires > now_ms);
            set.prune_at = (set.keys.len() * 2).max(1024);
        }
        set.keys.insert(key);
    }

    fn contains(&self, key: (u32, u64)) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .contains(&key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .len()
    }
}

/// Fires actions at a running server from any thread or runtime.
#[derive(Clone)]
pub struct ServerHandle {
    addr: SocketAddr,
    path: String,
    tls: bool,
    ca_pem: Option<String>,
    orders: broadcast::Sender<Order>,
    clock: Arc<OrderClock>,
    pub stats: Arc<ServerStats>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients use. With TLS the host is the certificate's name (`localhost`); clients
    /// of a run connect to [`Self::local_addr`] directly.
    pub fn url(&self) -> String {
        if self.tls {
            format!("wss://{}:{}{}", tls::HOST, self.addr.port(), self.path)
        } else {
            format!("ws://{}{}", self.addr, self.path)
        }
    }

    /// PEM of the CA that signed the server's certificate (TLS only).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Fire an action; returns how many connections were open when it fired (on the node,
    /// for a node's restart).
    pub fn apply(&self, action: Action) -> u64 {
        let fired = Instant::now();
        let (seq, open) = self.clock.fire(|| match action {
            Action::RestartNode { node, .. } => {
                self.stats.node_open[node as usize % MAX_NODES].load(Ordering::Relaxed)
            }
            _ => self.stats.open.load(Ordering::Relaxed),
        });
        // No receivers (no connection open, listener gone) is not an error.
        let _ = self.orders.send(Order { seq, action, fired });
        open
    }
}

/// Numbers the orders, and puts each in one order with the connections' opening: an order's
/// count of the open connections and its number are taken in one step, and so are a
/// connection's counting in `open` and the number of the last order before it. A drain or a
/// node's restart then applies to exactly the connections it counted (`order.seq > born`),
/// however close the two come. Connections only share the lock (one atomic each, as `open`
/// itself), and take it once, when they open.
#[derive(Default)]
struct OrderClock {
    last: AtomicU64,
    gate: std::sync::RwLock<()>,
}

impl OrderClock {
    /// A new order: its number, and what `count` saw.
    fn fire(&self, count: impl FnOnce() -> u64) -> (u64, u64) {
        let _g = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        let open = count();
        (self.last.fetch_add(1, Ordering::Relaxed) + 1, open)
    }

    /// A connection opens (`count` counts it): the number of the last order before it.
    fn open(&self, count: impl FnOnce()) -> u64 {
        let _g = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        count();
        self.last.load(Ordering::Relaxed)
    }
}

/// What every connection task shares.
struct Shared {
    clock: Arc<OrderClock>,
    config: ServerConfig,
    stats: Arc<ServerStats>,
    orders: broadcast::Sender<Order>,
    signer: Option<Signer>,
    stream: Option<Arc<stream::Stream>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Capacity model: workers and the number of handshakes waiting.
    workers: Option<Semaphore>,
    queued: AtomicU64,
    /// Session ids of the Socket.IO dialect.
    sids: socketio::Sids,
    /// Which client identities hold connections (and kept subscriptions).
    ledger: identity::Ledger,
    /// Tokens the `revoke` action de-authorized, as (subject, expiry): refused at the
    /// handshake from then on. Looked at only once a revoke has fired.
    revoked_tokens: RevokedTokens,
    any_revoked: std::sync::atomic::AtomicBool,
    /// Connections held against `max_connections`.
    held: AtomicU64,
    /// Connections held per source IP, with `max_connections_per_ip` only: taken once when a
    /// connection is admitted and once when it ends, never per message.
    held_per_ip: Option<Mutex<HashMap<IpAddr, u64>>>,
}

/// A connection's place under the connection caps, given back when it is dropped (whichever
/// way the handshake or the session ends).
struct Held<'a> {
    shared: &'a Shared,
    ip: Option<IpAddr>,
    global: bool,
}

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OverCap {
    Global,
    PerIp,
}

impl Shared {
    /// Take a place for a connection from `ip` under the caps, or say which cap is full.
    fn hold(&self, ip: IpAddr) -> Result<Held<'_>, OverCap> {
        let limits = self.config.limits;
        let mut held = Held {
            shared: self,
            ip: None,
            global: false,
        };
        if let (Some(per_ip), Some(map)) = (limits.per_ip, &self.held_per_ip) {
            let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
            let n = map.entry(ip).or_default();
            if *n >= per_ip {
                return Err(OverCap::PerIp);
            }
            *n += 1;
            held.ip = Some(ip);
        }
        if let Some(max) = limits.max {
            // `held` is dropped on the way out, giving the per-IP place back.
            self.held
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < max).then_some(n + 1)
                })
                .map_err(|_| OverCap::Global)?;
            held.global = true;
        }
        Ok(held)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.global {
            self.shared.held.fetch_sub(1, Ordering::SeqCst);
        }
        if let (Some(ip), Some(map)) = (self.ip, &self.shared.held_per_ip) {
            let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// The balancer in front of a rolling restart's nodes: new connections go round-robin to the
/// nodes not restarting. Owned by the accept loop, so it needs no lock.
struct Balancer {
    nodes: u32,
    next: u32,
    /// Until when each node takes no new connections.
    out_until: [Option<Instant>; MAX_NODES],
}

impl Balancer {
    fn new(nodes: u32) -> Self {
        Balancer {
            nodes: nodes.clamp(1, MAX_NODES as u32),
            next: 0,
            out_until: [None; MAX_NODES],
        }
    }

    fn take_out(&mut self, node: u32, until: Instant) {
        self.out_until[node as usize % MAX_NODES] = Some(until);
    }

    /// The node for a new connection: the next one up, round-robin (the next one at all if
    /// every node is out, which one restart at a time never makes).
    fn pick(&mut self, now: Instant) -> u32 {
        for i in 0..self.nodes {
            let node = (self.next + i) % self.nodes;
            if self.out_until[node as usize].is_none_or(|t| t <= now) {
                self.next = (node + 1) % self.nodes;
                return node;
            }
        }
        let node = self.next;
        self.next = (node + 1) % self.nodes;
        node
    }
}

pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    handle: ServerHandle,
}

impl Server {
    /// Bind the listening socket (backlog from the config, SO_REUSEADDR so a restart can
    /// rebind) and prepare what the config asks for (certificates, stream).
    pub async fn bind(config: ServerConfig) -> std::io::Result<Server> {
        let listener = listen_shared(config.listen, config.backlog, config.reuse_port)?;
        let addr = listener.local_addr()?;
        let generated = match config.tls {
            Some(kind) => Some(tls::generate(kind).map_err(std::io::Error::other)?),
            None => None,
        };
        let (orders, _) = broadcast::channel(ORDER_BACKLOG);
        let stats = Arc::new(ServerStats::default());
        let clock = Arc::new(OrderClock::default());
        let handle = ServerHandle {
            addr,
            path: config.path.clone(),
            tls: generated.is_some(),
            ca_pem: generated.as_ref().map(|g| g.ca_pem.clone()),
            orders: orders.clone(),
            clock: clock.clone(),
            stats: stats.clone(),
        };
        let shared = Arc::new(Shared {
            clock,
            signer: config.auth_secret.as_deref().map(Signer::new),
            stream: config.stream.map(|s| stream::Stream::new(s.history)),
            tls: generated.map(|g| g.acceptor),
            workers: config.handshake.map(|h| Semaphore::new(h.workers as usize)),
            queued: AtomicU64::new(0),
            sids: socketio::Sids::new(),
            ledger: identity::Ledger::new(),
            revoked_tokens: RevokedTokens::default(),
            any_revoked: std::sync::atomic::AtomicBool::new(false),
            held: AtomicU64::new(0),
            held_per_ip: config.limits.per_ip.map(|_| Mutex::new(HashMap::new())),
            config,
            stats,
            orders,
        });
        Ok(Server {
            listener,
            shared,
            handle,
        })
    }

    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Accept until `shutdown` fires; open connections then get a 1001 close.
    pub async fn run(self, shutdown: CancellationToken) {
        let Server {
            listener,
            shared,
            handle,
        } = self;
        let config = &shared.config;
        if let (Some(stream), Some(settings)) = (&shared.stream, config.stream) {
            tokio::spawn(stream.clone().publish(
                settings.rate,
                settings.bytes,
                shared.stats.clone(),
                shutdown.clone(),
            ));
        }
        let mut listener = Some(listener);
        let mut reserved: Option<Reservation> = None;
        let mut orders = shared.orders.subscribe();
        let mut bucket = config.accept_rate.map(|rate| {
            TokenBucket::new(
                rate,
                config
                    .accept_burst
                    .map(f64::from)
                    .unwrap_or((rate / 10.0).max(1.0)),
            )
        });
        let conns = tokio_util::task::TaskTracker::new();
        let mut next_id = 0u64;
        let mut balancer = Balancer::new(config.nodes);
        // While restarting: when to listen again.
        let mut down_until: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                order = orders.recv() => {
                    let order = match order {
                        Ok(o) => o,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    if let Action::RestartNode { node, out_for, .. } = order.action {
                        balancer.take_out(node, order.fired + out_for);
                    }
                    // A restart, or a drain that refuses new connections meanwhile.
                    if let Action::Restart { down_for }
                    | Action::Drain { refuse_new: true, over: down_for, .. } = order.action
                    {
                        // No listener: the kernel refuses new SYNs (RST), which is what
                        // clients see while a real server is down. The port stays reserved.
                        if let Some(l) = listener.take() {
                            reserved = Reservation::take(l, config.reuse_port).ok();
                        }
                        // The later of this window and one already running: a short
                        // restart inside a refusing drain must not reopen the listener early.
                        let until = Instant::now() + down_for;
                        down_until = Some(down_until.map_or(until, |d| d.max(until)));
                    }
                }
                _ = crate::net::sleep_until_opt(down_until) => {
                    down_until = None;
                    let reopened = match reserved.take() {
                        Some(r) => r.release(handle.addr, config.backlog, config.reuse_port),
                        None => listen_shared(handle.addr, config.backlog, config.reuse_port),
                    };
                    match reopened {
                        Ok(l) => listener = Some(l),
                        Err(e) => {
                            shared.stats.warnings.lock().unwrap_or_else(PoisonError::into_inner).push(format!(
                                "the embedded target could not listen again on {} after the restart, and served no new connections: {e}",
                                handle.addr
                            ));
                            break;
                        }
                    }
                }
                accepted = accept_opt(&listener) => match accepted {
                    Ok((stream, peer)) => {
                        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                        let admitted = bucket.as_mut().is_none_or(|b| b.take(Instant::now()));
                        next_id += 1;
                        conns.spawn(connection::serve(
                            stream,
                            peer,
                            next_id,
                            balancer.pick(Instant::now()),
                            admitted,
                            shared.clone(),
                            shared.orders.subscribe(),
                            shutdown.clone(),
                        ));
                    }
                    Err(e) => {
                        shared.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                        // EMFILE and friends: back off briefly instead of spinning; the server
                        // keeps serving what it has.
                        if !is_transient_accept_error(&e) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
        }
        drop(listener);
        conns.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), conns.wait()).await;
    }
}

async fn accept_opt(l: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn is_transient_accept_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
    )
}

/// `rate` tokens per second, at most `burst`: the accept-rate capacity and per-connection
/// message rate limits. Also the capacity model of `wsstorm model`, which drives it in virtual
/// time through [`TokenBucket::take_at`]: one admission rule for the server and its model.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    /// The clock `take` reads is time since this.
    origin: Instant,
    last: Duration,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            origin: Instant::now(),
            last: Duration::ZERO,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        self.take_at(now.saturating_duration_since(self.origin))
    }

    /// Take a token at `now` on a clock that starts when the bucket is made (full).
    pub fn take_at(&mut self, now: Duration) -> bool {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        // The epsilon keeps float drift from refusing the token that exactly refilled.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Service for Server {
    type Handle = ServerHandle;
    fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }
    fn run(self, shutdown: CancellationToken) -> impl std::future::Future<Output = ()> + Send {
        Server::run(self, shutdown)
    }
}

/// The embedded server on its own runtime and threads, for `wsstorm run`.
pub type EmbeddedServer = Background<ServerHandle>;

/// Start the embedded server on a new runtime with `threads` workers, at the priority its
/// config asks for.
pub async fn start_embedded(
    config: ServerConfig,
    threads: usize,
) -> std::io::Result<EmbeddedServer> {
    let threads = Threads {
        name: "wsstorm-server",
        workers: threads.max(1),
        nice: config.nice,
    };
    Background::start(threads, move || Server::bind(config)).await
}

/// A plain server for the server's own tests (a run's config comes from its plan).
#[cfg(test)]
pub(crate) fn test_config() -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        path: "/ws".into(),
        accept_rate: None,
        accept_burst: None,
        retry_after: Duration::from_secs(1),
        backlog: 1024,
        read_buffer: 1024,
        max_message: 64 << 10,
        rate_limit: None,
        heartbeat: None,
        idle_timeout: None,
        handshake: None,
        auth_secret: None,
        stream: None,
        backpressure: Backpressure {
            limit: 256 << 10,
            on_full: OnFull::Drop,
        },
        socket_send_buffer: None,
        nice: 0,
        tls: None,
        reuse_port: false,
        socket_io: None,
        identity_headers: identity::default_headers(),
        auth_ghost: false,
        limits: ConnectionLimits::default(),
        max_lifetime: None,
        allowed_origins: Vec::new(),
        nodes: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However connections and orders interleave, each order counts exactly the connections
    /// it will apply to (those numbered before it).
    #[test]
    fn an_order_applies_to_exactly_the_connections_it_counted() {
        let clock = OrderClock::default();
        let open = AtomicU64::new(0);
        let (borns, fired) = std::thread::scope(|s| {
            let openers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        (0..20_000)
                            .map(|_| {
                                clock.open(|| {
                                    open.fetch_add(1, Ordering::Relaxed);
                                })
                            })
                            .collect::<Vec<u64>>()
                    })
                })
                .collect();
            let fired: Vec<(u64, u64)> = (0..2_000)
                .map(|_| clock.fire(|| open.load(Ordering::Relaxed)))
                .collect();
            let borns: Vec<u64> = openers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            (borns, fired)
        });
        for (seq, counted) in fired {
            let applies = borns.iter().filter(|&&b| b < seq).count() as u64;
            assert_eq!(applies, counted, "order {seq}");
        }
    }

    #[test]
    fn revoked_tokens_past_their_expiry_are_pruned() {
        let r = RevokedTokens::default();
        // 100,000 revocations of tokens that expire 1 s after they are revoked, 1 ms apart.
        for i in 0..100_000u64 {
            r.revoke((i as u32, i + 1000), i);
        }
        assert!(r.len() <= 2048, "{} held", r.len());
        // The ones still valid are kept.
        assert!(r.contains((99_999, 100_999)));
        assert!(r.contains((99_500, 100_500)));
        assert!(!r.contains((5, 1005)), "long expired");
    }

    #[test]
    fn token_bucket_admits_the_rate() {
        let mut b = TokenBucket::new(100.0, 10.0);
        let t0 = b.origin;
        // The burst first, then one per 10ms.
        let burst = (0..20).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 10);
        let mut admitted = 0;
        for ms in 1..=1000 {
            if b.take(t0 + Duration::from_millis(ms)) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 100);
    }

    /// New connections go round-robin to the nodes up; a node taken out gets none until its
    /// turn is over.
    #[test]
    fn the_balancer_skips_a_restarting_node() {
        let t0 = Instant::now();
        let mut b = Balancer::new(4);
        let picks: Vec<u32> = (0..6).map(|_| b.pick(t0)).collect();
        assert_eq!(picks, [0, 1, 2, 3, 0, 1]);
        b.take_out(2, t0 + Duration::from_secs(1));
        let picks: Vec<u32> = (0..6).map(|_| b.pick(t0)).collect();
        assert_eq!(picks, [3, 0, 1, 3, 0, 1]);
        let later = t0 + Duration::from_secs(1);
        let picks: Vec<u32> = (0..4).map(|_| b.pick(later)).collect();
        assert_eq!(picks, [2, 3, 0, 1]);
        assert_eq!(Balancer::new(1).pick(t0), 0);
    }

    /// Offsets within a drain's window and lifetimes within their jitter are spread evenly,
    /// stay in their bounds, and are the same for the same connection.
    #[test]
    fn drain_offsets_and_lifetimes_are_uniform_and_seeded() {
        let over = Duration::from_secs(10);
        let mut per_second = [0u32; 10];
        for id in 0..10_000 {
            let o = Action::offset(id, 3, over);
            assert!(o < over);
            assert_eq!(o, Action::offset(id, 3, over));
            per_second[o.as_secs() as usize] += 1;
        }
        assert!(
            per_second.iter().all(|n| (900..1100).contains(n)),
            "{per_second:?}"
        );
        // Not tied to the share the same order picks: a 50% drain still spreads over all of it.
        let late = (0..10_000)
            .filter(|&id| crate::seed::in_share(id, 3, 0.5))
            .filter(|&id| Action::offset(id, 3, over) > Duration::from_secs(5))
            .count();
        assert!((2300..2700).contains(&late), "{late}");

        let l = Lifetime {
            after: Duration::from_secs(10),
            jitter: Duration::from_secs(2),
            close: Some(1001),
        };
        let lives: Vec<Duration> = (0..10_000).map(|id| l.of(id)).collect();
        assert!(
            lives
                .iter()
                .all(|d| *d >= Duration::from_secs(8) && *d <= Duration::from_secs(12))
        );
        let short = lives
            .iter()
            .filter(|d| **d < Duration::from_secs(9))
            .count();
        assert!((2300..2700).contains(&short), "{short}");
        let fixed = Lifetime {
            jitter: Duration::ZERO,
            ..l
        };
        assert!((0..100).all(|id| fixed.of(id) == Duration::from_secs(10)));
    }

    /// Per-message counts live in per-thread stripes: on a server with several worker threads
    /// they must add up exactly, the moment a client has its replies (no count waits in a
    /// connection task to be folded in later), and still after the connections have ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn per_message_counters_are_exact_during_and_after_connections() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        const CLIENTS: u64 = 8;
        const MESSAGES: u64 = 300;

        // On this test's runtime: an embedded server's threads would upset the test that
        // counts them.
        let server = Server::bind(test_config()).await.unwrap();
        let handle = server.handle();
        let shutdown = CancellationToken::new();
        tokio::spawn(server.run(shutdown.clone()));
        let url = handle.url();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                    // Several in flight, so echoes land on whichever server thread runs.
                    for i in 0..MESSAGES {
                        ws.feed(Message::text(i.to_string())).await.unwrap();
                    }
                    ws.flush().await.unwrap();
                    let mut echoes = 0;
                    while echoes < MESSAGES {
                        if let Message::Text(_) = ws.next().await.unwrap().unwrap() {
                            echoes += 1;
                        }
                    }
                    ws
                })
            })
            .collect();
        let mut open = Vec::new();
        for c in clients {
            open.push(c.await.unwrap());
        }
        let stats = &handle.stats;
        let during = stats.summary();
        assert_eq!(during.open, CLIENTS);
        assert_eq!(during.messages_echoed, CLIENTS * MESSAGES);

        for mut ws in open {
            ws.close(None).await.unwrap();
            while let Some(Ok(_)) = ws.next().await {}
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while stats.open.load(Ordering::Relaxed) > 0 {
            assert!(Instant::now() < deadline, "connections did not end");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let after = stats.summary();
        assert_eq!(after.messages_echoed, CLIENTS * MESSAGES);
        assert_eq!(after.upgraded, CLIENTS);
        assert_eq!(after.backpressure_dropped, 0);
        shutdown.cancel();
    }

    /// Every idle connection of the target is one of these futures: it is most of what a
    /// connection costs in user space (`bench/scale.py memory`), so it may not grow unnoticed.
    #[tokio::test]
    async fn connection_future_stays_small() {
        let server = Server::bind(test_config()).await.unwrap();
        let client = TcpStream::connect(server.handle().addr).await.unwrap();
        let (tcp, peer) = server.listener.accept().await.unwrap();
        let shared = server.shared.clone();
        let orders = shared.orders.subscribe();
        let fut = connection::serve(
            tcp,
            peer,
            1,
            0,
            true,
            shared,
            orders,
            CancellationToken::new(),
        );
        let size = std::mem::size_of_val(&fut);
        println!("server connection future: {size} bytes");
        // 6,144 with a 4 KiB close buffer in it; 2,248 once that went to the heap; 2,016 once
        // the session's timers became one; 1,968 as an async block (its arguments once); 1,688
        // once the WebSocket was our own (1,672 in release; the WebSocket is 128 bytes there,
        // tokio-tungstenite's was 312).
        assert!(
            size <= 1_688,
            "server connection future grew to {size} bytes"
        );
        drop(client);
    }

    /// The Socket.IO dialect over a real socket, frame by frame: the open packet first, then
    /// answers to a namespace connect, an acked and a plain event, and pings on the interval;
    /// a client that stops answering them is dropped once its pong is late.
    #[tokio::test]
    async fn socket_io_session_answers_and_pings() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let config = ServerConfig {
            socket_io: Some(socketio::SocketIo {
                ping_interval: Duration::from_millis(100),
                ping_timeout: Duration::from_millis(100),
            }),
            ..test_config()
        };
        let server = Server::bind(config).await.unwrap();
        let handle = server.handle();
        let shutdown = CancellationToken::new();
        tokio::spawn(server.run(shutdown.clone()));
        let (mut ws, _) =
            tokio_tungstenite::connect_async(handle.url() + "?EIO=4&transport=websocket")
                .await
                .unwrap();
        // The open packet comes first, unasked.
        let open = match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
            other => panic!("no open packet: {other:?}"),
        };
        let open: serde_json::Value =
            serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
        assert_eq!(open["pingInterval"], 100);
        assert_eq!(open["pingTimeout"], 100);
        assert_eq!(open["upgrades"], serde_json::json!([]));
        assert_eq!(open["sid"].as_str().unwrap().len(), 20);

        let mut ask = async |packet: &str| -> String {
            ws.send(Message::text(packet.to_string())).await.unwrap();
            loop {
                match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
                    // The server's pings come whenever they are due: answer and read on.
                    Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                        ws.send(Message::text("3")).await.unwrap();
                    }
                    Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
                    other => panic!("after {packet}: {other:?}"),
                }
            }
        };
        let connected = ask("40/chat,").await;
        assert!(connected.starts_with(r#"40/chat,{"sid":""#), "{connected}");
        assert_eq!(
            ask(r#"42/chat,12["say",{"text":"hi"}]"#).await,
            "43/chat,12[]"
        );
        assert_eq!(
            ask(r#"42/chat,["say","x"]"#).await,
            r#"42/chat,["say","x"]"#
        );
        // Answered pings keep the connection: it is still there after several intervals.
        let until = Instant::now() + Duration::from_millis(450);
        while Instant::now() < until {
            assert_eq!(ask(r#"42["k"]"#).await, r#"42["k"]"#);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stats = &handle.stats;
        let pongs = stats.summary().socket_io_pongs;
        assert!(pongs >= 3, "{pongs} pongs in 450 ms of 100 ms pings");
        assert_eq!(stats.socket_io_ping_timeouts.load(Ordering::Relaxed), 0);

        // Now silent: the next ping goes unanswered and the server drops the connection.
        let started = Instant::now();
        let end = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "2"),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the silent client was not dropped");
        assert!(
            started.elapsed() <= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        let s = stats.summary();
        assert_eq!(s.socket_io_ping_timeouts, 1);
        assert_eq!(s.dead_detected, 0);
        assert_eq!(s.socket_io_connects, 1);
        assert_eq!(s.socket_io_acks, 1);
        assert_eq!(s.socket_io_pings, s.socket_io_pongs + 1);
        shutdown.cancel();
    }

    /// The nice value in a /proc/…/stat: field 19, counted from after the command name.
    fn nice_in(stat: &str) -> Option<i64> {
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split_whitespace().nth(16)?.parse().ok()
    }

    /// The nice value of every thread of this process named `name`.
    fn nice_of_threads(name: &str) -> Vec<i64> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                (comm.trim() == name).then_some(())?;
                nice_in(&std::fs::read_to_string(dir.join("stat")).ok()?)
            })
            .collect()
    }

    #[tokio::test]
    async fn nice_lowers_the_embedded_target_only() {
        let config = ServerConfig {
            nice: 7,
            ..test_config()
        };
        let server = start_embedded(config, 2).await.unwrap();
        let target = nice_of_threads("wsstorm-server");
        server.stop();
        // The thread that runs the server and its two runtime workers.
        assert_eq!(target, vec![7, 7, 7]);
        let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        assert_eq!(
            nice_in(&own),
            Some(0),
            "the thread that started it keeps its priority"
        );
    }
}
