//! The embedded target's server and infrastructure behaviours (article §8, §13, §16): a
//! graceful drain against a drop-all, a rolling restart behind a balancer, connection caps, a
//! maximum connection lifetime and the Origin check. Each runs its shipped profile (shrunk
//! where it takes long) and checks the phenomenon in the run's own numbers.

use crate::common;

use std::time::Duration;

use wsstorm::plan::Plan;
use wsstorm::profile::{Decision, Document, OverLimit, Profile};
use wsstorm::results::{GroupResults, Results};
use wsstorm::units::Dur;

fn load(name: &str) -> Document {
    let path = common::root().join("profiles").join(format!("{name}.yaml"));
    wsstorm::profile::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn run(name: &str, edit: impl FnOnce(&mut Profile)) -> Results {
    let mut doc = load(name);
    edit(&mut doc.profile);
    common::run_plan(&Plan::compile(&doc).unwrap_or_else(|e| panic!("{e}")))
}

fn ms(n: u64) -> Dur {
    Dur(Duration::from_millis(n))
}

fn group<'a>(r: &'a Results, name: &str) -> &'a GroupResults {
    r.groups
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no group {name}"))
}

fn count(map: &std::collections::BTreeMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

/// How late the run was against its own schedule, at worst (ms), first attempts or retries:
/// timing bounds add it.
fn lag_ms(r: &Results) -> u64 {
    r.generator
        .schedule_lag_us
        .max
        .max(r.generator.retry_lag_us.max)
        / 1000
}

/// The most attempts in one timeline interval from `from_ms` (inclusive) to `to_ms`.
fn peak_attempts(r: &Results, from_ms: u64, to_ms: u64) -> u64 {
    r.timeline
        .points
        .iter()
        .filter(|p| p.t_ms > from_ms && p.t_ms <= to_ms)
        .map(|p| p.attempts)
        .max()
        .unwrap_or(0)
}

/// The times (ms, end of their interval) of the intervals in which closes with `code` were
/// seen, with how many.
fn closes_over_time(r: &Results, code: &str) -> Vec<(u64, u64)> {
    let Some(series) = r.timeline.close_codes.get(code) else {
        return Vec::new();
    };
    r.timeline
        .points
        .iter()
        .zip(series)
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| (p.t_ms, *n))
        .collect()
}

/// The same clients dropped at once, then drained with 1001 over a window: the reconnects
/// after the drop come as one spike, after the drain as a trickle, and the close codes count
/// exactly the connections each action found open.
#[test]
fn a_drain_spreads_the_reconnects_a_drop_all_bunches() {
    let r = run("graceful-drain", |p| {
        p.groups[0].clients = 200;
        p.duration = Dur(Duration::from_secs(6));
        p.timeline[0].at = ms(1000);
        p.timeline[1].at = ms(3000);
        p.timeline[1].over = Some(ms(2000));
    });
    let g = &r.groups[0];
    let [drop, drain] = &r.timeline.actions[..] else {
        panic!("two actions: {:?}", r.timeline.actions);
    };
    assert!(drop.action.starts_with("drop-all"), "{drop:?}");
    assert_eq!(drain.action, "drain close 1001 over 2s");
    assert_eq!(drop.connections, 200, "all connected before the drop");
    assert_eq!(drain.connections, 200, "all back before the drain");
    assert_eq!(count(&g.totals.close_codes, "1006"), drop.connections);
    assert_eq!(count(&g.totals.close_codes, "1001"), drain.connections);
    let server = r.server.as_ref().unwrap();
    assert_eq!(server.drained, drain.connections);
    assert_eq!(count(&server.closes_sent, "1001"), drain.connections);
    assert_eq!(g.totals.connected_at_end, 200, "every client is back");
    assert_eq!(g.totals.gave_up, 0);

    // The closes of the drain fall within its window (plus what the machine lagged), and
    // spread over it: no interval holds a fifth of them (the window is 20 intervals).
    let closes = closes_over_time(&r, "1001");
    let (first, last) = (closes[0].0, closes.last().unwrap().0);
    assert!(first > drain.t_ms, "{closes:?}");
    assert!(
        last <= drain.t_ms + 2000 + 300 + lag_ms(&r),
        "closes after the window: {closes:?}"
    );
    let busiest = closes.iter().map(|c| c.1).max().unwrap();
    assert!(busiest * 5 < drain.connections, "bunched: {closes:?}");

    // The reconnect spike: after the drop-all, a third of the clients or more retry in one
    // 100 ms interval; after the drain, not a third as many at its peak.
    let after_drop = peak_attempts(&r, drop.t_ms, drop.t_ms + 1000);
    let after_drain = peak_attempts(&r, drain.t_ms, drain.t_ms + 2500);
    assert!(after_drop >= 200 / 3, "drop-all peak {after_drop}");
    assert!(
        after_drain * 3 < after_drop,
        "drain peak {after_drain} vs drop-all peak {after_drop}"
    );
}

