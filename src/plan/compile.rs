//! Profile → plan in one pass. Each part of the profile is checked and turned into its typed
//! form in the same step, so nothing is parsed twice and nothing downstream has to trust that
//! a check ran: a header that does not parse is a problem here, not an `expect` later.
//!
//! Problems are collected as `(path, message)` and come back together, each located in the
//! file by [`Document::problem`]; a compile that found any returns no plan.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use super::{
    AbusePlan, AuthPlan, ClientBehaviour, CodeSet, DEFAULT_SEED, DecisionTable, HeartbeatPlan,
    Layout, Plan, PlanGroup, PlanTarget, PlannedAction, ProxyPlan, SendPlan, SleepPlan,
    SubscribePlan, TimelineAction,
};
use crate::auth::Signer;
use crate::backoff::{Backoff, Strategy};
use crate::profile::{
    AbuseKind, ActionKind, AuthExpiry, CapacitySettings, CapacityVary, Decision, Document,
    DropMode, Expiry, Group, LifetimeClose, OnStall, OverLimit, Profile, ProfileError, Replay,
    ServerSettings, Sessions, ThresholdSpec, TimelineEntry,
};
use crate::proxy::{CutMode, Fault};
use crate::results::threshold::Threshold;
use crate::server::{
    Action, Backpressure, ConnectionLimits, HandshakeCost, Heartbeat, IdleTimeout, Lifetime,
    RateLimit, ServerConfig, StreamConfig,
};
use crate::units::{ByteRate, ByteSize, Dur, Percent};

/// Smallest echo message: the header that carries client id, sequence and send time.
pub const MIN_MESSAGE_BYTES: u64 = 48;
const MAX_MESSAGE_BYTES: u64 = 16 << 20;
/// Most addresses one `source_addrs` entry may expand to.
pub const MAX_SOURCE_ADDRS: u32 = 65_536;
/// Longest `grace` a profile may ask for.
const MAX_GRACE: Duration = Duration::from_secs(300);

/// Problems found so far, by path in the document.
#[derive(Default)]
pub(super) struct Problems(Vec<(String, String)>);

impl Problems {
    pub(super) fn bad(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push((path.into(), message.into()));
    }

    /// A duration that must be longer than zero.
    fn positive(&mut self, path: impl Into<String>, d: Duration) {
        if d.is_zero() {
            self.bad(path, "must be longer than 0s");
        }
    }
}

pub(super) fn compile(doc: &Document) -> Result<Plan, ProfileError> {
    let p = &doc.profile;
    let mut problems = Problems::default();
    let dir = std::path::Path::new(&doc.file)
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let plan = compile_into(p, &doc.text, &dir, &mut problems);
    if problems.0.is_empty() {
        Ok(plan)
    } else {
        Err(ProfileError::Invalid(
            problems
                .0
                .iter()
                .map(|(path, message)| doc.problem(path, message.as_str()))
                .collect(),
        ))
    }
}

/// The plan, as far as it can be made; `problems` says whether it may be used.
fn compile_into(p: &Profile, text: &str, dir: &std::path::Path, problems: &mut Problems) -> Plan {
    if p.name.trim().is_empty() {
        problems.bad("name", "must not be empty");
    }
    problems.positive("duration", p.duration.0);
    if let Some(g) = p.grace
        && g.0 > MAX_GRACE
    {
        problems.bad("grace", format!("{g} is more than the 5m allowed"));
    }
    let (target, proxy_settings) = target(p, problems);
    let compare = match &p.compare {
        Some(c) if c.strategies.len() < 2 => {
            problems.bad(
                "compare.strategies",
                "needs at least two strategies to compare",
            );
            Vec::new()
        }
        Some(c) => c.strategies.clone(),
        None => Vec::new(),
    };
    let thresholds = thresholds(&p.thresholds, problems);
    if let Some(c) = &p.capacity {
        check_capacity(p, c, problems);
    }
    if p.groups.is_empty() {
        problems.bad("groups", "needs at least one group");
    }
    let server = match &target {
        PlanTarget::Embedded { config, .. } => Some(&**config),
        PlanTarget::External { .. } => None,
    };
    let mut first_client = 0u32;
    let mut groups = Vec::with_capacity(p.groups.len());
    for (i, g) in p.groups.iter().enumerate() {
        let group = group(p, i, g, server, first_client, dir, problems);
        first_client = first_client.saturating_add(g.clients);
        groups.push(group);
    }
    conversation_thresholds(&thresholds, &groups, problems);
    let mut target = target;
    if let PlanTarget::Embedded { config, .. } = &mut target {
        // The embedded target reads the identity from whichever headers the groups send.
        let mut names: Vec<String> = groups
            .iter()
            .filter_map(|g| g.behaviour.identity_header.clone())
            .collect();
        names.sort();
        names.dedup();
        if !names.is_empty() {
            config.identity_headers = names;
        }
        if config.stream.is_some_and(|s| s.keep_sessions)
            && groups
                .iter()
                .any(|g| g.behaviour.subscribe.is_some() && g.behaviour.identity_header.is_none())
        {
            problems.bad(
                "target.server.stream.sessions",
                "keeps sessions by client identity, and a subscribing group sends no identity header (`identity_header: none`)",
            );
        }
    }
    let total: u64 = p.groups.iter().map(|g| u64::from(g.clients)).sum();
    if total > u64::from(u32::MAX) {
        problems.bad(
            "groups",
            format!(
                "{total} clients in all; a run has at most {} (client ids are 32-bit)",
                u32::MAX
            ),
        );
    }
    let proxied = p.target.via_proxy || p.groups.iter().any(|g| g.via_proxy == Some(true));
    let mut timeline: Vec<PlannedAction> = p
        .timeline
        .iter()
        .enumerate()
        .flat_map(|(i, e)| planned(e, timeline_action(p, i, e, proxied, problems)))
        .collect();
    if let PlanTarget::Embedded { config, .. } = &mut target {
        config.nodes = balancer_nodes(p, problems);
    }
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
        proxy: proxied.then_some(proxy_settings),
        thresholds,
        compare,
        capacity: p.capacity.clone(),
        expect_failures: p.expect_failures,
        layout: Layout::default(),
        source: text.to_string(),
        until: None,
        events: None,
        run_id: None,
    }
}

