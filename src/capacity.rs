//! Capacity search: run the profile once per step with the load raised each time, until a
//! threshold (the SLO) fails or the ceiling is reached. This module is the pure part — the
//! steps, each step's profile, the verdict, `capacity.json` and `capacity.html`; the command
//! line runs the steps.
//!
//! Each step is a fresh run (fresh target, fresh clients), so a step's figures are its own and
//! can be compared with a plain `wsstorm run` at that load. The price is a ramp per step.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::profile::{CapacitySettings, CapacityVary, Profile};
use crate::report::CSS;
use crate::report::svg::{Chart, PALETTE, Series, XScale, esc, line_chart};
use crate::results::{EndReason, Results};
use crate::threshold::ThresholdResult;

pub const SCHEMA: &str = "wsstorm.capacity/1";
pub const MAX_STEPS: usize = 50;

/// The loads to try, in order: `start`, then `+ step` or `× factor`, never above `max`.
pub fn steps(c: &CapacitySettings) -> Vec<f64> {
    let mut out = Vec::new();
    let mut load = c.start;
    // Bounded even for values validation has not seen yet.
    while load <= c.max * (1.0 + 1e-9) && load > 0.0 && out.len() <= MAX_STEPS {
        out.push(load);
        load = match c.factor {
            Some(f) if f > 1.0 => load * f,
            Some(_) => break,
            None => load + c.step.unwrap_or(c.start),
        };
    }
    out
}

/// Time the arrivals of `clients` take at the group's rate.
fn ramp(clients: u32, rate: f64) -> Duration {
    Duration::from_secs_f64(f64::from(clients) / rate.max(1e-9))
}

/// The profile of one step: the stepped group's load set to `load`, the duration set so the
/// load is held for `hold`.
pub fn step_profile(p: &Profile, c: &CapacitySettings, load: f64) -> Profile {
    let mut p = p.clone();
    let gi = c
        .group
        .as_ref()
        .and_then(|n| p.groups.iter().position(|g| &g.name == n))
        .unwrap_or(0);
    let hold = c.hold.0;
    let g = &mut p.groups[gi];
    let arrive_by =
        |g: &crate::profile::Group| g.arrival.start.0 + ramp(g.clients, g.arrival.rate.0);
    let duration = match c.vary {
        CapacityVary::Connections => {
            g.clients = load.round().max(1.0) as u32;
            arrive_by(g) + hold
        }
        CapacityVary::ConnectionRate => {
            // Arrivals for the whole hold, then a moment for the last handshakes to finish.
            g.arrival.rate = crate::units::Rate(load);
            g.clients = (load * hold.as_secs_f64()).round().max(1.0) as u32;
            g.arrival.start.0 + hold + Duration::from_secs(2)
        }
        CapacityVary::MessageRate => {
            if let Some(s) = &mut g.behaviour.send {
                s.every = Some(crate::units::Dur(Duration::from_secs_f64(
                    f64::from(g.clients) / load,
                )));
            }
            arrive_by(g) + hold
        }
    };
    // The other groups keep their own timing; the run lasts until every group arrived.
    let others = p.groups.iter().map(arrive_by).max().unwrap_or_default();
    p.duration = crate::units::Dur(duration.max(others + Duration::from_secs(1)));
    p
}

/// Whether the generator, not the target, may have set the step's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    /// The target broke the SLO and the generator kept its schedule.
    Server,
    /// The generator reported itself as a bottleneck at the failing step (late against its
    /// schedule, CPU, file descriptors or ports): the figures may be its own.
    Generator,
    /// No step failed up to the ceiling.
    Ceiling,
    /// The search was interrupted before it found either.
    Interrupted,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapacityStep {
    pub load: f64,
    pub passed: bool,
    /// This step's results.json, relative to capacity.json.
    pub results: String,
    pub end_reason: EndReason,
    pub thresholds: Vec<ThresholdResult>,
    pub clients: u64,
    pub connect_attempts: u64,
    pub opened: u64,
    pub connected_at_end: u64,
    /// Failed attempts: connect errors and non-101 answers.
    pub errors: u64,
    pub connect_errors: BTreeMap<String, u64>,
    pub handshake_status: BTreeMap<String, u64>,
    pub close_codes: BTreeMap<String, u64>,
    pub handshake_p99_us: Option<u64>,
    pub rtt_p99_us: Option<u64>,
    pub messages_per_s: f64,
    pub schedule_lag_p99_us: u64,
    pub generator_cpu_s: f64,
    pub generator_warnings: Vec<String>,
}

