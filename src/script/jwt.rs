//! JSON Web Tokens (RFC 7519) that simulated clients mint, one per connection, to log in the way
//! a real application's clients do.
//!
//! A key is parsed once — a shared secret for HS256, a PEM private key for RS256 and ES256 —
//! into a `ring` key, so [`JwtKey::sign`] only encodes and signs: cheap enough to call for every
//! connection of a storm. The claims arrive as JSON text the caller already templated; this module
//! never looks inside them. A key remembers the text it was built from, which is what it
//! serializes as, so a plan carries it to worker processes as JSON and they rebuild it there.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use ring::{error::KeyRejected, hmac};
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use serde::{Deserialize, Serialize};

/// The JWS algorithms a client can sign with (RFC 7518 §3.1 names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alg {
    /// HMAC with SHA-256 and a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
        }
    }

    /// The key this algorithm signs with, for error messages.
    fn wants(self) -> &'static str {
        match self {
            Alg::HS256 => "a shared secret",
            Alg::RS256 => "an RSA private key",
            Alg::ES256 => "a P-256 EC private key",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A signing key; serializes as what it was built from (alg + secret, or alg + PEM text) so a
/// plan can travel to worker processes as JSON and be rebuilt there.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "KeySource", into = "KeySource")]
pub struct JwtKey {
    source: KeySource,
    /// The token's first part, encoded once: it is the same for every token of this key.
    header: Box<str>,
    /// Behind an `Arc` because ring's key pairs cannot be cloned, and a key is shared by every
    /// client of a group.
    signer: Arc<Signer>,
}

/// What a key was built from: its serialized form.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySource {
    alg: Alg,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pem: Option<String>,
}

enum Signer {
    Hmac(hmac::Key),
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
}

impl JwtKey {
    pub fn hs256(secret: &str) -> JwtKey {
        let signer = Signer::Hmac(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()));
        JwtKey::new(
            KeySource {
                alg: Alg::HS256,
                secret: Some(secret.to_owned()),
                pem: None,
            },
            signer,
        )
    }

    /// RS256 or ES256 from a PEM private key: PKCS#8 (`PRIVATE KEY`) for both, PKCS#1
    /// (`RSA PRIVATE KEY`) for RS256 and SEC1 (`EC PRIVATE KEY`) for ES256. The first private
    /// key in the text is used, so a file holding a certificate and its key works too.
    pub fn from_pem(alg: Alg, pem: &str) -> Result<JwtKey, String> {
        if alg == Alg::HS256 {
            return Err(
                "HS256 signs with a shared secret, not a PEM key; use RS256 for an RSA \
                        key or ES256 for a P-256 EC key"
                    .into(),
            );
        }
        let (kind, der) = private_key_block(pem)?;
        let signer = match alg {
            Alg::RS256 => Signer::Rsa(rsa_key_pair(kind, &der)?),
            _ => Signer::Ecdsa(ecdsa_key_pair(kind, &der)?),
        };
        Ok(JwtKey::new(
            KeySource {
                alg,
                secret: None,
                pem: Some(pem.to_owned()),
            },
            signer,
        ))
    }

    fn new(source: KeySource, signer: Signer) -> JwtKey {
        let header = format!(r#"{{"alg":"{}","typ":"JWT"}}"#, source.alg);
        JwtKey {
            header: URL_SAFE_NO_PAD.encode(header).into(),
            source,
            signer: Arc::new(signer),
        }
    }

    pub fn alg(&self) -> Alg {
        self.source.alg
    }

    /// `header.payload.signature`, base64url without padding; header is
    /// `{"alg":..,"typ":"JWT"}`; `claims_json` is already a JSON object text (the caller
    /// templated it) and is used byte for byte as the payload.
    pub fn sign(&self, claims_json: &str) -> String {
        // One allocation for the whole token: header, payload at 4/3 of the claims, and the
        // largest signature this module makes (4096-bit RSA, 512 bytes, 683 in base64).
        let mut token =
            String::with_capacity(self.header.len() + claims_json.len().div_ceil(3) * 4 + 700);
        token.push_str(&self.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims_json, &mut token);
        let signature = self.signer.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        token
    }
}

/// Shows the algorithm only: a secret or private key must not end up in a log.
impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

impl TryFrom<KeySource> for JwtKey {
    type Error = String;

