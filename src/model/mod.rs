//! `wsstorm model`: a plan run in virtual time, in one process, with no sockets.
//!
//! A fleet of millions cannot be run on one machine, but what it does after a mass drop is
//! decided by a few rules: when each client tries again (its backoff), what the server does
//! with a handshake (admission, a queue of workers, a timeout that makes clients abandon work
//! the server still does), and what the timeline does to open connections. The model runs
//! exactly those rules — the clients' [`Retry`] and close-code [`DecisionTable`]s, the server's
//! [`TokenBucket`], the same seeds — as events on one clock, and records them into the same
//! [`Metrics`] and [`Collector`] a real run records into, so results.json, the report and
//! `compare` read it like any run (marked `"modelled": true`).
//!
//! What it leaves out is listed in the results (`model.not_modelled`): the network is a fixed
//! round trip, the machine's CPU and kernel queues are infinitely fast, and messages,
//! conversations, tokens and streams do not exist.
//!
//! [`DecisionTable`]: crate::plan::DecisionTable

mod queue;
mod server;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use rand::rngs::Xoshiro128PlusPlus;

use crate::backoff::{Next, Retry, align_up};
use crate::metrics::settle::Settling;
use crate::metrics::{Closed, Collector, ConnectError, Metrics, OpenTimings, Snapshot, TICK, Who};
use crate::plan::{Plan, PlanTarget, TimelineAction};
use crate::profile::Decision;
use crate::results::{EndReason, FiredAction, ModelInfo, Record, Results};
use crate::seed::{client_seed, in_share};
use crate::server::{Action, DropMode, ServerConfig};
use queue::Calendar;
use server::{Answer, ServerModel};

/// How the model departs from a real run, as the user may set it.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Network round trip: a connect takes one, the upgrade another (half each way).
    pub rtt: Duration,
}

/// A loopback round trip on a busy machine, as real runs measure the connect.
pub const DEFAULT_RTT: Duration = Duration::from_micros(100);

impl Default for Options {
    fn default() -> Self {
        Options { rtt: DEFAULT_RTT }
    }
}

/// Why a plan cannot be modelled.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unmodellable(String);

