//! The coordinator, in three steps: [`Swarm::start`] starts the embedded server (if any), the
//! fault proxy (if any) and the clients on their arrival schedule; [`Swarm::run`] fires the
//! timeline until the deadline or a [`Stop`]; [`Swarm::drain`] takes the exact count of open
//! connections, lets clients close within the grace period, stops the services and hands
//! what was recorded to [`crate::results`]. One path whatever ended the run.
//!
//! It is the only part that knows the plan; clients know their group, the dashboard knows
//! snapshots. Clients run in this process or in [`workers`] processes, each with its
//! [`Shard`] of every group.

mod stop;
pub mod workers;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::connect::{EmbeddedInfo, Endpoint};
use crate::client::{self, GroupCtx};
use crate::metrics::settle::{HOLD, Settling};
use crate::metrics::{Collector, Metrics, Snapshot, TICK};
use crate::plan::{Plan, PlanGroup, PlanTarget, PlannedAction, TimelineAction};
use crate::profile::TlsSettings;
use crate::proxy::{EmbeddedProxy, ProxyConfig};
use crate::results::threshold::{Figures, Threshold};
use crate::results::{self, EndReason, FiredAction, Record, Results};
use crate::server::processes::ServerProcesses;
use crate::server::{EmbeddedServer, ServerSummary};

pub use stop::{Stop, StopReason};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot start the embedded target on {addr}: {source}")]
    Server {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the fault proxy on {addr}: {source}")]
    Proxy {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("target: {0}")]
    Connect(String),
    #[error("worker processes: {0}")]
    Workers(String),
    #[error("cannot write the event log {0}")]
    Events(String),
}

/// Run the plan: start, run until the deadline or `stop`, drain, and build the results.
/// Snapshots are published on `snapshots` every tick.
pub async fn run(
    plan: &Plan,
    stop: Stop,
    snapshots: watch::Sender<Arc<Snapshot>>,
) -> Result<Results, SetupError> {
    let mut swarm = Swarm::start(plan, &stop, snapshots).await?;
    let reason = swarm.run(&stop).await;
    let record = swarm.drain(plan, reason).await;
    Ok(Results::build(record, &plan.thresholds))
}

/// The embedded server, in this process or in several.
enum LocalServer {
    InProcess(EmbeddedServer),
    Processes(ServerProcesses),
}

impl LocalServer {
    async fn apply(&mut self, a: crate::server::Action) -> u64 {
        match self {
            LocalServer::InProcess(s) => s.handle.apply(a),
            LocalServer::Processes(p) => p.apply(a).await,
        }
    }

    async fn summary(&mut self) -> ServerSummary {
        match self {
            LocalServer::InProcess(s) => s.handle.stats.summary(),
            LocalServer::Processes(p) => p.summary().await,
        }
    }

    async fn stop(self) {
        match self {
            LocalServer::InProcess(s) => {
                let _ = tokio::task::spawn_blocking(move || s.stop()).await;
            }
            LocalServer::Processes(p) => {
                p.stop().await;
            }
        }
    }
}

/// Where clients connect: the target's URL, what the embedded server tells them, and the
/// proxy in front of it. Sent to worker processes as it is.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Destination {
    pub url: String,
    pub embedded: EmbeddedInfo,
    pub proxy: Option<std::net::SocketAddr>,
}

/// The endpoints of a run: direct, and through the proxy.
pub struct Endpoints {
    direct: Arc<Endpoint>,
    proxied: Option<Arc<Endpoint>>,
}

impl Endpoints {
    pub fn new(d: &Destination, tls: &TlsSettings) -> Result<Endpoints, String> {
        let direct = Arc::new(Endpoint::with_embedded(&d.url, tls, &d.embedded)?);
        let proxied = match d.proxy {
            Some(addr) => Some(Arc::new(Endpoint::with_embedded(
                &d.url,
                tls,
                &EmbeddedInfo {
                    addr: Some(addr),
                    ca_pem: d.embedded.ca_pem.clone(),
                },
            )?)),
            None => None,
        };
        Ok(Endpoints { direct, proxied })
    }
}

