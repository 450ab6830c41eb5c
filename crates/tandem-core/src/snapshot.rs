//! Snapshots: the whole engine state in a versioned, checksummed binary
//! format, and its strict decoder.
//!
//! ```text
//! "TNDMSNAP" | version u32 LE | body | body_len u64 LE | xxh3_64(body) u64 LE
//! body (integers are LEB128 varints, str = varint len ‖ UTF-8 bytes):
//!   seq | chain state (varint len ‖ folded state ‖ pending bytes, see chain.rs)
//!   accounts:  str × n_accounts                  (index order)
//!   markets:   name str × n_markets              (index order)
//!   ids:       (market, id str, account, flags u8, [changes], price, qty)
//!              × n_ids, in two halves (the second starts at off_ids2);
//!              flags bit 5 says a varint `changes` (1..=65535, the
//!              order's based amends) follows. Entries without it are
//!              what builds before amend bases wrote, so such a snapshot
//!              stays readable by them; one with it is refused by them
//!              (unknown flag) and skipped, never misread.
//!   books:     per market, bids then asks, best level first:
//!              levels | (price | orders | (id index, qty) × orders) × levels
//!   section table, ten u64 LE: n_accounts, n_markets, n_ids, n_ids_first,
//!              off_accounts, off_markets, off_ids, off_ids2, off_books, off_table
//! ```
//! Everything that reaches output (names, ids, priorities, quantities, the
//! chain) is in the snapshot; slab positions and hash-table layout are not,
//! so a restored engine continues exactly as the original would have.
//! The section table lets `restore` decode on both cores at once (names and
//! the first half of the ids on one, the rest on the other) and then
//! rebuild the id index beside the books. It checks the checksum first and
//! then every structural rule, each section to its exact end, so a
//! truncated, corrupt or hostile snapshot is an error, never a panic.

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::command::Side;
use crate::engine::{
    id_table_of, key_of, name_tables_of, prefetch, Config, Engine, IdEntry, Ladder, Level, Market,
    Order, OrderStatus, Rung, F_HAS_CHANGES, NONE,
};
use crate::num::MAX_UNITS;
use crate::Sym;

const MAGIC: &[u8; 8] = b"TNDMSNAP";
/// Format version written by this build.
pub const VERSION: u32 = 3;

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a tandem snapshot (bad magic)")]
    Magic,
    #[error("snapshot version {0} is not supported (this build reads {VERSION})")]
    Version(u32),
    #[error("snapshot truncated: {0} bytes, the header and trailer alone need 28")]
    Short(usize),
    #[error("snapshot length field says {stated} body bytes but {actual} are present (truncated or padded)")]
    Length { stated: u64, actual: u64 },
    #[error("snapshot checksum mismatch: stored {stored:016x}, computed {computed:016x}")]
    Checksum { stored: u64, computed: u64 },
    #[error("snapshot body malformed at byte {offset}: {what}")]
    Malformed { offset: usize, what: String },
}

