//! Text for people: the once-a-second progress line and the end-of-run summary. Pure functions
//! of a snapshot or of results; the caller decides where the text goes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::metrics::{LatencySummary, Snapshot, close_code_name};
use crate::results::Results;
use crate::results::capacity::{Capacity, fmt_load};
use crate::results::conversation::ConversationResults;
use crate::units::ms_text;

fn secs(d: Duration) -> String {
    format!("{:.0}s", d.as_secs_f64().floor())
}

/// `[  12s/30s] connected 998 …` — one line a second on stderr while a run goes.
pub fn progress_line(s: &Snapshot, duration: Duration, clients: u32) -> String {
    let l = &s.last_second;
    let rtt = &s.latency_recent.rtt;
    let mut line = format!(
        "[{:>5}/{}] connected {}/{} (peak {})  attempts/s {}  opened/s {}  closed/s {}  errors/s {}  in backoff {}  gave up {}",
        secs(s.elapsed),
        secs(duration),
        s.totals.connected(),
        clients,
        s.peak_connected,
        l.attempts,
        l.opened,
        l.closed,
        l.failed_attempts(),
        s.totals.in_backoff(),
        s.totals.gave_up,
    );
    if l.sent > 0 || l.received > 0 {
        let _ = write!(line, "  msgs/s {}/{}", l.sent, l.received);
    }
    if rtt.count > 0 {
        let _ = write!(
            line,
            "  rtt p50 {}ms p99 {}ms",
            ms_text(rtt.p50),
            ms_text(rtt.p99)
        );
    }
    line
}

fn latency_row(out: &mut String, name: &str, l: &LatencySummary) {
    if l.count == 0 {
        let _ = writeln!(out, "  {name:<12} {:>9}", "-");
        return;
    }
    let _ = writeln!(
        out,
        "  {name:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        l.count,
        ms_text(l.p50),
        ms_text(l.p90),
        ms_text(l.p99),
        ms_text(l.p999),
        ms_text(l.max)
    );
}

