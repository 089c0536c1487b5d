//! When a run has settled: every client has arrived and is connected or has given up — none
//! attempting, none in backoff, none between a lost connection and its backoff. Read from the
//! run's counters alone, so the live swarm (`--until recovered`) and a virtual-time simulator
//! decide it the same way.
//!
//! The counters say where clients are only in sums: an attempt is counted when it starts and
//! ends in exactly one of opened, a connect error or a handshake status, so the attempts in
//! progress are the difference; a client's first attempt is not a retry, so the clients that
//! have arrived are attempts minus retries. A client between the close of its connection and
//! the start of its backoff is in none of the gauges; it shows as the sum of connected and
//! given-up clients falling short of the clients, which is why that sum must equal them.

use std::time::Duration;

use super::Counters;

/// How long the settled condition must hold, tick after tick, before the run ends on it: a
/// client whose connection was just cut may not have seen the close yet.
pub const HOLD: Duration = Duration::from_millis(200);

/// Where the clients of a run are, as its counters tell it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Clients that have made their first attempt.
    pub arrived: u64,
    /// Attempts started and not yet ended (opened, failed, or answered with a status).
    pub attempting: u64,
    /// Open connections.
    pub connected: u64,
    /// Clients waiting out a backoff delay.
    pub in_backoff: u64,
    /// Clients that stopped reconnecting.
    pub gave_up: u64,
}

impl Census {
    pub fn of(c: &Counters) -> Census {
        let ended = c.opened + c.failed_attempts();
        Census {
            arrived: c.attempts.saturating_sub(c.retries),
            attempting: c.attempts.saturating_sub(ended),
            connected: c.connected(),
            in_backoff: c.in_backoff(),
            gave_up: c.gave_up,
        }
    }

    /// Every one of `clients` has arrived and is connected or has given up.
    pub fn settled(&self, clients: u64) -> bool {
        self.arrived == clients
            && self.attempting == 0
            && self.in_backoff == 0
            && self.connected + self.gave_up == clients
    }
}

/// Whether every one of `clients` has arrived and is connected or has given up, from the
/// run's (or a group's) cumulative counters. Clients mid-attempt, in backoff, or between a
/// close and their backoff are not settled.
pub fn settled(totals: &Counters, clients: u64) -> bool {
    Census::of(totals).settled(clients)
}

/// Watches a run tick by tick and says when it settled: the first of an unbroken series of
/// settled ticks spanning [`HOLD`] (or the hold given), counted only once the run is `ready`
/// (its timeline's last action has fired).
#[derive(Clone, Debug)]
pub struct Settling {
    clients: u64,
    hold: Duration,
    since: Option<Duration>,
}

impl Settling {
    pub fn new(clients: u64) -> Settling {
        Settling::with_hold(clients, HOLD)
    }

    pub fn with_hold(clients: u64, hold: Duration) -> Settling {
        Settling {
            clients,
            hold,
            since: None,
        }
    }

