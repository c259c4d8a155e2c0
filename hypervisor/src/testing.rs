//! Helpers shared by the host tests: the deterministic random sequence their randomized
//! operations follow, so a failure replays exactly.

/// Xorshift64 (13, 7, 17) from `seed`, which must be nonzero.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
