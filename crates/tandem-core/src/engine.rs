//! The state machine: `Engine::apply(seq, &Command, &mut events)`.
//!
//! Layout, chosen for speed and for memory at millions of markets:
//! - every taken order id lives for good in `ids` (append-only; its index is
//!   the `IdIx` events carry) and is found through `id_table`, a hash table
//!   of indices keyed by (market, id);
//! - a market's side is a `Ladder`: price levels sorted so that the best is
//!   last, keyed by `price` for bids and `!price` for asks, so "best" is
//!   always `last()` and price-time priority lives in the key order plus the
//!   FIFO list inside a level;
//! - resting orders and levels are slab entries linked by `u32` indices.
//!
//! Levels emptied by a cancel below the top stay in the ladder (counted in
//! `empties`) and are swept when they reach the top or when they outnumber
//! live levels, so cancel-by-id is O(1) amortised and the best price O(1).
//! Inserting a new price level costs a search plus a move of the levels
//! better than it (near the touch: a handful).
//!
//! Hash tables are seeded from `Config::hash_seed`; their layout never
//! reaches output (nothing iterates them), which a test checks by running
//! the same flow under different seeds.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::command::{Amend, Cancel, Command, OrderKind, Place, Side, Tif};
use crate::event::{CancelReason, Event, IdIx, MarketIx, RejectReason};
use crate::hash::KeyHasher;
use crate::table::IndexTable;
use crate::{Price, Qty, Sym};

pub(crate) const NONE: u32 = u32::MAX;

/// Markets beyond which `Engine::look_ahead` prefetches two stages deeper
/// (see there): with fewer, their books mostly stay in cache and the extra
/// lookups cost more than the misses they would save.
pub(crate) const DEEP_MARKETS: usize = 1 << 16;

/// Hints the CPU to bring `p` into cache: used where a loop knows the
/// random addresses it will touch a few iterations ahead (the node's
/// idempotency window uses it too). Changes no value; nothing elsewhere
/// than x86-64.
#[inline(always)]
pub fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: a prefetch is only a hint: it never faults, reads nothing
    // into the program and writes nothing; `p` is a valid reference anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (p as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `prefetch` of every cache line `p` spans (first and last byte: for
/// values of at most 64 bytes that is all of them). A registry entry is
/// 56 bytes, so six of every eight straddle two lines.
#[inline(always)]
pub(crate) fn prefetch_all<T>(p: &T) {
    prefetch(p);
    if std::mem::size_of::<T>() > 1 {
        let last = (p as *const T)
            .cast::<u8>()
            .wrapping_add(std::mem::size_of::<T>() - 1);
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: a prefetch is only a hint and never faults; `last` is the
        // last byte of the referenced value anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                last.cast::<i8>(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = last;
    }
}

/// Limits and the hash seed. Every limit, when reached, rejects the command
/// with reason `limit` and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Seed of the internal hash tables. Any value gives the same output.
    pub hash_seed: u64,
    /// Longest market name, id or account accepted in a `place`, in bytes.
    pub max_symbol_bytes: usize,
    /// Most markets.
    pub max_markets: u32,
    /// Most orders resting at once, over all markets.
    pub max_live_orders: u32,
    /// Most ids ever taken, over all markets.
    pub max_ids: u32,
    /// Most orders one account may have resting at once, over all markets
    /// (a `gtc` limit place beyond it is rejected with reason `limit`).
    pub max_open_per_account: u32,
    /// Ids to make room for up front, so the registry neither reallocates
    /// nor rehashes until then (a latency spike otherwise).
    pub reserve_ids: usize,
    /// Resting orders to make room for up front.
    pub reserve_orders: usize,
    /// Markets to make room for up front.
    pub reserve_markets: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hash_seed: 0x7a6e_6465_6d00_0001,
            max_symbol_bytes: 1024,
            max_markets: 1 << 26,
            max_live_orders: NONE - 1,
            max_ids: NONE - 1,
            max_open_per_account: NONE - 1,
            reserve_ids: 0,
            reserve_orders: 0,
            reserve_markets: 0,
        }
    }
}

/// Lifecycle of a taken id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Open,
    Filled,
    Cancelled,
}

const F_SELL: u8 = 1;
const F_POST_ONLY: u8 = 2;
const F_MARKET: u8 = 4;
const F_STATUS_SHIFT: u8 = 3;
const F_STATUS_MASK: u8 = 3 << F_STATUS_SHIFT;
/// In a snapshot only: the entry's `changes` follows its flags (entries
/// with no based amend, and every snapshot before bases existed, omit it).
pub(crate) const F_HAS_CHANGES: u8 = 1 << 5;

/// One taken id. Kept for good: ids are never reused in a market.
#[derive(Debug, Clone)]
pub(crate) struct IdEntry {
    pub(crate) id: Sym,
    pub(crate) market: MarketIx,
    /// Slab index of the resting order, or NONE once it is not live.
    pub(crate) order: u32,
    pub(crate) account: u32,
    pub(crate) flags: u8,
    /// Limit price in units (0 for a market order), as last placed/amended.
    pub(crate) price: u64,
    /// Quantity in units, as last placed/amended.
    pub(crate) qty: u64,
    /// Based amends (`Amend::base`) that took effect on this order,
    /// wrapping (it sits in the entry's padding: no memory added).
    pub(crate) changes: u16,
}

// `changes` lives in what was padding: an id still costs 56 bytes.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<IdEntry>() == 56);