/// The target, and the proxy's settings (checked whether or not a group uses the proxy).
fn target(p: &Profile, problems: &mut Problems) -> (PlanTarget, ProxyPlan) {
    let t = &p.target;
    let listen = t.proxy.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        problems.bad(
            "target.proxy.listen",
            format!("`{}` is not an address such as 127.0.0.1:0", t.proxy.listen),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    if !(512..=(16 << 20)).contains(&t.proxy.buffer.0) {
        problems.bad("target.proxy.buffer", "must be between 512B and 16MiB");
    }
    let proxy = ProxyPlan {
        listen,
        buffer: t.proxy.buffer.0 as usize,
    };
    if t.is_embedded() {
        let config = server(&t.server, "target.server", problems);
        if t.tls.trust_embedded_ca && config.tls.is_none() {
            problems.bad(
                "target.tls.trust_embedded_ca",
                "the embedded target serves no TLS: add `target.server.tls`",
            );
        }
        let target = PlanTarget::Embedded {
            config: Box::new(config),
            threads: t.server.threads,
        };
        return (target, proxy);
    }
    if t.tls.trust_embedded_ca {
        problems.bad(
            "target.tls.trust_embedded_ca",
            "only an embedded target has a generated CA",
        );
    }
    if t.tls.ca_file.is_some() && t.tls.insecure_skip_verify {
        problems.bad(
            "target.tls",
            "set either `ca_file` or `insecure_skip_verify`, not both",
        );
    }
    let host = match url::Url::parse(&t.url) {
        Ok(u) if u.scheme() != "ws" && u.scheme() != "wss" => {
            problems.bad(
                "target.url",
                format!(
                    "`{}` is not `embedded` or a ws:// or wss:// URL (the scheme is `{}`)",
                    t.url,
                    u.scheme()
                ),
            );
            String::new()
        }
        Ok(u) => match u.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => {
                problems.bad("target.url", format!("`{}` has no host", t.url));
                String::new()
            }
        },
        Err(e) => {
            problems.bad(
                "target.url",
                format!(
                    "`{}` is not `embedded` or a valid ws:// or wss:// URL: {e}",
                    t.url
                ),
            );
            String::new()
        }
    };
    let target = PlanTarget::External {
        url: t.url.clone(),
        host,
    };
    (target, proxy)
}

/// The embedded server's configuration from its settings; `at` is where they are in the
/// document (`target.server`).
fn server(s: &ServerSettings, at: &str, problems: &mut Problems) -> ServerConfig {
    let path = |field: &str| format!("{at}.{field}");
    let listen = s.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        problems.bad(
            path("listen"),
            format!(
                "`{}` is not an address such as 127.0.0.1:0 or 127.0.0.1:9001",
                s.listen
            ),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    if !s.path.starts_with('/') {
        problems.bad(path("path"), format!("`{}` must start with /", s.path));
    }
    if s.backlog == 0 {
        problems.bad(path("backlog"), "must be at least 1");
    }
    if s.nice > 19 {
        problems.bad(
            path("nice"),
            format!(
                "{} is out of range: 0 to 19 (only a lower priority than the clients' can be \
                 asked for)",
                s.nice
            ),
        );
    }
    if !(1..=64).contains(&s.threads) {
        problems.bad(path("threads"), "must be between 1 and 64");
    }
    if s.accept_burst == Some(0) {
        problems.bad(path("accept_burst"), "must be at least 1");
    }
    if !(128..=(1 << 30)).contains(&s.max_message.0) {
        problems.bad(path("max_message"), "must be between 128B and 1GiB");
    }
    if let Some(h) = &s.heartbeat
        && (h.ping_every.0.is_zero() || h.timeout.0.is_zero())
    {
        problems.bad(
            path("heartbeat"),
            "ping_every and timeout must be longer than 0s",
        );
    }
    if let Some(i) = &s.idle_timeout {
        problems.positive(path("idle_timeout.after"), i.after.0);
    }
    if let Some(h) = &s.handshake {
        problems.positive(path("handshake.service_time"), h.service_time.0);
        if h.workers == 0 {
            problems.bad(path("handshake.workers"), "must be at least 1");
        }
        if h.queue == 0 {
            problems.bad(path("handshake.queue"), "must be at least 1");
        }
    }
    if let Some(a) = &s.auth
        && a.secret.is_empty()
    {
        problems.bad(path("auth.secret"), "must not be empty");
    }
    if let Some(st) = &s.stream {
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&st.bytes.0) {
            problems.bad(
                path("stream.bytes"),
                format!("must be between {MIN_MESSAGE_BYTES}B and 16MiB"),
            );
        }
        if st.history == 0 {
            problems.bad(path("stream.history"), "must be at least 1");
        }
    }
    if s.backpressure.buffer.0 < 1024 {
        problems.bad(path("backpressure.buffer"), "must be at least 1KiB");
    }
    if let Some(sio) = &s.socket_io {
        problems.positive(path("socket_io.ping_every"), sio.ping_every.0);
        problems.positive(path("socket_io.timeout"), sio.timeout.0);
        if s.heartbeat.is_some() {
            problems.bad(
                path("socket_io"),
                "pings with Engine.IO's `2`, which takes the place of `heartbeat`: give one",
            );
        }
    }
    if s.max_connections == Some(0) {
        problems.bad(path("max_connections"), "must be at least 1");
    }
    if s.max_connections_per_ip == Some(0) {
        problems.bad(path("max_connections_per_ip"), "must be at least 1");
    }
    if s.over_limit != OverLimit::Reject
        && s.max_connections.is_none()
        && s.max_connections_per_ip.is_none()
    {
        problems.bad(
            path("over_limit"),
            "applies to `max_connections` or `max_connections_per_ip`: give one",
        );
    }
    match (s.max_lifetime, s.lifetime_jitter, s.lifetime_close) {
        (Some(l), jitter, close) => {
            problems.positive(path("max_lifetime"), l.0);
            if let Some(j) = jitter
                && j.0 >= l.0
            {
                problems.bad(
                    path("lifetime_jitter"),
                    format!("{j} must be shorter than max_lifetime ({l})"),
                );
            }
            if let Some(LifetimeClose::Code(c)) = close
                && !sendable_close_code(c)
            {
                problems.bad(
                    path("lifetime_close"),
                    format!(
                        "{c} cannot be sent in a close frame: use 1000-1003, 1007-1014 or 3000-4999, or `abrupt`"
                    ),
                );
            }
        }
        (None, jitter, close) => {
            for (field, set) in [
                ("lifetime_jitter", jitter.is_some()),
                ("lifetime_close", close.is_some()),
            ] {
                if set {
                    problems.bad(path(field), "applies to `max_lifetime`: give it");
                }
            }
        }
    }
    for (i, o) in s.allowed_origins.iter().enumerate() {
        if o.is_empty() || HeaderValue::from_str(o).is_err() {
            problems.bad(
                path(&format!("allowed_origins[{i}]")),
                format!("`{o}` is not an Origin such as https://app.example"),
            );
        }
    }
    ServerConfig {
        limits: ConnectionLimits {
            max: s.max_connections,
            per_ip: s.max_connections_per_ip,
            over_limit: s.over_limit,
        },
        max_lifetime: s.max_lifetime.map(|l| Lifetime {
            after: l.0,
            jitter: s.lifetime_jitter.map(|j| j.0).unwrap_or_default(),
            close: match s.lifetime_close {
                None => Some(1001),
                Some(LifetimeClose::Code(c)) => Some(c),
                Some(LifetimeClose::Abrupt(_)) => None,
            },
        }),
        allowed_origins: s.allowed_origins.clone(),
        nodes: 1,
        listen,
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
        handshake: s.handshake.as_ref().map(|h| HandshakeCost {
            service_time: h.service_time.0,
            workers: h.workers,
            queue: h.queue,
        }),
        auth_secret: s.auth.as_ref().map(|a| a.secret.clone()),
        auth_ghost: s
            .auth
            .as_ref()
            .is_some_and(|a| a.on_expiry == AuthExpiry::Ghost),
        identity_headers: crate::server::identity::default_headers(),
        stream: s.stream.as_ref().map(|st| StreamConfig {
            rate: st.rate.0,
            bytes: st.bytes.0 as usize,
            history: st.history as usize,
            replay_after_live: st.replay == Replay::AfterLive,
            keep_sessions: st.sessions == Sessions::Keep,
        }),
        backpressure: Backpressure {
            limit: s.backpressure.buffer.0 as usize,
            on_full: s.backpressure.on_full,
        },
        socket_send_buffer: s.socket_send_buffer.map(|b| b.0 as usize),
        nice: s.nice,
        tls: s.tls.as_ref().map(|t| t.certificate),
        reuse_port: false,
        socket_io: s
            .socket_io
            .as_ref()
            .map(|h| crate::server::socketio::SocketIo {
                ping_interval: h.ping_every.0,
                ping_timeout: h.timeout.0,
            }),
    }
}

