//! Thresholds and capacity search through the binary: exit codes, what the failure names, and
//! the knee a search finds against an embedded target of known capacity.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wsstorm::results::capacity::{Capacity, Limit};
use wsstorm::results::{EndReason, Results};

fn wsstorm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wsstorm"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wsstorm-thr-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// 20 clients echoing 64 bytes every 100 ms for 3 s against the embedded target.
const ECHO: &str = "\
name: thresholds
duration: 3s
target: embedded
groups:
  - name: g
    clients: 20
    arrival: { rate: 100/s }
    behaviour:
      send: { every: 100ms, bytes: 64 }
";

fn run(dir: &Path, profile: &str, args: &[&str]) -> (Output, Results) {
    let file = dir.join("p.yaml");
    std::fs::write(&file, profile).unwrap();
    let out = dir.join("out");
    let o = wsstorm()
        .arg("run")
        .arg(&file)
        .arg("--no-tui")
        .arg("--out")
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    let r =
        Results::read(&out.join("results.json")).unwrap_or_else(|e| panic!("{e}: {}", text(&o).1));
    (o, r)
}

#[test]
fn passing_thresholds_exit_0_and_are_recorded() {
    let dir = tmp("pass");
    let profile = format!("{ECHO}thresholds:\n  - rtt.p99 < 5s\n  - gave_up == 0\n");
    let (o, r) = run(&dir, &profile, &["--threshold", "errors.rate < 1%"]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(r.thresholds.len(), 3);
    assert!(r.thresholds.iter().all(|t| t.passed), "{:?}", r.thresholds);
    assert_eq!(r.thresholds[2].expression, "errors.rate < 1%");
    assert_eq!(r.thresholds[2].measured, Some(0.0));
    assert_eq!(r.thresholds[1].measured, Some(0.0));
    // The rtt p99 the threshold saw is the one in the results.
    assert_eq!(r.thresholds[0].measured, Some(r.latency_us.rtt.p99 as f64));
    assert!(stdout.contains("thresholds   all 3 passed"), "{stdout}");
    let html = std::fs::read_to_string(dir.join("out/report.html")).unwrap();
    assert!(html.contains("Passed: all 3 thresholds held."));
}

#[test]
fn a_failing_threshold_exits_1_and_names_the_metric() {
    let dir = tmp("fail");
    // Every echo takes longer than a microsecond, and all 20 clients connect.
    let (o, r) = run(
        &dir,
        ECHO,
        &[
            "--threshold",
            "rtt.p50 < 1us",
            "--threshold",
            "opened == 20",
        ],
    );
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(r.end_reason, EndReason::Completed);
    assert!(!r.thresholds[0].passed);
    assert!(r.thresholds[1].passed, "{:?}", r.thresholds[1]);
    assert!(stdout.contains("1 of 2 FAILED"), "{stdout}");
    assert!(stdout.contains("FAIL rtt.p50 < 1us"), "{stdout}");
    let html = std::fs::read_to_string(dir.join("out/report.html")).unwrap();
    assert!(html.contains("FAILED: 1 of 2 thresholds did not hold."));
}

#[test]
fn abort_on_fail_stops_the_run_early() {
    let dir = tmp("abort");
    // The target answers every handshake 503: errors from the first second on.
    let profile = "\
name: abort
duration: 30s
target: { url: embedded, server: { accept_rate: 1/h, accept_burst: 1 } }
groups:
  - name: g
    clients: 50
    arrival: { rate: 100/s }
thresholds:
  - { expr: errors.rate < 1%, abort_on_fail: true, delay: 1s }
  - opened >= 0
";
    let (o, r) = run(&dir, profile, &[]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(r.end_reason, EndReason::Aborted);
    assert!(r.duration_ms < 10_000, "ran {} ms", r.duration_ms);
    let t = &r.thresholds[0];
    assert!(!t.passed && t.abort_on_fail);
    let at = t.aborted_at_ms.expect("the threshold that stopped the run");
    assert!((1000..10_000).contains(&at), "aborted at {at} ms");
    assert!(r.thresholds[1].passed);
    assert!(stdout.contains("stopped the run at"), "{stdout}");
}

#[test]
fn bad_threshold_on_the_command_line_is_exit_2_with_a_caret() {
    let dir = tmp("bad");
    let file = dir.join("p.yaml");
    std::fs::write(&file, ECHO).unwrap();
    let o = wsstorm()
        .arg("run")
        .arg(&file)
        .args(["--no-tui", "--threshold", "errors.rate < 0.01"])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("errors.rate < 0.01"), "{stderr}");
    assert!(
        stderr.contains("expected a percentage like `1%`"),
        "{stderr}"
    );
    // The caret sits under the value, 14 characters in.
    let caret_line = stderr.lines().find(|l| l.contains('^')).unwrap();
    let expr_line = stderr
        .lines()
        .find(|l| l.trim() == "errors.rate < 0.01")
        .unwrap();
    assert_eq!(
        caret_line.find('^').unwrap(),
        expr_line.find("errors").unwrap() + 14,
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn capacity_search_finds_the_knee_of_the_accept_rate() {
    let dir = tmp("capacity");
    // The target admits 250 handshakes/s (burst 50) and answers the rest 503. Steps of 100
    // new connections/s: 200/s fits, 300/s does not.
    let profile = "\
name: knee
duration: 10s
target: { url: embedded, server: { accept_rate: 250/s, accept_burst: 50 } }
groups:
  - name: g
    clients: 10
    arrival: { rate: 100/s }
    behaviour:
      reconnect: { on_status: { 503: stop } }
capacity:
  vary: connection-rate
  start: 100
  step: 100
  max: 600
  hold: 3s
  expect: 400
thresholds:
  - handshake_status.503 == 0
";
    let file = dir.join("p.yaml");
    std::fs::write(&file, profile).unwrap();
    let out = dir.join("out");
    let o = wsstorm()
        .arg("capacity")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&o);
    // `expect: 400` is not met: exit 1, the CI gate.
    assert_eq!(o.status.code(), Some(1), "{stdout}{stderr}");
    let c: Capacity =
        serde_json::from_str(&std::fs::read_to_string(out.join("capacity.json")).unwrap()).unwrap();
    assert_eq!(c.steps.len(), 3, "{stdout}");
    assert_eq!(c.last_good, Some(200.0), "{}", c.verdict);
    assert_eq!(c.first_bad, Some(300.0), "{}", c.verdict);
    assert_eq!(c.limit, Limit::Server, "{}", c.verdict);
    assert_eq!(c.expect_met, Some(false));
    assert!(
        c.verdict.contains("handshake_status.503 == 0"),
        "{}",
        c.verdict
    );
    assert!(c.verdict.contains("HTTP 503"), "{}", c.verdict);
    // Each step is a run of its own, with the load it was given.
    for s in &c.steps {
        let r = Results::read(&out.join(&s.results)).unwrap();
        assert_eq!(r.totals.clients, (s.load * 3.0) as u64);
        assert_eq!(r.thresholds, s.thresholds);
        let rejected = r.totals.handshake_status.get("503").copied().unwrap_or(0);
        assert_eq!(s.passed, rejected == 0);
    }
    assert!(stdout.contains("broke at 300 connections/s"), "{stdout}");
    let html = std::fs::read_to_string(out.join("capacity.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("broke at 300"));
}
