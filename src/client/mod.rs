//! One simulated client: a small state machine run as one task.
//!
//! ```text
//! wait (arrival or backoff) → attempt (connect → TLS → upgrade) → open session → lost
//!        ↑                          │ failed / refused                │
//!        └──── backoff policy ◄─────┴──────── close-code policy ◄─────┘
//! ```
//!
//! A client owns only its id, a 16-byte RNG and an `Arc` of its group's context; everything it
//! learns goes to the metrics shards. What a connection did is data ([`SessionEnd`],
//! [`connect::Attempt`]), never an error.

pub mod abuse;
pub mod connect;
pub mod conversation;
pub mod fleet;
mod session;
pub mod stream;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::Xoshiro128PlusPlus;
use rand::{RngExt, SeedableRng};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::backoff::{Next, Retry, align_up};
use crate::metrics::events::Cause;
use crate::metrics::{Closed, ConnectError, Metrics, OpenTimings, Who};
use crate::plan::ClientBehaviour;
use crate::profile::Decision;
use crate::seed::client_seed;
use connect::{Attempt, AttemptExtras, Endpoint};
use conversation::{Env, Memory};
pub use fleet::StageSlot;
use fleet::{Fleet, FleetEvent};
pub use session::SessionEnd;
use stream::StreamTracker;

/// What every client of a group shares.
pub struct GroupCtx {
    pub group: u16,
    /// The group's name (the `group` template variable).
    pub name: Arc<str>,
    pub behaviour: Arc<ClientBehaviour>,
    pub target: Arc<Endpoint>,
    pub metrics: Arc<Metrics>,
    /// The run's time zero: message timestamps are microseconds since it.
    pub epoch: Instant,
    /// Fires when the run ends; clients then close cleanly within `grace`.
    pub cancel: CancellationToken,
    pub grace: Duration,
    pub seed: u64,
    /// The run's id, the first part of every identity header (`<run>-<client>-<attempt>`).
    pub run_id: u32,
    /// The swarm's tasks: what a client starts beside itself (a connection it left open)
    /// goes here, so the run waits for it before counting.
    pub tasks: tokio_util::task::TaskTracker,
}

impl GroupCtx {
    pub fn now_us(&self) -> u64 {
        self.us_since_epoch(Instant::now())
    }

    pub fn us_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_micros() as u64
    }
}

/// A client's auth token. Boxed in the client: most clients have none, and every client's
/// task carries the field.
struct Token {
    text: String,
    /// Unix ms.
    expires: u64,
    /// When a refresh that takes time completes (meanwhile the client has this old token).
    refresh_due: Option<Instant>,
}

/// One client's state between connections.
struct Client {
    ctx: Arc<GroupCtx>,
    who: Who,
    rng: Xoshiro128PlusPlus,
    attempts: u32,
    /// Failures, attempt number, previous delay, retry budget: what the backoff decides from.
    retry: Retry,
    /// When the last connection was lost; while one is open, when it opened (one field for
    /// both keeps the task small).
    mark: Option<Instant>,
    /// The auth token, its expiry and any refresh in flight.
    token: Option<Box<Token>>,
    stream: Option<Box<StreamTracker>>,
    /// What the client's conversation keeps across connections.
    memory: Option<Box<Memory>>,
    /// Churn, lifetime, network switch, duplicate connections: see [`fleet`].
    fleet: Option<Box<Fleet>>,
}

/// Run client `id` from its first intended attempt until the run ends or it gives up.
pub fn run(ctx: Arc<GroupCtx>, id: u32, first_attempt: Instant) -> impl Future<Output = ()> {
    let fleet = Fleet::for_client(&ctx.behaviour, None, None);
    run_client(ctx, id, first_attempt, fleet)
}

/// Run visit `slot.visit` of stage client `id` from its first intended attempt until the run
/// ends, it gives up, or it leaves at `leave` (closing with 1000: a stage's ramp-down).
pub fn run_visit(
    ctx: Arc<GroupCtx>,
    id: u32,
    first_attempt: Instant,
    leave: Option<Instant>,
    slot: StageSlot,
) -> impl Future<Output = ()> {
    let fleet = Fleet::for_client(&ctx.behaviour, leave, Some(slot));
    run_client(ctx, id, first_attempt, fleet)
}

