use super::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::metrics::{Closed, Collector as Ticker, ConnectError, Metrics, OpenTimings, Who};

fn who(client: u32) -> Who {
    Who { client, group: 0 }
}

/// Four attempts: two opened (connect 500 µs and 3 ms, upgrade 800 µs), one refused, one
/// answered 503; one of the two connections closed with 1006.
fn small_snapshot() -> Arc<Snapshot> {
    let m = Arc::new(Metrics::new(1));
    let mut c = Ticker::new(m.clone(), Instant::now());
    for (id, connect_us) in [(0, 500), (1, 3_000)] {
        m.attempt(who(id), Duration::ZERO, false, false);
        m.opened(
            who(id),
            OpenTimings {
                connect: Duration::from_micros(connect_us),
                tls: None,
                handshake: Duration::from_micros(800),
                reconnect: None,
            },
        );
    }
    m.attempt(who(2), Duration::ZERO, false, false);
    m.connect_error(who(2), ConnectError::Refused);
    m.attempt(who(3), Duration::ZERO, true, true);
    m.handshake_status(who(3), 503);
    m.closed(who(1), Closed::ByPeer(1006));
    Arc::new(c.tick())
}

fn run_text(snapshot: Arc<Snapshot>, labels: &Labels, format: Format) -> String {
    let figures = Box::new(RunFigures {
        snapshot,
        clients: 4,
    });
    encode(figures, labels, format).unwrap()
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line `{line}` in:\n{text}"
    );
}

