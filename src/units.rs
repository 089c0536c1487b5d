//! Human units used in profiles and on the command line: `250ms`, `2000/s`, `4KiB`, `30%`.
//!
//! Each type parses from a string (`FromStr`, for clap) and deserializes from YAML (serde), and
//! both paths share one parser so a value means the same thing wherever it is written. Errors say
//! what was expected, so serde_yaml can prefix them with the file position.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written with a unit: `500us`, `250ms`, `1.5s`, `2m`, `1h`. A bare number is
/// rejected because `5` could mean seconds or milliseconds and guessing wrong ruins a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

/// An event rate: `2000/s`, `30/m`, `10/h`. Stored as events per second.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Rate(pub f64);

/// A size in bytes: `64`, `64B`, `4KiB`, `1MiB`, `4KB` (decimal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// A bandwidth: `64KiB/s`, `1MB/s`, `500B/s`. Stored as bytes per second.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct ByteRate(pub f64);

/// A share written as a percentage `30%` (or `0.3`). Stored as a fraction in 0..=1.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

impl Default for Percent {
    fn default() -> Self {
        Percent(1.0)
    }
}

fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == '_'))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let num: f64 = s[..end].replace('_', "").parse().ok()?;
    if !num.is_finite() {
        return None;
    }
    Some((num, s[end..].trim()))
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = || {
            format!(
                "invalid duration `{s}`, expected a number with a unit: us, ms, s, m or h (e.g. `250ms`, `30s`)"
            )
        };
        let (n, unit) = split_number(s).ok_or_else(expected)?;
        let secs = match unit {
            "us" | "µs" => n / 1e6,
            "ms" => n / 1e3,
            "s" => n,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            "" if n == 0.0 => 0.0,
            _ => return Err(expected()),
        };
        if secs > 365.0 * 86400.0 {
            return Err(format!("duration `{s}` is longer than a year"));
        }
        Ok(Dur(Duration::from_secs_f64(secs)))
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = || {
            format!(
                "invalid rate `{s}`, expected a count per unit of time such as `2000/s`, `30/m` or `10/h`"
            )
        };
        let (count, per) = s.split_once('/').ok_or_else(expected)?;
        let (n, rest) = split_number(count).ok_or_else(expected)?;
        if !rest.is_empty() {
            return Err(expected());
        }
        let per_secs = match per.trim() {
            "s" | "sec" => 1.0,
            "ms" => 1e-3,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(expected()),
        };
        let rate = n / per_secs;
        if rate <= 0.0 {
            return Err(format!("rate `{s}` must be greater than zero"));
        }
        Ok(Rate(rate))
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = || {
            format!(
                "invalid size `{s}`, expected bytes such as `64`, `64B`, `4KiB`, `1MiB` or `4KB`"
            )
        };
        let (n, unit) = split_number(s).ok_or_else(expected)?;
        let mult = match unit {
            "" | "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "KB" | "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            _ => return Err(expected()),
        };
        let bytes = n * mult;
        if bytes.fract() != 0.0 {
            return Err(format!("size `{s}` is not a whole number of bytes"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl FromStr for ByteRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = || {
            format!(
                "invalid bandwidth `{s}`, expected bytes per second such as `64KiB/s` or `1MB/s`"
            )
        };
        let (size, per) = s.split_once('/').ok_or_else(expected)?;
        let bytes = size.trim().parse::<ByteSize>().map_err(|_| expected())?.0 as f64;
        let secs = match per.trim() {
            "s" | "sec" => 1.0,
            "ms" => 1e-3,
            "m" | "min" => 60.0,
            _ => return Err(expected()),
        };
        if bytes <= 0.0 {
            return Err(format!("bandwidth `{s}` must be greater than zero"));
        }
        Ok(ByteRate(bytes / secs))
    }
}

impl FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected =
            || format!("invalid share `{s}`, expected a percentage from 0% to 100% (e.g. `30%`)");
        let t = s.trim();
        let frac = if let Some(p) = t.strip_suffix('%') {
            let (n, rest) = split_number(p).ok_or_else(expected)?;
            if !rest.is_empty() {
                return Err(expected());
            }
            n / 100.0
        } else {
            let (n, rest) = split_number(t).ok_or_else(expected)?;
            if !rest.is_empty() {
                return Err(expected());
            }
            n
        };
        if !(0.0..=1.0).contains(&frac) {
            return Err(expected());
        }
        Ok(Percent(frac))
    }
}

