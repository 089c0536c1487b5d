//! Cause and effect over time (article §14): each timeline action with what followed it
//! (`timeline.effects`), the interval figures the points carry, and the report's markers and
//! effect table — from real runs against the embedded target.

use crate::common;

use wsstorm::results::Results;

/// 200 clients; half of them dropped at 1s with code 4001, all of them at 2.5s with 4002.
const TWO_DROPS: &str = "
name: two-drops
duration: 4s
target: embedded
groups:
  - name: g
    clients: 200
    arrival: { rate: 2000/s }
    behaviour:
      send: { every: 100ms, bytes: 64 }
      reconnect: { backoff: { strategy: full-jitter, base: 50ms, cap: 300ms } }
timeline:
  - { at: 1s, action: drop-all, mode: close, code: 4001, share: 50% }
  - { at: 2500ms, action: drop-all, mode: close, code: 4002 }
";

fn code(r: &Results, c: &str) -> u64 {
    r.totals.close_codes.get(c).copied().unwrap_or(0)
}

#[test]
fn each_drop_owns_exactly_the_connections_it_dropped() {
    let r = common::run_yaml(TWO_DROPS, "two-drops.yaml");
    let t = &r.timeline;
    assert_eq!(t.actions.len(), 2, "{:?}", t.actions);
    assert_eq!(t.effects.len(), 2);
    let (half, all) = (&t.effects[0], &t.effects[1]);
    assert_eq!(half.action, t.actions[0].action);
    assert_eq!(all.action, t.actions[1].action);
    assert_eq!(
        (half.t_ms, half.until_ms),
        (t.actions[0].t_ms, t.actions[1].t_ms)
    );
    // Nothing failed to connect, so every loss is one of the drops' closes.
    assert_eq!(r.totals.connect_errors.total(), 0);
    let (first, second) = (code(&r, "4001"), code(&r, "4002"));
    assert!(first > 0 && first < 200, "a share, not all: {first}");
    assert_eq!(half.losses, first, "{half:?}");
    assert_eq!(half.close_codes.get("4001"), Some(&first));
    assert!(!half.close_codes.contains_key("4002"));
    assert_eq!(all.losses, second, "{all:?}");
    assert_eq!(all.close_codes.get("4002"), Some(&second));
    // The full drop took every connection the target had.
    assert_eq!(second, t.actions[1].connections);
    assert_eq!(second, 200);
    assert_eq!(all.connected_before, 200);
    assert_eq!(half.connected_before, 200);
    // Each lost client reconnected once within its window, and everyone came back.
    let attempts_in = |e: &wsstorm::results::effects::Effect| -> u64 {
        t.points
            .iter()
            .filter(|p| p.t_ms >= e.t_ms && p.t_ms < e.until_ms)
            .map(|p| p.attempts)
            .sum()
    };
    assert_eq!(attempts_in(half), first, "{:?}", &t.points[5..15]);
    assert!(half.peak_attempts_per_s <= first && half.peak_attempts_per_s > 0);
    assert!(half.peak_attempts_per_interval <= half.peak_attempts_per_s);
    assert!(all.peak_attempts_per_s <= second && all.peak_attempts_per_s > 0);
    assert!(
        half.recovery_ms.is_some() && all.recovery_ms.is_some(),
        "{:?}",
        t.effects
    );
    // Back within the window (a dip and its recovery can both fall inside one interval, but
    // not before the interval that counted the losses).
    for e in &t.effects {
        let back = e.recovery_ms.unwrap();
        assert!(back <= e.until_ms - e.t_ms + 100, "{e:?}");
    }
    // Round trips were measured on both sides of each drop, interval by interval.
    assert!(half.rtt_p99_before_us.is_some() && all.rtt_p99_after_us.is_some());
    let measured = t.points.iter().filter(|p| p.rtt_p99_us.is_some()).count();
    assert!(
        measured * 2 > t.points.len(),
        "{measured} of {}",
        t.points.len()
    );
    for p in &t.points {
        assert!(p.rtt_p50_us <= p.rtt_p99_us, "{p:?}");
    }
    // Handshake percentiles where connections opened, and only there.
    for p in &t.points {
        assert_eq!(p.handshake_p99_us.is_some(), p.opened > 0, "{p:?}");
    }

    // The report marks both actions on its time charts, by name, and tables their effects.
    let html = wsstorm::report::render(&r);
    let charts = html.matches("class=\"ctitle\"").count();
    assert!(
        html.matches("class=\"marker\"").count() >= 2 * 6,
        "two markers on each of the time charts ({charts} charts)"
    );
    assert!(html.contains("latency per interval"), "the latency chart");
    assert!(html.contains("dead connections detected"));
    assert!(html.contains("id=\"effects\""), "the effect table");
    assert!(html.contains(&format!("data-key=\"timeline.effects.0.losses\">{first}<")));
    assert!(html.contains(&format!("data-key=\"timeline.effects.1.losses\">{second}<")));
    assert!(
        html.contains("drop-all close 4001"),
        "{}",
        t.actions[0].action
    );

    // The text summary says it under each action.
    let text = wsstorm::report::text::summary(&r);
    assert!(
        text.contains(&format!("then: lost {first} (0 dead)")),
        "{text}"
    );
    assert!(
        text.contains(&format!("then: lost {second} (0 dead)")),
        "{text}"
    );

    // And results.json carries the effects for scripts.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["timeline"]["effects"][1]["losses"], second);
}
