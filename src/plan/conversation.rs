//! A group's conversation, compiled once and shared by all its clients: steps, periodic
//! requests, reply rules, streams and application errors, with every template, matcher and
//! field compiled and every name (captures, streams, samples, feeder columns) resolved to an
//! index. Protocol presets (Socket.IO v4, graphql-transport-ws) are expanded here into the same
//! plain steps a user could have written, so the clients run one engine.

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::compile::Problems;
use crate::profile::{
    self, Conversation, FeedOrder, Match, Message, OnTimeout, ProtocolName, Step, TimeUnit, When,
};
use crate::script::feeder::Feeder;
use crate::script::matcher::{Field, Matcher};
use crate::script::template::{Names, Template};

/// Everything a client of a group runs of its conversation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConversationPlan {
    pub steps: Vec<StepPlan>,
    pub periodic: Vec<PeriodicPlan>,
    pub replies: Vec<ReplyPlan>,
    pub streams: Vec<StreamPlan>,
    pub app_errors: Option<AppErrorsPlan>,
    /// URL query parameters added to every attempt.
    pub query: Vec<(String, Template)>,
    /// Handshake headers added to every attempt.
    pub headers: Vec<(String, Template)>,
    /// Added when the client has a stream position to resume from.
    pub resume_query: Vec<(String, Template)>,
    pub resume_headers: Vec<(String, Template)>,
    /// Capture names, by index.
    pub captures: Vec<String>,
    /// Sample names (steps that wait for a reply, periodic requests, reply rules), by index:
    /// each has counts and a latency histogram in the results.
    pub samples: Vec<String>,
    pub feeder: Option<FeederPlan>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeederPlan {
    pub data: Arc<Feeder>,
    pub order: FeedOrder,
}

