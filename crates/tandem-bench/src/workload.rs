//! Deterministic workload generator: one market, one seeded operation stream.
//!
//! The stream is produced up front (so generation cost is never timed) by
//! driving a small *reference book* that lives inside the generator. The
//! reference book is a plain price-time-priority (FIFO) limit order book with
//! no self-trade prevention, the same matching rule both peers implement, so
//! the generator always knows which orders are still resting. That lets every
//! cancel target an order that is live at that point of the stream, and lets
//! the runner check each engine's final book against the model afterwards.
//!
//! Mix of the timed stream (fixed by a uniform draw per op):
//! * 70 % limit orders near the touch. Most rest a few ticks behind the
//!   opposite best price; a fraction is marketable (priced at or through the
//!   opposite best) so they trade. That fraction is steered by a simple
//!   feedback loop on the number of resting orders so the book stays near
//!   its warm-up size instead of growing without bound over millions of ops,
//!   and the side of marketable orders leans against the mid's drift from
//!   the centre so prices stay in a bounded band.
//! * 20 % cancels of an order that is live in the reference book (uniformly
//!   chosen among all resting orders).
//! * 10 % market orders, random side, 1..=200 lots.
//!
//! Every add and market order carries an account drawn from `accounts`
//! (default 1000). The reference book ignores accounts (no STP), like the
//! peers; an engine that prevents self-trades (Tandem) will diverge slightly
//! from the model whenever a taker meets a resting order of its own account.
//!
//! Prices are integer ticks, quantities integer lots; engine adapters convert
//! these into their own units.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Price the warm-up book is centred on, in ticks.
pub const CENTER_TICKS: u64 = 1_000_000;
/// Half-width of the warm-up book in ticks (orders rest 1..=this from the centre).
const WARMUP_HALF_WIDTH: u64 = 50;
/// Resting orders are placed 0..=this many ticks behind the opposite best price.
const REST_DEPTH_TICKS: u64 = 15;
/// Marketable limit orders are priced 0..=this many ticks through the opposite best.
const CROSS_THROUGH_TICKS: u64 = 2;
/// Baseline share of limit adds that are marketable at steady state.
const BASE_CROSS_PROB: f64 = 0.23;

/// Small, fast, seedable PRNG (splitmix64). Good enough for workload shaping;
/// not for anything cryptographic.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Creates a generator from a seed; every seed (including 0) is valid.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), via the multiply-high reduction.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Order side, engine-neutral.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Bid.
    Buy,
    /// Ask.
    Sell,
}

/// One engine-neutral operation of the stream. Ids are unique across the
/// whole run (warm-up included) and increase from 1; market orders consume
/// an id too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Good-till-cancel limit order; rests whatever does not trade at once.
    Limit {
        /// Order id.
        id: u64,
        /// Owning account, `0..accounts`.
        account: u32,
        /// Side.
        side: Side,
        /// Limit price in ticks.
        price: u64,
        /// Quantity in lots.
        qty: u64,
    },
    /// Market order: trades what it can, the remainder is dropped.
    Market {
        /// Order id.
        id: u64,
        /// Account, `0..accounts`.
        account: u32,
        /// Side.
        side: Side,
        /// Quantity in lots.
        qty: u64,
    },
    /// Cancel of an order that is resting in the reference book.
    Cancel {
        /// Id of the order to cancel.
        id: u64,
        /// Account that owns it (engines that check ownership need it).
        account: u32,
    },
}

/// Generator parameters.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// PRNG seed.
    pub seed: u64,
    /// Number of timed operations.
    pub ops: usize,
    /// Number of resting orders placed before timing starts (also the
    /// steady-state book size the generator steers towards).
    pub warmup_orders: usize,
    /// Number of distinct accounts.
    pub accounts: u32,
}

/// The final state of a book, for cross-checking engines against the model.
/// Fields an engine cannot report are `None` and are not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BookSummary {
    /// Best bid in ticks.
    pub best_bid: Option<u64>,
    /// Best ask in ticks.
    pub best_ask: Option<u64>,
    /// Total resting bid quantity in lots.
    pub bid_qty: Option<u64>,
    /// Total resting ask quantity in lots.
    pub ask_qty: Option<u64>,
    /// Number of resting orders.
    pub orders: Option<u64>,
}

