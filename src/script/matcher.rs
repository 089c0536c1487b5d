//! Reading what a server sends: a [`Field`] is where a value sits in a message (a JSON path
//! like `$.data.seq` or a regex's first group, `/seq=(\d+)/`), a [`Matcher`] says whether a
//! message is the one a step waits for. A message is parsed as JSON at most once, however many
//! matchers look at it ([`Msg`]).
//!
//! The JSON of a message starts at its first `{` or `[`, so framed protocols whose JSON
//! follows a short prefix (Socket.IO's `42/chat,7["event",…]`) are read the same way as plain
//! JSON.

use std::cell::OnceCell;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// One received text or binary message, with its JSON parsed on first use.
pub struct Msg<'a> {
    pub data: &'a [u8],
    pub text: bool,
    json: OnceCell<Option<serde_json::Value>>,
}

impl<'a> Msg<'a> {
    pub fn new(data: &'a [u8], text: bool) -> Msg<'a> {
        Msg {
            data,
            text,
            json: OnceCell::new(),
        }
    }

    /// The message as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.data).ok()
    }

    /// The JSON value the message carries (from its first `{` or `[`), if any.
    pub fn json(&self) -> Option<&serde_json::Value> {
        self.json
            .get_or_init(|| {
                let start = self.data.iter().position(|&b| b == b'{' || b == b'[')?;
                serde_json::from_slice(&self.data[start..]).ok()
            })
            .as_ref()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value sits in a message.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Field {
    /// `$`, `$.a.b`, `$[0]`, `$.a[2].b`, `$['key with.dots']`.
    Json { src: String, path: Vec<Seg> },
    /// `/regex/`: the first capture group, or the whole match without one.
    Regex { src: String, re: Regex },
}

impl PartialEq for Field {
    fn eq(&self, o: &Field) -> bool {
        self.source() == o.source()
    }
}

impl TryFrom<String> for Field {
    type Error = String;
    fn try_from(s: String) -> Result<Field, String> {
        Field::parse(&s)
    }
}

impl From<Field> for String {
    fn from(f: Field) -> String {
        f.source().to_string()
    }
}

impl Field {
    pub fn parse(src: &str) -> Result<Field, String> {
        if let Some(body) = src.strip_prefix('/') {
            let Some(pattern) = body.strip_suffix('/') else {
                return Err(format!(
                    "`{src}`: a regex field is written between slashes: `/seq=(\\d+)/`"
                ));
            };
            let re = Regex::new(pattern).map_err(|e| format!("`{src}`: not a valid regex: {e}"))?;
            return Ok(Field::Regex {
                src: src.to_string(),
                re,
            });
        }
        Ok(Field::Json {
            src: src.to_string(),
            path: parse_path(src)?,
        })
    }

    pub fn source(&self) -> &str {
        match self {
            Field::Json { src, .. } | Field::Regex { src, .. } => src,
        }
    }

    /// The value in `m` as it would be written in a template: a string as its text, any other
    /// JSON value as its JSON text.
    pub fn get(&self, m: &Msg<'_>) -> Option<String> {
        match self {
            Field::Json { path, .. } => {
                let v = lookup(m.json()?, path)?;
                Some(match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            }
            Field::Regex { re, .. } => {
                let text = m.as_str()?;
                let caps = re.captures(text)?;
                let g = caps.get(1).or_else(|| caps.get(0))?;
                Some(g.as_str().to_string())
            }
        }
    }

    /// The value as an unsigned integer (a JSON number, or digits in a string or regex group).
    pub fn get_u64(&self, m: &Msg<'_>) -> Option<u64> {
        match self {
            Field::Json { path, .. } => match lookup(m.json()?, path)? {
                serde_json::Value::Number(n) => n
                    .as_u64()
                    .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            },
            Field::Regex { re, .. } => {
                let caps = re.captures(m.as_str()?)?;
                caps.get(1).or_else(|| caps.get(0))?.as_str().parse().ok()
            }
        }
    }

    /// The JSON value itself (JSON fields only).
    pub fn get_json<'m>(&self, m: &'m Msg<'_>) -> Option<&'m serde_json::Value> {
        match self {
            Field::Json { path, .. } => lookup(m.json()?, path),
            Field::Regex { .. } => None,
        }
    }
}

fn lookup<'v>(mut v: &'v serde_json::Value, path: &[Seg]) -> Option<&'v serde_json::Value> {
    for seg in path {
        v = match seg {
            Seg::Key(k) => v.as_object()?.get(k)?,
            Seg::Index(i) => v.as_array()?.get(*i)?,
        };
    }
    Some(v)
}

fn parse_path(src: &str) -> Result<Vec<Seg>, String> {
    let expected = || {
        format!(
            "`{src}`: a field is a JSON path (`$.type`, `$.data[0].id`, `$['a.b']`) or a regex between slashes (`/seq=(\\d+)/`)"
        )
    };
    let Some(mut rest) = src.strip_prefix('$') else {
        return Err(expected());
    };
    let mut path = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err(expected());
            }
            path.push(Seg::Key(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').ok_or_else(expected)?;
            let inner = &r[..close];
            if let Some(q) = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
            {
                path.push(Seg::Key(q.to_string()));
            } else {
                let i = inner.parse::<usize>().map_err(|_| expected())?;
                path.push(Seg::Index(i));
            }
            rest = &r[close + 1..];
        } else {
            return Err(expected());
        }
    }
    Ok(path)
}