/// Four nodes restart one at a time: each node's restart is its own timeline action with the
/// connections it held, every one of them is closed with 1012, the clients move to the nodes
/// still up (later nodes hold more), and the target never loses more than one node's share.
#[test]
fn a_rolling_restart_drains_one_node_at_a_time() {
    const CLIENTS: u64 = 200;
    let r = run("rolling-restart", |p| {
        p.groups[0].clients = CLIENTS as u32;
        p.duration = Dur(Duration::from_secs(6));
        p.timeline[0].at = ms(1000);
        p.timeline[0].every = Some(ms(1000));
        p.timeline[0].over = Some(ms(500));
    });
    let g = &r.groups[0];
    let actions = &r.timeline.actions;
    let names: Vec<&str> = actions.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        names,
        (1..=4)
            .map(|k| format!("restart node {k}/4 close 1012 over 500ms"))
            .collect::<Vec<_>>()
    );
    for (k, a) in actions.iter().enumerate() {
        let due = 1000 * (k as u64 + 1);
        assert!(
            a.t_ms >= due && a.t_ms <= due + 200 + lag_ms(&r),
            "node {k} at {}",
            a.t_ms
        );
    }
    // Round-robin over four nodes: the first holds exactly a quarter; every later one also
    // took some of the clients of the nodes restarted before it.
    assert_eq!(actions[0].connections, CLIENTS / 4);
    for pair in actions.windows(2) {
        assert!(
            pair[1].connections > pair[0].connections,
            "clients did not move to the nodes up: {actions:?}"
        );
    }
    let held: u64 = actions.iter().map(|a| a.connections).sum();
    assert_eq!(count(&g.totals.close_codes, "1012"), held);
    let server = r.server.as_ref().unwrap();
    assert_eq!(server.node_restart_closes, held);
    assert_eq!(server.dropped_by_action, 0);
    // One node at a time: never more than the node restarting is missing.
    let most = actions.iter().map(|a| a.connections).max().unwrap();
    let lowest = r
        .timeline
        .points
        .iter()
        .filter(|p| p.t_ms > 1000 && p.t_ms <= 5500)
        .map(|p| p.connected)
        .min()
        .unwrap();
    assert!(lowest >= CLIENTS - most, "{lowest} connected at worst");
    assert_eq!(g.totals.connected_at_end, CLIENTS);
}