impl IdEntry {
    fn prefault_filler() -> Self {
        IdEntry {
            id: Sym::new(""),
            market: 0,
            order: NONE,
            account: 0,
            flags: 0,
            price: 0,
            qty: 0,
            changes: 0,
        }
    }
    pub(crate) fn side(&self) -> Side {
        if self.flags & F_SELL != 0 {
            Side::Sell
        } else {
            Side::Buy
        }
    }
    pub(crate) fn post_only(&self) -> bool {
        self.flags & F_POST_ONLY != 0
    }
    pub(crate) fn status(&self) -> OrderStatus {
        match (self.flags & F_STATUS_MASK) >> F_STATUS_SHIFT {
            0 => OrderStatus::Open,
            1 => OrderStatus::Filled,
            _ => OrderStatus::Cancelled,
        }
    }
    fn status_bits(s: OrderStatus) -> u8 {
        let code = match s {
            OrderStatus::Open => 0,
            OrderStatus::Filled => 1,
            OrderStatus::Cancelled => 2,
        };
        code << F_STATUS_SHIFT
    }
    fn set_status(&mut self, s: OrderStatus) {
        self.flags = (self.flags & !F_STATUS_MASK) | Self::status_bits(s);
    }
    pub(crate) fn make_flags(side: Side, post_only: bool, market: bool, status: OrderStatus) -> u8 {
        (if side == Side::Sell { F_SELL } else { 0 })
            | (if post_only { F_POST_ONLY } else { 0 })
            | (if market { F_MARKET } else { 0 })
            | Self::status_bits(status)
    }
}

/// A resting order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Order {
    pub(crate) qty: u64,
    pub(crate) id: IdIx,
    pub(crate) account: u32,
    pub(crate) prev: u32,
    pub(crate) next: u32,
    pub(crate) level: u32,
}

impl Order {
    pub(crate) fn prefault_filler() -> Self {
        Order {
            qty: 0,
            id: NONE,
            account: NONE,
            prev: NONE,
            next: NONE,
            level: NONE,
        }
    }
}

/// A price level: a FIFO list of resting orders.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Level {
    pub(crate) price: u64,
    pub(crate) head: u32,
    pub(crate) tail: u32,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Rung {
    pub(crate) key: u64,
    pub(crate) level: u32,
}

/// One side of a book: levels sorted by key ascending, best last.
#[derive(Debug, Default, Clone)]
pub(crate) struct Ladder {
    pub(crate) rungs: Vec<Rung>,
    /// Empty levels left in `rungs` below the top.
    pub(crate) empties: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Market {
    pub(crate) name: Sym,
    pub(crate) bids: Ladder,
    pub(crate) asks: Ladder,
}

impl Market {
    pub(crate) fn ladder_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }
    pub(crate) fn ladder_ref(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }
}

#[inline]
pub(crate) fn key_of(side: Side, price: u64) -> u64 {
    match side {
        Side::Buy => price,
        Side::Sell => !price,
    }
}

/// Does a `side` order limited at `limit` accept a resting `price`?
#[inline]
fn acceptable(side: Side, limit: Option<u64>, price: u64) -> bool {
    match (limit, side) {
        (None, _) => true,
        (Some(l), Side::Buy) => price <= l,
        (Some(l), Side::Sell) => price >= l,
    }
}

/// The matching state machine. See the module doc.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) cfg: Config,
    pub(crate) hasher: KeyHasher,
    pub(crate) markets: Vec<Market>,
    pub(crate) market_table: IndexTable,
    pub(crate) accounts: Vec<Sym>,
    pub(crate) account_table: IndexTable,
    /// Resting orders per account (same index as `accounts`).
    pub(crate) account_open: Vec<u32>,
    pub(crate) ids: Vec<IdEntry>,
    pub(crate) id_table: IndexTable,
    pub(crate) orders: Vec<Order>,
    pub(crate) free_orders: Vec<u32>,
    pub(crate) levels: Vec<Level>,
    pub(crate) free_levels: Vec<u32>,
    pub(crate) live_orders: u32,
    pub(crate) seq: u64,
    /// The chain's running state: 16 bytes of folded blocks, then the
    /// canonical bytes not yet folded (see `chain.rs`).
    pub(crate) chain_buf: Vec<u8>,
    /// The market found last (a lookup cache; never reaches output).
    pub(crate) last_market: LastMarket,
}

/// A one-entry lookup cache; atomic only so that `Engine` stays `Sync`.
#[derive(Debug)]
pub(crate) struct LastMarket(AtomicU32);

impl Clone for LastMarket {
    fn clone(&self) -> Self {
        LastMarket(AtomicU32::new(self.0.load(Relaxed)))
    }
}

/// A read-only view of one order id, live or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderInfo {
    pub side: Side,
    /// Limit price as last placed or amended; `None` for a market order.
    pub price: Option<Price>,
    /// Quantity as last placed or amended.
    pub qty: Qty,
    /// What is still resting (zero unless open).
    pub remaining: u64,
    pub status: OrderStatus,
    pub post_only: bool,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(Config::default())
    }
}

impl Engine {
    /// An empty engine at seq 0.
    pub fn new(cfg: Config) -> Self {
        let mut eng = Engine::bare(cfg);
        let c = &eng.cfg;
        let (ids, orders, markets) = (c.reserve_ids, c.reserve_orders, c.reserve_markets);
        // Reserved memory is touched now, so the page faults (and huge-page
        // zeroing) happen here rather than as latency spikes while matching.
        eng.ids.reserve_exact(ids);
        crate::mem::advise_huge(&eng.ids);
        eng.ids.resize(ids, IdEntry::prefault_filler());
        eng.ids.clear();
        eng.id_table.reserve(ids);
        eng.orders.reserve_exact(orders);
        crate::mem::advise_huge(&eng.orders);
        eng.orders.resize(orders, Order::prefault_filler());
        eng.orders.clear();
        eng.levels.reserve(orders.min(1 << 20));
        eng.markets.reserve_exact(markets);
        eng.market_table.reserve(markets);
        eng
    }