impl BookSummary {
    /// Compares the fields both summaries report; returns the names of the
    /// fields that differ (empty = consistent).
    pub fn mismatches(&self, reference: &BookSummary) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |name: &str, a: Option<u64>, b: Option<u64>, both_known: bool| {
            if both_known && a != b {
                out.push(format!("{name}: engine {a:?} vs model {b:?}"));
            }
        };
        // best prices are always "known" (None means empty side)
        cmp("best_bid", self.best_bid, reference.best_bid, true);
        cmp("best_ask", self.best_ask, reference.best_ask, true);
        for (name, a, b) in [
            ("bid_qty", self.bid_qty, reference.bid_qty),
            ("ask_qty", self.ask_qty, reference.ask_qty),
            ("orders", self.orders, reference.orders),
        ] {
            cmp(name, a, b, a.is_some() && b.is_some());
        }
        out
    }
}

/// What the reference book saw while generating the timed stream.
#[derive(Debug, Clone, Default)]
pub struct WorkloadStats {
    /// Limit orders in the timed stream.
    pub limits: u64,
    /// Cancels in the timed stream.
    pub cancels: u64,
    /// Market orders in the timed stream.
    pub markets: u64,
    /// Limit orders that traded on arrival (fully or partly).
    pub limits_that_traded: u64,
    /// Limit orders that were completely filled on arrival.
    pub limits_fully_filled: u64,
    /// Market orders that found nothing to trade with.
    pub markets_unfilled: u64,
    /// Individual maker fills (one per resting order touched).
    pub fills: u64,
    /// Lots traded.
    pub traded_lots: u64,
    /// Ops where the fill pairs a taker and maker of the same account
    /// (peers let these trade; an STP engine would not).
    pub self_match_fills: u64,
    /// Cancels that had to be replaced by a limit add because the book was
    /// empty (should be 0 with a warm-up).
    pub cancel_fallbacks: u64,
    /// Under STP: takers cancelled at an order of their own account.
    pub stp_cancelled_takers: u64,
    /// Under STP: cancels whose target is no longer live (the stream was
    /// generated against the no-STP model).
    pub stp_cancel_misses: u64,
    /// Smallest / largest number of resting orders seen during the timed stream.
    pub min_live: u64,
    /// See `min_live`.
    pub max_live: u64,
    /// Lowest / highest mid (ticks) seen during the timed stream.
    pub min_mid: u64,
    /// See `min_mid`.
    pub max_mid: u64,
    /// Largest number of price levels (both sides) seen.
    pub max_levels: u64,
}

/// A generated workload: untimed warm-up adds, the timed stream, and what
/// the reference book looks like after each.
#[derive(Debug)]
pub struct Workload {
    /// Generator parameters.
    pub config: WorkloadConfig,
    /// Non-crossing resting orders applied before timing.
    pub warmup: Vec<Op>,
    /// The timed stream.
    pub ops: Vec<Op>,
    /// Reference-book state after warm-up + stream (no STP, as the peers).
    pub final_summary: BookSummary,
    /// Reference-book state with Tandem's self-trade prevention (a taker
    /// that reaches its own account's resting order is cancelled there).
    pub final_summary_stp: BookSummary,
    /// Statistics of the timed stream.
    pub stats: WorkloadStats,
}

#[derive(Debug, Clone, Copy)]
struct ModelOrder {
    side: Side,
    price: u64,
    qty: u64,
    account: u32,
    /// Index in `Model::live`.
    live_idx: usize,
}

#[derive(Debug, Default)]
struct Level {
    /// FIFO of order ids; may hold ids of cancelled orders (lazy deletion).
    queue: VecDeque<u64>,
    /// Number of live orders in `queue`.
    live: usize,
}

/// The generator's reference book: price-time priority, no STP.
#[derive(Debug, Default)]
struct Model {
    bids: BTreeMap<u64, Level>,
    asks: BTreeMap<u64, Level>,
    orders: HashMap<u64, ModelOrder>,
    /// Ids of all live orders, for uniform cancel picks.
    live: Vec<u64>,
}

/// Result of one taker against the model.
#[derive(Debug, Default)]
struct TakeResult {
    filled: u64,
    fills: u64,
    self_fills: u64,
    /// With STP on: the taker stopped at an order of its own account.
    stp_stopped: bool,
}