/// A plain function that returns the future, not an `async fn`: an `async fn` keeps its
/// arguments in its future beside the locals made from them, for the client's whole life. The
/// client is built here and the future keeps it once; what counts its arrival runs when the
/// task first runs, as before.
fn run_client(
    ctx: Arc<GroupCtx>,
    id: u32,
    first_attempt: Instant,
    fleet: Option<Box<Fleet>>,
) -> impl Future<Output = ()> {
    let who = Who {
        client: id,
        group: ctx.group,
    };
    let mut c = Client {
        fleet,
        rng: Xoshiro128PlusPlus::seed_from_u64(client_seed(ctx.seed, id)),
        stream: ctx
            .behaviour
            .subscribe
            .map(|s| Box::new(StreamTracker::new(s.checkpoint_every))),
        memory: ctx
            .behaviour
            .conversation
            .as_deref()
            .map(|plan| Box::new(Memory::new(plan, id, ctx.seed))),
        retry: Retry::new(&ctx.behaviour.backoff),
        ctx,
        who,
        attempts: 0,
        mark: None,
        token: None,
    };
    // The client's own `who`, not a copy of it beside the client.
    async move {
        let who = c.who;
        c.ctx.metrics.fleet(who, |c| c.clients_arrived += 1);
        if let Some(f) = c.fleet.as_deref_mut() {
            // A stage client's later visit is another user: its own random draws.
            if f.visit > 0 {
                c.rng = Xoshiro128PlusPlus::seed_from_u64(crate::seed::mix(
                    client_seed(c.ctx.seed, who.client),
                    u64::from(f.visit),
                ));
            }
            f.arrive(c.ctx.behaviour.fleet.as_deref(), first_attempt, &mut c.rng);
        }
        c.run(first_attempt).await;
        c.count_conversation_losses();
        let lost = c.stream.as_ref().map_or(0, |s| s.lost());
        c.ctx.metrics.client_done(who, c.attempts, lost);
    }
}

