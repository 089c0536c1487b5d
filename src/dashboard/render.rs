//! Drawing the dashboard: a pure function of its state, so tests draw into ratatui's
//! TestBackend and read the buffer.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Cell, Chart, Clear, Dataset, Gauge, GraphType, Paragraph, Row, Table, Wrap,
};

use super::conversation::Live;
use super::{Dashboard, RightChart, Sample};
use crate::metrics::LatencySummary;
use crate::metrics::close_code_name;
use crate::units::ms_text;

/// Below this the panels cannot be laid out readably.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 20;

pub fn render(app: &Dashboard, f: &mut Frame) {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "wsstorm: the terminal is {}x{}; the dashboard needs {MIN_WIDTH}x{MIN_HEIGHT}. The run goes on; q stops it.",
            area.width, area.height
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    // At 80x24 the standard rows leave the charts 7 lines. The steps panel gets a row of its
    // own only where the charts keep those; otherwise it takes the attempts chart's place
    // (the attempts rate moves into the other chart's title).
    let steps_height = app.conversation.as_ref().map(steps_height);
    let own_row = steps_height.filter(|h| area.height >= 3 + 7 + 7 + 6 + 1 + h);
    // A terminal tall enough gives latency and dead detections a row of charts of their
    // own; a shorter one shows them in the right-hand chart (`c`).
    let cause_row = (area.height >= 3 + 7 + 8 + 7 + 6 + 1 + own_row.unwrap_or(0)).then_some(8);
    let [header, charts, causes, steps, middle, bottom, footer] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(6),
        Constraint::Length(cause_row.unwrap_or(0)),
        Constraint::Length(own_row.unwrap_or(0)),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(app, f, header);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(charts);
    match (&app.conversation, own_row) {
        (Some(live), Some(_)) => {
            render_chart(app, f, left, Series::Connected);
            render_chart(app, f, right, Series::Attempts);
            render_steps(app, live, f, steps);
        }
        (Some(live), None) => {
            render_chart(app, f, left, Series::ConnectedAndRate);
            render_steps(app, live, f, right);
        }
        (None, _) => {
            render_chart(app, f, left, Series::Connected);
            let shown = match (cause_row, app.right) {
                (None, RightChart::Latency) => Series::Latency,
                (None, RightChart::Dead) => Series::Dead,
                _ => Series::Attempts,
            };
            render_chart(app, f, right, shown);
        }
    }
    if cause_row.is_some() {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(causes);
        render_chart(app, f, left, Series::Latency);
        render_chart(app, f, right, Series::Dead);
    }
    let [lat, codes] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(middle);
    render_latency(app, f, lat);
    render_codes(app, f, codes);
    let [storm, generator] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
    render_storm(app, f, storm);
    render_generator(app, f, generator);
    let actions = fired_list(app);
    // Once actions have fired, they take the room of the keys that help lists anyway.
    let keys = if actions.is_empty() {
        " q stop · ? help · 1-4 or w: chart window · l: latency window · c: chart "
    } else {
        " q stop · ? help · c: chart "
    };
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(keys, Style::new().add_modifier(Modifier::DIM)),
            Span::styled(
                if actions.is_empty() {
                    String::new()
                } else {
                    format!("· fired {actions}")
                },
                Style::new().fg(Color::Yellow),
            ),
        ])),
        footer,
    );
    if app.show_help {
        render_help(f, area);
    }
}