    fn bare(cfg: Config) -> Self {
        Engine {
            hasher: KeyHasher::new(cfg.hash_seed),
            cfg,
            markets: Vec::new(),
            market_table: IndexTable::default(),
            accounts: Vec::new(),
            account_table: IndexTable::default(),
            account_open: Vec::new(),
            ids: Vec::new(),
            id_table: IndexTable::default(),
            orders: Vec::new(),
            free_orders: Vec::new(),
            levels: Vec::new(),
            free_levels: Vec::new(),
            live_orders: 0,
            seq: 0,
            chain_buf: crate::chain::initial_buf(),
            last_market: LastMarket(AtomicU32::new(NONE)),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Seq of the last applied command (0 before any).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The output hash chain after the last applied command.
    pub fn chain(&self) -> u128 {
        crate::chain::digest(&self.chain_buf)
    }

    /// Markets that have had an accepted order.
    pub fn market_count(&self) -> usize {
        self.markets.len()
    }

    /// Orders resting now, over all markets.
    pub fn live_orders(&self) -> u32 {
        self.live_orders
    }

    /// Ids taken so far, over all markets.
    pub fn taken_ids(&self) -> usize {
        self.ids.len()
    }

    /// Name of a market index from an event.
    pub fn market_name(&self, m: MarketIx) -> &Sym {
        &self.markets[m as usize].name
    }

    /// Order id string of an id index from an event.
    pub fn order_id(&self, ix: IdIx) -> &Sym {
        &self.ids[ix as usize].id
    }

    /// Index of a market by name.
    pub fn find_market(&self, name: &[u8]) -> Option<MarketIx> {
        self.market_table.find(self.str_hash(name), |m| {
            self.markets[m as usize].name.as_bytes() == name
        })
    }

    /// Markets in byte order of their names.
    pub fn markets_by_name(&self) -> Vec<MarketIx> {
        let mut v: Vec<MarketIx> = (0..self.markets.len() as u32).collect();
        v.sort_unstable_by(|&a, &b| {
            self.markets[a as usize]
                .name
                .cmp(&self.markets[b as usize].name)
        });
        v
    }

    /// An order of `account` by market and id, live or not.
    pub fn order(&self, market: &[u8], id: &[u8], account: &[u8]) -> Option<OrderInfo> {
        let m = self.find_market(market)?;
        let a = self.find_account(account)?;
        let ix = self.find_id(m, id)?;
        let e = &self.ids[ix as usize];
        if e.account != a {
            return None;
        }
        Some(OrderInfo {
            side: e.side(),
            price: if e.flags & F_MARKET != 0 {
                None
            } else {
                Price::from_units(e.price)
            },
            qty: Qty::raw(e.qty),
            remaining: if e.order == NONE {
                0
            } else {
                self.orders[e.order as usize].qty
            },
            status: e.status(),
            post_only: e.post_only(),
        })
    }

    /// How many based amends (`Amend::base`) took effect on this order,
    /// wrapping at 65,536; 0 for an id not taken (yet) or another
    /// account's. A node puts it in the amends it appends as their base.
    pub fn order_changes(&self, market: &[u8], id: &[u8], account: &[u8]) -> u16 {
        let found = self.find_market(market).and_then(|m| {
            let a = self.find_account(account)?;
            let e = &self.ids[self.find_id(m, id)? as usize];
            (e.account == a).then_some(e.changes)
        });
        found.unwrap_or(0)
    }

    /// Resting orders of one side of a market, best first, then by time:
    /// `(id, price, qty)`.
    pub fn book_side(
        &self,
        m: MarketIx,
        side: Side,
    ) -> impl Iterator<Item = (IdIx, Price, Qty)> + '_ {
        let ladder = self.markets[m as usize].ladder_ref(side);
        ladder.rungs.iter().rev().flat_map(move |r| {
            let lv = self.levels[r.level as usize];
            let mut o = lv.head;
            std::iter::from_fn(move || {
                if o == NONE {
                    return None;
                }
                let ord = &self.orders[o as usize];
                o = ord.next;
                Some((ord.id, Price(lv.price), Qty::raw(ord.qty)))
            })
        })
    }

    /// Aggregated levels of one side, best first: `(price, total qty)`.
    /// The total saturates at `u64::MAX` units.
    pub fn depth(&self, m: MarketIx, side: Side, max_levels: usize) -> Vec<(Price, u64)> {
        let ladder = self.markets[m as usize].ladder_ref(side);
        let mut out = Vec::new();
        for r in ladder.rungs.iter().rev() {
            if out.len() >= max_levels {
                break;
            }
            let lv = self.levels[r.level as usize];
            let mut total: u64 = 0;
            let mut o = lv.head;
            while o != NONE {
                total = total.saturating_add(self.orders[o as usize].qty);
                o = self.orders[o as usize].next;
            }
            if lv.head != NONE {
                out.push((Price(lv.price), total));
            }
        }
        out
    }

    /// Applies one command at `seq` (which must exceed the last one),
    /// appending its events to `out`, and folds them into the hash chain.
    ///
    /// The chain's bytes are written as the events are made (`emit`):
    /// `seq` first, then each event where the code knows its kind, so
    /// encoding takes no loop over the events and no jump on their kind.
    pub fn apply(&mut self, seq: u64, cmd: &Command, out: &mut Vec<Event>) {
        assert!(seq > self.seq, "seq {seq} not after {}", self.seq);
        self.chain_begin(seq);
        match cmd {
            Command::Place(p) => self.place(p, out),
            Command::Cancel(c) => self.cancel(c, out),
            Command::Amend(a) => self.amend(a, out),
            Command::Invalid(i) => self.emit(
                out,
                Event::Rejected {
                    market: i.market.clone(),
                    id: i.id.clone(),
                    reason: RejectReason::Invalid,
                },
            ),
        }
        self.seq = seq;
        self.chain_end();
    }

    /// Appends `ev` to `out` and its canonical bytes to the chain.
    #[inline(always)]
    fn emit(&mut self, out: &mut Vec<Event>, ev: Event) {
        crate::chain::encode(&self.markets, &self.ids, &ev, &mut self.chain_buf);
        out.push(ev);
    }

    /// Prefetches for the commands coming next, so that their cache misses
    /// overlap instead of queueing: `upcoming(k)` is the command `k` places
    /// after the one about to be applied (`None` past the end). Call it
    /// before each `apply` of a batch; it changes nothing. It runs the two
    /// stages below at the distances that measured best here: the market's
    /// index slot 16 ahead, the id index line 8 ahead (where the market is
    /// then found in cache), and for a cancel or amend its registry entry
    /// 4 ahead (the entry of an old id is a cache miss that the index line
    /// alone does not cover; places skip this stage, their entry is new).
    ///
    /// When the books are large (more markets than `DEEP_MARKETS`, so
    /// a market's ladders, levels and orders are rarely in cache) the
    /// third stage also loads the top rungs of the market, and a fourth
    /// loads the top levels and a cancel's or amend's order 2 ahead.
    #[inline]
    pub fn look_ahead<'a>(&self, upcoming: impl Fn(usize) -> Option<&'a Command>) {
        if let Some(c) = upcoming(16) {
            self.prefetch_market(c);
        }
        if let Some(c) = upcoming(8) {
            self.prefetch(c);
        }
        if self.markets.len() > DEEP_MARKETS {
            if let Some(c) = upcoming(4) {
                self.prefetch_book(c, false);
            }
            if let Some(c) = upcoming(2) {
                self.prefetch_book(c, true);
            }
        } else if let Some(c @ (Command::Cancel(_) | Command::Amend(_))) = upcoming(4) {
            self.prefetch_entry(c);
        }
    }

