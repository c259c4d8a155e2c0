//! Seed material for guests (the agent's entropy CPUID leaf): a ChaCha20 keystream keyed once
//! at boot from the TSC and, where the CPU has it, RDRAND. Each request takes a fresh block
//! whose nonce names the asking domain and its generation, so two clones of one template
//! never receive the same bytes, whatever the key.
//!
//! ChaCha20 as in RFC 8439 section 2.3 (the block function).

/// Words in a ChaCha20 key.
const KEY_WORDS: usize = 8;
/// "expand 32-byte k".
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];
/// Double rounds of ChaCha20.
const DOUBLE_ROUNDS: usize = 10;

fn quarter(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// The ChaCha20 block for `key`, block counter `counter` and `nonce`.
pub fn chacha20_block(key: &[u32; KEY_WORDS], counter: u32, nonce: [u32; 3]) -> [u32; 16] {
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&SIGMA);
    init[4..12].copy_from_slice(key);
    init[12] = counter;
    init[13..].copy_from_slice(&nonce);
    let mut s = init;
    for _ in 0..DOUBLE_ROUNDS {
        quarter(&mut s, 0, 4, 8, 12);
        quarter(&mut s, 1, 5, 9, 13);
        quarter(&mut s, 2, 6, 10, 14);
        quarter(&mut s, 3, 7, 11, 15);
        quarter(&mut s, 0, 5, 10, 15);
        quarter(&mut s, 1, 6, 11, 12);
        quarter(&mut s, 2, 7, 8, 13);
        quarter(&mut s, 3, 4, 9, 14);
    }
    for (o, i) in s.iter_mut().zip(init) {
        *o = o.wrapping_add(i);
    }
    s
}

/// The generator.
#[derive(Clone, Debug)]
pub struct Entropy {
    key: [u32; KEY_WORDS],
    counter: u64,
}

impl Entropy {
    /// Keyed from `seed` (whatever unpredictable words the machine offers).
    pub fn new(seed: [u64; 4]) -> Self {
        let mut key = [0u32; KEY_WORDS];
        for (i, w) in seed.iter().enumerate() {
            key[2 * i] = *w as u32;
            key[2 * i + 1] = (*w >> 32) as u32;
        }
        // One block of the raw seed becomes the key, so related seeds give unrelated keys.
        let block = chacha20_block(&key, 0, [0x5eed, 0, 0]);
        key.copy_from_slice(&block[..KEY_WORDS]);
        Self { key, counter: 0 }
    }

    /// Mixes more seed material into the key (a fresh TSC reading at each request).
    pub fn stir(&mut self, word: u64) {
        self.key[0] ^= word as u32;
        self.key[1] ^= (word >> 32) as u32;
    }

    /// Sixteen fresh bytes for domain `domid` in generation `generation`.
    pub fn draw(&mut self, domid: u32, generation: u64) -> [u32; 4] {
        self.counter += 1;
        let c = self.counter;
        let nonce = [domid, generation as u32, (generation >> 32) as u32 ^ (c >> 32) as u32];
        let b = chacha20_block(&self.key, c as u32, nonce);
        [b[0], b[1], b[2], b[3]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chacha20_block_matches_rfc_8439_test_vector() {
        // RFC 8439 2.3.2: key 00 01 .. 1f, counter 1, nonce 00 00 00 09 00 00 00 4a 00 00 00 00.
        let mut key = [0u32; 8];
        for (i, k) in key.iter_mut().enumerate() {
            let b = (4 * i) as u32;
            *k = b | (b + 1) << 8 | (b + 2) << 16 | (b + 3) << 24;
        }
        let out = chacha20_block(&key, 1, [0x0900_0000, 0x4a00_0000, 0]);
        assert_eq!(&out[..4], &[0xe4e7_f110, 0x1559_3bd1, 0x1fdd_0f50, 0xc471_20a3]);
    }

    #[test]
    fn two_clones_never_draw_the_same_bytes() {
        let mut e = Entropy::new([1, 2, 3, 4]);
        let a = e.draw(5, 10);
        let b = e.draw(6, 11);
        let a2 = e.draw(5, 10);
        assert_ne!(a, b);
        assert_ne!(a, a2, "every request is fresh");
    }
}