/// The embedded server's configuration from `target.server` settings alone (`wsstorm serve`),
/// or every problem with them, each naming its field.
pub fn server_config(s: &ServerSettings) -> Result<ServerConfig, String> {
    let mut problems = Problems::default();
    let config = server(s, "target.server", &mut problems);
    if problems.0.is_empty() {
        Ok(config)
    } else {
        Err(problems
            .0
            .iter()
            .map(|(path, m)| format!("{path}: {m}"))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

fn thresholds(specs: &[ThresholdSpec], problems: &mut Problems) -> Vec<Threshold> {
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        match Threshold::parse(spec.expr()) {
            Ok(mut t) => {
                if let ThresholdSpec::Full(o) = spec {
                    t.abort_on_fail = o.abort_on_fail;
                    t.delay = o.delay.map(|d| d.0).unwrap_or_default();
                    if o.abort_on_fail && t.reads_conversation() {
                        problems.bad(
                            format!("thresholds[{i}].abort_on_fail"),
                            format!(
                                "`{}` reads what conversations measured, which is judged at the end of the run: it cannot stop the run early",
                                spec.expr()
                            ),
                        );
                    }
                }
                out.push(t);
            }
            Err(e) => {
                let path = match spec {
                    ThresholdSpec::Expr(_) => format!("thresholds[{i}]"),
                    ThresholdSpec::Full(_) => format!("thresholds[{i}].expr"),
                };
                problems.bad(path, format!("`{}`: {e}", spec.expr()));
            }
        }
    }
    out
}

/// A threshold on a conversation's step or stream must name one some group has: a typo would
/// otherwise fail every run for lack of data, and say so only at the end.
fn conversation_thresholds(
    thresholds: &[Threshold],
    groups: &[PlanGroup],
    problems: &mut Problems,
) {
    let convs: Vec<&super::conversation::ConversationPlan> = groups
        .iter()
        .filter_map(|g| g.behaviour.conversation.as_deref())
        .collect();
    for (i, t) in thresholds.iter().enumerate() {
        let Some((kind, name)) = t.conversation_name() else {
            continue;
        };
        let known: Vec<&str> = match kind {
            "step" => convs
                .iter()
                .flat_map(|c| c.samples.iter().map(String::as_str))
                .collect(),
            _ => convs
                .iter()
                .flat_map(|c| c.streams.iter().map(|s| s.name.as_str()))
                .collect(),
        };
        if !known.contains(&name) {
            let names = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            problems.bad(
                format!("thresholds[{i}]"),
                format!(
                    "`{}`: no {kind} is named `{name}` (the {kind}s: {names})",
                    t.expression
                ),
            );
        }
    }
}

/// One group: its schedule and its clients' behaviour.
fn group(
    p: &Profile,
    i: usize,
    g: &Group,
    server: Option<&ServerConfig>,
    first_client: u32,
    dir: &std::path::Path,
    problems: &mut Problems,
) -> PlanGroup {
    let at = |field: &str| format!("groups[{i}].{field}");
    if g.name.trim().is_empty() {
        problems.bad(at("name"), "must not be empty");
    }
    if p.groups[..i].iter().any(|o| o.name == g.name) {
        problems.bad(at("name"), format!("`{}` is used by another group", g.name));
    }
    if g.clients == 0 {
        problems.bad(at("clients"), "must be at least 1");
    }
    if let Some(arrival) = &g.arrival
        && arrival.start.0 >= p.duration.0
        && !p.duration.0.is_zero()
    {
        problems.bad(
            at("arrival.start"),
            format!(
                "{} is not before the end of the run ({})",
                arrival.start, p.duration
            ),
        );
    }
    let stages = super::fleet::stages(g, &at, &mut |path, m| problems.bad(path, m));
    problems.positive(at("connect_timeout"), g.connect_timeout.0);
    problems.positive(at("handshake_timeout"), g.handshake_timeout.0);
    let headers = headers(g, &at, problems);
    let mut subprotocols = subprotocols(g, &at, problems);
    if !(256..=16 << 20).contains(&g.read_buffer.0) {
        problems.bad(at("read_buffer"), "must be between 256B and 16MiB");
    }
    let mut source_addrs = Vec::new();
    for (j, a) in g.source_addrs.iter().enumerate() {
        match parse_addr_range(a) {
            Ok(addrs) => source_addrs.extend(addrs),
            Err(e) => problems.bad(at(&format!("source_addrs[{j}]")), e),
        }
    }
    let b = &g.behaviour;
    let send = b.send.as_ref().map(|s| {
        match (s.every, s.in_flight) {
            (Some(e), None) => problems.positive(at("behaviour.send.every"), e.0),
            (None, Some(n)) if !(1..=1000).contains(&n) => {
                problems.bad(at("behaviour.send.in_flight"), "must be between 1 and 1000")
            }
            (Some(_), Some(_)) | (None, None) => problems.bad(
                at("behaviour.send"),
                "needs either `every` (open loop) or `in_flight` (closed loop)",
            ),
            _ => {}
        }
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&s.bytes.0) {
            problems.bad(
                at("behaviour.send.bytes"),
                format!(
                    "must be between {MIN_MESSAGE_BYTES}B (the timing header) and 16MiB, got {}",
                    s.bytes
                ),
            );
        }
        SendPlan {
            every: s.every.map(|e| e.0),
            in_flight: s.in_flight.unwrap_or(0),
            bytes: s.bytes.0 as usize,
        }
    });
    let heartbeat = b.heartbeat.as_ref().map(|h| {
        problems.positive(at("behaviour.heartbeat.ping_every"), h.ping_every.0);
        problems.positive(at("behaviour.heartbeat.timeout"), h.timeout.0);
        HeartbeatPlan {
            ping_every: h.ping_every.0,
            timeout: h.timeout.0,
        }
    });
    let sleep = b.sleep.as_ref().map(|s| {
        problems.positive(at("behaviour.sleep.duration"), s.duration.0);
        SleepPlan {
            after: s.after.0,
            duration: s.duration.0,
        }
    });
    let refresh = b
        .auth
        .as_ref()
        .is_some_and(|a| a.on_expiry == Expiry::Refresh);
    let auth = b.auth.as_ref().map(|a| {
        problems.positive(at("behaviour.auth.lifetime"), a.lifetime.0);
        let secret = a
            .secret
            .clone()
            .or_else(|| server.and_then(|s| s.auth_secret.clone()));
        if secret.is_none() && a.jwt.is_none() {
            problems.bad(
                at("behaviour.auth"),
                "needs a `secret`, a `jwt`, or an embedded target with `server.auth`",
            );
        }
        let jwt = a.jwt.as_ref().and_then(|j| {
            jwt(
                j,
                g,
                dir,
                &|f| at(&format!("behaviour.auth.jwt.{f}")),
                problems,
            )
        });
        let (refresh_takes, refresh_fails) = a
            .refresh
            .as_ref()
            .map_or((Duration::ZERO, 0.0), |r| (r.takes.0, r.fails.0));
        if a.refresh.is_some() && !refresh {
            problems.bad(
                at("behaviour.auth.refresh"),
                "describes refreshes, which a client with `on_expiry: naive` never makes",
            );
        }
        AuthPlan {
            signer: Signer::new(secret.as_deref().unwrap_or_default()),
            lifetime: a.lifetime.0,
            refresh,
            place: a.send_as,
            jwt,
            refresh_takes,
            refresh_fails,
        }
    });
    let feeder = b.feeder.as_ref().and_then(|f| {
        let path = dir.join(&f.file);
        match crate::script::feeder::Feeder::load(&path) {
            Ok(data) => {
                // Rows are taken by the run-wide client id, so groups that share a file get
                // different rows: the last client of this group needs row first + clients - 1.
                let needed = u64::from(first_client) + u64::from(g.clients);
                if f.order == crate::profile::FeedOrder::Unique && (data.rows() as u64) < needed {
                    problems.bad(
                        at("behaviour.feeder.order"),
                        if first_client == 0 {
                            format!(
                                "`unique` gives each client its own row, but {} has {} rows for {} clients",
                                path.display(),
                                data.rows(),
                                g.clients
                            )
                        } else {
                            format!(
                                "`unique` gives each client its own row, but {} has {} rows and this group's clients are numbered {first_client} to {} in the run: it needs {needed}",
                                path.display(),
                                data.rows(),
                                needed - 1
                            )
                        },
                    );
                }
                Some(super::conversation::FeederPlan {
                    data: Arc::new(data),
                    order: f.order,
                })
            }
            Err(e) => {
                problems.bad(at("behaviour.feeder.file"), e);
                None
            }
        }
    });
    if b.feeder.is_some()
        && b.conversation.is_none()
        && b.auth.as_ref().is_none_or(|a| a.jwt.is_none())
    {
        problems.bad(
            at("behaviour.feeder"),
            "feeds templates, and this group has none: add a `conversation` or an `auth.jwt`",
        );
    }
    let conversation = b.conversation.as_ref().map(|c| {
        let (plan, extras) = super::conversation::compile(
            c,
            feeder.clone(),
            b.feeder.is_some(),
            auth.is_some(),
            &|f| at(&format!("behaviour.conversation.{f}")),
            problems,
        );
        if let (Some(p), None) = (extras.subprotocol, &subprotocols) {
            subprotocols = HeaderValue::from_str(p).ok();
        }
        if b.send.is_some() {
            problems.bad(
                at("behaviour.send"),
                "sends wsstorm's echo messages, which a conversation replaces: send with `conversation.every`",
            );
        }
        if b.subscribe.is_some() {
            problems.bad(
                at("behaviour.subscribe"),
                "subscribes to the embedded target's stream; with a conversation, declare `conversation.streams`",
            );
        }
        Box::new(plan)
    });
    let subscribe = b.subscribe.as_ref().map(|sub| {
        if server.is_some_and(|s| s.stream.is_none()) {
            problems.bad(
                at("behaviour.subscribe"),
                "the embedded target publishes no stream: add `target.server.stream`",
            );
        }
        let checkpoint_every = sub.checkpoint_every.unwrap_or(1);
        if !(1..=1000).contains(&checkpoint_every) {
            problems.bad(
                at("behaviour.subscribe.checkpoint_every"),
                "must be between 1 and 1000",
            );
        }
        if let Some(d) = sub.stall_after {
            problems.positive(at("behaviour.subscribe.stall_after"), d.0);
            // Between two messages the stream is silent for an interval: a stall must be
            // longer than a couple of them, or every gap would count.
            if let Some(rate) = server.and_then(|s| s.stream).map(|s| s.rate)
                && d.0.as_secs_f64() * rate < 2.0
            {
                problems.bad(
                    at("behaviour.subscribe.stall_after"),
                    format!(
                        "{d} is not two of the stream's intervals ({}): every gap between messages would count as a stall",
                        crate::units::Dur(Duration::from_secs_f64(1.0 / rate))
                    ),
                );
            }
        }
        SubscribePlan {
            resume: sub.resume,
            checkpoint_every,
            stall_after: sub.stall_after.map(|d| d.0),
            reconnect_on_stall: sub.on_stall == OnStall::Reconnect,
        }
    });
    let abuse = b.abuse.as_ref().map(|a| {
        if a.kind == AbuseKind::Oversized
            && let (Some(s), Some(size)) = (server, a.bytes)
            && size.0 <= s.max_message as u64
        {
            problems.bad(
                at("behaviour.abuse.bytes"),
                format!(
                    "{} is not over the target's max_message ({})",
                    size,
                    ByteSize(s.max_message as u64)
                ),
            );
        }
        AbusePlan {
            kind: a.kind,
            after: a.after.0,
            bytes: a.bytes.map(|b| b.0).unwrap_or(1 << 20),
        }
    });
    let r = &b.reconnect;
    // A refreshing client answers an expired token (4001 in session, 401 at the handshake) by
    // getting a new one, unless the profile says otherwise.
    let implied = |code: u16| refresh.then_some((CodeSet::Exact(code), Decision::RefreshAuth));
    let on_close = decisions(&r.on_close, "on_close", implied(4001), &at, b, problems);
    let on_status = decisions(&r.on_status, "on_status", implied(401), &at, b, problems);
    let backoff = backoff(&r.backoff, &at, problems);
    if let Some(f) = r.flap_below {
        problems.positive(at("behaviour.reconnect.flap_below"), f.0);
    }
    let fleet = super::fleet::compile(g, b, source_addrs.len(), &at, &mut |path, m| {
        problems.bad(path, m)
    });
    // With stages, the arrival fields are unused: a rate of 1/s keeps the type's promise.
    let arrival = g.arrival.clone().unwrap_or(crate::profile::Arrival {
        rate: crate::units::Rate(1.0),
        start: Default::default(),
        pattern: Default::default(),
    });
    PlanGroup {
        index: i,
        name: g.name.clone(),
        clients: g.clients,
        first_client,
        rate: arrival.rate.0,
        start: arrival.start.0,
        pattern: arrival.pattern,
        stages,
        via_proxy: g.via_proxy.unwrap_or(p.target.via_proxy),
        behaviour: Arc::new(ClientBehaviour {
            connect_timeout: g.connect_timeout.0,
            handshake_timeout: g.handshake_timeout.0,
            headers,
            subprotocols,
            read_buffer: g.read_buffer.0 as usize,
            deflate: g.compression == Some(crate::profile::Compression::Deflate),
            socket_recv_buffer: g
                .socket_recv_buffer
                .map(|b| b.0.min(u64::from(u32::MAX)) as u32),
            source_addrs,
            send,
            heartbeat,
            backoff,
            align: r.backoff.align.map(|a| a.0),
            on_close,
            on_status,
            flap_below: r.flap_below.map_or(super::DEFAULT_FLAP_BELOW, |d| d.0),
            identity_header: identity_header(g, &at, problems),
            read_rate: b.read.as_ref().map(|r| r.max_rate.0),
            sleep,
            auth,
            subscribe,
            abuse,
            conversation,
            feeder,
            fleet,
        }),
        slice: Default::default(),
    }
}

/// A JWT signer: the key from the profile or its key file, and the claims template.
fn jwt(
    j: &crate::profile::Jwt,
    g: &Group,
    dir: &std::path::Path,
    at: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) -> Option<crate::plan::JwtPlan> {
    use crate::profile::JwtAlg;
    use crate::script::jwt::{Alg, JwtKey};
    let key = match (j.alg, &j.secret, &j.key_file) {
        (JwtAlg::HS256, Some(secret), None) => {
            if secret.is_empty() {
                problems.bad(at("secret"), "must not be empty");
            }
            Some(JwtKey::hs256(secret))
        }
        (JwtAlg::HS256, _, _) => {
            problems.bad(at("alg"), "HS256 signs with a `secret` (and no `key_file`)");
            None
        }
        (alg, None, Some(file)) => {
            let path = dir.join(file);
            let alg = if alg == JwtAlg::RS256 {
                Alg::RS256
            } else {
                Alg::ES256
            };
            match std::fs::read_to_string(&path) {
                Ok(pem) => match JwtKey::from_pem(alg, &pem) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        problems.bad(at("key_file"), format!("{}: {e}", path.display()));
                        None
                    }
                },
                Err(e) => {
                    problems.bad(
                        at("key_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        }
        (alg, _, _) => {
            problems.bad(
                at("alg"),
                format!("{alg:?} signs with a private `key_file` (PEM) and no `secret`"),
            );
            None
        }
    };
    let claims = j
        .claims
        .clone()
        .unwrap_or_else(|| serde_json::json!({"sub": "client-{{client}}"}));
    if !claims.is_object() {
        problems.bad(at("claims"), "must be a map of claims");
    }
    struct ClaimNames<'a>(Option<&'a crate::script::feeder::Feeder>);
    impl crate::script::template::Names for ClaimNames<'_> {
        fn capture(&self, name: &str) -> Result<usize, String> {
            Err(format!(
                "`capture.{name}`: a token is minted before any message is received"
            ))
        }
        fn stream(&self, _: &str) -> Option<usize> {
            None
        }
        fn feed_column(&self, name: &str) -> Result<usize, String> {
            let f = self
                .0
                .ok_or_else(|| format!("`feed.{name}` needs a `feeder:` in the behaviour"))?;
            f.column(name)
                .ok_or_else(|| format!("the feeder has no column `{name}`"))
        }
        fn answering(&self) -> bool {
            false
        }
        fn has_token(&self) -> bool {
            false
        }
        fn has_id(&self) -> bool {
            false
        }
    }
    // The feeder is loaded again here only for its column names when claims use it; the
    // group's own copy is the one the clients read.
    let feeder = g
        .behaviour
        .feeder
        .as_ref()
        .and_then(|f| crate::script::feeder::Feeder::load(&dir.join(&f.file)).ok());
    let template =
        match crate::script::template::Template::json(&claims, &ClaimNames(feeder.as_ref())) {
            Ok(t) => t,
            Err((sub, e)) => {
                problems.bad(at(&format!("claims.{sub}")), e.message);
                return None;
            }
        };
    let has = |k: &str| claims.get(k).is_some();
    Some(crate::plan::JwtPlan {
        key: key?,
        claims: template,
        add_iat: !has("iat"),
        add_exp: !has("exp"),
    })
}

/// Headers the WebSocket handshake sets itself.
pub(super) const OWN: [&str; 5] = [
    "sec-websocket-key",
    "sec-websocket-version",
    "upgrade",
    "connection",
    "host",
];

/// Why a client may not offer extensions by header: the clients negotiate what they can read
/// themselves; a hand-written offer would make a server send frames they are not set up for.
pub(super) const NO_EXTENSIONS: &str = "extensions are negotiated by wsstorm itself: for \
     permessage-deflate set `compression: deflate` on the group instead of this header";

/// Handshake headers the user adds, parsed; the ones the handshake sets itself are refused.
fn headers(
    g: &Group,
    at: &impl Fn(&str) -> String,
    problems: &mut Problems,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(g.headers.len());
    for (name, value) in &g.headers {
        let path = at(&format!("headers.{name}"));
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            problems.bad(path, format!("`{name}` is not a valid HTTP header name"));
            continue;
        };
        if OWN.contains(&header.as_str()) {
            problems.bad(
                path,
                format!("`{name}` is set by the WebSocket handshake itself"),
            );
            continue;
        }
        if header == "sec-websocket-extensions" {
            problems.bad(path, NO_EXTENSIONS);
            continue;
        }
        match HeaderValue::from_str(value) {
            Ok(v) => out.push((header, v)),
            Err(_) => problems.bad(path, "the value is not a valid HTTP header value"),
        }
    }
    out
}

/// The identity header's name: the default, another valid name, or none.
fn identity_header(
    g: &Group,
    at: &impl Fn(&str) -> String,
    problems: &mut Problems,
) -> Option<String> {
    // On an error too: the error is reported, and no other check should read it as `none`.
    let default = || Some(crate::server::identity::DEFAULT_HEADER.to_string());
    let Some(name) = &g.identity_header else {
        return default();
    };
    if name.eq_ignore_ascii_case("none") {
        return None;
    }
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) if OWN.contains(&h.as_str()) || h == "sec-websocket-extensions" => {
            problems.bad(
                at("identity_header"),
                format!("`{name}` is set by the WebSocket handshake itself"),
            );
            default()
        }
        Ok(h) if g.headers.keys().any(|k| k.eq_ignore_ascii_case(h.as_str())) => {
            problems.bad(
                at("identity_header"),
                format!("`{name}` is also set in `headers`: one value per header"),
            );
            default()
        }
        Ok(h) => Some(h.as_str().to_string()),
        Err(_) => {
            problems.bad(
                at("identity_header"),
                format!("`{name}` is not a valid HTTP header name (or `none`)"),
            );
            default()
        }
    }
}

