//! Who a connection belongs to, as the client says in its identity header
//! (`X-Wsstorm-Client: <run>-<client>-<attempt>`), and the server's ledger of identities: how
//! many open connections each holds (a second one while the first is open is a duplicate
//! connection) and, with `stream.sessions: keep`, the subscriptions its session keeps across
//! reconnects.
//!
//! The ledger is touched when a connection opens, subscribes and closes, never per message,
//! and is sharded by identity so connections of different clients rarely meet on a lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};

/// The header wsstorm's clients send unless their group says otherwise.
pub const DEFAULT_HEADER: &str = "x-wsstorm-client";

pub fn default_headers() -> Vec<String> {
    vec![DEFAULT_HEADER.into()]
}

/// The client a header value names: `<run>-<client>` of wsstorm's `<run>-<client>-<attempt>`,
/// or the whole value when it has another form (another tool's request id).
pub fn client_of(value: &str) -> &str {
    match value.rsplit_once('-') {
        Some((client, attempt))
            if client.contains('-') && attempt.bytes().all(|b| b.is_ascii_digit()) =>
        {
            client
        }
        _ => value,
    }
}

const SHARDS: usize = 64;

#[derive(Default)]
struct Entry {
    /// Connections of this identity open now.
    open: u32,
    /// Subscriptions its kept session holds (`stream.sessions: keep` only).
    subscriptions: u32,
}

/// One shard's client ids.
type Entries = HashMap<Box<str>, Entry>;

pub struct Ledger {
    shards: Box<[Mutex<Entries>]>,
    hasher: RandomState,
}

/// What a connection's subscribe request made of its kept session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscribed {
    /// How many times each stream message goes to this connection (0: not subscribed).
    pub copies: u32,
    /// The request added a subscription to a session that already had one.
    pub duplicate: bool,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, client: &str) -> std::sync::MutexGuard<'_, Entries> {
        let i = self.hasher.hash_one(client) as usize % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection of `client` opened; true if the client already held an open one.
    pub fn open(&self, client: &str) -> bool {
        let mut shard = self.shard(client);
        let e = shard.entry(client.into()).or_default();
        e.open += 1;
        e.open > 1
    }

    /// A connection of `client` closed; its entry goes once nothing is left to remember.
    pub fn close(&self, client: &str) {
        let mut shard = self.shard(client);
        if let Some(e) = shard.get_mut(client) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 && e.subscriptions == 0 {
                shard.remove(client);
            }
        }
    }

    /// With kept sessions: a connection of `client` opened, asking to subscribe (`asked`),
    /// perhaps resuming. Resuming is idempotent (the session's subscription is restored); a
    /// plain subscribe adds one more, as a server that keeps sessions must assume the client
    /// wants another; no request restores what the session has.
    pub fn subscribe(&self, client: &str, asked: bool, resume: bool) -> Subscribed {
        let mut shard = self.shard(client);
        let e = shard.entry(client.into()).or_default();
        let mut duplicate = false;
        match (asked, resume) {
            (true, true) => e.subscriptions = e.subscriptions.max(1),
            (true, false) => {
                duplicate = e.subscriptions > 0;
                e.subscriptions += 1;
            }
            (false, _) => {}
        }
        Subscribed {
            copies: e.subscriptions,
            duplicate,
        }
    }

    /// Open connections of `client` (for tests and diagnostics).
    pub fn open_of(&self, client: &str) -> u32 {
        self.shard(client).get(client).map_or(0, |e| e.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_name_the_client_not_the_attempt() {
        assert_eq!(client_of("1a2b3c4d-17-3"), "1a2b3c4d-17");
        assert_eq!(client_of("1a2b3c4d-17-12"), "1a2b3c4d-17");
        // Another tool's ids: the whole value.
        assert_eq!(client_of("req-abc"), "req-abc");
        assert_eq!(client_of("0f00"), "0f00");
        assert_eq!(client_of("a-b-c"), "a-b-c");
    }

    #[test]
    fn ledger_counts_duplicates_and_keeps_subscriptions() {
        let l = Ledger::new();
        assert!(!l.open("r-1"));
        assert!(l.open("r-1"), "a second open connection");
        assert!(!l.open("r-2"));
        l.close("r-1");
        l.close("r-1");
        assert_eq!(l.open_of("r-1"), 0);
        assert!(!l.open("r-1"));

        let s = l.subscribe("r-1", true, false);
        assert_eq!((s.copies, s.duplicate), (1, false));
        l.close("r-1");
        // Kept: the next connection's plain subscribe doubles it.
        l.open("r-1");
        let s = l.subscribe("r-1", true, false);
        assert_eq!((s.copies, s.duplicate), (2, true));
        // Resuming adds nothing; not asking restores what is kept.
        assert_eq!(l.subscribe("r-1", true, true).copies, 2);
        assert_eq!(l.subscribe("r-1", false, false).copies, 2);
        assert_eq!(l.subscribe("r-3", true, true).copies, 1);
        assert_eq!(l.subscribe("r-4", false, false).copies, 0);
    }
}