    /// The registry entry a cancel or amend will read (both cache lines
    /// it may straddle), found through the index line `prefetch` loaded (a
    /// guess by hash bits: a wrong guess only loads a line for nothing).
    #[inline]
    fn prefetch_entry(&self, cmd: &Command) {
        let (market, id) = match cmd {
            Command::Cancel(c) => (&c.market, &c.id),
            Command::Amend(a) => (&a.market, &a.id),
            Command::Place(_) | Command::Invalid(_) => return,
        };
        let Some(m) = self.find_market_sym(market) else {
            return;
        };
        let ix = self.id_table.peek(Self::id_hash(&self.hasher, m, id));
        if let Some(e) = ix.and_then(|ix| self.ids.get(ix as usize)) {
            prefetch_all(e);
        }
    }

    /// The deeper stages of `look_ahead`. With the market's `Market` and
    /// the id's index line in cache (the earlier stages), starts loading
    /// the top rung of each side (a place takes from one and may rest on
    /// the other) and, for a cancel or amend, the id's registry entry; with
    /// `levels`, one stage on, what those point to: the top levels and the
    /// order being cancelled or amended.
    #[inline]
    fn prefetch_book(&self, cmd: &Command, levels: bool) {
        let (market, id) = match cmd {
            Command::Place(p) => (&p.market, &p.id),
            Command::Cancel(c) => (&c.market, &c.id),
            Command::Amend(a) => (&a.market, &a.id),
            Command::Invalid(_) => return,
        };
        let Some(m) = self.find_market_sym(market) else {
            return;
        };
        let mk = &self.markets[m as usize];
        for ladder in [&mk.bids, &mk.asks] {
            let Some(top) = ladder.rungs.len().checked_sub(1) else {
                continue;
            };
            if levels {
                prefetch(&self.levels[ladder.rungs[top].level as usize]);
            } else {
                // Only the address is taken here: the rung is not read.
                prefetch(&ladder.rungs[top]);
            }
        }
        if matches!(cmd, Command::Place(_)) {
            return;
        }
        let Some(ix) = self.id_table.peek(Self::id_hash(&self.hasher, m, id)) else {
            return;
        };
        let e = &self.ids[ix as usize];
        if !levels {
            prefetch_all(e);
        } else if let Some(o) = self.orders.get(e.order as usize) {
            prefetch(o);
        }
    }

    /// Starts loading the memory that applying `cmd` will touch first (the
    /// id index slot of its order id), without changing anything. A caller
    /// holding a batch of commands (a replica reading its log, `tandem
    /// match`) calls this a few commands ahead of `apply`, so the cache
    /// misses of the id registry overlap instead of queueing.
    #[inline]
    pub fn prefetch(&self, cmd: &Command) {
        let (market, id) = match cmd {
            Command::Place(p) => (&p.market, &p.id),
            Command::Cancel(c) => (&c.market, &c.id),
            Command::Amend(a) => (&a.market, &a.id),
            Command::Invalid(_) => return,
        };
        if let Some(m) = self.find_market_sym(market) {
            prefetch(&self.markets[m as usize]);
            self.id_table.prefetch(Self::id_hash(&self.hasher, m, id));
        }
    }

    /// The stage before `prefetch`, for callers that can look further
    /// ahead (twice the distance works well): starts loading the market
    /// index slot of `cmd`'s market, so that `prefetch`'s own market lookup
    /// hits the cache. Matters when commands spread over many markets.
    #[inline]
    pub fn prefetch_market(&self, cmd: &Command) {
        if let Some(market) = cmd.market() {
            // The market found last is in cache already: skip the hash.
            if self.last_market_if(market).is_none() {
                self.market_table.prefetch(self.hasher.sym(market, 0));
            }
        }
    }

    fn reject(
        &mut self,
        cmd_market: &Sym,
        cmd_id: &Sym,
        reason: RejectReason,
        out: &mut Vec<Event>,
    ) {
        self.emit(
            out,
            Event::Rejected {
                market: Some(cmd_market.clone()),
                id: Some(cmd_id.clone()),
                reason,
            },
        );
    }

    /// Hash of a market name or account (seeded; never reaches output).
    #[inline]
    pub(crate) fn str_hash(&self, b: &[u8]) -> u64 {
        self.hasher.bytes(b, 0)
    }

    #[inline]
    fn find_account_sym(&self, name: &Sym) -> Option<u32> {
        self.account_table.find(self.hasher.sym(name, 0), |a| {
            self.accounts[a as usize] == *name
        })
    }