/// Buffers the body in 1 MiB chunks, hashing and writing each whole, so a
/// snapshot of hundreds of MiB costs a few thousand hash updates and writes
/// rather than one per field.
struct HashingWriter<W> {
    inner: W,
    hash: Xxh3,
    len: u64,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl<W: Write> HashingWriter<W> {
    #[inline]
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.drain()?;
        }
        Ok(())
    }
    /// Offset in the body of the next byte written.
    fn pos(&self) -> u64 {
        self.len + self.buf.len() as u64
    }
    fn drain(&mut self) -> io::Result<()> {
        self.hash.update(&self.buf);
        self.len += self.buf.len() as u64;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
    #[inline]
    fn varint(&mut self, mut v: u64) -> io::Result<()> {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
        if self.buf.len() >= CHUNK {
            self.drain()?;
        }
        Ok(())
    }
    fn str(&mut self, s: &Sym) -> io::Result<()> {
        self.varint(s.len() as u64)?;
        self.put(s.as_bytes())
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: impl Into<String>) -> SnapshotError {
        SnapshotError::Malformed {
            offset: self.pos,
            what: what.into(),
        }
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.b.len() - self.pos < n {
            return Err(self.err(format!("needs {n} more bytes")));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.bytes(1)?[0])
    }
    #[inline]
    fn varint(&mut self) -> Result<u64, SnapshotError> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        let mut pos = self.pos;
        loop {
            let Some(&byte) = self.b.get(pos) else {
                return Err(self.err("varint runs past the end"));
            };
            pos += 1;
            if shift == 63 && byte > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                self.pos = pos;
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(self.err("varint longer than 10 bytes"));
            }
        }
    }
    /// Checks that a section was read to its very end.
    fn end(&self, what: &str) -> Result<(), SnapshotError> {
        if self.pos == self.b.len() {
            Ok(())
        } else {
            Err(self.err(format!("{what} end early or run on")))
        }
    }
    /// A count of items that each take at least `min_bytes`: bounded by what
    /// is left, so a hostile count cannot make us allocate.
    fn count(&mut self, min_bytes: usize, limit: u64, what: &str) -> Result<usize, SnapshotError> {
        let n = self.varint()?;
        let left = (self.b.len() - self.pos) as u64;
        if n > limit || n.saturating_mul(min_bytes as u64) > left {
            return Err(self.err(format!("{what} count {n} impossible here")));
        }
        Ok(n as usize)
    }
    fn index(&mut self, below: usize, what: &str) -> Result<u32, SnapshotError> {
        let v = self.varint()?;
        if v >= below as u64 {
            return Err(self.err(format!("{what} {v} out of range (< {below})")));
        }
        Ok(v as u32)
    }
    fn units(&mut self, what: &str) -> Result<u64, SnapshotError> {
        let v = self.varint()?;
        if v == 0 || v > MAX_UNITS {
            return Err(self.err(format!("{what} {v} out of range")));
        }
        Ok(v)
    }
    fn sym(&mut self) -> Result<Sym, SnapshotError> {
        let n = self.count(1, u32::MAX as u64, "string length")?;
        let b = self.bytes(n)?;
        Sym::from_utf8(b).ok_or_else(|| self.err("string is not UTF-8"))
    }
}

/// The books as decoded, before they are linked: the first level of each
/// (market, side) (with a sentinel at the end), the levels in record order
/// with `head` holding the index of their first order (not yet a link),
/// and the orders in record order with only `qty` and `id` set. They are
/// decoded straight into the engine's slabs (a level's and an order's slab
/// index is its record's index), so no copy of the books is made.
struct Books {
    side_starts: Vec<u32>,
    levels: Vec<Level>,
    orders: Vec<Order>,
}

impl Books {
    /// First level and first order record of market `m` (`m` may be the
    /// market count).
    fn starts_of(&self, m: usize) -> (usize, usize) {
        let l = self.side_starts[2 * m] as usize;
        let o = self
            .levels
            .get(l)
            .map_or(self.orders.len(), |lv| lv.head as usize);
        (l, o)
    }
}

/// First pass over the books: decodes them and checks level order only.
/// `reserve_orders` is the engine's reservation for the order slab.
fn decode_books(
    r: &mut Reader<'_>,
    n_markets: usize,
    n_ids: usize,
    reserve_orders: usize,
) -> Result<Books, SnapshotError> {
    // Sized once for the most the section can hold (a level takes at least
    // 4 bytes, an order 2, and no more orders can rest than ids exist; a
    // hostile count fails below before it is reached), on huge pages: only
    // what is written is ever backed by memory.
    let left = r.b.len() - r.pos;
    let mut side_starts: Vec<u32> = Vec::with_capacity(2 * n_markets + 1);
    crate::mem::advise_huge(&side_starts);
    let mut levels: Vec<Level> = Vec::with_capacity((left / 4).min(n_ids));
    crate::mem::advise_huge(&levels);
    let mut orders: Vec<Order> = Vec::with_capacity((left / 2).min(n_ids).max(reserve_orders));
    crate::mem::advise_huge(&orders);
    for _ in 0..n_markets {
        for side in [Side::Buy, Side::Sell] {
            side_starts.push(levels.len() as u32);
            let n_levels = r.count(3, u64::from(u32::MAX - 1), "levels")?;
            let mut last_key = None;
            for _ in 0..n_levels {
                let price = r.units("level price")?;
                let key = key_of(side, price);
                if last_key.is_some_and(|k| k <= key) {
                    return Err(r.err("levels not in strict best-first order"));
                }
                last_key = Some(key);
                levels.push(Level {
                    price,
                    head: orders.len() as u32,
                    tail: NONE,
                });
                let n_orders = r.count(2, u64::from(u32::MAX - 1), "orders")?;
                if n_orders == 0 {
                    return Err(r.err("empty level"));
                }
                for _ in 0..n_orders {
                    let id = r.index(n_ids, "order's id")?;
                    let qty = r.units("order qty")?;
                    orders.push(Order {
                        qty,
                        id,
                        ..Order::prefault_filler()
                    });
                }
            }
        }
    }
    side_starts.push(levels.len() as u32);
    Ok(Books {
        side_starts,
        levels,
        orders,
    })
}

