//! Message templates: text with `{{variable}}` holes, compiled once into literal and variable
//! parts, rendered by each client into a reused buffer.
//!
//! Variables (what a user writes between the braces):
//!
//! | variable | value |
//! |---|---|
//! | `client` | the client's id in the run (0-based) |
//! | `group` | the client's group name |
//! | `conn` | the client's connection number (1 for its first) |
//! | `counter` | messages this client has rendered, from 1 |
//! | `id` | the request id of a periodic send (correlates its reply) |
//! | `now_ms`, `now_us`, `now_rfc3339` | wall-clock time |
//! | `random_int A B`, `random_hex N`, `uuid` | random values from the client's seeded RNG |
//! | `pad N` | filler that brings the whole message to N bytes |
//! | `capture.NAME` | a field kept from an earlier message (`capture:` in a step) |
//! | `last_seq`, `last_seq.STREAM` | the last sequence number seen on a stream |
//! | `feed.COLUMN` | the client's row of the data feeder |
//! | `token` | the client's current auth token (JWT or wsstorm token) |
//! | `$.path`, `/regex/` | a field of the message being answered (reply rules) |
//!
//! A JSON template is built from a YAML value: its strings may hold variables, which are
//! JSON-escaped when rendered, and a string that is exactly one numeric variable
//! (`"{{counter}}"`) renders as a JSON number (or `null` when it has no value yet).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::matcher::Field;

/// A variable, resolved at compile time (names are indices by then).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Var {
    Client,
    Group,
    Conn,
    Counter,
    Id,
    NowMs,
    NowUs,
    NowRfc3339,
    RandomInt(i64, i64),
    RandomHex(usize),
    Uuid,
    Pad(usize),
    Capture(usize),
    /// Stream index, or `None` for "the first stream".
    LastSeq(Option<usize>),
    Feed(usize),
    Token,
    /// A field of the message being answered.
    Field(Field),
}

