//! The end of a run, in one place: what the swarm hands over when it has drained (a
//! [`Record`]) becomes [`Results`] here — totals, per-group figures, the storm, the
//! generator's health, thresholds judged.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::conversation;
use super::threshold::{self, Threshold};
use super::{
    EndReason, FiredAction, Generator, GroupResults, LatencyTable, Results, SCHEMA, Timeline,
    generator_warnings, storm_from, totals_from,
};
use crate::metrics::{Collected, Latency, TICK, summarize};
use crate::proxy::ProxySummary;
use crate::server::ServerSummary;

/// Everything a drained run hands over.
#[derive(Debug)]
pub struct Record {
    pub name: String,
    pub description: Option<String>,
    pub seed: u64,
    /// The id in the clients' identity headers (8 hex digits); none in a model.
    pub run_id: Option<String>,
    /// The profile that ran, as the user wrote it (with notes of command-line changes).
    pub profile: String,
    /// The URL the clients connected to.
    pub target: String,
    pub started_at: SystemTime,
    /// From the first arrival to the end (the deadline, or the stop).
    pub duration: Duration,
    pub end: EndReason,
    /// With `EndReason::Aborted`: the threshold that stopped the run, and when.
    pub aborted_by: Option<(usize, Duration)>,
    /// Clients per group, as planned.
    pub group_clients: Vec<(String, u32)>,
    /// The names of each group's conversation samples and streams (empty without one).
    pub conversation_names: Vec<conversation::Names>,
    /// What the collector recorded.
    pub collected: Collected,
    /// Open connections per group at the end, before clients closed: counted exactly by
    /// every process at that moment.
    pub connected_at_end: Vec<u64>,
    pub fired: Vec<FiredAction>,
    pub server: Option<ServerSummary>,
    pub proxy: Option<ProxySummary>,
    /// CPU seconds (user, system) the generator used: this process and its workers.
    pub cpu: (f64, f64),
    /// Open-file limit of the generator's processes.
    pub fd_limit: u64,
    /// The profile expects nothing to connect.
    pub expect_failures: bool,
    /// How the run was laid out over processes and addresses.
    pub layout: Vec<String>,
    /// Memory the pre-flight budget predicted for the run (bytes).
    pub memory_predicted: u64,
    /// What broke the run itself (a worker process that died), if anything did.
    pub failures: Vec<String>,
    /// How a run `--until recovered` was to end, and when it settled.
    pub until: Option<super::Until>,
    /// What the event log (`--events`) wrote, when the run kept one.
    pub events: Option<crate::metrics::events::EventsSummary>,
}

