//! Running a group's [`ConversationPlan`] on one connection, without I/O: the session feeds in
//! what arrives and when timers fire, and sends what comes out ([`Out`]). Kept apart from the
//! socket so the engine is tested message by message, and so an idle client carries only two
//! small boxes: [`Memory`] (what outlives a connection: captures, stream positions, counters)
//! and [`Conversation`] (where this connection is in its steps, requests in flight).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use rand::rngs::Xoshiro128PlusPlus;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::GroupCtx;
use super::session::TIMER_SLACK;
use super::stream::{Arrival, StreamTracker};
use crate::metrics::Who;
use crate::plan::conversation::{
    Body, ConversationPlan, ExpectPlan, FeederPlan, MessagePlan, StepPlan,
};
use crate::profile::{FeedOrder, OnTimeout, TimeUnit, When};
use crate::script::matcher::{Field, Msg};
use crate::script::template::{Template, Values};

/// Periodic sends one timer call makes at most for one request kind (see `on_timer`).
const MAX_BURST: usize = 64;

/// Stream keys a client tracks per stream; messages of further keys are counted as
/// unreadable rather than grow the client without bound.
const MAX_KEYS: usize = 256;

/// One stream's trackers, by stream key (`None` for a stream without keys).
type Keyed = Vec<(Option<Box<str>>, StreamTracker)>;

/// What a client keeps of its conversation across connections.
pub struct Memory {
    captures: Box<[Option<Box<str>>]>,
    streams: Box<[Keyed]>,
    /// Messages rendered so far (the `counter` variable; also the ids of requests).
    counter: u64,
    /// Connections opened so far (the `conn` variable).
    conn: u32,
    feed_row: usize,
    /// This connection's place in the conversation, while one is open. Kept here rather than
    /// in the session's future: that future is every client's task, conversation or not.
    current: Option<Box<Conversation>>,
}

impl Memory {
    /// A connection opened: start its conversation (its first sends are in `outs`).
    pub fn open(&mut self, plan: &ConversationPlan, env: &mut Env<'_>) {
        let c = Conversation::open(plan, self, env);
        self.current = Some(c);
    }

    /// The connection ended: requests or an expect still waiting count as abandoned.
    pub fn close(&mut self) {
        self.current = None;
    }

    /// The open connection's conversation.
    pub fn current(&mut self) -> Option<&mut Conversation> {
        self.current.as_deref_mut()
    }

    pub fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// A frozen client woke: its periodic requests start again from now, rather than replay
    /// what they owed while it slept.
    pub fn woke(&mut self, plan: &ConversationPlan, now: Instant) {
        if let Some(c) = self.current.as_deref_mut() {
            for (next, p) in c.next_periodic.iter_mut().zip(&plan.periodic) {
                *next = (*next).max(now + p.every);
            }
        }
    }

    /// See [`Conversation::deadline`].
    pub fn deadline(&self, plan: &ConversationPlan) -> Option<Instant> {
        self.current.as_ref()?.deadline(plan)
    }

    /// A message arrived; true when there is something to send (or a close).
    pub fn on_message(
        &mut self,
        plan: &ConversationPlan,
        env: &mut Env<'_>,
        msg: &Msg<'_>,
        now: Instant,
    ) -> bool {
        let Some(mut c) = self.current.take() else {
            return false;
        };
        c.on_message(plan, self, env, msg, now);
        let has_outs = !c.outs.is_empty();
        self.current = Some(c);
        has_outs
    }

    /// A timer is due; true when there is something to send (or a close).
    pub fn on_timer(&mut self, plan: &ConversationPlan, env: &mut Env<'_>, now: Instant) -> bool {
        let Some(mut c) = self.current.take() else {
            return false;
        };
        c.on_timer(plan, self, env, now);
        let has_outs = !c.outs.is_empty();
        self.current = Some(c);
        has_outs
    }

    pub fn new(plan: &ConversationPlan, client: u32, seed: u64) -> Memory {
        let feed_row = plan
            .feeder
            .as_ref()
            .map_or(0, |f| feed_row(f, client, seed));
        Memory {
            captures: vec![None; plan.captures.len()].into(),
            streams: (0..plan.streams.len()).map(|_| Vec::new()).collect(),
            counter: 0,
            conn: 0,
            feed_row,
            current: None,
        }
    }

