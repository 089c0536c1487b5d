//! The proxy's control API: a small HTTP/1.1 server on its own (loopback) port.
//!
//! ```text
//! GET    /connections      open connections (id, client, age, bytes each way)
//! GET    /faults           faults in force
//! POST   /faults           {"kind":"latency","delay":"100ms","jitter":"10ms",...} -> 201 {"id":N}
//! DELETE /faults/N         remove one                                         -> 204 | 404
//! DELETE /faults           remove all                                         -> 204
//! GET    /stats            counters
//! ```
//! Bad input is a 400 with `{"error": "..."}` saying what was wrong.

use std::net::SocketAddr;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{Fault, ProxyHandle};

const MAX_REQUEST: usize = 64 * 1024;

/// Serve the control API on `listener` until `shutdown`.
pub async fn serve_control(listener: TcpListener, proxy: ProxyHandle, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(handle_connection(stream, proxy.clone()));
                }
            }
        }
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

async fn read_request(stream: &mut TcpStream) -> Result<Request, String> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a full request".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return Err("request too large".into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let length = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if head_len + length > MAX_REQUEST {
                    return Err("request too large".into());
                }
                let method = req.method.unwrap_or("").to_string();
                let path = req.path.unwrap_or("").to_string();
                while buf.len() < head_len + length {
                    let n = stream
                        .read(&mut chunk)
                        .await
                        .map_err(|e| format!("read: {e}"))?;
                    if n == 0 {
                        return Err("connection closed before the whole body".into());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                return Ok(Request {
                    method,
                    path,
                    body: buf[head_len..head_len + length].to_vec(),
                });
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(format!("not an HTTP request: {e}")),
        }
    }
}

async fn respond(stream: &mut TcpStream, status: u16, body: Option<serde_json::Value>) {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let body = body.map(|b| b.to_string() + "\n").unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn handle_connection(mut stream: TcpStream, proxy: ProxyHandle) {
    let req = match read_request(&mut stream).await {
        Ok(r) => r,
        Err(e) => {
            respond(&mut stream, 400, Some(json!({ "error": e }))).await;
            return;
        }
    };
    let (status, body) = route(&req, &proxy);
    respond(&mut stream, status, body).await;
}

fn route(req: &Request, proxy: &ProxyHandle) -> (u16, Option<serde_json::Value>) {
    let path = req.path.split('?').next().unwrap_or("");
    match (req.method.as_str(), path) {
        ("GET", "/connections") => (200, Some(json!(proxy.connections()))),
        ("GET", "/faults") => (200, Some(json!(proxy.faults()))),
        ("GET", "/stats") => (200, Some(json!(proxy.stats()))),
        ("POST", "/faults") => match serde_json::from_slice::<Fault>(&req.body) {
            Ok(fault) => match proxy.apply(fault) {
                Ok(id) => (201, Some(json!({ "id": id }))),
                Err(e) => (400, Some(json!({ "error": e }))),
            },
            Err(e) => (400, Some(json!({ "error": format!("invalid fault: {e}") }))),
        },
        ("DELETE", "/faults") => {
            proxy.heal();
            (204, None)
        }
        ("DELETE", p) if p.starts_with("/faults/") => match p["/faults/".len()..].parse::<u64>() {
            Ok(id) if proxy.remove(id) => (204, None),
            Ok(id) => (404, Some(json!({ "error": format!("no fault {id}") }))),
            Err(_) => (
                400,
                Some(json!({ "error": format!("`{}` is not a fault id", &p["/faults/".len()..]) })),
            ),
        },
        (_, "/connections" | "/faults" | "/stats") => (
            405,
            Some(json!({ "error": format!("{} is not allowed on {path}", req.method) })),
        ),
        _ => (
            404,
            Some(json!({ "error": format!("no such endpoint: {path}") })),
        ),
    }
}

/// Bind the control API's listener (loopback unless told otherwise).
pub async fn bind_control(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
