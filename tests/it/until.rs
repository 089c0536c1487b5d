//! `--until recovered`: each run lasts until every client is connected or gave up, not the
//! profile's duration, at most `--max`; the results and the comparison say which it was.

use std::path::Path;
use std::process::{Command, Output};

use wsstorm::report::compare::Comparison;
use wsstorm::results::{EndReason, Results};

fn wsstorm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wsstorm"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// 50 clients lose their connections at 1s to a restart that refuses them for `down_for`;
/// no strategy can get one back before 3s, after the profile's 2s duration.
fn profile(dir: &Path, down_for: &str, backoff: &str) -> std::path::PathBuf {
    let path = dir.join("until.yaml");
    std::fs::write(
        &path,
        format!(
            "name: until
seed: 7
duration: 2s
target: embedded
groups:
  - name: g
    clients: 50
    arrival: {{ rate: 500/s }}
    behaviour:
      reconnect:
        backoff: {backoff}
timeline:
  - {{ at: 1s, action: restart, down_for: {down_for} }}
"
        ),
    )
    .unwrap();
    path
}

fn run(args: &[&str], profile: &Path, out: &Path) -> Output {
    wsstorm()
        .args(&args[..1])
        .arg(profile)
        .args(&args[1..])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// Every attempt ended in exactly one of opened, a connect error or a status, none was cut
/// short by the end, and the timeline and the groups count the same attempts.
fn attempts_add_up(r: &Results) {
    let t = &r.totals;
    assert_eq!(
        t.connect_errors.cancelled, 0,
        "no attempt in progress at the end"
    );
    assert_eq!(
        t.connect_attempts,
        t.opened + t.connect_errors.total() + t.handshake_status.values().sum::<u64>()
    );
    assert_eq!(
        t.connect_attempts,
        r.timeline.points.iter().map(|p| p.attempts).sum::<u64>()
    );
    assert_eq!(
        t.connect_attempts,
        r.groups
            .iter()
            .map(|g| g.totals.connect_attempts)
            .sum::<u64>()
    );
}

#[test]
fn compare_until_recovered_runs_each_strategy_until_every_client_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        "2s",
        "{ strategy: fixed, base: 500ms, cap: 2s }",
    );
    let out = dir.path().join("cmp");
    let o = run(
        &[
            "compare",
            "--until",
            "recovered",
            "--max",
            "60s",
            "--strategy",
            "fixed",
            "--strategy",
            "full-jitter",
        ],
        &p,
        &out,
    );
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(stdout.contains("every run --until recovered"), "{stdout}");
    assert!(stdout.contains("settled after (ms)"), "{stdout}");

    let c: Comparison =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    let until = c.until.as_ref().expect("compare.json says --until");
    assert_eq!((until.mode.as_str(), until.max_ms), ("recovered", 60_000));
    assert_eq!(c.runs.len(), 2);
    for run in &c.runs {
        let r = Results::read(&out.join(&run.results)).unwrap();
        let s = &run.strategy;
        assert_eq!(r.end_reason, EndReason::Settled, "{s}");
        let u = r.until.as_ref().expect("results.json says --until");
        assert_eq!(u.mode, "recovered");
        assert_eq!(u.max_ms, 60_000);
        let settled = u.settled_at_ms.expect("settled");
        // The server refused everyone until 3s: the run outlasted the profile's 2s, and it
        // ended before the cap.
        assert!(settled >= 3000, "{s}: settled at {settled} ms");
        assert!(r.duration_ms >= settled, "{s}");
        assert!(r.duration_ms < u.max_ms, "{s}: {} ms", r.duration_ms);
        // Every lost client back.
        assert_eq!(r.storm.losses, 50, "{s}");
        assert_eq!(r.storm.recovered, r.storm.losses, "{s}");
        assert_eq!(r.totals.connected_at_end, 50, "{s}");
        assert_eq!(r.totals.gave_up, 0, "{s}");
        attempts_add_up(&r);
        assert_eq!(run.row.settled, Some(true), "{s}");
        assert_eq!(run.row.settled_ms, Some(settled), "{s}");
        assert_eq!(run.row.not_back, 0, "{s}");
        assert_eq!(run.row.total_attempts, r.totals.connect_attempts, "{s}");
    }
    let html = std::fs::read_to_string(out.join("compare.html")).unwrap();
    assert!(html.contains("every run --until recovered"));
    let report = std::fs::read_to_string(out.join("fixed/report.html")).unwrap();
    assert!(report.contains("settled: every client connected or gave up"));
}

