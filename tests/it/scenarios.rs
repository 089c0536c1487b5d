//! Every failure-mode profile in profiles/ is run here, at small scale, and the phenomenon it
//! names must show in the numbers — and, where a good client policy exists, the good policy
//! must avoid it. The shipped profile file is what runs; a test only shrinks it or swaps in
//! the good policy.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use wsstorm::backoff::Strategy;
use wsstorm::cli::Overrides;
use wsstorm::plan::Plan;
use wsstorm::profile::{CertKind, Document, OnFull, Profile};
use wsstorm::results::{GroupResults, Results};
use wsstorm::units::Dur;

fn load(name: &str) -> Document {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("profiles")
        .join(format!("{name}.yaml"));
    wsstorm::profile::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Run profile `name` with `clients` clients in all (None: as shipped), after `edit`.
fn run(name: &str, clients: Option<u32>, edit: impl FnOnce(&mut Profile)) -> Results {
    let mut doc = load(name);
    Overrides {
        clients,
        ..Default::default()
    }
    .apply(&mut doc.profile);
    edit(&mut doc.profile);
    common::run_plan(&Plan::compile(&doc).unwrap_or_else(|e| panic!("{e}")))
}

/// How late the run's generator was against its own schedule, at worst (µs): on a busy
/// machine every timing the run records can be that much later, so timing bounds add it
/// instead of assuming an idle machine.
fn lag_us(r: &Results) -> u64 {
    r.generator.schedule_lag_us.max
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

fn status(g: &GroupResults, s: &str) -> u64 {
    g.totals.handshake_status.get(s).copied().unwrap_or(0)
}

/// Lock-step: at least 90% of every wave falls in its busiest 100 ms — or, when the wave
/// straddles an interval boundary (a busy machine can shift it by a few ms), in its busiest
/// two adjacent intervals.
fn assert_lockstep(waves: &[Vec<u64>]) {
    for wave in waves {
        let total: u64 = wave.iter().sum();
        let busiest = wave
            .windows(2)
            .map(|w| w[0] + w[1])
            .chain(wave.iter().copied())
            .max()
            .unwrap();
        assert!(
            busiest * 10 >= total * 9,
            "lock-step: >= 90% of each wave together: {waves:?}"
        );
    }
}

fn secs(s: f64) -> Dur {
    Dur(Duration::from_secs_f64(s))
}

/// A group's attempts per 100 ms after `after_ms`, grouped into waves separated by empty
/// intervals.
fn waves(r: &Results, group: usize, after_ms: u64) -> Vec<Vec<u64>> {
    let mut waves: Vec<Vec<u64>> = Vec::new();
    let mut current: Vec<u64> = Vec::new();
    let attempts = &r.groups[group].timeline.attempts;
    for (p, &n) in r.timeline.points.iter().zip(attempts) {
        if p.t_ms <= after_ms {
            continue;
        }
        if n > 0 {
            current.push(n);
        } else if !current.is_empty() {
            waves.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        waves.push(current);
    }
    waves
}

#[test]
fn mass_drop_reconnect() {
    let r = run("mass-drop-reconnect", Some(300), |p| p.duration = secs(8.0));
    let t = &r.totals;
    assert_eq!(t.close_codes.get("1006"), Some(&300), "{:?}", t.close_codes);
    assert_eq!(r.storm.losses, 300);
    assert_eq!(r.storm.recovered, 300);
    let p99 = r.storm.recovery_ms.p99.expect("everyone came back");
    assert!(p99 <= 5000.0 + lag_us(&r) as f64 / 1000.0, "{p99}");
    assert!(r.storm.recovery_ms.p50.unwrap() <= p99);
    assert!(
        r.storm.peak_attempts_per_s >= 300,
        "{}",
        r.storm.peak_attempts_per_s
    );
    assert_eq!(t.connected_at_end, 300);
    assert_eq!(r.storm.attempts_per_client.max, 2);
}

#[test]
fn synchronized_retry_piles_into_narrow_windows_and_jitter_spreads_it() {
    let r = run("synchronized-retry", Some(300), |p| p.duration = secs(9.0));
    let w = waves(&r, 0, 3000);
    assert!(w.len() >= 3, "{w:?}");
    assert_lockstep(&w);
    assert_eq!(r.groups[0].timeline.attempts.len(), r.timeline.points.len());
    assert_eq!(r.totals.connected_at_end, 300);

    let jitter = run("synchronized-retry", Some(300), |p| {
        p.groups[0].behaviour.reconnect.backoff.strategy = Strategy::FullJitter;
        p.duration = secs(9.0);
    });
    // No 100 ms interval holds more than a quarter of the attempts made in the second
    // around it (lock-step: each wave is all in one interval).
    let attempts: Vec<u64> = jitter
        .timeline
        .points
        .iter()
        .filter(|p| p.t_ms > 3000)
        .map(|p| p.attempts)
        .collect();
    for i in 0..attempts.len() {
        let window: u64 = attempts[i.saturating_sub(5)..(i + 5).min(attempts.len())]
            .iter()
            .sum();
        assert!(
            attempts[i] * 4 <= window.max(20),
            "full jitter spreads retries: {} of {window} at interval {i}: {attempts:?}",
            attempts[i]
        );
    }
    assert_eq!(jitter.totals.connected_at_end, 300);
}

#[test]
fn backoff_jitter_compares_policies() {
    let r = run("backoff-jitter", Some(300), |p| p.duration = secs(12.0));
    let exp = group(&r, "exponential");
    let full = group(&r, "full-jitter");
    let dec = group(&r, "decorrelated");
    // Exponential backoff without jitter keeps the herd together, wave after wave.
    let w = waves(&r, 0, 3000);
    assert!(w.len() >= 3, "{w:?}");
    assert_lockstep(&w);
    for g in [full, dec] {
        assert!(
            g.storm.peak_attempts_per_100ms <= 45,
            "{} spreads retries: {}",
            g.name,
            g.storm.peak_attempts_per_100ms
        );
    }
    for g in [exp, full, dec] {
        assert_eq!(g.totals.connected_at_end, 100, "{}", g.name);
        assert_eq!(g.storm.losses, 100);
        assert!(g.totals.connect_errors.refused > 0);
    }
}

#[test]
fn slow_consumers_meet_the_backpressure_policy() {
    // Drop policy: the server drops the slow clients' messages; the fast ones lose nothing
    // and their round trips stay fast. Stated bound: p99 under 250 ms. Head-of-line blocking
    // behind a slow reader (what the outbox prevents) costs seconds here; the bound leaves
    // room for a busy 2-core CI machine (a loaded run measured 65 ms, an idle one ~2 ms).
    let r = run("slow-consumers", None, |p| p.duration = secs(8.0));
    let server = r.server.as_ref().unwrap();
    let fast = group(&r, "fast");
    let slow = group(&r, "slow");
    assert!(server.backpressure_dropped > 0);
    assert_eq!(server.backpressure_closed, 0);
    assert!(slow.totals.messages.lost > 0);
    assert_eq!(fast.totals.messages.lost, 0);
    assert_eq!(fast.totals.messages.duplicated, 0);
    assert!(fast.latency_us.rtt.count > 0);
    assert!(
        fast.latency_us.rtt.p99 < 250_000 + lag_us(&r),
        "fast rtt p99 {} us, generator lag up to {} us",
        fast.latency_us.rtt.p99,
        lag_us(&r)
    );
    assert_eq!(r.totals.connected_at_end, 60);

    // Close policy: the slow clients are cut with 1008 (they may only see the reset that
    // follows, as 1006, when the close frame is stuck behind their backlog).
    let r = run("slow-consumers", None, |p| {
        p.duration = secs(6.0);
        p.target.server.backpressure.on_full = OnFull::Close1008;
    });
    let server = r.server.as_ref().unwrap();
    let fast = group(&r, "fast");
    let slow = group(&r, "slow");
    assert!(server.backpressure_closed >= 10, "{server:?}");
    assert!(server.closes_sent.get("1008").copied().unwrap_or(0) >= 10);
    assert!(
        code(slow, "1006") + code(slow, "1008") >= 10,
        "{:?}",
        slow.totals.close_codes
    );
    assert!(fast.totals.close_codes.is_empty());
    assert!(fast.latency_us.rtt.p99 < 250_000 + lag_us(&r));
}

#[test]
fn idle_timeout_is_silent_without_heartbeats() {
    let r = run("idle-timeout-silent-failure", Some(100), |_| {});
    let none = group(&r, "no-heartbeat");
    let hb = group(&r, "heartbeat");
    let server = r.server.as_ref().unwrap();
    // Without heartbeats: silently abandoned by the server, never noticed by the client.
    assert_eq!(server.idle_timeouts, 50);
    assert_eq!(none.totals.dead_detected, 0);
    assert_eq!(none.totals.opened, 50);
    assert_eq!(
        none.totals.connected_at_end, 50,
        "they still think they are connected"
    );
    // With heartbeats: kept alive past the idle timeout, and the server hang at 5s is found
    // within ping interval + timeout (1s + 2s), then they reconnect.
    assert_eq!(hb.totals.dead_detected, 50);
    let d = &hb.latency_us.dead_detect;
    assert!(d.min >= 2_000_000, "{d:?}");
    assert!(d.max <= 3_300_000 + lag_us(&r), "{d:?}");
    assert_eq!(hb.storm.recovered, 50);
    assert_eq!(hb.totals.connected_at_end, 50);
}

#[test]
fn token_expiry_naive_loops_refresh_recovers() {
    // Tokens live 3s: the run ends at 5.5s, between the refreshing clients' first renewal
    // (~3.3s) and their second expiry (~6.3s), after the naive ones ran out of attempts (~4.1s).
    let r = run("token-expiry-reconnect-loop", Some(100), |p| {
        p.duration = secs(5.5)
    });
    let naive = group(&r, "naive");
    let refresh = group(&r, "refresh");
    let forged = group(&r, "forged");
    let n = naive.totals.clients;
    assert_eq!(code(naive, "4001"), n);
    assert_eq!(status(naive, "401"), 5 * n, "401 until max_attempts (5)");
    assert_eq!(naive.totals.gave_up, n);
    assert_eq!(naive.totals.connected_at_end, 0);

    let m = refresh.totals.clients;
    assert!(code(refresh, "4001") >= m);
    assert_eq!(status(refresh, "401"), 0);
    assert_eq!(refresh.totals.gave_up, 0);
    assert_eq!(refresh.totals.connected_at_end, m);

    let f = forged.totals.clients;
    assert_eq!(status(forged, "401"), f);
    assert_eq!(forged.totals.opened, 0);
    assert_eq!(forged.totals.gave_up, f);
    assert_eq!(
        r.server.as_ref().unwrap().rejected_401,
        status(naive, "401") + f
    );
}

#[test]
fn resume_loses_nothing_and_checkpoints_duplicate() {
    let r = run("resume-after-reconnect", Some(150), |p| {
        p.duration = secs(8.0)
    });
    let resume = group(&r, "resume");
    let none = group(&r, "no-resume");
    let alo = group(&r, "at-least-once");
    for g in [resume, none, alo] {
        assert_eq!(code(g, "1006"), 50, "{}", g.name);
        assert_eq!(g.storm.recovered, 50, "{}", g.name);
        assert_eq!(g.totals.messages.out_of_order, 0, "{}", g.name);
    }
    assert_eq!(resume.totals.messages.lost, 0);
    assert_eq!(resume.totals.messages.duplicated, 0);
    assert!(none.totals.messages.lost > 0);
    assert_eq!(none.totals.messages.duplicated, 0);
    assert!(alo.totals.messages.duplicated > 0);
    assert_eq!(alo.totals.messages.lost, 0);
    assert_eq!(
        r.totals.messages.lost, none.totals.messages.lost,
        "totals add up"
    );
}

#[test]
fn protocol_abuse_gets_its_close_code() {
    let r = run("protocol-errors", None, |_| {});
    for (name, expect) in [
        ("invalid-utf8", "1007"),
        ("oversized", "1009"),
        ("reserved-opcode", "1002"),
        ("unmasked", "1002"),
        ("flooder", "1008"),
    ] {
        let g = group(&r, name);
        assert_eq!(
            g.totals.close_codes.get(expect),
            Some(&10),
            "{name}: {:?}",
            g.totals.close_codes
        );
        assert_eq!(g.totals.close_codes.len(), 1, "{name}");
        assert_eq!(g.totals.gave_up, 10, "{name} stops on its code");
        assert_eq!(g.totals.connect_attempts, 10, "{name} never retries");
    }
    assert_eq!(r.server.as_ref().unwrap().rate_limited, 10);
}

#[test]
fn fail_fast_vs_retry_and_close_code_awareness() {
    let r = run("fail-fast-vs-retry", None, |_| {});
    let fast = group(&r, "fail-fast");
    let retry = group(&r, "retry-everything");
    let aware = group(&r, "code-aware");
    assert_eq!(fast.totals.connect_attempts, 50);
    assert_eq!(status(fast, "401"), 50);
    assert_eq!(fast.totals.gave_up, 50);

    assert!(
        status(retry, "401") >= 5 * 50,
        "a reconnect loop: {}",
        status(retry, "401")
    );
    assert_eq!(retry.totals.gave_up, 0);
    assert!(retry.storm.attempts_per_client.p50 >= 5);

    assert_eq!(code(aware, "1012"), 100);
    assert_eq!(code(aware, "1001"), 100);
    assert_eq!(aware.totals.connected_at_end, 100);
    assert_eq!(aware.storm.recovered, 200);
    let rc = &aware.latency_us.reconnect;
    assert!(
        rc.p50 < 2_000_000,
        "1012: retried with backoff at once: {rc:?}"
    );
    assert!(
        rc.max >= 2_000_000,
        "1001: retried politely after 2s: {rc:?}"
    );
}

#[test]
fn metastable_storm_stays_down_and_jitter_recovers() {
    let shrink = |p: &mut Profile| {
        p.duration = secs(14.0);
    };
    let r = run("metastable-retry-storm", Some(400), shrink);
    let server = r.server.as_ref().unwrap();
    assert_eq!(r.totals.close_codes.get("1006"), Some(&400));
    assert!(
        r.totals.connected_at_end * 10 < 400 * 3,
        "long after the trigger, under 30% are connected: {}",
        r.totals.connected_at_end
    );
    assert!(server.handshakes_wasted > 400, "{server:?}");
    assert!(r.totals.connect_errors.timeout > 400);

    let r = run("metastable-retry-storm", Some(400), |p| {
        shrink(p);
        let g = &mut p.groups[0];
        g.handshake_timeout = secs(10.0);
        let b = &mut g.behaviour.reconnect.backoff;
        b.strategy = Strategy::FullJitter;
        b.base = secs(1.0);
        b.cap = secs(10.0);
    });
    assert_eq!(
        r.totals.connected_at_end, 400,
        "jitter and patience recover"
    );
    assert_eq!(r.storm.recovered, 400);
}

#[test]
fn tls_certificate_errors_are_counted() {
    for (kind, ok, cause) in [
        (CertKind::Valid, true, ""),
        (CertKind::SelfSigned, false, "unknown_issuer"),
        (CertKind::Expired, false, "expired"),
        (CertKind::WrongHost, false, "wrong_host"),
    ] {
        let r = run("tls-certificate-errors", Some(20), |p| {
            p.duration = secs(2.0);
            p.target.server.tls.as_mut().unwrap().certificate = kind;
        });
        let t = &r.totals;
        if ok {
            assert_eq!(t.opened, 20, "{kind:?}: {:?}", t.connect_errors);
            assert_eq!(t.connect_errors.tls, 0);
            assert_eq!(r.latency_us.tls.count, 20);
            assert!(r.latency_us.rtt.count > 0);
        } else {
            assert_eq!(t.opened, 0, "{kind:?}");
            assert_eq!(t.connect_errors.tls, 60, "{kind:?}: 3 attempts each");
            // Each named for what is wrong with the certificate.
            assert_eq!(
                t.connect_errors.tls_causes,
                [(cause.to_string(), 60)].into(),
                "{kind:?}"
            );
            assert_eq!(t.gave_up, 20);
            assert!(r.failed.is_some(), "nothing connected");
        }
    }
}

#[test]
fn load_balancer_idle_timeout_cuts_only_quiet_clients() {
    let r = run("load-balancer-idle-timeout", Some(100), |p| {
        p.duration = secs(7.0)
    });
    let quiet = group(&r, "no-heartbeat");
    let hb = group(&r, "heartbeat");
    // Cut at ~3s and ~6s: every quiet client twice, nobody else.
    assert_eq!(code(quiet, "1006"), 100, "{:?}", quiet.totals.close_codes);
    assert_eq!(quiet.storm.recovered, 100);
    assert_eq!(quiet.storm.attempts_per_client.min, 3);
    assert!(
        hb.totals.close_codes.is_empty(),
        "{:?}",
        hb.totals.close_codes
    );
    assert_eq!(hb.totals.connect_attempts, 50);
    assert_eq!(r.proxy.as_ref().unwrap().idle_timeouts, 100);
    assert_eq!(r.totals.connected_at_end, 100);
}

#[test]
fn network_partition_is_detected_and_heals() {
    let r = run("network-partition", Some(200), |_| {});
    let t = &r.totals;
    // 30% of 100 source addresses; 2 clients per address.
    assert!(
        (30..=90).contains(&t.dead_detected),
        "dead {}",
        t.dead_detected
    );
    assert_eq!(t.dead_detected % 2, 0, "whole addresses are partitioned");
    let d = &r.latency_us.dead_detect;
    assert!(
        d.min >= 2_000_000 && d.max <= 3_300_000 + lag_us(&r),
        "{d:?}"
    );
    assert!(
        t.close_codes.is_empty(),
        "a partition sends nothing: {:?}",
        t.close_codes
    );
    assert!(
        t.connect_errors.timeout > 0,
        "reconnects stall while partitioned"
    );
    assert_eq!(
        r.storm.recovered, t.dead_detected,
        "all back after the heal"
    );
    assert_eq!(t.connected_at_end, 200);
}

#[test]
fn backoff_contention_jitter_beats_lockstep_on_time_and_waste() {
    // The shipped profile, one run per strategy as `compare` does it, cut to 15s (the jittered
    // strategies are 99 % back about 7s after the drop at 5s; fixed about 12s, or never here).
    let mut doc = load("backoff-contention");
    doc.profile.duration = secs(15.0);
    let plan = Plan::compile(&doc).unwrap_or_else(|e| panic!("{e}"));
    let row = |s: Strategy| {
        let r = common::run_plan(&plan.with_strategy(s));
        assert_eq!(r.storm.losses, 300, "{s:?}: every client dropped");
        let row = wsstorm::report::compare::CompareRow::from_results(&r);
        assert_eq!(
            row.server_handshakes_wasted,
            r.server.as_ref().map(|s| s.handshakes_wasted),
            "{s:?}: the embedded target's abandoned handshakes are a column"
        );
        assert!(row.server_handshakes_wasted.is_some());
        // "never" (under 99 % back by the end) counts as infinitely late.
        let p99 = row.recovery_p99_ms.unwrap_or(f64::INFINITY);
        let wasted = row.wasted_per_back.unwrap_or(f64::INFINITY);
        eprintln!("{s:?}: 99 % back {p99} ms, wasted per client back {wasted}");
        (s, p99, wasted)
    };
    let lockstep: Vec<_> = [Strategy::None, Strategy::Fixed, Strategy::Exponential]
        .into_iter()
        .map(row)
        .collect();
    let jittered: Vec<_> = [
        Strategy::FullJitter,
        Strategy::EqualJitter,
        Strategy::DecorrelatedJitter,
    ]
    .into_iter()
    .map(row)
    .collect();
    for &(j, j_p99, j_wasted) in &jittered {
        assert!(j_p99.is_finite(), "{j:?}: 99 % back within the run");
        for &(l, l_p99, l_wasted) in &lockstep {
            // Wide margins: on a busy machine the jittered ones still win by 1.5x (measured:
            // about 1.7x on time against fixed, 2.5x or more on waste).
            assert!(
                j_p99 * 1.5 < l_p99,
                "{j:?} 99 % back after {j_p99} ms, {l:?} after {l_p99} ms"
            );
            assert!(
                j_wasted * 1.5 < l_wasted,
                "{j:?}: {j_wasted} wasted per client back, {l:?}: {l_wasted}"
            );
        }
    }
}

/// A server that drops every connection right after it opens: the client that resets its
/// backoff on every open loops at the first delay; `reset_after` backs it off. Every loss is
/// a flap (lost within 1s of opening).
#[test]
fn flapping_server_loops_reset_on_open_and_reset_after_backs_off() {
    let r = run("flapping-server", None, |_| {});
    let eager = group(&r, "reset-on-open");
    let patient = group(&r, "reset-after-stable");
    for g in [eager, patient] {
        assert_eq!(
            g.totals.flaps, g.storm.losses,
            "{}: every loss is a flap",
            g.name
        );
        assert!(g.totals.flaps > 0);
    }
    assert!(
        eager.totals.flaps >= 4 * patient.totals.flaps,
        "reset on open loops: {} flaps vs {} with reset_after",
        eager.totals.flaps,
        patient.totals.flaps
    );
    // Doubling from 100 ms on every flap: past 3.2 s within the run.
    assert!(patient.latency_us.backoff_delay.max >= 3_200_000);
    assert!(eager.latency_us.backoff_delay.max < 150_000);
    assert_eq!(r.totals.flaps, eager.totals.flaps + patient.totals.flaps);
}
