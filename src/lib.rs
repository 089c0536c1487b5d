//! wsstorm — a WebSocket load and reconnect-storm simulator.
//!
//! The tree is the pipeline. Each stage has its own type and hands it to the next; nothing
//! flows back up.
//!
//! ```text
//! cli ─► profile ─► plan ─► swarm ─► client ─► metrics ─► results ─► dashboard / report
//!        (Profile)  (Plan)  (coordinator,  (one task    (shards,     (Results,    (live view,
//!         YAML as    typed,  worker          per         collector,   results.json, HTML and
//!         written)   checked processes)      client)     Snapshot)    thresholds)   text)
//!
//! swarm ─► server   the embedded target the clients connect to (in-process or processes)
//!       ─► proxy    the TCP fault proxy between clients and any server
//! ```
//!
//! - [`cli`]: clap commands; maps flags onto a profile, runs plans, maps outcomes to exit codes.
//! - [`profile`]: the YAML schema as serde types, and positions of values in the file.
//! - [`plan`]: one pass from a profile to a checked, typed [`plan::Plan`] or a list of problems
//!   with positions; the pre-flight [`plan::budget`]; the steps of a capacity search.
//! - [`swarm`]: the coordinator (start, run, drain) and its client worker processes.
//! - [`client`]: the per-client state machine, and the conversation it holds with a real
//!   application ([`client::conversation`]); [`backoff`]: retry policies as pure functions.
//! - [`metrics`]: sharded recording, the per-tick collector, [`metrics::Snapshot`].
//! - [`results`]: `results.json` built from what the collector hands over, thresholds.
//! - [`dashboard`] (ratatui) and [`report`] (HTML, comparison, text) read results or snapshots;
//!   [`export`] serves snapshots (and the server's and proxy's counters) to Prometheus.
//! - [`server`], [`proxy`]: what the clients connect to and through.
//!
//! Leaves that every stage may use and that use no stage: [`units`] (human units), [`seed`]
//! (seeds and share selection), [`auth`] (tokens), [`script`] (what a conversation says:
//! templates, matchers, JWTs, data feeders — compiled by the plan, run by the clients),
//! [`net`] (sockets, listeners, services on their own runtime), [`os`] (libc calls and child
//! processes).

pub mod auth;
pub mod backoff;
pub mod cli;
pub mod client;
pub mod dashboard;
pub mod export;
pub mod metrics;
pub mod model;
pub mod net;
pub mod os;
pub mod plan;
pub mod profile;
pub mod proxy;
pub mod report;
pub mod results;
pub mod script;
pub mod seed;
pub mod server;
pub mod swarm;
pub mod units;
