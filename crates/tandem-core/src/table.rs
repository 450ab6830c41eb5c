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
//!
//! **Growth is spread over inserts** once the table has
//! [`INCREMENTAL_SLOTS`] slots. Growing at once (a table twice the size
//! written, then every entry moved) stopped the insert that did it for
//! 19 ms at 393 k entries and 43 ms at 786 k here. Instead, from 5/8
//! full, each insert first writes [`FILL_LINES`] lines of the next table
//! (not yet used); once it is written, it becomes the table and each
//! insert moves [`MOVE_LINES`] lines of the previous one into it, while a
//! lookup that misses in the table also probes the previous one (left
//! whole until its last line is moved, so its probe runs are intact).
//! Both steps end long before the table is 3/4 full; if one has not, it
//! is finished at once. A table sized by `reserve` does not start
//! growing before it holds what was reserved; when growth starts that
//! late, each insert writes enough lines (what is left over the inserts
//! left before 3/4) that the next table is still written over inserts.

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
    /// Entries held (in `lines` and in `old`'s lines not yet moved).
    len: usize,
    /// While the next table is written (twice the lines of `lines`):
    /// the lines written so far. Empty otherwise.
    next: Vec<Line>,
    /// While entries move: the previous table, whole.
    old: Vec<Line>,
    /// Lines of `old` moved into `lines`.
    moved: usize,
    /// Entries from which an insert takes the slow way: a growth step
    /// (0 while one is under way; from 5/8 full, or what was reserved,
    /// on a large table) or, at 3/4 full, a growth at once. One compare
    /// on the common way.
    slow_at: usize,
    /// Entries `reserve` made room for: growth does not start below.
    held: usize,
    /// Growths spread over inserts so far.
    #[cfg(test)]
    growths_spread: usize,
    /// Growths of a table holding entries made or finished at once so
    /// far (it was full).
    #[cfg(test)]
    growths_at_once: usize,
}

/// Slots from which a table grows over inserts instead of at once (at
/// 3/4 of this, growing at once moves 49 k entries into 1 MiB: well under
/// a millisecond).
pub(crate) const INCREMENTAL_SLOTS: usize = 1 << 16;

/// Lines of the next table an insert writes. The next table has twice
/// the lines; from 5/8 full to 3/4 full is an eighth of the slots, a
/// quarter of the lines: writing them all takes two lines an insert, so
/// four leave half the room spare.
const FILL_LINES: usize = 4;

/// Lines of the previous table an insert moves (then up to 16 entries,
/// each a write into the new table). The new table, at most 3/8 full when
/// it takes over, is not 5/8 full before all its predecessor's
/// lines have moved at two an insert.
const MOVE_LINES: usize = 2;

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

