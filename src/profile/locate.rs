//! Find the line and column of a value in YAML text from its path (`groups[0].arrival.rate`).
//!
//! The YAML parser keeps no positions for values that parsed fine, but it does attach the position
//! of the node being read to any error raised while reading it. So we walk the document with a
//! deserializer that follows the path and raises an error at the target node; the error's
//! location is the answer. When a key is missing (a default was used), the walk stops at the
//! nearest enclosing mapping, which is where the user would add it.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

#[derive(Debug)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let end = stripped.find(']').unwrap_or(stripped.len());
            if let Ok(i) = stripped[..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = stripped.get(end + 1..).unwrap_or("");
        }
    }
    out
}

const FOUND: &str = "\u{0}wsstorm-locate";

/// Line and column (1-based) of the value at `path`, or of its nearest existing parent.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let segs = segments(path);
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match Seek(&segs).deserialize(de) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

struct Seek<'p, 'a>(&'p [Seg<'a>]);

impl<'de> DeserializeSeed<'de> for Seek<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.0.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        while let Some(key) = map.next_key::<KeyText>()? {
            if key.0 == *want {
                return map.next_value_seed(Seek(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom(FOUND))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.0.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom(FOUND));
            }
        }
        match seq.next_element_seed(Seek(rest))? {
            Some(()) => Ok(()),
            None => Err(de::Error::custom(FOUND)),
        }
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
}

/// A mapping key as text, whatever scalar type YAML gave it (`1000:` is an integer key).
struct KeyText(String);

impl<'de> de::Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::locate;

    const DOC: &str = "\
name: x
groups:
  - name: a
    clients: 10
  - name: b
    arrival: { rate: 10/s }
    on_close:
      1000: stop
timeline:
  - { at: 1s, action: drop-all }
";

    #[test]
    fn finds_values_by_path() {
        assert_eq!(locate(DOC, "name"), Some((1, 7)));
        assert_eq!(locate(DOC, "groups[0].clients"), Some((4, 14)));
        assert_eq!(locate(DOC, "groups[1].arrival.rate"), Some((6, 22)));
        assert_eq!(locate(DOC, "groups[1].on_close.1000"), Some((8, 13)));
        assert_eq!(locate(DOC, "timeline[0].action"), Some((10, 23)));
    }

    #[test]
    fn missing_keys_point_at_the_parent() {
        // groups[0] has no `arrival`: the parent mapping starts at line 3, column 5.
        assert_eq!(locate(DOC, "groups[0].arrival.rate"), Some((3, 5)));
        assert_eq!(locate(DOC, "groups[5]"), Some((3, 3)));
    }
}
