//! One connection of the embedded target: admission (handshake capacity model, accept rate,
//! path, token), the upgrade, then the session — echo, stream fan-out with backpressure,
//! limits, heartbeat, idle timeout, token expiry, and the timeline's orders. With
//! `socket_io` the session speaks that dialect ([`super::socketio`]) instead of echoing
//! everything.
//!
//! Writes never block the loop: everything the server sends goes through an [`Outbox`] that is
//! drained only as fast as the socket takes it, so a client that does not read fills *its*
//! outbox (and meets the backpressure policy) instead of stalling the server.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::identity;
use super::socketio::{self, Answer};
use super::stream::StreamItem;
use super::upgrade::{Refusal, UpgradeRequest, accept_upgrade};
use super::{Action, DropMode, Heartbeat, Order, OverCap, Shared, TokenBucket};
use crate::auth::{TokenError, now_ms};
use crate::net::transport::{Transport, WriteBatch, close_with_fin, flush_now, poll_next_flushing};
use crate::net::ws::violation_code;
use crate::profile::{IdleMode, OnFull, OverLimit, RateLimitAction};

type Ws = crate::net::transport::WsStream;

/// Time a client has to finish TLS and its upgrade request; slowloris clients are cut after it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the upgrade request asked for.
#[derive(Default)]
struct Upgrade {
    /// Token expiry (unix ms), when auth is on.
    token_expires_ms: Option<u64>,
    /// The token's subject and expiry: what a revoke remembers.
    token_key: Option<(u32, u64)>,
    subscribe: bool,
    resume_after: Option<u64>,
    /// The client its identity header names ([`super::identity::client_of`]).
    identity: Option<identity::Key>,
}