/// `IndexTable::find_or_vacant` in one table of `lines` (not empty).
#[inline(always)]
fn probe(lines: &[Line], h: u64, mut eq: impl FnMut(u32) -> bool) -> Result<u32, usize> {
    let tag = h >> 32;
    let last_line = lines.len() - 1;
    let mut li = start(tag, lines.len() * LINE - 1) / LINE;
    loop {
        let line = &lines[li];
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

impl IndexTable {
    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `extra` more entries without growing.
    pub(crate) fn reserve(&mut self, extra: usize) {
        self.finish_growth();
        let want = self.len + extra;
        if want > limit(self.slots()) {
            let mut n = self.slots().max(16);
            while limit(n) < want {
                n *= 2;
            }
            self.resize(n);
        }
        self.held = self.held.max(want);
        self.set_slow_at();
    }

    /// `slow_at` for the table as it is now.
    fn set_slow_at(&mut self) {
        let step = if self.growing() {
            0
        } else if self.slots() < INCREMENTAL_SLOTS {
            usize::MAX
        } else {
            (self.slots() / 8 * 5).max(self.held)
        };
        self.slow_at = step.min(limit(self.slots()));
    }

    /// Is a growth under way (the next table being written, or entries
    /// moving into it)?
    fn growing(&self) -> bool {
        !self.next.is_empty() || !self.old.is_empty()
    }

    /// Finishes a growth under way at once.
    fn finish_growth(&mut self) {
        while self.growing() {
            self.grow_by(usize::MAX, usize::MAX);
        }
    }

    fn grow_by(&mut self, fill: usize, move_lines: usize) {
        let next_lines = self.lines.len() * 2;
        if !self.growing() {
            // Start: the next table, its pages not yet written (the fill
            // below writes at least one line, so `growing` holds after).
            self.next = Vec::with_capacity(next_lines);
            crate::mem::advise_huge(&self.next);
            self.slow_at = 0;
            #[cfg(test)]
            {
                self.growths_spread += 1;
            }
        }
        if self.old.is_empty() {
            // At least what is left over the inserts left before the
            // table is full: a growth that started late (a table sized by
            // `reserve` close to full, as a restore sizes one) still ends
            // over inserts.
            let left = next_lines - self.next.len();
            let room = limit(self.slots()).saturating_sub(self.len).max(1);
            let k = fill.max(left.div_ceil(room)).min(left);
            self.next
                .extend(std::iter::repeat_n(Line([EMPTY; LINE]), k));
            if self.next.len() == next_lines {
                self.old = std::mem::replace(&mut self.lines, std::mem::take(&mut self.next));
                self.moved = 0;
            }
            return;
        }
        let end = self.old.len().min(self.moved.saturating_add(move_lines));
        for li in self.moved..end {
            for s in self.old[li].0 {
                if s != EMPTY {
                    self.place(s);
                }
            }
        }
        self.moved = end;
        if self.moved == self.old.len() {
            self.old = Vec::new();
            self.moved = 0;
            self.set_slow_at();
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

    /// Grows (or first makes) the table at once to `n` slots. No growth
    /// may be under way.
    fn resize(&mut self, n: usize) {
        debug_assert!(!self.growing());

        // Ask for huge pages before the first write, or the kernel has
        // already backed the table with 4 KiB pages (and every lookup pays
        // a TLB miss on top of its cache miss).
        let mut fresh = Vec::with_capacity(n / LINE);
        crate::mem::advise_huge(&fresh);
        fresh.resize(n / LINE, Line([EMPTY; LINE]));
        let old = std::mem::replace(&mut self.lines, fresh);
        for s in old.iter().flat_map(|l| l.0).filter(|&s| s != EMPTY) {
            self.place(s);
        }
    }

    /// Puts an occupied slot `s` of another table into the first empty
    /// slot of its probe run here (a rehash: its tag says where).
    fn place(&mut self, s: u64) {
        let mask = self.slots() - 1;
        let mut i = start(s >> 32, mask);
        while self.slot(i) != EMPTY {
            i = (i + 1) & mask;
        }
        self.set_slot(i, s);
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
    #[inline(always)]
    pub(crate) fn find_or_vacant(
        &self,
        h: u64,
        mut eq: impl FnMut(u32) -> bool,
    ) -> Result<u32, usize> {
        if self.lines.is_empty() {
            return Err(usize::MAX);
        }
        match probe(&self.lines, h, &mut eq) {
            // While entries move, the rest are in the previous table.
            Err(vacant) if !self.old.is_empty() => self.probe_old(h, eq, vacant),
            found => found,
        }
    }

    /// `find_or_vacant`'s probe of the previous table while entries
    /// move, out of line so that the common case stays small.
    #[cold]
    #[inline(never)]
    fn probe_old(&self, h: u64, eq: impl FnMut(u32) -> bool, vacant: usize) -> Result<u32, usize> {
        probe(&self.old, h, eq).or(Err(vacant))
    }

    /// Adds `ix` under hash `h` at `vacant`, which `find_or_vacant(h, ..)`
    /// returned with no change to the table since; takes the slow way
    /// (`insert_new`: a growth step or a growth, then a fresh probe) from
    /// `slow_at` entries on.
    #[inline]
    pub(crate) fn insert_at(&mut self, vacant: usize, h: u64, ix: u32) {
        if vacant == usize::MAX || self.len >= self.slow_at {
            return self.insert_growing(h, ix);
        }
        assert!(ix < u32::MAX, "index table holds at most 2^32 - 1 entries");
        debug_assert_eq!(self.slot(vacant), EMPTY);
        self.set_slot(vacant, (h >> 32 << 32) | u64::from(ix));
        self.len += 1;
    }

    /// `insert` for `insert_at`'s rare case (first insert, growth),
    /// kept out of line so the common case inlines small.
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
        if self.len >= self.slow_at {
            self.slow_step();
        }
        let vacant = match self.find_or_vacant(h, &mut same) {
            Ok(there) => return Err(there),
            Err(vacant) => vacant,
        };
        self.set_slot(vacant, (h >> 32 << 32) | u64::from(ix));
        self.len += 1;
        Ok(())
    }

    /// What an insert does from `slow_at` entries on, before its probe:
    /// when the table is full (3/4), a growth under way is finished at
    /// once, or the table grows at once; otherwise one growth step
    /// (starts the next table, writes some of it, or moves some entries).
    #[cold]
    #[inline(never)]
    fn slow_step(&mut self) {
        if self.len + 1 > limit(self.slots()) {
            #[cfg(test)]
            {
                self.growths_at_once += usize::from(self.len > 0);
            }
            self.finish_growth();
            if self.len + 1 > limit(self.slots()) {
                let n = (self.slots() * 2).max(16);
                self.resize(n);
            }
        } else {
            self.grow_by(FILL_LINES, MOVE_LINES);
        }
        self.set_slow_at();
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
    fn growth_is_spread_over_inserts_and_every_entry_stays_found() {
        // 700 k entries through `insert_at`, as the engine inserts ids:
        // the table passes INCREMENTAL_SLOTS and then grows over inserts
        // only (each insert writes or moves a few lines), and every entry
        // is found at every stage, in the table or in the previous one.
        let mut t = IndexTable::default();
        let n = 700_000u64;
        let mut at_once = 0;
        let mut steps_seen = [false; 2];
        for k in 0..n {
            let hk = h(k);
            let slots = t.slots();
            let vacant = t.find_or_vacant(hk, |_| false).unwrap_err();
            t.insert_at(vacant, hk, k as u32);
            if t.slots() != slots && !t.growing() {
                // Grew at once (only while small).
                assert!(slots < INCREMENTAL_SLOTS, "grew at once at {slots} slots");
                at_once += 1;
            }
            steps_seen[0] |= !t.next.is_empty();
            steps_seen[1] |= !t.old.is_empty();
            if k % 1013 == 0 || t.moved == 1 {
                for j in (0..=k).step_by(((k as usize) / 300).max(1)) {
                    assert_eq!(
                        t.find(h(j), |ix| ix == j as u32),
                        Some(j as u32),
                        "{j} at {k}"
                    );
                }
                assert_eq!(t.find(h(n + k), |_| true), None);
            }
        }
        assert!(
            at_once > 0 && t.growths_spread >= 3,
            "{at_once} {}",
            t.growths_spread
        );
        assert!(steps_seen[0] && steps_seen[1]);
        assert_eq!(t.len(), n as usize);
        // A reserve finishes a growth under way and holds what it sized.
        t.reserve(1_000_000);
        assert!(!t.growing());
        let slots = t.slots();
        let spread = t.growths_spread;
        for k in n..n + 1_000_000 {
            t.insert(h(k), k as u32);
        }
        assert_eq!((t.slots(), t.growths_spread), (slots, spread));
        for k in (0..n + 1_000_000).step_by(101) {
            assert_eq!(t.find(h(k), |ix| ix == k as u32), Some(k as u32));
        }
    }

    #[test]
    fn a_table_reserved_close_to_full_still_grows_over_inserts() {
        // Sized for 98 000 entries: 131 072 slots, full (3/4) at 98 304.
        // Growth may not start before the reserved count; from there the
        // next table (32 Ki lines) must be written in the 304 inserts
        // left, and is.
        let mut t = IndexTable::default();
        t.reserve(98_000);
        assert_eq!(t.slots(), 131_072);
        for k in 0..98_000u64 {
            t.insert(h(k), k as u32);
        }
        assert_eq!((t.growths_spread, t.growths_at_once), (0, 0));
        for k in 98_000..160_000u64 {
            let hk = h(k);
            let vacant = t.find_or_vacant(hk, |_| false).unwrap_err();
            t.insert_at(vacant, hk, k as u32);
        }
        assert_eq!(t.slots(), 262_144);
        assert_eq!((t.growths_spread, t.growths_at_once), (1, 0));
        for k in (0..160_000u64).step_by(7) {
            assert_eq!(t.find(h(k), |ix| ix == k as u32), Some(k as u32));
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
