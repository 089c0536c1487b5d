//! The embedded target's side of the HTTP upgrade: read the request, let the connection's
//! admission rules look at it, answer, and hand the socket to the frame layer.
//!
//! Done here rather than by tungstenite, whose handshake reads the request into a 4 KiB buffer
//! and ends in a WebSocket of its own, and without `http`'s types: turning the request into an
//! `http::Request` copied every header into a `HeaderMap` (about twenty allocations per
//! connection, for the three headers the rules read), and the answer went through another.
//! Here the rules read the parsed request where it lies ([`UpgradeRequest`]), and the answer is
//! written into the request's own buffer. The checks are tungstenite's (`create_response`):
//! GET, HTTP/1.1 or later, `Connection: upgrade`, `Upgrade: websocket`, version 13 and a valid
//! key, else 400.

use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::net::transport::Transport;
use crate::net::upgrade::{Accept, valid_key};

type Ws = crate::net::transport::WsStream;

/// The largest upgrade request the target reads before calling it broken.
const MAX_REQUEST: usize = 16 * 1024;

/// The request as parsed, borrowed from the bytes read: what admission looks at.
pub(super) struct UpgradeRequest<'a> {
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a [httparse::Header<'a>],
}

impl<'a> UpgradeRequest<'a> {
    pub fn path(&self) -> &'a str {
        self.path
    }

    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The first value of header `name` (any case), if it is text (visible ASCII and tabs,
    /// as `HeaderValue::to_str` reads it).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.raw(name)
            .filter(|v| v.iter().all(|&b| b == b'\t' || (32..127).contains(&b)))
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of header `name` (any case), as sent.
    fn raw(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Whether this is a WebSocket upgrade, and the answer to its key if so.
    fn accept(&self, method: &str, version: u8) -> Option<Accept> {
        let connection_upgrade = self.header("Connection").is_some_and(|v| {
            v.split([' ', ','])
                .any(|t| t.eq_ignore_ascii_case("upgrade"))
        });
        let websocket = self
            .header("Upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let version_13 = self.raw("Sec-WebSocket-Version") == Some(b"13");
        let key = self.raw("Sec-WebSocket-Key").filter(|k| valid_key(k))?;
        (method == "GET" && version >= 1 && connection_upgrade && websocket && version_13)
            .then(|| Accept::of(key))
    }
}

/// An answer other than the upgrade.
pub(super) struct Refusal {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Option<&'static str>,
}

impl Refusal {
    pub fn new(status: u16, retry_after: Option<Duration>, body: Option<&'static str>) -> Self {
        Refusal {
            status,
            retry_after,
            body,
        }
    }
}

/// Read the upgrade request from `transport`, ask `admit` whether to take it, answer, and
/// return the WebSocket. `Err` when the upgrade did not happen (refused by `admit`, not an
/// upgrade, malformed, or the peer left).
pub(super) async fn accept_upgrade<F>(
    mut transport: Transport,
    admit: F,
    config: WebSocketConfig,
) -> Result<Ws, ()>
where
    F: FnOnce(&UpgradeRequest<'_>) -> Result<(), Refusal>,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read straight into the heap: a stack buffer here would be part of every connection's
    // future, idle sessions included.
    let mut raw: Vec<u8> = Vec::with_capacity(1024);
    let (answer, tail) = loop {
        raw.reserve(1024);
        let n = transport.read_buf(&mut raw).await.map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&raw) {
            Ok(httparse::Status::Complete(len)) => {
                let Some(request) = view(parsed.path.unwrap_or("/"), parsed.headers) else {
                    return Err(());
                };
                let answer = match request
                    .accept(parsed.method.unwrap_or(""), parsed.version.unwrap_or(0))
                {
                    None => Err(Refusal::new(400, None, Some("not a WebSocket upgrade"))),
                    Some(accept) => admit(&request).map(|()| accept),
                };
                // Usually nothing: a client sends its first frame after the answer.
                break (answer, raw[len..].to_vec());
            }
            Ok(httparse::Status::Partial) if raw.len() < MAX_REQUEST => continue,
            _ => return Err(()),
        }
    };
    // The answer goes out of the request's buffer: the request has been read.
    raw.clear();
    write_answer(&mut raw, &answer);
    transport.write_all(&raw).await.map_err(|_| ())?;
    transport.flush().await.map_err(|_| ())?;
    drop(raw);
    if answer.is_err() {
        return Err(());
    }
    Ok(Ws::from_partially_read(
        transport,
        tail,
        Role::Server,
        Some(config),
    ))
}

/// The request's target split into path and query: an origin-form target (`/path?query`, all
/// that clients send) is read in place, as httparse accepted it; any other form must parse as
/// an `http::Uri`, or the connection is dropped unanswered (as before this module).
fn view<'a>(target: &'a str, headers: &'a [httparse::Header<'a>]) -> Option<UpgradeRequest<'a>> {
    let (path, query) = if target.starts_with('/') {
        // A fragment is no part of what the server is asked for.
        let target = target.split_once('#').map_or(target, |(t, _)| t);
        match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        }
    } else {
        let uri: tokio_tungstenite::tungstenite::http::Uri = target.parse().ok()?;
        // The same text found in the target is the same text: borrow it from there.
        let within = |part: &str| target.find(part).map(|at| &target[at..at + part.len()]);
        (
            within(uri.path()).unwrap_or("/"),
            uri.query().and_then(within),
        )
    };
    Some(UpgradeRequest {
        path,
        query,
        headers,
    })
}

