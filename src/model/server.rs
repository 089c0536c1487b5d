//! The embedded target's capacity model, in virtual time: what `server::connection` does
//! with a handshake, as arithmetic. Admission is the server's own [`TokenBucket`]; the
//! handshake queue is FIFO with `workers` servers of a fixed `service_time`, bounded at
//! `queue` waiting or in service, and a handshake whose client gave up meanwhile is still
//! served (and counted wasted) — as the real server does, paying before it looks.

use std::collections::VecDeque;
use std::time::Duration;

use super::us;
use crate::server::{HandshakeCost, ServerConfig, ServerSummary, TokenBucket};

/// What the client will get for an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Open,
    /// Nothing listening (the server is restarting).
    Refused,
    /// The client's handshake timeout ran out first.
    Timeout,
    /// An HTTP answer other than 101.
    Status(u16),
}

pub struct ServerModel {
    bucket: Option<TokenBucket>,
    cost: Option<HandshakeCost>,
    /// When each worker is next free (µs).
    free_at: Vec<u64>,
    /// Completion times of the handshakes waiting or in service, in order (FIFO with one
    /// service time: they complete in the order they came), and whether the client will
    /// have left by then.
    queue: VecDeque<(u64, bool)>,
    /// The Retry-After a 503 carries, as the header says it (whole seconds, at least 1).
    retry_after: Duration,
    down_until: u64,
    next_conn: u32,
    pub open: u64,
    pub hung: u64,
    stats: ServerSummary,
}

impl ServerModel {
    pub fn new(config: &ServerConfig) -> ServerModel {
        let burst = config
            .accept_burst
            .map(f64::from)
            .unwrap_or_else(|| config.accept_rate.map_or(1.0, |r| (r / 10.0).max(1.0)));
        ServerModel {
            bucket: config.accept_rate.map(|r| TokenBucket::new(r, burst)),
            cost: config.handshake,
            free_at: vec![0; config.handshake.map_or(0, |c| c.workers.max(1) as usize)],
            queue: VecDeque::new(),
            retry_after: Duration::from_secs(
                config.retry_after.as_secs_f64().ceil().max(1.0) as u64
            )
            .min(Duration::from_secs(
                crate::client::connect::MAX_RETRY_AFTER_SECS,
            )),
            down_until: 0,
            next_conn: 0,
            open: 0,
            hung: 0,
            stats: ServerSummary::default(),
        }
    }

    /// The listener is closed until `t`.
    pub fn down_until(&mut self, t: u64) {
        self.down_until = self.down_until.max(t);
    }

    /// `n` open connections were dropped by a timeline action.
    pub fn dropped(&mut self, n: u64) {
        self.stats.dropped_by_action += n;
        self.open = self.open.saturating_sub(n);
    }

    /// A drain closed one connection with `code`.
    pub fn drained(&mut self, code: u16) {
        self.stats.drained += 1;
        *self.stats.closes_sent.entry(code.to_string()).or_default() += 1;
        self.open = self.open.saturating_sub(1);
    }

    /// A connection reached `max_lifetime`: closed with `code`, or abruptly.
    pub fn expired(&mut self, code: Option<u16>) {
        self.stats.lifetime_closes += 1;
        if let Some(code) = code {
            *self.stats.closes_sent.entry(code.to_string()).or_default() += 1;
        }
        self.open = self.open.saturating_sub(1);
    }

    /// The Retry-After every 503 carries.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Handshakes that completed by `t` leave the queue; those whose client had gone are
    /// the server's wasted work.
    fn served_until(&mut self, t: u64) {
        while let Some(&(done, wasted)) = self.queue.front() {
            if done > t {
                break;
            }
            self.queue.pop_front();
            if wasted {
                self.stats.handshakes_wasted += 1;
                self.stats.failed_handshakes += 1;
            }
        }
    }

