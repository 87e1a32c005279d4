//! `/metrics` as operators use it, through the real binary: the Grafana dashboard in
//! `config/` queries only series a scrape has, and the session counters stay exact and
//! monotonic through a thousand sessions that open and close.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::bare::{bare_client_config, dial_batch};
use common::flow::Flow;
use common::http::{Ops, get, start};
use common::scrape::{assert_monotonic, samples, scrape, wait_for};

const CONFIG: &str = "[server]\nbind = \"127.0.0.1:0\"\ntls.generate = [\"localhost\"]\n[web.http]\nlisten = \"127.0.0.1:0\"\n[internal]\nlisten = \"127.0.0.1:0\"\n[runtime]\nworkers = 2\n[auth]\npublic = \"\"\n";

/// Labels Prometheus adds to every series it scrapes (or `histogram_quantile` reads), so
/// a scrape never carries them itself.
const SCRAPER_LABELS: [&str; 3] = ["instance", "job", "le"];

/// A metric a dashboard expression names, with the `label="value"` matchers it puts on it.
#[derive(Debug)]
struct Selector {
    metric: String,
    equal: Vec<(String, String)>,
}

/// The metric selectors and `by (…)` labels of one PromQL expression. Enough PromQL for
/// the dashboard's own expressions: names start `moq_relay`, matchers are `k="v"` or
/// `k=~"v"`.
fn parse_expr(expr: &str) -> (Vec<Selector>, Vec<String>) {
    let mut selectors = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("moq_relay") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let metric = tail[..end].to_owned();
        let mut equal = Vec::new();
        let after = &tail[end..];
        if let Some(body) = after.strip_prefix('{') {
            let body = &body[..body.find('}').expect("closed selector")];
            for matcher in body.split(',').filter(|m| !m.is_empty()) {
                if let Some((key, value)) = matcher.split_once("=\"")
                    && !key.ends_with(['~', '!'])
                {
                    equal.push((
                        key.trim().to_owned(),
                        value.trim_end_matches('"').to_owned(),
                    ));
                }
            }
        }
        selectors.push(Selector { metric, equal });
        rest = &tail[end..];
    }
    let mut by = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("by (") {
        let tail = &rest[start + 4..];
        let list = &tail[..tail.find(')').expect("closed by list")];
        by.extend(list.split(',').map(|label| label.trim().to_owned()));
        rest = tail;
    }
    (selectors, by)
}

/// Every PromQL expression of the dashboard's panels (and its variables' queries).
fn dashboard_exprs() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/grafana-dashboard.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard file"))
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    fn walk(value: &serde_json::Value, exprs: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "definition", serde_json::Value::String(expr)) => {
                            exprs.push(expr.clone())
                        }
                        _ => walk(value, exprs),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, exprs)),
            _ => {}
        }
    }
    walk(&json, &mut exprs);
    exprs
}

/// The labels on a sample's series name (`name{a="1",b="2"}` → a=1, b=2).
fn labels_of(series: &str) -> HashMap<&str, &str> {
    let Some((_, body)) = series.split_once('{') else {
        return HashMap::new();
    };
    body.trim_end_matches('}')
        .split("\",")
        .filter_map(|pair| pair.split_once("=\""))
        .map(|(k, v)| (k, v.trim_end_matches('"')))
        .collect()
}

/// A publisher and a subscriber move one group through the relay, so the traffic rows
/// (per role) exist in the next scrape.
async fn one_group_through(ops: &Ops) {
    let mut flow = Flow::start(ops).await;
    flow.group(&[10, 20], 1).await;
    wait_for(ops, |m| {
        m.get("moq_relay_frames_total{tier=\"\",role=\"publisher\"}")
            .is_some_and(|&frames| frames >= 2.0)
    });
    flow.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboard_queries_is_in_a_scrape() {
    let ops = start(CONFIG);
    one_group_through(&ops).await;
    let response = get(ops.internal, "/metrics");
    assert_eq!(response.status, 200);
    let metrics = samples(&response.body);
    let declared: HashSet<&str> = response
        .body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();

    let exprs = dashboard_exprs();
    assert!(
        exprs.len() >= 20,
        "{} expressions in the dashboard",
        exprs.len()
    );
    let mut checked = 0;
    for expr in &exprs {
        let (selectors, by) = parse_expr(expr);
        assert!(!selectors.is_empty(), "{expr}: queries no moq-relay metric");
        let mut labels_seen: HashSet<&str> = HashSet::new();
        for selector in &selectors {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| selector.metric.strip_suffix(suffix))
                .filter(|base| declared.contains(base))
                .unwrap_or(&selector.metric);
            assert!(
                declared.contains(family),
                "{expr}: {} is not in a scrape",
                selector.metric
            );
            let rows: Vec<HashMap<&str, &str>> = metrics
                .keys()
                .filter(|series| series.split('{').next() == Some(selector.metric.as_str()))
                .map(|series| labels_of(series))
                .collect();
            assert!(
                !rows.is_empty(),
                "{expr}: {} has no rows after a flow",
                selector.metric
            );
            for (key, value) in &selector.equal {
                assert!(
                    rows.iter()
                        .any(|labels| labels.get(key.as_str()) == Some(&value.as_str())),
                    "{expr}: no {} row has {key}=\"{value}\"",
                    selector.metric
                );
            }
            labels_seen.extend(rows.iter().flat_map(|labels| labels.keys().copied()));
            checked += 1;
        }
        for label in &by {
            assert!(
                SCRAPER_LABELS.contains(&label.as_str()) || labels_seen.contains(label.as_str()),
                "{expr}: groups by {label}, which none of its metrics carries"
            );
        }
    }
    assert!(checked >= exprs.len(), "{checked} selectors");
}

