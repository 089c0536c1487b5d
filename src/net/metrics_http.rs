//! The smallest HTTP/1.1 server that a Prometheus scrape needs: `GET /metrics` (and `HEAD`)
//! answered with whatever the caller renders at that moment, on a thread and a runtime of its
//! own, so a scrape never waits on a busy swarm and the swarm never waits on a scrape.
//!
//! Not a web server: one request per connection (`Connection: close`, which every scraper
//! handles), a request head of at most 8 KiB read within 5 s, no body; another path is 404,
//! another method 405. Written here rather than taken from an HTTP crate: this is all of it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The path served.
pub const PATH: &str = "/metrics";
/// The longest request head read.
const MAX_HEAD: usize = 8 << 10;
/// The time a client gets to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The time one exchange may take in all.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a scrape gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub content_type: String,
    pub body: String,
}

/// Renders the page for a scrape, given the request's `Accept` header (if any); an error is
/// answered with 500 and its text.
pub type Render = Arc<dyn Fn(Option<&str>) -> Result<Page, String> + Send + Sync>;

/// A metrics endpoint, serving until dropped.
pub struct MetricsHttp {
    addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsHttp {
    /// Listen on `addr` now — a taken port is an error here, before anything else runs — and
    /// answer scrapes with `render` from a thread of its own.
    pub fn start(addr: SocketAddr, render: Render) -> io::Result<MetricsHttp> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("wsstorm-metrics".into())
            .spawn(move || runtime.block_on(serve(listener, render, token)))?;
        Ok(MetricsHttp {
            addr: local,
            shutdown,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port chosen, when `addr` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsHttp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(listener: std::net::TcpListener, render: Render, shutdown: CancellationToken) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let render = render.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(stream, &render)).await;
                });
            }
            // Out of file descriptors, say: wait rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Read one request and answer it.
async fn exchange(mut stream: TcpStream, render: &Render) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream, &mut buf)).await;
    let response = match head {
        Ok(Ok(true)) => respond(&buf, render),
        Ok(Ok(false)) => plain(400, "Bad Request", "request head too long or cut short\n"),
        Ok(Err(e)) => return Err(e),
        Err(_) => plain(408, "Request Timeout", "no request\n"),
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// Read until the end of the request head; `false` when it is too long or the peer stopped
/// before it ended.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(true);
        }
        if buf.len() >= MAX_HEAD {
            return Ok(false);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The whole response to a request head.
fn respond(head: &[u8], render: &Render) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return plain(400, "Bad Request", "not an HTTP request\n");
    }
    let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
    if path != PATH {
        return plain(404, "Not Found", "not found: the metrics are at /metrics\n");
    }
    let method = req.method.unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return plain(405, "Method Not Allowed", "GET /metrics\n");
    }
    let accept = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("accept"))
        .and_then(|h| std::str::from_utf8(h.value).ok());
    match render(accept) {
        Ok(page) => {
            let mut out = head_of(200, "OK", &page.content_type, page.body.len());
            if method == "GET" {
                out.extend_from_slice(page.body.as_bytes());
            }
            out
        }
        Err(e) => plain(500, "Internal Server Error", &format!("{e}\n")),
    }
}

fn head_of(status: u16, reason: &str, content_type: &str, len: usize) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

fn plain(status: u16, reason: &str, body: &str) -> Vec<u8> {
    let mut out = head_of(status, reason, "text/plain; charset=utf-8", body.len());
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn answers_get_metrics_with_the_page_rendered_then_and_nothing_else() {
        let render: Render = Arc::new(|accept| {
            Ok(Page {
                content_type: "text/plain".into(),
                body: format!("accept={}\n", accept.unwrap_or("-")),
            })
        });
        let http = MetricsHttp::start("127.0.0.1:0".parse().unwrap(), render).unwrap();
        let addr = http.local_addr();
        let ok = get(
            addr,
            "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/x\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 14\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\naccept=text/x\n"), "{ok}");
        let head = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, "nonsense\r\n\r\n").starts_with("HTTP/1.1 400"));
        // The port is taken while it serves.
        let again = MetricsHttp::start(addr, Arc::new(|_| Err("unused".into())));
        assert_eq!(
            again.err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
        drop(http);
        assert!(std::net::TcpStream::connect(addr).is_err(), "still serving");
    }

    #[test]
    fn a_render_error_is_a_500() {
        let http = MetricsHttp::start(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|_| Err("broken".into())),
        )
        .unwrap();
        let r = get(http.local_addr(), "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 500") && r.ends_with("broken\n"),
            "{r}"
        );
    }
}