    fn try_from(source: KeySource) -> Result<JwtKey, String> {
        match (source.alg, source.secret, source.pem) {
            (Alg::HS256, Some(secret), None) => Ok(JwtKey::hs256(&secret)),
            (Alg::RS256 | Alg::ES256, None, Some(pem)) => JwtKey::from_pem(source.alg, &pem),
            (alg, _, _) => Err(format!(
                "an {alg} key needs {} (`{}`) and nothing else",
                alg.wants(),
                if alg == Alg::HS256 { "secret" } else { "pem" }
            )),
        }
    }
}

impl From<JwtKey> for KeySource {
    fn from(key: JwtKey) -> KeySource {
        key.source
    }
}

impl Signer {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        // The key was checked when it was parsed and the signature buffer is sized by the key,
        // so signing can only fail if the operating system's random source does — nothing a
        // caller could act on, and not something user input can cause.
        const RNG_FAILED: &str = "the system random number generator failed";
        match self {
            Signer::Hmac(key) => hmac::sign(key, message).as_ref().to_vec(),
            Signer::Rsa(pair) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .expect(RNG_FAILED);
                signature
            }
            Signer::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), message)
                .expect(RNG_FAILED)
                .as_ref()
                .to_vec(),
        }
    }
}

/// The first private key block of `pem`, or an error saying what the text holds instead.
fn private_key_block(pem: &str) -> Result<(SectionKind, Vec<u8>), String> {
    // The PEM parser skips blocks it does not know, and chokes on the headers of legacy
    // encrypted keys, so name encryption before it gets a chance to say something vaguer.
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || pem.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err("the private key is encrypted; decrypt it first, e.g. \
                    `openssl pkey -in key.pem -out key-plain.pem`"
            .into());
    }
    let mut other = None;
    for block in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        let (kind, der) = block.map_err(|e| match e {
            pem::Error::MissingSectionEnd { .. } => {
                "the PEM text is cut short: a -----BEGIN----- line has no -----END----- line"
                    .to_owned()
            }
            e => format!("the PEM text is malformed: {e}"),
        })?;
        match kind {
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                return Ok((kind, der));
            }
            _ => other = other.or(Some(kind)),
        }
    }
    let found = match other {
        None => {
            return Err("no PEM private key found: expected a block starting with \
                        -----BEGIN PRIVATE KEY-----"
                .into());
        }
        Some(SectionKind::Certificate) => "a certificate",
        Some(SectionKind::PublicKey) => "a public key",
        Some(SectionKind::Csr) => "a certificate signing request",
        Some(SectionKind::Crl) => "a certificate revocation list",
        Some(_) => "another kind of PEM block",
    };
    Err(format!(
        "the PEM text holds {found} but no private key; signing tokens needs the private key \
         (-----BEGIN PRIVATE KEY-----)"
    ))
}

fn rsa_key_pair(kind: SectionKind, der: &[u8]) -> Result<RsaKeyPair, String> {
    match kind {
        SectionKind::PrivateKey => {
            check_pkcs8_type(Alg::RS256, der, KeyType::Rsa)?;
            RsaKeyPair::from_pkcs8(der)
        }
        SectionKind::RsaPrivateKey => RsaKeyPair::from_der(der),
        _ => return Err(wrong_key(Alg::RS256, sec1_key_type(der))),
    }
    .map_err(|e| rejected(Alg::RS256, &e))
}

fn ecdsa_key_pair(kind: SectionKind, der: &[u8]) -> Result<EcdsaKeyPair, String> {
    let pkcs8 = match kind {
        SectionKind::PrivateKey => {
            check_pkcs8_type(Alg::ES256, der, KeyType::P256)?;
            der.to_vec()
        }
        SectionKind::EcPrivateKey => sec1_to_pkcs8(der)?,
        _ => return Err(wrong_key(Alg::ES256, KeyType::Rsa)),
    };
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &pkcs8,
        &SystemRandom::new(),
    )
    .map_err(|e| rejected(Alg::ES256, &e))
}

/// What a private key is, as far as the algorithm choice cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyType {
    Rsa,
    P256,
    OtherEc,
    Ed25519,
    Unknown,
}