impl Model {
    fn best_bid(&self) -> Option<u64> {
        self.bids.keys().next_back().copied()
    }

    fn best_ask(&self) -> Option<u64> {
        self.asks.keys().next().copied()
    }

    fn mid(&self) -> u64 {
        match (self.best_bid(), self.best_ask()) {
            (Some(b), Some(a)) => (a + b) / 2,
            (Some(b), None) => b,
            (None, Some(a)) => a,
            (None, None) => CENTER_TICKS,
        }
    }

    fn rest(&mut self, id: u64, account: u32, side: Side, price: u64, qty: u64) {
        let live_idx = self.live.len();
        self.live.push(id);
        self.orders.insert(
            id,
            ModelOrder {
                side,
                price,
                qty,
                account,
                live_idx,
            },
        );
        let book = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = book.entry(price).or_default();
        level.queue.push_back(id);
        level.live += 1;
    }

    /// Removes `id` from the order map and the live list (not from its level queue).
    fn forget(&mut self, id: u64) -> Option<ModelOrder> {
        let o = self.orders.remove(&id)?;
        let last = self.live.len() - 1;
        self.live.swap_remove(o.live_idx);
        if o.live_idx != last {
            let moved = self.live[o.live_idx];
            if let Some(m) = self.orders.get_mut(&moved) {
                m.live_idx = o.live_idx;
            }
        }
        Some(o)
    }

    fn cancel(&mut self, id: u64) -> Option<ModelOrder> {
        let o = self.forget(id)?;
        let book = match o.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        if let Some(level) = book.get_mut(&o.price) {
            level.live -= 1;
            if level.live == 0 {
                book.remove(&o.price);
            }
        }
        Some(o)
    }

    /// Matches a taker against the opposite side up to `limit` (None = market).
    /// With `stp`, the taker stops when it reaches a resting order of its own
    /// account (Tandem's cancel-taker rule); otherwise it trades with it.
    fn take(
        &mut self,
        side: Side,
        account: u32,
        mut qty: u64,
        limit: Option<u64>,
        stp: bool,
    ) -> TakeResult {
        let mut res = TakeResult::default();
        while qty > 0 {
            let best = match side {
                Side::Buy => self.best_ask(),
                Side::Sell => self.best_bid(),
            };
            let Some(price) = best else { break };
            let crosses = match (side, limit) {
                (_, None) => true,
                (Side::Buy, Some(l)) => l >= price,
                (Side::Sell, Some(l)) => l <= price,
            };
            if !crosses {
                break;
            }
            let book = match side {
                Side::Buy => &mut self.asks,
                Side::Sell => &mut self.bids,
            };
            let level = book.get_mut(&price).expect("best level exists");
            let mut done = Vec::new();
            while qty > 0 && level.live > 0 {
                let head = *level.queue.front().expect("live level has ids");
                let Some(maker) = self.orders.get_mut(&head) else {
                    level.queue.pop_front(); // cancelled earlier
                    continue;
                };
                if stp && maker.account == account {
                    res.stp_stopped = true;
                    break;
                }
                let q = qty.min(maker.qty);
                maker.qty -= q;
                qty -= q;
                res.filled += q;
                res.fills += 1;
                if maker.account == account {
                    res.self_fills += 1;
                }
                if maker.qty == 0 {
                    level.queue.pop_front();
                    level.live -= 1;
                    done.push(head);
                }
            }
            if level.live == 0 {
                book.remove(&price);
            }
            for id in done {
                self.forget(id);
            }
            if res.stp_stopped {
                break;
            }
        }
        res
    }

    /// Applies one op with the peers' rules (`stp == false`) or Tandem's
    /// (`stp == true`: self-matching takers are cancelled, cancels of orders
    /// that are no longer live are no-ops). Returns the taker result, if any.
    fn apply(&mut self, op: &Op, stp: bool) -> Option<TakeResult> {
        match *op {
            Op::Limit {
                id,
                account,
                side,
                price,
                qty,
            } => {
                let r = self.take(side, account, qty, Some(price), stp);
                if r.filled < qty && !r.stp_stopped {
                    self.rest(id, account, side, price, qty - r.filled);
                }
                Some(r)
            }
            Op::Market {
                account, side, qty, ..
            } => Some(self.take(side, account, qty, None, stp)),
            Op::Cancel { id, .. } => {
                self.cancel(id);
                None
            }
        }
    }

