//! A TCP fault proxy to put between the swarm and any server: the network faults of article
//! §9 (load-balancer idle timeouts, NAT expiry, buffering proxies, partitions, restarts) on
//! real connections, fired from a run's timeline or from a small HTTP control API.
//!
//! One task per proxied connection ([`pump`]), driven by socket readiness, so an idle
//! connection holds no buffers. Active faults live in a [`FaultTable`] published on a watch
//! channel; each connection works out which faults apply to it (its share, its source address,
//! the direction) whenever the table changes. The accept loop closes its listener while a
//! `refuse` fault is active, so new connections are refused by the kernel as they would be by a
//! host that is down.

mod control;
mod pump;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::net::background::{Background, Service, Threads};
use crate::net::listener::{Reservation, listen};
use crate::net::striped::Striped;

use crate::units::{ByteRate, ByteSize, Dur, Percent};

pub use control::{bind_control, serve_control};

/// The direction a fault applies to: the profile's word for it, used as it is.
pub use crate::profile::Direction;

/// How a connection is closed: `reset` (RST) or `fin` (a clean TCP close, no WebSocket close
/// frame).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutMode {
    #[default]
    Reset,
    Fin,
}

/// A fault, as the control API and the timeline give it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// Close a share of the open connections now.
    Cut {
        #[serde(default)]
        mode: CutMode,
        #[serde(default)]
        share: Percent,
    },
    /// Stop forwarding without closing: both sides think they are connected.
    Blackhole {
        #[serde(default)]
        share: Percent,
        #[serde(default)]
        direction: Direction,
        #[serde(default)]
        duration: Option<Dur>,
    },
    /// Delay every chunk by `delay` ± `jitter`.
    Latency {
        delay: Dur,
        #[serde(default)]
        jitter: Dur,
        #[serde(default)]
        share: Percent,
        #[serde(default)]
        direction: Direction,
        #[serde(default)]
        duration: Option<Dur>,
    },
    /// At most `rate` bytes per second per connection and direction.
    Bandwidth {
        rate: ByteRate,
        #[serde(default)]
        share: Percent,
        #[serde(default)]
        direction: Direction,
        #[serde(default)]
        duration: Option<Dur>,
    },
    /// Forward in pieces of `bytes`, `delay` apart (a buffering, dribbling middlebox).
    Slicer {
        bytes: ByteSize,
        delay: Dur,
        #[serde(default)]
        share: Percent,
        #[serde(default)]
        direction: Direction,
        #[serde(default)]
        duration: Option<Dur>,
    },
    /// Close connections that carried no bytes for `after` (a load balancer's idle timeout).
    IdleTimeout {
        after: Dur,
        #[serde(default)]
        mode: CutMode,
        #[serde(default)]
        share: Percent,
        #[serde(default)]
        duration: Option<Dur>,
    },
    /// Refuse new connections (the listener is closed); optionally cut the open ones too.
    Refuse {
        #[serde(default)]
        cut_existing: bool,
        #[serde(default)]
        duration: Option<Dur>,
    },
    /// Blackhole the clients of a share of source addresses, both directions.
    Partition {
        share: Percent,
        #[serde(default)]
        duration: Option<Dur>,
    },
}

impl Fault {
    /// How long the fault stays before it removes itself.
    pub fn duration(&self) -> Option<Duration> {
        match self {
            Fault::Cut { .. } => None,
            Fault::Blackhole { duration, .. }
            | Fault::Latency { duration, .. }
            | Fault::Bandwidth { duration, .. }
            | Fault::Slicer { duration, .. }
            | Fault::IdleTimeout { duration, .. }
            | Fault::Refuse { duration, .. }
            | Fault::Partition { duration, .. } => duration.map(|d| d.0),
        }
    }