impl KeyType {
    fn describe(self) -> &'static str {
        match self {
            KeyType::Rsa => "an RSA key",
            KeyType::P256 => "a P-256 EC key",
            KeyType::OtherEc => "an EC key on a curve other than P-256",
            KeyType::Ed25519 => "an Ed25519 key",
            KeyType::Unknown => "a key of a type this tool does not know",
        }
    }

    fn alg(self) -> Option<Alg> {
        match self {
            KeyType::Rsa => Some(Alg::RS256),
            KeyType::P256 => Some(Alg::ES256),
            _ => None,
        }
    }
}

fn wrong_key(alg: Alg, found: KeyType) -> String {
    let hint = match found.alg() {
        Some(fits) => format!("; use {fits} for it"),
        None => String::new(),
    };
    format!(
        "{alg} needs {}, but the PEM holds {}{hint}",
        alg.wants(),
        found.describe()
    )
}

/// Ring's refusal in words; ring only offers its reasons as short fixed descriptions.
fn rejected(alg: Alg, e: &KeyRejected) -> String {
    let why = match e.to_string().as_str() {
        "InvalidEncoding" => "its DER encoding is invalid".to_owned(),
        "TooSmall" => "it is too small (RSA keys need at least 2048 bits)".to_owned(),
        "TooLarge" => "it is too large (RSA keys may have at most 8192 bits)".to_owned(),
        "InconsistentComponents" => "its public and private parts do not match".to_owned(),
        "WrongAlgorithm" => format!("it is not {}", alg.wants()),
        "VersionNotSupported" => "its PKCS#8 version is not supported".to_owned(),
        other => format!("it was rejected ({other})"),
    };
    format!("cannot use the PEM private key for {alg}: {why}")
}

// DER object identifiers (contents only) of the key types told apart here.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_EXPLICIT_0: u8 = 0xa0;
const TAG_EXPLICIT_1: u8 = 0xa1;

/// Refuses a PKCS#8 key of another type with a message naming both types. Ring would only say
/// "WrongAlgorithm", which does not tell a user holding an RSA key to pick RS256. A key whose
/// type cannot be read is left for ring to reject with its own reason.
fn check_pkcs8_type(alg: Alg, der: &[u8], wanted: KeyType) -> Result<(), String> {
    match pkcs8_key_type(der) {
        Some(found) if found != wanted => Err(wrong_key(alg, found)),
        _ => Ok(()),
    }
}

/// The key type a PKCS#8 `PrivateKeyInfo` declares in its algorithm identifier.
fn pkcs8_key_type(der: &[u8]) -> Option<KeyType> {
    let (TAG_SEQUENCE, info, _) = der_split(der)? else {
        return None;
    };
    let (TAG_INTEGER, _version, rest) = der_split(info)? else {
        return None;
    };
    let (TAG_SEQUENCE, algorithm, _) = der_split(rest)? else {
        return None;
    };
    let (TAG_OID, oid, params) = der_split(algorithm)? else {
        return None;
    };
    Some(match oid {
        OID_RSA => KeyType::Rsa,
        OID_ED25519 => KeyType::Ed25519,
        OID_EC => match der_split(params) {
            Some((TAG_OID, OID_P256, _)) => KeyType::P256,
            _ => KeyType::OtherEc,
        },
        _ => KeyType::Unknown,
    })
}

/// The curve a SEC1 `ECPrivateKey` names: P-256 or some other.
fn sec1_key_type(der: &[u8]) -> KeyType {
    match sec1_fields(der) {
        Some((Some(curve), _)) if curve != OID_P256 => KeyType::OtherEc,
        _ => KeyType::P256,
    }
}

/// The optional curve OID and whether the public key is present, from a SEC1 `ECPrivateKey`
/// (RFC 5915: version, private key, `[0]` parameters, `[1]` public key).
fn sec1_fields(der: &[u8]) -> Option<(Option<&[u8]>, bool)> {
    let (TAG_SEQUENCE, mut fields, _) = der_split(der)? else {
        return None;
    };
    let (mut curve, mut has_public_key) = (None, false);
    while let Some((tag, contents, rest)) = der_split(fields) {
        match tag {
            TAG_EXPLICIT_0 => curve = der_split(contents).map(|(_, oid, _)| oid),
            TAG_EXPLICIT_1 => has_public_key = true,
            _ => {}
        }
        fields = rest;
    }
    Some((curve, has_public_key))
}

