//! The conversation a client holds with a real application: steps after the connection opens,
//! periodic requests, reply rules, server-pushed streams, application errors, and the protocol
//! presets (Socket.IO, graphql-transport-ws) that expand into them. The schema only; the plan
//! compiles it (`plan::conversation`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Dur, Percent, Rate};

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    /// The protocol the messages below are written in: `plain` (default: you write frames),
    /// `socket.io` (Socket.IO v4 over Engine.IO 4) or `graphql-transport-ws`.
    #[serde(default)]
    pub protocol: ProtocolName,
    /// Socket.IO namespace (default `/`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// graphql-transport-ws: the `connection_init` payload (templated JSON).
    #[serde(default)]
    pub init_payload: Option<serde_json::Value>,
    /// What the client does after the connection opens, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Sends repeated on a schedule once the steps are done, each optionally correlated with
    /// its reply.
    #[serde(default)]
    pub every: Vec<Periodic>,
    /// Messages the client answers whenever they arrive (application heartbeats).
    #[serde(default)]
    pub replies: Vec<Reply>,
    /// Server-pushed sequenced streams: counted for loss, duplicates, order and delivery
    /// latency.
    #[serde(default)]
    pub streams: Vec<Stream>,
    /// Messages that are application errors, counted by a field's value.
    #[serde(default)]
    pub app_errors: Option<AppErrors>,
    /// Query parameters added to the URL of every attempt (templated).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Handshake headers added to every attempt (templated).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Added to the URL and headers of an attempt when the client has a stream position to
    /// resume from (templated; `{{last_seq}}`).
    #[serde(default)]
    pub resume: Option<Resume>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ProtocolName {
    #[default]
    #[serde(rename = "plain")]
    Plain,
    #[serde(rename = "socket.io")]
    SocketIo,
    #[serde(rename = "graphql-transport-ws")]
    GraphqlTransportWs,
}

/// One step; write exactly one key.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default)]
    pub send: Option<Message>,
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Pause for this long.
    #[serde(default)]
    pub wait: Option<Dur>,
    /// Keep fields of the message the last `expect` matched: `{name: "$.path"}`.
    #[serde(default)]
    pub capture: Option<BTreeMap<String, String>>,
    /// Close the connection with this code and reconnect (`reconnect: true`) or stop.
    #[serde(default)]
    pub close: Option<CloseStep>,
    /// Socket.IO: emit an event (`socket.io` only).
    #[serde(default)]
    pub emit: Option<Emit>,
    /// graphql-transport-ws: start a subscription (`graphql-transport-ws` only).
    #[serde(default)]
    pub subscribe: Option<GraphqlSubscribe>,
}

/// A message to send: exactly one of `text`, `json`, `hex`, `base64`, `random_bytes`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// A text frame (templated).
    #[serde(default)]
    pub text: Option<String>,
    /// A text frame of JSON built from this value (strings templated).
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// A binary frame, from hex digits.
    #[serde(default)]
    pub hex: Option<String>,
    /// A binary frame, from base64.
    #[serde(default)]
    pub base64: Option<String>,
    /// A binary frame of this many random bytes.
    #[serde(default)]
    pub random_bytes: Option<ByteSize>,
    /// Send only on a connection that `resuming` (the client has a stream position) or
    /// `fresh` (it has none).
    #[serde(default)]
    pub when: Option<When>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    Resuming,
    Fresh,
}

/// Which messages qualify; every condition given must hold, none given: any message.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The whole message equals this text.
    #[serde(default)]
    pub text: Option<String>,
    /// The message starts with this text.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The message matches this regex.
    #[serde(default)]
    pub regex: Option<String>,
    /// JSON fields equal to values: `{"$.type": "ack"}`.
    #[serde(default)]
    pub json: BTreeMap<String, serde_json::Value>,
    /// Fields that must be present (JSON paths or `/regex/`).
    #[serde(default)]
    pub exists: Vec<String>,
    /// Only binary (`true`) or only text (`false`) messages.
    #[serde(default)]
    pub binary: Option<bool>,
    /// Socket.IO: an event with this name (in the conversation's namespace).
    #[serde(default)]
    pub event: Option<String>,
    /// graphql-transport-ws: a message of this `type` (`next`, `error`, `complete`).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The latency sample's name (default `step<N>`, N counted from 1).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// Match only a reply carrying the id of the previous send (`{{id}}`), found at this field.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
    /// What a timeout does: `continue`, `close` (close with `close_code` and stop) or
    /// `reconnect` (close with `close_code` and reconnect with backoff).
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// The close code of `close` and `reconnect` (default 4000).
    #[serde(default)]
    pub close_code: Option<u16>,
    /// Keep fields of the matched message: `{session: "$.sid"}`.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
}

