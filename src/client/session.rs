//! An open connection: send echo messages on schedule, ping and watch for pongs, read what
//! arrives (all of it, or at most a rate for a slow consumer), freeze for a while if the
//! behaviour says the client sleeps, send an abusive frame if asked, and report how the
//! connection ended as a [`SessionEnd`].

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::Either;
use futures_util::{FutureExt, SinkExt, StreamExt};
use rand::RngExt;
use rand::rngs::Xoshiro128PlusPlus;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep, interval_at, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::GroupCtx;
use super::connect::Ws;
use super::conversation::{Conversation, Env, Memory, Out};
use super::stream::{Arrival, StreamTracker};
use crate::metrics::Who;
use crate::net::transport::{WriteBatch, flush_now, poll_next_flushing};
use crate::script::matcher::Msg;
use crate::server::stream::parse_seq;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The run ended: the client closed with 1000.
    Stopped,
    /// The peer closed with this code; 1006 when the connection ended without a close frame,
    /// 1005 when the close frame carried no code.
    Peer(u16),
    /// No pong within the heartbeat timeout.
    Dead { silent_for: Duration },
    /// The server broke the protocol (RFC 6455 §7.4.1); the client closed with this code:
    /// 1002 protocol error, 1007 invalid UTF-8, 1009 a message or frame over the limit.
    Violation(u16),
    /// The conversation closed with this code (a `close` step, an expect that timed out) and
    /// says whether to reconnect.
    Closed { code: u16, reconnect: bool },
    /// A fleet behaviour of the client ended the connection (churn, leaving, a network
    /// switch, a duplicate connection); the session itself never returns it.
    Fleet(super::fleet::FleetEvent),
}

/// The close code RFC 6455 asks an endpoint to send for a read error: the frame layer's, whose
/// tests hold each broken frame to its code (the embedded target uses the same).
pub use crate::net::ws::violation_code;

/// Echo payload: `wsstorm <client:8 hex> <seq:8 hex> <send time µs:16 hex> ` then padding.
/// Fixed-width fields make the echo cheap to parse; any echo server returns it as is.
const TAG: &[u8] = b"wsstorm ";
const HEADER_LEN: usize = TAG.len() + 8 + 1 + 8 + 1 + 16 + 1;

fn payload(client: u32, seq: u32, stamp_us: u64, len: usize) -> String {
    let header = format!("wsstorm {client:08x} {seq:08x} {stamp_us:016x} ");
    debug_assert_eq!(header.len(), HEADER_LEN);
    // One fill of the whole message, then the header over its start: a memset rather than a
    // character at a time, which matters for the 256 KiB messages of a flood.
    let mut bytes = vec![b'.'; len.max(HEADER_LEN)];
    bytes[..HEADER_LEN].copy_from_slice(header.as_bytes());
    String::from_utf8(bytes).expect("ASCII")
}

/// The size of the group's echo messages: read where a message is made rather than kept in
/// the session, whose task tokio rounds up to 128 bytes, and which sits at that step (see the
/// client's size test).
fn message_bytes(b: &crate::plan::ClientBehaviour) -> usize {
    b.send.map(|s| s.bytes).unwrap_or(0)
}

/// The send time carried by one of our own echoes, if it is one.
fn echoed_send_time(client: u32, data: &[u8]) -> Option<u64> {
    if data.len() < HEADER_LEN || !data.starts_with(TAG) {
        return None;
    }
    let hex = |r: std::ops::Range<usize>| {
        std::str::from_utf8(&data[r])
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
    };
    let from = hex(8..16)?;
    (from == u64::from(client)).then_some(())?;
    hex(26..42)
}

/// tokio's timers fire on a 1 ms wheel, so a send is routinely up to ~2 ms after its intended
/// instant even on an idle generator. The round trip is measured from the intended time, but
/// lateness within this slack is timer granularity, not the target's doing, and is not charged
/// to it; lateness beyond it is (coordinated-omission correction). The full lateness is in the
/// schedule-lag histogram either way.
pub(super) const TIMER_SLACK: Duration = Duration::from_millis(2);

fn ticker(start: Instant, every: Duration) -> Interval {
    let mut i = interval_at(start, every);
    // Burst: a late generator still sends every scheduled message, each stamped with its
    // intended time, so the round trips include the lateness (no coordinated omission).
    i.set_missed_tick_behavior(MissedTickBehavior::Burst);
    i
}

