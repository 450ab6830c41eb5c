//! `IndexTable`: an insert-only hash index from 64-bit hashes to `u32`
//! indices into a vector the caller owns (markets, accounts, taken ids).
//!
//! Nothing is ever removed from these sets (an id stays taken for good), so
//! the table is linear probing without tombstones. A slot is one `u64`: the
//! top 32 bits of the key's hash, then the index. Slots come in 64-byte
//! aligned lines of 8, and a probe starts at the first slot of the line the
//! hash picks: at the table's load (at most 3/4) a lookup, found or not,
//! almost always ends inside that one line, so one prefetch covers it. It
//! compares 32 hash bits before it reads the caller's entry, and growing
//! rehashes from the slots alone. The probe position comes from those same
//! 32 bits, so a table can hold up to 2^31 slots. Iteration order is never
//! exposed.
//!
//! An empty slot is `u64::MAX` rather than 0 so that allocating a table
//! writes every page: the page faults happen when the table is made or
//! grown, not one by one on the matching path.

/// A slot no entry uses (an entry's index is below `u32::MAX`).
const EMPTY: u64 = u64::MAX;

/// Slots per line.
const LINE: usize = 8;

/// One cache line of slots.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([u64; LINE]);

/// See the module doc.
#[derive(Debug, Clone, Default)]
pub(crate) struct IndexTable {
    lines: Vec<Line>,
    len: usize,
}

/// The first slot a probe for hash tag `tag` reads, in a table of `mask + 1`
/// slots: the start of a line.
#[inline]
fn start(tag: u64, mask: usize) -> usize {
    tag as usize & mask & !(LINE - 1)
}

/// Bit `j` of the first mask is set where slot `j` of `line` is empty, of
/// the second where slot `j` holds hash tag `tag` (an empty slot may match
/// too; callers only look at matches before the first empty slot).
///
/// On x86-64, SSE2 (part of the base instruction set) compares all eight
/// slots at once: the low halves (an index; `u32::MAX` only in an empty
/// slot, as no entry has that index) against all ones and the high halves
/// (the tag) against `tag`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn line_masks(line: &Line, tag: u64) -> (u32, u32) {
    use std::arch::x86_64::{
        __m128, __m128i, _mm_castps_si128, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_load_si128,
        _mm_movemask_ps, _mm_set1_epi32, _mm_shuffle_ps,
    };
    let p = line.0.as_ptr().cast::<__m128i>();
    #[allow(unsafe_code)]
    // SAFETY: SSE2 is part of x86-64's base instruction set, so every
    // intrinsic here is available; `Line` is 64 bytes aligned to 64, so the
    // four aligned 16-byte loads lie inside the borrowed line.
    unsafe {
        let [a, b, c, d] = [0, 1, 2, 3].map(|k| _mm_castsi128_ps(_mm_load_si128(p.add(k))));
        // The lanes of `a` are slot 0's low and high half, then slot 1's.
        let low = |x: __m128, y: __m128| _mm_castps_si128(_mm_shuffle_ps::<0b10_00_10_00>(x, y));
        let high = |x: __m128, y: __m128| _mm_castps_si128(_mm_shuffle_ps::<0b11_01_11_01>(x, y));
        // One bit per 32-bit lane of `x` equal to `y`'s.
        let eq = |x: __m128i, y: __m128i| {
            _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(x, y))) as u32
        };
        let ones = _mm_set1_epi32(-1);
        let t = _mm_set1_epi32(tag as u32 as i32);
        let empty = eq(low(a, b), ones) | eq(low(c, d), ones) << 4;
        let hit = eq(high(a, b), t) | eq(high(c, d), t) << 4;
        (empty, hit)
    }
}

