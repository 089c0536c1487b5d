//! `wsstorm merge`: the results of a plan's shards (or of runs to add up) as one run.
//!
//! Exact, not approximate: every group's results.json carries what its run recorded, whole
//! ([`Raw`]: the counters and the HdrHistograms themselves), so the merge adds counters and
//! histograms, aligns the timelines, and builds the merged results through the same
//! [`Results::build`] a run ends with. Storm figures (recovery times, peaks, attempts per
//! client) and thresholds are recomputed from the merged data, never averaged from
//! percentiles. Each shard's generator health is kept apart (`shards`), so a late or
//! saturated shard stays visible.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::build::Record;
use super::threshold::Threshold;
use super::{EndReason, FiredAction, Results, Timeline};
use crate::metrics::conversation::WireConv;
use crate::metrics::{
    Collected, Counters, GroupData, GroupSeries, GroupTotals, Hists, Latency, Point, WireGroup,
};
use crate::server::ServerSummary;

/// A group's whole-run data as recorded: counters, the histograms by name, the conversation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Raw {
    pub counters: Counters,
    /// HdrHistograms (serialized, compressed, base64) by name: every latency kind and
    /// `attempts_per_client`; empty ones left out.
    pub hists: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "WireConv::is_empty")]
    pub conv: WireConv,
}

const ATTEMPTS_PER_CLIENT: &str = "attempts_per_client";

fn hist_names() -> impl Iterator<Item = &'static str> {
    Latency::ALL
        .iter()
        .map(|l| l.name())
        .chain(std::iter::once(ATTEMPTS_PER_CLIENT))
}

impl Raw {
    pub fn of(g: &GroupData) -> Raw {
        let w = g.to_wire();
        Raw {
            hists: hist_names()
                .zip(w.hists)
                .filter(|(_, h)| !h.is_empty())
                .map(|(n, h)| (n.to_string(), h))
                .collect(),
            counters: w.counters,
            conv: w.conv,
        }
    }

    /// Back to what the collector holds; a histogram this wsstorm does not know is an error.
    pub fn data(&self) -> Result<GroupData, String> {
        if let Some(unknown) = self.hists.keys().find(|k| !hist_names().any(|n| n == *k)) {
            return Err(format!("an unknown histogram `{unknown}`"));
        }
        GroupData::from_wire(&WireGroup {
            counters: self.counters.clone(),
            hists: hist_names()
                .map(|n| self.hists.get(n).cloned().unwrap_or_default())
                .collect(),
            conv: self.conv.clone(),
        })
    }
}

/// Which shard of a plan a run was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub index: u32,
    pub count: u32,
    /// The common wall-clock start the shards waited for (RFC 3339), if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
}

/// One merged run's own health, as it was: which shard was late or saturated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardHealth {
    /// The results.json it came from.
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    pub started_at: String,
    pub duration_ms: u64,
    pub end_reason: EndReason,
    pub clients: u64,
    pub connected_at_end: u64,
    pub schedule_lag_p99_us: u64,
    pub schedule_lag_max_us: u64,
    pub peak_rss_bytes: u64,
    pub cpu_s: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How the inputs relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Shards of one plan (`--shard I/N`): each index once, one count.
    Shards,
    /// Runs of the same profile to add up (`--sum`): no shard check.
    Sum,
}

/// What the merge needs of the plan that results.json does not hold; the caller compiles the
/// profile the results carry (default: no conversations, failures not expected).
#[derive(Clone, Debug, Default)]
pub struct PlanFacts {
    /// Each group's conversation sample and stream names.
    pub conversation_names: Vec<super::conversation::Names>,
    pub expect_failures: bool,
}