fn secs(d: std::time::Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn render_header(app: &Dashboard, f: &mut Frame, area: Rect) {
    let s = &app.snapshot;
    let i = &app.info;
    let title = format!(" wsstorm · {} · {} · seed {} ", i.name, i.target, i.seed);
    let block = Block::bordered().title(title.bold());
    let inner = block.inner(area);
    f.render_widget(block, area);
    let ratio = if i.duration.is_zero() {
        0.0
    } else {
        (s.elapsed.as_secs_f64() / i.duration.as_secs_f64()).clamp(0.0, 1.0)
    };
    let phase = if s.elapsed >= i.duration && !i.duration.is_zero() {
        "closing"
    } else {
        "running"
    };
    let label = format!(
        "{phase} {} / {}  ·  connected {}/{} (peak {})  ·  window {}",
        secs(s.elapsed),
        secs(i.duration),
        s.totals.connected(),
        i.clients,
        s.peak_connected,
        app.window.label()
    );
    f.render_widget(
        Gauge::default()
            .gauge_style(Style::new().fg(Color::Blue))
            .ratio(ratio)
            .label(label),
        inner,
    );
}

#[derive(Clone, Copy)]
enum Series {
    Connected,
    /// Connected clients, with the attempts rate in the title.
    ConnectedAndRate,
    Attempts,
    /// rtt and handshake p99 over the second before each point.
    Latency,
    /// Dead connections found per second.
    Dead,
}

/// One line of a chart: its colour, and its value at a sample (if it has one there).
type ChartLine = (Color, fn(&Sample) -> Option<f64>);

impl Series {
    /// The chart's lines.
    fn lines(self) -> &'static [ChartLine] {
        match self {
            Series::Connected | Series::ConnectedAndRate => {
                &[(Color::Green, |s: &Sample| Some(s.connected))]
            }
            Series::Attempts => &[(Color::Cyan, |s: &Sample| Some(s.attempts_per_s))],
            Series::Latency => &[
                (Color::Magenta, |s: &Sample| s.rtt_p99_ms),
                (Color::Blue, |s: &Sample| s.handshake_p99_ms),
            ],
            Series::Dead => &[(Color::Red, |s: &Sample| Some(s.dead_per_s))],
        }
    }
}

fn render_chart(app: &Dashboard, f: &mut Frame, area: Rect, series: Series) {
    let visible = app.visible();
    let lines: Vec<(Color, Vec<(f64, f64)>)> = series
        .lines()
        .iter()
        .map(|(color, value)| {
            let points = visible
                .iter()
                .filter_map(|s| value(s).map(|v| (s.t, v)))
                .collect();
            (*color, points)
        })
        .collect();
    let (t0, t1) = match (visible.first(), visible.last()) {
        (Some(a), Some(b)) if b.t > a.t => (a.t, b.t),
        (Some(a), _) => (a.t, a.t + 1.0),
        _ => (0.0, 1.0),
    };
    let t0 = match app.window.seconds() {
        Some(w) => (t1 - w).max(0.0).min(t0),
        None => t0,
    };
    let y_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(match series {
            Series::Connected | Series::ConnectedAndRate => f64::from(app.info.clients),
            Series::Attempts | Series::Latency | Series::Dead => 1.0,
        })
        * 1.1;
    // The timeline's actions that have fired, as vertical lines.
    let markers: Vec<Vec<(f64, f64)>> = fired(app)
        .map(|(t, _)| t)
        .filter(|t| *t >= t0 && *t <= t1)
        .map(|t| vec![(t, 0.0), (t, y_max)])
        .collect();
    let mut datasets: Vec<Dataset> = markers
        .iter()
        .map(|m| {
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(Color::Yellow))
                .data(m)
        })
        .collect();
    for (color, points) in &lines {
        datasets.push(
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(*color))
                .data(points),
        );
    }
    let now = lines[0].1.last().map(|p| p.1).unwrap_or(0.0);
    let latest = visible.last();
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let title = match series {
        Series::Connected => format!(" connected clients: {now:.0} "),
        Series::ConnectedAndRate => format!(
            " connected {now:.0} · attempts/s {} ",
            app.snapshot.last_second.attempts
        ),
        Series::Attempts => format!(" connect attempts/s (last 1 s): {now:.0} "),
        Series::Latency => format!(
            " p99 ms (last 1 s): rtt {} · handshake {} ",
            ms(latest.and_then(|s| s.rtt_p99_ms)),
            ms(latest.and_then(|s| s.handshake_p99_ms))
        ),
        Series::Dead => format!(
            " dead found/s (last 1 s): {:.0} · total {} ",
            latest.map_or(0.0, |s| s.dead_per_s),
            app.snapshot.totals.dead_detected
        ),
    };
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(title))
        .x_axis(
            Axis::default()
                .bounds([t0, t1])
                .labels([format!("{t0:.0}s"), format!("{t1:.0}s")]),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, y_max])
                .labels(["0".to_string(), format!("{:.0}", y_max / 1.1)]),
        );
    f.render_widget(chart, area);
}

/// The timeline's actions that have fired so far: (seconds, label).
fn fired(app: &Dashboard) -> impl Iterator<Item = (f64, &str)> {
    let now = app.snapshot.elapsed.as_secs_f64();
    app.info
        .timeline
        .iter()
        .map(|(at, label)| (at.as_secs_f64(), label.as_str()))
        .filter(move |(t, _)| *t <= now)
}