/// The end-of-run summary.
pub fn summary(r: &Results) -> String {
    let t = &r.totals;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "wsstorm: {} — {} after {:.1}s (seed {}{}) against {}",
        r.name,
        match r.end_reason {
            crate::results::EndReason::Completed => "completed",
            crate::results::EndReason::Interrupted => "INTERRUPTED",
            crate::results::EndReason::Stopped => "stopped",
            crate::results::EndReason::Aborted => "ABORTED by a threshold",
            crate::results::EndReason::Settled => "settled, ended",
            crate::results::EndReason::MaxReached => "NOT settled, stopped at --max",
        },
        r.duration_ms as f64 / 1000.0,
        r.seed,
        r.run_id
            .as_deref()
            .map(|id| format!(", run {id}"))
            .unwrap_or_default(),
        r.target
    );
    if let Some(u) = &r.until {
        let _ = writeln!(o, "  until        {}: {}", u.mode, u.describe());
    }
    if let Some(m) = &r.model {
        let _ = writeln!(
            o,
            "  modelled     in virtual time: {} events in {} ms wall, round trip {} µs, no CPU or kernel limits",
            m.events, m.wall_ms, m.rtt_us
        );
        for left in &m.not_modelled {
            let _ = writeln!(o, "  not modelled {left}");
        }
    }
    let _ = writeln!(
        o,
        "  clients      {:>9}   peak connected {}   connected at end {}   gave up {}",
        t.clients, t.peak_connected, t.connected_at_end, t.gave_up
    );
    let failed = t.connect_errors.total() + t.handshake_status.values().sum::<u64>();
    let _ = writeln!(
        o,
        "  attempts     {:>9}   opened {}   failed {}",
        t.connect_attempts, t.opened, failed
    );
    let errors: Vec<String> = t
        .connect_errors
        .kinds()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(
        o,
        "  connect errs {:>9}",
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        }
    );
    if !t.handshake_status.is_empty() {
        let s: Vec<String> = t
            .handshake_status
            .iter()
            .map(|(k, v)| format!("HTTP {k} ×{v}"))
            .collect();
        let _ = writeln!(o, "  handshake    {:>9}", s.join(", "));
    }
    if t.close_codes.is_empty() {
        let _ = writeln!(o, "  close codes  {:>9}", "none");
    } else {
        let mut first = true;
        for (code, n) in &t.close_codes {
            let name = code.parse().map(close_code_name).unwrap_or("unknown");
            let _ = write!(
                o,
                "  {:<12} {:>9} × {code} {name}",
                if first { "close codes" } else { "" },
                n
            );
            if let Some(reasons) = t.close_reasons.get(code) {
                let _ = write!(o, ": {}", top(reasons, 3));
            }
            o.push('\n');
            first = false;
        }
    }
    for (code, n) in &t.client_close_codes {
        let name = code.parse().map(close_code_name).unwrap_or("unknown");
        let _ = writeln!(
            o,
            "  server broke the protocol: the client closed {n} × {code} {name}"
        );
    }
    let _ = writeln!(
        o,
        "  client closes {:>8}   dead detected {}{}",
        t.client_closes,
        t.dead_detected,
        if t.flaps > 0 {
            format!("   flaps {} (lost soon after they opened)", t.flaps)
        } else {
            String::new()
        } + &if t.stalled > 0 {
            format!("   stalled {} (open, stream silent)", t.stalled)
        } else {
            String::new()
        }
    );
    let fleet = [
        (t.churn_drops, "dropped by churn"),
        (t.sessions_ended, "sessions ended"),
        (t.network_switches, "network switches"),
        (t.duplicate_connections, "duplicate connections left open"),
    ];
    if fleet.iter().any(|(n, _)| *n > 0) {
        let said: Vec<String> = fleet
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        let _ = writeln!(
            o,
            "  the clients' own doing: {} ({} clients arrived)",
            said.join(", "),
            t.clients_arrived
        );
    }
    if t.messages.sent > 0 || t.messages.received > 0 {
        let m = &t.messages;
        let _ = write!(
            o,
            "  messages     {:>9} sent, {} received",
            m.sent, m.received
        );
        if m.lost + m.duplicated + m.out_of_order > 0 {
            let _ = write!(
                o,
                "; stream: {} lost, {} duplicated, {} out of order",
                m.lost, m.duplicated, m.out_of_order
            );
        }
        if t.duplicate_received > 0 {
            let _ = write!(
                o,
                "; {} more on left-open duplicate connections",
                t.duplicate_received
            );
        }
        o.push('\n');
    }
    storm_line(&mut o, &r.storm);
    let _ = writeln!(
        o,
        "  latency (ms)     count       p50       p90       p99     p99.9       max"
    );
    let l = &r.latency_us;
    latency_row(&mut o, "connect", &l.connect);
    if l.tls.count > 0 {
        latency_row(&mut o, "tls", &l.tls);
    }
    latency_row(&mut o, "handshake", &l.handshake);
    latency_row(&mut o, "rtt", &l.rtt);
    latency_row(&mut o, "reconnect", &l.reconnect);
    if l.dead_detect.count > 0 {
        latency_row(&mut o, "dead detect", &l.dead_detect);
    }
    if let Some(c) = r.conversation.as_ref().filter(|c| super::has_figures(c)) {
        conversation(&mut o, c);
    }
    if r.groups.len() > 1 {
        for g in &r.groups {
            group_line(&mut o, g);
        }
    }
    if let Some(s) = &r.server {
        let mut parts = vec![format!("upgraded {}", s.upgraded)];
        for (name, n) in [
            ("503", s.rejected_503),
            ("401", s.rejected_401),
            ("404", s.rejected_404),
            ("403 origin", s.rejected_403),
            ("refused at max_connections", s.refused_max_connections),
            ("refused per IP", s.refused_per_ip),
            ("drained", s.drained),
            ("node restart closes", s.node_restart_closes),
            ("lifetime closes", s.lifetime_closes),
            ("wasted handshakes", s.handshakes_wasted),
            ("dead detected", s.dead_detected),
            ("idle timeouts", s.idle_timeouts),
            ("rate limited", s.rate_limited),
            ("tokens expired", s.auth_expired),
            ("hung", s.hung),
            ("revoked", s.revoked),
            ("ghosted", s.ghosted),
            ("withheld from ghosts", s.ghost_withheld),
            ("duplicate connections", s.duplicate_connections),
            ("duplicate subscriptions", s.duplicate_subscriptions),
            ("duplicate copies sent", s.stream_duplicate_copies),
            ("backpressure drops", s.backpressure_dropped),
            ("backpressure closes", s.backpressure_closed),
            ("stream published", s.stream_published),
        ] {
            if n > 0 {
                parts.push(format!("{name} {n}"));
            }
        }
        if !s.closes_sent.is_empty() {
            let closes: Vec<String> = s
                .closes_sent
                .iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect();
            parts.push(format!("closes sent {}", closes.join(" ")));
        }
        let _ = writeln!(o, "  target       {}", parts.join(", "));
    }
    if let Some(p) = &r.proxy {
        let _ = writeln!(
            o,
            "  proxy        accepted {}, cut {}, idle timeouts {}, upstream errors {}, {} bytes up, {} down",
            p.accepted,
            p.cut,
            p.idle_timeouts,
            p.upstream_errors,
            p.bytes_upstream,
            p.bytes_downstream
        );
    }
    for (i, a) in r.timeline.actions.iter().enumerate() {
        let effect = r.timeline.effects.get(i).filter(|e| e.action == a.action);
        let _ = writeln!(
            o,
            "  timeline     {:>8.1}s {} ({} open){}",
            a.t_ms as f64 / 1000.0,
            a.action,
            a.connections,
            effect.map_or(String::new(), effect_text)
        );
    }
    if let Some(e) = &r.events {
        let _ = writeln!(
            o,
            "  events       {} lines ({} bytes) about {} clients in {}{}",
            e.written,
            e.bytes,
            e.clients,
            e.file,
            if e.dropped > 0 {
                format!(", {} not written", e.dropped)
            } else {
                String::new()
            }
        );
    }
    let g = &r.generator;
    // A model has no generator to be late or short of memory; its cost is on the
    // `modelled` line.
    if !r.modelled {
        let _ = writeln!(
            o,
            "  generator    cpu {:.1}s user + {:.1}s sys, peak rss {:.1} MiB, schedule lag p99 {} ms",
            g.cpu_user_s,
            g.cpu_sys_s,
            g.peak_rss_bytes as f64 / (1 << 20) as f64,
            ms_text(g.schedule_lag_us.p99)
        );
    }
    for l in &g.layout {
        let _ = writeln!(o, "  layout       {l}");
    }
    for w in &g.warnings {
        let _ = writeln!(o, "  WARNING      {w}");
    }
    for w in &r.warnings {
        let _ = writeln!(o, "  WARNING      {w}");
    }
    if let Some(why) = &r.failed {
        let _ = writeln!(o, "  FAILED       {why}");
    }
    if let Some(passed) = r.thresholds_passed() {
        let failed = r.thresholds.iter().filter(|t| !t.passed).count();
        let _ = writeln!(
            o,
            "  thresholds   {}",
            if passed {
                format!("all {} passed", r.thresholds.len())
            } else {
                format!("{failed} of {} FAILED", r.thresholds.len())
            }
        );
        for t in &r.thresholds {
            let _ = writeln!(o, "    {t}");
        }
    }
    o
}

