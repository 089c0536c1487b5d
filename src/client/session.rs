//! An open connection: send echo messages on schedule, ping and watch for pongs, read whatever
//! arrives, and report how the connection ended as a [`SessionEnd`].

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::RngExt;
use rand::rngs::Xoshiro128PlusPlus;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::GroupCtx;
use super::connect::Ws;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The run ended (or a policy stopped the client): it closed with 1000.
    Stopped,
    /// The peer closed with this code; 1006 when the connection ended without a close frame,
    /// 1005 when the close frame carried no code.
    Peer(u16),
    /// No pong within the heartbeat timeout.
    Dead { silent_for: Duration },
}

/// Echo payload: `wsstorm <client:8 hex> <seq:8 hex> <intended send time µs:16 hex> ` then
/// padding. Fixed-width fields make the echo cheap to parse; any echo server returns it as is.
const TAG: &[u8] = b"wsstorm ";
const HEADER_LEN: usize = TAG.len() + 8 + 1 + 8 + 1 + 16 + 1;

fn payload(client: u32, seq: u32, intended_us: u64, len: usize) -> String {
    let mut s = format!("wsstorm {client:08x} {seq:08x} {intended_us:016x} ");
    debug_assert_eq!(s.len(), HEADER_LEN);
    s.extend(std::iter::repeat_n('.', len.saturating_sub(HEADER_LEN)));
    s
}

/// The intended send time carried by one of our own echoes, if it is one.
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
const TIMER_SLACK: Duration = Duration::from_millis(2);

fn ticker(start: Instant, every: Duration) -> Interval {
    let mut i = interval_at(start, every);
    // Burst: a late generator still sends every scheduled message, each stamped with its
    // intended time, so the round trips include the lateness (no coordinated omission).
    i.set_missed_tick_behavior(MissedTickBehavior::Burst);
    i
}

async fn tick_opt(i: &mut Option<Interval>) -> Instant {
    match i {
        Some(i) => i.tick().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

pub async fn run(ctx: &GroupCtx, id: u32, ws: &mut Ws, rng: &mut Xoshiro128PlusPlus) -> SessionEnd {
    let b = &ctx.behaviour;
    let opened = Instant::now();
    // A random phase per connection, so a thousand clients that opened together do not send
    // in lock-step forever.
    let mut sender = b
        .send
        .map(|s| ticker(opened + s.every.mul_f64(rng.random::<f64>()), s.every));
    let bytes = b.send.map(|s| s.bytes).unwrap_or(0);
    let mut pinger = b
        .heartbeat
        .map(|h| ticker(opened + h.ping_every, h.ping_every));
    let mut pong_deadline: Option<Instant> = None;
    let mut ping_seq: u64 = 0;
    let mut last_inbound = opened;
    let mut seq: u32 = 0;
    let mut close_code: Option<u16> = None;

    loop {
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                close_gracefully(ctx, id, ws).await;
                return SessionEnd::Stopped;
            }
            msg = ws.next() => {
                last_inbound = Instant::now();
                match msg {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                        record_data(ctx, id, &msg);
                    }
                    Some(Ok(Message::Pong(p))) => {
                        if p.as_ref() == ping_seq.to_be_bytes() {
                            pong_deadline = None;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        // tungstenite answers the close; keep reading until the stream ends.
                        close_code = Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        return SessionEnd::Peer(close_code.unwrap_or(1005));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return SessionEnd::Peer(close_code.unwrap_or(1006)),
                }
            }
            intended = tick_opt(&mut sender) => {
                let now = Instant::now();
                let lag = now.saturating_duration_since(intended);
                let stamp_us = ctx.us_since_epoch(now.min(intended + TIMER_SLACK));
                seq = seq.wrapping_add(1);
                ctx.metrics.sent(id, lag);
                if ws.send(Message::text(payload(id, seq, stamp_us, bytes))).await.is_err() {
                    return SessionEnd::Peer(1006);
                }
            }
            _ = tick_opt(&mut pinger) => {
                // One ping in flight at a time: the deadline belongs to the oldest unanswered.
                if pong_deadline.is_none() {
                    ping_seq += 1;
                    let timeout = b.heartbeat.map(|h| h.timeout).unwrap_or_default();
                    pong_deadline = Some(Instant::now() + timeout);
                    if ws.send(Message::Ping(ping_seq.to_be_bytes().to_vec().into())).await.is_err() {
                        return SessionEnd::Peer(1006);
                    }
                }
            }
            _ = sleep_opt(pong_deadline) => {
                return SessionEnd::Dead { silent_for: last_inbound.elapsed() };
            }
        }
    }
}

/// Close with 1000 and wait (up to the grace period) for the server's answer, as a well-behaved
/// client does. Echoes still in flight arrive first and are counted like any other.
async fn close_gracefully(ctx: &GroupCtx, id: u32, ws: &mut Ws) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(ctx.grace, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(msg)) = ws.next().await {
                record_data(ctx, id, &msg);
            }
        }
    })
    .await;
}

/// Count a text or binary message, with its round trip if it is one of our echoes.
fn record_data(ctx: &GroupCtx, id: u32, msg: &Message) {
    let data: &[u8] = match msg {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return,
    };
    let rtt = echoed_send_time(id, data)
        .map(|sent_us| Duration::from_micros(ctx.now_us().saturating_sub(sent_us)));
    ctx.metrics.received(id, rtt);
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
        assert!(HEADER_LEN <= crate::profile::MIN_MESSAGE_BYTES as usize);
    }
}
