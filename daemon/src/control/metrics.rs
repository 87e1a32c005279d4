//! `/metrics` in the Prometheus text exposition format 0.0.4, written by hand: the
//! prometheus-client crate speaks OpenMetrics (`# EOF`, its own content type) and keeps
//! its own counters, while ours are the workers' published atomics read at scrape time.
//!
//! moq-relay 0.17's families come first, in its order and with its names and labels, so
//! dashboards keep working; then moq-relayd's own, per worker. Traffic rows appear whether
//! or not `[stats] enabled` is set (harmless to scrapers; moq-relay prints none without
//! it). `moq_relay_stale_groups_total` counts the groups the slow-consumer policy skipped
//! for a subscriber and those reset past its max latency; families this build does not count yet (stale frames, bytes and
//! datagrams, control bytes) print their HELP/TYPE lines and no rows. Every counter is cumulative and never goes back.

use std::fmt::Write;

use proto::session::ControlClass;
use quic_io::{SEGMENT_BUCKETS, SegmentHistogram, StatsSnapshot, WorkerStats};

use super::{ControlState, unix_millis};
use crate::relay::{
    LATENCY_BUCKETS_MICROS, OpenClose, RelayCounters, SubscriptionTally, TRANSPORTS, Traffic,
};

/// A per-worker family: name, type, help, and the value of one worker's row.
type Family<T> = (&'static str, &'static str, &'static str, fn(T) -> u64);

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// How long one rendered body answers scrapes: the interval at which workers publish
/// their counters (`relay::control::PUBLISH_INTERVAL`), so a faster scraper would only
/// re-render the same relay counters. quic-io's live socket counters are at most this
/// stale.
pub const CACHE_FOR: std::time::Duration = std::time::Duration::from_millis(100);

/// moq-relay families with `tier` and `role` labels that moq-relayd counts, with the
/// value for one direction.
/// A traffic family: name, help, and the value of one direction.
type TrafficFamily = (&'static str, &'static str, fn(&Traffic) -> u64);

const TRAFFIC_FAMILIES: &[TrafficFamily] = &[
    (
        "moq_relay_bytes_total",
        "Media payload bytes transferred.",
        |t| t.bytes,
    ),
    ("moq_relay_frames_total", "Media frames transferred.", |t| {
        t.frames
    }),
    ("moq_relay_groups_total", "Media groups transferred.", |t| {
        t.groups
    }),
    (
        "moq_relay_datagrams_total",
        "Single-frame groups transferred as QUIC datagrams.",
        |t| t.datagrams,
    ),
];

/// moq-relay families with `tier` and `role` labels that moq-relayd does not count yet:
/// the four stale families come before fetches, the rest after the announces.
const TIER_ROLE_FAMILIES: &[(&str, &str)] = &[
    (
        "moq_relay_stale_bytes_total",
        "Payload bytes skipped past a subscriber's latency budget.",
    ),
    (
        "moq_relay_stale_frames_total",
        "Frames skipped past a subscriber's latency budget.",
    ),
    (
        "moq_relay_stale_groups_total",
        "Groups skipped past a subscriber's latency budget.",
    ),
    (
        "moq_relay_stale_datagrams_total",
        "Datagrams skipped past a subscriber's latency budget.",
    ),
    (
        "moq_relay_subscriptions_opened_total",
        "Track subscriptions opened.",
    ),
    (
        "moq_relay_subscriptions_closed_total",
        "Track subscriptions closed.",
    ),
    (
        "moq_relay_viewers_opened_total",
        "Distinct (broadcast, session) subscriptions opened.",
    ),
    (
        "moq_relay_viewers_closed_total",
        "Distinct (broadcast, session) subscriptions closed.",
    ),
];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing into a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// One per-worker family: a row per worker.
fn per_worker<T: Copy>(
    out: &mut String,
    rows: &[T],
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(T) -> u64,
) {
    family(out, name, kind, help);
    for (worker, row) in rows.iter().enumerate() {
        sample(out, name, &format!("worker=\"{worker}\""), value(*row));
    }
}

/// The whole `/metrics` body.
pub fn render(state: &ControlState) -> String {
    let mut out = String::with_capacity(16 << 10);
    // The upstream core's links count like one more worker's sessions.
    let relay: Vec<RelayCounters> = state
        .links
        .iter()
        .map(|l| l.counters.load())
        .chain(state.upstream_counters.as_ref().map(|c| c.load()))
        .collect();
    let quic: Vec<StatsSnapshot> = state.worker_stats.iter().map(|s| s.snapshot()).collect();

    // ---- moq-relay 0.17 families, in its order. `role="publisher"` is what the relay
    // sends, `role="subscriber"` what it receives; one (default) tier.
    let sum = |f: &dyn Fn(&RelayCounters) -> u64| relay.iter().map(f).sum::<u64>();
    for (name, help, value) in TRAFFIC_FAMILIES {
        family(&mut out, name, "counter", help);
        sample(
            &mut out,
            name,
            "tier=\"\",role=\"publisher\"",
            sum(&|c| value(&c.egress)),
        );
        sample(
            &mut out,
            name,
            "tier=\"\",role=\"subscriber\"",
            sum(&|c| value(&c.ingress)),
        );
    }
    for (name, help) in TIER_ROLE_FAMILIES.iter().take(4) {
        family(&mut out, name, "counter", help);
        // What the relay skipped sending to slow subscribers (role publisher). Datagrams
        // are never held for a subscriber, so none go stale: that family has no row.
        let stale = match *name {
            "moq_relay_stale_groups_total" => {
                Some(sum(&|c| c.router.subscriber_drops + c.driver.expired))
            }
            "moq_relay_stale_frames_total" => Some(sum(&|c| c.router.stale_frames)),
            "moq_relay_stale_bytes_total" => Some(sum(&|c| c.router.stale_bytes)),
            _ => None,
        };
        if let Some(value) = stale {
            sample(&mut out, name, "tier=\"\",role=\"publisher\"", value);
        }
    }
    family(
        &mut out,
        "moq_relay_fetches_total",
        "counter",
        "One-shot group fetches requested.",
    );
    sample(
        &mut out,
        "moq_relay_fetches_total",
        "tier=\"\",role=\"publisher\"",
        sum(&|c| c.fetches),
    );
    sample(
        &mut out,
        "moq_relay_fetches_total",
        "tier=\"\",role=\"subscriber\"",
        0,
    );
    // Announces publishers made here (role subscriber); those the relay makes to its
    // peers are not counted yet, so that row is absent rather than a false 0.
    for (name, help, value) in [
        (
            "moq_relay_announces_started_total",
            "Announces started.",
            sum(&|c| c.announces_started),
        ),
        (
            "moq_relay_announces_ended_total",
            "Announces ended.",
            sum(&|c| c.announces_ended),
        ),
    ] {
        family(&mut out, name, "counter", help);
        sample(&mut out, name, "tier=\"\",role=\"subscriber\"", value);
    }
    // Subscriptions subscribers made here (publisher) and the relay's own to publishers
    // (subscriber); viewers exist on the publisher side only, as in moq-relay.
    let egress = |f: fn(&SubscriptionTally) -> u64| sum(&|c| f(&c.egress_subscriptions));
    let ingress = |f: fn(&OpenClose) -> u64| sum(&|c| f(&c.ingress_subscriptions));
    let rows: [[Option<u64>; 2]; 4] = [
        [
            Some(egress(|t| t.subscriptions.opened)),
            Some(ingress(|o| o.opened)),
        ],
        [
            Some(egress(|t| t.subscriptions.closed)),
            Some(ingress(|o| o.closed)),
        ],
        [Some(egress(|t| t.viewers.opened)), None],
        [Some(egress(|t| t.viewers.closed)), None],
    ];
    for ((name, help), values) in TIER_ROLE_FAMILIES.iter().skip(4).zip(rows) {
        family(&mut out, name, "counter", help);
        for (role, value) in ["publisher", "subscriber"].iter().zip(values) {
            if let Some(value) = value {
                sample(&mut out, name, &format!("tier=\"\",role=\"{role}\""), value);
            }
        }
    }
    let opened: u64 = relay.iter().map(|c| c.sessions_opened).sum();
    let closed: u64 = relay.iter().map(|c| c.sessions_closed).sum();
    family(
        &mut out,
        "moq_relay_sessions_opened_total",
        "counter",
        "Connected sessions opened.",
    );
    sample(
        &mut out,
        "moq_relay_sessions_opened_total",
        "tier=\"\"",
        opened,
    );
    family(
        &mut out,
        "moq_relay_sessions_closed_total",
        "counter",
        "Connected sessions closed.",
    );
    sample(
        &mut out,
        "moq_relay_sessions_closed_total",
        "tier=\"\"",
        closed,
    );
    // As moq-relay 0.17: a row only for the classes that have seen traffic.
    for (name, help, sent) in [
        (
            "moq_relay_control_tx_bytes_total",
            "Control-stream bytes sent, by message class.",
            true,
        ),
        (
            "moq_relay_control_rx_bytes_total",
            "Control-stream bytes received, by message class.",
            false,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for class in ControlClass::ALL {
            let bytes = sum(&|c| {
                if sent {
                    c.driver.control.sent(class)
                } else {
                    c.driver.control.received(class)
                }
            });
            if bytes > 0 {
                sample(
                    &mut out,
                    name,
                    &format!("tier=\"\",class=\"{}\"", class.label()),
                    bytes,
                );
            }
        }
    }
    family(
        &mut out,
        "moq_relay_accept_failures_total",
        "counter",
        "Failed accept() calls per TCP listener.",
    );
    for (listener, stats) in &state.accept {
        let l = listener.label();
        use std::sync::atomic::Ordering::Relaxed;
        for (class, counter) in [
            ("connection", &stats.connection),
            ("exhausted", &stats.exhausted),
            ("unknown", &stats.unknown),
        ] {
            sample(
                &mut out,
                "moq_relay_accept_failures_total",
                &format!("listener=\"{l}\",class=\"{class}\""),
                counter.load(Relaxed),
            );
        }
    }
    family(
        &mut out,
        "moq_relay_accept_stalled_seconds",
        "gauge",
        "Seconds the listener has been unable to accept; 0 when healthy.",
    );
    let now_ms = unix_millis();
    for (listener, stats) in &state.accept {
        sample(
            &mut out,
            "moq_relay_accept_stalled_seconds",
            &format!("listener=\"{}\"", listener.label()),
            stats.stalled_seconds(now_ms),
        );
    }
    family(
        &mut out,
        "moq_relay_draining_sessions",
        "gauge",
        "Sessions sent a GOAWAY that have not left yet.",
    );
    let draining = if state.drain.is_draining() {
        state.live_sessions()
    } else {
        0
    };
    sample(&mut out, "moq_relay_draining_sessions", "", draining);

    // ---- moq-relayd's own, per worker.
    family(
        &mut out,
        "moq_relayd_http_connections_refused_total",
        "counter",
        "Control HTTP connections closed at accept because the listener's limit was reached.",
    );
    for (listener, stats) in &state.accept {
        sample(
            &mut out,
            "moq_relayd_http_connections_refused_total",
            &format!("listener=\"{}\"", listener.label()),
            stats.over_limit.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
    let q = &quic;
    let quic_families: &[Family<StatsSnapshot>] = &[
        (
            "moq_relayd_rx_datagrams_total",
            "counter",
            "UDP datagrams received.",
            |s| s.rx_datagrams,
        ),
        (
            "moq_relayd_rx_bytes_total",
            "counter",
            "UDP payload bytes received.",
            |s| s.rx_bytes,
        ),
        (
            "moq_relayd_rx_batches_total",
            "counter",
            "Receive completions (rx_datagrams / rx_batches is the mean GRO batch).",
            |s| s.rx_batches,
        ),
        (
            "moq_relayd_tx_datagrams_total",
            "counter",
            "UDP datagrams sent.",
            |s| s.tx_datagrams,
        ),
        (
            "moq_relayd_tx_sends_total",
            "counter",
            "Send calls (tx_datagrams / tx_sends is the mean GSO batch).",
            |s| s.tx_sends,
        ),
        (
            "moq_relayd_tx_bytes_total",
            "counter",
            "UDP payload bytes sent.",
            |s| s.tx_bytes,
        ),
        (
            "moq_relayd_tx_errors_total",
            "counter",
            "Send calls that failed.",
            |s| s.tx_errors,
        ),
        (
            "moq_relayd_rx_max_segments",
            "gauge",
            "Largest GRO batch seen.",
            |s| s.rx_max_segments,
        ),
        (
            "moq_relayd_tx_max_segments",
            "gauge",
            "Largest GSO batch sent.",
            |s| s.tx_max_segments,
        ),
        (
            "moq_relayd_gso_disabled",
            "gauge",
            "1 once the kernel refused GSO and the worker fell back to one datagram per send.",
            |s| s.gso_disabled,
        ),
        (
            "moq_relayd_missteered_total",
            "counter",
            "Packets received for another worker's connection (forwarded).",
            |s| s.missteered,
        ),
        (
            "moq_relayd_forwarded_in_total",
            "counter",
            "Packets other workers forwarded to this one.",
            |s| s.forwarded_in,
        ),
        (
            "moq_relayd_forward_dropped_total",
            "counter",
            "Mis-steered packets dropped because the owner's queue was full.",
            |s| s.forward_dropped,
        ),
        (
            "moq_relayd_connections",
            "gauge",
            "QUIC connections open.",
            |s| s.connections,
        ),
        (
            "moq_relayd_handshakes_total",
            "counter",
            "QUIC handshakes accepted.",
            |s| s.accepted,
        ),
        (
            "moq_relayd_refused_total",
            "counter",
            "Handshakes refused: at the connection limit, or in a drain with drain_refuse_new.",
            |s| s.refused,
        ),
        (
            "moq_relayd_retries_total",
            "counter",
            "Handshakes answered with Retry above the handshake rate.",
            |s| s.retries,
        ),
        (
            "moq_relayd_refused_per_source_total",
            "counter",
            "Handshakes refused: their source address held [limits] sessions_per_source connections.",
            |s| s.refused_per_source,
        ),
        (
            "moq_relayd_refused_rate_total",
            "counter",
            "Handshakes refused above four times [limits] handshakes_per_second though a Retry proved their address.",
            |s| s.refused_rate,
        ),
        (
            "moq_relayd_handshake_timeouts_total",
            "counter",
            "Connections closed for not becoming a session (QUIC handshake, WebTransport CONNECT) within [listen] timeout.",
            |s| s.handshake_timeouts,
        ),
        (
            "moq_relayd_protocol_errors_total",
            "counter",
            "Connections closed for HTTP/3 or WebTransport protocol violations.",
            |s| s.protocol_errors,
        ),
        (
            "moq_relayd_stateless_dropped_total",
            "counter",
            "Stateless packets left unsent because the send queue was full.",
            |s| s.stateless_dropped,
        ),
        (
            "moq_relayd_stream_op_errors_total",
            "counter",
            "Stream operations of the worker's own that quinn-proto refused.",
            |s| s.stream_op_errors,
        ),
    ];
    for (name, kind, help, value) in quic_families {
        per_worker(&mut out, q, name, kind, help, value);
    }
    let r = &relay;
    let relay_families: &[Family<RelayCounters>] = &[
        (
            "moq_relayd_sessions_opened_total",
            "counter",
            "moq-lite sessions opened.",
            |c| c.sessions_opened,
        ),
        (
            "moq_relayd_sessions_closed_total",
            "counter",
            "moq-lite sessions closed.",
            |c| c.sessions_closed,
        ),
        (
            "moq_relayd_setup_timeouts_total",
            "counter",
            "moq-lite-05+ sessions closed for no SETUP within [listen] timeout.",
            |c| c.setup_timeouts,
        ),
        (
            "moq_relayd_router_refusals_total",
            "counter",
            "Router calls refused (an id the router no longer knew).",
            |c| c.router_refusals,
        ),
        (
            "moq_relayd_sessions_expired_total",
            "counter",
            "Sessions closed because their token's exp passed.",
            |c| c.sessions_expired,
        ),
        (
            "moq_relayd_driver_open_failed_total",
            "counter",
            "Streams the transport could not open.",
            |c| c.driver.open_failed,
        ),
        (
            "moq_relayd_driver_write_failed_total",
            "counter",
            "Writes refused for a reason other than STOP_SENDING.",
            |c| c.driver.write_failed,
        ),
        (
            "moq_relayd_driver_overflow_resets_total",
            "counter",
            "Streams reset because a session's pending bytes hit the hard bound.",
            |c| c.driver.overflow_resets,
        ),
        (
            "moq_relayd_groups_expired_total",
            "counter",
            "Group streams reset (code Old) while still in flight: a newer group made them older than the subscriber's max latency.",
            |c| c.driver.expired,
        ),
        (
            "moq_relayd_driver_refused_ops_total",
            "counter",
            "Stream or datagram operations the transport refused.",
            |c| c.driver.refused_ops,
        ),
        (
            "moq_relayd_driver_bad_stream_ids_total",
            "counter",
            "Action ids the transport cannot name (a session bug).",
            |c| c.driver.bad_stream_ids,
        ),
    ];
    for (name, kind, help, value) in relay_families {
        per_worker(&mut out, r, name, kind, help, value);
    }
    segment_histograms(&mut out, &state.worker_stats, &quic);
    latency_histogram(&mut out, r);
    router_families(&mut out, r);
    family(
        &mut out,
        "moq_relayd_sessions_by_version_total",
        "counter",
        "moq-lite sessions opened, by transport and negotiated version.",
    );
    for (worker, c) in relay.iter().enumerate() {
        for (transport, by_version) in TRANSPORTS.iter().zip(&c.sessions_by_version) {
            for (version, count) in proto::Version::ALL.iter().zip(by_version) {
                sample(
                    &mut out,
                    "moq_relayd_sessions_by_version_total",
                    &format!(
                        "worker=\"{worker}\",transport=\"{transport}\",version=\"{}\"",
                        version.alpn()
                    ),
                    count,
                );
            }
        }
    }
    family(
        &mut out,
        "moq_relayd_session_refusals_total",
        "counter",
        "Session calls the relay made that the session refused.",
    );
    for (worker, c) in relay.iter().enumerate() {
        for (reason, value) in [
            ("closed", c.session_refusals.closed),
            ("other", c.session_refusals.other),
        ] {
            sample(
                &mut out,
                "moq_relayd_session_refusals_total",
                &format!("worker=\"{worker}\",reason=\"{reason}\""),
                value,
            );
        }
    }
    family(
        &mut out,
        "moq_relayd_auth_refusals_total",
        "counter",
        "Sessions [auth] refused, by reason (each also logged once).",
    );
    for (worker, c) in relay.iter().enumerate() {
        for (reason, value) in c.auth_refusals.iter() {
            sample(
                &mut out,
                "moq_relayd_auth_refusals_total",
                &format!("worker=\"{worker}\",reason=\"{reason}\""),
                value,
            );
        }
    }
    family(
        &mut out,
        "moq_relayd_announces_dropped_total",
        "counter",
        "Announcements dropped: their hop chain held this relay (loop), was longer than max_hops, named a path another publisher holds here (duplicate), or came past [limits] announces_per_session (limit).",
    );
    sample(
        &mut out,
        "moq_relayd_announces_dropped_total",
        "reason=\"loop\"",
        sum(&|c| c.announces_looped),
    );
    sample(
        &mut out,
        "moq_relayd_announces_dropped_total",
        "reason=\"too_long\"",
        sum(&|c| c.announces_too_long),
    );
    sample(
        &mut out,
        "moq_relayd_announces_dropped_total",
        "reason=\"duplicate\"",
        sum(&|c| c.announces_refused),
    );
    sample(
        &mut out,
        "moq_relayd_announces_dropped_total",
        "reason=\"limit\"",
        sum(&|c| c.announces_over_limit),
    );
    family(
        &mut out,
        "moq_relayd_subscriptions_refused_total",
        "counter",
        "SUBSCRIBEs refused (BoundsExceeded) because their session held [limits] subscriptions_per_session.",
    );
    sample(
        &mut out,
        "moq_relayd_subscriptions_refused_total",
        "reason=\"limit\"",
        sum(&|c| c.subscriptions_over_limit),
    );
    family(
        &mut out,
        "moq_relayd_broadcast_reroutes_total",
        "counter",
        "Times a broadcast's feed moved to another route to its publisher: a better one arrived, or the one in use went and a standby took over.",
    );
    sample(
        &mut out,
        "moq_relayd_broadcast_reroutes_total",
        "",
        sum(&|c| c.reroutes),
    );
    cluster_links(&mut out, state);
    out
}

/// A link metric family: name, type, help, and its value for one peer's row.
type LinkFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::cluster::LinkStatus) -> u64,
);

/// Per configured peer: whether its link is up, its dials and its failures (dials that
/// never came up and links that went down). No rows without `[cluster] connect`.
fn cluster_links(out: &mut String, state: &ControlState) {
    let Some(table) = &state.cluster else {
        return;
    };
    let rows = table.snapshot();
    let families: [LinkFamily; 3] = [
        (
            "moq_relayd_cluster_link_up",
            "gauge",
            "1 while the link this relay dialed to the peer is up.",
            |row| u64::from(row.session.is_some()),
        ),
        (
            "moq_relayd_cluster_link_dials_total",
            "counter",
            "Dials of the peer.",
            |row| row.dials,
        ),
        (
            "moq_relayd_cluster_link_failures_total",
            "counter",
            "Dials of the peer that never came up, and links to it that went down.",
            |row| row.failures,
        ),
    ];
    for (name, kind, help, value) in families {
        family(out, name, kind, help);
        for row in &rows {
            sample(out, name, &format!("peer=\"{}\"", row.peer), value(row));
        }
    }
}

/// GSO and GRO batch sizes per syscall, as histograms per worker: `_count` is the send
/// (receive) calls and `_sum` the datagrams they carried.
fn segment_histograms(
    out: &mut String,
    stats: &[std::sync::Arc<WorkerStats>],
    quic: &[StatsSnapshot],
) {
    type Pick = fn(&WorkerStats) -> &SegmentHistogram;
    type Totals = fn(&StatsSnapshot) -> (u64, u64);
    let families: [(&str, &str, Pick, Totals); 2] = [
        (
            "moq_relayd_gso_segments_per_send",
            "Datagrams per UDP send call (GSO batch size).",
            |s| &s.tx_segments,
            |s| (s.tx_datagrams, s.tx_sends),
        ),
        (
            "moq_relayd_gro_segments_per_receive",
            "Datagrams per receive completion (GRO batch size).",
            |s| &s.rx_segments,
            |s| (s.rx_datagrams, s.rx_batches),
        ),
    ];
    for (name, help, pick, totals) in families {
        family(out, name, "histogram", help);
        for (worker, (stats, snapshot)) in stats.iter().zip(quic).enumerate() {
            let (sum, count) = totals(snapshot);
            let cumulative = pick(stats).cumulative();
            for (bound, below) in SEGMENT_BUCKETS.iter().zip(cumulative) {
                // Read at another instant than `count`: never report a bucket above it.
                sample(
                    out,
                    &format!("{name}_bucket"),
                    &format!("worker=\"{worker}\",le=\"{bound}\""),
                    below.min(count),
                );
            }
            sample(
                out,
                &format!("{name}_bucket"),
                &format!("worker=\"{worker}\",le=\"+Inf\""),
                count,
            );
            sample(
                out,
                &format!("{name}_sum"),
                &format!("worker=\"{worker}\""),
                sum,
            );
            sample(
                out,
                &format!("{name}_count"),
                &format!("worker=\"{worker}\""),
                count,
            );
        }
    }
}

/// The relay's own latency per delivered frame, per worker (the subscriber's worker):
/// from the iteration that took the frame from its publisher to the moment a session took
/// it for QUIC. Replays to late joiners are not in it.
fn latency_histogram(out: &mut String, relay: &[RelayCounters]) {
    let name = "moq_relayd_frame_latency_seconds";
    family(
        out,
        name,
        "histogram",
        "Relay latency per delivered frame: publisher's arrival to handed to QUIC.",
    );
    for (worker, c) in relay.iter().enumerate() {
        let h = &c.frame_latency;
        let mut below = 0;
        for (bound, count) in LATENCY_BUCKETS_MICROS.iter().zip(h.buckets) {
            below += count;
            sample(
                out,
                &format!("{name}_bucket"),
                &format!("worker=\"{worker}\",le=\"{}\"", *bound as f64 / 1e6),
                below,
            );
        }
        debug_assert!(below <= h.count);
        sample(
            out,
            &format!("{name}_bucket"),
            &format!("worker=\"{worker}\",le=\"+Inf\""),
            h.count,
        );
        sample(
            out,
            &format!("{name}_sum"),
            &format!("worker=\"{worker}\""),
            h.sum_micros as f64 / 1e6,
        );
        sample(
            out,
            &format!("{name}_count"),
            &format!("worker=\"{worker}\""),
            h.count,
        );
    }
}

/// The router shard of each worker: cross-core pushes, drops, doorbells and backlog.
fn router_families(out: &mut String, relay: &[RelayCounters]) {
    let families: &[Family<&RelayCounters>] = &[
        (
            "moq_relayd_router_frame_pushes_total",
            "counter",
            "Frames pushed to other workers' rings (one per frame per interested worker).",
            |c| c.router.frame_pushes,
        ),
        (
            "moq_relayd_router_replay_pushes_total",
            "counter",
            "Cached frames re-sent to a worker that just subscribed (late join).",
            |c| c.router.replay_pushes,
        ),
        (
            "moq_relayd_router_ring_groups_dropped_total",
            "counter",
            "Groups dropped for another worker because its ring was full.",
            |c| c.router.ring_groups_dropped,
        ),
        (
            "moq_relayd_groups_dropped_total",
            "counter",
            "Groups skipped for a slow subscriber past its bytes-in-flight bound.",
            |c| c.router.subscriber_drops,
        ),
        (
            "moq_relayd_router_doorbells_total",
            "counter",
            "Doorbells rung on parked workers.",
            |c| c.router.doorbells,
        ),
        (
            "moq_relayd_router_received_total",
            "counter",
            "Messages taken from other workers' rings.",
            |c| c.router.received,
        ),
        (
            "moq_relayd_router_ring_backlog",
            "gauge",
            "Messages waiting in this worker's inbound rings.",
            |c| c.ring_backlog,
        ),
        (
            "moq_relayd_router_stale_messages_total",
            "counter",
            "Messages for a track or broadcast that had already ended here.",
            |c| c.shard.stale_messages,
        ),
        (
            "moq_relayd_router_queries_lagged_total",
            "counter",
            "Announce queries not drained in time (re-snapshotted).",
            |c| c.shard.queries_lagged,
        ),
        (
            "moq_relayd_router_control_deferred_total",
            "counter",
            "Control messages that waited for room in a full ring.",
            |c| c.shard.control_deferred,
        ),
        (
            "moq_relayd_router_fetch_answers_dropped_total",
            "counter",
            "FETCH answers dropped because the FETCH was cancelled first.",
            |c| c.shard.fetch_answers_dropped,
        ),
    ];
    let rows: Vec<&RelayCounters> = relay.iter().collect();
    for (name, kind, help, value) in families {
        per_worker(out, &rows, name, kind, help, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::DrainFlag;
    use std::sync::Arc;

    #[test]
    fn an_idle_scrape_starts_with_moq_relays_families_and_every_sample_is_typed() {
        let state = ControlState::new(
            String::new(),
            Vec::new(),
            Vec::new(),
            Arc::new(DrainFlag::default()),
            None,
        );
        let text = render(&state);
        assert!(text.starts_with("# HELP moq_relay_bytes_total "), "{text}");
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.iter().any(|t| t == name), "{line}");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert!(text.contains("moq_relay_sessions_opened_total{tier=\"\"} 0\n"));
        assert!(text.contains("moq_relay_draining_sessions 0\n"));
    }
}
