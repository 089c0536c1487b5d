//! A profile turned into what will happen: groups with client id ranges and arrival schedules,
//! each group's resolved client behaviour, and the timeline of actions. Pure and deterministic
//! from the seed; the swarm only executes it.

pub mod budget;
pub mod capacity;

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::Xoshiro128PlusPlus;
use rand_distr::{Distribution, Exp};
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use crate::auth::Signer;
use crate::backoff::Backoff;
use crate::profile::{
    self, AbuseKind, ActionKind, ArrivalPattern, Decision, DropMode as ProfileDropMode, Expiry,
    Profile, TokenPlace,
};
use crate::proxy::{CutMode, Fault};
use crate::server::{Action, DropMode, ServerConfig};
use crate::units::{ByteRate, ByteSize, Percent};

#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub description: Option<String>,
    pub seed: u64,
    pub duration: Duration,
    /// Time clients get to close cleanly once the run ends.
    pub grace: Duration,
    pub target: PlanTarget,
    pub tls: profile::TlsSettings,
    pub groups: Vec<PlanGroup>,
    pub timeline: Vec<PlannedAction>,
    /// The fault proxy, when any group goes through it.
    pub proxy: Option<ProxyPlan>,
    /// Client worker processes (0: clients run in this process). Set by the budget check.
    pub workers: usize,
    /// Embedded target processes (0: in this process). Set by the budget check.
    pub target_processes: usize,
    /// The wsstorm executable worker processes are started from (default: this one).
    pub worker_exe: Option<std::path::PathBuf>,
    /// The checked profile (with command-line overrides): what worker processes are given.
    pub profile: Profile,
    /// The profile as the user wrote it (plus command-line overrides), kept for the results.
    pub profile_yaml: String,
    /// Checked at the end (and, with `abort_on_fail`, once a second during the run).
    pub thresholds: Vec<crate::results::threshold::Threshold>,
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
    },
}

#[derive(Clone, Debug)]
pub struct PlanGroup {
    pub index: usize,
    pub name: String,
    pub clients: u32,
    /// Global id of the group's first client; ids are contiguous across groups.
    pub first_client: u32,
    pub rate: f64,
    pub start: Duration,
    pub pattern: ArrivalPattern,
    /// Connect through the fault proxy.
    pub via_proxy: bool,
    pub behaviour: Arc<ClientBehaviour>,
}

/// Everything a client of a group needs to know, shared by all clients of the group.
#[derive(Debug)]
pub struct ClientBehaviour {
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub subprotocols: Option<HeaderValue>,
    pub read_buffer: usize,
    pub socket_recv_buffer: Option<u32>,
    /// Client `i` connects from `source_addrs[i % len]`.
    pub source_addrs: Vec<std::net::IpAddr>,
    pub send: Option<SendPlan>,
    pub heartbeat: Option<HeartbeatPlan>,
    pub backoff: Backoff,
    /// Retries rounded up to a multiple of this since the run start (clock-synchronized).
    pub align: Option<Duration>,
    pub on_close: DecisionTable,
    pub on_status: DecisionTable,
    /// Slow consumer: messages read per second at most.
    pub read_rate: Option<f64>,
    /// Freeze `for` after `after` of every connection.
    pub sleep: Option<SleepPlan>,
    pub auth: Option<AuthPlan>,
    pub subscribe: Option<SubscribePlan>,
    pub abuse: Option<AbusePlan>,
}

#[derive(Clone, Copy, Debug)]
pub struct SleepPlan {
    pub after: Duration,
    pub duration: Duration,
}

#[derive(Clone, Debug)]
pub struct AuthPlan {
    pub signer: Signer,
    pub lifetime: Duration,
    /// `refresh`: mint a new token when the old one has expired; `naive`: never.
    pub refresh: bool,
    pub place: TokenPlace,
}

#[derive(Clone, Copy, Debug)]
pub struct SubscribePlan {
    pub resume: bool,
    /// The resume position is saved every this many messages (1 = every message).
    pub checkpoint_every: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct AbusePlan {
    pub kind: AbuseKind,
    pub after: Duration,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct SendPlan {
    /// Open loop period; `None` for a closed loop.
    pub every: Option<Duration>,
    /// Closed loop: messages kept in flight.
    pub in_flight: u32,
    pub bytes: usize,
}

#[derive(Clone, Copy, Debug)]
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

/// A set of close codes or HTTP statuses a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSet {
    Exact(u16),
    /// Inclusive range, e.g. `4000-4999` or the class `5xx`.
    Range(u16, u16),
}

impl CodeSet {
    pub fn parse_close(key: &str) -> Option<CodeSet> {
        Self::parse(key, 1000, 4999, false)
    }

