//! Who a connection belongs to, as the client says in its identity header
//! (`X-Wsstorm-Client: <run>-<client>-<attempt>`), and the server's ledger of identities: how
//! many open connections each holds (a second one while the first is open is a duplicate
//! connection) and, with `stream.sessions: keep`, the subscriptions its session keeps across
//! reconnects.
//!
//! The ledger is touched when a connection opens, subscribes and closes, never per message,
//! and is sharded by identity so connections of different clients rarely meet on a lock.
//!
//! An identity is held as a 64-bit hash of the client it names ([`Key`]), not as the string:
//! a connection keeps 8 bytes and the ledger 24 per identity, where a boxed string cost both
//! an allocation. Two clients collide with odds of about n²/2⁶⁵ (one in 37 million for a
//! million identities), and the hash is keyed per ledger, so no header value is chosen to
//! collide.
//!
//! It stays bounded: a client that leaves (closes with 1000, a logout) takes its kept session
//! with it, and past [`MAX_KEPT`] identities the sessions idle longest (no connection open)
//! are forgotten, counted in `server.sessions_forgotten`. Identities with a connection open
//! are bounded by the open connections themselves.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

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

/// Identities the ledger holds at most before it forgets idle kept sessions (a few tens of
/// MB at worst): far more clients than one run holds, while a `wsstorm serve` taking run after
/// run, or a foreign header with a new value per connection, cannot grow it without end.
pub const MAX_KEPT: usize = 1 << 20;

/// The client an identity header names, as the ledger knows it ([`Ledger::key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key(u64);

#[derive(Default)]
struct Entry {
    /// Connections of this identity open now.
    open: u32,
    /// Subscriptions its kept session holds (`stream.sessions: keep` only).
    subscriptions: u32,
    /// Since when it had no connection open (or since it was made), in milliseconds of the
    /// ledger's clock ([`Ledger::now`]): the oldest go first.
    idle_since: u32,
}

/// One shard's identities.
type Entries = HashMap<Key, Entry>;

