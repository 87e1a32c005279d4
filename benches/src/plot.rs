//! The `--plot` PNG: latency CDF on a log scale (left) and delivered throughput per second
//! (right), drawn with plotters' bitmap backend. Text needs a font: plotters' ab_glyph
//! backend is given DejaVu Sans (or any TTF named by `RELAY_BENCH_FONT`) read at run time,
//! so no fontconfig is needed; without a font the axes are drawn without labels. It owns
//! drawing only; it must never compute figures.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::BenchError;
use crate::report::Report;

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
/// A font file larger than this is not a plausible TTF.
const MAX_FONT_BYTES: u64 = 32 << 20;

/// Registers a font once; false when none could be loaded.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let from_env = std::env::var("RELAY_BENCH_FONT").ok();
        let candidates = from_env.iter().map(String::as_str).chain(FONT_PATHS);
        for path in candidates {
            let ok_size = std::fs::metadata(path).is_ok_and(|m| m.len() <= MAX_FONT_BYTES);
            if !ok_size {
                continue;
            }
            if let Ok(bytes) = std::fs::read(path) {
                // Registered fonts live for the process: leak this one copy.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws `reports` (one or more runs, labelled) into a PNG at `out`.
pub fn draw(out: &Path, reports: &[(String, &Report)]) -> Result<(), BenchError> {
    let err = |e: String| BenchError::Config(format!("plot {}: {e}", out.display()));
    let text = font_ready();
    let root = BitMapBackend::new(out, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (left, right) = root.split_horizontally(700);
    let colors = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];

    // Latency CDF: x = latency (log), y = percentile.
    let max_ms = reports
        .iter()
        .flat_map(|(_, r)| r.cdf.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.2;
    let min_ms = reports
        .iter()
        .flat_map(|(_, r)| r.cdf.iter().map(|p| p.1))
        .fold(max_ms, f64::min)
        .max(0.01)
        * 0.8;
    let mut b = ChartBuilder::on(&left);
    b.margin(15).x_label_area_size(40).y_label_area_size(50);
    if text {
        b.caption("latency CDF", ("sans-serif", 22));
    }
    let mut chart = b
        .build_cartesian_2d((min_ms..max_ms).log_scale(), 0.0f64..100.0)
        .map_err(|e| err(e.to_string()))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("latency ms (log)")
            .y_desc("percentile")
            .x_labels(6)
            .x_label_formatter(&|v| format!("{v:.1}"));
    } else {
        mesh.disable_x_mesh()
            .disable_y_mesh()
            .x_labels(0)
            .y_labels(0);
    }
    mesh.draw().map_err(|e| err(e.to_string()))?;
    for (i, (label, r)) in reports.iter().enumerate() {
        let color = colors[i % colors.len()];
        let series = chart
            .draw_series(LineSeries::new(
                r.cdf.iter().map(|&(q, ms)| (ms.max(min_ms), q)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
        if text {
            series
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }

    // Throughput over time.
    let secs = reports
        .iter()
        .map(|(_, r)| r.per_second.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_mbps = reports
        .iter()
        .flat_map(|(_, r)| r.per_second.iter().map(|s| s.mbps))
        .fold(1.0f64, f64::max)
        * 1.2;
    let mut b = ChartBuilder::on(&right);
    b.margin(15).x_label_area_size(40).y_label_area_size(50);
    if text {
        b.caption("delivered throughput", ("sans-serif", 22));
    }
    let mut chart = b
        .build_cartesian_2d(0.0f64..secs, 0.0f64..max_mbps)
        .map_err(|e| err(e.to_string()))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("seconds from window start").y_desc("Mbit/s");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| err(e.to_string()))?;
    for (i, (_, r)) in reports.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                r.per_second.iter().map(|s| (s.t as f64 + 0.5, s.mbps)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
