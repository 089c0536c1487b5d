//! Certificates the embedded target generates at start, so TLS failures (untrusted issuer,
//! expired, wrong host name) can be reproduced on loopback with no files to manage. Every kind
//! but `self-signed` is signed by a CA made for the run; a client that trusts that CA
//! (`target.tls.trust_embedded_ca`) connects to `valid` and fails on the others for the
//! documented reason.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::profile::CertKind;

/// The host name the generated certificates are for (except `wrong-host`).
pub const HOST: &str = "localhost";

pub struct GeneratedTls {
    pub acceptor: TlsAcceptor,
    /// PEM of the run's CA.
    pub ca_pem: String,
}

pub fn generate(kind: CertKind) -> Result<GeneratedTls, String> {
    let err = |e: rcgen::Error| format!("generating the embedded target's certificate: {e}");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wsstorm embedded target CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err)?).map_err(err)?;

    let names = match kind {
        CertKind::WrongHost => vec!["wrong-host.invalid".to_string()],
        _ => vec![HOST.to_string(), "127.0.0.1".to_string()],
    };
    let mut leaf = CertificateParams::new(names).map_err(err)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "wsstorm embedded target");
    if kind == CertKind::Expired {
        leaf.not_before = date_time_ymd(2019, 1, 1);
        leaf.not_after = date_time_ymd(2020, 1, 1);
    }
    let key = KeyPair::generate().map_err(err)?;
    let cert = match kind {
        CertKind::SelfSigned => leaf.self_signed(&key),
        _ => leaf.signed_by(&key, &ca),
    }
    .map_err(err)?;

    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .map_err(|e| format!("TLS setup: {e}"))?;
    Ok(GeneratedTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        ca_pem: ca.pem(),
    })
}
