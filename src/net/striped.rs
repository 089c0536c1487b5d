//! Counters that connection tasks bump for every message (echoes, stream sends, proxied bytes),
//! kept so that no two threads write the same cache line: each thread adds into a padded set of
//! its own, and a read sums the sets. The server's and the proxy's per-message counters use it.
//!
//! Why stripes per thread rather than counts kept in each connection task and folded into the
//! shared counters when it ends and on a periodic tick: a read here is exact the moment it is
//! made. The run reads the server's counters as soon as its clients have closed, while the
//! server's side of those connections may still be finishing; a count folded at the end of the
//! connection could miss that read, and the tests compare echoes to replies exactly. A tick in
//! every connection would also wake each idle connection once a second. Why per thread rather
//! than per connection id: with many connections on few cores, connections that share a stripe
//! run on different threads as often as not, so the line would still move between cores; a
//! thread's stripe is written by that thread alone (a task that moves to another thread simply
//! counts in that thread's set).
//!
//! What it buys, measured on a 2-core machine: two threads adding to one shared counter pay
//! ~34 ns per add, to stripes ~10 ns (one thread alone: ~7 ns), so at most ~25 ns per message,
//! and only when connection tasks run on more than one thread. Against a few µs of CPU per echo
//! round trip that is under 1%, within the echo bench's run-to-run noise (which it stayed in;
//! so did counts kept in the task). The stripes are kept because they cost at most a few ns
//! more than an unshared counter, and, unlike folding, need no tick and cannot be read short.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Sets per counter group. Threads beyond this many share sets: the counts stay exact, the
/// lines are merely shared again. A run's server and proxy use a few threads.
const STRIPES: usize = 16;

/// 128 bytes: x86 fetches cache lines in adjacent pairs, so 64 would still let two threads'
/// sets disturb each other.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// One `T` (a struct of atomics) per stripe.
#[derive(Debug)]
pub struct Striped<T> {
    stripes: [Padded<T>; STRIPES],
}

impl<T: Default> Default for Striped<T> {
    fn default() -> Self {
        Striped {
            stripes: std::array::from_fn(|_| Padded::default()),
        }
    }
}

impl<T> Striped<T> {
    /// The calling thread's set. Look it up at each bump, not once per task: a task can move
    /// to another worker thread at any await.
    pub fn local(&self) -> &T {
        &self.stripes[stripe()].0
    }

    /// Every set, for a read to sum.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|p| &p.0)
    }
}

/// The calling thread's stripe, handed out in turn the first time a thread asks.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(i);
        }
        i
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn threads_count_in_sets_of_their_own_and_reads_sum_them() {
        let c: Striped<AtomicU64> = Striped::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        c.local().fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        let sets: Vec<u64> = c.all().map(|a| a.load(Ordering::Relaxed)).collect();
        assert_eq!(sets.iter().sum::<u64>(), 40_000);
        // Stripes are handed out in turn: the four threads did not all count in one set (other
        // tests' threads take stripes too, so not necessarily four).
        assert!(sets.iter().filter(|&&n| n > 0).count() >= 2, "{sets:?}");
        assert_eq!(std::mem::align_of::<Padded<AtomicU64>>(), 128);
    }
}