/// What a send puts on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Body {
    Text(Template),
    Binary(Vec<u8>),
    RandomBinary(usize),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessagePlan {
    pub body: Body,
    pub when: Option<When>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StepPlan {
    Send(MessagePlan),
    Expect(ExpectPlan),
    Wait(Duration),
    Close {
        code: u16,
        reason: String,
        reconnect: bool,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectPlan {
    pub sample: usize,
    pub matcher: Matcher,
    /// Only the reply that carries the previous send's id here.
    pub id: Option<Field>,
    pub timeout: Duration,
    pub on_timeout: OnTimeout,
    pub close_code: u16,
    pub captures: Vec<(usize, Field)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeriodicPlan {
    pub sample: usize,
    pub every: Duration,
    /// At most this many per connection.
    pub count: Option<u64>,
    pub message: MessagePlan,
    pub reply: Option<CorrelationPlan>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CorrelationPlan {
    pub matcher: Matcher,
    pub id: Field,
    pub timeout: Duration,
    pub max_in_flight: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplyPlan {
    pub sample: usize,
    pub matcher: Matcher,
    pub message: MessagePlan,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamPlan {
    pub name: String,
    pub matcher: Matcher,
    pub seq: Field,
    pub published: Option<(Field, TimeUnit)>,
    pub key: Option<Field>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppErrorsPlan {
    pub matcher: Matcher,
    pub by: Option<Field>,
}

/// What the conversation adds to the group's handshake.
pub struct Extras {
    /// A subprotocol the preset needs, when the group names none.
    pub subprotocol: Option<&'static str>,
}

/// The names a template may use at one place in the profile.
struct Scope<'a> {
    captures: &'a [String],
    streams: &'a [String],
    feeder: Option<&'a Feeder>,
    feeder_declared: bool,
    answering: bool,
    has_token: bool,
    has_id: bool,
}

impl Names for Scope<'_> {
    fn capture(&self, name: &str) -> Result<usize, String> {
        self.captures.iter().position(|c| c == name).ok_or_else(|| {
            format!(
                "`capture.{name}` is used before any step captures it (captured so far: {})",
                list(self.captures)
            )
        })
    }
    fn stream(&self, name: &str) -> Option<usize> {
        self.streams.iter().position(|s| s == name)
    }
    fn feed_column(&self, name: &str) -> Result<usize, String> {
        let Some(f) = self.feeder else {
            if self.feeder_declared {
                // Its file could not be read: that is the problem already reported.
                return Ok(0);
            }
            return Err(format!("`feed.{name}` needs a `feeder:` in the behaviour"));
        };
        f.column(name).ok_or_else(|| {
            format!(
                "the feeder has no column `{name}` (its columns: {})",
                list(f.columns())
            )
        })
    }
    fn answering(&self) -> bool {
        self.answering
    }
    fn has_token(&self) -> bool {
        self.has_token
    }
    fn has_id(&self) -> bool {
        self.has_id
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Compile a group's conversation. `at` makes a problem path from a path under
/// `behaviour.conversation`.
pub(super) fn compile(
    c: &Conversation,
    feeder: Option<FeederPlan>,
    feeder_declared: bool,
    has_token: bool,
    at: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) -> (ConversationPlan, Extras) {
    let mut cx = Cx {
        at,
        problems,
        captures: Vec::new(),
        samples: Vec::new(),
        streams: c.streams.iter().map(|s| s.name.clone()).collect(),
        feeder: feeder.as_ref().map(|f| f.data.clone()),
        feeder_declared,
        has_token,
        preset: Preset::new(c),
    };
    for (i, s) in c.streams.iter().enumerate() {
        if c.streams[..i].iter().any(|o| o.name == s.name) {
            cx.bad(
                &format!("streams[{i}].name"),
                format!("`{}` is used by another stream", s.name),
            );
        }
    }
    if c.namespace.is_some() && c.protocol != ProtocolName::SocketIo {
        cx.bad("namespace", "is for `protocol: socket.io`");
    }
    if c.init_payload.is_some() && c.protocol != ProtocolName::GraphqlTransportWs {
        cx.bad("init_payload", "is for `protocol: graphql-transport-ws`");
    }
    if let Some(ns) = &c.namespace
        && (!ns.starts_with('/') || ns.contains(','))
    {
        cx.bad(
            "namespace",
            "a Socket.IO namespace starts with `/` and has no comma",
        );
    }

    let mut steps = cx.preset_steps(c);
    for (i, s) in c.steps.iter().enumerate() {
        let path = format!("steps[{i}]");
        cx.step(s, &path, i, &mut steps);
    }
    // Every capture is known from here on.
    let mut periodic = Vec::new();
    for (i, p) in c.every.iter().enumerate() {
        periodic.push(cx.periodic(p, &format!("every[{i}]")));
    }
    let mut replies = cx.preset_replies();
    for (i, r) in c.replies.iter().enumerate() {
        let path = format!("replies[{i}]");
        let name = r.name.clone().unwrap_or_else(|| format!("reply{}", i + 1));
        let sample = cx.sample(&name, &format!("{path}.name"));
        let matcher = cx.matcher(&r.matcher, &format!("{path}.match"));
        let message = cx.message(&r.send, &format!("{path}.send"), true, false);
        replies.push(ReplyPlan {
            sample,
            matcher,
            message,
        });
    }
    let streams = c
        .streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let path = format!("streams[{i}]");
            StreamPlan {
                name: s.name.clone(),
                matcher: cx.matcher(&s.matcher, &format!("{path}.match")),
                seq: cx.field(&s.seq, &format!("{path}.seq")),
                published: s
                    .published
                    .as_ref()
                    .map(|p| (cx.field(p, &format!("{path}.published")), s.published_unit)),
                key: s.key.as_ref().map(|k| cx.field(k, &format!("{path}.key"))),
            }
        })
        .collect();
    let app_errors = match &c.app_errors {
        Some(a) => Some(AppErrorsPlan {
            matcher: cx.matcher(&a.matcher, "app_errors.match"),
            by: a.by.as_ref().map(|b| cx.field(b, "app_errors.by")),
        }),
        None => cx.preset.app_errors(),
    };
    let mut query = cx.preset.query();
    query.extend(cx.pairs(&c.query, "query", false));
    let headers = cx.pairs(&c.headers, "headers", true);
    let (resume_query, resume_headers) = match &c.resume {
        Some(r) => (
            cx.pairs(&r.query, "resume.query", false),
            cx.pairs(&r.headers, "resume.headers", true),
        ),
        None => (Vec::new(), Vec::new()),
    };
    if c.resume.is_some() && c.streams.is_empty() {
        cx.bad("resume", "resumes a stream: declare one under `streams`");
    }
    let extras = Extras {
        subprotocol: cx.preset.subprotocol(),
    };
    let plan = ConversationPlan {
        steps,
        periodic,
        replies,
        streams,
        app_errors,
        query,
        headers,
        resume_query,
        resume_headers,
        captures: cx.captures,
        samples: cx.samples,
        feeder,
    };
    (plan, extras)
}

struct Cx<'a> {
    at: &'a dyn Fn(&str) -> String,
    problems: &'a mut Problems,
    captures: Vec<String>,
    samples: Vec<String>,
    streams: Vec<String>,
    feeder: Option<Arc<Feeder>>,
    feeder_declared: bool,
    has_token: bool,
    preset: Preset,
}

impl Cx<'_> {
    fn bad(&mut self, path: &str, message: impl Into<String>) {
        let p = (self.at)(path);
        self.problems.bad(p, message);
    }

    fn sample(&mut self, name: &str, path: &str) -> usize {
        if self.samples.iter().any(|s| s == name) {
            self.bad(
                path,
                format!("`{name}` names another step, request or reply"),
            );
        }
        if name.trim().is_empty() || name.contains(char::is_whitespace) {
            self.bad(
                path,
                "a name is one word: it is used in thresholds (`step.NAME.p99`)",
            );
        }
        self.samples.push(name.to_string());
        self.samples.len() - 1
    }

    fn scope(&self, answering: bool, has_id: bool) -> Scope<'_> {
        Scope {
            captures: &self.captures,
            streams: &self.streams,
            feeder: self.feeder.as_deref(),
            feeder_declared: self.feeder_declared,
            answering,
            has_token: self.has_token,
            has_id,
        }
    }

    fn text_template(&mut self, src: &str, path: &str, answering: bool, has_id: bool) -> Template {
        match Template::text(src, &self.scope(answering, has_id)) {
            Ok(t) => t,
            Err(e) => {
                let chars = src[..e.offset.min(src.len())].chars().count();
                self.bad(&format!("{path}@{chars}"), e.message);
                Template::literal("")
            }
        }
    }

    fn json_template(
        &mut self,
        v: &serde_json::Value,
        path: &str,
        answering: bool,
        has_id: bool,
    ) -> Template {
        match Template::json(v, &self.scope(answering, has_id)) {
            Ok(t) => t,
            Err((sub, e)) => {
                let p = if sub.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}.{sub}")
                };
                self.bad(&p, e.message);
                Template::literal("")
            }
        }
    }

    fn field(&mut self, src: &str, path: &str) -> Field {
        match Field::parse(src) {
            Ok(f) => f,
            Err(e) => {
                self.bad(path, e);
                Field::parse("$").expect("`$` is a valid path")
            }
        }
    }

    fn matcher(&mut self, m: &Match, path: &str) -> Matcher {
        let mut out = Matcher {
            text: m.text.clone(),
            prefix: m.prefix.clone(),
            regex: None,
            equals: Vec::new(),
            exists: Vec::new(),
            is_text: m.binary.map(|b| !b),
        };
        if let Some(re) = &m.regex {
            match Regex::new(re) {
                Ok(r) => out.regex = Some(r),
                Err(e) => self.bad(&format!("{path}.regex"), format!("not a valid regex: {e}")),
            }
        }
        for (k, v) in &m.json {
            let f = self.field(k, &format!("{path}.json.{k}"));
            if matches!(f, Field::Regex { .. }) && !v.is_string() && !v.is_number() {
                self.bad(
                    &format!("{path}.json.{k}"),
                    "a regex field compares with a string or number",
                );
            }
            out.equals.push((f, v.clone()));
        }
        for (i, e) in m.exists.iter().enumerate() {
            let f = self.field(e, &format!("{path}.exists[{i}]"));
            out.exists.push(f);
        }
        if let Some(event) = &m.event {
            match self.preset.socket_io_prefix() {
                Some(prefix) => {
                    if out.prefix.is_some() {
                        self.bad(
                            &format!("{path}.event"),
                            "give `event` or `prefix`, not both",
                        );
                    }
                    out.prefix = Some(format!("42{prefix}"));
                    out.equals.push((
                        Field::parse("$[0]").expect("valid"),
                        serde_json::json!(event),
                    ));
                }
                None => self.bad(
                    &format!("{path}.event"),
                    "matches a Socket.IO event: it needs `protocol: socket.io`",
                ),
            }
        }
        if let Some(kind) = &m.kind {
            if self.preset.protocol != ProtocolName::GraphqlTransportWs {
                self.bad(&format!("{path}.type"), "matches a graphql-transport-ws message: it needs `protocol: graphql-transport-ws`");
            }
            out.equals.push((
                Field::parse("$.type").expect("valid"),
                serde_json::json!(kind),
            ));
        }
        out
    }

    fn message(&mut self, m: &Message, path: &str, answering: bool, has_id: bool) -> MessagePlan {
        if !exactly_one(&[
            m.text.is_some(),
            m.json.is_some(),
            m.hex.is_some(),
            m.base64.is_some(),
            m.random_bytes.is_some(),
        ]) {
            self.bad(
                path,
                "needs exactly one of `text`, `json`, `hex`, `base64`, `random_bytes`",
            );
        }
        let body = if let Some(t) = &m.text {
            Body::Text(self.text_template(t, &format!("{path}.text"), answering, has_id))
        } else if let Some(j) = &m.json {
            Body::Text(self.json_template(j, &format!("{path}.json"), answering, has_id))
        } else if let Some(h) = &m.hex {
            let clean: String = h.chars().filter(|c| !c.is_whitespace()).collect();
            if !clean.len().is_multiple_of(2) || !clean.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.bad(
                    &format!("{path}.hex"),
                    "expected pairs of hex digits (`0a ff 10`)",
                );
                Body::Binary(Vec::new())
            } else {
                Body::Binary(
                    (0..clean.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap_or(0))
                        .collect(),
                )
            }
        } else if let Some(b) = &m.base64 {
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(b.trim()) {
                Ok(bytes) => Body::Binary(bytes),
                Err(e) => {
                    self.bad(&format!("{path}.base64"), format!("not base64: {e}"));
                    Body::Binary(Vec::new())
                }
            }
        } else if let Some(n) = m.random_bytes {
            if n.0 == 0 || n.0 > 16 << 20 {
                self.bad(
                    &format!("{path}.random_bytes"),
                    "must be between 1B and 16MiB",
                );
            }
            Body::RandomBinary(n.0 as usize)
        } else {
            Body::Text(Template::literal(""))
        };
        if m.when.is_some() && self.streams.is_empty() {
            self.bad(
                &format!("{path}.when"),
                "depends on a stream position: declare a stream under `streams`",
            );
        }
        MessagePlan { body, when: m.when }
    }

    fn captures(
        &mut self,
        c: &std::collections::BTreeMap<String, String>,
        path: &str,
    ) -> Vec<(usize, Field)> {
        let mut out = Vec::new();
        for (name, src) in c {
            let f = self.field(src, &format!("{path}.{name}"));
            let i = match self.captures.iter().position(|c| c == name) {
                Some(i) => i,
                None => {
                    self.captures.push(name.clone());
                    self.captures.len() - 1
                }
            };
            out.push((i, f));
        }
        out
    }

    fn step(&mut self, s: &Step, path: &str, index: usize, steps: &mut Vec<StepPlan>) {
        if !exactly_one(&[
            s.send.is_some(),
            s.expect.is_some(),
            s.wait.is_some(),
            s.capture.is_some(),
            s.close.is_some(),
            s.emit.is_some(),
            s.subscribe.is_some(),
        ]) {
            self.bad(
                path,
                "a step is exactly one of `send`, `expect`, `wait`, `capture`, `close`, `emit` (Socket.IO), `subscribe` (GraphQL)",
            );
            return;
        }
        let kind = if let Some(m) = &s.send {
            StepKind::Send(m)
        } else if let Some(e) = &s.expect {
            StepKind::Expect(e)
        } else if let Some(d) = &s.wait {
            StepKind::Wait(*d)
        } else if let Some(c) = &s.capture {
            StepKind::Capture(c)
        } else if let Some(c) = &s.close {
            StepKind::Close(c)
        } else if let Some(e) = &s.emit {
            StepKind::Emit(e)
        } else if let Some(g) = &s.subscribe {
            StepKind::Subscribe(g)
        } else {
            unreachable!("exactly one is given (counted above)")
        };
        match kind {
            StepKind::Send(m) => {
                let m = self.message(m, &format!("{path}.send"), false, true);
                steps.push(StepPlan::Send(m));
            }
            StepKind::Wait(d) => steps.push(StepPlan::Wait(d.0)),
            StepKind::Close(c) => {
                if !valid_close_code(c.code) {
                    self.bad(
                        &format!("{path}.close.code"),
                        "a client may close with 1000, 3000-4999",
                    );
                }
                steps.push(StepPlan::Close {
                    code: c.code,
                    reason: c.reason.clone().unwrap_or_default(),
                    reconnect: c.reconnect,
                });
            }
            StepKind::Capture(c) => {
                let caps = self.captures(c, &format!("{path}.capture"));
                match steps.last_mut() {
                    Some(StepPlan::Expect(e)) => e.captures.extend(caps),
                    _ => self.bad(
                        &format!("{path}.capture"),
                        "keeps fields of the message an `expect` matched: put it right after one (or use `capture:` inside the expect)",
                    ),
                }
            }
            StepKind::Expect(e) => {
                let p = format!("{path}.expect");
                let name = e
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("step{}", index + 1));
                let sample = self.sample(&name, &format!("{p}.name"));
                let matcher = self.matcher(&e.matcher, &format!("{p}.match"));
                let id = e.id.as_ref().map(|f| self.field(f, &format!("{p}.id")));
                if e.timeout.0.is_zero() {
                    self.bad(&format!("{p}.timeout"), "must be longer than 0s");
                }
                let close_code = e.close_code.unwrap_or(4000);
                if !valid_close_code(close_code) {
                    self.bad(
                        &format!("{p}.close_code"),
                        "a client may close with 1000, 3000-4999",
                    );
                }
                let captures = self.captures(&e.capture, &format!("{p}.capture"));
                steps.push(StepPlan::Expect(ExpectPlan {
                    sample,
                    matcher,
                    id,
                    timeout: e.timeout.0,
                    on_timeout: e.on_timeout,
                    close_code,
                    captures,
                }));
            }
            StepKind::Emit(e) => {
                let p = format!("{path}.emit");
                let Some((send, expect)) = self.emit(e, &p) else {
                    return;
                };
                steps.push(StepPlan::Send(send));
                if let Some(corr) = expect {
                    let name = e.name.clone().unwrap_or_else(|| e.event.clone());
                    let sample = self.sample(&name, &format!("{p}.name"));
                    steps.push(StepPlan::Expect(ExpectPlan {
                        sample,
                        matcher: corr.matcher,
                        id: Some(corr.id),
                        timeout: e.timeout.0,
                        on_timeout: e.on_timeout,
                        close_code: 4000,
                        captures: Vec::new(),
                    }));
                }
            }
            StepKind::Subscribe(s) => {
                let p = format!("{path}.subscribe");
                if self.preset.protocol != ProtocolName::GraphqlTransportWs {
                    self.bad(
                        &p,
                        "starts a GraphQL subscription: it needs `protocol: graphql-transport-ws`",
                    );
                    return;
                }
                let mut payload = serde_json::json!({ "query": s.query });
                if let Some(v) = &s.variables {
                    payload["variables"] = v.clone();
                }
                let payload = self.json_template(&payload, &format!("{p}.variables"), false, true);
                let body = Template::join(vec![
                    Template::literal(r#"{"id":""#),
                    self.text_template("{{id}}", &p, false, true),
                    Template::literal(r#"","type":"subscribe","payload":"#),
                    payload,
                    Template::literal("}"),
                ]);
                steps.push(StepPlan::Send(MessagePlan {
                    body: Body::Text(body),
                    when: None,
                }));
                let sample = self.sample(&s.name, &format!("{p}.name"));
                steps.push(StepPlan::Expect(ExpectPlan {
                    sample,
                    matcher: Matcher {
                        equals: vec![(
                            Field::parse("$.type").expect("valid"),
                            serde_json::json!("next"),
                        )],
                        ..Matcher::default()
                    },
                    id: Some(Field::parse("$.id").expect("valid")),
                    timeout: s.timeout.0,
                    on_timeout: s.on_timeout,
                    close_code: 4000,
                    captures: Vec::new(),
                }));
            }
        }
    }

    /// A Socket.IO emit: the message, and (with an ack) how its ack is recognised.
    fn emit(
        &mut self,
        e: &profile::Emit,
        path: &str,
    ) -> Option<(MessagePlan, Option<CorrelationPlan>)> {
        let Some(nsp) = self.preset.socket_io_prefix() else {
            self.bad(
                path,
                "emits a Socket.IO event: it needs `protocol: socket.io`",
            );
            return None;
        };
        let mut args = vec![serde_json::json!(e.event)];
        if let Some(d) = &e.data {
            args.push(d.clone());
        }
        let array = self.json_template(
            &serde_json::Value::Array(args),
            &format!("{path}.data"),
            false,
            true,
        );
        let head = if e.ack {
            Template::join(vec![
                Template::literal(&format!("42{nsp}")),
                self.text_template("{{id}}", path, false, true),
            ])
        } else {
            Template::literal(&format!("42{nsp}"))
        };
        let send = MessagePlan {
            body: Body::Text(Template::join(vec![head, array])),
            when: None,
        };
        let corr = e.ack.then(|| CorrelationPlan {
            matcher: Matcher {
                prefix: Some(format!("43{nsp}")),
                ..Matcher::default()
            },
            id: Field::parse(&format!(
                "/^43{}(\\d+)/",
                regex::escape(&nsp).replace('/', "\\/")
            ))
            .expect("an escaped namespace makes a valid regex"),
            timeout: e.timeout.0,
            max_in_flight: 1000,
        });
        if e.timeout.0.is_zero() {
            self.bad(&format!("{path}.timeout"), "must be longer than 0s");
        }
        Some((send, corr))
    }

    fn periodic(&mut self, p: &profile::Periodic, path: &str) -> PeriodicPlan {
        let sample = self.sample(&p.name, &format!("{path}.name"));
        let every = match (p.every, p.rate) {
            (Some(e), None) => e.0,
            (None, Some(r)) => Duration::from_secs_f64(1.0 / r.0),
            _ => {
                self.bad(
                    path,
                    "needs either `every` (a duration) or `rate` (per second)",
                );
                Duration::from_secs(1)
            }
        };
        if every < Duration::from_micros(100) {
            self.bad(path, "sends at most every 100µs (10000/s) per client");
        }
        let (message, emit_corr) = match (&p.send, &p.emit) {
            (Some(m), None) => (self.message(m, &format!("{path}.send"), false, true), None),
            (None, Some(e)) => match self.emit(e, &format!("{path}.emit")) {
                Some((m, c)) => (m, c),
                None => (
                    MessagePlan {
                        body: Body::Text(Template::literal("")),
                        when: None,
                    },
                    None,
                ),
            },
            _ => {
                self.bad(path, "needs either `send` or (Socket.IO) `emit`");
                (
                    MessagePlan {
                        body: Body::Text(Template::literal("")),
                        when: None,
                    },
                    None,
                )
            }
        };
        if message.when.is_some() {
            self.bad(
                &format!("{path}.send.when"),
                "is for steps, not periodic sends",
            );
        }
        let reply = match &p.reply {
            Some(r) => {
                if emit_corr.is_some() {
                    self.bad(
                        &format!("{path}.reply"),
                        "an emit with `ack: true` is answered by its ack",
                    );
                }
                if r.timeout.0.is_zero() {
                    self.bad(&format!("{path}.reply.timeout"), "must be longer than 0s");
                }
                let max = r.max_in_flight.unwrap_or(1000);
                if !(1..=100_000).contains(&max) {
                    self.bad(
                        &format!("{path}.reply.max_in_flight"),
                        "must be between 1 and 100000",
                    );
                }
                let uses_id = matches!(&message.body, Body::Text(t) if t.vars().any(|v| matches!(v, crate::script::template::Var::Id)));
                if !uses_id {
                    self.bad(
                        &format!("{path}.send"),
                        "a request with a correlated `reply` must carry its `{{id}}`",
                    );
                }
                Some(CorrelationPlan {
                    matcher: self.matcher(&r.matcher, &format!("{path}.reply.match")),
                    id: self.field(&r.id, &format!("{path}.reply.id")),
                    timeout: r.timeout.0,
                    max_in_flight: max as usize,
                })
            }
            None => emit_corr,
        };
        if p.count == Some(0) {
            self.bad(&format!("{path}.count"), "must be at least 1");
        }
        PeriodicPlan {
            sample,
            every,
            count: p.count,
            message,
            reply,
        }
    }

    fn pairs(
        &mut self,
        m: &std::collections::BTreeMap<String, String>,
        path: &str,
        headers: bool,
    ) -> Vec<(String, Template)> {
        let mut out = Vec::new();
        for (k, v) in m {
            let p = format!("{path}.{k}");
            if headers {
                match tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()) {
                    Err(_) => self.bad(&p, format!("`{k}` is not a valid header name")),
                    Ok(h) if h == "sec-websocket-extensions" => {
                        self.bad(&p, super::compile::NO_EXTENSIONS)
                    }
                    Ok(h) if super::compile::OWN.contains(&h.as_str()) => self.bad(
                        &p,
                        format!("`{k}` is set by the WebSocket handshake itself"),
                    ),
                    Ok(_) => {}
                }
            }
            let t = self.text_template(v, &p, false, false);
            out.push((k.clone(), t));
        }
        out
    }

    fn preset_steps(&mut self, c: &Conversation) -> Vec<StepPlan> {
        match self.preset.protocol {
            ProtocolName::Plain => Vec::new(),
            ProtocolName::SocketIo => {
                let nsp = self.preset.socket_io_prefix().unwrap_or_default();
                let open = self.sample("eio_open", "protocol");
                let connect = self.sample("connect", "protocol");
                vec![
                    // Engine.IO's open packet: `0{"sid":…,"pingInterval":…}`.
                    StepPlan::Expect(ExpectPlan {
                        sample: open,
                        matcher: Matcher {
                            prefix: Some("0{".into()),
                            ..Matcher::default()
                        },
                        id: None,
                        timeout: Duration::from_secs(10),
                        on_timeout: OnTimeout::Reconnect,
                        close_code: 4000,
                        captures: Vec::new(),
                    }),
                    // Connect to the namespace; the server answers `40<nsp>{"sid":…}`.
                    StepPlan::Send(MessagePlan {
                        body: Body::Text(Template::literal(&format!("40{nsp}"))),
                        when: None,
                    }),
                    StepPlan::Expect(ExpectPlan {
                        sample: connect,
                        matcher: Matcher {
                            prefix: Some(format!("40{nsp}")),
                            ..Matcher::default()
                        },
                        id: None,
                        timeout: Duration::from_secs(10),
                        on_timeout: OnTimeout::Reconnect,
                        close_code: 4000,
                        captures: Vec::new(),
                    }),
                ]
            }
            ProtocolName::GraphqlTransportWs => {
                let payload = c.init_payload.clone().unwrap_or(serde_json::json!({}));
                let payload = self.json_template(&payload, "init_payload", false, false);
                let ack = self.sample("connection_ack", "protocol");
                vec![
                    StepPlan::Send(MessagePlan {
                        body: Body::Text(Template::join(vec![
                            Template::literal(r#"{"type":"connection_init","payload":"#),
                            payload,
                            Template::literal("}"),
                        ])),
                        when: None,
                    }),
                    StepPlan::Expect(ExpectPlan {
                        sample: ack,
                        matcher: Matcher {
                            equals: vec![(
                                Field::parse("$.type").expect("valid"),
                                serde_json::json!("connection_ack"),
                            )],
                            ..Matcher::default()
                        },
                        id: None,
                        timeout: Duration::from_secs(10),
                        on_timeout: OnTimeout::Reconnect,
                        close_code: 4000,
                        captures: Vec::new(),
                    }),
                ]
            }
        }
    }

    fn preset_replies(&mut self) -> Vec<ReplyPlan> {
        let (name, matcher, answer) = match self.preset.protocol {
            ProtocolName::Plain => return Vec::new(),
            // Engine.IO 4: the server pings (`2`), the client must pong (`3`) in time.
            ProtocolName::SocketIo => (
                "eio_pong",
                Matcher {
                    text: Some("2".into()),
                    ..Matcher::default()
                },
                "3",
            ),
            ProtocolName::GraphqlTransportWs => (
                "pong",
                Matcher {
                    equals: vec![(
                        Field::parse("$.type").expect("valid"),
                        serde_json::json!("ping"),
                    )],
                    ..Matcher::default()
                },
                r#"{"type":"pong"}"#,
            ),
        };
        let sample = self.sample(name, "protocol");
        vec![ReplyPlan {
            sample,
            matcher,
            message: MessagePlan {
                body: Body::Text(Template::literal(answer)),
                when: None,
            },
        }]
    }
}

/// The one thing a step does, as written.
enum StepKind<'a> {
    Send(&'a Message),
    Expect(&'a profile::Expect),
    Wait(crate::units::Dur),
    Capture(&'a std::collections::BTreeMap<String, String>),
    Close(&'a profile::CloseStep),
    Emit(&'a profile::Emit),
    Subscribe(&'a profile::GraphqlSubscribe),
}

/// Whether exactly one of the keys that exclude each other was given.
fn exactly_one(given: &[bool]) -> bool {
    given.iter().filter(|g| **g).count() == 1
}

fn valid_close_code(code: u16) -> bool {
    code == 1000 || (3000..=4999).contains(&code)
}

/// The protocol preset's constants.
struct Preset {
    protocol: ProtocolName,
    namespace: String,
}

impl Preset {
    fn new(c: &Conversation) -> Preset {
        Preset {
            protocol: c.protocol,
            namespace: c.namespace.clone().unwrap_or_else(|| "/".into()),
        }
    }

    /// What follows a Socket.IO packet type: `` for the main namespace, `/chat,` for others.
    fn socket_io_prefix(&self) -> Option<String> {
        (self.protocol == ProtocolName::SocketIo).then(|| {
            if self.namespace == "/" {
                String::new()
            } else {
                format!("{},", self.namespace)
            }
        })
    }

    fn query(&self) -> Vec<(String, Template)> {
        match self.protocol {
            ProtocolName::SocketIo => vec![
                ("EIO".into(), Template::literal("4")),
                ("transport".into(), Template::literal("websocket")),
            ],
            _ => Vec::new(),
        }
    }

    fn subprotocol(&self) -> Option<&'static str> {
        (self.protocol == ProtocolName::GraphqlTransportWs).then_some("graphql-transport-ws")
    }

    fn app_errors(&self) -> Option<AppErrorsPlan> {
        match self.protocol {
            ProtocolName::Plain => None,
            // A refused namespace connect: `44/chat,{"message":"…"}`.
            ProtocolName::SocketIo => Some(AppErrorsPlan {
                matcher: Matcher {
                    prefix: Some(format!("44{}", self.socket_io_prefix().unwrap_or_default())),
                    ..Matcher::default()
                },
                by: Some(Field::parse("$.message").expect("valid")),
            }),
            ProtocolName::GraphqlTransportWs => Some(AppErrorsPlan {
                matcher: Matcher {
                    equals: vec![(
                        Field::parse("$.type").expect("valid"),
                        serde_json::json!("error"),
                    )],
                    ..Matcher::default()
                },
                by: Some(Field::parse("$.payload[0].message").expect("valid")),
            }),
        }
    }
}
