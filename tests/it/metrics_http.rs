//! `--metrics-listen`: the real binary's `/metrics`, scraped over HTTP and read by the Python
//! `prometheus_client` parsers (the Prometheus project's own client, pinned in
//! `tests/peers/requirements.txt`): the text parses, every series has its labels, counters
//! only grow, and once the run is over (`wsstorm_run_finished` 1) its figures are exactly the
//! totals of results.json.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wsstorm::results::Results;

fn wsstorm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wsstorm"))
}

/// A run of 3 s: 50 clients, every connection dropped at 1 s, reconnecting with jitter.
const PROFILE: &str = "
name: metrics-it
duration: 3s
target: embedded
groups:
  - name: g
    clients: 50
    arrival: { rate: 500/s }
    behaviour:
      send: { every: 250ms, bytes: 64 }
      reconnect:
        backoff: { strategy: full-jitter, base: 100ms, cap: 1s }
timeline:
  - { at: 1s, action: drop-all, mode: abrupt }
";

/// Give up on anything after this long: a bound for a stuck test, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(120);

/// `wsstorm … --metrics-listen 127.0.0.1:0` started; its output arrives on channels, line by
/// line (read to the end, so it never blocks on a full pipe).
struct Started {
    child: Child,
    metrics: SocketAddr,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Started {
    fn new(cmd: &mut Command) -> Started {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wsstorm runs");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let line = wait_for(&stderr, "wsstorm: metrics on http://");
        let metrics = line
            .trim()
            .strip_prefix("wsstorm: metrics on http://")
            .and_then(|s| s.strip_suffix("/metrics"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line: {line}"));
        Started {
            child,
            metrics,
            stdout,
            stderr,
        }
    }

    fn interrupt(&self) {
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first line on `lines` that starts with `prefix`.
fn wait_for(lines: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line `{prefix}…` ({e})"),
        }
    }
}

/// GET /metrics; `openmetrics` asks for OpenMetrics as Prometheus does.
fn scrape(addr: SocketAddr, openmetrics: bool) -> String {
    let mut s = TcpStream::connect(addr).expect("the metrics endpoint listens");
    let accept = if openmetrics {
        "application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.3"
    } else {
        "text/plain"
    };
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let wanted = if openmetrics {
        "Content-Type: application/openmetrics-text; version=1.0.0"
    } else {
        "Content-Type: text/plain; version=0.0.4"
    };
    assert!(head.contains(wanted), "{head}");
    body.to_string()
}

/// One sample: its name and labels, and its value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// A scrape as `prometheus_client` reads it: each family's type, and every sample.
#[derive(Debug, Default)]
struct Parsed {
    types: BTreeMap<String, String>,
    samples: Samples,
}

impl Parsed {
    /// The value of the sample `name` whose labels, `run` aside, are `with`.
    fn get(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|((n, labels), _)| {
                n == name
                    && labels.keys().filter(|k| *k != "run").count() == with.len()
                    && with
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, v)| *v)
    }

    fn value(&self, name: &str) -> f64 {
        self.get(name, &[])
            .unwrap_or_else(|| panic!("no sample {name}"))
    }

    /// The samples with bounds written alike (OpenMetrics writes `le="1.0"`, the Prometheus
    /// text format `le="1"`).
    fn normalized(&self) -> Samples {
        self.samples
            .iter()
            .map(|((name, labels), v)| {
                let mut labels = labels.clone();
                if let Some(le) = labels.get_mut("le")
                    && let Ok(f) = le.parse::<f64>()
                {
                    *le = f.to_string();
                }
                ((name.clone(), labels), *v)
            })
            .collect()
    }

    /// `name`'s samples by the value of their `label`.
    fn by(&self, name: &str, label: &str) -> BTreeMap<String, u64> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .filter_map(|((_, labels), v)| Some((labels.get(label)?.clone(), *v as u64)))
            .collect()
    }
}

/// Parse every text with the Python client's parser: `prometheus_client.parser` for the
/// Prometheus text format, `prometheus_client.openmetrics.parser` (which is strict) for
/// OpenMetrics.
fn parse(texts: &[(String, bool)]) -> Vec<Parsed> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
out = []
for text, om in json.load(sys.stdin):
    families = (openmetrics if om else prometheus)(text)
    out.append([{"name": f.name, "type": f.type,
                 "samples": [[s.name, s.labels, s.value] for s in f.samples]}
                for f in families])
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new(crate::peers::python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(texts).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse a scrape: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Vec<Value>> = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|families| {
            let mut p = Parsed::default();
            for f in families {
                p.types.insert(
                    f["name"].as_str().unwrap().to_string(),
                    f["type"].as_str().unwrap().to_string(),
                );
                for s in f["samples"].as_array().unwrap() {
                    let labels: BTreeMap<String, String> =
                        serde_json::from_value(s[1].clone()).unwrap();
                    let name = s[0].as_str().unwrap().to_string();
                    assert!(
                        p.samples
                            .insert((name, labels), s[2].as_f64().unwrap())
                            .is_none(),
                        "a sample twice"
                    );
                }
            }
            p
        })
        .collect()
}

