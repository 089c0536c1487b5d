//! What a fleet of real clients does to its connections on its own (article §7, §10, §19):
//! phones that lose signal (`churn`), users who leave and are replaced (`session`), a switch
//! from Wi-Fi to cellular (`network_switch`), background tabs whose timers are throttled
//! (`throttle`), a buggy client that reconnects without closing its old socket
//! (`duplicate_connections`), and a group's arrivals in k6-style `stages`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{Dur, Percent};

/// The shape of a random duration around its mean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Memoryless: independent events at a steady rate (a Poisson process).
    #[default]
    Exponential,
    /// Uniform between 0 and twice the mean.
    Uniform,
    /// Always the mean: every client alike, to the millisecond.
    Fixed,
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Exponential => "exponential",
            Distribution::Uniform => "uniform",
            Distribution::Fixed => "fixed",
        }
    }
}

/// Each connection is dropped by the client itself (no close frame, a TCP reset: a phone that
/// lost signal) a random time after it opened; the client then reconnects after its backoff.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Mean time from an open to the drop.
    pub mean_between_drops: Dur,
    #[serde(default)]
    pub distribution: Distribution,
}

/// Open model of sessions: each client leaves (closes with 1000, does not reconnect) after a
/// random lifetime, and a new client arrives in its place at once, as a k6 VU starts its next
/// iteration: the group keeps `clients` users while the users change.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub lifetime: Lifetime,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lifetime {
    /// Mean time from a client's arrival to its leaving.
    pub mean: Dur,
    #[serde(default)]
    pub distribution: Distribution,
}

/// Wi-Fi to cellular: once, `after` the client's first connection opened, a `share` of the
/// group's clients (chosen by the seed) lose the path their connection used and reconnect from
/// the next address of the group's `source_addrs`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSwitch {
    pub after: Dur,
    /// Share of the group's clients that switch (default 100%).
    #[serde(default)]
    pub share: Percent,
    /// `reset`: the old connection is reset (the server hears of it at once); `silent`: it is
    /// abandoned open, unread, until the run ends (the server finds out only by its heartbeat
    /// or idle timeout).
    #[serde(default)]
    pub mode: SwitchMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchMode {
    #[default]
    Reset,
    Silent,
}

/// A background tab: `after` each open, for `for`, the client reads only once every `delay`
/// (all that arrived meanwhile, at once), so pongs and messages arrive late but arrive. Unlike
/// `sleep`, nothing is frozen: with `delay` below the server's heartbeat timeout the connection
/// lives.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    pub after: Dur,
    #[serde(rename = "for")]
    pub lasts: Dur,
    pub delay: Dur,
}

/// A buggy client: once, `after` its first connection opened, it opens a new connection
/// without closing the old one, which stays open (and keeps receiving) until the run ends.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DuplicateConnections {
    pub after: Dur,
}

/// One step of a group's `stages`: over `duration`, the number of clients present moves in a
/// straight line to `target` (k6's `stages`). Clients a ramp-down removes close with 1000.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub duration: Dur,
    pub target: u32,
}

/// A group needs `arrival` or `stages`, not both: said in the schema, as the plan says it.
pub(super) fn arrival_or_stages(schema: &mut schemars::Schema) {
    if let Some(o) = schema.as_object_mut() {
        o.insert(
            "oneOf".into(),
            serde_json::json!([{ "required": ["arrival"] }, { "required": ["stages"] }]),
        );
    }
}
