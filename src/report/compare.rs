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
    /// Each run lasted until its clients settled (`--until recovered`), not the profile's
    /// duration; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<CompareUntil>,
    pub runs: Vec<CompareRun>,
    /// For each column, the strategies with the best value (several when tied).
    pub winners: BTreeMap<String, Vec<String>>,
    /// The strategies best first, by [`RANKED_BY`].
    #[serde(default)]
    pub ranking: Vec<String>,
    /// Why the first ranks first, in one sentence.
    #[serde(default)]
    pub verdict: String,
}

/// How long the runs of a comparison `--until recovered` could last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompareUntil {
    /// `recovered`: each run lasted until every client was connected or had given up.
    pub mode: String,
    /// `--max`: the longest a run could last.
    pub max_ms: u64,
}

impl CompareUntil {
    fn cap(&self) -> crate::units::Dur {
        crate::units::Dur(std::time::Duration::from_millis(self.max_ms))
    }

    /// The one line that says how long the runs lasted.
    pub fn describe(&self) -> String {
        format!(
            "every run --until {}: until every client was connected or had given up (after the timeline's last action), at most {}",
            self.mode,
            self.cap()
        )
    }
}

impl Comparison {
    /// The columns this comparison shows: `settled after` only for runs `--until recovered`.
    pub fn columns(&self) -> Vec<(&'static str, &'static str)> {
        COLUMNS
            .into_iter()
            .filter(|(col, _)| *col != "settled_ms" || self.until.is_some())
            .collect()
    }

    /// The text of a cell, when the comparison says more than the row alone: a run that did
    /// not settle is `over` the cap it reached.
    pub fn cell(&self, row: &CompareRow, column: &str) -> Option<String> {
        match (column, &self.until, row.settled_ms) {
            ("settled_ms", Some(u), None) => Some(format!("over {}", u.cap())),
            _ => None,
        }
    }
}

/// How strategies are ranked: time until 99 % of the lost clients were back (never counts as
/// worst; times within [`TIME_TIE`] of the fastest of their group count as a tie, so a few
/// milliseconds do not outweigh ten times the work), then failed attempts per client back, then
/// clients not back.
pub const RANKED_BY: &str = "time until 99 % of lost clients were back (within 10 % is a tie), \
     then wasted attempts per client back";

/// Recovery times within this share of each other rank as equal.
pub const TIME_TIE: f64 = 0.10;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareRun {
    pub strategy: String,
    /// Where this run's results.json is, relative to compare.json.
    pub results: String,
    pub row: CompareRow,
}

/// The compared figures of one run; lower is better in every ranked column.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    /// Connections lost (closed by the server or the network, or found dead).
    #[serde(default)]
    pub lost: u64,
    /// Lost connections open again by the end of the run.
    #[serde(default)]
    pub back: u64,
    /// Lost and not open again by the end: still waiting, or gave up. The clock flatters a
    /// strategy that leaves these.
    #[serde(default)]
    pub not_back: u64,
    /// Time until 50 / 95 / 99 % of the lost connections were back; `null` = never.
    pub recovery_p50_ms: Option<f64>,
    pub recovery_p95_ms: Option<f64>,
    pub recovery_p99_ms: Option<f64>,
    /// Until every lost connection was back; `null` = some never were.
    #[serde(default)]
    pub recovery_p100_ms: Option<f64>,
    /// Retries (attempts after a client's first) per connection back: the work a recovery
    /// cost. `null` when nothing came back.
    #[serde(default)]
    pub attempts_per_back: Option<f64>,
    /// Failed attempts (refused, timed out, 503 and any other non-101 answer, reset…) per
    /// connection back: work the clients and the server did for nothing.
    #[serde(default)]
    pub wasted_per_back: Option<f64>,
    pub peak_attempts_per_s: u64,
    /// Most retries in one 100 ms interval: how synchronized the retries are.
    #[serde(default)]
    pub peak_retries_per_100ms: u64,
    /// Most retries in one second among those after a failed attempt: the storm after the
    /// first wave (which is the same for every strategy: everyone lost retries once).
    #[serde(default)]
    pub peak_after_first_wave_per_s: u64,
    /// The delays the strategy chose before its retries (ms): p50 and p99 of
    /// `latency_us.backoff_delay`. Shown, not ranked: a longer delay is neither good nor bad.
    #[serde(default)]
    pub delay_p50_ms: Option<f64>,
    #[serde(default)]
    pub delay_p99_ms: Option<f64>,
    pub total_attempts: u64,
    /// Handshakes answered 503 or 429.
    pub rejections: u64,
    pub gave_up: u64,
    /// `null` when no round trip was measured.
    pub rtt_p99_us: Option<u64>,
    /// Handshakes the embedded target served after their client had given up on them: work
    /// the server paid for and nobody used. `null` against another server (it cannot be seen
    /// from the client side).
    #[serde(default)]
    pub server_handshakes_wasted: Option<u64>,
    /// Whether a run `--until recovered` settled (every client connected or gave up) before
    /// its cap; absent for a run of the profile's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<bool>,
    /// When it settled, ms into the run; absent when it did not (or was not `--until`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_ms: Option<u64>,
}

