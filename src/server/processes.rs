//! The embedded server over several processes, for runs with more connections than one
//! process may hold open files. Each `wsstorm server-worker` process listens on the same port
//! (SO_REUSEPORT: the kernel spreads new connections over them) and takes orders as JSON lines
//! on stdin:
//!
//! ```text
//! coordinator → process:  Setup (once)   Apply(action)   Stats   Stop
//! process → coordinator:  Listening      Applied{open}   Stats   (Stats, then exit)
//! ```
//!
//! Behaviours that need one shared state cannot be split this way: a sequenced stream (each
//! process would number its own) and generated certificates (each would make its own CA). The
//! budget check refuses those with more than one process. Per-process limits (accept rate,
//! handshake workers) are divided among the processes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Action, Server, ServerConfig, ServerSummary};
use crate::os::child::{Child, Parent};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Setup {
    /// The whole server's configuration, with `listen` the shared address.
    pub config: ServerConfig,
    /// This process's share of the accept rate and handshake workers.
    pub share: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Order {
    Apply(Action),
    Stats,
    Stop,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Reply {
    Listening {
        addr: SocketAddr,
        url: String,
    },
    Applied {
        open: u64,
    },
    /// Boxed: the counters are far bigger than the other replies.
    Stats(Box<ServerSummary>),
    Error(String),
}

/// One process's part of the server: the shared port, and its share of the capacity.
fn config_of(setup: &Setup) -> ServerConfig {
    let mut c = setup.config.clone();
    let share = setup.share;
    c.reuse_port = true;
    c.accept_rate = c.accept_rate.map(|r| r * share);
    c.accept_burst = c
        .accept_burst
        .map(|b| ((f64::from(b) * share).ceil() as u32).max(1));
    // Each process holds its share of the caps. The kernel spreads connections over the
    // processes by a hash of their addresses and ports, not in turn, so the whole target holds
    // the caps only approximately (README says so): one process may refuse while another
    // still has room.
    let split = |n: u64| ((n as f64 * share).ceil() as u64).max(1);
    c.limits.max = c.limits.max.map(split);
    c.limits.per_ip = c.limits.per_ip.map(split);
    if let Some(h) = &mut c.handshake {
        h.workers = ((f64::from(h.workers) * share).ceil() as u32).max(1);
        h.queue = ((f64::from(h.queue) * share).ceil() as u32).max(1);
    }
    c
}

/// `wsstorm server-worker`: one process of a multi-process embedded server.
pub async fn server_worker_main() -> Result<(), String> {
    let mut parent = Parent::default();
    let setup: Setup = match parent.recv().await {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(format!("bad setup: {e}")),
        None => return Err("no setup on stdin".into()),
    };
    crate::os::raise_fd_limit();
    // The whole process is server: every thread its runtime already started.
    let niced = crate::net::background::lower_priority(&crate::os::thread_ids(), setup.config.nice);
    let server = match Server::bind(config_of(&setup)).await {
        Ok(s) => s,
        Err(e) => {
            let _ = parent.send(&Reply::Error(e.to_string())).await;
            return Err(e.to_string());
        }
    };
    let handle = server.handle();
    if let Err(w) = niced {
        handle
            .stats
            .warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(w);
    }
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));
    parent
        .send(&Reply::Listening {
            addr: handle.local_addr(),
            url: handle.url(),
        })
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let order = match parent.recv::<Order>().await {
            Some(Ok(o)) => o,
            Some(Err(e)) => {
                let _ = parent.send(&Reply::Error(format!("bad order: {e}"))).await;
                continue;
            }
            // The coordinator is gone: stop serving.
            None => Order::Stop,
        };
        match order {
            Order::Apply(a) => {
                let open = handle.apply(a);
                let _ = parent.send(&Reply::Applied { open }).await;
            }
            Order::Stats => {
                let _ = parent
                    .send(&Reply::Stats(Box::new(handle.stats.summary())))
                    .await;
            }
            Order::Stop => {
                shutdown.cancel();
                let _ = running.await;
                let _ = parent
                    .send(&Reply::Stats(Box::new(handle.stats.summary())))
                    .await;
                return Ok(());
            }
        }
    }
}

/// How long a server process may take to answer an order.
const REPLY_WITHIN: Duration = Duration::from_secs(10);

async fn reply(p: &mut Child) -> Option<Reply> {
    tokio::time::timeout(REPLY_WITHIN, p.recv())
        .await
        .ok()??
        .ok()
}

async fn ask(p: &mut Child, order: &Order) -> Option<Reply> {
    p.send(order).await.ok()?;
    reply(p).await
}

/// The coordinator's handle on the server processes.
pub struct ServerProcesses {
    procs: Vec<Child>,
    pub addr: SocketAddr,
    pub url: String,
}

impl ServerProcesses {
    pub async fn start(
        exe: &Path,
        config: &ServerConfig,
        count: usize,
    ) -> Result<ServerProcesses, String> {
        let mut procs = Vec::new();
        let mut config = config.clone();
        let mut found: Option<(SocketAddr, String)> = None;
        for i in 0..count {
            let mut child = Child::spawn(exe, "server-worker")?;
            let setup = Setup {
                config: config.clone(),
                share: 1.0 / count as f64,
            };
            child
                .send(&setup)
                .await
                .map_err(|e| format!("server process {i}: {e}"))?;
            match tokio::time::timeout(Duration::from_secs(20), child.recv()).await {
                Err(_) => return Err(format!("server process {i} did not start")),
                Ok(None) => return Err(format!("server process {i} ended")),
                Ok(Some(Err(e))) => return Err(format!("server process {i}: unexpected {e}")),
                Ok(Some(Ok(Reply::Listening { addr, url }))) => {
                    // The first picks the port (0 = any); the others share it.
                    config.listen = addr;
                    found.get_or_insert((addr, url));
                }
                Ok(Some(Ok(Reply::Error(e)))) => return Err(format!("server process {i}: {e}")),
                Ok(Some(Ok(other))) => {
                    return Err(format!("server process {i}: unexpected {other:?}"));
                }
            }
            procs.push(child);
        }
        let (addr, url) = found.ok_or("no server process")?;
        Ok(ServerProcesses { procs, addr, url })
    }

    /// Fire an action in every process; returns the connections open when it fired. The
    /// order goes to all before any reply is awaited, so the processes act together (a
    /// client dropped by one must not find another still up).
    pub async fn apply(&mut self, action: Action) -> u64 {
        for p in &mut self.procs {
            let _ = p.send(&Order::Apply(action)).await;
        }
        let mut open = 0;
        for p in &mut self.procs {
            if let Some(Reply::Applied { open: n }) = reply(p).await {
                open += n;
            }
        }
        open
    }

    pub async fn summary(&mut self) -> ServerSummary {
        let mut total = ServerSummary::default();
        for p in &mut self.procs {
            if let Some(Reply::Stats(s)) = ask(p, &Order::Stats).await {
                total.add(&s);
            }
        }
        total
    }

    /// Stop every process; their final counters, added up.
    pub async fn stop(mut self) -> ServerSummary {
        let mut total = ServerSummary::default();
        for p in &mut self.procs {
            if let Some(Reply::Stats(s)) = ask(p, &Order::Stop).await {
                total.add(&s);
            }
        }
        for p in &mut self.procs {
            let _ = tokio::time::timeout(Duration::from_secs(5), p.process.wait()).await;
        }
        total
    }
}
