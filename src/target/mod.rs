//! The embedded target: a WebSocket echo server with the faults a timeline can fire.
//!
//! Shape follows mini-redis: the caller binds ([`Server::bind`]), then [`Server::run`] accepts
//! until the shutdown token fires. One accept loop owns the listener and the admission decision
//! (the accept-rate token bucket), so admission needs no lock. Each connection is one task that
//! echoes and watches the order channel; a [`ServerHandle`] publishes orders (`drop-all`,
//! `restart`) that every connection task sees.
//!
//! Inside `wsstorm run` the server gets its own runtime and threads ([`EmbeddedServer::start`])
//! so that the clients' runtime and the server's do not steal each other's time slices silently.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub path: String,
    /// Handshakes admitted per second; `None` admits all.
    pub accept_rate: Option<f64>,
    pub accept_burst: Option<u32>,
    pub retry_after: Duration,
    pub backlog: u32,
    pub read_buffer: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            path: "/ws".into(),
            accept_rate: None,
            accept_burst: None,
            retry_after: Duration::from_secs(1),
            backlog: 4096,
            read_buffer: 4096,
        }
    }
}

/// A fault the timeline fires at the server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Drop a share of the open connections.
    DropAll { mode: DropMode, share: f64 },
    /// Drop every connection abruptly and refuse new ones (closed listener) for `down_for`.
    Restart { down_for: Duration },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropMode {
    /// Close the TCP connection (FIN) without a close frame.
    Abrupt,
    /// Reset the TCP connection (RST, SO_LINGER 0).
    Reset,
    /// Send a close frame with this code, then close.
    Close(u16),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Action::DropAll { mode, share } => {
                write!(f, "drop-all ")?;
                match mode {
                    DropMode::Abrupt => write!(f, "abrupt")?,
                    DropMode::Reset => write!(f, "reset")?,
                    DropMode::Close(c) => write!(f, "close {c}")?,
                }
                if *share < 1.0 {
                    write!(f, " share {}%", share * 100.0)?;
                }
                Ok(())
            }
            Action::Restart { down_for } => {
                write!(f, "restart down_for {}", crate::units::Dur(*down_for))
            }
        }
    }
}

/// What the connection tasks are told; `seq` makes every order distinct.
#[derive(Clone, Copy, Debug)]
struct Order {
    seq: u64,
    action: Option<Action>,
}

/// Server-side counters. Each is touched once per connection event by the server, which is one
/// process serving everyone anyway; the client side never shares counters like this.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub accepted: AtomicU64,
    pub upgraded: AtomicU64,
    pub rejected_503: AtomicU64,
    pub rejected_404: AtomicU64,
    pub failed_handshakes: AtomicU64,
    pub open: AtomicU64,
    pub messages_echoed: AtomicU64,
    pub dropped_by_action: AtomicU64,
    pub accept_errors: AtomicU64,
}

/// A copy of [`ServerStats`] for results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSummary {
    pub accepted: u64,
    pub upgraded: u64,
    pub rejected_503: u64,
    pub rejected_404: u64,
    pub failed_handshakes: u64,
    pub open: u64,
    pub messages_echoed: u64,
    pub dropped_by_action: u64,
    pub accept_errors: u64,
}

impl ServerStats {
    pub fn summary(&self) -> ServerSummary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerSummary {
            accepted: g(&self.accepted),
            upgraded: g(&self.upgraded),
            rejected_503: g(&self.rejected_503),
            rejected_404: g(&self.rejected_404),
            failed_handshakes: g(&self.failed_handshakes),
            open: g(&self.open),
            messages_echoed: g(&self.messages_echoed),
            dropped_by_action: g(&self.dropped_by_action),
            accept_errors: g(&self.accept_errors),
        }
    }
}

/// Fires actions at a running server from any thread or runtime.
#[derive(Clone)]
pub struct ServerHandle {
    addr: SocketAddr,
    path: String,
    orders: Arc<watch::Sender<Order>>,
    pub stats: Arc<ServerStats>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, self.path)
    }

    /// Fire an action; returns how many connections were open when it fired.
    pub fn apply(&self, action: Action) -> u64 {
        let open = self.stats.open.load(Ordering::Relaxed);
        self.orders.send_modify(|o| {
            o.seq += 1;
            o.action = Some(action);
        });
        open
    }
}