    /// The market found last, if it is `name`.
    #[inline(always)]
    fn last_market_if(&self, name: &Sym) -> Option<MarketIx> {
        let last = self.last_market.0.load(Relaxed);
        let mk = self.markets.get(last as usize)?;
        (mk.name == *name).then_some(last)
    }

    #[inline(always)]
    fn find_market_sym(&self, name: &Sym) -> Option<MarketIx> {
        // Flows repeat markets: try the last one found before hashing.
        if let Some(m) = self.last_market_if(name) {
            return Some(m);
        }
        self.find_market_slow(name)
    }

    /// `find_market_sym` past its one-entry cache: kept out of line so the
    /// inlined fast path stays a load and a three-word compare (not `cold`:
    /// a flow over many markets takes it on most commands).
    #[inline(never)]
    fn find_market_slow(&self, name: &Sym) -> Option<MarketIx> {
        self.market_table
            .find(self.hasher.sym(name, 0), |m| {
                self.markets[m as usize].name == *name
            })
            .inspect(|&m| self.last_market.0.store(m, Relaxed))
    }

    pub(crate) fn find_account(&self, name: &[u8]) -> Option<u32> {
        self.account_table.find(self.str_hash(name), |a| {
            self.accounts[a as usize].as_bytes() == name
        })
    }

    /// Adds an account not yet known.
    fn push_account(&mut self, name: &Sym) -> u32 {
        let a = self.accounts.len() as u32;
        let h = self.hasher.sym(name, 0);
        self.accounts.push(name.clone());
        self.account_open.push(0);
        self.account_table.insert(h, a);
        a
    }

    /// Hash of a (market, order id) pair (seeded; never reaches output).
    #[inline]
    pub(crate) fn id_hash(hasher: &KeyHasher, m: MarketIx, id: &Sym) -> u64 {
        hasher.sym(id, m)
    }

    pub(crate) fn find_id(&self, m: MarketIx, id: &[u8]) -> Option<IdIx> {
        self.id_table.find(self.hasher.bytes(id, m), |ix| {
            let e = &self.ids[ix as usize];
            e.market == m && e.id.as_bytes() == id
        })
    }

    #[inline]
    fn find_id_sym(&self, h: u64, m: MarketIx, id: &Sym) -> Option<IdIx> {
        self.id_table.find(h, |ix| self.is_id(ix, m, id))
    }

    /// Is registry entry `ix` the id `id` of market `m`?
    #[inline]
    fn is_id(&self, ix: u32, m: MarketIx, id: &Sym) -> bool {
        let e = &self.ids[ix as usize];
        e.market == m && e.id == *id
    }

    /// Registers a newly taken id under hash `h`, at the index slot
    /// `find_or_vacant` left for it (or `usize::MAX`: probe afresh).
    #[inline(always)]
    fn push_id_at(&mut self, vacant: usize, h: u64, e: IdEntry) -> IdIx {
        let ix = self.ids.len() as u32;
        let cap = self.ids.capacity();
        self.ids.push(e);
        if self.ids.capacity() != cap {
            crate::mem::advise_huge(&self.ids);
        }
        // The registry grows into memory the cache has long dropped: start
        // loading the line a few entries on, so those pushes do not stall.
        if let Some(later) = self.ids.spare_capacity_mut().get(8) {
            prefetch(later);
        }
        self.id_table.insert_at(vacant, h, ix);
        ix
    }

    pub(crate) fn push_market(&mut self, name: Sym) -> MarketIx {
        let m = self.markets.len() as u32;
        let h = self.hasher.sym(&name, 0);
        self.markets.push(Market {
            name,
            bids: Ladder::default(),
            asks: Ladder::default(),
        });
        self.market_table.insert(h, m);
        m
    }

    /// Best price on `side` of market `m`.
    #[inline]
    fn best(&self, m: MarketIx, side: Side) -> Option<u64> {
        let r = self.markets[m as usize].ladder_ref(side).rungs.last()?;
        Some(self.levels[r.level as usize].price)
    }

    /// Would a `side` order at `price` cross the best opposite price?
    fn crosses(&self, m: MarketIx, side: Side, price: u64) -> bool {
        match self.best(m, side.opposite()) {
            None => false,
            Some(best) => acceptable(side, Some(price), best),
        }
    }