/// `max_connections` 200 and 120 per address: the office behind one address gets exactly 120
/// in, home gets the 80 left; every refusal is counted by its cap, on both sides.
#[test]
fn connection_caps_refuse_with_503_by_cap() {
    // Refused clients give up at once, so every refusal is counted before the run ends.
    let stop_on = |p: &mut Profile, key: &str, close: bool| {
        for g in &mut p.groups {
            let r = &mut g.behaviour.reconnect;
            let table = if close {
                &mut r.on_close
            } else {
                &mut r.on_status
            };
            table.insert(key.into(), Decision::Stop);
        }
    };
    // Whether `office` held its 120 before `home`'s first attempt (the interval before it
    // ended with 120 office connections): then the split is exact, as the profile tells it.
    // On a machine too busy for that, the counts that do not depend on the order still hold.
    let office_first = |r: &Results| {
        let (office, home) = (group(r, "office"), group(r, "home"));
        match home.timeline.attempts.iter().position(|n| *n > 0) {
            Some(i) if i > 0 => office.timeline.connected[i - 1] == 120,
            _ => false,
        }
    };
    let r = run("connection-limits", |p| stop_on(p, "503", false));
    let (office, home) = (group(&r, "office"), group(&r, "home"));
    let server = r.server.as_ref().unwrap();
    assert_eq!(r.totals.peak_connected, 200);
    assert_eq!(
        office.totals.connected_at_end + home.totals.connected_at_end,
        200
    );
    assert!(office.totals.connected_at_end <= 120);
    let refused = |g: &GroupResults| count(&g.totals.handshake_status, "503");
    assert_eq!(refused(office) + refused(home), 100);
    assert_eq!(office.totals.gave_up + home.totals.gave_up, 100);
    assert_eq!(server.refused_per_ip + server.refused_max_connections, 100);
    assert_eq!(server.rejected_503, 100);
    assert_eq!(server.upgraded, 200);
    if office_first(&r) {
        assert_eq!(office.totals.connected_at_end, 120);
        assert_eq!(home.totals.connected_at_end, 80);
        assert_eq!(refused(office), 80);
        assert_eq!(refused(home), 20);
        assert_eq!(office.totals.gave_up, 80);
        assert_eq!(server.refused_per_ip, 80);
        assert_eq!(server.refused_max_connections, 20);
    }

    // close-1013: the same split, told by a close frame after the upgrade instead.
    let r = run("connection-limits", |p| {
        p.target.server.over_limit = OverLimit::Close1013;
        stop_on(p, "1013", true);
    });
    let (office, home) = (group(&r, "office"), group(&r, "home"));
    let server = r.server.as_ref().unwrap();
    assert_eq!(
        office.totals.connected_at_end + home.totals.connected_at_end,
        200
    );
    assert!(office.totals.connected_at_end <= 120);
    let closed = |g: &GroupResults| count(&g.totals.close_codes, "1013");
    assert_eq!(closed(office) + closed(home), 100);
    assert!(office.totals.handshake_status.is_empty());
    assert!(home.totals.handshake_status.is_empty());
    assert_eq!(server.refused_per_ip + server.refused_max_connections, 100);
    assert_eq!(count(&server.closes_sent, "1013"), 100);
    if office_first(&r) {
        assert_eq!(office.totals.connected_at_end, 120);
        assert_eq!(home.totals.connected_at_end, 80);
        assert_eq!(closed(office), 80);
        assert_eq!(closed(home), 20);
        assert_eq!(server.refused_per_ip, 80);
        assert_eq!(server.refused_max_connections, 20);
    }
    assert_eq!(server.rejected_503, 0);
    assert_eq!(server.upgraded, 300);
}

