//! Backoff strategies side by side: the same profile and seed run once per strategy; this is
//! the table (`compare.json`) and the page (`compare.html`) made from their results.

use std::collections::BTreeMap;

use maud::html;
use serde::{Deserialize, Serialize};

use super::svg::{Chart, PALETTE, Series, XScale, line_chart};
use super::{charted_points, footer, header_row, inline_svg, markers, page, report_link};
use crate::metrics::Point;
use crate::results::Results;

pub const SCHEMA: &str = "wsstorm.compare/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub schema: String,
    pub name: String,
    pub seed: u64,
    pub started_at: String,
    pub runs: Vec<CompareRun>,
    /// For each column, the strategies with the best value (several when tied).
    pub winners: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareRun {
    pub strategy: String,
    /// Where this run's results.json is, relative to compare.json.
    pub results: String,
    pub row: CompareRow,
}

/// The compared figures of one run; lower is better in every column.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    /// Time until 50 / 95 / 99 % of the lost connections were back; `null` = never.
    pub recovery_p50_ms: Option<f64>,
    pub recovery_p95_ms: Option<f64>,
    pub recovery_p99_ms: Option<f64>,
    pub peak_attempts_per_s: u64,
    /// Most retries in one 100 ms interval: how synchronized the retries are.
    #[serde(default)]
    pub peak_retries_per_100ms: u64,
    pub total_attempts: u64,
    /// Handshakes answered 503 or 429.
    pub rejections: u64,
    pub gave_up: u64,
    /// `null` when no round trip was measured.
    pub rtt_p99_us: Option<u64>,
}

/// The columns, in table order: (key, heading).
pub const COLUMNS: [(&str, &str); 9] = [
    ("recovery_p50_ms", "50 % back (ms)"),
    ("recovery_p95_ms", "95 % back (ms)"),
    ("recovery_p99_ms", "99 % back (ms)"),
    ("peak_attempts_per_s", "peak attempts/s"),
    ("peak_retries_per_100ms", "peak retries in 100 ms"),
    ("total_attempts", "total attempts"),
    ("rejections", "503/429 answers"),
    ("gave_up", "gave up"),
    ("rtt_p99_us", "rtt p99 (ms)"),
];

impl CompareRow {
    pub fn from_results(r: &Results) -> CompareRow {
        let t = &r.totals;
        let status = |s: &str| t.handshake_status.get(s).copied().unwrap_or(0);
        CompareRow {
            recovery_p50_ms: r.storm.recovery_ms.p50,
            recovery_p95_ms: r.storm.recovery_ms.p95,
            recovery_p99_ms: r.storm.recovery_ms.p99,
            peak_attempts_per_s: r.storm.peak_attempts_per_s,
            peak_retries_per_100ms: r.storm.peak_retries_per_100ms,
            total_attempts: t.connect_attempts,
            rejections: status("503") + status("429"),
            gave_up: t.gave_up,
            rtt_p99_us: (r.latency_us.rtt.count > 0).then_some(r.latency_us.rtt.p99),
        }
    }

    /// A column's value for ranking; `None` (never, or not measured) ranks last.
    pub fn value(&self, column: &str) -> Option<f64> {
        match column {
            "recovery_p50_ms" => self.recovery_p50_ms,
            "recovery_p95_ms" => self.recovery_p95_ms,
            "recovery_p99_ms" => self.recovery_p99_ms,
            "peak_attempts_per_s" => Some(self.peak_attempts_per_s as f64),
            "peak_retries_per_100ms" => Some(self.peak_retries_per_100ms as f64),
            "total_attempts" => Some(self.total_attempts as f64),
            "rejections" => Some(self.rejections as f64),
            "gave_up" => Some(self.gave_up as f64),
            "rtt_p99_us" => self.rtt_p99_us.map(|v| v as f64),
            _ => None,
        }
    }

    fn cell(&self, column: &str) -> String {
        match (column, self.value(column)) {
            (_, None) if column.starts_with("recovery") => "never".into(),
            (_, None) => "—".into(),
            ("rtt_p99_us", Some(v)) => format!("{:.2}", v / 1000.0),
            (c, Some(v)) if c.starts_with("recovery") => format!("{v}"),
            (_, Some(v)) => format!("{v:.0}"),
        }
    }
}