/// Every counter and histogram sample of `later` is at least `earlier`'s.
fn only_grow(earlier: &Parsed, later: &Parsed) {
    for ((name, labels), v) in &earlier.samples {
        let family = later
            .types
            .iter()
            .filter(|(f, _)| name.starts_with(f.as_str()))
            .max_by_key(|(f, _)| f.len())
            .map(|(_, t)| t.as_str());
        if !matches!(family, Some("counter" | "histogram")) {
            continue;
        }
        let now = later
            .samples
            .get(&(name.clone(), labels.clone()))
            .unwrap_or_else(|| panic!("{name}{labels:?} is gone"));
        assert!(now >= v, "{name}{labels:?} went down: {v} then {now}");
    }
}

#[test]
fn a_run_scraped_while_it_runs_ends_on_the_totals_of_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.yaml");
    std::fs::write(&profile, PROFILE).unwrap();
    let out = dir.path().join("out");
    let mut run = Started::new(
        wsstorm()
            .arg("run")
            .arg(&profile)
            .arg("--out")
            .arg(&out)
            .args(["--no-tui", "--seed", "7"])
            .args(["--metrics-listen", "127.0.0.1:0", "--metrics-linger", "2m"]),
    );
    // Scrape until the run says it is over; the last of these is its final figures.
    let mut texts = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = scrape(run.metrics, false);
        let over = text.contains("\nwsstorm_run_finished{run=\"metrics-it\"} 1\n");
        texts.push((text, false));
        if over {
            break;
        }
        assert!(Instant::now() < deadline, "the run never finished");
        std::thread::sleep(Duration::from_millis(150));
    }
    // After results.json is written the endpoint still serves (--metrics-linger): the final
    // scrape, in both formats.
    wait_for(&run.stderr, "wsstorm: serving the final figures");
    texts.push((scrape(run.metrics, false), false));
    texts.push((scrape(run.metrics, true), true));
    run.interrupt();
    let status = run.child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "a completed run, its wait cut short"
    );

    let mut scrapes = parse(&texts);
    let om = scrapes.pop().unwrap();
    // Before the run starts a scrape may find nothing yet; every other has every family.
    let live: Vec<&Parsed> = scrapes.iter().filter(|p| !p.types.is_empty()).collect();
    assert!(live.len() >= 3, "{} scrapes with figures", live.len());
    for p in &live {
        for (family, kind) in [
            ("wsstorm_connect_attempts", "counter"),
            ("wsstorm_retries", "counter"),
            ("wsstorm_connections_opened", "counter"),
            ("wsstorm_connections_closed", "counter"),
            ("wsstorm_close_codes", "counter"),
            ("wsstorm_client_closes", "counter"),
            ("wsstorm_connect_errors", "counter"),
            ("wsstorm_handshake_status", "counter"),
            ("wsstorm_messages_sent", "counter"),
            ("wsstorm_messages_received", "counter"),
            ("wsstorm_gave_up", "counter"),
            ("wsstorm_dead_detected", "counter"),
            ("wsstorm_connected", "gauge"),
            ("wsstorm_in_backoff", "gauge"),
            ("wsstorm_peak_connected", "gauge"),
            ("wsstorm_elapsed_seconds", "gauge"),
            ("wsstorm_schedule_lag_p99_seconds", "gauge"),
            ("wsstorm_run_finished", "gauge"),
            ("wsstorm_connect_seconds", "histogram"),
            ("wsstorm_handshake_seconds", "histogram"),
            ("wsstorm_rtt_seconds", "histogram"),
            ("wsstorm_reconnect_seconds", "histogram"),
            ("wsstorm_backoff_delay_seconds", "histogram"),
        ] {
            assert_eq!(
                p.types.get(family).map(String::as_str),
                Some(kind),
                "{family}"
            );
        }
        // Every series is the run's; no `shard` label unless the run is one shard of several.
        for (name, labels) in p.samples.keys() {
            assert_eq!(
                labels.get("run").map(String::as_str),
                Some("metrics-it"),
                "{name}"
            );
            assert!(!labels.contains_key("shard"), "{name}{labels:?}");
        }
        assert_eq!(p.value("wsstorm_clients"), 50.0);
        // +Inf is the count.
        assert_eq!(
            p.get("wsstorm_connect_seconds_bucket", &[("le", "+Inf")]),
            Some(p.value("wsstorm_connect_seconds_count"))
        );
    }
    for pair in live.windows(2) {
        only_grow(pair[0], pair[1]);
    }
    let running = live
        .iter()
        .filter(|p| p.value("wsstorm_run_finished") == 0.0)
        .count();
    assert!(running >= 1, "no scrape while the run ran");

    // The final figures are the results' totals, exactly.
    let r = Results::read(&out.join("results.json")).unwrap();
    let t = &r.totals;
    let last = live.last().unwrap();
    assert_eq!(
        om.normalized(),
        last.normalized(),
        "both formats say the same"
    );
    assert_eq!(last.value("wsstorm_run_finished"), 1.0);
    assert_eq!(
        last.value("wsstorm_connect_attempts_total") as u64,
        t.connect_attempts
    );
    assert_eq!(
        last.value("wsstorm_connections_opened_total") as u64,
        t.opened
    );
    let closed = t.close_codes.values().sum::<u64>()
        + t.client_closes
        + t.client_close_codes.values().sum::<u64>();
    assert_eq!(
        last.value("wsstorm_connections_closed_total") as u64,
        closed
    );
    assert_eq!(last.by("wsstorm_close_codes_total", "code"), t.close_codes);
    assert_eq!(
        last.by("wsstorm_client_close_codes_total", "code"),
        t.client_close_codes
    );
    assert_eq!(
        last.value("wsstorm_client_closes_total") as u64,
        t.client_closes
    );
    assert_eq!(
        last.by("wsstorm_handshake_status_total", "status"),
        t.handshake_status
    );
    assert_eq!(last.value("wsstorm_gave_up_total") as u64, t.gave_up);
    assert_eq!(
        last.value("wsstorm_dead_detected_total") as u64,
        t.dead_detected
    );
    assert_eq!(
        last.value("wsstorm_messages_sent_total") as u64,
        t.messages.sent
    );
    assert_eq!(
        last.value("wsstorm_messages_received_total") as u64,
        t.messages.received
    );
    assert_eq!(
        last.value("wsstorm_peak_connected") as u64,
        t.peak_connected
    );
    let refused = last
        .get("wsstorm_connect_errors_total", &[("kind", "refused")])
        .unwrap();
    assert_eq!(refused as u64, t.connect_errors.refused);
    assert_eq!(
        last.value("wsstorm_connect_seconds_count") as u64,
        r.latency_us.connect.count
    );
    assert_eq!(
        last.value("wsstorm_reconnect_seconds_count") as u64,
        r.latency_us.reconnect.count
    );
    assert_eq!(
        last.value("wsstorm_rtt_seconds_count") as u64,
        r.latency_us.rtt.count
    );
    // The drop at 1 s happened, and shows.
    assert!(t.close_codes.get("1006").is_some_and(|n| *n > 0), "{t:?}");
    // The scrape that first said "finished" already had the final figures.
    let first_final = live
        .iter()
        .find(|p| p.value("wsstorm_run_finished") == 1.0)
        .unwrap();
    assert_eq!(first_final.samples, last.samples);
}