/// One visitor for all four types: YAML may hand us a string (`250ms`) or, for sizes and
/// shares, a plain number (`64`, `0.3`).
struct UnitVisitor<T>(std::marker::PhantomData<T>, &'static str);

impl<T: FromStr<Err = String>> Visitor<'_> for UnitVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

macro_rules! serde_unit {
    ($t:ty, $expecting:expr) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(UnitVisitor::<$t>(std::marker::PhantomData, $expecting))
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

serde_unit!(Dur, "a duration with a unit such as `250ms` or `30s`");
serde_unit!(Rate, "a rate such as `2000/s`");
serde_unit!(ByteSize, "a size such as `64`, `4KiB` or `1MiB`");
serde_unit!(Percent, "a percentage such as `30%`");
serde_unit!(ByteRate, "a bandwidth such as `64KiB/s`");

/// The JSON Schema of each unit, for `wsstorm schema`: the parser above as a pattern, so an
/// editor flags `30` or `10/sec/s` as you type. The patterns are a little looser than the
/// parsers (`1.2.3ms` passes): the schema must never refuse what a profile may say.
mod schema {
    use std::borrow::Cow;

    use schemars::{JsonSchema, Schema, SchemaGenerator};
    use serde_json::{Value, json};

    use super::{ByteRate, ByteSize, Dur, Percent, Rate};

    /// A number as `split_number` reads it: digits, dots and `_` separators.
    const NUM: &str = r"[0-9._]*[0-9][0-9._]*";
    const SIZE_UNIT: &str = "(?:B|KiB|MiB|GiB|KB|kB|MB|GB)";

    /// A string matching `pattern` (with whitespace around it), or, when `number` is given,
    /// a YAML number as that schema says.
    fn unit(pattern: String, description: &str, examples: Value, number: Option<Value>) -> Schema {
        let text = json!({ "type": "string", "pattern": format!(r"^\s*{pattern}\s*$") });
        let mut schema = match number {
            None => text,
            Some(number) => json!({ "anyOf": [text, number] }),
        };
        schema["description"] = description.into();
        schema["examples"] = examples;
        Schema::try_from(schema).expect("an object is a schema")
    }

    macro_rules! named {
        ($t:ident, $name:literal, $schema:expr) => {
            impl JsonSchema for $t {
                fn schema_name() -> Cow<'static, str> {
                    $name.into()
                }
                fn json_schema(_: &mut SchemaGenerator) -> Schema {
                    $schema
                }
            }
        };
    }

    named!(
        Dur,
        "Duration",
        unit(
            format!(r"(?:{NUM}\s*(?:us|µs|ms|s|m|min|h)|[0._]+)"),
            "A duration with a unit: us, ms, s, m (or min) or h, e.g. `250ms`, `1.5s`, `2m`. \
             A bare number is refused (seconds or milliseconds?), except 0.",
            json!(["250ms", "30s", "2m"]),
            Some(json!({ "const": 0 })),
        )
    );
    named!(
        Rate,
        "Rate",
        unit(
            format!(r"{NUM}\s*/\s*(?:s|sec|ms|m|min|h)"),
            "A count per unit of time, greater than zero: `2000/s`, `30/m`, `10/h`.",
            json!(["2000/s", "30/m", "10/h"]),
            None,
        )
    );
    named!(
        ByteSize,
        "ByteSize",
        unit(
            format!(r"{NUM}\s*{SIZE_UNIT}?"),
            "A whole number of bytes, bare or with a unit: `64`, `64B`, `4KiB`, `1MiB`, `4KB` \
             (KB, MB and GB are decimal).",
            json!(["64", "4KiB", "1MiB"]),
            Some(json!({ "type": "integer", "minimum": 0 })),
        )
    );
    named!(
        ByteRate,
        "ByteRate",
        unit(
            format!(r"{NUM}\s*{SIZE_UNIT}?\s*/\s*(?:s|sec|ms|m|min)"),
            "Bytes per unit of time, greater than zero: `64KiB/s`, `1MB/s`, `500B/s`.",
            json!(["64KiB/s", "1MB/s"]),
            None,
        )
    );
    named!(
        Percent,
        "Percent",
        unit(
            format!(r"{NUM}\s*%?"),
            "A share from 0% to 100%: `30%`, or a fraction from 0 to 1 (`0.3`).",
            json!(["30%", "100%"]),
            Some(json!({ "type": "number", "minimum": 0, "maximum": 1 })),
        )
    );
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let us = self.0.as_micros();
        if us == 0 {
            write!(f, "0s")
        } else if us.is_multiple_of(3_600_000_000) {
            write!(f, "{}h", us / 3_600_000_000)
        } else if us.is_multiple_of(60_000_000) {
            write!(f, "{}m", us / 60_000_000)
        } else if us.is_multiple_of(1_000_000) {
            write!(f, "{}s", us / 1_000_000)
        } else if us.is_multiple_of(1000) {
            write!(f, "{}ms", us / 1000)
        } else {
            write!(f, "{us}us")
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/s", self.0)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1024 && b.is_multiple_of(1024) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/s", ByteSize(self.0.round() as u64))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}%", self.0 * 100.0)
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Duration {
        d.0
    }
}