    /// One tick, `at` into the run, with the run's counters so far. Returns the time the run
    /// settled — the first tick of the series that held — once it has held for the hold.
    pub fn observe(&mut self, at: Duration, ready: bool, totals: &Counters) -> Option<Duration> {
        if !ready || !settled(totals, self.clients) {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(at);
        (at.saturating_sub(since) >= self.hold).then_some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ConnectError;

    /// `n` clients that each made one attempt and connected.
    fn connected(n: u64) -> Counters {
        Counters {
            attempts: n,
            opened: n,
            ..Counters::default()
        }
    }

    /// `k` of them lose their connection and enter backoff.
    fn lose(c: &mut Counters, k: u64) {
        c.closed += k;
        c.close_codes.insert(1006, k);
        c.backoff_started += k;
    }

    /// `k` of them wake from backoff and start a retry.
    fn retry(c: &mut Counters, k: u64) {
        c.backoff_ended += k;
        c.attempts += k;
        c.retries += k;
    }

    #[test]
    fn every_client_connected_is_settled_and_not_before_all_arrive() {
        assert!(settled(&connected(10), 10));
        assert!(!settled(&connected(9), 10), "one has not arrived");
        assert!(
            settled(&Counters::default(), 0),
            "no clients, nothing to wait for"
        );
        assert!(!settled(&Counters::default(), 1));
    }

    #[test]
    fn clients_in_backoff_attempting_or_between_are_not_settled() {
        let mut c = connected(10);
        lose(&mut c, 4);
        assert_eq!(
            Census::of(&c),
            Census {
                arrived: 10,
                attempting: 0,
                connected: 6,
                in_backoff: 4,
                gave_up: 0,
            }
        );
        assert!(!settled(&c, 10), "in backoff");

        // Mid-attempt: neither connected nor in backoff, and the attempt has not ended.
        retry(&mut c, 4);
        assert_eq!(Census::of(&c).attempting, 4);
        assert_eq!(Census::of(&c).in_backoff, 0);
        assert!(!settled(&c, 10), "attempting");
        assert_eq!(Census::of(&c).arrived, 10, "retries are not arrivals");

        // Three get back; one attempt is still out.
        c.opened += 3;
        assert_eq!(Census::of(&c).attempting, 1);
        assert!(!settled(&c, 10));
        c.opened += 1;
        assert!(settled(&c, 10), "all back");

        // Between a close and its backoff: in no gauge, but the sum falls short.
        c.closed += 1;
        c.close_codes.insert(1006, 5);
        assert_eq!(Census::of(&c).in_backoff + Census::of(&c).attempting, 0);
        assert!(!settled(&c, 10), "between the close and the backoff");
    }

    #[test]
    fn a_first_attempt_in_progress_is_not_settled() {
        // Ten arrived, nine connected, the tenth's first attempt has not ended.
        let mut c = connected(9);
        c.attempts += 1;
        assert_eq!(Census::of(&c).arrived, 10);
        assert_eq!(Census::of(&c).attempting, 1);
        assert!(!settled(&c, 10));
    }

    #[test]
    fn giving_up_settles_a_client_and_failed_attempts_end_attempts() {
        let mut c = connected(10);
        lose(&mut c, 2);
        retry(&mut c, 2);
        // Both refused and answered 503: attempts ended, the clients give up.
        c.connect_errors[ConnectError::Refused as usize] += 1;
        c.handshake_status.insert(503, 1);
        assert_eq!(Census::of(&c).attempting, 0);
        assert!(!settled(&c, 10), "failed, not yet given up");
        c.gave_up += 2;
        assert!(settled(&c, 10));

        // Nobody ever connected, all gave up: settled too.
        let mut none = Counters {
            attempts: 5,
            gave_up: 5,
            ..Counters::default()
        };
        none.connect_errors[ConnectError::Refused as usize] = 5;
        assert!(settled(&none, 5));
    }

    #[test]
    fn settling_waits_for_ready_and_an_unbroken_hold() {
        let ms = Duration::from_millis;
        let all = connected(3);
        let mut lost = connected(3);
        lose(&mut lost, 1);
        let mut s = Settling::new(3);
        assert_eq!(s.observe(ms(100), false, &all), None, "timeline not done");
        assert_eq!(s.observe(ms(200), true, &all), None);
        assert_eq!(s.observe(ms(300), true, &all), None);
        // Broken: starts again.
        assert_eq!(s.observe(ms(400), true, &lost), None);
        assert_eq!(s.observe(ms(500), true, &all), None);
        assert_eq!(s.observe(ms(600), true, &all), None);
        assert_eq!(s.observe(ms(700), true, &all), Some(ms(500)));

        let mut not_ready = Settling::new(3);
        for t in 1..10 {
            assert_eq!(not_ready.observe(ms(t * 100), false, &all), None);
        }
        // A zero hold settles on the first settled tick.
        assert_eq!(
            Settling::with_hold(3, Duration::ZERO).observe(ms(100), true, &all),
            Some(ms(100))
        );
    }
}