/// What of `plan` the model can run and what it leaves out; an error for what it cannot run
/// at all.
pub fn check(plan: &Plan) -> Result<(&ServerConfig, Vec<String>), Unmodellable> {
    let config = match &plan.target {
        PlanTarget::Embedded { config, .. } => config.as_ref(),
        PlanTarget::External { url, .. } => {
            return Err(Unmodellable(format!(
                "the model simulates the embedded target's capacity model, and {url} is another server: describe its capacity as `target: {{ url: embedded, server: {{ accept_rate: 40000/s, handshake: {{ service_time: 2ms, workers: 64, queue: 10000 }}, retry_after: 1s }} }}` to model it"
            )));
        }
    };
    if plan.groups.iter().any(|g| g.slice.count > 1) {
        return Err(Unmodellable(
            "a model needs no shards: it runs any number of clients in one process (drop --shard)"
                .into(),
        ));
    }
    if plan.proxy.is_some() {
        return Err(Unmodellable(
            "the model does not simulate the fault proxy (latency, bandwidth, blackholes): remove `via_proxy` and the proxy's timeline actions to model the rest".into(),
        ));
    }
    let revokes = plan
        .timeline
        .iter()
        .any(|a| matches!(a.action, TimelineAction::Server(Action::Revoke { .. })));
    if revokes && config.auth_ghost {
        return Err(Unmodellable(
            "the model does not simulate ghost sessions (`auth.on_expiry: ghost`): a revoked session would stay open delivering nothing, which needs the stream the model leaves out; use `on_expiry: close` to model revokes as 4003 closes".into(),
        ));
    }
    for g in &plan.groups {
        let f = g.behaviour.fleet.as_deref();
        let refused = [
            (!g.stages.is_empty(), "`stages`"),
            (f.is_some_and(|f| f.churn.is_some()), "`churn`"),
            (
                f.is_some_and(|f| f.lifetime.is_some()),
                "`session` lifetimes",
            ),
            (f.is_some_and(|f| f.switch.is_some()), "`network_switch`"),
            (
                f.is_some_and(|f| f.duplicate_after.is_some()),
                "`duplicate_connections`",
            ),
        ];
        if let Some((_, what)) = refused.iter().find(|(on, _)| *on) {
            return Err(Unmodellable(format!(
                "group `{}`: the model does not simulate {what}, which decide who is connected: run the profile, or remove it to model the rest",
                g.name
            )));
        }
    }
    // What would change who is connected when: leaving it out would model another run.
    let server_actions = plan.timeline.iter().filter_map(|a| match &a.action {
        TimelineAction::Server(a) => Some(a),
        _ => None,
    });
    for a in server_actions {
        if let Action::RestartNode { .. } = a {
            return Err(Unmodellable(format!(
                "the model does not simulate `{a}`: a rolling restart needs the target's nodes and balancer, which it does not have; a `drain` of a share models one node's closes"
            )));
        }
    }
    if config.limits.max.is_some() || config.limits.per_ip.is_some() {
        return Err(Unmodellable(
            "the model does not simulate the target's connection caps (max_connections, max_connections_per_ip): they decide who stays connected, so the model would describe another run; remove them to model the rest, or use `wsstorm run`".into(),
        ));
    }
    let mut left = Vec::new();
    let mut note = |what: &str| {
        if !left.iter().any(|l: &String| l == what) {
            left.push(what.to_string());
        }
    };
    for g in &plan.groups {
        let b = &g.behaviour;
        if b.send.is_some() {
            note("messages (send): sent, received and rtt stay 0");
        }
        if b.conversation.is_some() {
            note("conversations: steps, streams and application errors");
        }
        if b.subscribe.is_some() {
            note("the sequenced stream, resume and stall detection");
        }
        if b.auth.is_some() {
            note("tokens: every handshake is accepted, none expires");
        }
        if b.read_rate.is_some() || b.sleep.is_some() {
            note("slow and frozen clients (read_rate, sleep)");
        }
        if b.fleet.as_deref().is_some_and(|f| f.throttle.is_some()) {
            note("throttled clients (throttle): their reads and pongs are not late");
        }
        if b.abuse.is_some() {
            note("protocol abuse");
        }
    }
    if revokes {
        note("revoke: its sessions are closed with 4003 like a drop (server.revoked stays 0)");
    }
    if config.tls.is_some() {
        note("TLS: its handshake costs nothing");
    }
    if config.heartbeat.is_some() || config.idle_timeout.is_some() {
        note("the server's heartbeat and idle timeout");
    }
    if config.rate_limit.is_some() || config.stream.is_some() || config.socket_io.is_some() {
        note("the server's message handling (rate limit, stream, Socket.IO)");
    }
    Ok((config, left))
}

/// Where one client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not arrived yet, or waiting for its next attempt (an event is queued).
    Waiting,
    /// An attempt is under way; its answer, decided when it started, is queued.
    Attempting(Answer),
    Connected,
    /// Connected, but the server stopped serving it; with a heartbeat an event for the
    /// moment the client finds it dead is queued.
    Hung,
    /// Connected, and a drain will close it with this code (its event is queued).
    Draining(u16),
    /// Connected, and `max_lifetime` will close it (its event is queued).
    Expiring,
    /// Gave up.
    Done,
}

/// One client: its retry state, its RNG (seeded as the real client's is) and where it is.
/// About 72 bytes; the model holds one per client and nothing else per client.
struct Sim {
    rng: Xoshiro128PlusPlus,
    retry: Retry,
    /// µs: when the last connection was lost (for the reconnect time), or while connected,
    /// when it opened.
    mark: u64,
    /// µs: when the current attempt started.
    started: u64,
    /// Bumped on every change of state: a queued event with an older generation is stale.
    generation: u32,
    attempts: u32,
    /// The server's id of the connection (shares of drop-all and hang pick by it).
    conn: u32,
    group: u16,
    state: State,
}

