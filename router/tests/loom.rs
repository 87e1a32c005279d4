//! Model checks of the ring and of the doorbell parking protocol (no lost wake-ups).
//! Run with (preemption bound 3 is loom's usual setting; unbounded did not finish in
//! 7 minutes on the 2-core build box, bound 3 takes ~5 s):
//! `LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p router --release --test loom`
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use router::park::ParkState;
use router::ring;

/// The consumer's loop as the shard runs it: wake, drain, then park only if `try_park`
/// allows; a parked consumer sleeps until its doorbell (`unpark`) rings. If a wake-up were
/// lost, loom reports the consumer parked forever as a deadlock.
fn consume(
    rx: &mut [ring::Consumer<u32>],
    park: &ParkState,
    parks: &AtomicUsize,
    expected: usize,
) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        park.wake();
        for r in rx.iter_mut() {
            while let Some(v) = r.pop() {
                got.push(v);
            }
        }
        if got.len() == expected {
            return got;
        }
        if park.try_park() {
            parks.fetch_add(1, Ordering::Relaxed);
            thread::park();
        }
    }
}

#[test]
fn one_producer_never_loses_a_wakeup() {
    loom::model(|| {
        let park = Arc::new(ParkState::new());
        let rings = Arc::new(AtomicUsize::new(0));
        let parks = Arc::new(AtomicUsize::new(0));
        let (mut tx, rx) = ring::channel::<u32>(2);
        let consumer = {
            let park = park.clone();
            let parks = parks.clone();
            thread::spawn(move || {
                let mut rx = [rx];
                consume(&mut rx, &park, &parks, 2)
            })
        };
        let waker = consumer.thread().clone();
        // Two loop iterations of the producer, one push and one notify each.
        for v in 0..2 {
            assert!(tx.push(v).is_ok());
            if park.notify() {
                rings.fetch_add(1, Ordering::Relaxed);
                waker.unpark();
            }
        }
        let got = consumer.join().unwrap();
        assert_eq!(got, vec![0, 1]);
        assert!(rings.load(Ordering::Relaxed) <= parks.load(Ordering::Relaxed));
    });
}

#[test]
fn two_producers_never_lose_a_wakeup_and_ring_once_per_park() {
    loom::model(|| {
        let park = Arc::new(ParkState::new());
        let rings = Arc::new(AtomicUsize::new(0));
        let parks = Arc::new(AtomicUsize::new(0));
        let (tx_a, rx_a) = ring::channel::<u32>(2);
        let (tx_b, rx_b) = ring::channel::<u32>(2);
        let consumer = {
            let park = park.clone();
            let parks = parks.clone();
            thread::spawn(move || {
                let mut rx = [rx_a, rx_b];
                consume(&mut rx, &park, &parks, 2)
            })
        };
        let waker = consumer.thread().clone();
        let producers: Vec<_> = [(tx_a, 10u32), (tx_b, 20u32)]
            .into_iter()
            .map(|(mut tx, v)| {
                let park = park.clone();
                let rings = rings.clone();
                let waker = waker.clone();
                thread::spawn(move || {
                    assert!(tx.push(v).is_ok());
                    if park.notify() {
                        rings.fetch_add(1, Ordering::Relaxed);
                        waker.unpark();
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut got = consumer.join().unwrap();
        got.sort();
        assert_eq!(got, vec![10, 20]);
        // Doorbells are rung only for a park, and never twice for the same park.
        assert!(rings.load(Ordering::Relaxed) <= parks.load(Ordering::Relaxed));
    });
}

#[test]
fn ring_keeps_order_across_wraparound_and_full() {
    loom::model(|| {
        let (mut tx, mut rx) = ring::channel::<u32>(2);
        let producer = thread::spawn(move || {
            let mut next = 0;
            while next < 3 {
                match tx.push(next) {
                    Ok(()) => next += 1,
                    Err(_) => thread::yield_now(),
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            match rx.pop() {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, vec![0, 1, 2]);
    });
}

#[test]
fn ring_drops_unread_items_on_drop() {
    loom::model(|| {
        let value = Arc::new(());
        let (mut tx, rx) = ring::channel::<Arc<()>>(2);
        assert!(tx.push(value.clone()).is_ok());
        drop(tx);
        drop(rx);
        assert_eq!(Arc::strong_count(&value), 1);
    });
}
