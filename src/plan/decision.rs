//! What a client does after a close or a refused handshake: a table of close codes (or HTTP
//! statuses) to decisions, built once per group from the profile's `on_close` / `on_status`.

use serde::{Deserialize, Serialize};

use crate::profile::Decision;

/// A set of close codes or HTTP statuses a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodeSet {
    Exact(u16),
    /// Inclusive range, e.g. `4000-4999` or the class `5xx`.
    Range(u16, u16),
}

impl CodeSet {
    pub fn parse_close(key: &str) -> Option<CodeSet> {
        Self::parse(key, 1000, 4999, false)
    }

    pub fn parse_status(key: &str) -> Option<CodeSet> {
        Self::parse(key, 100, 599, true)
    }

    fn parse(key: &str, lo: u16, hi: u16, classes: bool) -> Option<CodeSet> {
        let key = key.trim();
        if key == "default" {
            return Some(CodeSet::Range(0, u16::MAX));
        }
        let ok = |c: u16| (lo..=hi).contains(&c);
        if classes
            && let Some(d) = key.strip_suffix("xx")
            && let Ok(h) = d.parse::<u16>()
            && ok(h * 100)
        {
            return Some(CodeSet::Range(h * 100, h * 100 + 99));
        }
        if let Some((a, b)) = key.split_once('-') {
            let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            return (ok(a) && ok(b) && a <= b).then_some(CodeSet::Range(a, b));
        }
        let c = key.parse().ok()?;
        ok(c).then_some(CodeSet::Exact(c))
    }

    fn width(self) -> u32 {
        match self {
            CodeSet::Exact(_) => 1,
            CodeSet::Range(a, b) => u32::from(b - a) + 1,
        }
    }

    fn contains(self, code: u16) -> bool {
        match self {
            CodeSet::Exact(c) => c == code,
            CodeSet::Range(a, b) => (a..=b).contains(&code),
        }
    }
}

/// Per-code decisions; the narrowest matching rule wins, so `1000: stop` beats `1000-1999: retry`
/// beats `default`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DecisionTable {
    rules: Vec<(CodeSet, Decision)>,
}

impl DecisionTable {
    /// With no rules every code retries: that is what a typical reconnecting client does.
    pub fn new(mut rules: Vec<(CodeSet, Decision)>) -> Self {
        rules.sort_by_key(|(s, _)| s.width());
        DecisionTable { rules }
    }

    pub fn decide(&self, code: u16) -> Decision {
        self.find(code).unwrap_or(Decision::Retry)
    }

    fn find(&self, code: u16) -> Option<Decision> {
        self.rules
            .iter()
            .find(|(s, _)| s.contains(code))
            .map(|(_, d)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rules: &[(&str, Decision)], close: bool) -> DecisionTable {
        let parse = |k: &str| {
            if close {
                CodeSet::parse_close(k)
            } else {
                CodeSet::parse_status(k)
            }
        };
        DecisionTable::new(rules.iter().map(|(k, d)| (parse(k).unwrap(), *d)).collect())
    }

    #[test]
    fn the_narrowest_rule_wins() {
        let t = table(
            &[
                ("default", Decision::Stop),
                ("1000-1999", Decision::Retry),
                ("1008", Decision::Stop),
            ],
            true,
        );
        assert_eq!(t.decide(1006), Decision::Retry);
        assert_eq!(t.decide(1008), Decision::Stop);
        assert_eq!(t.decide(4001), Decision::Stop);
        assert_eq!(DecisionTable::default().decide(1000), Decision::Retry);

        let t = table(
            &[("5xx", Decision::Retry), ("default", Decision::Stop)],
            false,
        );
        assert_eq!(t.decide(503), Decision::Retry);
        assert_eq!(t.decide(401), Decision::Stop);
    }

    #[test]
    fn code_sets() {
        assert_eq!(CodeSet::parse_close("1000"), Some(CodeSet::Exact(1000)));
        assert_eq!(
            CodeSet::parse_close("4000-4999"),
            Some(CodeSet::Range(4000, 4999))
        );
        assert_eq!(CodeSet::parse_close("999"), None);
        assert_eq!(CodeSet::parse_close("5xx"), None);
        assert_eq!(CodeSet::parse_status("5xx"), Some(CodeSet::Range(500, 599)));
        assert_eq!(CodeSet::parse_status("4001"), None);
    }
}