/// Which clients of each group a process runs: those whose index in the group is `index`
/// modulo `count`. Every client keeps its arrival time and its RNG seed, so a run split over
/// processes is the same run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    fn has(self, i: u32) -> bool {
        i % self.count == self.index
    }

    /// How many of a group of `clients` this shard runs.
    pub fn clients_of(self, clients: u32) -> u64 {
        u64::from(clients / self.count + u32::from(self.index < clients % self.count))
    }
}

/// What a process that runs clients needs of the plan: its groups and how to seed them, and
/// its shard of them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Clients {
    pub seed: u64,
    pub grace: Duration,
    pub tls: TlsSettings,
    pub groups: Vec<PlanGroup>,
    pub shard: Shard,
    /// The run's id for identity headers.
    #[serde(default)]
    pub run_id: u32,
}

impl Clients {
    pub fn of(plan: &Plan, shard: Shard) -> Clients {
        Clients {
            seed: plan.seed,
            grace: plan.grace,
            tls: plan.tls.clone(),
            groups: plan.groups.clone(),
            shard,
            run_id: plan.run_id.unwrap_or_default(),
        }
    }

    /// Spawn this shard's clients on their arrival schedule from `epoch`.
    pub fn spawn(
        &self,
        endpoints: &Endpoints,
        metrics: &Arc<Metrics>,
        epoch: Instant,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) {
        for group in &self.groups {
            let ctx = Arc::new(GroupCtx {
                group: group.index as u16,
                name: group.name.as_str().into(),
                behaviour: group.behaviour.clone(),
                target: match (&endpoints.proxied, group.via_proxy) {
                    (Some(p), true) => p.clone(),
                    _ => endpoints.direct.clone(),
                },
                metrics: metrics.clone(),
                epoch,
                cancel: cancel.clone(),
                grace: self.grace,
                seed: self.seed,
                run_id: self.run_id,
                tasks: tracker.clone(),
            });
            let (ids, shard) = (group.clone(), self.shard);
            let stop = cancel.clone();
            let spawner = tracker.clone();
            if !group.stages.is_empty() {
                // Stages: each visit is a client task that arrives and, on a ramp-down, leaves.
                let visits = group.stage_visits();
                tracker.spawn(async move {
                    // What a slot's visits share: their count, and their attempts (numbered on
                    // across visits, so an identity header names one attempt of the run).
                    let mut slots: std::collections::HashMap<u32, client::StageSlot> =
                        std::collections::HashMap::new();
                    for (k, v) in visits {
                        if !shard.has(k) {
                            continue;
                        }
                        let at = epoch + v.arrive;
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = sleep_until(at) => {}
                        }
                        let leave = v.leave.map(|l| epoch + l);
                        let slot = match slots.entry(k) {
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert(client::StageSlot::default()).clone()
                            }
                            std::collections::hash_map::Entry::Occupied(mut e) => {
                                e.get_mut().visit += 1;
                                e.get().clone()
                            }
                        };
                        spawner.spawn(client::run_visit(
                            ctx.clone(),
                            ids.client_id(k),
                            at,
                            leave,
                            slot,
                        ));
                    }
                });
                continue;
            }
            let arrivals = group.arrivals(self.seed);
            tracker.spawn(async move {
                for (i, offset) in arrivals.enumerate() {
                    if !shard.has(i as u32) {
                        continue;
                    }
                    let at = epoch + offset;
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = sleep_until(at) => {}
                    }
                    spawner.spawn(client::run(ctx.clone(), ids.client_id(i as u32), at));
                }
            });
        }
    }
}

/// Open the event log `--events` asks for, before any client starts.
fn start_event_log(
    plan: &Plan,
    spec: &crate::metrics::events::EventsSpec,
    metrics: &Metrics,
    epoch: std::time::Instant,
) -> Result<(), SetupError> {
    let groups = plan.groups.iter().map(|g| g.name.clone()).collect();
    let log = crate::metrics::events::EventLog::start(
        spec,
        plan.total_clients(),
        plan.seed,
        groups,
        epoch,
    )
    .map_err(|e| SetupError::Events(format!("{}: {e}", spec.path.display())))?;
    if plan.layout.workers > 0 {
        metrics.warn(format!(
            "--events: the clients ran in {} worker processes, which keep no event log, so {} has none of their events: run with --workers 0 to log them",
            plan.layout.workers,
            spec.path.display()
        ));
    }
    let _ = metrics.log_events(log);
    Ok(())
}