    /// A connection arrives at `t` (µs) from a client that gives up at `gives_up`; the
    /// answer reaches the client `rtt / 2` after the server sends it. `None` when nothing
    /// listens; else the connection's id, the answer and when the client has it. A client
    /// whose Origin is not allowed gets 403 where it would have been upgraded, as the server
    /// checks it after admission.
    pub fn handshake(
        &mut self,
        t: u64,
        gives_up: u64,
        rtt: u64,
        origin_allowed: bool,
    ) -> Option<(u32, Answer, u64)> {
        if t < self.down_until {
            return None;
        }
        self.stats.accepted += 1;
        self.next_conn = self.next_conn.wrapping_add(1);
        let conn = self.next_conn;
        let admitted = self
            .bucket
            .as_mut()
            .is_none_or(|b| b.take_at(Duration::from_micros(t)));
        // The upgrade request follows the connect by half a round trip.
        let mut sent = t + rtt / 2;
        if let Some(cost) = self.cost {
            self.served_until(sent);
            let waiting = self.queue.len() as u64 + 1;
            self.stats.handshake_queue_peak = self.stats.handshake_queue_peak.max(waiting);
            if waiting <= u64::from(cost.queue) {
                let (w, free) = self
                    .free_at
                    .iter()
                    .copied()
                    .enumerate()
                    .min_by_key(|&(_, f)| f)
                    .expect("at least one worker");
                let done = sent.max(free) + us(cost.service_time);
                self.free_at[w] = done;
                let abandoned = done + rtt / 2 > gives_up;
                self.queue.push_back((done, abandoned));
                if abandoned {
                    return Some((conn, Answer::Timeout, gives_up));
                }
                sent = done;
            }
            // A full queue answers 503 at once, as the server does.
            else {
                return Some(self.refuse(conn, sent + rtt / 2, gives_up));
            }
        }
        let at = sent + rtt / 2;
        if at > gives_up {
            return Some((conn, Answer::Timeout, gives_up));
        }
        if !admitted {
            return Some(self.refuse(conn, at, gives_up));
        }
        if !origin_allowed {
            self.stats.rejected_403 += 1;
            return Some((conn, Answer::Status(403), at));
        }
        self.stats.upgraded += 1;
        self.open += 1;
        Some((conn, Answer::Open, at))
    }

    fn refuse(&mut self, conn: u32, at: u64, gives_up: u64) -> (u32, Answer, u64) {
        if at > gives_up {
            return (conn, Answer::Timeout, gives_up);
        }
        self.stats.rejected_503 += 1;
        (conn, Answer::Status(503), at)
    }

    /// The server's counters at `end`, as results.json has them.
    pub fn summary(&mut self, end: u64) -> ServerSummary {
        self.served_until(end);
        let mut s = self.stats.clone();
        s.hung = self.hung;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::test_config as default_config;

    fn ms(n: u64) -> u64 {
        n * 1000
    }

    #[test]
    fn a_bounded_fifo_queue_serves_in_order_and_wastes_what_clients_abandoned() {
        let mut config = default_config();
        config.handshake = Some(HandshakeCost {
            service_time: Duration::from_millis(10),
            workers: 1,
            queue: 3,
        });
        let mut s = ServerModel::new(&config);
        let answers: Vec<(Answer, u64)> = (0..5)
            .map(|_| {
                let (_, a, at) = s.handshake(0, ms(25), 0, true).expect("listening");
                (a, at)
            })
            .collect();
        assert_eq!(
            answers,
            [
                (Answer::Open, ms(10)),
                (Answer::Open, ms(20)),
                // Served at 30 ms, 5 ms after its client gave up: the server pays anyway.
                (Answer::Timeout, ms(25)),
                // Four waiting or in service is more than the queue's three: 503 at once.
                (Answer::Status(503), 0),
                (Answer::Status(503), 0),
            ]
        );
        let sum = s.summary(ms(100));
        assert_eq!(
            (sum.upgraded, sum.handshakes_wasted, sum.rejected_503),
            (2, 1, 2)
        );
        assert_eq!(sum.handshake_queue_peak, 4);
        assert_eq!(sum.accepted, 5);
    }

    #[test]
    fn admission_is_the_servers_token_bucket_and_a_restart_refuses() {
        let mut config = default_config();
        config.accept_rate = Some(10.0);
        config.accept_burst = Some(2);
        config.retry_after = Duration::from_millis(1500);
        let mut s = ServerModel::new(&config);
        let answer = |s: &mut ServerModel, t| s.handshake(t, NEVER, 0, true).map(|(_, a, _)| a);
        assert_eq!(answer(&mut s, 0), Some(Answer::Open));
        assert_eq!(answer(&mut s, 0), Some(Answer::Open));
        assert_eq!(answer(&mut s, 0), Some(Answer::Status(503)));
        assert_eq!(answer(&mut s, ms(100)), Some(Answer::Open), "refilled");
        // The header carries whole seconds, rounded up.
        assert_eq!(s.retry_after(), Duration::from_secs(2));
        s.down_until(ms(500));
        assert_eq!(answer(&mut s, ms(499)), None);
        assert_eq!(answer(&mut s, ms(500)), Some(Answer::Open));
    }

    const NEVER: u64 = u64::MAX / 2;
}