    fn place(&mut self, p: &Place, out: &mut Vec<Event>) {
        let lens = [p.market.len(), p.id.len(), p.account.len()];
        if lens.contains(&0) {
            return self.reject(&p.market, &p.id, RejectReason::Invalid, out);
        }
        if lens.iter().any(|&l| l > self.cfg.max_symbol_bytes) {
            return self.reject(&p.market, &p.id, RejectReason::Limit, out);
        }
        let limit = match p.kind {
            OrderKind::Limit(px) => Some(px.units()),
            OrderKind::Market => None,
        };
        if p.post_only && (limit.is_none() || p.tif != Tif::Gtc) {
            return self.reject(&p.market, &p.id, RejectReason::Invalid, out);
        }
        let found = self.find_market_sym(&p.market);
        let id_hash = Self::id_hash(&self.hasher, found.unwrap_or(0), &p.id);
        // Where the id would go in the index: the duplicate check's probe
        // ends there, and the insert below reuses it.
        let mut vacant = usize::MAX;
        if let Some(m) = found {
            match self
                .id_table
                .find_or_vacant(id_hash, |ix| self.is_id(ix, m, &p.id))
            {
                Ok(_) => return self.reject(&p.market, &p.id, RejectReason::DuplicateId, out),
                Err(slot) => vacant = slot,
            }
            if let (true, Some(px)) = (p.post_only, limit) {
                if self.crosses(m, p.side, px) {
                    return self.reject(&p.market, &p.id, RejectReason::PostOnly, out);
                }
            }
        }
        let known_account = self.find_account_sym(&p.account);
        let rests = p.tif == Tif::Gtc && limit.is_some();
        if self.ids.len() as u64 >= u64::from(self.cfg.max_ids)
            || (found.is_none() && self.markets.len() as u64 >= u64::from(self.cfg.max_markets))
            || (rests && self.live_orders >= self.cfg.max_live_orders)
            || (rests
                && known_account.map_or(0, |a| self.account_open[a as usize])
                    >= self.cfg.max_open_per_account)
        {
            return self.reject(&p.market, &p.id, RejectReason::Limit, out);
        }
        let (m, id_hash) = match found {
            Some(m) => (m, id_hash),
            None => {
                let m = self.push_market(p.market.clone());
                (m, Self::id_hash(&self.hasher, m, &p.id))
            }
        };
        let account = match known_account {
            Some(a) => a,
            None => self.push_account(&p.account),
        };
        let ix = self.push_id_at(
            vacant,
            id_hash,
            IdEntry {
                id: p.id.clone(),
                market: m,
                order: NONE,
                account,
                flags: IdEntry::make_flags(p.side, p.post_only, limit.is_none(), OrderStatus::Open),
                price: limit.unwrap_or(0),
                qty: p.qty.units(),
                changes: 0,
            },
        );
        self.emit(out, Event::Accepted { market: m, id: ix });
        let qty = p.qty.units();
        if p.tif == Tif::Fok && !self.fok_fillable(m, p.side, limit, account, qty) {
            return self.mark_cancelled(m, ix, qty, CancelReason::Fok, out);
        }
        let rest = match (limit, p.tif) {
            (Some(px), Tif::Gtc) => Some(px),
            _ => None,
        };
        self.enter(m, ix, account, p.side, limit, rest, qty, out);
    }

    /// Runs an arriving order (a new place or an amend that lost its place)
    /// as a taker, then rests what is left at `rest` or cancels it.
    #[allow(clippy::too_many_arguments)]
    fn enter(
        &mut self,
        m: MarketIx,
        ix: IdIx,
        account: u32,
        side: Side,
        limit: Option<u64>,
        rest: Option<u64>,
        qty: u64,
        out: &mut Vec<Event>,
    ) {
        let (left, self_trade) = self.take(m, ix, account, side, limit, qty, out);
        if self_trade {
            self.mark_cancelled(m, ix, left, CancelReason::SelfTrade, out);
        } else if left == 0 {
            self.ids[ix as usize].set_status(OrderStatus::Filled);
        } else if let Some(px) = rest {
            self.rest(m, ix, account, side, px, left);
        } else {
            self.mark_cancelled(m, ix, left, CancelReason::Ioc, out);
        }
    }

    /// Marks an order cancelled, with `left` of it unfilled, and emits
    /// the event: an incoming order that will not rest, or (already taken
    /// off its book) a resting one.
    #[inline]
    fn mark_cancelled(
        &mut self,
        m: MarketIx,
        ix: IdIx,
        left: u64,
        reason: CancelReason,
        out: &mut Vec<Event>,
    ) {
        self.ids[ix as usize].set_status(OrderStatus::Cancelled);
        self.emit(
            out,
            Event::Cancelled {
                market: m,
                id: ix,
                remaining: Qty::raw(left),
                reason,
            },
        );
    }

    /// Can a `side` order of `account` for `qty` at `limit` fill whole,
    /// walking in priority order and stopping at the account's own order?
    fn fok_fillable(
        &self,
        m: MarketIx,
        side: Side,
        limit: Option<u64>,
        account: u32,
        qty: u64,
    ) -> bool {
        let ladder = self.markets[m as usize].ladder_ref(side.opposite());
        let mut sum: u64 = 0;
        for r in ladder.rungs.iter().rev() {
            let lv = &self.levels[r.level as usize];
            if lv.head == NONE {
                continue;
            }
            if !acceptable(side, limit, lv.price) {
                return false;
            }
            let mut o = lv.head;
            while o != NONE {
                let ord = &self.orders[o as usize];
                if ord.account == account {
                    return false;
                }
                sum += ord.qty;
                if sum >= qty {
                    return true;
                }
                o = ord.next;
            }
        }
        false
    }