    fn summary(&self) -> BookSummary {
        let mut bid_qty = 0;
        let mut ask_qty = 0;
        for o in self.orders.values() {
            match o.side {
                Side::Buy => bid_qty += o.qty,
                Side::Sell => ask_qty += o.qty,
            }
        }
        BookSummary {
            best_bid: self.best_bid(),
            best_ask: self.best_ask(),
            bid_qty: Some(bid_qty),
            ask_qty: Some(ask_qty),
            orders: Some(self.orders.len() as u64),
        }
    }
}

/// Generates the warm-up and the timed stream for `config`. Deterministic:
/// the same config always yields the same ops.
pub fn generate(config: &WorkloadConfig) -> Workload {
    let mut rng = SplitMix64::new(config.seed);
    let mut model = Model::default();
    let mut next_id: u64 = 1;
    let accounts = u64::from(config.accounts.max(1));

    // Warm-up: non-crossing resting orders spread 1..=50 ticks around the centre.
    let mut warmup = Vec::with_capacity(config.warmup_orders);
    for _ in 0..config.warmup_orders {
        let id = next_id;
        next_id += 1;
        let account = rng.below(accounts) as u32;
        let side = if rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let off = rng.range(1, WARMUP_HALF_WIDTH);
        let price = match side {
            Side::Buy => CENTER_TICKS - off,
            Side::Sell => CENTER_TICKS + off,
        };
        let qty = rng.range(1, 100);
        model.rest(id, account, side, price, qty);
        warmup.push(Op::Limit {
            id,
            account,
            side,
            price,
            qty,
        });
    }

    let target_live = config.warmup_orders.max(1) as f64;
    let mut stats = WorkloadStats {
        min_live: u64::MAX,
        min_mid: u64::MAX,
        ..WorkloadStats::default()
    };
    let mut ops = Vec::with_capacity(config.ops);
    for _ in 0..config.ops {
        let roll = rng.below(100);
        let id = next_id;
        let account = rng.below(accounts) as u32;
        let mut kind = if roll < 70 {
            0
        } else if roll < 90 {
            1
        } else {
            2
        };
        if kind == 1 && model.live.is_empty() {
            stats.cancel_fallbacks += 1;
            kind = 0;
        }
        match kind {
            0 => {
                next_id += 1;
                stats.limits += 1;
                let live = model.live.len() as f64;
                let p_cross =
                    (BASE_CROSS_PROB + 0.5 * (live - target_live) / target_live).clamp(0.02, 0.6);
                let marketable = rng.unit() < p_cross;
                let side = if marketable {
                    // lean against drift so the price stays in a band
                    let disp = model.mid() as f64 - CENTER_TICKS as f64;
                    let p_buy = 0.5 - (disp / 400.0).clamp(-0.3, 0.3);
                    if rng.unit() < p_buy {
                        Side::Buy
                    } else {
                        Side::Sell
                    }
                } else if rng.below(2) == 0 {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let qty = rng.range(1, 100);
                let (opp_best, own_best) = match side {
                    Side::Buy => (model.best_ask(), model.best_bid()),
                    Side::Sell => (model.best_bid(), model.best_ask()),
                };
                let through = rng.range(0, CROSS_THROUGH_TICKS);
                let behind = rng.range(0, REST_DEPTH_TICKS);
                let price = match (marketable, side, opp_best) {
                    (true, Side::Buy, Some(a)) => a + through,
                    (true, Side::Sell, Some(b)) => b - through,
                    (false, Side::Buy, Some(a)) => a - 1 - behind,
                    (false, Side::Sell, Some(b)) => b + 1 + behind,
                    // opposite side empty: quote around our own best / the centre
                    (_, Side::Buy, None) => own_best.unwrap_or(CENTER_TICKS) - behind,
                    (_, Side::Sell, None) => own_best.unwrap_or(CENTER_TICKS) + behind,
                };
                let op = Op::Limit {
                    id,
                    account,
                    side,
                    price,
                    qty,
                };
                let r = model.apply(&op, false).unwrap_or_default();
                if r.filled > 0 {
                    stats.limits_that_traded += 1;
                }
                if r.filled == qty {
                    stats.limits_fully_filled += 1;
                }
                stats.fills += r.fills;
                stats.traded_lots += r.filled;
                stats.self_match_fills += r.self_fills;
                ops.push(op);
            }
            1 => {
                stats.cancels += 1;
                let pick = model.live[rng.below(model.live.len() as u64) as usize];
                let o = model.cancel(pick).expect("picked order is live");
                ops.push(Op::Cancel {
                    id: pick,
                    account: o.account,
                });
            }
            _ => {
                next_id += 1;
                stats.markets += 1;
                let side = if rng.below(2) == 0 {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let qty = rng.range(1, 200);
                let op = Op::Market {
                    id,
                    account,
                    side,
                    qty,
                };
                let r = model.apply(&op, false).unwrap_or_default();
                if r.filled == 0 {
                    stats.markets_unfilled += 1;
                }
                stats.fills += r.fills;
                stats.traded_lots += r.filled;
                stats.self_match_fills += r.self_fills;
                ops.push(op);
            }
        }
        let live = model.live.len() as u64;
        stats.min_live = stats.min_live.min(live);
        stats.max_live = stats.max_live.max(live);
        let mid = model.mid();
        stats.min_mid = stats.min_mid.min(mid);
        stats.max_mid = stats.max_mid.max(mid);
        stats.max_levels = stats
            .max_levels
            .max((model.bids.len() + model.asks.len()) as u64);
    }
    if config.ops == 0 {
        stats.min_live = model.live.len() as u64;
        stats.min_mid = model.mid();
    }

    // Second reference: the same stream under Tandem's self-trade prevention.
    let mut stp = Model::default();
    for op in &warmup {
        stp.apply(op, true);
    }
    for op in &ops {
        match *op {
            Op::Cancel { id, .. } if !stp.orders.contains_key(&id) => stats.stp_cancel_misses += 1,
            _ => {
                if let Some(r) = stp.apply(op, true) {
                    stats.stp_cancelled_takers += u64::from(r.stp_stopped);
                }
            }
        }
    }

    Workload {
        config: config.clone(),
        warmup,
        ops,
        final_summary: model.summary(),
        final_summary_stp: stp.summary(),
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seed: u64) -> WorkloadConfig {
        WorkloadConfig {
            seed,
            ops: 50_000,
            warmup_orders: 2_000,
            accounts: 1000,
        }
    }

    #[test]
    fn deterministic() {
        let a = generate(&cfg(7));
        let b = generate(&cfg(7));
        assert_eq!(a.ops, b.ops);
        assert_eq!(a.warmup, b.warmup);
        let c = generate(&cfg(8));
        assert_ne!(a.ops, c.ops);
    }

    #[test]
    fn mix_and_bounded_book() {
        let w = generate(&cfg(1));
        let n = w.ops.len() as f64;
        let s = &w.stats;
        assert!((s.limits as f64 / n - 0.70).abs() < 0.02);
        assert!((s.cancels as f64 / n - 0.20).abs() < 0.02);
        assert!((s.markets as f64 / n - 0.10).abs() < 0.02);
        assert_eq!(s.cancel_fallbacks, 0);
        assert!(s.limits_that_traded > 0);
        assert!(s.max_live < 4 * 2_000, "book should stay near warm-up size");
        assert!(s.min_live > 0);
    }

    #[test]
    fn cancels_target_live_orders() {
        // Replay the stream on a fresh model: every cancel must hit.
        let w = generate(&cfg(3));
        let mut m = Model::default();
        for op in w.warmup.iter().chain(w.ops.iter()) {
            if let Op::Cancel { id, account } = *op {
                assert_eq!(m.orders.get(&id).map(|o| o.account), Some(account));
            }
            m.apply(op, false);
        }
        assert_eq!(m.summary(), w.final_summary);
        assert_ne!(w.final_summary_stp, w.final_summary);
        assert!(w.stats.stp_cancelled_takers > 0);
    }

    #[test]
    fn prng_range() {
        let mut r = SplitMix64::new(0);
        for _ in 0..10_000 {
            let v = r.range(1, 100);
            assert!((1..=100).contains(&v));
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
