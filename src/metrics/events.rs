//! The per-connection event log (article §14 "connection identity"): one JSON object per line
//! for each attempt, open, close, error, dead detection, backoff and give-up of the clients a
//! user picked (`wsstorm run --events FILE` with `--events-sample` and/or `--events-clients`),
//! so one client's story can be read and matched with the server's logs.
//!
//! Only the chosen clients pay anything: whether a client is chosen is one bit read from a
//! set built before the run, and a chosen client's event is a small value sent on a bounded
//! channel (never waited on: when the channel is full the event is counted as dropped). One
//! writer thread owns the file, numbers each client's connections, joins a close with its
//! reason and an error with its text, and stops writing at `--events-max`, counting what it
//! did not write. The hooks are in [`super::Metrics`], where the same events are counted, so
//! the client code records each event once.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Default cap of the log's size (`--events-max`).
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;

/// Events in flight between the clients and the writer; more are dropped (and counted).
const CHANNEL: usize = 64 * 1024;

/// What the user asked to log.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsSpec {
    pub path: PathBuf,
    /// Share of the clients (0..=1), chosen by the run's seed.
    pub sample: f64,
    /// Clients logged whatever the sample.
    pub clients: Vec<u32>,
    /// Stop writing past this many bytes.
    pub max_bytes: u64,
}

/// What the log did, for results.json (`events`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventsSummary {
    /// The file written.
    pub file: String,
    /// Clients whose events were logged.
    pub clients: u64,
    /// Lines written.
    pub written: u64,
    /// Events not written: past `max_bytes`, or while the writer fell behind.
    pub dropped: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

/// Who closed a connection, as the client can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Client,
    Server,
    /// It ended without a close frame (1006): cut on the way, or aborted by the server.
    Network,
}

impl By {
    fn name(self) -> &'static str {
        match self {
            By::Client => "client",
            By::Server => "server",
            By::Network => "network",
        }
    }
}

/// Why a client ended a connection of its own accord (a fleet behaviour, a leaving client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Dropped at random (churn): reset.
    Churn,
    /// The network switched: the old path is gone.
    Switch,
    /// Left open while the client opened another (duplicate connections).
    Duplicate,
    /// The client left (a session lifetime, a stage's ramp-down): closed with 1000.
    Leave,
}

impl Cause {
    fn name(self) -> &'static str {
        match self {
            Cause::Churn => "churn",
            Cause::Switch => "switch",
            Cause::Duplicate => "duplicate",
            Cause::Leave => "leave",
        }
    }
}

/// One event of one client.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Attempt {
        retry: bool,
    },
    Open {
        connect: Duration,
        handshake: Duration,
    },
    /// The reason text of the close frame that ends the connection (joined with the close).
    Reason {
        code: u16,
        reason: String,
    },
    Close {
        code: Option<u16>,
        by: By,
        /// The client's own reason, when it ended the connection of its accord.
        cause: Option<Cause>,
    },
    /// The text of the error that is about to end the attempt (joined with the error).
    ErrorText(String),
    Error {
        kind: &'static str,
    },
    Status {
        status: u16,
    },
    Dead {
        silent_for: Duration,
    },
    Backoff {
        delay: Duration,
    },
    GiveUp,
}

struct Line {
    at: Duration,
    client: u32,
    group: u16,
    event: Event,
}

enum Msg {
    Event(Line),
    End,
}

/// The log of a run: which clients, and the way to the writer.
pub struct EventLog {
    chosen: Box<[u64]>,
    count: u64,
    epoch: Instant,
    tx: SyncSender<Msg>,
    /// Events the channel refused (the writer fell behind).
    refused: AtomicU64,
    writer: Mutex<Option<std::thread::JoinHandle<EventsSummary>>>,
}

