//! `KeyHasher`: the seeded hash of the engine's index tables (markets,
//! accounts, taken ids).
//!
//! Symbols of up to 22 bytes (nearly every market name, account and order
//! id) are hashed from the zero-padded inline buffer `Sym` already holds,
//! as three words and a length, in three wide multiplies: no loop, no
//! branch on the length. A byte slice looked up from outside (the HTTP
//! API's `find_market`) is padded the same way first, so a `Sym` and its
//! bytes always hash alike. Longer symbols go through a word loop.
//!
//! The output is a table position, nothing else: it never reaches events,
//! the chain or a snapshot, so any seed gives the same engine output (a
//! test runs one flow under several seeds).

use crate::sym::INLINE;
use crate::Sym;

/// The seeded hash. See the module doc.
#[derive(Debug, Clone)]
pub(crate) struct KeyHasher {
    k: [u64; 6],
}

/// 64x64 -> 128-bit multiply, folded back to 64 bits.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Little-endian word at `at` of a buffer at least `at + 8` long.
#[inline(always)]
fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl KeyHasher {
    /// Keys drawn from `seed` by splitmix64 (any seed is valid).
    pub(crate) fn new(seed: u64) -> Self {
        let mut s = seed;
        let mut k = [0u64; 6];
        for x in k.iter_mut() {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            // An odd key never multiplies a word to zero by itself.
            *x = (z ^ (z >> 31)) | 1;
        }
        KeyHasher { k }
    }

    /// Hash of an inline symbol: its zero-padded buffer and length, plus
    /// `extra` (the market index of an order id; 0 for names).
    #[inline(always)]
    fn inline(&self, buf: &[u8; INLINE], len: u8, extra: u32) -> u64 {
        let w0 = word(buf, 0);
        let w1 = word(buf, 8);
        // The last 6 bytes, then the length and `extra` above them.
        let w2 = word(buf, INLINE - 8) >> 16;
        let tail = u64::from(len) | (u64::from(extra) << 8);
        let a = fold_mul(w0 ^ self.k[0], w1 ^ self.k[1]);
        let b = fold_mul(w2 ^ self.k[2], tail ^ self.k[3]);
        fold_mul(a ^ self.k[4], b ^ self.k[5])
    }

    /// Hash of bytes longer than an inline symbol.
    fn long(&self, b: &[u8], extra: u32) -> u64 {
        let mut acc = self.k[0] ^ (b.len() as u64) ^ (u64::from(extra) << 32);
        let mut chunks = b.chunks_exact(16);
        for c in &mut chunks {
            acc = fold_mul(word(c, 0) ^ self.k[1] ^ acc, word(c, 8) ^ self.k[2]);
        }
        let rest = chunks.remainder();
        let mut last = [0u8; 16];
        last[..rest.len()].copy_from_slice(rest);
        acc = fold_mul(word(&last, 0) ^ self.k[3] ^ acc, word(&last, 8) ^ self.k[4]);
        fold_mul(acc ^ self.k[5], self.k[1])
    }

    /// Hash of a symbol, with `extra` folded in.
    #[inline(always)]
    pub(crate) fn sym(&self, s: &Sym, extra: u32) -> u64 {
        match s.inline_parts() {
            Some((buf, len)) => self.inline(buf, len, extra),
            None => self.long(s.as_bytes(), extra),
        }
    }

    /// Hash of bytes, equal to `sym` of the symbol holding them.
    pub(crate) fn bytes(&self, b: &[u8], extra: u32) -> u64 {
        if b.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..b.len()].copy_from_slice(b);
            self.inline(&buf, b.len() as u8, extra)
        } else {
            self.long(b, extra)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sym_and_its_bytes_hash_alike_and_extra_matters() {
        let h = KeyHasher::new(7);
        for s in crate::sym::SAMPLES {
            let y = Sym::new(s);
            assert_eq!(h.sym(&y, 3), h.bytes(s.as_bytes(), 3), "{s:?}");
            assert_ne!(h.sym(&y, 3), h.sym(&y, 4), "{s:?}");
        }
        assert_ne!(h.bytes(b"ab", 0), h.bytes(b"ab\0", 0));
        assert_ne!(
            KeyHasher::new(1).bytes(b"x", 0),
            KeyHasher::new(2).bytes(b"x", 0)
        );
    }

    #[test]
    fn top_bits_spread_over_sequential_ids() {
        // The table takes its position and tag from the top 32 bits: ids
        // that differ in one character must land in different lines.
        let h = KeyHasher::new(0x7a6e_6465_6d00_0001);
        let mut lines = std::collections::BTreeSet::new();
        for i in 0..4096u32 {
            let s = Sym::new(&format!("o{i}"));
            lines.insert(h.sym(&s, 0) >> (64 - 12));
        }
        // 4096 keys into 4096 buckets: a good hash fills about 63 %.
        assert!(lines.len() > 2400, "{} buckets used", lines.len());
    }
}