/// The `n` most frequent of `counts` (values the server chose: quoted, control characters
/// escaped, so a reason cannot drive the terminal), then how many others there were.
/// What followed one action, on its timeline line (short: one terminal line for most): what
/// it lost and when connected was back, and the rtt p99 when the action at least doubled it.
fn effect_text(e: &crate::results::effects::Effect) -> String {
    let mut t = format!(": lost {}", e.losses);
    if e.dead_detected > 0 {
        t += &format!(" ({} dead)", e.dead_detected);
    }
    if e.peak_attempts_per_interval > 0 {
        t += &format!(", peak {} attempts/100 ms", e.peak_attempts_per_interval);
    }
    if e.losses > 0 || e.connected_low < e.connected_before {
        t += &match e.recovery_ms {
            Some(ms) => format!(", back in {ms} ms"),
            None => ", not back".into(),
        };
    }
    if let (Some(before), Some(after)) = (e.rtt_p99_before_us, e.rtt_p99_after_us)
        && after >= 2 * before
    {
        t += &format!(
            ", rtt p99 {:.1} -> {:.1} ms",
            before as f64 / 1000.0,
            after as f64 / 1000.0
        );
    }
    t
}

fn top(counts: &BTreeMap<String, u64>, n: usize) -> String {
    let by_count = super::by_count(counts);
    let mut parts: Vec<String> = by_count
        .iter()
        .take(n)
        .map(|(v, k)| format!("{v:?} ×{k}"))
        .collect();
    if by_count.len() > n {
        parts.push(format!("+{} more", by_count.len() - n));
    }
    parts.join(", ")
}

