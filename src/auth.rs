//! HMAC-SHA256 tokens with an expiry, shared by the embedded target (which checks them) and the
//! clients (which mint them, standing in for an auth service). Format:
//! `<subject>.<expiry, unix ms>.<hex signature>`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

/// Mints and checks tokens with one secret. Serializes as the secret itself: a plan travels to
/// the run's own worker processes over a pipe, and they must sign the same way.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", from = "String")]
pub struct Signer {
    secret: String,
    key: hmac::Key,
}

impl From<String> for Signer {
    fn from(secret: String) -> Signer {
        Signer::new(&secret)
    }
}

impl From<Signer> for String {
    fn from(s: Signer) -> String {
        s.secret
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    Missing,
    Malformed,
    Forged,
    Expired,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Signer {
    pub fn new(secret: &str) -> Signer {
        Signer {
            secret: secret.to_string(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        }
    }

    /// A token for `subject` valid for `lifetime` from now; returns it and its expiry (unix ms).
    pub fn mint(&self, subject: u32, lifetime: Duration) -> (String, u64) {
        let expires = now_ms() + lifetime.as_millis() as u64;
        let body = format!("{subject}.{expires}");
        let tag = hmac::sign(&self.key, body.as_bytes());
        let mut token = body;
        token.push('.');
        for b in tag.as_ref() {
            token.push_str(&format!("{b:02x}"));
        }
        (token, expires)
    }

    /// Check a token; on success returns its expiry (unix ms).
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<u64, TokenError> {
        let (body, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (_, expires) = body.split_once('.').ok_or(TokenError::Malformed)?;
        let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        // Hex digits only: anything else (including multi-byte UTF-8 from a query string)
        // is malformed, and never sliced.
        if sig.len() % 2 != 0 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Malformed);
        }
        let bytes: Vec<u8> = (0..sig.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&sig[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, body.as_bytes(), &bytes).map_err(|_| TokenError::Forged)?;
        if expires <= now_ms {
            return Err(TokenError::Expired);
        }
        Ok(expires)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_and_verify() {
        let s = Signer::new("k");
        let (t, exp) = s.mint(7, Duration::from_secs(10));
        assert!(t.starts_with("7."));
        assert_eq!(s.verify(&t, now_ms()), Ok(exp));
        assert_eq!(s.verify(&t, exp), Err(TokenError::Expired));
        assert_eq!(
            Signer::new("other").verify(&t, now_ms()),
            Err(TokenError::Forged)
        );
        let tampered = t.replacen("7.", "8.", 1);
        assert_eq!(s.verify(&tampered, now_ms()), Err(TokenError::Forged));
        assert_eq!(s.verify("garbage", now_ms()), Err(TokenError::Malformed));
        assert_eq!(s.verify("x.1.aéb", now_ms()), Err(TokenError::Malformed));
        assert_eq!(s.verify("x.1.é", now_ms()), Err(TokenError::Malformed));
    }
}