    /// Values serde cannot check.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, d: Dur| {
            if d.0.is_zero() {
                Err(format!("`{name}` must be longer than 0s"))
            } else {
                Ok(())
            }
        };
        if let Some(d) = self.duration()
            && d.is_zero()
        {
            return Err("`duration` must be longer than 0s".into());
        }
        match self {
            Fault::Latency { delay, jitter, .. } => {
                if jitter.0 > delay.0 {
                    return Err(format!(
                        "jitter ({jitter}) is larger than the delay ({delay})"
                    ));
                }
                Ok(())
            }
            Fault::Slicer { bytes, delay, .. } => {
                if bytes.0 == 0 {
                    return Err("`bytes` must be at least 1".into());
                }
                positive("delay", *delay)
            }
            Fault::IdleTimeout { after, .. } => positive("after", *after),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let share = |f: &mut std::fmt::Formatter, s: &Percent| {
            if s.0 < 1.0 {
                write!(f, " share {s}")
            } else {
                Ok(())
            }
        };
        let dir = |f: &mut std::fmt::Formatter, d: &Direction| match d {
            Direction::Both => Ok(()),
            Direction::Upstream => write!(f, " upstream"),
            Direction::Downstream => write!(f, " downstream"),
        };
        match self {
            Fault::Cut { mode, share: s } => {
                write!(
                    f,
                    "cut {}",
                    if *mode == CutMode::Reset {
                        "reset"
                    } else {
                        "fin"
                    }
                )?;
                share(f, s)
            }
            Fault::Blackhole {
                share: s,
                direction,
                ..
            } => {
                write!(f, "blackhole")?;
                dir(f, direction)?;
                share(f, s)
            }
            Fault::Latency {
                delay,
                jitter,
                share: s,
                direction,
                ..
            } => {
                write!(f, "latency {delay} ± {jitter}")?;
                dir(f, direction)?;
                share(f, s)
            }
            Fault::Bandwidth {
                rate,
                share: s,
                direction,
                ..
            } => {
                write!(f, "bandwidth {rate}")?;
                dir(f, direction)?;
                share(f, s)
            }
            Fault::Slicer {
                bytes,
                delay,
                share: s,
                direction,
                ..
            } => {
                write!(f, "slicer {bytes} every {delay}")?;
                dir(f, direction)?;
                share(f, s)
            }
            Fault::IdleTimeout {
                after,
                mode,
                share: s,
                ..
            } => {
                write!(
                    f,
                    "idle-timeout {after} {}",
                    if *mode == CutMode::Reset {
                        "reset"
                    } else {
                        "fin"
                    }
                )?;
                share(f, s)
            }
            Fault::Refuse { cut_existing, .. } => {
                write!(f, "refuse")?;
                if *cut_existing {
                    write!(f, " and cut existing")?;
                }
                Ok(())
            }
            Fault::Partition { share: s, .. } => write!(f, "partition {s} of source addresses"),
        }?;
        if let Some(d) = self.duration() {
            write!(f, " for {}", Dur(d))?;
        }
        Ok(())
    }
}

/// A fault in force, with the id the control API and `heal` use.
#[derive(Clone, Debug, Serialize)]
pub struct ActiveFault {
    pub id: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

/// Everything in force, plus the recent one-shot cuts (id, mode, share): a connection applies
/// every cut newer than the last it saw, so two cuts in a row both reach it.
#[derive(Clone, Debug, Default)]
pub struct FaultTable {
    pub faults: Vec<ActiveFault>,
    pub cuts: Vec<(u64, CutMode, f64)>,
}

/// Cuts remembered for connections that have not looked at the table yet.
const CUT_LOG: usize = 64;

/// The faults that apply to one connection and direction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DirFaults {
    pub blackhole: bool,
    pub latency: Option<(Duration, Duration)>,
    pub bandwidth: Option<f64>,
    pub slicer: Option<(usize, Duration)>,
}

impl DirFaults {
    /// Whether chunks must wait in a queue (anything beyond plain forwarding).
    pub fn paced(&self) -> bool {
        self.latency.is_some() || self.bandwidth.is_some() || self.slicer.is_some()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Effective {
    pub up: DirFaults,
    pub down: DirFaults,
    pub idle: Option<(Duration, CutMode)>,
}

fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let b = u128::from(v6);
            (b as u64) ^ ((b >> 64) as u64)
        }
    }
}