fn subprotocols(
    g: &Group,
    at: &impl Fn(&str) -> String,
    problems: &mut Problems,
) -> Option<HeaderValue> {
    for (j, proto) in g.subprotocols.iter().enumerate() {
        if proto.is_empty() || !proto.bytes().all(is_token_char) {
            problems.bad(
                at(&format!("subprotocols[{j}]")),
                format!("`{proto}` is not a valid subprotocol token"),
            );
        }
    }
    if g.subprotocols.is_empty() {
        return None;
    }
    // Token characters only (checked above), so the joined list is a valid header value.
    HeaderValue::from_str(&g.subprotocols.join(", ")).ok()
}

/// A table of decisions by close code (`on_close`) or HTTP status (`on_status`), with the
/// rule a refreshing client implies unless the profile gives its own for that code.
fn decisions(
    map: &std::collections::BTreeMap<String, Decision>,
    table: &str,
    implied: Option<(CodeSet, Decision)>,
    at: &impl Fn(&str) -> String,
    b: &crate::profile::Behaviour,
    problems: &mut Problems,
) -> DecisionTable {
    let close = table == "on_close";
    let mut rules = Vec::with_capacity(map.len() + 1);
    for (key, d) in map {
        let path = at(&format!("behaviour.reconnect.{table}.{key}"));
        match d {
            Decision::RefreshAuth if b.auth.is_none() => {
                problems.bad(&path, "refresh-auth needs `behaviour.auth`")
            }
            Decision::RetryAfter(d) if d.0.is_zero() => {
                problems.bad(&path, "retry-after must be longer than 0s")
            }
            _ => {}
        }
        let set = if close {
            CodeSet::parse_close(key)
        } else {
            CodeSet::parse_status(key)
        };
        match set {
            Some(set) => rules.push((set, *d)),
            None if close => problems.bad(
                path,
                format!(
                    "`{key}` is not a close code: expected 1000-4999, a range like 4000-4999, or `default`"
                ),
            ),
            None => problems.bad(
                path,
                format!(
                    "`{key}` is not an HTTP status: expected 100-599, a class like 5xx, or `default`"
                ),
            ),
        }
    }
    if let Some((set, d)) = implied
        && !rules.iter().any(|(s, _)| *s == set)
    {
        rules.push((set, d));
    }
    DecisionTable::new(rules)
}

