//! ns per delivered frame: one publisher, K local subscribers that drain every group
//! (the `Bytes` clone handed out at `next_delivery` and its drop are inside the timing),
//! and the same through a second shard (stepped on one thread, so this is the CPU cost
//! of ring push + pop + local fan-out, not the cross-core cache-line transfer).
//! Command and figures: `router/benches/README.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group};
use router::{Config, Doorbell, Router, Shard, SubscriberId, TrackId, TrackProperties};

const FRAMES_PER_GROUP: u64 = 30;

struct NoBell;
impl Doorbell for NoBell {
    fn ring(&self) {}
}

struct Setup {
    shards: Vec<Shard>,
    track: TrackId,
    subs: Vec<SubscriberId>,
    sub_shard: usize,
    group: u64,
    payload: Bytes,
}

fn setup(shard_count: usize, subscribers: usize) -> Setup {
    let config = Config {
        max_subscribers: subscribers.max(16),
        ..Config::default()
    };
    let bells = (0..shard_count)
        .map(|_| Arc::new(NoBell) as Arc<dyn Doorbell>)
        .collect();
    let mut shards = Router::build(config, bells).unwrap();
    let now = Instant::now();
    let bc = shards[0].announce("bench").unwrap();
    let track = shards[0]
        .publish_track(bc, "video", TrackProperties::default())
        .unwrap();
    let sub_shard = shard_count - 1;
    for _ in 0..2 {
        for s in shards.iter_mut() {
            s.poll(now);
            s.flush();
        }
    }
    let subs = (0..subscribers)
        .map(|_| shards[sub_shard].subscribe("bench", "video").unwrap())
        .collect();
    for _ in 0..2 {
        for s in shards.iter_mut() {
            s.poll(now);
            s.flush();
        }
    }
    // A shared (refcounted) payload, as a session would hand over after reading a frame.
    let payload = Bytes::from(vec![0x5a; 1000]);
    let _ = payload.clone();
    Setup {
        shards,
        track,
        subs,
        sub_shard,
        group: 0,
        payload,
    }
}

/// CPU time of the calling thread: unlike wall time it does not count the time the
/// thread waited for a core, which on a shared machine dominates the figure.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_THREAD_CPUTIME_ID is always supported on
    // Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn bench_group(b: &mut criterion::Bencher<'_>, s: &mut Setup, now: Instant, cpu: bool) {
    if cpu {
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                std::hint::black_box(one_group(s, now));
            }
            thread_cpu_time() - start
        })
    } else {
        b.iter(|| one_group(s, now))
    }
}

/// Iterations per batch whose payload handles are made before the clock starts: small,
/// so that the 30 × this handles (32 bytes each, 30 KiB) do not evict the
/// router's state, yet the two clock reads per batch are amortised over 960 frames.
const OWNED_BATCH: u64 = 32;

/// Like `bench_group` on CPU time, but the publisher hands over payload handles it already
/// owns, as a session does with the `Bytes` it read: their creation (one refcount
/// increment each here) is left out of the timing, their release by the router is not.
fn bench_group_owned(b: &mut criterion::Bencher<'_>, s: &mut Setup, now: Instant) {
    b.iter_custom(|iters| {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let n = OWNED_BATCH.min(iters - done);
            let mut handles: Vec<Bytes> = (0..n * FRAMES_PER_GROUP)
                .map(|_| s.payload.clone())
                .collect();
            let start = thread_cpu_time();
            for _ in 0..n {
                let frames = handles.drain(handles.len() - FRAMES_PER_GROUP as usize..);
                std::hint::black_box(publish_and_drain(s, now, frames));
            }
            total += thread_cpu_time() - start;
            done += n;
        }
        total
    })
}

/// Publishes one group and lets every subscriber drain it; returns frames delivered.
fn one_group(s: &mut Setup, now: Instant) -> u64 {
    let payload = s.payload.clone();
    publish_and_drain(s, now, (0..FRAMES_PER_GROUP).map(move |_| payload.clone()))
}

