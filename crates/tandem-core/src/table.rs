//! `IndexTable`: an insert-only hash index from 64-bit hashes to `u32`
//! indices into a vector the caller owns (markets, accounts, taken ids).
//!
//! Nothing is ever removed from these sets (an id stays taken for good), so
//! the table is plain linear probing without tombstones. A slot is one
//! `u64`: the top 32 bits of the key's hash, then the index.
//! A lookup therefore usually costs one cache line, compares 32 hash bits
//! before it reads the caller's entry, and growing rehashes from the slots
//! alone. The probe position comes from those same 32 bits, so a table can
//! hold up to 2^31 slots. Iteration order is never exposed.
//!
//! An empty slot is `u64::MAX` rather than 0 so that allocating a table
//! writes every page: the page faults happen when the table is made or
//! grown, not one by one on the matching path.

/// A slot no entry uses (an entry's index is below `u32::MAX`).
const EMPTY: u64 = u64::MAX;

/// See the module doc.
#[derive(Debug, Clone, Default)]
pub(crate) struct IndexTable {
    slots: Vec<u64>,
    len: usize,
}

/// Most entries a table of `slots` slots takes before it grows (3/4).
#[inline]
fn limit(slots: usize) -> usize {
    slots / 4 * 3
}

impl IndexTable {
    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `extra` more entries without growing.
    pub(crate) fn reserve(&mut self, extra: usize) {
        let want = self.len + extra;
        if want > limit(self.slots.len()) {
            let mut n = self.slots.len().max(16);
            while limit(n) < want {
                n *= 2;
            }
            self.resize(n);
        }
    }

    fn resize(&mut self, n: usize) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; n]);
        crate::mem::advise_huge(&self.slots);
        let mask = n - 1;
        for s in old.into_iter().filter(|&s| s != EMPTY) {
            let mut i = (s >> 32) as usize & mask;
            while self.slots[i] != EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    /// Starts loading the slot a lookup of `h` will read first.
    #[inline]
    pub(crate) fn prefetch(&self, h: u64) {
        if let Some(s) = self
            .slots
            .get((h >> 32) as usize & self.slots.len().wrapping_sub(1))
        {
            crate::engine::prefetch(s);
        }
    }

    /// The index stored under hash `h` for which `eq` holds.
    #[inline]
    pub(crate) fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let tag = h >> 32;
        let mask = self.slots.len() - 1;
        let mut i = tag as usize & mask;
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            if s >> 32 == tag {
                let ix = s as u32;
                if eq(ix) {
                    return Some(ix);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `ix` under hash `h`. The caller has checked the key is absent
    /// (use `insert_new` where it has not).
    #[inline]
    pub(crate) fn insert(&mut self, h: u64, ix: u32) {
        let _ = self.insert_new(h, ix, |_| false);
    }

    /// Adds `ix` under hash `h` unless an entry for which `same` holds is
    /// there already: then `Err` with that entry's index.
    pub(crate) fn insert_new(
        &mut self,
        h: u64,
        ix: u32,
        mut same: impl FnMut(u32) -> bool,
    ) -> Result<(), u32> {
        assert!(ix < u32::MAX, "index table holds at most 2^32 - 1 entries");
        if self.len + 1 > limit(self.slots.len()) {
            self.reserve(1);
        }
        let tag = h >> 32;
        let mask = self.slots.len() - 1;
        let mut i = tag as usize & mask;
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                self.slots[i] = (tag << 32) | u64::from(ix);
                self.len += 1;
                return Ok(());
            }
            if s >> 32 == tag {
                let other = s as u32;
                if same(other) {
                    return Err(other);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Builds the table for indices `0..hashes.len()` (the table must be
    /// empty), inserting in slot order so that memory is touched almost
    /// sequentially: building millions of entries this way is several
    /// times faster than inserting them one by one. Refuses duplicates.
    pub(crate) fn bulk_build(
        &mut self,
        hashes: &[u64],
        same: impl Fn(u32, u32) -> bool,
    ) -> Result<(), (u32, u32)> {
        debug_assert_eq!(self.len, 0);
        if hashes.is_empty() {
            return Ok(());
        }
        self.reserve(hashes.len());
        let mask = (self.slots.len() - 1) as u64;
        let mut order: Vec<(u64, u32)> = hashes
            .iter()
            .enumerate()
            .map(|(i, &h)| (h >> 32, i as u32))
            .collect();
        radix_sort_by(&mut order, mask);
        for (tag, ix) in order {
            self.insert_new(tag << 32, ix, |other| same(other, ix))
                .map_err(|other| (other, ix))?;
        }
        Ok(())
    }
}

/// Stable LSD radix sort of `(key, index)` pairs by `key & mask`.
fn radix_sort_by(v: &mut Vec<(u64, u32)>, mask: u64) {
    const BITS: u32 = 11;
    let significant = 64 - mask.leading_zeros();
    let mut tmp = vec![(0u64, 0u32); v.len()];
    let mut shift = 0;
    while shift < significant {
        let mut counts = vec![0usize; 1 << BITS];
        let digit = |k: u64| (((k & mask) >> shift) & ((1 << BITS) - 1)) as usize;
        for &(k, _) in v.iter() {
            counts[digit(k)] += 1;
        }
        let mut sum = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = sum;
            sum += n;
        }
        for &e in v.iter() {
            let d = digit(e.0);
            tmp[counts[d]] = e;
            counts[d] += 1;
        }
        std::mem::swap(v, &mut tmp);
        shift += BITS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: u64) -> u64 {
        x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0x1234_5678_9abc_def0
    }

    #[test]
    fn finds_what_it_holds_through_growth_and_collisions() {
        let keys: Vec<u64> = (0..5000).collect();
        let mut t = IndexTable::default();
        for (i, &k) in keys.iter().enumerate() {
            // Every 7th key shares its whole hash with the previous one.
            let hk = if i % 7 == 0 && i > 0 {
                h(keys[i - 1])
            } else {
                h(k)
            };
            assert!(t.find(hk, |ix| keys[ix as usize] == k).is_none());
            t.insert(hk, i as u32);
        }
        assert_eq!(t.len(), keys.len());
        for (i, &k) in keys.iter().enumerate() {
            let hk = if i % 7 == 0 && i > 0 {
                h(keys[i - 1])
            } else {
                h(k)
            };
            assert_eq!(t.find(hk, |ix| keys[ix as usize] == k), Some(i as u32));
        }
        assert_eq!(t.find(h(99_999), |_| true), None);
    }

    #[test]
    fn bulk_build_matches_inserts_and_refuses_duplicates() {
        let keys: Vec<u64> = (0..3000).map(|k| k * 31).collect();
        let hashes: Vec<u64> = keys.iter().map(|&k| h(k)).collect();
        let mut t = IndexTable::default();
        t.bulk_build(&hashes, |a, b| keys[a as usize] == keys[b as usize])
            .unwrap();
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(
                t.find(hashes[i], |ix| keys[ix as usize] == k),
                Some(i as u32)
            );
        }
        let mut dup = keys.clone();
        dup.push(keys[1234]);
        let hashes: Vec<u64> = dup.iter().map(|&k| h(k)).collect();
        let mut t = IndexTable::default();
        let err = t
            .bulk_build(&hashes, |a, b| dup[a as usize] == dup[b as usize])
            .unwrap_err();
        let mut pair = [err.0, err.1];
        pair.sort_unstable();
        assert_eq!(pair, [1234, 3000]);
    }
}