/// Whether a message is the one wanted: every condition given must hold (none: any message).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Matcher {
    pub text: Option<String>,
    pub prefix: Option<String>,
    #[serde(with = "opt_regex")]
    pub regex: Option<Regex>,
    /// Fields that must equal a value.
    pub equals: Vec<(Field, serde_json::Value)>,
    /// Fields that must be present.
    pub exists: Vec<Field>,
    /// Only binary (`Some(false)`) or text (`Some(true)`) messages.
    pub is_text: Option<bool>,
}

mod opt_regex {
    use regex::Regex;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &Option<Regex>, s: S) -> Result<S::Ok, S::Error> {
        match r {
            Some(r) => s.serialize_some(r.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Regex>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| Regex::new(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl Matcher {
    pub fn any() -> Matcher {
        Matcher::default()
    }

    pub fn is_any(&self) -> bool {
        self.text.is_none()
            && self.prefix.is_none()
            && self.regex.is_none()
            && self.equals.is_empty()
            && self.exists.is_empty()
            && self.is_text.is_none()
    }

    pub fn matches(&self, m: &Msg<'_>) -> bool {
        if self.is_text.is_some_and(|t| t != m.text) {
            return false;
        }
        if let Some(t) = &self.text
            && m.data != t.as_bytes()
        {
            return false;
        }
        if let Some(p) = &self.prefix
            && !m.data.starts_with(p.as_bytes())
        {
            return false;
        }
        if let Some(re) = &self.regex
            && !m.as_str().is_some_and(|s| re.is_match(s))
        {
            return false;
        }
        if self.exists.iter().any(|f| f.get(m).is_none()) {
            return false;
        }
        self.equals.iter().all(|(f, want)| match f {
            Field::Json { .. } => f.get_json(m).is_some_and(|got| json_equal(got, want)),
            Field::Regex { .. } => f
                .get(m)
                .is_some_and(|got| json_equal(&serde_json::Value::String(got), want)),
        })
    }
}

/// Equality as a user means it: numbers by value (1 == 1.0), a string and a number equal when
/// the string is that number's text (YAML `id: "7"` matches `7`).
fn json_equal(got: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (got, want) {
        (V::Number(a), V::Number(b)) => a.as_f64() == b.as_f64(),
        (V::String(a), V::Number(b)) | (V::Number(b), V::String(a)) => {
            a.parse::<f64>().ok() == b.as_f64()
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Msg<'_> {
        Msg::new(s.as_bytes(), true)
    }

    #[test]
    fn json_paths_read_fields() {
        let f = Field::parse("$.data[1].id").unwrap();
        assert_eq!(
            f.get(&m(r#"{"data":[{"id":1},{"id":"x"}]}"#)).as_deref(),
            Some("x")
        );
        let f = Field::parse("$['a.b']").unwrap();
        assert_eq!(f.get(&m(r#"{"a.b":true}"#)).as_deref(), Some("true"));
        let f = Field::parse("$[0]").unwrap();
        assert_eq!(
            f.get(&m(r#"42/chat,["tick",{"n":3}]"#)).as_deref(),
            Some("tick"),
            "the JSON after a Socket.IO prefix"
        );
        let f = Field::parse("$[1].n").unwrap();
        assert_eq!(f.get_u64(&m(r#"42/chat,["tick",{"n":3}]"#)), Some(3));
        assert_eq!(
            Field::parse("$.seq")
                .unwrap()
                .get_u64(&m(r#"{"seq":"12"}"#)),
            Some(12)
        );
    }

    #[test]
    fn regex_fields_take_the_first_group() {
        let f = Field::parse(r"/^43\/chat,(\d+)/").unwrap();
        assert_eq!(f.get_u64(&m(r#"43/chat,17[{"ok":true}]"#)), Some(17));
        let f = Field::parse("/MESSAGE/").unwrap();
        assert_eq!(f.get(&m("MESSAGE\n")).as_deref(), Some("MESSAGE"));
    }

    #[test]
    fn bad_fields_say_what_is_expected() {
        for bad in ["seq", "$.", "$[x]", "$.a[", "/(/", "/abc"] {
            let e = Field::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn matchers_need_every_condition() {
        let any = Matcher::any();
        assert!(any.matches(&m("whatever")));
        let ack = Matcher {
            equals: vec![
                (Field::parse("$.type").unwrap(), serde_json::json!("ack")),
                (Field::parse("$.id").unwrap(), serde_json::json!("7")),
            ],
            ..Matcher::default()
        };
        assert!(ack.matches(&m(r#"{"type":"ack","id":7}"#)));
        assert!(!ack.matches(&m(r#"{"type":"ack","id":8}"#)));
        assert!(!ack.matches(&m("not json")));
        let ping = Matcher {
            text: Some("2".into()),
            ..Matcher::default()
        };
        assert!(ping.matches(&m("2")));
        assert!(!ping.matches(&m("21")));
        let ev = Matcher {
            prefix: Some("42/chat,".into()),
            exists: vec![Field::parse("$[1]").unwrap()],
            ..Matcher::default()
        };
        assert!(ev.matches(&m(r#"42/chat,["message",{}]"#)));
        assert!(!ev.matches(&m(r#"42/chat,["message"]"#)));
        let re = Matcher {
            regex: Some(Regex::new("^MESSAGE").unwrap()),
            ..Matcher::default()
        };
        assert!(re.matches(&m("MESSAGE\ndestination:/x\n\n")));
        assert!(!re.matches(&Msg::new(&[0xff, 0x00], false)));
    }
}