/// The 101 with its accept key, or the refusal with its status, Retry-After and body.
fn write_answer(out: &mut Vec<u8>, answer: &Result<Accept, Refusal>) {
    use std::io::Write;
    match answer {
        Ok(accept) => {
            out.extend_from_slice(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                  Sec-WebSocket-Accept: ",
            );
            out.extend_from_slice(accept.as_str().as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
        }
        Err(r) => {
            let reason = tokio_tungstenite::tungstenite::http::StatusCode::from_u16(r.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            let _ = write!(out, "HTTP/1.1 {} {reason}\r\n", r.status);
            if let Some(d) = r.retry_after {
                let secs = d.as_secs_f64().ceil().max(1.0) as u64;
                let _ = write!(out, "Retry-After: {secs}\r\n");
            }
            let body = r.body.unwrap_or("");
            let _ = write!(out, "Content-Length: {}\r\n\r\n{body}", body.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_to(request: &str, admit: Result<(), Refusal>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
                .await
                .unwrap();
            let (s, _) = l.accept().await.unwrap();
            c.write_all(request.as_bytes()).await.unwrap();
            let mut seen = None;
            let accepted = accept_upgrade(
                Transport::Plain(s),
                |r: &UpgradeRequest<'_>| {
                    seen = Some((r.path().to_string(), r.query().map(str::to_string)));
                    admit
                },
                WebSocketConfig::default(),
            )
            .await;
            drop(accepted);
            let mut out = String::new();
            c.read_to_string(&mut out).await.unwrap();
            if let Some((p, q)) = seen {
                out.push_str(&format!("[path {p} query {q:?}]"));
            }
            out
        })
    }

    const UPGRADE: &str = "Host: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\
                           Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn an_upgrade_is_answered_with_the_rfc_accept_key() {
        let out = answer_to(&format!("GET /ws?a=1&b=2#f HTTP/1.1\r\n{UPGRADE}"), Ok(()));
        assert_eq!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\
             [path /ws query Some(\"a=1&b=2\")]"
        );
        let absolute = answer_to(&format!("GET ws://h:1/p/q?z HTTP/1.1\r\n{UPGRADE}"), Ok(()));
        assert!(
            absolute.ends_with("[path /p/q query Some(\"z\")]"),
            "{absolute}"
        );
    }

    #[test]
    fn a_refusal_carries_its_status_retry_after_and_body() {
        let out = answer_to(
            &format!("GET /ws HTTP/1.1\r\n{UPGRADE}"),
            Err(Refusal::new(
                503,
                Some(Duration::from_millis(1500)),
                Some("busy"),
            )),
        );
        assert_eq!(
            out,
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 4\r\n\r\nbusy\
             [path /ws query None]"
        );
    }

    #[test]
    fn what_is_not_an_upgrade_gets_400_without_asking_admission() {
        let bad = [
            format!("POST /ws HTTP/1.1\r\n{UPGRADE}"),
            format!("GET /ws HTTP/1.0\r\n{UPGRADE}"),
            format!(
                "GET /ws HTTP/1.1\r\n{}",
                UPGRADE.replace("keep-alive, Upgrade", "close")
            ),
            format!(
                "GET /ws HTTP/1.1\r\n{}",
                UPGRADE.replace("WebSocket", "h2c")
            ),
            format!(
                "GET /ws HTTP/1.1\r\n{}",
                UPGRADE.replace("Version: 13", "Version: 8")
            ),
            format!("GET /ws HTTP/1.1\r\n{}", UPGRADE.replace("ZQ==", "ZQ")),
        ];
        for request in bad {
            assert_eq!(
                answer_to(&request, Ok(())),
                "HTTP/1.1 400 Bad Request\r\nContent-Length: 23\r\n\r\nnot a WebSocket upgrade",
                "{request}"
            );
        }
    }
}
