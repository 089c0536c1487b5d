//! Cause and effect over time (article §14): each timeline action with what followed it
//! (`timeline.effects`), the interval figures the points carry, and the report's markers and
//! effect table — from real runs against the embedded target.

use crate::common;

use wsstorm::results::Results;

/// 200 clients; half of them dropped at 1s with code 4001, all of them at 2.5s with 4002.
const TWO_DROPS: &str = "
name: two-drops
duration: 4s
target: embedded
groups:
  - name: g
    clients: 200
    arrival: { rate: 2000/s }
    behaviour:
      send: { every: 100ms, bytes: 64 }
      reconnect: { backoff: { strategy: full-jitter, base: 50ms, cap: 300ms } }
timeline:
  - { at: 1s, action: drop-all, mode: close, code: 4001, share: 50% }
  - { at: 2500ms, action: drop-all, mode: close, code: 4002 }
";

fn code(r: &Results, c: &str) -> u64 {
    r.totals.close_codes.get(c).copied().unwrap_or(0)
}

#[test]
fn each_drop_owns_exactly_the_connections_it_dropped() {
    let r = common::run_yaml(TWO_DROPS, "two-drops.yaml");
    let t = &r.timeline;
    assert_eq!(t.actions.len(), 2, "{:?}", t.actions);
    assert_eq!(t.effects.len(), 2);
    let (half, all) = (&t.effects[0], &t.effects[1]);
    assert_eq!(half.action, t.actions[0].action);
    assert_eq!(all.action, t.actions[1].action);
    assert_eq!(
        (half.t_ms, half.until_ms),
        (t.actions[0].t_ms, t.actions[1].t_ms)
    );
    // Nothing failed to connect, so every loss is one of the drops' closes.
    assert_eq!(r.totals.connect_errors.total(), 0);
    let (first, second) = (code(&r, "4001"), code(&r, "4002"));
    assert!(first > 0 && first < 200, "a share, not all: {first}");
    assert_eq!(half.losses, first, "{half:?}");
    assert_eq!(half.close_codes.get("4001"), Some(&first));
    assert!(!half.close_codes.contains_key("4002"));
    assert_eq!(all.losses, second, "{all:?}");
    assert_eq!(all.close_codes.get("4002"), Some(&second));
    // The full drop took every connection the target had.
    assert_eq!(second, t.actions[1].connections);
    assert_eq!(second, 200);
    assert_eq!(all.connected_before, 200);
    assert_eq!(half.connected_before, 200);
    // Each lost client reconnected once within its window, and everyone came back.
    let attempts_in = |e: &wsstorm::results::effects::Effect| -> u64 {
        t.points
            .iter()
            .filter(|p| p.t_ms >= e.t_ms && p.t_ms < e.until_ms)
            .map(|p| p.attempts)
            .sum()
    };
    assert_eq!(attempts_in(half), first, "{:?}", &t.points[5..15]);
    assert!(half.peak_attempts_per_s <= first && half.peak_attempts_per_s > 0);
    assert!(half.peak_attempts_per_interval <= half.peak_attempts_per_s);
    assert!(all.peak_attempts_per_s <= second && all.peak_attempts_per_s > 0);
    assert!(
        half.recovery_ms.is_some() && all.recovery_ms.is_some(),
        "{:?}",
        t.effects
    );
    // Back at the end of the first interval, from the one that counted the drop's closes on,
    // whose connected count is back to what it was before (a dip and its recovery can fall
    // inside one interval), and within the window.
    for e in &t.effects {
        let back = e.recovery_ms.unwrap();
        let window: Vec<&wsstorm::metrics::Point> = t
            .points
            .iter()
            .filter(|p| p.t_ms >= e.t_ms && p.t_ms < e.until_ms)
            .collect();
        let hit = window
            .iter()
            .position(|p| p.closed > 0)
            .unwrap_or_else(|| panic!("no interval counted the closes: {e:?}"));
        let recovered = window[hit..]
            .iter()
            .find(|p| p.connected >= e.connected_before)
            .unwrap_or_else(|| panic!("never back: {e:?}"));
        assert_eq!(back, recovered.t_ms - e.t_ms, "{e:?}");
        assert!(recovered.t_ms < e.until_ms);
    }
    // Round trips were measured on both sides of each drop, interval by interval.
    assert!(half.rtt_p99_before_us.is_some() && all.rtt_p99_after_us.is_some());
    let measured = t.points.iter().filter(|p| p.rtt_p99_us.is_some()).count();
    assert!(
        measured * 2 > t.points.len(),
        "{measured} of {}",
        t.points.len()
    );
    for p in &t.points {
        assert!(p.rtt_p50_us <= p.rtt_p99_us, "{p:?}");
    }
    // Handshake percentiles where connections opened, and only there.
    for p in &t.points {
        assert_eq!(p.handshake_p99_us.is_some(), p.opened > 0, "{p:?}");
    }

    // The report marks both actions on its time charts, by name, and tables their effects.
    let html = wsstorm::report::render(&r);
    let charts = html.matches("class=\"ctitle\"").count();
    assert!(
        html.matches("class=\"marker\"").count() >= 2 * 6,
        "two markers on each of the time charts ({charts} charts)"
    );
    assert!(html.contains("latency per interval"), "the latency chart");
    assert!(html.contains("dead connections detected"));
    assert!(html.contains("id=\"effects\""), "the effect table");
    assert!(html.contains(&format!("data-key=\"timeline.effects.0.losses\">{first}<")));
    assert!(html.contains(&format!("data-key=\"timeline.effects.1.losses\">{second}<")));
    assert!(
        html.contains("drop-all close 4001"),
        "{}",
        t.actions[0].action
    );

    // The text summary says it under each action.
    let text = wsstorm::report::text::summary(&r);
    assert!(
        text.contains(&format!(
            "{} open): lost {first}, peak {} attempts/100 ms, back in ",
            t.actions[0].connections, half.peak_attempts_per_interval
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "(200 open): lost {second}, peak {} attempts/100 ms, back in ",
            all.peak_attempts_per_interval
        )),
        "{text}"
    );

    // And results.json carries the effects for scripts.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["timeline"]["effects"][1]["losses"], second);
}

