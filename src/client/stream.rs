//! Counting a sequenced stream as one client sees it, across reconnects: gaps are `lost`
//! (provisionally: a late arrival fills its gap and counts as `out_of_order` instead), repeats
//! are `duplicated`. The client also keeps its resume position, saved every message or, for an
//! at-least-once client, every `checkpoint_every` messages — resuming from an older checkpoint
//! replays what came after it, which is where duplicates come from.

/// Sequence numbers remembered for duplicate detection.
const WINDOW: u64 = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamTracker {
    started: bool,
    max_seen: u64,
    /// Bit `seq % WINDOW` set when `seq` (within WINDOW of max_seen) was received.
    window: [u64; (WINDOW / 64) as usize],
    missing: u64,
    checkpoint: u64,
    since_checkpoint: u32,
    every: u32,
    /// When the open connection last delivered a stream message (or opened); `None` once
    /// it has been counted as stalled, until the next message.
    quiet_since: Option<tokio::time::Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    Duplicate,
    OutOfOrder,
}

impl StreamTracker {
    pub fn new(checkpoint_every: u32) -> StreamTracker {
        StreamTracker {
            started: false,
            max_seen: 0,
            window: [0; (WINDOW / 64) as usize],
            missing: 0,
            checkpoint: 0,
            since_checkpoint: 0,
            every: checkpoint_every.max(1),
            quiet_since: None,
        }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn seen(&self, seq: u64) -> bool {
        let (w, b) = Self::bit(seq);
        self.window[w] & b != 0
    }

    fn mark(&mut self, seq: u64) {
        let (w, b) = Self::bit(seq);
        self.window[w] |= b;
    }

    fn clear(&mut self, seq: u64) {
        let (w, b) = Self::bit(seq);
        self.window[w] &= !b;
    }

    pub fn on_seq(&mut self, seq: u64) -> Arrival {
        let arrival = if !self.started {
            // The first message ever: the stream starts here for this client.
            self.started = true;
            self.max_seen = seq;
            self.mark(seq);
            Arrival::InOrder
        } else if seq > self.max_seen {
            let advance = seq - self.max_seen;
            self.missing += advance - 1;
            if advance >= WINDOW {
                self.window = [0; (WINDOW / 64) as usize];
            } else {
                for s in self.max_seen + 1..=seq {
                    self.clear(s);
                }
            }
            self.max_seen = seq;
            self.mark(seq);
            Arrival::InOrder
        } else if self.max_seen - seq >= WINDOW || self.seen(seq) {
            // Older than the window: it was either delivered or counted lost long ago; a server
            // sending it again is sending a duplicate either way.
            Arrival::Duplicate
        } else {
            self.mark(seq);
            self.missing = self.missing.saturating_sub(1);
            Arrival::OutOfOrder
        };
        if arrival != Arrival::Duplicate {
            self.since_checkpoint += 1;
            if self.since_checkpoint >= self.every {
                self.checkpoint = self.max_seen;
                self.since_checkpoint = 0;
            }
        }
        arrival
    }

    /// The stream delivered (or its connection opened) at `now`: the stall clock restarts.
    pub fn heard(&mut self, now: tokio::time::Instant) {
        self.quiet_since = Some(now);
    }

    /// The client starts reading again at `now` (a throttle's read window opened): silence
    /// before it was not heard, so the stall clock restarts; a stall already counted stays
    /// counted until the stream delivers.
    pub fn listening_again(&mut self, now: tokio::time::Instant) {
        if let Some(q) = self.quiet_since.as_mut() {
            *q = (*q).max(now);
        }
    }

    /// When the connection counts as stalled if nothing arrives before.
    pub fn stalls_at(&self, after: Option<std::time::Duration>) -> Option<tokio::time::Instant> {
        Some(self.quiet_since? + after?)
    }

    /// Counted as stalled: no second count until the stream delivers again.
    pub fn stalled(&mut self) {
        self.quiet_since = None;
    }

    /// Where to resume after a reconnect: the last saved position.
    pub fn resume_from(&self) -> Option<u64> {
        self.started.then_some(self.checkpoint)
    }

    /// Messages never received (so far).
    pub fn lost(&self) -> u64 {
        self.missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut StreamTracker, seqs: impl IntoIterator<Item = u64>) -> Vec<Arrival> {
        seqs.into_iter().map(|s| t.on_seq(s)).collect()
    }

    #[test]
    fn in_order_stream_has_no_anomalies() {
        let mut t = StreamTracker::new(1);
        let a = feed(&mut t, 100..200);
        assert!(a.iter().all(|a| *a == Arrival::InOrder));
        assert_eq!(t.lost(), 0);
        assert_eq!(t.resume_from(), Some(199));
    }

    #[test]
    fn gaps_duplicates_and_late_arrivals() {
        let mut t = StreamTracker::new(1);
        feed(&mut t, [1, 2, 3, 7]);
        assert_eq!(t.lost(), 3);
        assert_eq!(t.on_seq(7), Arrival::Duplicate);
        assert_eq!(t.on_seq(2), Arrival::Duplicate);
        assert_eq!(t.on_seq(5), Arrival::OutOfOrder);
        assert_eq!(t.lost(), 2);
        assert_eq!(t.on_seq(5), Arrival::Duplicate);
        // A jump past the whole window forgets old ones but still counts the gap.
        t.on_seq(7 + 5000);
        assert_eq!(t.lost(), 2 + 4999);
        assert_eq!(t.on_seq(8), Arrival::Duplicate, "too old to tell: a repeat");
    }

    #[test]
    fn checkpoints_lag_behind_for_at_least_once_clients() {
        let mut t = StreamTracker::new(10);
        assert_eq!(t.resume_from(), None);
        feed(&mut t, 1..=25);
        assert_eq!(t.resume_from(), Some(20));
        // Resuming from 20 replays 21..=25: five duplicates, then new ones.
        let a = feed(&mut t, 21..=27);
        assert_eq!(a.iter().filter(|a| **a == Arrival::Duplicate).count(), 5);
        assert_eq!(t.lost(), 0);
    }
}