/// Bytes of the section table at the end of the body: ten u64 LE.
const TOC_BYTES: usize = 80;

/// Id entries decoded into the front of a slice of uninitialised slots.
/// Dropping it drops them (a decode that fails half way frees what it
/// made); `keep` hands them over to the vector that owns the slots.
struct Filled<'a> {
    slots: &'a mut [MaybeUninit<IdEntry>],
    n: usize,
}

impl Filled<'_> {
    fn push(&mut self, e: IdEntry) {
        self.slots[self.n].write(e);
        self.n += 1;
    }

    /// How many were written; they are no longer dropped here.
    fn keep(mut self) -> usize {
        std::mem::take(&mut self.n)
    }
}

impl Drop for Filled<'_> {
    fn drop(&mut self) {
        for slot in &mut self.slots[..self.n] {
            #[allow(unsafe_code)]
            // SAFETY: `push` wrote the first `n` slots, and nothing else
            // reads or drops them (`keep` sets `n` to 0 when it hands them on).
            unsafe {
                slot.assume_init_drop();
            }
        }
    }
}

/// Decodes id entries into every slot of `slots`, checking each field.
/// On an error, drops those it wrote.
fn decode_ids<'a>(
    r: &mut Reader<'_>,
    slots: &'a mut [MaybeUninit<IdEntry>],
    n_markets: usize,
    n_accounts: usize,
) -> Result<Filled<'a>, SnapshotError> {
    let n = slots.len();
    let mut out = Filled { slots, n: 0 };
    for _ in 0..n {
        let market = r.index(n_markets, "id's market")?;
        let id = r.sym()?;
        let account = r.index(n_accounts, "id's account")?;
        let flags = r.u8()?;
        if flags & !0b11_1111 != 0 || (flags >> 3) & 3 == 3 {
            return Err(r.err(format!("id flags {flags:#x} invalid")));
        }
        let changes = if flags & F_HAS_CHANGES != 0 {
            let c = r.varint()?;
            match u16::try_from(c) {
                Ok(c) if c != 0 => c,
                _ => return Err(r.err(format!("id's change count {c} invalid"))),
            }
        } else {
            0
        };
        let flags = flags & !F_HAS_CHANGES;
        let price = r.varint()?;
        let qty = r.units("id's qty")?;
        if price > MAX_UNITS || id.is_empty() {
            return Err(r.err(format!("id {id:?} invalid")));
        }
        out.push(IdEntry {
            id,
            market,
            order: NONE,
            account,
            flags,
            price,
            qty,
            changes,
        });
    }
    Ok(out)
}

/// Phase 1's share of the restoring thread: the second half of the ids
/// (into `slots`) and the books. The tuple is (markets, accounts, ids,
/// the order slab's reservation).
fn decode_second_half<'a>(
    mut ids: Reader<'_>,
    mut books: Reader<'_>,
    slots: &'a mut [MaybeUninit<IdEntry>],
    (n_markets, n_accounts, n_ids, reserve_orders): (usize, usize, usize, usize),
) -> Result<(Filled<'a>, Books), SnapshotError> {
    let filled = decode_ids(&mut ids, slots, n_markets, n_accounts)?;
    ids.end("the second half of the ids")?;
    let recs = decode_books(&mut books, n_markets, n_ids, reserve_orders)?;
    books.end("the books")?;
    Ok((filled, recs))
}