/// 30 clients, half dropped with 4001 at 800ms: every client's story in the event log.
const LOGGED: &str = "
name: logged
duration: 2s
target: embedded
groups:
  - name: g
    clients: 30
    arrival: { rate: 1000/s }
    behaviour:
      reconnect: { backoff: { strategy: full-jitter, base: 50ms, cap: 200ms } }
timeline:
  - { at: 800ms, action: drop-all, mode: close, code: 4001, share: 50% }
";

/// `wsstorm run` with `--events`; the results and the log's lines.
fn run_logged(dir: &std::path::Path, extra: &[&str]) -> (Results, Vec<serde_json::Value>, String) {
    run_logged_yaml(dir, LOGGED, extra)
}

/// [`run_logged`] of profile `yaml`.
fn run_logged_yaml(
    dir: &std::path::Path,
    yaml: &str,
    extra: &[&str],
) -> (Results, Vec<serde_json::Value>, String) {
    let profile = dir.join("logged.yaml");
    std::fs::write(&profile, yaml).unwrap();
    let (out, log) = (dir.join("out"), dir.join("events.jsonl"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_wsstorm"))
        .arg("run")
        .arg(&profile)
        .args(["--no-tui", "--workers", "0", "--out"])
        .arg(&out)
        .arg("--events")
        .arg(&log)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let r = Results::read(&out.join("results.json")).unwrap();
    (r, lines, String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn the_event_log_tells_every_logged_clients_story_and_keeps_to_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let (r, lines, _) = run_logged(dir.path(), &["--events-sample", "100%"]);
    let ev = r.events.as_ref().expect("results say what the log wrote");
    assert_eq!(ev.clients, 30);
    assert_eq!(ev.dropped, 0);
    assert_eq!(ev.written, lines.len() as u64);
    let count = |event: &str| lines.iter().filter(|l| l["event"] == event).count() as u64;
    assert_eq!(count("attempt"), r.totals.connect_attempts);
    assert_eq!(count("open"), r.totals.opened);
    let dropped = r.totals.close_codes["4001"];
    let by_server: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["event"] == "close" && l["by"] == "server")
        .collect();
    assert_eq!(by_server.len() as u64, dropped);
    assert!(by_server.iter().all(|l| l["code"] == 4001));
    let by_client = lines
        .iter()
        .filter(|l| l["event"] == "close" && l["by"] == "client")
        .count() as u64;
    assert_eq!(by_client, r.totals.client_closes);
    assert_eq!(count("backoff"), dropped, "each dropped client waited once");
    // Per client: the dropped ones made a second connection, numbered 2, after a backoff.
    for c in 0..30u64 {
        let mine: Vec<&serde_json::Value> = lines.iter().filter(|l| l["client"] == c).collect();
        let opens = mine.iter().filter(|l| l["event"] == "open").count();
        let lost = mine
            .iter()
            .any(|l| l["event"] == "close" && l["by"] == "server");
        assert_eq!(opens, if lost { 2 } else { 1 }, "client {c}: {mine:?}");
        let last_conn = mine.iter().map(|l| l["conn"].as_u64().unwrap()).max();
        assert_eq!(last_conn, Some(opens as u64));
        assert!(
            mine.iter()
                .all(|l| l["group"] == "g" && l["t_ms"].is_number())
        );
        let times: Vec<f64> = mine.iter().map(|l| l["t_ms"].as_f64().unwrap()).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "in order: {times:?}"
        );
    }

    // Named clients only, and a cap far below what they do: truncated, counted, said.
    let (r, lines, stdout) = run_logged(
        dir.path(),
        &["--events-clients", "1,5,9", "--events-max", "300B"],
    );
    let ev = r.events.as_ref().unwrap();
    assert_eq!(ev.clients, 3);
    assert!(
        lines
            .iter()
            .all(|l| [1, 5, 9].contains(&l["client"].as_u64().unwrap()))
    );
    assert!(ev.bytes <= 300 && ev.written == lines.len() as u64);
    assert!(ev.dropped > 0, "{ev:?}");
    let all: u64 = ev.written + ev.dropped;
    assert!(all >= 3 * 3, "attempt, open and close of each: {ev:?}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("events were not written")),
        "{:?}",
        r.warnings
    );
    assert!(stdout.contains("events were not written"), "{stdout}");
}

/// profiles/cause-and-effect.yaml, shortened: latency through the proxy, then a drop-all
/// while it lasts. The latency's effect is round trips, no losses; the drop's is losses, and
/// reconnects whose handshakes pay the latency.
#[test]
fn latency_then_a_drop_each_shows_its_own_effect() {
    let r = common::run_yaml(
        "
name: cause-and-effect-short
duration: 3s
target:
  url: embedded
  via_proxy: true
groups:
  - name: clients
    clients: 100
    arrival: { rate: 1000/s }
    behaviour:
      send: { every: 100ms, bytes: 64 }
      reconnect: { backoff: { strategy: full-jitter, base: 50ms, cap: 200ms } }
timeline:
  - { at: 1s, action: latency, delay: 200ms, direction: downstream, duration: 1500ms }
  - { at: 1500ms, action: drop-all, mode: close, code: 1012 }
",
        "cause-and-effect-short.yaml",
    );
    let e = &r.timeline.effects;
    assert_eq!(e.len(), 2, "{:?}", r.timeline.actions);
    assert!(e[0].action.contains("latency"), "{}", e[0].action);
    let (slow, drop) = (&e[0], &e[1]);
    // The latency lost nothing, but every round trip after it carries the 200 ms.
    assert_eq!(slow.losses, 0, "{slow:?}");
    assert_eq!(slow.recovery_ms, Some(0));
    assert!(slow.rtt_p99_after_us.unwrap() >= 200_000, "{slow:?}");
    assert!(slow.rtt_p99_after_us > slow.rtt_p99_before_us, "{slow:?}");
    // The drop lost every connection, and the reconnects' upgrades came back slow.
    assert_eq!(drop.losses, r.totals.close_codes["1012"]);
    assert_eq!(drop.losses, 100);
    assert_eq!(drop.connections, 100);
    assert!(drop.handshake_p99_after_us.unwrap() >= 200_000, "{drop:?}");
    assert!(drop.recovery_ms.is_some(), "{drop:?}");
}

/// Ctrl-C ends the run through the same drain as its deadline: the log is flushed whole, and
/// its last line for every client is that client's close.
#[test]
fn ctrl_c_flushes_the_event_log() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("long.yaml");
    std::fs::write(
        &profile,
        "
name: long
duration: 60s
target: embedded
groups:
  - name: g
    clients: 20
    arrival: { rate: 1000/s }
    behaviour:
      send: { every: 100ms, bytes: 64 }
",
    )
    .unwrap();
    let (out, log) = (dir.path().join("out"), dir.path().join("events.jsonl"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wsstorm"))
        .arg("run")
        .arg(&profile)
        .args(["--no-tui", "--workers", "0", "--out"])
        .arg(&out)
        .arg("--events")
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Two progress lines: the swarm runs.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let (mut seen, mut line) = (0, String::new());
    while seen < 2 {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no progress lines");
        seen += usize::from(line.contains("connected"));
    }
    // SAFETY: kill with a child's pid and a signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let r = Results::read(&out.join("results.json")).unwrap();
    assert_eq!(r.end_reason, wsstorm::results::EndReason::Interrupted);
    let ev = r.events.as_ref().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!((ev.written, ev.dropped), (lines.len() as u64, 0));
    assert_eq!(ev.bytes, text.len() as u64);
    for c in 0..20u64 {
        let last = lines.iter().rev().find(|l| l["client"] == c).unwrap();
        assert_eq!(last["event"], "close", "client {c}: {last}");
        assert_eq!(last["by"], "client");
    }
}

/// A hang found by heartbeats: the dead detections show per interval, and the hang's effect
/// counts them as its losses.
#[test]
fn dead_detections_show_per_interval_and_in_the_hangs_effect() {
    let r = common::run_yaml(
        "
name: hang
duration: 3s
target: embedded
groups:
  - name: g
    clients: 50
    arrival: { rate: 1000/s }
    behaviour:
      heartbeat: { ping_every: 200ms, timeout: 400ms }
      reconnect: { backoff: { strategy: full-jitter, base: 50ms, cap: 200ms } }
timeline:
  - { at: 1s, action: hang, share: 40% }
",
        "hang.yaml",
    );
    let dead = r.totals.dead_detected;
    assert!(dead > 0 && dead < 50, "a share of 50: {dead}");
    let per_interval: u64 = r.timeline.points.iter().map(|p| p.dead_detected).sum();
    assert_eq!(per_interval, dead);
    let e = &r.timeline.effects[0];
    assert_eq!(e.dead_detected, dead, "{e:?}");
    assert_eq!(e.losses, dead + r.totals.close_codes.values().sum::<u64>());
    // Found no sooner than the heartbeat can: ping interval + timeout after the hang.
    let first = r
        .timeline
        .points
        .iter()
        .find(|p| p.dead_detected > 0)
        .unwrap();
    assert!(first.t_ms >= e.t_ms + 400, "{first:?} {e:?}");
}

/// The clients' own drops are in the log: every connection a client opened ends in a close
/// line, the ones its fleet behaviour ended with their `cause`, a leaving client's with 1000.
#[test]
fn the_event_log_closes_what_the_clients_drop_themselves_with_the_cause() {
    let yaml = "
name: own-drops
seed: 8
duration: 1500ms
target: embedded
groups:
  - name: churn
    clients: 10
    arrival: { rate: 1000/s }
    behaviour:
      churn: { mean_between_drops: 300ms, distribution: fixed }
      reconnect: { backoff: { strategy: fixed, base: 20ms } }
  - name: visitors
    clients: 10
    arrival: { rate: 1000/s }
    behaviour:
      session: { lifetime: { mean: 400ms, distribution: fixed } }
  - name: leaky
    clients: 10
    arrival: { rate: 1000/s }
    behaviour:
      duplicate_connections: { after: 300ms }
  - name: commuters
    clients: 10
    arrival: { rate: 1000/s }
    source_addrs: [\"127.0.0.2\", \"127.0.0.3\"]
    behaviour:
      network_switch: { after: 300ms, share: 100%, mode: reset }
      reconnect: { backoff: { strategy: fixed, base: 20ms } }
";
    let dir = tempfile::tempdir().unwrap();
    let (r, lines, _) = run_logged_yaml(dir.path(), yaml, &["--events-sample", "100%"]);
    assert_eq!(r.events.as_ref().unwrap().dropped, 0);
    let closes = |cause: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["event"] == "close" && l["cause"] == cause)
            .collect()
    };
    let t = &r.totals;
    assert!(t.churn_drops >= 10, "{t:?}");
    assert_eq!(closes("churn").len() as u64, t.churn_drops);
    assert_eq!(closes("switch").len() as u64, t.network_switches);
    assert_eq!(t.network_switches, 10, "{t:?}");
    assert_eq!(closes("duplicate").len() as u64, t.duplicate_connections);
    assert_eq!(t.duplicate_connections, 10, "{t:?}");
    let left = closes("leave");
    assert!(left.len() >= 10, "{} leaves", left.len());
    assert!(left.len() as u64 <= t.sessions_ended);
    assert!(
        left.iter()
            .all(|l| l["code"] == 1000 && l["by"] == "client")
    );
    assert!(
        closes("churn")
            .iter()
            .chain(&closes("switch"))
            .all(|l| l["code"].is_null() && l["by"] == "client")
    );
    // Each open is followed by the close of that connection, of whatever cause.
    for c in 0..40u64 {
        let mine = lines.iter().filter(|l| l["client"] == c);
        let (opens, closed) = mine.fold((0, 0), |(o, cl), l| {
            (
                o + usize::from(l["event"] == "open"),
                cl + usize::from(l["event"] == "close"),
            )
        });
        assert!(opens >= 1, "client {c}");
        assert_eq!(opens, closed, "client {c}");
    }
    // The clients' closes at the end of the run send 1000 too.
    let at_end = lines
        .iter()
        .filter(|l| l["event"] == "close" && l["by"] == "client" && l.get("cause").is_none());
    assert!(at_end.clone().count() > 0);
    assert!(
        at_end.clone().all(|l| l["code"] == 1000),
        "{:?}",
        at_end.collect::<Vec<_>>()
    );
}