#[test]
fn a_run_that_cannot_settle_ends_at_the_cap_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // Down for ten minutes, retried forever: nobody can come back nor give up.
    let p = profile(
        dir.path(),
        "10m",
        "{ strategy: fixed, base: 500ms, cap: 2s }",
    );
    let out = dir.path().join("cmp");
    let o = run(
        &[
            "compare",
            "--until",
            "recovered",
            "--max",
            "3s",
            "--strategy",
            "fixed",
            "--strategy",
            "full-jitter",
        ],
        &p,
        &out,
    );
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(stdout.contains("over 3s"), "{stdout}");
    // The verdict is wrapped.
    let words = stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("fixed, full-jitter did not settle before --max"),
        "{stdout}"
    );
    let c: Comparison =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    for run in &c.runs {
        let r = Results::read(&out.join(&run.results)).unwrap();
        let s = &run.strategy;
        assert_eq!(r.end_reason, EndReason::MaxReached, "{s}");
        let u = r.until.as_ref().unwrap();
        assert_eq!((u.max_ms, u.settled_at_ms), (3000, None), "{s}");
        assert!(r.duration_ms >= 3000, "{s}: ran to the cap");
        assert_eq!(run.row.settled, Some(false), "{s}");
        assert_eq!(run.row.settled_ms, None, "{s}");
        // The clients still waiting stay counted as not back.
        assert_eq!(run.row.lost, 50, "{s}");
        assert_eq!(run.row.not_back, 50, "{s}");
    }
}

#[test]
fn run_until_recovered_counts_clients_that_gave_up_as_settled() {
    let dir = tempfile::tempdir().unwrap();
    // Three attempts each, then give up: settled once all have.
    let p = profile(
        dir.path(),
        "10m",
        "{ strategy: fixed, base: 200ms, cap: 1s, max_attempts: 3 }",
    );
    let out = dir.path().join("run");
    let o = run(&["run", "--until", "recovered", "--max", "60s"], &p, &out);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(stdout.contains("settled"), "{stdout}");
    let r = Results::read(&out.join("results.json")).unwrap();
    assert_eq!(r.end_reason, EndReason::Settled);
    assert_eq!(r.totals.gave_up, 50);
    assert_eq!(r.storm.recovered, 0);
    let u = r.until.as_ref().unwrap();
    assert!(r.duration_ms < u.max_ms);
    assert!(u.settled_at_ms.is_some_and(|t| t >= 1000), "{u:?}");
    attempts_add_up(&r);
}

#[test]
fn until_flags_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = profile(dir.path(), "2s", "{ strategy: fixed, base: 500ms }");
    let out = dir.path().join("never-written");
    let strategies = ["--strategy", "fixed", "--strategy", "full-jitter"];
    let cases: [(&[&str], &str); 4] = [
        (&["compare", "--max", "30s"], "add --until recovered"),
        (&["run", "--max", "30s"], "add --until recovered"),
        (
            &["compare", "--until", "recovered", "--max", "1s"],
            "before the timeline's last action",
        ),
        (&["compare", "--until", "whenever"], "whenever"),
    ];
    for (args, expect) in cases {
        let mut all = args.to_vec();
        if args[0] == "compare" {
            all.extend(strategies);
        }
        let o = run(&all, &p, &out);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(expect),
            "{args:?}: expected `{expect}` in {err}"
        );
    }
    assert!(!out.exists(), "nothing ran");
}
