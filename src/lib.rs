//! wsstorm — a WebSocket load and reconnect-storm simulator.
//!
//! The pipeline, one module per stage:
//! [`profile`] (what the user wrote) → [`plan`] (what will happen, seeded) → [`swarm`] (runs it:
//! [`client`] tasks against a [`target`]) → [`metrics`] (sharded recording, snapshots) →
//! [`results`] (`results.json`) → [`printer`] (text for people).

pub mod auth;
pub mod backoff;
pub mod budget;
pub mod capacity;
pub mod cli;
pub mod client;
pub mod dashboard;
pub mod listener;
pub mod metrics;
pub mod plan;
pub mod printer;
pub mod profile;
pub mod proxy;
pub mod report;
pub mod results;
pub mod swarm;
pub mod target;
pub mod threshold;
pub mod transport;
pub mod units;
pub mod workers;
