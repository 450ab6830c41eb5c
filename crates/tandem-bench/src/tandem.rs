//! Adapter for Tandem's own matching core (`tandem-core`), always compiled in
//! (it is a normal dependency of this crate).
//!
//! Mapping (one `Engine::new(Config::default())`, commands pre-built with
//! their `Sym` strings before timing, `seq` increasing from 1 per applied
//! command, one reused `Vec<Event>` output buffer cleared before each call):
//! * limit add -> `Command::Place(Place { kind: OrderKind::Limit(price),
//!   tif: Tif::Gtc, post_only: false, .. })`;
//! * cancel    -> `Command::Cancel(Cancel { market, id, account })`;
//! * market    -> `Command::Place(Place { kind: OrderKind::Market, tif: Tif::Ioc, .. })`.
//!
//! Units: Tandem's `Price`/`Qty` are 8-decimal fixed point. One tick is
//! `TICK_UNITS` (0.01) and one lot `LOT_UNITS` (1.0), so the workload's centre
//! of 1 000 000 ticks is a price of 10 000.00.
//!
//! Unlike the peers, Tandem applies self-trade prevention (cancel taker: a
//! taker that reaches a resting order of its own account stops there and
//! its remainder is cancelled), so its book drifts slightly from the peers'
//! (with 1000 accounts this is rare; see the STP line of the workload
//! stats), and a few later cancels then target orders Tandem no longer has
//! (each answered with a reject). Its final book is therefore checked
//! against the generator's STP reference model rather than the peers' one.

use tandem_core::{
    Cancel, Command, Config, Engine, Event, OrderKind, Place, Price, Qty, Side as TSide, Sym, Tif,
};

use crate::engine::BenchEngine;
use crate::workload::{BookSummary, Op, Side};

/// Fixed-point units of one workload tick (0.01 with 8 decimals).
pub const TICK_UNITS: u64 = 1_000_000;
/// Fixed-point units of one workload lot (1.0 with 8 decimals).
pub const LOT_UNITS: u64 = 100_000_000;
/// Market symbol used for every command.
pub const MARKET: &str = "BTC-USD";

/// `tandem_core::Engine` under test.
#[derive(Debug)]
pub struct Tandem {
    eng: Engine,
    out: Vec<Event>,
    seq: u64,
}

fn side(s: Side) -> TSide {
    match s {
        Side::Buy => TSide::Buy,
        Side::Sell => TSide::Sell,
    }
}

fn price(ticks: u64) -> Price {
    Price::from_units(ticks * TICK_UNITS).expect("workload price fits Tandem's Price")
}

fn qty(lots: u64) -> Qty {
    Qty::from_units(lots * LOT_UNITS).expect("workload qty fits Tandem's Qty")
}

fn order_id(id: u64) -> Sym {
    Sym::new(&format!("o{id}"))
}

fn account(a: u32) -> Sym {
    Sym::new(&format!("a{a}"))
}

impl BenchEngine for Tandem {
    const NAME: &'static str = "tandem";
    const VERSION: &'static str = concat!("tandem-core ", env!("CARGO_PKG_VERSION"));
    const IS_SUBJECT: bool = true;
    const STP: bool = true;
    const SETUP: &'static str = "Config { reserve_ids: warm-up + timed commands, reserve_orders: 65 536 }: \
        Engine::new allocates and writes the id registry, its index and the order slab for that many \
        before timing (no page fault while timed); Config::default() reserves nothing";
    type Cmd = Command;

    fn new_engine(expected_cmds: usize) -> Self {
        Self {
            eng: Engine::new(Config {
                // A production config sizes the id registry to the volume it
                // expects (see README); here that is the run's command count.
                reserve_ids: expected_cmds,
                reserve_orders: 1 << 16,
                ..Config::default()
            }),
            out: Vec::with_capacity(64),
            seq: 0,
        }
    }

    fn prepare(op: &Op) -> Command {
        match *op {
            Op::Limit {
                id,
                account: a,
                side: s,
                price: p,
                qty: q,
            } => Command::Place(Place {
                market: Sym::new(MARKET),
                id: order_id(id),
                account: account(a),
                side: side(s),
                kind: OrderKind::Limit(price(p)),
                qty: qty(q),
                tif: Tif::Gtc,
                post_only: false,
            }),
            Op::Market {
                id,
                account: a,
                side: s,
                qty: q,
            } => Command::Place(Place {
                market: Sym::new(MARKET),
                id: order_id(id),
                account: account(a),
                side: side(s),
                kind: OrderKind::Market,
                qty: qty(q),
                tif: Tif::Ioc,
                post_only: false,
            }),
            Op::Cancel { id, account: a } => Command::Cancel(Cancel {
                market: Sym::new(MARKET),
                id: order_id(id),
                account: account(a),
            }),
        }
    }

    #[inline]
    #[allow(clippy::let_unit_value)] // `apply` may return `()` or a status
    fn apply(&mut self, cmd: &Command) {
        self.seq += 1;
        self.out.clear();
        let r = self.eng.apply(self.seq, cmd, &mut self.out);
        let _ = std::hint::black_box(r);
        std::hint::black_box(&self.out);
    }

    const BATCHED: bool = true;

    fn apply_all(&mut self, cmds: &[Command]) {
        for (i, c) in cmds.iter().enumerate() {
            self.eng.look_ahead(|k| cmds.get(i + k));
            self.apply(c);
        }
    }

    fn summary(&self) -> Option<BookSummary> {
        let Some(m) = self.eng.find_market(MARKET.as_bytes()) else {
            return Some(BookSummary::default());
        };
        let bids = self.eng.depth(m, TSide::Buy, usize::MAX);
        let asks = self.eng.depth(m, TSide::Sell, usize::MAX);
        let total = |v: &[(Price, u64)]| v.iter().map(|&(_, q)| q / LOT_UNITS).sum();
        Some(BookSummary {
            best_bid: bids.first().map(|&(p, _)| p.units() / TICK_UNITS),
            best_ask: asks.first().map(|&(p, _)| p.units() / TICK_UNITS),
            bid_qty: Some(total(&bids)),
            ask_qty: Some(total(&asks)),
            orders: Some(u64::from(self.eng.live_orders())),
        })
    }
}
