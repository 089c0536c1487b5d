//! `wsstorm schema` checked by a real JSON Schema validator: every profile the project ships
//! passes it, schema-level mistakes fail it, and on each spelling of a unit or a hand-parsed
//! form it says what the profile parser says. `wsstorm completions` offers what `--help` shows.

use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn wsstorm(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_wsstorm"))
        .args(args)
        .output()
        .expect("wsstorm runs");
    assert!(
        o.status.success(),
        "wsstorm {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("UTF-8 output")
}

/// The validator for what `wsstorm schema` prints, built once for all the tests here.
fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(&wsstorm(&["schema"])).expect("JSON");
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "the validator picks its draft from `$schema`"
        );
        jsonschema::validator_for(&schema).expect("a valid JSON Schema")
    })
}

/// A YAML profile as the JSON a schema validator reads.
fn as_json(yaml: &str) -> Value {
    serde_yaml_ng::from_str(yaml).expect("YAML")
}

/// Where the schema says `yaml` is wrong, as `instance path: message` lines (none when it fits).
fn schema_errors(yaml: &str) -> Vec<String> {
    let doc = as_json(yaml);
    validator()
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

use crate::common::{root, yaml_files};

#[test]
fn every_shipped_profile_and_bench_file_fits_the_schema() {
    let profiles = yaml_files(&root().join("profiles"));
    let bench = yaml_files(&root().join("bench"));
    assert!(profiles.len() >= 10, "{profiles:?}");
    assert!(!bench.is_empty());
    let misfits: Vec<String> = profiles
        .iter()
        .chain(&bench)
        .flat_map(|f| {
            let errors = schema_errors(&std::fs::read_to_string(f).unwrap());
            errors
                .into_iter()
                .map(move |e| format!("{}: {e}", f.display()))
        })
        .collect();
    assert!(misfits.is_empty(), "{}", misfits.join("\n"));
}

/// Broken profiles whose mistake is one of structure or type, each with where the schema
/// must see it. (The others in tests/broken are the plan's business: a zero client count,
/// a cap below the base, an action after the end.)
#[test]
fn schema_level_mistakes_are_refused_where_they_are() {
    let cases = [
        ("unknown-key.yaml", "/groups/0/behaviour"),
        ("wrong-type.yaml", "/groups/0"),
        (
            "bad-strategy.yaml",
            "/groups/0/behaviour/reconnect/backoff/strategy",
        ),
        ("bad-duration.yaml", "/duration"),
        ("missing-field.yaml", "/groups/0"),
    ];
    for (file, path) in cases {
        let yaml = std::fs::read_to_string(root().join("tests/broken").join(file)).unwrap();
        let errors = schema_errors(&yaml);
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{path}: "))),
            "{file}: expected an error at {path}, got {errors:#?}"
        );
    }
}

/// A small profile with one value in each place a test varies: `$NAME` is replaced by the
/// case's value, or by the default here.
const TEMPLATE: &str = "
name: t
duration: 10s
grace: $DUR
target: $TARGET
groups:
  - name: g
    clients: 1
    arrival: { rate: $RATE }
    read_buffer: $SIZE
    behaviour:
      reconnect:
        backoff: { strategy: $STRATEGY }
        on_close: { 1000: stop, default: $DECISION }
timeline:
  - { at: 1s, action: cut, mode: $MODE, share: $PERCENT, rate: $BYTERATE }
thresholds: [ $THRESHOLD ]
";

const DEFAULTS: [(&str, &str); 10] = [
    ("$DUR", "1s"),
    ("$TARGET", "embedded"),
    ("$RATE", "10/s"),
    ("$SIZE", "512"),
    ("$STRATEGY", "full-jitter"),
    ("$DECISION", "retry"),
    ("$MODE", "reset"),
    ("$PERCENT", "30%"),
    ("$BYTERATE", "1MB/s"),
    ("$THRESHOLD", "gave_up == 0"),
];

fn profile_with(slot: &str, value: &str) -> String {
    let mut yaml = TEMPLATE.replace(slot, value);
    for (name, default) in DEFAULTS {
        yaml = yaml.replace(name, default);
    }
    yaml
}