/// The next tick, or never without a ticker. Polled rather than awaited: `Interval::tick`'s
/// future in an `async fn` made this 40 bytes of every client's task, a reference is 8.
fn tick_opt(i: &mut Option<Interval>) -> impl Future<Output = Instant> + '_ {
    poll_fn(move |cx| match i {
        Some(i) => i.poll_tick(cx),
        None => Poll::Pending,
    })
}

/// A timer at `at` that never fires without a deadline, kept in `timer`: boxed, and armed
/// only when first polled. Inline, tokio's `Sleep` is about 120 bytes of every client's task,
/// and most clients (idle, echo without a schedule) never have a deadline; kept across the
/// session loop, it is moved only when the deadline does, not registered anew every turn.
fn timer_at(
    timer: &mut Option<Pin<Box<Sleep>>>,
    at: Option<Instant>,
) -> impl Future<Output = ()> + '_ {
    poll_fn(move |cx| {
        let Some(at) = at else {
            return Poll::Pending;
        };
        let t = match timer {
            Some(t) => {
                if t.deadline() != at {
                    t.as_mut().reset(at);
                }
                t
            }
            None => timer.insert(Box::pin(sleep_until(at))),
        };
        t.as_mut().poll(cx)
    })
}

/// Run one connection. Besides its socket, a client brings its RNG, its position in the
/// embedded target's stream, its conversation's memory and its token; all are parameters, not
/// a struct, so that each is kept once. A plain function that returns the future, not an
/// `async fn`: an `async fn` keeps its arguments in its future twice, as arguments and as the
/// locals made from them, for the connection's whole life.
pub fn run<'a>(
    ctx: &'a GroupCtx,
    who: Who,
    ws: &'a mut Ws,
    rng: &'a mut Xoshiro128PlusPlus,
    mut stream: Option<&'a mut StreamTracker>,
    mut memory: Option<&'a mut Memory>,
    token: Option<&'a super::Token>,
) -> impl Future<Output = SessionEnd> + 'a {
    let token = move || token.map(|t| t.text.as_str());
    async move {
        let b = &ctx.behaviour;
        let opened = Instant::now();
        // The stall clock of a subscribed connection starts at its open.
        if let Some(t) = stream.as_deref_mut() {
            t.heard(opened);
        }
        // The conversation, if the group holds one: its place is kept in the client's memory.
        if let (Some(plan), Some(mem)) = (b.conversation.as_deref(), memory.as_deref_mut()) {
            {
                let mut env = Env {
                    ctx,
                    who,
                    rng: &mut *rng,
                    token: token(),
                };
                mem.open(plan, &mut env);
            }
            if let Some(c) = mem.current()
                && !c.outs.is_empty()
                && let Some(end) = Box::pin(flush_outs(ctx, ws, c, false, None, opened)).await
            {
                return end;
            }
        }
        // A random phase per connection, so a thousand clients that opened together do not send
        // in lock-step forever.
        let mut sender = b
            .send
            .and_then(|s| s.every)
            .map(|every| ticker(opened + every.mul_f64(rng.random::<f64>()), every));
        // Closed loop: the first window goes out at once; each echo sends the next message.
        let closed_loop = b.send.is_some_and(|s| s.every.is_none());
        let mut seq: u32 = 0;
        if closed_loop {
            // Boxed: it runs once per connection, and its write would otherwise be a variant of
            // the task as large as any, beside the loop's state.
            let first_window = Box::pin(async {
                for _ in 0..b.send.map(|s| s.in_flight).unwrap_or(0) {
                    seq = seq.wrapping_add(1);
                    ctx.metrics.sent(who, Duration::ZERO);
                    let msg =
                        Message::text(payload(who.client, seq, ctx.now_us(), message_bytes(b)));
                    if let Sent::End(end) =
                        write_or_give_up(ctx, ws, Write::Send(msg), None, opened).await
                    {
                        return Some(end);
                    }
                }
                None
            });
            if let Some(end) = first_window.await {
                return end;
            }
        }
        let mut pinger = b
            .heartbeat
            .map(|h| ticker(opened + h.ping_every, h.ping_every));
        let mut pong_deadline: Option<Instant> = None;
        let mut ping_seq: u64 = 0;
        let mut last_inbound = opened;
        // Slow consumer: the next message may be read at this instant.
        let mut read_at = opened;
        // Sleeping client: when it freezes, and while frozen, when it wakes.
        let mut sleep_at = b.sleep.map(|s| opened + s.after);
        let mut wake_at: Option<Instant> = None;
        let mut abuse_at = b.abuse.map(|a| opened + a.after);
        // Closed-loop messages fed to the write buffer but not yet written: they go out together
        // when there is nothing more to read (one write for a whole batch of echoes), or here,
        // before the loop waits on anything but a read.
        let mut batch = WriteBatch::default();
        // The loop's one timer, at the earliest deadline (see `timer_at`).
        let mut timer = None;

        loop {
            let awake = wake_at.is_none();
            // In a block: the clock reading is borrowed here, and a borrowed local would be kept
            // in the task across the select below.
            let (may_read, next_deadline) = {
                let now = Instant::now();
                // Checked here as well as by the timer: a client whose sends never wait (a burst
                // catching up, a flood) is not parked between messages, so tokio's timer wheel may
                // not fire for a long while; the clock read above costs nothing extra.
                if awake && pong_deadline.is_some_and(|d| now >= d) {
                    return SessionEnd::Dead {
                        silent_for: last_inbound.elapsed(),
                    };
                }
                // A throttled client's read windows (it has no read rate): `read_at` is the end of
                // the last one it opened.
                let (may_read, throttle_change) = match b.fleet.as_deref().and_then(|f| f.throttle)
                {
                    Some(t) if awake => {
                        let window = read_at;
                        let gate = t.gate(opened, now, &mut read_at);
                        // A read window opened: the client heard nothing while it did not read, so
                        // the stream's silence counts from now (a stall already counted stays so).
                        if read_at != window
                            && let Some(s) = stream.as_deref_mut()
                        {
                            s.listening_again(now);
                        }
                        gate
                    }
                    _ => (awake && b.read_rate.is_none() || now >= read_at, None),
                };
                if batch.is_pending() && !may_read && flush_now(ws) {
                    // Not waited for: a frozen or rate-limited client keeps its timers; what a full
                    // socket does not take now goes out with the next read.
                    batch = WriteBatch::default();
                }
                // One timer for every one-shot deadline: each Sleep future is ~100 bytes of every
                // client's task, and only the earliest matters.
                let next_deadline = [
                    pong_deadline.filter(|_| awake),
                    sleep_at,
                    wake_at,
                    abuse_at.filter(|_| awake),
                    // Not while the read gate is shut: a client that does not read cannot hear.
                    stream
                        .as_deref()
                        .and_then(|t| t.stalls_at(b.subscribe.and_then(|s| s.stall_after)))
                        .filter(|_| awake && may_read),
                    (awake && !may_read && read_at > now).then_some(read_at),
                    throttle_change,
                    memory
                        .as_deref()
                        .zip(b.conversation.as_deref())
                        .and_then(|(m, p)| m.deadline(p))
                        .filter(|_| awake),
                ]
                .into_iter()
                .flatten()
                .min();
                (may_read, next_deadline)
            };
            // A message one of the branches wants written: written after the select, so that
            // what the select kept (its futures, the message just read) is gone by then and the
            // write's future shares their space in the task instead of adding to it.
            let write = tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => {
                    // Rare paths are boxed so their futures do not widen every client's task.
                    Box::pin(close_gracefully(ctx, who, ws, stream)).await;
                    return SessionEnd::Stopped;
                }
                intended = tick_opt(&mut sender), if awake => {
                    let now = Instant::now();
                    let lag = now.saturating_duration_since(intended);
                    let stamp_us = ctx.us_since_epoch(now.min(intended + TIMER_SLACK));
                    seq = seq.wrapping_add(1);
                    ctx.metrics.sent(who, lag);
                    Some(Write::Send(Message::text(payload(who.client, seq, stamp_us, message_bytes(b)))))
                }
                _ = tick_opt(&mut pinger), if awake => {
                    // One ping in flight at a time: the deadline belongs to the oldest unanswered.
                    if pong_deadline.is_none() {
                        ping_seq += 1;
                        let (every, timeout) =
                            b.heartbeat.map(|h| (h.ping_every, h.timeout)).unwrap_or_default();
                        // A peer is dead once nothing arrived for a ping interval plus the timeout,
                        // even when this ping goes out late (the client was stuck in a slow send):
                        // lateness of our own must not stretch the time to detect a dead peer.
                        pong_deadline =
                            Some((Instant::now() + timeout).min(last_inbound + every + timeout));
                        Some(Write::Send(Message::Ping(ping_seq.to_be_bytes().to_vec().into())))
                    } else {
                        None
                    }
                }
                msg = poll_fn(|cx| poll_next_flushing(ws, &mut batch, cx)), if may_read => {
                    last_inbound = Instant::now();
                    // The gap is worked out here, not kept: 16 bytes of every client's task.
                    if let Some(gap) = b.read_rate.map(|r| Duration::from_secs_f64(1.0 / r)) {
                        read_at = read_at.max(last_inbound) + gap;
                    }
                    match msg {
                        Some(Ok(msg @ (Message::Text(_) | Message::Binary(_))))
                            if memory.as_deref().is_some_and(Memory::is_open) =>
                        {
                            let (Some(p), Some(mem)) = (b.conversation.as_deref(), memory.as_deref_mut()) else {
                                unreachable!("an open conversation has its plan and memory")
                            };
                            let (data, text): (&[u8], bool) = match &msg {
                                Message::Text(t) => (t.as_bytes(), true),
                                Message::Binary(b) => (b, false),
                                _ => (&[], false),
                            };
                            // Scoped: nothing of the engine's call is kept across the write.
                            let has_outs = {
                                let mut env = Env { ctx, who, rng: &mut *rng, token: token() };
                                mem.on_message(p, &mut env, &Msg::new(data, text), last_inbound)
                            };
                            drop(msg);
                            if has_outs && let Some(c) = mem.current() {
                                batch.fed();
                                if let Some(end) = Box::pin(flush_outs(ctx, ws, c, true, pong_deadline, last_inbound)).await {
                                    return end;
                                }
                            }
                            None
                        }
                        Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                            let echo = record_data(ctx, who, &msg, stream.as_deref_mut());
                            if closed_loop && echo {
                                seq = seq.wrapping_add(1);
                                ctx.metrics.sent(who, Duration::ZERO);
                                let next = Message::text(payload(who.client, seq, ctx.now_us(), message_bytes(b)));
                                batch.fed();
                                Some(Write::Feed(next))
                            } else {
                                None
                            }
                        }
                        Some(Ok(Message::Pong(p))) => {
                            if p.as_ref() == ping_seq.to_be_bytes() {
                                pong_deadline = None;
                            }
                            None
                        }
                        Some(Ok(Message::Close(frame))) => {
                            // The WebSocket answers the close; keep reading until the stream ends.
                            let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005);
                            if let Some(f) = &frame {
                                ctx.metrics.close_reason(who, code, &f.reason);
                            }
                            let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), async {
                                while let Some(Ok(_)) = ws.next().await {}
                            }))
                            .await;
                            return SessionEnd::Peer(code);
                        }
                        Some(Ok(_)) => None,
                        Some(Err(e)) => match violation_code(&e) {
                            Some(code) => {
                                // Say why, as the RFC asks, if the connection still takes a frame.
                                let frame = CloseFrame {
                                    code: code.into(),
                                    reason: "".into(),
                                };
                                let _ = Box::pin(tokio::time::timeout(
                                    Duration::from_secs(1),
                                    ws.close(Some(frame)),
                                ))
                                .await;
                                return SessionEnd::Violation(code);
                            }
                            None => return SessionEnd::Peer(1006),
                        },
                        None => return SessionEnd::Peer(1006),
                    }
                }
                _ = timer_at(&mut timer, next_deadline) => {
                    let now = Instant::now();
                    let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
                    if awake && due(pong_deadline) {
                        return SessionEnd::Dead { silent_for: last_inbound.elapsed() };
                    }
                    if awake
                        && let (Some(p), Some(mem)) = (b.conversation.as_deref(), memory.as_deref_mut())
                        && mem.deadline(p).is_some_and(|t| t <= now)
                    {
                        let has_outs = {
                            let mut env = Env { ctx, who, rng: &mut *rng, token: token() };
                            mem.on_timer(p, &mut env, now)
                        };
                        if has_outs
                            && let Some(c) = mem.current()
                            && let Some(end) = Box::pin(flush_outs(ctx, ws, c, false, pong_deadline, last_inbound)).await
                        {
                            return end;
                        }
                    }
                    if awake && may_read && due(stream.as_deref().and_then(|t| t.stalls_at(b.subscribe.and_then(|s| s.stall_after)))) {
                        // Open, perhaps answering pings, but the stream stopped: a ghost.
                        if let Some(t) = stream.as_deref_mut() {
                            t.stalled();
                        }
                        ctx.metrics.stalled(who);
                        if b.subscribe.is_some_and(|s| s.reconnect_on_stall) {
                            Box::pin(close_stalled(ws)).await;
                            return SessionEnd::Closed { code: STALL_CLOSE, reconnect: true };
                        }
                    }
                    if due(sleep_at) {
                        // Frozen: nothing is read (so no pongs go out), sent or timed until it wakes.
                        sleep_at = None;
                        wake_at = b.sleep.map(|s| now + s.duration);
                        pong_deadline = None;
                    } else if due(wake_at) {
                        wake_at = None;
                        // A frozen app heard nothing because it was not listening: the peer's
                        // silence counts from the moment it can be heard again.
                        last_inbound = now;
                        // A woken app does not replay what it missed while frozen.
                        if let Some(s) = &mut sender {
                            s.reset();
                        }
                        if let Some(p) = &mut pinger {
                            p.reset();
                        }
                        if let (Some(p), Some(mem)) = (b.conversation.as_deref(), memory.as_deref_mut()) {
                            mem.woke(p, now);
                        }
                        read_at = now;
                    }
                    if awake && due(abuse_at) {
                        abuse_at = None;
                        if let Some(a) = b.abuse {
                            let frame = super::abuse::frame(a.kind, a.bytes, rng);
                            // The server may cut us off mid-write, or stop reading; what it
                            // answers is read above.
                            let _ = Box::pin(tokio::time::timeout(Duration::from_secs(2), async {
                                // Buffered messages first: the raw frame must not land inside one.
                                ws.flush().await.map_err(std::io::Error::other)?;
                                batch = WriteBatch::default();
                                let raw = ws.get_mut().untransformed();
                                raw.write_all(&frame).await?;
                                raw.flush().await
                            }))
                            .await;
                        }
                    }
                    // A slow consumer's read slot needs nothing: `may_read` is recomputed above.
                    None
                }
            };
            // Moved out whole (`{ write }`): taken apart in place, the message's slot would be
            // kept in the task beside the write's future.
            #[allow(clippy::blocks_in_conditions)]
            let what = match { write } {
                Some(what) => what,
                None => continue,
            };
            if let Sent::End(end) =
                write_or_give_up(ctx, ws, what, pong_deadline, last_inbound).await
            {
                return end;
            }
        }
    }
}

