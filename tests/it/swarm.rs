//! Whole runs in-process against the embedded target on 127.0.0.1:0: small swarms, a few
//! seconds each, exact counts.

use crate::common;

use std::sync::Arc;

use tokio::sync::watch;
use wsstorm::metrics::Snapshot;
use wsstorm::plan::Plan;
use wsstorm::results::{EndReason, Results};

fn run(yaml: &str) -> Results {
    common::run_yaml(yaml, "test.yaml")
}

/// Every attempt ends in exactly one outcome, and every opened connection closes exactly once.
fn assert_books_balance(r: &Results) {
    let t = &r.totals;
    let statuses: u64 = t.handshake_status.values().sum();
    assert_eq!(
        t.connect_attempts,
        t.opened + t.connect_errors.total() + statuses,
        "attempts = opened + errors + statuses: {t:#?}"
    );
    let peer_closes: u64 = t.close_codes.values().sum();
    let violations: u64 = t.client_close_codes.values().sum();
    assert_eq!(
        t.opened,
        peer_closes + violations + t.client_closes,
        "every open closes once: {t:#?}"
    );
    let from_points: u64 = r.timeline.points.iter().map(|p| p.attempts).sum();
    assert_eq!(
        from_points, t.connect_attempts,
        "timeline adds up to the totals"
    );
}

fn code(r: &Results, c: &str) -> u64 {
    r.totals.close_codes.get(c).copied().unwrap_or(0)
}