impl CapacityStep {
    pub fn from_results(load: f64, results: String, r: &Results) -> CapacityStep {
        let t = &r.totals;
        // Attempts cut short by the end of the run are not errors of the step.
        let connect_errors: BTreeMap<String, u64> = t
            .connect_errors
            .kinds()
            .into_iter()
            .filter(|(k, n)| *n > 0 && *k != "cancelled")
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        let some = |s: &crate::metrics::LatencySummary| (s.count > 0).then_some(s.p99);
        CapacityStep {
            load,
            passed: !r.thresholds.is_empty() && r.thresholds.iter().all(|t| t.passed),
            results,
            end_reason: r.end_reason,
            thresholds: r.thresholds.clone(),
            clients: t.clients,
            connect_attempts: t.connect_attempts,
            opened: t.opened,
            connected_at_end: t.connected_at_end,
            errors: crate::threshold::errors(t),
            connect_errors,
            handshake_status: t.handshake_status.clone(),
            close_codes: t.close_codes.clone(),
            handshake_p99_us: some(&r.latency_us.handshake),
            rtt_p99_us: some(&r.latency_us.rtt),
            messages_per_s: t.messages.received as f64 / (r.duration_ms.max(1) as f64 / 1000.0),
            schedule_lag_p99_us: r.generator.schedule_lag_us.p99,
            generator_cpu_s: r.generator.cpu_user_s + r.generator.cpu_sys_s,
            generator_warnings: r.generator.warnings.clone(),
        }
    }