/// The fired actions with their times, as the footer lists them.
fn fired_list(app: &Dashboard) -> String {
    fired(app)
        .map(|(t, label)| format!("{t:.1}s {label}"))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn latency_row<'a>(name: &'a str, l: &LatencySummary) -> Row<'a> {
    if l.count == 0 {
        return Row::new(vec![Cell::from(name), Cell::from("-")]);
    }
    Row::new(vec![
        Cell::from(name),
        Cell::from(ms_text(l.p50)),
        Cell::from(ms_text(l.p90)),
        Cell::from(ms_text(l.p99)),
        Cell::from(ms_text(l.p999)),
        Cell::from(ms_text(l.max)),
    ])
}

fn render_latency(app: &Dashboard, f: &mut Frame, area: Rect) {
    let s = &app.snapshot;
    let table = if app.latency_whole_run {
        &s.latency
    } else {
        &s.latency_recent
    };
    let rows = vec![
        latency_row("connect", &table.connect),
        latency_row("handshake", &table.handshake),
        latency_row("rtt", &table.rtt),
        latency_row("reconnect", &table.reconnect),
    ];
    let title = if app.latency_whole_run {
        " latency ms · whole run "
    } else {
        " latency ms · last 1s "
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(9),
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(["", "p50", "p90", "p99", "p99.9", "max"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(title));
    f.render_widget(table, area);
}

/// Lines the steps panel wants: borders, a heading, a row per step, and the streams under
/// their own heading. Capped: the panel says how many rows it could not show.
fn steps_height(live: &Live) -> u16 {
    let streams = if live.streams.is_empty() {
        0
    } else {
        1 + live.streams.len()
    };
    (3 + live.steps.len() + streams).min(12) as u16
}

/// A count that fits a narrow column: exact up to 99999, then in thousands or millions.
fn count(n: u64) -> String {
    match n {
        0..100_000 => n.to_string(),
        100_000..100_000_000 => format!("{}k", n / 1000),
        _ => format!("{}M", n / 1_000_000),
    }
}

fn right<'a>(text: String) -> Cell<'a> {
    Cell::from(Line::from(text).alignment(Alignment::Right))
}

fn ms(l: &LatencySummary, p: u64) -> String {
    if l.count == 0 { "-".into() } else { ms_text(p) }
}

/// The steps panel's columns, wide; a narrow panel keeps the columns of `NARROW_*`.
const STEP_COLUMNS: [&str; 9] = [
    "step", "ok/s", "sent", "ok", "tmo", "aband", "err", "p50", "p99",
];
const STREAM_COLUMNS: [&str; 9] = [
    "stream", "dlv/s", "dlv", "lost", "dup", "ooo", "unrd", "p50", "p99",
];
const NARROW_STEP: [usize; 5] = [0, 1, 3, 4, 8];
const NARROW_STREAM: [usize; 5] = [0, 1, 3, 4, 5];
/// Column widths, the first (names) taking what is left.
const WIDE_WIDTHS: [u16; 9] = [0, 6, 8, 8, 6, 6, 5, 7, 7];
const NARROW_WIDTHS: [u16; 5] = [0, 6, 7, 5, 6];

/// Each step (replies matched per second; so far: sent, matched, timed out, abandoned,
/// skipped; latency) and each stream (delivered per second; so far: delivered, lost,
/// duplicated, out of order, unreadable; delivery latency). Narrow, only what matters most.
fn render_steps(app: &Dashboard, live: &Live, f: &mut Frame, area: Rect) {
    let whole = app.latency_whole_run;
    let mut title = format!(
        " steps · ms {} ",
        if whole { "whole run" } else { "last 1s" }
    );
    if live.app_errors > 0 {
        title.push_str(&format!("· app errors {} ", count(live.app_errors)));
    }
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    let wide = inner.width >= 66;
    // The cells of one row; the column `alarm` in red (timeouts, lost messages).
    let row = |texts: [String; 9], narrow: &[usize; 5], alarm: Option<usize>| {
        Row::new(
            texts
                .into_iter()
                .enumerate()
                .filter(|(i, _)| wide || narrow.contains(i))
                .map(|(i, text)| match i {
                    0 => Cell::from(text),
                    i if alarm == Some(i) => right(text).red(),
                    _ => right(text),
                })
                .collect::<Vec<_>>(),
        )
    };
    let heading = |columns: [&str; 9], narrow| {
        row(columns.map(String::from), narrow, None)
            .style(Style::new().add_modifier(Modifier::BOLD))
    };
    let latency = |l: &LatencySummary| [ms(l, l.p50), ms(l, l.p99)];
    let mut rows: Vec<Row> = Vec::new();
    for s in &live.steps {
        let c = &s.counts;
        let [p50, p99] = latency(if whole { &s.latency } else { &s.latency_recent });
        let texts = [
            s.name.clone(),
            count(s.matched_per_s.round() as u64),
            count(c.sent),
            count(c.matched),
            count(c.timeouts),
            count(c.abandoned),
            count(c.errors),
            p50,
            p99,
        ];
        rows.push(row(texts, &NARROW_STEP, (c.timeouts > 0).then_some(4)));
    }
    if !live.streams.is_empty() {
        rows.push(heading(STREAM_COLUMNS, &NARROW_STREAM));
    }
    for s in &live.streams {
        let c = &s.counts;
        let [p50, p99] = latency(if whole {
            &s.delivery
        } else {
            &s.delivery_recent
        });
        let texts = [
            s.name.clone(),
            count(s.delivered_per_s.round() as u64),
            count(c.delivered),
            count(c.lost),
            count(c.duplicated),
            count(c.out_of_order),
            count(c.unreadable),
            p50,
            p99,
        ];
        rows.push(row(texts, &NARROW_STREAM, (c.lost > 0).then_some(3)));
    }
    let room = usize::from(inner.height.saturating_sub(1));
    if rows.len() > room && room > 0 {
        // Steps and streams not shown; the streams' heading is a row but not one of them.
        let shown = room - 1;
        let heading_shown = !live.streams.is_empty() && live.steps.len() < shown;
        let hidden = live.steps.len() + live.streams.len() + usize::from(heading_shown) - shown;
        rows.truncate(shown);
        rows.push(Row::new([format!("+{hidden} more")]).dim());
    }
    let widths = if wide {
        &WIDE_WIDTHS[..]
    } else {
        &NARROW_WIDTHS[..]
    };
    let widths = widths.iter().map(|w| match w {
        0 => Constraint::Fill(1),
        w => Constraint::Length(*w),
    });
    let table = Table::new(rows, widths)
        .header(heading(STEP_COLUMNS, &NARROW_STEP))
        .block(block);
    f.render_widget(table, area);
}

fn code_color(code: u16) -> Color {
    match code {
        1000 => Color::Green,
        1001 | 1012 | 1013 => Color::Yellow,
        4000..=4999 => Color::Magenta,
        _ => Color::Red,
    }
}

fn render_codes(app: &Dashboard, f: &mut Frame, area: Rect) {
    let t = &app.snapshot.totals;
    let block = Block::bordered().title(" close codes · handshakes · errors ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let mut lines: Vec<Line> = Vec::new();
    let mut codes: Vec<(u16, u64)> = t.close_codes.iter().map(|(k, v)| (*k, *v)).collect();
    codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let max = codes.first().map(|c| c.1).unwrap_or(1).max(1);
    let label_width = 24usize;
    let bar_room = (inner.width as usize)
        .saturating_sub(label_width + 8)
        .max(1);
    for (code, n) in &codes {
        let bar = ((*n as f64 / max as f64) * bar_room as f64).ceil() as usize;
        let label = format!("{code} {}", close_code_name(*code));
        lines.push(Line::from(vec![
            Span::raw(format!("{label:<label_width$.label_width$}")),
            Span::styled("█".repeat(bar.max(1)), Style::new().fg(code_color(*code))),
            Span::raw(format!(" {n}")),
        ]));
    }
    if codes.is_empty() {
        lines.push(Line::from("no closes by the server or network").dim());
    }
    let statuses: Vec<String> = t
        .handshake_status
        .iter()
        .map(|(k, v)| format!("HTTP {k} ×{v}"))
        .collect();
    if !statuses.is_empty() {
        lines.push(Line::from(statuses.join("  ")).yellow());
    }
    let errors: Vec<String> = crate::metrics::ConnectError::ALL
        .iter()
        .filter(|e| t.connect_error(**e) > 0)
        .map(|e| format!("{} {}", e.name(), t.connect_error(*e)))
        .collect();
    if !errors.is_empty() {
        lines.push(Line::from(format!("connect errors: {}", errors.join(", "))).red());
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn render_storm(app: &Dashboard, f: &mut Frame, area: Rect) {
    let s = &app.snapshot;
    let st = &s.storm;
    let pct = |v: Option<f64>| v.map_or("—".to_string(), |ms| format!("{ms:.0}ms"));
    let lines = vec![
        Line::from(format!(
            "backoff {}  gave up {}  dead {}",
            s.totals.in_backoff(),
            s.totals.gave_up,
            s.totals.dead_detected
        )),
        Line::from(format!("lost {}  back {}", st.losses, st.recovered)),
        Line::from(format!(
            "back in: 50% {}  95% {}  99% {}",
            pct(st.recovery_ms.p50),
            pct(st.recovery_ms.p95),
            pct(st.recovery_ms.p99)
        )),
        Line::from(format!(
            "peak {} attempts/s ({} in 100ms)",
            st.peak_attempts_per_s, st.peak_attempts_per_100ms
        )),
    ];
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" storm ")),
        area,
    );
}

/// Reasons to distrust the figures because of the generator itself.
pub fn generator_warnings(app: &Dashboard) -> Vec<String> {
    let s = &app.snapshot;
    let mut w = Vec::new();
    let lag = s.lag_recent.p99;
    if lag > 100_000 {
        w.push(format!("generator late by {} ms (p99)", ms_text(lag)));
    }
    if let Some(g) = &s.generator {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        if g.cpu_percent > 90.0 * cores {
            w.push("generator out of CPU".into());
        }
        if app.info.fd_limit > 0 && g.open_fds * 10 > app.info.fd_limit * 9 {
            w.push("generator near its open-file limit".into());
        }
    }
    let t = &s.totals;
    if t.connect_error(crate::metrics::ConnectError::FdLimit) > 0 {
        w.push("generator ran out of file descriptors".into());
    }
    if t.connect_error(crate::metrics::ConnectError::AddrUnavailable) > 0 {
        w.push("generator ran out of local ports".into());
    }
    // What went wrong around the run (a worker that died, a fault not applied): here, not on
    // stderr, where it would garble the screen.
    w.extend(s.warnings.iter().cloned());
    w
}

fn render_generator(app: &Dashboard, f: &mut Frame, area: Rect) {
    let s = &app.snapshot;
    let lag = s.lag_recent.p99;
    let mut lines = match &s.generator {
        Some(g) => vec![
            Line::from(format!(
                "cpu {:.0}%  rss {:.1} MiB",
                g.cpu_percent,
                g.rss_bytes as f64 / (1 << 20) as f64
            )),
            Line::from(format!(
                "files {}/{}  lag p99 {}ms",
                g.open_fds,
                app.info.fd_limit,
                ms_text(lag)
            )),
        ],
        None => vec![Line::from("measuring…").dim()],
    };
    let warnings = generator_warnings(app);
    if warnings.is_empty() {
        lines.push(Line::from("generator ok: figures undistorted").green());
    } else {
        lines.push(
            Line::from(format!(
                "⚠ {}: figures may be distorted",
                warnings.join("; ")
            ))
            .red()
            .bold(),
        );
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" generator ")),
        area,
    );
}