#[test]
fn five_hundred_clients_connect_and_echo() {
    let r = run("
name: echo
duration: 3s
target: embedded
groups:
  - name: echo
    clients: 500
    arrival: { rate: 2000/s }
    behaviour:
      send: { every: 500ms, bytes: 64 }
");
    let t = &r.totals;
    assert_eq!(r.end_reason, EndReason::Completed);
    assert_eq!(t.clients, 500);
    assert_eq!(t.opened, 500);
    assert_eq!(t.connect_attempts, 500);
    assert_eq!(t.connect_errors.total(), 0);
    assert!(t.handshake_status.is_empty());
    assert!(t.close_codes.is_empty(), "{:?}", t.close_codes);
    assert_eq!(t.connected_at_end, 500);
    assert_eq!(t.peak_connected, 500);
    assert_eq!(t.client_closes, 500);
    assert!(r.latency_us.rtt.count > 0);
    assert!(t.messages.received > 0 && t.messages.received <= t.messages.sent);
    assert_eq!(r.latency_us.connect.count, 500);
    assert_eq!(r.latency_us.handshake.count, 500);
    assert!(!r.latency_us.rtt.hdr.is_empty());
    let server = r.server.as_ref().unwrap();
    assert_eq!(server.upgraded, 500);
    assert_eq!(server.messages_echoed, t.messages.received);
    assert_books_balance(&r);
}

#[test]
fn abrupt_drop_all_gives_1006_and_everyone_reconnects() {
    let r = run("
name: drop
duration: 4s
target: embedded
groups:
  - name: g
    clients: 500
    arrival: { rate: 2000/s }
    behaviour:
      reconnect:
        backoff: { strategy: full-jitter, base: 50ms, cap: 500ms }
timeline:
  - { at: 1s, action: drop-all, mode: abrupt }
");
    let t = &r.totals;
    assert_eq!(code(&r, "1006"), 500, "{:?}", t.close_codes);
    assert_eq!(t.close_codes.len(), 1);
    assert_eq!(t.opened, 1000);
    assert_eq!(t.connected_at_end, 500);
    assert_eq!(r.latency_us.reconnect.count, 500);
    assert_eq!(r.timeline.actions.len(), 1);
    assert_eq!(r.timeline.actions[0].connections, 500);
    assert!(r.timeline.actions[0].action.starts_with("drop-all abrupt"));
    assert_books_balance(&r);
}

#[test]
fn reset_drop_also_reads_as_1006() {
    let r = run("
name: reset
duration: 3s
target: embedded
groups:
  - name: g
    clients: 200
    arrival: { rate: 2000/s }
    behaviour:
      reconnect: { backoff: { strategy: full-jitter, base: 50ms, cap: 300ms } }
timeline:
  - { at: 1s, action: drop-all, mode: reset }
");
    assert_eq!(code(&r, "1006"), 200, "{:?}", r.totals.close_codes);
    assert_eq!(r.totals.connected_at_end, 200);
    assert_books_balance(&r);
}

#[test]
fn drop_all_with_1001_is_seen_as_1001() {
    let r = run("
name: going-away
duration: 3s
target: embedded
groups:
  - name: g
    clients: 500
    arrival: { rate: 2000/s }
    behaviour:
      reconnect: { backoff: { strategy: equal-jitter, base: 50ms, cap: 500ms } }
timeline:
  - { at: 1s, action: drop-all, mode: close, code: 1001 }
");
    assert_eq!(code(&r, "1001"), 500, "{:?}", r.totals.close_codes);
    assert_eq!(r.totals.close_codes.len(), 1);
    assert_eq!(r.totals.connected_at_end, 500);
    assert_books_balance(&r);
}

#[test]
fn accept_rate_capacity_answers_503_and_clients_still_get_in() {
    let r = run("
name: capacity
duration: 7s
target:
  url: embedded
  server: { accept_rate: 200/s, accept_burst: 20, retry_after: 1s }
groups:
  - name: g
    clients: 300
    arrival: { rate: 1000/s }
    behaviour:
      reconnect: { backoff: { strategy: full-jitter, base: 100ms, cap: 2s } }
");
    let t = &r.totals;
    let rejected = t.handshake_status.get("503").copied().unwrap_or(0);
    assert!(rejected > 0, "{:?}", t.handshake_status);
    assert_eq!(t.handshake_status.len(), 1);
    assert_eq!(t.connected_at_end, 300);
    assert_eq!(t.opened, 300);
    assert_eq!(t.connect_attempts, 300 + rejected);
    assert_eq!(r.server.as_ref().unwrap().rejected_503, rejected);
    assert_books_balance(&r);
}

#[test]
fn stop_policy_gives_up_and_never_reconnects() {
    let r = run("
name: stop
duration: 3s
target: embedded
groups:
  - name: quitters
    clients: 250
    arrival: { rate: 2000/s }
    behaviour:
      reconnect:
        backoff: { strategy: full-jitter, base: 50ms, cap: 300ms }
        on_close: { 1001: stop, default: retry }
  - name: stayers
    clients: 250
    arrival: { rate: 2000/s }
    behaviour:
      reconnect: { backoff: { strategy: full-jitter, base: 50ms, cap: 300ms } }
timeline:
  - { at: 1s, action: drop-all, mode: close, code: 1001 }
");
    let t = &r.totals;
    assert_eq!(code(&r, "1001"), 500);
    assert_eq!(t.gave_up, 250);
    assert_eq!(t.connect_attempts, 750, "quitters never try again");
    assert_eq!(t.connected_at_end, 250);
    assert_books_balance(&r);
}

#[test]
fn max_attempts_against_a_restarting_server() {
    // The server refuses connections for 2s; clients allowed 2 attempts give up, the
    // unbounded ones get back in after the restart.
    let r = run("
name: restart
duration: 4500ms
target: embedded
groups:
  - name: bounded
    clients: 50
    arrival: { rate: 1000/s }
    behaviour:
      reconnect: { backoff: { strategy: fixed, base: 100ms, cap: 100ms, max_attempts: 2 } }
  - name: unbounded
    clients: 50
    arrival: { rate: 1000/s }
    behaviour:
      reconnect: { backoff: { strategy: fixed, base: 200ms, cap: 200ms } }
timeline:
  - { at: 1s, action: restart, down_for: 2s }
");
    let t = &r.totals;
    assert_eq!(code(&r, "1006"), 100, "{:?}", t.close_codes);
    assert_eq!(t.gave_up, 50);
    assert!(t.connect_errors.refused >= 100, "{:?}", t.connect_errors);
    assert_eq!(t.connected_at_end, 50);
    assert_eq!(r.timeline.actions[0].action, "restart down_for 2s");
    assert_books_balance(&r);
}

#[test]
fn unreachable_target_ends_on_time_with_refusals() {
    // Bind a port and close it again: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = std::time::Instant::now();
    let r = run(&format!(
        "
name: unreachable
duration: 2s
target: ws://127.0.0.1:{port}/ws
groups:
  - name: g
    clients: 20
    arrival: {{ rate: 100/s }}
    behaviour:
      reconnect: {{ backoff: {{ strategy: full-jitter, base: 50ms, cap: 200ms }} }}
"
    ));
    assert!(started.elapsed() < std::time::Duration::from_secs(6));
    assert_eq!(r.end_reason, EndReason::Completed);
    let t = &r.totals;
    assert_eq!(t.opened, 0);
    assert!(t.connect_errors.refused > 20, "{:?}", t.connect_errors);
    assert_eq!(t.connected_at_end, 0);
    assert!(r.server.is_none());
    assert_books_balance(&r);
}

#[test]
fn share_drops_only_part_of_the_swarm() {
    let r = run("
name: share
duration: 2500ms
target: embedded
groups:
  - name: g
    clients: 400
    arrival: { rate: 4000/s }
    behaviour:
      reconnect: { on_close: { default: stop } }
timeline:
  - { at: 1s, action: drop-all, mode: close, code: 1012, share: 25% }
");
    let dropped = code(&r, "1012");
    assert!((60..=140).contains(&dropped), "{dropped}");
    assert_eq!(r.totals.gave_up, dropped);
    assert_eq!(r.totals.connected_at_end, 400 - dropped);
    assert_eq!(r.server.as_ref().unwrap().dropped_by_action, dropped);
    assert_books_balance(&r);
}

#[test]
fn heartbeat_pongs_keep_connections_alive() {
    let r = run("
name: heartbeat
duration: 2s
target: embedded
groups:
  - name: g
    clients: 50
    arrival: { rate: 1000/s }
    behaviour:
      heartbeat: { ping_every: 200ms, timeout: 500ms }
");
    assert_eq!(r.totals.dead_detected, 0);
    assert_eq!(r.totals.connected_at_end, 50);
    assert_books_balance(&r);
}

#[test]
fn stuck_sends_do_not_hide_a_hung_server() {
    // The server hangs (reads nothing) while each client pushes 25 MB/s: the socket buffers
    // (~10 MB on loopback) are full well before the next ping is due, so the clients sit in a
    // blocked send with no ping in flight. The heartbeat must still find every connection dead
    // (nothing arrived for ping interval + timeout), and the run must end on time. The server
    // must also let go of the hung sockets once the clients have.
    let started = std::time::Instant::now();
    let r = run("
name: stuck
duration: 6s
target: { url: embedded, server: { max_message: 1MiB } }
groups:
  - name: g
    clients: 3
    arrival: { rate: 1000/s }
    behaviour:
      send: { every: 10ms, bytes: 256KiB }
      heartbeat: { ping_every: 1s, timeout: 2s }
      reconnect: { on_close: { default: stop } }
timeline:
  - { at: 1s, action: hang }
");
    assert!(started.elapsed() < std::time::Duration::from_secs(11));
    assert_eq!(r.totals.dead_detected, 3, "{:?}", r.totals);
    assert_eq!(r.server.as_ref().unwrap().hung, 3);
    // Interval + timeout, plus however late the generator itself was (a busy machine).
    assert!(
        r.latency_us.dead_detect.max <= 3_300_000 + r.generator.schedule_lag_us.max,
        "{:?}, lag {:?}",
        r.latency_us.dead_detect,
        r.generator.schedule_lag_us
    );
    assert_eq!(r.server.as_ref().unwrap().open, 0, "hung sockets released");
    assert_books_balance(&r);
}

#[test]
fn server_heartbeat_keeps_answering_clients() {
    // Server pings go through the outbox's byte count; a miscount would break the session.
    let r = run("
name: server-pings
duration: 2s
target:
  url: embedded
  server: { heartbeat: { ping_every: 100ms, timeout: 1s }, backpressure: { buffer: 4KiB } }
groups:
  - name: g
    clients: 50
    arrival: { rate: 1000/s }
    behaviour:
      send: { every: 50ms, bytes: 64 }
");
    assert!(
        r.totals.close_codes.is_empty(),
        "{:?}",
        r.totals.close_codes
    );
    assert_eq!(r.totals.connected_at_end, 50);
    let s = r.server.as_ref().unwrap();
    assert_eq!(s.dead_detected, 0);
    assert_eq!(s.backpressure_dropped, 0);
    assert_eq!(s.messages_echoed, r.totals.messages.received);
}

#[test]
fn actions_at_the_same_instant_all_arrive() {
    let r = run("
name: same-instant
duration: 3s
target: embedded
groups:
  - name: g
    clients: 200
    arrival: { rate: 2000/s }
    behaviour:
      reconnect: { backoff: { strategy: fixed, base: 100ms, cap: 100ms } }
timeline:
  - { at: 1s, action: drop-all, mode: close, code: 1001, share: 50% }
  - { at: 1s, action: restart, down_for: 500ms }
");
    let t = &r.totals;
    let going_away = t.close_codes.get("1001").copied().unwrap_or(0);
    let abrupt = t.close_codes.get("1006").copied().unwrap_or(0);
    assert!(going_away > 50 && abrupt > 50, "{:?}", t.close_codes);
    assert_eq!(going_away + abrupt, 200);
    assert!(t.connect_errors.refused > 0, "the restart happened too");
    assert_eq!(t.connected_at_end, 200);
    assert_books_balance(&r);
}

/// A server no WebSocket library would be: `serve` gets each connection, numbered in the
/// order they arrive, on a thread of its own. Returns the port.
fn raw_server(serve: impl Fn(usize, std::net::TcpStream) + Clone + Send + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(s) = stream else { continue };
            let serve = serve.clone();
            std::thread::spawn(move || serve(i, s));
        }
    });
    port
}

#[test]
fn an_absurd_retry_after_does_not_crash_the_client() {
    // A server that answers every upgrade with 503 and a Retry-After of u64::MAX seconds.
    let port = raw_server(|_, mut s| {
        use std::io::{Read, Write};
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 18446744073709551615\r\ncontent-length: 0\r\n\r\n",
        );
    });
    let started = std::time::Instant::now();
    let r = run(&format!(
        "
name: retry-after
duration: 2s
target: ws://127.0.0.1:{port}/ws
groups:
  - name: g
    clients: 10
    arrival: {{ rate: 100/s }}
"
    ));
    assert!(started.elapsed() < std::time::Duration::from_secs(6));
    assert_eq!(r.totals.handshake_status.get("503"), Some(&10));
    assert_eq!(
        r.totals.connect_attempts, 10,
        "each waits (an hour at most) after its 503"
    );
    assert_eq!(r.storm.attempts_per_client.max, 1);
    assert_books_balance(&r);
}

fn run_with_workers(yaml: &str, workers: usize) -> Results {
    let mut plan = Plan::from_yaml(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    plan.layout.workers = workers;
    plan.layout.exe = Some(env!("CARGO_BIN_EXE_wsstorm").into());
    common::run_plan(&plan)
}

#[test]
fn two_worker_processes_give_the_same_totals_as_one() {
    let yaml = "
name: shards
duration: 3s
target: embedded
groups:
  - name: quitters
    clients: 150
    arrival: { rate: 1000/s }
    behaviour:
      send: { every: 300ms, bytes: 64 }
      reconnect: { on_close: { 1001: stop } }
  - name: stayers
    clients: 151
    arrival: { rate: 1000/s, pattern: poisson }
    behaviour:
      reconnect: { backoff: { strategy: full-jitter, base: 50ms, cap: 300ms } }
timeline:
  - { at: 1500ms, action: drop-all, mode: close, code: 1001 }
";
    let one = run_with_workers(yaml, 0);
    let two = run_with_workers(yaml, 2);
    for (r, label) in [(&one, "1 process"), (&two, "2 workers")] {
        assert_books_balance(r);
        assert_eq!(r.totals.connected_at_end, 151, "{label}");
    }
    let (a, b) = (&one.totals, &two.totals);
    assert_eq!(a.clients, b.clients);
    assert_eq!(a.connect_attempts, b.connect_attempts);
    assert_eq!(a.opened, b.opened);
    assert_eq!(a.close_codes, b.close_codes);
    assert_eq!(a.gave_up, b.gave_up);
    assert_eq!(a.client_closes, b.client_closes);
    assert_eq!(a.connected_at_end, b.connected_at_end);
    assert_eq!(a.connect_errors, b.connect_errors);
    for (ga, gb) in one.groups.iter().zip(&two.groups) {
        assert_eq!(ga.totals.opened, gb.totals.opened, "{}", ga.name);
        assert_eq!(ga.totals.gave_up, gb.totals.gave_up, "{}", ga.name);
        assert_eq!(ga.latency_us.connect.count, gb.latency_us.connect.count);
    }
    assert_eq!(
        two.latency_us.reconnect.count, 151,
        "histograms merged from both workers"
    );
    assert!(two.latency_us.rtt.count > 0);
    assert!(
        two.generator
            .samples
            .iter()
            .any(|s| s.rss_bytes > one.generator.samples[0].rss_bytes)
    );
}

#[test]
fn a_target_over_two_processes_serves_and_drops_like_one() {
    let yaml = "
name: target-processes
duration: 4s
target: embedded
groups:
  - name: g
    clients: 300
    arrival: { rate: 2000/s }
    behaviour:
      send: { every: 250ms, bytes: 64 }
      # Not sooner than 100 ms: both processes restart within that.
      reconnect: { backoff: { strategy: equal-jitter, base: 200ms, cap: 400ms } }
timeline:
  - { at: 1s, action: drop-all, mode: close, code: 1012 }
  - { at: 2s, action: restart, down_for: 500ms }
";
    let mut plan = Plan::from_yaml(yaml, "test.yaml").unwrap();
    plan.layout.server_processes = 2;
    plan.layout.workers = 2;
    plan.layout.exe = Some(env!("CARGO_BIN_EXE_wsstorm").into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, _rx) = watch::channel(Arc::new(Snapshot::default()));
    let r = rt
        .block_on(wsstorm::swarm::run(&plan, wsstorm::swarm::Stop::new(), tx))
        .unwrap();
    let t = &r.totals;
    assert_eq!(t.close_codes.get("1012"), Some(&300), "{:?}", t.close_codes);
    assert_eq!(
        t.close_codes.get("1006"),
        Some(&300),
        "the restart reached both"
    );
    assert!(t.connect_errors.refused > 0);
    assert_eq!(t.connected_at_end, 300);
    let s = r.server.as_ref().unwrap();
    assert_eq!(s.upgraded, t.opened, "counters summed over the processes");
    assert_eq!(s.closes_sent.get("1012"), Some(&300));
    // Echoes queued on a connection the timeline then cut are counted but never arrive.
    assert!(s.messages_echoed >= t.messages.received);
    assert!(s.messages_echoed - t.messages.received <= 20);
    assert_eq!(r.timeline.actions[0].connections, 300);
    assert_books_balance(&r);
}

#[test]
fn closed_loop_keeps_a_window_of_messages_in_flight() {
    let r = run("
name: closed-loop
duration: 2s
target: embedded
groups:
  - name: g
    clients: 20
    arrival: { rate: 1000/s }
    behaviour:
      send: { in_flight: 2, bytes: 64 }
");
    let m = &r.totals.messages;
    // Each echo sends the next: at most the window is unanswered when the run ends.
    assert!(m.received > 20 * 50, "busy: {} round trips", m.received);
    assert!(m.sent >= m.received && m.sent - m.received <= 40, "{m:?}");
    assert_eq!(r.latency_us.rtt.count, m.received);
    assert_books_balance(&r);
}

#[test]
fn a_closed_loop_slow_consumer_still_sends_at_its_read_rate() {
    // A closed-loop client buffers each next message and writes it when a read would wait or,
    // while it may not read (read: max_rate), at the top of its loop. Either way it must go
    // out: one message in flight that never left would stop the client at one round trip.
    let r = run("
name: closed-loop-slow
duration: 2s
target: embedded
groups:
  - name: g
    clients: 10
    arrival: { rate: 1000/s }
    behaviour:
      send: { in_flight: 1, bytes: 64 }
      read: { max_rate: 20/s }
");
    let m = &r.totals.messages;
    // 20 reads a second for ~2 s per client, one message in flight: ~40 round trips each.
    assert!(
        (10 * 34..=10 * 42).contains(&m.received),
        "{} round trips",
        m.received
    );
    assert!(m.sent - m.received <= 10, "{m:?}");
    assert_books_balance(&r);
}

/// This process's children started as `exe worker` (client worker processes).
fn worker_pids(exe: &std::path::Path) -> Vec<i32> {
    let me = std::process::id().to_string();
    let wanted = format!("{}\0worker", exe.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .to_string();
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
            (ppid == me && cmd.trim_end_matches('\0') == wanted).then_some(pid)
        })
        .collect()
}

#[test]
fn a_worker_that_dies_mid_run_fails_the_run_and_says_so() {
    let yaml = "
name: a-worker-dies
duration: 3s
target: embedded
groups:
  - name: g
    clients: 100
    arrival: { rate: 1000/s }
";
    // Under a name of its own, so this test's workers are told apart from other tests'.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("wsstorm-dying-worker");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_wsstorm"), &exe).unwrap();
    let mut plan = Plan::from_yaml(yaml, "test.yaml").unwrap();
    plan.layout.workers = 2;
    plan.layout.exe = Some(exe.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, _rx) = watch::channel(Arc::new(Snapshot::default()));
    let started = std::time::Instant::now();
    let r = rt.block_on(async {
        let run = tokio::spawn({
            let plan = plan.clone();
            async move { wsstorm::swarm::run(&plan, wsstorm::swarm::Stop::new(), tx).await }
        });
        // Once both workers run and their clients are in, kill one.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let pids = worker_pids(&exe);
        assert_eq!(pids.len(), 2, "{pids:?}");
        unsafe_kill(pids[0]);
        run.await.unwrap().unwrap()
    });
    let failed = r.failed.as_deref().unwrap_or_default();
    assert!(
        failed.contains("ended at") && failed.contains("its 50 clients"),
        "{failed}"
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("ended unexpectedly")),
        "{:?}",
        r.warnings
    );
    // The survivor's clients are all there at the end; the dead worker's answered nothing.
    assert_eq!(r.totals.connected_at_end, 50);
    // Its questions were answered when its pipe closed, not after a timeout each.
    // (Waiting out those timeouts would take 17 s more than the 3 s run.)
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

fn unsafe_kill(pid: i32) {
    // SAFETY: kill(2) with a pid this test found among its own children.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// A server no library would be: it completes the upgrade, then breaks the protocol, a
/// different way for each connection in turn, and notes the close code each client sends.
fn protocol_breaking_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<u16>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let codes = seen.clone();
    let port = raw_server(move |i, mut s| {
        use std::io::{Read, Write};
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&req);
        let key = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("Sec-WebSocket-Key: ")
                    .or_else(|| l.strip_prefix("sec-websocket-key: "))
            })
            .unwrap_or_default()
            .trim()
            .to_string();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let _ = write!(
            s,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        let bad: &[u8] = match i % 3 {
            // A frame with reserved opcode 0x3.
            0 => &[0x83, 0x00],
            // A text message that is not UTF-8.
            1 => &[0x81, 0x02, 0xC3, 0x28],
            // A masked frame: servers must not mask.
            _ => &[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2],
        };
        let _ = s.write_all(bad);
        // The client's close frame: FIN+close, masked length, mask, code ^ mask.
        let mut frame = [0u8; 8];
        if s.read_exact(&mut frame).is_ok() && frame[0] == 0x88 {
            let code = u16::from_be_bytes([frame[6] ^ frame[2], frame[7] ^ frame[3]]);
            codes.lock().unwrap().push(code);
        }
    });
    (port, seen)
}

#[test]
fn a_server_that_breaks_the_protocol_is_told_why_and_counted_apart() {
    let (port, seen) = protocol_breaking_server();
    let r = run(&format!(
        "
name: protocol-breaker
duration: 2s
target: ws://127.0.0.1:{port}/ws
groups:
  - name: g
    clients: 9
    arrival: {{ rate: 100/s }}
    behaviour:
      reconnect: {{ on_close: {{ 1002: stop, 1007: stop, 1009: stop }} }}
"
    ));
    let t = &r.totals;
    assert_eq!(t.opened, 9);
    // Reserved opcode and masked frame: 1002; invalid UTF-8: 1007. Not the network's 1006.
    assert_eq!(t.client_close_codes.get("1002"), Some(&6), "{t:#?}");
    assert_eq!(t.client_close_codes.get("1007"), Some(&3), "{t:#?}");
    assert!(t.close_codes.is_empty(), "{:?}", t.close_codes);
    assert_eq!(t.gave_up, 9);
    assert_eq!(r.storm.losses, 9, "a forced close is a loss");
    assert_books_balance(&r);
    // And the server was told, as RFC 6455 asks.
    let mut codes = seen.lock().unwrap().clone();
    codes.sort();
    assert_eq!(
        codes,
        [1002, 1002, 1002, 1002, 1002, 1002, 1007, 1007, 1007]
    );
}

/// A server that fails the upgrade a different way for each connection in turn.
fn handshake_breaking_server() -> u16 {
    raw_server(|i, mut s| {
        use std::io::{Read, Write};
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = match i % 3 {
            // Gone before answering.
            0 => Ok(()),
            // Not a web server at all.
            1 => s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            // A 101 that does not prove it read the key.
            _ => s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n",
            ),
        };
    })
}

#[test]
fn handshake_failures_are_named_with_an_example_each() {
    let port = handshake_breaking_server();
    let r = run(&format!(
        "
name: handshake-breaker
duration: 2s
target: ws://127.0.0.1:{port}/ws
groups:
  - name: g
    clients: 9
    arrival: {{ rate: 50/s }}
    behaviour:
      reconnect: {{ backoff: {{ strategy: fixed, max_attempts: 1 }} }}
"
    ));
    let e = &r.totals.connect_errors;
    assert_eq!(
        (e.closed_in_handshake, e.not_http, e.bad_upgrade),
        (3, 3, 3),
        "{e:#?}"
    );
    assert_eq!((e.reset, e.other), (0, 0), "{e:#?}");
    assert!(e.examples["not_http"].contains("SSH-2.0"), "{e:#?}");
    assert!(
        e.examples["bad_upgrade"].contains("Sec-WebSocket-Accept"),
        "{e:#?}"
    );
    assert!(
        e.examples["closed_in_handshake"].contains("closed"),
        "{e:#?}"
    );
    assert_eq!(r.totals.gave_up, 9);
    assert!(r.failed.is_some(), "nothing ever connected");
    assert_books_balance(&r);
}