    /// The position to resume stream `s` (or the first stream) from, if any was seen.
    fn last_seq(&self, s: Option<usize>) -> Option<u64> {
        let keys = self.streams.get(s.unwrap_or(0))?;
        keys.iter().filter_map(|(_, t)| t.resume_from()).max()
    }

    fn resuming(&self) -> bool {
        !self.streams.is_empty() && self.last_seq(None).is_some()
    }

    /// Messages never received, per stream, final once the client is done.
    pub fn lost(&self) -> Vec<u64> {
        self.streams
            .iter()
            .map(|keys| keys.iter().map(|(_, t)| t.lost()).sum())
            .collect()
    }
}

/// What the session must do.
#[derive(Debug)]
pub enum Out {
    Send(Message),
    /// Close with this code, then reconnect (with backoff) or stop.
    Close {
        code: u16,
        reason: String,
        reconnect: bool,
    },
}

/// What the engine needs from the client to render and record.
pub struct Env<'a> {
    pub ctx: &'a GroupCtx,
    pub who: Who,
    pub rng: &'a mut Xoshiro128PlusPlus,
    pub token: Option<&'a str>,
}

/// One connection's place in the conversation.
pub struct Conversation {
    step: usize,
    /// The deadline of the expect or wait the steps are blocked on.
    blocked_until: Option<Instant>,
    /// When the last step's message went out (an expect's latency counts from it) and its id.
    last_send: Instant,
    last_id: Option<u64>,
    /// Next send of each periodic request (far future once its `count` is sent); empty until
    /// the steps are done.
    next_periodic: Vec<Instant>,
    /// Sends of each periodic request on this connection.
    periodic_sent: Vec<u64>,
    /// Requests awaiting their reply, per periodic: (id, sent), oldest first.
    in_flight: Vec<VecDeque<(u64, Instant)>>,
    /// The sample of the expect the steps are blocked on, if any.
    waiting_on: Option<usize>,
    /// The sample of each periodic request, and where to record: a connection that ends with
    /// requests in flight (or an expect waiting) counts them as abandoned when it is dropped,
    /// however it ended.
    samples: Vec<usize>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    who: Who,
    pub outs: Vec<Out>,
    buf: String,
}

impl Drop for Conversation {
    fn drop(&mut self) {
        if let Some(sample) = self.waiting_on {
            self.metrics
                .conversation(self.who, |d| d.sample(sample).counts.abandoned += 1);
        }
        for (q, sample) in self.in_flight.iter().zip(&self.samples) {
            if !q.is_empty() {
                let n = q.len() as u64;
                self.metrics
                    .conversation(self.who, |d| d.sample(*sample).counts.abandoned += n);
            }
        }
    }
}

struct Vals<'a, 'b> {
    env: &'a mut Env<'b>,
    mem: &'a Memory,
    plan: &'a ConversationPlan,
    id: Option<u64>,
    msg: Option<&'a Msg<'a>>,
}

impl Values for Vals<'_, '_> {
    fn client(&self) -> u32 {
        self.env.who.client
    }
    fn group(&self) -> &str {
        &self.env.ctx.name
    }
    fn conn(&self) -> u32 {
        self.mem.conn
    }
    fn counter(&self) -> u64 {
        self.mem.counter
    }
    fn id(&self) -> Option<u64> {
        self.id
    }
    fn random(&mut self) -> u64 {
        self.env.rng.random()
    }
    fn capture(&self, i: usize) -> Option<&str> {
        self.mem.captures.get(i)?.as_deref()
    }
    fn last_seq(&self, s: Option<usize>) -> Option<u64> {
        self.mem.last_seq(s)
    }
    fn feed(&self, column: usize) -> &str {
        match &self.plan.feeder {
            Some(f) => f.data.value(self.mem.feed_row, column),
            None => "",
        }
    }
    fn token(&self) -> Option<&str> {
        self.env.token
    }
    fn answering(&self) -> Option<&Msg<'_>> {
        self.msg
    }
}

fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// A publish time in microseconds since the Unix epoch.
fn published_us(f: &Field, unit: TimeUnit, m: &Msg<'_>) -> Option<u64> {
    match unit {
        TimeUnit::Rfc3339 => {
            let text = f.get(m)?;
            let t = humantime::parse_rfc3339_weak(text.trim()).ok()?;
            Some(t.duration_since(UNIX_EPOCH).ok()?.as_micros() as u64)
        }
        _ => {
            // A float keeps sub-unit precision (`1700000000.123` seconds).
            let v: f64 = match f.get_json(m) {
                Some(serde_json::Value::Number(n)) => n.as_f64()?,
                _ => f.get(m)?.trim().parse().ok()?,
            };
            let scale = match unit {
                TimeUnit::Ms => 1e3,
                TimeUnit::Us => 1.0,
                TimeUnit::S => 1e6,
                TimeUnit::Rfc3339 => unreachable!("handled above"),
            };
            (v >= 0.0).then_some((v * scale) as u64)
        }
    }
}

impl Conversation {
    /// A connection opened: count it, and run the steps as far as they go.
    pub fn open(plan: &ConversationPlan, mem: &mut Memory, env: &mut Env<'_>) -> Box<Conversation> {
        mem.conn += 1;
        let mut c = Box::new(Conversation {
            step: 0,
            blocked_until: None,
            last_send: Instant::now(),
            last_id: None,
            next_periodic: Vec::new(),
            periodic_sent: Vec::new(),
            in_flight: Vec::new(),
            waiting_on: None,
            samples: plan.periodic.iter().map(|p| p.sample).collect(),
            metrics: env.ctx.metrics.clone(),
            who: env.who,
            outs: Vec::new(),
            buf: String::new(),
        });
        c.advance(plan, mem, env, Instant::now());
        c
    }

    /// The earliest instant [`Self::on_timer`] has something to do: the expect or wait the
    /// steps are blocked on, the next periodic send, the oldest request's reply timeout.
    pub fn deadline(&self, plan: &ConversationPlan) -> Option<Instant> {
        let replies = self
            .in_flight
            .iter()
            .zip(&plan.periodic)
            .filter_map(|(q, p)| Some(q.front()?.1 + p.reply.as_ref()?.timeout));
        let periodic = self
            .next_periodic
            .iter()
            .zip(&self.periodic_sent)
            .zip(&plan.periodic)
            .filter(|((_, sent), p)| p.count.is_none_or(|c| **sent < c))
            .map(|((t, _), _)| *t);
        self.blocked_until
            .into_iter()
            .chain(periodic)
            .chain(replies)
            .min()
    }

    fn render(
        &mut self,
        m: &MessagePlan,
        plan: &ConversationPlan,
        mem: &mut Memory,
        env: &mut Env<'_>,
        id: Option<u64>,
        msg: Option<&Msg<'_>>,
    ) -> Message {
        match &m.body {
            Body::Text(t) => {
                mem.counter += 1;
                render_text(t, &mut self.buf, plan, mem, env, id, msg);
                Message::text(self.buf.as_str())
            }
            Body::Binary(b) => Message::binary(b.clone()),
            Body::RandomBinary(n) => {
                let mut bytes = vec![0u8; *n];
                env.rng.fill(&mut bytes[..]);
                Message::binary(bytes)
            }
        }
    }

    /// Run steps until one blocks (an expect, a wait) or they are done.
    fn advance(
        &mut self,
        plan: &ConversationPlan,
        mem: &mut Memory,
        env: &mut Env<'_>,
        now: Instant,
    ) {
        while self.blocked_until.is_none() {
            let Some(step) = plan.steps.get(self.step) else {
                self.start_periodic(plan, env, now);
                return;
            };
            match step {
                StepPlan::Send(m) => {
                    let skip = match m.when {
                        Some(When::Resuming) => !mem.resuming(),
                        Some(When::Fresh) => mem.resuming(),
                        None => false,
                    };
                    if !skip {
                        let id = mem.counter + 1;
                        let msg = self.render(m, plan, mem, env, Some(id), None);
                        env.ctx.metrics.sent_unscheduled(env.who);
                        self.outs.push(Out::Send(msg));
                        self.last_send = Instant::now();
                        self.last_id = Some(id);
                    }
                    self.step += 1;
                }
                StepPlan::Expect(e) => {
                    env.ctx
                        .metrics
                        .conversation(env.who, |d| d.sample(e.sample).counts.sent += 1);
                    self.blocked_until = Some(now + e.timeout);
                    self.waiting_on = Some(e.sample);
                }
                StepPlan::Wait(d) => {
                    self.blocked_until = Some(now + *d);
                }
                StepPlan::Close {
                    code,
                    reason,
                    reconnect,
                } => {
                    self.step += 1;
                    self.outs.push(Out::Close {
                        code: *code,
                        reason: reason.clone(),
                        reconnect: *reconnect,
                    });
                    return;
                }
            }
        }
    }

