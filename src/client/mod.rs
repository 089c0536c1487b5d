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

pub mod abuse;
pub mod connect;
mod session;
pub mod stream;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::Xoshiro128PlusPlus;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Closed, ConnectError, Metrics, OpenTimings, Who};
use crate::plan::ClientBehaviour;
use crate::profile::Decision;
use crate::seed::client_seed;
use connect::{Attempt, AttemptExtras, Endpoint};
pub use session::SessionEnd;
use stream::StreamTracker;

/// What every client of a group shares.
pub struct GroupCtx {
    pub group: u16,
    pub behaviour: Arc<ClientBehaviour>,
    pub target: Arc<Endpoint>,
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

/// One client's state between connections.
struct Client {
    ctx: Arc<GroupCtx>,
    who: Who,
    rng: Xoshiro128PlusPlus,
    attempts: u32,
    /// Consecutive failed attempts (for max_attempts).
    failures: u32,
    /// Retries since the last open: the backoff's attempt number.
    retries: u32,
    previous_delay: Duration,
    lost_at: Option<Instant>,
    /// The auth token and its expiry (unix ms).
    token: Option<(String, u64)>,
    stream: Option<Box<StreamTracker>>,
}

/// Run client `id` from its first intended attempt until the run ends or it gives up.
pub async fn run(ctx: Arc<GroupCtx>, id: u32, first_attempt: Instant) {
    let who = Who {
        client: id,
        group: ctx.group,
    };
    let mut c = Client {
        rng: Xoshiro128PlusPlus::seed_from_u64(client_seed(ctx.seed, id)),
        stream: ctx
            .behaviour
            .subscribe
            .map(|s| Box::new(StreamTracker::new(s.checkpoint_every))),
        ctx,
        who,
        attempts: 0,
        failures: 0,
        retries: 0,
        previous_delay: Duration::ZERO,
        lost_at: None,
        token: None,
    };
    c.run(first_attempt).await;
    let lost = c.stream.as_ref().map_or(0, |s| s.lost());
    c.ctx.metrics.client_done(who, c.attempts, lost);
}

impl Client {
    async fn run(&mut self, first_attempt: Instant) {
        let ctx = self.ctx.clone();
        let (b, m, who) = (&ctx.behaviour, &ctx.metrics, self.who);
        let mut intended = first_attempt;
        let mut in_backoff = false;
        // The next attempt's socket, made before a retry's sleep (see `prepare_socket`).
        let mut prepared = None;
        loop {
            let woke = tokio::select! {
                _ = ctx.cancel.cancelled() => false,
                _ = sleep_until(intended) => true,
            };
            if std::mem::take(&mut in_backoff) {
                m.backoff(who, false);
            }
            if !woke {
                return;
            }
            self.attempts += 1;
            m.attempt(
                who,
                Instant::now().saturating_duration_since(intended),
                self.attempts > 1,
            );
            self.prepare_token(false);
            let extras = AttemptExtras {
                token: self.token.as_ref().map(|(t, _)| t.as_str()),
                subscribe: b.subscribe.is_some(),
                resume_after: b
                    .subscribe
                    .filter(|s| s.resume)
                    .and_then(|_| self.stream.as_ref()?.resume_from()),
            };
            // Boxed: the handshake future is large and only lives while connecting; an idle
            // connected client should not carry its space.
            let attempt = Box::pin(connect::attempt(&ctx, who.client, &extras, prepared.take()));
            let attempt = tokio::select! {
                a = attempt => a,
                _ = ctx.cancel.cancelled() => {
                    m.connect_error(who, ConnectError::Cancelled);
                    return;
                }
            };
            let mut retry_after = None;
            let decision = match attempt {
                Attempt::Open(mut ws, t) => {
                    m.opened(
                        who,
                        OpenTimings {
                            connect: t.connect,
                            tls: t.tls,
                            handshake: t.handshake,
                            reconnect: self.lost_at.map(|l| l.elapsed()),
                        },
                    );
                    self.failures = 0;
                    self.retries = 0;
                    self.previous_delay = Duration::ZERO;
                    let end = session::run(
                        &ctx,
                        who,
                        &mut ws,
                        &mut self.rng,
                        self.stream.as_deref_mut(),
                    )
                    .await;
                    if matches!(end, SessionEnd::Dead { .. }) {
                        // Abort a connection found dead (RST): a FIN would queue behind data the
                        // peer never read and leave an orphan socket holding the port, and the
                        // peer would never learn that the client left.
                        let _ = socket2::SockRef::from(ws.get_ref().tcp())
                            .set_linger(Some(Duration::ZERO));
                    }
                    drop(ws);
                    self.lost_at = Some(Instant::now());
                    match end {
                        SessionEnd::Stopped => {
                            m.closed(who, Closed::ByClient);
                            return;
                        }
                        SessionEnd::Peer(code) => {
                            m.closed(who, Closed::ByPeer(code));
                            b.on_close.decide(code)
                        }
                        SessionEnd::Dead { silent_for } => {
                            m.closed(who, Closed::Dead { silent_for });
                            b.on_close.decide(1006)
                        }
                        SessionEnd::Violation(code) => {
                            m.closed(who, Closed::Violation(code));
                            b.on_close.decide(code)
                        }
                    }
                }
                Attempt::Failed(e) => {
                    m.connect_error(who, e);
                    self.failures += 1;
                    Decision::Retry
                }
                Attempt::Status {
                    code,
                    retry_after: ra,
                } => {
                    m.handshake_status(who, code);
                    self.failures += 1;
                    retry_after = ra;
                    b.on_status.decide(code)
                }
            };
            if ctx.cancel.is_cancelled() {
                return;
            }
            if decision == Decision::Stop || !b.backoff.allows(self.failures) {
                m.gave_up(who);
                return;
            }
            let mut delay = match decision {
                Decision::RetryAfter(d) => d.0,
                _ => b
                    .backoff
                    .delay(self.retries, self.previous_delay, &mut self.rng),
            };
            if decision == Decision::RefreshAuth {
                self.prepare_token(true);
            }
            if let Some(ra) = retry_after {
                // A server that says when to come back is obeyed (429/503 with Retry-After).
                delay = delay.max(ra);
            }
            self.retries = self.retries.saturating_add(1);
            self.previous_delay = delay;
            intended = Instant::now() + delay;
            if let Some(align) = b.align {
                intended = align_up(ctx.epoch, intended, align);
            }
            m.backoff(who, true);
            in_backoff = true;
            prepared = connect::prepare_socket(&ctx, who.client);
        }
    }