/// The columns, in table order: (key, heading).
pub const COLUMNS: [(&str, &str); 20] = [
    ("lost", "lost"),
    ("back", "back by the end"),
    ("not_back", "not back"),
    ("settled_ms", "settled after (ms)"),
    ("recovery_p50_ms", "50 % back (ms)"),
    ("recovery_p95_ms", "95 % back (ms)"),
    ("recovery_p99_ms", "99 % back (ms)"),
    ("recovery_p100_ms", "100 % back (ms)"),
    ("attempts_per_back", "retries per client back"),
    ("wasted_per_back", "wasted per client back"),
    ("peak_attempts_per_s", "peak attempts/s"),
    ("peak_retries_per_100ms", "peak retries in 100 ms"),
    ("peak_after_first_wave_per_s", "peak/s after 1st wave"),
    ("total_attempts", "total attempts"),
    ("rejections", "503/429 answers"),
    ("gave_up", "gave up"),
    ("server_handshakes_wasted", "handshakes abandoned"),
    ("rtt_p99_us", "rtt p99 (ms)"),
    ("delay_p50_ms", "delay chosen p50 (ms)"),
    ("delay_p99_ms", "delay chosen p99 (ms)"),
];

impl CompareRow {
    pub fn from_results(r: &Results) -> CompareRow {
        let t = &r.totals;
        let status = |s: &str| t.handshake_status.get(s).copied().unwrap_or(0);
        let st = &r.storm;
        let back = st.recovered;
        let per_back =
            |n: u64| (back > 0).then(|| (n as f64 / back as f64 * 100.0).round() / 100.0);
        let retries = t
            .connect_attempts
            .saturating_sub(st.attempts_per_client.count);
        let failed = crate::results::threshold::errors(t);
        let chosen = r.latency_us.backoff_delay.count > 0;
        let delay = |us: u64| chosen.then(|| (us as f64 / 100.0).round() / 10.0);
        CompareRow {
            lost: st.losses,
            back,
            not_back: st.losses.saturating_sub(back),
            recovery_p100_ms: st.recovery_ms.p100,
            attempts_per_back: per_back(retries),
            wasted_per_back: per_back(failed),
            recovery_p50_ms: r.storm.recovery_ms.p50,
            recovery_p95_ms: r.storm.recovery_ms.p95,
            recovery_p99_ms: r.storm.recovery_ms.p99,
            peak_attempts_per_s: r.storm.peak_attempts_per_s,
            peak_retries_per_100ms: r.storm.peak_retries_per_100ms,
            peak_after_first_wave_per_s: r.storm.peak_repeat_retries_per_s,
            delay_p50_ms: delay(r.latency_us.backoff_delay.p50),
            delay_p99_ms: delay(r.latency_us.backoff_delay.p99),
            total_attempts: t.connect_attempts,
            rejections: status("503") + status("429"),
            gave_up: t.gave_up,
            rtt_p99_us: (r.latency_us.rtt.count > 0).then_some(r.latency_us.rtt.p99),
            server_handshakes_wasted: r.server.as_ref().map(|s| s.handshakes_wasted),
            settled: r.until.as_ref().map(|u| u.settled_at_ms.is_some()),
            settled_ms: r.until.as_ref().and_then(|u| u.settled_at_ms),
        }
    }

