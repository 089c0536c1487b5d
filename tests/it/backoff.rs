//! The backoff options a fleet's clients use against an overloaded server, each shown by what
//! the run recorded: the delays the strategy chose (`latency_us.backoff_delay`) and the attempts
//! it made. Delays are chosen by the code, not measured, so their bounds are exact.

use crate::common;

/// Milliseconds from a histogram value in µs: HdrHistogram keeps 3 significant figures, so a
/// recorded 1 s may read back as 999,936 µs.
fn ms(us: u64) -> u64 {
    (us + 500) / 1000
}

const DOWN: &str = "
name: budget
seed: 3
duration: 6s
target: embedded
groups:
  - name: g
    clients: 20
    arrival: { rate: 200/s }
    behaviour:
      reconnect:
        backoff: { strategy: fixed, base: 100ms, cap: 100ms BUDGET }
timeline:
  - { at: 1s, action: restart, down_for: 3s }
";

#[test]
fn a_retry_budget_holds_retries_once_spent() {
    let free = common::run_yaml(&DOWN.replace(" BUDGET", ""), "free.yaml");
    let budgeted = common::run_yaml(
        &DOWN.replace(" BUDGET", ", budget: { size: 2, refill: 1/s }"),
        "budget.yaml",
    );
    // Without a budget every client retries every 100 ms for the 3 s the server is down.
    let a = &free.storm.attempts_per_client;
    assert!(a.min >= 20, "without a budget: {a:?}");
    assert_eq!(ms(free.latency_us.backoff_delay.max), 100);
    // With 2 tokens and one more a second: two quick retries, then one a second, so at most
    // 1 + 2 + 3 (+1 for the one the server's return lets through) per client.
    let b = &budgeted.storm.attempts_per_client;
    assert!(b.max <= 7, "with a budget: {b:?}");
    assert!(b.min >= 4, "the budget refills: {b:?}");
    let d = &budgeted.latency_us.backoff_delay;
    assert_eq!(
        ms(d.min),
        100,
        "the bucket's tokens go at the strategy's pace"
    );
    assert!(d.max >= 700_000, "empty, the bucket holds a retry: {d:?}");
    assert_eq!(
        budgeted.storm.recovered, budgeted.storm.losses,
        "everyone is back"
    );
}

const SHED: &str = "
name: shed
seed: 5
duration: 5s
target:
  url: embedded
  server: { accept_rate: 40/s, accept_burst: 4, retry_after: 1s }
groups:
  - name: g
    clients: 120
    arrival: { rate: 400/s }
    behaviour:
      reconnect:
        backoff: { strategy: fixed, base: 10ms, cap: 10ms JITTER }
";

#[test]
fn retry_after_is_obeyed_and_jitter_spreads_it() {
    let strict = common::run_yaml(&SHED.replace(" JITTER", ""), "strict.yaml");
    let spread = common::run_yaml(
        &SHED.replace(" JITTER", ", retry_after_jitter: 100%"),
        "spread.yaml",
    );
    for r in [&strict, &spread] {
        assert!(
            r.totals.handshake_status.get("503").copied().unwrap_or(0) > 0,
            "the server shed load"
        );
    }
    // Every delay after a 503 is the server's 1s; the few retries after other failures would
    // be 10 ms, and there are none here.
    let d = &strict.latency_us.backoff_delay;
    assert_eq!((ms(d.min), ms(d.max)), (1000, 1000), "{d:?}");
    // With 100 % jitter: uniform over 1s..2s.
    let d = &spread.latency_us.backoff_delay;
    assert!(ms(d.min) >= 1000 && ms(d.max) <= 2000, "{d:?}");
    assert!((1_350_000..=1_650_000).contains(&d.p50), "{d:?}");
}

const FLAPPING: &str = "
name: flapping
seed: 9
duration: 5s
target:
  url: embedded
  server: { idle_timeout: { after: 50ms, mode: close } }
groups:
  - name: g
    clients: 20
    arrival: { rate: 200/s }
    behaviour:
      reconnect:
        backoff: { strategy: exponential, base: 100ms, cap: 10s RESET }
";

#[test]
fn reset_after_a_stable_connection_cures_a_flapping_loop() {
    // The server closes every connection after 50 ms: each one is lost almost at once.
    let eager = common::run_yaml(&FLAPPING.replace(" RESET", ""), "eager.yaml");
    let patient = common::run_yaml(
        &FLAPPING.replace(" RESET", ", reset_after: 1s"),
        "patient.yaml",
    );
    // Resetting on every open, each client is back every ~150 ms: the first delay forever.
    assert_eq!(ms(eager.latency_us.backoff_delay.max), 100);
    // Resetting only after 1s open, the delay doubles on every flap: 100, 200, 400, 800,
    // 1600 ms… a handful of connections in 5 s instead of thirty.
    let d = &patient.latency_us.backoff_delay;
    assert!(ms(d.max) >= 1600, "{d:?}");
    let (e, p) = (eager.totals.opened, patient.totals.opened);
    assert!(
        p * 3 <= e,
        "flapping loop: {e} opens reset-on-open vs {p} with reset_after"
    );
    let per_client = p as f64 / 20.0;
    assert!(per_client <= 7.0, "{per_client} opens per client");
}
