//! Thresholds: pass/fail conditions on a run's figures, for CI gates and capacity searches.
//!
//! An expression is `METRIC OP VALUE`, e.g. `rtt.p99 < 50ms`, `errors.rate < 1%`,
//! `close_codes.1011 == 0`. The metric's kind fixes what VALUE must be (a duration, a
//! percentage or a plain count), so `rtt.p99 < 50` is an error rather than a guess. Parsing
//! happens before anything runs; evaluation reads the same figures results.json holds, so a
//! threshold's measured value is always one a user can find in the file.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::metrics::Latency;
use crate::results::{LatencyTable, Storm, Totals};

/// What a metric measures, and so what its limit is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Microseconds; written `500us`, `50ms`, `2s`.
    Duration,
    /// 0–100; written `1%`.
    Percent,
    /// A number of events; written plain.
    Count,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    fn holds(self, measured: f64, limit: f64) -> bool {
        match self {
            Op::Lt => measured < limit,
            Op::Le => measured <= limit,
            Op::Gt => measured > limit,
            Op::Ge => measured >= limit,
            Op::Eq => measured == limit,
            Op::Ne => measured != limit,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// A figure of a run a threshold can test. Parsed once; evaluated against results or a live
/// snapshot.
#[derive(Clone, Debug, PartialEq)]
enum Metric {
    Latency(Latency, Stat),
    Recovery(RecoveryShare),
    ErrorsRate,
    ErrorsCount,
    ConnectErrors(String),
    HandshakeStatus(Option<u16>),
    CloseCodes(Option<u16>),
    Total(TotalName),
    ConnectedShare,
    Messages(String),
    MessageLossRate,
    PeakAttemptsPerS,
    PeakRetriesPerS,
    /// A conversation step, request or reply rule by name.
    Step(String, Part),
    /// A conversation stream by name.
    Stream(String, Part),
    AppErrorsRate,
    AppErrorsCount,
}

/// What of a step or stream: a count by name, or a latency statistic.
#[derive(Clone, Debug, PartialEq)]
enum Part {
    Count(&'static str),
    Latency(Stat),
}

const STEP_COUNTS: [&str; 6] = [
    "sent",
    "matched",
    "timeouts",
    "errors",
    "skipped",
    "abandoned",
];
const STREAM_COUNTS: [&str; 5] = [
    "delivered",
    "lost",
    "duplicated",
    "out_of_order",
    "unreadable",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stat {
    Count,
    Min,
    Mean,
    P50,
    P90,
    P99,
    P999,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum RecoveryShare {
    P50,
    P95,
    P99,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum TotalName {
    Clients,
    ConnectAttempts,
    Opened,
    PeakConnected,
    ConnectedAtEnd,
    ClientCloses,
    GaveUp,
    DeadDetected,
    Stalled,
}

const STATS: [(&str, Stat); 8] = [
    ("count", Stat::Count),
    ("min", Stat::Min),
    ("mean", Stat::Mean),
    ("p50", Stat::P50),
    ("p90", Stat::P90),
    ("p99", Stat::P99),
    ("p999", Stat::P999),
    ("max", Stat::Max),
];
const TOTALS: [(&str, TotalName); 9] = [
    ("clients", TotalName::Clients),
    ("connect_attempts", TotalName::ConnectAttempts),
    ("opened", TotalName::Opened),
    ("peak_connected", TotalName::PeakConnected),
    ("connected_at_end", TotalName::ConnectedAtEnd),
    ("client_closes", TotalName::ClientCloses),
    ("gave_up", TotalName::GaveUp),
    ("dead_detected", TotalName::DeadDetected),
    ("stalled", TotalName::Stalled),
];
const MESSAGES: [&str; 5] = ["sent", "received", "lost", "duplicated", "out_of_order"];

/// The metric names, for error messages and the README.
pub const METRIC_HELP: &str = "\
connect|tls|handshake|rtt|reconnect|dead_detect.{p50,p90,p99,p999,max,min,mean,count}, \
recovery.{p50,p95,p99}, errors.rate, errors.count, \
connect_errors.{refused,timeout,reset,addr_unavailable,dns,tls,fd_limit,other,cancelled,total}, \
handshake_status.{CODE,total}, close_codes.{CODE,total}, \
clients, connect_attempts, opened, peak_connected, connected_at_end, connected_at_end.share, \
client_closes, gave_up, dead_detected, stalled, messages.{sent,received,lost,duplicated,out_of_order}, \
messages.loss_rate, storm.peak_attempts_per_s, storm.peak_retries_per_s, \
step.NAME.{sent,matched,timeouts,errors,skipped,abandoned,p50,p90,p99,p999,max,min,mean,count}, \
stream.NAME.{delivered,lost,duplicated,out_of_order,unreadable,p50,p90,p99,p999,max,min,mean,count} \
(delivery latency), app_errors.{rate,count}";

impl Metric {
    fn parse(name: &str) -> Result<Metric, String> {
        let unknown = || format!("unknown metric `{name}`; metrics are: {METRIC_HELP}");
        let (head, rest) = match name.split_once('.') {
            Some((h, r)) => (h, Some(r)),
            None => (name, None),
        };
        if let Some(l) = LatencyTable::KINDS.iter().find(|l| l.name() == head) {
            let Some(rest) = rest else {
                return Err(format!(
                    "`{name}` needs a statistic: {head}.p50, {head}.p99, {head}.max, …"
                ));
            };
            let stat = STATS
                .iter()
                .find(|(n, _)| *n == rest)
                .map(|(_, s)| *s)
                .ok_or_else(|| {
                    format!(
                        "unknown statistic `{rest}` of `{head}`, expected one of p50, p90, p99, p999, max, min, mean, count"
                    )
                })?;
            return Ok(Metric::Latency(*l, stat));
        }
        let code = |what: &str, r: &str| -> Result<Option<u16>, String> {
            if r == "total" {
                return Ok(None);
            }
            r.parse::<u16>().map(Some).map_err(|_| {
                format!("`{what}.{r}`: expected a numeric code (e.g. {what}.1006) or `total`")
            })
        };
        Ok(match (head, rest) {
            ("recovery", Some("p50")) => Metric::Recovery(RecoveryShare::P50),
            ("recovery", Some("p95")) => Metric::Recovery(RecoveryShare::P95),
            ("recovery", Some("p99")) => Metric::Recovery(RecoveryShare::P99),
            ("recovery", _) => {
                return Err(format!(
                    "`{name}`: recovery has p50, p95 and p99 (time until that share of lost connections was back)"
                ));
            }
            ("errors", Some("rate")) => Metric::ErrorsRate,
            ("errors", Some("count")) => Metric::ErrorsCount,
            ("connect_errors", Some(r))
                if r == "total"
                    || crate::results::ConnectErrors::default()
                        .kinds()
                        .iter()
                        .any(|(k, _)| *k == r) =>
            {
                Metric::ConnectErrors(r.to_string())
            }
            ("handshake_status", Some(r)) => Metric::HandshakeStatus(code(head, r)?),
            ("close_codes", Some(r)) => Metric::CloseCodes(code(head, r)?),
            ("connected_at_end", Some("share")) => Metric::ConnectedShare,
            ("messages", Some("loss_rate")) => Metric::MessageLossRate,
            ("messages", Some(r)) if MESSAGES.contains(&r) => Metric::Messages(r.to_string()),
            ("step" | "stream", Some(r)) => {
                let Some((name, part)) = r.rsplit_once('.') else {
                    return Err(format!(
                        "`{name}`: write {head}.NAME.STATISTIC, e.g. {head}.subscribe.p99"
                    ));
                };
                let counts: &[&'static str] = if head == "step" {
                    &STEP_COUNTS
                } else {
                    &STREAM_COUNTS
                };
                let part = if let Some(c) = counts.iter().find(|c| **c == part) {
                    Part::Count(c)
                } else if let Some((_, st)) = STATS.iter().find(|(n, _)| *n == part) {
                    Part::Latency(*st)
                } else {
                    return Err(format!(
                        "unknown statistic `{part}` of `{head}.{name}`, expected one of {}, p50, p90, p99, p999, max, min, mean, count",
                        counts.join(", ")
                    ));
                };
                if head == "step" {
                    Metric::Step(name.to_string(), part)
                } else {
                    Metric::Stream(name.to_string(), part)
                }
            }
            ("app_errors", Some("rate")) => Metric::AppErrorsRate,
            ("app_errors", Some("count")) => Metric::AppErrorsCount,
            ("storm", Some("peak_attempts_per_s")) => Metric::PeakAttemptsPerS,
            ("storm", Some("peak_retries_per_s")) => Metric::PeakRetriesPerS,
            (h, None) => match TOTALS.iter().find(|(n, _)| *n == h) {
                Some((_, t)) => Metric::Total(*t),
                None => return Err(unknown()),
            },
            _ => return Err(unknown()),
        })
    }

    fn kind(&self) -> Kind {
        match self {
            Metric::Latency(_, Stat::Count) => Kind::Count,
            Metric::Step(_, Part::Latency(Stat::Count))
            | Metric::Stream(_, Part::Latency(Stat::Count)) => Kind::Count,
            Metric::Latency(..)
            | Metric::Recovery(_)
            | Metric::Step(_, Part::Latency(_))
            | Metric::Stream(_, Part::Latency(_)) => Kind::Duration,
            Metric::ErrorsRate
            | Metric::ConnectedShare
            | Metric::MessageLossRate
            | Metric::AppErrorsRate => Kind::Percent,
            _ => Kind::Count,
        }
    }

    /// The measured value in the metric's base unit; `None` when the run has no data for it
    /// (no round trip measured, nothing lost so nothing recovered).
    fn measure(&self, f: &Figures) -> Option<f64> {
        let t = f.totals;
        let pct = |num: u64, den: u64| (den > 0).then(|| num as f64 * 100.0 / den as f64);
        match self {
            Metric::Latency(l, stat) => {
                // Parsing admits only the table's kinds.
                stat_of(f.latency.get(*l)?, *stat)
            }
            Metric::Step(name, part) => {
                let s = f.conversation?.steps.get(name)?;
                match part {
                    Part::Latency(st) => stat_of(&s.latency_us, *st),
                    Part::Count(c) => Some(match *c {
                        "sent" => s.counts.sent,
                        "matched" => s.counts.matched,
                        "timeouts" => s.counts.timeouts,
                        "abandoned" => s.counts.abandoned,
                        "skipped" => s.counts.skipped,
                        _ => s.counts.errors,
                    } as f64),
                }
            }
            Metric::Stream(name, part) => {
                let s = f.conversation?.streams.get(name)?;
                match part {
                    Part::Latency(st) => stat_of(&s.delivery_latency_us, *st),
                    Part::Count(c) => Some(match *c {
                        "delivered" => s.counts.delivered,
                        "lost" => s.counts.lost,
                        "duplicated" => s.counts.duplicated,
                        "out_of_order" => s.counts.out_of_order,
                        _ => s.counts.unreadable,
                    } as f64),
                }
            }
            // No conversation figures (a run without one, or the live check, which sees
            // none): no data, not zero.
            Metric::AppErrorsRate => pct(f.conversation?.app_errors.count, t.messages.received),
            Metric::AppErrorsCount => Some(f.conversation?.app_errors.count as f64),
            Metric::Recovery(share) => {
                let r = &f.storm.recovery_ms;
                let ms = match share {
                    RecoveryShare::P50 => r.p50,
                    RecoveryShare::P95 => r.p95,
                    RecoveryShare::P99 => r.p99,
                }?;
                Some(ms * 1000.0)
            }
            Metric::ErrorsRate => pct(errors(t), t.connect_attempts),
            Metric::ErrorsCount => Some(errors(t) as f64),
            Metric::ConnectErrors(k) => {
                let e = &t.connect_errors;
                let n = match k.as_str() {
                    "total" => e.total(),
                    k => e
                        .kinds()
                        .iter()
                        .find(|(name, _)| *name == k)
                        .map_or(0, |(_, n)| *n),
                };
                Some(n as f64)
            }
            Metric::HandshakeStatus(code) => Some(by_code(&t.handshake_status, *code) as f64),
            Metric::CloseCodes(code) => Some(by_code(&t.close_codes, *code) as f64),
            Metric::Total(n) => Some(match n {
                TotalName::Clients => t.clients,
                TotalName::ConnectAttempts => t.connect_attempts,
                TotalName::Opened => t.opened,
                TotalName::PeakConnected => t.peak_connected,
                TotalName::ConnectedAtEnd => t.connected_at_end,
                TotalName::ClientCloses => t.client_closes,
                TotalName::GaveUp => t.gave_up,
                TotalName::DeadDetected => t.dead_detected,
                TotalName::Stalled => t.stalled,
            } as f64),
            Metric::ConnectedShare => pct(t.connected_at_end, t.clients),
            Metric::Messages(k) => {
                let m = &t.messages;
                Some(match k.as_str() {
                    "sent" => m.sent,
                    "received" => m.received,
                    "lost" => m.lost,
                    "duplicated" => m.duplicated,
                    _ => m.out_of_order,
                } as f64)
            }
            Metric::MessageLossRate => pct(t.messages.lost, t.messages.received + t.messages.lost),
            Metric::PeakAttemptsPerS => Some(f.storm.peak_attempts_per_s as f64),
            Metric::PeakRetriesPerS => Some(f.storm.peak_retries_per_s as f64),
        }
    }
}

impl Threshold {
    /// Whether it reads what conversations measured, which is only known at the end of a run
    /// (so `abort_on_fail` cannot watch it).
    pub fn reads_conversation(&self) -> bool {
        matches!(
            self.metric,
            Metric::Step(..) | Metric::Stream(..) | Metric::AppErrorsRate | Metric::AppErrorsCount
        )
    }

    /// `("step", NAME)` or `("stream", NAME)` when the threshold reads a conversation's step or
    /// stream by name.
    pub fn conversation_name(&self) -> Option<(&'static str, &str)> {
        match &self.metric {
            Metric::Step(n, _) => Some(("step", n)),
            Metric::Stream(n, _) => Some(("stream", n)),
            _ => None,
        }
    }
}

fn stat_of(s: &crate::metrics::LatencySummary, stat: Stat) -> Option<f64> {
    if stat == Stat::Count {
        return Some(s.count as f64);
    }
    if s.count == 0 {
        return None;
    }
    Some(match stat {
        Stat::Count => unreachable!("handled above"),
        Stat::Min => s.min as f64,
        Stat::Mean => s.mean,
        Stat::P50 => s.p50 as f64,
        Stat::P90 => s.p90 as f64,
        Stat::P99 => s.p99 as f64,
        Stat::P999 => s.p999 as f64,
        Stat::Max => s.max as f64,
    })
}

/// Failed attempts: connect errors (not those cut short by the end of the run) and non-101
/// answers to the upgrade.
pub fn errors(t: &Totals) -> u64 {
    t.connect_errors.total() - t.connect_errors.cancelled + t.handshake_status.values().sum::<u64>()
}

fn by_code(m: &std::collections::BTreeMap<String, u64>, code: Option<u16>) -> u64 {
    match code {
        Some(c) => m.get(&c.to_string()).copied().unwrap_or(0),
        None => m.values().sum(),
    }
}

/// The figures a threshold reads: a finished run's, or the run so far.
pub struct Figures<'a> {
    pub totals: &'a Totals,
    pub latency: &'a LatencyTable,
    pub storm: &'a Storm,
    /// What conversations measured (none while running: their names are joined at the end).
    pub conversation: Option<&'a super::conversation::ConversationResults>,
}

/// A parse error: what was expected, and where in the expression (0-based character offset).
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.offset + 1)
    }
}

/// A parsed threshold expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub expression: String,
    metric_name: String,
    metric: Metric,
    op: Op,
    /// In the metric's base unit (µs, percent, count).
    limit: f64,
    /// Stop the run as soon as this fails (checked once a second).
    pub abort_on_fail: bool,
    /// With `abort_on_fail`: not checked before this much of the run has passed.
    pub delay: std::time::Duration,
}

impl Threshold {
    pub fn parse(expr: &str) -> Result<Threshold, ParseError> {
        let err = |offset: usize, message: String| ParseError { offset, message };
        let chars: Vec<(usize, char)> = expr.char_indices().collect();
        let at = |byte: usize| expr[..byte].chars().count();
        let mut i = 0;
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        let name_start = i;
        while i < chars.len()
            && (chars[i].1.is_ascii_alphanumeric() || chars[i].1 == '_' || chars[i].1 == '.')
        {
            i += 1;
        }
        let byte = |i: usize| chars.get(i).map(|c| c.0).unwrap_or(expr.len());
        let name = &expr[byte(name_start)..byte(i)];
        if name.is_empty() {
            return Err(err(
                name_start,
                "expected a metric name (e.g. `rtt.p99 < 50ms`)".into(),
            ));
        }
        let metric = Metric::parse(name).map_err(|m| err(name_start, m))?;
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        let op_start = i;
        let rest = &expr[byte(i)..];
        let op = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find(|(s, _)| rest.starts_with(s));
        let Some((op_text, op)) = op else {
            return Err(err(
                op_start,
                format!(
                    "expected a comparison (<, <=, >, >=, ==, !=) after `{name}`, found {}",
                    found(rest)
                ),
            ));
        };
        i += op_text.len();
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        let value_start = i;
        let value = expr[byte(i)..].trim_end();
        let kind = metric.kind();
        let limit = parse_value(value, kind, name).map_err(|m| err(at(byte(value_start)), m))?;
        Ok(Threshold {
            expression: expr.trim().to_string(),
            metric_name: name.to_string(),
            metric,
            op,
            limit,
            abort_on_fail: false,
            delay: std::time::Duration::ZERO,
        })
    }

    pub fn kind(&self) -> Kind {
        self.metric.kind()
    }

    /// Test the figures. `None` as the measured value (no data) fails: a gate that cannot see
    /// its metric must not pass silently.
    pub fn evaluate(&self, f: &Figures) -> ThresholdResult {
        let measured = self.metric.measure(f);
        ThresholdResult {
            expression: self.expression.clone(),
            metric: self.metric_name.clone(),
            op: self.op,
            limit: self.limit,
            unit: self.kind(),
            measured,
            passed: measured.is_some_and(|m| self.op.holds(m, self.limit)),
            abort_on_fail: self.abort_on_fail,
            aborted_at_ms: None,
        }
    }

    /// During the run: fails only on data (no data yet is not a failure yet).
    pub fn fails_now(&self, f: &Figures) -> Option<f64> {
        let m = self.metric.measure(f)?;
        (!self.op.holds(m, self.limit)).then_some(m)
    }
}

fn found(rest: &str) -> String {
    match rest.split_whitespace().next() {
        Some(w) => format!("`{w}`"),
        None => "the end".into(),
    }
}

fn parse_value(value: &str, kind: Kind, name: &str) -> Result<f64, String> {
    if value.is_empty() {
        return Err(format!(
            "expected a value after the comparison ({})",
            kind_hint(kind)
        ));
    }
    match kind {
        Kind::Duration => crate::units::Dur::from_str(value)
            .map(|d| d.0.as_secs_f64() * 1e6)
            .map_err(|_| {
                format!(
                    "`{name}` is a time: expected a duration like `50ms` or `2s`, found `{value}`"
                )
            }),
        Kind::Percent => {
            let n = value
                .strip_suffix('%')
                .map(str::trim)
                .and_then(|n| n.parse::<f64>().ok());
            match n {
                Some(n) if (0.0..=100.0).contains(&n) => Ok(n),
                _ => Err(format!(
                    "`{name}` is a share: expected a percentage like `1%` or `99.5%`, found `{value}`"
                )),
            }
        }
        Kind::Count => match value.replace('_', "").parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
            _ => Err(format!(
                "`{name}` is a count: expected a plain number like `0` or `100`, found `{value}`"
            )),
        },
    }
}

