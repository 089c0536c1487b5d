//! The embedded target's Socket.IO dialect (`target.server.socket_io`) against wsstorm's own
//! `protocol: socket.io` clients: every handshake step, ack and ping is counted at both ends,
//! and the counts are read from results.json as a user would read them.

use serde_json::Value;

use crate::common::run_yaml;

/// The run's results.json, as JSON.
fn results_json(yaml: &str) -> Value {
    serde_json::to_value(run_yaml(yaml, "socketio.yaml")).expect("results serialize")
}

fn count(v: &Value, path: &str) -> u64 {
    let mut at = v;
    for key in path.split('.') {
        at = &at[key];
    }
    at.as_u64()
        .unwrap_or_else(|| panic!("{path} is not a count: {at}"))
}

#[test]
fn socket_io_clients_connect_emit_with_acks_and_answer_every_ping() {
    const CLIENTS: u64 = 50;
    const PING_MS: u64 = 200;
    let r = results_json(&format!(
        r#"
name: socketio-embedded
duration: 2s
target:
  url: embedded
  server: {{ socket_io: {{ ping_every: {PING_MS}ms, timeout: 1s }} }}
groups:
  - name: chat
    clients: {CLIENTS}
    arrival: {{ rate: 1000/s }}
    behaviour:
      conversation:
        protocol: socket.io
        namespace: /chat
        steps:
          - emit: {{ event: say, data: {{ text: hi }}, ack: true }}
"#
    ));
    let step = |name: &str, what: &str| count(&r, &format!("conversation.steps.{name}.{what}"));
    let server = |what: &str| count(&r, &format!("server.{what}"));

    // The handshake: one open packet, one namespace connect and one ack per client.
    assert_eq!(step("eio_open", "matched"), CLIENTS);
    assert_eq!(step("connect", "matched"), CLIENTS);
    assert_eq!(step("say", "sent"), CLIENTS);
    assert_eq!(step("say", "matched"), CLIENTS);
    for name in ["eio_open", "connect", "say"] {
        assert_eq!(step(name, "timeouts"), 0, "{name}");
    }
    assert_eq!(server("socket_io_connects"), CLIENTS);
    assert_eq!(server("socket_io_acks"), CLIENTS);
    assert_eq!(server("messages_echoed"), 0, "an acked event is not echoed");
    assert_eq!(count(&r, "totals.connected_at_end"), CLIENTS);

    // Pings: every `ping_every` from each connection's start to the run's end. A client
    // arrives by 50 ms (1000/s) and is connected a moment later (the generator's own lateness
    // bounds that moment); the last ping before the end may still be on its way.
    let duration = count(&r, "duration_ms");
    let late_ms = count(&r, "generator.schedule_lag_us.max") / 1000;
    let connected_by = CLIENTS + late_ms + 100;
    let at_most = CLIENTS * (duration / PING_MS);
    let at_least = CLIENTS * (duration.saturating_sub(connected_by) / PING_MS).saturating_sub(1);
    let pings = step("eio_pong", "matched");
    assert!(
        (at_least..=at_most).contains(&pings),
        "{pings} pings received in {duration} ms, expected {at_least}..={at_most}"
    );
    assert!(at_least >= CLIENTS * 5, "the run was too short to tell");
    // Each ping answered; the server sent each one received and heard (nearly) every pong.
    assert_eq!(step("eio_pong", "sent"), pings);
    assert!(server("socket_io_pings") >= pings);
    assert!(server("socket_io_pings") <= pings + CLIENTS);
    assert!(server("socket_io_pongs") <= pings);
    assert!(server("socket_io_pongs") + CLIENTS >= pings);
    assert_eq!(server("socket_io_ping_timeouts"), 0);
    assert_eq!(server("dead_detected"), 0);
}

/// A client that does not speak Socket.IO never answers `2`: the server drops it once its
/// pong is `timeout` late, and each such drop is one the client saw (no close frame: 1006).
#[test]
fn clients_that_never_pong_are_dropped_after_the_ping_timeout() {
    const CLIENTS: u64 = 5;
    let r = results_json(&format!(
        r#"
name: socketio-silent
duration: 1500ms
target:
  url: embedded
  server: {{ socket_io: {{ ping_every: 100ms, timeout: 150ms }} }}
groups:
  - name: silent
    clients: {CLIENTS}
    arrival: {{ rate: 1000/s }}
    behaviour:
      reconnect: {{ backoff: {{ strategy: fixed, base: 100ms }} }}
"#
    ));
    let timeouts = count(&r, "server.socket_io_ping_timeouts");
    let closed = r["totals"]["close_codes"]["1006"].as_u64().unwrap_or(0);
    // Each connection lasts ~250 ms (ping at 100, dropped at 250) and the client is back
    // ~100 ms later: at least two drops per client in 1.5 s.
    assert!(timeouts >= 2 * CLIENTS, "{timeouts} ping timeouts");
    assert_eq!(closed, timeouts, "every drop reached its client");
    assert_eq!(count(&r, "server.socket_io_pongs"), 0);
    assert_eq!(count(&r, "server.dead_detected"), 0);
}

#[test]
fn socket_io_and_heartbeat_are_one_or_the_other() {
    let profile = |server: &str| {
        format!(
            "name: x\nduration: 1s\ntarget: {{ url: embedded, server: {server} }}\n\
             groups: [ {{ name: g, clients: 1, arrival: {{ rate: 1/s }} }} ]\n"
        )
    };
    let refused = |server: &str| {
        wsstorm::plan::Plan::from_yaml(&profile(server), "x.yaml")
            .err()
            .unwrap_or_else(|| panic!("{server} was accepted"))
            .to_string()
    };
    let both = refused(
        "{ heartbeat: { ping_every: 1s, timeout: 1s }, socket_io: { ping_every: 25s, timeout: 20s } }",
    );
    assert!(both.contains("target.server.socket_io"), "{both}");
    let zero = refused("{ socket_io: { ping_every: 0s, timeout: 20s } }");
    assert!(
        zero.contains("target.server.socket_io.ping_every"),
        "{zero}"
    );
    assert!(
        wsstorm::plan::Plan::from_yaml(
            &profile("{ socket_io: { ping_every: 25s, timeout: 20s } }"),
            "x.yaml"
        )
        .is_ok()
    );
}