/// The caps are the last check: a request that fails auth is refused with 401 (final, counted
/// as such) even when the target is full, never with a retryable 503 or a 1013, and is not
/// counted as over a cap.
#[test]
fn a_full_target_still_refuses_bad_tokens_with_401() {
    for over_limit in ["reject", "close-1013"] {
        let yaml = format!(
            "
name: caps-auth
seed: 13
duration: 2s
target:
  url: embedded
  server: {{ auth: {{ secret: s }}, max_connections: 20, over_limit: {over_limit} }}
groups:
  - name: ok
    clients: 20
    arrival: {{ rate: 1000/s }}
    behaviour:
      auth: {{ lifetime: 1h, on_expiry: refresh }}
  - name: bad
    clients: 10
    arrival: {{ rate: 1000/s, start: 500ms }}
    behaviour:
      reconnect: {{ on_status: {{ \"401\": stop, \"503\": stop }}, on_close: {{ \"1013\": stop }} }}
"
        );
        let r = common::run_yaml(&yaml, "caps-auth.yaml");
        let (ok, bad) = (group(&r, "ok"), group(&r, "bad"));
        let s = r.server.as_ref().unwrap();
        assert_eq!(ok.totals.connected_at_end, 20, "{over_limit}");
        assert_eq!(
            count(&bad.totals.handshake_status, "401"),
            10,
            "{over_limit}"
        );
        assert_eq!(
            count(&bad.totals.handshake_status, "503"),
            0,
            "{over_limit}"
        );
        assert_eq!(count(&bad.totals.close_codes, "1013"), 0, "{over_limit}");
        assert_eq!(s.rejected_401, 10, "{over_limit}");
        assert_eq!(s.refused_max_connections, 0, "{over_limit}");
        assert_eq!(s.upgraded, 20, "{over_limit}");
    }
}

/// Without jitter every connection is closed at exactly its lifetime (never sooner), with
/// 1001, and reconnects; the counts agree on both sides. With jitter the expiries spread.
#[test]
fn max_lifetime_closes_each_connection_at_its_age() {
    const CLIENTS: u64 = 100;
    let r = run("max-lifetime", |p| {
        p.groups[0].clients = CLIENTS as u32;
        p.duration = ms(2500);
        p.target.server.lifetime_jitter = None;
    });
    let g = &r.groups[0];
    let server = r.server.as_ref().unwrap();
    let closed = count(&g.totals.close_codes, "1001");
    assert_eq!(server.lifetime_closes, closed);
    assert_eq!(count(&server.closes_sent, "1001"), closed);
    // Two lifetimes fit in the run for every client (arrivals within 50 ms, reconnects within
    // the 50 ms base and the handshake), unless the machine lagged more than the margin.
    if lag_ms(&r) < 150 {
        assert_eq!(closed, 2 * CLIENTS);
        assert_eq!(g.totals.opened, CLIENTS + closed, "every close reconnected");
    } else {
        assert!((CLIENTS..=2 * CLIENTS).contains(&closed), "{closed}");
        assert!(g.totals.opened <= CLIENTS + closed);
    }
    assert_eq!(g.totals.connected_at_end, CLIENTS);
    // The first wave: none before 1s, all within the arrivals' 50 ms (a handshake and an
    // interval: 250 ms, and the lag) after it. A reconnect's lifetime ends 1s after the first
    // close at the earliest, so every interval ending before 2s holds only the first wave.
    let lag = lag_ms(&r);
    let closes = closes_over_time(&r, "1001");
    let first_wave: Vec<(u64, u64)> = closes.iter().copied().filter(|(t, _)| *t < 2000).collect();
    let in_first: u64 = first_wave.iter().map(|(_, n)| n).sum();
    if 1000 + 50 + 250 + lag < 1900 {
        assert_eq!(in_first, CLIENTS, "{closes:?}, lag {lag}");
    } else {
        assert!(in_first <= CLIENTS, "{closes:?}, lag {lag}");
    }
    assert!(closes[0].0 > 1000, "closed before its lifetime: {closes:?}");
    let last_of_wave = first_wave.last().unwrap().0;
    assert!(
        last_of_wave <= 1000 + 50 + 250 + lag,
        "{closes:?}, lag {lag}"
    );

    // With ±250ms the same first wave spreads: none before 750ms, no interval holds half.
    let r = run("max-lifetime", |p| {
        p.groups[0].clients = CLIENTS as u32;
        p.duration = ms(2000);
    });
    let closes = closes_over_time(&r, "1001");
    assert!(closes[0].0 > 750, "{closes:?}");
    // The first wave ends by 1250 + 50 ms (+ a handshake and the lag); the second cannot start
    // before 750 + 750 ms, so the intervals ending before 1.5s hold only the first.
    let lag = lag_ms(&r);
    let wave: Vec<u64> = closes
        .iter()
        .filter(|(t, _)| *t < 1500)
        .map(|c| c.1)
        .collect();
    let in_wave = wave.iter().sum::<u64>();
    if 1250 + 50 + 50 + lag < 1400 {
        assert_eq!(in_wave, CLIENTS, "{closes:?}, lag {lag}");
    } else {
        assert!(in_wave <= CLIENTS, "{closes:?}, lag {lag}");
    }
    assert!(wave.len() >= 4, "not spread: {closes:?}");
    assert!(
        wave.iter().max().unwrap() * 2 < CLIENTS,
        "bunched: {closes:?}"
    );
    // Expiries never stop here, so one may be on its way when the run ends: the clients
    // saw no more than the server sent.
    assert!(
        count(&r.groups[0].totals.close_codes, "1001")
            <= r.server.as_ref().unwrap().lifetime_closes
    );
}

/// The group that sends the allowed Origin connects; the one without gets exactly one 403
/// each and stops, as its `on_status` says.
#[test]
fn the_origin_check_refuses_other_origins_with_403() {
    let r = run("origin-check", |_| {});
    let (browser, script) = (group(&r, "browser"), group(&r, "script"));
    assert_eq!(browser.totals.connected_at_end, 50);
    assert!(browser.totals.handshake_status.is_empty());
    assert_eq!(count(&script.totals.handshake_status, "403"), 50);
    assert_eq!(script.totals.opened, 0);
    assert_eq!(script.totals.gave_up, 50);
    let server = r.server.as_ref().unwrap();
    assert_eq!(server.rejected_403, 50);
    assert_eq!(server.upgraded, 50);

    // The model tells the same: a 403 for each client of the group without the Origin.
    let plan = Plan::compile(&load("origin-check")).unwrap();
    let m = wsstorm::model::run(&plan, &Default::default(), &mut |_| false).unwrap();
    for (real, modelled) in r.groups.iter().zip(&m.groups) {
        assert_eq!(
            real.totals.handshake_status,
            modelled.totals.handshake_status
        );
        assert_eq!(real.totals.gave_up, modelled.totals.gave_up);
        assert_eq!(
            real.totals.connected_at_end,
            modelled.totals.connected_at_end
        );
    }
    assert_eq!(m.server.as_ref().unwrap().rejected_403, 50);

    // Scheme and host are compared without regard to case, by the server and the model alike.
    let upper = |p: &mut Profile| {
        let v = p.groups[0].headers.get_mut("Origin").unwrap();
        *v = "HTTPS://App.Example".into();
        p.duration = ms(1000);
    };
    let r = run("origin-check", upper);
    assert_eq!(group(&r, "browser").totals.connected_at_end, 50);
    assert_eq!(
        r.server.as_ref().unwrap().rejected_403,
        50,
        "the script's only"
    );
    let mut doc = load("origin-check");
    upper(&mut doc.profile);
    let plan = Plan::compile(&doc).unwrap();
    let m = wsstorm::model::run(&plan, &Default::default(), &mut |_| false).unwrap();
    assert_eq!(m.server.as_ref().unwrap().rejected_403, 50);

    // Without the `stop`, the default table retries a 403 like any status.
    let r = run("origin-check", |p| {
        p.groups[1].behaviour.reconnect.on_status.clear();
        p.duration = ms(1500);
    });
    let script = group(&r, "script");
    assert_eq!(script.totals.gave_up, 0);
    assert!(count(&script.totals.handshake_status, "403") > 50);
}

/// `wsstorm serve --profile` serves the same settings: an upgrade without the allowed Origin
/// gets 403, one with it is upgraded, and the cap holds the rest off with 503.
#[test]
fn serve_takes_the_caps_and_origin_check_from_a_profile() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error, http::HeaderValue};
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.yaml");
    std::fs::write(
        &profile,
        "name: s\nduration: 1s\ntarget:\n  url: embedded\n  server:\n    max_connections: 1\n    allowed_origins: [\"https://app.example\"]\ngroups: [{ name: g, clients: 1, arrival: { rate: 1/s } }]\n",
    )
    .unwrap();
    let (mut child, url) = common::start_server(&["--profile", profile.to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = |e: Result<_, Error>| match e {
        Err(Error::Http(resp)) => Some(resp.status().as_u16()),
        Ok(_) => None,
        Err(e) => panic!("{e}"),
    };
    rt.block_on(async {
        let plain = tokio_tungstenite::connect_async(url.as_str()).await;
        assert_eq!(status(plain.map(|_| ())), Some(403));
        let with_origin = || {
            let mut req = url.as_str().into_client_request().unwrap();
            req.headers_mut()
                .insert("Origin", HeaderValue::from_static("https://app.example"));
            req
        };
        let (first, _) = tokio_tungstenite::connect_async(with_origin())
            .await
            .unwrap();
        let second = tokio_tungstenite::connect_async(with_origin()).await;
        assert_eq!(status(second.map(|_| ())), Some(503));
        drop(first);
    });
    let _ = child.kill();
    let _ = child.wait();
}

/// `serve --profile` checks the profile as `validate` does: every rule (the groups' too), each
/// error at its line and column, exit 2; it never serves a profile `validate` refuses.
#[test]
fn serve_refuses_what_validate_refuses_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "jitter.yaml",
            "name: s\nduration: 1s\ntarget:\n  url: embedded\n  server:\n    lifetime_jitter: 1s\ngroups: [{ name: g, clients: 1, arrival: { rate: 1/s } }]\n",
            ":6:22: ",
            "applies to `max_lifetime`",
        ),
        (
            "sessions.yaml",
            "name: s\nduration: 1s\ntarget:\n  url: embedded\n  server:\n    stream: { rate: 10/s, sessions: keep }\ngroups:\n  - name: g\n    clients: 1\n    arrival: { rate: 1/s }\n    identity_header: none\n    behaviour: { subscribe: { resume: false } }\n",
            ":6:",
            "sends no identity header",
        ),
    ];
    for (file, yaml, pos, fragment) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, yaml).unwrap();
        let mut errors = Vec::new();
        for sub in ["validate", "serve"] {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wsstorm"));
            match sub {
                "validate" => cmd.arg("validate").arg(&path),
                _ => cmd
                    .args(["serve", "--listen", "127.0.0.1:0", "--profile"])
                    .arg(&path),
            };
            let mut child = cmd
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // A serve that took the profile would run until stopped.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{sub} {file}: served a profile validate refuses");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert_eq!(status.code(), Some(2), "{sub} {file}: {err}");
            let located = format!("{}{pos}", path.display());
            assert!(err.contains(&located), "{sub}: `{located}` in: {err}");
            assert!(err.contains(fragment), "{sub}: `{fragment}` in: {err}");
            errors.push(err);
        }
        assert_eq!(errors[0], errors[1], "{file}: the same errors");
    }
}