/// Wraps a SEC1 P-256 key in the PKCS#8 envelope ring reads (RFC 5208 `PrivateKeyInfo`).
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, String> {
    const CONVERT: &str =
        "convert it with `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key-pkcs8.pem`";
    let Some((curve, has_public_key)) = sec1_fields(sec1) else {
        return Err(format!(
            "the EC PRIVATE KEY block is not a valid SEC1 key; {CONVERT}"
        ));
    };
    if curve.is_some_and(|oid| oid != OID_P256) {
        return Err(wrong_key(Alg::ES256, KeyType::OtherEc));
    }
    // Ring derives nothing: it checks the stored public key against the private one, so a
    // SEC1 key saved without it cannot be used as is, while openssl recomputes it.
    if !has_public_key {
        return Err(format!(
            "the EC PRIVATE KEY block has no public key part, which is needed; {CONVERT}"
        ));
    }
    let algorithm = [der_encode(TAG_OID, OID_EC), der_encode(TAG_OID, OID_P256)].concat();
    let info = [
        der_encode(TAG_INTEGER, &[0]),
        der_encode(TAG_SEQUENCE, &algorithm),
        der_encode(TAG_OCTET_STRING, sec1),
    ]
    .concat();
    Ok(der_encode(TAG_SEQUENCE, &info))
}

