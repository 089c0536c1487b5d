//! HTML reports in a real headless browser (see [`crate::peers::browser`]), the `report` and
//! `compare` commands, and what happens with results.json from elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use wsstorm::report::compare::{CompareRow, Comparison};
use wsstorm::results::Results;

use crate::peers;

fn wsstorm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wsstorm"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What headless Chromium saw when it opened `html`; `None` when there is no browser here
/// (the test named `test` is then skipped, loudly).
fn browse(html: &Path, test: &str) -> Option<Value> {
    let browser = peers::browser(test)?;
    let out = Command::new(peers::python())
        .arg(root().join("tests/peers/browser_check.py"))
        .arg(browser)
        .arg(html)
        .output()
        .expect("the peers' python runs");
    assert!(
        out.status.success(),
        "browser check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("browser check prints JSON"))
}

/// No console errors, no request but the file itself, and every chart drawn.
fn assert_clean_page(page: &Value, html: &Path, min_charts: usize) {
    assert_eq!(page["loaded"], true);
    assert_eq!(
        page["console"],
        serde_json::json!([]),
        "console: {}",
        page["console"]
    );
    let requests: Vec<&str> = page["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let own = format!("file://{}", html.canonicalize().unwrap().display());
    assert!(
        requests.iter().all(|r| *r == own),
        "the page asked for more than itself: {requests:?}"
    );
    let svgs = page["svgs"].as_array().unwrap();
    assert!(svgs.len() >= min_charts, "{} charts", svgs.len());
    for svg in svgs {
        assert!(svg["drawn"].as_u64().unwrap() > 0, "an empty chart: {svg}");
        assert!(
            svg["width"].as_f64().unwrap() > 100.0,
            "a chart not laid out: {svg}"
        );
    }
    let lines: u64 = svgs.iter().map(|s| s["points"].as_u64().unwrap()).sum();
    assert!(lines > 100, "the line charts have data points: {lines}");
}

/// Every number the page labels with a results.json field (`data-key`) equals that field;
/// returns how many there were.
fn assert_values_are_the_results(page: &Value, raw: &Value) -> usize {
    let values = page["values"].as_object().unwrap();
    let mut checked = 0;
    for (key, shown) in values {
        let mut v = raw;
        for part in key.split('.') {
            v = match v {
                Value::Array(a) => &a[part.parse::<usize>().unwrap()],
                _ => &v[part],
            };
        }
        let shown = shown.as_str().unwrap();
        match v {
            Value::Number(n) if key.contains("latency_us.") && !key.ends_with(".count") => {
                // Latency shown in ms with 2-3 significant digits.
                let us = n.as_f64().unwrap();
                let ms: f64 = shown.parse().unwrap();
                assert!(
                    (ms * 1000.0 - us).abs() <= us * 0.01 + 10.0,
                    "{key}: {shown} vs {us}"
                );
            }
            Value::Number(n) if n.is_f64() => {
                let x: f64 = shown.parse().unwrap_or(f64::NAN);
                assert_eq!(x, n.as_f64().unwrap(), "{key}: {shown}");
            }
            Value::Number(n) => assert_eq!(shown, n.to_string(), "{key}"),
            Value::String(s) => assert_eq!(shown, s, "{key}"),
            Value::Null if key.starts_with("storm.recovery_ms") => assert_eq!(shown, "never"),
            other => panic!("{key}: page shows {shown}, results has {other}"),
        }
        checked += 1;
    }
    checked
}

const STORM: &str = "
name: report-storm
description: drop, reconnect, echo — something in every section
duration: 4s
target: embedded
groups:
  - name: echo
    clients: 120
    arrival: { rate: 1000/s }
    behaviour:
      send: { every: 200ms, bytes: 64 }
      reconnect: { backoff: { strategy: full-jitter, base: 100ms, cap: 500ms } }
  - name: quitters
    clients: 30
    arrival: { rate: 1000/s }
    behaviour:
      reconnect: { on_close: { 1012: stop } }
timeline:
  - { at: 1500ms, action: drop-all, mode: close, code: 1012 }
";

#[test]
fn a_run_report_opens_offline_and_shows_the_results() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("storm.yaml");
    std::fs::write(&profile, STORM).unwrap();
    let out = dir.path().join("out");
    let o = wsstorm()
        .arg("run")
        .arg(&profile)
        .args(["--no-tui", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("report.html"));
    let html = out.join("report.html");
    let r = Results::read(&out.join("results.json")).unwrap();
    let raw: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();

    let Some(page) = browse(
        &html,
        "report::a_run_report_opens_offline_and_shows_the_results",
    ) else {
        return;
    };
    assert_clean_page(&page, &html, 10);
    assert!(page["title"].as_str().unwrap().contains("report-storm"));

    // Every number the page labels with a results.json field equals that field.
    let values = page["values"].as_object().unwrap();
    assert!(values.len() > 40, "{} labelled values", values.len());
    let checked = assert_values_are_the_results(&page, &raw);
    assert!(checked > 40);
    // The key figures are all there.
    for key in [
        "totals.opened",
        "totals.close_codes.1012",
        "totals.gave_up",
        "storm.losses",
        "storm.recovery_ms.p99",
        "latency_us.rtt.p99",
        "totals.messages.received",
        "groups.1.totals.gave_up",
        "server.upgraded",
    ] {
        assert!(values.contains_key(key), "missing {key}");
    }
    assert_eq!(
        values["totals.close_codes.1012"],
        r.totals.close_codes["1012"].to_string()
    );
    assert_eq!(values["groups.1.totals.gave_up"], "30");

    // `wsstorm report` renders the same page from the results alone.
    let again = dir.path().join("again.html");
    let o = wsstorm()
        .arg("report")
        .arg(out.join("results.json"))
        .arg("-o")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&again).unwrap(),
        std::fs::read_to_string(&html).unwrap()
    );
}

