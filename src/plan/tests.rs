//! The one pass from profile text to a plan: what it builds, and every problem it names with
//! its position.

use std::time::Duration;

use super::*;
use crate::profile::{Decision, Problem, ProfileError};
use crate::proxy::{CutMode, Fault};
use crate::server::DropMode;
use crate::units::Percent;

const GOOD: &str = "\
name: t
duration: 10s
target: embedded
groups:
  - name: a
    clients: 10
    arrival: { rate: 100/s }
    behaviour:
      send: { every: 1s, bytes: 64 }
      reconnect:
        backoff: { strategy: exponential, base: 100ms, cap: 5s, max_attempts: 3 }
        on_close: { 1000: stop, 4000-4999: stop, default: retry }
        on_status: { 401: stop, 5xx: retry }
timeline:
  - { at: 5s, action: drop-all, mode: close, code: 1001 }
";

fn problems(yaml: &str) -> Vec<Problem> {
    match Plan::from_yaml(yaml, "p.yaml") {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(ProfileError::Invalid(p)) => p,
        Err(e) => panic!("unexpected {e}"),
    }
}

fn one(yaml: &str) -> Problem {
    let p = problems(yaml);
    assert_eq!(p.len(), 1, "{p:?}");
    p.into_iter().next().unwrap()
}

#[test]
fn good_profile_compiles() {
    let p = Plan::from_yaml(GOOD, "p.yaml").unwrap();
    assert_eq!(p.groups[0].clients, 10);
    let b = &p.groups[0].behaviour;
    assert_eq!(b.read_buffer, 512);
    assert_eq!(b.backoff.strategy, Strategy::Exponential);
    assert_eq!(b.backoff.max_attempts, Some(3));
    assert_eq!(b.on_close.decide(1000), Decision::Stop);
    assert_eq!(b.on_close.decide(4321), Decision::Stop);
    assert_eq!(b.on_close.decide(1006), Decision::Retry);
    assert_eq!(b.on_status.decide(401), Decision::Stop);
    assert_eq!(
        p.timeline[0].action,
        TimelineAction::Server(Action::DropAll {
            mode: DropMode::Close(1001),
            share: 1.0
        })
    );
    assert!(p.is_embedded());
    assert_eq!(p.source, GOOD);
}

#[test]
fn unknown_key_names_line_column_and_alternatives() {
    let yaml = GOOD.replace(
        "      reconnect:\n        backoff:",
        "      reconnect:\n        backof:",
    );
    let p = one(&yaml);
    assert_eq!((p.line, p.column), (Some(11), Some(9)));
    assert!(
        p.message.contains("unknown field `backof`"),
        "{}",
        p.message
    );
    assert!(
        p.message.contains("expected one of `backoff`"),
        "{}",
        p.message
    );
    let s = p.to_string();
    assert!(s.starts_with("p.yaml:11:9: "), "{s}");
}

#[test]
fn wrong_types_and_units() {
    let p = one(&GOOD.replace("clients: 10", "clients: many"));
    assert_eq!(p.line, Some(6));
    assert!(p.message.contains("invalid type"), "{}", p.message);

    let p = one(&GOOD.replace("duration: 10s", "duration: 10"));
    assert_eq!((p.line, p.column), (Some(2), Some(11)));
    assert!(
        p.message.contains("expected a number with a unit"),
        "{}",
        p.message
    );

    let p = one(&GOOD.replace("rate: 100/s", "rate: fast"));
    assert_eq!(p.line, Some(7));
    assert!(p.message.contains("invalid rate `fast`"), "{}", p.message);

    let p = one(&GOOD.replace("strategy: exponential", "strategy: fibonacci"));
    assert_eq!(p.line, Some(11));
    assert!(p.message.contains("full-jitter"), "{}", p.message);
}

