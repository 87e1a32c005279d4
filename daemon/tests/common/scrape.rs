//! Reading a `/metrics` scrape in tests: parse it (checking the text format on the way),
//! wait for a condition, and check that counters never go back and histograms add up.

use std::collections::HashMap;

use super::http::{Ops, get, wait_until};

/// Every sample of a text-format 0.0.4 scrape, checking the format on the way: each
/// sample's family was declared by a `# TYPE` line before it, and each value is a number.
pub fn samples(body: &str) -> HashMap<String, f64> {
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut out = HashMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "unexpected type in {line:?}"
            );
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} declared twice"
            );
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let name = series.split('{').next().unwrap();
        // A histogram's samples carry a suffix on the declared name.
        let declared = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| typed.get(*base).is_some_and(|kind| kind == "histogram"))
            .unwrap_or(name);
        assert!(
            typed.contains_key(declared),
            "{name} sampled before its TYPE"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "unterminated labels in {line:?}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?}"));
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "{series} twice"
        );
    }
    out
}

pub fn scrape(ops: &Ops) -> HashMap<String, f64> {
    let response = get(ops.internal, "/metrics");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4")
    );
    samples(&response.body)
}

/// Every histogram row set: buckets cumulative in `le` order, `+Inf` equal to `_count`.
pub fn assert_histograms_consistent(metrics: &HashMap<String, f64>) {
    let mut checked = 0;
    for (series, &count) in metrics {
        let Some((name, labels)) = series.split_once("_count{") else {
            continue;
        };
        let labels = labels.trim_end_matches('}');
        let prefix = format!("{name}_bucket{{{labels},le=\"");
        let mut buckets: Vec<(f64, f64)> = metrics
            .iter()
            .filter_map(|(s, &v)| {
                let le = s.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.len() >= 2, "{name}{{{labels}}}: {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name}{{{labels}}} buckets go down: {buckets:?}"
        );
        assert_eq!(
            buckets.last(),
            Some(&(f64::INFINITY, count)),
            "{name}{{{labels}}}"
        );
        checked += 1;
    }
    assert!(checked >= 6, "{checked} histogram rows");
}

/// Every counter (`*_total`) in `before` is in `after` and not smaller.
pub fn assert_monotonic(before: &HashMap<String, f64>, after: &HashMap<String, f64>) {
    for (series, value) in before {
        if !series.split('{').next().unwrap().ends_with("_total") {
            continue;
        }
        let now = after
            .get(series)
            .unwrap_or_else(|| panic!("{series} vanished"));
        assert!(now >= value, "{series} went back from {value} to {now}");
    }
}

pub fn wait_for(
    ops: &Ops,
    condition: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    wait_until(|| Some(scrape(ops)).filter(|m| condition(m)))
}

/// The sum of a metric's samples whose labels contain `labels`.
pub fn total(metrics: &HashMap<String, f64>, name: &str, labels: &str) -> f64 {
    metrics
        .iter()
        .filter(|(series, _)| series.starts_with(&format!("{name}{{")) && series.contains(labels))
        .map(|(_, value)| value)
        .sum()
}