fn kind_hint(kind: Kind) -> &'static str {
    match kind {
        Kind::Duration => "a duration like `50ms`",
        Kind::Percent => "a percentage like `1%`",
        Kind::Count => "a number",
    }
}

/// One threshold after the run, as results.json records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    pub expression: String,
    pub metric: String,
    pub op: Op,
    /// In `unit`: microseconds, percent (0–100) or a count.
    pub limit: f64,
    pub unit: Kind,
    /// `null` when the run had no data for the metric (that fails the threshold).
    pub measured: Option<f64>,
    pub passed: bool,
    #[serde(default)]
    pub abort_on_fail: bool,
    /// When this threshold stopped the run (`abort_on_fail`), ms after the start.
    #[serde(default)]
    pub aborted_at_ms: Option<u64>,
}

impl ThresholdResult {
    /// `12.3 ms`, `0.42 %`, `17`: the measured value in the threshold's own unit.
    pub fn measured_text(&self) -> String {
        match self.measured {
            None => "no data".into(),
            Some(v) => format_value(v, self.unit),
        }
    }

    pub fn limit_text(&self) -> String {
        format_value(self.limit, self.unit)
    }
}

pub fn format_value(v: f64, unit: Kind) -> String {
    match unit {
        Kind::Duration if v >= 1e6 => format!("{:.2} s", v / 1e6),
        Kind::Duration if v >= 1e3 => format!("{:.2} ms", v / 1e3),
        Kind::Duration => format!("{v:.0} µs"),
        Kind::Percent => format!("{v:.2} %"),
        Kind::Count if v.fract() == 0.0 => format!("{v:.0}"),
        Kind::Count => format!("{v:.1}"),
    }
}