fn backoff(
    bo: &crate::profile::BackoffSettings,
    at: &impl Fn(&str) -> String,
    problems: &mut Problems,
) -> Backoff {
    if let Some(a) = bo.align {
        problems.positive(at("behaviour.reconnect.backoff.align"), a.0);
    }
    if bo.strategy != Strategy::None && bo.base.0.is_zero() {
        problems.bad(
            at("behaviour.reconnect.backoff.base"),
            format!("must be longer than 0s for {}", bo.strategy.name()),
        );
    }
    if bo.cap.0 < bo.base.0 {
        problems.bad(
            at("behaviour.reconnect.backoff.cap"),
            format!("{} is shorter than base ({})", bo.cap, bo.base),
        );
    }
    if !(1.0..=100.0).contains(&bo.multiplier) {
        problems.bad(
            at("behaviour.reconnect.backoff.multiplier"),
            format!("must be between 1 and 100, got {}", bo.multiplier),
        );
    }
    if bo.max_attempts == Some(0) {
        problems.bad(
            at("behaviour.reconnect.backoff.max_attempts"),
            "must be at least 1 (leave it out for no limit)",
        );
    }
    if let Some(r) = bo.reset_after {
        problems.positive(at("behaviour.reconnect.backoff.reset_after"), r.0);
    }
    if let Some(b) = bo.budget
        && b.size == 0
    {
        problems.bad(
            at("behaviour.reconnect.backoff.budget.size"),
            "must be at least 1 (a budget of 0 would never retry; use `max_attempts` or an `on_close: stop` for that)",
        );
    }
    Backoff {
        strategy: bo.strategy,
        base: bo.base.0,
        cap: bo.cap.0,
        multiplier: bo.multiplier,
        max_attempts: bo.max_attempts,
        reset_after: bo.reset_after.map(|r| r.0),
        budget: bo.budget.map(|b| crate::backoff::Budget {
            size: b.size,
            refill: b.refill.0,
        }),
        retry_after_jitter: bo.retry_after_jitter.map_or(0.0, |p| p.0),
    }
}