enum Sent {
    Ok,
    End(SessionEnd),
}

/// Put out what the conversation asked for: its messages (fed to the write buffer when
/// `feed`, for the read loop to flush with the rest of a batch; sent at once otherwise) or a
/// close, which ends the session.
async fn flush_outs(
    ctx: &GroupCtx,
    ws: &mut Ws,
    c: &mut Conversation,
    feed: bool,
    pong_deadline: Option<Instant>,
    last_inbound: Instant,
) -> Option<SessionEnd> {
    let mut outs = std::mem::take(&mut c.outs);
    let mut end = None;
    for out in outs.drain(..) {
        match out {
            Out::Send(m) => {
                let what = if feed { Write::Feed(m) } else { Write::Send(m) };
                if let Sent::End(e) =
                    write_or_give_up(ctx, ws, what, pong_deadline, last_inbound).await
                {
                    end = Some(e);
                    break;
                }
            }
            Out::Close {
                code,
                reason,
                reconnect,
            } => {
                let frame = CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    if ws.close(Some(frame)).await.is_ok() {
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                })
                .await;
                end = Some(SessionEnd::Closed { code, reconnect });
                break;
            }
        }
    }
    // The buffer goes back, so a busy connection does not allocate a new one per message.
    c.outs = outs;
    end
}

