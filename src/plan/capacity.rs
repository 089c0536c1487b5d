//! The plan of a capacity search: the loads to step through, and the profile of each step
//! (the stepped group's load set, the duration set so the load is held). The command line runs
//! the steps; [`crate::results::capacity`] concludes from their results.
//!
//! Each step is a fresh run (fresh target, fresh clients), so a step's figures are its own and
//! can be compared with a plain `wsstorm run` at that load. The price is a ramp per step.

use std::time::Duration;

use crate::profile::{CapacitySettings, CapacityVary, Profile};

pub const MAX_STEPS: usize = 50;

/// The loads to try, in order: `start`, then `+ step` or `× factor`, never above `max`.
pub fn steps(c: &CapacitySettings) -> Vec<f64> {
    let mut out = Vec::new();
    let mut load = c.start;
    // Bounded even for values validation has not seen yet.
    while load <= c.max * (1.0 + 1e-9) && load > 0.0 && out.len() <= MAX_STEPS {
        out.push(load);
        load = match c.factor {
            Some(f) if f > 1.0 => load * f,
            Some(_) => break,
            None => load + c.step.unwrap_or(c.start),
        };
    }
    out
}

/// Time the arrivals of `clients` take at the group's rate.
fn ramp(clients: u32, rate: f64) -> Duration {
    Duration::from_secs_f64(f64::from(clients) / rate.max(1e-9))
}

/// The profile of one step: the stepped group's load set to `load`, the duration set so the
/// load is held for `hold`.
pub fn step_profile(p: &Profile, c: &CapacitySettings, load: f64) -> Profile {
    let mut p = p.clone();
    let gi = c
        .group
        .as_ref()
        .and_then(|n| p.groups.iter().position(|g| &g.name == n))
        .unwrap_or(0);
    let hold = c.hold.0;
    let g = &mut p.groups[gi];
    let arrive_by = |g: &crate::profile::Group| match &g.arrival {
        Some(a) => a.start.0 + ramp(g.clients, a.rate.0),
        None => g.stages.iter().map(|s| s.duration.0).sum(),
    };
    let duration = match c.vary {
        CapacityVary::Connections => {
            g.clients = load.round().max(1.0) as u32;
            arrive_by(g) + hold
        }
        CapacityVary::ConnectionRate => {
            // Arrivals for the whole hold, then a moment for the last handshakes to finish.
            g.clients = (load * hold.as_secs_f64()).round().max(1.0) as u32;
            let start = g.arrival.as_ref().map_or(Duration::ZERO, |a| a.start.0);
            if let Some(a) = &mut g.arrival {
                a.rate = crate::units::Rate(load);
            }
            start + hold + Duration::from_secs(2)
        }
        CapacityVary::MessageRate => {
            if let Some(s) = &mut g.behaviour.send {
                s.every = Some(crate::units::Dur(Duration::from_secs_f64(
                    f64::from(g.clients) / load,
                )));
            }
            arrive_by(g) + hold
        }
    };
    // The other groups keep their own timing; the run lasts until every group arrived.
    let others = p.groups.iter().map(arrive_by).max().unwrap_or_default();
    p.duration = crate::units::Dur(duration.max(others + Duration::from_secs(1)));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vary: CapacityVary) -> CapacitySettings {
        CapacitySettings::example(vary)
    }

    #[test]
    fn steps_add_or_multiply_up_to_the_ceiling() {
        let mut s = settings(CapacityVary::Connections);
        assert_eq!(steps(&s), vec![100.0, 200.0, 300.0, 400.0]);
        s.step = Some(150.0);
        assert_eq!(steps(&s), vec![100.0, 250.0, 400.0]);
        s.step = None;
        s.factor = Some(2.0);
        assert_eq!(steps(&s), vec![100.0, 200.0, 400.0]);
    }

    fn document() -> crate::profile::Document {
        crate::profile::parse(
            "name: c\nduration: 10s\ntarget: embedded\ngroups:\n  - name: g\n    clients: 10\n    arrival: { rate: 100/s }\n    behaviour: { send: { every: 1s, bytes: 64 } }\n",
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn each_step_sets_the_load_and_holds_it() {
        let doc = document();
        let p = &doc.profile;
        let s = step_profile(p, &settings(CapacityVary::Connections), 300.0);
        assert_eq!(s.groups[0].clients, 300);
        // 300 clients at 100/s arrive in 3 s, then 5 s held.
        assert_eq!(s.duration.0, Duration::from_secs(8));

        let s = step_profile(p, &settings(CapacityVary::ConnectionRate), 300.0);
        assert_eq!(s.groups[0].arrival.as_ref().unwrap().rate.0, 300.0);
        assert_eq!(s.groups[0].clients, 1500);
        assert_eq!(s.duration.0, Duration::from_secs(7));

        let s = step_profile(p, &settings(CapacityVary::MessageRate), 200.0);
        // 10 clients sharing 200 msg/s: each every 50 ms.
        assert_eq!(
            s.groups[0]
                .behaviour
                .send
                .as_ref()
                .unwrap()
                .every
                .unwrap()
                .0,
            Duration::from_millis(50)
        );
        let step = crate::profile::Document {
            profile: s,
            ..doc.clone()
        };
        assert!(crate::plan::Plan::compile(&step).is_ok());
    }
}
