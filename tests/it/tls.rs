//! wss:// targets: a TLS echo server with a certificate from a throwaway CA, and clients that
//! trust it through `ca_file`, skip verification, or fail verification (connect_errors.tls).

use crate::common;

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use wsstorm::metrics::Snapshot;
use wsstorm::plan::Plan;
use wsstorm::results::Results;

struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A CA and a leaf certificate for `localhost` signed by it.
fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wsstorm test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        chain: vec![leaf.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    }
}

/// A TLS WebSocket echo server on its own thread; returns its port.
fn start_tls_echo(pki: &Pki) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(pki.chain.clone(), pki.key.clone_key())
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let url = common::tcp_server(move |tcp, _| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    return;
                }
            }
        }
    });
    url.trim_end_matches("/ws")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the test server's port")
}

fn run(yaml: &str) -> Results {
    common::run_yaml(yaml, "tls.yaml")
}

fn profile(url: &str, tls: &str) -> String {
    format!(
        "
name: tls
duration: 1500ms
target:
  url: {url}
  tls: {tls}
groups:
  - name: g
    clients: 20
    arrival: {{ rate: 200/s }}
    behaviour:
      send: {{ every: 200ms, bytes: 64 }}
      reconnect: {{ backoff: {{ strategy: fixed, base: 100ms, cap: 100ms, max_attempts: 2 }} }}
"
    )
}

#[test]
fn wss_with_a_custom_ca_connects() {
    let pki = pki();
    let port = start_tls_echo(&pki);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let r = run(&profile(
        &format!("wss://localhost:{port}/ws"),
        &format!("{{ ca_file: {} }}", ca.display()),
    ));
    assert_eq!(r.totals.opened, 20, "{:?}", r.totals.connect_errors);
    assert_eq!(r.totals.connect_errors.total(), 0);
    assert_eq!(r.latency_us.tls.count, 20);
    assert!(r.latency_us.rtt.count > 0);
}

#[test]
fn untrusted_certificate_counts_as_tls_errors() {
    let pki = pki();
    let port = start_tls_echo(&pki);
    // No CA file: the built-in web roots do not know this CA.
    let r = run(&profile(&format!("wss://localhost:{port}/ws"), "{}"));
    let t = &r.totals;
    assert_eq!(t.opened, 0);
    assert_eq!(
        t.connect_errors.tls, 40,
        "2 attempts each: {:?}",
        t.connect_errors
    );
    assert_eq!(t.connect_attempts, 40);
    assert_eq!(t.gave_up, 20);
}

#[test]
fn wrong_host_name_is_a_tls_error_unless_overridden() {
    let pki = pki();
    let port = start_tls_echo(&pki);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    // The certificate names `localhost`, not 127.0.0.1.
    let url = format!("wss://127.0.0.1:{port}/ws");
    let r = run(&profile(&url, &format!("{{ ca_file: {} }}", ca.display())));
    assert_eq!(r.totals.connect_errors.tls, 40);
    let r = run(&profile(
        &url,
        &format!("{{ ca_file: {}, server_name: localhost }}", ca.display()),
    ));
    assert_eq!(r.totals.opened, 20);
}

#[test]
fn skipping_verification_connects_to_anything() {
    let pki = pki();
    let port = start_tls_echo(&pki);
    let r = run(&profile(
        &format!("wss://127.0.0.1:{port}/ws"),
        "{ insecure_skip_verify: true }",
    ));
    assert_eq!(r.totals.opened, 20);
    assert_eq!(r.totals.connect_errors.tls, 0);
}

#[test]
fn a_missing_ca_file_is_a_setup_error_not_a_panic() {
    let yaml = profile("wss://localhost:1/ws", "{ ca_file: /nonexistent/ca.pem }");
    let plan = Plan::from_yaml(&yaml, "tls.yaml").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, _rx) = watch::channel(Arc::new(Snapshot::default()));
    let err = rt
        .block_on(wsstorm::swarm::run(&plan, wsstorm::swarm::Stop::new(), tx))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("/nonexistent/ca.pem: cannot read CA file"),
        "{err}"
    );
}

#[test]
fn wss_to_a_plain_server_is_named_not_tls() {
    // A plain HTTP server: it answers the ClientHello with an HTTP error, as a server without
    // TLS on that port does.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let r = run(&profile(
        &format!("wss://127.0.0.1:{port}/ws"),
        "{ insecure_skip_verify: true }",
    ));
    let e = &r.totals.connect_errors;
    assert_eq!(r.totals.opened, 0);
    assert!(e.tls > 0, "{e:#?}");
    assert_eq!(
        e.tls_causes,
        [("not_tls".to_string(), e.tls)].into(),
        "every TLS failure named as not TLS: {e:#?}"
    );
    assert!(e.examples.contains_key("tls_not_tls"), "{e:#?}");
}