fn default_step_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnTimeout {
    #[default]
    Continue,
    Close,
    Reconnect,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseStep {
    #[serde(default = "default_close_code")]
    pub code: u16,
    #[serde(default)]
    pub reason: Option<String>,
    /// Reconnect (with the backoff) after closing; otherwise the client stops.
    #[serde(default)]
    pub reconnect: bool,
}

fn default_close_code() -> u16 {
    1000
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Emit {
    pub event: String,
    /// The event's argument (templated JSON); none: no argument.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    /// Ask for an acknowledgement and measure its latency (named `name`, default the event).
    #[serde(default)]
    pub ack: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphqlSubscribe {
    /// The sample named after the subscription: time from `subscribe` to its first `next`.
    pub name: String,
    pub query: String,
    #[serde(default)]
    pub variables: Option<serde_json::Value>,
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Periodic {
    /// The sample's name (latency of correlated replies, counts).
    pub name: String,
    /// Send every this often…
    #[serde(default)]
    pub every: Option<Dur>,
    /// …or at this rate per client.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Send at most this many per connection (default: until the connection ends).
    #[serde(default)]
    pub count: Option<u64>,
    /// What to send (templated; `{{id}}` is this request's id).
    #[serde(default)]
    pub send: Option<Message>,
    /// Socket.IO: emit this event (with `ack: true`, the ack is the reply).
    #[serde(default)]
    pub emit: Option<Emit>,
    /// The reply that answers each request.
    #[serde(default)]
    pub reply: Option<CorrelatedReply>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrelatedReply {
    /// Which messages are replies (default: any that carries the id field).
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// Where a reply carries its request's id (JSON path or `/regex/`).
    pub id: String,
    /// Unanswered after this long: a timeout.
    #[serde(default = "default_step_timeout")]
    pub timeout: Dur,
    /// At most this many requests in flight; a send due while full is skipped and counted
    /// (default 1000).
    #[serde(default)]
    pub max_in_flight: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The name its counts are kept under (default `reply<N>`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Match,
    /// The answer (templated; `{{$.field}}` copies a field of the message answered).
    pub send: Message,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    pub name: String,
    /// Which messages belong to the stream.
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// Where a message keeps its sequence number.
    pub seq: String,
    /// Where it keeps its publish time (for delivery latency).
    #[serde(default)]
    pub published: Option<String>,
    /// The unit of the publish time: `ms` (epoch milliseconds, default), `us`, `s`, `rfc3339`.
    #[serde(default)]
    pub published_unit: TimeUnit,
    /// Where it keeps its stream key (sequences are counted per key).
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TimeUnit {
    #[default]
    Ms,
    Us,
    S,
    Rfc3339,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppErrors {
    #[serde(rename = "match")]
    pub matcher: Match,
    /// Count them by this field's value (`$.code`).
    #[serde(default)]
    pub by: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A data file whose rows feed `{{feed.COLUMN}}`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Feeder {
    /// A `.csv` (first row: column names) or `.jsonl` file, relative to the profile.
    pub file: String,
    /// `sequential` (client i takes row i mod rows), `random`, or `unique` (one row per
    /// client; more clients than rows is refused).
    #[serde(default)]
    pub order: FeedOrder,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FeedOrder {
    #[default]
    Sequential,
    Random,
    Unique,
}

/// A JSON Web Token minted per client.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// `HS256`, `RS256` or `ES256`.
    pub alg: JwtAlg,
    /// HS256 secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// RS256/ES256 private key (PEM), relative to the profile.
    #[serde(default)]
    pub key_file: Option<String>,
    /// Claims (templated JSON); `iat` and `exp` are added unless given.
    #[serde(default)]
    pub claims: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum JwtAlg {
    HS256,
    RS256,
    ES256,
}

/// How a token refresh behaves: it takes time and can fail, so a client may reconnect with
/// the old token while its refresh is in flight (the refresh race).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    #[serde(default)]
    pub takes: Dur,
    /// Share of refreshes that fail (the client tries again on its next attempt).
    #[serde(default = "no_failures")]
    pub fails: Percent,
}

fn no_failures() -> Percent {
    Percent(0.0)
}