/// Links the decoded books into levels, orders and ladders, on two threads
/// (the markets split where about half the orders lie). Each half owns its
/// markets' part of the level and order slabs. Reads each order's id entry
/// (a random access into a large array, so it prefetches a few orders
/// ahead) and returns, per id, the slab index of its resting order or
/// NONE, for the caller to store once the id index is built.
fn build_books(
    ids: &[IdEntry],
    markets: &mut [Market],
    books: &mut Books,
) -> Result<Vec<u32>, String> {
    let mut id_order: Vec<AtomicU32> = Vec::with_capacity(ids.len());
    crate::mem::advise_huge(&id_order);
    id_order.extend((0..ids.len()).map(|_| AtomicU32::new(NONE)));
    let n_markets = markets.len();
    let half = books.orders.len() / 2;
    let mut k = 0;
    let mut hi = n_markets;
    while k < hi {
        let mid = (k + hi) / 2;
        if books.starts_of(mid).1 < half {
            k = mid + 1;
        } else {
            hi = mid;
        }
    }
    let (l_k, o_k) = books.starts_of(k);
    let n_orders = books.orders.len();
    let Books {
        side_starts,
        levels,
        orders,
    } = books;
    let (m_lo, m_hi) = markets.split_at_mut(k);
    let (l_lo, l_hi) = levels.split_at_mut(l_k);
    let (o_lo, o_hi) = orders.split_at_mut(o_k);
    let (lo, hi) = std::thread::scope(|s| {
        let job = s.spawn(|| {
            let base = (k, l_k, o_k);
            build_range(
                ids,
                side_starts,
                m_hi,
                base,
                l_hi,
                o_hi,
                n_orders,
                &id_order,
            )
        });
        let lo = build_range(
            ids,
            side_starts,
            m_lo,
            (0, 0, 0),
            l_lo,
            o_lo,
            o_k,
            &id_order,
        );
        let hi = job
            .join()
            .unwrap_or_else(|_| Err("book builder panicked".to_owned()));
        (lo, hi)
    });
    lo?;
    hi?;
    Ok(id_order.into_iter().map(AtomicU32::into_inner).collect())
}

/// Links the books of `markets`, whose first market, level and order
/// records are `base`, in `levels` and `orders` (the parts of the slabs
/// their records own); `o_end` is the index after their last order.
#[allow(clippy::too_many_arguments)]
fn build_range(
    ids: &[IdEntry],
    side_starts: &[u32],
    markets: &mut [Market],
    (m_base, l_base, o_base): (usize, usize, usize),
    levels: &mut [Level],
    orders: &mut [Order],
    o_end: usize,
    id_order: &[AtomicU32],
) -> Result<(), String> {
    const AHEAD: usize = 16;
    for (i, market) in markets.iter_mut().enumerate() {
        let m = m_base + i;
        for (si, side) in [Side::Buy, Side::Sell].into_iter().enumerate() {
            let (first, end) = (
                side_starts[2 * m + si] as usize,
                side_starts[2 * m + si + 1] as usize,
            );
            let mut rungs = Vec::with_capacity(end - first);
            for l in first..end {
                let lv = l - l_base;
                // `head` holds the level's first order record until it is
                // linked here; the next level's is still unlinked.
                let o_first = levels[lv].head as usize;
                let o_last = levels.get(lv + 1).map_or(o_end, |n| n.head as usize);
                levels[lv].head = NONE;
                let price = levels[lv].price;
                rungs.push(Rung {
                    key: key_of(side, price),
                    level: l as u32,
                });
                for k in o_first..o_last {
                    if let Some(ahead) = orders.get(k + AHEAD - o_base) {
                        // Both are random accesses into arrays of every id.
                        prefetch(&ids[ahead.id as usize]);
                        prefetch(&id_order[ahead.id as usize]);
                    }
                    let ix = orders[k - o_base].id;
                    let e = &ids[ix as usize];
                    if e.market as usize != m
                        || e.side() != side
                        || e.status() != OrderStatus::Open
                        || id_order[ix as usize]
                            .compare_exchange(NONE, k as u32, Relaxed, Relaxed)
                            .is_err()
                    {
                        return Err(format!(
                            "resting order {k} (id {ix}) does not belong in market {m}"
                        ));
                    }
                    let tail = levels[lv].tail;
                    let ord = &mut orders[k - o_base];
                    ord.account = e.account;
                    ord.prev = tail;
                    ord.next = NONE;
                    ord.level = l as u32;
                    if tail == NONE {
                        levels[lv].head = k as u32;
                    } else {
                        orders[tail as usize - o_base].next = k as u32;
                    }
                    levels[lv].tail = k as u32;
                }
            }
            rungs.reverse();
            market.ladder_mut(side).rungs = rungs;
        }
        if let (Some(b), Some(a)) = (market.bids.rungs.last(), market.asks.rungs.last()) {
            if levels[b.level as usize - l_base].price >= levels[a.level as usize - l_base].price {
                return Err(format!("book of market {m} is crossed"));
            }
        }
    }
    Ok(())
}

