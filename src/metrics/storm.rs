//! Storm figures: how a swarm weathered losing connections. Computed every tick for the
//! dashboard and once at the end for results.json, from the same counters and histograms.

use serde::{Deserialize, Serialize};

use super::{Counters, Hists, Latency};

/// Storm figures. A *loss* is a connection that ended without the client wanting it (a close
/// by the peer or the network, a close the server's protocol violation forced, or a dead
/// connection found by the heartbeat).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Storm {
    pub losses: u64,
    /// Losses followed by a new open before the end of the run.
    pub recovered: u64,
    /// Time from a loss until 50 / 95 / 99 % of the lost connections were open again; `null`
    /// when that share never came back, and when nothing was lost (there was nothing to
    /// recover, so no time: a threshold on it fails as "no data" rather than pass on 0).
    pub recovery_ms: Recovery,
    /// Most connection attempts in one second (sliding over 100 ms intervals) and in one
    /// 100 ms interval.
    pub peak_attempts_per_s: u64,
    pub peak_attempts_per_100ms: u64,
    /// The same for retries only (attempts after a client's first): the storm without the
    /// initial arrival.
    #[serde(default)]
    pub peak_retries_per_s: u64,
    #[serde(default)]
    pub peak_retries_per_100ms: u64,
    /// The same for retries after a failed attempt: the waves after each lost client's
    /// first retry, where lock-step strategies keep hammering and jittered ones have spread.
    #[serde(default)]
    pub peak_repeat_retries_per_s: u64,
    #[serde(default)]
    pub peak_repeat_retries_per_100ms: u64,
    /// Attempts each client made over the run.
    pub attempts_per_client: Counts,
    pub gave_up: u64,
    pub dead_detected: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    /// Until every lost connection was back (`null`: some never came back).
    #[serde(default)]
    pub p100: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// Storm figures from a group's (or the run's) counters, histograms and attempts per tick.
pub fn storm_from(
    c: &Counters,
    h: &Hists,
    attempts_per_tick: &[u64],
    retries_per_tick: &[u64],
    repeats_per_tick: &[u64],
) -> Storm {
    // Closes the client sent because the server broke the protocol are losses too: the
    // client did not want them.
    // So are the fleet's own drops (churn, a network switch): the path died under the client,
    // which reconnects like after any loss, and its reconnect time is in the histogram.
    let losses = c.close_codes.values().sum::<u64>()
        + c.client_close_codes.values().sum::<u64>()
        + c.dead_detected
        + c.churn_drops
        + c.network_switches;
    let reconnects = h.get(Latency::Reconnect);
    let recovered = reconnects.len().min(losses);
    let at = |q: f64| -> Option<f64> {
        // The k-th fastest recovery among all losses, counting the unrecovered as never.
        let k = (q * losses as f64).ceil() as u64;
        if k == 0 || k > recovered {
            return None;
        }
        let us = reconnects.value_at_quantile(k as f64 / reconnects.len() as f64);
        Some((us as f64 / 100.0).round() / 10.0)
    };
    let per_s = |series: &[u64]| {
        series
            .windows(10)
            .map(|w| w.iter().sum::<u64>())
            .max()
            .unwrap_or_else(|| series.iter().sum())
    };
    let a = &h.attempts_per_client;
    Storm {
        losses,
        recovered,
        recovery_ms: Recovery {
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            p100: at(1.0),
        },
        peak_attempts_per_s: per_s(attempts_per_tick),
        peak_attempts_per_100ms: attempts_per_tick.iter().copied().max().unwrap_or(0),
        peak_retries_per_s: per_s(retries_per_tick),
        peak_retries_per_100ms: retries_per_tick.iter().copied().max().unwrap_or(0),
        peak_repeat_retries_per_s: per_s(repeats_per_tick),
        peak_repeat_retries_per_100ms: repeats_per_tick.iter().copied().max().unwrap_or(0),
        attempts_per_client: if a.is_empty() {
            Counts::default()
        } else {
            Counts {
                count: a.len(),
                min: a.min(),
                mean: (a.mean() * 100.0).round() / 100.0,
                p50: a.value_at_quantile(0.5),
                p90: a.value_at_quantile(0.9),
                p99: a.value_at_quantile(0.99),
                max: a.max(),
            }
        },
        gave_up: c.gave_up,
        dead_detected: c.dead_detected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn nothing_lost_is_no_recovery_time_not_zero() {
        let s = storm_from(&Counters::default(), &Hists::default(), &[], &[], &[]);
        assert_eq!(s.losses, 0);
        assert_eq!(s.recovery_ms, Recovery::default());

        let mut c = Counters::default();
        c.close_codes.insert(1006, 4);
        let mut h = Hists::default();
        for ms in [10, 20, 30] {
            h.record(Latency::Reconnect, Duration::from_millis(ms));
        }
        let s = storm_from(&c, &h, &[], &[], &[]);
        assert_eq!((s.losses, s.recovered), (4, 3));
        assert_eq!(s.recovery_ms.p50, Some(20.0));
        assert_eq!(s.recovery_ms.p99, None, "the fourth never came back");
    }
}
