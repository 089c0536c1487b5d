//! The third-party app servers the tests aim wsstorm at: tests/peers/*_server.py, small apps on
//! libraries no one here wrote (`websockets`, python-socketio under uvicorn, strawberry-graphql,
//! PyJWT), run with the peers' virtualenv Python (`crate::peers::python()`).
//!
//! Each server prints `LISTENING <port>` once it listens, and answers a plain-HTTP
//! `GET /ledger` on the same port with its own record of what it did, for the tests to hold
//! wsstorm's numbers against. Each file's docstring gives its CLI and its ledger.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to say `LISTENING` (the virtualenv is made before the clock).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `get` may take (pubsub's drop-all waits for every closing handshake).
const GET_TIMEOUT: Duration = Duration::from_secs(30);

/// A running app server, killed when dropped.
pub struct App {
    child: Child,
    pub port: u16,
    /// The server's stderr, for failure messages.
    log: tempfile::NamedTempFile,
}

impl App {
    /// Start tests/peers/`script` with the venv's Python, `args` appended; wait (up to 60 s)
    /// for `LISTENING <port>`. Panics with the server's stderr if it dies or hangs first.
    pub fn start(script: &str, args: &[&str]) -> App {
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/peers", script]
            .iter()
            .collect();
        // stderr goes to a file, not a pipe: a pipe nobody drains fills up and blocks the
        // server the moment it logs too much.
        let log = tempfile::NamedTempFile::new().expect("a temp file for the server's stderr");
        let python = crate::peers::python();
        let mut child = Command::new(python)
            .arg(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("the temp file reopens"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python.display(), path.display()));
        // A thread reads stdout, so the wait can time out; it then drains the rest until the
        // server exits, so a chatty server never blocks on a full pipe.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = rx.recv_timeout(START_TIMEOUT);
        let port = match &line {
            Ok(Some(l)) => l
                .strip_prefix("LISTENING ")
                .and_then(|p| p.trim().parse::<u16>().ok()),
            _ => None,
        };
        let mut app = App {
            child,
            port: port.unwrap_or(0),
            log,
        };
        if port.is_none() {
            let what = match line {
                Ok(Some(l)) => format!("printed {l:?} instead of `LISTENING <port>`"),
                Ok(None) => "exited before listening".to_string(),
                Err(_) => format!("did not listen within {START_TIMEOUT:?}"),
            };
            app.kill();
            panic!("{script} {args:?} {what}; its stderr:\n{}", app.stderr());
        }
        app
    }

    /// `ws://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// `GET http://127.0.0.1:{port}{path}`, its body parsed as JSON. HTTP/1.1 (the
    /// `websockets` servers refuse 1.0) with `Connection: close`. Panics unless the status is
    /// 2xx and the body JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let fail = |why: String| -> ! {
            panic!(
                "GET {path} on port {}: {why}; the server's stderr:\n{}",
                self.port,
                self.stderr()
            )
        };
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| fail(format!("cannot connect: {e}")));
        stream.set_read_timeout(Some(GET_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(GET_TIMEOUT)).unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n",
            self.port
        );
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| fail(format!("cannot send: {e}")));
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .unwrap_or_else(|e| fail(format!("cannot read: {e}")));
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                fail(format!(
                    "no HTTP response: {:?}",
                    String::from_utf8_lossy(&raw)
                ))
            });
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut body = raw[split + 4..].to_vec();
        let status_ok = head
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('2'));
        if !status_ok {
            fail(format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body)));
        }
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            body = dechunk(&body).unwrap_or_else(|| fail("a bad chunked body".to_string()));
        } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.truncate(n);
        }
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            fail(format!(
                "the body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&body)
            ))
        })
    }

    /// The server's own record of what it did (`GET /ledger`).
    pub fn ledger(&self) -> serde_json::Value {
        self.get("/ledger")
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Kill the process (SIGKILL) and wait for it; again is harmless.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `Transfer-Encoding: chunked` body, decoded.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&raw[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

#[test]
fn pubsub_server_starts_publishes_and_stops() {
    let mut app = App::start(
        "pubsub_server.py",
        &["--port", "0", "--topics", "prices,news", "--rate", "200"],
    );
    assert!(app.url("/ws").starts_with("ws://127.0.0.1:"));
    std::thread::sleep(Duration::from_millis(300));
    let l = app.ledger();
    assert_eq!(l["connections"], 0, "{l}");
    assert_eq!(l["open"], 0, "{l}");
    for topic in ["prices", "news"] {
        let seq = l["published"][topic]
            .as_u64()
            .unwrap_or_else(|| panic!("{l}"));
        assert!(seq > 10, "{topic} published only {seq} in 300 ms: {l}");
    }
    assert_eq!(
        app.get("/control/drop-all"),
        serde_json::json!({"closed": 0})
    );
    let port = app.port;
    app.kill();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port still answers after kill"
    );
}

#[test]
fn socketio_server_starts_and_keeps_a_ledger() {
    let app = App::start("socketio_server.py", &["--port", "0", "--tick-ms", "50"]);
    std::thread::sleep(Duration::from_millis(300));
    let l = app.ledger();
    for key in [
        "connects",
        "disconnects",
        "joins",
        "says",
        "broadcasts",
        "open",
    ] {
        assert_eq!(l[key], 0, "{key}: {l}");
    }
    // The ticker runs from the start, room r1 empty or not.
    assert!(l["ticks"].as_u64().is_some_and(|n| n >= 2), "{l}");
    assert_eq!(l["tick_recipients"], 0, "{l}");
}

#[test]
fn graphql_server_starts_and_keeps_a_ledger() {
    let app = App::start("graphql_server.py", &["--port", "0"]);
    assert_eq!(
        app.ledger(),
        serde_json::json!({"subscriptions": 0, "completed": 0, "cancelled": 0, "yielded": 0})
    );
}

#[test]
fn jwt_server_starts_and_keeps_a_ledger() {
    let app = App::start(
        "jwt_server.py",
        &[
            "--port",
            "0",
            "--alg",
            "HS256",
            "--secret",
            "a-secret-of-32-bytes-or-more-ok!",
        ],
    );
    assert_eq!(
        app.ledger(),
        serde_json::json!({
            "accepted": 0,
            "rejected": {"expired": 0, "invalid": 0, "missing": 0},
            "subjects": []
        })
    );
}

#[test]
fn a_server_that_dies_shows_its_stderr() {
    // RS256 without --public-key: argparse refuses, before any LISTENING.
    let died = std::panic::catch_unwind(|| App::start("jwt_server.py", &["--alg", "RS256"]));
    let msg = died.err().expect("start panics");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("exited before listening"), "{msg}");
    assert!(msg.contains("RS256 needs --public-key"), "{msg}");
}
