//! `capacity.html`: the verdict, the per-step table and each threshold's measure against the
//! load. Self-contained like every report.

use maud::html;

use super::svg::{Chart, PALETTE, Series, XScale, line_chart};
use super::{inline_svg, page, pass_class, report_link};
use crate::results::capacity::{Capacity, Limit, fmt_load};

pub fn render(c: &Capacity) -> String {
    let exprs: Vec<&str> = c
        .steps
        .first()
        .map(|s| s.thresholds.iter().map(|t| t.expression.as_str()).collect())
        .unwrap_or_default();
    let charts = exprs.iter().enumerate().filter_map(|(k, e)| {
        let first = c.steps.first()?.thresholds.get(k)?;
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
        Some(line_chart(&Chart {
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
        }))
    });

    let body = html! {
        p.muted {
            "One run per step (seed " (c.seed) "), the load of group " b { (c.group) }
            " raised each step (" (c.vary.name()) ", " (c.unit) "), each held "
            (c.hold_ms / 1000) " s, until a threshold failed."
        }
        p.verdict.(pass_class(c.limit == Limit::Ceiling)) data-key="verdict" { (c.verdict) }
        table #steps {
            tr {
                th { "load (" (c.unit) ")" }
                th { "verdict" }
                @for e in &exprs { th { (e) } }
                th { "attempts" }
                th { "errors" }
                th { "generator" }
            }
            @for (i, s) in c.steps.iter().enumerate() {
                tr {
                    td data-key={ "steps." (i) ".load" } {
                        a href=(report_link(&s.results)) { (fmt_load(s.load)) }
                    }
                    td.(pass_class(s.passed)) { (if s.passed { "pass" } else { "FAIL" }) }
                    @for t in &s.thresholds {
                        td.(pass_class(t.passed)) { (t.measured_text()) }
                    }
                    td { (s.connect_attempts) }
                    td { (s.errors) }
                    td {
                        @if s.generator_warnings.is_empty() {
                            "ok"
                        } @else {
                            (s.generator_warnings.join("; "))
                        }
                    }
                }
            }
        }
        h2 { "Thresholds against the load" }
        div.charts { @for chart in charts { (inline_svg(chart)) } }
    };
    page("wsstorm capacity", "wsstorm · capacity", &c.name, body)
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
