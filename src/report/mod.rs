//! HTML reports: one self-contained file per run (and one per comparison, one per capacity
//! search), drawn from results.json alone — no network requests, no scripts, no fonts to fetch;
//! it opens offline and prints. Numbers a reader (or a test) may want to check carry a
//! `data-key` attribute naming the results.json field they come from. The markup is written
//! with maud, which escapes everything interpolated: names, profiles and threshold expressions
//! come from the user's files.

pub mod capacity;
pub mod compare;
pub mod svg;
pub mod text;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use maud::{DOCTYPE, Markup, PreEscaped, Render, html};

use crate::metrics::close_code_name;
use crate::metrics::generator::GeneratorSample;
use crate::metrics::{LatencySummary, Point, decode_histogram};
use crate::results::conversation::ConversationResults;
use crate::results::{EndReason, GroupSeries, LatencyTable, Results, Totals};
use crate::units::ms_text;
use svg::{Chart, PALETTE, Series, XScale, bars, line_chart};

pub const CSS: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b; margin: 24px auto; max-width: 1100px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 14px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 12px; } th, td { padding: 3px 10px; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; } th { background: #f6f6f6; font-weight: 600; }
.meta td { text-align: left; } .muted { color: #666; } .warn { color: #b00020; font-weight: 600; }
.verdict { padding: 8px 12px; border-left: 4px solid #999; background: #f7f7f7; }
.pass { border-color: #2ca02c; } .fail { border-color: #d62728; }
td.fail { color: #b00020; font-weight: 600; }
.winner { font-weight: 700; background: #e8f5e9; }
pre { background: #f7f7f7; padding: 10px; overflow-x: auto; font-size: 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
svg.chart { background: #fff; border: 1px solid #e3e3e3; max-width: 100%; height: auto; }
svg .grid { stroke: #eee; } svg .axis { stroke: #888; } svg .tick { font-size: 10px; fill: #555; }
svg .label { font-size: 11px; fill: #333; } svg .ctitle { font-size: 12px; font-weight: 600; fill: #222; }
svg .marker { stroke: #e6a700; stroke-dasharray: 4 3; } svg .mlabel { font-size: 10px; fill: #b07d00; }
ol.actions { margin: 4px 0 0; padding-left: 22px; font-size: 13px; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; } svg.chart, table { break-inside: avoid; } }
"#;

/// A whole page: the head every report shares (the CSS inline, nothing to fetch), a heading
/// naming the kind of page and the run, then `body`.
fn page(title: &str, heading: &str, name: &str, body: Markup) -> String {
    let mut out = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — " (name) }
                // Our own constant; escaping it would turn the quoted font names into `&quot;`,
                // which CSS does not read.
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { (heading) " · " span data-key="name" { (name) } }
                (body)
            }
        }
    }
    .into_string();
    out.push('\n');
    out
}

/// The last line of a page: which wsstorm drew it, from which file format.
fn footer(what: &str, schema: &str) -> Markup {
    html! {
        p.muted { "wsstorm " (env!("CARGO_PKG_VERSION")) " · " (what) " schema " (schema) }
    }
}

/// A chart from svg.rs, embedded as it is: svg.rs builds it with maud, so its text is already
/// escaped, and escaping it again would print the markup instead of drawing the chart.
fn inline_svg(svg: String) -> PreEscaped<String> {
    PreEscaped(svg)
}

fn header_row(headings: &[&str]) -> Markup {
    html! { tr { @for h in headings { th { (h) } } } }
}

/// A number with a `data-key` naming where it comes from.
fn num(key: &str, v: impl Render) -> Markup {
    html! { td data-key=(key) { (v) } }
}

/// The report.html beside a run's results.json, for a link from a page that lists runs.
fn report_link(results: &str) -> String {
    results.replace("results.json", "report.html")
}

/// The class of a threshold's (or a step's) outcome.
fn pass_class(passed: bool) -> &'static str {
    if passed { "pass" } else { "fail" }
}

/// A recovery time as results.json has it (0.1 ms steps), or `never`.
fn opt_ms(v: Option<f64>) -> String {
    v.map_or("never".into(), |ms| format!("{ms}"))
}

fn secs(ms: u64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

fn code_color(code: &str) -> &'static str {
    match code.parse::<u16>().unwrap_or(0) {
        1000 => "#2ca02c",
        1001 | 1012 | 1013 => "#ff7f0e",
        4000..=4999 => "#9467bd",
        _ => "#d62728",
    }
}

/// A close code with its name, for legends and bars.
fn code_label(code: &str) -> String {
    format!("{code} {}", code.parse().map(close_code_name).unwrap_or(""))
}

/// Points of a quantile curve for a percentile-distribution plot (HdrHistogram style).
pub fn quantile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let steps = 120;
    (0..=steps)
        .map(|k| {
            // Evenly spaced on the log axis, from 0 % up to 99.999 %.
            let q = 1.0 - 10f64.powf(-5.0 * f64::from(k) / f64::from(steps));
            (q, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect()
}

/// The timeline points up to the end of the run. The last point closes the interval in which
/// clients shut down after the end; it is in the totals but would draw everyone leaving, so the
/// charts stop at the end of the run.
fn charted_points(r: &Results) -> &[Point] {
    let end = r.duration_ms + 1;
    let shown = r
        .timeline
        .points
        .iter()
        .take_while(|p| p.t_ms <= end)
        .count();
    &r.timeline.points[..shown]
}

fn chart(title: &str, y_label: &str, series: Vec<Series>, markers: &[(f64, String)]) -> Markup {
    inline_svg(line_chart(&Chart {
        title: title.into(),
        x_label: "seconds since start".into(),
        y_label: y_label.into(),
        series,
        markers: markers.to_vec(),
        x_scale: XScale::Linear,
        width: 540,
        height: 240,
    }))
}

fn markers(r: &Results) -> Vec<(f64, String)> {
    r.timeline
        .actions
        .iter()
        .map(|a| (a.t_ms as f64 / 1000.0, a.action.clone()))
        .collect()
}

fn actions_list(r: &Results) -> Markup {
    html! {
        @if !r.timeline.actions.is_empty() {
            ol.actions {
                @for (i, a) in r.timeline.actions.iter().enumerate() {
                    li {
                        (secs(a.t_ms)) "s — " (a.action) " (" (a.connections) " connections open"
                        @if let Some(peak) = peak_attempts_after(r, i) {
                            "; then at most " (peak) " attempts in 100 ms"
                        }
                        ")"
                    }
                }
            }
        }
    }
}

/// The most attempts in one timeline interval after action `i` fired, until the next action
/// (or the end), from `timeline.effects`: the reconnect spike it caused, so a drop-all and a
/// drain in one run compare side by side. `None` when nothing was attempted then.
fn peak_attempts_after(r: &Results, i: usize) -> Option<u64> {
    let a = &r.timeline.actions[i];
    r.timeline
        .effects
        .get(i)
        .filter(|e| e.action == a.action && e.t_ms == a.t_ms)
        .map(|e| e.peak_attempts_per_interval)
        .filter(|&n| n > 0)
}

fn totals_table(prefix: &str, t: &Totals) -> Markup {
    let k = |f: &str| format!("{prefix}{f}");
    let statuses: u64 = t.handshake_status.values().sum();
    html! {
        table {
            (header_row(&[
                "clients", "attempts", "opened", "failed", "peak connected", "connected at end",
                "client closes", "gave up", "dead detected",
            ]))
            tr {
                (num(&k("clients"), t.clients))
                (num(&k("connect_attempts"), t.connect_attempts))
                (num(&k("opened"), t.opened))
                td { (t.connect_errors.total() + statuses) }
                (num(&k("peak_connected"), t.peak_connected))
                (num(&k("connected_at_end"), t.connected_at_end))
                (num(&k("client_closes"), t.client_closes))
                (num(&k("gave_up"), t.gave_up))
                (num(&k("dead_detected"), t.dead_detected))
            }
        }
        @let fleet = [
            ("churn_drops", t.churn_drops, "connections the clients dropped themselves (churn)"),
            ("sessions_ended", t.sessions_ended, "clients that left (session lifetime or a stage's ramp-down)"),
            ("clients_arrived", t.clients_arrived, "clients that arrived (each start, stage visit and replacement)"),
            ("network_switches", t.network_switches, "connections given up on a network switch"),
            ("duplicate_connections", t.duplicate_connections, "connections left open by a duplicate reconnect"),
            ("duplicate_received", t.duplicate_received, "messages those received: a second copy"),
        ];
        @if fleet.iter().any(|(key, n, _)| *n > 0 && *key != "clients_arrived") {
            p.fleet {
                "The clients' own doing: "
                @for (i, (key, n, what)) in fleet.iter().filter(|(_, n, _)| *n > 0).enumerate() {
                    @if i > 0 { "; " }
                    (num_span(&k(key), *n)) " " (what)
                }
                "."
            }
        }
        @if t.stalled > 0 {
            p {
                "Stalled: " (num_span(&k("stalled"), t.stalled))
                " subscribed connections stayed open while their stream delivered nothing for \
                 stall_after (ghost connections)."
            }
        }
    }
}

/// A figure inside running text, keyed like [`num`]'s cells.
fn num_span(key: &str, v: u64) -> Markup {
    html! { span data-key=(key) { (v) } }
}

fn latency_table(prefix: &str, l: &LatencyTable) -> Markup {
    // TLS and dead-connection detection only happen with a wss:// target or heartbeats; for
    // other runs their rows would only say "no samples".
    let rows = LatencyTable::KINDS
        .into_iter()
        .filter_map(|k| Some((k.name(), l.get(k)?)))
        .filter(|(name, s)| s.count > 0 || !matches!(*name, "tls" | "dead_detect"));
    html! {
        table {
            (header_row(&["ms", "count", "min", "p50", "p90", "p99", "p99.9", "max"]))
            @for (name, s) in rows {
                @let k = |f: &str| format!("{prefix}{name}.{f}");
                tr {
                    td { (name) }
                    (num(&k("count"), s.count))
                    @if s.count == 0 {
                        td.muted colspan="6" { "no samples" }
                    } @else {
                        td { (ms_text(s.min)) }
                        td data-key=(k("p50")) data-us=(s.p50) { (ms_text(s.p50)) }
                        td { (ms_text(s.p90)) }
                        td data-key=(k("p99")) data-us=(s.p99) { (ms_text(s.p99)) }
                        td { (ms_text(s.p999)) }
                        td { (ms_text(s.max)) }
                    }
                }
            }
        }
    }
}

/// A latency distribution as a curve by percentile, when it has samples (its histogram is in
/// the summary).
fn percentile_series(name: &str, color: &str, s: &LatencySummary) -> Option<Series> {
    let points = decode_histogram(&s.hdr)
        .map(|h| quantile_curve(&h))
        .unwrap_or_default();
    (!points.is_empty()).then(|| Series {
        name: name.into(),
        color: color.into(),
        points,
    })
}

fn percentile_chart(title: String, series: Vec<Series>) -> String {
    line_chart(&Chart {
        title,
        x_label: "percentile".into(),
        y_label: "ms".into(),
        series,
        markers: Vec::new(),
        x_scale: XScale::Percentile,
        width: 540,
        height: 220,
    })
}

fn percentile_plots(l: &LatencyTable) -> Markup {
    let plots = [
        ("connect", &l.connect),
        ("handshake", &l.handshake),
        ("rtt", &l.rtt),
        ("reconnect", &l.reconnect),
    ]
    .into_iter()
    .enumerate()
    .filter_map(|(i, (name, s))| {
        let series = percentile_series(name, PALETTE[i], s)?;
        Some(percentile_chart(
            format!("{name} latency by percentile"),
            vec![series],
        ))
    });
    html! { div.charts { @for svg in plots { (inline_svg(svg)) } } }
}

fn verdict(r: &Results) -> Markup {
    let Some(passed) = r.thresholds_passed() else {
        return html! {
            div.verdict { "No thresholds were set for this run: the figures below are the result." }
        };
    };
    let failed = r.thresholds.iter().filter(|t| !t.passed).count();
    html! {
        div.verdict.(pass_class(passed)) data-key="verdict" {
            @if passed {
                "Passed: all " (r.thresholds.len()) " thresholds held."
            } @else {
                "FAILED: " (failed) " of " (r.thresholds.len()) " thresholds did not hold."
            }
        }
        table #thresholds {
            (header_row(&["threshold", "measured", "limit", "result"]))
            @for (i, t) in r.thresholds.iter().enumerate() {
                tr {
                    td { (t.expression) }
                    td data-key={ "thresholds." (i) ".measured" } { (t.measured_text()) }
                    td { (t.op) " " (t.limit_text()) }
                    td.(pass_class(t.passed)) {
                        (if t.passed { "pass" } else { "FAIL" })
                        @if let Some(ms) = t.aborted_at_ms {
                            " — stopped the run at " (secs(ms)) " s"
                        }
                    }
                }
            }
        }
    }
}

/// The run's curves over time; `xs` are the seconds of the timeline points shown.
/// Events per second at each point: the count over the second that ends there (the first
/// second's points count what there is). The same definition as the summary's peak
/// attempts/s and the dashboard's rates, so the chart's peak is the summary's peak.
fn per_second(counts: impl Iterator<Item = u64>, interval_s: f64) -> Vec<f64> {
    let window = ((1.0 / interval_s).round() as usize).max(1);
    let counts: Vec<u64> = counts.collect();
    (0..counts.len())
        .map(|i| {
            counts[(i + 1).saturating_sub(window)..=i]
                .iter()
                .sum::<u64>() as f64
        })
        .collect()
}

fn over_time(r: &Results, xs: &[f64], interval_s: f64, m: &[(f64, String)]) -> Markup {
    let points = |f: &dyn Fn(&Point) -> f64| -> Vec<(f64, f64)> {
        xs.iter()
            .zip(&r.timeline.points)
            .map(|(x, p)| (*x, f(p)))
            .collect()
    };
    let rate = |f: &dyn Fn(&Point) -> u64| -> Vec<(f64, f64)> {
        xs.iter()
            .copied()
            .zip(per_second(r.timeline.points.iter().map(f), interval_s))
            .collect()
    };
    let one = |name: &str, color: &str, points| {
        vec![Series {
            name: name.into(),
            color: color.into(),
            points,
        }]
    };
    let by_code = r
        .timeline
        .close_codes
        .iter()
        .map(|(code, series)| Series {
            name: code_label(code),
            color: code_color(code).into(),
            points: xs
                .iter()
                .copied()
                .zip(per_second(series.iter().copied(), interval_s))
                .collect(),
        })
        .collect();
    // Interval percentiles, in ms; an interval that measured none is a gap in the line (not 0,
    // and not a line drawn across it).
    let interval = |name: &str, color: &str, f: fn(&Point) -> Option<u64>| Series {
        name: name.into(),
        color: color.into(),
        points: xs
            .iter()
            .zip(&r.timeline.points)
            .map(|(x, p)| (*x, f(p).map_or(f64::NAN, |us| us as f64 / 1000.0)))
            .collect(),
    };
    let latency = vec![
        interval("rtt p50", PALETTE[2], |p| p.rtt_p50_us),
        interval("rtt p99", PALETTE[1], |p| p.rtt_p99_us),
        interval("handshake p50", PALETTE[0], |p| p.handshake_p50_us),
        interval("handshake p99", PALETTE[3], |p| p.handshake_p99_us),
    ];
    let by_status = r
        .timeline
        .handshake_status
        .iter()
        .enumerate()
        .map(|(i, (status, series))| Series {
            name: format!("HTTP {status}"),
            color: PALETTE[(i + 1) % PALETTE.len()].into(),
            points: xs
                .iter()
                .copied()
                .zip(per_second(series.iter().copied(), interval_s))
                .collect(),
        })
        .collect();
    html! {
        h2 { "Over time" }
        div.charts {
            (chart(
                "connected clients",
                "clients",
                one("connected", PALETTE[2], points(&|p| p.connected as f64)),
                m,
            ))
            (chart(
                "connect attempts per second (each point: the second before it)",
                "attempts/s",
                one("attempts/s", PALETTE[0], rate(&|p| p.attempts)),
                m,
            ))
            (chart("closes per second by close code", "closes/s", by_code, m))
            (chart(
                "failed attempts per second",
                "errors/s",
                one("errors/s", PALETTE[1], rate(&|p| p.errors)),
                m,
            ))
            (chart("latency per interval (each point: its 100 ms)", "ms", latency, m))
            (chart(
                "dead connections detected per second",
                "dead/s",
                one("dead/s", PALETTE[4], rate(&|p| p.dead_detected)),
                m,
            ))
            @if !r.timeline.handshake_status.is_empty() {
                (chart("refused upgrades per second by HTTP status", "answers/s", by_status, m))
            }
        }
        (actions_list(r))
        (effects_table(r))
    }
}

/// What followed each action (`timeline.effects`): losses, retry pressure, recovery, and the
/// round trip before and after.
fn effects_table(r: &Results) -> Markup {
    let ms =
        |us: Option<u64>| us.map_or("–".to_string(), |us| format!("{:.1}", us as f64 / 1000.0));
    html! {
        @if !r.timeline.effects.is_empty() {
            h3 { "What each action did" }
            p.muted {
                "Each action's window runs until the next action (or the end). Losses are closes "
                "by the server or the network plus dead detections; recovery is the time until "
                "connected was back at its level before the action; rtt p99 is the highest "
                "interval p99 in the second before and in the window."
            }
            table #effects {
                (header_row(&[
                    "#", "at (s)", "action", "until (s)", "open when fired", "lost",
                    "closes by code", "dead", "peak attempts/s", "peak attempts per interval",
                    "connected before → low", "back after (ms)", "rtt p99 before → after (ms)",
                    "handshake p99 before → after (ms)",
                ]))
                @for (i, e) in r.timeline.effects.iter().enumerate() {
                    @let k = |f: &str| format!("timeline.effects.{i}.{f}");
                    tr {
                        td { (i + 1) }
                        td { (secs(e.t_ms)) }
                        td { (e.action) }
                        td { (secs(e.until_ms)) }
                        (num(&k("connections"), e.connections))
                        (num(&k("losses"), e.losses))
                        td {
                            @for (n, (code, count)) in e.close_codes.iter().enumerate() {
                                @if n > 0 { ", " }
                                (code) ": " (count)
                            }
                        }
                        (num(&k("dead_detected"), e.dead_detected))
                        (num(&k("peak_attempts_per_s"), e.peak_attempts_per_s))
                        (num(&k("peak_attempts_per_interval"), e.peak_attempts_per_interval))
                        td { (e.connected_before) " → " (e.connected_low) }
                        @match e.recovery_ms {
                            Some(v) => (num(&k("recovery_ms"), v)),
                            None => td { "not in the window" },
                        }
                        td { (ms(e.rtt_p99_before_us)) " → " (ms(e.rtt_p99_after_us)) }
                        td { (ms(e.handshake_p99_before_us)) " → " (ms(e.handshake_p99_after_us)) }
                    }
                }
            }
        }
    }
}

fn close_codes_and_errors(t: &Totals) -> Markup {
    let mut codes: Vec<(&String, &u64)> = t.close_codes.iter().collect();
    codes.sort_by(|a, b| b.1.cmp(a.1));
    let bar_rows: Vec<(String, u64, String)> = codes
        .iter()
        .map(|(c, n)| (code_label(c), **n, code_color(c).to_string()))
        .collect();
    html! {
        h2 { "Close codes, handshakes and connect errors" }
        @if !bar_rows.is_empty() {
            (inline_svg(bars("closes by close code (whole run)", &bar_rows, 720)))
        }
        table {
            (header_row(&["close code", "name", "count"]))
            @for (c, n) in &codes {
                tr {
                    td { (c) }
                    td { (c.parse().map(close_code_name).unwrap_or("")) }
                    (num(&format!("totals.close_codes.{c}"), n))
                }
            }
        }
        @if !t.close_reasons.is_empty() {
            h3 { "Close reasons" }
            table #close-reasons {
                (header_row(&["close code", "reason", "count"]))
                @for (c, reasons) in &t.close_reasons {
                    @for (reason, n) in by_count(reasons) {
                        tr { td { (c) } td { (reason) } td { (n) } }
                    }
                }
            }
        }
        @if !t.client_close_codes.is_empty() {
            h3 { "Closes the client sent: the server broke the protocol" }
            table {
                (header_row(&["close code", "name", "count"]))
                @for (c, n) in &t.client_close_codes {
                    tr {
                        td { (c) }
                        td { (c.parse().map(close_code_name).unwrap_or("")) }
                        (num(&format!("totals.client_close_codes.{c}"), n))
                    }
                }
            }
        }
        h3 { "Handshake answers other than 101" }
        table {
            (header_row(&["HTTP status", "count"]))
            @for (s, n) in &t.handshake_status {
                tr { td { (s) } (num(&format!("totals.handshake_status.{s}"), n)) }
            }
            @if t.handshake_status.is_empty() {
                tr { td.muted colspan="2" { "none" } }
            }
        }
        h3 { "Connect errors" }
        table {
            (header_row(&["kind", "count"]))
            @for (k, v) in t.connect_errors.kinds() {
                tr { td { (k) } (num(&format!("totals.connect_errors.{k}"), v)) }
            }
        }
    }
}

fn storm_and_messages(r: &Results) -> Markup {
    let st = &r.storm;
    let a = &st.attempts_per_client;
    let mm = &r.totals.messages;
    html! {
        h2 { "Storm" }
        table {
            (header_row(&[
                "lost", "back", "50 % back (ms)", "95 % back (ms)", "99 % back (ms)",
                "peak attempts/s", "peak retries/s", "peak retries in 100 ms",
                "attempts per client p50 / p99 / max", "gave up",
            ]))
            tr {
                (num("storm.losses", st.losses))
                (num("storm.recovered", st.recovered))
                (num("storm.recovery_ms.p50", opt_ms(st.recovery_ms.p50)))
                (num("storm.recovery_ms.p95", opt_ms(st.recovery_ms.p95)))
                (num("storm.recovery_ms.p99", opt_ms(st.recovery_ms.p99)))
                (num("storm.peak_attempts_per_s", st.peak_attempts_per_s))
                (num("storm.peak_retries_per_s", st.peak_retries_per_s))
                (num("storm.peak_retries_per_100ms", st.peak_retries_per_100ms))
                td { (a.p50) " / " (a.p99) " / " (a.max) }
                (num("storm.gave_up", st.gave_up))
            }
        }
        h2 { "Messages" }
        table {
            (header_row(&["sent", "received", "lost", "duplicated", "out of order"]))
            tr {
                (num("totals.messages.sent", mm.sent))
                (num("totals.messages.received", mm.received))
                (num("totals.messages.lost", mm.lost))
                (num("totals.messages.duplicated", mm.duplicated))
                (num("totals.messages.out_of_order", mm.out_of_order))
            }
        }
    }
}

/// Values with their counts, the most frequent first (ties by value).
fn by_count(counts: &BTreeMap<String, u64>) -> Vec<(&String, u64)> {
    let mut v: Vec<(&String, u64)> = counts.iter().map(|(k, n)| (k, *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

/// A conversation section with something to show. (Close reasons alone make the results carry
/// an empty one for a run without a conversation.)
fn has_figures(c: &ConversationResults) -> bool {
    !c.steps.is_empty()
        || !c.streams.is_empty()
        || c.app_errors.count > 0
        || c.token_refreshes + c.token_refresh_failures > 0
}

/// Latency cells of a step or stream: p50, p90, p99, max (ms), or a note across them.
fn latency_cells(key: &str, l: &LatencySummary, none: &str) -> Markup {
    html! {
        @if l.count == 0 {
            td.muted colspan="4" { (none) }
        } @else {
            td data-key={ (key) ".p50" } data-us=(l.p50) { (ms_text(l.p50)) }
            td { (ms_text(l.p90)) }
            td data-key={ (key) ".p99" } data-us=(l.p99) { (ms_text(l.p99)) }
            td { (ms_text(l.max)) }
        }
    }
}

/// Steps, streams and application errors of a conversation; `prefix` is where they are in
/// results.json.
fn conversation_tables(prefix: &str, c: &ConversationResults) -> Markup {
    let a = &c.app_errors;
    html! {
        @if !c.steps.is_empty() {
            table.steps {
                (header_row(&[
                    "step", "sent", "matched", "timeouts", "abandoned", "errors",
                    "p50 ms", "p90 ms", "p99 ms", "max ms",
                ]))
                @for (name, s) in &c.steps {
                    @let k = |f: &str| format!("{prefix}steps.{name}.{f}");
                    tr {
                        td { (name) }
                        (num(&k("sent"), s.counts.sent))
                        (num(&k("matched"), s.counts.matched))
                        (num(&k("timeouts"), s.counts.timeouts))
                        (num(&k("abandoned"), s.counts.abandoned))
                        (num(&k("errors"), s.counts.errors))
                        (latency_cells(&k("latency_us"), &s.latency_us, "no replies"))
                    }
                }
            }
        }
        @if !c.streams.is_empty() {
            table.streams {
                (header_row(&[
                    "stream", "delivered", "lost", "duplicated", "out of order", "unreadable",
                    "delivery p50 ms", "p90 ms", "p99 ms", "max ms",
                ]))
                @for (name, s) in &c.streams {
                    @let k = |f: &str| format!("{prefix}streams.{name}.{f}");
                    tr {
                        td { (name) }
                        (num(&k("delivered"), s.counts.delivered))
                        (num(&k("lost"), s.counts.lost))
                        (num(&k("duplicated"), s.counts.duplicated))
                        (num(&k("out_of_order"), s.counts.out_of_order))
                        (num(&k("unreadable"), s.counts.unreadable))
                        (latency_cells(
                            &k("delivery_latency_us"),
                            &s.delivery_latency_us,
                            "no publish times",
                        ))
                    }
                }
            }
        }
        p {
            "Application errors: " span data-key={ (prefix) "app_errors.count" } { (a.count) }
            " (" span data-key={ (prefix) "app_errors.rate" } { (a.rate) }
            " % of messages received)"
            @if c.token_refreshes + c.token_refresh_failures > 0 {
                "; tokens refreshed "
                span data-key={ (prefix) "token_refreshes" } { (c.token_refreshes) }
                ", refreshes failed "
                span data-key={ (prefix) "token_refresh_failures" } { (c.token_refresh_failures) }
            }
        }
        @if !a.by_value.is_empty() {
            table.app-errors {
                (header_row(&["application error", "count"]))
                @for (v, n) in by_count(&a.by_value) {
                    tr { td { (v) } td { (n) } }
                }
            }
        }
    }
}

/// Latency of every step, and delivery latency of every stream, by percentile.
fn conversation_charts(c: &ConversationResults) -> Markup {
    let color = |i: usize| PALETTE[i % PALETTE.len()];
    let steps: Vec<Series> = c
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, (name, s))| percentile_series(name, color(i), &s.latency_us))
        .collect();
    let streams: Vec<Series> = c
        .streams
        .iter()
        .enumerate()
        .filter_map(|(i, (name, s))| percentile_series(name, color(i), &s.delivery_latency_us))
        .collect();
    html! {
        div.charts {
            @if !steps.is_empty() {
                (inline_svg(percentile_chart("step latency by percentile".into(), steps)))
            }
            @if !streams.is_empty() {
                (inline_svg(percentile_chart(
                    "stream delivery latency by percentile".into(),
                    streams,
                )))
            }
        }
    }
}

/// What the clients' conversations measured, all groups by name; then each group's, when
/// more than one group held a conversation.
fn conversation(r: &Results) -> Markup {
    let Some(c) = r.conversation.as_ref().filter(|c| has_figures(c)) else {
        return html! {};
    };
    let groups: Vec<(usize, &str, &ConversationResults)> = r
        .groups
        .iter()
        .enumerate()
        .filter_map(|(i, g)| {
            let gc = g.conversation.as_ref().filter(|c| has_figures(c))?;
            Some((i, g.name.as_str(), gc))
        })
        .collect();
    html! {
        h2 #conversation { "Conversation" }
        (conversation_tables("conversation.", c))
        (conversation_charts(c))
        @if groups.len() > 1 {
            @for (i, name, gc) in groups {
                h3 { "Group " (name) }
                (conversation_tables(&format!("groups.{i}.conversation."), gc))
            }
        }
    }
}

/// Groups side by side, when there is more than one; `xs` as for [`over_time`].
fn groups(r: &Results, xs: &[f64], interval_s: f64, m: &[(f64, String)]) -> Markup {
    if r.groups.len() < 2 {
        return html! {};
    }
    let by_group = |f: &dyn Fn(&GroupSeries) -> &[u64], rate: bool| {
        r.groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let values = f(&g.timeline).iter().copied();
                let values: Vec<f64> = if rate {
                    per_second(values, interval_s)
                } else {
                    values.map(|v| v as f64).collect()
                };
                Series {
                    name: g.name.clone(),
                    color: PALETTE[i % PALETTE.len()].into(),
                    points: xs.iter().copied().zip(values).collect(),
                }
            })
            .collect()
    };
    html! {
        h2 { "Groups" }
        div.charts {
            (chart("connected clients by group", "clients", by_group(&|t| &t.connected, false), m))
            (chart(
                "connect attempts per second by group",
                "attempts/s",
                by_group(&|t| &t.attempts, true),
                m,
            ))
        }
        @for (i, g) in r.groups.iter().enumerate() {
            @let codes: Vec<String> = g
                .totals
                .close_codes
                .iter()
                .map(|(c, n)| format!("{c} × {n}"))
                .collect();
            @let recovery = &g.storm.recovery_ms;
            @let mm = &g.totals.messages;
            h3 { (g.name) }
            (totals_table(&format!("groups.{i}.totals."), &g.totals))
            p {
                "close codes: " (if codes.is_empty() { "none".into() } else { codes.join(", ") })
                "; recovery 50/95/99 %: " (opt_ms(recovery.p50)) " / " (opt_ms(recovery.p95))
                " / " (opt_ms(recovery.p99)) " ms; rtt p99 " (ms_text(g.latency_us.rtt.p99))
                " ms; stream lost " (mm.lost) ", duplicated " (mm.duplicated)
                ", out of order " (mm.out_of_order)
            }
        }
    }
}

fn target_and_proxy(r: &Results) -> Markup {
    html! {
        @if let Some(s) = &r.server {
            h2 { "Embedded target" }
            table {
                (header_row(&[
                    "upgraded", "503", "401", "wasted handshakes", "dead detected",
                    "idle timeouts", "backpressure drops", "backpressure closes", "echoed",
                ]))
                tr {
                    (num("server.upgraded", s.upgraded))
                    (num("server.rejected_503", s.rejected_503))
                    (num("server.rejected_401", s.rejected_401))
                    (num("server.handshakes_wasted", s.handshakes_wasted))
                    (num("server.dead_detected", s.dead_detected))
                    (num("server.idle_timeouts", s.idle_timeouts))
                    (num("server.backpressure_dropped", s.backpressure_dropped))
                    (num("server.backpressure_closed", s.backpressure_closed))
                    (num("server.messages_echoed", s.messages_echoed))
                }
            }
            @if s.duplicate_connections + s.revoked + s.ghosted + s.duplicate_subscriptions > 0 {
                h3 { "Identities, ghosts and kept sessions" }
                table {
                    (header_row(&[
                        "identified", "duplicate connections", "revoked", "ghosted",
                        "withheld from ghosts", "duplicate subscriptions", "duplicate copies sent",
                    ]))
                    tr {
                        (num("server.identified", s.identified))
                        (num("server.duplicate_connections", s.duplicate_connections))
                        (num("server.revoked", s.revoked))
                        (num("server.ghosted", s.ghosted))
                        (num("server.ghost_withheld", s.ghost_withheld))
                        (num("server.duplicate_subscriptions", s.duplicate_subscriptions))
                        (num("server.stream_duplicate_copies", s.stream_duplicate_copies))
                    }
                }
            }
            // The target's own closes and refusals, when a profile asked for them.
            @let extra = [
                ("403 origin", "server.rejected_403", s.rejected_403),
                ("refused at max_connections", "server.refused_max_connections", s.refused_max_connections),
                ("refused per IP", "server.refused_per_ip", s.refused_per_ip),
                ("drained", "server.drained", s.drained),
                ("node restart closes", "server.node_restart_closes", s.node_restart_closes),
                ("lifetime closes", "server.lifetime_closes", s.lifetime_closes),
            ];
            @if extra.iter().any(|(_, _, n)| *n > 0) {
                table {
                    (header_row(&extra.iter().filter(|(_, _, n)| *n > 0).map(|(h, _, _)| *h).collect::<Vec<_>>()))
                    tr {
                        @for (_, key, n) in extra.iter().filter(|(_, _, n)| *n > 0) {
                            (num(key, *n))
                        }
                    }
                }
            }
        }
        @if let Some(p) = &r.proxy {
            h2 { "Fault proxy" }
            table {
                (header_row(&[
                    "accepted", "cut", "idle timeouts", "upstream errors", "bytes up", "bytes down",
                ]))
                tr {
                    (num("proxy.accepted", p.accepted))
                    (num("proxy.cut", p.cut))
                    (num("proxy.idle_timeouts", p.idle_timeouts))
                    (num("proxy.upstream_errors", p.upstream_errors))
                    (num("proxy.bytes_upstream", p.bytes_upstream))
                    (num("proxy.bytes_downstream", p.bytes_downstream))
                }
            }
        }
    }
}

fn generator(r: &Results, m: &[(f64, String)]) -> Markup {
    let g = &r.generator;
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let sx: Vec<f64> = g.samples.iter().map(|s| s.t_ms as f64 / 1000.0).collect();
    let sampled = |name: &str, color: &str, f: &dyn Fn(&GeneratorSample) -> f64| {
        vec![Series {
            name: name.into(),
            color: color.into(),
            points: sx.iter().zip(&g.samples).map(|(x, s)| (*x, f(s))).collect(),
        }]
    };
    html! {
        h2 { "Generator health" }
        @if g.warnings.is_empty() {
            p { "No sign that the load generator distorted the figures." }
        }
        @for w in &g.warnings {
            p.warn { "⚠ " (w) }
        }
        table {
            (header_row(&[
                "cpu user s", "cpu sys s", "peak rss MiB", "fd limit", "schedule lag p99 ms",
            ]))
            tr {
                td { (g.cpu_user_s) }
                td { (g.cpu_sys_s) }
                td { (format!("{:.1}", mib(g.peak_rss_bytes))) }
                td { (g.fd_limit) }
                td { (ms_text(g.schedule_lag_us.p99)) }
            }
        }
        @if !g.samples.is_empty() {
            div.charts {
                (chart(
                    "generator CPU",
                    "% of one core",
                    sampled("cpu", PALETTE[4], &|s| s.cpu_percent),
                    m,
                ))
                (chart(
                    "generator memory",
                    "RSS MiB",
                    sampled("rss", PALETTE[5], &|s| mib(s.rss_bytes)),
                    m,
                ))
            }
        }
        @if !r.shards.is_empty() {
            h3 { "Each part of the merged run" }
            p.muted { "Every shard's own generator: a late or saturated one shows here." }
            table data-key="shards" {
                (header_row(&[
                    "part", "started", "duration s", "ended", "clients", "connected at end",
                    "lag p99 ms", "lag max ms", "peak rss MiB", "cpu s", "warnings",
                ]))
                @for s in &r.shards {
                    tr {
                        td { (s.shard.as_ref().map_or_else(|| s.file.clone(), |i| format!("shard {}/{}", i.index, i.count))) }
                        td { (s.started_at) }
                        td { (format!("{:.1}", s.duration_ms as f64 / 1000.0)) }
                        td { (serde_json::to_value(s.end_reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) }
                        td { (s.clients) }
                        td { (s.connected_at_end) }
                        td { (ms_text(s.schedule_lag_p99_us)) }
                        td { (ms_text(s.schedule_lag_max_us)) }
                        td { (format!("{:.0}", mib(s.peak_rss_bytes))) }
                        td { (format!("{:.1}", s.cpu_s)) }
                        td { (s.warnings.join("; ")) }
                    }
                }
            }
        }
    }
}

/// The report for one run.
pub fn render(r: &Results) -> String {
    let xs: Vec<f64> = charted_points(r)
        .iter()
        .map(|p| p.t_ms as f64 / 1000.0)
        .collect();
    let interval_s = r.timeline.interval_ms.max(1) as f64 / 1000.0;
    let m = markers(r);
    let ended = match r.end_reason {
        EndReason::Completed => "completed",
        EndReason::Interrupted => "interrupted",
        EndReason::Stopped => "stopped",
        EndReason::Aborted => "aborted by a threshold",
        EndReason::Settled => "settled: every client connected or gave up",
        EndReason::MaxReached => "reached --max before every client settled",
    };
    let body = html! {
        p.muted { (r.description.as_deref().unwrap_or("")) }
        table.meta {
            tr { td { "target" } td data-key="target" { (r.target) } }
            tr { td { "started" } td data-key="started_at" { (r.started_at) } }
            tr { td { "duration" } td { span data-key="duration_ms" { (r.duration_ms) } " ms" } }
            tr { td { "seed" } td data-key="seed" { (r.seed) } }
            tr { td { "ended" } td data-key="end_reason" { (ended) } }
            @if let Some(u) = &r.until {
                tr { td { "until" } td { (u.mode) ": " (u.describe()) } }
            }
        }
        @if let Some(m) = &r.model {
            p.warn data-key="modelled" {
                "Modelled in virtual time by `wsstorm model`, not measured over sockets: "
                "the clients' and the target's rules, a fixed round trip of " (m.rtt_us)
                " µs, no CPU or kernel limits (" (m.events) " events in " (m.wall_ms) " ms)."
                @if !m.not_modelled.is_empty() {
                    " Left out: " (m.not_modelled.join("; ")) "."
                }
            }
        }
        h2 { "Verdict" }
        @if let Some(why) = &r.failed {
            p.warn { "✗ the run failed: " span data-key="failed" { (why) } }
        }
        @for w in &r.warnings {
            p.warn { "⚠ " (w) }
        }
        (verdict(r))
        h2 { "Summary" }
        (totals_table("totals.", &r.totals))
        (over_time(r, &xs, interval_s, &m))
        (close_codes_and_errors(&r.totals))
        h2 { "Latency" }
        (latency_table("latency_us.", &r.latency_us))
        (percentile_plots(&r.latency_us))
        (storm_and_messages(r))
        (conversation(r))
        (groups(r, &xs, interval_s, &m))
        (target_and_proxy(r))
        (generator(r, &m))
        h2 { "The profile that ran" }
        pre { (r.profile) }
        (footer("results", &r.schema))
    };
    page("wsstorm report", "wsstorm", &r.name, body)
}

/// Render `results` and write `report.html` beside them.
pub fn write(r: &Results, dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let path = dir.join("report.html");
    std::fs::write(&path, render(r))?;
    Ok(path)
}

/// Results to render in tests: a plain run, and one whose clients held a conversation.
#[cfg(test)]
pub(crate) mod fixture {
    use std::collections::BTreeMap;

    use hdrhistogram::Histogram;

    use crate::metrics::conversation::{SampleCounts, StreamCounts};
    use crate::metrics::summarize;
    use crate::results::conversation::{
        AppErrorResults, ConversationResults, StepResults, StreamResults,
    };
    use crate::results::{EndReason, GroupResults, LatencyTable, Results, Timeline, Totals};

    pub fn results() -> Results {
        Results {
            schema: crate::results::SCHEMA.into(),
            name: "plain".into(),
            description: None,
            seed: 1,
            run_id: None,
            started_at: "t".into(),
            duration_ms: 1000,
            end_reason: EndReason::Completed,
            until: None,
            target: "ws://x".into(),
            totals: Totals::default(),
            conversation: None,
            latency_us: LatencyTable::default(),
            storm: Default::default(),
            groups: Vec::new(),
            timeline: Timeline {
                interval_ms: 100,
                ..Timeline::default()
            },
            generator: Default::default(),
            server: None,
            proxy: None,
            thresholds: Vec::new(),
            profile: String::new(),
            warnings: Vec::new(),
            failed: None,
            modelled: false,
            model: None,
            shard: None,
            shards: Vec::new(),
            events: None,
        }
    }

    /// `ms` milliseconds, `n` times, as results keep latency (µs, with the histogram).
    fn latency(n: u64, ms: u64) -> crate::metrics::LatencySummary {
        let mut h = Histogram::<u64>::new(3).unwrap();
        h.record_n(ms * 1000, n).unwrap();
        summarize(&h, true)
    }

    /// Steps `hello` and a hostile `<i>req</i>`, a stream `prices`, application errors by
    /// value (one of them markup), close reasons of 4000 and 1001; in two groups, `subs`
    /// (everything) and `pubs` (only `hello`).
    pub fn conversation() -> Results {
        let step = |sent, matched, timeouts, abandoned, errors, ms| StepResults {
            counts: SampleCounts {
                sent,
                matched,
                timeouts,
                errors,
                skipped: 0,
                abandoned,
            },
            latency_us: if matched > 0 {
                latency(matched, ms)
            } else {
                Default::default()
            },
        };
        let c = ConversationResults {
            steps: BTreeMap::from([
                ("hello".into(), step(30, 30, 0, 0, 0, 2)),
                ("<i>req</i>".into(), step(1200, 1150, 40, 7, 3, 12)),
            ]),
            streams: BTreeMap::from([(
                "prices".into(),
                StreamResults {
                    counts: StreamCounts {
                        delivered: 5000,
                        lost: 12,
                        duplicated: 2,
                        out_of_order: 1,
                        unreadable: 0,
                    },
                    delivery_latency_us: latency(5000, 5),
                },
            )]),
            app_errors: AppErrorResults {
                count: 60,
                rate: 0.9,
                by_value: BTreeMap::from([
                    ("RATE_LIMITED".into(), 30),
                    ("<b>E42</b>".into(), 10),
                    ("E1".into(), 6),
                    ("E2".into(), 5),
                    ("E3".into(), 5),
                    ("E4".into(), 4),
                ]),
            },
            closes: Default::default(),
            token_refreshes: 4,
            token_refresh_failures: 1,
        };
        let mut r = results();
        r.name = "conv".into();
        r.totals.close_codes = BTreeMap::from([("4000".into(), 25), ("1001".into(), 3)]);
        r.totals.close_reasons = BTreeMap::from([
            (
                "4000".into(),
                BTreeMap::from([
                    ("kicked".into(), 10),
                    ("bye".into(), 12),
                    ("\u{1b}[31mred".into(), 2),
                    ("idle".into(), 1),
                ]),
            ),
            ("1001".into(), BTreeMap::from([("going away".into(), 3)])),
        ]);
        let pubs = ConversationResults {
            steps: BTreeMap::from([("hello".into(), step(10, 10, 0, 0, 0, 2))]),
            ..Default::default()
        };
        r.groups = vec![
            GroupResults {
                name: "subs".into(),
                conversation: Some(c.clone()),
                ..Default::default()
            },
            GroupResults {
                name: "pubs".into(),
                conversation: Some(pubs),
                ..Default::default()
            },
        ];
        r.conversation = Some(c);
        r
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_are_counts_over_the_trailing_second() {
        let r = super::per_second([1u64, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0].into_iter(), 0.1);
        assert_eq!(&r[..3], [1.0, 3.0, 6.0]);
        assert_eq!(r[9], 55.0, "a full second");
        assert_eq!(r[10], 65.0, "it slides");
        assert_eq!(r[11], 63.0);
        // Its peak is the storm's peak_attempts_per_s definition: the busiest full second.
        assert_eq!(r.iter().cloned().fold(0.0, f64::max), 65.0);
    }

    use super::*;
    use crate::results::FiredAction;

    #[test]
    fn what_the_user_wrote_is_text_not_markup() {
        let hostile = "<script>alert(\"x\")</script> & co";
        let mut r = fixture::results();
        r.name = hostile.into();
        r.description = Some(hostile.into());
        r.target = hostile.into();
        r.profile = hostile.into();
        r.timeline.actions = vec![FiredAction {
            t_ms: 500,
            action: hostile.into(),
            connections: 3,
        }];
        let html = render(&r);
        assert!(!html.contains("<script"), "{html}");
        let escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co";
        assert!(html.contains(&format!(r#"<span data-key="name">{escaped}</span>"#)));
        assert!(html.contains(&format!("<pre>{escaped}</pre>")));
        // Our own markup is not escaped: the CSS keeps its quotes, the charts are drawn.
        assert!(html.contains(r#""Segoe UI""#));
        assert!(html.contains("<svg class=\"chart\""));
    }

    #[test]
    fn quantile_curve_spans_the_log_axis() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 10).unwrap();
        }
        let c = quantile_curve(&h);
        assert_eq!(c.len(), 121);
        assert_eq!(c[0].0, 0.0);
        assert!((c[120].0 - 0.99999).abs() < 1e-9);
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1), "monotonic");
        assert!((c[120].1 - 100.0).abs() < 1.0, "max ~100 ms: {}", c[120].1);
    }

    #[test]
    fn a_conversation_has_its_section_with_every_name_escaped() {
        let html = render(&fixture::conversation());
        let req = "&lt;i&gt;req&lt;/i&gt;";
        for expect in [
            r#"<h2 id="conversation">Conversation</h2>"#,
            "<th>step</th><th>sent</th><th>matched</th><th>timeouts</th><th>abandoned</th>",
            r#"<td>hello</td><td data-key="conversation.steps.hello.sent">30</td>"#,
            &format!(r#"<td>{req}</td><td data-key="conversation.steps.{req}.sent">1200</td>"#),
            &format!(r#"<td data-key="conversation.steps.{req}.timeouts">40</td>"#),
            &format!(r#"<td data-key="conversation.steps.{req}.abandoned">7</td>"#),
            &format!(r#"<td data-key="conversation.steps.{req}.errors">3</td>"#),
            &format!(
                r#"<td data-key="conversation.steps.{req}.latency_us.p99" data-us="12007">12.0</td>"#
            ),
            r#"<td data-key="conversation.streams.prices.delivered">5000</td><td data-key="conversation.streams.prices.lost">12</td>"#,
            r#"<td data-key="conversation.streams.prices.out_of_order">1</td>"#,
            r#"<span data-key="conversation.app_errors.count">60</span>"#,
            r#"<span data-key="conversation.app_errors.rate">0.9</span>"#,
            r#"<span data-key="conversation.token_refresh_failures">1</span>"#,
            // By value, the most frequent first.
            "<tr><td>RATE_LIMITED</td><td>30</td></tr><tr><td>&lt;b&gt;E42&lt;/b&gt;</td><td>10</td></tr>",
            "step latency by percentile",
            "stream delivery latency by percentile",
            // Close reasons beside the close codes, the most frequent first.
            "<tr><td>4000</td><td>bye</td><td>12</td></tr><tr><td>4000</td><td>kicked</td>",
            "<td>1001</td><td>going away</td><td>3</td>",
            // Each group's own figures, as two groups held a conversation.
            "<h3>Group subs</h3>",
            r#"<td data-key="groups.1.conversation.steps.hello.matched">10</td>"#,
        ] {
            assert!(html.contains(expect), "missing {expect}");
        }
        assert!(!html.contains("<i>req"), "a name became markup");
        assert!(!html.contains("<b>E42"), "a value became markup");
    }

    #[test]
    fn one_group_with_a_conversation_gets_no_group_tables() {
        let mut r = fixture::conversation();
        r.groups[1].conversation = None;
        let html = render(&r);
        assert!(html.contains("Conversation</h2>"));
        assert!(!html.contains("<h3>Group "), "the totals are that group's");
    }

    #[test]
    fn no_conversation_no_section() {
        let plain = render(&fixture::results());
        assert!(!plain.contains("Conversation"));
        assert!(!plain.contains("Close reasons"));
        // Close reasons alone leave an empty section in results.json: nothing to show.
        let mut r = fixture::results();
        r.conversation = Some(Default::default());
        assert_eq!(render(&r), plain);
    }
}
