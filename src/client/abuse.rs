//! Malformed frames a well-behaved library will not send, written straight onto the socket:
//! each one should make a correct server close with a specific code (RFC 6455 §7.4.1).

use rand::{Rng, RngExt};

use crate::profile::AbuseKind;

/// How much of an `oversized` frame's payload is actually sent: the declared length in the
/// header is what a server must reject, before reading the payload.
const OVERSIZED_SENT: usize = 1024;

/// The raw bytes of one abusive frame. `declared` is the payload length an `oversized` frame
/// claims.
pub fn frame(kind: AbuseKind, declared: u64, rng: &mut impl Rng) -> Vec<u8> {
    let mask: [u8; 4] = rng.random();
    let masked = |first: u8, payload: &[u8], declared: u64| {
        let mut f = vec![first];
        match declared {
            0..=125 => f.push(0x80 | declared as u8),
            126..=0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(declared as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&declared.to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    };
    match kind {
        // FIN + text; "Ã(" and two continuation bytes: not UTF-8.
        AbuseKind::InvalidUtf8 => masked(0x81, &[0xC3, 0x28, 0xA0, 0xA1], 4),
        AbuseKind::Oversized => masked(0x82, &[b'x'; OVERSIZED_SENT], declared),
        // Opcode 0x3 is reserved for future non-control frames.
        AbuseKind::ReservedOpcode => masked(0x83, b"x", 1),
        // A client frame without the mask bit.
        AbuseKind::Unmasked => {
            let mut f = vec![0x81, 5];
            f.extend_from_slice(b"hello");
            f
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro128PlusPlus;

    #[test]
    fn frames_have_the_intended_defects() {
        let mut rng = Xoshiro128PlusPlus::seed_from_u64(1);
        let f = frame(AbuseKind::InvalidUtf8, 0, &mut rng);
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1], 0x84, "masked, 4 bytes");
        let payload: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ f[2 + i % 4])
            .collect();
        assert!(std::str::from_utf8(&payload).is_err());

        let f = frame(AbuseKind::Oversized, 1 << 20, &mut rng);
        assert_eq!(f[1], 0x80 | 127);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 1 << 20);
        assert_eq!(f.len(), 2 + 8 + 4 + OVERSIZED_SENT);

        assert_eq!(frame(AbuseKind::ReservedOpcode, 0, &mut rng)[0] & 0x0F, 0x3);
        let f = frame(AbuseKind::Unmasked, 0, &mut rng);
        assert_eq!(f[1] & 0x80, 0, "no mask bit");
    }
}
