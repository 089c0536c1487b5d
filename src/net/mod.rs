//! Sockets shared by the clients, the embedded server and the proxy: the transport under a
//! WebSocket (plain TCP or TLS; for clients, permessage-deflate under the frame layer), the
//! frame layer itself (`ws`: RFC 6455 framing that holds no read buffer while idle), listeners
//! that can refuse connections without losing their port, services that run on a runtime of
//! their own, counters every connection bumps without sharing a cache line, the upgrade's
//! keys, the optional deadline connection loops wait on, and the HTTP endpoint a Prometheus
//! scrape reads.

pub mod background;
pub mod deflate;
pub mod listener;
pub mod metrics_http;
pub mod striped;
pub mod transport;
pub mod upgrade;
pub mod ws;

/// Sleep until `at`, or forever when there is no deadline: the branch of a connection loop's
/// `select!` for a deadline it may not have (a pong due, an idle timeout, a frozen client's
/// wake-up). Not an `async fn`: that kept the deadline twice (as its argument and in the
/// timer) in every select of every connection that waits on one.
pub fn sleep_until_opt(
    at: Option<tokio::time::Instant>,
) -> futures_util::future::Either<tokio::time::Sleep, std::future::Pending<()>> {
    use futures_util::future::Either;
    match at {
        Some(t) => Either::Left(tokio::time::sleep_until(t)),
        None => Either::Right(std::future::pending()),
    }
}