    pub fn parse_status(key: &str) -> Option<CodeSet> {
        Self::parse(key, 100, 599, true)
    }

    fn parse(key: &str, lo: u16, hi: u16, classes: bool) -> Option<CodeSet> {
        let key = key.trim();
        if key == "default" {
            return Some(CodeSet::Range(0, u16::MAX));
        }
        let ok = |c: u16| (lo..=hi).contains(&c);
        if classes
            && let Some(d) = key.strip_suffix("xx")
            && let Ok(h) = d.parse::<u16>()
            && ok(h * 100)
        {
            return Some(CodeSet::Range(h * 100, h * 100 + 99));
        }
        if let Some((a, b)) = key.split_once('-') {
            let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            return (ok(a) && ok(b) && a <= b).then_some(CodeSet::Range(a, b));
        }
        let c = key.parse().ok()?;
        ok(c).then_some(CodeSet::Exact(c))
    }

    fn width(self) -> u32 {
        match self {
            CodeSet::Exact(_) => 1,
            CodeSet::Range(a, b) => u32::from(b - a) + 1,
        }
    }

    fn contains(self, code: u16) -> bool {
        match self {
            CodeSet::Exact(c) => c == code,
            CodeSet::Range(a, b) => (a..=b).contains(&code),
        }
    }
}

/// Per-code decisions; the narrowest matching rule wins, so `1000: stop` beats `1000-1999: retry`
/// beats `default`.
#[derive(Clone, Debug)]
pub struct DecisionTable {
    rules: Vec<(CodeSet, Decision)>,
}

impl DecisionTable {
    /// With no rules every code retries: that is what a typical reconnecting client does.
    pub fn from_map(map: &std::collections::BTreeMap<String, Decision>, close: bool) -> Self {
        let mut rules: Vec<(CodeSet, Decision)> = map
            .iter()
            .filter_map(|(k, d)| {
                let set = if close {
                    CodeSet::parse_close(k)
                } else {
                    CodeSet::parse_status(k)
                };
                set.map(|s| (s, *d))
            })
            .collect();
        rules.sort_by_key(|(s, _)| s.width());
        DecisionTable { rules }
    }

    pub fn decide(&self, code: u16) -> Decision {
        self.find(code).unwrap_or(Decision::Retry)
    }

    fn find(&self, code: u16) -> Option<Decision> {
        self.rules
            .iter()
            .find(|(s, _)| s.contains(code))
            .map(|(_, d)| *d)
    }
}

/// Command-line values that replace the profile's own.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub target: Option<String>,
    pub clients: Option<u32>,
    pub duration: Option<Duration>,
    pub seed: Option<u64>,
}