/// Bit `j` of the first mask is set where slot `j` of `line` is empty, of
/// the second where slot `j` holds hash tag `tag`.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn line_masks(line: &Line, tag: u64) -> (u32, u32) {
    let mut empty = 0u32;
    let mut hit = 0u32;
    for (j, &s) in line.0.iter().enumerate() {
        empty |= u32::from(s == EMPTY) << j;
        hit |= u32::from(s >> 32 == tag) << j;
    }
    (empty, hit)
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
        if want > limit(self.slots()) {
            let mut n = self.slots().max(16);
            while limit(n) < want {
                n *= 2;
            }
            self.resize(n);
        }
    }

    /// Slots in the table (a power of two, or 0).
    #[inline]
    fn slots(&self) -> usize {
        self.lines.len() * LINE
    }

    #[inline]
    fn slot(&self, i: usize) -> u64 {
        self.lines[i / LINE].0[i % LINE]
    }

    #[inline]
    fn set_slot(&mut self, i: usize, s: u64) {
        self.lines[i / LINE].0[i % LINE] = s;
    }

    fn resize(&mut self, n: usize) {
        // Ask for huge pages before the first write, or the kernel has
        // already backed the table with 4 KiB pages (and every lookup pays
        // a TLB miss on top of its cache miss).
        let mut fresh = Vec::with_capacity(n / LINE);
        crate::mem::advise_huge(&fresh);
        fresh.resize(n / LINE, Line([EMPTY; LINE]));
        let old = std::mem::replace(&mut self.lines, fresh);
        let mask = n - 1;
        for s in old.iter().flat_map(|l| l.0).filter(|&s| s != EMPTY) {
            let mut i = start(s >> 32, mask);
            while self.slot(i) != EMPTY {
                i = (i + 1) & mask;
            }
            self.set_slot(i, s);
        }
    }

    /// Starts loading the line a lookup of `h` will read first.
    #[inline]
    pub(crate) fn prefetch(&self, h: u64) {
        let mask = self.slots().wrapping_sub(1);
        if let Some(l) = self.lines.get(start(h >> 32, mask) / LINE) {
            crate::engine::prefetch(l);
        }
    }

    /// The first index in the line a lookup of `h` reads whose stored hash
    /// bits match, without checking its key: a guess, for prefetching only.
    #[inline]
    pub(crate) fn peek(&self, h: u64) -> Option<u32> {
        let mask = self.slots().wrapping_sub(1);
        let line = self.lines.get(start(h >> 32, mask) / LINE)?;
        line.0
            .iter()
            .take_while(|&&s| s != EMPTY)
            .find(|&&s| s >> 32 == h >> 32)
            .map(|&s| s as u32)
    }

    /// The index stored under hash `h` for which `eq` holds.
    #[inline]
    pub(crate) fn find(&self, h: u64, eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.find_or_vacant(h, eq).ok()
    }

    /// `find`, but a miss returns where the probe ended: the empty slot
    /// `insert_at` fills without probing again (`usize::MAX` when the table
    /// has no slots yet).
    ///
    /// The same scan as slot by slot (slots in order from the line's
    /// first, the first tag match that `eq` accepts, else the first empty
    /// slot), done a line at a time: the line's empty slots and tag
    /// matches are found without branches, so a lookup takes no branch
    /// whose outcome depends on how full the line is (those mispredicted
    /// on most lookups), and `eq` runs only on a tag match before the
    /// first empty slot.
    #[inline]
    pub(crate) fn find_or_vacant(
        &self,
        h: u64,
        mut eq: impl FnMut(u32) -> bool,
    ) -> Result<u32, usize> {
        if self.lines.is_empty() {
            return Err(usize::MAX);
        }
        let tag = h >> 32;
        let last_line = self.lines.len() - 1;
        let mut li = start(tag, self.slots() - 1) / LINE;
        loop {
            let line = &self.lines[li];
            let (empty, hit) = line_masks(line, tag);
            // The slots before the first empty one (all when none is).
            let before = empty.wrapping_sub(1) & !empty;
            let mut candidates = hit & before;
            while candidates != 0 {
                let s = line.0[candidates.trailing_zeros() as usize];
                if eq(s as u32) {
                    return Ok(s as u32);
                }
                candidates &= candidates - 1;
            }
            if empty != 0 {
                return Err(li * LINE + empty.trailing_zeros() as usize);
            }
            li = (li + 1) & last_line;
        }
    }

    /// Adds `ix` under hash `h` at `vacant`, which `find_or_vacant(h, ..)`
    /// returned with no change to the table since; probes afresh when the
    /// table must grow first.
    #[inline]
    pub(crate) fn insert_at(&mut self, vacant: usize, h: u64, ix: u32) {
        if vacant == usize::MAX || self.len + 1 > limit(self.slots()) {
            return self.insert_growing(h, ix);
        }
        assert!(ix < u32::MAX, "index table holds at most 2^32 - 1 entries");
        debug_assert_eq!(self.slot(vacant), EMPTY);
        self.set_slot(vacant, (h >> 32 << 32) | u64::from(ix));
        self.len += 1;
    }

    /// `insert` for `insert_at`'s rare case (first insert, or the table
    /// grows), kept out of line so the common case inlines small.
    #[cold]
    #[inline(never)]
    fn insert_growing(&mut self, h: u64, ix: u32) {
        self.insert(h, ix);
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
        if self.len + 1 > limit(self.slots()) {
            self.reserve(1);
        }
        let tag = h >> 32;
        let mask = self.slots() - 1;
        let mut i = start(tag, mask);
        loop {
            let s = self.slot(i);
            if s == EMPTY {
                self.set_slot(i, (tag << 32) | u64::from(ix));
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

    /// Builds the table for indices `0..n` (the table must be empty), where
    /// `hash(ix)` is index `ix`'s hash, refusing duplicates. The table is
    /// sized once, then each insert prefetches the line of the one `AHEAD`
    /// later, so the cache misses of millions of random inserts overlap
    /// (the table sits on huge pages, so they are not TLB misses as well).
    /// Each hash is computed once, `AHEAD` inserts early, and kept in a
    /// small ring until its insert: no array of every hash is made.
    pub(crate) fn bulk_build(
        &mut self,
        n: usize,
        hash: impl Fn(usize) -> u64,
        same: impl Fn(u32, u32) -> bool,
    ) -> Result<(), (u32, u32)> {
        const AHEAD: usize = 24;
        const RING: usize = 32;
        debug_assert_eq!(self.len, 0);
        self.reserve(n);
        let mut ring = [0u64; RING];
        for (ix, h) in ring.iter_mut().enumerate().take(n.min(AHEAD)) {
            *h = hash(ix);
            self.prefetch(*h);
        }
        for ix in 0..n {
            if ix + AHEAD < n {
                let later = hash(ix + AHEAD);
                ring[(ix + AHEAD) % RING] = later;
                self.prefetch(later);
            }
            let h = ring[ix % RING];
            let ix = ix as u32;
            self.insert_new(h, ix, |other| same(other, ix))
                .map_err(|other| (other, ix))?;
        }
        Ok(())
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
            let hk = if i.is_multiple_of(7) && i > 0 {
                h(keys[i - 1])
            } else {
                h(k)
            };
            assert!(t.find(hk, |ix| keys[ix as usize] == k).is_none());
            t.insert(hk, i as u32);
        }
        assert_eq!(t.len(), keys.len());
        for (i, &k) in keys.iter().enumerate() {
            let hk = if i.is_multiple_of(7) && i > 0 {
                h(keys[i - 1])
            } else {
                h(k)
            };
            assert_eq!(t.find(hk, |ix| keys[ix as usize] == k), Some(i as u32));
        }
        assert_eq!(t.find(h(99_999), |_| true), None);
    }

    /// The slot-by-slot probe `find_or_vacant` does a line at a time.
    fn probe_slot_by_slot(
        t: &IndexTable,
        h: u64,
        mut eq: impl FnMut(u32) -> bool,
    ) -> Result<u32, usize> {
        let mask = t.slots() - 1;
        let mut i = start(h >> 32, mask);
        loop {
            let s = t.slot(i);
            if s == EMPTY {
                return Err(i);
            }
            if s >> 32 == h >> 32 && eq(s as u32) {
                return Ok(s as u32);
            }
            i = (i + 1) & mask;
        }
    }

    #[test]
    fn line_probe_agrees_with_slot_by_slot() {
        // Hashes crowded into a few tags and lines, including the all-ones
        // tag an empty slot also carries, so probes run over several lines
        // and wrap past the last one.
        let tags = [0xffff_ffffu64, 0, 7, 15, 0xffff_fff8, 0x8000_0000];
        let hash = |k: u64| (tags[(k % 6) as usize] << 32) | k;
        let mut t = IndexTable::default();
        t.reserve(40);
        let slots = t.slots();
        for k in 0..(slots as u64 * 3 / 4) {
            for probe in [k, k + 1000] {
                for target in 0..=k as u32 {
                    let want = probe_slot_by_slot(&t, hash(probe), |ix| ix == target);
                    let got = t.find_or_vacant(hash(probe), |ix| {
                        // An empty slot's high half equals the all-ones
                        // tag: it must never reach `eq`.
                        assert!(u64::from(ix) < k, "eq asked about slot value {ix:#x}");
                        ix == target
                    });
                    assert_eq!(got, want);
                }
            }
            let vacant = t.find_or_vacant(hash(k), |_| false).unwrap_err();
            assert_eq!(t.slot(vacant), EMPTY);
            t.insert_at(vacant, hash(k), k as u32);
        }
        assert_eq!(
            t.slots(),
            slots,
            "the table grew: the test lost its crowding"
        );
        for k in 0..(slots as u64 * 3 / 4) {
            assert_eq!(t.find(hash(k), |ix| ix == k as u32), Some(k as u32));
        }
    }

    #[test]
    fn insert_at_a_vacant_slot_is_found_through_growth() {
        let mut t = IndexTable::default();
        for k in 0..2000u64 {
            let hk = h(k);
            let vacant = t.find_or_vacant(hk, |_| false).unwrap_err();
            t.insert_at(vacant, hk, k as u32);
            assert_eq!(t.find_or_vacant(hk, |ix| ix == k as u32), Ok(k as u32));
        }
        assert_eq!(t.len(), 2000);
        for k in 0..2000u64 {
            assert_eq!(t.find(h(k), |ix| ix == k as u32), Some(k as u32));
        }
    }

    #[test]
    fn bulk_build_matches_inserts_and_refuses_duplicates() {
        let keys: Vec<u64> = (0..3000).map(|k| k * 31).collect();
        let hashes: Vec<u64> = keys.iter().map(|&k| h(k)).collect();
        let mut t = IndexTable::default();
        t.bulk_build(
            hashes.len(),
            |i| hashes[i],
            |a, b| keys[a as usize] == keys[b as usize],
        )
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
            .bulk_build(
                hashes.len(),
                |i| hashes[i],
                |a, b| dup[a as usize] == dup[b as usize],
            )
            .unwrap_err();
        let mut pair = [err.0, err.1];
        pair.sort_unstable();
        assert_eq!(pair, [1234, 3000]);
    }
}
