//! The sequenced stream: one publisher numbers messages at a fixed rate and fans them out to
//! every subscribed connection, keeping recent ones so a client that reconnects can resume.
//!
//! The publisher appends to the history and broadcasts under the history lock; a resuming
//! connection subscribes first, then reads the history under the same lock. So every message is
//! either in what it replays or in what it receives live (or both, and then skipped by sequence
//! number): resume never opens a gap of its own making.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::ServerStats;

/// Every stream message starts with this tag and a 16-hex-digit sequence number.
pub const TAG: &str = "wsstorm-seq ";

pub fn format_message(seq: u64, bytes: usize) -> String {
    let mut s = format!("{TAG}{seq:016x} ");
    s.extend(std::iter::repeat_n('.', bytes.saturating_sub(s.len())));
    s
}

/// The sequence number of a stream message, if `data` is one.
pub fn parse_seq(data: &[u8]) -> Option<u64> {
    let rest = data.strip_prefix(TAG.as_bytes())?;
    let hex = std::str::from_utf8(rest.get(..16)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

#[derive(Clone)]
pub struct StreamItem {
    pub seq: u64,
    pub msg: Message,
}

pub struct Stream {
    tx: broadcast::Sender<StreamItem>,
    history: Mutex<VecDeque<StreamItem>>,
    keep: usize,
}

impl Stream {
    pub fn new(keep: usize) -> Arc<Stream> {
        let (tx, _) = broadcast::channel(4096);
        Arc::new(Stream {
            tx,
            history: Mutex::new(VecDeque::with_capacity(keep.min(100_000))),
            keep,
        })
    }

    /// Subscribe; with `resume_after = Some(n)`, also return the kept messages after `n`.
    pub fn subscribe(
        &self,
        resume_after: Option<u64>,
    ) -> (broadcast::Receiver<StreamItem>, Vec<StreamItem>) {
        let rx = self.tx.subscribe();
        let replay = match resume_after {
            None => Vec::new(),
            Some(n) => {
                let h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
                h.iter().filter(|i| i.seq > n).cloned().collect()
            }
        };
        (rx, replay)
    }

    /// Publish at `rate` per second until `shutdown`.
    pub async fn publish(
        self: Arc<Self>,
        rate: f64,
        bytes: usize,
        stats: Arc<ServerStats>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            seq += 1;
            let item = StreamItem {
                seq,
                msg: Message::text(format_message(seq, bytes)),
            };
            let mut h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            if h.len() >= self.keep {
                h.pop_front();
            }
            h.push_back(item.clone());
            // No subscribers is not an error: the stream goes on.
            let _ = self.tx.send(item);
            drop(h);
            stats.stream_published.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_format() {
        let m = format_message(0x2a, 64);
        assert_eq!(m.len(), 64);
        assert_eq!(parse_seq(m.as_bytes()), Some(42));
        assert_eq!(parse_seq(b"wsstorm-seq zz"), None);
        assert_eq!(parse_seq(b"hello"), None);
    }

    #[tokio::test]
    async fn resume_replays_kept_messages() {
        let s = Stream::new(3);
        for seq in 1..=5 {
            let item = StreamItem {
                seq,
                msg: Message::text(format_message(seq, 40)),
            };
            let mut h = s.history.lock().unwrap();
            if h.len() >= s.keep {
                h.pop_front();
            }
            h.push_back(item);
        }
        let (_rx, replay) = s.subscribe(Some(3));
        assert_eq!(replay.iter().map(|i| i.seq).collect::<Vec<_>>(), [4, 5]);
        let (_rx, replay) = s.subscribe(Some(0));
        assert_eq!(replay.len(), 3, "only the kept ones");
        let (_rx, replay) = s.subscribe(None);
        assert!(replay.is_empty());
    }
}