/// One timeline entry: who carries it out, with what. The fields an action does not take are
/// refused here, which keeps the YAML flat.
fn timeline_action(
    p: &Profile,
    i: usize,
    e: &TimelineEntry,
    proxied: bool,
    problems: &mut Problems,
) -> TimelineAction {
    let at = |field: &str| format!("timeline[{i}].{field}");
    let name = e.action.name();
    if e.at.0 >= p.duration.0 {
        problems.bad(
            at("at"),
            format!(
                "{} is not before the end of the run ({}); the action would never fire",
                e.at, p.duration
            ),
        );
    }
    if e.action.is_proxy() {
        if !proxied {
            problems.bad(
                at("action"),
                format!(
                    "`{name}` is a fault of the proxy: set `target.via_proxy: true`{}",
                    if e.action == ActionKind::Blackhole {
                        " (or use `hang` to make the embedded server stop answering)"
                    } else {
                        ""
                    }
                ),
            );
        }
    } else if !p.target.is_embedded() {
        problems.bad(
            at("action"),
            format!(
                "`{name}` is an action of the embedded target server; the target is {}",
                p.target.url
            ),
        );
    }
    let set: [(&str, bool); 16] = [
        ("mode", e.mode.is_some()),
        ("code", e.code.is_some()),
        ("share", e.share.is_some()),
        ("down_for", e.down_for.is_some()),
        ("delay", e.delay.is_some()),
        ("jitter", e.jitter.is_some()),
        ("rate", e.rate.is_some()),
        ("bytes", e.bytes.is_some()),
        ("after", e.after.is_some()),
        ("duration", e.duration.is_some()),
        ("direction", e.direction.is_some()),
        ("cut_existing", e.cut_existing.is_some()),
        ("over", e.over.is_some()),
        ("nodes", e.nodes.is_some()),
        ("every", e.every.is_some()),
        ("refuse_new", e.refuse_new.is_some()),
    ];
    let (takes, needs): (&[&str], &[&str]) = match e.action {
        ActionKind::DropAll => (&["mode", "code", "share"], &[]),
        ActionKind::Restart => (&["down_for"], &["down_for"]),
        ActionKind::Hang | ActionKind::Revoke => (&["share"], &[]),
        ActionKind::Cut => (&["mode", "share"], &[]),
        ActionKind::Blackhole => (&["share", "direction", "duration"], &[]),
        ActionKind::Latency => (
            &["delay", "jitter", "share", "direction", "duration"],
            &["delay"],
        ),
        ActionKind::Bandwidth => (&["rate", "share", "direction", "duration"], &["rate"]),
        ActionKind::Slicer => (
            &["bytes", "delay", "share", "direction", "duration"],
            &["bytes", "delay"],
        ),
        ActionKind::IdleTimeout => (&["after", "mode", "share", "duration"], &["after"]),
        ActionKind::Refuse => (&["cut_existing", "duration"], &[]),
        ActionKind::Partition => (&["share", "duration"], &["share"]),
        ActionKind::Heal => (&[], &[]),
        ActionKind::Drain => (&["code", "share", "over", "refuse_new"], &["over"]),
        ActionKind::RollingRestart => (
            &["nodes", "every", "mode", "code", "over"],
            &["nodes", "every"],
        ),
    };
    for (field, present) in set {
        if present && !takes.contains(&field) {
            problems.bad(
                at(field),
                if takes.is_empty() {
                    format!("{name} takes no `{field}`")
                } else {
                    format!(
                        "{name} does not take `{field}` (it takes: {})",
                        takes.join(", ")
                    )
                },
            );
        }
        if !present && needs.contains(&field) {
            problems.bad(at("action"), format!("{name} needs `{field}`"));
        }
    }
    for (field, d) in [
        ("down_for", e.down_for),
        ("delay", e.delay.filter(|_| e.action == ActionKind::Slicer)),
        ("after", e.after),
        ("duration", e.duration),
        ("over", e.over.filter(|_| e.action == ActionKind::Drain)),
        ("every", e.every),
    ] {
        if let Some(d) = d {
            problems.positive(at(field), d.0);
        }
    }
    if let (Some(d), Some(j)) = (e.delay, e.jitter)
        && j.0 > d.0
    {
        problems.bad(at("jitter"), format!("{j} is larger than the delay ({d})"));
    }
    if e.action == ActionKind::Revoke && p.target.is_embedded() && p.target.server.auth.is_none() {
        problems.bad(
            at("action"),
            "revoke de-authorizes sessions: the embedded target needs `server.auth`",
        );
    }
    if e.bytes == Some(ByteSize(0)) {
        problems.bad(at("bytes"), "must be at least 1");
    }
    match (e.action, e.mode) {
        (ActionKind::DropAll, mode) => match (mode.unwrap_or(DropMode::Abrupt), e.code) {
            (DropMode::Close, None) => problems.bad(
                at("mode"),
                "mode `close` needs a `code` (e.g. 1001 going away, 1012 service restart)",
            ),
            (DropMode::Close, Some(c)) if !sendable_close_code(c) => problems.bad(
                at("code"),
                format!(
                    "{c} cannot be sent in a close frame: use 1000-1003, 1007-1014 or 3000-4999"
                ),
            ),
            (DropMode::Abrupt | DropMode::Reset, Some(_)) => {
                problems.bad(at("code"), "only `mode: close` sends a close code")
            }
            _ => {}
        },
        (ActionKind::Drain, _) => {
            match e.code {
                Some(c) if !sendable_close_code(c) => problems.bad(
                    at("code"),
                    format!(
                        "{c} cannot be sent in a close frame: use 1000-1003, 1007-1014 or 3000-4999 (1001 going away, 1012 service restart)"
                    ),
                ),
                _ => {}
            }
            // As a rolling restart's turns: the whole window within the run.
            if let Some(over) = e.over
                && e.at.0 + over.0 > p.duration.0
            {
                problems.bad(
                    at("over"),
                    format!(
                        "the drain's window ends at {}, after the end of the run ({})",
                        Dur(e.at.0 + over.0),
                        p.duration
                    ),
                );
            }
        }
        (ActionKind::RollingRestart, mode) => {
            match (mode.unwrap_or(DropMode::Close), e.code) {
                (DropMode::Close, Some(c)) if !sendable_close_code(c) => problems.bad(
                    at("code"),
                    format!(
                        "{c} cannot be sent in a close frame: use 1000-1003, 1007-1014 or 3000-4999 (1012 service restart, 1001 going away)"
                    ),
                ),
                (DropMode::Abrupt | DropMode::Reset, Some(_)) => {
                    problems.bad(at("code"), "only `mode: close` sends a close code")
                }
                _ => {}
            }
            check_rolling_restart(p, e, &at, problems);
        }
        (ActionKind::Cut | ActionKind::IdleTimeout, Some(DropMode::Close)) => problems.bad(
            at("mode"),
            format!("the proxy cannot send close frames: {name} takes `reset` or `fin`"),
        ),
        _ => {}
    }
    action(e)
}