/// Steps and streams as two small tables, then application errors and token refreshes.
fn conversation(o: &mut String, c: &ConversationResults) {
    let w = c
        .steps
        .keys()
        .chain(c.streams.keys())
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(12);
    let ms = |l: &LatencySummary, p: u64| {
        if l.count == 0 {
            "-".to_string()
        } else {
            ms_text(p)
        }
    };
    // One grid for both tables: the latency columns line up.
    if !c.steps.is_empty() {
        let _ = writeln!(
            o,
            "  {:<w$} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
            "steps", "sent", "matched", "timeouts", "abandoned", "errors", "p50 ms", "p99 ms"
        );
        for (name, s) in &c.steps {
            let (k, l) = (&s.counts, &s.latency_us);
            let _ = writeln!(
                o,
                "  {name:<w$} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
                k.sent,
                k.matched,
                k.timeouts,
                k.abandoned,
                k.errors,
                ms(l, l.p50),
                ms(l, l.p99)
            );
        }
    }
    if !c.streams.is_empty() {
        let _ = writeln!(
            o,
            "  {:<w$} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
            "streams", "delivered", "lost", "dup", "ooo", "unread", "p50 ms", "p99 ms"
        );
        for (name, s) in &c.streams {
            let (k, l) = (&s.counts, &s.delivery_latency_us);
            let _ = writeln!(
                o,
                "  {name:<w$} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
                k.delivered,
                k.lost,
                k.duplicated,
                k.out_of_order,
                k.unreadable,
                ms(l, l.p50),
                ms(l, l.p99)
            );
        }
    }
    let a = &c.app_errors;
    if a.count > 0 {
        let _ = write!(
            o,
            "  app errors   {:>9} ({}% of messages received)",
            a.count, a.rate
        );
        if !a.by_value.is_empty() {
            let _ = write!(o, ": {}", top(&a.by_value, 5));
        }
        o.push('\n');
    }
    if !c.closes.is_empty() {
        let list: Vec<String> = c
            .closes
            .iter()
            .map(|(code, n)| format!("{n} × {code}"))
            .collect();
        let _ = writeln!(o, "  closed by the conversation: {}", list.join(", "));
    }
    if c.token_refreshes + c.token_refresh_failures > 0 {
        let _ = writeln!(
            o,
            "  tokens       {:>9} refreshed, {} refreshes failed",
            c.token_refreshes, c.token_refresh_failures
        );
    }
}

fn storm_line(o: &mut String, s: &crate::results::Storm) {
    let pct = |v: Option<f64>| v.map_or("never".to_string(), |ms| format!("{ms:.0} ms"));
    if s.losses > 0 {
        let _ = writeln!(
            o,
            "  storm        {} lost, {} back: 50% in {}, 95% in {}, 99% in {}",
            s.losses,
            s.recovered,
            pct(s.recovery_ms.p50),
            pct(s.recovery_ms.p95),
            pct(s.recovery_ms.p99)
        );
    }
    let a = &s.attempts_per_client;
    let _ = writeln!(
        o,
        "  retries      peak {}/s ({} in 100 ms); attempts per client p50 {} p99 {} max {}",
        s.peak_retries_per_s, s.peak_retries_per_100ms, a.p50, a.p99, a.max
    );
}