fn render_help(f: &mut Frame, area: Rect) {
    let w = 52.min(area.width);
    let h = 14.min(area.height);
    let popup = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let text = vec![
        Line::from("q, Esc     stop the run; results are written"),
        Line::from("Ctrl-C     interrupt (the same, exit code 130)"),
        Line::from("?, h       this help"),
        Line::from("1 2 3 4    charts: last 30s, 2m, 10m, all"),
        Line::from("w, Tab     next chart window"),
        Line::from("l          latency: last second / whole run"),
        Line::from("c          right chart: attempts, p99, dead"),
        Line::from("steps: ok replies matched, tmo timed out,"),
        Line::from("  aband unanswered at close, err sends skipped"),
        Line::from(""),
        Line::from("Yellow lines in the charts: timeline actions."),
        Line::from("Close codes: 1006 = ended without a close frame."),
    ];
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(text)
            .alignment(Alignment::Left)
            .block(Block::bordered().title(" keys ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::dashboard::{Dashboard, RunInfo, Window};
    use crate::metrics::generator::GeneratorSample;
    use crate::metrics::{Counters, Latency, LatencyTable, Snapshot};

    fn summary(p50: u64) -> LatencySummary {
        LatencySummary {
            count: 10,
            min: p50 / 2,
            mean: p50 as f64,
            p50,
            p90: p50 * 2,
            p99: p50 * 3,
            p999: p50 * 4,
            max: p50 * 5,
            hdr: String::new(),
        }
    }

    fn dashboard() -> Dashboard {
        let mut d = Dashboard::new(RunInfo {
            name: "quickstart".into(),
            target: "ws://127.0.0.1:9001/ws".into(),
            seed: 42,
            duration: Duration::from_secs(30),
            clients: 1000,
            timeline: vec![(Duration::from_secs(10), "drop-all abrupt".into())],
            fd_limit: 20_000,
            conversations: Vec::new(),
        });
        let mut close_codes = std::collections::BTreeMap::new();
        close_codes.insert(1006, 1000);
        close_codes.insert(1012, 250);
        let mut handshake_status = std::collections::BTreeMap::new();
        handshake_status.insert(503, 12);
        for i in 1..=150u64 {
            let mut connect_errors = [0; crate::metrics::ConnectError::COUNT];
            connect_errors[0] = 3;
            let opened = if i < 100 { 1000 } else { 1990 };
            let closed = if i < 100 { 0 } else { 1000 };
            // The n-th latency kind's p50 is n ms.
            let latency = LatencyTable::from_fn(|k| summary(1000 * (k as u64 + 1)));
            d.on_snapshot(Arc::new(Snapshot {
                elapsed: Duration::from_millis(i * 100),
                totals: Counters {
                    attempts: opened + 15,
                    opened,
                    closed,
                    gave_up: 2,
                    close_codes: close_codes.clone(),
                    handshake_status: handshake_status.clone(),
                    connect_errors,
                    ..Default::default()
                },
                // The reconnect wave at 10 s, in the second after it.
                last_second: Counters {
                    attempts: if (100..110).contains(&i) { 990 } else { 100 },
                    ..Default::default()
                },
                peak_connected: 1000,
                latency: latency.clone(),
                latency_recent: latency,
                lag_recent: summary(1000 * (Latency::ScheduleLag as u64 + 1)),
                generator: Some(GeneratorSample {
                    t_ms: i * 100,
                    rss_bytes: 25 << 20,
                    cpu_percent: 42.0,
                    open_fds: 1012,
                    connected: 990,
                }),
                ..Default::default()
            }));
        }
        d
    }

    fn draw(d: &Dashboard, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| render(d, f)).unwrap();
        let buf = t.backend().buffer();
        let mut out = String::new();
        for y in 0..h {
            for x in 0..w {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn all_panels_at_80x24() {
        let screen = draw(&dashboard(), 80, 24);
        for expect in [
            "wsstorm · quickstart · ws://127.0.0.1:9001/ws · seed 42",
            "running 15.0s / 30.0s",
            "connected 990/1000 (peak 1000)",
            "connected clients: 990",
            "connect attempts/s",
            "latency ms · last 1s",
            "handshake",
            "reconnect",
            "1006 abnormal closure",
            "1012 service restart",
            "HTTP 503 ×12",
            "connect errors: refused 3",
            "backoff 0  gave up 2  dead 0",
            "files 1012/20000",
            "generator ok",
            "q stop · ? help",
        ] {
            assert!(screen.contains(expect), "missing `{expect}` in:\n{screen}");
        }
        // rtt is the 4th latency: p50 4000 us = 4.00 ms.
        assert!(screen.contains("rtt       4.00"), "{screen}");
    }

    #[test]
    fn wider_and_taller_terminals_get_bigger_charts() {
        let d = dashboard();
        let screen = draw(&d, 160, 48);
        assert!(screen.contains("1006 abnormal closure"));
        assert!(screen.contains("connected clients: 990"));
        let chart_rows = screen
            .lines()
            .filter(|l| l.contains('⣿') || l.contains('⠀') || l.contains('⡇'))
            .count();
        assert!(chart_rows > 10, "charts grow with the terminal:\n{screen}");
    }

    #[test]
    fn cause_and_effect_latency_dead_and_fired_actions() {
        let mut d = dashboard();
        // Dead connections found in the last second, after the drop at 10 s.
        let mut last = (*d.snapshot).clone();
        last.elapsed += Duration::from_millis(100);
        last.last_second.dead_detected = 7;
        last.totals.dead_detected = 9;
        d.on_snapshot(Arc::new(last));
        // A tall terminal: latency and dead charts get a row of their own.
        let tall = draw(&d, 160, 48);
        // rtt (4th kind) p99 = 3 × 4 ms; handshake (3rd) p99 = 3 × 3 ms.
        assert!(
            tall.contains("p99 ms (last 1 s): rtt 12.0 · handshake 9.0"),
            "{tall}"
        );
        assert!(
            tall.contains("dead found/s (last 1 s): 7 · total 9"),
            "{tall}"
        );
        assert!(tall.contains("connect attempts/s"), "{tall}");
        // The fired action, with its time, in the footer.
        assert!(tall.contains("fired 10.0s drop-all abrupt"), "{tall}");
        // At 80x24 the right-hand chart cycles through them.
        let small = draw(&d, 80, 24);
        assert!(!small.contains("p99 ms (last 1 s)"), "{small}");
        assert!(small.contains("fired 10.0s drop-all"), "{small}");
        d.handle_key(ratatui::crossterm::event::KeyEvent::from(
            ratatui::crossterm::event::KeyCode::Char('c'),
        ));
        let small = draw(&d, 80, 24);
        assert!(small.contains("p99 ms (last 1 s): rtt 12.0"), "{small}");
        assert!(!small.contains("connect attempts/s"), "{small}");
        d.handle_key(ratatui::crossterm::event::KeyEvent::from(
            ratatui::crossterm::event::KeyCode::Char('c'),
        ));
        assert!(draw(&d, 80, 24).contains("dead found/s (last 1 s): 7"));
        // Before the action fired, no marker and no list.
        let mut early = dashboard();
        early.on_snapshot(Arc::new(Snapshot {
            elapsed: Duration::from_secs(20),
            ..Default::default()
        }));
        early.snapshot = Arc::new(Snapshot {
            elapsed: Duration::from_secs(5),
            ..Default::default()
        });
        assert!(!draw(&early, 160, 48).contains("fired"));
    }

    #[test]
    fn help_overlay_and_toggles() {
        let mut d = dashboard();
        d.show_help = true;
        d.latency_whole_run = true;
        d.window = Window::All;
        let screen = draw(&d, 80, 24);
        assert!(screen.contains(" keys "), "{screen}");
        assert!(screen.contains("stop the run; results are written"));
        assert!(screen.contains("window all"));
    }

    #[test]
    fn warnings_show_when_the_generator_struggles() {
        let mut d = dashboard();
        let mut s = (*d.snapshot).clone();
        s.elapsed += Duration::from_millis(100);
        if let Some(g) = &mut s.generator {
            g.open_fds = 19_500;
        }
        s.totals.connect_errors[crate::metrics::ConnectError::FdLimit as usize] = 7;
        d.on_snapshot(Arc::new(s));
        let screen = draw(&d, 100, 30);
        assert!(screen.contains("near its open-file limit"), "{screen}");
        assert!(generator_warnings(&d).len() >= 2);
    }

    #[test]
    fn what_went_wrong_around_the_run_is_on_the_screen_not_stderr() {
        let mut d = dashboard();
        let mut s = (*d.snapshot).clone();
        s.elapsed += Duration::from_millis(100);
        s.warnings = vec!["worker process 1 ended unexpectedly 4.2 s into the run".into()];
        d.on_snapshot(Arc::new(s));
        let screen = draw(&d, 160, 48);
        assert!(
            screen.contains("worker process 1 ended unexpectedly"),
            "{screen}"
        );
    }

    #[test]
    fn a_tiny_terminal_gets_a_message_not_a_panic() {
        let screen = draw(&dashboard(), 40, 10);
        assert!(screen.contains("needs 60x20"), "{screen}");
        draw(&Dashboard::default(), 80, 24);
    }

    /// The run of [`dashboard`], its clients holding a conversation: `subscribe` (answered
    /// once, 2 ms), `req` (40 answers a tick at 5 ms, 5 timeouts), stream `prices` (100 a tick
    /// at 7 ms; 3 lost, 1 duplicated, 2 out of order), and `extra` more samples never used.
    fn conversing(extra: usize) -> Dashboard {
        use crate::metrics::conversation::ConvData;
        let base = dashboard();
        let mut samples = vec!["subscribe".to_string(), "req".to_string()];
        samples.extend((0..extra).map(|i| format!("unused-{i}")));
        let mut d = Dashboard::new(RunInfo {
            conversations: vec![crate::results::conversation::Names {
                samples,
                streams: vec!["prices".into()],
            }],
            ..base.info.clone()
        });
        for i in 1..=150u64 {
            let mut c = ConvData::default();
            let sub = c.sample(0);
            sub.counts.sent = 1;
            sub.counts.matched = 1;
            sub.latency.record(2000).unwrap();
            let req = c.sample(1);
            req.counts.sent = 40 * i + 5;
            req.counts.matched = 40 * i;
            req.counts.timeouts = 5;
            req.latency.record_n(5000, 40 * i).unwrap();
            let prices = c.stream(0);
            prices.counts.delivered = 100 * i;
            prices.counts.lost = 3;
            prices.counts.duplicated = 1;
            prices.counts.out_of_order = 2;
            prices.delivery.record_n(7000, 100 * i).unwrap();
            c.app_errors = 4;
            let mut s = (*base.snapshot).clone();
            s.elapsed = Duration::from_millis(i * 100);
            s.conversation = Arc::new(vec![c]);
            d.on_snapshot(Arc::new(s));
        }
        d
    }

    #[test]
    fn at_80x24_the_steps_take_the_attempts_chart_place() {
        let screen = draw(&conversing(0), 80, 24);
        for expect in [
            " connected 990 · attempts/s 100 ",
            " steps · ms last 1s · app errors 4 ",
            "│step         ok/s      ok   tmo    p99│",
            "│subscribe       0       1     0      -│",
            "│req           400    6000     5   5.00│",
            "│stream      dlv/s    lost   dup    ooo│",
            "│prices       1000       3     1      2│",
            // The rest as ever.
            "latency ms · last 1s",
            "1006 abnormal closure",
            "backoff 0  gave up 2  dead 0",
            "q stop · ? help",
        ] {
            assert!(screen.contains(expect), "missing `{expect}` in:\n{screen}");
        }
        assert!(!screen.contains("connect attempts/s"), "{screen}");
        // The whole run: subscribe's one answer counts.
        let mut d = conversing(0);
        d.latency_whole_run = true;
        let screen = draw(&d, 80, 24);
        assert!(screen.contains(" steps · ms whole run "), "{screen}");
        assert!(
            screen.contains("│subscribe       0       1     0   2.00│"),
            "{screen}"
        );
    }

    #[test]
    fn timeouts_and_lost_messages_are_red() {
        let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
        t.draw(|f| render(&conversing(0), f)).unwrap();
        let buf = t.backend().buffer();
        // The red text of the row that shows `name`.
        let red = |name: &str| {
            (0..24)
                .map(|y| (0..80).map(|x| &buf[(x, y)]).collect::<Vec<_>>())
                .find(|row| {
                    row.iter()
                        .map(|c| c.symbol())
                        .collect::<String>()
                        .contains(&format!("│{name} "))
                })
                .map(|row| {
                    row.iter()
                        .filter(|c| c.fg == Color::Red)
                        .map(|c| c.symbol().trim())
                        .collect::<String>()
                })
        };
        assert_eq!(red("req").as_deref(), Some("5"), "5 timeouts");
        assert_eq!(red("prices").as_deref(), Some("3"), "3 lost");
        assert_eq!(red("subscribe").as_deref(), Some(""));
    }

    #[test]
    fn a_taller_terminal_gives_the_steps_a_row_of_their_own() {
        let screen = draw(&conversing(0), 100, 32);
        for expect in [
            "connected clients: 990",
            "connect attempts/s",
            "ok/s     sent       ok    tmo  aband   err     p50     p99│",
            "│req                                      400     6005     6000      5      0     0    5.00    5.00│",
            "dlv/s      dlv     lost    dup    ooo  unrd     p50     p99│",
            "│prices                                  1000    15000        3      1      2     0    7.00    7.00│",
        ] {
            assert!(screen.contains(expect), "missing `{expect}` in:\n{screen}");
        }
    }

    #[test]
    fn steps_that_do_not_fit_are_counted() {
        let screen = draw(&conversing(4), 80, 24);
        assert!(screen.contains("subscribe"), "{screen}");
        // Four of six samples and the stream do not fit.
        assert!(
            screen.contains("│unused-0        0       0     0      -│"),
            "{screen}"
        );
        assert!(screen.contains("│+4 more "), "{screen}");
        // Without a conversation, no panel.
        assert!(!draw(&dashboard(), 160, 48).contains(" steps "));
    }
}
