//! The fleet's own behaviours (#18; article §7, §10, §19), each run from its shipped profile:
//! churn, session lifetimes, k6-style stages, a network switch, throttled reads, duplicate
//! connections. Counts are exact where the plan fixes them; where a seeded random draw decides,
//! within a few standard deviations of what the plan's mean implies; timings are bounded by
//! the run's own schedule lag.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use wsstorm::plan::Plan;
use wsstorm::profile::Document;
use wsstorm::results::{GroupResults, Results};

use crate::common;

fn load(name: &str) -> Document {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("profiles")
        .join(format!("{name}.yaml"));
    wsstorm::profile::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn compile(doc: &Document) -> Plan {
    Plan::compile(doc).unwrap_or_else(|e| panic!("{e}"))
}

fn group<'a>(r: &'a Results, name: &str) -> &'a GroupResults {
    r.groups
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no group {name}"))
}

fn code(g: &GroupResults, c: &str) -> u64 {
    g.totals.close_codes.get(c).copied().unwrap_or(0)
}

/// How late the run was against its own schedule, at worst.
fn lag(r: &Results) -> Duration {
    Duration::from_micros(r.generator.schedule_lag_us.max)
}

/// Events of a Poisson process of rate 1/`mean` over `clients` × `span` (each event costing
/// `overhead` of its client's time on top) are within 5 standard deviations of the mean.
fn poisson_bounds(clients: f64, span: f64, mean: f64, overhead: f64) -> (u64, u64) {
    let low = clients * span / (mean + overhead);
    let high = clients * span / mean;
    (
        (low - 5.0 * low.sqrt()) as u64,
        (high + 5.0 * high.sqrt()) as u64,
    )
}

#[test]
fn churn_drops_follow_their_distribution_and_every_client_reconnects() {
    let r = common::run_plan(&compile(&load("steady-churn")));
    let slack = lag(&r).as_secs_f64() + 0.1;

    // Fixed 1.5s after each open, in a 4s run whose clients arrive within 50ms: two drops
    // per client (a third would be 4.5s in), each reconnected, everyone connected at the end
    // — when the run's lag leaves the second drop and its reconnect (a 10ms backoff and a
    // connect, each as late as the run was) inside the 4s. A slower run drops fewer.
    let metronome = group(&r, "metronome");
    let m = &metronome.totals;
    let second_back = 0.05 + 2.0 * (1.5 + 0.01 + slack);
    if second_back < 4.0 {
        assert_eq!(
            m.churn_drops,
            200,
            "2 drops x 100 clients (lag {:?})",
            lag(&r)
        );
        assert_eq!(m.opened, 300);
        assert_eq!(m.connected_at_end, 100);
    } else {
        assert!((100..=200).contains(&m.churn_drops), "{m:?}");
        assert!(m.opened <= 100 + m.churn_drops, "{m:?}");
    }
    assert!(m.close_codes.is_empty(), "drops are not closes");

    // Exponential with mean 1s: about 200 clients x 4s / 1s drops, fewer by the time each
    // reconnect takes (backoff up to 20ms, connect, lag).
    let phones = group(&r, "phones");
    let t = &phones.totals;
    let (low, high) = poisson_bounds(200.0, 4.0 - 0.1, 1.0, 0.02 + slack);
    assert!(
        (low..=high).contains(&t.churn_drops),
        "{} drops, expected {low}..={high}",
        t.churn_drops
    );
    assert_eq!(t.gave_up, 0);
    assert!(t.close_codes.is_empty(), "{:?}", t.close_codes);
    // The storm figures count each drop as a loss, and each reconnect as its recovery.
    assert_eq!(phones.storm.losses, t.churn_drops);
    assert_eq!(phones.storm.recovered, t.opened - 200);
    // Every drop was followed by a reconnect, but for the clients caught mid-reconnect when
    // the run ended: about drops per second (200) x the time a reconnect takes (a backoff of
    // up to 20ms, a connect, the run's lag).
    let reconnecting = (200.0 * (0.03 + lag(&r).as_secs_f64()) + 10.0) as u64;
    assert!(
        t.opened + reconnecting >= 200 + t.churn_drops && t.opened <= 200 + t.churn_drops,
        "{} opened after {} drops",
        t.opened,
        t.churn_drops
    );
    assert!(
        t.connected_at_end + reconnecting >= 200,
        "{} of 200 connected at the end (lag {:?})",
        t.connected_at_end,
        lag(&r)
    );

    // Sessions: each visitor leaves after an exponential lifetime of mean 1s; another
    // arrives at once.
    let visitors = group(&r, "visitors");
    let t = &visitors.totals;
    assert_eq!(t.clients_arrived, 100 + t.sessions_ended);
    let (low, high) = poisson_bounds(100.0, 4.0 - 0.1, 1.0, 0.01 + slack);
    assert!(
        (low..=high).contains(&t.sessions_ended),
        "{} sessions ended, expected {low}..={high}",
        t.sessions_ended
    );
    assert!(t.connected_at_end >= 95, "{}", t.connected_at_end);
    assert_eq!(t.churn_drops, 0);
    assert!(t.close_codes.is_empty());
    // The clients that left closed themselves (1000), as did the rest at the end.
    assert!(t.client_closes >= t.sessions_ended - 5 + t.connected_at_end - 5);
    assert_eq!(
        r.totals.churn_drops,
        phones.totals.churn_drops + metronome.totals.churn_drops
    );
    // The report says what the clients did themselves, run-wide and per group.
    let html = wsstorm::report::render(&r);
    for (key, n) in [
        ("totals.churn_drops".to_string(), r.totals.churn_drops),
        ("totals.sessions_ended".to_string(), r.totals.sessions_ended),
        (
            "totals.clients_arrived".to_string(),
            r.totals.clients_arrived,
        ),
    ] {
        assert!(
            html.contains(&format!("data-key=\"{key}\">{n}<")),
            "{key} {n}"
        );
    }
    let i = r.groups.iter().position(|g| g.name == "metronome").unwrap();
    assert!(html.contains(&format!(
        "data-key=\"groups.{i}.totals.churn_drops\">{}<",
        metronome.totals.churn_drops
    )));
}

