//! Adapter for the `orderbook-rs` crate (0.15.3, lib `orderbook_rs`, built on
//! `pricelevel` 0.10.2): a concurrent (lock-free skiplist / `DashMap`) order
//! book, driven here from one thread.
//!
//! Mapping (book = `OrderBook::<()>::new("BTC-USD")`, default config: no STP,
//! no risk limits, no tick/lot validation, no listeners):
//! * limit add -> `add_limit_order_with_user(Id::Sequential(id), price, qty,
//!   side, TimeInForce::Gtc, user, None)`; it matches crossing liquidity and
//!   rests the remainder. Its trades are not materialised for the caller (no
//!   trade listener installed) which is the crate's own cheapest path and
//!   what its `mixed_70_20_10_hdr` bench uses;
//! * cancel    -> `cancel_order(Id::Sequential(id))`;
//! * market    -> `submit_market_order_with_user(id, qty, side, user)`, which
//!   returns a `MatchResult` (or `InsufficientLiquidity` on an empty side).
//!
//! Accounts are passed as `Hash32` user ids (account number in the first
//! four bytes), which the book indexes per user; with `STPMode::None` (the
//! default) they do not affect matching. The book stamps each add with a
//! wall-clock millisecond timestamp from its default `MonotonicClock`; that
//! is part of its measured cost.

use orderbook_rs::OrderBook;
use pricelevel::{Hash32, Id, Side as PSide, TimeInForce};

use crate::engine::BenchEngine;
use crate::workload::{BookSummary, Op, Side};

/// Pre-built orderbook-rs call.
#[derive(Debug, Clone, Copy)]
pub enum ObCmd {
    /// `add_limit_order_with_user`.
    Limit {
        /// Order id.
        id: Id,
        /// Price in ticks.
        price: u128,
        /// Quantity in lots.
        qty: u64,
        /// Side.
        side: PSide,
        /// Owner.
        user: Hash32,
    },
    /// `submit_market_order_with_user`.
    Market {
        /// Order id.
        id: Id,
        /// Quantity in lots.
        qty: u64,
        /// Side.
        side: PSide,
        /// Owner.
        user: Hash32,
    },
    /// `cancel_order`.
    Cancel {
        /// Order id.
        id: Id,
    },
}

/// `orderbook_rs::OrderBook<()>` under test.
pub struct OrderbookRs {
    book: OrderBook<()>,
}

impl std::fmt::Debug for OrderbookRs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderbookRs").finish_non_exhaustive()
    }
}

fn side(s: Side) -> PSide {
    match s {
        Side::Buy => PSide::Buy,
        Side::Sell => PSide::Sell,
    }
}

fn user(account: u32) -> Hash32 {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&(account + 1).to_le_bytes()); // never the all-zero id
    Hash32::new(b)
}

impl BenchEngine for OrderbookRs {
    const NAME: &'static str = "orderbook-rs";
    const VERSION: &'static str = "orderbook-rs 0.15.3";
    const SETUP: &'static str =
        "OrderBook::new(\"BTC-USD\"): nothing reserved; it grows while timed";
    type Cmd = ObCmd;

    fn new_engine(_expected_cmds: usize) -> Self {
        Self {
            book: OrderBook::<()>::new("BTC-USD"),
        }
    }

    fn prepare(op: &Op) -> ObCmd {
        match *op {
            Op::Limit {
                id,
                account,
                side: s,
                price,
                qty,
            } => ObCmd::Limit {
                id: Id::Sequential(id),
                price: u128::from(price),
                qty,
                side: side(s),
                user: user(account),
            },
            Op::Market {
                id,
                account,
                side: s,
                qty,
            } => ObCmd::Market {
                id: Id::Sequential(id),
                qty,
                side: side(s),
                user: user(account),
            },
            Op::Cancel { id, .. } => ObCmd::Cancel {
                id: Id::Sequential(id),
            },
        }
    }

    #[inline]
    fn apply(&mut self, cmd: &ObCmd) {
        match *cmd {
            ObCmd::Limit {
                id,
                price,
                qty,
                side,
                user,
            } => {
                let r = self.book.add_limit_order_with_user(
                    id,
                    price,
                    qty,
                    side,
                    TimeInForce::Gtc,
                    user,
                    None,
                );
                let _ = std::hint::black_box(r);
            }
            ObCmd::Market {
                id,
                qty,
                side,
                user,
            } => {
                let r = self.book.submit_market_order_with_user(id, qty, side, user);
                let _ = std::hint::black_box(r);
            }
            ObCmd::Cancel { id } => {
                let r = self.book.cancel_order(id);
                let _ = std::hint::black_box(r);
            }
        }
    }

    fn summary(&self) -> Option<BookSummary> {
        let mut s = BookSummary {
            best_bid: self.book.best_bid().and_then(|p| u64::try_from(p).ok()),
            best_ask: self.book.best_ask().and_then(|p| u64::try_from(p).ok()),
            ..BookSummary::default()
        };
        let (mut bq, mut aq, mut n) = (0u64, 0u64, 0u64);
        for o in self.book.get_all_orders() {
            n += 1;
            let q = o.visible_quantity().as_u64();
            match o.side() {
                PSide::Buy => bq += q,
                PSide::Sell => aq += q,
            }
        }
        s.bid_qty = Some(bq);
        s.ask_qty = Some(aq);
        s.orders = Some(n);
        Some(s)
    }
}