/// Write the rest of the event log and close it (off the runtime's threads: the writer may
/// still be writing); says so in the warnings when the cap left events out.
async fn finish_event_log(metrics: &Arc<Metrics>) -> Option<crate::metrics::events::EventsSummary> {
    metrics.event_log()?;
    let m = metrics.clone();
    let s = tokio::task::spawn_blocking(move || m.event_log().and_then(|l| l.finish()))
        .await
        .ok()
        .flatten()?;
    if s.dropped > 0 {
        metrics.warn(format!(
            "--events: {} events were not written to {} ({} written, {} bytes; --events-max {} bytes)",
            s.dropped, s.file, s.written, s.bytes, s.max_bytes
        ));
    }
    Some(s)
}

/// Where the clients run.
enum ClientHost {
    /// In this process, as tasks of this runtime.
    Here(TaskTracker),
    Workers(workers::Workers),
}

/// A started run.
pub struct Swarm {
    epoch: Instant,
    run_id: u32,
    started_at: SystemTime,
    deadline: Instant,
    url: String,
    server: Option<Arc<tokio::sync::Mutex<LocalServer>>>,
    proxy: Option<Arc<EmbeddedProxy>>,
    metrics: Arc<Metrics>,
    collector: Arc<Mutex<Collector>>,
    clients: ClientHost,
    /// Tells the clients (and the ticker and the timeline) that the run is over.
    clients_stop: CancellationToken,
    ticker: JoinHandle<()>,
    timeline: JoinHandle<Vec<FiredAction>>,
    /// Where the run's last snapshot goes once the drain has counted every close.
    snapshots: watch::Sender<Arc<Snapshot>>,
}