impl Client {
    /// Not an `async fn`, for the reason given at [`run_client`]: the first attempt's instant
    /// is kept once, as the next one's.
    fn run(&mut self, mut intended: Instant) -> impl Future<Output = ()> + '_ {
        let ctx = self.ctx.clone();
        async move {
            let (b, m, who) = (&ctx.behaviour, &ctx.metrics, self.who);
            let mut in_backoff = false;
            // The next attempt's socket, made before a retry's sleep (see `prepare_socket`).
            let mut prepared = None;
            loop {
                let woke = tokio::select! {
                    _ = ctx.cancel.cancelled() => false,
                    // A leaving client stops waiting when it leaves.
                    _ = sleep_until(match self.fleet.as_deref().and_then(|f| f.leave_at) {
                        Some(leave) => intended.min(leave),
                        None => intended,
                    }) => true,
                };
                if std::mem::take(&mut in_backoff) {
                    m.backoff_ended(who);
                }
                if !woke {
                    return;
                }
                if self
                    .fleet
                    .as_deref()
                    .is_some_and(|f| f.leave_due(Instant::now()))
                {
                    // Left while waiting to (re)connect: nothing to close.
                    m.fleet(who, |c| c.sessions_ended += 1);
                    if !self.arrive_again() {
                        return;
                    }
                }
                self.attempts += 1;
                m.attempt(
                    who,
                    Instant::now().saturating_duration_since(intended),
                    self.attempts > 1,
                    self.retry.failures() > 0,
                );
                self.prepare_token(false);
                let added = match (b.conversation.as_deref(), self.memory.as_deref_mut()) {
                    (Some(plan), Some(mem)) => {
                        let mut env = Env {
                            ctx: &ctx,
                            who,
                            rng: &mut self.rng,
                            token: self.token.as_ref().map(|t| t.text.as_str()),
                        };
                        Some(Box::new(conversation::handshake_extras(
                            plan, mem, &mut env,
                        )))
                    }
                    _ => None,
                };
                let extras = AttemptExtras {
                    added,
                    token: self.token.as_ref().map(|t| t.text.as_str()),
                    attempt: self
                        .fleet
                        .as_deref()
                        .and_then(Fleet::next_attempt)
                        .unwrap_or(self.attempts),
                    subscribe: b.subscribe.is_some(),
                    resume_after: b
                        .subscribe
                        .filter(|s| s.resume)
                        .and_then(|_| self.stream.as_ref()?.resume_from()),
                    source_shift: self.fleet.as_deref().map_or(0, |f| f.source_shift),
                };
                // Boxed: the handshake future is large and only lives while connecting; an idle
                // connected client should not carry its space.
                // The extras move into the boxed future: the client's own task does not keep them.
                // A leaving client leaves while connecting too: no connection opens after it left.
                // (Its timer in the box: only a leaving client's attempt carries one.)
                let leave = self.fleet.as_deref().and_then(|f| f.leave_at);
                let (c, socket) = (&ctx, prepared.take());
                let attempt = Box::pin(async move {
                    tokio::select! {
                        a = connect::attempt(c, who.client, extras, socket) => Some(a),
                        _ = crate::net::sleep_until_opt(leave) => None,
                    }
                });
                let attempt = tokio::select! {
                    a = attempt => match a {
                        Some(a) => a,
                        None => {
                            m.connect_error(who, ConnectError::Cancelled);
                            m.fleet(who, |c| c.sessions_ended += 1);
                            if !self.arrive_again() {
                                return;
                            }
                            intended = Instant::now();
                            continue;
                        }
                    },
                    _ = ctx.cancel.cancelled() => {
                        m.connect_error(who, ConnectError::Cancelled);
                        return;
                    }
                };
                // The socket moves out of the attempt whole (`{ attempt }`), so the attempt's own
                // space is free while the session runs: moved out of its variant, the socket left
                // the attempt reserved beside it in the task for the connection's whole life.
                let (decision, retry_after) = 'attempt: {
                    #[allow(clippy::blocks_in_conditions)]
                    let (mut ws, t) = match { attempt } {
                        Attempt::Open(ws, t) => (ws, t),
                        Attempt::Failed(e) => {
                            m.connect_error(who, e);
                            self.retry.failed();
                            break 'attempt (Decision::Retry, None);
                        }
                        Attempt::Status { code, retry_after } => {
                            m.handshake_status(who, code);
                            self.retry.failed();
                            break 'attempt (b.on_status.decide(code), retry_after);
                        }
                    };
                    m.opened(
                        who,
                        OpenTimings {
                            connect: t.connect,
                            tls: t.tls,
                            handshake: t.handshake,
                            reconnect: self.mark.map(|l| l.elapsed()),
                        },
                    );
                    self.retry.opened(&b.backoff);
                    self.mark = Some(Instant::now());
                    let event = self
                        .fleet
                        .as_deref_mut()
                        .and_then(|f| f.on_open(b.fleet.as_deref(), Instant::now(), &mut self.rng));
                    let end = match event {
                        None => self.session(&ctx, &mut ws).await,
                        // Boxed: only fleet clients wait on a second timer beside the session.
                        Some((at, event)) => {
                            let (me, ws) = (&mut *self, &mut ws);
                            let ctx = &*ctx;
                            Box::pin(async move {
                            let end = tokio::select! {
                                biased;
                                end = me.session(ctx, ws) => end,
                                // Not once the run ends: the session is closing.
                                _ = async {
                                    tokio::select! {
                                        biased;
                                        _ = ctx.cancel.cancelled() => std::future::pending().await,
                                        _ = sleep_until(at) => {}
                                    }
                                } => SessionEnd::Fleet(event),
                            };
                            if end == SessionEnd::Fleet(FleetEvent::Leave) {
                                let stream = me.stream.as_deref_mut();
                                session::close_gracefully(ctx, me.who, ws, stream).await;
                            }
                            end
                        })
                        .await
                        }
                    };
                    if let Some(m) = self.memory.as_deref_mut() {
                        m.close();
                    }
                    if matches!(end, SessionEnd::Dead { .. }) {
                        // Abort a connection found dead (RST): a FIN would queue behind data the
                        // peer never read and leave an orphan socket holding the port, and the
                        // peer would never learn that the client left.
                        let _ = socket2::SockRef::from(ws.get_ref().tcp())
                            .set_linger(Some(Duration::ZERO));
                    }
                    if let Some(counts) = ws.get_ref().compression_counts() {
                        m.compressed(who, counts);
                    }
                    match (end, self.fleet.as_deref_mut()) {
                        (SessionEnd::Fleet(event), Some(f)) => f.release(&ctx, who, event, ws),
                        _ => drop(ws),
                    }
                    let now = Instant::now();
                    if let Some(opened) = self.mark {
                        let lived = now.saturating_duration_since(opened);
                        self.retry.lost(&b.backoff, lived);
                        let lost = matches!(
                            end,
                            SessionEnd::Peer(_)
                                | SessionEnd::Dead { .. }
                                | SessionEnd::Violation(_)
                        );
                        if lost && lived < b.flap_below {
                            m.flap(who);
                        }
                    }
                    // The next open is a recovery (latency_us.reconnect) only after a loss:
                    // the peer's close, a dead or broken connection, a drop or a network switch.
                    // A close of the client's own (a stall, a policy) recovers from nothing.
                    let lost = matches!(
                        end,
                        SessionEnd::Peer(_)
                            | SessionEnd::Dead { .. }
                            | SessionEnd::Violation(_)
                            | SessionEnd::Fleet(FleetEvent::Churn | FleetEvent::Switch)
                    );
                    self.mark = lost.then_some(now);
                    let decision = match end {
                        SessionEnd::Stopped => {
                            m.closed(who, Closed::ByClient);
                            return;
                        }
                        SessionEnd::Peer(code) => {
                            m.closed(who, Closed::ByPeer(code));
                            b.on_close.decide(code)
                        }
                        SessionEnd::Dead { silent_for } => {
                            m.closed(who, Closed::Dead { silent_for });
                            b.on_close.decide(1006)
                        }
                        SessionEnd::Violation(code) => {
                            m.closed(who, Closed::Violation(code));
                            b.on_close.decide(code)
                        }
                        SessionEnd::Closed { code, reconnect } => {
                            m.closed(who, Closed::Policy(code));
                            if reconnect {
                                Decision::Retry
                            } else {
                                Decision::Stop
                            }
                        }
                        SessionEnd::Fleet(event) => match self.fleet_ended(event) {
                            Some(decision) => decision,
                            None => return,
                        },
                    };
                    (decision, None)
                };
                if ctx.cancel.is_cancelled() {
                    return;
                }
                let fixed = match decision {
                    Decision::RetryAfter(d) => Some(d.0),
                    _ => None,
                };
                let now = Instant::now();
                let delay = match self.retry.next(
                    &b.backoff,
                    decision == Decision::Stop,
                    fixed,
                    // A server that says when to come back is obeyed (429/503 with Retry-After).
                    retry_after,
                    now.saturating_duration_since(ctx.epoch),
                    &mut self.rng,
                ) {
                    Next::Wait(d) => d,
                    Next::GiveUp => {
                        m.gave_up(who);
                        return;
                    }
                };
                if decision == Decision::RefreshAuth {
                    self.prepare_token(true);
                }
                intended = now + delay;
                if let Some(align) = b.align {
                    intended =
                        ctx.epoch + align_up(intended.saturating_duration_since(ctx.epoch), align);
                }
                m.backoff_started(who, intended.saturating_duration_since(now));
                in_backoff = true;
                let shift = self.fleet.as_deref().map_or(0, |f| f.source_shift);
                prepared = connect::prepare_socket(&ctx, who.client.wrapping_add(shift));
            }
        }
    }

    /// What the conversation's streams never delivered to this client: final only when the
    /// client ends (a late arrival could still fill a gap).
    fn count_conversation_losses(&self) {
        if let Some(mem) = &self.memory {
            for (i, lost) in mem.lost().into_iter().enumerate() {
                if lost > 0 {
                    self.ctx
                        .metrics
                        .conversation(self.who, |d| d.stream(i).counts.lost += lost);
                }
            }
        }
    }

    /// The open session of this client on `ws`.
    fn session<'a>(
        &'a mut self,
        ctx: &'a GroupCtx,
        ws: &'a mut connect::Ws,
    ) -> impl Future<Output = SessionEnd> + 'a {
        session::run(
            ctx,
            self.who,
            ws,
            &mut self.rng,
            self.stream.as_deref_mut(),
            self.memory.as_deref_mut(),
            self.token.as_deref(),
        )
    }

    /// Count what a fleet event did to the connection, and decide what comes next: `None`
    /// when the client is gone.
    fn fleet_ended(&mut self, event: FleetEvent) -> Option<Decision> {
        let (m, who) = (&self.ctx.metrics, self.who);
        let now = crate::units::Dur(Duration::ZERO);
        match event {
            FleetEvent::Churn => {
                m.fleet_closed(who, Cause::Churn, |c| c.churn_drops += 1);
                Some(Decision::Retry)
            }
            FleetEvent::Switch => {
                m.fleet_closed(who, Cause::Switch, |c| c.network_switches += 1);
                Some(Decision::Retry)
            }
            // The bug: a reconnect at once, the old socket still open.
            FleetEvent::Duplicate => {
                m.fleet_closed(who, Cause::Duplicate, |c| c.duplicate_connections += 1);
                // Nothing was lost: the next open is no recovery.
                self.mark = None;
                Some(Decision::RetryAfter(now))
            }
            FleetEvent::Leave => {
                m.left(who);
                m.fleet(who, |c| c.sessions_ended += 1);
                self.arrive_again().then_some(Decision::RetryAfter(now))
            }
        }
    }

    /// A client that left is replaced by a new one at once if its group has session
    /// lifetimes (true); otherwise it is gone (false).
    fn arrive_again(&mut self) -> bool {
        let ctx = self.ctx.clone();
        let b = &ctx.behaviour;
        let Some(f) = self.fleet.as_deref_mut() else {
            return false;
        };
        f.leave_at = None;
        if !f.replaces() {
            return false;
        }
        // A new user: no backoff history, no token, no place in the stream, a conversation
        // from its start (what the one that left never received is counted now).
        f.arrive(b.fleet.as_deref(), Instant::now(), &mut self.rng);
        let lost = self.stream.as_ref().map_or(0, |s| s.lost());
        ctx.metrics.fleet(self.who, |c| c.lost += lost);
        self.count_conversation_losses();
        self.memory = b
            .conversation
            .as_deref()
            .map(|plan| Box::new(Memory::new(plan, self.who.client, ctx.seed)));
        self.retry = Retry::new(&b.backoff);
        self.mark = None;
        self.token = None;
        self.stream = b
            .subscribe
            .map(|s| Box::new(StreamTracker::new(s.checkpoint_every)));
        ctx.metrics.fleet(self.who, |c| c.clients_arrived += 1);
        true
    }

    /// Get a token if the client has none, or (refreshing clients, or when `force`d by a
    /// refresh-auth decision) if it has expired. A refresh that takes time leaves the client
    /// with its old token until it completes — an attempt meanwhile goes out with the old one
    /// (the refresh race) — and may fail, in which case the next attempt starts another.
    fn prepare_token(&mut self, force: bool) {
        let ctx = self.ctx.clone();
        let Some(auth) = &ctx.behaviour.auth else {
            return;
        };
        let expired = self
            .token
            .as_ref()
            .is_some_and(|t| t.expires <= crate::auth::now_ms());
        let wanted = self.token.is_none() || force || (auth.refresh && expired);
        if let Some(t) = self.token.as_deref_mut()
            && (wanted || t.refresh_due.is_some())
            && !auth.refresh_takes.is_zero()
        {
            let now = Instant::now();
            match t.refresh_due {
                None => {
                    t.refresh_due = Some(now + auth.refresh_takes);
                    return;
                }
                Some(due) if due > now => return,
                Some(_) => {
                    t.refresh_due = None;
                    self.ctx
                        .metrics
                        .conversation(self.who, |d| d.refreshes += 1);
                    if self.rng.random::<f64>() < auth.refresh_fails {
                        self.ctx
                            .metrics
                            .conversation(self.who, |d| d.refresh_failures += 1);
                        return;
                    }
                }
            }
        } else if !wanted {
            return;
        } else if self.token.is_some() {
            self.ctx
                .metrics
                .conversation(self.who, |d| d.refreshes += 1);
        }
        let (text, expires) = self.mint(auth);
        self.token = Some(Box::new(Token {
            text,
            expires,
            refresh_due: None,
        }));
    }

    fn mint(&mut self, auth: &crate::plan::AuthPlan) -> (String, u64) {
        let Some(jwt) = &auth.jwt else {
            return auth.signer.mint(self.who.client, auth.lifetime);
        };
        let b = &self.ctx.behaviour;
        let feed = b
            .feeder
            .as_ref()
            .map(|f| (f, conversation::feed_row(f, self.who.client, self.ctx.seed)));
        let claims = conversation::render_claims(
            &jwt.claims,
            self.who.client,
            &self.ctx.name,
            &mut self.rng,
            feed,
        );
        let now = crate::auth::now_ms();
        let expires = now + auth.lifetime.as_millis() as u64;
        // The claims template is a JSON object (checked when compiled); `iat`/`exp` go in
        // unless the profile gave its own.
        let mut claims = claims;
        let mut extra = String::new();
        if jwt.add_iat {
            extra.push_str(&format!("\"iat\":{},", now / 1000));
        }
        if jwt.add_exp {
            extra.push_str(&format!("\"exp\":{},", expires.div_ceil(1000)));
        }
        if !extra.is_empty() {
            let body = claims
                .trim_start()
                .strip_prefix('{')
                .unwrap_or("}")
                .to_string();
            if body.trim_start().starts_with('}') {
                extra.pop();
            }
            claims = format!("{{{extra}{body}");
        }
        (jwt.key.sign(&claims), expires)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    /// An idle client's whole cost is its task: keep the future small. The connect attempt is
    /// boxed and freed once open, so it is not part of this figure.
    #[test]
    fn client_future_is_small() {
        let yaml = "
name: t
duration: 1s
target: ws://127.0.0.1:9/ws
groups:
  - name: g
    clients: 1
    arrival: { rate: 1/s }
    behaviour:
      send: { every: 1s, bytes: 64 }
      heartbeat: { ping_every: 1s, timeout: 1s }
";
        let plan = Plan::from_yaml(yaml, "t").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let ctx = Arc::new(GroupCtx {
            group: 0,
            name: "g".into(),
            behaviour: plan.groups[0].behaviour.clone(),
            target: Arc::new(Endpoint::new("ws://127.0.0.1:9/ws", &plan.tls).unwrap()),
            metrics: Arc::new(Metrics::new(1)),
            epoch: Instant::now(),
            cancel: CancellationToken::new(),
            grace: Duration::from_secs(1),
            seed: 1,
            run_id: 0,
            tasks: tokio_util::task::TaskTracker::new(),
        });
        let fut = run(ctx, 0, Instant::now());
        let size = std::mem::size_of_val(&fut);
        println!("client future: {size} bytes");
        // 1296 once the connect attempt left the task whole, the session and client futures
        // stopped keeping their arguments twice and the session's writes went after its select;
        // 1112 once the WebSocket was our own (1104 in release; the WebSocket is 128 bytes
        // there, tokio-tungstenite's was 312); 912 (904 in release) once the session's timers
        // were boxed and armed only for a deadline, and a write that has to wait was boxed.
        // tokio rounds a task's cell up to 128 bytes: the cell is the future + 112 bytes, so
        // 904 makes it 1024 in release, where 1104 made it 1280. Growing past the step costs
        // every client 128 bytes.
        assert!(size <= 912, "client future grew to {size} bytes");
    }
}