impl FaultTable {
    pub fn effective(&self, conn: u64, source: IpAddr) -> Effective {
        let mut e = Effective::default();
        for a in &self.faults {
            let mut dirs = |direction: Direction, share: f64, apply: &dyn Fn(&mut DirFaults)| {
                if crate::seed::in_share(conn, a.id, share) {
                    if direction.covers(true) {
                        apply(&mut e.up);
                    }
                    if direction.covers(false) {
                        apply(&mut e.down);
                    }
                }
            };
            match &a.fault {
                Fault::Blackhole {
                    share, direction, ..
                } => dirs(*direction, share.0, &|d| d.blackhole = true),
                Fault::Latency {
                    delay,
                    jitter,
                    share,
                    direction,
                    ..
                } => dirs(*direction, share.0, &|d| {
                    d.latency = Some((delay.0, jitter.0))
                }),
                Fault::Bandwidth {
                    rate,
                    share,
                    direction,
                    ..
                } => dirs(*direction, share.0, &|d| d.bandwidth = Some(rate.0)),
                Fault::Slicer {
                    bytes,
                    delay,
                    share,
                    direction,
                    ..
                } => dirs(*direction, share.0, &|d| {
                    d.slicer = Some((bytes.0 as usize, delay.0))
                }),
                Fault::IdleTimeout {
                    after, mode, share, ..
                } => {
                    if crate::seed::in_share(conn, a.id, share.0) {
                        e.idle = Some((after.0, *mode));
                    }
                }
                Fault::Partition { share, .. } => {
                    if crate::seed::in_share(ip_key(source), a.id, share.0) {
                        e.up.blackhole = true;
                        e.down.blackhole = true;
                    }
                }
                Fault::Cut { .. } | Fault::Refuse { .. } => {}
            }
        }
        e
    }

    fn refusing(&self) -> bool {
        self.faults
            .iter()
            .any(|a| matches!(a.fault, Fault::Refuse { .. }))
    }
}