/// Merge `inputs` (path, results) into one run's results.
pub fn merge(
    inputs: &[(String, Results)],
    mode: Mode,
    facts: &PlanFacts,
) -> Result<Results, String> {
    let [(_, first), ..] = inputs else {
        return Err("nothing to merge: give the results.json of two or more runs".into());
    };
    check(inputs, mode)?;
    let groups = first.groups.len();
    // Whole-run data per group, added up.
    let mut data: Vec<GroupData> = vec![GroupData::default(); groups];
    for (path, r) in inputs {
        for (g, (acc, gr)) in data.iter_mut().zip(&r.groups).enumerate() {
            let raw = gr.raw.as_ref().ok_or_else(|| {
                format!(
                    "{path}: group `{}` has no `raw` data (results.json written before wsstorm could merge, or edited): it cannot be merged exactly",
                    gr.name
                )
            })?;
            let d = raw
                .data()
                .map_err(|e| format!("{path}: groups[{g}].raw: {e}"))?;
            acc.add(&d);
        }
    }
    let timelines: Vec<&Timeline> = inputs.iter().map(|(_, r)| &r.timeline).collect();
    let points = aligned_points(&timelines);
    let close_series = aligned_by_key(&timelines, points.len(), |t| &t.close_codes);
    let status_series = aligned_by_key(&timelines, points.len(), |t| &t.handshake_status);
    let group_totals: Vec<GroupTotals> = data
        .into_iter()
        .enumerate()
        .map(|(g, data)| {
            let series = aligned_series(inputs, g, points.len());
            GroupTotals {
                peak_connected: series.connected.iter().copied().max().unwrap_or(0),
                data,
                series,
            }
        })
        .collect();
    let mut totals = Counters::default();
    let mut hists = Hists::default();
    for g in &group_totals {
        totals.add(&g.data.counters);
        hists.add(&g.data.hists);
    }
    let mut examples = BTreeMap::new();
    let mut warnings = Vec::new();
    if let Some(missing) = missing_shards(inputs) {
        warnings.push(missing);
    }
    let mut failures = Vec::new();
    let mut health = Vec::new();
    let (mut cpu, mut server, mut proxy) = ((0.0, 0.0), None::<ServerSummary>, None);
    let mut fd_limit = u64::MAX;
    for (path, r) in inputs {
        let who = match &r.shard {
            Some(s) => format!("shard {}/{}", s.index, s.count),
            None => path.clone(),
        };
        for (k, v) in &r.totals.connect_errors.examples {
            examples.entry(k.clone()).or_insert_with(|| v.clone());
        }
        warnings.extend(r.warnings.iter().map(|w| format!("{who}: {w}")));
        failures.extend(r.failed.iter().map(|f| format!("{who}: {f}")));
        cpu.0 += r.generator.cpu_user_s;
        cpu.1 += r.generator.cpu_sys_s;
        if r.generator.fd_limit > 0 {
            fd_limit = fd_limit.min(r.generator.fd_limit);
        }
        if let Some(s) = &r.server {
            server.get_or_insert_with(ServerSummary::default).add(s);
        }
        if let Some(p) = &r.proxy {
            proxy = Some(sum_json(proxy.take(), p)?);
        }
        health.push(ShardHealth {
            file: path.clone(),
            shard: r.shard.clone(),
            started_at: r.started_at.clone(),
            duration_ms: r.duration_ms,
            end_reason: r.end_reason,
            clients: r.totals.clients,
            connected_at_end: r.totals.connected_at_end,
            schedule_lag_p99_us: r.generator.schedule_lag_us.p99,
            schedule_lag_max_us: r.generator.schedule_lag_us.max,
            peak_rss_bytes: r.generator.peak_rss_bytes,
            cpu_s: r.generator.cpu_user_s + r.generator.cpu_sys_s,
            warnings: r.generator.warnings.clone(),
        });
    }
    let started_at = inputs
        .iter()
        .filter_map(|(_, r)| humantime::parse_rfc3339_weak(&r.started_at).ok())
        .min()
        .unwrap_or_else(SystemTime::now);
    let thresholds: Vec<Threshold> = first
        .thresholds
        .iter()
        .filter_map(|t| {
            let mut parsed = Threshold::parse(&t.expression).ok()?;
            parsed.abort_on_fail = t.abort_on_fail;
            Some(parsed)
        })
        .collect();
    let record = Record {
        name: first.name.clone(),
        description: first.description.clone(),
        seed: first.seed,
        // One run id only when every part carried it (shards given one --start-at).
        run_id: first
            .run_id
            .clone()
            .filter(|id| inputs.iter().all(|(_, r)| r.run_id.as_ref() == Some(id))),
        profile: first.profile.clone(),
        target: first.target.clone(),
        started_at,
        duration: Duration::from_millis(
            inputs.iter().map(|(_, r)| r.duration_ms).max().unwrap_or(0),
        ),
        end: end_reason(inputs),
        aborted_by: None,
        group_clients: first
            .groups
            .iter()
            .enumerate()
            .map(|(g, gr)| {
                let n: u64 = inputs.iter().map(|(_, r)| r.groups[g].totals.clients).sum();
                (gr.name.clone(), n.min(u64::from(u32::MAX)) as u32)
            })
            .collect(),
        conversation_names: if facts.conversation_names.len() == groups {
            facts.conversation_names.clone()
        } else {
            vec![Default::default(); groups]
        },
        collected: Collected {
            totals,
            hists,
            peak_connected: points.iter().map(|p| p.connected).max().unwrap_or(0),
            points,
            close_series,
            status_series,
            groups: group_totals,
            samples: Vec::new(),
            warnings,
            connect_error_examples: examples,
        },
        connected_at_end: (0..groups)
            .map(|g| {
                inputs
                    .iter()
                    .map(|(_, r)| r.groups[g].totals.connected_at_end)
                    .sum()
            })
            .collect(),
        fired: fired(inputs),
        server,
        proxy,
        cpu,
        fd_limit: if fd_limit == u64::MAX { 0 } else { fd_limit },
        expect_failures: facts.expect_failures,
        layout: vec![format!(
            "merged from {} results ({}): counters and histograms added, timelines aligned on their start",
            inputs.len(),
            match mode {
                Mode::Shards => "shards of one plan",
                Mode::Sum => "runs added up",
            }
        )],
        // Each input's prediction was for its own machine.
        memory_predicted: inputs
            .iter()
            .map(|(_, r)| r.generator.memory_predicted_bytes)
            .sum(),
        failures,
        until: None,
        events: None,
    };
    let mut merged = Results::build(record, &thresholds);
    merged.shards = health;
    Ok(merged)
}

