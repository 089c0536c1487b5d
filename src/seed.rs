//! Seeds and shares: every random choice of a run follows from its seed, so the same profile
//! and seed replay the same arrivals, jitter and fault victims. A leaf: the plan, the clients,
//! the embedded server and the proxy all draw from here.

/// splitmix64 of the pair; good enough to decorrelate neighbouring ids.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of one client's RNG: independent streams per client, reproducible per (seed, id).
pub fn client_seed(seed: u64, client: u32) -> u64 {
    mix(seed, u64::from(client))
}

/// A uniform draw in 0..=1 that follows from the pair: the same pair, the same draw.
pub fn unit(a: u64, b: u64) -> f64 {
    mix(a, b) as f64 / u64::MAX as f64
}

/// Whether item `id` falls in the `share` (0..=1) that choice `choice` picks: each choice (a
/// fault, an order) picks its own subset, and the same choice always picks the same one.
pub fn in_share(id: u64, choice: u64, share: f64) -> bool {
    share >= 1.0 || unit(choice, id) < share
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_roughly_right_stable_and_differ_by_choice() {
        let picked = (0..10_000).filter(|&i| in_share(i, 3, 0.3)).count();
        assert!((2800..3200).contains(&picked), "{picked}");
        assert!((0..100).all(|i| in_share(i, 3, 0.3) == in_share(i, 3, 0.3)));
        assert!((0..100).all(|i| in_share(i, 9, 1.0)));
        assert!((0..100).any(|i| in_share(i, 3, 0.3) != in_share(i, 4, 0.3)));
    }
}