    /// Trades an incoming order against the opposite side. Returns what is
    /// left and whether it stopped at an order of its own account.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        m: MarketIx,
        taker: IdIx,
        account: u32,
        side: Side,
        limit: Option<u64>,
        mut left: u64,
        out: &mut Vec<Event>,
    ) -> (u64, bool) {
        let opp = side.opposite();
        while left > 0 {
            let Some(&Rung { level: lvl, .. }) =
                self.markets[m as usize].ladder_ref(opp).rungs.last()
            else {
                break;
            };
            let price = self.levels[lvl as usize].price;
            if !acceptable(side, limit, price) {
                break;
            }
            let mut o = self.levels[lvl as usize].head;
            let mut self_trade = false;
            while o != NONE {
                let Order {
                    qty: resting,
                    id: maker,
                    account: maker_account,
                    next,
                    ..
                } = self.orders[o as usize];
                if maker_account == account {
                    self_trade = true;
                    break;
                }
                let fill = left.min(resting);
                self.emit(
                    out,
                    Event::Trade {
                        market: m,
                        maker,
                        taker,
                        price: Price(price),
                        qty: Qty::raw(fill),
                    },
                );
                left -= fill;
                self.orders[o as usize].qty = resting - fill;
                if resting != fill {
                    break;
                }
                let e = &mut self.ids[maker as usize];
                e.order = NONE;
                e.set_status(OrderStatus::Filled);
                self.account_open[maker_account as usize] -= 1;
                self.free_orders.push(o);
                self.live_orders -= 1;
                o = next;
                if left == 0 {
                    break;
                }
            }
            let lv = &mut self.levels[lvl as usize];
            lv.head = o;
            if o == NONE {
                lv.tail = NONE;
                self.sweep_top(m, opp);
            } else {
                self.orders[o as usize].prev = NONE;
            }
            if self_trade {
                return (left, true);
            }
        }
        (left, false)
    }

    /// The top level of `side` just emptied: drop it and any emptied levels
    /// that are now on top, so the top is always live.
    fn sweep_top(&mut self, m: MarketIx, side: Side) {
        let ladder = self.markets[m as usize].ladder_mut(side);
        if let Some(r) = ladder.rungs.pop() {
            self.free_levels.push(r.level);
        }
        while let Some(r) = ladder.rungs.last() {
            if self.levels[r.level as usize].head != NONE {
                break;
            }
            self.free_levels.push(r.level);
            ladder.rungs.pop();
            ladder.empties -= 1;
        }
    }

    /// Rests `qty` of order `ix` at the tail of its price level.
    fn rest(&mut self, m: MarketIx, ix: IdIx, account: u32, side: Side, price: u64, qty: u64) {
        let key = key_of(side, price);
        let ladder = self.markets[m as usize].ladder_mut(side);
        let len = ladder.rungs.len();
        // Adds cluster at the touch: look at the top before searching.
        let pos = match ladder.rungs.last() {
            None => 0,
            Some(r) if r.key < key => len,
            Some(r) if r.key == key => len - 1,
            Some(_) => ladder.rungs.partition_point(|r| r.key < key),
        };
        let lvl = if pos < len && ladder.rungs[pos].key == key {
            let lvl = ladder.rungs[pos].level;
            if self.levels[lvl as usize].head == NONE {
                ladder.empties -= 1;
            }
            lvl
        } else {
            let level = Level {
                price,
                head: NONE,
                tail: NONE,
            };
            let lvl = match self.free_levels.pop() {
                Some(l) => {
                    self.levels[l as usize] = level;
                    l
                }
                None => {
                    self.levels.push(level);
                    (self.levels.len() - 1) as u32
                }
            };
            ladder.rungs.insert(pos, Rung { key, level: lvl });
            lvl
        };
        let tail = self.levels[lvl as usize].tail;
        let order = Order {
            qty,
            id: ix,
            account,
            prev: tail,
            next: NONE,
            level: lvl,
        };
        let o = match self.free_orders.pop() {
            Some(o) => {
                self.orders[o as usize] = order;
                o
            }
            None => {
                self.orders.push(order);
                (self.orders.len() - 1) as u32
            }
        };
        let lv = &mut self.levels[lvl as usize];
        if tail == NONE {
            lv.head = o;
        } else {
            self.orders[tail as usize].next = o;
        }
        lv.tail = o;
        self.live_orders += 1;
        self.account_open[account as usize] += 1;
        self.ids[ix as usize].order = o;
    }

    /// Takes live order `o` (on `side` of `m`) out of the book and frees it.
    fn remove(&mut self, m: MarketIx, side: Side, o: u32) {
        let Order {
            prev,
            next,
            level,
            id,
            account,
            ..
        } = self.orders[o as usize];
        self.account_open[account as usize] -= 1;
        if prev == NONE {
            self.levels[level as usize].head = next;
        } else {
            self.orders[prev as usize].next = next;
        }
        if next == NONE {
            self.levels[level as usize].tail = prev;
        } else {
            self.orders[next as usize].prev = prev;
        }
        self.free_orders.push(o);
        self.live_orders -= 1;
        self.ids[id as usize].order = NONE;
        if self.levels[level as usize].head != NONE {
            return;
        }
        let ladder = self.markets[m as usize].ladder_mut(side);
        if ladder.rungs.last().map(|r| r.level) == Some(level) {
            self.sweep_top(m, side);
            return;
        }
        ladder.empties += 1;
        let empties = ladder.empties as usize;
        if empties > 32 && empties * 2 > ladder.rungs.len() {
            let levels = &self.levels;
            let free = &mut self.free_levels;
            ladder.rungs.retain(|r| {
                let live = levels[r.level as usize].head != NONE;
                if !live {
                    free.push(r.level);
                }
                live
            });
            ladder.empties = 0;
        }
    }

    /// The live order `id` of `account` in `market`, as (market, id, slab).
    /// The owner is checked by comparing `account` with the name of the
    /// entry's account (names are unique in `accounts`), which is the same
    /// test as looking the account up and comparing indices, without the
    /// hash and probe.
    #[inline(always)]
    fn find_live(&self, market: &Sym, id: &Sym, account: &Sym) -> Option<(MarketIx, IdIx, u32)> {
        let m = self.find_market_sym(market)?;
        let ix = self.find_id_sym(Self::id_hash(&self.hasher, m, id), m, id)?;
        let e = &self.ids[ix as usize];
        (e.order != NONE && self.accounts[e.account as usize] == *account)
            .then_some((m, ix, e.order))
    }

    fn cancel(&mut self, c: &Cancel, out: &mut Vec<Event>) {
        let Some((m, ix, o)) = self.find_live(&c.market, &c.id, &c.account) else {
            let reason = if c.market.is_empty() || c.id.is_empty() || c.account.is_empty() {
                RejectReason::Invalid
            } else {
                RejectReason::UnknownOrder
            };
            return self.reject(&c.market, &c.id, reason, out);
        };
        let remaining = self.orders[o as usize].qty;
        let side = self.ids[ix as usize].side();
        self.remove(m, side, o);
        self.mark_cancelled(m, ix, remaining, CancelReason::User, out);
    }

    fn amend(&mut self, a: &Amend, out: &mut Vec<Event>) {
        if (a.price.is_none() && a.qty.is_none())
            || a.market.is_empty()
            || a.id.is_empty()
            || a.account.is_empty()
        {
            return self.reject(&a.market, &a.id, RejectReason::Invalid, out);
        }
        let Some((m, ix, o)) = self.find_live(&a.market, &a.id, &a.account) else {
            return self.reject(&a.market, &a.id, RejectReason::UnknownOrder, out);
        };
        let ord = self.orders[o as usize];
        let old_price = self.levels[ord.level as usize].price;
        let price = a.price.map_or(old_price, Price::units);
        let qty = a.qty.map_or(ord.qty, Qty::units);
        let e = &self.ids[ix as usize];
        if a.base.is_some_and(|b| b != e.changes) {
            // Accepted before another based amend of this order took
            // effect: a copy of that one, or a change to a state that is
            // gone. Applying it would top up what filled since, or undo
            // the later change.
            return self.reject(&a.market, &a.id, RejectReason::Stale, out);
        }
        let counted = u16::from(a.base.is_some());
        let side = e.side();
        let amended = Event::Amended {
            market: m,
            id: ix,
            price: Price(price),
            qty: Qty::raw(qty),
        };
        if price == old_price && qty <= ord.qty {
            self.orders[o as usize].qty = qty;
            let e = &mut self.ids[ix as usize];
            e.qty = qty;
            e.changes = e.changes.wrapping_add(counted);
            return self.emit(out, amended);
        }
        if e.post_only() && self.crosses(m, side, price) {
            return self.reject(&a.market, &a.id, RejectReason::PostOnly, out);
        }
        let account = ord.account;
        self.remove(m, side, o);
        let e = &mut self.ids[ix as usize];
        e.price = price;
        e.qty = qty;
        e.changes = e.changes.wrapping_add(counted);
        self.emit(out, amended);
        self.enter(m, ix, account, side, Some(price), Some(price), qty, out);
    }

    /// Checks every structural invariant; for tests and debug tooling.
    /// Returns a description of the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut live = 0u64;
        for (mi, mk) in self.markets.iter().enumerate() {
            for side in [Side::Buy, Side::Sell] {
                let ladder = mk.ladder_ref(side);
                let mut empties = 0;
                for (i, r) in ladder.rungs.iter().enumerate() {
                    if i > 0 && ladder.rungs[i - 1].key >= r.key {
                        return Err(format!("market {mi} {side:?}: keys not ascending at {i}"));
                    }
                    let lv = &self.levels[r.level as usize];
                    if key_of(side, lv.price) != r.key {
                        return Err(format!("market {mi} {side:?}: key/price mismatch at {i}"));
                    }
                    if lv.head == NONE {
                        empties += 1;
                        if i + 1 == ladder.rungs.len() {
                            return Err(format!("market {mi} {side:?}: empty top level"));
                        }
                        continue;
                    }
                    let mut o = lv.head;
                    let mut prev = NONE;
                    while o != NONE {
                        let ord = &self.orders[o as usize];
                        if ord.prev != prev || ord.level != r.level || ord.qty == 0 {
                            return Err(format!("market {mi} {side:?}: bad order link {o}"));
                        }
                        let e = &self.ids[ord.id as usize];
                        if e.order != o
                            || e.market as usize != mi
                            || e.side() != side
                            || e.account != ord.account
                        {
                            return Err(format!(
                                "market {mi} {side:?}: id entry of order {o} disagrees"
                            ));
                        }
                        live += 1;
                        prev = o;
                        o = ord.next;
                    }
                    if lv.tail != prev {
                        return Err(format!("market {mi} {side:?}: bad tail"));
                    }
                }
                if empties != ladder.empties {
                    return Err(format!(
                        "market {mi} {side:?}: empties {} counted {empties}",
                        ladder.empties
                    ));
                }
            }
            if let (Some(b), Some(a)) = (
                self.best(mi as u32, Side::Buy),
                self.best(mi as u32, Side::Sell),
            ) {
                if b >= a {
                    return Err(format!("market {mi}: crossed book {b} >= {a}"));
                }
            }
        }
        if live != u64::from(self.live_orders) {
            return Err(format!("live orders {} counted {live}", self.live_orders));
        }
        let mut per_account = vec![0u32; self.accounts.len()];
        for e in self.ids.iter().filter(|e| e.order != NONE) {
            per_account[e.account as usize] += 1;
        }
        if per_account != self.account_open {
            return Err("open orders per account miscounted".to_owned());
        }
        let open = self.ids.iter().filter(|e| e.order != NONE).count() as u64;
        if open != live {
            return Err(format!("ids with an order {open}, live {live}"));
        }
        Ok(())
    }
}

