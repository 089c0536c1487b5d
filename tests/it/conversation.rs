//! Conversations against servers no one here wrote (tests/peers/*_server.py on `websockets`,
//! python-socketio, strawberry-graphql, PyJWT): what wsstorm measured is held against each
//! server's own ledger, count for count.

use std::time::{Duration, Instant};

use std::sync::Arc;

use serde_json::Value;
use wsstorm::metrics::Snapshot;
use wsstorm::plan::Plan;
use wsstorm::results::Results;
use wsstorm::swarm::{Stop, StopReason};

use crate::apps::App;
use crate::common::{root, run_yaml};

/// Run `yaml` in a thread, so the test can act on the server meanwhile, with a handle that
/// stops the run (as `q` on the dashboard does): a test that waits for the server's ledger to
/// show what it needs ends the run then, rather than guess a duration long enough on a busy
/// machine. The profile is named as if it were in tests/peers/, so relative files (keys,
/// feeders) resolve there.
fn spawn_stoppable(yaml: String) -> (std::thread::JoinHandle<Results>, Stop) {
    let file = root().join("tests/peers/conversation-test.yaml");
    let plan = Plan::from_yaml(&yaml, &file.to_string_lossy()).unwrap_or_else(|e| panic!("{e}"));
    let stop = Stop::new();
    let handle = stop.clone();
    let run = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tx, _rx) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));
        rt.block_on(wsstorm::swarm::run(&plan, stop, tx))
            .expect("run starts")
    });
    (run, handle)
}

/// Poll `f` every 50 ms until it holds, for at most `limit` (then fail with `what`).
fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn conv(r: &Results) -> &wsstorm::results::conversation::ConversationResults {
    r.conversation
        .as_ref()
        .expect("a run with a conversation has a conversation section")
}

/// Per client: (gaps between its lowest and highest sequence, repeats) as the server wrote
/// them, summed.
fn ledger_gaps_and_repeats(ledger: &Value) -> (u64, u64) {
    let mut gaps = 0;
    let mut repeats = 0;
    for c in ledger["clients"].as_object().expect("clients").values() {
        let (min, max, unique, delivered) = (
            c["min_seq"].as_u64().unwrap_or(0),
            c["max_seq"].as_u64().unwrap_or(0),
            c["unique"].as_u64().unwrap_or(0),
            c["delivered"].as_u64().unwrap_or(0),
        );
        if unique > 0 {
            gaps += max - min + 1 - unique;
        }
        repeats += delivered - unique;
    }
    (gaps, repeats)
}

fn pubsub_profile(url: &str, clients: u32, resume: bool) -> String {
    // With resume, the subscribe carries the last sequence seen (`null` on a first connection,
    // which the server takes as "live only").
    let from = if resume {
        r#", from: "{{last_seq}}""#
    } else {
        ""
    };
    format!(
        r#"
name: pubsub-drop
duration: 60s
grace: 2s
target: {{ url: "{url}" }}
groups:
  - name: subs
    clients: {clients}
    arrival: {{ rate: 500/s }}
    behaviour:
      reconnect:
        backoff: {{ strategy: full-jitter, base: 100ms, cap: 400ms }}
      conversation:
        query: {{ client: "{{{{client}}}}" }}
        steps:
          - send: {{ json: {{ type: subscribe, topic: prices, id: "{{{{id}}}}"{from} }} }}
          - expect: {{ name: subscribe, match: {{ json: {{ "$.type": ack }} }}, id: "$.id", timeout: 3s }}
        streams:
          - name: prices
            match: {{ json: {{ "$.type": event }} }}
            seq: "$.seq"
            published: "$.ts_us"
            published_unit: us
"#
    )
}