/// The best strategies per column (lowest value; ties share the win; nobody wins a column
/// where every value is missing).
pub fn winners(runs: &[CompareRun]) -> BTreeMap<String, Vec<String>> {
    let mut w = BTreeMap::new();
    for (col, _) in COLUMNS {
        let best = runs
            .iter()
            .filter_map(|r| r.row.value(col))
            .fold(f64::INFINITY, f64::min);
        if best.is_finite() {
            let names: Vec<String> = runs
                .iter()
                .filter(|r| r.row.value(col) == Some(best))
                .map(|r| r.strategy.clone())
                .collect();
            w.insert(col.to_string(), names);
        }
    }
    w
}

pub fn render(c: &Comparison, results: &[Results]) -> String {
    // Overlaid curves: every strategy on the same axes. Rates are per second whatever each
    // run's interval.
    let curves = |f: fn(&Point) -> u64, per_second: bool| -> Vec<Series> {
        c.runs
            .iter()
            .zip(results)
            .enumerate()
            .map(|(i, (run, r))| {
                let unit_s = if per_second {
                    r.timeline.interval_ms.max(1) as f64 / 1000.0
                } else {
                    1.0
                };
                Series {
                    name: run.strategy.clone(),
                    color: PALETTE[i % PALETTE.len()].into(),
                    points: charted_points(r)
                        .iter()
                        .map(|p| (p.t_ms as f64 / 1000.0, f(p) as f64 / unit_s))
                        .collect(),
                }
            })
            .collect()
    };
    let m = results.first().map(markers).unwrap_or_default();
    let charts = [
        (
            "connected clients",
            "clients",
            curves(|p| p.connected, false),
        ),
        (
            "connect attempts per second",
            "attempts/s",
            curves(|p| p.attempts, true),
        ),
        (
            "failed attempts per second",
            "errors/s",
            curves(|p| p.errors, true),
        ),
    ]
    .map(|(title, y, series)| {
        line_chart(&Chart {
            title: title.into(),
            x_label: "seconds since start".into(),
            y_label: y.into(),
            series,
            markers: m.clone(),
            x_scale: XScale::Linear,
            width: 540,
            height: 260,
        })
    });
    let headings: Vec<&str> = std::iter::once("strategy")
        .chain(COLUMNS.map(|(_, heading)| heading))
        .collect();

    let body = html! {
        p.muted {
            "The same profile and seed (" (c.seed) "), run once per strategy. Lower is better in "
            "every column; the best is highlighted."
        }
        table #compare {
            (header_row(&headings))
            @for (i, run) in c.runs.iter().enumerate() {
                tr {
                    td { a href=(report_link(&run.results)) { (run.strategy) } }
                    @for (col, _) in COLUMNS {
                        @let win = c.winners.get(col).is_some_and(|w| w.contains(&run.strategy));
                        td data-key={ "runs." (i) ".row." (col) } class=[win.then_some("winner")] {
                            (run.row.cell(col))
                        }
                    }
                }
            }
        }
        h2 { "Over time" }
        div.charts { @for chart in charts { (inline_svg(chart)) } }
        h2 { "Runs" }
        ul {
            @for run in &c.runs {
                li {
                    (run.strategy) ": "
                    a href=(report_link(&run.results)) { "report" }
                    " · "
                    a href=(run.results) { "results.json" }
                }
            }
        }
        (footer("comparison", &c.schema))
    };
    page(
        "wsstorm comparison",
        "wsstorm · backoff comparison",
        &c.name,
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &str, p99: Option<f64>, attempts: u64) -> CompareRun {
        CompareRun {
            strategy: s.into(),
            results: format!("{s}/results.json"),
            row: CompareRow {
                recovery_p99_ms: p99,
                total_attempts: attempts,
                ..Default::default()
            },
        }
    }

    #[test]
    fn winners_take_the_lowest_and_share_ties() {
        let runs = vec![
            run("full-jitter", Some(900.0), 300),
            run("fixed", None, 300),
            run("exponential", Some(1200.0), 500),
        ];
        let w = winners(&runs);
        assert_eq!(w["recovery_p99_ms"], ["full-jitter"]);
        assert_eq!(w["total_attempts"], ["full-jitter", "fixed"]);
        assert!(!w.contains_key("rtt_p99_us"), "nobody wins an empty column");
        assert_eq!(runs[1].row.cell("recovery_p99_ms"), "never");
    }
}