/// Refuse inputs that are not parts of one plan, with what differs.
fn check(inputs: &[(String, Results)], mode: Mode) -> Result<(), String> {
    let (first_path, first) = &inputs[0];
    for (path, r) in &inputs[1..] {
        let differs = |what: &str| {
            Err(format!(
                "{path} and {first_path} are not parts of one plan: their {what} differ{}",
                match mode {
                    Mode::Shards => "",
                    Mode::Sum => " (--sum adds up runs of the same profile)",
                }
            ))
        };
        if r.name != first.name {
            return differs("names");
        }
        if r.profile != first.profile {
            return differs("profiles (the YAML that ran, with command-line overrides)");
        }
        if mode == Mode::Shards && r.seed != first.seed {
            return differs("seeds");
        }
        let names = |r: &Results| r.groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>();
        if names(r) != names(first) {
            return differs("groups");
        }
        if r.timeline.interval_ms != first.timeline.interval_ms {
            return differs("timeline intervals");
        }
    }
    if inputs.iter().any(|(_, r)| r.modelled) {
        return Err(
            "a modelled run (`wsstorm model`) has no shards to merge: model the whole fleet at once"
                .into(),
        );
    }
    if mode == Mode::Shards {
        let shard = |path: &str, r: &Results| {
            r.shard.clone().ok_or_else(|| {
                format!(
                    "{path} is not a shard (it ran without --shard): to add up whole runs of the same profile, give --sum"
                )
            })
        };
        let first_shard = shard(first_path, first)?;
        let mut seen = BTreeMap::new();
        for (path, r) in inputs {
            let s = shard(path, r)?;
            if s.count != first_shard.count {
                return Err(format!(
                    "{path} is shard {}/{} but {first_path} is shard {}/{}: shards of one run have one count",
                    s.index, s.count, first_shard.index, first_shard.count
                ));
            }
            if s.start_at != first_shard.start_at {
                return Err(format!(
                    "{path} and {first_path} were given different --start-at times: they are not one run"
                ));
            }
            if let Some(other) = seen.insert(s.index, path.clone()) {
                return Err(format!(
                    "{path} and {other} are both shard {}/{}: each shard once",
                    s.index, s.count
                ));
            }
        }
    }
    Ok(())
}

