//! What a client of a fleet does to its own connections (see [`crate::plan::fleet`]): when it
//! leaves (a session lifetime, a stage's ramp-down), when it drops its connection (churn), when
//! it switches networks, when it leaks a duplicate connection. Boxed in the client: most
//! clients have none of it, and every client's task carries the field.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use rand::RngExt;
use rand::rngs::Xoshiro128PlusPlus;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::GroupCtx;
use super::connect::Ws;
use crate::metrics::Who;
use crate::plan::ClientBehaviour;
use crate::plan::fleet::FleetPlan;
use crate::profile::SwitchMode;

/// What ends a connection on the client's own initiative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetEvent {
    /// Dropped at random (churn): reset, then reconnect after the backoff.
    Churn,
    /// The client leaves: close with 1000.
    Leave,
    /// The network switched: the old path is gone.
    Switch,
    /// Open another connection, leaving this one open.
    Duplicate,
}

/// One client's fleet state.
#[derive(Default)]
pub struct Fleet {
    /// When the client leaves, if it does.
    pub leave_at: Option<Instant>,
    /// A session lifetime: a new client takes the place of one that leaves.
    replace: bool,
    /// Whether the first connection has opened (the one-shot events count from it).
    opened_once: bool,
    switch_at: Option<Instant>,
    duplicate_at: Option<Instant>,
    /// Source addresses moved on by network switches.
    pub source_shift: u32,
    /// Connections abandoned open by a silent switch: held, unread, until the client ends.
    abandoned: Vec<Ws>,
    /// A stage visit's place among its slot's visits (0: the first).
    pub visit: u32,
    /// A stage slot's attempts over all its visits: each attempt's number (the identity
    /// header's last part) is unique to the client id for the whole run.
    slot_attempts: Option<Arc<AtomicU32>>,
}

/// Client slot `k` of a staged group comes back visit after visit: what its visits share.
#[derive(Clone, Default)]
pub struct StageSlot {
    /// Which visit this is (0: the first).
    pub visit: u32,
    /// Attempts made by all of the slot's visits.
    pub attempts: Arc<AtomicU32>,
}

impl Fleet {
    /// The fleet state of a client of `b` that leaves at `leave` (a stage's ramp-down), if it
    /// needs any.
    pub fn for_client(
        b: &ClientBehaviour,
        leave: Option<Instant>,
        slot: Option<StageSlot>,
    ) -> Option<Box<Fleet>> {
        if b.fleet.is_none() && leave.is_none() && slot.is_none() {
            return None;
        }
        Some(Box::new(Fleet {
            leave_at: leave,
            replace: b.fleet.as_ref().is_some_and(|f| f.lifetime.is_some()),
            visit: slot.as_ref().map_or(0, |s| s.visit),
            slot_attempts: slot.map(|s| s.attempts),
            ..Fleet::default()
        }))
    }

    /// A client arrives at `now` (first, or in place of one that left): its lifetime starts,
    /// and its one-shot events (a network switch, a duplicate connection) are its own to come.
    pub fn arrive(&mut self, plan: Option<&FleetPlan>, now: Instant, rng: &mut Xoshiro128PlusPlus) {
        self.opened_once = false;
        self.switch_at = None;
        self.duplicate_at = None;
        if let Some(l) = plan.and_then(|p| p.lifetime) {
            self.leave_at = Some(now + l.sample(rng));
        }
    }

    /// The number of a stage slot's next attempt, counted over all its visits (`None`: the
    /// client is not a stage visit, its own count is the number).
    pub fn next_attempt(&self) -> Option<u32> {
        let n = self.slot_attempts.as_ref()?;
        Some(n.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Whether the client should have left by `now`.
    pub fn leave_due(&self, now: Instant) -> bool {
        self.leave_at.is_some_and(|t| t <= now)
    }

    /// Whether a client that leaves is replaced by a new one.
    pub fn replaces(&self) -> bool {
        self.replace
    }

    /// A connection opened at `opened`: the first of the events due to end it, and when.
    pub fn on_open(
        &mut self,
        plan: Option<&FleetPlan>,
        opened: Instant,
        rng: &mut Xoshiro128PlusPlus,
    ) -> Option<(Instant, FleetEvent)> {
        if !self.opened_once {
            self.opened_once = true;
            if let Some(s) = plan.and_then(|p| p.switch)
                && rng.random::<f64>() < s.share
            {
                self.switch_at = Some(opened + s.after);
            }
            if let Some(after) = plan.and_then(|p| p.duplicate_after) {
                self.duplicate_at = Some(opened + after);
            }
        }
        let churn = plan.and_then(|p| p.churn).map(|c| opened + c.sample(rng));
        [
            self.leave_at.map(|t| (t, FleetEvent::Leave)),
            self.switch_at.map(|t| (t, FleetEvent::Switch)),
            self.duplicate_at.map(|t| (t, FleetEvent::Duplicate)),
            churn.map(|t| (t, FleetEvent::Churn)),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(t, _)| *t)
    }

    /// Let go of a connection `event` ended: reset it, leave it open, or hand it to a reader
    /// that keeps it (the leaving client's close with 1000 is the caller's).
    pub fn release(&mut self, ctx: &Arc<GroupCtx>, who: Who, event: FleetEvent, ws: Ws) {
        let reset = |ws: Ws| {
            // RST: a path that died tells nobody with a FIN.
            let _ = socket2::SockRef::from(ws.get_ref().tcp()).set_linger(Some(Duration::ZERO));
            drop(ws);
        };
        match event {
            FleetEvent::Churn => reset(ws),
            FleetEvent::Leave => drop(ws),
            FleetEvent::Switch => {
                self.switch_at = None;
                self.source_shift = self.source_shift.wrapping_add(1);
                let mode = ctx
                    .behaviour
                    .fleet
                    .as_ref()
                    .and_then(|f| f.switch)
                    .map_or(SwitchMode::Reset, |s| s.mode);
                match mode {
                    SwitchMode::Reset => reset(ws),
                    SwitchMode::Silent => self.abandoned.push(ws),
                }
            }
            FleetEvent::Duplicate => {
                self.duplicate_at = None;
                // On the swarm's tracker: the run waits for its close and last counts.
                ctx.tasks.spawn(keep_reading(ctx.clone(), who, ws));
            }
        }
    }
}

/// The old connection of a client that opened another without closing it: it keeps reading
/// (its messages reach the application a second time, counted), answers pings, and closes
/// with 1000 when the run ends, as the buggy client's forgotten socket would.
async fn keep_reading(ctx: Arc<GroupCtx>, who: Who, mut ws: Ws) {
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                let _ = tokio::time::timeout(ctx.grace, async {
                    let frame = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    };
                    if ws.close(Some(frame)).await.is_ok() {
                        while let Some(Ok(m)) = ws.next().await {
                            if m.is_text() || m.is_binary() {
                                ctx.metrics.fleet(who, |c| c.duplicate_received += 1);
                            }
                        }
                    }
                })
                .await;
                return;
            }
            msg = ws.next() => match msg {
                Some(Ok(m)) if m.is_text() || m.is_binary() => {
                    ctx.metrics.fleet(who, |c| c.duplicate_received += 1);
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}