/// Scrape until the text has every one of `lines` (a server counts an upgrade once it has
/// answered it), then return the scrape.
fn scrape_until(addr: SocketAddr, lines: &[&str]) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = scrape(addr, false);
        if lines.iter().all(|line| text.lines().any(|l| l == *line)) {
            return text;
        }
        assert!(Instant::now() < deadline, "never {lines:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stop a server or proxy as a user does; it exits 0.
fn stop(mut s: Started) {
    s.interrupt();
    assert!(s.child.wait().unwrap().success(), "exits cleanly on Ctrl-C");
}

#[test]
fn serve_and_proxy_show_their_counters() {
    use tokio_tungstenite::tungstenite;
    let serve = Started::new(wsstorm().args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]));
    let url = wait_for(&serve.stdout, "wsstorm serve: listening on ")
        .strip_prefix("wsstorm serve: listening on ")
        .unwrap()
        .to_string();
    let before = scrape(serve.metrics, false);
    // Three clients upgrade and stay; one asks for a path the server does not serve.
    let clients: Vec<_> = (0..3)
        .map(|_| tungstenite::connect(url.as_str()).unwrap().0)
        .collect();
    assert!(tungstenite::connect(url.replace("/ws", "/nope")).is_err());
    let server_addr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_string();
    scrape_until(
        serve.metrics,
        &[
            "wsstorm_server_upgraded_total 3",
            "wsstorm_server_rejected_404_total 1",
        ],
    );
    let during = scrape(serve.metrics, true);

    // The proxy in front of it, one client through.
    let proxy = Started::new(wsstorm().args([
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &server_addr,
        "--metrics-listen",
        "127.0.0.1:0",
    ]));
    let line = wait_for(&proxy.stdout, "wsstorm proxy: listening on ");
    let proxied = line
        .strip_prefix("wsstorm proxy: listening on ")
        .and_then(|l| l.split(',').next())
        .unwrap()
        .to_string();
    let (mut ws, _) = tungstenite::connect(format!("ws://{proxied}/ws")).unwrap();
    ws.send(tungstenite::Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("hello"));
    let through = scrape_until(proxy.metrics, &["wsstorm_proxy_accepted_total 1"]);

    let parsed = parse(&[(before, false), (during, true), (through, false)]);
    let (before, during, through) = (&parsed[0], &parsed[1], &parsed[2]);
    only_grow(before, during);
    assert_eq!(before.value("wsstorm_server_upgraded_total"), 0.0);
    assert_eq!(during.value("wsstorm_server_accepted_total"), 4.0);
    assert_eq!(during.value("wsstorm_server_upgraded_total"), 3.0);
    assert_eq!(during.value("wsstorm_server_rejected_404_total"), 1.0);
    assert_eq!(during.value("wsstorm_server_rejected_503_total"), 0.0);
    assert_eq!(during.value("wsstorm_server_handshakes_wasted_total"), 0.0);
    assert_eq!(during.types["wsstorm_server_open"], "gauge");
    assert_eq!(during.value("wsstorm_server_open"), 3.0);
    assert_eq!(through.types["wsstorm_proxy_open"], "gauge");
    assert_eq!(through.value("wsstorm_proxy_open"), 1.0);
    assert!(through.value("wsstorm_proxy_bytes_upstream_total") > 0.0);
    for p in [before, during, through] {
        for (name, labels) in p.samples.keys() {
            assert!(labels.is_empty(), "{name}{labels:?}: no run, no shard");
        }
    }
    drop(ws);
    drop(clients);
    stop(proxy);
    stop(serve);
}

#[test]
fn a_taken_port_stops_the_run_before_it_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.yaml");
    std::fs::write(&profile, PROFILE).unwrap();
    let out = dir.path().join("out");
    let o = wsstorm()
        .arg("run")
        .arg(&profile)
        .arg("--out")
        .arg(&out)
        .args(["--no-tui", "--metrics-listen", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("--metrics-listen {addr}: cannot listen there"))
            && err.contains("choose another port"),
        "{err}"
    );
    assert!(!out.join("results.json").exists(), "the run did not start");
    // --metrics-linger means nothing without an endpoint.
    let o = wsstorm()
        .args(["serve", "--metrics-linger", "1s"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