/// The model cannot run these faults, and says so by name rather than model another run.
#[test]
fn the_model_refuses_the_server_faults_by_name() {
    for (name, says) in [
        ("rolling-restart", "restart node 1/4"),
        ("connection-limits", "connection caps"),
    ] {
        let plan = Plan::compile(&load(name)).unwrap();
        match wsstorm::model::check(&plan) {
            Ok(_) => panic!("{name} was modelled"),
            Err(e) => assert!(e.to_string().contains(says), "{name}: {e}"),
        }
    }
}

/// A drain that refuses new connections: its listener is closed for the window, so nothing
/// opens during it (the drained clients are refused and back off), and everyone is back once
/// it is over.
#[test]
fn a_drain_can_refuse_new_connections_for_its_window() {
    let r = run("graceful-drain", |p| {
        p.groups[0].clients = 100;
        p.groups[0].behaviour.reconnect.backoff.cap = ms(1000);
        p.duration = Dur(Duration::from_secs(6));
        p.timeline.remove(0);
        p.timeline[0].at = ms(1000);
        p.timeline[0].over = Some(ms(2000));
        p.timeline[0].refuse_new = Some(true);
    });
    let g = &r.groups[0];
    let drain = &r.timeline.actions[0];
    assert_eq!(
        drain.action,
        "drain close 1001 over 2s refusing new connections"
    );
    assert_eq!(drain.connections, 100);
    assert_eq!(count(&g.totals.close_codes, "1001"), 100);
    // From when handshakes under way at the drain are done (an interval, a handshake and the
    // run's lag) to the window's end.
    let lag = lag_ms(&r);
    let opened_in_window = opened_between(&r, drain.t_ms + 200 + lag, drain.t_ms + 1900, lag);
    assert!(
        opened_in_window.iter().all(|(_, n)| *n == 0),
        "opened while refusing: {opened_in_window:?}"
    );
    assert!(g.totals.connect_errors.refused > 0);
    assert_eq!(g.totals.connected_at_end, 100, "all back after the window");
}