/// The action an entry describes, its absent fields at their defaults.
fn action(e: &TimelineEntry) -> TimelineAction {
    let share = Percent(e.share.map(|s| s.0).unwrap_or(1.0));
    let direction = e.direction.unwrap_or_default();
    let duration = e.duration;
    let cut_mode = match e.mode {
        Some(DropMode::Abrupt) => CutMode::Fin,
        _ => CutMode::Reset,
    };
    let server = TimelineAction::Server;
    let proxy = TimelineAction::Proxy;
    match e.action {
        ActionKind::DropAll => server(Action::DropAll {
            mode: match e.mode.unwrap_or(DropMode::Abrupt) {
                DropMode::Abrupt => crate::server::DropMode::Abrupt,
                DropMode::Reset => crate::server::DropMode::Reset,
                DropMode::Close => crate::server::DropMode::Close(e.code.unwrap_or(1001)),
            },
            share: share.0,
        }),
        ActionKind::Restart => server(Action::Restart {
            down_for: e.down_for.map(|d| d.0).unwrap_or_default(),
        }),
        ActionKind::Hang => server(Action::Hang { share: share.0 }),
        ActionKind::Revoke => server(Action::Revoke { share: share.0 }),
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
        ActionKind::Drain => server(Action::Drain {
            code: e.code.unwrap_or(1001),
            over: e.over.map(|o| o.0).unwrap_or_default(),
            share: share.0,
            refuse_new: e.refuse_new.unwrap_or(false),
        }),
        // Node 0's turn; [`planned`] adds the other nodes'.
        ActionKind::RollingRestart => server(Action::RestartNode {
            node: 0,
            nodes: e.nodes.unwrap_or(1),
            mode: match e.mode.unwrap_or(DropMode::Close) {
                DropMode::Abrupt => crate::server::DropMode::Abrupt,
                DropMode::Reset => crate::server::DropMode::Reset,
                DropMode::Close => crate::server::DropMode::Close(e.code.unwrap_or(1012)),
            },
            over: e.over.map(|o| o.0).unwrap_or_default(),
            out_for: e.every.map(|d| d.0).unwrap_or_default(),
        }),
    }
}