impl fmt::Display for ThresholdResult {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} {:<32} measured {}",
            if self.passed { "pass" } else { "FAIL" },
            self.expression,
            self.measured_text()
        )?;
        if let Some(t) = self.aborted_at_ms {
            write!(f, " (stopped the run at {:.1} s)", t as f64 / 1000.0)?;
        }
        Ok(())
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Evaluate every threshold against finished figures.
pub fn evaluate_all(list: &[Threshold], f: &Figures) -> Vec<ThresholdResult> {
    list.iter().map(|t| t.evaluate(f)).collect()
}

/// Show where in `expr` a parse error is: the expression and a caret under the offending
/// character.
pub fn caret(expr: &str, e: &ParseError) -> String {
    format!("  {expr}\n  {}^", " ".repeat(e.offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LatencySummary;
    use crate::results::{ConnectErrors, Messages};

    fn figures() -> (Totals, LatencyTable, Storm) {
        let mut t = Totals {
            clients: 100,
            connect_attempts: 200,
            opened: 190,
            connected_at_end: 95,
            gave_up: 2,
            connect_errors: ConnectErrors {
                refused: 4,
                cancelled: 3,
                ..Default::default()
            },
            messages: Messages {
                received: 990,
                lost: 10,
                ..Default::default()
            },
            ..Default::default()
        };
        t.handshake_status.insert("503".into(), 6);
        t.close_codes.insert("1006".into(), 50);
        t.close_codes.insert("1001".into(), 5);
        let l = LatencyTable {
            rtt: LatencySummary {
                count: 10,
                p99: 42_000,
                p50: 900,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut s = Storm::default();
        s.recovery_ms.p99 = Some(1500.0);
        (t, l, s)
    }

    fn eval(expr: &str) -> ThresholdResult {
        let (t, l, s) = figures();
        let mut c = crate::results::conversation::ConversationResults::default();
        let mut step = crate::results::conversation::StepResults::default();
        step.counts.sent = 10;
        step.counts.timeouts = 2;
        step.latency_us.count = 8;
        step.latency_us.p99 = 150_000;
        c.steps.insert("subscribe".into(), step);
        let mut stream = crate::results::conversation::StreamResults::default();
        stream.counts.lost = 3;
        c.streams.insert("prices".into(), stream);
        c.app_errors.count = 5;
        let f = Figures {
            totals: &t,
            latency: &l,
            storm: &s,
            conversation: Some(&c),
        };
        Threshold::parse(expr).unwrap().evaluate(&f)
    }

    #[test]
    fn conversation_figures_by_name() {
        assert!(eval("step.subscribe.p99 < 200ms").passed);
        assert!(!eval("step.subscribe.p99 < 100ms").passed);
        assert!(!eval("step.subscribe.timeouts == 0").passed);
        assert!(eval("step.subscribe.sent == 10").passed);
        assert!(!eval("stream.prices.lost == 0").passed);
        assert!(eval("stream.prices.lost == 3").passed);
        assert!(
            !eval("step.nope.p99 < 1s").passed,
            "no such step: no data fails"
        );
        let e = Threshold::parse("step.subscribe.p42 < 1s").unwrap_err();
        assert!(e.message.contains("unknown statistic `p42`"), "{e:?}");
        let e = Threshold::parse("step.subscribe < 1s").unwrap_err();
        assert!(e.message.contains("step.NAME.STATISTIC"), "{e:?}");
    }

    #[test]
    fn measures_what_results_hold() {
        assert!(eval("rtt.p99 < 50ms").passed);
        assert!(!eval("rtt.p99 < 40ms").passed);
        assert_eq!(eval("rtt.p99 < 40ms").measured, Some(42_000.0));
        assert!(eval("rtt.p50 <= 900us").passed);
        // 4 refused + 6 answered 503 of 200 attempts; cancelled attempts are not errors.
        assert_eq!(eval("errors.rate < 1%").measured, Some(5.0));
        assert_eq!(eval("errors.count == 10").measured, Some(10.0));
        assert!(eval("close_codes.1011 == 0").passed);
        assert_eq!(eval("close_codes.1006 == 0").measured, Some(50.0));
        assert_eq!(eval("close_codes.total > 0").measured, Some(55.0));
        assert_eq!(eval("handshake_status.503 == 0").measured, Some(6.0));
        assert_eq!(eval("recovery.p99 < 30s").measured, Some(1_500_000.0));
        assert!(!eval("gave_up == 0").passed);
        assert_eq!(eval("connected_at_end.share >= 95%").measured, Some(95.0));
        assert!(eval("connected_at_end.share >= 95%").passed);
        assert_eq!(eval("messages.loss_rate < 2%").measured, Some(1.0));
        assert_eq!(eval("connect_errors.total == 7").measured, Some(7.0));
        assert!(eval("rtt.count == 10").passed);
        assert_eq!(eval("stalled < 1").measured, Some(0.0));
    }

    #[test]
    fn no_data_fails() {
        let r = eval("handshake.p99 < 1s");
        assert_eq!(r.measured, None);
        assert!(!r.passed);
        assert_eq!(r.measured_text(), "no data");
        let r = eval("recovery.p50 < 1s");
        assert!(!r.passed);
    }

    #[test]
    fn errors_name_the_position_and_what_was_expected() {
        let e = Threshold::parse("rtt.p99 <> 50ms").unwrap_err();
        assert_eq!(e.offset, 9);
        assert!(e.message.contains("duration"), "{}", e.message);
        let e = Threshold::parse("rtt.p99 50ms").unwrap_err();
        assert_eq!(e.offset, 8);
        assert!(
            e.message.starts_with("expected a comparison"),
            "{}",
            e.message
        );
        let e = Threshold::parse("rtt.p98 < 5ms").unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(
            e.message.contains("unknown statistic `p98`"),
            "{}",
            e.message
        );
        let e = Threshold::parse("  latency < 5ms").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(
            e.message.contains("unknown metric `latency`"),
            "{}",
            e.message
        );
        let e = Threshold::parse("rtt.p99 < 50").unwrap_err();
        assert_eq!(e.offset, 10);
        assert!(e.message.contains("expected a duration"), "{}", e.message);
        let e = Threshold::parse("errors.rate < 0.01").unwrap_err();
        assert!(e.message.contains("percentage"), "{}", e.message);
        let e = Threshold::parse("gave_up == 1ms").unwrap_err();
        assert!(e.message.contains("count"), "{}", e.message);
        let e = Threshold::parse("close_codes.abnormal == 0").unwrap_err();
        assert!(e.message.contains("numeric code"), "{}", e.message);
        let e = Threshold::parse("gave_up ==").unwrap_err();
        assert!(e.message.contains("expected a value"), "{}", e.message);
        assert_eq!(
            caret(
                "rtt.p99 <> 50ms",
                &Threshold::parse("rtt.p99 <> 50ms").unwrap_err()
            )
            .lines()
            .nth(1)
            .unwrap()
            .find('^'),
            Some(2 + 9)
        );
    }

    #[test]
    fn operators() {
        assert!(eval("opened >= 190").passed);
        assert!(!eval("opened > 190").passed);
        assert!(eval("opened != 0").passed);
        assert!(eval("gave_up<=2").passed);
    }
}