#[test]
fn impossible_values_are_located() {
    let p = one(&GOOD.replace("cap: 5s", "cap: 50ms"));
    assert_eq!(p.path, "groups[0].behaviour.reconnect.backoff.cap");
    assert_eq!(p.line, Some(11));
    assert!(p.message.contains("shorter than base"), "{}", p.message);

    let p = one(&GOOD.replace("clients: 10", "clients: 0"));
    assert_eq!((p.line, p.column), (Some(6), Some(14)));

    let p = one(&GOOD.replace("at: 5s", "at: 15s"));
    assert_eq!(p.path, "timeline[0].at");
    assert_eq!(p.line, Some(15));
    assert!(p.message.contains("never fire"));

    let p = one(&GOOD.replace("code: 1001", "code: 1006"));
    assert!(p.message.contains("cannot be sent"), "{}", p.message);

    let p = one(&GOOD.replace("1000: stop", "999: stop"));
    assert_eq!(p.path, "groups[0].behaviour.reconnect.on_close.999");
    assert_eq!(p.line, Some(12));

    let p = one(&GOOD.replace("bytes: 64", "bytes: 8"));
    assert!(p.message.contains("timing header"));

    let p = one(&GOOD.replace(
        "target: embedded",
        "target: { url: embedded, server: { nice: 20 } }",
    ));
    assert_eq!(p.path, "target.server.nice");
    assert_eq!(p.line, Some(3));
    assert!(p.message.contains("0 to 19"), "{}", p.message);
}

#[test]
fn several_problems_are_reported_together() {
    let yaml = GOOD
        .replace("clients: 10", "clients: 0")
        .replace("cap: 5s", "cap: 1ms");
    assert_eq!(problems(&yaml).len(), 2);
}

#[test]
fn actions_need_the_embedded_target() {
    let p = one(&GOOD.replace("target: embedded", "target: ws://127.0.0.1:9/ws"));
    assert_eq!(p.path, "timeline[0].action");
    assert!(p.message.contains("embedded target"));
}

#[test]
fn target_forms() {
    let long = GOOD.replace(
        "target: embedded",
        "target:\n  url: embedded\n  server: { accept_rate: 100/s, retry_after: 2s }",
    );
    let p = Plan::from_yaml(&long, "p").unwrap();
    let PlanTarget::Embedded { config, .. } = &p.target else {
        panic!("embedded")
    };
    assert_eq!(config.accept_rate, Some(100.0));
    assert_eq!(config.retry_after, Duration::from_secs(2));
    let p = problems(&GOOD.replace("target: embedded", "target: http://x/"));
    assert_eq!(p[0].path, "target.url");
    assert_eq!((p[0].line, p[0].column), (Some(3), Some(9)));
    let p = one(&GOOD.replace(
        "target: embedded",
        "target:\n  url: embedded\n  server: { acept_rate: 1/s }",
    ));
    assert!(p.message.contains("unknown field `acept_rate`"));
}

#[test]
fn urls_are_parsed_for_real() {
    for (url, says) in [
        ("ws://127.0.0.1:99999/ws", "invalid port number"),
        ("ws://:80/ws", "empty host"),
        ("http://example.com/", "the scheme is `http`"),
        ("ws//missing-colon", "relative URL without a base"),
    ] {
        let p = problems(&GOOD.replace("target: embedded", &format!("target: {url}")));
        let u = p.iter().find(|p| p.path == "target.url").expect(url);
        assert!(u.message.contains(says), "{url}: {}", u.message);
        assert_eq!((u.line, u.column), (Some(3), Some(9)), "{url}");
    }
    let ok = GOOD
        .replace("target: embedded", "target: \"wss://[::1]:8443/ws?x=1\"")
        .replace(
            "  - { at: 5s, action: drop-all, mode: close, code: 1001 }\n",
            "",
        )
        .replace("timeline:\n", "");
    let p = Plan::from_yaml(&ok, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(&p.target, PlanTarget::External { host, .. } if host == "::1"));
    assert!(p.target.is_loopback());
}

#[test]
fn restart_needs_down_for() {
    let p = one(&GOOD.replace(
        "{ at: 5s, action: drop-all, mode: close, code: 1001 }",
        "{ at: 5s, action: restart }",
    ));
    assert!(p.message.contains("down_for"));
    let p = one(&GOOD.replace(
        "{ at: 5s, action: drop-all, mode: close, code: 1001 }",
        "{ at: 5s, action: restart, down_for: 1s, mode: abrupt }",
    ));
    assert_eq!(p.path, "timeline[0].mode");
}

#[test]
fn headers_are_checked() {
    let yaml = GOOD.replace(
        "    arrival: { rate: 100/s }",
        "    arrival: { rate: 100/s }\n    headers: { \"Bad Header\": x, Upgrade: y }",
    );
    let p = problems(&yaml);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().all(|x| x.line == Some(8)), "{p:?}");
}

#[test]
fn not_yaml_at_all() {
    let p = one("name: [unclosed\n");
    assert!(p.line.is_some());
    let p = one("- just\n- a list\n");
    assert!(p.message.contains("invalid type"), "{}", p.message);
}