/// Declares the proxy's counters once. `events` happen once per connection or fault and are
/// plain shared atomics; `per_chunk` are bumped for every chunk forwarded and are striped per
/// thread (see [`Striped`]), so connection tasks on different cores never write one cache line.
macro_rules! proxy_counters {
    (
        events { $($(#[$doc:meta])* $name:ident),* $(,)? }
        per_chunk { $($(#[$cdoc:meta])* $hot:ident),* $(,)? }
    ) => {
        #[derive(Debug, Default)]
        pub struct ProxyStats {
            $(pub $name: AtomicU64,)*
            per_chunk: Striped<PerChunk>,
            /// What went wrong in the proxy (a listener that could not come back): for the
            /// results, not stderr, where it would garble the dashboard.
            pub warnings: Mutex<Vec<String>>,
        }

        /// One thread's share of the per-chunk counters.
        #[derive(Debug, Default)]
        struct PerChunk {
            $($hot: AtomicU64,)*
        }

        /// The proxy's counters, for results.json and the control API.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        pub struct ProxySummary {
            $($(#[$doc])* #[serde(default)] pub $name: u64,)*
            $($(#[$cdoc])* #[serde(default)] pub $hot: u64,)*
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub warnings: Vec<String>,
        }

        impl ProxyStats {
            /// Exact whenever it is read (the control API's `GET /stats` included).
            pub fn summary(&self) -> ProxySummary {
                ProxySummary {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    $($hot: self
                        .per_chunk
                        .all()
                        .map(|s| s.$hot.load(Ordering::Relaxed))
                        .sum(),)*
                    warnings: self
                        .warnings
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone(),
                }
            }
        }
    };
}

proxy_counters! {
    events {
        /// Client connections accepted.
        accepted,
        /// Connections open now.
        open,
        /// Upstream connects that failed (the client connection was then reset).
        upstream_errors,
        /// Connections closed by a `cut` (or `refuse` with cut_existing).
        cut,
        /// Connections closed by an idle timeout.
        idle_timeouts,
    }
    per_chunk {
        bytes_upstream,
        bytes_downstream,
    }
}

impl ProxyStats {
    /// Count bytes `conn` forwarded: in its own counters (its task alone writes them) and in
    /// the calling thread's stripe of the totals.
    fn forwarded(&self, conn: &ConnInfo, up: bool, n: usize) {
        if n == 0 {
            return;
        }
        let n = n as u64;
        let here = self.per_chunk.local();
        if up {
            conn.bytes_up.fetch_add(n, Ordering::Relaxed);
            here.bytes_upstream.fetch_add(n, Ordering::Relaxed);
        } else {
            conn.bytes_down.fetch_add(n, Ordering::Relaxed);
            here.bytes_downstream.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// One proxied connection, as the control API lists it.
#[derive(Debug)]
pub struct ConnInfo {
    pub id: u64,
    pub client: SocketAddr,
    pub opened: Instant,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConnView {
    pub id: u64,
    pub client: String,
    pub age_ms: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    /// Bytes read per chunk; also the most queued per direction before reading pauses.
    pub buffer: usize,
    pub connect_timeout: Duration,
    pub backlog: u32,
}

impl ProxyConfig {
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> ProxyConfig {
        ProxyConfig {
            listen,
            upstream,
            buffer: 16 * 1024,
            connect_timeout: Duration::from_secs(5),
            backlog: 4096,
        }
    }
}

struct Shared {
    config: ProxyConfig,
    table: watch::Sender<Arc<FaultTable>>,
    stats: ProxyStats,
    conns: Mutex<HashMap<u64, Arc<ConnInfo>>>,
    next_fault: AtomicU64,
    /// Where timers of faults with a duration run, whichever thread applied them.
    runtime: tokio::runtime::Handle,
}

/// Applies and removes faults on a running proxy, from any thread or runtime.
#[derive(Clone)]
pub struct ProxyHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ProxyHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> ProxySummary {
        self.shared.stats.summary()
    }

    pub fn open(&self) -> u64 {
        self.shared.stats.open.load(Ordering::Relaxed)
    }

    /// Put a fault in force (a `cut` acts at once); returns its id. A fault with a
    /// `duration` removes itself afterwards, timed on the proxy's runtime, so a fault can be
    /// applied from any thread.
    pub fn apply(&self, fault: Fault) -> Result<u64, String> {
        fault.validate()?;
        let id = self.shared.next_fault.fetch_add(1, Ordering::Relaxed) + 1;
        let duration = fault.duration();
        self.shared.table.send_modify(|t| {
            let mut next = (**t).clone();
            let cut = |next: &mut FaultTable, c| {
                if next.cuts.len() >= CUT_LOG {
                    next.cuts.remove(0);
                }
                next.cuts.push(c);
            };
            match &fault {
                Fault::Cut { mode, share } => cut(&mut next, (id, *mode, share.0)),
                Fault::Refuse {
                    cut_existing: true, ..
                } => {
                    cut(&mut next, (id, CutMode::Reset, 1.0));
                    next.faults.push(ActiveFault {
                        id,
                        fault: fault.clone(),
                    });
                }
                _ => next.faults.push(ActiveFault {
                    id,
                    fault: fault.clone(),
                }),
            }
            *t = Arc::new(next);
        });
        if let Some(d) = duration {
            let handle = self.clone();
            self.shared.runtime.spawn(async move {
                tokio::time::sleep(d).await;
                handle.remove(id);
            });
        }
        Ok(id)
    }

    /// Remove one fault; false if it was not in force.
    pub fn remove(&self, id: u64) -> bool {
        let mut found = false;
        self.shared.table.send_modify(|t| {
            if t.faults.iter().any(|a| a.id == id) {
                let mut next = (**t).clone();
                next.faults.retain(|a| a.id != id);
                *t = Arc::new(next);
                found = true;
            }
        });
        found
    }

    /// Remove every fault.
    pub fn heal(&self) {
        self.shared.table.send_modify(|t| {
            let mut next = (**t).clone();
            next.faults.clear();
            *t = Arc::new(next);
        });
    }

    pub fn faults(&self) -> Vec<ActiveFault> {
        self.shared.table.borrow().faults.clone()
    }

    pub fn connections(&self) -> Vec<ConnView> {
        let conns = self
            .shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<ConnView> = conns
            .values()
            .map(|c| ConnView {
                id: c.id,
                client: c.client.to_string(),
                age_ms: c.opened.elapsed().as_millis() as u64,
                bytes_up: c.bytes_up.load(Ordering::Relaxed),
                bytes_down: c.bytes_down.load(Ordering::Relaxed),
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }
}

pub struct Proxy {
    listener: TcpListener,
    handle: ProxyHandle,
}

impl Proxy {
    pub async fn bind(config: ProxyConfig) -> std::io::Result<Proxy> {
        let listener = listen(config.listen, config.backlog)?;
        let addr = listener.local_addr()?;
        let (table, _) = watch::channel(Arc::new(FaultTable::default()));
        let shared = Arc::new(Shared {
            config,
            table,
            stats: ProxyStats::default(),
            conns: Mutex::new(HashMap::new()),
            next_fault: AtomicU64::new(0),
            runtime: tokio::runtime::Handle::current(),
        });
        Ok(Proxy {
            listener,
            handle: ProxyHandle { addr, shared },
        })
    }

    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// Accept and forward until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let Proxy { listener, handle } = self;
        let shared = handle.shared.clone();
        let mut listener = Some(listener);
        let mut reserved: Option<Reservation> = None;
        let mut table = shared.table.subscribe();
        let conns = tokio_util::task::TaskTracker::new();
        let mut next_id = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = table.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let refusing = table.borrow_and_update().refusing();
                    if refusing && listener.is_some() {
                        // No listener: the kernel answers new SYNs with RST (refused). The
                        // port stays reserved for when the fault is healed.
                        if let Some(l) = listener.take() {
                            reserved = Reservation::take(l, false).ok();
                        }
                    } else if !refusing && listener.is_none() {
                        let reopened = match reserved.take() {
                            Some(r) => r.release(handle.addr, shared.config.backlog, false),
                            None => listen(handle.addr, shared.config.backlog),
                        };
                        match reopened {
                            Ok(l) => listener = Some(l),
                            Err(e) => {
                                shared.stats.warnings.lock().unwrap_or_else(PoisonError::into_inner).push(format!(
                                    "the fault proxy could not listen again on {} after a refuse fault, and took no new connections: {e}",
                                    handle.addr
                                ));
                                break;
                            }
                        }
                    }
                }
                accepted = accept_opt(&listener) => match accepted {
                    Ok((client, peer)) => {
                        next_id += 1;
                        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                        conns.spawn(connect_and_pump(client, peer, next_id, shared.clone(), shutdown.clone()));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
        drop(listener);
        conns.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), conns.wait()).await;
    }
}

async fn connect_and_pump(
    client: TcpStream,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let upstream = match tokio::time::timeout(
        shared.config.connect_timeout,
        TcpStream::connect(shared.config.upstream),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => {
            // The client sees what it would see without the proxy: a reset.
            shared.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let info = Arc::new(ConnInfo {
        id,
        client: peer,
        opened: Instant::now(),
        bytes_up: AtomicU64::new(0),
        bytes_down: AtomicU64::new(0),
    });
    shared
        .conns
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, info.clone());
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    pump::pump(client, upstream, &info, &shared, shutdown).await;
    shared.stats.open.fetch_sub(1, Ordering::Relaxed);
    shared
        .conns
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
}

async fn accept_opt(l: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl Service for Proxy {
    type Handle = ProxyHandle;
    fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }
    fn run(self, shutdown: CancellationToken) -> impl std::future::Future<Output = ()> + Send {
        Proxy::run(self, shutdown)
    }
}

/// The proxy inside `wsstorm run`, on a runtime of its own or sharing one.
pub type EmbeddedProxy = Background<ProxyHandle>;

/// Start the proxy on `runtime` (the embedded server's, as a sidecar), or on a runtime and
/// thread of its own. On its own it gets one thread and no work stealing: a proxy's work is
/// short and I/O bound, and cross-thread wake-ups would cost more than they spread.
pub async fn start_embedded(
    config: ProxyConfig,
    runtime: Option<tokio::runtime::Handle>,
) -> std::io::Result<EmbeddedProxy> {
    match runtime {
        Some(rt) => Background::start_on(rt, Proxy::bind(config)).await,
        None => {
            let threads = Threads {
                name: "wsstorm-proxy",
                workers: 0,
                nice: 0,
            };
            Background::start(threads, move || Proxy::bind(config)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(faults: Vec<Fault>) -> FaultTable {
        FaultTable {
            faults: faults
                .into_iter()
                .enumerate()
                .map(|(i, fault)| ActiveFault {
                    id: i as u64 + 1,
                    fault,
                })
                .collect(),
            cuts: Vec::new(),
        }
    }

    /// Bytes forwarded are counted in per-thread stripes; the totals the control API serves
    /// must be exact while connections are still open, and match the connections' own counts.
    #[tokio::test]
    async fn forwarded_bytes_are_exact_while_connections_are_open() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = Proxy::bind(ProxyConfig::new("127.0.0.1:0".parse().unwrap(), upstream))
            .await
            .unwrap();
        let handle = proxy.handle();
        let shutdown = CancellationToken::new();
        tokio::spawn(proxy.run(shutdown.clone()));

        let payload = vec![7u8; 100_000];
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut c = TcpStream::connect(handle.local_addr()).await.unwrap();
            c.write_all(&payload).await.unwrap();
            let mut back = vec![0u8; payload.len()];
            c.read_exact(&mut back).await.unwrap();
            clients.push(c);
        }
        // One runtime thread: the proxy counted each chunk before the client could read it.
        let s = handle.stats();
        assert_eq!(s.open, 3);
        assert_eq!(s.bytes_upstream, 300_000);
        assert_eq!(s.bytes_downstream, 300_000);
        let conns = handle.connections();
        assert_eq!(conns.iter().map(|c| c.bytes_up).sum::<u64>(), 300_000);
        assert!(conns.iter().all(|c| c.bytes_down == 100_000), "{conns:?}");
        shutdown.cancel();
    }

    #[test]
    fn faults_parse_from_json_with_clear_errors() {
        let f: Fault =
            serde_json::from_str(r#"{"kind":"latency","delay":"100ms","jitter":"10ms"}"#).unwrap();
        assert_eq!(f.to_string(), "latency 100ms ± 10ms");
        let e = serde_json::from_str::<Fault>(r#"{"kind":"latncy","delay":"1s"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `latncy`"), "{e}");
        let e = serde_json::from_str::<Fault>(r#"{"kind":"latency","delay":"soon"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid duration"), "{e}");
        let e = serde_json::from_str::<Fault>(r#"{"kind":"cut","mode":"reset","delay":"1s"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `delay`"), "{e}");
        let bad: Fault =
            serde_json::from_str(r#"{"kind":"latency","delay":"1ms","jitter":"5ms"}"#).unwrap();
        assert!(bad.validate().unwrap_err().contains("jitter"));
    }

    #[test]
    fn effective_faults_by_direction_share_and_source() {
        let t = table(vec![
            Fault::Latency {
                delay: Dur(Duration::from_millis(50)),
                jitter: Dur::default(),
                share: Percent(1.0),
                direction: Direction::Downstream,
                duration: None,
            },
            Fault::Blackhole {
                share: Percent(0.5),
                direction: Direction::Both,
                duration: None,
            },
        ]);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let e = t.effective(1, ip);
        assert!(e.up.latency.is_none());
        assert_eq!(
            e.down.latency,
            Some((Duration::from_millis(50), Duration::ZERO))
        );
        let holed = (0..1000)
            .filter(|&c| t.effective(c, ip).up.blackhole)
            .count();
        assert!((400..600).contains(&holed), "{holed}");

        let p = table(vec![Fault::Partition {
            share: Percent(0.3),
            duration: None,
        }]);
        // Every connection from one address shares its fate.
        let a: IpAddr = "127.0.0.7".parse().unwrap();
        let fate = p.effective(1, a).up.blackhole;
        assert!((2..100).all(|c| p.effective(c, a).up.blackhole == fate));
        let parted = (1..=250u8)
            .filter(|i| {
                let ip: IpAddr = format!("127.0.0.{i}").parse().unwrap();
                p.effective(0, ip).down.blackhole
            })
            .count();
        assert!((40..110).contains(&parted), "{parted}");
    }
}