impl Overrides {
    /// Apply to a parsed profile. `--clients` with several groups keeps their proportions.
    pub fn apply(&self, p: &mut Profile) {
        if let Some(t) = &self.target {
            p.target.url = t.clone();
        }
        if let Some(d) = self.duration {
            p.duration = crate::units::Dur(d);
        }
        if let Some(s) = self.seed {
            p.seed = Some(s);
        }
        if let Some(n) = self.clients {
            let total: u64 = p.groups.iter().map(|g| u64::from(g.clients)).sum();
            let mut left = n;
            let count = p.groups.len();
            for (i, g) in p.groups.iter_mut().enumerate() {
                let share = if i + 1 == count {
                    left
                } else {
                    (u64::from(n) * u64::from(g.clients))
                        .checked_div(total)
                        .map_or(n / count as u32, |s| s as u32)
                };
                g.clients = share.min(left);
                left -= g.clients;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.target.is_none()
            && self.clients.is_none()
            && self.duration.is_none()
            && self.seed.is_none()
    }
}

pub const DEFAULT_SEED: u64 = 1;

impl Plan {
    /// Build from a validated profile. The YAML text is carried into the results.
    pub fn new(p: &Profile, profile_yaml: String) -> Plan {
        let target = if p.target.is_embedded() {
            let s = &p.target.server;
            PlanTarget::Embedded {
                config: Box::new(server_config(s)),
                threads: s.threads,
            }
        } else {
            PlanTarget::External {
                url: p.target.url.clone(),
            }
        };
        let mut next_id = 0u32;
        let groups = p
            .groups
            .iter()
            .enumerate()
            .map(|(index, g)| {
                let b = &g.behaviour;
                let bo = &b.reconnect.backoff;
                let refresh = b
                    .auth
                    .as_ref()
                    .is_some_and(|a| a.on_expiry == Expiry::Refresh);
                // A refreshing client answers an expired token (4001 in session, 401 at the
                // handshake) by getting a new one, unless the profile says otherwise.
                let mut on_close = b.reconnect.on_close.clone();
                let mut on_status = b.reconnect.on_status.clone();
                if refresh {
                    on_close
                        .entry("4001".into())
                        .or_insert(Decision::RefreshAuth);
                    on_status
                        .entry("401".into())
                        .or_insert(Decision::RefreshAuth);
                }
                let secret = b
                    .auth
                    .as_ref()
                    .and_then(|a| a.secret.clone())
                    .or_else(|| p.target.server.auth.as_ref().map(|a| a.secret.clone()));
                let behaviour = ClientBehaviour {
                    connect_timeout: g.connect_timeout.0,
                    handshake_timeout: g.handshake_timeout.0,
                    headers: g
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                HeaderName::from_bytes(k.as_bytes()).expect("validated"),
                                HeaderValue::from_str(v).expect("validated"),
                            )
                        })
                        .collect(),
                    subprotocols: (!g.subprotocols.is_empty()).then(|| {
                        HeaderValue::from_str(&g.subprotocols.join(", ")).expect("validated")
                    }),
                    read_buffer: g.read_buffer.0 as usize,
                    socket_recv_buffer: g
                        .socket_recv_buffer
                        .map(|b| b.0.min(u64::from(u32::MAX)) as u32),
                    source_addrs: g
                        .source_addrs
                        .iter()
                        .flat_map(|a| parse_addr_range(a).unwrap_or_default())
                        .collect(),
                    send: b.send.as_ref().map(|s| SendPlan {
                        every: s.every.map(|e| e.0),
                        in_flight: s.in_flight.unwrap_or(0),
                        bytes: s.bytes.0 as usize,
                    }),
                    heartbeat: b.heartbeat.as_ref().map(|h| HeartbeatPlan {
                        ping_every: h.ping_every.0,
                        timeout: h.timeout.0,
                    }),
                    backoff: Backoff {
                        strategy: bo.strategy,
                        base: bo.base.0,
                        cap: bo.cap.0,
                        multiplier: bo.multiplier,
                        max_attempts: bo.max_attempts,
                    },
                    align: bo.align.map(|a| a.0),
                    on_close: DecisionTable::from_map(&on_close, true),
                    on_status: DecisionTable::from_map(&on_status, false),
                    read_rate: b.read.as_ref().map(|r| r.max_rate.0),
                    sleep: b.sleep.as_ref().map(|s| SleepPlan {
                        after: s.after.0,
                        duration: s.duration.0,
                    }),
                    auth: b.auth.as_ref().map(|a| AuthPlan {
                        signer: Signer::new(
                            secret.as_deref().unwrap_or(&profile::default_secret()),
                        ),
                        lifetime: a.lifetime.0,
                        refresh,
                        place: a.send_as,
                    }),
                    subscribe: b.subscribe.as_ref().map(|s| SubscribePlan {
                        resume: s.resume,
                        checkpoint_every: s.checkpoint_every.unwrap_or(1),
                    }),
                    abuse: b.abuse.as_ref().map(|a| AbusePlan {
                        kind: a.kind,
                        after: a.after.0,
                        bytes: a.bytes.map(|b| b.0).unwrap_or(1 << 20),
                    }),
                };
                let group = PlanGroup {
                    index,
                    name: g.name.clone(),
                    clients: g.clients,
                    first_client: next_id,
                    rate: g.arrival.rate.0,
                    start: g.arrival.start.0,
                    pattern: g.arrival.pattern,
                    via_proxy: g.via_proxy.unwrap_or(p.target.via_proxy),
                    behaviour: Arc::new(behaviour),
                };
                next_id += g.clients;
                group
            })
            .collect();
        let mut timeline: Vec<PlannedAction> = p
            .timeline
            .iter()
            .map(|e| PlannedAction {
                at: e.at.0,
                action: timeline_action(e),
            })
            .collect();
        // Stable sort: actions at the same instant fire in the order written.
        timeline.sort_by_key(|a| a.at);
        Plan {
            name: p.name.clone(),
            description: p.description.clone(),
            seed: p.seed.unwrap_or(DEFAULT_SEED),
            duration: p.duration.0,
            grace: p.grace.map(|g| g.0).unwrap_or(Duration::from_secs(2)),
            target,
            tls: p.target.tls.clone(),
            groups,
            timeline,
            proxy: (p.target.via_proxy || p.groups.iter().any(|g| g.via_proxy == Some(true))).then(
                || ProxyPlan {
                    listen: p
                        .target
                        .proxy
                        .listen
                        .parse()
                        .expect("validated proxy listen address"),
                    buffer: p.target.proxy.buffer.0 as usize,
                },
            ),
            workers: 0,
            target_processes: 0,
            worker_exe: None,
            profile: p.clone(),
            profile_yaml,
            // Validation parsed every one; an unparsable one cannot reach a plan.
            thresholds: p.thresholds.iter().filter_map(|t| t.parse().ok()).collect(),
        }
    }

    pub fn total_clients(&self) -> u32 {
        self.groups.iter().map(|g| g.clients).sum()
    }
}