impl Swarm {
    /// Start the services and the clients; the run's clock starts here.
    pub async fn start(
        plan: &Plan,
        stop: &Stop,
        snapshots: watch::Sender<Arc<Snapshot>>,
    ) -> Result<Swarm, SetupError> {
        crate::os::raise_fd_limit();
        // The run id is fixed now, before any client (here or in a worker) is given the plan.
        let with_id;
        let plan = match plan.run_id {
            Some(_) => plan,
            None => {
                let mut p = plan.clone();
                let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
                p.run_id = Some(crate::plan::run_id(&plan.name, plan.seed, &now));
                with_id = p;
                &with_id
            }
        };
        let exe = || crate::os::child::executable(plan.layout.exe.as_deref());
        // Said before the metrics exist; handed to them below.
        let mut metrics_warnings: Vec<String> = Vec::new();
        let (server, url, embedded) = match &plan.target {
            PlanTarget::Embedded { config, .. } if plan.layout.server_processes > 0 => {
                let procs = ServerProcesses::start(
                    &exe().map_err(SetupError::Workers)?,
                    config,
                    plan.layout.server_processes,
                )
                .await
                .map_err(SetupError::Workers)?;
                let info = EmbeddedInfo {
                    addr: Some(procs.addr),
                    ca_pem: None,
                };
                let url = procs.url.clone();
                (Some(LocalServer::Processes(procs)), url, info)
            }
            PlanTarget::Embedded { config, threads } => {
                let addr = config.listen.to_string();
                let server = crate::server::start_embedded((**config).clone(), *threads)
                    .await
                    .map_err(|source| SetupError::Server { addr, source })?;
                let url = server.handle.url();
                for w in &server.warnings {
                    metrics_warnings.push(w.clone());
                }
                let info = EmbeddedInfo {
                    addr: Some(server.handle.local_addr()),
                    ca_pem: server.handle.ca_pem().map(str::to_string),
                };
                (Some(LocalServer::InProcess(server)), url, info)
            }
            PlanTarget::External { url, .. } => (None, url.clone(), EmbeddedInfo::default()),
        };
        let direct =
            Endpoint::with_embedded(&url, &plan.tls, &embedded).map_err(SetupError::Connect)?;
        // The proxy forwards to the target's address; clients that use it connect to the
        // proxy but keep the target's URL (Host header, TLS name).
        let proxy = match &plan.proxy {
            Some(p) => {
                let upstream = direct.resolve().await.map_err(|e| {
                    SetupError::Connect(format!("cannot resolve {url} for the proxy: {}", e.name()))
                })?;
                let mut config = ProxyConfig::new(p.listen, upstream);
                config.buffer = p.buffer;
                // In front of the embedded server: a sidecar on its runtime.
                let runtime = match &server {
                    Some(LocalServer::InProcess(s)) => Some(s.runtime.clone()),
                    _ => None,
                };
                let started = crate::proxy::start_embedded(config, runtime)
                    .await
                    .map_err(|source| SetupError::Proxy {
                        addr: p.listen.to_string(),
                        source,
                    })?;
                Some(Arc::new(started))
            }
            None => None,
        };
        let destination = Destination {
            url: url.clone(),
            embedded,
            proxy: proxy.as_ref().map(|p| p.handle.local_addr()),
        };

        let metrics = Arc::new(Metrics::new(plan.groups.len()));
        for w in metrics_warnings {
            metrics.warn(w);
        }
        let started_at = SystemTime::now();
        let epoch = Instant::now();
        let collector = Arc::new(Mutex::new(Collector::new(
            metrics.clone(),
            epoch.into_std(),
        )));
        if let Some(spec) = &plan.events {
            start_event_log(plan, spec, &metrics, epoch.into_std())?;
        }
        let clients_stop = CancellationToken::new();
        // Cancelled once the timeline's last action has fired: a run `--until recovered`
        // cannot settle before.
        let timeline_done = CancellationToken::new();
        let settle = plan.until.map(|_| SettleWatch {
            // Worker processes report their clients a tick late.
            settling: Settling::with_hold(
                u64::from(plan.total_clients()),
                HOLD + if plan.layout.workers > 0 {
                    2 * TICK
                } else {
                    Duration::ZERO
                },
            ),
            stop: stop.clone(),
            timeline_done: timeline_done.clone(),
        });
        tokio::spawn(abort_watch(
            plan.thresholds.clone(),
            u64::from(plan.total_clients()),
            stop.clone(),
            snapshots.subscribe(),
        ));
        let ticker = tokio::spawn(tick_loop(
            collector.clone(),
            snapshots.clone(),
            epoch,
            clients_stop.clone(),
            settle,
        ));
        let clients = if plan.layout.workers > 0 {
            let w = workers::Workers::start(
                &exe().map_err(SetupError::Workers)?,
                plan,
                &destination,
                &metrics,
            )
            .await
            .map_err(SetupError::Workers)?;
            ClientHost::Workers(w)
        } else {
            let endpoints = Endpoints::new(&destination, &plan.tls).map_err(SetupError::Connect)?;
            let tracker = TaskTracker::new();
            Clients::of(plan, Shard::ALL).spawn(
                &endpoints,
                &metrics,
                epoch,
                &clients_stop,
                &tracker,
            );
            ClientHost::Here(tracker)
        };
        let server = server.map(|s| Arc::new(tokio::sync::Mutex::new(s)));
        let timeline = tokio::spawn(fire_timeline(
            plan.timeline.clone(),
            server.clone(),
            proxy.clone(),
            metrics.clone(),
            epoch,
            clients_stop.clone(),
            timeline_done,
        ));
        Ok(Swarm {
            epoch,
            run_id: plan.run_id.unwrap_or_default(),
            started_at,
            deadline: epoch + plan.duration,
            url,
            server,
            proxy,
            metrics,
            collector,
            clients,
            clients_stop,
            ticker,
            timeline,
            snapshots,
        })
    }

    /// Until the deadline or `stop` (which a run `--until recovered` asks for once it has
    /// settled); says why the run ended.
    pub async fn run(&mut self, stop: &Stop) -> StopReason {
        tokio::select! {
            _ = sleep_until(self.deadline) => stop.request(StopReason::Deadline),
            _ = stop.stopped() => {}
        }
        stop.reason().unwrap_or(StopReason::Deadline)
    }