impl Engine {
    /// Writes the whole state to `w` (wrap a file in a `BufWriter`).
    pub fn snapshot_to<W: Write>(&self, w: W) -> io::Result<()> {
        let mut w = HashingWriter {
            inner: w,
            hash: Xxh3::new(),
            len: 0,
            buf: Vec::with_capacity(CHUNK + 64),
        };
        w.inner.write_all(MAGIC)?;
        w.inner.write_all(&VERSION.to_le_bytes())?;
        w.varint(self.seq)?;
        w.varint(self.chain_buf.len() as u64)?;
        w.put(&self.chain_buf)?;
        let off_accounts = w.pos();
        for a in &self.accounts {
            w.str(a)?;
        }
        let off_markets = w.pos();
        for m in &self.markets {
            w.str(&m.name)?;
        }
        let off_ids = w.pos();
        let n_first = self.ids.len() / 2;
        let mut off_ids2 = off_ids;
        for (i, e) in self.ids.iter().enumerate() {
            if i == n_first {
                off_ids2 = w.pos();
            }
            w.varint(u64::from(e.market))?;
            w.str(&e.id)?;
            w.varint(u64::from(e.account))?;
            if e.changes == 0 {
                w.put(&[e.flags])?;
            } else {
                w.put(&[e.flags | F_HAS_CHANGES])?;
                w.varint(u64::from(e.changes))?;
            }
            w.varint(e.price)?;
            w.varint(e.qty)?;
        }
        if n_first == self.ids.len() {
            off_ids2 = w.pos();
        }
        let off_books = w.pos();
        for m in &self.markets {
            for side in [Side::Buy, Side::Sell] {
                let ladder = m.ladder_ref(side);
                let live = ladder.rungs.len() - ladder.empties as usize;
                w.varint(live as u64)?;
                for r in ladder.rungs.iter().rev() {
                    let lv = self.levels[r.level as usize];
                    if lv.head == NONE {
                        continue;
                    }
                    let mut n = 0u64;
                    let mut o = lv.head;
                    while o != NONE {
                        n += 1;
                        o = self.orders[o as usize].next;
                    }
                    w.varint(lv.price)?;
                    w.varint(n)?;
                    let mut o = lv.head;
                    while o != NONE {
                        let ord = &self.orders[o as usize];
                        w.varint(u64::from(ord.id))?;
                        w.varint(ord.qty)?;
                        o = ord.next;
                    }
                }
            }
        }
        let off_toc = w.pos();
        for v in [
            self.accounts.len() as u64,
            self.markets.len() as u64,
            self.ids.len() as u64,
            n_first as u64,
            off_accounts,
            off_markets,
            off_ids,
            off_ids2,
            off_books,
            off_toc,
        ] {
            w.put(&v.to_le_bytes())?;
        }
        w.drain()?;
        let (len, digest) = (w.len, w.hash.digest());
        let mut inner = w.inner;
        inner.write_all(&len.to_le_bytes())?;
        inner.write_all(&digest.to_le_bytes())?;
        inner.flush()
    }