    fn start_periodic(&mut self, plan: &ConversationPlan, env: &mut Env<'_>, now: Instant) {
        if self.next_periodic.len() == plan.periodic.len() {
            return;
        }
        // A random phase per connection, so clients that opened together do not send in
        // lock-step.
        self.next_periodic = plan
            .periodic
            .iter()
            .map(|p| now + p.every.mul_f64(env.rng.random::<f64>()))
            .collect();
        self.in_flight = plan.periodic.iter().map(|_| VecDeque::new()).collect();
        self.periodic_sent = vec![0; plan.periodic.len()];
    }

    /// Timers: an expect or a wait ran out, a periodic send is due, a request went
    /// unanswered.
    pub fn on_timer(
        &mut self,
        plan: &ConversationPlan,
        mem: &mut Memory,
        env: &mut Env<'_>,
        now: Instant,
    ) {
        if self.blocked_until.is_some_and(|t| t <= now) {
            self.blocked_until = None;
            self.waiting_on = None;
            match plan.steps.get(self.step) {
                Some(StepPlan::Expect(e)) => {
                    env.ctx
                        .metrics
                        .conversation(env.who, |d| d.sample(e.sample).counts.timeouts += 1);
                    if self.expect_failed(e) {
                        return;
                    }
                }
                _ => self.step += 1,
            }
            self.advance(plan, mem, env, now);
        }
        for (i, p) in plan.periodic.iter().enumerate() {
            // Unanswered requests, oldest first.
            if let (Some(r), Some(q)) = (&p.reply, self.in_flight.get_mut(i)) {
                let mut timeouts = 0;
                while q.front().is_some_and(|(_, sent)| *sent + r.timeout <= now) {
                    q.pop_front();
                    timeouts += 1;
                }
                if timeouts > 0 {
                    env.ctx
                        .metrics
                        .conversation(env.who, |d| d.sample(p.sample).counts.timeouts += timeouts);
                }
            }
            // A late generator still sends every request it owes, each timed from its own
            // intended send (no coordinated omission), as the echo does; the lateness is in
            // the schedule-lag histogram. At most `MAX_BURST` per call: the deadline is still
            // due, so the session comes straight back for the rest, between reads.
            for _ in 0..MAX_BURST {
                let Some(due) = self.next_periodic.get(i).copied() else {
                    break;
                };
                if due > now || p.count.is_some_and(|c| self.periodic_sent[i] >= c) {
                    break;
                }
                self.next_periodic[i] = due + p.every;
                let lag = now.saturating_duration_since(due);
                if let Some(r) = &p.reply
                    && self.in_flight[i].len() >= r.max_in_flight
                {
                    env.ctx
                        .metrics
                        .conversation(env.who, |d| d.sample(p.sample).counts.skipped += 1);
                    continue;
                }
                let id = mem.counter + 1;
                let msg = self.render(&p.message, plan, mem, env, Some(id), None);
                self.periodic_sent[i] += 1;
                env.ctx.metrics.sent(env.who, lag);
                env.ctx
                    .metrics
                    .conversation(env.who, |d| d.sample(p.sample).counts.sent += 1);
                if p.reply.is_some() {
                    // Latency from the intended send time (coordinated-omission correction),
                    // less the timer wheel's own granularity, as for echoes.
                    self.in_flight[i].push_back((id, now.min(due + TIMER_SLACK)));
                }
                self.outs.push(Out::Send(msg));
            }
        }
    }