impl Results {
    /// Results of a run from its record; `thresholds` are judged on them. Pure: everything
    /// measured is in the record.
    pub fn build(record: Record, thresholds: &[Threshold]) -> Results {
        let Record {
            name,
            description,
            seed,
            run_id,
            profile,
            target,
            started_at,
            duration,
            end,
            aborted_by,
            group_clients,
            conversation_names,
            collected: c,
            connected_at_end,
            fired,
            server,
            proxy,
            cpu,
            fd_limit,
            expect_failures,
            failures,
            layout,
            memory_predicted,
            until,
            events,
        } = record;
        let clients: u64 = group_clients.iter().map(|(_, n)| u64::from(*n)).sum();
        let mut totals = totals_from(
            &c.totals,
            clients,
            c.peak_connected,
            connected_at_end.iter().sum(),
        );
        totals.connect_errors.examples = c.connect_error_examples;
        let attempts: Vec<u64> = c.points.iter().map(|p| p.attempts).collect();
        let retries: Vec<u64> = c.points.iter().map(|p| p.retries).collect();
        let repeats: Vec<u64> = c.points.iter().map(|p| p.repeat_retries).collect();
        let storm = storm_from(&c.totals, &c.hists, &attempts, &retries, &repeats);
        let mut merged = conversation::Merge::default();
        let mut close_reasons = crate::metrics::conversation::ConvData::default();
        for (g, names) in c.groups.iter().zip(&conversation_names) {
            merged.add(&g.data.conv, names);
            close_reasons.add(&crate::metrics::conversation::ConvData {
                close_reasons: g.data.conv.close_reasons.clone(),
                ..Default::default()
            });
        }
        totals.close_reasons = conversation::close_reasons(&close_reasons);
        let conversation_results = merged.finish(c.totals.received);
        let no_names = conversation::Names::default();
        let groups = group_clients
            .into_iter()
            .zip(c.groups)
            .zip(&connected_at_end)
            .enumerate()
            .map(|(i, (((name, clients), g), at_end))| GroupResults {
                name,
                conversation: {
                    let mut m = conversation::Merge::default();
                    m.add(&g.data.conv, conversation_names.get(i).unwrap_or(&no_names));
                    m.finish(g.data.counters.received)
                },
                totals: {
                    let mut t = totals_from(
                        &g.data.counters,
                        u64::from(clients),
                        g.peak_connected,
                        *at_end,
                    );
                    t.close_reasons = conversation::close_reasons(&g.data.conv);
                    t
                },
                latency_us: LatencyTable::from_hists(&g.data.hists),
                storm: storm_from(
                    &g.data.counters,
                    &g.data.hists,
                    &g.series.attempts,
                    &g.series.retries,
                    &g.series.repeat_retries,
                ),
                raw: Some(super::merge::Raw::of(&g.data)),
                timeline: g.series,
            })
            .collect();
        let lag = summarize(c.hists.get(Latency::ScheduleLag), true);
        let warnings = generator_warnings(&lag, &c.samples, fd_limit, &totals);
        let mut results = Results {
            schema: SCHEMA.to_string(),
            name,
            description,
            seed,
            run_id,
            started_at: humantime::format_rfc3339_millis(started_at).to_string(),
            duration_ms: duration.as_millis() as u64,
            end_reason: end,
            until,
            target,
            latency_us: LatencyTable::from_hists(&c.hists),
            timeline: {
                let by_name = |m: BTreeMap<u16, Vec<u64>>| -> BTreeMap<String, Vec<u64>> {
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                };
                let mut t = Timeline {
                    interval_ms: TICK.as_millis() as u64,
                    points: c.points,
                    actions: fired,
                    close_codes: by_name(c.close_series),
                    handshake_status: by_name(c.status_series),
                    effects: Vec::new(),
                };
                t.effects = super::effects::effects(
                    &t.actions,
                    &t.points,
                    t.interval_ms,
                    duration.as_millis() as u64,
                    &t.close_codes,
                    &t.handshake_status,
                );
                t
            },
            generator: Generator {
                cpu_user_s: round3(cpu.0),
                cpu_sys_s: round3(cpu.1),
                peak_rss_bytes: c.samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
                fd_limit,
                schedule_lag_us: lag,
                retry_lag_us: summarize(c.hists.get(Latency::RetryLag), true),
                samples: c.samples,
                warnings,
                layout,
                memory_predicted_bytes: memory_predicted,
            },
            totals,
            storm,
            conversation: conversation_results,
            groups,
            server,
            proxy,
            thresholds: Vec::new(),
            profile,
            warnings: c.warnings,
            failed: None,
            modelled: false,
            model: None,
            shard: None,
            shards: Vec::new(),
            events,
        };
        let mut failed = failures;
        failed.extend(run_failed(&results.totals, expect_failures));
        results.failed = (!failed.is_empty()).then(|| failed.join("; "));
        results.thresholds = threshold::evaluate_all(thresholds, &results.figures());
        if let Some((i, at)) = aborted_by
            && let Some(t) = results.thresholds.get_mut(i)
        {
            t.aborted_at_ms = Some(at.as_millis() as u64);
            // The run stopped because this failed; later figures can drift back under the
            // limit while the clients close, but the verdict is the one that stopped it.
            t.passed = false;
        }
        results
    }
}

/// Why a run failed as a run, whatever its thresholds say: nothing ever connected (a wrong
/// port or a dead target looks like a quiet success otherwise).
fn run_failed(t: &super::Totals, expect_failures: bool) -> Option<String> {
    if expect_failures || t.opened > 0 || t.connect_attempts == 0 {
        return None;
    }
    let mut why: Vec<String> = t
        .connect_errors
        .kinds()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    why.extend(
        t.handshake_status
            .iter()
            .map(|(s, n)| format!("{n} HTTP {s}")),
    );
    Some(format!(
        "no connection ever opened: {} attempts ({}); is the target up and the URL right? (a profile that expects this sets `expect_failures: true`)",
        t.connect_attempts,
        why.join(", ")
    ))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
