//! Forwarding one connection in both directions, with whatever faults apply to it.
//!
//! Driven by readiness (`readable`/`try_read`, `writable`/`try_write`): nothing is allocated
//! while a connection is idle, and a chunk is read only when it can be queued. Each direction
//! (a [`Lane`]) keeps a queue of chunks with the instant each may be written — that is where
//! latency, bandwidth and slicing live; with no fault, chunks are due at once. Every await in
//! the loop is cancel-safe: state changes only after the last await of a branch.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::rngs::Xoshiro128PlusPlus;
use rand::{RngExt, SeedableRng};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::{ConnInfo, CutMode, DirFaults, Shared};
use crate::net::transport::close_with_fin;

/// Most bytes queued per direction while latency, bandwidth or slicing holds chunks back; a
/// delay line must hold bandwidth × delay.
const PACED_QUEUE: usize = 1 << 20;

thread_local! {
    /// The fast path's buffer: filled and emptied without an await in between, so one per
    /// thread serves every connection.
    static FORWARD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Chunk {
    data: Vec<u8>,
    off: usize,
    due: Instant,
}

/// One direction of a connection.
struct Lane {
    queue: VecDeque<Chunk>,
    queued: usize,
    /// The source reached end of stream.
    eof: bool,
    /// The end of stream was passed on (write side shut down).
    shut: bool,
    /// Slicer pacing: nothing is written before this.
    not_before: Instant,
    tokens: f64,
    refilled: Instant,
}

impl Lane {
    fn new() -> Lane {
        let now = Instant::now();
        Lane {
            queue: VecDeque::new(),
            queued: 0,
            eof: false,
            shut: false,
            not_before: now,
            tokens: 0.0,
            refilled: now,
        }
    }

    fn can_read(&self, f: &DirFaults, buffer: usize) -> bool {
        let limit = if f.paced() { PACED_QUEUE } else { buffer };
        !self.eof && !f.blackhole && self.queued < limit
    }

    fn can_write(&self, f: &DirFaults) -> bool {
        !self.queue.is_empty() && !f.blackhole
    }

    /// Read what `from` has. With nothing pacing this lane and nothing queued, the bytes go
    /// straight on to `to` from a per-thread buffer (no allocation, no extra wake-up); only
    /// what `to` does not take is queued. Returns (bytes read, bytes written); 0 read is end of
    /// stream.
    fn read(
        &mut self,
        from: &TcpStream,
        to: &TcpStream,
        f: &DirFaults,
        buffer: usize,
        rng: &mut Xoshiro128PlusPlus,
    ) -> io::Result<(usize, usize)> {
        if !f.paced() && self.queue.is_empty() {
            return FORWARD.with_borrow_mut(|buf| {
                buf.resize(buffer, 0);
                let n = match from.try_read(buf) {
                    Ok(0) => {
                        self.eof = true;
                        return Ok((0, 0));
                    }
                    Ok(n) => n,
                    Err(e) => return Err(e),
                };
                let written = match to.try_write(&buf[..n]) {
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(e),
                };
                if written < n {
                    self.queued += n - written;
                    self.queue.push_back(Chunk {
                        data: buf[written..n].to_vec(),
                        off: 0,
                        due: Instant::now(),
                    });
                }
                Ok((n, written))
            });
        }
        let mut data = Vec::with_capacity(buffer);
        match from.try_read_buf(&mut data) {
            Ok(0) => {
                self.eof = true;
                Ok((0, 0))
            }
            Ok(n) => {
                let now = Instant::now();
                let mut due = now;
                if let Some((delay, jitter)) = f.latency {
                    let j = if jitter.is_zero() {
                        0.0
                    } else {
                        rng.random_range(-jitter.as_secs_f64()..jitter.as_secs_f64())
                    };
                    due = now + Duration::from_secs_f64((delay.as_secs_f64() + j).max(0.0));
                }
                // TCP is a byte stream: a chunk never overtakes the one before it.
                if let Some(last) = self.queue.back() {
                    due = due.max(last.due);
                }
                self.queued += n;
                self.queue.push_back(Chunk { data, off: 0, due });
                Ok((n, 0))
            }
            Err(e) => Err(e),
        }
    }

    fn bucket_now(&self, rate: f64, now: Instant) -> f64 {
        let burst = (rate / 20.0).max(512.0);
        (self.tokens + now.saturating_duration_since(self.refilled).as_secs_f64() * rate).min(burst)
    }

    /// Write (part of) the head chunk once it is due. Returns bytes written (0 if the socket
    /// was not ready after all).
    async fn write(&mut self, to: &TcpStream, f: &DirFaults) -> io::Result<usize> {
        let head_due = self
            .queue
            .front()
            .map(|c| c.due)
            .unwrap_or_else(Instant::now);
        let start = head_due.max(self.not_before);
        if start > Instant::now() {
            sleep_until(start).await;
        }
        if let Some(rate) = f.bandwidth {
            let have = self.bucket_now(rate, Instant::now());
            if have < 1.0 {
                sleep_until(Instant::now() + Duration::from_secs_f64((1.0 - have) / rate)).await;
            }
        }
        to.writable().await?;
        // No await below: what follows happens entirely or not at all.
        let now = Instant::now();
        if let Some(rate) = f.bandwidth {
            self.tokens = self.bucket_now(rate, now);
            self.refilled = now;
        }
        let Some(head) = self.queue.front_mut() else {
            return Ok(0);
        };
        let mut n = head.data.len() - head.off;
        if let Some((slice, _)) = f.slicer {
            n = n.min(slice);
        }
        if f.bandwidth.is_some() {
            n = n.min(self.tokens.max(1.0) as usize);
        }
        let written = match to.try_write(&head.data[head.off..head.off + n]) {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        head.off += written;
        self.queued -= written;
        if head.off == head.data.len() {
            self.queue.pop_front();
        }
        if f.bandwidth.is_some() {
            self.tokens -= written as f64;
        }
        if let Some((_, delay)) = f.slicer {
            self.not_before = now + delay;
        }
        Ok(written)
    }
}

/// Close both sides: RST, or a clean FIN (see [`close_with_fin`]). The caller drops the
/// streams afterwards.
async fn close(client: &TcpStream, upstream: &TcpStream, mode: CutMode) {
    match mode {
        CutMode::Reset => {
            let _ = socket2::SockRef::from(client).set_linger(Some(Duration::ZERO));
            let _ = socket2::SockRef::from(upstream).set_linger(Some(Duration::ZERO));
        }
        CutMode::Fin => {
            tokio::join!(close_with_fin(client), close_with_fin(upstream));
        }
    }
}

pub(super) async fn pump(
    client: TcpStream,
    upstream: TcpStream,
    info: &ConnInfo,
    shared: &Shared,
    shutdown: CancellationToken,
) {
    let buffer = shared.config.buffer;
    let mut table = shared.table.subscribe();
    let source = info.client.ip();
    let (mut cut_seen, mut eff) = {
        let t = table.borrow_and_update();
        // A cut fired before this connection existed is not for it.
        (
            t.cuts.last().map(|c| c.0).unwrap_or(0),
            t.effective(info.id, source),
        )
    };
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(info.id);
    let mut up = Lane::new();
    let mut down = Lane::new();
    let mut last_activity = Instant::now();
    let stats = &shared.stats;

    loop {
        let idle_at = eff.idle.map(|(after, _)| last_activity + after);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            changed = table.changed() => {
                if changed.is_err() {
                    return;
                }
                let t = table.borrow_and_update().clone();
                let cut = t
                    .cuts
                    .iter()
                    .filter(|c| c.0 > cut_seen)
                    .find(|(seq, _, share)| crate::seed::in_share(info.id, *seq, *share))
                    .copied();
                cut_seen = t.cuts.last().map(|c| c.0).unwrap_or(cut_seen);
                if let Some((_, mode, _)) = cut {
                    stats.cut.fetch_add(1, Ordering::Relaxed);
                    close(&client, &upstream, mode).await;
                    return;
                }
                eff = t.effective(info.id, source);
            }
            r = client.readable(), if up.can_read(&eff.up, buffer) => {
                if r.is_err() {
                    close(&client, &upstream, CutMode::Reset).await;
                    return;
                }
                match up.read(&client, &upstream, &eff.up, buffer, &mut rng) {
                    Ok((_, written)) => {
                        last_activity = Instant::now();
                        stats.forwarded(info, true, written);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        close(&client, &upstream, CutMode::Reset).await;
                        return;
                    }
                }
            }
            r = upstream.readable(), if down.can_read(&eff.down, buffer) => {
                if r.is_err() {
                    close(&client, &upstream, CutMode::Reset).await;
                    return;
                }
                match down.read(&upstream, &client, &eff.down, buffer, &mut rng) {
                    Ok((_, written)) => {
                        last_activity = Instant::now();
                        stats.forwarded(info, false, written);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        close(&client, &upstream, CutMode::Reset).await;
                        return;
                    }
                }
            }
            w = up.write(&upstream, &eff.up), if up.can_write(&eff.up) => match w {
                Ok(n) => {
                    stats.forwarded(info, true, n);
                }
                Err(_) => {
                    close(&client, &upstream, CutMode::Reset).await;
                    return;
                }
            },
            w = down.write(&client, &eff.down), if down.can_write(&eff.down) => match w {
                Ok(n) => {
                    stats.forwarded(info, false, n);
                }
                Err(_) => {
                    close(&client, &upstream, CutMode::Reset).await;
                    return;
                }
            },
            _ = crate::net::sleep_until_opt(idle_at) => {
                stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                close(&client, &upstream, eff.idle.map(|(_, m)| m).unwrap_or_default()).await;
                return;
            }
        }
        // Pass an end of stream on once everything before it was delivered (half-close).
        for (lane, to) in [(&mut up, &upstream), (&mut down, &client)] {
            if lane.eof && lane.queue.is_empty() && !lane.shut {
                lane.shut = true;
                let _ = socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
            }
        }
        if up.shut && down.shut {
            return;
        }
    }
}