const NEVER: u64 = u64::MAX;

/// Events the model processes at most (a few minutes of wall time): clients that retry with no
/// delay against a server that refuses at once make an event per round trip each, which no
/// fleet size makes sense of. The run then ends early, saying why.
const MAX_EVENTS: u64 = 2_000_000_000;

fn us(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX / 2)) as u64
}

fn dur(us: u64) -> Duration {
    Duration::from_micros(us)
}

/// Run `plan` in virtual time until its duration. `watch` sees every tick's snapshot (in
/// virtual time) and ends the run early, with the results so far, by returning true (Ctrl-C).
pub fn run(
    plan: &Plan,
    options: &Options,
    watch: &mut dyn FnMut(&Snapshot) -> bool,
) -> Result<Results, Unmodellable> {
    let wall = std::time::Instant::now();
    let started_at = SystemTime::now();
    let (config, not_modelled) = check(plan)?;
    let mut sim = Engine::new(plan, config, options);
    let end = sim.run(watch);
    let (record, events) = sim.finish(plan, end, started_at);
    let mut results = Results::build(record, &plan.thresholds);
    results.modelled = true;
    results.model = Some(ModelInfo {
        rtt_us: us(options.rtt),
        events,
        wall_ms: wall.elapsed().as_millis() as u64,
        not_modelled,
    });
    Ok(results)
}

struct Engine<'p> {
    plan: &'p Plan,
    clients: Vec<Sim>,
    /// (time µs, client, generation), earliest first.
    queue: Calendar,
    server: ServerModel,
    metrics: Arc<Metrics>,
    collector: Collector,
    rtt: u64,
    events: u64,
    fired: Vec<FiredAction>,
    /// With `--until recovered`: watches every tick for the run to settle, and when it did.
    settling: Option<Settling>,
    settled_at: Option<Duration>,
    /// Server orders so far (drop-all and hang shares are picked per order, as the server
    /// does).
    orders: u64,
    /// Until when (µs) a drain fired so far is still closing connections: the timeline is
    /// not done before.
    busy_until: u64,
    /// The target's `max_lifetime`.
    lifetime: Option<crate::server::Lifetime>,
    /// Per group: whether its `Origin` header passes the target's `allowed_origins`.
    origin_allowed: Vec<bool>,
    interrupted: bool,
}