impl Var {
    /// Whether the value is a number (so a JSON string holding only it becomes a number).
    fn numeric(&self) -> bool {
        matches!(
            self,
            Var::Client
                | Var::Conn
                | Var::Counter
                | Var::Id
                | Var::NowMs
                | Var::NowUs
                | Var::RandomInt(..)
                | Var::LastSeq(_)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Escape {
    None,
    /// Inside a JSON string: quotes, backslashes and control characters escaped.
    JsonString,
    /// A whole JSON value: a number as is, nothing as `null`.
    JsonNumber,
    /// A field copied whole: its JSON value as it was (a regex group as a string), nothing as
    /// `null`.
    JsonValue,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Part {
    Lit(Box<str>),
    Var(Var, Escape),
}

/// A compiled template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Template {
    parts: Vec<Part>,
    /// Set when a `pad N` is present: the whole message is brought to N bytes.
    pad_to: Option<usize>,
}

/// What names a template may refer to; the plan knows them.
pub trait Names {
    fn capture(&self, name: &str) -> Result<usize, String>;
    fn stream(&self, name: &str) -> Option<usize>;
    fn feed_column(&self, name: &str) -> Result<usize, String>;
    /// Whether the template is answering a message (`$.x` and `/re/` allowed).
    fn answering(&self) -> bool;
    fn has_token(&self) -> bool;
    fn has_id(&self) -> bool;
}

/// A compile problem: the byte offset in the template text and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

/// The values a client supplies when rendering.
pub trait Values {
    fn client(&self) -> u32;
    fn group(&self) -> &str;
    fn conn(&self) -> u32;
    /// The next message counter (the client increments it once per rendered message).
    fn counter(&self) -> u64;
    fn id(&self) -> Option<u64>;
    fn random(&mut self) -> u64;
    fn capture(&self, i: usize) -> Option<&str>;
    fn last_seq(&self, stream: Option<usize>) -> Option<u64>;
    fn feed(&self, column: usize) -> &str;
    fn token(&self) -> Option<&str>;
    /// The message being answered.
    fn answering(&self) -> Option<&super::matcher::Msg<'_>>;
}

impl Template {
    /// A template that is only literal text.
    pub fn literal(text: &str) -> Template {
        Template {
            parts: vec![Part::Lit(text.into())],
            pad_to: None,
        }
    }

    /// Templates one after the other.
    pub fn join(parts: Vec<Template>) -> Template {
        let mut out = Template {
            parts: Vec::new(),
            pad_to: None,
        };
        for t in parts {
            out.pad_to = out.pad_to.or(t.pad_to);
            for p in t.parts {
                match (out.parts.last_mut(), p) {
                    (Some(Part::Lit(prev)), Part::Lit(next)) => {
                        let mut joined = prev.to_string();
                        joined.push_str(&next);
                        *prev = joined.into();
                    }
                    (_, p) => out.parts.push(p),
                }
            }
        }
        out
    }

    /// Compile plain text with `{{...}}` holes.
    pub fn text(src: &str, names: &dyn Names) -> Result<Template, TemplateError> {
        let mut t = Template {
            parts: Vec::new(),
            pad_to: None,
        };
        t.push_text(src, 0, Escape::None, names)?;
        Ok(t)
    }

    /// Compile a JSON value (from YAML) into a template of its compact JSON text. Errors carry
    /// the path of the string that holds the problem and its offset in that string.
    pub fn json(
        value: &serde_json::Value,
        names: &dyn Names,
    ) -> Result<Template, (String, TemplateError)> {
        let mut t = Template {
            parts: Vec::new(),
            pad_to: None,
        };
        let mut lit = String::new();
        t.push_json(value, &mut lit, names, "")?;
        t.flush_lit(&mut lit);
        Ok(t)
    }

    /// Whether anything in it changes from one rendering to the next.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// Whether it reads the message it answers.
    pub fn reads_message(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var(Var::Field(_), _)))
    }

    /// The variables it uses.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v, _) => Some(v),
            Part::Lit(_) => None,
        })
    }

    fn flush_lit(&mut self, lit: &mut String) {
        if !lit.is_empty() {
            self.parts.push(Part::Lit(std::mem::take(lit).into()));
        }
    }

    fn push_json(
        &mut self,
        value: &serde_json::Value,
        lit: &mut String,
        names: &dyn Names,
        path: &str,
    ) -> Result<(), (String, TemplateError)> {
        use serde_json::Value as V;
        match value {
            V::String(s) if s.contains("{{") => {
                let at = |e| (path.to_string(), e);
                // Exactly one numeric variable: a JSON number.
                if let Some(inner) = s.strip_prefix("{{").and_then(|r| r.strip_suffix("}}"))
                    && !inner.contains("{{")
                    && !inner.contains("}}")
                {
                    let var = parse_var(inner.trim(), names).map_err(|m| {
                        at(TemplateError {
                            offset: 2,
                            message: m,
                        })
                    })?;
                    if let Var::Field(_) = var {
                        self.flush_lit(lit);
                        self.parts.push(Part::Var(var, Escape::JsonValue));
                        return Ok(());
                    }
                    if var.numeric() {
                        self.flush_lit(lit);
                        if let Var::Pad(n) = var {
                            self.pad_to = Some(n);
                        }
                        self.parts.push(Part::Var(var, Escape::JsonNumber));
                        return Ok(());
                    }
                }
                lit.push('"');
                self.flush_lit(lit);
                self.push_text(s, 0, Escape::JsonString, names)
                    .map_err(at)?;
                lit.push('"');
            }
            V::Array(items) => {
                lit.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        lit.push(',');
                    }
                    self.push_json(v, lit, names, &format!("{path}[{i}]"))?;
                }
                lit.push(']');
            }
            V::Object(map) => {
                lit.push('{');
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        lit.push(',');
                    }
                    lit.push_str(&serde_json::Value::String(k.clone()).to_string());
                    lit.push(':');
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    self.push_json(v, lit, names, &sub)?;
                }
                lit.push('}');
            }
            other => lit.push_str(&other.to_string()),
        }
        Ok(())
    }

    fn push_text(
        &mut self,
        src: &str,
        base: usize,
        escape: Escape,
        names: &dyn Names,
    ) -> Result<(), TemplateError> {
        let mut rest = src;
        let mut at = base;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                self.push_lit(&rest[..open], escape);
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(TemplateError {
                    offset: at + open,
                    message: "`{{` without a closing `}}`".into(),
                });
            };
            let var = parse_var(after[..close].trim(), names).map_err(|message| TemplateError {
                offset: at + open + 2,
                message,
            })?;
            if let Var::Pad(n) = var {
                self.pad_to = Some(n);
            }
            self.parts.push(Part::Var(var, escape));
            let used = open + 2 + close + 2;
            rest = &rest[used..];
            at += used;
        }
        if !rest.is_empty() {
            self.push_lit(rest, escape);
        }
        Ok(())
    }

    fn push_lit(&mut self, s: &str, escape: Escape) {
        let text = match escape {
            Escape::JsonString => {
                let quoted = serde_json::Value::String(s.to_string()).to_string();
                quoted[1..quoted.len() - 1].to_string()
            }
            _ => s.to_string(),
        };
        if let Some(Part::Lit(prev)) = self.parts.last_mut() {
            let mut joined = prev.to_string();
            joined.push_str(&text);
            *prev = joined.into();
        } else {
            self.parts.push(Part::Lit(text.into()));
        }
    }

    /// Render into `out` (cleared first).
    pub fn render(&self, v: &mut dyn Values, out: &mut String) {
        out.clear();
        let mut pad_at = None;
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(Var::Pad(_), _) => pad_at = Some(out.len()),
                Part::Var(var, esc) => render_var(var, *esc, v, out),
            }
        }
        if let (Some(n), Some(at)) = (self.pad_to, pad_at)
            && out.len() < n
        {
            let fill = "x".repeat(n - out.len());
            out.insert_str(at, &fill);
        }
    }

    /// Render into a new string.
    pub fn to_string(&self, v: &mut dyn Values) -> String {
        let mut s = String::new();
        self.render(v, &mut s);
        s
    }
}

