//! The live terminal dashboard: the article's debugging checklist (§15) on one screen while a
//! run goes — connected clients and attempts over time with the timeline's actions marked,
//! latency percentiles, close codes with their names, handshake statuses and connect errors,
//! the storm (backoff, give-ups, recovery) and the generator's own health; when clients hold a
//! conversation, its steps and streams too ([`conversation`]).
//!
//! One direction only: the swarm publishes snapshots on a watch channel; the dashboard's own
//! thread takes the latest one when it draws (at most [`FPS`] times a second). A slow terminal
//! drops frames, never data: the history it charts is rebuilt from cumulative totals, so a
//! skipped snapshot costs resolution, not counts. State changes ([`Dashboard::on_snapshot`],
//! [`Dashboard::handle_key`]) and drawing ([`render::render`]) are pure, so both are tested
//! without a terminal.

pub mod conversation;
pub mod render;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::watch;

use crate::metrics::Snapshot;
use crate::swarm::{Stop, StopReason};

/// Frames per second at most.
pub const FPS: u64 = 8;

/// What the dashboard knows about the run before it starts.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    pub name: String,
    pub target: String,
    pub seed: u64,
    pub duration: Duration,
    pub clients: u32,
    /// Planned timeline actions: (offset, label).
    pub timeline: Vec<(Duration, String)>,
    /// The generator's open-file limit.
    pub fd_limit: u64,
    /// Each group's conversation sample and stream names ([`conversation::names`]).
    pub conversations: Vec<crate::results::conversation::Names>,
}

/// One point of the charts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub t: f64,
    pub connected: f64,
    pub attempts_per_s: f64,
    /// rtt and handshake p99 over the second before (ms), exact from the collector's recent
    /// histograms; `None` when nothing was measured in it.
    pub rtt_p99_ms: Option<f64>,
    pub handshake_p99_ms: Option<f64>,
    /// Dead connections found over the second before.
    pub dead_per_s: f64,
}

/// What the right-hand chart shows (`c` cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RightChart {
    #[default]
    Attempts,
    /// rtt and handshake p99 over time.
    Latency,
    /// Dead connections found per second.
    Dead,
}

impl RightChart {
    fn next(self) -> RightChart {
        match self {
            RightChart::Attempts => RightChart::Latency,
            RightChart::Latency => RightChart::Dead,
            RightChart::Dead => RightChart::Attempts,
        }
    }
}

/// How much history the charts show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Window {
    #[default]
    Seconds30,
    Minutes2,
    Minutes10,
    All,
}

impl Window {
    pub fn seconds(self) -> Option<f64> {
        match self {
            Window::Seconds30 => Some(30.0),
            Window::Minutes2 => Some(120.0),
            Window::Minutes10 => Some(600.0),
            Window::All => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Window::Seconds30 => "30s",
            Window::Minutes2 => "2m",
            Window::Minutes10 => "10m",
            Window::All => "all",
        }
    }

    fn next(self) -> Window {
        match self {
            Window::Seconds30 => Window::Minutes2,
            Window::Minutes2 => Window::Minutes10,
            Window::Minutes10 => Window::All,
            Window::All => Window::Seconds30,
        }
    }
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    None,
    /// `q` or Esc: end the run now, write the results (exit 0).
    Stop,
    /// Ctrl-C: the same, as an interruption (exit 130).
    Interrupt,
}

#[derive(Clone, Debug, Default)]
pub struct Dashboard {
    pub info: RunInfo,
    pub snapshot: Arc<Snapshot>,
    pub history: Vec<Sample>,
    pub window: Window,
    pub show_help: bool,
    /// Latency table shows the whole run (true) or the last second (false).
    pub latency_whole_run: bool,
    /// The right-hand chart (on terminals too short for a row of latency and dead charts).
    pub right: RightChart,
    /// The steps panel's figures; `None` when no group holds a conversation.
    pub conversation: Option<conversation::Live>,
    tracker: conversation::Tracker,
    last_t: f64,
}

impl Dashboard {
    pub fn new(info: RunInfo) -> Dashboard {
        Dashboard {
            tracker: conversation::Tracker::new(info.conversations.clone()),
            info,
            ..Default::default()
        }
    }

    /// Take a newer snapshot. Attempts per second are the attempts of the second before it
    /// (the collector counts them exactly, whatever snapshots the dashboard skipped): the one
    /// definition of a rate that the summary's and the report's peaks use too.
    pub fn on_snapshot(&mut self, s: Arc<Snapshot>) {
        let t = s.elapsed.as_secs_f64();
        if t <= self.last_t && !self.history.is_empty() {
            return;
        }
        let p99 = |l: &crate::metrics::LatencySummary| (l.count > 0).then(|| l.p99 as f64 / 1000.0);
        self.history.push(Sample {
            t,
            connected: s.totals.connected() as f64,
            attempts_per_s: s.last_second.attempts as f64,
            rtt_p99_ms: p99(&s.latency_recent.rtt),
            handshake_p99_ms: p99(&s.latency_recent.handshake),
            dead_per_s: s.last_second.dead_detected as f64,
        });
        self.last_t = t;
        if self.tracker.any() {
            self.conversation = Some(self.tracker.update(&s));
        }
        self.snapshot = s;
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Command {
        if key.kind == KeyEventKind::Release {
            return Command::None;
        }
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                Command::Interrupt
            }
            KeyCode::Char('q') | KeyCode::Esc => {
                if self.show_help && key.code == KeyCode::Esc {
                    self.show_help = false;
                    return Command::None;
                }
                Command::Stop
            }
            KeyCode::Char('?') | KeyCode::Char('h') => {
                self.show_help = !self.show_help;
                Command::None
            }
            KeyCode::Char('1') => self.set_window(Window::Seconds30),
            KeyCode::Char('2') => self.set_window(Window::Minutes2),
            KeyCode::Char('3') => self.set_window(Window::Minutes10),
            KeyCode::Char('4') => self.set_window(Window::All),
            KeyCode::Char('w') | KeyCode::Tab => self.set_window(self.window.next()),
            KeyCode::Char('l') => {
                self.latency_whole_run = !self.latency_whole_run;
                Command::None
            }
            KeyCode::Char('c') => {
                self.right = self.right.next();
                Command::None
            }
            _ => Command::None,
        }
    }

    fn set_window(&mut self, w: Window) -> Command {
        self.window = w;
        Command::None
    }

    /// The samples inside the chart window.
    pub fn visible(&self) -> &[Sample] {
        let Some(span) = self.window.seconds() else {
            return &self.history;
        };
        let from = self.last_t - span;
        let start = self.history.partition_point(|s| s.t < from);
        &self.history[start..]
    }
}