/// The schema's verdict on each spelling is the parser's (serde's, before the plan's checks).
/// Only spellings where they must agree: the unit patterns are a little looser than the
/// parsers (`130%` fits the pattern), never stricter.
#[test]
fn the_schema_accepts_what_the_parser_accepts() {
    let accepted: &[(&str, &[&str])] = &[
        (
            "$DUR",
            &[
                "250ms", "1.5s", "2m", "3min", "1h", "500us", "250 ms", "1_000ms", "0",
            ],
        ),
        ("$RATE", &["2000/s", "30/m", "10/h", "2/ms", "1.5/sec"]),
        (
            "$SIZE",
            &["64", "64B", "4KiB", "1MiB", "4KB", "4kB", "2GiB", "'128'"],
        ),
        ("$PERCENT", &["30%", "100%", "0.25", "1", "0", "'0.5'"]),
        (
            "$BYTERATE",
            &["64KiB/s", "1MB/s", "500B/s", "1KiB/ms", "100/s"],
        ),
        ("$STRATEGY", &["none", "decorrelated-jitter", "exponential"]),
        ("$MODE", &["abrupt", "fin", "close"]),
        (
            "$DECISION",
            &["stop", "refresh-auth", "{ retry-after: 2s }"],
        ),
        (
            "$THRESHOLD",
            &[
                "'rtt.p99 < 50ms'",
                "{ expr: gave_up == 0, abort_on_fail: true, delay: 5s }",
            ],
        ),
        (
            "$TARGET",
            &[
                "ws://127.0.0.1:9001/ws",
                "{ url: embedded, via_proxy: true, server: { accept_rate: 100/s } }",
            ],
        ),
    ];
    let refused: &[(&str, &[&str])] = &[
        ("$DUR", &["30", "5 parsecs", "ms", "-1s", "1d", "[1s]"]),
        ("$RATE", &["2000", "x/s", "10/d", "10"]),
        ("$SIZE", &["4kib", "-1", "1.5", "4 KiBs", "true"]),
        ("$PERCENT", &["abc", "-0.1", "1.5", "30%%"]),
        ("$BYTERATE", &["64KiB", "fast", "1MB/h"]),
        ("$STRATEGY", &["fibonacci", "full_jitter"]),
        ("$MODE", &["rst"]),
        (
            "$DECISION",
            &[
                "restart",
                "{ retry-after: 2s, also: 1 }",
                "{ retry_after: 2s }",
                "{ retry-after: 2 }",
            ],
        ),
        (
            "$THRESHOLD",
            &[
                "{ expr: gave_up == 0, abort_on_fial: true }",
                "{ abort_on_fail: true }",
            ],
        ),
        (
            "$TARGET",
            &[
                "{ url: embedded, proxy_via: true }",
                "{ server: {} }",
                "[embedded]",
            ],
        ),
    ];
    let mut disagreements = Vec::new();
    for (cases, expected) in [(accepted, true), (refused, false)] {
        for (slot, values) in cases {
            for value in *values {
                let yaml = profile_with(slot, value);
                let parser = wsstorm::profile::parse(&yaml, "case.yaml").map(|_| ());
                let schema = schema_errors(&yaml);
                if parser.is_ok() != expected || schema.is_empty() != expected {
                    disagreements.push(format!(
                        "{slot} = {value}: expected {}, parser {parser:?}, schema {schema:?}",
                        if expected { "accepted" } else { "refused" }
                    ));
                }
            }
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[test]
fn the_schema_carries_docs_and_defaults() {
    let schema: Value = serde_json::from_str(&wsstorm(&["schema"])).unwrap();
    let defs = &schema["$defs"];
    let backoff = &defs["BackoffSettings"]["properties"];
    assert_eq!(backoff["base"]["default"], "100ms");
    assert_eq!(defs["Group"]["additionalProperties"], false);
    let on_close = defs["Reconnect"]["properties"]["on_close"]["description"]
        .as_str()
        .unwrap();
    assert!(on_close.starts_with("Per close code"), "{on_close}");
    assert!(!on_close.contains('\n'), "doc lines are joined: {on_close}");
    let duration = defs["Duration"]["description"].as_str().unwrap();
    assert!(duration.contains("250ms"), "{duration}");
}

#[test]
fn completions_offer_the_visible_subcommands() {
    let bash = wsstorm(&["completions", "bash"]);
    let top = bash
        .lines()
        .find(|l| l.contains("opts=\"") && l.contains("--version"))
        .expect("the top-level word list");
    for sub in ["run", "compare", "capacity", "validate", "schema"] {
        assert!(top.split_whitespace().any(|w| w == sub), "{sub}: {top}");
    }
    // Started by `wsstorm run` itself, hidden from --help and so from Tab.
    assert!(!top.contains("worker"), "{top}");
    for shell in ["zsh", "fish"] {
        assert!(wsstorm(&["completions", shell]).contains("capacity"));
    }
}
