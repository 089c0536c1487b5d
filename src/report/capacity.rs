//! `capacity.html`: the verdict, the per-step table and each threshold's measure against the
//! load. Self-contained like every report.

use std::fmt::Write;

use super::CSS;
use super::svg::{Chart, PALETTE, Series, XScale, esc, line_chart};
use crate::results::capacity::{Capacity, Limit, fmt_load};

/// load. Self-contained like every report.
pub fn render(c: &Capacity) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>wsstorm capacity — {name}</title><style>{CSS}</style></head><body>
<h1>wsstorm · capacity · <span data-key="name">{name}</span></h1>
<p class="muted">One run per step (seed {seed}), the load of group <b>{group}</b> raised each step ({vary}, {unit}), each held {hold} s, until a threshold failed.</p>
<p class="verdict {cls}" data-key="verdict">{verdict}</p>
<table id="steps"><tr><th>load ({unit})</th><th>verdict</th>"#,
        name = esc(&c.name),
        seed = c.seed,
        group = esc(&c.group),
        vary = c.vary.name(),
        unit = esc(&c.unit),
        hold = c.hold_ms / 1000,
        cls = if c.limit == Limit::Ceiling {
            "pass"
        } else {
            "fail"
        },
        verdict = esc(&c.verdict),
    );
    let exprs: Vec<&str> = c
        .steps
        .first()
        .map(|s| s.thresholds.iter().map(|t| t.expression.as_str()).collect())
        .unwrap_or_default();
    for e in &exprs {
        let _ = write!(o, "<th>{}</th>", esc(e));
    }
    o.push_str("<th>attempts</th><th>errors</th><th>generator</th></tr>");
    for (i, s) in c.steps.iter().enumerate() {
        let _ = write!(
            o,
            r#"<tr><td data-key="steps.{i}.load"><a href="{}">{}</a></td><td class="{}">{}</td>"#,
            esc(&s.results.replace("results.json", "report.html")),
            fmt_load(s.load),
            if s.passed { "pass" } else { "fail" },
            if s.passed { "pass" } else { "FAIL" }
        );
        for t in &s.thresholds {
            let _ = write!(
                o,
                r#"<td class="{}">{}</td>"#,
                if t.passed { "pass" } else { "fail" },
                esc(&t.measured_text())
            );
        }
        let _ = write!(
            o,
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            s.connect_attempts,
            s.errors,
            if s.generator_warnings.is_empty() {
                "ok".to_string()
            } else {
                esc(&s.generator_warnings.join("; "))
            }
        );
    }
    o.push_str("</table><h2>Thresholds against the load</h2><div class=\"charts\">");
    for (k, e) in exprs.iter().enumerate() {
        let Some(first) = c.steps.first().and_then(|s| s.thresholds.get(k)) else {
            continue;
        };
        let unit = first.unit;
        let scale = |v: f64| match unit {
            crate::results::threshold::Kind::Duration => v / 1000.0,
            _ => v,
        };
        let points: Vec<(f64, f64)> = c
            .steps
            .iter()
            .filter_map(|s| Some((s.load, scale(s.thresholds.get(k)?.measured?))))
            .collect();
        let limit: Vec<(f64, f64)> = c
            .steps
            .iter()
            .map(|s| (s.load, scale(first.limit)))
            .collect();
        o.push_str(&line_chart(&Chart {
            title: (*e).to_string(),
            x_label: c.unit.clone(),
            y_label: match unit {
                crate::results::threshold::Kind::Duration => "ms".into(),
                crate::results::threshold::Kind::Percent => "%".into(),
                crate::results::threshold::Kind::Count => "count".into(),
            },
            series: vec![
                Series {
                    name: "measured".into(),
                    color: PALETTE[0].into(),
                    points,
                },
                Series {
                    name: "limit".into(),
                    color: PALETTE[1].into(),
                    points: limit,
                },
            ],
            markers: c
                .first_bad
                .map(|b| vec![(b, "first bad".to_string())])
                .unwrap_or_default(),
            x_scale: XScale::Linear,
            width: 520,
            height: 260,
        }));
    }
    o.push_str("</div></body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_holds_the_steps_and_the_verdict() {
        let c: Capacity = serde_json::from_value(serde_json::json!({
            "schema": "wsstorm.capacity/1", "name": "n", "seed": 1, "started_at": "t",
            "vary": "connection-rate", "unit": "connections/s", "group": "g", "hold_ms": 5000,
            "steps": [{
                "load": 100.0, "passed": true, "results": "step-01-100/results.json",
                "end_reason": "completed", "thresholds": [], "clients": 500,
                "connect_attempts": 500, "opened": 500, "connected_at_end": 500, "errors": 0,
                "connect_errors": {}, "handshake_status": {}, "close_codes": {},
                "handshake_p99_us": 900, "rtt_p99_us": null, "messages_per_s": 0.0,
                "schedule_lag_p99_us": 10, "generator_cpu_s": 0.5, "generator_warnings": []
            }],
            "last_good": 100.0, "first_bad": null, "limit": "ceiling",
            "verdict": "no step broke the thresholds up to the ceiling of 450 connections/s",
            "expect": null, "expect_met": null
        }))
        .unwrap();
        let html = render(&c);
        assert!(html.contains(r#"<td data-key="steps.0.load">"#), "{html}");
        assert!(html.contains("no step broke the thresholds"), "{html}");
    }
}