#[test]
fn stages_ramp_up_hold_and_ramp_down_closing_with_1000() {
    let (url, seen) = recording_server();
    let mut doc = load("arrival-stages");
    doc.profile.target.url = url;
    let plan = compile(&doc);
    let visits = plan.groups[0].stage_visits();
    let planned = |t: Duration| {
        visits
            .iter()
            .filter(|(_, v)| v.arrive <= t && v.leave.is_none_or(|l| l > t))
            .count() as u64
    };
    let r = common::run_plan(&plan);
    let slack = lag(&r) + Duration::from_millis(200);
    let points = &r.timeline.points;
    assert!(points.len() > 40, "{} points", points.len());
    for p in points {
        let t = Duration::from_millis(p.t_ms);
        // Clients arrive and leave late, never early, and a point may be taken a little after
        // its instant: what is connected at t is what the stages planned at some instant
        // within the run's lag of t.
        let window: Vec<u64> = (0..=40)
            .map(|i| planned((t + slack).saturating_sub(slack.mul_f64(f64::from(i) / 20.0))))
            .collect();
        let (lo, hi) = (*window.iter().min().unwrap(), *window.iter().max().unwrap());
        assert!(
            (lo..=hi).contains(&p.connected),
            "at {} ms: {} connected, the stages planned {lo}..={hi}",
            p.t_ms,
            p.connected
        );
        // Exact in the hold and after the ramp-down.
        if t >= Duration::from_secs(1) + slack && t <= Duration::from_secs(3) {
            assert_eq!(p.connected, 200, "holding at {} ms", p.t_ms);
        }
        if t >= Duration::from_secs(4) + slack {
            assert_eq!(p.connected, 0, "ramped down by {} ms", p.t_ms);
        }
    }
    let t = &r.totals;
    assert_eq!(t.peak_connected, 200);
    assert_eq!(t.opened, 200);
    assert_eq!(t.clients_arrived, 200);
    // Every client left on the ramp-down, closing itself with 1000; none was left to close at
    // the end of the run.
    assert_eq!(t.sessions_ended, 200);
    assert_eq!(t.client_closes, 200);
    assert_eq!(t.connected_at_end, 0);
    assert!(t.close_codes.is_empty());
    // The server heard 200 close frames, each with 1000.
    let closes = seen.closes.lock().unwrap().clone();
    assert_eq!(closes.len(), 200, "{closes:?}");
    assert!(closes.iter().all(|c| *c == 1000), "{closes:?}");
    assert_eq!(seen.connections.lock().unwrap().len(), 200);
}