/// Splits the DER element at the front of `input` into (tag, contents, rest), or `None` if it
/// is malformed. Only single-byte tags and definite lengths: all that keys use.
fn der_split(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len, rest) = rest.split_at(count);
        let len = len.iter().fold(0, |len, &b| len << 8 | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

fn der_encode(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = len.leading_zeros() as usize / 8;
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{
        ECDSA_P256_SHA256_FIXED, KeyPair, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
    };

    const RSA_PKCS8: &str = include_str!("../../tests/peers/keys/rsa-private.pem");
    const RSA_PKCS1: &str = include_str!("../../tests/peers/keys/rsa-private-pkcs1.pem");
    const RSA_PUBLIC: &str = include_str!("../../tests/peers/keys/rsa-public.pem");
    const EC_PKCS8: &str = include_str!("../../tests/peers/keys/ec-private.pem");
    const EC_SEC1: &str = include_str!("../../tests/peers/keys/ec-private-sec1.pem");
    const EC_PUBLIC: &str = include_str!("../../tests/peers/keys/ec-public.pem");

    // `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384`
    const P384_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDPG/vXR6u56ood7/O+
WqJ3Ww0JrwLEYiZxqiPXEln7JPnF6rYkQYQegLYJN3G/m5ChZANiAATXYcbBqBr0
MqJMknlGAZW9iyHWwAwJokZvRX443Uj1BQrKmCgnRGxKogAV7eSZxWDeQF6zvARE
57O9NZef/LBvMLe6hOZ8XAYQwtwFYC0R+I+p+y/24iQW4JYQEUBwgP0=
-----END PRIVATE KEY-----
";
    // `openssl ecparam -name secp384r1 -genkey -noout`
    const P384_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MIGkAgEBBDCmmVD2U4/yMsG+C00hxUXN1z8CSHbrQaBkKJZKbuhDZmRJ6Uz02mXp
JP2w/0LsPd2gBwYFK4EEACKhZANiAARFQHjwO9ZEn/kOBdARCcDLd12VAyRJ+jC7
j4X0dVUEhOCczCeLkHABjxO4VPJNiaBYBjgTNyPlkLchjc/sjtYxY+o41ttxnA9u
3/YsKOmdf7gkaTxa8fG3ZTNne0JSFvM=
-----END EC PRIVATE KEY-----
";
    // `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024`
    const RSA_1024_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBAO9BMw7x3lmQeSjt
DBqkOAo03VfpG6fYcYMNjQI500oPdel2brxQwIFYIBv7Ygcu8FaoecYhRfJYdfRQ
D3ItY6xuU1+0J59DjB4M7KBqsUL1zyypKEINDuiyvzOXA2/wMxP2KOAVrWYxNINA
xi4JOJPrOrJwwvIvm3HoS/aX/IRtAgMBAAECgYEAo+W3M3KvTg2xYj7Y/tsmZJ+I
TbOrtVSJlixPP4obWu2yaacu/qQW68RR4rlXkvItxD+PhBHBF95Pl3jMy/uZ/e9W
TJ48hXp20uQ5DuYftoW4wlYseYCYqOMWNRCQ2ltFOw54IuvMihjOOyk2PC7iRhTH
DkKY6mDB2GhyZHItF6UCQQD3kp1Hn03VtmrGbwxhNZYhECemHAMksqJjcszH1fIE
fhyrWoe3a3DS7f/Xg9R3JpP4zllKa4EOEB0DiT28egh/AkEA92YZvRS1LXd4MdTv
aHAxYzDqNM5mzjWSM6L1xTGRw39US/Tvdx3Y2YDxo0PtWRR5iNipRH/dauVhNWtX
oEidEwJAWMnsPlOTxqG1iZUqC3L8dL8meRxyxCaMtr3lU4YXViUkgw/kvJN70yoo
J1LQUCs1xnW68EW98x00SqBd08qwYQJAXqFjPvvowVdtVkJIwP4JJhPTwhchI8dC
ARZYQ/FN/CV8LQGnhzyXcbrssrKM2wIF6t5VAKqYGwdaQ4Cnp9uemQJAFVPjN5U6
5jFxHn+P0Y4QI6JzGsRHPd8CDM9I9hTZziLYl9CywpPIHqaflZAL7M6nszP8dm07
bw+kn++d8CaKZg==
-----END PRIVATE KEY-----
";
    // `openssl genpkey -algorithm ED25519`
    const ED25519_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIEegctt3rYiyc5Bix9+KVagZP31fCUDi0uY1bQouIn/v
-----END PRIVATE KEY-----
";

    const CLAIMS: &str = r#"{"sub":"1234567890","name":"John Doe","iat":1516239022}"#;

    fn parts(token: &str) -> (String, String, Vec<u8>) {
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).expect("base64url part");
        let [header, payload, signature] = token.split('.').collect::<Vec<_>>()[..] else {
            panic!("not three parts: {token}");
        };
        let text = |part| String::from_utf8(decode(part)).expect("UTF-8 part");
        (text(header), text(payload), decode(signature))
    }

    fn signing_input(token: &str) -> &str {
        &token[..token.rfind('.').expect("a dot")]
    }

    fn spki_der(pem: &str) -> Vec<u8> {
        rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
            .expect("public key PEM")
            .to_vec()
    }

    fn pem_error(alg: Alg, pem: &str) -> String {
        JwtKey::from_pem(alg, pem).expect_err("the key should be refused")
    }

    #[test]
    fn hs256_matches_the_jwt_io_example() {
        // Computed with Python's hmac and base64 modules; it is also jwt.io's default token.
        let expected = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                        eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
                        SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let key = JwtKey::hs256("your-256-bit-secret");
        assert_eq!(key.alg(), Alg::HS256);
        assert_eq!(key.sign(CLAIMS), expected);
    }

    #[test]
    fn claims_are_the_payload_byte_for_byte() {
        // Whitespace, key order and non-ASCII text survive: the caller's text is what is signed.
        let claims = "{ \"b\": 1,\n \"a\": \"é\" }";
        let (header, payload, _) = parts(&JwtKey::hs256("s").sign(claims));
        assert_eq!(header, r#"{"alg":"HS256","typ":"JWT"}"#);
        assert_eq!(payload, claims);
    }

    #[test]
    fn rs256_tokens_verify_with_the_key_pairs_public_key() {
        let key = JwtKey::from_pem(Alg::RS256, RSA_PKCS8).unwrap();
        assert_eq!(key.alg(), Alg::RS256);
        let token = key.sign(CLAIMS);
        let (header, payload, signature) = parts(&token);
        assert_eq!(header, r#"{"alg":"RS256","typ":"JWT"}"#);
        assert_eq!(payload, CLAIMS);
        assert_eq!(signature.len(), 256);

        let pair = RsaKeyPair::from_pkcs8(&private_key_block(RSA_PKCS8).unwrap().1).unwrap();
        let public = pair.public_key().as_ref();
        // The SPKI file wraps the same RSAPublicKey, so the peers' file matches this key.
        assert!(spki_der(RSA_PUBLIC).ends_with(public));
        let verifier = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public);
        verifier
            .verify(signing_input(&token).as_bytes(), &signature)
            .expect("signature verifies");
        let mut forged = signing_input(&token).to_owned();
        forged.push('x');
        assert!(verifier.verify(forged.as_bytes(), &signature).is_err());
    }

    #[test]
    fn rs256_from_pkcs1_signs_like_the_same_key_in_pkcs8() {
        // PKCS#1 v1.5 signatures are deterministic, so the same key must give the same token.
        let pkcs1 = JwtKey::from_pem(Alg::RS256, RSA_PKCS1).unwrap();
        let pkcs8 = JwtKey::from_pem(Alg::RS256, RSA_PKCS8).unwrap();
        assert_eq!(pkcs1.sign(CLAIMS), pkcs8.sign(CLAIMS));
    }

    #[test]
    fn es256_tokens_verify_from_pkcs8_and_sec1() {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &private_key_block(EC_PKCS8).unwrap().1,
            &SystemRandom::new(),
        )
        .unwrap();
        let public = pair.public_key().as_ref();
        assert!(spki_der(EC_PUBLIC).ends_with(public));
        let verifier = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public);

        for pem in [EC_PKCS8, EC_SEC1] {
            let key = JwtKey::from_pem(Alg::ES256, pem).unwrap();
            assert_eq!(key.alg(), Alg::ES256);
            let token = key.sign(CLAIMS);
            let (header, payload, signature) = parts(&token);
            assert_eq!(header, r#"{"alg":"ES256","typ":"JWT"}"#);
            assert_eq!(payload, CLAIMS);
            // JWS wants r || s, 32 bytes each, not a DER signature.
            assert_eq!(signature.len(), 64);
            verifier
                .verify(signing_input(&token).as_bytes(), &signature)
                .expect("signature verifies");
        }
    }

    #[test]
    fn es256_accepts_a_freshly_generated_pkcs8_key() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let token = JwtKey::from_pem(Alg::ES256, &pem).unwrap().sign("{}");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
            .verify(signing_input(&token).as_bytes(), &parts(&token).2)
            .expect("signature verifies");
    }

    #[test]
    fn the_private_key_is_found_after_a_certificate() {
        let certified = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
        let combined = format!("{}{EC_PKCS8}", certified.cert.pem());
        assert!(JwtKey::from_pem(Alg::ES256, &combined).is_ok());
    }

    #[test]
    fn text_that_is_not_a_private_key_is_refused_with_what_it_is() {
        let err = pem_error(Alg::RS256, "hello, I am not a key");
        assert!(err.contains("no PEM private key found"), "{err}");
        assert!(pem_error(Alg::RS256, "").contains("no PEM private key found"));

        let certificate = rcgen::generate_simple_self_signed(["localhost".to_owned()])
            .unwrap()
            .cert
            .pem();
        let err = pem_error(Alg::ES256, &certificate);
        assert!(
            err.contains("holds a certificate but no private key"),
            "{err}"
        );

        let err = pem_error(Alg::RS256, RSA_PUBLIC);
        assert!(
            err.contains("holds a public key but no private key"),
            "{err}"
        );

        let cut = &RSA_PKCS8[..RSA_PKCS8.len() / 2];
        let err = pem_error(Alg::RS256, cut);
        assert!(err.contains("cut short"), "{err}");

        let garbled = RSA_PKCS8.replacen("MII", "M!I", 1);
        let err = pem_error(Alg::RS256, &garbled);
        assert!(err.contains("malformed"), "{err}");

        // Valid base64 that is not a key: ring's reason, in words.
        let bogus = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = pem_error(Alg::ES256, bogus);
        assert!(err.contains("DER encoding is invalid"), "{err}");
    }

    #[test]
    fn encrypted_keys_are_refused_with_how_to_decrypt() {
        let pem =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = pem_error(Alg::RS256, pem);
        assert!(
            err.contains("encrypted") && err.contains("openssl pkey -in key.pem"),
            "{err}"
        );
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                      DEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(pem_error(Alg::RS256, legacy).contains("encrypted"));
    }

    #[test]
    fn keys_of_the_wrong_type_name_both_types() {
        let err = pem_error(Alg::ES256, RSA_PKCS8);
        assert_eq!(
            err,
            "ES256 needs a P-256 EC private key, but the PEM holds an RSA key; use RS256 for it"
        );
        assert_eq!(pem_error(Alg::ES256, RSA_PKCS1), err);

        let err = pem_error(Alg::RS256, EC_PKCS8);
        assert_eq!(
            err,
            "RS256 needs an RSA private key, but the PEM holds a P-256 EC key; use ES256 for it"
        );
        assert_eq!(pem_error(Alg::RS256, EC_SEC1), err);

        for (alg, pem) in [
            (Alg::ES256, P384_PKCS8),
            (Alg::ES256, P384_SEC1),
            (Alg::RS256, P384_SEC1),
        ] {
            let err = pem_error(alg, pem);
            assert!(
                err.contains("but the PEM holds an EC key on a curve other than P-256"),
                "{err}"
            );
        }
        let err = pem_error(Alg::RS256, ED25519_PKCS8);
        assert!(err.contains("an Ed25519 key"), "{err}");

        for pem in [RSA_PKCS8, "not even PEM"] {
            let err = pem_error(Alg::HS256, pem);
            assert!(err.starts_with("HS256 signs with a shared secret"), "{err}");
        }
    }

    #[test]
    fn a_small_rsa_key_is_refused_with_the_reason() {
        let err = pem_error(Alg::RS256, RSA_1024_PKCS8);
        assert!(err.contains("at least 2048 bits"), "{err}");
    }

    #[test]
    fn a_sec1_key_without_its_public_part_is_refused_with_the_openssl_fix() {
        // The SEC1 key with its `[1]` public key field dropped.
        let der = private_key_block(EC_SEC1).unwrap().1;
        let (_, fields, _) = der_split(&der).unwrap();
        let mut kept = Vec::new();
        let mut rest = fields;
        while let Some((tag, contents, next)) = der_split(rest) {
            if tag != TAG_EXPLICIT_1 {
                kept.extend(der_encode(tag, contents));
            }
            rest = next;
        }
        let stripped = der_encode(TAG_SEQUENCE, &kept);
        let err = sec1_to_pkcs8(&stripped).unwrap_err();
        assert!(err.contains("no public key part"), "{err}");
        assert!(err.contains("openssl pkcs8 -topk8 -nocrypt"), "{err}");
    }

    #[test]
    fn der_lengths_round_trip_in_short_and_long_form() {
        for len in [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x1_0000] {
            let contents = vec![7; len];
            let encoded = der_encode(TAG_OCTET_STRING, &contents);
            assert_eq!(
                der_split(&encoded),
                Some((TAG_OCTET_STRING, &contents[..], &[][..]))
            );
        }
        assert_eq!(der_split(&[TAG_SEQUENCE, 0x05, 1, 2]), None);
        assert_eq!(der_split(&[TAG_SEQUENCE, 0x80]), None);
    }

    #[test]
    fn keys_travel_as_their_source_and_sign_the_same_after() {
        for key in [
            JwtKey::hs256("your-256-bit-secret"),
            JwtKey::from_pem(Alg::RS256, RSA_PKCS1).unwrap(),
        ] {
            let json = serde_json::to_string(&key).unwrap();
            let back: JwtKey = serde_json::from_str(&json).unwrap();
            assert_eq!(back.alg(), key.alg());
            // Both are deterministic, so equal tokens mean an equal key.
            assert_eq!(back.sign(CLAIMS), key.sign(CLAIMS));
        }
        let json = serde_json::to_value(JwtKey::hs256("s")).unwrap();
        assert_eq!(json, serde_json::json!({"alg": "HS256", "secret": "s"}));
        let json = serde_json::to_value(JwtKey::from_pem(Alg::ES256, EC_SEC1).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"alg": "ES256", "pem": EC_SEC1}));
        let back: JwtKey = serde_json::from_value(json).unwrap();
        assert_eq!(back.alg(), Alg::ES256);
    }

    #[test]
    fn a_bad_serialized_key_is_an_error_not_a_panic() {
        let err = serde_json::from_str::<JwtKey>(r#"{"alg":"RS256","pem":"nope"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PEM private key found"), "{err}");
        let err = serde_json::from_str::<JwtKey>(r#"{"alg":"HS256"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("an HS256 key needs a shared secret (`secret`)"),
            "{err}"
        );
        let err = serde_json::from_str::<JwtKey>(r#"{"alg":"ES256","secret":"s"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs a P-256 EC private key (`pem`)"),
            "{err}"
        );
        assert!(serde_json::from_str::<JwtKey>(r#"{"alg":"HS512","secret":"s"}"#).is_err());
    }

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!("{:?}", JwtKey::hs256("hunter2"));
        assert_eq!(shown, "JwtKey { alg: HS256, .. }");
    }
}
