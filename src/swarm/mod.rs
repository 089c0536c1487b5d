//! The coordinator: starts the target (if embedded), spawns clients on their arrival schedule,
//! fires timeline actions, and ends the run on the deadline or on `stop` — one path either way:
//! note the end, let clients close within the grace period, flush metrics, build [`Results`].
//!
//! It is the only part that knows the plan; clients know their group, the dashboard knows
//! snapshots.

pub mod workers;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::connect::{EmbeddedInfo, TargetConn};
use crate::client::{self, GroupCtx};
use crate::metrics::{Collector, Latency, Metrics, Snapshot, TICK, summarize};
use crate::os::{fd_limit, raise_fd_limit};
use crate::plan::{Plan, PlanTarget, TimelineAction};
use crate::proxy::{EmbeddedProxy, ProxyConfig};
use crate::results::{
    self, EndReason, FiredAction, Generator, GroupResults, GroupTimeline, Results, Timeline,
    latency_from, totals_from,
};
use crate::server::EmbeddedServer;
use crate::server::processes::ServerProcesses;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot start the embedded target on {addr}: {source}")]
    Target {
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
}

/// The embedded target, in this process or in several.
pub enum TargetServer {
    InProcess(EmbeddedServer),
    Processes(ServerProcesses),
}

impl TargetServer {
    async fn apply(&mut self, a: crate::server::Action) -> u64 {
        match self {
            TargetServer::InProcess(s) => s.handle.apply(a),
            TargetServer::Processes(p) => p.apply(a).await,
        }
    }

    async fn summary(&mut self) -> crate::server::ServerSummary {
        match self {
            TargetServer::InProcess(s) => s.handle.stats.summary(),
            TargetServer::Processes(p) => p.summary().await,
        }
    }

    async fn stop(self) {
        match self {
            TargetServer::InProcess(s) => {
                let _ = tokio::task::spawn_blocking(move || s.stop()).await;
            }
            TargetServer::Processes(p) => {
                p.stop().await;
            }
        }
    }
}

/// The wsstorm executable to start child processes from.
fn worker_exe(plan: &Plan) -> Result<std::path::PathBuf, String> {
    match &plan.worker_exe {
        Some(p) => Ok(p.clone()),
        None => {
            std::env::current_exe().map_err(|e| format!("cannot find the wsstorm executable: {e}"))
        }
    }
}

/// Where clients connect: the target's URL, what the embedded target tells them, and the
/// proxy in front of it. Sent to worker processes as it is.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Destination {
    pub url: String,
    pub embedded: EmbeddedInfo,
    pub proxy: Option<std::net::SocketAddr>,
}

/// The connection targets of a run: direct, and through the proxy.
pub struct Targets {
    direct: Arc<TargetConn>,
    proxied: Option<Arc<TargetConn>>,
}

impl Targets {
    pub fn new(d: &Destination, tls: &crate::profile::TlsSettings) -> Result<Targets, String> {
        let direct = Arc::new(TargetConn::with_embedded(&d.url, tls, &d.embedded)?);
        let proxied = match d.proxy {
            Some(addr) => Some(Arc::new(TargetConn::with_embedded(
                &d.url,
                tls,
                &EmbeddedInfo {
                    addr: Some(addr),
                    ca_pem: d.embedded.ca_pem.clone(),
                },
            )?)),
            None => None,
        };
        Ok(Targets { direct, proxied })
    }
}

/// Which clients of each group this process runs: those whose index in the group is
/// `index` modulo `count`. Every client keeps its arrival time and its RNG seed, so a run
/// split over processes is the same run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    fn has(self, i: u32) -> bool {
        i % self.count == self.index
    }
}

/// Spawn this shard's clients on their arrival schedule.
pub fn spawn_clients(
    plan: &Plan,
    shard: Shard,
    targets: &Targets,
    metrics: &Arc<Metrics>,
    epoch: Instant,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) {
    for group in &plan.groups {
        let ctx = Arc::new(GroupCtx {
            group: group.index as u16,
            behaviour: group.behaviour.clone(),
            target: match (&targets.proxied, group.via_proxy) {
                (Some(p), true) => p.clone(),
                _ => targets.direct.clone(),
            },
            metrics: metrics.clone(),
            epoch,
            cancel: cancel.clone(),
            grace: plan.grace,
            seed: plan.seed,
        });
        let arrivals = group.arrivals(plan.seed);
        let first = group.first_client;
        let stop = cancel.clone();
        let spawner = tracker.clone();
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
                spawner.spawn(client::run(ctx.clone(), first + i as u32, at));
            }
        });
    }
}