#[test]
fn stages_and_arrival_are_checked() {
    let base = "name: t\nduration: 5s\ntarget: embedded\ngroups:\n  - name: g\n";
    let both = format!(
        "{base}    clients: 10\n    arrival: {{ rate: 10/s }}\n    stages: [{{ duration: 1s, target: 10 }}]\n"
    );
    let e = Plan::from_yaml(&both, "both.yaml").unwrap_err().to_string();
    assert!(e.contains("both.yaml:8:") && e.contains("not both"), "{e}");
    let neither = format!("{base}    clients: 10\n");
    let e = Plan::from_yaml(&neither, "neither.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("arrival") && e.contains("stages"), "{e}");
    let peak = format!("{base}    clients: 10\n    stages: [{{ duration: 1s, target: 20 }}]\n");
    let e = Plan::from_yaml(&peak, "peak.yaml").unwrap_err().to_string();
    assert!(
        e.contains("peak.yaml:6:") && e.contains("clients: 20"),
        "{e}"
    );
    let switch = format!(
        "{base}    clients: 10\n    arrival: {{ rate: 10/s }}\n    behaviour:\n      network_switch: {{ after: 1s }}\n"
    );
    let e = Plan::from_yaml(&switch, "switch.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("source_addrs"), "{e}");
}

/// What the recording server saw: each connection's client id and peer address (in the order
/// the connections began to talk), and the code of each close frame a client sent.
#[derive(Default)]
struct Seen {
    connections: Mutex<Vec<(u32, IpAddr)>>,
    closes: Mutex<Vec<u16>>,
    /// Every upgrade request's identity header (`X-Wsstorm-Client`).
    identities: Mutex<Vec<String>>,
}

/// A WebSocket echo server that records, per connection, its peer address and the client id
/// of the first echo message it carries, and the close codes clients send.
fn recording_server() -> (String, Arc<Seen>) {
    let seen: Arc<Seen> = Arc::default();
    let record = seen.clone();
    let url = common::tcp_server(move |tcp, peer| {
        let record = record.clone();
        async move {
            let identities = record.clone();
            // The error type is tungstenite's; its size is not ours to choose.
            #[allow(clippy::result_large_err)]
            let header = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                               resp| {
                if let Some(v) = req.headers().get("x-wsstorm-client") {
                    let v = v.to_str().unwrap_or_default().to_string();
                    identities.identities.lock().unwrap().push(v);
                }
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, header).await else {
                return;
            };
            let mut first = true;
            while let Some(Ok(m)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Close(frame) = &m {
                    let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                    record.closes.lock().unwrap().push(code);
                    continue;
                }
                if m.is_text() && first {
                    first = false;
                    let text = m.to_text().unwrap_or_default();
                    if let Some(id) = text
                        .get(8..16)
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                    {
                        record.connections.lock().unwrap().push((id, peer.ip()));
                    }
                }
                if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    return;
                }
            }
        }
    });
    (url, seen)
}

#[test]
fn a_network_switch_reconnects_from_the_other_source_address() {
    let (url, seen) = recording_server();
    let mut doc = load("network-switch");
    doc.profile.target.url = url;
    let r = common::run_plan(&compile(&doc));
    let t = &r.totals;
    // Half the clients by the seed's draw; each switched once.
    assert!(
        (30..=70).contains(&t.network_switches),
        "{} of 100 switched",
        t.network_switches
    );
    assert_eq!(t.opened, 100 + t.network_switches);
    assert_eq!(t.connected_at_end, 100);
    assert_eq!(t.gave_up, 0);
    let mut by_client: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
    for (id, ip) in seen.connections.lock().unwrap().iter() {
        by_client.entry(*id).or_default().push(*ip);
    }
    assert_eq!(by_client.len(), 100, "every client's connections seen");
    let addr = |i: u32| -> IpAddr { format!("127.0.0.{}", 2 + i % 2).parse().unwrap() };
    let mut switched = 0;
    for (id, ips) in &by_client {
        // The first connection from the client's own address; after a switch, the other.
        assert_eq!(ips[0], addr(*id), "client {id}: {ips:?}");
        match ips.len() {
            1 => {}
            2 => {
                assert_eq!(ips[1], addr(id + 1), "client {id} reconnected from {ips:?}");
                switched += 1;
            }
            n => panic!("client {id}: {n} connections {ips:?}"),
        }
    }
    assert_eq!(switched, t.network_switches);
}

#[test]
fn throttled_clients_answer_late_and_live_below_the_heartbeat_timeout() {
    let r = common::run_plan(&compile(&load("throttled-clients")));
    let server = r.server.as_ref().unwrap();
    let tab = group(&r, "background-tab");
    let deep = group(&r, "deep-background");
    // Reading every 250ms against an 800ms pong timeout: late, never dropped.
    assert_eq!(code(tab, "1006"), 0, "{:?}", tab.totals.close_codes);
    assert_eq!(tab.totals.opened, 50, "{:?}", tab.totals);
    assert_eq!(tab.totals.connected_at_end, 50);
    // Late, though: echoes waited for the next read window, and no longer (a window is
    // opened late on a busy machine, never skipped).
    let late_by = Duration::from_micros(tab.latency_us.rtt.max);
    assert!(
        late_by >= Duration::from_millis(150),
        "rtt max {late_by:?}: reads were not late"
    );
    assert!(
        late_by <= Duration::from_millis(250 + 50) + 2 * lag(&r),
        "rtt max {late_by:?}: later than one 250ms delay (lag {:?})",
        lag(&r)
    );
    // Every 1.5s: the server's heartbeat kills each client at least once, and every drop
    // the clients saw is one the heartbeat made.
    let killed = code(deep, "1006");
    assert!(killed >= 50, "{killed} heartbeat drops of 50 clients");
    assert_eq!(server.dead_detected, killed);
    assert_eq!(
        deep.totals.opened,
        50 + killed - (50 - deep.totals.connected_at_end)
    );
}

#[test]
fn duplicate_connections_double_the_servers_connections_and_messages() {
    let r = common::run_plan(&compile(&load("duplicate-connections")));
    let server = r.server.as_ref().unwrap();
    let t = &r.totals;
    // The clients believe they hold 100 connections; the server holds 200.
    assert_eq!(t.duplicate_connections, 100);
    assert_eq!(t.opened, 200);
    assert_eq!(t.connected_at_end, 100);
    assert_eq!(server.upgraded, 200);
    assert!(
        t.close_codes.is_empty(),
        "no connection ended before the run"
    );
    assert_eq!(t.gave_up, 0);
    // Every stream message the server sent reached a client, and the ones on the left-open
    // connections reached it a second time.
    assert!(t.duplicate_received > 0);
    // A duplicate is no loss, and its new connection no recovery.
    assert_eq!(r.storm.losses, 0);
    assert_eq!(r.latency_us.reconnect.count, 0);
    assert!(t.duplicate_received <= t.messages.received);
    assert_eq!(
        server.stream_sent,
        t.messages.received + t.duplicate_received
    );
}

#[test]
fn the_model_refuses_who_is_connected_and_lists_throttling() {
    for name in [
        "steady-churn",
        "arrival-stages",
        "network-switch",
        "duplicate-connections",
    ] {
        let e = wsstorm::model::check(&compile(&load(name)))
            .map(|_| ())
            .expect_err(name)
            .to_string();
        assert!(e.contains("does not simulate"), "{name}: {e}");
    }
    let plan = compile(&load("throttled-clients"));
    let (_, left) = wsstorm::model::check(&plan).unwrap();
    assert!(left.iter().any(|l| l.contains("throttle")), "{left:?}");
}

#[test]
fn a_silent_switch_leaves_the_old_connection_for_the_servers_heartbeat() {
    let yaml = "
name: silent-switch
seed: 5
duration: 2s
target:
  url: embedded
  server:
    heartbeat: { ping_every: 200ms, timeout: 400ms }
groups:
  - name: g
    clients: 50
    arrival: { rate: 1000/s }
    source_addrs: [127.0.0.2, 127.0.0.3]
    behaviour:
      network_switch: { after: 300ms, mode: silent }
";
    let r = common::run_yaml(yaml, "silent-switch.yaml");
    let t = &r.totals;
    // Everyone switched (share 100%); nobody told the server, whose heartbeat found each old
    // connection dead: the clients, on their new path, saw nothing.
    assert_eq!(t.network_switches, 50);
    assert_eq!(t.opened, 100);
    assert_eq!(t.connected_at_end, 50);
    assert!(t.close_codes.is_empty(), "{:?}", t.close_codes);
    assert_eq!(r.server.as_ref().unwrap().dead_detected, 50);
}

#[test]
fn a_throttled_client_counts_no_stall_while_it_does_not_read() {
    // Reads every 400ms while throttled, a stall after 100ms of silence: the silence the
    // client could not hear (its read gate shut) is no stall.
    let yaml = "
name: throttled-stall
seed: 5
duration: 3s
target:
  url: embedded
  server:
    stream: { rate: 50/s, bytes: 64 }
groups:
  - name: g
    clients: 20
    arrival: { rate: 1000/s }
    behaviour:
      subscribe: { stall_after: 100ms, on_stall: reconnect }
      throttle: { after: 300ms, for: 2s, delay: 400ms }
";
    let r = common::run_yaml(yaml, "throttled-stall.yaml");
    let g = group(&r, "g");
    assert_eq!(g.totals.stalled, 0, "{:?}", g.totals);
    assert_eq!(g.totals.opened, 20, "{:?}", g.totals);
    assert!(g.totals.messages.received > 0, "{:?}", g.totals.messages);
}

#[test]
fn a_reconnect_after_the_clients_own_stall_close_is_no_recovery() {
    // The target keeps a connection whose token expired open and silent (a ghost): every
    // connection stalls, the client closes it (4000) and opens another with a fresh token.
    // Nothing was lost, so no open is a reconnect after a loss.
    let yaml = "
name: stall-reconnects
seed: 6
duration: 3s
target:
  url: embedded
  server:
    auth: { secret: s, on_expiry: ghost }
    stream: { rate: 50/s, bytes: 64 }
groups:
  - name: g
    clients: 10
    arrival: { rate: 1000/s }
    behaviour:
      auth: { lifetime: 500ms, on_expiry: refresh }
      subscribe: { stall_after: 200ms, on_stall: reconnect }
      reconnect: { backoff: { strategy: fixed, base: 50ms } }
";
    let r = common::run_yaml(yaml, "stall-reconnects.yaml");
    let g = group(&r, "g");
    assert!(g.totals.stalled >= 10, "{:?}", g.totals);
    assert_eq!(
        g.totals.opened,
        10 + g.totals.stalled - (10 - g.totals.connected_at_end)
    );
    assert_eq!(
        g.latency_us.reconnect.count, 0,
        "{:?}",
        g.latency_us.reconnect
    );
}

#[test]
fn a_returning_stage_client_and_a_replacement_user_number_attempts_on() {
    // Stage slots come back (5 -> 0 -> 5) and session lifetimes replace users: every attempt's
    // identity header names one attempt of the run.
    let (url, seen) = recording_server();
    let yaml = format!(
        "
name: identities
seed: 9
duration: 1500ms
target: {url}
groups:
  - name: staged
    clients: 5
    stages:
      - {{ duration: 300ms, target: 5 }}
      - {{ duration: 300ms, target: 0 }}
      - {{ duration: 300ms, target: 5 }}
  - name: visitors
    clients: 5
    arrival: {{ rate: 1000/s }}
    behaviour:
      session: {{ lifetime: {{ mean: 200ms, distribution: fixed }} }}
"
    );
    let r = common::run_yaml(&yaml, "identities.yaml");
    let staged = group(&r, "staged");
    assert_eq!(staged.totals.clients_arrived, 10, "{:?}", staged.totals);
    assert!(group(&r, "visitors").totals.sessions_ended >= 10);
    let ids = seen.identities.lock().unwrap().clone();
    assert_eq!(ids.len() as u64, r.totals.connect_attempts, "{ids:?}");
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "repeated identities: {ids:?}");
    // A returning stage client numbers on: its second visit's first attempt is its 2nd.
    let staged_ids = ids
        .iter()
        .filter_map(|v| {
            let mut p = v.split('-').skip(1);
            let client: u32 = p.next()?.parse().ok()?;
            let attempt: u32 = p.next()?.parse().ok()?;
            (client < 5).then_some((client, attempt))
        })
        .collect::<Vec<_>>();
    for c in 0..5 {
        let mut mine: Vec<u32> = staged_ids
            .iter()
            .filter(|(k, _)| *k == c)
            .map(|(_, a)| *a)
            .collect();
        mine.sort_unstable();
        assert_eq!(mine, [1, 2], "client {c}: {ids:?}");
    }
}