#[test]
fn foreign_or_old_results_give_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("old.json");
    std::fs::write(
        &missing,
        r#"{"schema":"wsstorm.results/1","name":"x","seed":1,"started_at":"t","duration_ms":1}"#,
    )
    .unwrap();
    let o = wsstorm().arg("report").arg(&missing).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("not a wsstorm results file"), "{err}");
    assert!(err.contains("missing field"), "{err}");

    let foreign = dir.path().join("k6.json");
    std::fs::write(&foreign, r#"{"metrics":{"ws_sessions":{}}}"#).unwrap();
    let o = wsstorm().arg("report").arg(&foreign).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing field `schema`"));

    let mut r: Value = serde_json::from_str(&std::fs::read_to_string(&missing).unwrap()).unwrap();
    r["schema"] = "wsstorm.results/9".into();
    std::fs::write(&missing, r.to_string()).unwrap();
    let o = wsstorm().arg("report").arg(&missing).output().unwrap();
    assert_eq!(o.status.code(), Some(2));

    let o = wsstorm()
        .args(["report", "/nonexistent/results.json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/results.json"));
}

#[test]
fn compare_runs_each_strategy_and_tabulates_their_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let o = wsstorm()
        .arg("compare")
        .arg(root().join("profiles/synchronized-retry.yaml"))
        .args([
            "--strategy",
            "fixed",
            "--strategy",
            "full-jitter",
            "--strategy",
            "exponential",
            "--clients",
            "100",
            "--duration",
            "8s",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("full-jitter"), "{stdout}");

    let c: Comparison =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(c.schema, "wsstorm.compare/1");
    assert_eq!(c.runs.len(), 3, "one result per strategy");
    let mut ranked = c.ranking.clone();
    ranked.sort();
    assert_eq!(
        ranked,
        ["exponential", "fixed", "full-jitter"],
        "every strategy ranked once"
    );
    assert!(
        c.verdict
            .starts_with(&format!("{} ranks first", c.ranking[0])),
        "{}",
        c.verdict
    );
    assert!(
        stdout.contains("ranks first"),
        "the verdict comes first: {stdout}"
    );
    for run in &c.runs {
        assert_eq!(
            run.row.lost,
            run.row.back + run.row.not_back,
            "{}",
            run.strategy
        );
        if run.row.back > 0 {
            assert!(run.row.wasted_per_back.is_some() && run.row.attempts_per_back.is_some());
        }
    }
    assert_eq!(
        c.runs
            .iter()
            .map(|r| r.strategy.as_str())
            .collect::<Vec<_>>(),
        ["fixed", "full-jitter", "exponential"]
    );
    let mut results = Vec::new();
    for run in &c.runs {
        let r = Results::read(&out.join(&run.results)).unwrap();
        assert_eq!(run.row, CompareRow::from_results(&r), "{}", run.strategy);
        assert_eq!(r.seed, c.seed, "same seed for every strategy");
        assert!(r.profile.contains(&format!("strategy = {}", run.strategy)));
        assert!(out.join(run.strategy.as_str()).join("report.html").exists());
        results.push(r);
    }
    // Lock-step retry piles up within 100 ms: fixed puts every client in one interval, full
    // jitter spreads them.
    let peak = |i: usize| c.runs[i].row.peak_retries_per_100ms;
    assert!(peak(0) >= 90, "fixed: {}", peak(0));
    assert!(
        peak(0) > 2 * peak(1),
        "fixed {} vs full-jitter {}",
        peak(0),
        peak(1)
    );
    assert!(c.winners["peak_retries_per_100ms"].contains(&"full-jitter".to_string()));

    // The page: clean, every strategy drawn on the same axes, numbers equal compare.json.
    let html = out.join("compare.html");
    let Some(page) = browse(
        &html,
        "report::compare_runs_each_strategy_and_tabulates_their_results",
    ) else {
        return;
    };
    assert_clean_page(&page, &html, 3);
    let values = page["values"].as_object().unwrap();
    for (i, run) in c.runs.iter().enumerate() {
        assert_eq!(
            values[&format!("runs.{i}.row.total_attempts")],
            run.row.total_attempts.to_string()
        );
        assert_eq!(
            values[&format!("runs.{i}.row.peak_attempts_per_s")],
            run.row.peak_attempts_per_s.to_string()
        );
        assert_eq!(
            values[&format!("runs.{i}.row.gave_up")],
            run.row.gave_up.to_string()
        );
    }
    let html_text = std::fs::read_to_string(&html).unwrap();
    assert_eq!(
        html_text.matches("<polyline").count(),
        3 * 3,
        "three charts, each with one curve per strategy"
    );
}