/// Run the plan. `stop` ends the run early (Ctrl-C, a dashboard key); results still come back.
/// Snapshots are published on `snapshots` every tick.
pub async fn run(
    plan: &Plan,
    stop: CancellationToken,
    snapshots: watch::Sender<Arc<Snapshot>>,
) -> Result<Results, SetupError> {
    raise_fd_limit();
    let (server, url, embedded) = match &plan.target {
        PlanTarget::Embedded { config, .. } if plan.target_processes > 0 => {
            let procs = ServerProcesses::start(
                &worker_exe(plan).map_err(SetupError::Workers)?,
                config,
                plan.target_processes,
            )
            .await
            .map_err(SetupError::Workers)?;
            let info = EmbeddedInfo {
                addr: Some(procs.addr),
                ca_pem: None,
            };
            let url = procs.url.clone();
            (Some(TargetServer::Processes(procs)), url, info)
        }
        PlanTarget::Embedded { config, threads } => {
            let addr = config.listen.to_string();
            let server = crate::server::start_embedded((**config).clone(), *threads)
                .await
                .map_err(|source| SetupError::Target { addr, source })?;
            let url = server.handle.url();
            let info = EmbeddedInfo {
                addr: Some(server.handle.local_addr()),
                ca_pem: server.handle.ca_pem().map(str::to_string),
            };
            (Some(TargetServer::InProcess(server)), url, info)
        }
        PlanTarget::External { url } => (None, url.clone(), EmbeddedInfo::default()),
    };
    let direct =
        TargetConn::with_embedded(&url, &plan.tls, &embedded).map_err(SetupError::Connect)?;
    // The proxy forwards to the target's address; clients that use it connect to the proxy
    // but keep the target's URL (Host header, TLS name).
    let proxy = match &plan.proxy {
        Some(p) => {
            let upstream = direct.resolve().await.map_err(|e| {
                SetupError::Connect(format!("cannot resolve {url} for the proxy: {}", e.name()))
            })?;
            let mut config = ProxyConfig::new(p.listen, upstream);
            config.buffer = p.buffer;
            let started = match &server {
                // In front of the embedded target: a sidecar on its runtime.
                Some(TargetServer::InProcess(s)) => {
                    crate::proxy::start_embedded(config, Some(s.runtime.clone())).await
                }
                _ => crate::proxy::start_embedded(config, None).await,
            };
            Some(started.map_err(|source| SetupError::Proxy {
                addr: p.listen.to_string(),
                source,
            })?)
        }
        None => None,
    };
    let where_to = Destination {
        url: url.clone(),
        embedded: embedded.clone(),
        proxy: proxy.as_ref().map(|p| p.handle.local_addr()),
    };
    let targets = Targets::new(&where_to, &plan.tls).map_err(SetupError::Connect)?;

    let metrics = Arc::new(Metrics::new(plan.groups.len()));
    let started_at = SystemTime::now();
    let epoch = Instant::now();
    let collector = Arc::new(Mutex::new(Collector::new(
        metrics.clone(),
        epoch.into_std(),
    )));
    let clients_stop = CancellationToken::new();
    let tracker = TaskTracker::new();

    let abort = abort_watch(plan, snapshots.subscribe());
    let ticker = tokio::spawn(tick_loop(
        collector.clone(),
        snapshots,
        epoch,
        clients_stop.clone(),
    ));

    let mut workers = if plan.workers > 0 {
        Some(
            crate::swarm::workers::Workers::start(plan, &where_to, &metrics, &collector)
                .await
                .map_err(SetupError::Workers)?,
        )
    } else {
        spawn_clients(
            plan,
            Shard::ALL,
            &targets,
            &metrics,
            epoch,
            &clients_stop,
            &tracker,
        );
        None
    };

    let proxy = proxy.map(Arc::new);
    let server = server.map(|s| Arc::new(tokio::sync::Mutex::new(s)));
    let fired = tokio::spawn(fire_timeline(
        plan.timeline.clone(),
        server.clone(),
        proxy.clone(),
        epoch,
        clients_stop.clone(),
    ));

    let mut aborted_by: Option<(usize, Duration)> = None;
    let end_reason = tokio::select! {
        _ = sleep_until(epoch + plan.duration) => EndReason::Completed,
        _ = stop.cancelled() => EndReason::Interrupted,
        failed = abort => {
            aborted_by = Some(failed);
            EndReason::Aborted
        }
    };
    let duration = epoch.elapsed();
    // Exactly what was open at the end: every open/close so far is in the shards (workers
    // count their own at this moment).
    let group_connected_at_end: Vec<u64> = match &mut workers {
        Some(w) => w.connected_at_end(plan.groups.len()).await,
        None => {
            let mut c = lock(&collector);
            c.tick();
            c.groups
                .iter()
                .map(|g| g.data.counters.connected())
                .collect()
        }
    };
    let connected_at_end = group_connected_at_end.iter().sum();

    clients_stop.cancel();
    tracker.close();
    let mut worker_cpu = (0.0, 0.0);
    let drained = match workers {
        Some(w) => {
            let cpu = w.cpu.clone();
            let all = w.finish(plan.grace + Duration::from_secs(5)).await;
            worker_cpu = *cpu.lock().unwrap_or_else(PoisonError::into_inner);
            all
        }
        None => tokio::time::timeout(plan.grace + Duration::from_secs(2), tracker.wait())
            .await
            .is_ok(),
    };
    if !drained {
        eprintln!(
            "wsstorm: some clients did not finish closing within the grace period; their closes are not counted"
        );
    }
    let _ = ticker.await;
    let fired = fired.await.unwrap_or_default();
    let server_summary = match &server {
        Some(s) => Some(s.lock().await.summary().await),
        None => None,
    };
    let proxy_summary = proxy.as_ref().map(|p| p.handle.stats());
    if let Some(p) = proxy.and_then(|p| Arc::try_unwrap(p).ok()) {
        tokio::task::spawn_blocking(move || p.stop())
            .await
            .unwrap_or(());
    }
    if let Some(s) = server.and_then(|s| Arc::try_unwrap(s).ok()) {
        s.into_inner().stop().await;
    }

    let mut c = lock(&collector);
    c.tick();
    let totals = totals_from(
        &c.totals,
        u64::from(plan.total_clients()),
        c.peak_connected,
        connected_at_end,
    );
    let attempts_series: Vec<u64> = c.points.iter().map(|p| p.attempts).collect();
    let retries_series: Vec<u64> = c.points.iter().map(|p| p.retries).collect();
    let storm = results::storm_from(&c.totals, &c.hists, &attempts_series, &retries_series);
    let groups = plan
        .groups
        .iter()
        .zip(&c.groups)
        .zip(&c.group_attempts)
        .zip(&c.group_retries)
        .zip(&c.group_connected)
        .zip(&group_connected_at_end)
        .map(
            |(((((g, t), series), retries), connected), at_end)| GroupResults {
                name: g.name.clone(),
                totals: totals_from(
                    &t.data.counters,
                    u64::from(g.clients),
                    t.peak_connected,
                    *at_end,
                ),
                latency_us: latency_from(&t.data.hists),
                storm: results::storm_from(&t.data.counters, &t.data.hists, series, retries),
                timeline: GroupTimeline {
                    attempts: series.clone(),
                    retries: retries.clone(),
                    connected: connected.clone(),
                },
            },
        )
        .collect();
    let lag = summarize(c.hists.get(Latency::ScheduleLag), true);
    let (cpu_user_s, cpu_sys_s) = crate::metrics::generator::cpu_times();
    let (cpu_user_s, cpu_sys_s) = (cpu_user_s + worker_cpu.0, cpu_sys_s + worker_cpu.1);
    let (fd_soft, _) = fd_limit();
    let warnings = results::generator_warnings(&lag, &c.samples, fd_soft, &totals);
    let mut results = Results {
        schema: results::SCHEMA.to_string(),
        name: plan.name.clone(),
        description: plan.description.clone(),
        seed: plan.seed,
        started_at: humantime::format_rfc3339_millis(started_at).to_string(),
        duration_ms: duration.as_millis() as u64,
        end_reason,
        target: url,
        latency_us: latency_from(&c.hists),
        timeline: Timeline {
            interval_ms: TICK.as_millis() as u64,
            points: std::mem::take(&mut c.points),
            actions: fired,
            close_codes: std::mem::take(&mut c.close_series)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        },
        generator: Generator {
            cpu_user_s: round3(cpu_user_s),
            cpu_sys_s: round3(cpu_sys_s),
            peak_rss_bytes: c.samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
            fd_limit: fd_soft,
            schedule_lag_us: lag,
            retry_lag_us: summarize(c.hists.get(Latency::RetryLag), true),
            samples: std::mem::take(&mut c.samples),
            warnings,
        },
        totals,
        storm,
        groups,
        server: server_summary,
        proxy: proxy_summary,
        thresholds: Vec::new(),
        profile: plan.profile_yaml.clone(),
    };
    results.thresholds =
        crate::results::threshold::evaluate_all(&plan.thresholds, &results.figures());
    if let Some((i, at)) = aborted_by
        && let Some(t) = results.thresholds.get_mut(i)
    {
        t.aborted_at_ms = Some(at.as_millis() as u64);
        // The run stopped because this failed; later figures can drift back under the
        // limit while the clients close, but the verdict is the one that stopped it.
        t.passed = false;
    }
    Ok(results)
}