    /// End the run: count what is open, let the clients close within the grace period, stop
    /// the services, and hand over what was recorded.
    pub async fn drain(self, plan: &Plan, reason: StopReason) -> Record {
        let duration = self.epoch.elapsed();
        if cfg!(debug_assertions) {
            self.metrics.warn(
                "this is a debug build of wsstorm, several times slower than a release build: its latency and rate figures are its own, not the target's (cargo build --release)",
            );
        }
        // Exactly what was open at the end: every open and close so far is in the shards
        // (workers count their own at this moment).
        let (connected_at_end, clients) = match self.clients {
            ClientHost::Workers(mut w) => (w.connected_at_end(plan.groups.len()).await, Some(w)),
            ClientHost::Here(tracker) => {
                let open = {
                    let mut c = lock(&self.collector);
                    c.tick();
                    c.run()
                        .groups
                        .iter()
                        .map(|g| g.data.counters.connected())
                        .collect()
                };
                self.clients_stop.cancel();
                tracker.close();
                let closed =
                    tokio::time::timeout(plan.grace + Duration::from_secs(2), tracker.wait())
                        .await
                        .is_ok();
                warn_unclosed(&self.metrics, closed);
                (open, None)
            }
        };
        self.clients_stop.cancel();
        let mut cpu = crate::metrics::generator::cpu_times();
        let mut failures = Vec::new();
        if let Some(w) = clients {
            let end = w.finish(plan.grace + Duration::from_secs(5)).await;
            warn_unclosed(&self.metrics, end.all_closed);
            cpu.0 += end.cpu.0;
            cpu.1 += end.cpu.1;
            failures = end.died;
        }
        let _ = self.ticker.await;
        let events = finish_event_log(&self.metrics).await;
        let fired = self.timeline.await.unwrap_or_default();
        let server = match &self.server {
            Some(s) => Some(s.lock().await.summary().await),
            None => None,
        };
        // What went wrong on the server side joins the run's warnings.
        for w in server.iter().flat_map(|s| &s.warnings) {
            self.metrics.warn(w.clone());
        }
        let proxy = self.proxy.as_ref().map(|p| p.handle.stats());
        for w in proxy.iter().flat_map(|p| &p.warnings) {
            self.metrics.warn(w.clone());
        }
        if let Some(p) = self.proxy.and_then(|p| Arc::try_unwrap(p).ok()) {
            let _ = tokio::task::spawn_blocking(move || p.stop()).await;
        }
        if let Some(s) = self.server.and_then(|s| Arc::try_unwrap(s).ok()) {
            s.into_inner().stop().await;
        }
        let (collected, last) = lock(&self.collector).finish_with_snapshot();
        // Readers that keep the last snapshot (the Prometheus exporter) end on the run's
        // totals, the ones results.json reports.
        self.snapshots.send_replace(Arc::new(last));
        let (end, aborted_by) = match reason {
            StopReason::Deadline if plan.until.is_some() => (EndReason::MaxReached, None),
            StopReason::Deadline => (EndReason::Completed, None),
            StopReason::Settled { .. } => (EndReason::Settled, None),
            StopReason::Interrupted => (EndReason::Interrupted, None),
            StopReason::Stopped => (EndReason::Stopped, None),
            StopReason::Aborted { threshold, at } => (EndReason::Aborted, Some((threshold, at))),
        };
        Record {
            name: plan.name.clone(),
            description: plan.description.clone(),
            seed: plan.seed,
            run_id: Some(format!("{:08x}", self.run_id)),
            profile: plan.source.clone(),
            target: self.url,
            started_at: self.started_at,
            duration,
            end,
            aborted_by,
            group_clients: plan.group_clients(),
            conversation_names: plan.conversation_names(),
            collected,
            connected_at_end,
            fired,
            server,
            proxy,
            cpu,
            fd_limit: crate::os::fd_limit().0,
            expect_failures: plan.expect_failures,
            failures,
            events,
            layout: plan.layout.notes.clone(),
            memory_predicted: plan.layout.memory,
            until: plan.until.map(|u| {
                let settled_at = match reason {
                    StopReason::Settled { at } => Some(at),
                    _ => None,
                };
                results::Until::recovered(u.max, settled_at)
            }),
        }
    }
}