    /// A column's value for ranking; `None` (never, or not measured) ranks last.
    pub fn value(&self, column: &str) -> Option<f64> {
        match column {
            "lost" => Some(self.lost as f64),
            "back" => Some(self.back as f64),
            "not_back" => Some(self.not_back as f64),
            "recovery_p100_ms" => self.recovery_p100_ms,
            "attempts_per_back" => self.attempts_per_back,
            "wasted_per_back" => self.wasted_per_back,
            "recovery_p50_ms" => self.recovery_p50_ms,
            "recovery_p95_ms" => self.recovery_p95_ms,
            "recovery_p99_ms" => self.recovery_p99_ms,
            "peak_attempts_per_s" => Some(self.peak_attempts_per_s as f64),
            "peak_retries_per_100ms" => Some(self.peak_retries_per_100ms as f64),
            "peak_after_first_wave_per_s" => Some(self.peak_after_first_wave_per_s as f64),
            "delay_p50_ms" => self.delay_p50_ms,
            "delay_p99_ms" => self.delay_p99_ms,
            "total_attempts" => Some(self.total_attempts as f64),
            "rejections" => Some(self.rejections as f64),
            "gave_up" => Some(self.gave_up as f64),
            "rtt_p99_us" => self.rtt_p99_us.map(|v| v as f64),
            "server_handshakes_wasted" => self.server_handshakes_wasted.map(|v| v as f64),
            "settled_ms" => self.settled_ms.map(|v| v as f64),
            _ => None,
        }
    }

    fn cell(&self, column: &str) -> String {
        match (column, self.value(column)) {
            (_, None) if column.starts_with("recovery") => "never".into(),
            (_, None) => "—".into(),
            ("rtt_p99_us", Some(v)) => format!("{:.2}", v / 1000.0),
            (c, Some(v)) if c.starts_with("recovery") || c.starts_with("delay_") => {
                format!("{v}")
            }
            (c, Some(v)) if c.ends_with("_per_back") => format!("{v:.2}"),
            (_, Some(v)) => format!("{v:.0}"),
        }
    }
}

/// Columns that describe the run rather than rank it: the same profile loses about as many
/// connections whatever the strategy, and more back is better, not worse.
const UNRANKED: [&str; 4] = ["lost", "back", "delay_p50_ms", "delay_p99_ms"];

