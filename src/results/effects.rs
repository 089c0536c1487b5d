//! Cause and effect (article §14): what followed each timeline action, read from the timeline
//! points. Each action's window runs from when it fired to the next action (or the end of the
//! run), so a later fault's losses are never counted against an earlier one. Pure: computed
//! from results.json's own timeline, so a run, a model and a merge agree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FiredAction, Point};

/// What followed one fired action, until the next one or the end of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// The action's name, as in `timeline.actions`.
    pub action: String,
    /// When it fired.
    pub t_ms: u64,
    /// The end of its window: the next action's time, or the end of the run.
    pub until_ms: u64,
    /// Connections open on the target when it fired (`timeline.actions[].connections`).
    pub connections: u64,
    /// Connections lost in the window: closes by the server or the network (every close
    /// code) plus connections the heartbeat found dead.
    pub losses: u64,
    /// The window's closes by close code.
    #[serde(default)]
    pub close_codes: BTreeMap<String, u64>,
    /// The window's dead detections.
    pub dead_detected: u64,
    /// The window's non-101 answers to the upgrade, by HTTP status.
    #[serde(default)]
    pub handshake_status: BTreeMap<String, u64>,
    /// The most attempts in one second of the window (sliding over its intervals; a window
    /// shorter than a second counts all of it) and in one interval.
    pub peak_attempts_per_s: u64,
    pub peak_attempts_per_interval: u64,
    /// Connected at the end of the last interval that ended before the action fired.
    pub connected_before: u64,
    /// Fewest connected at any interval's end in the window.
    pub connected_low: u64,
    /// From the action until connected was back to `connected_before` (the end of the first
    /// interval at or above it after the window's low); 0 when connected never fell below
    /// it at an interval's end and nothing was lost; `null` when it did not come back
    /// within the window.
    pub recovery_ms: Option<u64>,
    /// The highest interval rtt p99 (µs) in the second before the action, and in the window;
    /// `null` when no round trip was measured there.
    pub rtt_p99_before_us: Option<u64>,
    pub rtt_p99_after_us: Option<u64>,
    /// The same for the upgrade handshake.
    pub handshake_p99_before_us: Option<u64>,
    pub handshake_p99_after_us: Option<u64>,
}