/// The actions one entry fires: itself, or for a rolling restart one per node, `every` apart,
/// so each node's restart is its own action in the results' timeline. `nodes` out of range has
/// been reported by [`check_rolling_restart`]; the expansion stays within [`MAX_NODES`] so that
/// report is reached instead of allocating one entry per asked node.
///
/// [`MAX_NODES`]: crate::server::MAX_NODES
fn planned(e: &TimelineEntry, action: TimelineAction) -> Vec<PlannedAction> {
    match action {
        TimelineAction::Server(Action::RestartNode {
            nodes,
            mode,
            over,
            out_for,
            ..
        }) => (0..nodes.min(crate::server::MAX_NODES as u32))
            .map(|node| PlannedAction {
                at: e.at.0 + out_for * node,
                action: TimelineAction::Server(Action::RestartNode {
                    node,
                    nodes,
                    mode,
                    over,
                    out_for,
                }),
            })
            .collect(),
        action => vec![PlannedAction { at: e.at.0, action }],
    }
}

/// A rolling restart's own rules: 2 to 32 nodes, each drained within its turn, the last turn
/// starting before the run ends.
fn check_rolling_restart(
    p: &Profile,
    e: &TimelineEntry,
    at: &impl Fn(&str) -> String,
    problems: &mut Problems,
) {
    let max = crate::server::MAX_NODES as u32;
    if let Some(n) = e.nodes
        && !(2..=max).contains(&n)
    {
        problems.bad(at("nodes"), format!("must be between 2 and {max}"));
    }
    if let (Some(over), Some(every)) = (e.over, e.every)
        && over.0 > every.0
    {
        problems.bad(
            at("over"),
            format!(
                "{over} is longer than `every` ({every}): a node must be drained before the next one restarts"
            ),
        );
    }
    if let (Some(n), Some(every)) = (e.nodes, e.every)
        && n >= 2
        && e.at.0 + every.0 * (n - 1) >= p.duration.0
    {
        problems.bad(
            at("every"),
            format!(
                "the last node's restart ({}) is not before the end of the run ({})",
                Dur(e.at.0 + every.0 * (n - 1)),
                p.duration
            ),
        );
    }
}

/// The nodes the embedded target runs as: a rolling restart's `nodes` (all of them alike), or
/// one.
fn balancer_nodes(p: &Profile, problems: &mut Problems) -> u32 {
    let mut nodes = None;
    for (i, e) in p.timeline.iter().enumerate() {
        let Some(n) = e.nodes.filter(|_| e.action == ActionKind::RollingRestart) else {
            continue;
        };
        match nodes {
            None => nodes = Some(n),
            Some(m) if m != n => problems.bad(
                format!("timeline[{i}].nodes"),
                format!(
                    "{n} nodes, where an earlier rolling restart has {m}: the target runs as one set of nodes"
                ),
            ),
            Some(_) => {}
        }
    }
    nodes.unwrap_or(1).clamp(1, crate::server::MAX_NODES as u32)
}

fn check_capacity(p: &Profile, c: &CapacitySettings, problems: &mut Problems) {
    if !(c.start > 0.0 && c.start.is_finite()) {
        problems.bad("capacity.start", "must be more than 0");
    }
    if !(c.max >= c.start && c.max.is_finite()) {
        problems.bad(
            "capacity.max",
            format!("must be at least `start` ({})", c.start),
        );
    }
    match (c.step, c.factor) {
        (Some(_), Some(_)) => problems.bad(
            "capacity.factor",
            "give `step` (added each step) or `factor` (multiplied each step), not both",
        ),
        (Some(s), None) if !(s > 0.0 && s.is_finite()) => {
            problems.bad("capacity.step", "must be more than 0")
        }
        (None, Some(f)) if !(f > 1.0 && f.is_finite()) => {
            problems.bad("capacity.factor", "must be more than 1")
        }
        _ => {}
    }
    if c.hold.0 < Duration::from_secs(1) {
        problems.bad("capacity.hold", "must be at least 1s");
    }
    let stepped = c
        .group
        .as_ref()
        .and_then(|n| p.groups.iter().find(|g| &g.name == n))
        .or(p.groups.first());
    if stepped.is_some_and(|g| !g.stages.is_empty()) {
        problems.bad(
            "capacity",
            "steps the load of a group with `stages`, which set the load themselves: give that group an `arrival` rate",
        );
    }
    let steps = super::capacity::steps(c).len();
    if steps > super::capacity::MAX_STEPS {
        problems.bad(
            "capacity",
            format!(
                "{steps} steps from {} to {} is more than the {} allowed; use a bigger `step` or a `factor`",
                c.start,
                c.max,
                super::capacity::MAX_STEPS
            ),
        );
    }
    let group = match &c.group {
        Some(name) => match p.groups.iter().find(|g| &g.name == name) {
            Some(g) => Some(g),
            None => {
                problems.bad(
                    "capacity.group",
                    format!(
                        "no group is named `{name}`; groups: {}",
                        p.groups
                            .iter()
                            .map(|g| g.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                None
            }
        },
        None if p.groups.len() > 1 => {
            problems.bad(
                "capacity.group",
                "the profile has several groups: name the one whose load is stepped",
            );
            None
        }
        None => p.groups.first(),
    };
    if c.vary == CapacityVary::MessageRate
        && let Some(g) = group
        && g.behaviour.send.as_ref().is_none_or(|s| s.every.is_none())
    {
        problems.bad(
            "capacity.vary",
            format!(
                "message-rate steps set `send.every` of group `{}`: give it `behaviour.send: {{ every: …, bytes: … }}`",
                g.name
            ),
        );
    }
}

/// `127.0.0.2` or an IPv4 range `127.0.0.2-127.0.0.101` (inclusive).
pub fn parse_addr_range(s: &str) -> Result<Vec<IpAddr>, String> {
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

/// RFC 6455 §7.4: 1004-1006 and 1015 are reserved and must never be sent on the wire.
fn sendable_close_code(c: u16) -> bool {
    matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
