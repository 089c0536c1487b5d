//! One stop signal for a run, and why it fired. Ctrl-C, the dashboard's `q`, the deadline, a
//! failing `abort_on_fail` threshold and a run `--until recovered` that settled all stop a run
//! the same way; the first to ask gives the reason, and the reason travels with the signal, so
//! nothing patches the results afterwards.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StopReason {
    /// The plan's duration ran out.
    Deadline,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Stopped from the dashboard (`q`).
    Stopped,
    /// The threshold at this index (with `abort_on_fail`) failed `at` into the run.
    Aborted { threshold: usize, at: Duration },
    /// A run `--until recovered` settled (every client connected or gave up) `at` into it.
    Settled { at: Duration },
}

/// Cheap to clone; every clone is the same signal.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    token: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
    /// The signal this one was made from: it stops this one too, with its reason.
    parent: Option<Arc<Mutex<Option<StopReason>>>>,
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    /// A signal for one run of several (a comparison, a capacity step): the run's own end
    /// stops only it; this signal (Ctrl-C) stops it and every other.
    pub fn child(&self) -> Stop {
        Stop {
            token: self.token.child_token(),
            reason: Arc::new(Mutex::new(None)),
            parent: Some(self.reason.clone()),
        }
    }

    /// Ask the run to stop; the first reason asked for is the one that counts.
    pub fn request(&self, reason: StopReason) {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(reason);
        self.token.cancel();
    }

    /// The signal as a plain token, for a service that only needs to know when.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the run is asked to stop.
    pub async fn stopped(&self) {
        self.token.cancelled().await
    }

    /// Why the run was asked to stop, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        let own = *self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        own.or_else(|| {
            let parent = self.parent.as_ref()?;
            *parent.lock().unwrap_or_else(PoisonError::into_inner)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_counts_and_a_child_stops_alone() {
        let all = Stop::new();
        let run = all.child();
        run.request(StopReason::Deadline);
        run.request(StopReason::Stopped);
        assert_eq!(run.reason(), Some(StopReason::Deadline));
        assert!(run.is_stopped() && !all.is_stopped());

        let next = all.child();
        all.request(StopReason::Interrupted);
        assert!(next.is_stopped());
        assert_eq!(next.reason(), Some(StopReason::Interrupted));
    }
}