fn render_var(var: &Var, esc: Escape, v: &mut dyn Values, out: &mut String) {
    let start = out.len();
    let missing = |out: &mut String| {
        if matches!(esc, Escape::JsonNumber | Escape::JsonValue) {
            out.push_str("null");
        }
    };
    match var {
        Var::Client => {
            let _ = write!(out, "{}", v.client());
        }
        Var::Group => out.push_str(v.group()),
        Var::Conn => {
            let _ = write!(out, "{}", v.conn());
        }
        Var::Counter => {
            let _ = write!(out, "{}", v.counter());
        }
        Var::Id => match v.id() {
            Some(id) => {
                let _ = write!(out, "{id}");
            }
            None => missing(out),
        },
        Var::NowMs => {
            let _ = write!(out, "{}", now_since_epoch().as_millis());
        }
        Var::NowUs => {
            let _ = write!(out, "{}", now_since_epoch().as_micros());
        }
        Var::NowRfc3339 => {
            let _ = write!(
                out,
                "{}",
                humantime::format_rfc3339_millis(std::time::SystemTime::now())
            );
        }
        Var::RandomInt(a, b) => {
            let span = (*b as i128 - *a as i128 + 1).max(1) as u128;
            let r = (v.random() as u128 % span) as i128 + *a as i128;
            let _ = write!(out, "{r}");
        }
        Var::RandomHex(n) => {
            let mut left = *n;
            while left > 0 {
                let r = v.random();
                let take = left.min(16);
                let _ = write!(out, "{:016x}", r);
                out.truncate(out.len() - (16 - take));
                left -= take;
            }
        }
        Var::Uuid => {
            let (a, b) = (v.random(), v.random());
            // Version 4, variant 10.
            let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
            let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
            let _ = write!(
                out,
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xffff,
                a & 0xffff,
                b >> 48,
                b & 0xffff_ffff_ffff
            );
        }
        Var::Pad(_) => {}
        Var::Capture(i) => {
            if let Some(s) = v.capture(*i) {
                out.push_str(s)
            } else {
                missing(out)
            }
        }
        Var::LastSeq(s) => match v.last_seq(*s) {
            Some(n) => {
                let _ = write!(out, "{n}");
            }
            None => missing(out),
        },
        Var::Feed(c) => out.push_str(v.feed(*c)),
        Var::Token => {
            if let Some(t) = v.token() {
                out.push_str(t)
            } else {
                missing(out)
            }
        }
        Var::Field(f) if esc == Escape::JsonValue => {
            let m = v.answering();
            let json = m.and_then(|m| f.get_json(m)).map(|j| j.to_string());
            let text = json.or_else(|| {
                m.and_then(|m| f.get(m))
                    .map(|t| serde_json::Value::String(t).to_string())
            });
            out.push_str(text.as_deref().unwrap_or("null"));
        }
        Var::Field(f) => {
            let text = v.answering().and_then(|m| f.get(m));
            match text {
                Some(t) => out.push_str(&t),
                None => missing(out),
            }
        }
    }
    if esc == Escape::JsonString {
        let raw = out[start..].to_string();
        if raw.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            out.truncate(start);
            let quoted = serde_json::Value::String(raw).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        }
    }
}