pub struct Server {
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handle: ServerHandle,
}

impl Server {
    /// Bind the listening socket (backlog from the config, SO_REUSEADDR so a restart can rebind).
    pub async fn bind(config: ServerConfig) -> std::io::Result<Server> {
        let listener = listen(config.listen, config.backlog)?;
        let addr = listener.local_addr()?;
        let (tx, _) = watch::channel(Order {
            seq: 0,
            action: None,
        });
        let handle = ServerHandle {
            addr,
            path: config.path.clone(),
            orders: Arc::new(tx),
            stats: Arc::new(ServerStats::default()),
        };
        Ok(Server {
            listener,
            config: Arc::new(config),
            handle,
        })
    }

    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Accept until `shutdown` fires; open connections then get a 1001 close.
    pub async fn run(self, shutdown: CancellationToken) {
        let Server {
            listener,
            config,
            handle,
        } = self;
        let mut listener = Some(listener);
        let mut orders = handle.orders.subscribe();
        let mut bucket = config.accept_rate.map(|rate| {
            TokenBucket::new(
                rate,
                config
                    .accept_burst
                    .map(f64::from)
                    .unwrap_or((rate / 10.0).max(1.0)),
            )
        });
        let conns = tokio_util::task::TaskTracker::new();
        let mut next_id = 0u64;
        // While restarting: when to listen again.
        let mut down_until: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = orders.changed() => {
                    if changed.is_err() { break; }
                    let order = *orders.borrow_and_update();
                    if let Some(Action::Restart { down_for }) = order.action {
                        // Closing the listener makes the kernel refuse new SYNs (RST), which is
                        // what clients see while a real server is down.
                        listener = None;
                        down_until = Some(Instant::now() + down_for);
                    }
                }
                _ = sleep_until_opt(down_until) => {
                    down_until = None;
                    match listen(handle.addr, config.backlog) {
                        Ok(l) => listener = Some(l),
                        Err(e) => {
                            eprintln!("wsstorm serve: cannot listen again on {} after restart: {e}", handle.addr);
                            break;
                        }
                    }
                }
                accepted = accept_opt(&listener) => match accepted {
                    Ok((stream, _peer)) => {
                        handle.stats.accepted.fetch_add(1, Ordering::Relaxed);
                        let admitted = bucket.as_mut().is_none_or(|b| b.take(Instant::now()));
                        next_id += 1;
                        conns.spawn(serve_connection(
                            stream,
                            next_id,
                            admitted,
                            config.clone(),
                            handle.clone(),
                            handle.orders.subscribe(),
                            shutdown.clone(),
                        ));
                    }
                    Err(e) => {
                        handle.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                        // EMFILE and friends: back off briefly instead of spinning; the server
                        // keeps serving what it has.
                        if !is_transient_accept_error(&e) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
        }
        drop(listener);
        conns.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), conns.wait()).await;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn accept_opt(l: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn is_transient_accept_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
    )
}

fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

