//! One simulated client: a small state machine run as one task.
//!
//! ```text
//! wait (arrival or backoff) → attempt (connect → TLS → upgrade) → open session → lost
//!        ↑                          │ failed / refused                │
//!        └──── backoff policy ◄─────┴──────── close-code policy ◄─────┘
//! ```
//!
//! A client owns only its id, a 16-byte RNG and an `Arc` of its group's context; everything it
//! learns goes to the metrics shards. What a connection did is data ([`SessionEnd`],
//! [`connect::Attempt`]), never an error.

pub mod connect;
mod session;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::Xoshiro128PlusPlus;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Closed, ConnectError, Metrics, OpenTimings};
use crate::plan::{ClientBehaviour, client_seed};
use crate::profile::Decision;
use connect::{Attempt, TargetConn};
pub use session::SessionEnd;

/// What every client of a group shares.
pub struct GroupCtx {
    pub behaviour: Arc<ClientBehaviour>,
    pub target: Arc<TargetConn>,
    pub metrics: Arc<Metrics>,
    /// The run's time zero: message timestamps are microseconds since it.
    pub epoch: Instant,
    /// Fires when the run ends; clients then close cleanly within `grace`.
    pub cancel: CancellationToken,
    pub grace: Duration,
    pub seed: u64,
}

impl GroupCtx {
    pub fn now_us(&self) -> u64 {
        self.us_since_epoch(Instant::now())
    }

    pub fn us_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_micros() as u64
    }
}

/// Run client `id` from its first intended attempt until the run ends or it gives up.
pub async fn run(ctx: Arc<GroupCtx>, id: u32, first_attempt: Instant) {
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(client_seed(ctx.seed, id));
    let b = &ctx.behaviour;
    let m = &ctx.metrics;
    let mut intended = first_attempt;
    // Consecutive failed attempts (for max_attempts) and retries since the last open (the
    // backoff's attempt number).
    let mut failures = 0u32;
    let mut retries = 0u32;
    let mut previous_delay = Duration::ZERO;
    let mut lost_at: Option<Instant> = None;
    let mut in_backoff = false;

    loop {
        let woke = tokio::select! {
            _ = ctx.cancel.cancelled() => false,
            _ = sleep_until(intended) => true,
        };
        if std::mem::take(&mut in_backoff) {
            m.backoff(id, false);
        }
        if !woke {
            return;
        }
        m.attempt(id, Instant::now().saturating_duration_since(intended));
        // Boxed: the handshake future is large and only lives while connecting; an idle
        // connected client should not carry its space.
        let attempt = Box::pin(connect::attempt(&ctx));
        let attempt = tokio::select! {
            a = attempt => a,
            _ = ctx.cancel.cancelled() => {
                m.connect_error(id, ConnectError::Cancelled);
                return;
            }
        };
        let mut retry_after = None;
        let decision = match attempt {
            Attempt::Open(mut ws, t) => {
                m.opened(
                    id,
                    OpenTimings {
                        connect: t.connect,
                        tls: t.tls,
                        handshake: t.handshake,
                        reconnect: lost_at.map(|l| l.elapsed()),
                    },
                );
                failures = 0;
                retries = 0;
                previous_delay = Duration::ZERO;
                let end = session::run(&ctx, id, &mut ws, &mut rng).await;
                drop(ws);
                lost_at = Some(Instant::now());
                match end {
                    SessionEnd::Stopped => {
                        m.closed(id, Closed::ByClient);
                        return;
                    }
                    SessionEnd::Peer(code) => {
                        m.closed(id, Closed::ByPeer(code));
                        b.on_close.decide(code)
                    }
                    SessionEnd::Dead { silent_for } => {
                        m.closed(id, Closed::Dead { silent_for });
                        b.on_close.decide(1006)
                    }
                }
            }
            Attempt::Failed(e) => {
                m.connect_error(id, e);
                failures += 1;
                Decision::Retry
            }
            Attempt::Status {
                code,
                retry_after: ra,
            } => {
                m.handshake_status(id, code);
                failures += 1;
                retry_after = ra;
                b.on_status.decide(code)
            }
        };
        if decision == Decision::Stop || !b.backoff.allows(failures) || ctx.cancel.is_cancelled() {
            if !ctx.cancel.is_cancelled() {
                m.gave_up(id);
            }
            return;
        }
        let mut delay = b.backoff.delay(retries, previous_delay, &mut rng);
        if let Some(ra) = retry_after {
            // A server that says when to come back is obeyed (429/503 with Retry-After).
            delay = delay.max(ra);
        }
        retries = retries.saturating_add(1);
        previous_delay = delay;
        intended = Instant::now() + delay;
        m.backoff(id, true);
        in_backoff = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    /// An idle client's whole cost is its task: keep the future small. The connect attempt is
    /// boxed and freed once open, so it is not part of this figure.
    #[test]
    fn client_future_is_small() {
        let yaml = "
name: t
duration: 1s
target: ws://127.0.0.1:9/ws
groups:
  - name: g
    clients: 1
    arrival: { rate: 1/s }
    behaviour:
      send: { every: 1s }
      heartbeat: { ping_every: 1s, timeout: 1s }
";
        let p = crate::profile::parse(yaml, "t").unwrap();
        let plan = Plan::new(&p, yaml.into());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let ctx = Arc::new(GroupCtx {
            behaviour: plan.groups[0].behaviour.clone(),
            target: Arc::new(TargetConn::new("ws://127.0.0.1:9/ws", &plan.tls).unwrap()),
            metrics: Arc::new(Metrics::new()),
            epoch: Instant::now(),
            cancel: CancellationToken::new(),
            grace: Duration::from_secs(1),
            seed: 1,
        });
        let fut = run(ctx, 0, Instant::now());
        let size = std::mem::size_of_val(&fut);
        println!("client future: {size} bytes");
        assert!(size <= 2048, "client future grew to {size} bytes");
    }
}