fn now_since_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The variables a user may write, for error messages.
pub const VARIABLES: &str = "client, group, conn, counter, id, now_ms, now_us, now_rfc3339, \
     random_int A B, random_hex N, uuid, pad N, capture.NAME, last_seq, last_seq.STREAM, \
     feed.COLUMN, token, $.json.path, /regex/";

fn parse_var(text: &str, names: &dyn Names) -> Result<Var, String> {
    let mut words = text.split_whitespace();
    let head = words.next().unwrap_or("");
    let args: Vec<&str> = words.collect();
    let no_args = |v: Var| {
        if args.is_empty() {
            Ok(v)
        } else {
            Err(format!("`{head}` takes no arguments"))
        }
    };
    let number = |s: &str, what: &str| -> Result<i64, String> {
        s.parse::<i64>()
            .map_err(|_| format!("`{head}` expects {what}, found `{s}`"))
    };
    if head.starts_with('$') || head.starts_with('/') {
        if !names.answering() {
            return Err(format!(
                "`{text}` reads the message being answered, which only a reply rule has"
            ));
        }
        return Field::parse(text).map(Var::Field);
    }
    match head {
        "client" => no_args(Var::Client),
        "group" => no_args(Var::Group),
        "conn" => no_args(Var::Conn),
        "counter" => no_args(Var::Counter),
        "id" => {
            if !names.has_id() {
                return Err(
                    "`id` is the request id of a periodic send (`every:`); this message has none"
                        .into(),
                );
            }
            no_args(Var::Id)
        }
        "now_ms" => no_args(Var::NowMs),
        "now_us" => no_args(Var::NowUs),
        "now_rfc3339" => no_args(Var::NowRfc3339),
        "uuid" => no_args(Var::Uuid),
        "token" => {
            if !names.has_token() {
                return Err("`token` needs `auth:` in the behaviour".into());
            }
            no_args(Var::Token)
        }
        "random_int" => {
            let [a, b] = args[..] else {
                return Err("`random_int` expects two numbers: `random_int 1 100`".into());
            };
            let (a, b) = (number(a, "a number")?, number(b, "a number")?);
            if a > b {
                return Err(format!(
                    "`random_int {a} {b}`: the first is more than the second"
                ));
            }
            Ok(Var::RandomInt(a, b))
        }
        "random_hex" | "pad" => {
            let [n] = args[..] else {
                return Err(format!("`{head}` expects a length: `{head} 16`"));
            };
            let n = number(n, "a length")?;
            if !(1..=16 * 1024 * 1024).contains(&n) {
                return Err(format!("`{head} {n}`: the length must be 1 to 16777216"));
            }
            Ok(if head == "pad" {
                Var::Pad(n as usize)
            } else {
                Var::RandomHex(n as usize)
            })
        }
        "last_seq" => no_args(Var::LastSeq(None)),
        _ => {
            if let Some(name) = head.strip_prefix("capture.") {
                return no_args(Var::Capture(names.capture(name)?));
            }
            if let Some(name) = head.strip_prefix("feed.") {
                return no_args(Var::Feed(names.feed_column(name)?));
            }
            if let Some(name) = head.strip_prefix("last_seq.") {
                let s = names
                    .stream(name)
                    .ok_or_else(|| format!("no stream is named `{name}`"))?;
                return no_args(Var::LastSeq(Some(s)));
            }
            Err(format!(
                "unknown template variable `{head}`; the variables are: {VARIABLES}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::matcher::Msg;

    struct N;
    impl Names for N {
        fn capture(&self, name: &str) -> Result<usize, String> {
            (name == "sid")
                .then_some(0)
                .ok_or_else(|| format!("no capture `{name}`"))
        }
        fn stream(&self, name: &str) -> Option<usize> {
            (name == "prices").then_some(0)
        }
        fn feed_column(&self, name: &str) -> Result<usize, String> {
            (name == "user")
                .then_some(0)
                .ok_or_else(|| format!("no column `{name}`"))
        }
        fn answering(&self) -> bool {
            true
        }
        fn has_token(&self) -> bool {
            true
        }
        fn has_id(&self) -> bool {
            true
        }
    }

    struct V<'a> {
        msg: Option<Msg<'a>>,
        r: u64,
    }
    impl Values for V<'_> {
        fn client(&self) -> u32 {
            7
        }
        fn group(&self) -> &str {
            "chat \"room\""
        }
        fn conn(&self) -> u32 {
            2
        }
        fn counter(&self) -> u64 {
            41
        }
        fn id(&self) -> Option<u64> {
            Some(9)
        }
        fn random(&mut self) -> u64 {
            self.r += 1;
            self.r
        }
        fn capture(&self, _: usize) -> Option<&str> {
            None
        }
        fn last_seq(&self, _: Option<usize>) -> Option<u64> {
            Some(17)
        }
        fn feed(&self, _: usize) -> &str {
            "alice"
        }
        fn token(&self) -> Option<&str> {
            Some("t0k")
        }
        fn answering(&self) -> Option<&Msg<'_>> {
            self.msg.as_ref()
        }
    }

    fn v() -> V<'static> {
        V { msg: None, r: 0 }
    }

    #[test]
    fn text_templates_render() {
        let t = Template::text("c={{client}} g={{ group }} n={{conn}}/{{counter}}", &N).unwrap();
        assert_eq!(t.to_string(&mut v()), "c=7 g=chat \"room\" n=2/41");
        let t = Template::text("{{feed.user}}:{{last_seq.prices}}:{{token}}", &N).unwrap();
        assert_eq!(t.to_string(&mut v()), "alice:17:t0k");
        let t = Template::text("ab{{pad 10}}cd", &N).unwrap();
        assert_eq!(t.to_string(&mut v()), "abxxxxxxcd");
        let t = Template::text("{{random_hex 20}}", &N).unwrap();
        assert_eq!(t.to_string(&mut v()).len(), 20);
        let u = Template::text("{{uuid}}", &N).unwrap().to_string(&mut v());
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4", "version 4: {u}");
        let t = Template::text("{{random_int 5 5}}", &N).unwrap();
        assert_eq!(t.to_string(&mut v()), "5");
    }

    #[test]
    fn json_templates_escape_and_type() {
        let value = serde_json::json!({
            "type": "say",
            "id": "{{counter}}",
            "who": "{{group}}",
            "seq": "{{capture.sid}}",
            "list": [1, "x{{client}}"]
        });
        let t = Template::json(&value, &N).unwrap();
        let out = t.to_string(&mut v());
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["id"], 41, "{out}");
        assert_eq!(back["who"], "chat \"room\"");
        assert_eq!(
            back["seq"], "",
            "a missing capture inside a string is empty"
        );
        assert_eq!(back["list"][1], "x7");
        let t = Template::json(&serde_json::json!({"from": "{{last_seq}}"}), &N).unwrap();
        assert_eq!(t.to_string(&mut v()), r#"{"from":17}"#);
    }

    #[test]
    fn answers_copy_fields() {
        let t = Template::text(r#"{"event":"pong","id":{{$.id}}}"#, &N).unwrap();
        let raw = br#"{"event":"ping","id":12}"#;
        let mut vals = V {
            msg: Some(Msg::new(raw, true)),
            r: 0,
        };
        assert_eq!(t.to_string(&mut vals), r#"{"event":"pong","id":12}"#);
    }

    #[test]
    fn bad_templates_say_where_and_why() {
        let e = Template::text("hi {{nope}}", &N).unwrap_err();
        assert_eq!(e.offset, 5);
        assert!(
            e.message.contains("unknown template variable `nope`"),
            "{e:?}"
        );
        let e = Template::text("hi {{client", &N).unwrap_err();
        assert_eq!(e.offset, 3);
        let e = Template::text("{{capture.x}}", &N).unwrap_err();
        assert!(e.message.contains("no capture `x`"));
        let e = Template::text("{{random_int 9 1}}", &N).unwrap_err();
        assert!(e.message.contains("more than"));
        let (path, e) = Template::json(&serde_json::json!({"a": {"b": "{{zz}}"}}), &N).unwrap_err();
        assert_eq!(path, "a.b");
        assert!(e.message.contains("zz"));
    }
}