/// The effect of each of `actions` on the timeline `points` (interval `interval_ms`) of a run
/// that ended `end_ms` in, with per-interval closes by code and handshake statuses aligned
/// with the points. The interval in which the clients shut down after the end is left out:
/// everyone leaving then is no action's doing.
pub fn effects(
    actions: &[FiredAction],
    points: &[Point],
    interval_ms: u64,
    end_ms: u64,
    close_codes: &BTreeMap<String, Vec<u64>>,
    statuses: &BTreeMap<String, Vec<u64>>,
) -> Vec<Effect> {
    let end = end_ms;
    let shown = points.partition_point(|p| p.t_ms <= end_ms + 1);
    let per_second = (1000 / interval_ms.max(1)).max(1) as usize;
    actions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let until = actions.get(i + 1).map_or(end, |next| next.t_ms.max(a.t_ms));
            // A point closes the interval that ends at its t_ms: the window holds the points
            // from the one that ends as the action fires (times are whole ms, and what the
            // action did can land in that interval) up to the next action's.
            let first = points.partition_point(|p| p.t_ms < a.t_ms);
            let last = if i + 1 < actions.len() {
                points.partition_point(|p| p.t_ms < until)
            } else {
                shown
            };
            let window = &points[first..last.max(first)];
            let range = first..first + window.len();
            let sum_by = |series: &BTreeMap<String, Vec<u64>>| -> BTreeMap<String, u64> {
                series
                    .iter()
                    .map(|(k, s)| (k.clone(), s.get(range.clone()).unwrap_or(&[]).iter().sum()))
                    .filter(|(_, n)| *n > 0)
                    .collect()
            };
            let codes = sum_by(close_codes);
            let dead: u64 = window.iter().map(|p| p.dead_detected).sum();
            let losses = codes.values().sum::<u64>() + dead;
            let attempts: Vec<u64> = window.iter().map(|p| p.attempts).collect();
            let before = first.checked_sub(1).map_or(0, |b| points[b].connected);
            let low_at = window
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.connected)
                .map(|(k, _)| k);
            let low = low_at.map_or(before, |k| window[k].connected);
            // The first interval that counted a loss: recovery is looked for from there (or
            // from the low, if later), so a drop and its reconnects within one interval
            // recover at that interval's end, not at once.
            let first_loss = (0..window.len()).find(|&k| {
                window[k].dead_detected > 0
                    || close_codes
                        .values()
                        .any(|s| s.get(first + k).is_some_and(|n| *n > 0))
            });
            let recovery_ms = if low >= before && losses == 0 {
                Some(0)
            } else {
                window[low_at.unwrap_or(0).max(first_loss.unwrap_or(0))..]
                    .iter()
                    .find(|p| p.connected >= before)
                    .map(|p| p.t_ms.saturating_sub(a.t_ms))
            };
            let prior = &points[first.saturating_sub(per_second)..first];
            let peak = |pts: &[Point], f: fn(&Point) -> Option<u64>| pts.iter().filter_map(f).max();
            Effect {
                action: a.action.clone(),
                t_ms: a.t_ms,
                until_ms: until,
                connections: a.connections,
                losses,
                close_codes: codes,
                dead_detected: dead,
                handshake_status: sum_by(statuses),
                peak_attempts_per_s: attempts
                    .windows(per_second)
                    .map(|w| w.iter().sum::<u64>())
                    .max()
                    .unwrap_or_else(|| attempts.iter().sum()),
                peak_attempts_per_interval: attempts.iter().copied().max().unwrap_or(0),
                connected_before: before,
                connected_low: low,
                recovery_ms,
                rtt_p99_before_us: peak(prior, |p| p.rtt_p99_us),
                rtt_p99_after_us: peak(window, |p| p.rtt_p99_us),
                handshake_p99_before_us: peak(prior, |p| p.handshake_p99_us),
                handshake_p99_after_us: peak(window, |p| p.handshake_p99_us),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t_ms: u64, connected: u64, attempts: u64, rtt: Option<u64>) -> Point {
        Point {
            t_ms,
            connected,
            attempts,
            rtt_p99_us: rtt,
            ..Point::default()
        }
    }

    fn fired(t_ms: u64, action: &str) -> FiredAction {
        FiredAction {
            t_ms,
            action: action.into(),
            connections: 10,
        }
    }

    #[test]
    fn each_action_owns_what_followed_until_the_next() {
        // 10 connected; a drop at 250 ms loses 4 (code 1006), back at 500; a second drop at
        // 650 ms loses 10 (code 1012) and never comes back.
        let points = vec![
            point(100, 10, 10, Some(500)),
            point(200, 10, 0, Some(700)),
            point(300, 6, 0, None),
            point(400, 8, 2, Some(2000)),
            point(500, 10, 2, Some(900)),
            point(600, 10, 0, Some(800)),
            point(700, 0, 0, None),
            point(800, 0, 5, None),
        ];
        let codes = BTreeMap::from([
            ("1006".to_string(), vec![0, 0, 4, 0, 0, 0, 0, 0]),
            ("1012".to_string(), vec![0, 0, 0, 0, 0, 0, 10, 0]),
        ]);
        let statuses = BTreeMap::from([("503".to_string(), vec![0, 0, 0, 0, 0, 0, 0, 5])]);
        let e = effects(
            &[fired(250, "drop-all"), fired(650, "restart")],
            &points,
            100,
            800,
            &codes,
            &statuses,
        );
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].t_ms, e[0].until_ms), (250, 650));
        assert_eq!(e[0].losses, 4);
        assert_eq!(e[0].close_codes, BTreeMap::from([("1006".into(), 4)]));
        assert_eq!(e[0].connected_before, 10);
        assert_eq!(e[0].connected_low, 6);
        assert_eq!(e[0].recovery_ms, Some(250), "back to 10 at 500 ms");
        assert_eq!(e[0].peak_attempts_per_interval, 2);
        assert_eq!(
            e[0].peak_attempts_per_s, 4,
            "a window under a second: all of it"
        );
        assert_eq!(e[0].rtt_p99_before_us, Some(700));
        assert_eq!(e[0].rtt_p99_after_us, Some(2000));
        assert!(e[0].handshake_status.is_empty());
        assert_eq!(e[1].losses, 10);
        assert_eq!(e[1].until_ms, 800);
        assert_eq!(e[1].recovery_ms, None, "never back");
        assert_eq!(e[1].rtt_p99_after_us, None, "no round trip measured");
        assert_eq!(e[1].rtt_p99_before_us, Some(2000));
        assert_eq!(e[1].handshake_status, BTreeMap::from([("503".into(), 5)]));
    }

    #[test]
    fn an_action_that_changed_nothing_recovered_at_once() {
        // The last point is the clients shutting down after the end: not the action's doing.
        let points = vec![
            point(100, 5, 0, None),
            point(200, 5, 0, None),
            point(290, 0, 0, None),
        ];
        let e = effects(
            &[fired(150, "latency")],
            &points,
            100,
            200,
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert_eq!(e[0].losses, 0);
        assert_eq!(e[0].recovery_ms, Some(0));
        assert_eq!(e[0].connected_before, 5);
        assert_eq!((e[0].connected_low, e[0].until_ms), (5, 200));
    }
}