    /// A text or binary message arrived.
    pub fn on_message(
        &mut self,
        plan: &ConversationPlan,
        mem: &mut Memory,
        env: &mut Env<'_>,
        msg: &Msg<'_>,
        now: Instant,
    ) {
        env.ctx.metrics.received(env.who, None);
        let app_error = plan
            .app_errors
            .as_ref()
            .is_some_and(|a| a.matcher.matches(msg));
        if let Some(a) = plan.app_errors.as_ref().filter(|_| app_error) {
            let value = a.by.as_ref().and_then(|f| f.get(msg));
            env.ctx
                .metrics
                .conversation(env.who, |d| d.app_error(value.as_deref()));
        }
        for (i, s) in plan.streams.iter().enumerate() {
            if s.matcher.matches(msg) {
                self.on_stream(i, plan, mem, env, msg);
            }
        }
        for (i, p) in plan.periodic.iter().enumerate() {
            let Some(r) = &p.reply else { continue };
            // An application error that carries a request's id answers it, as an error.
            let reply = r.matcher.matches(msg) && !app_error;
            if !reply && !app_error {
                continue;
            }
            let Some(id) = r.id.get_u64(msg) else {
                continue;
            };
            let Some(q) = self.in_flight.get_mut(i) else {
                continue;
            };
            if let Some(pos) = q.iter().position(|(want, _)| *want == id) {
                let (_, sent) = q.remove(pos).expect("position is in the queue");
                let latency = now.saturating_duration_since(sent);
                env.ctx.metrics.conversation(env.who, |d| {
                    if reply {
                        d.sample(p.sample).counts.matched += 1;
                        d.record_latency(p.sample, latency);
                    } else {
                        d.sample(p.sample).counts.errors += 1;
                    }
                });
            }
        }
        for r in &plan.replies {
            if r.matcher.matches(msg) {
                let answer = self.render(&r.message, plan, mem, env, None, Some(msg));
                env.ctx.metrics.sent_unscheduled(env.who);
                env.ctx.metrics.conversation(env.who, |d| {
                    let s = d.sample(r.sample);
                    s.counts.matched += 1;
                    s.counts.sent += 1;
                });
                self.outs.push(Out::Send(answer));
            }
        }
        if self.blocked_until.is_some()
            && let Some(StepPlan::Expect(e)) = plan.steps.get(self.step)
            && self.expected(e, msg)
        {
            for (i, f) in &e.captures {
                mem.captures[*i] = f.get(msg).map(String::into_boxed_str);
            }
            let latency = now.saturating_duration_since(self.last_send);
            env.ctx.metrics.conversation(env.who, |d| {
                d.sample(e.sample).counts.matched += 1;
                d.record_latency(e.sample, latency);
            });
            self.blocked_until = None;
            self.waiting_on = None;
            self.step += 1;
            self.advance(plan, mem, env, now);
        } else if app_error
            && self.blocked_until.is_some()
            && let Some(StepPlan::Expect(e)) = plan.steps.get(self.step)
            && let Some(f) = &e.id
            && self.last_id.is_some_and(|id| f.get_u64(msg) == Some(id))
        {
            // The server answered the step's request with an application error.
            env.ctx
                .metrics
                .conversation(env.who, |d| d.sample(e.sample).counts.errors += 1);
            if !self.expect_failed(e) {
                self.advance(plan, mem, env, now);
            }
        }
    }

    /// The expect the steps were blocked on failed (timed out, or answered with an application
    /// error): move past it, and close if it says so. True when the connection closes.
    fn expect_failed(&mut self, e: &ExpectPlan) -> bool {
        self.blocked_until = None;
        self.waiting_on = None;
        self.step += 1;
        match e.on_timeout {
            OnTimeout::Continue => false,
            OnTimeout::Close | OnTimeout::Reconnect => {
                self.outs.push(Out::Close {
                    code: e.close_code,
                    reason: String::new(),
                    reconnect: e.on_timeout == OnTimeout::Reconnect,
                });
                true
            }
        }
    }

    fn expected(&self, e: &ExpectPlan, msg: &Msg<'_>) -> bool {
        e.matcher.matches(msg)
            && e.id
                .as_ref()
                .is_none_or(|f| self.last_id.is_some_and(|id| f.get_u64(msg) == Some(id)))
    }