/// What [`write_or_give_up`] does with the socket.
enum Write {
    /// Buffer a message (written once the buffer passes [`WRITE_BATCH`](crate::net::transport::WRITE_BATCH)).
    Feed(Message),
    /// Buffer a message and write out everything.
    Send(Message),
}

/// Feed or send (feed and flush) one message, but do not wait on a peer that stopped reading
/// longer than the run or the heartbeat allows: a full socket must not hide the end of the run
/// or a dead connection. A plain function that returns the future, not an `async fn`: an
/// `async fn` keeps its arguments in its future, and this one sits in every client's task, so
/// the message would be stored twice.
///
/// The write is tried at once; only one the socket cannot take yet is boxed with what waits
/// on it (the run's end, the peer's death). Almost every write completes at once, and the
/// waiting future, kept inline, was the largest state of every client's task: 128 bytes of
/// every client, idle or not, since tokio rounds a task up to 128 bytes.
fn write_or_give_up<'a>(
    ctx: &'a GroupCtx,
    ws: &'a mut Ws,
    what: Write,
    pong_deadline: Option<Instant>,
    last_inbound: Instant,
) -> impl Future<Output = Sent> + 'a {
    // Stuck here, the client cannot send its next ping; with a heartbeat, a live peer would
    // have answered within one ping interval plus the timeout of the last thing it sent.
    let dead_at = pong_deadline.or_else(|| {
        ctx.behaviour
            .heartbeat
            .map(|h| last_inbound + h.ping_every + h.timeout)
    });
    let mut io = match what {
        Write::Feed(m) => Either::Left(ws.feed(m)),
        Write::Send(m) => Either::Right(ws.send(m)),
    };
    // Polled again, with the task's waker, if it has to wait.
    let first = (&mut io).now_or_never();
    let sent = |r: Result<(), _>| match r {
        Ok(()) => Sent::Ok,
        Err(_) => Sent::End(SessionEnd::Peer(1006)),
    };
    let waiting = first.is_none().then(|| Box::new(io));
    async move {
        let Some(mut io) = waiting else {
            return first.map_or(Sent::Ok, sent);
        };
        Box::pin(async move {
            // Armed only if the write has to wait.
            let mut timer = None;
            tokio::select! {
                biased;
                // Stuck writing: no graceful close is possible; the client closes the socket.
                _ = ctx.cancel.cancelled() => Sent::End(SessionEnd::Stopped),
                r = &mut *io => sent(r),
                _ = timer_at(&mut timer, dead_at) => Sent::End(SessionEnd::Dead {
                    silent_for: last_inbound.elapsed(),
                }),
            }
        })
        .await
    }
}