fn plan(yaml: &str) -> Plan {
    Plan::from_yaml(yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
}

const BASE: &str = "
name: t
duration: 10s
target: embedded
groups:
  - name: a
    clients: 5
    arrival: { rate: 10/s, start: 1s }
  - name: b
    clients: 3
    arrival: { rate: 2/s, pattern: poisson }
timeline:
  - { at: 5s, action: restart, down_for: 1s }
  - { at: 2s, action: drop-all, mode: close, code: 1012, share: 50% }
";

#[test]
fn uniform_arrivals_are_exact() {
    let p = plan(BASE);
    let a: Vec<u128> = p.groups[0].arrivals(1).map(|d| d.as_millis()).collect();
    assert_eq!(a, [1000, 1100, 1200, 1300, 1400]);
    assert_eq!(p.groups[1].first_client, 5);
    assert_eq!(p.total_clients(), 8);
}

#[test]
fn poisson_arrivals_are_seeded() {
    let p = plan(BASE);
    let a: Vec<_> = p.groups[1].arrivals(7).collect();
    let b: Vec<_> = p.groups[1].arrivals(7).collect();
    let c: Vec<_> = p.groups[1].arrivals(8).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a[0], Duration::ZERO);
    assert!(a.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn timeline_is_sorted_and_resolved() {
    let p = plan(BASE);
    assert_eq!(p.timeline[0].at, Duration::from_secs(2));
    assert_eq!(
        p.timeline[0].action,
        TimelineAction::Server(Action::DropAll {
            mode: DropMode::Close(1012),
            share: 0.5
        })
    );
    assert_eq!(
        p.timeline[1].action,
        TimelineAction::Server(Action::Restart {
            down_for: Duration::from_secs(1)
        })
    );
}

#[test]
fn proxy_faults_are_planned() {
    let yaml = "
name: t
duration: 10s
target: { url: embedded, via_proxy: true }
groups:
  - { name: a, clients: 1, arrival: { rate: 1/s } }
  - { name: b, clients: 1, arrival: { rate: 1/s }, via_proxy: false }
timeline:
  - { at: 1s, action: latency, delay: 100ms, jitter: 10ms, direction: downstream }
  - { at: 2s, action: cut, mode: fin, share: 30% }
  - { at: 3s, action: heal }
";
    let p = plan(yaml);
    assert!(p.proxy.is_some());
    assert!(p.groups[0].via_proxy && !p.groups[1].via_proxy);
    assert_eq!(
        p.timeline[0].action.to_string(),
        "proxy latency 100ms ± 10ms downstream"
    );
    assert_eq!(
        p.timeline[1].action,
        TimelineAction::Proxy(Fault::Cut {
            mode: CutMode::Fin,
            share: Percent(0.3)
        })
    );
    assert_eq!(p.timeline[2].action, TimelineAction::Heal);
}

#[test]
fn thresholds_compile_with_their_options() {
    let yaml = format!(
        "{GOOD}thresholds:\n  - rtt.p99 < 50ms\n  - {{ expr: 'errors.rate < 1%', abort_on_fail: true, delay: 5s }}\n"
    );
    let p = Plan::from_yaml(&yaml, "p.yaml").unwrap();
    assert!(!p.thresholds[0].abort_on_fail);
    assert!(p.thresholds[1].abort_on_fail);
    assert_eq!(p.thresholds[1].delay, Duration::from_secs(5));
    let bad = one(&format!("{GOOD}thresholds:\n  - rtt.p99 <> 50ms\n"));
    assert_eq!(bad.path, "thresholds[0]");
    assert_eq!(bad.line, Some(17));
}

#[test]
fn a_refreshing_client_refreshes_on_4001_and_401_unless_told_otherwise() {
    let yaml = GOOD
        .replace(
            "target: embedded",
            "target: { url: embedded, server: { auth: {} } }",
        )
        .replace(
            "      send: { every: 1s, bytes: 64 }",
            "      send: { every: 1s, bytes: 64 }\n      auth: { lifetime: 10s, on_expiry: refresh }",
        )
        .replace("on_status: { 401: stop, 5xx: retry }", "on_status: { 5xx: retry }");
    let p = Plan::from_yaml(&yaml, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
    let b = &p.groups[0].behaviour;
    assert_eq!(b.on_close.decide(4001), Decision::RefreshAuth);
    assert_eq!(b.on_status.decide(401), Decision::RefreshAuth);
    assert_eq!(b.on_status.decide(503), Decision::Retry);
    assert!(b.auth.as_ref().is_some_and(|a| a.refresh));
}

#[test]
fn a_plan_group_survives_the_pipe_to_a_worker() {
    let p = Plan::from_yaml(
        &GOOD.replace(
            "    arrival: { rate: 100/s }",
            "    arrival: { rate: 100/s }\n    headers: { Origin: https://a.example }\n    subprotocols: [chat]",
        ),
        "p.yaml",
    )
    .unwrap();
    let json = serde_json::to_string(&p.groups).unwrap();
    let back: Vec<PlanGroup> = serde_json::from_str(&json).unwrap();
    let (a, b) = (&p.groups[0].behaviour, &back[0].behaviour);
    assert_eq!(a.headers, b.headers);
    assert_eq!(a.subprotocols, b.subprotocols);
    assert_eq!(b.on_close.decide(1000), Decision::Stop);
    assert_eq!(b.backoff, a.backoff);
}

/// `compression: deflate` turns the offer on; it is off by default, and an extensions header
/// of the user's own is refused with a pointer to the key.
#[test]
fn compression_is_a_key_not_a_header() {
    assert!(
        !Plan::from_yaml(GOOD, "p.yaml").unwrap().groups[0]
            .behaviour
            .deflate
    );
    let on = GOOD.replace(
        "    behaviour:\n",
        "    compression: deflate\n    behaviour:\n",
    );
    assert!(
        Plan::from_yaml(&on, "p.yaml").unwrap().groups[0]
            .behaviour
            .deflate
    );
    let header = GOOD.replace(
        "    behaviour:\n",
        "    headers: { Sec-WebSocket-Extensions: permessage-deflate }\n    behaviour:\n",
    );
    let p = one(&header);
    assert!(p.message.contains("`compression: deflate`"), "{p:?}");
}

#[test]
fn until_recovered_replaces_the_duration_with_the_cap_after_the_timeline() {
    let plan = Plan::from_yaml(GOOD, "p.yaml").unwrap();
    assert_eq!(plan.until, None);
    let mut p = plan.clone();
    p.until_recovered(Duration::from_secs(60)).unwrap();
    assert_eq!(p.duration, Duration::from_secs(60));
    assert_eq!(
        p.until,
        Some(Until {
            max: Duration::from_secs(60)
        })
    );
    // The drop-all fires at 5s: a cap at or before it could never see the recovery.
    let e = plan
        .clone()
        .until_recovered(Duration::from_secs(5))
        .unwrap_err();
    assert!(e.contains("--max 5s") && e.contains("drop-all"), "{e}");
    assert!(e.contains("at 5s"), "{e}");
    assert!(plan.clone().until_recovered(Duration::ZERO).is_err());
    // Nor before the last arrival (10 clients at 100/s: the last at 90ms).
    let calm = GOOD.replace(
        "timeline:\n  - { at: 5s, action: drop-all, mode: close, code: 1001 }\n",
        "",
    );
    let calm = Plan::from_yaml(&calm, "p.yaml").unwrap();
    let e = calm
        .clone()
        .until_recovered(Duration::from_millis(50))
        .unwrap_err();
    assert!(e.contains("last client arrives"), "{e}");
    assert!(
        calm.clone()
            .until_recovered(Duration::from_millis(100))
            .is_ok()
    );
}

/// Every client and every arrival exactly once, for any number of shards up to the clients.
#[test]
fn shards_cover_every_client_and_arrival_exactly_once() {
    let p = plan(BASE);
    let whole = |p: &Plan| -> Vec<(u32, Duration)> {
        p.groups
            .iter()
            .flat_map(|g| {
                g.arrivals(p.seed)
                    .enumerate()
                    .map(|(k, t)| (g.client_id(k as u32), t))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut expected = whole(&p);
    expected.sort();
    let clients = p.total_clients();
    for n in 1..=clients {
        let mut got = Vec::new();
        let mut total = 0;
        for i in 0..n {
            let s = p.shard(i, n).unwrap();
            total += s.total_clients();
            got.extend(whole(&s));
        }
        got.sort();
        assert_eq!(got, expected, "{n} shards");
        assert_eq!(total, clients, "{n} shards");
    }
    assert!(p.shard(3, 3).is_err(), "index out of range");
    assert!(p.shard(0, 0).is_err());
    assert!(p.shard(0, clients + 1).is_err(), "more shards than clients");
    assert!(
        p.shard(0, 2).unwrap().shard(0, 2).is_err(),
        "a shard of a shard"
    );
}
