//! One connection attempt: resolve, TCP connect, TLS (wss), WebSocket upgrade — each timed and
//! each failure classified. Failures are data ([`Attempt`]), never `Err`: a dead target is what
//! the user came to measure.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::http::{Uri, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::GroupCtx;
use crate::metrics::ConnectError;
pub use crate::net::transport::Transport;
use crate::net::upgrade::{Accept, Key};
use crate::profile::{TlsSettings, TokenPlace};

pub type Ws = crate::net::transport::WsStream;

/// Where the clients connect, resolved once and shared by all clients.
pub struct Endpoint {
    pub url: String,
    /// The request target and Host header of the upgrade, made once for every attempt.
    path_and_query: String,
    host_header: String,
    host: String,
    port: u16,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    /// Resolved on first use; read without a lock afterwards.
    addr: OnceLock<SocketAddr>,
}

/// What the embedded target tells its clients beyond the URL.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct EmbeddedInfo {
    /// Connect here, without DNS (a TLS URL names `localhost`, which may resolve to ::1).
    pub addr: Option<SocketAddr>,
    /// The CA of the target's generated certificate.
    pub ca_pem: Option<String>,
}

impl Endpoint {
    pub fn new(url: &str, tls: &TlsSettings) -> Result<Endpoint, String> {
        Self::with_embedded(url, tls, &EmbeddedInfo::default())
    }