fn warn_unclosed(metrics: &Metrics, all_closed: bool) {
    if !all_closed {
        metrics.warn(
            "some clients did not finish closing within the grace period; their closes are not counted",
        );
    }
}

/// Ask `stop` to end the run with the first `abort_on_fail` threshold that fails on the
/// run's figures so far, checked once a second.
async fn abort_watch(
    thresholds: Vec<Threshold>,
    clients: u64,
    stop: Stop,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
) {
    let watched: Vec<(usize, Threshold)> = thresholds
        .into_iter()
        .enumerate()
        .filter(|(_, t)| t.abort_on_fail)
        .collect();
    if watched.is_empty() {
        return;
    }
    let mut next = Duration::from_secs(1);
    while snapshots.changed().await.is_ok() {
        let snap = snapshots.borrow_and_update().clone();
        if snap.elapsed < next {
            continue;
        }
        next = snap.elapsed + Duration::from_secs(1);
        let totals = results::totals_from(
            &snap.totals,
            clients,
            snap.peak_connected,
            snap.point.connected,
        );
        let figures = Figures {
            totals: &totals,
            latency: &snap.latency,
            storm: &snap.storm,
            conversation: None,
        };
        for (i, t) in &watched {
            if snap.elapsed >= t.delay && t.fails_now(&figures).is_some() {
                stop.request(StopReason::Aborted {
                    threshold: *i,
                    at: snap.elapsed,
                });
                return;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a run `--until recovered` watches every tick: whether it has settled.
struct SettleWatch {
    settling: Settling,
    stop: Stop,
    timeline_done: CancellationToken,
}

/// Close an interval every tick and publish the snapshot, until the clients have been told to
/// stop (the drain takes the last tick itself). With `settle`, every tick's totals are also
/// checked (none skipped, as a reader of the snapshots might), and the run is stopped once it
/// has settled.
async fn tick_loop(
    collector: Arc<Mutex<Collector>>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    epoch: Instant,
    clients_stop: CancellationToken,
    mut settle: Option<SettleWatch>,
) {
    let mut interval = tokio::time::interval_at(epoch + TICK, TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = clients_stop.cancelled() => return,
        }
        let snap = lock(&collector).tick();
        if let Some(w) = &mut settle
            && let Some(at) =
                w.settling
                    .observe(snap.elapsed, w.timeline_done.is_cancelled(), &snap.totals)
        {
            w.stop.request(StopReason::Settled { at });
            settle = None;
        }
        snapshots.send_replace(Arc::new(snap));
    }
}

async fn fire_timeline(
    timeline: Vec<PlannedAction>,
    server: Option<Arc<tokio::sync::Mutex<LocalServer>>>,
    proxy: Option<Arc<EmbeddedProxy>>,
    metrics: Arc<Metrics>,
    epoch: Instant,
    stop: CancellationToken,
    done: CancellationToken,
) -> Vec<FiredAction> {
    let mut fired = Vec::new();
    // Until when a drain or a node's restart fired so far is still closing connections.
    let mut busy_until = epoch;
    for planned in timeline {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep_until(epoch + planned.at) => {}
        }
        // The plan made sure the server or proxy an action needs is there.
        let connections = match &planned.action {
            TimelineAction::Server(a) => match &server {
                Some(s) => s.lock().await.apply(*a).await,
                None => 0,
            },
            TimelineAction::Proxy(f) => match &proxy {
                Some(p) => {
                    let open = p.handle.open();
                    if let Err(e) = p.handle.apply(f.clone()) {
                        metrics.warn(format!("proxy fault `{f}` not applied: {e}"));
                    }
                    open
                }
                None => 0,
            },
            TimelineAction::Heal => match &proxy {
                Some(p) => {
                    p.handle.heal();
                    p.handle.open()
                }
                None => 0,
            },
        };
        fired.push(FiredAction {
            t_ms: epoch.elapsed().as_millis() as u64,
            action: planned.action.to_string(),
            connections,
        });
        if let TimelineAction::Server(a) = &planned.action {
            busy_until = busy_until.max(epoch + planned.at + a.lasts());
        }
    }
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = sleep_until(busy_until) => {}
    }
    if !stop.is_cancelled() {
        done.cancel();
    }
    fired
}