impl<'p> Engine<'p> {
    fn new(plan: &'p Plan, config: &ServerConfig, options: &Options) -> Engine<'p> {
        let metrics = Arc::new(Metrics::new(plan.groups.len()));
        let total = plan.total_clients() as usize;
        let mut clients = Vec::with_capacity(total);
        for g in &plan.groups {
            for id in g.first_client..g.first_client + g.clients {
                clients.push(Sim {
                    rng: Xoshiro128PlusPlus::seed_from_u64(client_seed(plan.seed, id)),
                    retry: Retry::new(&g.behaviour.backoff),
                    mark: NEVER,
                    started: 0,
                    generation: 0,
                    attempts: 0,
                    conn: 0,
                    group: g.index as u16,
                    state: State::Waiting,
                });
            }
        }
        Engine {
            plan,
            clients,
            queue: Calendar::new(),
            server: ServerModel::new(config),
            collector: Collector::virtual_time(metrics.clone()),
            metrics,
            rtt: us(options.rtt),
            events: 0,
            fired: Vec::new(),
            settling: plan
                .until
                .map(|_| Settling::new(u64::from(plan.total_clients()))),
            settled_at: None,
            orders: 0,
            busy_until: 0,
            lifetime: config.max_lifetime,
            origin_allowed: plan
                .groups
                .iter()
                .map(|g| {
                    config.allowed_origins.is_empty()
                        || g.behaviour.headers.iter().any(|(name, value)| {
                            *name == tokio_tungstenite::tungstenite::http::header::ORIGIN
                                && value.to_str().is_ok_and(|v| config.origin_allowed(v))
                        })
                })
                .collect(),
            interrupted: false,
        }
    }

    fn who(&self, c: u32) -> Who {
        Who {
            client: c,
            group: self.clients[c as usize].group,
        }
    }

    /// Process every event before the plan's end; returns when the run ended (µs).
    fn run(&mut self, watch: &mut dyn FnMut(&Snapshot) -> bool) -> u64 {
        let plan = self.plan;
        let end = us(plan.duration);
        let tick = us(TICK);
        let mut next_tick = tick;
        // Arrivals come from the plan's own schedule, merged across groups in time order.
        let mut arrivals: Vec<_> = plan
            .groups
            .iter()
            .map(|g| (g.first_client, g.arrivals(plan.seed).peekable()))
            .collect();
        let mut actions = plan.timeline.iter().peekable();
        loop {
            let arrival = arrivals
                .iter_mut()
                .enumerate()
                .filter_map(|(i, (_, it))| it.peek().map(|t| (us(*t), i)))
                .min();
            let action = actions.peek().map(|a| us(a.at));
            let event = self.queue.peek();
            let t = [arrival.map(|a| a.0), action, event]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(NEVER)
                .min(end);
            // An interval ends before anything at its closing instant happens.
            while next_tick <= t && next_tick < end {
                let snap = self.collector.tick_at(dur(next_tick));
                let at = next_tick;
                next_tick += tick;
                if watch(&snap) {
                    self.interrupted = true;
                    return at;
                }
                if self.events > MAX_EVENTS {
                    self.metrics.warn(format!(
                        "the model stopped at {:.1}s of virtual time after {} events: clients that retry without a delay against a server that answers at once make an event every round trip; give them a backoff, or fewer clients",
                        at as f64 / 1e6,
                        self.events
                    ));
                    self.interrupted = true;
                    return at;
                }
                // As the swarm does: settled once the timeline is done and every client is
                // connected or gave up, held for a few ticks.
                let ready = actions.peek().is_none() && at >= self.busy_until;
                if let Some(s) = &mut self.settling
                    && let Some(since) = s.observe(dur(at), ready, &snap.totals)
                {
                    self.settled_at = Some(since);
                    return at;
                }
            }
            if t >= end {
                return end;
            }
            if action == Some(t) {
                let planned = actions.next().expect("peeked");
                self.fire(&planned.action, t);
            } else if let Some((at, i)) = arrival.filter(|a| a.0 == t) {
                let (next_id, it) = &mut arrivals[i];
                it.next();
                let c = *next_id;
                *next_id += 1;
                self.attempt(c, at);
            } else if let Some((t, c, generation)) = self.queue.pop()
                && self.clients[c as usize].generation == generation
            {
                self.event(c, t);
            }
        }
    }

    fn schedule(&mut self, c: u32, at: u64) {
        let s = &mut self.clients[c as usize];
        s.generation = s.generation.wrapping_add(1);
        self.queue.push((at, c, s.generation));
    }

    /// A queued event of client `c` is due.
    fn event(&mut self, c: u32, t: u64) {
        self.events += 1;
        match self.clients[c as usize].state {
            State::Waiting => {
                self.metrics.backoff_ended(self.who(c));
                self.attempt(c, t);
            }
            State::Attempting(answer) => self.answer(c, answer, t),
            State::Hung => self.dead(c, t),
            State::Draining(code) => {
                self.server.drained(code);
                self.lost(c, t, Closed::ByPeer(code), code);
            }
            State::Expiring => {
                let close = self.lifetime.and_then(|l| l.close);
                self.server.expired(close);
                let code = close.unwrap_or(1006);
                self.lost(c, t, Closed::ByPeer(code), code);
            }
            State::Connected | State::Done => {}
        }
    }

    /// Client `c` starts an attempt at `t`: the server decides its answer now (the queue it
    /// joins is FIFO, so when it will be served is known), the client gets it later.
    fn attempt(&mut self, c: u32, t: u64) {
        self.events += 1;
        let who = self.who(c);
        let b = &self.plan.groups[usize::from(who.group)].behaviour;
        let timeout = us(b.handshake_timeout);
        let s = &mut self.clients[c as usize];
        s.attempts += 1;
        s.started = t;
        self.metrics
            .attempt(who, Duration::ZERO, s.attempts > 1, s.retry.failures() > 0);
        let rtt = self.rtt;
        let origin_allowed = self.origin_allowed[usize::from(who.group)];
        let (answer, at) =
            match self
                .server
                .handshake(t + rtt, t + rtt + timeout, rtt, origin_allowed)
            {
                None => (Answer::Refused, t + rtt),
                Some((conn, answer, at)) => {
                    self.clients[c as usize].conn = conn;
                    (answer, at)
                }
            };
        self.clients[c as usize].state = State::Attempting(answer);
        self.schedule(c, at);
    }

    /// The answer to client `c`'s attempt arrives at `t`.
    fn answer(&mut self, c: u32, answer: Answer, t: u64) {
        let who = self.who(c);
        let plan = self.plan;
        let b = &plan.groups[usize::from(who.group)].behaviour;
        let s = &mut self.clients[c as usize];
        let decision = match answer {
            Answer::Open => {
                self.metrics.opened(
                    who,
                    OpenTimings {
                        connect: dur(self.rtt),
                        tls: None,
                        handshake: dur(t.saturating_sub(s.started + self.rtt)),
                        reconnect: (s.mark != NEVER).then(|| dur(t.saturating_sub(s.mark))),
                    },
                );
                s.retry.opened(&b.backoff);
                s.mark = t;
                s.state = State::Connected;
                s.generation = s.generation.wrapping_add(1);
                if let Some(at) = self.expiry(c) {
                    self.clients[c as usize].state = State::Expiring;
                    self.schedule(c, at);
                }
                return;
            }
            Answer::Refused => {
                self.metrics.connect_error(who, ConnectError::Refused);
                s.retry.failed();
                Decision::Retry
            }
            Answer::Timeout => {
                self.metrics.connect_error(who, ConnectError::Timeout);
                s.retry.failed();
                Decision::Retry
            }
            Answer::Status(code) => {
                self.metrics.handshake_status(who, code);
                s.retry.failed();
                b.on_status.decide(code)
            }
        };
        // Only the 503s carry a Retry-After (a 403 does not).
        let retry_after = matches!(answer, Answer::Status(503)).then(|| self.server.retry_after());
        self.next(c, t, decision, retry_after);
    }

    /// Client `c` decides at `t` what to do after a failure or a loss.
    fn next(&mut self, c: u32, t: u64, decision: Decision, server: Option<Duration>) {
        let who = self.who(c);
        let b = &self.plan.groups[usize::from(who.group)].behaviour;
        let s = &mut self.clients[c as usize];
        let fixed = match decision {
            Decision::RetryAfter(d) => Some(d.0),
            _ => None,
        };
        match s.retry.next(
            &b.backoff,
            decision == Decision::Stop,
            fixed,
            server,
            dur(t),
            &mut s.rng,
        ) {
            Next::Wait(delay) => {
                let mut at = dur(t) + delay;
                if let Some(align) = b.align {
                    at = align_up(at, align);
                }
                let at = us(at);
                s.state = State::Waiting;
                self.metrics.backoff_started(who, dur(at - t));
                self.schedule(c, at);
            }
            Next::GiveUp => {
                s.state = State::Done;
                s.generation = s.generation.wrapping_add(1);
                self.metrics.gave_up(who);
            }
        }
    }

    /// Client `c`'s open connection ended at `t`, as `how`; `code` is what its close-code
    /// policy decides on.
    fn lost(&mut self, c: u32, t: u64, how: Closed, code: u16) {
        let who = self.who(c);
        let b = &self.plan.groups[usize::from(who.group)].behaviour;
        let s = &mut self.clients[c as usize];
        self.metrics.closed(who, how);
        let lived = dur(t.saturating_sub(s.mark));
        s.retry.lost(&b.backoff, lived);
        if lived < b.flap_below {
            self.metrics.flap(who);
        }
        s.mark = t;
        let decision = b.on_close.decide(code);
        self.next(c, t, decision, None);
    }

    /// A hung connection's client finds it dead: its first ping after the hang went
    /// unanswered for the timeout.
    fn dead(&mut self, c: u32, t: u64) {
        let group = usize::from(self.clients[c as usize].group);
        let silent = self.plan.groups[group]
            .behaviour
            .heartbeat
            .map_or(Duration::ZERO, |h| h.ping_every + h.timeout);
        self.lost(c, t, Closed::Dead { silent_for: silent }, 1006);
    }

    /// A timeline action fires at `t`.
    fn fire(&mut self, action: &TimelineAction, t: u64) {
        let open = self.server.open;
        if let TimelineAction::Server(a) = action {
            self.orders += 1;
            let seq = self.orders;
            self.busy_until = self.busy_until.max(t + us(a.lasts()));
            if let Action::Drain {
                code,
                over,
                share,
                refuse_new,
            } = *a
            {
                self.drain(seq, code, over, share, t);
                if refuse_new {
                    self.server.down_until(t + us(over));
                }
                self.fired.push(FiredAction {
                    t_ms: t / 1000,
                    action: action.to_string(),
                    connections: open,
                });
                return;
            }
            let (share, code, hang) = match *a {
                Action::DropAll { mode, share } => (
                    share,
                    match mode {
                        DropMode::Abrupt | DropMode::Reset => 1006,
                        DropMode::Close(code) => code,
                    },
                    false,
                ),
                Action::Restart { down_for } => {
                    self.server.down_until(t + us(down_for));
                    (1.0, 1006, false)
                }
                Action::Hang { share } => (share, 0, true),
                // A revoked session is closed with 4003 (`check` refuses ghosting ones).
                Action::Revoke { share } => (share, 4003, false),
                // A drain returned above; `check` refuses node restarts before a model starts.
                Action::Drain { .. } | Action::RestartNode { .. } => {
                    unreachable!("handled above or refused by model::check")
                }
            };
            for c in 0..self.clients.len() as u32 {
                let s = &self.clients[c as usize];
                let open = matches!(
                    s.state,
                    State::Connected | State::Hung | State::Draining(_) | State::Expiring
                );
                if !open || !in_share(u64::from(s.conn), seq, share) {
                    continue;
                }
                if hang {
                    // A connection being drained still gets its close, as on the server.
                    if matches!(s.state, State::Hung | State::Draining(_)) {
                        continue;
                    }
                    self.hang(c, t);
                } else {
                    self.events += 1;
                    self.server.dropped(1);
                    self.lost(c, t, Closed::ByPeer(code), code);
                }
            }
        }
        self.fired.push(FiredAction {
            t_ms: t / 1000,
            action: action.to_string(),
            connections: open,
        });
    }

    /// A drain fired at `t`: each connection open then (and in `share`) is closed with `code`
    /// at its own offset within `over`, the one the server draws for it.
    fn drain(&mut self, seq: u64, code: u16, over: Duration, share: f64, t: u64) {
        for c in 0..self.clients.len() as u32 {
            let expiry = self.expiry(c);
            let s = &mut self.clients[c as usize];
            let conn = u64::from(s.conn);
            if !matches!(s.state, State::Connected | State::Hung | State::Expiring)
                || !in_share(conn, seq, share)
            {
                continue;
            }
            let at = t + us(Action::offset(conn, seq, over));
            // As on the server, whichever comes first closes it.
            if expiry.is_some_and(|e| e <= at) {
                continue;
            }
            s.state = State::Draining(code);
            self.schedule(c, at);
        }
    }

    fn hang(&mut self, c: u32, t: u64) {
        self.server.hung += 1;
        let group = usize::from(self.clients[c as usize].group);
        let heartbeat = self.plan.groups[group].behaviour.heartbeat;
        let expiry = self.expiry(c);
        let s = &mut self.clients[c as usize];
        s.state = State::Hung;
        s.generation = s.generation.wrapping_add(1);
        let dead_at = heartbeat.map(|h| {
            // Pings go out every `ping_every` from the open; the first after the hang is
            // never answered.
            let every = us(h.ping_every).max(1);
            let since = t.saturating_sub(s.mark);
            s.mark + since.div_ceil(every).max(1) * every + us(h.timeout)
        });
        // The server still closes a hung connection at its lifetime, if that comes first.
        match (dead_at, expiry) {
            (_, Some(e)) if dead_at.is_none_or(|d| e < d) => {
                s.state = State::Expiring;
                self.schedule(c, e);
            }
            (Some(d), _) => self.schedule(c, d),
            (None, _) => {}
        }
    }

    /// When `max_lifetime` closes client `c`'s connection, opened at its mark.
    fn expiry(&self, c: u32) -> Option<u64> {
        let s = &self.clients[c as usize];
        self.lifetime.map(|l| s.mark + us(l.of(u64::from(s.conn))))
    }

    /// Close the run at `end`: the open connections are counted, then close as a real run's
    /// clients do, and every client that arrived reports its attempts.
    fn finish(mut self, plan: &Plan, end: u64, started_at: SystemTime) -> (Record, u64) {
        let mut connected_at_end = vec![0u64; plan.groups.len()];
        for c in 0..self.clients.len() as u32 {
            let who = self.who(c);
            let s = &self.clients[c as usize];
            if matches!(
                s.state,
                State::Connected | State::Hung | State::Draining(_) | State::Expiring
            ) {
                connected_at_end[usize::from(s.group)] += 1;
                self.metrics.closed(who, Closed::ByClient);
            }
            if s.attempts > 0 {
                if s.state == State::Waiting {
                    self.metrics.backoff_ended(who);
                }
                if let State::Attempting(_) = s.state {
                    self.metrics.connect_error(who, ConnectError::Cancelled);
                }
                self.metrics.client_done(who, s.attempts, 0);
            }
        }
        let collected = self.collector.finish_at(dur(end));
        let server = self.server.summary(end);
        let record = Record {
            name: plan.name.clone(),
            description: plan.description.clone(),
            seed: plan.seed,
            run_id: None,
            profile: plan.source.clone(),
            target: "model of the embedded target (virtual time, no sockets)".into(),
            started_at,
            duration: dur(end),
            end: match (self.interrupted, self.settled_at, plan.until) {
                (true, ..) => EndReason::Interrupted,
                (false, Some(_), _) => EndReason::Settled,
                (false, None, Some(_)) => EndReason::MaxReached,
                (false, None, None) => EndReason::Completed,
            },
            aborted_by: None,
            group_clients: plan.group_clients(),
            conversation_names: plan.conversation_names(),
            collected,
            connected_at_end,
            fired: self.fired,
            server: Some(server),
            proxy: None,
            cpu: crate::metrics::generator::cpu_times(),
            fd_limit: 0,
            expect_failures: plan.expect_failures,
            layout: vec!["modelled in virtual time, in one process, with no sockets".to_string()],
            memory_predicted: 0,
            failures: Vec::new(),
            until: plan
                .until
                .map(|u| crate::results::Until::recovered(u.max, self.settled_at)),
            events: None,
        };
        (record, self.events)
    }
}