    fn on_stream(
        &mut self,
        i: usize,
        plan: &ConversationPlan,
        mem: &mut Memory,
        env: &mut Env<'_>,
        msg: &Msg<'_>,
    ) {
        let s = &plan.streams[i];
        let who = env.who;
        let Some(seq) = s.seq.get_u64(msg) else {
            env.ctx
                .metrics
                .conversation(who, |d| d.stream(i).counts.unreadable += 1);
            return;
        };
        let key = s.key.as_ref().and_then(|k| k.get(msg));
        let keys = &mut mem.streams[i];
        let slot = match keys
            .iter()
            .position(|(k, _)| k.as_deref() == key.as_deref())
        {
            Some(p) => p,
            None if keys.len() < MAX_KEYS => {
                keys.push((key.map(String::into_boxed_str), StreamTracker::new(1)));
                keys.len() - 1
            }
            None => {
                env.ctx
                    .metrics
                    .conversation(who, |d| d.stream(i).counts.unreadable += 1);
                return;
            }
        };
        let arrival = keys[slot].1.on_seq(seq);
        let delivery = s
            .published
            .as_ref()
            .and_then(|(f, unit)| published_us(f, *unit, msg))
            .map(|p| Duration::from_micros(epoch_us().saturating_sub(p)));
        env.ctx.metrics.conversation(who, |d| {
            let st = d.stream(i);
            st.counts.delivered += 1;
            match arrival {
                Arrival::InOrder => {}
                Arrival::Duplicate => st.counts.duplicated += 1,
                Arrival::OutOfOrder => st.counts.out_of_order += 1,
            }
            if let Some(l) = delivery {
                d.record_delivery(i, l);
            }
        });
        let _ = plan;
    }
}

fn render_text(
    t: &Template,
    buf: &mut String,
    plan: &ConversationPlan,
    mem: &Memory,
    env: &mut Env<'_>,
    id: Option<u64>,
    msg: Option<&Msg<'_>>,
) {
    let mut v = Vals {
        env,
        mem,
        plan,
        id,
        msg,
    };
    t.render(&mut v, buf);
}

/// The query string and headers a conversation adds to an attempt: its own, and the resume
/// ones when the client has a position to resume from.
pub fn handshake_extras(
    plan: &ConversationPlan,
    mem: &mut Memory,
    env: &mut Env<'_>,
) -> (String, Vec<(String, String)>) {
    let resuming = mem.resuming();
    // `conn` is the connection being attempted: the count goes up when it opens.
    mem.conn += 1;
    let mut query = String::new();
    let mut buf = String::new();
    let pairs = plan
        .query
        .iter()
        .chain(plan.resume_query.iter().filter(|_| resuming));
    for (k, t) in pairs {
        render_text(t, &mut buf, plan, mem, env, None, None);
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&url::form_urlencoded::byte_serialize(k.as_bytes()).collect::<String>());
        query.push('=');
        query.push_str(&url::form_urlencoded::byte_serialize(buf.as_bytes()).collect::<String>());
    }
    let mut headers = Vec::new();
    for (k, t) in plan
        .headers
        .iter()
        .chain(plan.resume_headers.iter().filter(|_| resuming))
    {
        render_text(t, &mut buf, plan, mem, env, None, None);
        headers.push((k.clone(), buf.clone()));
    }
    mem.conn -= 1;
    (query, headers)
}

/// A JWT's claims rendered for this client.
pub fn render_claims(
    t: &Template,
    client: u32,
    group: &str,
    rng: &mut Xoshiro128PlusPlus,
    feed: Option<(&FeederPlan, usize)>,
) -> String {
    struct ClaimVals<'a> {
        client: u32,
        group: &'a str,
        rng: &'a mut Xoshiro128PlusPlus,
        feed: Option<(&'a FeederPlan, usize)>,
    }
    impl Values for ClaimVals<'_> {
        fn client(&self) -> u32 {
            self.client
        }
        fn group(&self) -> &str {
            self.group
        }
        fn conn(&self) -> u32 {
            0
        }
        fn counter(&self) -> u64 {
            0
        }
        fn id(&self) -> Option<u64> {
            None
        }
        fn random(&mut self) -> u64 {
            self.rng.random()
        }
        fn capture(&self, _: usize) -> Option<&str> {
            None
        }
        fn last_seq(&self, _: Option<usize>) -> Option<u64> {
            None
        }
        fn feed(&self, column: usize) -> &str {
            self.feed.map_or("", |(f, row)| f.data.value(row, column))
        }
        fn token(&self) -> Option<&str> {
            None
        }
        fn answering(&self) -> Option<&Msg<'_>> {
            None
        }
    }
    let mut v = ClaimVals {
        client,
        group,
        rng,
        feed,
    };
    t.to_string(&mut v)
}