#[test]
fn a_small_snapshot_in_openmetrics() {
    let labels = Labels {
        run: Some("demo".into()),
        shard: Some("3/20".into()),
    };
    let t = run_text(small_snapshot(), &labels, Format::OpenMetrics);
    let l = r#"shard="3/20",run="demo""#;
    has(&t, "# TYPE wsstorm_connect_attempts counter");
    has(&t, &format!("wsstorm_connect_attempts_total{{{l}}} 4"));
    has(&t, &format!("wsstorm_retries_total{{{l}}} 1"));
    has(&t, &format!("wsstorm_connections_opened_total{{{l}}} 2"));
    has(&t, &format!("wsstorm_connections_closed_total{{{l}}} 1"));
    has(
        &t,
        &format!(r#"wsstorm_close_codes_total{{{l},code="1006"}} 1"#),
    );
    has(
        &t,
        &format!(r#"wsstorm_connect_errors_total{{{l},kind="refused"}} 1"#),
    );
    has(
        &t,
        &format!(r#"wsstorm_connect_errors_total{{{l},kind="timeout"}} 0"#),
    );
    has(
        &t,
        &format!(r#"wsstorm_handshake_status_total{{{l},status="503"}} 1"#),
    );
    has(&t, "# TYPE wsstorm_connected gauge");
    has(&t, &format!("wsstorm_connected{{{l}}} 1"));
    has(&t, &format!("wsstorm_peak_connected{{{l}}} 1"));
    has(&t, &format!("wsstorm_clients{{{l}}} 4"));
    has(&t, &format!("wsstorm_run_finished{{{l}}} 0"));
    has(&t, "# UNIT wsstorm_elapsed_seconds seconds");
    // The connect histogram: 500 µs under 1 ms, 3 ms under 5 ms; the sum to the histogram's
    // resolution (3000 µs is kept as 3000..3001).
    has(&t, "# TYPE wsstorm_connect_seconds histogram");
    has(&t, &format!("wsstorm_connect_seconds_count{{{l}}} 2"));
    has(&t, &format!("wsstorm_connect_seconds_sum{{{l}}} 0.003501"));
    has(
        &t,
        &format!(r#"wsstorm_connect_seconds_bucket{{{l},le="0.001"}} 1"#),
    );
    has(
        &t,
        &format!(r#"wsstorm_connect_seconds_bucket{{{l},le="0.0025"}} 1"#),
    );
    has(
        &t,
        &format!(r#"wsstorm_connect_seconds_bucket{{{l},le="0.005"}} 2"#),
    );
    has(
        &t,
        &format!(r#"wsstorm_connect_seconds_bucket{{{l},le="+Inf"}} 2"#),
    );
    has(
        &t,
        &format!(r#"wsstorm_handshake_seconds_bucket{{{l},le="0.001"}} 2"#),
    );
    has(&t, &format!("wsstorm_backoff_delay_seconds_count{{{l}}} 0"));
    for kind in crate::metrics::LatencyTable::KINDS {
        has(
            &t,
            &format!("# TYPE wsstorm_{}_seconds histogram", kind.name()),
        );
    }
    assert!(t.ends_with("# EOF\n"), "{t}");
    // Every sample carries both labels.
    for sample in t.lines().filter(|l| !l.starts_with('#')) {
        assert!(sample.contains(l), "{sample}");
    }
}

#[test]
fn the_prometheus_text_format_without_labels() {
    let t = run_text(small_snapshot(), &Labels::default(), Format::Prometheus);
    has(&t, "# TYPE wsstorm_connect_attempts_total counter");
    has(&t, "wsstorm_connect_attempts_total 4");
    has(&t, r#"wsstorm_close_codes_total{code="1006"} 1"#);
    has(&t, r#"wsstorm_connect_seconds_bucket{le="0.005"} 2"#);
    assert!(!t.contains("# EOF"), "{t}");
    assert!(!t.contains("shard="), "no shard, no label: {t}");
}

#[test]
fn the_last_snapshot_says_the_run_is_over() {
    let last = Arc::new(Snapshot {
        finished: true,
        ..(*small_snapshot()).clone()
    });
    let t = run_text(last, &Labels::default(), Format::OpenMetrics);
    has(&t, "wsstorm_run_finished 1");
}

#[test]
fn the_scraper_chooses_the_format() {
    let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
    assert_eq!(Format::from_accept(None), Format::Prometheus);
    assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
    assert_eq!(
        Format::from_accept(Some("application/openmetrics-text; q=0, text/plain")),
        Format::Prometheus
    );
    assert!(
        Format::OpenMetrics
            .content_type()
            .starts_with("application/openmetrics-text")
    );
    assert!(
        Format::Prometheus
            .content_type()
            .starts_with("text/plain; version=0.0.4")
    );
}

#[test]
fn server_and_proxy_counters_by_their_results_names() {
    let mut s = ServerSummary {
        accepted: 7,
        upgraded: 5,
        rejected_503: 2,
        handshakes_wasted: 1,
        open: 3,
        ..Default::default()
    };
    s.closes_sent.insert("1001".into(), 4);
    s.warnings.push("not a number".into());
    let t = encode(
        Box::new(server_figures(&s)),
        &Labels::default(),
        Format::OpenMetrics,
    )
    .unwrap();
    has(&t, "wsstorm_server_accepted_total 7");
    has(&t, "wsstorm_server_upgraded_total 5");
    has(&t, "wsstorm_server_rejected_503_total 2");
    has(&t, "wsstorm_server_handshakes_wasted_total 1");
    has(&t, "# TYPE wsstorm_server_open gauge");
    has(&t, "wsstorm_server_open 3");
    has(&t, "# TYPE wsstorm_server_handshake_queue_peak gauge");
    has(&t, r#"wsstorm_server_closes_sent_total{code="1001"} 4"#);
    assert!(!t.contains("warnings"), "{t}");
    let p = ProxySummary {
        accepted: 2,
        open: 1,
        bytes_upstream: 100,
        ..Default::default()
    };
    let t = encode(
        Box::new(proxy_figures(&p)),
        &Labels::default(),
        Format::OpenMetrics,
    )
    .unwrap();
    has(&t, "wsstorm_proxy_accepted_total 2");
    has(&t, "wsstorm_proxy_open 1");
    has(&t, "wsstorm_proxy_bytes_upstream_total 100");
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.contains("Content-Type: application/openmetrics-text"),
        "{out}"
    );
    out
}

#[test]
fn the_exporter_follows_a_run_and_keeps_its_last_snapshot() {
    let e = Exporter::start(
        "127.0.0.1:0".parse().unwrap(),
        Labels {
            run: Some("demo".into()),
            shard: None,
        },
    )
    .unwrap();
    let before = scrape(e.local_addr());
    assert!(before.ends_with("\r\n\r\n# EOF\n"), "nothing yet: {before}");
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    e.follow_run(rx, 4);
    has(
        &scrape(e.local_addr()),
        r#"wsstorm_connect_attempts_total{run="demo"} 0"#,
    );
    tx.send_replace(small_snapshot());
    has(
        &scrape(e.local_addr()),
        r#"wsstorm_connect_attempts_total{run="demo"} 4"#,
    );
    tx.send_replace(Arc::new(Snapshot {
        finished: true,
        ..(*small_snapshot()).clone()
    }));
    drop(tx);
    let after = scrape(e.local_addr());
    has(&after, r#"wsstorm_run_finished{run="demo"} 1"#);
    has(&after, r#"wsstorm_connect_attempts_total{run="demo"} 4"#);
}