// One argument per thing a connection is given; a struct would only rename them. Not an
// async fn on purpose (see the body).
#[allow(clippy::too_many_arguments, clippy::manual_async_fn)]
pub(super) fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    node: u32,
    admitted: bool,
    shared: Arc<Shared>,
    orders: broadcast::Receiver<Order>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    // An async block, not an async fn, for the reason given at [`session`]: every idle
    // connection is one of these futures.
    async move {
        // TCP_NODELAY comes from the listener, the peer from accept: no syscall of its own.
        let peer_ip = peer.ip();
        let stats = &shared.stats;
        let config = &shared.config;
        if let Some(n) = config.socket_send_buffer {
            let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(n);
        }

        // The capacity model: wait for a worker and pay the service time *before* looking at the
        // request. A client that gave up meanwhile is not noticed: the server pays anyway.
        let mut queue_full = false;
        let mut paid = false;
        if let (Some(cost), Some(workers)) = (config.handshake, &shared.workers) {
            let waiting = shared.queued.fetch_add(1, Ordering::SeqCst) + 1;
            stats
                .handshake_queue_peak
                .fetch_max(waiting, Ordering::Relaxed);
            if waiting > u64::from(cost.queue) {
                queue_full = true;
            } else {
                let served = tokio::select! {
                    permit = workers.acquire() => {
                        tokio::time::sleep(cost.service_time).await;
                        drop(permit);
                        true
                    }
                    _ = shutdown.cancelled() => false,
                };
                if !served {
                    shared.queued.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
                paid = true;
            }
            shared.queued.fetch_sub(1, Ordering::SeqCst);
        }
        let wasted = || {
            if paid {
                stats.handshakes_wasted.fetch_add(1, Ordering::Relaxed);
            }
        };
        // The client may have given up while the server was busy: its upgrade request is still in
        // the socket buffer, so the upgrade would "succeed" on a half-closed connection. The TCP
        // state tells: the work was wasted.
        if paid && peer_closed(&tcp) {
            wasted();
            stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            return;
        }

        let transport = match &shared.tls {
            None => Transport::Plain(tcp),
            Some(acceptor) => match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => Transport::Tls(Box::new(s.into())),
                _ => {
                    stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                    wasted();
                    return;
                }
            },
        };

        let mut refusal: Option<u16> = None;
        let mut upgrade = Upgrade::default();
        // The connection's place under the caps, held until the session ends.
        let mut held = None;
        // Over a cap with `over_limit: close-1013`: upgrade, then close at once.
        let mut over_cap = None;
        let callback = |req: &UpgradeRequest<'_>| -> Result<(), Refusal> {
            if req.path() != config.path {
                refusal = Some(404);
                return Err(Refusal::new(404, None, None));
            }
            if !admitted || queue_full {
                refusal = Some(503);
                return Err(Refusal::new(503, Some(config.retry_after), None));
            }
            if !config.allowed_origins.is_empty() {
                let origin = req.header("Origin");
                if !origin.is_some_and(|o| config.origin_allowed(o)) {
                    refusal = Some(403);
                    return Err(Refusal::new(403, None, Some("origin not allowed")));
                }
            }
            let query = req.query().unwrap_or("");
            if let Some(signer) = &shared.signer {
                let token = req
                    .header("Authorization")
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .or_else(|| query_param(query, "token"));
                match token
                    .ok_or(TokenError::Missing)
                    .and_then(|t| signer.verify(t, now_ms()))
                {
                    Ok(expires) => {
                        let key = token
                            .and_then(|t| t.split('.').next()?.parse::<u32>().ok())
                            .map(|subject| (subject, expires));
                        if shared.any_revoked.load(Ordering::Relaxed)
                            && key.is_some_and(|k| shared.revoked_tokens.contains(k))
                        {
                            refusal = Some(401);
                            return Err(Refusal::new(401, None, Some("token revoked")));
                        }
                        upgrade.token_expires_ms = Some(expires);
                        upgrade.token_key = key;
                    }
                    Err(e) => {
                        refusal = Some(401);
                        let why = match e {
                            TokenError::Missing => "token missing",
                            TokenError::Malformed => "token malformed",
                            TokenError::Forged => "token signature invalid",
                            TokenError::Expired => "token expired",
                        };
                        return Err(Refusal::new(401, None, Some(why)));
                    }
                }
            }
            upgrade.identity = config
                .identity_headers
                .iter()
                .find_map(|h| req.header(h))
                .map(|v| shared.ledger.key(identity::client_of(v)));
            upgrade.subscribe = query_param(query, "subscribe").is_some_and(|v| v == "1");
            upgrade.resume_after = query_param(query, "resume").and_then(|v| v.parse().ok());
            // Last, after every other check: a request refused for its own reasons (auth, a
            // revoked token) is counted as that, not as over a cap, and takes no place.
            match shared.hold(peer_ip) {
                Ok(h) => held = Some(h),
                Err(cap) => {
                    match cap {
                        OverCap::Global => &stats.refused_max_connections,
                        OverCap::PerIp => &stats.refused_per_ip,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                    match config.limits.over_limit {
                        OverLimit::Reject => {
                            refusal = Some(503);
                            return Err(Refusal::new(503, Some(config.retry_after), None));
                        }
                        OverLimit::Close1013 => over_cap = Some(1013),
                    }
                }
            }
            Ok(())
        };
        let ws_config = WebSocketConfig::default()
            // The most one read takes, into a buffer the thread's connections share: no
            // connection keeps a read buffer of its own.
            .read_buffer_size(config.read_buffer)
            // Echoes are written out by `poll_io`'s flush, a batch at a time; past this many
            // bytes a message is written at once. Idle connections never grow the buffer.
            .write_buffer_size(crate::net::transport::WRITE_BATCH)
            .max_message_size(Some(config.max_message))
            .max_frame_size(Some(config.max_message));
        let accept = accept_upgrade(transport, callback, ws_config);
        let ws = tokio::select! {
            r = timeout(HANDSHAKE_TIMEOUT, accept) => match r {
                Ok(Ok(ws)) => ws,
                _ => {
                    match refusal {
                        Some(404) => stats.rejected_404.fetch_add(1, Ordering::Relaxed),
                        Some(401) => stats.rejected_401.fetch_add(1, Ordering::Relaxed),
                        Some(403) => stats.rejected_403.fetch_add(1, Ordering::Relaxed),
                        Some(_) => stats.rejected_503.fetch_add(1, Ordering::Relaxed),
                        None => {
                            wasted();
                            stats.failed_handshakes.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    return;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        stats.upgraded.fetch_add(1, Ordering::Relaxed);
        if let Some(code) = over_cap {
            let mut ws = ws;
            stats.count_close(code);
            close_politely(&mut ws, code).await;
            return;
        }
        let node_open = &stats.node_open[node as usize % super::MAX_NODES];
        // When it opened: its lifetime runs from here.
        let opened = Instant::now();
        // Counted in `open` and numbered against the orders in one step: a drain or a restart
        // applies to this connection exactly when it counted it.
        let born = shared.clock.open(|| {
            stats.open.fetch_add(1, Ordering::Relaxed);
            node_open.fetch_add(1, Ordering::Relaxed);
        });
        let identity = upgrade.identity.take();
        if let Some(client) = identity {
            stats.identified.fetch_add(1, Ordering::Relaxed);
            let (duplicate, forgotten) = shared.ledger.open(client);
            if duplicate {
                stats.duplicate_connections.fetch_add(1, Ordering::Relaxed);
            }
            if forgotten > 0 {
                stats
                    .sessions_forgotten
                    .fetch_add(forgotten, Ordering::Relaxed);
            }
        }
        session(
            ws, id, node, opened, born, upgrade, identity, &shared, orders, shutdown,
        )
        .await;
        stats.open.fetch_sub(1, Ordering::Relaxed);
        node_open.fetch_sub(1, Ordering::Relaxed);
        drop(held);
    }
}

/// Whether the peer has closed or reset the connection.
fn peer_closed(tcp: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    crate::os::tcp_peer_closed(tcp.as_raw_fd())
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// What the server has to send one client, drained as fast as the socket takes it.
struct Outbox {
    queue: VecDeque<Message>,
    /// Bytes queued here or in the WebSocket's write buffer not yet written out: both are
    /// what a slow reader has not taken, and both count toward the limit.
    bytes: usize,
    /// Of `bytes`, those moved to the write buffer and not yet flushed.
    unflushed: usize,
    batch: WriteBatch,
    limit: usize,
    on_full: OnFull,
}

enum Pushed {
    Queued,
    /// Over the limit and the policy drops.
    Dropped,
    /// Over the limit and the policy closes with this code.
    Overflow(u16),
}

impl Outbox {
    fn push(&mut self, m: Message) -> Pushed {
        let len = m.len();
        // One message always goes through, however big, when nothing else is waiting.
        if self.bytes + len > self.limit && self.bytes > 0 {
            return match self.on_full {
                OnFull::Drop => Pushed::Dropped,
                OnFull::Close1008 => Pushed::Overflow(1008),
                OnFull::Close1009 => Pushed::Overflow(1009),
            };
        }
        self.bytes += len;
        self.enqueue(m);
        Pushed::Queued
    }

    /// Queue a control frame regardless of the limit (it still counts toward it).
    fn push_control(&mut self, m: Message) {
        self.bytes += m.len();
        self.enqueue(m);
    }

    /// The first message reserves one slot, where a `VecDeque` would take four: the queue
    /// keeps its buffer, so a connection sent a message now and then (a ping, Socket.IO's
    /// open packet) keeps 56 bytes rather than 224. A busy one grows past it as before.
    fn enqueue(&mut self, m: Message) {
        if self.queue.capacity() == 0 {
            self.queue.reserve_exact(1);
        }
        self.queue.push_back(m);
    }

    /// The next message for the write buffer; it counts until it is flushed.
    fn pop(&mut self) -> Option<Message> {
        let m = self.queue.pop_front()?;
        self.unflushed += m.len();
        self.batch.fed();
        Some(m)
    }

    fn flushed(&mut self) {
        self.bytes -= self.unflushed;
        self.unflushed = 0;
    }
}

/// Move what the socket takes from the outbox into the write buffer, then read; the buffer is
/// written out when there is nothing more to read right now, so a batch of messages that
/// arrived together is echoed with one write (see [`poll_next_flushing`]). Holds no message
/// across polls, so dropping it (another select branch won) loses nothing: what is buffered is
/// written by the next poll.
fn poll_io(
    ws: &mut Ws,
    out: &mut Outbox,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Message, WsError>>> {
    while !out.queue.is_empty() {
        match Pin::new(&mut *ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                let m = out.pop().expect("non-empty");
                if let Err(e) = Pin::new(&mut *ws).start_send(m) {
                    return Poll::Ready(Some(Err(e)));
                }
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
            Poll::Pending => break,
        }
    }
    let next = poll_next_flushing(ws, &mut out.batch, cx);
    if out.unflushed > 0 && !out.batch.is_pending() {
        out.flushed();
    }
    next
}

async fn recv_opt(
    rx: &mut Option<broadcast::Receiver<StreamItem>>,
) -> Result<StreamItem, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

// One argument per thing a session is given; a struct would only rename them. Not an async
// fn on purpose (see the body).
#[allow(clippy::too_many_arguments, clippy::manual_async_fn)]
fn session(
    mut ws: Ws,
    id: u64,
    node: u32,
    opened: Instant,
    born: u64,
    upgrade: Upgrade,
    identity: Option<identity::Key>,
    shared: &Shared,
    mut orders: broadcast::Receiver<Order>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + '_ {
    // An async block, not an async fn: an async fn keeps each argument twice in its future
    // (as given and as moved into the body), the WebSocket's 312 bytes among them, for the
    // session's whole life.
    async move {
        let config = &shared.config;
        let stats = &shared.stats;
        // Orders fired while this connection was being accepted (subscribed at accept) apply to
        // it as soon as its session starts: a restart also kills handshakes in progress.
        let mut out = Outbox {
            queue: VecDeque::new(),
            bytes: 0,
            unflushed: 0,
            batch: WriteBatch::default(),
            limit: config.backpressure.limit,
            on_full: config.backpressure.on_full,
        };
        // How many times each stream message goes out: once per subscription, which a kept
        // session may hold several of.
        let copies = match (config.stream, identity) {
            (Some(st), Some(client)) if st.keep_sessions => {
                let s = shared.ledger.subscribe(
                    client,
                    upgrade.subscribe,
                    upgrade.resume_after.is_some(),
                );
                if s.duplicate {
                    stats
                        .duplicate_subscriptions
                        .fetch_add(1, Ordering::Relaxed);
                }
                s.copies
            }
            _ => u32::from(upgrade.subscribe),
        };
        let replay_after_live = config.stream.is_some_and(|s| s.replay_after_live);
        // With `replay: after-live`, the backlog waits here for the first live message.
        let mut held_replay: Vec<StreamItem> = Vec::new();
        let (mut rx, mut skip_through) = match (&shared.stream, copies > 0) {
            (Some(stream), true) => {
                let (rx, replay) = stream.subscribe(upgrade.resume_after);
                let skip = replay
                    .last()
                    .map(|i| i.seq)
                    .or(upgrade.resume_after)
                    .unwrap_or(0);
                let replay = if replay_after_live {
                    held_replay = replay;
                    Vec::new()
                } else {
                    replay
                };
                // No await in this loop: one thread, one stripe throughout.
                let counts = stats.per_message();
                for item in replay {
                    match out.push(item.msg) {
                        Pushed::Queued => {
                            counts.stream_replayed.fetch_add(1, Ordering::Relaxed);
                            counts.stream_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            counts.backpressure_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                (Some(rx), skip)
            }
            _ => (None, 0),
        };
        // Socket.IO's ping (`2`, answered `3`) is the heartbeat of a connection that speaks it: the
        // same interval and deadline, so the dialect adds no timer (the plan allows one or the
        // other).
        let engine_io = config.heartbeat.is_none() && config.socket_io.is_some();
        let heartbeat = || {
            config.heartbeat.or(config.socket_io.map(|s| Heartbeat {
                ping_every: s.ping_interval,
                timeout: s.ping_timeout,
            }))
        };
        if let Some(dialect) = &config.socket_io {
            out.push_control(Message::text(shared.sids.open_packet(id, dialect)));
        }
        let mut next_ping = heartbeat().map(|h| Instant::now() + h.ping_every);
        let mut ping_seq = 0u64;
        let mut pong_deadline: Option<Instant> = None;
        let mut last_inbound = Instant::now();
        // Boxed: most sessions have no rate limit, and every session's future would carry it.
        let mut limiter = config.rate_limit.map(|r| {
            Box::new((
                TokenBucket::new(r.per_second, r.per_second.max(1.0)),
                r.action,
            ))
        });
        let token_expiry = upgrade
            .token_expires_ms
            .map(|exp| Instant::now() + Duration::from_millis(exp.saturating_sub(now_ms())));
        let mut blackholed = false;
        // De-authorized but kept open (`auth.on_expiry: ghost`): nothing more is delivered.
        let mut ghost = false;
        // The client closed with 1000: it left, and its kept session with it.
        let mut left = false;
        // A drain or this node's restart: when to close, how, and which counter it goes to.
        let mut closing: Option<(Instant, DropMode, &AtomicU64)> = None;
        let lifetime = config.max_lifetime.map(|l| (opened + l.of(id), l.close));
        // A hung (or silently idle) session reads nothing, so it cannot see its client leave; it
        // looks at the TCP state now and then instead (first at once), rather than hold the
        // socket to the end.
        let mut liveness_at = Instant::now();

        // Each branch below ends the session by `break`ing with what to do with the socket.
        let end = loop {
            let idle_at = match config.idle_timeout {
                Some(i) if !blackholed => Some(last_inbound + i.after),
                _ => None,
            };
            let wake_at = [
                closing.map(|c| c.0),
                lifetime.map(|l| l.0),
                idle_at,
                pong_deadline.filter(|_| !blackholed),
                token_expiry.filter(|_| !blackholed && !ghost),
                next_ping.filter(|_| !blackholed),
                blackholed.then_some(liveness_at),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break End::Close(1001),
                order = orders.recv() => {
                    let order = match order {
                        Ok(o) => o,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break End::Abrupt,
                    };
                    match order.action {
                        Action::DropAll { mode, share } if crate::seed::in_share(id, order.seq, share) => {
                            stats.dropped_by_action.fetch_add(1, Ordering::Relaxed);
                            break match mode {
                                DropMode::Abrupt => End::Abrupt,
                                DropMode::Reset => End::Reset,
                                DropMode::Close(code) => End::Close(code),
                            };
                        }
                        Action::Restart { .. } => {
                            stats.dropped_by_action.fetch_add(1, Ordering::Relaxed);
                            break End::Abrupt;
                        }
                        Action::Revoke { share } if !blackholed && !ghost && crate::seed::in_share(id, order.seq, share) => {
                            stats.revoked.fetch_add(1, Ordering::Relaxed);
                            // The token itself is revoked: it opens no new session either.
                            if let Some(key) = upgrade.token_key {
                                shared.revoked_tokens.revoke(key, now_ms());
                                shared.any_revoked.store(true, Ordering::Relaxed);
                            }
                            if config.auth_ghost {
                                ghost = true;
                                stats.ghosted.fetch_add(1, Ordering::Relaxed);
                            } else {
                                break End::Close(4003);
                            }
                        }
                        Action::Hang { share } if !blackholed && crate::seed::in_share(id, order.seq, share) => {
                            stats.hung.fetch_add(1, Ordering::Relaxed);
                            // Echoes already made go out, as they would have before the hang.
                            flush_now(&mut ws);
                            blackholed = true;
                        }
                        // The first drain or restart to reach a connection decides when it goes.
                        Action::Drain { code, over, share, .. }
                            if closing.is_none()
                                && order.seq > born
                                && crate::seed::in_share(id, order.seq, share) =>
                        {
                            let at = order.fired + Action::offset(id, order.seq, over);
                            closing = Some((at, DropMode::Close(code), &stats.drained));
                        }
                        Action::RestartNode { node: restarting, mode, over, .. }
                            if restarting == node && closing.is_none() && order.seq > born =>
                        {
                            let at = order.fired + Action::offset(id, order.seq, over);
                            closing = Some((at, mode, &stats.node_restart_closes));
                        }
                        _ => {}
                    }
                }
                msg = poll_fn(|cx| poll_io(&mut ws, &mut out, cx)), if !blackholed => {
                    last_inbound = Instant::now();
                    match msg {
                        Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                            if let Some((bucket, action)) = limiter.as_deref_mut()
                                && !bucket.take(Instant::now())
                            {
                                stats.per_message().rate_limited.fetch_add(1, Ordering::Relaxed);
                                match action {
                                    RateLimitAction::Close => break End::Close(1008),
                                    RateLimitAction::Error => {
                                        let _ = out.push(Message::text(r#"{"error":"rate limited"}"#));
                                        continue;
                                    }
                                }
                            }
                            // What goes back: the message itself (an echo), or the dialect's answer.
                            let (reply, echo) = match (&config.socket_io, &m) {
                                (Some(_), Message::Text(packet)) => match socketio::answer(
                                    packet,
                                    &shared.sids,
                                ) {
                                    Answer::Echo => (Some(m), true),
                                    Answer::Pong => {
                                        stats.per_message().socket_io_pongs.fetch_add(1, Ordering::Relaxed);
                                        if engine_io {
                                            pong_deadline = None;
                                        }
                                        (None, false)
                                    }
                                    Answer::Connected(r) => {
                                        stats.socket_io_connects.fetch_add(1, Ordering::Relaxed);
                                        (Some(Message::text(r)), false)
                                    }
                                    Answer::Ack(r) => {
                                        stats.per_message().socket_io_acks.fetch_add(1, Ordering::Relaxed);
                                        (Some(Message::text(r)), false)
                                    }
                                    Answer::Send(r) => (Some(Message::text(r)), false),
                                    Answer::Close => break End::Close(1000),
                                    Answer::Nothing => (None, false),
                                },
                                _ => (Some(m), true),
                            };
                            let Some(reply) = reply else { continue };
                            if ghost {
                                stats.per_message().ghost_withheld.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            match out.push(reply) {
                                Pushed::Queued => {
                                    if echo {
                                        stats.per_message().messages_echoed.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Pushed::Dropped => {
                                    stats.per_message().backpressure_dropped.fetch_add(1, Ordering::Relaxed);
                                }
                                Pushed::Overflow(code) => {
                                    stats.backpressure_closed.fetch_add(1, Ordering::Relaxed);
                                    break End::Close(code);
                                }
                            }
                        }
                        Some(Ok(Message::Pong(p))) => {
                            if !engine_io && p.as_ref() == ping_seq.to_be_bytes() {
                                pong_deadline = None;
                            }
                        }
                        // A client that closes with 1000 left (a logout): its kept session goes.
                        Some(Ok(Message::Close(Some(f)))) if f.code == CloseCode::Normal => left = true,
                        // Pings are answered by the WebSocket; a close is answered and then ends
                        // the stream.
                        Some(Ok(_)) => {}
                        Some(Err(e)) => match violation_code(&e) {
                            Some(code) => break End::Close(code),
                            None => break End::Gone,
                        },
                        None => break End::Gone,
                    }
                }
                item = recv_opt(&mut rx), if !blackholed => match item {
                    Ok(item) if item.seq <= skip_through => {}
                    Ok(item) => {
                        skip_through = item.seq;
                        if ghost {
                            stats.per_message().ghost_withheld.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        // One copy per subscription, then (with `replay: after-live`, once) the
                        // backlog that waited for this first live message.
                        let copies = copies as usize;
                        let held = std::mem::take(&mut held_replay);
                        let msgs = std::iter::repeat_n(item.msg, copies)
                            .chain(held.into_iter().map(|i| i.msg));
                        // No await in this loop: one thread, one stripe throughout.
                        let counts = stats.per_message();
                        let mut overflow = None;
                        for (k, msg) in msgs.enumerate() {
                            match out.push(msg) {
                                Pushed::Queued => {
                                    counts.stream_sent.fetch_add(1, Ordering::Relaxed);
                                    if k >= copies {
                                        counts.stream_replayed.fetch_add(1, Ordering::Relaxed);
                                    } else if k > 0 {
                                        counts.stream_duplicate_copies.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Pushed::Dropped => {
                                    counts.backpressure_dropped.fetch_add(1, Ordering::Relaxed);
                                }
                                Pushed::Overflow(code) => {
                                    overflow = Some(code);
                                    break;
                                }
                            }
                        }
                        if let Some(code) = overflow {
                            stats.backpressure_closed.fetch_add(1, Ordering::Relaxed);
                            break End::Close(code);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        stats.per_message().backpressure_dropped.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => rx = None,
                },
                // Every deadline of the session, on one timer: the earliest. A timer per
                // deadline made each of them part of the session's future (and re-armed them
                // all on every message).
                _ = crate::net::sleep_until_opt(wake_at) => {
                    let now = Instant::now();
                    let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
                    if due(closing.map(|c| c.0)) {
                        let (_, mode, counter) = closing.take().expect("a deadline was set");
                        counter.fetch_add(1, Ordering::Relaxed);
                        break match mode {
                            DropMode::Abrupt => End::Abrupt,
                            DropMode::Reset => End::Reset,
                            DropMode::Close(code) => End::Close(code),
                        };
                    }
                    if due(lifetime.map(|l| l.0)) {
                        stats.lifetime_closes.fetch_add(1, Ordering::Relaxed);
                        break match lifetime.and_then(|l| l.1) {
                            Some(code) => End::Close(code),
                            None => End::Abrupt,
                        };
                    }
                    if !blackholed && due(pong_deadline) {
                        if engine_io {
                            stats.socket_io_ping_timeouts.fetch_add(1, Ordering::Relaxed);
                        } else {
                            stats.dead_detected.fetch_add(1, Ordering::Relaxed);
                        }
                        break End::Abrupt;
                    }
                    if due(idle_at) {
                        stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                        match config.idle_timeout.map(|i| i.mode) {
                            Some(IdleMode::Close) => break End::Abrupt,
                            _ => {
                                flush_now(&mut ws);
                                blackholed = true;
                            }
                        }
                    }
                    if !blackholed && !ghost && due(token_expiry) {
                        stats.auth_expired.fetch_add(1, Ordering::Relaxed);
                        if config.auth_ghost {
                            ghost = true;
                            stats.ghosted.fetch_add(1, Ordering::Relaxed);
                        } else {
                            break End::Close(4001);
                        }
                    }
                    if !blackholed && due(next_ping) {
                        next_ping = heartbeat().map(|h| now + h.ping_every);
                        if pong_deadline.is_none() {
                            ping_seq += 1;
                            let wait = heartbeat().map(|h| h.timeout).unwrap_or_default();
                            pong_deadline = Some(now + wait);
                            // Control frames (and Engine.IO's ping) are not held to the
                            // backpressure limit.
                            if engine_io {
                                stats.per_message().socket_io_pings.fetch_add(1, Ordering::Relaxed);
                                out.push_control(Message::text(socketio::PING));
                            } else {
                                out.push_control(Message::Ping(ping_seq.to_be_bytes().to_vec().into()));
                            }
                        }
                    }
                    if blackholed && liveness_at <= now {
                        liveness_at = now + Duration::from_secs(1);
                        if peer_closed(ws.get_ref().tcp()) {
                            break End::Gone;
                        }
                    }
                }
            }
        };
        // The server is done with the client now; closing the socket politely may take a while,
        // and a client that reconnects meanwhile is not holding two connections.
        if let Some(client) = identity {
            shared.ledger.close(client, left);
        }
        match end {
            End::Gone => {}
            End::Abrupt => {
                flush_now(&mut ws);
                close_with_fin(ws.get_ref().tcp()).await;
            }
            End::Reset => {
                let _ = socket2::SockRef::from(ws.get_ref().tcp()).set_linger(Some(Duration::ZERO));
            }
            End::Close(code) => {
                stats.count_close(code);
                close_politely(&mut ws, code).await;
            }
        }
    }
}

/// How a session ends, for the socket.
enum End {
    /// The peer closed or the connection broke.
    Gone,
    /// Close the TCP connection without a close frame.
    Abrupt,
    /// Reset the TCP connection.
    Reset,
    /// Send a close frame with this code.
    Close(u16),
}

/// Send a close frame and give the peer a moment to answer, as a real server would. A peer that
/// does not read (a slow consumer) cannot answer: after the wait its connection is reset, so it
/// learns at once rather than after draining a backlog it will never get through.
async fn close_politely(ws: &mut Ws, code: u16) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: "".into(),
    };
    let answered = timeout(Duration::from_secs(1), async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    if answered.is_err() {
        let _ = socket2::SockRef::from(ws.get_ref().tcp()).set_linger(Some(Duration::ZERO));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unflushed_bytes_count_toward_the_backpressure_limit() {
        let mut out = Outbox {
            queue: VecDeque::new(),
            bytes: 0,
            unflushed: 0,
            batch: WriteBatch::default(),
            limit: 100,
            on_full: OnFull::Drop,
        };
        let msg = || Message::text("x".repeat(60));
        assert!(matches!(out.push(msg()), Pushed::Queued));
        // Moved to the write buffer but not written: the slow reader still has not taken it.
        assert!(out.pop().is_some());
        assert!(matches!(out.push(msg()), Pushed::Dropped));
        out.flushed();
        assert_eq!(out.bytes, 0);
        assert!(matches!(out.push(msg()), Pushed::Queued));
        // Nothing waiting: one message goes through whatever its size.
        out.pop();
        out.flushed();
        assert!(matches!(
            out.push(Message::text("y".repeat(500))),
            Pushed::Queued
        ));
    }

    #[test]
    fn an_outbox_sent_one_message_at_a_time_keeps_one_slot() {
        let mut out = Outbox {
            queue: VecDeque::new(),
            bytes: 0,
            unflushed: 0,
            batch: WriteBatch::default(),
            limit: 1 << 20,
            on_full: OnFull::Drop,
        };
        for _ in 0..3 {
            out.push_control(Message::text("2"));
            out.pop();
        }
        assert_eq!(out.queue.capacity(), 1);
        for _ in 0..3 {
            assert!(matches!(out.push(Message::text("x")), Pushed::Queued));
        }
        assert!(out.queue.capacity() >= 3);
    }
}