/// Resolves with the first `abort_on_fail` threshold that fails on the run's figures so far
/// (its index, and when), checked once a second; never, when there are none.
async fn abort_watch(
    plan: &Plan,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
) -> (usize, Duration) {
    let watched: Vec<(usize, &crate::results::threshold::Threshold)> = plan
        .thresholds
        .iter()
        .enumerate()
        .filter(|(_, t)| t.abort_on_fail)
        .collect();
    if watched.is_empty() {
        return std::future::pending().await;
    }
    let clients = u64::from(plan.total_clients());
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
        let latency = results::LatencyTable::from_fn(|k| {
            snap.latency.get(k as usize).cloned().unwrap_or_default()
        });
        let figures = crate::results::threshold::Figures {
            totals: &totals,
            latency: &latency,
            storm: &snap.storm,
        };
        for (i, t) in &watched {
            if snap.elapsed >= t.delay && t.fails_now(&figures).is_some() {
                return (*i, snap.elapsed);
            }
        }
    }
    std::future::pending().await
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Close an interval every tick and publish the snapshot, until the clients have been told to
/// stop and have had their grace period (the coordinator takes the last tick itself).
async fn tick_loop(
    collector: Arc<Mutex<Collector>>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    epoch: Instant,
    clients_stop: CancellationToken,
) {
    let mut interval = tokio::time::interval_at(epoch + TICK, TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = clients_stop.cancelled() => return,
        }
        let snap = lock(&collector).tick();
        snapshots.send_replace(Arc::new(snap));
    }
}

async fn fire_timeline(
    timeline: Vec<crate::plan::PlannedAction>,
    server: Option<Arc<tokio::sync::Mutex<TargetServer>>>,
    proxy: Option<Arc<EmbeddedProxy>>,
    epoch: Instant,
    stop: CancellationToken,
) -> Vec<FiredAction> {
    let mut fired = Vec::new();
    for planned in timeline {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep_until(epoch + planned.at) => {}
        }
        // Validation made sure the server or proxy an action needs is there.
        let connections = match &planned.action {
            TimelineAction::Server(a) => match &server {
                Some(s) => s.lock().await.apply(*a).await,
                None => 0,
            },
            TimelineAction::Proxy(f) => match &proxy {
                Some(p) => {
                    let open = p.handle.open();
                    if let Err(e) = p.handle.apply(f.clone()) {
                        eprintln!("wsstorm: proxy fault not applied: {e}");
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
    }
    fired
}
