//! The two keys of the WebSocket upgrade (RFC 6455 4.1, 4.2.2), made on the stack.
//!
//! tungstenite's `generate_key` and `derive_accept_key` return a `String` each, and the
//! client and the server each make one or two per connection: at a herd's rate of new
//! connections, allocations that buy nothing. These write the same base64 text into fixed
//! arrays instead.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The GUID the server appends to the client's key before hashing it (RFC 6455 1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A `Sec-WebSocket-Key`: 16 random bytes in base64, 24 characters.
#[derive(Clone, Copy)]
pub struct Key([u8; 24]);

impl Key {
    pub fn new() -> Self {
        let nonce: [u8; 16] = rand::random();
        let mut text = [0u8; 24];
        // 16 bytes are 24 characters of base64, padding included: the slice fits exactly.
        let n = STANDARD
            .encode_slice(nonce, &mut text)
            .expect("24 bytes hold 16 in base64");
        debug_assert_eq!(n, 24);
        Key(text)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("base64 is ASCII")
    }
}

impl Default for Key {
    fn default() -> Self {
        Self::new()
    }
}

/// A `Sec-WebSocket-Accept`: the base64 SHA-1 of the key and the GUID, 28 characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Accept([u8; 28]);

impl Accept {
    /// The answer to `key`, as the client expects it and the server sends it.
    pub fn of(key: &[u8]) -> Self {
        let mut sha1 = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        sha1.update(key);
        sha1.update(GUID);
        let digest = sha1.finish();
        let mut text = [0u8; 28];
        let n = STANDARD
            .encode_slice(digest.as_ref(), &mut text)
            .expect("28 bytes hold 20 in base64");
        debug_assert_eq!(n, 28);
        Accept(text)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("base64 is ASCII")
    }
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: base64 of exactly 16 bytes (RFC 6455
/// 4.2.1, as tungstenite's server checks it).
pub fn valid_key(key: &[u8]) -> bool {
    let mut out = [0u8; 18];
    key.len() == 24 && STANDARD.decode_slice(key, &mut out) == Ok(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_example_key_has_the_rfc_example_answer() {
        // RFC 6455 1.3.
        assert_eq!(
            Accept::of(b"dGhlIHNhbXBsZSBub25jZQ==").as_str(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn answers_match_tungstenites_and_new_keys_are_valid_and_differ() {
        use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
        let a = Key::new();
        let b = Key::new();
        assert_ne!(a.as_str(), b.as_str());
        for k in [a, b] {
            assert!(valid_key(k.as_str().as_bytes()));
            assert_eq!(
                Accept::of(k.as_str().as_bytes()).as_str(),
                derive_accept_key(k.as_str().as_bytes())
            );
        }
    }

    #[test]
    fn keys_of_the_wrong_length_or_alphabet_are_not_valid() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        // 24 characters, but 17 bytes' worth would need more; 15 bytes is 20 characters.
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25j"));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZ!=="));
        assert!(!valid_key(b""));
        // 18 bytes of base64 without padding: 24 characters, but not 16 bytes.
        assert!(!valid_key(b"AAAAAAAAAAAAAAAAAAAAAAAA"));
    }
}