    /// Why the step failed: each failing threshold with its measured value, and the errors.
    pub fn why(&self) -> String {
        let mut parts: Vec<String> = self
            .thresholds
            .iter()
            .filter(|t| !t.passed)
            .map(|t| format!("{} (measured {})", t.expression, t.measured_text()))
            .collect();
        let mut errs: Vec<String> = Vec::new();
        for (code, n) in &self.handshake_status {
            errs.push(format!("{n} × HTTP {code}"));
        }
        for (kind, n) in &self.connect_errors {
            errs.push(format!("{n} × {kind}"));
        }
        for (code, n) in &self.close_codes {
            errs.push(format!("{n} × close {code}"));
        }
        if !errs.is_empty() {
            parts.push(format!("errors: {}", errs.join(", ")));
        }
        parts.join("; ")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    pub schema: String,
    pub name: String,
    pub seed: u64,
    pub started_at: String,
    pub vary: CapacityVary,
    /// What a step's `load` counts: clients, connections/s or messages/s.
    pub unit: String,
    pub group: String,
    pub hold_ms: u64,
    pub steps: Vec<CapacityStep>,
    /// The highest load that met every threshold (`null`: not even the first step).
    pub last_good: Option<f64>,
    /// The first load that failed one (`null`: none did).
    pub first_bad: Option<f64>,
    pub limit: Limit,
    /// In words: where it broke, why, and whose limit it was.
    pub verdict: String,
    /// `capacity.expect`: the least acceptable last good step; `expect_met` says whether it was.
    pub expect: Option<f64>,
    pub expect_met: Option<bool>,
}

impl Capacity {
    /// Conclude from the steps run so far; `interrupted` when the search was cut short.
    #[allow(clippy::too_many_arguments)]
    pub fn conclude(
        name: String,
        seed: u64,
        started_at: String,
        settings: &CapacitySettings,
        group: String,
        steps: Vec<CapacityStep>,
        interrupted: bool,
    ) -> Capacity {
        let unit = settings.vary.unit();
        let last_good = steps.iter().take_while(|s| s.passed).last().map(|s| s.load);
        let bad = steps.iter().find(|s| !s.passed);
        let (limit, verdict) = match bad {
            Some(b) if b.end_reason == EndReason::Interrupted => (
                Limit::Interrupted,
                format!(
                    "interrupted during the step at {} {unit}; last good step {}",
                    fmt_load(b.load),
                    last_good.map_or("none".into(), |l| format!("{} {unit}", fmt_load(l)))
                ),
            ),
            Some(b) => {
                let generator = !b.generator_warnings.is_empty();
                let whose = if generator {
                    format!(
                        "generator limit: the generator reported itself as a bottleneck at that step ({}), so the figures may be its own — spread the load (more workers or machines) and run again",
                        b.generator_warnings.join("; ")
                    )
                } else {
                    "server limit: the generator kept its schedule at that step".to_string()
                };
                (
                    if generator {
                        Limit::Generator
                    } else {
                        Limit::Server
                    },
                    format!(
                        "broke at {} {unit} (last good: {}): {}. {whose}",
                        fmt_load(b.load),
                        last_good.map_or("none".into(), |l| format!("{} {unit}", fmt_load(l))),
                        b.why()
                    ),
                )
            }
            None if interrupted => (
                Limit::Interrupted,
                format!(
                    "interrupted; every step run passed, the last at {}",
                    last_good.map_or("none".into(), |l| format!("{} {unit}", fmt_load(l)))
                ),
            ),
            None => (
                Limit::Ceiling,
                format!(
                    "no step broke the thresholds up to the ceiling of {} {unit}",
                    fmt_load(settings.max)
                ),
            ),
        };
        let expect_met = settings.expect.map(|e| last_good.is_some_and(|l| l >= e));
        Capacity {
            schema: SCHEMA.into(),
            name,
            seed,
            started_at,
            vary: settings.vary,
            unit: unit.into(),
            group,
            hold_ms: settings.hold.0.as_millis() as u64,
            last_good,
            first_bad: bad.map(|b| b.load),
            limit,
            verdict,
            expect: settings.expect,
            expect_met,
            steps,
        }
    }
}

pub fn fmt_load(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Text for the terminal: one line per step, then the verdict.
pub fn summary(c: &Capacity) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\ncapacity search · {} · {} ({}), {} s per step",
        c.name,
        c.vary.name(),
        c.unit,
        c.hold_ms / 1000
    );
    for s in &c.steps {
        let _ = writeln!(
            o,
            "  {:>10} {:<14} {}  {}",
            fmt_load(s.load),
            c.unit,
            if s.passed { "pass" } else { "FAIL" },
            s.thresholds
                .iter()
                .map(|t| format!("{} {}", t.metric, t.measured_text()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(o, "  verdict      {}", c.verdict);
    if let (Some(e), Some(met)) = (c.expect, c.expect_met) {
        let _ = writeln!(
            o,
            "  expect       last good ≥ {} {}: {}",
            fmt_load(e),
            c.unit,
            if met { "met" } else { "NOT MET" }
        );
    }
    o
}

/// `capacity.html`: the verdict, the per-step table and each threshold's measure against the
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
            crate::threshold::Kind::Duration => v / 1000.0,
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
                crate::threshold::Kind::Duration => "ms".into(),
                crate::threshold::Kind::Percent => "%".into(),
                crate::threshold::Kind::Count => "count".into(),
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
    use crate::units::Dur;

    fn settings(vary: CapacityVary) -> CapacitySettings {
        CapacitySettings {
            vary,
            group: None,
            start: 100.0,
            step: None,
            factor: None,
            max: 450.0,
            hold: Dur(Duration::from_secs(5)),
            expect: Some(200.0),
        }
    }

    #[test]
    fn steps_add_or_multiply_up_to_the_ceiling() {
        let mut s = settings(CapacityVary::Connections);
        assert_eq!(steps(&s), vec![100.0, 200.0, 300.0, 400.0]);
        s.step = Some(150.0);
        assert_eq!(steps(&s), vec![100.0, 250.0, 400.0]);
        s.step = None;
        s.factor = Some(2.0);
        assert_eq!(steps(&s), vec![100.0, 200.0, 400.0]);
    }

    fn profile() -> Profile {
        crate::profile::parse(
            "name: c\nduration: 10s\ntarget: embedded\ngroups:\n  - name: g\n    clients: 10\n    arrival: { rate: 100/s }\n    behaviour: { send: { every: 1s, bytes: 64 } }\n",
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn each_step_sets_the_load_and_holds_it() {
        let p = profile();
        let s = step_profile(&p, &settings(CapacityVary::Connections), 300.0);
        assert_eq!(s.groups[0].clients, 300);
        // 300 clients at 100/s arrive in 3 s, then 5 s held.
        assert_eq!(s.duration.0, Duration::from_secs(8));

        let s = step_profile(&p, &settings(CapacityVary::ConnectionRate), 300.0);
        assert_eq!(s.groups[0].arrival.rate.0, 300.0);
        assert_eq!(s.groups[0].clients, 1500);
        assert_eq!(s.duration.0, Duration::from_secs(7));

        let s = step_profile(&p, &settings(CapacityVary::MessageRate), 200.0);
        // 10 clients sharing 200 msg/s: each every 50 ms.
        assert_eq!(
            s.groups[0]
                .behaviour
                .send
                .as_ref()
                .unwrap()
                .every
                .unwrap()
                .0,
            Duration::from_millis(50)
        );
        assert!(crate::profile::validate(&s).is_empty());
    }

    fn step(load: f64, passed: bool, warnings: Vec<String>) -> CapacityStep {
        CapacityStep {
            load,
            passed,
            results: format!("step-{load}/results.json"),
            end_reason: EndReason::Completed,
            thresholds: vec![],
            clients: 0,
            connect_attempts: 0,
            opened: 0,
            connected_at_end: 0,
            errors: 0,
            connect_errors: BTreeMap::new(),
            handshake_status: [("503".to_string(), 7)].into(),
            close_codes: BTreeMap::new(),
            handshake_p99_us: None,
            rtt_p99_us: None,
            messages_per_s: 0.0,
            schedule_lag_p99_us: 0,
            generator_cpu_s: 0.0,
            generator_warnings: warnings,
        }
    }

    #[test]
    fn verdict_names_the_knee_and_whose_limit() {
        let s = settings(CapacityVary::ConnectionRate);
        let conclude =
            |steps| Capacity::conclude("n".into(), 1, "t".into(), &s, "g".into(), steps, false);
        let c = conclude(vec![
            step(100.0, true, vec![]),
            step(200.0, true, vec![]),
            step(300.0, false, vec![]),
        ]);
        assert_eq!((c.last_good, c.first_bad), (Some(200.0), Some(300.0)));
        assert_eq!(c.limit, Limit::Server);
        assert!(c.verdict.contains("7 × HTTP 503"), "{}", c.verdict);
        assert_eq!(c.expect_met, Some(true));

        let c = conclude(vec![
            step(100.0, true, vec![]),
            step(200.0, false, vec!["late".into()]),
        ]);
        assert_eq!(c.limit, Limit::Generator);
        assert_eq!(c.expect_met, Some(false));

        let c = conclude(vec![step(100.0, true, vec![])]);
        assert_eq!((c.limit, c.first_bad), (Limit::Ceiling, None));
        assert!(
            c.verdict
                .contains("no step broke the thresholds up to the ceiling of 450"),
            "{}",
            c.verdict
        );
        let html = render(&c);
        assert!(html.contains(r#"<td data-key="steps.0.load">"#), "{html}");
        assert!(html.contains("no step broke the thresholds"), "{html}");
    }
}