/// The close code a client sends on a connection it found stalled.
pub const STALL_CLOSE: u16 = 4000;

/// Close a stalled connection (4000 "stalled") and give the server a moment to answer.
async fn close_stalled(ws: &mut Ws) {
    let frame = CloseFrame {
        code: STALL_CLOSE.into(),
        reason: "stalled".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Close with 1000 and wait (up to the grace period) for the server's answer, as a well-behaved
/// client does. Messages still in flight arrive first and are counted like any other.
pub(super) async fn close_gracefully(
    ctx: &GroupCtx,
    who: Who,
    ws: &mut Ws,
    mut stream: Option<&mut StreamTracker>,
) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(ctx.grace, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(msg)) = ws.next().await {
                let _ = record_data(ctx, who, &msg, stream.as_deref_mut());
            }
        }
    })
    .await;
}

/// Count a text or binary message: its round trip if it is one of our echoes, its sequence if
/// it is a stream message. True if it was one of our echoes.
fn record_data(
    ctx: &GroupCtx,
    who: Who,
    msg: &Message,
    stream: Option<&mut StreamTracker>,
) -> bool {
    let data: &[u8] = match msg {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return false,
    };
    if let Some(tracker) = stream
        && let Some(seq) = parse_seq(data)
    {
        tracker.heard(Instant::now());
        match tracker.on_seq(seq) {
            Arrival::InOrder => {}
            Arrival::Duplicate => ctx.metrics.stream_anomaly(who, true, false),
            Arrival::OutOfOrder => ctx.metrics.stream_anomaly(who, false, true),
        }
        ctx.metrics.received(who, None);
        return false;
    }
    let rtt = echoed_send_time(who.client, data)
        .map(|sent_us| Duration::from_micros(ctx.now_us().saturating_sub(sent_us)));
    ctx.metrics.received(who, rtt);
    rtt.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let p = payload(42, 7, 123_456_789, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(echoed_send_time(42, p.as_bytes()), Some(123_456_789));
        assert_eq!(
            echoed_send_time(43, p.as_bytes()),
            None,
            "another client's echo"
        );
        assert_eq!(echoed_send_time(42, b"hello"), None);
        assert_eq!(
            payload(1, 1, 1, 10).len(),
            HEADER_LEN,
            "never shorter than the header"
        );
        assert!(HEADER_LEN <= crate::plan::MIN_MESSAGE_BYTES as usize);
    }
}