    pub fn with_embedded(
        url: &str,
        tls: &TlsSettings,
        embedded: &EmbeddedInfo,
    ) -> Result<Endpoint, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(format!("`{url}` is not a ws:// or wss:// URL")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{url}` has no host"))?
            .to_string();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tls = if secure {
            let extra_ca = embedded.ca_pem.as_deref().filter(|_| tls.trust_embedded_ca);
            let config = super::tls::client_config(tls, extra_ca)?;
            let name = super::tls::server_name(tls.server_name.as_deref().unwrap_or(&host))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let authority = uri.authority().map_or("", |a| a.as_str());
        // Any user information is for the URL, not the Host header.
        let host_header = authority
            .rsplit_once('@')
            .map_or(authority, |(_, h)| h)
            .to_string();
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .to_string();
        Ok(Endpoint {
            url: url.to_string(),
            path_and_query,
            host_header,
            host,
            port,
            tls,
            addr: embedded.addr.map(OnceLock::from).unwrap_or_default(),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The target's address, if it is known yet.
    pub fn resolved(&self) -> Option<SocketAddr> {
        self.addr.get().copied()
    }

    /// The target's address; a failed lookup is retried on the next attempt.
    pub async fn resolve(&self) -> Result<SocketAddr, ConnectError> {
        if let Some(a) = self.addr.get() {
            return Ok(*a);
        }
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        // A resolver that hangs is a DNS failure, not a reason to wait forever.
        let found = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((host, self.port)),
        )
        .await
        .map_err(|_| ConnectError::Dns)?
        .map_err(|_| ConnectError::Dns)?
        .next()
        .ok_or(ConnectError::Dns)?;
        Ok(*self.addr.get_or_init(|| found))
    }
}

/// The longest Retry-After a client honours.
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// Timings of a successful attempt, before the reconnect figure is known.
#[derive(Clone, Copy, Debug)]
pub struct AttemptTimings {
    pub connect: Duration,
    pub tls: Option<Duration>,
    pub handshake: Duration,
}

// The open socket travels inline: it is the common outcome and moves straight into the session,
// so boxing it would only add an allocation per connection.
#[allow(clippy::large_enum_variant)]
pub enum Attempt {
    Open(Ws, AttemptTimings),
    Failed(ConnectError),
    /// The server answered the upgrade with a non-101 status.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
}

/// What differs between one client's attempts.
/// What a conversation adds to an attempt: the encoded query (`a=1&b=2`) and headers.
pub type Added = (String, Vec<(String, String)>);

#[derive(Default)]
pub struct AttemptExtras<'a> {
    /// Query parameters a conversation adds, encoded (`a=1&b=2`), and the headers it adds,
    /// rendered. Boxed: most clients have none, and this lives in every client's task while
    /// it connects.
    pub added: Option<Box<Added>>,
    /// An auth token, sent as the behaviour says.
    pub token: Option<&'a str>,
    /// This client's attempt number, from 1: the last part of its identity header.
    pub attempt: u32,
    pub subscribe: bool,
    pub resume_after: Option<u64>,
    /// Connect from the source address this many places after the client's own (a network
    /// switch moved it).
    pub source_shift: u32,
}

/// A socket for client `client`'s next attempt, created and bound to its source address, so
/// that at the attempt's instant only connect() is left to do. A retrying client makes it
/// before it sleeps: when a whole herd is due at once, each wake-up then costs one system call
/// instead of four, and the herd's connect()s start closer together. `None` until the
/// target's address is known, or if the socket cannot be made now: the attempt then tries
/// again and reports what fails.
pub fn prepare_socket(ctx: &GroupCtx, client: u32) -> Option<TcpSocket> {
    let addr = ctx.target.resolved()?;
    new_socket(ctx, client, addr).ok()
}

fn new_socket(ctx: &GroupCtx, client: u32, addr: SocketAddr) -> io::Result<TcpSocket> {
    let b = &ctx.behaviour;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    if let Some(n) = b.socket_recv_buffer {
        let _ = socket.set_recv_buffer_size(n);
    }
    // Set before connecting: one system call less once connected, where a herd's handshakes
    // queue behind each other.
    let _ = socket.set_nodelay(true);
    if !b.source_addrs.is_empty() {
        let source = b.source_addrs[client as usize % b.source_addrs.len()];
        bind_source(&socket, source)?;
    }
    Ok(socket)
}

/// Make one attempt, on `prepared` if the caller made its socket beforehand
/// ([`prepare_socket`]). Cancellation is the caller's business (it drops this future).
pub async fn attempt(
    ctx: &GroupCtx,
    client: u32,
    extras: AttemptExtras<'_>,
    prepared: Option<TcpSocket>,
) -> Attempt {
    let b = &ctx.behaviour;
    let target = &ctx.target;
    let failed = |kind, text: &dyn Fn() -> String| {
        ctx.metrics.event_error_text(client, text);
        ctx.metrics.connect_error_example(kind, text);
        Attempt::Failed(kind)
    };
    let addr = match target.resolve().await {
        Ok(a) => a,
        Err(e) => return failed(e, &|| format!("cannot resolve the host of {}", target.url)),
    };
    let socket = match prepared.map_or_else(
        || new_socket(ctx, client.wrapping_add(extras.source_shift), addr),
        Ok,
    ) {
        Ok(s) => s,
        Err(e) => return failed(classify_io(&e), &|| format!("cannot make a socket: {e}")),
    };
    let t0 = Instant::now();
    let tcp = match timeout(b.connect_timeout, socket.connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return failed(classify_io(&e), &|| format!("connect to {addr}: {e}")),
        Err(_) => {
            return failed(ConnectError::Timeout, &|| {
                format!(
                    "connect to {addr}: no answer within {:?}",
                    b.connect_timeout
                )
            });
        }
    };
    let connect = t0.elapsed();

    let (transport, tls_time) = match &target.tls {
        None => (Transport::Plain(tcp), None),
        Some((connector, name)) => {
            let t1 = Instant::now();
            match timeout(b.handshake_timeout, connector.connect(name.clone(), tcp)).await {
                Ok(Ok(s)) => (Transport::Tls(Box::new(s.into())), Some(t1.elapsed())),
                Ok(Err(e)) => return failed(classify_tls(&e), &|| format!("TLS: {e}")),
                Err(_) => {
                    return failed(ConnectError::Timeout, &|| {
                        format!("TLS handshake: no answer within {:?}", b.handshake_timeout)
                    });
                }
            }
        }
    };

    let mut query: Vec<String> = Vec::new();
    let (added_query, added_headers) = match extras.added.as_deref() {
        Some((q, h)) => (q.as_str(), h.as_slice()),
        None => ("", &[][..]),
    };
    if !added_query.is_empty() {
        query.push(added_query.to_string());
    }
    if extras.subscribe {
        query.push("subscribe=1".into());
    }
    if let Some(n) = extras.resume_after {
        query.push(format!("resume={n}"));
    }
    let token_in_query = b
        .auth
        .as_ref()
        .is_some_and(|a| a.place == TokenPlace::Query);
    let token_in_header = b
        .auth
        .as_ref()
        .is_some_and(|a| a.place == TokenPlace::Header);
    if let (Some(t), true) = (extras.token, token_in_query) {
        query.push(format!("token={t}"));
    }
    let joined;
    let path_and_query = if query.is_empty() {
        target.path_and_query.as_str()
    } else {
        let sep = if target.url.contains('?') { '&' } else { '?' };
        // Parsed to check it: a rendered value may hold what no URL may.
        joined = match format!("{}{sep}{}", target.url, query.join("&")).parse::<Uri>() {
            Ok(u) => u,
            Err(e) => return failed(ConnectError::Other, &|| format!("request URL: {e}")),
        };
        joined.path_and_query().map_or("/", |p| p.as_str())
    };
    let key = Key::new();
    let mut request = Head::new(path_and_query, &target.host_header, &key);
    // The headers after the upgrade's own, in the order `HeaderMap::insert` took them when
    // the request was an `http::Request`, and with its rule: the last of a name wins (the
    // conversation's over the profile's, the profile's over the token's).
    let added: Vec<(header::HeaderName, header::HeaderValue)> = match added_headers
        .iter()
        .map(|(k, v)| {
            match (
                header::HeaderName::from_bytes(k.as_bytes()),
                header::HeaderValue::from_str(v),
            ) {
                (Ok(k), Ok(v)) => Ok((k, v)),
                _ => Err((k, v)),
            }
        })
        .collect()
    {
        Ok(a) => a,
        Err((k, v)) => {
            return failed(ConnectError::Other, &|| {
                format!("header `{k}`: its rendered value `{v}` is not a valid header value")
            });
        }
    };
    let protocol = b.subprotocols.as_ref();
    let bearer = extras
        .token
        .filter(|t| token_in_header && valid_value(t.as_bytes()))
        .map(|t| ("authorization", Text::Bearer(t)));
    let headers = bearer
        .into_iter()
        .chain(b.headers.iter().map(plain))
        .chain(b.identity_header.as_deref().map(|n| (n, Text::Identity)))
        .chain(added.iter().map(plain))
        .chain(protocol.map(|p| ("sec-websocket-protocol", Text::Plain(p.as_bytes()))))
        .chain(b.deflate.then_some((
            "sec-websocket-extensions",
            Text::Plain(crate::net::deflate::OFFER.as_bytes()),
        )));
    for (i, (name, text)) in headers.clone().enumerate() {
        // A later header replaces an earlier one of its name (names here are lowercase).
        if headers.clone().skip(i + 1).any(|(n, _)| n == name) {
            continue;
        }
        request.header(name, |out| match text {
            Text::Plain(v) => out.extend_from_slice(v),
            Text::Bearer(t) => {
                out.extend_from_slice(b"Bearer ");
                out.extend_from_slice(t.as_bytes());
            }
            Text::Identity => {
                use std::io::Write;
                let _ = write!(out, "{:08x}-{client}-{}", ctx.run_id, extras.attempt);
            }
        });
    }
    let config = WebSocketConfig::default()
        // The most one read takes, into a buffer the thread's connections share: no
        // connection keeps a read buffer of its own.
        .read_buffer_size(b.read_buffer)
        // Sends are written out by an explicit flush, so a closed-loop client can answer a
        // whole batch of echoes with one write; past this many bytes a send writes at once.
        // The buffer only grows on connections that send, so idle clients do not pay for it.
        .write_buffer_size(crate::net::transport::WRITE_BATCH);
    let t2 = Instant::now();
    match timeout(
        b.handshake_timeout,
        upgrade(
            request.finish(),
            key,
            transport,
            config,
            protocol,
            b.deflate,
        ),
    )
    .await
    {
        Ok(Ok(ws)) => Attempt::Open(
            ws,
            AttemptTimings {
                connect,
                tls: tls_time,
                handshake: t2.elapsed(),
            },
        ),
        Ok(Err(Upgrade::Status { code, retry_after })) => Attempt::Status { code, retry_after },
        Ok(Err(Upgrade::Failed(e, why))) => failed(e, &|| why.clone()),
        Err(_) => failed(ConnectError::Timeout, &|| {
            format!("upgrade: no answer within {:?}", b.handshake_timeout)
        }),
    }
}

enum Upgrade {
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// Why, in words, for the results' example of its kind.
    Failed(ConnectError, String),
}

/// The upgrade request, written as it goes on the wire: one buffer, no header map. The five
/// headers every upgrade carries come first, in the case tungstenite writes them (some
/// servers compare header names case-sensitively); the rest follow as they are added.
struct Head(Vec<u8>);

impl Head {
    fn new(path_and_query: &str, host: &str, key: &Key) -> Head {
        let mut out = Vec::with_capacity(256);
        for part in [
            "GET ",
            path_and_query,
            " HTTP/1.1\r\nHost: ",
            host,
            "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: ",
            key.as_str(),
            "\r\n",
        ] {
            out.extend_from_slice(part.as_bytes());
        }
        Head(out)
    }

    /// A header whose value `value` writes: a formatted one needs no string of its own.
    fn header(&mut self, name: &str, value: impl FnOnce(&mut Vec<u8>)) {
        // As tungstenite wrote them: the names a case-sensitive server looks for in their
        // usual case, the rest as given (header names here are lowercase).
        let name = match name {
            "sec-websocket-protocol" => "Sec-WebSocket-Protocol",
            "origin" => "Origin",
            n => n,
        };
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        value(&mut self.0);
        self.0.extend_from_slice(b"\r\n");
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(b"\r\n");
        self.0
    }
}

/// A header value as the request writes it: most are bytes to copy; two are formatted in
/// place, so that no string is made for them.
#[derive(Clone, Copy)]
enum Text<'a> {
    Plain(&'a [u8]),
    Bearer(&'a str),
    /// `{run id}-{client}-{attempt}`: which attempt of which client of which run.
    Identity,
}

/// A parsed header as the request writes it.
fn plain((k, v): &(header::HeaderName, header::HeaderValue)) -> (&str, Text<'_>) {
    (k.as_str(), Text::Plain(v.as_bytes()))
}

/// Whether `v` may be a header value as it is (what `HeaderValue::from_str` accepts).
fn valid_value(v: &[u8]) -> bool {
    v.iter().all(|&b| (b >= 32 && b != 127) || b == b'\t')
}

/// The largest upgrade response a client reads before calling it broken.
const MAX_RESPONSE: usize = 16 * 1024;

/// The client side of the HTTP upgrade, done here rather than by tungstenite, whose handshake
/// reads the response into a 4 KiB buffer and ends in a WebSocket of its own. Here the
/// response is read through a stack buffer and only the bytes after it (usually none) go to
/// the connection ([`crate::net::ws`]), which keeps them until it has read them.
async fn upgrade(
    request: Vec<u8>,
    key: Key,
    mut transport: Transport,
    config: WebSocketConfig,
    offered: Option<&header::HeaderValue>,
    deflate: bool,
) -> Result<Ws, Upgrade> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io_failed = |e: io::Error| Upgrade::Failed(classify_io(&e), format!("upgrade: {e}"));
    transport.write_all(&request).await.map_err(io_failed)?;
    transport.flush().await.map_err(io_failed)?;
    drop(request);

    // A response that came in one read (nearly all) is parsed where it was read; only one
    // that came in pieces is gathered on the heap.
    let mut response: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = transport.read(&mut chunk).await.map_err(io_failed)?;
        if n == 0 {
            // Closed before a complete response: the server went away mid-handshake.
            return Err(Upgrade::Failed(
                ConnectError::ClosedInHandshake,
                format!(
                    "the server closed the connection after {} bytes of its answer to the upgrade",
                    response.len()
                ),
            ));
        }
        let whole: &[u8] = if response.is_empty() {
            &chunk[..n]
        } else {
            response.extend_from_slice(&chunk[..n]);
            &response
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        let len = match parsed.parse(whole) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if whole.len() < MAX_RESPONSE => {
                if response.is_empty() {
                    response.extend_from_slice(&chunk[..n]);
                }
                continue;
            }
            _ => {
                let start = String::from_utf8_lossy(&whole[..whole.len().min(40)]);
                return Err(Upgrade::Failed(
                    ConnectError::NotHttp,
                    format!("the answer to the upgrade is not HTTP: {start:?}"),
                ));
            }
        };
        let find = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::trim)
        };
        let code = parsed.code.unwrap_or(0);
        if code != 101 {
            return Err(Upgrade::Status {
                code,
                retry_after: find("Retry-After")
                    .and_then(|v| v.parse::<u64>().ok())
                    // A server may say anything; an hour is as long as any client waits.
                    .map(|secs| Duration::from_secs(secs.min(MAX_RETRY_AFTER_SECS))),
            });
        }
        let accept = Accept::of(key.as_str().as_bytes());
        let upgraded = find("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
            && find("Connection").is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
            && find("Sec-WebSocket-Accept") == Some(accept.as_str());
        // A subprotocol the client did not offer is a protocol error (RFC 6455 4.1).
        let protocol_ok = find("Sec-WebSocket-Protocol").is_none_or(|p| {
            offered
                .and_then(|o| o.to_str().ok())
                .is_some_and(|o| o.split(',').any(|o| o.trim() == p))
        });
        if !upgraded || !protocol_ok {
            let why = if !protocol_ok {
                "a subprotocol the client did not offer"
            } else if find("Sec-WebSocket-Accept") != Some(accept.as_str()) {
                "a wrong or missing Sec-WebSocket-Accept"
            } else {
                "no `Upgrade: websocket` or `Connection: upgrade`"
            };
            return Err(Upgrade::Failed(
                ConnectError::BadUpgrade,
                format!("101 with {why}"),
            ));
        }
        // Every extension the server accepted, however many headers it spread them over.
        let extensions = parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .collect::<Vec<_>>()
            .join(",");
        let negotiated = if deflate {
            crate::net::deflate::parse_answer(&extensions)
        } else if extensions.trim().is_empty() {
            Ok(None)
        } else {
            Err(format!(
                "an extension the client did not offer: `{extensions}`"
            ))
        };
        let negotiated = negotiated
            .map_err(|why| Upgrade::Failed(ConnectError::BadUpgrade, format!("101 with {why}")))?;
        // Exactly the bytes that followed the response: the connection holds them until it has
        // read them, and no read buffer after that.
        let mut tail = whole[len..].to_vec();
        let (transport, config) = match negotiated {
            None => (transport, config),
            Some(n) => {
                // The compression layer gets the frames that came with the response and
                // hands the WebSocket each message as one frame, so the WebSocket's frame
                // limit is the message limit.
                let limit = crate::net::deflate::DEFAULT_LIMIT;
                let layer = crate::net::deflate::Deflate::new(
                    transport,
                    n,
                    limit,
                    std::mem::take(&mut tail),
                );
                let config = config
                    .max_message_size(Some(limit))
                    .max_frame_size(Some(limit));
                (Transport::Deflate(Box::new(layer)), config)
            }
        };
        return Ok(Ws::from_partially_read(
            transport,
            tail,
            tungstenite::protocol::Role::Client,
            Some(config),
        ));
    }
}

/// Bind the socket to a local address, leaving the port to connect(): with
/// IP_BIND_ADDRESS_NO_PORT the kernel picks a port per (source, destination) pair, so each
/// source address gets its own ~28k ports instead of sharing them.
fn bind_source(socket: &TcpSocket, ip: std::net::IpAddr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    crate::os::bind_address_no_port(socket.as_raw_fd());
    socket.bind(SocketAddr::new(ip, 0))
}

pub fn classify_io(e: &io::Error) -> ConnectError {
    use io::ErrorKind::*;
    if crate::os::is_fd_exhaustion(e) {
        return ConnectError::FdLimit;
    }
    match e.kind() {
        ConnectionRefused => ConnectError::Refused,
        TimedOut => ConnectError::Timeout,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => {
            ConnectError::Reset
        }
        AddrNotAvailable | AddrInUse => ConnectError::AddrUnavailable,
        _ => ConnectError::Other,
    }
}

/// TLS failures are errors of the TLS layer (certificate, protocol); a connection cut during
/// the TLS handshake is a reset like any other.
fn classify_tls(e: &io::Error) -> ConnectError {
    use rustls::{CertificateError as C, Error as R};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<R>()) {
        Some(R::InvalidCertificate(C::Expired | C::NotValidYet))
        | Some(R::InvalidCertificate(C::ExpiredContext { .. }))
        | Some(R::InvalidCertificate(C::NotValidYetContext { .. })) => ConnectError::TlsExpired,
        Some(R::InvalidCertificate(C::UnknownIssuer)) => ConnectError::TlsUnknownIssuer,
        Some(R::InvalidCertificate(C::NotValidForName))
        | Some(R::InvalidCertificate(C::NotValidForNameContext { .. })) => {
            ConnectError::TlsWrongHost
        }
        // Bytes that are not TLS records (a plain server's HTTP answer), or nothing in common.
        Some(R::InvalidMessage(_) | R::PeerIncompatible(_)) => ConnectError::TlsNotTls,
        Some(_) => ConnectError::Tls,
        None if e.kind() == io::ErrorKind::InvalidData => ConnectError::TlsNotTls,
        None => classify_io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified() {
        let k = |kind| classify_io(&io::Error::from(kind));
        assert_eq!(k(io::ErrorKind::ConnectionRefused), ConnectError::Refused);
        assert_eq!(k(io::ErrorKind::ConnectionReset), ConnectError::Reset);
        assert_eq!(
            k(io::ErrorKind::AddrNotAvailable),
            ConnectError::AddrUnavailable
        );
        assert_eq!(k(io::ErrorKind::TimedOut), ConnectError::Timeout);
        assert_eq!(
            classify_io(&io::Error::from_raw_os_error(libc::EMFILE)),
            ConnectError::FdLimit
        );
        assert_eq!(
            classify_tls(&io::Error::new(io::ErrorKind::InvalidData, "not TLS")),
            ConnectError::TlsNotTls
        );
    }

    /// Accept one connection on `l` and read its upgrade request, up to the blank line.
    async fn read_request(l: &tokio::net::TcpListener) -> (tokio::net::TcpStream, String) {
        use tokio::io::AsyncReadExt;
        let (mut s, _) = l.accept().await.unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            req.extend_from_slice(&buf[..n]);
        }
        (s, String::from_utf8(req).unwrap())
    }

    /// Upgrade against a server that answers with `extensions` (after checking the offer), and
    /// return what the client made of it.
    async fn upgrade_answered_with(extensions: &'static str) -> Result<Ws, Upgrade> {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", l.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut s, req) = read_request(&l).await;
            assert!(
                req.to_ascii_lowercase()
                    .contains("\r\nsec-websocket-extensions: permessage-deflate\r\n"),
                "{req}"
            );
            let key = req
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("sec-websocket-key:"))
                .and_then(|l| l.split_once(':'))
                .unwrap()
                .1;
            let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n{extensions}\r\n"
            );
            s.write_all(answer.as_bytes()).await.unwrap();
            s
        });
        let tcp =
            tokio::net::TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches('/'))
                .await
                .unwrap();
        let key = Key::new();
        let mut request = Head::new("/", "127.0.0.1", &key);
        request.header("sec-websocket-extensions", |out| {
            out.extend_from_slice(crate::net::deflate::OFFER.as_bytes())
        });
        let r = upgrade(
            request.finish(),
            key,
            Transport::Plain(tcp),
            WebSocketConfig::default(),
            None,
            true,
        )
        .await;
        drop(server.await.unwrap());
        r
    }

    #[tokio::test]
    async fn deflate_is_negotiated_or_refused() {
        let accepted = upgrade_answered_with(
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n",
        )
        .await;
        let Ok(ws) = accepted else { panic!("accepted") };
        assert!(matches!(ws.get_ref(), Transport::Deflate(_)));
        let Ok(ws) = upgrade_answered_with("").await else {
            panic!("declined: a plain connection")
        };
        assert!(matches!(ws.get_ref(), Transport::Plain(_)));
        let refused = upgrade_answered_with(
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n",
        )
        .await;
        let Err(Upgrade::Failed(ConnectError::BadUpgrade, why)) = refused else {
            panic!("a window the client cannot use is a bad upgrade")
        };
        assert_eq!(
            why,
            "101 with permessage-deflate with `client_max_window_bits=10`: the client \
             compresses with a 15-bit window only (and did not offer client_max_window_bits)"
        );
    }

    /// The request an attempt writes: the upgrade's own headers first, then the token, the
    /// profile's headers, the identity header and the conversation's, a later one replacing an
    /// earlier one of the same name; and an attempt that reads a good answer opens.
    #[test]
    fn the_upgrade_request_carries_every_header_once_and_the_last_value_wins() {
        use tokio::io::AsyncWriteExt;
        let yaml = "name: t\nduration: 1s\ntarget: ws://127.0.0.1:9/ws\ngroups:\n  - name: g\n    clients: 1\n    arrival: { rate: 1/s }\n    \
                    subprotocols: [chat]\n    identity_header: X-Id\n    \
                    headers: { Authorization: Basic x, X-A: profile, Origin: http://o }\n    \
                    behaviour: { auth: { secret: s, lifetime: 1h, on_expiry: naive, send_as: header } }\n";
        let plan = crate::plan::Plan::from_yaml(yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("ws://user@{}/ws?k=v", l.local_addr().unwrap());
            let ctx = GroupCtx {
                group: 0,
                name: "g".into(),
                behaviour: plan.groups[0].behaviour.clone(),
                target: Arc::new(Endpoint::new(&url, &plan.tls).unwrap()),
                metrics: Arc::new(crate::metrics::Metrics::new(1)),
                epoch: Instant::now(),
                cancel: tokio_util::sync::CancellationToken::new(),
                grace: Duration::from_secs(1),
                seed: 1,
                run_id: 0xab,
                tasks: tokio_util::task::TaskTracker::new(),
            };
            let server = tokio::spawn(async move {
                let (mut s, req) = read_request(&l).await;
                let key = req
                    .lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                    .unwrap()
                    .to_string();
                let accept = Accept::of(key.as_bytes());
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Protocol: chat\r\n\
                     Sec-WebSocket-Accept: {}\r\n\r\n",
                    accept.as_str()
                );
                s.write_all(answer.as_bytes()).await.unwrap();
                (req, key, s)
            });
            let extras = AttemptExtras {
                added: Some(Box::new((
                    "a=1".into(),
                    vec![("X-A".into(), "added".into()), ("x-b".into(), "1".into())],
                ))),
                token: Some("tok"),
                attempt: 3,
                ..AttemptExtras::default()
            };
            let opened = attempt(&ctx, 7, extras, None).await;
            let (req, key, _s) = server.await.unwrap();
            assert!(matches!(opened, Attempt::Open(..)), "{req}");
            let addr = url
                .trim_start_matches("ws://user@")
                .trim_end_matches("/ws?k=v");
            assert_eq!(
                req,
                format!(
                    "GET /ws?k=v&a=1 HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
                     Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                     Sec-WebSocket-Key: {key}\r\nauthorization: Basic x\r\nOrigin: http://o\r\n\
                     x-id: 000000ab-7-3\r\nx-a: added\r\nx-b: 1\r\n\
                     Sec-WebSocket-Protocol: chat\r\n\r\n"
                )
            );
            assert!(crate::net::upgrade::valid_key(key.as_bytes()));
        });
    }

    #[test]
    fn target_urls() {
        let t = Endpoint::new("ws://127.0.0.1:9001/ws", &TlsSettings::default()).unwrap();
        assert_eq!(t.port, 9001);
        assert!(!t.is_tls());
        let s = Endpoint::new("wss://example.test/x", &TlsSettings::default()).unwrap();
        assert_eq!(s.port, 443);
        assert!(s.is_tls());
        assert!(Endpoint::new("http://x/", &TlsSettings::default()).is_err());
    }
}