/// Sessions that open and close.
const SESSIONS: usize = 1000;
/// Handshakes in flight at once.
const IN_FLIGHT: usize = 25;
/// Client endpoints (UDP sockets): distinct 4-tuples, so both workers get sessions.
const ENDPOINTS: usize = 8;
/// Bounds the whole churn.
const CHURN_DEADLINE: Duration = Duration::from_secs(180);
/// How often the background scraper reads `/metrics` during the churn.
const SCRAPE_EVERY: Duration = Duration::from_millis(25);

/// 0.17's control-bytes families: no rows before any session, then a row per class
/// the flow used, in each direction, and none for a class it did not (no FETCH here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_bytes_are_counted_by_class_in_both_directions() {
    let ops = start(CONFIG);
    let before = scrape(&ops);
    assert!(
        !before.keys().any(|k| k.starts_with("moq_relay_control_")),
        "control rows before any session"
    );
    one_group_through(&ops).await;
    let row = |m: &HashMap<String, f64>, direction: &str, class: &str| {
        m.get(&format!(
            "moq_relay_control_{direction}_bytes_total{{tier=\"\",class=\"{class}\"}}"
        ))
        .copied()
    };
    let after = wait_for(&ops, |m| {
        ["tx", "rx"].iter().all(|d| {
            ["announce", "subscribe"]
                .iter()
                .all(|c| row(m, d, c).is_some_and(|bytes| bytes > 0.0))
        })
    });
    for direction in ["tx", "rx"] {
        assert_eq!(row(&after, direction, "fetch"), None, "{direction}");
    }
    // A subscribe stream carries a few small messages, never the group's frames.
    let subscribe_tx = row(&after, "tx", "subscribe").unwrap();
    assert!(subscribe_tx < 1000.0, "{subscribe_tx}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_thousand_sessions_open_and_close_the_counters_read_a_thousand() {
    let ops = start(CONFIG);
    let internal = ops.internal;
    // Scrape all along: each scrape against the one before, so a counter that dips for
    // a moment (a session's counts dropped when it closes) fails here.
    let done = Arc::new(AtomicBool::new(false));
    let scraper = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut previous = samples(&get(internal, "/metrics").body);
            let mut scrapes = 1u32;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(SCRAPE_EVERY);
                let next = samples(&get(internal, "/metrics").body);
                assert_monotonic(&previous, &next);
                previous = next;
                scrapes += 1;
            }
            scrapes
        }
    });

    let client = bare_client_config(&ops.fingerprint);
    let endpoints: Arc<Vec<quinn::Endpoint>> = Arc::new(
        (0..ENDPOINTS)
            .map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint"))
            .collect(),
    );
    let started = Instant::now();
    let mut opened = 0;
    while opened < SESSIONS {
        assert!(
            started.elapsed() < CHURN_DEADLINE,
            "only {opened} sessions within {CHURN_DEADLINE:?}"
        );
        let batch = IN_FLIGHT.min(SESSIONS - opened);
        let batch_sessions = dial_batch(&endpoints, &client, ops.quic, opened, batch).await;
        opened += batch_sessions.len();
        // Each was served (ANNOUNCE_OK came back); now it leaves with a QUIC close, as
        // the next batch opens.
        for session in batch_sessions {
            session.connection.close(0u32.into(), b"bye");
        }
    }

    let total = |m: &HashMap<String, f64>, name: &str| -> f64 {
        m.iter()
            .filter(|(series, _)| series.split('{').next() == Some(name))
            .map(|(_, value)| value)
            .sum()
    };
    let settled = wait_for(&ops, |m| {
        m["moq_relay_sessions_closed_total{tier=\"\"}"] >= SESSIONS as f64
    });
    done.store(true, Ordering::Relaxed);
    let scrapes = scraper
        .join()
        .expect("no counter went back between scrapes");
    eprintln!(
        "{SESSIONS} sessions opened and closed in {:?}, {scrapes} scrapes",
        started.elapsed()
    );
    assert!(scrapes >= 10, "only {scrapes} scrapes during the churn");

    assert_eq!(
        settled["moq_relay_sessions_opened_total{tier=\"\"}"],
        SESSIONS as f64
    );
    assert_eq!(
        settled["moq_relay_sessions_closed_total{tier=\"\"}"],
        SESSIONS as f64
    );
    // Ours, per worker, add up to the same, and both workers served some.
    for name in [
        "moq_relayd_sessions_opened_total",
        "moq_relayd_sessions_closed_total",
    ] {
        assert_eq!(total(&settled, name), SESSIONS as f64, "{name}");
        for worker in 0..2 {
            let value = settled[&format!("{name}{{worker=\"{worker}\"}}")];
            assert!(value > 0.0, "{name}: worker {worker} served none");
        }
    }
    assert_eq!(
        total(&settled, "moq_relayd_sessions_by_version_total"),
        SESSIONS as f64
    );
    // A closed connection lingers in QUIC's draining state (3 PTO) before it is freed.
    let later = wait_for(&ops, |m| total(m, "moq_relayd_connections") == 0.0);
    assert_monotonic(&settled, &later);
    assert_eq!(
        later["moq_relay_sessions_opened_total{tier=\"\"}"],
        SESSIONS as f64
    );
}