/// Connections opened per timeline interval ending in (`from`, `to`], as (t_ms, opened); the
/// window must hold the intervals a 1.7 s window holds, less what the run's `lag` ate of it.
fn opened_between(r: &Results, from: u64, to: u64, lag: u64) -> Vec<(u64, u64)> {
    let window: Vec<(u64, u64)> = r
        .timeline
        .points
        .iter()
        .filter(|p| p.t_ms > from && p.t_ms <= to)
        .map(|p| (p.t_ms, p.opened))
        .collect();
    assert!(
        window.len() as u64 >= (1700u64.saturating_sub(lag) / 100).saturating_sub(1),
        "{window:?}, lag {lag}"
    );
    window
}

/// A short restart inside a refusing drain's window: the listener stays closed until the later
/// of the two windows ends, not until the restart's (which would let clients in mid-drain).
#[test]
fn a_restart_inside_a_refusing_drain_does_not_reopen_early() {
    use wsstorm::profile::ActionKind;
    let r = run("graceful-drain", |p| {
        p.groups[0].clients = 100;
        p.groups[0].behaviour.reconnect.backoff.cap = ms(500);
        p.duration = Dur(Duration::from_secs(6));
        p.timeline.remove(0);
        p.timeline[0].at = ms(1000);
        p.timeline[0].over = Some(ms(3000));
        p.timeline[0].refuse_new = Some(true);
        let mut restart = p.timeline[0].clone();
        restart.action = ActionKind::Restart;
        restart.at = ms(2000);
        restart.down_for = Some(ms(200));
        restart.over = None;
        restart.refuse_new = None;
        restart.code = None;
        p.timeline.push(restart);
    });
    let g = &r.groups[0];
    let drain = &r.timeline.actions[0];
    let restart = &r.timeline.actions[1];
    assert!(restart.action.starts_with("restart"), "{}", restart.action);
    let lag = lag_ms(&r);
    // From the restart's end (plus the run's lag) to the drain's end, nothing may open.
    let opened_in_window = opened_between(&r, restart.t_ms + 200 + lag, drain.t_ms + 2900, lag);
    assert!(
        opened_in_window.iter().all(|(_, n)| *n == 0),
        "opened inside the drain's window after the restart's: {opened_in_window:?}"
    );
    assert_eq!(g.totals.connected_at_end, 100, "all back after the window");
}