impl PlanGroup {
    /// Offsets from the run start at which the group's clients arrive, in client order.
    pub fn arrivals(&self, seed: u64) -> impl Iterator<Item = Duration> + Send + use<> {
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(crate::seed::mix(
            seed,
            0xA5A5_0000 + self.index as u64,
        ));
        let exp = Exp::new(self.rate).expect("rate validated > 0");
        let (start, rate, pattern) = (self.start, self.rate, self.pattern);
        let mut t = 0.0f64;
        (0..self.clients).map(move |i| {
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

fn timeline_action(e: &profile::TimelineEntry) -> TimelineAction {
    let share = Percent(e.share.map(|s| s.0).unwrap_or(1.0));
    let direction = e.direction.unwrap_or_default();
    let duration = e.duration;
    let cut_mode = match e.mode {
        Some(ProfileDropMode::Abrupt) => CutMode::Fin,
        _ => CutMode::Reset,
    };
    let server = |a| TimelineAction::Server(a);
    let proxy = |f| TimelineAction::Proxy(f);
    match e.action {
        ActionKind::DropAll => server(Action::DropAll {
            mode: match e.mode.unwrap_or(ProfileDropMode::Abrupt) {
                ProfileDropMode::Abrupt => DropMode::Abrupt,
                ProfileDropMode::Reset => DropMode::Reset,
                ProfileDropMode::Close => DropMode::Close(e.code.unwrap_or(1001)),
            },
            share: share.0,
        }),
        ActionKind::Restart => server(Action::Restart {
            down_for: e.down_for.map(|d| d.0).unwrap_or_default(),
        }),
        ActionKind::Hang => server(Action::Hang { share: share.0 }),
        ActionKind::Cut => proxy(Fault::Cut {
            mode: cut_mode,
            share,
        }),
        ActionKind::Blackhole => proxy(Fault::Blackhole {
            share,
            direction,
            duration,
        }),
        ActionKind::Latency => proxy(Fault::Latency {
            delay: e.delay.unwrap_or_default(),
            jitter: e.jitter.unwrap_or_default(),
            share,
            direction,
            duration,
        }),
        ActionKind::Bandwidth => proxy(Fault::Bandwidth {
            rate: e.rate.unwrap_or(ByteRate(1.0)),
            share,
            direction,
            duration,
        }),
        ActionKind::Slicer => proxy(Fault::Slicer {
            bytes: e.bytes.unwrap_or(ByteSize(1)),
            delay: e.delay.unwrap_or_default(),
            share,
            direction,
            duration,
        }),
        ActionKind::IdleTimeout => proxy(Fault::IdleTimeout {
            after: e.after.unwrap_or_default(),
            mode: cut_mode,
            share,
            duration,
        }),
        ActionKind::Refuse => proxy(Fault::Refuse {
            cut_existing: e.cut_existing.unwrap_or(false),
            duration,
        }),
        ActionKind::Partition => proxy(Fault::Partition { share, duration }),
        ActionKind::Heal => TimelineAction::Heal,
    }
}

/// The embedded server's configuration from the profile's `target.server` settings.
pub fn server_config(s: &profile::ServerSettings) -> ServerConfig {
    use crate::server::{Backpressure, Heartbeat, IdleTimeout, RateLimit, StreamConfig};
    ServerConfig {
        listen: s
            .listen
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        path: s.path.clone(),
        accept_rate: s.accept_rate.map(|r| r.0),
        accept_burst: s.accept_burst,
        retry_after: s.retry_after.0,
        backlog: s.backlog,
        // Small, so a hundred thousand idle connections stay cheap; it grows for bigger
        // messages.
        read_buffer: 1024,
        max_message: s.max_message.0 as usize,
        rate_limit: s.rate_limit.as_ref().map(|r| RateLimit {
            per_second: r.max.0,
            action: r.action,
        }),
        heartbeat: s.heartbeat.as_ref().map(|h| Heartbeat {
            ping_every: h.ping_every.0,
            timeout: h.timeout.0,
        }),
        idle_timeout: s.idle_timeout.as_ref().map(|i| IdleTimeout {
            after: i.after.0,
            mode: i.mode,
        }),
        handshake: s.handshake.as_ref().map(|h| crate::server::HandshakeCost {
            service_time: h.service_time.0,
            workers: h.workers,
            queue: h.queue,
        }),
        auth_secret: s.auth.as_ref().map(|a| a.secret.clone()),
        stream: s.stream.as_ref().map(|st| StreamConfig {
            rate: st.rate.0,
            bytes: st.bytes.0 as usize,
            history: st.history as usize,
        }),
        backpressure: Backpressure {
            limit: s.backpressure.buffer.0 as usize,
            on_full: s.backpressure.on_full,
        },
        socket_send_buffer: s.socket_send_buffer.map(|b| b.0 as usize),
        nice: s.nice,
        tls: s.tls.as_ref().map(|t| t.certificate),
        reuse_port: false,
    }
}

/// Most addresses one `source_addrs` entry may expand to.
pub const MAX_SOURCE_ADDRS: u32 = 65_536;

/// `127.0.0.2` or an IPv4 range `127.0.0.2-127.0.0.101` (inclusive).
pub fn parse_addr_range(s: &str) -> Result<Vec<std::net::IpAddr>, String> {
    use std::net::{IpAddr, Ipv4Addr};
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let a: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{a}` is not an IPv4 address"))?;
        let b: Ipv4Addr = b
            .trim()
            .parse()
            .map_err(|_| format!("`{b}` is not an IPv4 address"))?;
        let (lo, hi) = (u32::from(a), u32::from(b));
        if lo > hi {
            return Err(format!("the range `{s}` runs backwards"));
        }
        if hi - lo >= MAX_SOURCE_ADDRS {
            return Err(format!(
                "the range `{s}` has more than {MAX_SOURCE_ADDRS} addresses"
            ));
        }
        return Ok((lo..=hi).map(|v| IpAddr::V4(Ipv4Addr::from(v))).collect());
    }
    s.parse::<IpAddr>()
        .map(|a| vec![a])
        .map_err(|_| format!("`{s}` is not an IP address or a range like 127.0.0.2-127.0.0.101"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Plan {
        let p = profile::parse(yaml, "t.yaml").unwrap();
        Plan::new(&p, yaml.into())
    }

    const BASE: &str = "
name: t
duration: 10s
target: embedded
groups:
  - name: a
    clients: 5
    arrival: { rate: 10/s, start: 1s }
  - name: b
    clients: 3
    arrival: { rate: 2/s, pattern: poisson }
timeline:
  - { at: 5s, action: restart, down_for: 1s }
  - { at: 2s, action: drop-all, mode: close, code: 1012, share: 50% }
";

    #[test]
    fn uniform_arrivals_are_exact() {
        let p = plan(BASE);
        let a: Vec<u128> = p.groups[0].arrivals(1).map(|d| d.as_millis()).collect();
        assert_eq!(a, [1000, 1100, 1200, 1300, 1400]);
        assert_eq!(p.groups[1].first_client, 5);
        assert_eq!(p.total_clients(), 8);
    }

    #[test]
    fn poisson_arrivals_are_seeded() {
        let p = plan(BASE);
        let a: Vec<_> = p.groups[1].arrivals(7).collect();
        let b: Vec<_> = p.groups[1].arrivals(7).collect();
        let c: Vec<_> = p.groups[1].arrivals(8).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a[0], Duration::ZERO);
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn timeline_is_sorted_and_resolved() {
        let p = plan(BASE);
        assert_eq!(p.timeline[0].at, Duration::from_secs(2));
        assert_eq!(
            p.timeline[0].action,
            TimelineAction::Server(Action::DropAll {
                mode: DropMode::Close(1012),
                share: 0.5
            })
        );
        assert_eq!(
            p.timeline[1].action,
            TimelineAction::Server(Action::Restart {
                down_for: Duration::from_secs(1)
            })
        );
    }

    #[test]
    fn proxy_faults_are_planned() {
        let yaml = "
name: t
duration: 10s
target: { url: embedded, via_proxy: true }
groups:
  - { name: a, clients: 1, arrival: { rate: 1/s } }
  - { name: b, clients: 1, arrival: { rate: 1/s }, via_proxy: false }
timeline:
  - { at: 1s, action: latency, delay: 100ms, jitter: 10ms, direction: downstream }
  - { at: 2s, action: cut, mode: fin, share: 30% }
  - { at: 3s, action: heal }
";
        let p = plan(yaml);
        assert!(p.proxy.is_some());
        assert!(p.groups[0].via_proxy && !p.groups[1].via_proxy);
        assert_eq!(
            p.timeline[0].action.to_string(),
            "proxy latency 100ms ± 10ms downstream"
        );
        assert_eq!(
            p.timeline[1].action,
            TimelineAction::Proxy(Fault::Cut {
                mode: CutMode::Fin,
                share: Percent(0.3)
            })
        );
        assert_eq!(p.timeline[2].action, TimelineAction::Heal);
    }

    #[test]
    fn decision_table_prefers_the_narrowest_rule() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("default".to_string(), Decision::Stop);
        m.insert("1000-1999".to_string(), Decision::Retry);
        m.insert("1008".to_string(), Decision::Stop);
        let t = DecisionTable::from_map(&m, true);
        assert_eq!(t.decide(1006), Decision::Retry);
        assert_eq!(t.decide(1008), Decision::Stop);
        assert_eq!(t.decide(4001), Decision::Stop);
        let empty = DecisionTable::from_map(&Default::default(), true);
        assert_eq!(empty.decide(1000), Decision::Retry);

        let mut s = std::collections::BTreeMap::new();
        s.insert("5xx".to_string(), Decision::Retry);
        s.insert("default".to_string(), Decision::Stop);
        let t = DecisionTable::from_map(&s, false);
        assert_eq!(t.decide(503), Decision::Retry);
        assert_eq!(t.decide(401), Decision::Stop);
    }

    #[test]
    fn code_sets() {
        assert_eq!(CodeSet::parse_close("1000"), Some(CodeSet::Exact(1000)));
        assert_eq!(
            CodeSet::parse_close("4000-4999"),
            Some(CodeSet::Range(4000, 4999))
        );
        assert_eq!(CodeSet::parse_close("999"), None);
        assert_eq!(CodeSet::parse_close("5xx"), None);
        assert_eq!(CodeSet::parse_status("5xx"), Some(CodeSet::Range(500, 599)));
        assert_eq!(CodeSet::parse_status("4001"), None);
    }

    #[test]
    fn client_override_keeps_proportions() {
        let mut p = profile::parse(BASE, "t").unwrap();
        Overrides {
            clients: Some(80),
            ..Default::default()
        }
        .apply(&mut p);
        assert_eq!(p.groups[0].clients, 50);
        assert_eq!(p.groups[1].clients, 30);
        Overrides {
            clients: Some(1),
            ..Default::default()
        }
        .apply(&mut p);
        assert_eq!(p.groups[0].clients + p.groups[1].clients, 1);
    }
}