    /// The whole state as bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.snapshot_to(&mut v)
            .expect("writing to a Vec cannot fail");
        v
    }

    /// Rebuilds an engine from `snapshot_to`'s bytes. `cfg` supplies the
    /// limits and hash seed (neither is state).
    pub fn restore(bytes: &[u8], cfg: Config) -> Result<Engine, SnapshotError> {
        if bytes.len() < 28 {
            return Err(SnapshotError::Short(bytes.len()));
        }
        if &bytes[..8] != MAGIC {
            return Err(SnapshotError::Magic);
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(SnapshotError::Version(version));
        }
        let tail = bytes.len() - 16;
        let stated = u64::from_le_bytes(bytes[tail..tail + 8].try_into().expect("8 bytes"));
        let stored = u64::from_le_bytes(bytes[tail + 8..].try_into().expect("8 bytes"));
        let body = &bytes[12..tail];
        if stated != body.len() as u64 {
            return Err(SnapshotError::Length {
                stated,
                actual: body.len() as u64,
            });
        }
        let computed = xxh3_64(body);
        if computed != stored {
            return Err(SnapshotError::Checksum { stored, computed });
        }
        if body.len() < TOC_BYTES {
            return Err(SnapshotError::Malformed {
                offset: 0,
                what: "no room for the section table".into(),
            });
        }
        let toc_at = body.len() - TOC_BYTES;
        let mut toc = [0u64; TOC_BYTES / 8];
        for (v, c) in toc.iter_mut().zip(body[toc_at..].chunks_exact(8)) {
            *v = u64::from_le_bytes(c.try_into().expect("chunks of 8"));
        }
        let [n_accounts, n_markets, n_ids, n_first, off_accounts, off_markets, off_ids, off_ids2, off_books, off_toc] =
            toc;
        let bad_toc = |what: &str| SnapshotError::Malformed {
            offset: toc_at,
            what: format!("section table: {what}"),
        };
        let offs = [
            off_accounts,
            off_markets,
            off_ids,
            off_ids2,
            off_books,
            off_toc,
        ];
        if off_toc != toc_at as u64 || offs.windows(2).any(|w| w[0] > w[1]) {
            return Err(bad_toc("offsets out of order or not ending at the table"));
        }
        let limit = u64::from(u32::MAX - 1);
        if n_accounts > limit.min(off_markets - off_accounts)
            || n_markets > limit.min(off_ids - off_markets)
            || n_ids > limit
            || n_first > n_ids
            || n_first.saturating_mul(6) > off_ids2 - off_ids
            || (n_ids - n_first).saturating_mul(6) > off_books - off_ids2
        {
            return Err(bad_toc("counts impossible for the section sizes"));
        }
        let (n_accounts, n_markets, n_ids, n_first) = (
            n_accounts as usize,
            n_markets as usize,
            n_ids as usize,
            n_first as usize,
        );
        let section = |from: u64, to: u64| Reader {
            b: &body[..to as usize],
            pos: from as usize,
        };

        // The vectors are rebuilt from the snapshot, so reserving (and
        // pre-faulting) here would be wasted: each vector and index is
        // instead allocated once at max(its size, its reservation).
        let mut eng = Engine::new(Config {
            reserve_ids: 0,
            reserve_orders: 0,
            reserve_markets: 0,
            ..cfg.clone()
        });
        let mut r = section(0, off_accounts);
        eng.seq = r.varint()?;
        let n = r.varint()?;
        if n < crate::chain::STATE as u64 || n >= (crate::chain::STATE + crate::chain::BLOCK) as u64
        {
            return Err(r.err(format!("chain state of {n} bytes is impossible")));
        }
        let chain = r.bytes(n as usize)?;
        eng.chain_buf.clear();
        eng.chain_buf.extend_from_slice(chain);
        r.end("the header")?;

        // Phase 1, both cores: names and the first half of the ids on one
        // thread; the second half of the ids and the books on this one. The
        // ids are decoded straight into their final vector, each half into
        // its own part of the slots.
        let mut ids: Vec<IdEntry> = Vec::with_capacity(n_ids.max(cfg.reserve_ids));
        crate::mem::advise_huge(&ids);
        let (slots_lo, slots_hi) = ids.spare_capacity_mut()[..n_ids].split_at_mut(n_first);
        let (first, second) = std::thread::scope(|s| {
            let job = s.spawn(|| -> Result<_, SnapshotError> {
                let mut r = section(off_accounts, off_markets);
                let mut accounts = Vec::with_capacity(n_accounts);
                for _ in 0..n_accounts {
                    accounts.push(r.sym()?);
                }
                r.end("the accounts")?;
                let mut r = section(off_markets, off_ids);
                let mut markets = Vec::with_capacity(n_markets.max(cfg.reserve_markets));
                crate::mem::advise_huge(&markets);
                for _ in 0..n_markets {
                    let name = r.sym()?;
                    if name.is_empty() {
                        return Err(r.err("empty market name"));
                    }
                    markets.push(Market {
                        name,
                        bids: Ladder::default(),
                        asks: Ladder::default(),
                    });
                }
                r.end("the markets")?;
                let mut r = section(off_ids, off_ids2);
                let filled = decode_ids(&mut r, slots_lo, n_markets, n_accounts)?;
                r.end("the first half of the ids")?;
                Ok((accounts, markets, filled))
            });
            let second = decode_second_half(
                section(off_ids2, off_books),
                section(off_books, off_toc),
                slots_hi,
                (n_markets, n_accounts, n_ids, cfg.reserve_orders),
            );
            let first = job.join().unwrap_or_else(|_| {
                Err(SnapshotError::Malformed {
                    offset: 0,
                    what: "decoder thread panicked".into(),
                })
            });
            (first, second)
        });
        // Both halves decoded whole, or (dropping them) an error.
        let ((accounts, markets, lo), (hi, mut books)) = (first?, second?);
        let n = lo.keep() + hi.keep();
        assert_eq!(n, n_ids, "every id slot is written");
        #[allow(unsafe_code)]
        // SAFETY: the first `n_ids` slots of the capacity were all written
        // (each half wrote every slot of its part, `decode_ids` fails
        // otherwise) and handed over by `keep`, which no longer drops them.
        unsafe {
            ids.set_len(n_ids);
        }
        eng.accounts = accounts;
        eng.markets = markets;
        eng.ids = ids;

        // Phase 2, both cores: the id index on one thread; the name indexes
        // and the books on this one (the books only read the id entries and
        // record each order's slab index aside; `build_books` splits them
        // over both threads again).
        let Engine {
            ref hasher,
            ref ids,
            ref mut markets,
            ref accounts,
            ..
        } = eng;
        let (id_table, tables, linked) = std::thread::scope(|s| {
            let job = s.spawn(|| id_table_of(hasher, ids, cfg.reserve_ids));
            let tables = name_tables_of(hasher, markets, accounts, cfg.reserve_markets);
            let linked = build_books(ids, markets, &mut books);
            let id_table = job
                .join()
                .unwrap_or_else(|_| Err("id index builder panicked".to_owned()));
            (id_table, tables, linked)
        });
        let at = |what| SnapshotError::Malformed {
            offset: off_books as usize,
            what,
        };
        eng.id_table = id_table.map_err(at)?;
        (eng.market_table, eng.account_table) = tables.map_err(at)?;
        let id_order = linked.map_err(at)?;
        eng.levels = books.levels;
        eng.orders = books.orders;
        eng.live_orders = eng.orders.len() as u32;
        eng.account_open = vec![0; eng.accounts.len()];
        for ord in &eng.orders {
            eng.account_open[ord.account as usize] += 1;
        }
        for (ix, (e, &o)) in eng.ids.iter_mut().zip(&id_order).enumerate() {
            if (e.status() == OrderStatus::Open) != (o != NONE) {
                return Err(at(format!(
                    "id {ix} is open without a resting order or the reverse"
                )));
            }
            e.order = o;
        }
        // Every rule `check_invariants` checks holds by construction above;
        // the tests and fuzz targets run it on every restored engine.
        eng.cfg = cfg;
        Ok(eng)
    }
}
