//! HTML reports: one self-contained file per run (and one per comparison), drawn from
//! results.json alone — no network requests, no scripts, no fonts to fetch; it opens offline
//! and prints. Numbers a reader (or a test) may want to check carry a `data-key` attribute
//! naming the results.json field they come from.

pub mod capacity;
pub mod compare;
pub mod svg;
pub mod text;

use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::metrics::decode_histogram;
use crate::report::text::close_code_name;
use crate::results::{LatencyTable, Results, Totals};
use svg::{Chart, PALETTE, Series, XScale, bars, esc, line_chart};

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

/// A number with a `data-key` naming where it comes from.
fn num(key: &str, v: impl std::fmt::Display) -> String {
    format!(r#"<td data-key="{}">{v}</td>"#, esc(key))
}

fn ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// A recovery time as results.json has it (0.1 ms steps), or `never`.
fn opt_ms(v: Option<f64>) -> String {
    v.map_or("never".into(), |ms| format!("{ms}"))
}

fn code_color(code: &str) -> &'static str {
    match code.parse::<u16>().unwrap_or(0) {
        1000 => "#2ca02c",
        1001 | 1012 | 1013 => "#ff7f0e",
        4000..=4999 => "#9467bd",
        _ => "#d62728",
    }
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

fn seconds(points_t_ms: impl Iterator<Item = u64>) -> Vec<f64> {
    points_t_ms.map(|t| t as f64 / 1000.0).collect()
}

fn chart(title: &str, y_label: &str, series: Vec<Series>, markers: &[(f64, String)]) -> String {
    line_chart(&Chart {
        title: title.into(),
        x_label: "seconds since start".into(),
        y_label: y_label.into(),
        series,
        markers: markers.to_vec(),
        x_scale: XScale::Linear,
        width: 540,
        height: 240,
    })
}

fn markers(r: &Results) -> Vec<(f64, String)> {
    r.timeline
        .actions
        .iter()
        .map(|a| (a.t_ms as f64 / 1000.0, a.action.clone()))
        .collect()
}

fn actions_list(r: &Results) -> String {
    if r.timeline.actions.is_empty() {
        return String::new();
    }
    let mut o = String::from(r#"<ol class="actions">"#);
    for a in &r.timeline.actions {
        let _ = write!(
            o,
            "<li>{:.1}s — {} ({} connections open)</li>",
            a.t_ms as f64 / 1000.0,
            esc(&a.action),
            a.connections
        );
    }
    o.push_str("</ol>");
    o
}

fn totals_table(prefix: &str, t: &Totals) -> String {
    let k = |f: &str| format!("{prefix}{f}");
    let statuses: u64 = t.handshake_status.values().sum();
    format!(
        r#"<table><tr><th>clients</th><th>attempts</th><th>opened</th><th>failed</th><th>peak connected</th><th>connected at end</th><th>client closes</th><th>gave up</th><th>dead detected</th></tr>
<tr>{}{}{}<td>{}</td>{}{}{}{}{}</tr></table>"#,
        num(&k("clients"), t.clients),
        num(&k("connect_attempts"), t.connect_attempts),
        num(&k("opened"), t.opened),
        t.connect_errors.total() + statuses,
        num(&k("peak_connected"), t.peak_connected),
        num(&k("connected_at_end"), t.connected_at_end),
        num(&k("client_closes"), t.client_closes),
        num(&k("gave_up"), t.gave_up),
        num(&k("dead_detected"), t.dead_detected),
    )
}

fn latency_table(prefix: &str, l: &LatencyTable) -> String {
    let mut o = String::from(
        "<table><tr><th>ms</th><th>count</th><th>min</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>",
    );
    for (name, s) in LatencyTable::KINDS
        .into_iter()
        .filter_map(|k| Some((k.name(), l.get(k)?)))
    {
        if s.count == 0 && (name == "tls" || name == "dead_detect") {
            continue;
        }
        let k = |f: &str| format!("{prefix}{name}.{f}");
        if s.count == 0 {
            let _ = write!(
                o,
                r#"<tr><td>{name}</td>{}<td colspan="6" class="muted">no samples</td></tr>"#,
                num(&k("count"), 0)
            );
            continue;
        }
        let _ = write!(
            o,
            r#"<tr><td>{name}</td>{}<td>{}</td><td data-key="{}" data-us="{}">{}</td><td>{}</td><td data-key="{}" data-us="{}">{}</td><td>{}</td><td>{}</td></tr>"#,
            num(&k("count"), s.count),
            ms(s.min),
            k("p50"),
            s.p50,
            ms(s.p50),
            ms(s.p90),
            k("p99"),
            s.p99,
            ms(s.p99),
            ms(s.p999),
            ms(s.max),
        );
    }
    o.push_str("</table>");
    o
}

fn percentile_plots(l: &LatencyTable) -> String {
    let mut o = String::from(r#"<div class="charts">"#);
    for (i, (name, s)) in [
        ("connect", &l.connect),
        ("handshake", &l.handshake),
        ("rtt", &l.rtt),
        ("reconnect", &l.reconnect),
    ]
    .iter()
    .enumerate()
    {
        let points = decode_histogram(&s.hdr)
            .map(|h| quantile_curve(&h))
            .unwrap_or_default();
        if points.is_empty() {
            continue;
        }
        o.push_str(&line_chart(&Chart {
            title: format!("{name} latency by percentile"),
            x_label: "percentile".into(),
            y_label: "ms".into(),
            series: vec![Series {
                name: (*name).into(),
                color: PALETTE[i].into(),
                points,
            }],
            markers: Vec::new(),
            x_scale: XScale::Percentile,
            width: 540,
            height: 220,
        }));
    }
    o.push_str("</div>");
    o
}

/// The report for one run.
pub fn render(r: &Results) -> String {
    let t = &r.totals;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>wsstorm report — {name}</title><style>{CSS}</style></head><body>
<h1>wsstorm · <span data-key="name">{name}</span></h1>
<p class="muted">{desc}</p>
<table class="meta">
<tr><td>target</td><td data-key="target">{target}</td></tr>
<tr><td>started</td><td data-key="started_at">{started}</td></tr>
<tr><td>duration</td><td><span data-key="duration_ms">{duration}</span> ms</td></tr>
<tr><td>seed</td><td data-key="seed">{seed}</td></tr>
<tr><td>ended</td><td data-key="end_reason">{end}</td></tr>
</table>
"#,
        name = esc(&r.name),
        desc = esc(r.description.as_deref().unwrap_or("")),
        target = esc(&r.target),
        started = esc(&r.started_at),
        duration = r.duration_ms,
        seed = r.seed,
        end = match r.end_reason {
            crate::results::EndReason::Completed => "completed",
            crate::results::EndReason::Interrupted => "interrupted",
            crate::results::EndReason::Stopped => "stopped",
            crate::results::EndReason::Aborted => "aborted by a threshold",
        },
    );

    o.push_str("<h2>Verdict</h2>");
    match r.thresholds_passed() {
        None => o.push_str(r#"<div class="verdict">No thresholds were set for this run: the figures below are the result.</div>"#),
        Some(passed) => {
            let failed = r.thresholds.iter().filter(|t| !t.passed).count();
            let _ = write!(
                o,
                r#"<div class="verdict {}" data-key="verdict">{}</div><table id="thresholds"><tr><th>threshold</th><th>measured</th><th>limit</th><th>result</th></tr>"#,
                if passed { "pass" } else { "fail" },
                if passed {
                    format!("Passed: all {} thresholds held.", r.thresholds.len())
                } else {
                    format!("FAILED: {failed} of {} thresholds did not hold.", r.thresholds.len())
                }
            );
            for (i, t) in r.thresholds.iter().enumerate() {
                let _ = write!(
                    o,
                    r#"<tr><td>{}</td><td data-key="thresholds.{i}.measured">{}</td><td>{} {}</td><td class="{}">{}{}</td></tr>"#,
                    esc(&t.expression),
                    esc(&t.measured_text()),
                    t.op,
                    esc(&t.limit_text()),
                    if t.passed { "pass" } else { "fail" },
                    if t.passed { "pass" } else { "FAIL" },
                    t.aborted_at_ms
                        .map(|ms| format!(" — stopped the run at {:.1} s", ms as f64 / 1000.0))
                        .unwrap_or_default()
                );
            }
            o.push_str("</table>");
        }
    }

    o.push_str("<h2>Summary</h2>");
    o.push_str(&totals_table("totals.", t));

    // Timeline charts. The last point closes the interval in which clients shut down after
    // the end; it is in the totals but would draw everyone leaving, so the charts stop at
    // the end of the run.
    let shown = r
        .timeline
        .points
        .iter()
        .take_while(|p| p.t_ms <= r.duration_ms + 1)
        .count();
    let xs = seconds(r.timeline.points[..shown].iter().map(|p| p.t_ms));
    let interval_s = r.timeline.interval_ms.max(1) as f64 / 1000.0;
    let m = markers(r);
    o.push_str("<h2>Over time</h2><div class=\"charts\">");
    o.push_str(&chart(
        "connected clients",
        "clients",
        vec![Series {
            name: "connected".into(),
            color: PALETTE[2].into(),
            points: xs
                .iter()
                .zip(&r.timeline.points)
                .map(|(x, p)| (*x, p.connected as f64))
                .collect(),
        }],
        &m,
    ));
    o.push_str(&chart(
        "connect attempts per second",
        "attempts/s",
        vec![Series {
            name: "attempts/s".into(),
            color: PALETTE[0].into(),
            points: xs
                .iter()
                .zip(&r.timeline.points)
                .map(|(x, p)| (*x, p.attempts as f64 / interval_s))
                .collect(),
        }],
        &m,
    ));
    o.push_str(&chart(
        "closes per second by close code",
        "closes/s",
        r.timeline
            .close_codes
            .iter()
            .map(|(code, series)| Series {
                name: format!("{code} {}", code.parse().map(close_code_name).unwrap_or("")),
                color: code_color(code).into(),
                points: xs
                    .iter()
                    .zip(series)
                    .map(|(x, n)| (*x, *n as f64 / interval_s))
                    .collect(),
            })
            .collect(),
        &m,
    ));
    o.push_str(&chart(
        "failed attempts per second",
        "errors/s",
        vec![Series {
            name: "errors/s".into(),
            color: PALETTE[1].into(),
            points: xs
                .iter()
                .zip(&r.timeline.points)
                .map(|(x, p)| (*x, p.errors as f64 / interval_s))
                .collect(),
        }],
        &m,
    ));
    o.push_str("</div>");
    o.push_str(&actions_list(r));

    // Close codes and handshakes.
    o.push_str("<h2>Close codes, handshakes and connect errors</h2>");
    let mut codes: Vec<(&String, &u64)> = t.close_codes.iter().collect();
    codes.sort_by(|a, b| b.1.cmp(a.1));
    o.push_str(&bars(
        "closes by close code (whole run)",
        &codes
            .iter()
            .map(|(c, n)| {
                (
                    format!("{c} {}", c.parse().map(close_code_name).unwrap_or("")),
                    **n,
                    code_color(c).to_string(),
                )
            })
            .collect::<Vec<_>>(),
        720,
    ));
    o.push_str("<table><tr><th>close code</th><th>name</th><th>count</th></tr>");
    for (c, n) in &codes {
        let _ = write!(
            o,
            "<tr><td>{c}</td><td>{}</td>{}</tr>",
            c.parse().map(close_code_name).unwrap_or(""),
            num(&format!("totals.close_codes.{c}"), n)
        );
    }
    o.push_str("</table>");
    o.push_str("<h3>Handshake answers other than 101</h3><table><tr><th>HTTP status</th><th>count</th></tr>");
    for (s, n) in &t.handshake_status {
        let _ = write!(
            o,
            "<tr><td>{s}</td>{}</tr>",
            num(&format!("totals.handshake_status.{s}"), n)
        );
    }
    if t.handshake_status.is_empty() {
        o.push_str(r#"<tr><td class="muted" colspan="2">none</td></tr>"#);
    }
    o.push_str("</table><h3>Connect errors</h3><table><tr><th>kind</th><th>count</th></tr>");
    for (k, v) in t.connect_errors.kinds() {
        let _ = write!(
            o,
            "<tr><td>{k}</td>{}</tr>",
            num(&format!("totals.connect_errors.{k}"), v)
        );
    }
    o.push_str("</table>");

    // Latency.
    o.push_str("<h2>Latency</h2>");
    o.push_str(&latency_table("latency_us.", &r.latency_us));
    o.push_str(&percentile_plots(&r.latency_us));

    // Storm.
    let st = &r.storm;
    o.push_str("<h2>Storm</h2><table><tr><th>lost</th><th>back</th><th>50 % back (ms)</th><th>95 % back (ms)</th><th>99 % back (ms)</th><th>peak attempts/s</th><th>peak retries/s</th><th>peak retries in 100 ms</th><th>attempts per client p50 / p99 / max</th><th>gave up</th></tr><tr>");
    let _ = write!(
        o,
        "{}{}{}{}{}{}{}{}<td>{} / {} / {}</td>{}</tr></table>",
        num("storm.losses", st.losses),
        num("storm.recovered", st.recovered),
        num("storm.recovery_ms.p50", opt_ms(st.recovery_ms.p50)),
        num("storm.recovery_ms.p95", opt_ms(st.recovery_ms.p95)),
        num("storm.recovery_ms.p99", opt_ms(st.recovery_ms.p99)),
        num("storm.peak_attempts_per_s", st.peak_attempts_per_s),
        num("storm.peak_retries_per_s", st.peak_retries_per_s),
        num("storm.peak_retries_per_100ms", st.peak_retries_per_100ms),
        st.attempts_per_client.p50,
        st.attempts_per_client.p99,
        st.attempts_per_client.max,
        num("storm.gave_up", st.gave_up),
    );

    // Messages.
    let mm = &t.messages;
    let _ = write!(
        o,
        "<h2>Messages</h2><table><tr><th>sent</th><th>received</th><th>lost</th><th>duplicated</th><th>out of order</th></tr><tr>{}{}{}{}{}</tr></table>",
        num("totals.messages.sent", mm.sent),
        num("totals.messages.received", mm.received),
        num("totals.messages.lost", mm.lost),
        num("totals.messages.duplicated", mm.duplicated),
        num("totals.messages.out_of_order", mm.out_of_order),
    );

    // Groups.
    if r.groups.len() > 1 {
        o.push_str("<h2>Groups</h2>");
        let gx = xs.clone();
        o.push_str("<div class=\"charts\">");
        o.push_str(&chart(
            "connected clients by group",
            "clients",
            r.groups
                .iter()
                .enumerate()
                .map(|(i, g)| Series {
                    name: g.name.clone(),
                    color: PALETTE[i % PALETTE.len()].into(),
                    points: gx
                        .iter()
                        .zip(&g.timeline.connected)
                        .map(|(x, c)| (*x, *c as f64))
                        .collect(),
                })
                .collect(),
            &m,
        ));
        o.push_str(&chart(
            "connect attempts per second by group",
            "attempts/s",
            r.groups
                .iter()
                .enumerate()
                .map(|(i, g)| Series {
                    name: g.name.clone(),
                    color: PALETTE[i % PALETTE.len()].into(),
                    points: gx
                        .iter()
                        .zip(&g.timeline.attempts)
                        .map(|(x, a)| (*x, *a as f64 / interval_s))
                        .collect(),
                })
                .collect(),
            &m,
        ));
        o.push_str("</div>");
        for (i, g) in r.groups.iter().enumerate() {
            let _ = write!(o, "<h3>{}</h3>", esc(&g.name));
            o.push_str(&totals_table(&format!("groups.{i}.totals."), &g.totals));
            let codes: Vec<String> = g
                .totals
                .close_codes
                .iter()
                .map(|(c, n)| format!("{c} × {n}"))
                .collect();
            let m = &g.totals.messages;
            let _ = write!(
                o,
                "<p>close codes: {}; recovery 50/95/99 %: {} / {} / {} ms; rtt p99 {} ms; stream lost {}, duplicated {}, out of order {}</p>",
                if codes.is_empty() {
                    "none".into()
                } else {
                    codes.join(", ")
                },
                opt_ms(g.storm.recovery_ms.p50),
                opt_ms(g.storm.recovery_ms.p95),
                opt_ms(g.storm.recovery_ms.p99),
                ms(g.latency_us.rtt.p99),
                m.lost,
                m.duplicated,
                m.out_of_order
            );
        }
    }

    // Target and proxy.
    if let Some(s) = &r.server {
        let _ = write!(
            o,
            "<h2>Embedded target</h2><table><tr><th>upgraded</th><th>503</th><th>401</th><th>wasted handshakes</th><th>dead detected</th><th>idle timeouts</th><th>backpressure drops</th><th>backpressure closes</th><th>echoed</th></tr><tr>{}{}{}{}{}{}{}{}{}</tr></table>",
            num("server.upgraded", s.upgraded),
            num("server.rejected_503", s.rejected_503),
            num("server.rejected_401", s.rejected_401),
            num("server.handshakes_wasted", s.handshakes_wasted),
            num("server.dead_detected", s.dead_detected),
            num("server.idle_timeouts", s.idle_timeouts),
            num("server.backpressure_dropped", s.backpressure_dropped),
            num("server.backpressure_closed", s.backpressure_closed),
            num("server.messages_echoed", s.messages_echoed),
        );
    }
    if let Some(p) = &r.proxy {
        let _ = write!(
            o,
            "<h2>Fault proxy</h2><table><tr><th>accepted</th><th>cut</th><th>idle timeouts</th><th>upstream errors</th><th>bytes up</th><th>bytes down</th></tr><tr>{}{}{}{}{}{}</tr></table>",
            num("proxy.accepted", p.accepted),
            num("proxy.cut", p.cut),
            num("proxy.idle_timeouts", p.idle_timeouts),
            num("proxy.upstream_errors", p.upstream_errors),
            num("proxy.bytes_upstream", p.bytes_upstream),
            num("proxy.bytes_downstream", p.bytes_downstream),
        );
    }

    // Generator.
    let g = &r.generator;
    o.push_str("<h2>Generator health</h2>");
    if g.warnings.is_empty() {
        o.push_str("<p>No sign that the load generator distorted the figures.</p>");
    } else {
        for w in &g.warnings {
            let _ = write!(o, r#"<p class="warn">⚠ {}</p>"#, esc(w));
        }
    }
    let _ = write!(
        o,
        "<table><tr><th>cpu user s</th><th>cpu sys s</th><th>peak rss MiB</th><th>fd limit</th><th>schedule lag p99 ms</th></tr><tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr></table>",
        g.cpu_user_s,
        g.cpu_sys_s,
        g.peak_rss_bytes as f64 / (1 << 20) as f64,
        g.fd_limit,
        ms(g.schedule_lag_us.p99)
    );
    if !g.samples.is_empty() {
        let sx: Vec<f64> = g.samples.iter().map(|s| s.t_ms as f64 / 1000.0).collect();
        o.push_str("<div class=\"charts\">");
        o.push_str(&chart(
            "generator CPU",
            "% of one core",
            vec![Series {
                name: "cpu".into(),
                color: PALETTE[4].into(),
                points: sx
                    .iter()
                    .zip(&g.samples)
                    .map(|(x, s)| (*x, s.cpu_percent))
                    .collect(),
            }],
            &m,
        ));
        o.push_str(&chart(
            "generator memory",
            "RSS MiB",
            vec![Series {
                name: "rss".into(),
                color: PALETTE[5].into(),
                points: sx
                    .iter()
                    .zip(&g.samples)
                    .map(|(x, s)| (*x, s.rss_bytes as f64 / (1 << 20) as f64))
                    .collect(),
            }],
            &m,
        ));
        o.push_str("</div>");
    }

    let _ = writeln!(
        o,
        "<h2>The profile that ran</h2><pre>{}</pre><p class=\"muted\">wsstorm {} · results schema {}</p></body></html>",
        esc(&r.profile),
        env!("CARGO_PKG_VERSION"),
        esc(&r.schema)
    );
    o
}

/// Render `results` and write `report.html` beside them.
pub fn write(r: &Results, dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let path = dir.join("report.html");
    std::fs::write(&path, render(r))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