#[test]
fn compare_without_strategies_explains_itself() {
    let o = wsstorm()
        .arg("compare")
        .arg(root().join("profiles/quickstart.yaml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give --strategy"));
    let o = wsstorm()
        .arg("compare")
        .arg(root().join("profiles/quickstart.yaml"))
        .args(["--strategy", "fibonacci"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown strategy `fibonacci`"));
}

/// Two groups hold a conversation with the embedded (echo) target: the summary has its steps,
/// the report its section, all groups by name and then each group's, every figure as
/// results.json has it.
#[test]
fn a_conversation_run_reports_its_steps() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("conv.yaml");
    std::fs::write(
        &profile,
        r#"
name: report-conv
duration: 2s
target: embedded
groups:
  - name: askers
    clients: 10
    arrival: { rate: 1000/s }
    behaviour:
      conversation:
        steps:
          - send: { json: { type: hello, id: "{{id}}" } }
          - expect: { name: hello, match: { json: { "$.type": hello } }, id: "$.id", timeout: 2s }
        every:
          - name: req
            every: 50ms
            send: { json: { type: req, id: "{{id}}" } }
            reply: { match: { json: { "$.type": req } }, id: "$.id", timeout: 1s }
  - name: greeters
    clients: 5
    arrival: { rate: 1000/s }
    behaviour:
      conversation:
        steps:
          - send: { json: { type: hello, id: "{{id}}" } }
          - expect: { name: hello, match: { json: { "$.type": hello } }, id: "$.id", timeout: 2s }
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = wsstorm()
        .arg("run")
        .arg(&profile)
        .args(["--no-tui", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = Results::read(&out.join("results.json")).unwrap();
    let c = r.conversation.as_ref().expect("a conversation section");
    assert_eq!(c.steps["hello"].counts.matched, 15, "both groups' hellos");
    let req = &c.steps["req"].counts;
    let stdout = String::from_utf8_lossy(&o.stdout);
    for expect in [
        "  steps             sent  matched timeouts abandoned   errors   p50 ms   p99 ms\n"
            .to_string(),
        "  hello               15       15        0         0        0 ".to_string(),
        format!(
            "  {:<12} {:>9} {:>8} {:>8} {:>9} ",
            "req", req.sent, req.matched, req.timeouts, req.abandoned
        ),
    ] {
        assert!(stdout.contains(&expect), "missing {expect:?} in:\n{stdout}");
    }
    let html = out.join("report.html");
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.contains(r#"<h2 id="conversation">Conversation</h2>"#));
    assert!(text.contains("<h3>Group greeters</h3>"));

    let Some(page) = browse(&html, "report::a_conversation_run_reports_its_steps") else {
        return;
    };
    assert_clean_page(&page, &html, 6);
    let raw: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_values_are_the_results(&page, &raw);
    let values = page["values"].as_object().unwrap();
    for key in [
        "conversation.steps.req.matched",
        "conversation.steps.req.timeouts",
        "conversation.steps.req.latency_us.p99",
        "conversation.steps.hello.matched",
        "conversation.app_errors.count",
        "groups.0.conversation.steps.req.matched",
        "groups.1.conversation.steps.hello.matched",
    ] {
        assert!(values.contains_key(key), "missing {key}");
    }
    assert_eq!(values["groups.1.conversation.steps.hello.matched"], "5");
}