/// Admission control for the accept-rate capacity: `rate` tokens per second, at most `burst`.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        // The epsilon keeps float drift from refusing the token that exactly refilled.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Time a client has to finish its upgrade request; slowloris clients are cut after it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_connection(
    stream: TcpStream,
    id: u64,
    admitted: bool,
    config: Arc<ServerConfig>,
    handle: ServerHandle,
    mut orders: watch::Receiver<Order>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let stats = &handle.stats;
    let mut refusal: Option<u16> = None;
    // The error type is tungstenite's; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != config.path {
            refusal = Some(404);
            return Err(error_response(StatusCode::NOT_FOUND, None));
        }
        if !admitted {
            refusal = Some(503);
            return Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(config.retry_after),
            ));
        }
        Ok(resp)
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer)
        .write_buffer_size(0);
    let upgrade =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config));
    let mut ws = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, upgrade) => match r {
            Ok(Ok(ws)) => ws,
            _ => {
                match refusal {
                    Some(404) => stats.rejected_404.fetch_add(1, Ordering::Relaxed),
                    Some(_) => stats.rejected_503.fetch_add(1, Ordering::Relaxed),
                    None => stats.failed_handshakes.fetch_add(1, Ordering::Relaxed),
                };
                return;
            }
        },
        _ = shutdown.cancelled() => return,
    };
    stats.upgraded.fetch_add(1, Ordering::Relaxed);
    stats.open.fetch_add(1, Ordering::Relaxed);
    // Orders published before this connection existed do not apply to it.
    orders.borrow_and_update();
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                    stats.messages_echoed.fetch_add(1, Ordering::Relaxed);
                }
                // Pings are answered by tungstenite; a close is answered and then ends the stream.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            changed = orders.changed() => {
                if changed.is_err() {
                    break;
                }
                let order = *orders.borrow_and_update();
                let mode = match order.action {
                    Some(Action::DropAll { mode, share }) if selected(id, order.seq, share) => mode,
                    Some(Action::Restart { .. }) => DropMode::Abrupt,
                    _ => continue,
                };
                stats.dropped_by_action.fetch_add(1, Ordering::Relaxed);
                match mode {
                    DropMode::Abrupt => {}
                    DropMode::Reset => {
                        let _ = socket2::SockRef::from(ws.get_ref()).set_linger(Some(Duration::ZERO));
                    }
                    DropMode::Close(code) => close_politely(&mut ws, code).await,
                }
                break;
            }
            _ = shutdown.cancelled() => {
                close_politely(&mut ws, 1001).await;
                break;
            }
        }
    }
    stats.open.fetch_sub(1, Ordering::Relaxed);
}

/// Send a close frame and give the peer a moment to answer, as a real server would.
async fn close_politely(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>, code: u16) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: "".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Whether connection `id` is in the `share` picked by order `seq`; a different order picks a
/// different subset, and the same run picks the same one.
fn selected(id: u64, seq: u64, share: f64) -> bool {
    if share >= 1.0 {
        return true;
    }
    let h = crate::plan::mix(seq, id);
    (h as f64 / u64::MAX as f64) < share
}

fn error_response(status: StatusCode, retry_after: Option<Duration>) -> ErrorResponse {
    let mut resp = ErrorResponse::new(None);
    *resp.status_mut() = status;
    if let Some(d) = retry_after {
        let secs = d.as_secs_f64().ceil().max(1.0) as u64;
        resp.headers_mut().insert(
            "Retry-After",
            HeaderValue::from_str(&secs.to_string()).expect("digits"),
        );
    }
    resp
}

/// The embedded server on its own runtime and threads, for `wsstorm run`.
pub struct EmbeddedServer {
    pub handle: ServerHandle,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedServer {
    /// Start on a new runtime with `threads` workers, in a thread of its own. Bound (and so
    /// reachable) when this returns.
    pub async fn start(config: ServerConfig, threads: usize) -> std::io::Result<EmbeddedServer> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("wsstorm-target".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads.max(1))
                    .thread_name("wsstorm-target")
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let server = match runtime.block_on(Server::bind(config)) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(server.handle()));
                runtime.block_on(server.run(token));
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        let handle = rx
            .await
            .map_err(|_| std::io::Error::other("the target server thread ended early"))??;
        Ok(EmbeddedServer {
            handle,
            shutdown,
            thread: Some(thread),
        })
    }

    /// Stop accepting, close what is open, and wait for the server thread.
    pub fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_admits_the_rate() {
        let mut b = TokenBucket::new(100.0, 10.0);
        let t0 = b.last;
        // The burst first, then one per 10ms.
        let burst = (0..20).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 10);
        let mut admitted = 0;
        for ms in 1..=1000 {
            if b.take(t0 + Duration::from_millis(ms)) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 100);
    }

    #[test]
    fn selection_share_is_roughly_right_and_stable() {
        let picked = (0..10_000).filter(|&i| selected(i, 3, 0.3)).count();
        assert!((2800..3200).contains(&picked), "{picked}");
        assert!((0..100).all(|i| selected(i, 3, 0.3) == selected(i, 3, 0.3)));
        assert!((0..100).all(|i| selected(i, 9, 1.0)));
    }
}