/// The model runs a drain as the server does: the same seeded moment for each connection, so
/// the same spread, the same closes and the same peaks as the real run's, at any scale; with
/// `refuse_new` nothing opens during the window.
#[test]
fn the_model_drains_as_the_server_does() {
    use wsstorm::model::{Options, run};
    let plan = Plan::compile(&load("graceful-drain")).unwrap();
    let r = run(&plan, &Options::default(), &mut |_| false).unwrap_or_else(|e| panic!("{e}"));
    let g = &r.groups[0];
    let [drop, drain] = &r.timeline.actions[..] else {
        panic!("{:?}", r.timeline.actions)
    };
    assert_eq!((drop.connections, drain.connections), (300, 300));
    assert_eq!(count(&g.totals.close_codes, "1006"), 300);
    assert_eq!(count(&g.totals.close_codes, "1001"), 300);
    let server = r.server.as_ref().unwrap();
    assert_eq!(server.drained, 300);
    assert_eq!(count(&server.closes_sent, "1001"), 300);
    assert_eq!(g.totals.connected_at_end, 300);
    let closes = closes_over_time(&r, "1001");
    assert!(closes[0].0 > drain.t_ms && closes.last().unwrap().0 <= drain.t_ms + 3000);
    assert!(
        closes.len() >= 25,
        "spread over the 30 intervals: {closes:?}"
    );
    let after_drop = peak_attempts(&r, drop.t_ms, drop.t_ms + 1000);
    let after_drain = peak_attempts(&r, drain.t_ms, drain.t_ms + 3500);
    assert_eq!(after_drop, 300, "the whole herd within 100 ms");
    assert!(
        after_drain * 10 < after_drop,
        "{after_drain} vs {after_drop}"
    );
    // timeline.effects holds the same spikes, and the summary and the report put each
    // action's next to it.
    let effect = |t_ms: u64| {
        r.timeline
            .effects
            .iter()
            .find(|e| e.t_ms == t_ms)
            .expect("an effect for every action")
    };
    let (drop_effect, drain_effect) = (effect(drop.t_ms), effect(drain.t_ms));
    assert_eq!(drop_effect.peak_attempts_per_interval, after_drop);
    assert_eq!(drop_effect.losses, 300);
    assert_eq!(drain_effect.losses, 300);
    assert!(
        drain_effect.peak_attempts_per_interval * 10 < after_drop,
        "{drain_effect:?}"
    );
    let summary = wsstorm::report::text::summary(&r);
    assert!(
        summary.contains("drop-all abrupt (300 open): lost 300, peak 300 attempts/100 ms"),
        "{summary}"
    );
    let drain_line = format!(
        "drain close 1001 over 3s (300 open): lost 300, peak {} attempts/100 ms",
        drain_effect.peak_attempts_per_interval
    );
    assert!(summary.contains(&drain_line), "{summary}");
    assert!(wsstorm::report::render(&r).contains(&format!(
        "drain close 1001 over 3s (300 connections open; then at most {} attempts in 100 ms)",
        drain_effect.peak_attempts_per_interval
    )));

    let mut doc = load("graceful-drain");
    doc.profile.timeline[1].refuse_new = Some(true);
    let plan = Plan::compile(&doc).unwrap();
    let r = run(&plan, &Options::default(), &mut |_| false).unwrap_or_else(|e| panic!("{e}"));
    let opened: u64 = r
        .timeline
        .points
        .iter()
        .filter(|p| p.t_ms > 6000 && p.t_ms <= 9000)
        .map(|p| p.opened)
        .sum();
    assert_eq!(opened, 0);
    assert!(r.groups[0].totals.connect_errors.refused > 0);
    assert_eq!(r.server.as_ref().unwrap().drained, 300);
}

