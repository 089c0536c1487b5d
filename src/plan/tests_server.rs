//! The server faults of a profile (drain, rolling restart, caps, lifetime, Origin check): what
//! the plan makes of them, and every problem named with its position.

use std::time::Duration;

use super::*;
use crate::profile::{OverLimit, ProfileError};
use crate::server::DropMode;

const BASE: &str = "\
name: t
duration: 10s
target:
  url: embedded
  server: {}
groups:
  - name: a
    clients: 10
    arrival: { rate: 100/s }
timeline:
  - ACTION
";

fn with(server: &str, action: &str) -> String {
    BASE.replace("server: {}", &format!("server: {server}"))
        .replace("ACTION", action)
}

fn plan(yaml: &str) -> Plan {
    Plan::from_yaml(yaml, "p.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// Each problem as `line:column path: message`.
fn problems(yaml: &str) -> Vec<String> {
    match Plan::from_yaml(yaml, "p.yaml") {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(ProfileError::Invalid(p)) => p
            .iter()
            .map(|p| {
                format!(
                    "{}:{} {}: {}",
                    p.line.unwrap_or(0),
                    p.column.unwrap_or(0),
                    p.path,
                    p.message
                )
            })
            .collect(),
        Err(e) => panic!("unexpected {e}"),
    }
}

#[test]
fn a_drain_closes_with_its_code_over_its_window() {
    let p = plan(&with(
        "{}",
        "{ at: 2s, action: drain, over: 3s, code: 1012, share: 50% }",
    ));
    assert_eq!(
        p.timeline[0].action,
        TimelineAction::Server(Action::Drain {
            code: 1012,
            over: Duration::from_secs(3),
            share: 0.5,
            refuse_new: false,
        })
    );
    let p = plan(&with(
        "{}",
        "{ at: 2s, action: drain, over: 1s, refuse_new: true }",
    ));
    assert_eq!(
        p.timeline[0].action.to_string(),
        "drain close 1001 over 1s refusing new connections"
    );
    let p = plan(&with("{}", "{ at: 2s, action: drain, over: 1s }"));
    assert_eq!(
        p.timeline[0].action.to_string(),
        "drain close 1001 over 1s",
        "1001 going away by default, every connection"
    );
}

#[test]
fn a_drain_needs_a_window_and_a_sendable_code() {
    assert_eq!(
        problems(&with("{}", "{ at: 2s, action: drain }")),
        ["11:23 timeline[0].action: drain needs `over`"]
    );
    assert_eq!(
        problems(&with("{}", "{ at: 2s, action: drain, over: 0s }")),
        ["11:36 timeline[0].over: must be longer than 0s"]
    );
    for code in [1005, 1015, 999, 5000] {
        let p = problems(&with(
            "{}",
            &format!("{{ at: 2s, action: drain, over: 1s, code: {code} }}"),
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("11:46 timeline[0].code: ") && p[0].contains("cannot be sent"),
            "{p:?}"
        );
    }
    let p = problems(&with(
        "{}",
        "{ at: 2s, action: drain, over: 1s, down_for: 1s }",
    ));
    assert_eq!(
        p,
        [
            "11:50 timeline[0].down_for: drain does not take `down_for` (it takes: code, share, over, refuse_new)"
        ]
    );
}

#[test]
fn a_rolling_restart_is_one_action_per_node() {
    let p = plan(&with(
        "{}",
        "{ at: 2s, action: rolling-restart, nodes: 3, every: 2s, over: 1s }",
    ));
    let PlanTarget::Embedded { config, .. } = &p.target else {
        panic!("embedded")
    };
    assert_eq!(config.nodes, 3);
    let at: Vec<u64> = p.timeline.iter().map(|a| a.at.as_secs()).collect();
    assert_eq!(at, [2, 4, 6]);
    for (k, a) in p.timeline.iter().enumerate() {
        assert_eq!(
            a.action,
            TimelineAction::Server(Action::RestartNode {
                node: k as u32,
                nodes: 3,
                mode: DropMode::Close(1012),
                over: Duration::from_secs(1),
                out_for: Duration::from_secs(2),
            })
        );
    }
    assert_eq!(
        p.timeline[1].action.to_string(),
        "restart node 2/3 close 1012 over 1s"
    );
    let p = plan(&with(
        "{}",
        "{ at: 2s, action: rolling-restart, nodes: 2, every: 1s, mode: abrupt }",
    ));
    assert_eq!(p.timeline[0].action.to_string(), "restart node 1/2 abrupt");
}

#[test]
fn a_rolling_restart_is_checked() {
    let p = problems(&with(
        "{}",
        "{ at: 2s, action: rolling-restart, nodes: 1, every: 1s }",
    ));
    assert_eq!(p, ["11:47 timeline[0].nodes: must be between 2 and 32"]);
    let p = problems(&with(
        "{}",
        "{ at: 2s, action: rolling-restart, nodes: 4, every: 1s, over: 2s }",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("11:67 timeline[0].over: 2s is longer than `every`"),
        "{p:?}"
    );
    let p = problems(&with(
        "{}",
        "{ at: 2s, action: rolling-restart, nodes: 5, every: 2s }",
    ));
    assert_eq!(
        p,
        [
            "11:57 timeline[0].every: the last node's restart (10s) is not before the end of the run (10s)"
        ]
    );
    let p = problems(&with(
        "{}",
        "{ at: 2s, action: rolling-restart, every: 2s, mode: reset, code: 1012 }",
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].contains("needs `nodes`") || p[1].contains("needs `nodes`"),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|x| x.contains("only `mode: close` sends a close code")),
        "{p:?}"
    );
    let two = BASE.replace(
        "  - ACTION\n",
        "  - { at: 1s, action: rolling-restart, nodes: 2, every: 1s }\n  - { at: 5s, action: rolling-restart, nodes: 3, every: 1s }\n",
    );
    let p = problems(&two);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("12:47 timeline[1].nodes: 3 nodes"),
        "{p:?}"
    );
}

#[test]
fn caps_lifetime_and_origins_reach_the_server() {
    let p = plan(&with(
        "{ max_connections: 200, max_connections_per_ip: 50, over_limit: close-1013, max_lifetime: 10s, lifetime_jitter: 2s, lifetime_close: abrupt, allowed_origins: [\"https://app.example\"] }",
        "{ at: 2s, action: hang }",
    ));
    let PlanTarget::Embedded { config, .. } = &p.target else {
        panic!("embedded")
    };
    assert_eq!(config.limits.max, Some(200));
    assert_eq!(config.limits.per_ip, Some(50));
    assert_eq!(config.limits.over_limit, OverLimit::Close1013);
    let l = config.max_lifetime.unwrap();
    assert_eq!(
        (l.after, l.jitter, l.close),
        (Duration::from_secs(10), Duration::from_secs(2), None)
    );
    assert_eq!(config.allowed_origins, ["https://app.example"]);
    assert_eq!(config.nodes, 1);
    let p = plan(&with("{ max_lifetime: 1s }", "{ at: 2s, action: hang }"));
    let PlanTarget::Embedded { config, .. } = &p.target else {
        panic!("embedded")
    };
    assert_eq!(config.max_lifetime.unwrap().close, Some(1001));
}

#[test]
fn caps_lifetime_and_origins_are_checked() {
    let p = problems(&with(
        "{ max_connections: 0, over_limit: close-1013 }",
        "{ at: 2s, action: hang }",
    ));
    assert_eq!(
        p,
        ["5:30 target.server.max_connections: must be at least 1"]
    );
    let p = problems(&with(
        "{ over_limit: close-1013 }",
        "{ at: 2s, action: hang }",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("5:25 target.server.over_limit: applies to"),
        "{p:?}"
    );
    let p = problems(&with(
        "{ max_lifetime: 1s, lifetime_jitter: 1s, lifetime_close: 1006 }",
        "{ at: 2s, action: hang }",
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].contains("lifetime_jitter: 1s must be shorter"),
        "{p:?}"
    );
    assert!(
        p[1].contains("lifetime_close: 1006 cannot be sent"),
        "{p:?}"
    );
    let p = problems(&with("{ lifetime_jitter: 1s }", "{ at: 2s, action: hang }"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("applies to `max_lifetime`"), "{p:?}");
    let p = problems(&with(
        "{ allowed_origins: [\"\"] }",
        "{ at: 2s, action: hang }",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("allowed_origins[0]"), "{p:?}");
    // A word that is not `abrupt` nor a code is the reader's error, with its position.
    let p = problems(&with(
        "{ max_lifetime: 1s, lifetime_close: gently }",
        "{ at: 2s, action: hang }",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("5:")
            && p[0].contains(
                "unknown close `gently`, expected a close code such as 1001, or `abrupt`"
            ),
        "{p:?}"
    );
}