/// A mass drop in the middle of a run: subscribers that resume from their last sequence lose
/// nothing; subscribers that do not lose what was published while they were away. Either
/// way the losses wsstorm counts are the gaps the server's ledger shows, exactly.
fn pubsub_mass_drop(resume: bool) -> (Results, Value) {
    let clients = 40;
    let app = App::start(
        "pubsub_server.py",
        &["--port", "0", "--rate", "200", "--history", "100000"],
    );
    let (run, stop) = spawn_stoppable(pubsub_profile(&app.url("/ws"), clients, resume));
    let subscribed = |n: u64| {
        let l = app.ledger();
        l["open"].as_u64() == Some(u64::from(clients))
            && l["clients"].as_object().is_some_and(|c| {
                c.values()
                    .filter(|c| c["subscribes"].as_u64() == Some(n))
                    .count()
                    == clients as usize
            })
    };
    wait_until("every client subscribed", Duration::from_secs(60), || {
        subscribed(1)
    });
    std::thread::sleep(Duration::from_millis(500));
    let dropped = app.get("/control/drop-all?code=1012");
    assert_eq!(dropped["closed"].as_u64(), Some(u64::from(clients)));
    wait_until(
        "every client subscribed again",
        Duration::from_secs(60),
        || subscribed(2),
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.request(StopReason::Stopped);
    let results = run.join().expect("the run finished");
    (results, app.ledger())
}

#[test]
fn pubsub_mass_drop_with_resume_loses_nothing() {
    let (r, ledger) = pubsub_mass_drop(true);
    let c = conv(&r);
    let prices = &c.streams["prices"];
    let (gaps, repeats) = ledger_gaps_and_repeats(&ledger);
    assert_eq!(
        r.totals.close_codes.get("1012"),
        Some(&40),
        "{:?}",
        r.totals
    );
    assert_eq!(r.totals.opened, 80, "every client came back once");
    assert_eq!(c.steps["subscribe"].counts.matched, 80);
    assert_eq!(gaps, 0, "the server resumed every client without a gap");
    assert_eq!(prices.counts.lost, 0);
    assert_eq!(prices.counts.duplicated, repeats);
    assert_eq!(prices.counts.duplicated, 0);
    assert!(prices.counts.delivered > 0);
    assert!(prices.delivery_latency_us.count > 0);
}

#[test]
fn pubsub_mass_drop_without_resume_loses_what_the_server_skipped() {
    let (r, ledger) = pubsub_mass_drop(false);
    let prices = &conv(&r).streams["prices"];
    let (gaps, repeats) = ledger_gaps_and_repeats(&ledger);
    assert_eq!(r.totals.opened, 80);
    assert!(
        gaps > 0,
        "no resume: the reconnect skips what was published meanwhile"
    );
    assert_eq!(
        prices.counts.lost, gaps,
        "wsstorm's losses are the server's gaps"
    );
    assert_eq!(prices.counts.duplicated, repeats);
}

/// 16 requests in flight per client against a server that ignores every fourth: the
/// timeouts are the unanswered requests and the replies the answered ones, exactly.
#[test]
fn correlated_requests_time_out_exactly_when_unanswered() {
    let app = App::start(
        "pubsub_server.py",
        &[
            "--port",
            "0",
            "--answer-every",
            "4",
            "--reply-delay-ms",
            "20",
        ],
    );
    let yaml = format!(
        r#"
name: correlated
duration: 5s
target: {{ url: "{}" }}
groups:
  - name: req
    clients: 10
    arrival: {{ rate: 100/s }}
    behaviour:
      conversation:
        steps:
          - send: {{ json: {{ type: subscribe, topic: nope, id: "{{{{id}}}}" }} }}
          - expect: {{ name: refused, match: {{ json: {{ "$.type": error }} }}, id: "$.id", timeout: 3s }}
        app_errors: {{ match: {{ json: {{ "$.type": error }} }}, by: "$.code" }}
        every:
          - name: req
            every: 2ms
            count: 200
            send: {{ json: {{ type: req, id: "{{{{id}}}}" }} }}
            reply: {{ match: {{ json: {{ "$.type": res }} }}, id: "$.id", timeout: 500ms, max_in_flight: 16 }}
"#,
        app.url("/ws")
    );
    let r = run_yaml(&yaml, "correlated.yaml");
    let ledger = app.ledger();
    let req = &conv(&r).steps["req"];
    let received = ledger["requests"].as_u64().unwrap();
    assert_eq!(
        req.counts.sent, received,
        "every request reached the server"
    );
    assert_eq!(req.counts.sent, 2000, "200 per client");
    assert_eq!(req.counts.matched, ledger["answered"].as_u64().unwrap());
    assert_eq!(req.counts.timeouts, ledger["unanswered"].as_u64().unwrap());
    assert_eq!(req.counts.abandoned, 0);
    assert_eq!(req.counts.matched + req.counts.timeouts, 2000);
    assert_eq!(
        req.counts.errors, 0,
        "no request was answered with an error"
    );
    assert!(
        req.counts.skipped > 0,
        "with a 20 ms answer and a send every 2 ms, the window of 16 fills: sends are skipped"
    );
    assert!(req.latency_us.p50 >= 20_000, "{:?}", req.latency_us);
    let c = conv(&r);
    assert_eq!(c.steps["refused"].counts.matched, 10);
    assert_eq!(
        c.app_errors.count, 10,
        "one refused subscription per client"
    );
    assert_eq!(c.app_errors.by_value["unknown_topic"], 10);
    assert!(c.app_errors.rate > 0.0);
}

/// Tokens a third-party JWT library accepts, for each algorithm; and a naive client whose
/// token expires is refused as expired, as many times as the server says.
#[test]
fn jwts_are_accepted_by_pyjwt_and_expired_ones_refused() {
    for (alg, args, auth) in [
        (
            "HS256",
            vec!["--alg", "HS256", "--secret", "s3cret"],
            "alg: HS256, secret: s3cret",
        ),
        (
            "RS256",
            vec!["--alg", "RS256", "--public-key", "keys/rsa-public.pem"],
            "alg: RS256, key_file: keys/rsa-private.pem",
        ),
        (
            "ES256",
            vec!["--alg", "ES256", "--public-key", "keys/ec-public.pem"],
            "alg: ES256, key_file: keys/ec-private.pem",
        ),
    ] {
        let peers = root().join("tests/peers");
        let args: Vec<String> = ["--port", "0"]
            .iter()
            .map(|s| s.to_string())
            .chain(args.iter().map(|a| {
                if a.starts_with("keys/") {
                    peers.join(a).to_string_lossy().to_string()
                } else {
                    a.to_string()
                }
            }))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let app = App::start("jwt_server.py", &args);
        let yaml = format!(
            r#"
name: jwt-{alg}
duration: 2s
target: {{ url: "{}" }}
groups:
  - name: users
    clients: 20
    arrival: {{ rate: 200/s }}
    behaviour:
      auth:
        lifetime: 1h
        on_expiry: refresh
        send_as: query
        jwt: {{ {auth}, claims: {{ sub: "user-{{{{client}}}}", role: tester }} }}
"#,
            app.url("/ws")
        );
        let r = run_yaml(&yaml, &peers.join("jwt.yaml").to_string_lossy());
        let ledger = app.ledger();
        assert_eq!(r.totals.opened, 20, "{alg}: {:?}", r.totals);
        assert_eq!(ledger["accepted"].as_u64(), Some(20), "{alg}: {ledger}");
        let subjects = ledger["subjects"].as_array().unwrap();
        assert_eq!(subjects.len(), 20, "{alg}: one subject per client");
        assert!(subjects.iter().any(|s| s == "user-0"), "{alg}: {ledger}");
    }

    // Expired: half-second tokens (`exp` is in whole seconds, rounded up: they expire within
    // 1.5 s), a naive client that never refreshes, and a conversation that closes after
    // 1.6 s so the clients must come back with the old token.
    let app = App::start(
        "jwt_server.py",
        &["--port", "0", "--alg", "HS256", "--secret", "s3cret"],
    );
    let yaml = format!(
        r#"
name: jwt-expired
duration: 3s
target: {{ url: "{}" }}
groups:
  - name: users
    clients: 5
    arrival: {{ rate: 100/s }}
    behaviour:
      auth:
        lifetime: 500ms
        on_expiry: naive
        jwt: {{ alg: HS256, secret: s3cret }}
      conversation:
        steps:
          - wait: 1600ms
          - close: {{ code: 4000, reconnect: true }}
      reconnect:
        backoff: {{ strategy: fixed, base: 300ms }}
"#,
        app.url("/ws")
    );
    let r = run_yaml(&yaml, "jwt-expired.yaml");
    let ledger = app.ledger();
    let refused = r.totals.handshake_status.get("401").copied().unwrap_or(0);
    assert!(refused > 0, "expired tokens are refused: {:?}", r.totals);
    assert_eq!(
        ledger["rejected"]["expired"].as_u64(),
        Some(refused),
        "every 401 wsstorm saw is an expired token to PyJWT: {ledger}"
    );
    assert_eq!(ledger["accepted"].as_u64(), Some(r.totals.opened));
    assert_eq!(r.totals.opened, 5, "each client's first token was good");
    assert_eq!(ledger["rejected"]["invalid"].as_u64(), Some(0));
}

/// 200 Socket.IO clients against python-socketio: Engine.IO's handshake, a namespace, a room
/// joined with an ack, chat lines with acks and their broadcasts. The server is killed and
/// started again mid-run; every client comes back through Engine.IO's own handshake and joins
/// again, and every count matches the two servers' ledgers.
#[test]
fn socket_io_clients_survive_a_server_restart() {
    // Pings every 2 s with 5 s to answer: often enough that every connection answers some,
    // loose enough that a busy machine (CI, parallel tests) does not turn a late pong into a
    // server-side close, which would make the exact counts below count a third connection.
    let clients = 200u64;
    let mut first = App::start(
        "socketio_server.py",
        &["--port", "0", "--ping-interval", "2", "--ping-timeout", "5"],
    );
    let port = first.port.to_string();
    let yaml = format!(
        r#"
name: socket-io-restart
duration: 120s
target: {{ url: "ws://127.0.0.1:{port}/socket.io/" }}
groups:
  - name: chat
    clients: {clients}
    arrival: {{ rate: 400/s }}
    behaviour:
      reconnect:
        backoff: {{ strategy: full-jitter, base: 200ms, cap: 1s }}
      conversation:
        protocol: socket.io
        namespace: /chat
        steps:
          - emit: {{ event: join, data: {{ room: r1 }}, ack: true, timeout: 5s }}
        every:
          - name: say
            every: 1s
            count: 2
            emit: {{ event: say, data: {{ text: "hi from {{{{client}}}}" }}, ack: true, timeout: 5s }}
        streams:
          - name: ticks
            match: {{ event: tick }}
            seq: "$[1].n"
            published: "$[1].ts"
"#
    );
    let (run, stop) = spawn_stoppable(yaml);
    wait_until("every client joined", Duration::from_secs(60), || {
        first.ledger()["joins"].as_u64() == Some(clients)
    });
    // Let the chat lines go out and be acknowledged before the restart.
    wait_until(
        "two lines from every client",
        Duration::from_secs(60),
        || first.ledger()["says"].as_u64() == Some(2 * clients),
    );
    // The last acks are on their way to the clients.
    std::thread::sleep(Duration::from_secs(1));
    let before = first.ledger();
    first.kill();
    std::thread::sleep(Duration::from_millis(500));
    let second = App::start(
        "socketio_server.py",
        &[
            "--port",
            &port,
            "--ping-interval",
            "2",
            "--ping-timeout",
            "5",
        ],
    );
    wait_until(
        "every client back and joined",
        Duration::from_secs(60),
        || second.ledger()["joins"].as_u64() == Some(clients),
    );
    wait_until(
        "two lines from every client again",
        Duration::from_secs(60),
        || second.ledger()["says"].as_u64() == Some(2 * clients),
    );
    // The last acks are on their way; a second is plenty (and the tallies below account for
    // any still in flight as abandoned).
    std::thread::sleep(Duration::from_secs(1));
    stop.request(StopReason::Stopped);
    let r = run.join().expect("the run finished");
    let after = second.ledger();
    let c = conv(&r);
    let steps = |name: &str| &c.steps[name].counts;
    assert_eq!(r.totals.opened, 2 * clients, "{:?}", r.totals);
    assert_eq!(r.totals.connected_at_end, clients, "everyone came back");
    assert_eq!(before["connects"].as_u64(), Some(clients));
    assert_eq!(after["connects"].as_u64(), Some(clients));
    for sample in ["eio_open", "connect", "join"] {
        assert_eq!(
            steps(sample).matched,
            2 * clients,
            "{sample}: {:?}",
            steps(sample)
        );
        assert_eq!(steps(sample).timeouts, 0, "{sample}");
    }
    assert_eq!(
        before["joins"].as_u64().unwrap() + after["joins"].as_u64().unwrap(),
        2 * clients
    );
    assert!(c.steps["join"].latency_us.count == 2 * clients);
    // Every acknowledged line was handled by a server; lines whose ack was lost with the
    // first server were abandoned or timed out, not counted as answered.
    let says = before["says"].as_u64().unwrap() + after["says"].as_u64().unwrap();
    let say = steps("say");
    assert_eq!(say.sent, 4 * clients, "two lines per client per connection");
    assert_eq!(says, say.sent, "every line sent reached a server");
    assert_eq!(say.matched + say.timeouts + say.abandoned, say.sent);
    assert_eq!(say.timeouts, 0);
    assert_eq!(say.matched, 4 * clients, "{say:?}");
    assert!(
        steps("eio_pong").matched > 0,
        "the clients answered Engine.IO's pings"
    );
    assert!(c.streams["ticks"].counts.delivered > 0);
}

/// graphql-transport-ws against strawberry: a counter subscription per client; what arrived
/// is exactly what the server yielded, in order, without loss or repeats.
#[test]
fn graphql_subscriptions_receive_what_the_server_yielded() {
    let app = App::start("graphql_server.py", &["--port", "0"]);
    let yaml = format!(
        r#"
name: graphql-counter
duration: 4s
target: {{ url: "{}" }}
groups:
  - name: subs
    clients: 20
    arrival: {{ rate: 200/s }}
    behaviour:
      conversation:
        protocol: graphql-transport-ws
        steps:
          - subscribe: {{ name: counter, query: "subscription {{ counter(upTo: 100, intervalMs: 5) }}" }}
          - expect: {{ name: complete, match: {{ type: complete }}, id: "$.id", timeout: 3s }}
        streams:
          - name: counter
            match: {{ type: next }}
            seq: "$.payload.data.counter"
"#,
        app.url("/graphql")
    );
    let r = run_yaml(&yaml, "graphql.yaml");
    let ledger = app.ledger();
    let c = conv(&r);
    let counter = &c.streams["counter"].counts;
    assert_eq!(ledger["subscriptions"].as_u64(), Some(20));
    assert_eq!(ledger["completed"].as_u64(), Some(20));
    assert_eq!(Some(counter.delivered), ledger["yielded"].as_u64());
    assert_eq!(counter.delivered, 2000);
    assert_eq!(
        (counter.lost, counter.duplicated, counter.out_of_order),
        (0, 0, 0)
    );
    assert_eq!(c.steps["connection_ack"].counts.matched, 20);
    assert_eq!(
        c.steps["counter"].counts.matched, 20,
        "a first `next` per subscription"
    );
    assert_eq!(c.steps["complete"].counts.matched, 20);
}

/// The refresh race: a client whose token expired reconnects while its refresh is still in
/// flight, with the old token, and is refused until the refresh lands. An instant refresh
/// never races; a slow one does, and one that fails half the time races longer.
#[test]
fn a_slow_token_refresh_races_the_reconnect() {
    let yaml = |takes: &str, fails: &str| {
        format!(
            r#"
name: refresh-race
seed: 5
duration: 4s
target:
  url: embedded
  server:
    auth: {{ secret: demo-secret }}
groups:
  - name: users
    clients: 40
    arrival: {{ rate: 400/s }}
    behaviour:
      auth: {{ lifetime: 1s, on_expiry: refresh, refresh: {{ takes: {takes}, fails: {fails} }} }}
      reconnect:
        backoff: {{ strategy: fixed, base: 100ms, cap: 100ms }}
"#
        )
    };
    let instant = run_yaml(&yaml("0s", "0%"), "race.yaml");
    let slow = run_yaml(&yaml("700ms", "0%"), "race.yaml");
    let failing = run_yaml(&yaml("700ms", "50%"), "race.yaml");
    let refused = |r: &Results| r.totals.handshake_status.get("401").copied().unwrap_or(0);
    let refreshes = |r: &Results| conv(r).token_refreshes;
    assert!(
        instant.totals.opened > 40,
        "tokens expired and were renewed"
    );
    assert_eq!(refused(&instant), 0, "an instant refresh never races");
    assert!(refreshes(&instant) > 0);
    assert!(
        refused(&slow) > 0,
        "reconnects during a 700 ms refresh carry the old token: {:?}",
        slow.totals
    );
    assert_eq!(conv(&slow).token_refresh_failures, 0);
    assert!(conv(&failing).token_refresh_failures > 0);
    assert!(
        refused(&failing) > refused(&slow),
        "failed refreshes leave the old token longer: {} vs {}",
        refused(&failing),
        refused(&slow)
    );
}