/// Shards of the count that were not given: the merge covers only the others' clients.
fn missing_shards(inputs: &[(String, Results)]) -> Option<String> {
    let count = inputs.first()?.1.shard.as_ref()?.count;
    let given: std::collections::BTreeSet<u32> = inputs
        .iter()
        .filter_map(|(_, r)| r.shard.as_ref().map(|s| s.index))
        .collect();
    let missing: Vec<String> = (0..count)
        .filter(|i| !given.contains(i))
        .map(|i| i.to_string())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "shards {} of {count} are missing: the merged figures cover only the other {} shards' clients",
            missing.join(", "),
            given.len()
        )
    })
}

/// The worst way any input ended stands for the merged run.
fn end_reason(inputs: &[(String, Results)]) -> EndReason {
    let rank = |e: EndReason| match e {
        EndReason::Completed => 0,
        EndReason::Settled => 1,
        EndReason::Stopped => 2,
        EndReason::MaxReached => 3,
        EndReason::Aborted => 4,
        EndReason::Interrupted => 5,
    };
    inputs
        .iter()
        .map(|(_, r)| r.end_reason)
        .max_by_key(|e| rank(*e))
        .unwrap_or(EndReason::Completed)
}

/// The timeline points of every input added up, interval by interval (the shards started
/// together). Past an input's end, its gauges keep their last value and its counts are 0.
///
/// An interval's percentiles are exact only from the interval's merged histogram, which the
/// inputs do not carry (a histogram per interval would make results.json many times larger):
/// they are kept when a single input measured that kind in the interval (its figure is the
/// merged one), and left absent when several did, never averaged.
fn aligned_points(inputs: &[&Timeline]) -> Vec<Point> {
    let len = inputs.iter().map(|t| t.points.len()).max().unwrap_or(0);
    (0..len)
        .map(|i| {
            let mut sum = Point::default();
            for t in inputs {
                let pts = &t.points;
                match pts.get(i) {
                    Some(p) => {
                        sum.t_ms = sum.t_ms.max(p.t_ms);
                        sum.connected += p.connected;
                        sum.attempts += p.attempts;
                        sum.retries += p.retries;
                        sum.repeat_retries += p.repeat_retries;
                        sum.opened += p.opened;
                        sum.closed += p.closed;
                        sum.errors += p.errors;
                        sum.sent += p.sent;
                        sum.received += p.received;
                        sum.in_backoff += p.in_backoff;
                        sum.dead_detected += p.dead_detected;
                    }
                    None => {
                        if let Some(last) = pts.last() {
                            sum.connected += last.connected;
                            sum.in_backoff += last.in_backoff;
                        }
                    }
                }
            }
            let at = |f: fn(&Point) -> Option<u64>| -> Option<u64> {
                let mut measured = inputs.iter().filter_map(|t| f(t.points.get(i)?));
                let one = measured.next();
                one.filter(|_| measured.next().is_none())
            };
            sum.rtt_p50_us = at(|p| p.rtt_p50_us);
            sum.rtt_p99_us = at(|p| p.rtt_p99_us);
            sum.handshake_p50_us = at(|p| p.handshake_p50_us);
            sum.handshake_p99_us = at(|p| p.handshake_p99_us);
            sum.connect_p99_us = at(|p| p.connect_p99_us);
            sum.lag_p99_us = at(|p| p.lag_p99_us);
            sum.lag_max_us = at(|p| p.lag_max_us);
            sum
        })
        .collect()
}

/// Per-interval counts by key (close code, HTTP status) of every input added up.
fn aligned_by_key(
    inputs: &[&Timeline],
    len: usize,
    series_of: impl Fn(&Timeline) -> &BTreeMap<String, Vec<u64>>,
) -> BTreeMap<u16, Vec<u64>> {
    let mut out: BTreeMap<u16, Vec<u64>> = BTreeMap::new();
    for t in inputs {
        for (code, series) in series_of(t) {
            let Ok(code) = code.parse::<u16>() else {
                continue;
            };
            let acc = out.entry(code).or_insert_with(|| vec![0; len]);
            for (a, v) in acc.iter_mut().zip(series) {
                *a += v;
            }
        }
    }
    out
}