impl Rate {
    /// Time between two events at this rate.
    pub fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.0)
    }
}

/// Microseconds as milliseconds for people: three significant figures or so (`0.28`, `18.6`,
/// `102`), as every table and chart label of wsstorm writes them.
pub fn ms_text(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            "250ms".parse::<Dur>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "1.5s".parse::<Dur>().unwrap().0,
            Duration::from_millis(1500)
        );
        assert_eq!("2m".parse::<Dur>().unwrap().0, Duration::from_secs(120));
        assert_eq!("1h".parse::<Dur>().unwrap().0, Duration::from_secs(3600));
        assert_eq!(
            "500us".parse::<Dur>().unwrap().0,
            Duration::from_micros(500)
        );
        assert_eq!("0".parse::<Dur>().unwrap().0, Duration::ZERO);
        assert!(
            "5".parse::<Dur>()
                .unwrap_err()
                .contains("expected a number with a unit")
        );
        assert!("5 parsecs".parse::<Dur>().is_err());
        assert!("ms".parse::<Dur>().is_err());
        assert!("-1s".parse::<Dur>().is_err());
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!(Dur(Duration::from_secs(120)).to_string(), "2m");
    }

    #[test]
    fn rates() {
        assert_eq!("2000/s".parse::<Rate>().unwrap().0, 2000.0);
        assert_eq!("30/m".parse::<Rate>().unwrap().0, 0.5);
        assert_eq!("3600/h".parse::<Rate>().unwrap().0, 1.0);
        assert_eq!("2/ms".parse::<Rate>().unwrap().0, 2000.0);
        assert!("2000".parse::<Rate>().is_err());
        assert!(
            "0/s"
                .parse::<Rate>()
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!("x/s".parse::<Rate>().is_err());
        assert_eq!(
            "4/s".parse::<Rate>().unwrap().interval(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!("64".parse::<ByteSize>().unwrap().0, 64);
        assert_eq!("64B".parse::<ByteSize>().unwrap().0, 64);
        assert_eq!("4KiB".parse::<ByteSize>().unwrap().0, 4096);
        assert_eq!("4KB".parse::<ByteSize>().unwrap().0, 4000);
        assert_eq!("1MiB".parse::<ByteSize>().unwrap().0, 1 << 20);
        assert!("1.5B".parse::<ByteSize>().is_err());
        assert!("4kib".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(4096).to_string(), "4KiB");
    }

    #[test]
    fn byte_rates() {
        assert_eq!("64KiB/s".parse::<ByteRate>().unwrap().0, 65536.0);
        assert_eq!("1MB/s".parse::<ByteRate>().unwrap().0, 1e6);
        assert_eq!("1KiB/ms".parse::<ByteRate>().unwrap().0, 1024e3);
        assert!("64KiB".parse::<ByteRate>().is_err());
        assert!("0B/s".parse::<ByteRate>().is_err());
        assert_eq!(ByteRate(65536.0).to_string(), "64KiB/s");
    }

    #[test]
    fn percents() {
        assert_eq!("30%".parse::<Percent>().unwrap().0, 0.3);
        assert_eq!("100%".parse::<Percent>().unwrap().0, 1.0);
        assert_eq!("0.25".parse::<Percent>().unwrap().0, 0.25);
        assert!("130%".parse::<Percent>().is_err());
        assert!("abc".parse::<Percent>().is_err());
    }
}