/// The best strategies per column (lowest value; ties share the win; nobody wins a column
/// where every value is missing).
pub fn winners(runs: &[CompareRun]) -> BTreeMap<String, Vec<String>> {
    let mut w = BTreeMap::new();
    for (col, _) in COLUMNS {
        if UNRANKED.contains(&col) {
            continue;
        }
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

/// The strategies best first ([`RANKED_BY`]), and a sentence saying why the first won.
pub fn rank(runs: &[CompareRun]) -> (Vec<String>, String) {
    let key = |r: &CompareRun| {
        (
            r.row.recovery_p99_ms.unwrap_or(f64::INFINITY),
            r.row.wasted_per_back.unwrap_or(f64::INFINITY),
            r.row.not_back,
        )
    };
    let mut by_time: Vec<&CompareRun> = runs.iter().collect();
    by_time.sort_by(|a, b| key(a).0.total_cmp(&key(b).0));
    // Groups of recovery times within TIME_TIE of their fastest; inside a group, less work
    // wins. (Strategies that never got 99 % back form one group, at the end.)
    let mut order: Vec<&CompareRun> = Vec::new();
    let mut i = 0;
    while i < by_time.len() {
        let fastest = key(by_time[i]).0;
        let mut j = i + 1;
        while j < by_time.len() && {
            let t = key(by_time[j]).0;
            t == fastest || t <= fastest * (1.0 + TIME_TIE)
        } {
            j += 1;
        }
        let mut group = by_time[i..j].to_vec();
        group.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.1.total_cmp(&kb.1)
                .then(ka.2.cmp(&kb.2))
                .then(ka.0.total_cmp(&kb.0))
        });
        order.extend(group);
        i = j;
    }
    let ranking = order.iter().map(|r| r.strategy.clone()).collect();
    let verdict = match order.as_slice() {
        [] => String::new(),
        [first, ..] if first.row.lost == 0 => format!(
            "Nothing was lost in any run, so no strategy had anything to recover; {} is listed first.",
            first.strategy
        ),
        [first, rest @ ..] => {
            let p99 = |r: &CompareRun| {
                r.row.recovery_p99_ms.map_or("never".to_string(), |ms| {
                    format!("after {} ms", crate::units::ms_text((ms * 1000.0) as u64))
                })
            };
            let wasted = |r: &CompareRun| {
                r.row
                    .wasted_per_back
                    .map_or("no client back".to_string(), |w| {
                        format!("{w:.2} wasted attempts per client back")
                    })
            };
            let worst = rest.last();
            let mut v = format!(
                "{} ranks first: 99 % of the lost clients were back {} with {}",
                first.strategy,
                p99(first),
                wasted(first)
            );
            if let Some(second) = rest.first() {
                let tie = match (first.row.recovery_p99_ms, second.row.recovery_p99_ms) {
                    (Some(a), Some(b)) => (b - a).abs() <= a.min(b) * TIME_TIE,
                    (None, None) => true,
                    _ => false,
                };
                let why = if tie { " (as fast, more work)" } else { "" };
                v.push_str(&format!(
                    "; next, {}{why}: {} with {}",
                    second.strategy,
                    p99(second),
                    wasted(second)
                ));
            }
            if let Some(w) = worst.filter(|w| rest.len() > 1 && w.strategy != first.strategy) {
                v.push_str(&format!(
                    "; last, {}: {} with {}",
                    w.strategy,
                    p99(w),
                    wasted(w)
                ));
                if w.row.not_back > 0 {
                    v.push_str(&format!(", {} not back", w.row.not_back));
                }
            }
            v.push('.');
            v
        }
    };
    let unsettled: Vec<&str> = runs
        .iter()
        .filter(|r| r.row.settled == Some(false))
        .map(|r| r.strategy.as_str())
        .collect();
    let verdict = match unsettled.as_slice() {
        [] => verdict,
        [one] => format!("{verdict} {one} did not settle before --max."),
        many => format!("{verdict} {} did not settle before --max.", many.join(", ")),
    };
    (ranking, verdict)
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
    let columns = c.columns();
    let headings: Vec<&str> = std::iter::once("strategy")
        .chain(columns.iter().map(|(_, heading)| *heading))
        .collect();

    let body = html! {
        @if !c.verdict.is_empty() {
            p #verdict { strong { (c.verdict) } }
            p.muted { "Ranked by " (RANKED_BY) ": " (c.ranking.join(" › ")) }
        }
        p.muted {
            "The same profile and seed (" (c.seed) "), run once per strategy. Lower is better in "
            "every column but lost and back; the best is highlighted."
        }
        @if let Some(u) = &c.until {
            p #until { (u.describe()) "." }
        }
        table #compare {
            (header_row(&headings))
            @for (i, run) in c.runs.iter().enumerate() {
                tr {
                    td { a href=(report_link(&run.results)) { (run.strategy) } }
                    @for (col, _) in &columns {
                        @let win = c.winners.get(*col).is_some_and(|w| w.contains(&run.strategy));
                        td data-key={ "runs." (i) ".row." (col) } class=[win.then_some("winner")] {
                            (c.cell(&run.row, col).unwrap_or_else(|| run.row.cell(col)))
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

    fn storm(s: &str, lost: u64, back: u64, p99: Option<f64>, wasted: Option<f64>) -> CompareRun {
        CompareRun {
            strategy: s.into(),
            results: format!("{s}/results.json"),
            row: CompareRow {
                lost,
                back,
                not_back: lost - back,
                recovery_p99_ms: p99,
                wasted_per_back: wasted,
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_ranking_puts_recovery_first_then_work_and_says_why() {
        let runs = vec![
            storm("none", 1000, 277, None, Some(17.2)),
            storm("exponential", 1000, 1000, Some(4100.0), Some(15.1)),
            storm("full-jitter", 1000, 1000, Some(2300.0), Some(3.5)),
            storm("equal-jitter", 1000, 1000, Some(2300.0), Some(4.1)),
        ];
        let (ranking, verdict) = rank(&runs);
        assert_eq!(
            ranking,
            ["full-jitter", "equal-jitter", "exponential", "none"]
        );
        assert!(
            verdict.starts_with("full-jitter ranks first: 99 % of the lost clients were back after 2300 ms with 3.50 wasted attempts per client back"),
            "{verdict}"
        );
        assert!(verdict.contains("next, equal-jitter"), "{verdict}");
        assert!(verdict.contains("last, none: never"), "{verdict}");
        assert!(verdict.contains("723 not back"), "{verdict}");
        let w = winners(&runs);
        assert!(
            !w.contains_key("lost") && !w.contains_key("back"),
            "they describe, not rank"
        );
        assert_eq!(
            w["not_back"],
            ["exponential", "full-jitter", "equal-jitter"]
        );
        assert_eq!(runs[0].row.cell("wasted_per_back"), "17.20");

        // A few milliseconds faster does not outweigh fourteen times the work.
        let close = vec![
            storm("none", 1500, 1500, Some(4182.0), Some(99.0)),
            storm("fixed", 1500, 1500, Some(4215.0), Some(7.0)),
            storm("exponential", 1500, 1500, Some(7651.0), Some(3.0)),
        ];
        let (ranking, verdict) = rank(&close);
        assert_eq!(ranking, ["fixed", "none", "exponential"]);
        assert!(
            verdict.contains("next, none (as fast, more work)"),
            "{verdict}"
        );

        let calm = vec![
            storm("fixed", 0, 0, None, None),
            storm("none", 0, 0, None, None),
        ];
        let (_, verdict) = rank(&calm);
        assert!(verdict.starts_with("Nothing was lost"), "{verdict}");
    }

    #[test]
    fn runs_until_recovered_show_when_each_settled_or_that_it_did_not() {
        let mut runs = vec![
            storm("fixed", 100, 100, Some(900.0), Some(2.0)),
            storm("full-jitter", 100, 100, Some(1200.0), Some(1.0)),
            storm("exponential", 100, 90, None, Some(1.0)),
        ];
        for (r, at) in runs.iter_mut().zip([Some(2500), Some(1800), None]) {
            r.row.settled = Some(at.is_some());
            r.row.settled_ms = at;
        }
        let (_, verdict) = rank(&runs);
        assert!(
            verdict.ends_with(" exponential did not settle before --max."),
            "{verdict}"
        );
        assert_eq!(winners(&runs)["settled_ms"], ["full-jitter"]);
        let mut c = Comparison {
            schema: SCHEMA.into(),
            name: "n".into(),
            seed: 1,
            started_at: String::new(),
            until: Some(CompareUntil {
                mode: "recovered".into(),
                max_ms: 60_000,
            }),
            winners: winners(&runs),
            ranking: Vec::new(),
            verdict,
            runs,
        };
        assert!(c.columns().contains(&("settled_ms", "settled after (ms)")));
        assert_eq!(
            c.cell(&c.runs[2].row, "settled_ms").as_deref(),
            Some("over 1m")
        );
        assert_eq!(c.cell(&c.runs[1].row, "settled_ms"), None);
        assert_eq!(c.runs[1].row.cell("settled_ms"), "1800");
        let html = render(&c, &[]);
        assert!(html.contains("every run --until recovered"), "{html}");
        assert!(html.contains("over 1m"));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["until"]["max_ms"], 60_000);
        assert_eq!(json["runs"][2]["row"]["settled"], false);
        assert!(json["runs"][2]["row"].get("settled_ms").is_none());

        c.until = None;
        assert!(!c.columns().iter().any(|(col, _)| *col == "settled_ms"));
        assert!(!render(&c, &[]).contains("settled after"));
        let json = serde_json::to_value(&c).unwrap();
        assert!(
            json.get("until").is_none(),
            "absent for runs of the duration"
        );
    }
}
