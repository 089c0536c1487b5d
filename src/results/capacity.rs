//! `capacity.json`: what a capacity search found — each step's figures, the last good and first
//! bad load, and whose limit it was (the server's, or the generator's own). A public contract
//! like results.json (schema `wsstorm.capacity/1`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::profile::{CapacitySettings, CapacityVary};
use crate::results::threshold::ThresholdResult;
use crate::results::{EndReason, Results};

pub const SCHEMA: &str = "wsstorm.capacity/1";

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
            errors: crate::results::threshold::errors(t),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = CapacitySettings::example(CapacityVary::ConnectionRate);
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
    }
}
