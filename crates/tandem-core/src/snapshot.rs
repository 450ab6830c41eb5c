//! Snapshots: the whole engine state in a versioned, checksummed binary
//! format, and its strict decoder.
//!
//! ```text
//! "TNDMSNAP" | version u32 LE | body | body_len u64 LE | xxh3_64(body) u64 LE
//! body (integers are LEB128 varints, str = varint len ‖ UTF-8 bytes):
//!   seq | chain state (varint len ‖ folded state ‖ pending bytes, see chain.rs)
//!   accounts:  str × n_accounts                  (index order)
//!   markets:   name str × n_markets              (index order)
//!   ids:       (market, id str, account, flags u8, price, qty) × n_ids,
//!              in two halves (the second starts at off_ids2)
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
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::command::Side;
use crate::engine::{
    id_table_of, key_of, name_tables_of, prefetch, Config, Engine, IdEntry, Ladder, Level, Market,
    Order, OrderStatus, Rung, NONE,
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

/// Decoded book records: per (market, side) the first level, then per
/// level (price, first order), then per order (id index, qty); each list
/// ends with a sentinel so ranges are `[i]..[i + 1]`.
type BookRecs = (Vec<u32>, Vec<(u64, u32)>, Vec<(u32, u64)>);

/// First pass over the books: decodes and checks level order only.
fn decode_books(
    r: &mut Reader<'_>,
    n_markets: usize,
    n_ids: usize,
) -> Result<BookRecs, SnapshotError> {
    let mut side_starts: Vec<u32> = Vec::with_capacity(2 * n_markets + 1);
    let mut lv_recs: Vec<(u64, u32)> = Vec::new();
    let mut ord_recs: Vec<(u32, u64)> = Vec::new();
    for _ in 0..n_markets {
        for side in [Side::Buy, Side::Sell] {
            side_starts.push(lv_recs.len() as u32);
            let n_levels = r.count(3, u64::from(u32::MAX - 1), "levels")?;
            let mut last_key = None;
            for _ in 0..n_levels {
                let price = r.units("level price")?;
                let key = key_of(side, price);
                if last_key.is_some_and(|k| k <= key) {
                    return Err(r.err("levels not in strict best-first order"));
                }
                last_key = Some(key);
                lv_recs.push((price, ord_recs.len() as u32));
                let n_orders = r.count(2, u64::from(u32::MAX - 1), "orders")?;
                if n_orders == 0 {
                    return Err(r.err("empty level"));
                }
                for _ in 0..n_orders {
                    let ix = r.index(n_ids, "order's id")?;
                    let qty = r.units("order qty")?;
                    ord_recs.push((ix, qty));
                }
            }
        }
    }
    side_starts.push(lv_recs.len() as u32);
    lv_recs.push((0, ord_recs.len() as u32));
    Ok((side_starts, lv_recs, ord_recs))
}

/// Bytes of the section table at the end of the body: ten u64 LE.
const TOC_BYTES: usize = 80;

/// Decodes `n` id entries, checking each field.
fn decode_ids(
    r: &mut Reader<'_>,
    n: usize,
    n_markets: usize,
    n_accounts: usize,
    out: &mut Vec<IdEntry>,
) -> Result<(), SnapshotError> {
    for _ in 0..n {
        let market = r.index(n_markets, "id's market")?;
        let id = r.sym()?;
        let account = r.index(n_accounts, "id's account")?;
        let flags = r.u8()?;
        if flags & !0b1_1111 != 0 || (flags >> 3) == 3 {
            return Err(r.err(format!("id flags {flags:#x} invalid")));
        }
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
        });
    }
    Ok(())
}

/// Links the decoded books into levels, orders and ladders, on two threads
/// (the markets split where about half the orders lie). A level's and an
/// order's slab index is its record's index, so each half writes its own
/// disjoint part of `levels` and `orders`. Reads each order's id entry (a
/// random access into a large array, so it prefetches a few orders ahead)
/// and returns, per id, the slab index of its resting order or NONE, for
/// the caller to store once the id index is built.
fn build_books(
    ids: &[IdEntry],
    markets: &mut [Market],
    levels: &mut Vec<Level>,
    orders: &mut Vec<Order>,
    recs: &BookRecs,
    reserve_orders: usize,
) -> Result<Vec<u32>, String> {
    let (side_starts, lv_recs, ord_recs) = recs;
    let empty_level = Level {
        price: 0,
        head: NONE,
        tail: NONE,
    };
    levels.clear();
    levels.reserve_exact(lv_recs.len() - 1);
    crate::mem::advise_huge(levels);
    levels.resize(lv_recs.len() - 1, empty_level);
    orders.clear();
    orders.reserve_exact(ord_recs.len().max(reserve_orders));
    crate::mem::advise_huge(orders);
    orders.resize(ord_recs.len(), Order::prefault_filler());
    let id_order: Vec<AtomicU32> = (0..ids.len()).map(|_| AtomicU32::new(NONE)).collect();
    // First level and first order record of market `m` (m may be n_markets).
    let level_of = |m: usize| side_starts[2 * m] as usize;
    let order_of = |m: usize| lv_recs[level_of(m)].1 as usize;
    let n_markets = markets.len();
    let half = ord_recs.len() / 2;
    let mut k = 0;
    let mut hi = n_markets;
    while k < hi {
        let mid = (k + hi) / 2;
        if order_of(mid) < half {
            k = mid + 1;
        } else {
            hi = mid;
        }
    }
    let (m_lo, m_hi) = markets.split_at_mut(k);
    let (l_lo, l_hi) = levels.split_at_mut(level_of(k));
    let (o_lo, o_hi) = orders.split_at_mut(order_of(k));
    let (lo, hi) = std::thread::scope(|s| {
        let job = s.spawn(|| build_range(ids, m_hi, k, l_hi, o_hi, recs, &id_order));
        let lo = build_range(ids, m_lo, 0, l_lo, o_lo, recs, &id_order);
        let hi = job
            .join()
            .unwrap_or_else(|_| Err("book builder panicked".to_owned()));
        (lo, hi)
    });
    lo?;
    hi?;
    Ok(id_order.into_iter().map(AtomicU32::into_inner).collect())
}

