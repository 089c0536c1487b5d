//! Backoff strategies side by side: the same profile and seed run once per strategy; this is
//! the table (`compare.json`) and the page (`compare.html`) made from their results.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::svg::{Chart, PALETTE, Series, XScale, esc, line_chart};
use super::{CSS, markers};
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
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>wsstorm comparison — {name}</title><style>{CSS}</style></head><body>
<h1>wsstorm · backoff comparison · <span data-key="name">{name}</span></h1>
<p class="muted">The same profile and seed ({seed}), run once per strategy. Lower is better in every column; the best is highlighted.</p>
<table id="compare"><tr><th>strategy</th>"#,
        name = esc(&c.name),
        seed = c.seed
    );
    for (_, heading) in COLUMNS {
        let _ = write!(o, "<th>{heading}</th>");
    }
    o.push_str("</tr>");
    for (i, run) in c.runs.iter().enumerate() {
        let _ = write!(
            o,
            r#"<tr><td><a href="{}">{}</a></td>"#,
            esc(&run.results.replace("results.json", "report.html")),
            esc(&run.strategy)
        );
        for (col, _) in COLUMNS {
            let win = c
                .winners
                .get(col)
                .is_some_and(|w| w.contains(&run.strategy));
            let _ = write!(
                o,
                r#"<td data-key="runs.{i}.row.{col}"{}>{}</td>"#,
                if win { r#" class="winner""# } else { "" },
                run.row.cell(col)
            );
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>");

    // Overlaid curves: every strategy on the same axes.
    let series = |f: &dyn Fn(&Results) -> Vec<(f64, f64)>| -> Vec<Series> {
        c.runs
            .iter()
            .zip(results)
            .enumerate()
            .map(|(i, (run, r))| Series {
                name: run.strategy.clone(),
                color: PALETTE[i % PALETTE.len()].into(),
                points: f(r),
            })
            .collect()
    };
    let m = results.first().map(markers).unwrap_or_default();
    let per_s = |r: &Results| r.timeline.interval_ms.max(1) as f64 / 1000.0;
    // Up to the end of each run (the last interval is the clients' shutdown).
    let within = |r: &Results| {
        let end = r.duration_ms + 1;
        r.timeline
            .points
            .iter()
            .take_while(move |p| p.t_ms <= end)
            .copied()
            .collect::<Vec<_>>()
    };
    o.push_str("<h2>Over time</h2><div class=\"charts\">");
    for (title, y, f) in [
        (
            "connected clients",
            "clients",
            &(|r: &Results| {
                within(r)
                    .iter()
                    .map(|p| (p.t_ms as f64 / 1000.0, p.connected as f64))
                    .collect::<Vec<_>>()
            }) as &dyn Fn(&Results) -> Vec<(f64, f64)>,
        ),
        (
            "connect attempts per second",
            "attempts/s",
            &|r: &Results| {
                within(r)
                    .iter()
                    .map(|p| (p.t_ms as f64 / 1000.0, p.attempts as f64 / per_s(r)))
                    .collect()
            },
        ),
        ("failed attempts per second", "errors/s", &|r: &Results| {
            within(r)
                .iter()
                .map(|p| (p.t_ms as f64 / 1000.0, p.errors as f64 / per_s(r)))
                .collect()
        }),
    ] {
        o.push_str(&line_chart(&Chart {
            title: title.into(),
            x_label: "seconds since start".into(),
            y_label: y.into(),
            series: series(f),
            markers: m.clone(),
            x_scale: XScale::Linear,
            width: 540,
            height: 260,
        }));
    }
    o.push_str("</div>");
    o.push_str("<h2>Runs</h2><ul>");
    for run in &c.runs {
        let _ = write!(
            o,
            r#"<li>{}: <a href="{}">report</a> · <a href="{}">results.json</a></li>"#,
            esc(&run.strategy),
            esc(&run.results.replace("results.json", "report.html")),
            esc(&run.results)
        );
    }
    let _ = writeln!(
        o,
        "</ul><p class=\"muted\">wsstorm {} · comparison schema {}</p></body></html>",
        env!("CARGO_PKG_VERSION"),
        esc(&c.schema)
    );
    o
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
