//! Connection identity, reordering, ghost sessions, revocation and duplicate subscriptions
//! (issue #18): what the server sees of each client, and what each client sees of the stream.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_util::sync::CancellationToken;
use wsstorm::plan::{Plan, PlanTarget};
use wsstorm::results::{GroupResults, Results};
use wsstorm::server::{Server, ServerConfig};

use crate::common;

fn group<'a>(r: &'a Results, name: &str) -> &'a GroupResults {
    r.groups
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no group {name}"))
}

/// A shipped profile, edited as text (`(from, to)` replacements, each of which must apply).
fn profile(name: &str, edits: &[(&str, &str)]) -> Plan {
    let path = common::root().join("profiles").join(format!("{name}.yaml"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{name}: no `{from}` to replace");
        text = text.replace(from, to);
    }
    Plan::from_yaml(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"))
}

/// The embedded server a profile describes, started on this runtime.
async fn embedded(yaml: &str) -> (wsstorm::server::ServerHandle, CancellationToken) {
    let plan = Plan::from_yaml(yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let PlanTarget::Embedded { config, .. } = plan.target else {
        panic!("not embedded")
    };
    let config: ServerConfig = *config;
    let server = Server::bind(config).await.unwrap();
    let handle = server.handle();
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(shutdown.clone()));
    (handle, shutdown)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every attempt's upgrade request carries exactly one identity header,
/// `<run_id>-<client>-<attempt>`, numbered 1, 2, … per client, under the group's header name;
/// a group with `identity_header: none` sends none.
#[test]
fn identity_header_names_run_client_and_attempt() {
    let rt = runtime();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    // Each request's group (from its X-Group header) and its identity headers.
    type Seen = Vec<(String, Vec<(String, String)>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let recorder = seen.clone();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = recorder.clone();
            tokio::spawn(async move {
                // The error type is tungstenite's; its size is not ours to choose.
                #[allow(clippy::result_large_err)]
                let record = |req: &Request, resp: Response| {
                    let h = req.headers();
                    let group = h
                        .get("x-group")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    let ids = ["x-wsstorm-client", "x-request-id"]
                        .iter()
                        .flat_map(|n| {
                            h.get_all(*n)
                                .iter()
                                .map(|v| (n.to_string(), v.to_str().unwrap().to_string()))
                        })
                        .collect();
                    seen.lock().unwrap().push((group, ids));
                    Ok(resp)
                };
                // Accept, then close at once: every client reconnects, attempt after attempt.
                if let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, record).await {
                    let _ = ws.close(None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                }
            });
        }
    });
    let yaml = format!(
        "
name: identity
seed: 3
duration: 2s
target: ws://{addr}/ws
groups:
  - name: default
    clients: 5
    arrival: {{ rate: 100/s }}
    headers: {{ X-Group: default }}
    behaviour:
      reconnect: {{ backoff: {{ strategy: fixed, base: 200ms, cap: 200ms }} }}
  - name: none
    clients: 4
    arrival: {{ rate: 100/s }}
    headers: {{ X-Group: none }}
    identity_header: none
    behaviour:
      reconnect: {{ backoff: {{ strategy: fixed, base: 200ms, cap: 200ms }} }}
  - name: request-id
    clients: 3
    arrival: {{ rate: 100/s }}
    headers: {{ X-Group: request-id }}
    identity_header: X-Request-Id
    behaviour:
      reconnect: {{ backoff: {{ strategy: fixed, base: 200ms, cap: 200ms }} }}
"
    );
    let plan = Plan::from_yaml(&yaml, "identity.yaml").unwrap_or_else(|e| panic!("{e}"));
    let (tx, _rx) = tokio::sync::watch::channel(Arc::new(wsstorm::metrics::Snapshot::default()));
    let r = rt
        .block_on(wsstorm::swarm::run(&plan, wsstorm::swarm::Stop::new(), tx))
        .unwrap();
    let run_id = r.run_id.clone().expect("a run id");
    assert_eq!(run_id.len(), 8, "{run_id}");
    assert!(run_id.bytes().all(|b| b.is_ascii_hexdigit()), "{run_id}");
    let seen = seen.lock().unwrap().clone();
    for (name, header, first, clients) in [
        ("default", Some("x-wsstorm-client"), 0u32, 5u32),
        ("none", None, 5, 4),
        ("request-id", Some("x-request-id"), 9, 3),
    ] {
        let requests: Vec<_> = seen.iter().filter(|(g, _)| g == name).collect();
        let attempts = group(&r, name).totals.connect_attempts;
        // The run may end with an attempt under way whose request was not yet read.
        assert!(
            requests.len() as u64 <= attempts
                && requests.len() as u64 + u64::from(clients) >= attempts,
            "{name}: {} requests for {attempts} attempts",
            requests.len()
        );
        assert!(
            requests.len() as u32 >= 2 * clients,
            "{name}: every client reconnected"
        );
        let Some(header) = header else {
            assert!(
                requests.iter().all(|(_, ids)| ids.is_empty()),
                "{name}: {requests:?}"
            );
            continue;
        };
        let mut per_client: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (_, ids) in &requests {
            assert_eq!(ids.len(), 1, "{name}: one identity header: {ids:?}");
            let (h, value) = &ids[0];
            assert_eq!(h, header);
            let parts: Vec<&str> = value.split('-').collect();
            assert_eq!(parts.len(), 3, "{value}");
            assert_eq!(parts[0], run_id);
            per_client
                .entry(parts[1].parse().unwrap())
                .or_default()
                .push(parts[2].parse().unwrap());
        }
        assert_eq!(
            per_client.keys().copied().collect::<Vec<_>>(),
            (first..first + clients).collect::<Vec<_>>(),
            "{name}: the run-wide client ids"
        );
        for (client, mut n) in per_client {
            n.sort();
            assert_eq!(
                n,
                (1..=n.len() as u32).collect::<Vec<_>>(),
                "client {client}: attempts 1, 2, …"
            );
        }
    }
}

/// The embedded target's ledger: a second connection of a client id while its first is open is
/// a duplicate; once the first closed, a new one is not.
#[test]
fn embedded_target_counts_duplicate_connections_by_client_id() {
    let rt = runtime();
    rt.block_on(async {
        let (handle, shutdown) = embedded(
            "
name: t
duration: 1s
target: embedded
groups: [ { name: g, clients: 1, arrival: { rate: 1/s } } ]
",
        )
        .await;
        let connect = |id: &'static str| {
            let mut req = handle.url().into_client_request().unwrap();
            req.headers_mut()
                .insert("X-Wsstorm-Client", id.parse().unwrap());
            tokio_tungstenite::connect_async(req)
        };
        let (mut a, _) = connect("0badc0de-7-1").await.unwrap();
        let (mut b, _) = connect("0badc0de-7-2").await.unwrap();
        let (mut c, _) = connect("0badc0de-8-1").await.unwrap();
        // The server counts once its answer is out: the client may be a moment ahead.
        let settled = async |n: u64| {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while handle.stats.summary().identified < n {
                assert!(tokio::time::Instant::now() < deadline, "not {n} identified");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            handle.stats.summary()
        };
        let s = settled(3).await;
        assert_eq!((s.identified, s.duplicate_connections), (3, 1));
        for ws in [&mut a, &mut b] {
            ws.close(None).await.unwrap();
            while let Some(Ok(_)) = ws.next().await {}
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while handle.stats.summary().open > 1 {
            assert!(tokio::time::Instant::now() < deadline, "closes not seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (_d, _) = connect("0badc0de-7-3").await.unwrap();
        let s = settled(4).await;
        assert_eq!((s.identified, s.duplicate_connections), (4, 1));
        c.close(None).await.unwrap();
        shutdown.cancel();
    });
}

/// `replay: after-live`: a resuming client gets a newer message before the backlog, so every
/// replayed message arrives out of order — and none is lost. In order (the default), neither.
#[test]
fn after_live_replay_delivers_out_of_order_and_loses_nothing() {
    let fewer = [("clients: 100", "clients: 40")];
    let bad = common::run_plan(&profile("out-of-order-resume", &fewer));
    let server = bad.server.as_ref().unwrap();
    let resume = group(&bad, "resume");
    assert!(resume.totals.messages.out_of_order > 0);
    assert_eq!(resume.totals.messages.lost, 0);
    assert_eq!(resume.totals.messages.duplicated, 0);
    // Every replayed message (only resuming clients get any) came after a newer one.
    assert_eq!(resume.totals.messages.out_of_order, server.stream_replayed);
    let none = group(&bad, "no-resume");
    assert_eq!(none.totals.messages.out_of_order, 0);
    assert!(none.totals.messages.lost > 0);

    let good = common::run_plan(&profile(
        "out-of-order-resume",
        &[fewer[0], ("replay: after-live", "replay: in-order")],
    ));
    let resume = group(&good, "resume");
    assert!(good.server.as_ref().unwrap().stream_replayed > 0);
    assert_eq!(resume.totals.messages.out_of_order, 0);
    assert_eq!(resume.totals.messages.lost, 0);
    assert_eq!(resume.totals.messages.duplicated, 0);
}

/// A ghosted session: after its token expired it stays open and answers pings, but the
/// client receives nothing sent after the expiry — exactly what the server sent before it.
#[test]
fn a_ghost_session_stays_open_and_receives_nothing_after_expiry() {
    let rt = runtime();
    rt.block_on(async {
        let (handle, shutdown) = embedded(
            "
name: t
duration: 1s
target:
  url: embedded
  server:
    auth: { secret: s, on_expiry: ghost }
    stream: { rate: 200/s, bytes: 64 }
groups: [ { name: g, clients: 1, arrival: { rate: 1/s } } ]
",
        )
        .await;
        let (token, _) = wsstorm::auth::Signer::new("s").mint(1, Duration::from_millis(500));
        let mut req = format!("{}?subscribe=1", handle.url())
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let stats = handle.stats.clone();
        // Read until the server has ghosted the session.
        let mut received = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stats.summary().ghosted == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never ghosted");
            if let Ok(Some(Ok(Message::Text(_)))) =
                tokio::time::timeout(Duration::from_millis(20), ws.next()).await
            {
                received += 1;
            }
        }
        let sent = stats.summary().stream_sent;
        // The stream goes on for others: wait until the server has withheld a good many.
        while stats.summary().ghost_withheld < 50 {
            assert!(tokio::time::Instant::now() < deadline, "nothing withheld");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Still open: a ping is answered, and everything before the pong is all there is.
        ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => received += 1,
                Ok(Some(Ok(Message::Pong(p)))) => {
                    assert_eq!(p.as_ref(), b"p");
                    break;
                }
                other => panic!("the ghost did not answer the ping: {other:?}"),
            }
        }
        let s = stats.summary();
        assert_eq!(
            s.stream_sent, sent,
            "nothing sent to the ghost after its expiry"
        );
        assert_eq!(
            received, sent,
            "the client got exactly what was sent before"
        );
        assert!(received > 0);
        assert_eq!((s.ghosted, s.auth_expired, s.open), (1, 1, 1));
        assert!(s.closes_sent.is_empty());
        shutdown.cancel();
    });
}

/// The ghost-connections profile: clients that watch only the connection stay connected with a
/// stream that stopped; clients that watch the stream count the stall, reconnect with a fresh
/// token and keep receiving.
#[test]
fn ghosts_look_connected_and_stall_detection_recovers() {
    let r = common::run_plan(&profile(
        "ghost-connections",
        &[
            ("clients: 100", "clients: 30"),
            ("duration: 8s", "duration: 6s"),
            ("at: 5s", "at: 4s"),
            ("timeline:", "thresholds: [\"stalled < 1\"]\ntimeline:"),
        ],
    ));
    let s = r.server.as_ref().unwrap();
    let naive = group(&r, "watch-connection");
    let watch = group(&r, "watch-stream");
    assert_eq!(naive.totals.connected_at_end, 30, "ghosts look connected");
    assert_eq!(naive.totals.connect_attempts, 30, "and are never left");
    assert_eq!(naive.totals.stalled, 0);
    assert_eq!(naive.totals.dead_detected, 0, "pings are answered");
    assert!(watch.totals.stalled >= 30, "{}", watch.totals.stalled);
    // Back after each stall (one may be reconnecting as the run ends).
    assert!(watch.totals.connected_at_end >= 27, "{:?}", watch.totals);
    assert!(watch.totals.connect_attempts > 30);
    // Tokens live 2s of a 6s run: the ghosts got about a third of what the watchers got.
    let (n, w) = (
        naive.totals.messages.received,
        watch.totals.messages.received,
    );
    assert!(w > 2 * n, "watch-stream received {w}, watch-connection {n}");
    assert!(s.ghosted >= 30 + s.revoked, "{s:?}");
    // A CI gate on ghosts: the stalls fail it.
    let gate = &r.thresholds[0];
    assert!(!gate.passed);
    assert_eq!(
        gate.measured,
        Some((naive.totals.stalled + watch.totals.stalled) as f64)
    );
    assert!(s.ghost_withheld > 0);
}

/// `revoke` de-authorizes its share of the open sessions: closed with 4003, or ghosted.
#[test]
fn revoke_closes_or_ghosts_exactly_the_open_sessions() {
    for ghost in [false, true] {
        let yaml = format!(
            "
name: revoke
seed: 5
duration: 3s
target:
  url: embedded
  server:
    auth: {{ secret: s, on_expiry: {} }}
    stream: {{ rate: 50/s }}
groups:
  - name: g
    clients: 40
    arrival: {{ rate: 1000/s }}
    behaviour:
      auth: {{ lifetime: 1h, on_expiry: refresh }}
      subscribe: {{ resume: true }}
      reconnect: {{ on_close: {{ 4003: stop }} }}
timeline:
  - {{ at: 1500ms, action: revoke }}
",
            if ghost { "ghost" } else { "close" }
        );
        let r = common::run_yaml(&yaml, "revoke.yaml");
        let s = r.server.as_ref().unwrap();
        let g = group(&r, "g");
        assert_eq!(r.timeline.actions[0].connections, 40, "ghost {ghost}");
        assert_eq!(s.revoked, 40, "ghost {ghost}");
        if ghost {
            assert_eq!(s.ghosted, 40);
            assert!(s.closes_sent.is_empty());
            assert_eq!(g.totals.connected_at_end, 40);
            assert!(s.ghost_withheld > 0);
        } else {
            assert_eq!(s.ghosted, 0);
            assert_eq!(s.closes_sent.get("4003"), Some(&40));
            assert_eq!(g.totals.close_codes.get("4003"), Some(&40));
            assert_eq!(g.totals.gave_up, 40, "4003: stop");
        }
    }
    // The token is revoked with its session: a client reconnecting with it is refused (401),
    // once for a refreshing client (it gets a new token), until it gives up for a naive one.
    let r = common::run_yaml(
        "
name: revoke
seed: 5
duration: 4s
target:
  url: embedded
  server: { auth: { secret: s } }
groups:
  - name: refresh
    clients: 20
    arrival: { rate: 1000/s }
    behaviour:
      auth: { lifetime: 1h, on_expiry: refresh }
      reconnect: { backoff: { strategy: fixed, base: 100ms, cap: 100ms, max_attempts: 3 } }
  - name: naive
    clients: 20
    arrival: { rate: 1000/s }
    behaviour:
      auth: { lifetime: 1h, on_expiry: naive }
      reconnect: { backoff: { strategy: fixed, base: 100ms, cap: 100ms, max_attempts: 3 } }
timeline:
  - { at: 1s, action: revoke }
",
        "revoke.yaml",
    );
    let (refresh, naive) = (group(&r, "refresh"), group(&r, "naive"));
    assert_eq!(r.server.as_ref().unwrap().revoked, 40);
    for g in [refresh, naive] {
        assert_eq!(g.totals.close_codes.get("4003"), Some(&20), "{}", g.name);
    }
    assert_eq!(refresh.totals.handshake_status.get("401"), Some(&20));
    assert_eq!(refresh.totals.connected_at_end, 20);
    assert_eq!(naive.totals.handshake_status.get("401"), Some(&60));
    assert_eq!(naive.totals.gave_up, 20);

    // A share: some, not all, and each counted once.
    let r = common::run_plan(&profile(
        "ghost-connections",
        &[
            ("clients: 100", "clients: 100"),
            ("lifetime: 2s", "lifetime: 1h"),
        ],
    ));
    let s = r.server.as_ref().unwrap();
    let open = r.timeline.actions[0].connections;
    assert_eq!(open, 200);
    assert!(
        (30..=90).contains(&s.revoked),
        "30% of {open}: {}",
        s.revoked
    );
    assert_eq!(
        s.ghosted, s.revoked,
        "no token expired: every ghost was revoked"
    );
}

/// Kept sessions: a client that subscribes again on every reconnect adds a subscription each
/// time, so after k reconnects each message reaches it k+1 times and the server sends every
/// copy; a client that resumes keeps one.
#[test]
fn blind_resubscribes_multiply_deliveries_and_resume_does_not() {
    let r = common::run_plan(&profile(
        "duplicate-subscriptions",
        &[("clients: 100", "clients: 40")],
    ));
    let s = r.server.as_ref().unwrap();
    let blind = group(&r, "resubscribe");
    let resume = group(&r, "resume");
    // Two mass drops, forty clients: two extra subscriptions each.
    assert_eq!(s.duplicate_subscriptions, 80);
    assert_eq!(s.duplicate_connections, 0);
    assert_eq!(resume.totals.messages.duplicated, 0);
    assert_eq!(resume.totals.messages.lost, 0);
    // Every extra copy the server sent is a duplicate the client received (a drop may take a
    // few in flight).
    let (dup, copies) = (blind.totals.messages.duplicated, s.stream_duplicate_copies);
    assert!(
        dup <= copies && dup * 100 >= copies * 95,
        "{dup} of {copies}"
    );
    // 2s once, 2s twice, 2s three times: twice what the resuming clients receive.
    let ratio = blind.totals.messages.received as f64 / resume.totals.messages.received as f64;
    assert!((1.6..=2.3).contains(&ratio), "{ratio}");
}

/// Kept sessions and users who leave: a user that leaves closes with 1000 (a logout), so the
/// server ends its kept session, and the next user of the same client id subscribes afresh:
/// no duplicate subscriptions, no extra copies, however many users come and go.
#[test]
fn a_user_who_leaves_takes_the_kept_session_with_it() {
    let r = common::run_plan(&profile(
        "duplicate-subscriptions",
        &[
            ("duration: 6s", "duration: 3s"),
            ("clients: 100", "clients: 20"),
            (
                "subscribe: { resume: false }",
                "subscribe: { resume: false }\n      session: { lifetime: { mean: 1s, distribution: fixed } }",
            ),
            ("  - { at: 2s, action: drop-all, mode: abrupt }\n", ""),
            ("  - { at: 4s, action: drop-all, mode: abrupt }\n", ""),
        ],
    ));
    let s = r.server.as_ref().unwrap();
    let blind = group(&r, "resubscribe");
    // Users left and were replaced (twice each in 3s), every one subscribing.
    let left = blind.totals.sessions_ended;
    assert!(left >= 20, "{left} users left");
    assert_eq!(s.duplicate_subscriptions, 0);
    assert_eq!(s.stream_duplicate_copies, 0);
    assert_eq!(blind.totals.messages.duplicated, 0);
}

/// The new keys' mistakes are refused with their place in the file.
#[test]
fn mistakes_in_the_new_keys_are_refused_where_they_are() {
    let refused = |yaml: &str| match Plan::from_yaml(yaml, "bad.yaml") {
        Ok(_) => panic!("accepted: {yaml}"),
        Err(e) => e.to_string(),
    };
    let e = refused(
        "
name: t
duration: 5s
target: embedded
groups:
  - name: g
    clients: 1
    arrival: { rate: 1/s }
    identity_header: \"not a header\"
",
    );
    assert!(
        e.contains("bad.yaml:9:") && e.contains("identity_header"),
        "{e}"
    );
    let e = refused(
        "
name: t
duration: 5s
target: embedded
groups: [ { name: g, clients: 1, arrival: { rate: 1/s } } ]
timeline:
  - { at: 1s, action: revoke, share: 30% }
",
    );
    assert!(
        e.contains("bad.yaml:7:") && e.contains("server.auth"),
        "{e}"
    );
    let e = refused(
        "
name: t
duration: 5s
target:
  url: embedded
  server: { stream: { rate: 10/s, sessions: keep } }
groups:
  - name: g
    clients: 1
    arrival: { rate: 1/s }
    identity_header: none
    behaviour: { subscribe: { resume: false } }
",
    );
    assert!(e.contains("sessions") && e.contains("identity"), "{e}");
    // A name that is refused is not also read as `none`: one error, about the name.
    for name in ["\"not a header\"", "upgrade", "x-id"] {
        let e = refused(&format!(
            "
name: t
duration: 5s
target:
  url: embedded
  server: {{ stream: {{ rate: 10/s, sessions: keep }} }}
groups:
  - name: g
    clients: 1
    arrival: {{ rate: 1/s }}
    identity_header: {name}
    headers: {{ x-id: a }}
    behaviour: {{ subscribe: {{ resume: false }} }}
"
        ));
        assert!(
            e.contains("bad.yaml:11:") && e.contains("identity_header"),
            "{e}"
        );
        assert!(!e.contains("identity_header: none"), "{name}: {e}");
        assert_eq!(e.lines().count(), 1, "{name}: {e}");
    }
    let e = refused(
        "
name: t
duration: 5s
target:
  url: embedded
  server: { stream: { rate: 10/s, replay: sideways } }
groups: [ { name: g, clients: 1, arrival: { rate: 1/s } } ]
",
    );
    assert!(e.contains("bad.yaml:6:") && e.contains("after-live"), "{e}");
}

/// The model closes revoked sessions with 4003 (and says the count is left out) and refuses
/// ghosts, which need the stream it does not simulate.
#[test]
fn the_model_closes_revoked_sessions_and_refuses_ghosts() {
    let yaml = |on_expiry: &str| {
        format!(
            "
name: t
duration: 5s
target:
  url: embedded
  server: {{ auth: {{ secret: s, on_expiry: {on_expiry} }} }}
groups: [ {{ name: g, clients: 10, arrival: {{ rate: 100/s }} }} ]
timeline:
  - {{ at: 2s, action: revoke }}
"
        )
    };
    let plan = Plan::from_yaml(&yaml("close"), "t.yaml").unwrap();
    let (_, notes) = wsstorm::model::check(&plan).unwrap();
    assert!(notes.iter().any(|n| n.contains("revoke")), "{notes:?}");
    let plan = Plan::from_yaml(&yaml("ghost"), "t.yaml").unwrap();
    let refused = wsstorm::model::check(&plan).expect_err("refused");
    assert!(refused.to_string().contains("ghost"), "{refused}");
}
