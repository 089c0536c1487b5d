//! The model's event queue: a calendar of 1 ms slots with a small heap for the slot under
//! way. A binary heap of ten million events misses the cache on most of its ~23 levels per
//! operation; here an event is pushed onto its slot's vector in O(1), and only the slot being
//! processed (a few thousand events at a storm's peak) is ever a heap. Events further ahead
//! than the calendar reaches wait in an overflow heap until it does.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// (time µs, client, generation): earliest first, ties by client so the order is the same on
/// every run.
pub type Event = (u64, u32, u32);

const SLOT_US: u64 = 1000;
/// 2^18 slots of 1 ms: 262 s ahead, more than any backoff cap or Retry-After needs in one
/// step (later events go to the overflow).
const SLOTS: usize = 1 << 18;

pub struct Calendar {
    slots: Vec<Vec<Event>>,
    /// The slot being processed; every event of an earlier slot has been popped.
    current: u64,
    heap: BinaryHeap<Reverse<Event>>,
    /// Events in `slots` (not counting `heap` or `overflow`).
    in_slots: usize,
    overflow: BinaryHeap<Reverse<Event>>,
}

impl Calendar {
    pub fn new() -> Calendar {
        Calendar {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            current: 0,
            heap: BinaryHeap::new(),
            in_slots: 0,
            overflow: BinaryHeap::new(),
        }
    }

    pub fn push(&mut self, e: Event) {
        let slot = e.0 / SLOT_US;
        if slot <= self.current {
            self.heap.push(Reverse(e));
        } else if slot < self.current + SLOTS as u64 {
            self.slots[slot as usize % SLOTS].push(e);
            self.in_slots += 1;
        } else {
            self.overflow.push(Reverse(e));
        }
    }

    /// The earliest event's time, moving the calendar on to its slot.
    pub fn peek(&mut self) -> Option<u64> {
        while self.heap.is_empty() {
            if self.in_slots == 0 {
                // Nothing within reach: jump to the overflow's first slot.
                let Reverse((t, ..)) = *self.overflow.peek()?;
                self.current = self.current.max(t / SLOT_US);
                self.take_overflow();
                continue;
            }
            self.current += 1;
            self.take_overflow();
            let slot = &mut self.slots[self.current as usize % SLOTS];
            if !slot.is_empty() {
                self.in_slots -= slot.len();
                // Heapify the slot in place, and give the heap's old (empty) buffer back to
                // the slot: no allocation once the calendar has warmed up.
                let events = std::mem::take(slot);
                let old = std::mem::replace(
                    &mut self.heap,
                    BinaryHeap::from(events.into_iter().map(Reverse).collect::<Vec<_>>()),
                );
                let mut buffer = old.into_vec();
                buffer.clear();
                *slot = buffer.into_iter().map(|Reverse(e)| e).collect();
            }
        }
        self.heap.peek().map(|Reverse((t, ..))| *t)
    }

    pub fn pop(&mut self) -> Option<Event> {
        self.peek()?;
        self.heap.pop().map(|Reverse(e)| e)
    }

    /// Overflow events now within the calendar's reach go to their slots.
    fn take_overflow(&mut self) {
        while let Some(&Reverse(e)) = self.overflow.peek() {
            if e.0 / SLOT_US >= self.current + SLOTS as u64 {
                break;
            }
            self.overflow.pop();
            self.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn pops_in_time_order_across_slots_the_heap_and_the_overflow() {
        let mut rng = rand::rngs::Xoshiro128PlusPlus::seed_from_u64(1);
        let mut q = Calendar::new();
        let mut all = Vec::new();
        for c in 0..20_000u32 {
            // Within a slot, across slots, and far beyond the calendar's reach.
            let t = match c % 3 {
                0 => rng.random_range(0..5_000),
                1 => rng.random_range(0..10_000_000),
                _ => rng.random_range(0..2_000_000_000),
            };
            q.push((t, c, 0));
            all.push((t, c, 0));
        }
        all.sort();
        let mut popped = Vec::new();
        // Interleave pushes at or after the time popped, as the model does.
        let mut extra = 0u32;
        while let Some(e) = q.pop() {
            popped.push(e);
            if extra < 5_000 {
                let later = (e.0 + u64::from(extra % 7) * 50, 1_000_000 + extra, 0);
                q.push(later);
                all.push(later);
                extra += 1;
            }
        }
        all.sort();
        assert_eq!(popped, all);
    }
}