fn publish_and_drain(s: &mut Setup, now: Instant, frames: impl Iterator<Item = Bytes>) -> u64 {
    let g = s.group;
    s.group += 1;
    let p = &mut s.shards[0];
    p.start_group(s.track, g).unwrap();
    for frame in frames {
        p.push_frame(s.track, g, g, frame).unwrap();
    }
    p.end_group(s.track, g).unwrap();
    p.flush();
    let consumer = &mut s.shards[s.sub_shard];
    consumer.poll(now);
    let mut delivered = 0;
    for &sub in &s.subs {
        while let Some(d) = consumer.next_delivery(sub) {
            delivered += matches!(d, router::Delivery::Frame { .. }) as u64;
        }
    }
    while consumer.next_ready().is_some() {}
    delivered
}

/// A setup for one case of `group`, its throughput set to the frames one iteration
/// delivers, after one group went through whole (every subscriber got every frame).
fn checked_setup(
    group: &mut BenchmarkGroup<'_, WallTime>,
    shard_count: usize,
    subscribers: usize,
) -> (Setup, Instant) {
    let delivered = FRAMES_PER_GROUP * subscribers as u64;
    group.throughput(Throughput::Elements(delivered));
    let mut s = setup(shard_count, subscribers);
    let now = Instant::now();
    assert_eq!(one_group(&mut s, now), delivered);
    (s, now)
}

fn local_subscribers(c: &mut Criterion) {
    for (name, cpu) in [
        ("local_subscribers_wall", false),
        ("local_subscribers_cpu", true),
    ] {
        let mut group = c.benchmark_group(name);
        for k in [1usize, 10, 1000] {
            let (mut s, now) = checked_setup(&mut group, 1, k);
            group.bench_with_input(BenchmarkId::from_parameter(k), &k, |b, _| {
                bench_group(b, &mut s, now, cpu)
            });
        }
        group.finish();
    }
}

fn shards(c: &mut Criterion) {
    for (name, cpu) in [
        ("shards_10_subscribers_wall", false),
        ("shards_10_subscribers_cpu", true),
    ] {
        let mut group = c.benchmark_group(name);
        for n in [1usize, 2] {
            let (mut s, now) = checked_setup(&mut group, n, 10);
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                bench_group(b, &mut s, now, cpu)
            });
        }
        group.finish();
    }
}

fn local_subscribers_owned(c: &mut Criterion) {
    let mut group = c.benchmark_group("local_subscribers_owned_cpu");
    for k in [1usize, 10, 1000] {
        let (mut s, now) = checked_setup(&mut group, 1, k);
        group.bench_with_input(BenchmarkId::from_parameter(k), &k, |b, _| {
            bench_group_owned(b, &mut s, now)
        });
    }
    group.finish();
}

/// The floor under every figure above: one refcount clone and drop of a shared payload,
/// which each subscriber's session pays for its own send-stream handle (and the bench
/// loop pays once per published frame to hand the router a payload).
fn payload_handle(c: &mut Criterion) {
    let mut group = c.benchmark_group("payload_clone_drop_cpu");
    group.throughput(Throughput::Elements(1));
    let payload = Bytes::from(vec![0x5a; 1000]);
    let _ = payload.clone();
    group.bench_function("1", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                std::hint::black_box(payload.clone());
            }
            thread_cpu_time() - start
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    local_subscribers,
    local_subscribers_owned,
    shards,
    payload_handle
);

/// Without criterion: publishes `ROUTER_BENCH_GROUPS` groups to `ROUTER_BENCH_SUBSCRIBERS`
/// (default 1) local subscribers and exits. Run under `valgrind --tool=callgrind` at two
/// group counts, the difference in instructions over the difference in frames is the
/// instruction count per delivered frame: a figure the noisy VM cannot move.
fn count_instructions(groups: u64) {
    let subscribers = std::env::var("ROUTER_BENCH_SUBSCRIBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut s = setup(1, subscribers);
    let now = Instant::now();
    let mut delivered = 0;
    for _ in 0..groups {
        delivered += one_group(&mut s, now);
    }
    assert_eq!(delivered, groups * FRAMES_PER_GROUP * subscribers as u64);
    println!("{delivered} frames delivered");
}

fn main() {
    if let Some(groups) = std::env::var("ROUTER_BENCH_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return count_instructions(groups);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