fn group_line(o: &mut String, g: &crate::results::GroupResults) {
    let t = &g.totals;
    let mut line = format!(
        "  group {:<8} {} clients, opened {}, connected at end {}, gave up {}",
        g.name, t.clients, t.opened, t.connected_at_end, t.gave_up
    );
    if !t.close_codes.is_empty() {
        let codes: Vec<String> = t
            .close_codes
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        let _ = write!(line, ", closes {}", codes.join(" "));
    }
    let statuses: u64 = t.handshake_status.values().sum();
    if statuses > 0 {
        let s: Vec<String> = t
            .handshake_status
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        let _ = write!(line, ", HTTP {}", s.join(" "));
    }
    if t.connect_errors.total() > 0 {
        let _ = write!(line, ", connect errors {}", t.connect_errors.total());
    }
    if g.latency_us.rtt.count > 0 {
        let _ = write!(line, ", rtt p99 {} ms", ms_text(g.latency_us.rtt.p99));
    }
    if t.dead_detected > 0 {
        let _ = write!(line, ", dead {}", t.dead_detected);
    }
    let st = &g.storm;
    if st.losses > 0 {
        let pct = |v: Option<f64>| v.map_or("never".to_string(), |ms| format!("{ms:.0}ms"));
        let _ = write!(
            line,
            ", back p50 {} p99 {}",
            pct(st.recovery_ms.p50),
            pct(st.recovery_ms.p99)
        );
    }
    let _ = write!(line, ", peak {}/100ms", st.peak_attempts_per_100ms);
    let m = &t.messages;
    if m.lost + m.duplicated + m.out_of_order > 0 {
        let _ = write!(
            line,
            ", stream lost {} dup {} ooo {}",
            m.lost, m.duplicated, m.out_of_order
        );
    }
    let _ = writeln!(o, "{line}");
}

/// `text` as lines of at most `width` characters, indented by two, broken between words.
fn wrapped(o: &mut String, text: &str, width: usize) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            let _ = writeln!(o, "  {line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(o, "  {line}");
    }
}