#[test]
fn a_replacement_user_duplicates_its_connection_as_the_first_did() {
    // Each user lives 400ms and leaks a duplicate 100ms after its first open: every user
    // that lives that long does, not only the slot's first.
    let yaml = "
name: leaky-visitors
seed: 10
duration: 1500ms
target: embedded
groups:
  - name: g
    clients: 5
    arrival: { rate: 1000/s }
    behaviour:
      session: { lifetime: { mean: 400ms, distribution: fixed } }
      duplicate_connections: { after: 100ms }
";
    let r = common::run_yaml(yaml, "leaky-visitors.yaml");
    let t = &group(&r, "g").totals;
    // Users arrive at about 0, 400ms, 800ms, 1.2s: the first three surely live 100ms.
    assert!(t.clients_arrived >= 15, "{t:?}");
    assert!(t.duplicate_connections >= 15, "{t:?}");
    assert!(t.duplicate_connections <= t.clients_arrived, "{t:?}");
}

#[test]
fn the_run_waits_for_the_left_open_connections_to_close() {
    // Every connection closes with 1000 before the run counts: the clients' own and the ones
    // they left open (on the swarm's tracker, not loose tasks the run does not wait for).
    let (url, seen) = recording_server();
    let yaml = format!(
        "
name: leaky-closes
seed: 11
duration: 1s
target: {url}
groups:
  - name: g
    clients: 20
    arrival: {{ rate: 1000/s }}
    behaviour:
      send: {{ every: 100ms, bytes: 64 }}
      duplicate_connections: {{ after: 200ms }}
"
    );
    let r = common::run_yaml(&yaml, "leaky-closes.yaml");
    let t = &group(&r, "g").totals;
    assert_eq!((t.duplicate_connections, t.opened), (20, 40), "{t:?}");
    let closes = seen.closes.lock().unwrap().clone();
    assert_eq!(
        closes.iter().filter(|c| **c == 1000).count(),
        40,
        "{closes:?}"
    );
}

#[test]
fn a_stage_client_that_leaves_while_connecting_opens_nothing() {
    // The target answers upgrades 800ms late; the stage's clients leave after about 300ms,
    // while still connecting: none of them opens a connection after it left.
    let url = common::tcp_server(|tcp, _| async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
            while let Some(Ok(_)) = ws.next().await {}
        }
    });
    let yaml = format!(
        "
name: leave-while-connecting
seed: 12
duration: 1500ms
target: {url}
groups:
  - name: g
    clients: 5
    stages:
      - {{ duration: 100ms, target: 5 }}
      - {{ duration: 200ms, target: 0 }}
"
    );
    let r = common::run_yaml(&yaml, "leave-while-connecting.yaml");
    let t = &group(&r, "g").totals;
    assert_eq!(t.connect_attempts, 5, "{t:?}");
    assert_eq!(t.opened, 0, "{t:?}");
    assert_eq!(t.sessions_ended, 5, "{t:?}");
    assert_eq!(t.connect_errors.cancelled, 5, "{t:?}");
}