/// The dashboard running in its own thread; [`Ui::finish`] restores the terminal.
pub struct Ui {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Ui {
    /// Take over the terminal and draw until [`Ui::finish`]. A key that ends the run asks
    /// `stop` to, saying why.
    pub fn start(
        info: RunInfo,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        stop: Stop,
    ) -> std::io::Result<Ui> {
        // Alternate screen, raw mode, and a panic hook that restores the terminal first.
        let terminal = ratatui::try_init()?;
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let thread = std::thread::Builder::new()
            .name("wsstorm-dashboard".into())
            .spawn(move || {
                let r = ui_loop(terminal, info, snapshots, stop, &d);
                ratatui::restore();
                r
            })?;
        Ok(Ui {
            done,
            thread: Some(thread),
        })
    }

    /// Stop drawing and give the terminal back.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.done.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => {
                ratatui::restore();
                Err(std::io::Error::other("the dashboard thread panicked"))
            }
            None => Ok(()),
        }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ui_loop(
    mut terminal: ratatui::DefaultTerminal,
    info: RunInfo,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    stop: Stop,
    done: &AtomicBool,
) -> std::io::Result<()> {
    let mut app = Dashboard::new(info);
    let frame = Duration::from_millis(1000 / FPS);
    while !done.load(Ordering::Relaxed) {
        let latest = snapshots.borrow().clone();
        app.on_snapshot(latest);
        terminal.draw(|f| render::render(&app, f))?;
        // Wait for a key until the next frame is due.
        let deadline = std::time::Instant::now() + frame;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            if !event::poll(left)? {
                break;
            }
            if let Event::Key(key) = event::read()? {
                match app.handle_key(key) {
                    Command::Stop => stop.request(StopReason::Stopped),
                    Command::Interrupt => stop.request(StopReason::Interrupted),
                    Command::None => {}
                }
                // Redraw at once so a key feels immediate.
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Counters;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn snap(t: f64, last_second: u64, opened: u64) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            elapsed: Duration::from_secs_f64(t),
            totals: Counters {
                opened,
                ..Default::default()
            },
            last_second: Counters {
                attempts: last_second,
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn keys() {
        let mut d = Dashboard::default();
        assert_eq!(d.handle_key(key(KeyCode::Char('x'))), Command::None);
        assert_eq!(d.handle_key(key(KeyCode::Char('?'))), Command::None);
        assert!(d.show_help);
        // Esc first closes the help, then stops.
        assert_eq!(d.handle_key(key(KeyCode::Esc)), Command::None);
        assert!(!d.show_help);
        assert_eq!(d.handle_key(key(KeyCode::Esc)), Command::Stop);
        assert_eq!(d.handle_key(key(KeyCode::Char('q'))), Command::Stop);
        assert_eq!(
            d.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Command::Interrupt
        );
        assert_eq!(d.window, Window::Seconds30);
        d.handle_key(key(KeyCode::Char('3')));
        assert_eq!(d.window, Window::Minutes10);
        d.handle_key(key(KeyCode::Char('w')));
        assert_eq!(d.window, Window::All);
        d.handle_key(key(KeyCode::Tab));
        assert_eq!(d.window, Window::Seconds30);
        d.handle_key(key(KeyCode::Char('l')));
        assert!(d.latency_whole_run);
        assert_eq!(d.right, RightChart::Attempts);
        d.handle_key(key(KeyCode::Char('c')));
        assert_eq!(d.right, RightChart::Latency);
        d.handle_key(key(KeyCode::Char('c')));
        d.handle_key(key(KeyCode::Char('c')));
        assert_eq!(d.right, RightChart::Attempts);
        let mut release = key(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        assert_eq!(d.handle_key(release), Command::None);
    }

    #[test]
    fn history_survives_skipped_snapshots() {
        let mut d = Dashboard::default();
        d.on_snapshot(snap(1.0, 100, 100));
        d.on_snapshot(snap(1.1, 150, 150));
        // Snapshots skipped: the rate is the snapshot's own last second, exact.
        d.on_snapshot(snap(3.1, 90, 300));
        // An older or repeated snapshot changes nothing.
        d.on_snapshot(snap(3.1, 350, 300));
        let rates: Vec<f64> = d.history.iter().map(|s| s.attempts_per_s.round()).collect();
        assert_eq!(rates, [100.0, 150.0, 90.0]);
        assert_eq!(d.history[2].connected, 300.0);
    }

    #[test]
    fn window_limits_the_charts() {
        let mut d = Dashboard::default();
        for i in 1..=1000 {
            d.on_snapshot(snap(f64::from(i) * 0.1, i as u64, 0));
        }
        assert_eq!(d.visible().first().unwrap().t.round(), 70.0);
        d.window = Window::All;
        assert_eq!(d.visible().len(), 1000);
    }
}