impl EventLog {
    /// Open `spec.path` and start the writer for a run of `clients` clients seeded `seed`
    /// whose groups are named `groups`; times are from `epoch`.
    pub fn start(
        spec: &EventsSpec,
        clients: u32,
        seed: u64,
        groups: Vec<String>,
        epoch: Instant,
    ) -> std::io::Result<EventLog> {
        let file = std::fs::File::create(&spec.path)?;
        let mut chosen = vec![0u64; (clients as usize).div_ceil(64)].into_boxed_slice();
        let mut count = 0;
        // Its own choice: the sample is not the subset any fault of the run picks.
        let choice = crate::seed::mix(seed, 0x6576_656e_7473);
        for id in 0..clients {
            if spec.clients.contains(&id)
                || crate::seed::in_share(u64::from(id), choice, spec.sample)
            {
                chosen[id as usize / 64] |= 1 << (id % 64);
                count += 1;
            }
        }
        let (tx, rx) = sync_channel(CHANNEL);
        let mut summary = EventsSummary {
            file: spec.path.display().to_string(),
            clients: count,
            max_bytes: spec.max_bytes,
            ..EventsSummary::default()
        };
        let writer = std::thread::Builder::new()
            .name("wsstorm-events".into())
            .spawn(move || {
                write_all(rx, std::io::BufWriter::new(file), &groups, &mut summary);
                summary
            })?;
        Ok(EventLog {
            chosen,
            count,
            epoch,
            tx,
            refused: AtomicU64::new(0),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Clients whose events are logged.
    pub fn clients(&self) -> u64 {
        self.count
    }

    /// Whether `client`'s events are logged: one bit, no lock.
    #[inline]
    pub fn chosen(&self, client: u32) -> bool {
        self.chosen
            .get(client as usize / 64)
            .is_some_and(|w| w & (1 << (client % 64)) != 0)
    }

    /// Log `event` of `client` (of `group`) if the client is chosen; `event` is made only
    /// then.
    #[inline]
    pub fn record(&self, client: u32, group: u16, event: impl FnOnce() -> Event) {
        if self.chosen(client) {
            self.send(client, group, event());
        }
    }

    fn send(&self, client: u32, group: u16, event: Event) {
        let line = Line {
            at: self.epoch.elapsed(),
            client,
            group,
            event,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Msg::Event(line))
        {
            self.refused.fetch_add(1, Relaxed);
        }
    }

    /// Write what is queued, close the file and say what was written. Blocks until the
    /// writer is done (call it off the runtime's threads); a second call returns `None`.
    pub fn finish(&self) -> Option<EventsSummary> {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        let _ = self.tx.send(Msg::End);
        let mut s = writer.join().ok()?;
        s.dropped += self.refused.load(Relaxed);
        Some(s)
    }
}

/// The writer: every event to a line, until the end or the cap.
fn write_all(rx: Receiver<Msg>, mut out: impl Write, groups: &[String], s: &mut EventsSummary) {
    let mut conn: HashMap<u32, u64> = HashMap::new();
    let mut reason: HashMap<u32, (u16, String)> = HashMap::new();
    let mut text: HashMap<u32, String> = HashMap::new();
    let mut full = false;
    while let Ok(Msg::Event(l)) = rx.recv() {
        // Past the cap nothing is formatted: only counted (a reason or an error's text is
        // part of the event it joins, not one of its own).
        if full {
            if !matches!(l.event, Event::Reason { .. } | Event::ErrorText(_)) {
                s.dropped += 1;
            }
            continue;
        }
        let mut o = serde_json::Map::new();
        o.insert("t_ms".into(), (l.at.as_micros() as f64 / 1000.0).into());
        o.insert("client".into(), l.client.into());
        o.insert(
            "group".into(),
            groups
                .get(usize::from(l.group))
                .map_or_else(|| l.group.to_string(), Clone::clone)
                .into(),
        );
        let n = conn.entry(l.client).or_default();
        let (name, fields): (&str, Vec<(&str, serde_json::Value)>) = match l.event {
            Event::Reason { code, reason: r } => {
                reason.insert(l.client, (code, r));
                continue;
            }
            Event::ErrorText(t) => {
                text.insert(l.client, t);
                continue;
            }
            Event::Attempt { retry } => {
                // A text or reason left from the last connection belongs to no event of this one.
                text.remove(&l.client);
                reason.remove(&l.client);
                *n += 1;
                ("attempt", vec![("retry", retry.into())])
            }
            Event::Open { connect, handshake } => (
                "open",
                vec![
                    ("connect_us", (connect.as_micros() as u64).into()),
                    ("handshake_us", (handshake.as_micros() as u64).into()),
                ],
            ),
            Event::Close { code, by, cause } => {
                let r = reason
                    .remove(&l.client)
                    .filter(|(c, _)| Some(*c) == code)
                    .map(|(_, r)| r);
                let mut fields = vec![
                    ("code", code.into()),
                    ("reason", r.into()),
                    ("by", by.name().into()),
                ];
                if let Some(cause) = cause {
                    fields.push(("cause", cause.name().into()));
                }
                ("close", fields)
            }
            Event::Error { kind } => (
                "error",
                vec![
                    ("kind", kind.into()),
                    ("text", text.remove(&l.client).into()),
                ],
            ),
            Event::Status { status } => ("status", vec![("status", status.into())]),
            Event::Dead { silent_for } => (
                "dead",
                vec![("silent_ms", (silent_for.as_millis() as u64).into())],
            ),
            Event::Backoff { delay } => (
                "backoff",
                vec![("delay_ms", (delay.as_micros() as f64 / 1000.0).into())],
            ),
            Event::GiveUp => ("give_up", vec![]),
        };
        o.insert("conn".into(), (*n).into());
        o.insert("event".into(), name.into());
        o.extend(fields.into_iter().map(|(k, v)| (k.to_string(), v)));
        let mut line = serde_json::Value::Object(o).to_string();
        line.push('\n');
        if s.bytes + line.len() as u64 > s.max_bytes {
            full = true;
            s.dropped += 1;
            continue;
        }
        if out.write_all(line.as_bytes()).is_err() {
            full = true;
            s.dropped += 1;
            continue;
        }
        s.bytes += line.len() as u64;
        s.written += 1;
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, sample: f64, clients: Vec<u32>, max_bytes: u64) -> EventsSpec {
        EventsSpec {
            path: dir.join("events.jsonl"),
            sample,
            clients,
            max_bytes,
        }
    }

    #[test]
    fn chosen_clients_only_numbered_joined_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), 0.0, vec![3, 70], DEFAULT_MAX_BYTES);
        let log = EventLog::start(&s, 100, 7, vec!["g".into()], Instant::now()).unwrap();
        assert_eq!(log.clients(), 2);
        assert!(log.chosen(3) && log.chosen(70) && !log.chosen(4) && !log.chosen(1000));
        let mut made = 0;
        log.record(4, 0, || {
            made += 1;
            Event::GiveUp
        });
        assert_eq!(made, 0, "an unchosen client's event is never made");
        for e in [
            Event::Attempt { retry: false },
            Event::Open {
                connect: Duration::from_micros(50),
                handshake: Duration::from_micros(90),
            },
            Event::Reason {
                code: 4001,
                reason: "bye \"now\"".into(),
            },
            Event::Close {
                code: Some(4001),
                by: By::Server,
                cause: None,
            },
            Event::Backoff {
                delay: Duration::from_millis(250),
            },
            Event::Attempt { retry: true },
            Event::ErrorText("connection refused".into()),
            Event::Error { kind: "refused" },
            Event::Close {
                code: Some(1000),
                by: By::Client,
                cause: Some(Cause::Leave),
            },
            Event::GiveUp,
        ] {
            log.record(3, 0, || e);
        }
        let summary = log.finish().unwrap();
        assert!(log.finish().is_none());
        assert_eq!((summary.written, summary.dropped), (10 - 2, 0));
        let text = std::fs::read_to_string(&s.path).unwrap();
        assert_eq!(summary.bytes, text.len() as u64);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(
            events,
            [
                "attempt", "open", "close", "backoff", "attempt", "error", "close", "give_up"
            ]
        );
        let conns: Vec<u64> = lines.iter().map(|l| l["conn"].as_u64().unwrap()).collect();
        assert_eq!(conns, [1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(lines[2]["reason"], "bye \"now\"");
        assert_eq!(lines[2]["by"], "server");
        assert_eq!(lines[2]["code"], 4001);
        assert_eq!(lines[3]["delay_ms"], 250.0);
        assert_eq!(lines[5]["text"], "connection refused");
        assert_eq!(lines[5]["kind"], "refused");
        assert!(lines[2].get("cause").is_none(), "{}", lines[2]);
        assert_eq!(lines[6]["cause"], "leave");
        assert_eq!(lines[6]["by"], "client");
        assert_eq!(lines[6]["code"], 1000);
        assert!(lines.iter().all(|l| l["client"] == 3 && l["group"] == "g"));

        // A cap of two lines' size: the rest is counted, not written.
        let s = spec(dir.path(), 1.0, vec![], 150);
        let log = EventLog::start(&s, 10, 7, vec!["g".into()], Instant::now()).unwrap();
        assert_eq!(log.clients(), 10);
        for c in 0..10 {
            log.record(c, 0, || Event::Attempt { retry: false });
            // Part of the error it joins: never an event counted on its own.
            log.record(c, 0, || Event::ErrorText("x".into()));
        }
        let summary = log.finish().unwrap();
        let text = std::fs::read_to_string(&s.path).unwrap();
        assert!(text.len() as u64 <= 150 && summary.written >= 1);
        assert_eq!(summary.written, text.lines().count() as u64);
        assert_eq!(summary.written + summary.dropped, 10);
    }

    #[test]
    fn the_sample_is_a_seeded_share() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), 0.25, vec![], DEFAULT_MAX_BYTES);
        let a = EventLog::start(&s, 4000, 1, vec![], Instant::now()).unwrap();
        let b = EventLog::start(&s, 4000, 1, vec![], Instant::now()).unwrap();
        assert!((800..1200).contains(&a.clients()), "{}", a.clients());
        assert!(
            (0..4000).all(|c| a.chosen(c) == b.chosen(c)),
            "same seed, same clients"
        );
    }
}