pub struct Ledger {
    shards: Box<[Mutex<Entries>]>,
    hasher: RandomState,
    /// Entries one shard holds before its idle ones are forgotten.
    shard_cap: usize,
    started: Instant,
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
        Self::with_cap(MAX_KEPT)
    }

    /// A ledger that holds about `cap` identities before it forgets idle kept sessions.
    pub fn with_cap(cap: usize) -> Ledger {
        Ledger {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            shard_cap: cap.div_ceil(SHARDS).max(1),
            started: Instant::now(),
        }
    }

    /// The key of the client a header value names ([`client_of`] it first).
    pub fn key(&self, client: &str) -> Key {
        Key(self.hasher.hash_one(client))
    }

    /// Milliseconds since the ledger was made: 49 days fit, and a server that runs longer
    /// only forgets in a less exact order.
    fn now(&self) -> u32 {
        self.started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32
    }

    fn shard(&self, client: Key) -> std::sync::MutexGuard<'_, Entries> {
        // The high bits: the map inside the shard hashes the key again for its own buckets.
        let i = (client.0 >> 58) as usize % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection of `client` opened: whether the client already held an open one, and
    /// how many idle kept sessions were forgotten to make room for it.
    pub fn open(&self, client: Key) -> (bool, u64) {
        let mut shard = self.shard(client);
        let forgotten = self.make_room(&mut shard, client);
        let e = self.entry(&mut shard, client);
        e.open += 1;
        (e.open > 1, forgotten)
    }

    fn entry<'a>(&self, shard: &'a mut Entries, client: Key) -> &'a mut Entry {
        shard.entry(client).or_insert_with(|| Entry {
            idle_since: self.now(),
            ..Entry::default()
        })
    }

    /// A connection of `client` closed; its entry goes once nothing is left to remember. A
    /// client that `left` (closed with 1000: a logout) ends its kept session too, so the next
    /// user of the same id starts without the last one's subscriptions.
    pub fn close(&self, client: Key, left: bool) {
        let mut shard = self.shard(client);
        if let Some(e) = shard.get_mut(&client) {
            e.open = e.open.saturating_sub(1);
            if left {
                e.subscriptions = 0;
            }
            if e.open == 0 {
                if e.subscriptions == 0 {
                    shard.remove(&client);
                } else {
                    e.idle_since = self.now();
                }
            }
        }
    }

    /// Before `client` gets an entry in a full shard: forget the older half of the shard's
    /// idle kept sessions (at least one), so the scan is paid once per many new entries.
    /// Returns how many went.
    fn make_room(&self, shard: &mut Entries, client: Key) -> u64 {
        if shard.len() < self.shard_cap || shard.contains_key(&client) {
            return 0;
        }
        let mut idle: Vec<u32> = shard
            .values()
            .filter(|e| e.open == 0)
            .map(|e| e.idle_since)
            .collect();
        if idle.is_empty() {
            return 0;
        }
        let mid = (idle.len() - 1) / 2;
        let (_, cutoff, _) = idle.select_nth_unstable(mid);
        let cutoff = *cutoff;
        let before = shard.len();
        shard.retain(|_, e| e.open > 0 || e.idle_since > cutoff);
        (before - shard.len()) as u64
    }

    /// With kept sessions: a connection of `client` opened, asking to subscribe (`asked`),
    /// perhaps resuming. Resuming is idempotent (the session's subscription is restored); a
    /// plain subscribe adds one more, as a server that keeps sessions must assume the client
    /// wants another; no request restores what the session has.
    pub fn subscribe(&self, client: Key, asked: bool, resume: bool) -> Subscribed {
        let mut shard = self.shard(client);
        self.make_room(&mut shard, client);
        let e = self.entry(&mut shard, client);
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
    pub fn open_of(&self, client: Key) -> u32 {
        self.shard(client).get(&client).map_or(0, |e| e.open)
    }

    /// Identities held (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        assert!(!l.open(l.key("r-1")).0);
        assert!(l.open(l.key("r-1")).0, "a second open connection");
        assert!(!l.open(l.key("r-2")).0);
        l.close(l.key("r-1"), false);
        l.close(l.key("r-1"), false);
        assert_eq!(l.open_of(l.key("r-1")), 0);
        assert!(!l.open(l.key("r-1")).0);

        let s = l.subscribe(l.key("r-1"), true, false);
        assert_eq!((s.copies, s.duplicate), (1, false));
        l.close(l.key("r-1"), false);
        // Kept: the next connection's plain subscribe doubles it.
        l.open(l.key("r-1"));
        let s = l.subscribe(l.key("r-1"), true, false);
        assert_eq!((s.copies, s.duplicate), (2, true));
        // Resuming adds nothing; not asking restores what is kept.
        assert_eq!(l.subscribe(l.key("r-1"), true, true).copies, 2);
        assert_eq!(l.subscribe(l.key("r-1"), false, false).copies, 2);
        assert_eq!(l.subscribe(l.key("r-3"), true, true).copies, 1);
        assert_eq!(l.subscribe(l.key("r-4"), false, false).copies, 0);
    }

    #[test]
    fn a_client_that_leaves_takes_its_kept_session() {
        let l = Ledger::new();
        l.open(l.key("r-1"));
        assert_eq!(l.subscribe(l.key("r-1"), true, false).copies, 1);
        l.close(l.key("r-1"), true);
        assert!(l.is_empty(), "a logout leaves nothing behind");
        // The next user of the id starts afresh: no duplicate, one copy.
        l.open(l.key("r-1"));
        let s = l.subscribe(l.key("r-1"), true, false);
        assert_eq!((s.copies, s.duplicate), (1, false));
        // A connection that breaks (no 1000) keeps the session.
        l.close(l.key("r-1"), false);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn the_ledger_forgets_the_longest_idle_sessions_past_its_cap() {
        let cap = 4 * SHARDS;
        let l = Ledger::with_cap(cap);
        let mut forgotten = 0;
        // Ten times the cap of one-off ids (a per-request header), each subscribed and gone.
        for i in 0..10 * cap {
            let id = format!("req{i}");
            forgotten += l.open(l.key(&id)).1;
            l.subscribe(l.key(&id), true, false);
            l.close(l.key(&id), false);
        }
        assert!(l.len() <= cap + SHARDS, "{} held, cap {cap}", l.len());
        assert_eq!(
            forgotten as usize + l.len(),
            10 * cap,
            "every id held or forgotten"
        );
        // Connections open now are never forgotten.
        let l = Ledger::with_cap(SHARDS);
        for i in 0..4 * SHARDS {
            l.open(l.key(&format!("open{i}")));
        }
        assert_eq!(l.len(), 4 * SHARDS);
    }
}