/// The feeder row client `client` reads.
pub fn feed_row(f: &FeederPlan, client: u32, seed: u64) -> usize {
    let order = match f.order {
        FeedOrder::Sequential => crate::script::feeder::FeedOrder::Sequential,
        FeedOrder::Random => crate::script::feeder::FeedOrder::Random,
        FeedOrder::Unique => crate::script::feeder::FeedOrder::Unique,
    };
    f.data.row_for(order, client, seed)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::SeedableRng;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::client::connect::Endpoint;
    use crate::metrics::{GroupData, Hists, Metrics};
    use crate::plan::Plan;

    fn ctx(yaml: &str) -> (Arc<GroupCtx>, tokio::runtime::Runtime) {
        let plan = Plan::from_yaml(yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ctx = {
            let _g = rt.enter();
            Arc::new(GroupCtx {
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
            })
        };
        (ctx, rt)
    }

    fn texts(c: &mut Conversation) -> Vec<String> {
        c.outs
            .drain(..)
            .map(|o| match o {
                Out::Send(m) => m.into_text().map(|t| t.to_string()).unwrap_or_default(),
                Out::Close { code, .. } => format!("close {code}"),
            })
            .collect()
    }

    fn drained(m: &Metrics) -> GroupData {
        let mut out = vec![GroupData::default()];
        m.drain_into(&mut out, &mut Hists::default());
        out.pop().unwrap()
    }

    const YAML: &str = r#"
name: t
duration: 1s
target: ws://127.0.0.1:9/ws
groups:
  - name: g
    clients: 1
    arrival: { rate: 1/s }
    behaviour:
      conversation:
        steps:
          - send: { json: { type: hello, n: "{{counter}}" } }
          - expect: { name: welcome, match: { json: { "$.type": welcome } }, capture: { sid: "$.sid" }, timeout: 1s, on_timeout: reconnect }
          - send: { text: "join {{capture.sid}}" }
        replies:
          - name: hb
            match: { text: ping }
            send: { json: { type: pong, of: "{{$.n}}" } }
        streams:
          - name: s
            match: { prefix: "{" }
            seq: "$.seq"
            key: "$.k"
"#;

    #[test]
    fn steps_run_in_order_and_capture() {
        let (ctx, rt) = ctx(YAML);
        let _g = rt.enter();
        let plan = ctx.behaviour.conversation.as_deref().unwrap();
        let mut mem = Memory::new(plan, 0, 1);
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(1);
        let mut env = Env {
            ctx: &ctx,
            who: Who {
                client: 0,
                group: 0,
            },
            rng: &mut rng,
            token: None,
        };
        let mut c = Conversation::open(plan, &mut mem, &mut env);
        assert_eq!(texts(&mut c), [r#"{"type":"hello","n":1}"#]);
        assert!(c.deadline(plan).is_some(), "blocked on the expect");
        let now = Instant::now();
        c.on_message(
            plan,
            &mut mem,
            &mut env,
            &Msg::new(br#"{"type":"other"}"#, true),
            now,
        );
        assert!(texts(&mut c).is_empty(), "not the expected message");
        c.on_message(
            plan,
            &mut mem,
            &mut env,
            &Msg::new(br#"{"type":"welcome","sid":"abc"}"#, true),
            now,
        );
        assert_eq!(texts(&mut c), ["join abc"]);
        c.on_message(plan, &mut mem, &mut env, &Msg::new(b"ping", true), now);
        assert_eq!(texts(&mut c), [r#"{"type":"pong","of":null}"#]);
        let d = drained(&ctx.metrics);
        let welcome = &d.conv.samples[0];
        assert_eq!((welcome.counts.sent, welcome.counts.matched), (1, 1));
        assert_eq!(welcome.latency.len(), 1);
        assert_eq!(d.conv.samples[1].counts.matched, 1, "the reply rule");
        assert_eq!(d.counters.received, 3);
        assert_eq!(d.counters.sent, 3, "hello, join, pong");
    }

    #[test]
    fn an_expect_that_times_out_reconnects() {
        let (ctx, rt) = ctx(YAML);
        let _g = rt.enter();
        let plan = ctx.behaviour.conversation.as_deref().unwrap();
        let mut mem = Memory::new(plan, 0, 1);
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(1);
        let mut env = Env {
            ctx: &ctx,
            who: Who {
                client: 0,
                group: 0,
            },
            rng: &mut rng,
            token: None,
        };
        let mut c = Conversation::open(plan, &mut mem, &mut env);
        texts(&mut c);
        let due = c.deadline(plan).unwrap();
        c.on_timer(plan, &mut mem, &mut env, due - Duration::from_millis(1));
        assert!(texts(&mut c).is_empty(), "not yet");
        c.on_timer(plan, &mut mem, &mut env, due);
        assert_eq!(texts(&mut c), ["close 4000"]);
        assert_eq!(drained(&ctx.metrics).conv.samples[0].counts.timeouts, 1);
    }

    #[test]
    fn streams_count_per_key_across_connections() {
        let (ctx, rt) = ctx(YAML);
        let _g = rt.enter();
        let plan = ctx.behaviour.conversation.as_deref().unwrap();
        let mut mem = Memory::new(plan, 0, 1);
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(1);
        let mut env = Env {
            ctx: &ctx,
            who: Who {
                client: 0,
                group: 0,
            },
            rng: &mut rng,
            token: None,
        };
        let now = Instant::now();
        let mut c = Conversation::open(plan, &mut mem, &mut env);
        for m in [
            r#"{"k":"a","seq":1}"#,
            r#"{"k":"b","seq":1}"#,
            r#"{"k":"a","seq":2}"#,
            r#"{"k":"a","seq":2}"#,
            r#"{"k":"b","seq":4}"#,
        ] {
            c.on_message(plan, &mut mem, &mut env, &Msg::new(m.as_bytes(), true), now);
        }
        drop(c);
        // A new connection continues the same streams.
        let mut c = Conversation::open(plan, &mut mem, &mut env);
        c.on_message(
            plan,
            &mut mem,
            &mut env,
            &Msg::new(br#"{"k":"b","seq":3}"#, true),
            now,
        );
        c.on_message(
            plan,
            &mut mem,
            &mut env,
            &Msg::new(br#"{"k":"a","seq":5}"#, true),
            now,
        );
        assert_eq!(mem.conn, 2);
        assert_eq!(mem.lost(), [3], "a: 3 and 4; b: 2 (3 came late)");
        let s = &drained(&ctx.metrics).conv.streams[0].counts;
        assert_eq!((s.delivered, s.duplicated, s.out_of_order), (7, 1, 1));
    }

    #[test]
    fn an_error_reply_answers_its_request_as_an_error() {
        let yaml = r#"
name: t
duration: 1s
target: ws://127.0.0.1:9/ws
groups:
  - name: g
    clients: 1
    arrival: { rate: 1/s }
    behaviour:
      conversation:
        every:
          - name: order
            every: 10ms
            send: { json: { op: buy, id: "{{id}}" } }
            reply: { match: { json: { "$.op": done } }, id: "$.id", timeout: 1s }
        app_errors: { match: { json: { "$.op": error } }, by: "$.why" }
"#;
        let (ctx, rt) = ctx(yaml);
        let _g = rt.enter();
        let plan = ctx.behaviour.conversation.as_deref().unwrap();
        let mut mem = Memory::new(plan, 0, 1);
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(1);
        let mut env = Env {
            ctx: &ctx,
            who: Who {
                client: 0,
                group: 0,
            },
            rng: &mut rng,
            token: None,
        };
        let mut c = Conversation::open(plan, &mut mem, &mut env);
        let t0 = Instant::now() + Duration::from_millis(10);
        c.on_timer(plan, &mut mem, &mut env, t0);
        c.on_timer(plan, &mut mem, &mut env, t0 + Duration::from_millis(10));
        assert_eq!(
            texts(&mut c),
            [r#"{"op":"buy","id":1}"#, r#"{"op":"buy","id":2}"#]
        );
        let now = t0 + Duration::from_millis(15);
        c.on_message(
            plan,
            &mut mem,
            &mut env,
            &Msg::new(br#"{"op":"error","id":2,"why":"funds"}"#, true),
            now,
        );
        c.on_message(
            plan,
            &mut mem,
            &mut env,
            &Msg::new(br#"{"op":"done","id":1}"#, true),
            now,
        );
        c.on_message(
            plan,
            &mut mem,
            &mut env,
            &Msg::new(br#"{"op":"done","id":1}"#, true),
            now,
        );
        let d = drained(&ctx.metrics);
        let order = &d.conv.samples[0].counts;
        assert_eq!(
            (order.sent, order.matched, order.errors, order.timeouts),
            (2, 1, 1, 0)
        );
        assert_eq!(d.conv.app_errors_by["funds"], 1);
        drop(c);
        let after = drained(&ctx.metrics);
        let abandoned = after.conv.samples.first().map_or(0, |s| s.counts.abandoned);
        assert_eq!(abandoned, 0, "nothing left in flight");
    }
}
