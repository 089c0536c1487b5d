//! The `wsstorm` binary as users call it: exit codes, messages, files written, signals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use wsstorm::results::{EndReason, Results};

fn wsstorm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wsstorm"))
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("wsstorm runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

use crate::common::{root, start_server, yaml_files};

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child we started and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

#[test]
fn every_shipped_profile_is_valid() {
    let files = yaml_files(&root().join("profiles"));
    assert!(
        files.iter().any(|f| f.ends_with("quickstart.yaml")),
        "{files:?}"
    );
    for f in files {
        let o = output(wsstorm().arg("validate").arg(&f));
        assert!(o.status.success(), "{}: {}", f.display(), stderr(&o));
    }
}

/// Each file in tests/broken starts with `# expect: LINE:COL: message fragment`.
#[test]
fn broken_profiles_fail_with_exit_2_and_their_position() {
    let files = yaml_files(&root().join("tests/broken"));
    assert!(files.len() >= 8);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", f.display()));
        let (pos, fragment) = expect.split_at(expect.find(": ").unwrap());
        let fragment = &fragment[2..];
        for sub in ["validate", "run"] {
            let mut cmd = wsstorm();
            cmd.arg(sub).arg(&f);
            if sub == "run" {
                cmd.arg("--out")
                    .arg(std::env::temp_dir().join("wsstorm-never-written"));
            }
            let o = output(&mut cmd);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{sub} {}: {err}", f.display());
            let located = format!("{}:{pos}: ", f.display());
            assert!(
                err.contains(&located),
                "{sub}: expected `{located}` in: {err}"
            );
            assert!(
                err.contains(fragment),
                "{sub}: expected `{fragment}` in: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

#[test]
fn bad_arguments_exit_2() {
    let quickstart = root().join("profiles/quickstart.yaml");
    let o = output(
        wsstorm()
            .arg("run")
            .arg(&quickstart)
            .args(["--duration", "10"]),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("expected a number with a unit"),
        "{}",
        stderr(&o)
    );

    let o = output(wsstorm().args(["run", "/nonexistent/profile.yaml"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/profile.yaml: cannot read profile"));

    // An override that makes the profile invalid is reported against the profile.
    let o = output(
        wsstorm()
            .arg("run")
            .arg(&quickstart)
            .args(["--target", "ws://127.0.0.1:9/ws"]),
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("timeline[0].action"), "{err}");
    assert!(err.contains("after command-line overrides"), "{err}");
}

/// What could hurt the machine or lose a run is refused before anything starts.
#[test]
fn absurd_runs_and_unwritable_outputs_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.yaml");
    std::fs::write(
        &huge,
        "name: typo\nduration: 10s\ntarget: embedded\ngroups:\n  - name: g\n    clients: 4000000000\n    arrival: { rate: 10/s }\n",
    )
    .unwrap();
    for sub in ["validate", "run"] {
        let started = std::time::Instant::now();
        let o = output(wsstorm().arg(sub).arg(&huge));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{sub}: {err}");
        assert!(err.contains("this run does not fit"), "{err}");
        assert!(err.contains("4000000000 clients need about"), "{err}");
        assert!(err.contains("Fix: at most"), "{err}");
        // Refused, not started: no worker process was spawned to find out.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let o = output(wsstorm().arg("validate").arg(&empty));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("the profile is empty"),
        "{}",
        stderr(&o)
    );

    // An --out that cannot be written fails before the run, not after it.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let started = std::time::Instant::now();
    let o = output(
        wsstorm()
            .arg("run")
            .arg(root().join("profiles/quickstart.yaml"))
            .arg("--out")
            .arg(blocker.join("results")),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot write results there"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "refused before the 30 s run"
    );
}

#[test]
fn help_has_examples() {
    let o = output(wsstorm().arg("--help"));
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Examples:"));
    assert!(out.contains("wsstorm run profiles/quickstart.yaml"));
    let o = output(wsstorm().args(["run", "--help"]));
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--target",
        "--clients",
        "--duration",
        "--seed",
        "--out",
        "--no-tui",
    ] {
        assert!(out.contains(flag), "{flag} missing from run --help");
    }
    // Every command explains itself: an example where one helps, each flag described, and
    // no value name made up from a field name (`<RETRY_AFTER>`).
    for sub in [
        "run",
        "serve",
        "proxy",
        "report",
        "compare",
        "capacity",
        "validate",
        "schema",
        "completions",
    ] {
        let o = output(wsstorm().args([sub, "--help"]));
        assert!(o.status.success(), "{sub}");
        let out = String::from_utf8_lossy(&o.stdout);
        if !["schema", "completions"].contains(&sub) {
            assert!(
                out.contains("Example"),
                "{sub} --help has no example:\n{out}"
            );
        }
        // Option lines are indented; prose that starts with a flag is not.
        for line in out
            .lines()
            .filter(|l| l.starts_with("  ") && l.trim_start().starts_with("--"))
        {
            let described = line
                .trim_start()
                .split_once("  ")
                .is_some_and(|(_, d)| !d.trim().is_empty());
            assert!(described, "{sub}: undescribed flag `{line}`");
            assert!(
                !line.contains('_'),
                "{sub}: a placeholder from a field name in `{line}`"
            );
        }
    }
}

/// Replacing an embedded target whose server is configured says what will not be measured.
#[test]
fn a_target_override_says_which_server_settings_it_ignores() {
    let dir = tempfile::tempdir().unwrap();
    let o = output(
        wsstorm()
            .arg("run")
            .arg(root().join("profiles/slow-consumers.yaml"))
            .args([
                "--target",
                "ws://127.0.0.1:9/ws",
                "--duration",
                "1s",
                "--out",
            ])
            .arg(dir.path()),
    );
    let err = stderr(&o);
    assert!(
        err.contains("replaces the profile's embedded target")
            && err.contains("`target.server.stream`")
            && err.contains("`target.server.backpressure`"),
        "{err}"
    );
}

const SMALL: &str = "
name: cli-small
duration: 2s
target: embedded
groups:
  - name: g
    clients: 100
    arrival: { rate: 1000/s }
    behaviour:
      send: { every: 250ms, bytes: 100 }
";

#[test]
fn run_writes_results_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("small.yaml");
    std::fs::write(&profile, SMALL).unwrap();
    let out = dir.path().join("out");
    let o = output(
        wsstorm()
            .arg("run")
            .arg(&profile)
            .arg("--out")
            .arg(&out)
            .args(["--clients", "60", "--seed", "9", "--no-tui"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("wsstorm: cli-small — completed"),
        "{stdout}"
    );
    assert!(stdout.contains("results"), "{stdout}");
    assert!(stderr(&o).contains("connected 60/60"), "{}", stderr(&o));
    let r = Results::read(&out.join("results.json")).unwrap();
    assert_eq!(r.schema, "wsstorm.results/1");
    assert_eq!(r.seed, 9);
    assert_eq!(r.totals.clients, 60);
    assert_eq!(r.totals.opened, 60);
    assert_eq!(r.end_reason, EndReason::Completed);
    assert!(r.profile.contains("name: cli-small"));
    assert!(r.profile.contains("clients=Some(60)"));
    assert_eq!(r.timeline.interval_ms, 100);
    assert!(r.timeline.points.len() >= 19);
    // The raw JSON has the documented top-level keys.
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for key in [
        "schema",
        "name",
        "seed",
        "started_at",
        "duration_ms",
        "totals",
        "latency_us",
        "timeline",
    ] {
        assert!(raw.get(key).is_some(), "missing {key}");
    }
    for key in ["connect", "handshake", "rtt", "reconnect"] {
        let l = &raw["latency_us"][key];
        for f in [
            "count", "min", "mean", "p50", "p90", "p99", "p999", "max", "hdr",
        ] {
            assert!(l.get(f).is_some(), "latency_us.{key}.{f} missing");
        }
    }
}

/// `wsstorm run … 2>&1 | head -1`: the reader goes away while the run prints. The run must
/// finish and write its results anyway (println! panics on a broken pipe; it lost them).
#[test]
fn a_reader_that_goes_away_loses_no_results() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("small.yaml");
    std::fs::write(&profile, SMALL).unwrap();
    let out = dir.path().join("out");
    let mut child = wsstorm()
        .arg("run")
        .arg(&profile)
        .arg("--out")
        .arg(&out)
        .args(["--clients", "60", "--seed", "9", "--no-tui"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first progress line, then close both pipes, as `head -1` does.
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("connected"), "{first}");
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let r = Results::read(&out.join("results.json")).unwrap();
    assert_eq!(r.totals.opened, 60);
    assert_eq!(r.end_reason, EndReason::Completed);
    assert!(out.join("report.html").exists());
}

/// Start `wsstorm serve` on a free port and return it with its URL.

#[test]
fn serve_and_run_against_it() {
    let (mut server, url) = start_server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("small.yaml");
    std::fs::write(&profile, SMALL).unwrap();
    let o = output(
        wsstorm()
            .arg("run")
            .arg(&profile)
            .args(["--target", &url, "--out"])
            .arg(dir.path()),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let r = Results::read(&dir.path().join("results.json")).unwrap();
    assert_eq!(r.target, url);
    assert_eq!(r.totals.opened, 100);
    assert!(r.latency_us.rtt.count > 0);
    assert!(
        r.server.is_none(),
        "an external target has no embedded counters"
    );

    signal(&server, libc::SIGINT);
    let status = server.wait().unwrap();
    assert!(status.success(), "serve exits cleanly on Ctrl-C");
    let mut rest = String::new();
    std::io::Read::read_to_string(server.stdout.as_mut().unwrap(), &mut rest).unwrap();
    assert!(rest.contains("upgraded 100"), "{rest}");
}

#[test]
fn wrong_path_is_a_404() {
    let (mut server, url) = start_server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.yaml");
    std::fs::write(
        &profile,
        SMALL.replace("clients: 100", "clients: 5").replace(
            "    behaviour:",
            "    behaviour:\n      reconnect: { on_status: { 404: stop } }",
        ),
    )
    .unwrap();
    let wrong = url.replace("/ws", "/nope");
    let o = output(
        wsstorm()
            .arg("run")
            .arg(&profile)
            .args(["--target", &wrong, "--out"])
            .arg(dir.path()),
    );
    // Nothing ever connected: a failed run (exit 1) that says why, results written all the same.
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("FAILED       no connection ever opened: 5 attempts (5 HTTP 404)"),
        "{stdout}"
    );
    let r = Results::read(&dir.path().join("results.json")).unwrap();
    assert_eq!(r.totals.handshake_status.get("404"), Some(&5));
    assert_eq!(r.totals.gave_up, 5);
    assert_eq!(r.totals.opened, 0);
    assert!(r.failed.is_some());

    // A profile that expects it passes.
    let expected = dir.path().join("expected.yaml");
    let text = std::fs::read_to_string(&profile).unwrap();
    std::fs::write(&expected, format!("{text}expect_failures: true\n")).unwrap();
    let out = dir.path().join("expected");
    let o = output(
        wsstorm()
            .arg("run")
            .arg(&expected)
            .args(["--target", &wrong, "--out"])
            .arg(&out),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        Results::read(&out.join("results.json")).unwrap().failed,
        None
    );
    signal(&server, libc::SIGINT);
    server.wait().unwrap();
}

#[test]
fn ctrl_c_writes_the_results_gathered_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("long.yaml");
    std::fs::write(&profile, SMALL.replace("duration: 2s", "duration: 60s")).unwrap();
    let out = dir.path().join("out");
    let mut child = wsstorm()
        .arg("run")
        .arg(&profile)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for two progress lines: the swarm is running.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = 0;
    let started = Instant::now();
    let mut line = String::new();
    while seen < 2 && started.elapsed() < Duration::from_secs(20) {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains("connected") {
            seen += 1;
        }
    }
    assert_eq!(seen, 2, "no progress lines");
    signal(&child, libc::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped promptly"
    );
    let r = Results::read(&out.join("results.json")).unwrap();
    assert_eq!(r.end_reason, EndReason::Interrupted);
    assert_eq!(r.totals.opened, 100);
    assert!(r.duration_ms < 30_000);
    assert_eq!(r.totals.client_closes, 100);
}

#[test]
fn a_run_that_cannot_fit_is_refused_with_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("big.yaml");
    std::fs::write(
        &profile,
        "
name: big
duration: 10s
target: ws://10.9.8.7:9000/ws
groups:
  - name: g
    clients: 100000
    arrival: { rate: 1000/s }
",
    )
    .unwrap();
    // Too many clients for one source address towards one host.
    let o = output(wsstorm().arg("run").arg(&profile).arg("--no-tui"));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("this run does not fit"), "{err}");
    assert!(
        err.contains("100000 clients connect to ws://10.9.8.7:9000/ws"),
        "{err}"
    );
    assert!(err.contains("source_addrs"), "{err}");
    // Too few worker processes for the open-file limit.
    let o = output(
        wsstorm()
            .arg("run")
            .arg(&profile)
            .args(["--no-tui", "--workers", "2"]),
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("50000 sockets per process"), "{err}");
    assert!(err.contains("--workers"), "{err}");
}