/// Builds the books of `markets` (which start at market index `m_base`)
/// into `levels` and `orders`, the parts of the slabs their records own.
fn build_range(
    ids: &[IdEntry],
    markets: &mut [Market],
    m_base: usize,
    levels: &mut [Level],
    orders: &mut [Order],
    recs: &BookRecs,
    id_order: &[AtomicU32],
) -> Result<(), String> {
    const AHEAD: usize = 16;
    let (side_starts, lv_recs, ord_recs) = recs;
    let l_base = side_starts[2 * m_base] as usize;
    let o_base = lv_recs[l_base].1 as usize;
    for (i, market) in markets.iter_mut().enumerate() {
        let m = m_base + i;
        for (si, side) in [Side::Buy, Side::Sell].into_iter().enumerate() {
            let (first, end) = (
                side_starts[2 * m + si] as usize,
                side_starts[2 * m + si + 1] as usize,
            );
            let mut rungs = Vec::with_capacity(end - first);
            for l in first..end {
                let (price, o_first) = lv_recs[l];
                let o_end = lv_recs[l + 1].1;
                let lv = l - l_base;
                levels[lv].price = price;
                rungs.push(Rung {
                    key: key_of(side, price),
                    level: l as u32,
                });
                for k in o_first as usize..o_end as usize {
                    if let Some(&(ahead, _)) = ord_recs.get(k + AHEAD) {
                        prefetch(&ids[ahead as usize]);
                    }
                    let (ix, qty) = ord_recs[k];
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
                    orders[k - o_base] = Order {
                        qty,
                        id: ix,
                        account: e.account,
                        prev: tail,
                        next: NONE,
                        level: l as u32,
                    };
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
            w.put(&[e.flags])?;
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
        // thread; the second half of the ids and the books on this one.
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
                let mut ids = Vec::with_capacity(n_ids.max(cfg.reserve_ids));
                crate::mem::advise_huge(&ids);
                let mut r = section(off_ids, off_ids2);
                decode_ids(&mut r, n_first, n_markets, n_accounts, &mut ids)?;
                r.end("the first half of the ids")?;
                Ok((accounts, markets, ids))
            });
            let second = (|| -> Result<_, SnapshotError> {
                let mut ids = Vec::with_capacity(n_ids - n_first);
                let mut r = section(off_ids2, off_books);
                decode_ids(&mut r, n_ids - n_first, n_markets, n_accounts, &mut ids)?;
                r.end("the second half of the ids")?;
                let mut r = section(off_books, off_toc);
                let books = decode_books(&mut r, n_markets, n_ids)?;
                r.end("the books")?;
                Ok((ids, books))
            })();
            let first = job.join().unwrap_or_else(|_| {
                Err(SnapshotError::Malformed {
                    offset: 0,
                    what: "decoder thread panicked".into(),
                })
            });
            (first, second)
        });
        let (accounts, markets, mut ids) = first?;
        let (mut ids2, books) = second?;
        ids.append(&mut ids2);
        drop(ids2);
        eng.accounts = accounts;
        eng.markets = markets;
        eng.ids = ids;

        // Phase 2, both cores: the id index on one thread; the name indexes
        // and the books on this one (the books only read the id entries and
        // record each order's slab index aside).
        let Engine {
            ref hasher,
            ref ids,
            ref mut markets,
            ref accounts,
            ref mut levels,
            ref mut orders,
            ..
        } = eng;
        let (id_table, tables, books) = std::thread::scope(|s| {
            let job = s.spawn(|| id_table_of(hasher, ids, cfg.reserve_ids));
            let tables = name_tables_of(hasher, markets, accounts, cfg.reserve_markets);
            let books = build_books(ids, markets, levels, orders, &books, cfg.reserve_orders);
            let id_table = job
                .join()
                .unwrap_or_else(|_| Err("id index builder panicked".to_owned()));
            (id_table, tables, books)
        });
        let at = |what| SnapshotError::Malformed {
            offset: off_books as usize,
            what,
        };
        eng.id_table = id_table.map_err(at)?;
        (eng.market_table, eng.account_table) = tables.map_err(at)?;
        let id_order = books.map_err(at)?;
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