impl Engine {}

/// The market and account indexes, built from their vectors, refusing
/// duplicates (used by restore).
pub(crate) fn name_tables_of(
    hasher: &KeyHasher,
    markets: &[Market],
    accounts: &[Sym],
    reserve_markets: usize,
) -> Result<(IndexTable, IndexTable), String> {
    let mut mt = IndexTable::default();
    mt.reserve(reserve_markets);
    mt.bulk_build(
        markets.len(),
        |i| hasher.sym(&markets[i].name, 0),
        |a, b| markets[a as usize].name == markets[b as usize].name,
    )
    .map_err(|(a, _)| format!("market {:?} listed twice", markets[a as usize].name))?;
    let mut at = IndexTable::default();
    at.bulk_build(
        accounts.len(),
        |i| hasher.sym(&accounts[i], 0),
        |a, b| accounts[a as usize] == accounts[b as usize],
    )
    .map_err(|(a, _)| format!("account {:?} listed twice", accounts[a as usize]))?;
    Ok((mt, at))
}

/// The id index, built from `ids`, refusing an id taken twice in one
/// market (used by restore).
pub(crate) fn id_table_of(
    hasher: &KeyHasher,
    ids: &[IdEntry],
    reserve: usize,
) -> Result<IndexTable, String> {
    let mut table = IndexTable::default();
    table.reserve(reserve);
    table
        .bulk_build(
            ids.len(),
            |i| Engine::id_hash(hasher, ids[i].market, &ids[i].id),
            |a, b| {
                let (x, y) = (&ids[a as usize], &ids[b as usize]);
                x.market == y.market && x.id == y.id
            },
        )
        .map_err(|(a, _)| format!("id {:?} listed twice in one market", ids[a as usize].id))?;
    Ok(table)
}
