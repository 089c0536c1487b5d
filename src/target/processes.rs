//! The embedded target over several processes, for runs with more connections than one
//! process may hold open files. Each `wsstorm target-worker` process listens on the same port
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
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

use super::{Action, Server, ServerConfig, ServerSummary};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Setup {
    pub config: SetupConfig,
    pub threads: usize,
}

/// What a target process needs of a [`ServerConfig`] (the parts that serialize).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetupConfig {
    pub settings: crate::profile::ServerSettings,
    pub listen: SocketAddr,
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
    Listening { addr: SocketAddr, url: String },
    Applied { open: u64 },
    Stats(ServerSummary),
    Error(String),
}

fn config_of(s: &SetupConfig) -> ServerConfig {
    let mut c = ServerConfig::from_settings(&s.settings);
    c.listen = s.listen;
    c.reuse_port = true;
    c.accept_rate = c.accept_rate.map(|r| r * s.share);
    c.accept_burst = c
        .accept_burst
        .map(|b| ((f64::from(b) * s.share).ceil() as u32).max(1));
    if let Some(h) = &mut c.handshake {
        h.workers = ((f64::from(h.workers) * s.share).ceil() as u32).max(1);
        h.queue = ((f64::from(h.queue) * s.share).ceil() as u32).max(1);
    }
    c
}

async fn say(out: &mut tokio::io::Stdout, r: &Reply) -> std::io::Result<()> {
    crate::workers::send(out, r).await
}

/// `wsstorm target-worker`: one process of a multi-process embedded target.
pub async fn target_worker_main() -> Result<(), String> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let first = stdin
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no setup on stdin")?;
    let setup: Setup = serde_json::from_str(&first).map_err(|e| format!("bad setup: {e}"))?;
    crate::metrics::generator::raise_fd_limit();
    // The whole process is target: every thread its runtime already started.
    let threads: Vec<libc::id_t> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    super::lower_priority(&threads, setup.config.settings.nice);
    let server = match Server::bind(config_of(&setup.config)).await {
        Ok(s) => s,
        Err(e) => {
            let _ = say(&mut stdout, &Reply::Error(e.to_string())).await;
            return Err(e.to_string());
        }
    };
    let handle = server.handle();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));
    say(
        &mut stdout,
        &Reply::Listening {
            addr: handle.local_addr(),
            url: handle.url(),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    loop {
        let order = match stdin.next_line().await {
            Ok(Some(l)) => match serde_json::from_str::<Order>(&l) {
                Ok(o) => o,
                Err(e) => {
                    let _ = say(&mut stdout, &Reply::Error(format!("bad order: {e}"))).await;
                    continue;
                }
            },
            // The coordinator is gone: stop serving.
            _ => Order::Stop,
        };
        match order {
            Order::Apply(a) => {
                let open = handle.apply(a);
                let _ = say(&mut stdout, &Reply::Applied { open }).await;
            }
            Order::Stats => {
                let _ = say(&mut stdout, &Reply::Stats(handle.stats.summary())).await;
            }
            Order::Stop => {
                shutdown.cancel();
                let _ = running.await;
                let _ = say(&mut stdout, &Reply::Stats(handle.stats.summary())).await;
                return Ok(());
            }
        }
    }
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    replies: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    async fn tell(&mut self, order: &Order) -> Option<()> {
        crate::workers::send(&mut self.stdin, order).await.ok()
    }

    async fn reply(&mut self) -> Option<Reply> {
        let reply = tokio::time::timeout(Duration::from_secs(10), self.replies.next_line())
            .await
            .ok()?
            .ok()??;
        serde_json::from_str(&reply).ok()
    }

    async fn ask(&mut self, order: &Order) -> Option<Reply> {
        self.tell(order).await?;
        self.reply().await
    }
}

/// The coordinator's handle on the target processes.
pub struct TargetProcesses {
    procs: Vec<Proc>,
    pub addr: SocketAddr,
    pub url: String,
}

impl TargetProcesses {
    pub async fn start(
        exe: &std::path::Path,
        settings: &crate::profile::ServerSettings,
        listen: SocketAddr,
        count: usize,
        threads: usize,
    ) -> Result<TargetProcesses, String> {
        let mut procs = Vec::new();
        let mut listen = listen;
        let mut found: Option<(SocketAddr, String)> = None;
        for i in 0..count {
            let (child, mut stdin, stdout) = crate::workers::spawn_child(exe, "target-worker")?;
            let mut replies = BufReader::new(stdout).lines();
            let setup = Setup {
                config: SetupConfig {
                    settings: settings.clone(),
                    listen,
                    share: 1.0 / count as f64,
                },
                threads,
            };
            crate::workers::send(&mut stdin, &setup)
                .await
                .map_err(|e| format!("target process {i}: {e}"))?;
            let reply = tokio::time::timeout(Duration::from_secs(20), replies.next_line())
                .await
                .map_err(|_| format!("target process {i} did not start"))?
                .map_err(|e| format!("target process {i}: {e}"))?
                .ok_or(format!("target process {i} ended"))?;
            match serde_json::from_str::<Reply>(&reply) {
                Ok(Reply::Listening { addr, url }) => {
                    // The first picks the port (0 = any); the others share it.
                    listen = addr;
                    found.get_or_insert((addr, url));
                }
                Ok(Reply::Error(e)) => return Err(format!("target process {i}: {e}")),
                _ => return Err(format!("target process {i}: unexpected `{reply}`")),
            }
            procs.push(Proc {
                child,
                stdin,
                replies,
            });
        }
        let (addr, url) = found.ok_or("no target process")?;
        Ok(TargetProcesses { procs, addr, url })
    }

    /// Fire an action in every process; returns the connections open when it fired. The
    /// order goes to all before any reply is awaited, so the processes act together (a
    /// client dropped by one must not find another still up).
    pub async fn apply(&mut self, action: Action) -> u64 {
        for p in &mut self.procs {
            let _ = p.tell(&Order::Apply(action)).await;
        }
        let mut open = 0;
        for p in &mut self.procs {
            if let Some(Reply::Applied { open: n }) = p.reply().await {
                open += n;
            }
        }
        open
    }

    pub async fn summary(&mut self) -> ServerSummary {
        let mut total = ServerSummary::default();
        for p in &mut self.procs {
            if let Some(Reply::Stats(s)) = p.ask(&Order::Stats).await {
                total.add(&s);
            }
        }
        total
    }

    /// Stop every process; their final counters, added up.
    pub async fn stop(mut self) -> ServerSummary {
        let mut total = ServerSummary::default();
        for p in &mut self.procs {
            if let Some(Reply::Stats(s)) = p.ask(&Order::Stop).await {
                total.add(&s);
            }
        }
        for p in &mut self.procs {
            let _ = tokio::time::timeout(Duration::from_secs(5), p.child.wait()).await;
        }
        total
    }
}