/// The comparison table for the terminal.
/// The comparison as a table with a row per figure and a column per strategy, so six
/// strategies fit a 100-column terminal.
pub fn comparison(c: &crate::report::compare::Comparison) -> String {
    let columns = c.columns();
    let mut o = format!("wsstorm compare: {} (seed {})\n", c.name, c.seed);
    if let Some(u) = &c.until {
        wrapped(&mut o, &u.describe(), 96);
    }
    if !c.verdict.is_empty() {
        wrapped(&mut o, &c.verdict, 96);
        wrapped(
            &mut o,
            &format!(
                "ranking: {} (by {})",
                c.ranking.join(" > "),
                crate::report::compare::RANKED_BY
            ),
            96,
        );
    }
    let cell = |run: &crate::report::compare::CompareRun, col: &str| {
        let v = c
            .cell(&run.row, col)
            .unwrap_or_else(|| match run.row.value(col) {
                None if col.starts_with("recovery") => "never".to_string(),
                None => "-".to_string(),
                Some(v) if col == "rtt_p99_us" => format!("{:.2}", v / 1000.0),
                Some(v) if col.ends_with("_per_back") => format!("{v:.2}"),
                Some(v) => format!("{v:.0}"),
            });
        let win = c
            .winners
            .get(col)
            .is_some_and(|w| w.contains(&run.strategy));
        if win { format!("*{v}") } else { v }
    };
    let label = columns.iter().map(|(_, h)| h.len()).max().unwrap_or(0);
    let widths: Vec<usize> = c
        .runs
        .iter()
        .map(|run| {
            columns
                .iter()
                .map(|(col, _)| cell(run, col).chars().count())
                .chain([run.strategy.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let _ = write!(o, "  {:<label$}", "");
    for (run, w) in c.runs.iter().zip(&widths) {
        let _ = write!(o, " {:>w$}", run.strategy);
    }
    o.push('\n');
    for &(col, heading) in &columns {
        let _ = write!(o, "  {heading:<label$}");
        for (run, w) in c.runs.iter().zip(&widths) {
            let _ = write!(o, " {:>w$}", cell(run, col));
        }
        o.push('\n');
    }
    o.push_str(
        "  (* best in its row; lower is better, but for lost, back and the delays chosen)\n",
    );
    o
}

/// Text for the terminal: one line per step, then the verdict.
pub fn capacity_summary(c: &Capacity) -> String {
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_comparison_of_every_strategy_fits_100_columns() {
        use crate::report::compare::{CompareRow, CompareRun, CompareUntil, Comparison};
        let runs: Vec<CompareRun> = crate::backoff::Strategy::ALL
            .iter()
            .enumerate()
            .map(|(i, s)| CompareRun {
                strategy: s.name().to_string(),
                results: format!("{}/results.json", s.name()),
                row: CompareRow {
                    lost: 1_000_000,
                    back: 999_999,
                    not_back: 1,
                    recovery_p50_ms: Some(123_456.0),
                    recovery_p95_ms: None,
                    recovery_p99_ms: None,
                    recovery_p100_ms: None,
                    attempts_per_back: Some(12345.67),
                    wasted_per_back: Some(12345.67),
                    peak_attempts_per_s: 1_000_000,
                    peak_retries_per_100ms: 100_000,
                    peak_after_first_wave_per_s: 1_000_000,
                    delay_p50_ms: Some(12_345.6),
                    delay_p99_ms: Some(123_456.7),
                    total_attempts: 12_345_678,
                    rejections: 1_234_567,
                    gave_up: 1000,
                    rtt_p99_us: Some(12_345_678),
                    server_handshakes_wasted: Some(1_234_567),
                    settled: Some(i % 2 == 0),
                    settled_ms: (i % 2 == 0).then_some(123_456),
                },
            })
            .collect();
        let c = Comparison {
            schema: String::new(),
            name: "n".into(),
            seed: 1,
            started_at: String::new(),
            until: Some(CompareUntil {
                mode: "recovered".into(),
                max_ms: 300_000,
            }),
            winners: Default::default(),
            ranking: runs.iter().map(|r| r.strategy.clone()).collect(),
            verdict: crate::report::compare::rank(&runs).1,
            runs,
        };
        let text = super::comparison(&c);
        assert!(text.contains("decorrelated-jitter"), "{text}");
        assert!(text.contains("ranks first"), "{text}");
        assert!(text.contains("every run --until recovered"), "{text}");
        assert!(text.contains("settled after (ms)"), "{text}");
        assert!(
            text.contains("over 5m") && text.contains("123456"),
            "{text}"
        );
        assert!(text.contains("did not settle before --max"), "{text}");
        for line in text.lines() {
            assert!(
                line.chars().count() <= 100,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        // A comparison of fixed-length runs has no settle column.
        let mut fixed = c;
        fixed.until = None;
        for r in &mut fixed.runs {
            r.row.settled = None;
            r.row.settled_ms = None;
        }
        let text = super::comparison(&fixed);
        assert!(!text.contains("settled"), "{text}");
    }

    use super::*;

    #[test]
    fn names() {
        assert_eq!(close_code_name(1006), "abnormal closure");
        assert_eq!(close_code_name(4001), "application");
        assert_eq!(ms_text(1234), "1.23");
        assert_eq!(ms_text(123_456), "123");
    }

    #[test]
    fn a_conversation_gets_steps_streams_and_app_errors() {
        let text = summary(&crate::report::fixture::conversation());
        for expect in [
            "  steps             sent  matched timeouts abandoned   errors   p50 ms   p99 ms\n",
            "  <i>req</i>        1200     1150       40         7        3     12.0     12.0\n",
            "  hello               30       30        0         0        0     2.00     2.00\n",
            "  streams      delivered     lost      dup       ooo   unread   p50 ms   p99 ms\n",
            "  prices            5000       12        2         1        0     5.00     5.00\n",
            "  app errors          60 (0.9% of messages received): \"RATE_LIMITED\" ×30, \"<b>E42</b>\" ×10, \"E1\" ×6, \"E2\" ×5, \"E3\" ×5, +1 more\n",
            "  tokens               4 refreshed, 1 refreshes failed\n",
            // Reasons next to their code, the most frequent three; the server's text quoted
            // and escaped.
            "         25 × 4000 application: \"bye\" ×12, \"kicked\" ×10, \"\\u{1b}[31mred\" ×2, +1 more\n",
            "          3 × 1001 going away: \"going away\" ×3\n",
        ] {
            assert!(text.contains(expect), "missing {expect:?} in:\n{text}");
        }
        assert!(
            !text.contains('\u{1b}'),
            "a close reason reached the terminal raw"
        );
    }

    #[test]
    fn no_conversation_no_change() {
        let mut r = crate::report::fixture::results();
        let plain = summary(&r);
        for absent in ["steps", "streams", "app errors", "tokens"] {
            assert!(!plain.contains(absent), "{absent} in:\n{plain}");
        }
        r.conversation = Some(Default::default());
        assert_eq!(summary(&r), plain);
    }
}