fn aligned_series(inputs: &[(String, Results)], g: usize, len: usize) -> GroupSeries {
    let mut s = GroupSeries {
        attempts: vec![0; len],
        retries: vec![0; len],
        repeat_retries: vec![0; len],
        connected: vec![0; len],
    };
    for (_, r) in inputs {
        let t = &r.groups[g].timeline;
        let add = |acc: &mut Vec<u64>, v: &[u64]| {
            for (a, x) in acc.iter_mut().zip(v) {
                *a += x;
            }
        };
        add(&mut s.attempts, &t.attempts);
        add(&mut s.retries, &t.retries);
        add(&mut s.repeat_retries, &t.repeat_retries);
        for i in 0..len {
            s.connected[i] += t
                .connected
                .get(i)
                .or(t.connected.last())
                .copied()
                .unwrap_or(0);
        }
    }
    s
}

/// The timeline's actions as they fired: shards fire the same ones (each its own proxy's);
/// kept once each, with the connections they found added up.
fn fired(inputs: &[(String, Results)]) -> Vec<FiredAction> {
    let mut out: Vec<FiredAction> = Vec::new();
    for (_, r) in inputs {
        for (i, a) in r.timeline.actions.iter().enumerate() {
            match out.get_mut(i) {
                Some(o) if o.action == a.action => {
                    o.connections += a.connections;
                    o.t_ms = o.t_ms.min(a.t_ms);
                }
                _ => out.push(a.clone()),
            }
        }
    }
    out
}

/// Two counter records of the same shape (the proxy's) added field by field.
fn sum_json<T: Serialize + serde::de::DeserializeOwned>(a: Option<T>, b: &T) -> Result<T, String> {
    let Some(a) = a else {
        return serde_json::to_value(b)
            .and_then(serde_json::from_value)
            .map_err(|e| e.to_string());
    };
    let mut a = serde_json::to_value(a).map_err(|e| e.to_string())?;
    let b = serde_json::to_value(b).map_err(|e| e.to_string())?;
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            match (a.get_mut(k), v) {
                (Some(serde_json::Value::Number(x)), serde_json::Value::Number(y)) => {
                    let sum = x.as_u64().unwrap_or(0) + y.as_u64().unwrap_or(0);
                    *x = sum.into();
                }
                (Some(serde_json::Value::Array(x)), serde_json::Value::Array(y)) => {
                    x.extend(y.iter().cloned())
                }
                (None, v) => {
                    a.insert(k.clone(), v.clone());
                }
                _ => {}
            }
        }
    }
    serde_json::from_value(a).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(points: Vec<Point>, statuses: &[(&str, Vec<u64>)]) -> Timeline {
        Timeline {
            points,
            handshake_status: statuses
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..Timeline::default()
        }
    }

    fn point(t_ms: u64, dead: u64, rtt_p99: Option<u64>) -> Point {
        Point {
            t_ms,
            dead_detected: dead,
            rtt_p99_us: rtt_p99,
            rtt_p50_us: rtt_p99,
            ..Point::default()
        }
    }

    #[test]
    fn interval_percentiles_survive_only_where_one_input_measured_them() {
        let inputs = [
            run(
                vec![point(100, 1, Some(500)), point(200, 0, Some(700))],
                &[("503", vec![2, 0])],
            ),
            run(
                vec![point(100, 2, None), point(200, 3, Some(900))],
                &[("503", vec![1, 4]), ("429", vec![0, 1])],
            ),
        ];
        let inputs = [&inputs[0], &inputs[1]];
        let p = aligned_points(&inputs);
        assert_eq!(p[0].dead_detected, 3);
        assert_eq!(p[1].dead_detected, 3);
        // One input measured rtt in the first interval: its figure is the merged one.
        assert_eq!(p[0].rtt_p99_us, Some(500));
        // Both did in the second: no histogram to merge, so no figure (never an average).
        assert_eq!(p[1].rtt_p99_us, None);
        assert_eq!(p[1].rtt_p50_us, None);
        let statuses = aligned_by_key(&inputs, 2, |t| &t.handshake_status);
        assert_eq!(statuses[&503], vec![3, 4]);
        assert_eq!(statuses[&429], vec![0, 1]);
    }
}
