//! Adapter for the `lobster` crate (0.7.0): a single-threaded limit order
//! book with `u128` ids and integer `u64` prices / quantities.
//!
//! Mapping (everything goes through `OrderBook::execute(OrderType)`):
//! * limit add  -> `OrderType::Limit { id, side, qty, price }` (price in ticks,
//!   qty in lots; matches then rests the remainder, i.e. GTC);
//! * cancel     -> `OrderType::Cancel { id }`;
//! * market     -> `OrderType::Market { id, side, qty }` (IOC, remainder dropped).
//!
//! Accounts are not part of lobster's model (no STP, no ownership check).
//! The book is `OrderBook::default()` (arena of 10 000 pre-allocated orders,
//! stats tracking off). Each `execute` returns an `OrderEvent` that owns a
//! `Vec` of fills; it is passed to `black_box` and dropped inside the timed
//! region, as a caller would.

use lobster::{OrderBook, OrderType, Side as LSide};

use crate::engine::BenchEngine;
use crate::workload::{BookSummary, Op, Side};

/// `lobster::OrderBook` under test.
#[derive(Debug)]
pub struct Lobster {
    book: OrderBook,
}

fn side(s: Side) -> LSide {
    match s {
        Side::Buy => LSide::Bid,
        Side::Sell => LSide::Ask,
    }
}

impl BenchEngine for Lobster {
    const NAME: &'static str = "lobster";
    const VERSION: &'static str = "lobster 0.7.0";
    const SETUP: &'static str =
        "OrderBook::default(): an arena of 10 000 orders made before timing; \
        its maps and queues grow while timed (its page faults are counted in the latency pass)";
    type Cmd = OrderType;

    fn new_engine(_expected_cmds: usize) -> Self {
        Self {
            book: OrderBook::default(),
        }
    }

    fn prepare(op: &Op) -> OrderType {
        match *op {
            Op::Limit {
                id,
                side: s,
                price,
                qty,
                ..
            } => OrderType::Limit {
                id: u128::from(id),
                side: side(s),
                qty,
                price,
            },
            Op::Market {
                id, side: s, qty, ..
            } => OrderType::Market {
                id: u128::from(id),
                side: side(s),
                qty,
            },
            Op::Cancel { id, .. } => OrderType::Cancel { id: u128::from(id) },
        }
    }

    #[inline]
    fn apply(&mut self, cmd: &OrderType) {
        std::hint::black_box(self.book.execute(*cmd));
    }

    fn summary(&self) -> Option<BookSummary> {
        // `depth` walks every level regardless of its argument; sum them.
        let d = self.book.depth(0);
        Some(BookSummary {
            best_bid: self.book.max_bid(),
            best_ask: self.book.min_ask(),
            bid_qty: Some(d.bids.iter().map(|l| l.qty).sum()),
            ask_qty: Some(d.asks.iter().map(|l| l.qty).sum()),
            orders: None,
        })
    }
}
