//! Snapshots: the whole engine state in a versioned, checksummed binary
//! format, and its strict decoder.
//!
//! ```text
//! "TNDMSNAP" | version u32 LE | body | body_len u64 LE | xxh3_64(body) u64 LE
//! body (integers are LEB128 varints, str = varint len ‖ UTF-8 bytes):
//!   seq | chain (16 bytes LE)
//!   accounts: n | str × n                       (index order)
//!   markets:  n | name str × n                  (index order)
//!   ids:      n | (market, id str, account, flags u8, price, qty) × n
//!   books:    per market, bids then asks, best level first:
//!             levels | (price | orders | (id index, qty) × orders) × levels
//! ```
//! Everything that reaches output (names, ids, priorities, quantities, the
//! chain) is in the snapshot; slab positions and hash-table layout are not,
//! so a restored engine continues exactly as the original would have.
//! `restore` checks the checksum first and then every structural rule, so a
//! truncated, corrupt or hostile snapshot is an error, never a panic.

use std::io::{self, Write};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::command::Side;
use crate::engine::{key_of, Config, Engine, IdEntry, Level, Order, OrderStatus, Rung, NONE};
use crate::num::MAX_UNITS;
use crate::Sym;

const MAGIC: &[u8; 8] = b"TNDMSNAP";
/// Format version written by this build.
pub const VERSION: u32 = 1;

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

struct HashingWriter<W> {
    inner: W,
    hash: Xxh3,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.hash.update(b);
        self.len += b.len() as u64;
        self.inner.write_all(b)
    }
    fn varint(&mut self, mut v: u64) -> io::Result<()> {
        let mut buf = [0u8; 10];
        let mut i = 0;
        while v >= 0x80 {
            buf[i] = (v as u8) | 0x80;
            v >>= 7;
            i += 1;
        }
        buf[i] = v as u8;
        self.put(&buf[..=i])
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
    fn varint(&mut self) -> Result<u64, SnapshotError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
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

impl Engine {
    /// Writes the whole state to `w` (wrap a file in a `BufWriter`).
    pub fn snapshot_to<W: Write>(&self, w: W) -> io::Result<()> {
        let mut w = HashingWriter {
            inner: w,
            hash: Xxh3::new(),
            len: 0,
        };
        w.inner.write_all(MAGIC)?;
        w.inner.write_all(&VERSION.to_le_bytes())?;
        w.varint(self.seq)?;
        w.put(&self.chain.to_le_bytes())?;
        w.varint(self.accounts.len() as u64)?;
        for a in &self.accounts {
            w.str(a)?;
        }
        w.varint(self.markets.len() as u64)?;
        for m in &self.markets {
            w.str(&m.name)?;
        }
        w.varint(self.ids.len() as u64)?;
        for e in &self.ids {
            w.varint(u64::from(e.market))?;
            w.str(&e.id)?;
            w.varint(u64::from(e.account))?;
            w.put(&[e.flags])?;
            w.varint(e.price)?;
            w.varint(e.qty)?;
        }
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
        let mut r = Reader { b: body, pos: 0 };
        let mut eng = Engine::new(cfg);
        eng.seq = r.varint()?;
        eng.chain = u128::from_le_bytes(r.bytes(16)?.try_into().expect("16 bytes"));

        let n = r.count(1, u64::from(u32::MAX - 1), "accounts")?;
        eng.accounts.reserve(n);
        for _ in 0..n {
            let s = r.sym()?;
            if eng.find_account(s.as_bytes()).is_some() {
                return Err(r.err(format!("account {s:?} listed twice")));
            }
            eng.push_account(s);
        }
        let n = r.count(1, u64::from(u32::MAX - 1), "markets")?;
        eng.markets.reserve(n);
        for _ in 0..n {
            let s = r.sym()?;
            if s.is_empty() || eng.find_market(s.as_bytes()).is_some() {
                return Err(r.err(format!("market {s:?} empty or listed twice")));
            }
            eng.push_market(s);
        }
        let n = r.count(6, u64::from(u32::MAX - 1), "ids")?;
        eng.ids.reserve_exact(n);
        eng.reserve_id_table(n);
        let (n_markets, n_accounts) = (eng.markets.len(), eng.accounts.len());
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
            let entry = IdEntry {
                id,
                market,
                order: NONE,
                account,
                flags,
                price,
                qty,
            };
            if let Err(dup) = eng.try_push_id(entry) {
                return Err(r.err(format!("id {dup} listed twice")));
            }
        }
        let n_ids = eng.ids.len();
        for m in 0..n_markets {
            for side in [Side::Buy, Side::Sell] {
                let n_levels = r.count(3, u64::from(u32::MAX - 1), "levels")?;
                let mut rungs = Vec::with_capacity(n_levels);
                for _ in 0..n_levels {
                    let price = r.units("level price")?;
                    let key = key_of(side, price);
                    if rungs.last().is_some_and(|last: &Rung| last.key <= key) {
                        return Err(r.err("levels not in strict best-first order"));
                    }
                    let lvl = eng.levels.len() as u32;
                    eng.levels.push(Level {
                        price,
                        head: NONE,
                        tail: NONE,
                    });
                    rungs.push(Rung { key, level: lvl });
                    let n_orders = r.count(2, u64::from(u32::MAX - 1), "orders")?;
                    if n_orders == 0 {
                        return Err(r.err("empty level"));
                    }
                    for _ in 0..n_orders {
                        let ix = r.index(n_ids, "order's id")?;
                        let qty = r.units("order qty")?;
                        let e = &eng.ids[ix as usize];
                        if e.market as usize != m
                            || e.side() != side
                            || e.status() != OrderStatus::Open
                            || e.order != NONE
                        {
                            return Err(r.err(format!("order {ix} does not belong here")));
                        }
                        let o = eng.orders.len() as u32;
                        let tail = eng.levels[lvl as usize].tail;
                        eng.orders.push(Order {
                            qty,
                            id: ix,
                            account: e.account,
                            prev: tail,
                            next: NONE,
                            level: lvl,
                        });
                        if tail == NONE {
                            eng.levels[lvl as usize].head = o;
                        } else {
                            eng.orders[tail as usize].next = o;
                        }
                        eng.levels[lvl as usize].tail = o;
                        eng.ids[ix as usize].order = o;
                        eng.live_orders += 1;
                    }
                }
                rungs.reverse();
                eng.markets[m].ladder_mut(side).rungs = rungs;
            }
        }
        if r.pos != body.len() {
            return Err(r.err("trailing bytes after the books"));
        }
        if let Some(ix) = eng
            .ids
            .iter()
            .position(|e| (e.status() == OrderStatus::Open) != (e.order != NONE))
        {
            return Err(SnapshotError::Malformed {
                offset: r.pos,
                what: format!("id {ix} is open without a resting order or the reverse"),
            });
        }
        eng.check_invariants()
            .map_err(|what| SnapshotError::Malformed {
                offset: r.pos,
                what,
            })?;
        Ok(eng)
    }
}