    /// Get a token if the client has none, or (refreshing clients, or when `force`d by a
    /// refresh-auth decision) if it has expired.
    fn prepare_token(&mut self, force: bool) {
        let Some(auth) = &self.ctx.behaviour.auth else {
            return;
        };
        let expired = self
            .token
            .as_ref()
            .is_some_and(|(_, exp)| *exp <= crate::auth::now_ms());
        if self.token.is_none() || force || (auth.refresh && expired) {
            self.token = Some(auth.signer.mint(self.who.client, auth.lifetime));
        }
    }
}

/// The first multiple of `align` since `epoch` at or after `t`.
fn align_up(epoch: Instant, t: Instant, align: Duration) -> Instant {
    let since = t.saturating_duration_since(epoch).as_nanos();
    let step = align.as_nanos().max(1);
    let aligned = since.div_ceil(step) * step;
    epoch + Duration::from_nanos(aligned.min(u128::from(u64::MAX)) as u64)
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
      send: { every: 1s, bytes: 64 }
      heartbeat: { ping_every: 1s, timeout: 1s }
";
        let plan = Plan::from_yaml(yaml, "t").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let ctx = Arc::new(GroupCtx {
            group: 0,
            behaviour: plan.groups[0].behaviour.clone(),
            target: Arc::new(Endpoint::new("ws://127.0.0.1:9/ws", &plan.tls).unwrap()),
            metrics: Arc::new(Metrics::new(1)),
            epoch: Instant::now(),
            cancel: CancellationToken::new(),
            grace: Duration::from_secs(1),
            seed: 1,
        });
        let fut = run(ctx, 0, Instant::now());
        let size = std::mem::size_of_val(&fut);
        println!("client future: {size} bytes");
        assert!(size <= 1952, "client future grew to {size} bytes");
    }

    #[test]
    fn align_rounds_up_to_the_grid() {
        let e = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(align_up(e, e + Duration::from_millis(1), s), e + s);
        assert_eq!(align_up(e, e + s, s), e + s);
        assert_eq!(align_up(e, e + Duration::from_millis(2300), s), e + 3 * s);
    }
}