/// `--until recovered` waits for a drain to finish: with the drain the timeline's last action,
/// the run is not settled while connections are still due to be closed, in a real run and in
/// the model alike.
#[test]
fn a_run_until_recovered_waits_for_the_drain_to_end() {
    let mut doc = load("graceful-drain");
    doc.profile.groups[0].clients = 100;
    doc.profile.timeline.remove(0);
    doc.profile.timeline[0].at = ms(1000);
    doc.profile.timeline[0].over = Some(ms(2000));
    // A few closes, far apart: between them every client is connected again.
    doc.profile.timeline[0].share = Some(wsstorm::units::Percent(0.05));
    // The window ends with the run; --until-recovered then runs on until all are back.
    doc.profile.duration = ms(3000);
    let mut plan = Plan::compile(&doc).unwrap_or_else(|e| panic!("{e}"));
    plan.until_recovered(Duration::from_secs(10)).unwrap();
    let real = common::run_plan(&plan);
    let modelled = wsstorm::model::run(&plan, &Default::default(), &mut |_| false).unwrap();
    for r in [&real, &modelled] {
        let settled = r.until.as_ref().unwrap().settled_at_ms;
        assert!(
            settled.is_some_and(|t| t >= 3000),
            "settled at {settled:?}, before the drain's window ended"
        );
        let drained = r.server.as_ref().unwrap().drained;
        assert!((1..=20).contains(&drained), "{drained}");
        assert_eq!(count(&r.groups[0].totals.close_codes, "1001"), drained);
        assert_eq!(r.groups[0].totals.connected_at_end, 100);
    }
}

/// The model closes connections at their lifetime as the server does: the same draw per
/// connection, so the same waves; without jitter every client is closed exactly twice in
/// 2.5 s, and a drain that comes after a connection's expiry does not close it again.
#[test]
fn the_model_expires_connections_as_the_server_does() {
    use wsstorm::model::{Options, run};
    let mut doc = load("max-lifetime");
    doc.profile.groups[0].clients = 100;
    doc.profile.duration = ms(2500);
    doc.profile.target.server.lifetime_jitter = None;
    let r = run(
        &Plan::compile(&doc).unwrap(),
        &Options::default(),
        &mut |_| false,
    )
    .unwrap();
    let g = &r.groups[0];
    let server = r.server.as_ref().unwrap();
    assert_eq!(server.lifetime_closes, 200);
    assert_eq!(count(&g.totals.close_codes, "1001"), 200);
    assert_eq!(count(&server.closes_sent, "1001"), 200);
    assert_eq!(g.totals.opened, 300);
    assert_eq!(g.totals.connected_at_end, 100);
    let closes = closes_over_time(&r, "1001");
    assert!(closes[0].0 > 1000, "{closes:?}");

    // With jitter, the spread of the first wave, as in a real run.
    let mut doc = load("max-lifetime");
    doc.profile.groups[0].clients = 100;
    doc.profile.duration = ms(2000);
    let r = run(
        &Plan::compile(&doc).unwrap(),
        &Options::default(),
        &mut |_| false,
    )
    .unwrap();
    let closes = closes_over_time(&r, "1001");
    assert!(closes[0].0 > 750, "{closes:?}");
    // Before the earliest second-wave close (750 + 750 ms).
    let wave: Vec<u64> = closes
        .iter()
        .filter(|(t, _)| *t < 1500)
        .map(|c| c.1)
        .collect();
    assert_eq!(wave.iter().sum::<u64>(), 100, "{closes:?}");
    assert!(wave.len() >= 5, "{closes:?}");

    // A drain over [1.5s, 2.5s) finds every connection's expiry at ~1s-2s after its open:
    // each closes once, by whichever comes first, and the two counts add up to the closes.
    let mut doc = load("max-lifetime");
    doc.profile.groups[0].clients = 100;
    doc.profile.duration = ms(3000);
    doc.profile.target.server.lifetime_jitter = None;
    doc.profile.timeline = vec![
        serde_yaml_ng::from_str("{ at: 1500ms, action: drain, over: 1s, code: 4000 }").unwrap(),
    ];
    let r = run(
        &Plan::compile(&doc).unwrap(),
        &Options::default(),
        &mut |_| false,
    )
    .unwrap();
    let g = &r.groups[0];
    let server = r.server.as_ref().unwrap();
    assert_eq!(server.drained, count(&g.totals.close_codes, "4000"));
    assert_eq!(server.lifetime_closes, count(&g.totals.close_codes, "1001"));
    assert!(
        server.drained > 0 && server.lifetime_closes > 100,
        "{server:?}"
    );
    assert_eq!(
        g.totals.close_codes.values().sum::<u64>(),
        server.drained + server.lifetime_closes,
        "no other close, none twice"
    );
}
