//! Bounded single-producer single-consumer ring: the only channel between two shards.
//!
//! It owns the slots and the two indices, and must never block, allocate after
//! construction, or grow: a full ring is reported to the producer, which decides what to
//! drop. Indices only increase (wrapping `usize`), the slot is `index & mask`. The producer
//! publishes a slot with a release store of `tail`; the consumer frees it with a release
//! store of `head`. Each side caches the other's index so the common case touches no
//! shared cache line.

use std::mem::MaybeUninit;

use crate::sync::{Arc, AtomicUsize, Ordering, UnsafeCell};

/// Keeps the producer's and consumer's indices on separate cache lines (128 bytes covers
/// the adjacent-line prefetcher on x86 and the 128-byte lines of Apple/ARM cores).
#[repr(align(128))]
struct Padded<T>(T);

struct Shared<T> {
    head: Padded<AtomicUsize>,
    tail: Padded<AtomicUsize>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

// SAFETY: a slot is written only by the single producer before it publishes `tail`, and
// read only by the single consumer after it observes that `tail`; `head` hands the slot
// back the same way. `T: Send` is all that is needed to move values across.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: see above; the two handles never access the same slot concurrently.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let head = self.head.0.load(Ordering::Acquire);
        let tail = self.tail.0.load(Ordering::Acquire);
        let mut i = head;
        while i != tail {
            // SAFETY: slots in [head, tail) were written and not yet read.
            self.slots[i & self.mask].with_mut(|p| unsafe { (*p).assume_init_drop() });
            i = i.wrapping_add(1);
        }
    }
}

/// The sending half; owned by exactly one shard.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    tail: usize,
    cached_head: usize,
}

/// The receiving half; owned by exactly one shard.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: usize,
    cached_tail: usize,
}

/// Smallest ring `channel` builds: the loom model checks rings of this size, where
/// wrap-around happens after two pushes; a smaller one is not what it proved.
const MIN_CAPACITY: usize = 2;
// Slots are addressed as `index & mask`, which needs a power-of-two slot count.
const _: () = assert!(MIN_CAPACITY.is_power_of_two());

/// Creates a ring holding at least `capacity` items (rounded up to a power of two, at
/// least 2).
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    // `next_power_of_two` would wrap to 0 in release past `usize::MAX / 2`, and a mask
    // built from that would address slots that do not exist.
    let cap = capacity
        .max(MIN_CAPACITY)
        .checked_next_power_of_two()
        .filter(|c| c.is_power_of_two());
    let Some(cap) = cap else {
        panic!("ring capacity {capacity} has no power of two that fits a usize");
    };
    let slots = (0..cap)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect::<Vec<_>>()
        .into_boxed_slice();
    let shared = Arc::new(Shared {
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
        slots,
        mask: cap - 1,
    });
    (
        Producer {
            shared: shared.clone(),
            tail: 0,
            cached_head: 0,
        },
        Consumer {
            shared,
            head: 0,
            cached_tail: 0,
        },
    )
}

impl<T> Producer<T> {
    /// Number of slots in the ring.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Free slots right now (re-reads the consumer's index only if the cached view says
    /// fewer than `want` are free).
    pub fn free(&mut self, want: usize) -> usize {
        let cap = self.capacity();
        let mut free = cap - self.tail.wrapping_sub(self.cached_head);
        if free < want {
            self.cached_head = self.shared.head.0.load(Ordering::Acquire);
            free = cap - self.tail.wrapping_sub(self.cached_head);
        }
        free
    }

    /// Appends `value`, or gives it back if the ring is full. Never blocks.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if self.free(1) == 0 {
            return Err(value);
        }
        let slot = &self.shared.slots[self.tail & self.shared.mask];
        // SAFETY: the slot is outside [head, tail), so the consumer does not read it,
        // and we are the only producer.
        slot.with_mut(|p| unsafe { (*p).write(value) });
        self.tail = self.tail.wrapping_add(1);
        self.shared.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }
}

impl<T> Consumer<T> {
    /// Takes the oldest item, if any. Never blocks.
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.cached_tail {
            self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
            if self.head == self.cached_tail {
                return None;
            }
        }
        let slot = &self.shared.slots[self.head & self.shared.mask];
        // SAFETY: the slot is inside [head, tail) as published by the producer's release
        // store we acquired, and we are the only consumer.
        let value = slot.with_mut(|p| unsafe { (*p).assume_init_read() });
        self.head = self.head.wrapping_add(1);
        self.shared.head.0.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Items published and not yet taken (re-reads the producer's index): for metrics.
    pub fn len(&mut self) -> usize {
        self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.head)
    }

    /// True when nothing is published (re-reads the producer's index).
    pub fn is_empty(&mut self) -> bool {
        if self.head != self.cached_tail {
            return false;
        }
        self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
        self.head == self.cached_tail
    }
}
