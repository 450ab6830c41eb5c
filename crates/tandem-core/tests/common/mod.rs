//! A reference model of the `tandem match` contract
//! (`/work/shared/contracts/match-jsonl.md`), written from the contract text
//! alone and kept deliberately naive: per market, one unsorted `Vec` of
//! resting orders per side with an arrival counter, a `BTreeMap` of taken
//! ids, and linear scans for everything (the best order is the minimum of a
//! priority key, found by scanning). Events are plain strings and `u64`
//! units (`ModelEvent`), so they can be compared with the engine's
//! index-based `Event`s after resolving names (`engine_events`).
//!
//! Where the contract leaves a choice open, the model takes this one:
//! field rules first (empty market/id/account, post-only without limit+gtc,
//! amend with neither price nor qty: `invalid`), then state (`duplicate_id`
//! before `post_only` on a place; `unknown_order` before `post_only` on an
//! amend); a post-only price "crosses" when it would trade (a buy at or
//! above the best ask, a sell at or below the best bid); an amended order
//! stays post-only.

use std::collections::BTreeMap;

use tandem_core::{
    Amend, Cancel, Command, Engine, Event, Invalid, OrderKind, OrderStatus, Place, Side, Tif,
};

/// An event with every name resolved and every number in units of 1e-8;
/// reasons are the contract's spellings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelEvent {
    Accepted {
        market: String,
        id: String,
    },
    Trade {
        market: String,
        maker: String,
        taker: String,
        price: u64,
        qty: u64,
    },
    Cancelled {
        market: String,
        id: String,
        remaining: u64,
        reason: &'static str,
    },
    Amended {
        market: String,
        id: String,
        price: u64,
        qty: u64,
    },
    Rejected {
        market: Option<String>,
        id: Option<String>,
        reason: &'static str,
    },
}

/// Resolves the engine's index-based events into `ModelEvent`s.
pub fn engine_events(engine: &Engine, events: &[Event]) -> Vec<ModelEvent> {
    let m = |ix| engine.market_name(ix).as_str().to_owned();
    let id = |ix| engine.order_id(ix).as_str().to_owned();
    events
        .iter()
        .map(|ev| match ev {
            Event::Accepted { market, id: i } => ModelEvent::Accepted {
                market: m(*market),
                id: id(*i),
            },
            Event::Trade {
                market,
                maker,
                taker,
                price,
                qty,
            } => ModelEvent::Trade {
                market: m(*market),
                maker: id(*maker),
                taker: id(*taker),
                price: price.units(),
                qty: qty.units(),
            },
            Event::Cancelled {
                market,
                id: i,
                remaining,
                reason,
            } => ModelEvent::Cancelled {
                market: m(*market),
                id: id(*i),
                remaining: remaining.units(),
                reason: reason.as_str(),
            },
            Event::Amended {
                market,
                id: i,
                price,
                qty,
            } => ModelEvent::Amended {
                market: m(*market),
                id: id(*i),
                price: price.units(),
                qty: qty.units(),
            },
            Event::Rejected {
                market,
                id: i,
                reason,
            } => ModelEvent::Rejected {
                market: market.as_ref().map(|s| s.as_str().to_owned()),
                id: i.as_ref().map(|s| s.as_str().to_owned()),
                reason: reason.as_str(),
            },
        })
        .collect()
}

/// One side of one market's final `book` event: `(id, price, qty)`, best
/// price first, then by time priority.
pub type BookSide = Vec<(String, u64, u64)>;

/// Every market that has had an accepted order, in byte order of name:
/// `(name, bids, asks)`.
pub type Books = Vec<(String, BookSide, BookSide)>;

/// The engine's books in the shape of the contract's final `book` events.
pub fn engine_books(engine: &Engine) -> Books {
    let side = |m, s| {
        engine
            .book_side(m, s)
            .map(|(ix, p, q)| {
                (
                    engine.order_id(ix).as_str().to_owned(),
                    p.units(),
                    q.units(),
                )
            })
            .collect()
    };
    engine
        .markets_by_name()
        .into_iter()
        .map(|m| {
            (
                engine.market_name(m).as_str().to_owned(),
                side(m, Side::Buy),
                side(m, Side::Sell),
            )
        })
        .collect()
}

/// A resting order. `arrival` is a global counter taken each time the
/// order enters the book (a place, or an amend that loses its place).
#[derive(Debug, Clone)]
struct Resting {
    id: String,
    account: String,
    price: u64,
    qty: u64,
    arrival: u64,
}

/// What the model remembers about a taken id (for `Engine::order`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub account: String,
    pub side: Side,
    /// Limit price as last placed or amended; `None` for a market order.
    pub price: Option<u64>,
    /// Quantity as last placed or amended.
    pub qty: u64,
    pub post_only: bool,
    pub status: OrderStatus,
    /// Amends with a base (`Amend::base`) that took effect, wrapping.
    pub changes: u16,
}

#[derive(Debug, Default, Clone)]
struct Book {
    bids: Vec<Resting>,
    asks: Vec<Resting>,
    /// Every id ever accepted in this market (rule 7), live or not.
    taken: BTreeMap<String, Taken>,
}

impl Book {
    fn side_mut(&mut self, side: Side) -> &mut Vec<Resting> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }
    fn side(&self, side: Side) -> &Vec<Resting> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }
}

/// Price-time priority key of a resting order on `side`: smaller is
/// better. Bids: higher price first; asks: lower price first; then arrival.
fn priority(side: Side, o: &Resting) -> (u64, u64) {
    match side {
        Side::Buy => (u64::MAX - o.price, o.arrival),
        Side::Sell => (o.price, o.arrival),
    }
}

/// Index of the best resting order on `side` (linear scan).
fn best(orders: &[Resting], side: Side) -> Option<usize> {
    (0..orders.len()).min_by_key(|&i| priority(side, &orders[i]))
}

/// A copy of `side`'s resting orders in priority order.
fn sorted(orders: &[Resting], side: Side) -> Vec<Resting> {
    let mut v = orders.to_vec();
    v.sort_by_key(|o| priority(side, o));
    v
}

/// Rule 2: does a `side` order limited at `limit` (`None`: market order)
/// accept a resting order at `price`?
fn acceptable(side: Side, limit: Option<u64>, price: u64) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(l)) => price <= l,
        (Side::Sell, Some(l)) => price >= l,
    }
}

/// Rule 5 / rule 9: does a `side` order at `price` cross the best
/// opposite price (whoever's order rests there)?
fn crosses(book: &Book, side: Side, price: u64) -> bool {
    let opp = book.side(side.opposite());
    best(opp, side.opposite()).is_some_and(|i| acceptable(side, Some(price), opp[i].price))
}

/// The reference model: markets by name (so iteration is byte order).
#[derive(Debug, Default, Clone)]
pub struct Model {
    markets: BTreeMap<String, Book>,
    arrivals: u64,
}

/// An arriving order: a new place, or an amend that lost its place.
struct Arrival<'a> {
    market: &'a str,
    id: &'a str,
    account: &'a str,
    side: Side,
    limit: Option<u64>,
    /// Does what is left rest (a `gtc` limit order)?
    rests: bool,
    qty: u64,
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one command and returns its events.
    pub fn apply(&mut self, cmd: &Command) -> Vec<ModelEvent> {
        let mut out = Vec::new();
        match cmd {
            Command::Place(p) => self.place(p, &mut out),
            Command::Cancel(c) => self.cancel(c, &mut out),
            Command::Amend(a) => self.amend(a, &mut out),
            Command::Invalid(Invalid { market, id, .. }) => out.push(ModelEvent::Rejected {
                market: market.as_ref().map(|s| s.as_str().to_owned()),
                id: id.as_ref().map(|s| s.as_str().to_owned()),
                reason: "invalid",
            }),
        }
        out
    }

    /// The final `book` events: markets that have had an accepted order,
    /// in byte order of name; each side best price first, then by time.
    pub fn books(&self) -> Books {
        let side = |orders: &[Resting], s| {
            sorted(orders, s)
                .into_iter()
                .map(|o| (o.id, o.price, o.qty))
                .collect()
        };
        self.markets
            .iter()
            .map(|(name, b)| {
                (
                    name.clone(),
                    side(&b.bids, Side::Buy),
                    side(&b.asks, Side::Sell),
                )
            })
            .collect()
    }

    /// Orders resting now, over all markets.
    pub fn live_orders(&self) -> usize {
        self.markets
            .values()
            .map(|b| b.bids.len() + b.asks.len())
            .sum()
    }

    /// The base a node would give an amend of this order now (0 for an id
    /// not taken or another account's).
    pub fn changes(&self, market: &str, id: &str, account: &str) -> u16 {
        self.markets
            .get(market)
            .and_then(|b| b.taken.get(id))
            .filter(|t| t.account == account)
            .map_or(0, |t| t.changes)
    }

    /// Every live order as `(market, id, account)`.
    pub fn live(&self) -> Vec<(String, String, String)> {
        let mut v = Vec::new();
        for (m, b) in &self.markets {
            for o in b.bids.iter().chain(&b.asks) {
                v.push((m.clone(), o.id.clone(), o.account.clone()));
            }
        }
        v
    }

    /// Ids taken so far, over all markets.
    pub fn taken_ids(&self) -> usize {
        self.markets.values().map(|b| b.taken.len()).sum()
    }

    /// Every taken id: `(market, id, what the model knows, remaining)`.
    pub fn taken(&self) -> Vec<(String, String, Taken, u64)> {
        let mut v = Vec::new();
        for (m, b) in &self.markets {
            for (id, t) in &b.taken {
                let remaining = b
                    .bids
                    .iter()
                    .chain(&b.asks)
                    .find(|o| &o.id == id)
                    .map_or(0, |o| o.qty);
                v.push((m.clone(), id.clone(), t.clone(), remaining));
            }
        }
        v
    }

    fn rejected(market: &str, id: &str, reason: &'static str, out: &mut Vec<ModelEvent>) {
        out.push(ModelEvent::Rejected {
            market: Some(market.to_owned()),
            id: Some(id.to_owned()),
            reason,
        });
    }

    fn place(&mut self, p: &Place, out: &mut Vec<ModelEvent>) {
        let (market, id, account) = (p.market.as_str(), p.id.as_str(), p.account.as_str());
        // Field rules: non-empty strings; post_only only with limit + gtc.
        if market.is_empty() || id.is_empty() || account.is_empty() {
            return Self::rejected(market, id, "invalid", out);
        }
        let limit = match p.kind {
            OrderKind::Limit(px) => Some(px.units()),
            OrderKind::Market => None,
        };
        if p.post_only && !(limit.is_some() && p.tif == Tif::Gtc) {
            return Self::rejected(market, id, "invalid", out);
        }
        if let Some(book) = self.markets.get(market) {
            // Rule 7.
            if book.taken.contains_key(id) {
                return Self::rejected(market, id, "duplicate_id", out);
            }
            // Rule 5.
            if let (true, Some(px)) = (p.post_only, limit) {
                if crosses(book, p.side, px) {
                    return Self::rejected(market, id, "post_only", out);
                }
            }
        }
        let qty = p.qty.units();
        let book = self.markets.entry(market.to_owned()).or_default();
        book.taken.insert(
            id.to_owned(),
            Taken {
                account: account.to_owned(),
                side: p.side,
                price: limit,
                qty,
                post_only: p.post_only,
                status: OrderStatus::Open,
                changes: 0,
            },
        );
        out.push(ModelEvent::Accepted {
            market: market.to_owned(),
            id: id.to_owned(),
        });
        // Rule 4: count what it could take, in priority order, at
        // acceptable prices, stopping at the first order of its account.
        if p.tif == Tif::Fok {
            let mut fillable = 0u64;
            for o in sorted(book.side(p.side.opposite()), p.side.opposite()) {
                if !acceptable(p.side, limit, o.price) || o.account == account {
                    break;
                }
                fillable += o.qty;
            }
            if fillable < qty {
                Self::finish(book, id, OrderStatus::Cancelled);
                out.push(ModelEvent::Cancelled {
                    market: market.to_owned(),
                    id: id.to_owned(),
                    remaining: qty,
                    reason: "fok",
                });
                return;
            }
        }
        // Rule 3: only a gtc limit order rests.
        let rests = limit.is_some() && p.tif == Tif::Gtc;
        let arrival = Arrival {
            market,
            id,
            account,
            side: p.side,
            limit,
            rests,
            qty,
        };
        self.arrivals += 1;
        let at = self.arrivals;
        let book = self.markets.get_mut(market).expect("just inserted");
        Self::enter(book, &arrival, at, out);
    }

    fn finish(book: &mut Book, id: &str, status: OrderStatus) {
        book.taken.get_mut(id).expect("taken").status = status;
    }

    /// Trades an arriving order as a taker (rules 1, 2, 6), then rests or
    /// cancels what is left (rule 3).
    fn enter(book: &mut Book, a: &Arrival<'_>, arrival: u64, out: &mut Vec<ModelEvent>) {
        let mut left = a.qty;
        let mut self_trade = false;
        let opp_side = a.side.opposite();
        while left > 0 {
            let opp = book.side_mut(opp_side);
            let Some(i) = best(opp, opp_side) else { break };
            if !acceptable(a.side, a.limit, opp[i].price) {
                break;
            }
            if opp[i].account == a.account {
                self_trade = true;
                break;
            }
            let fill = left.min(opp[i].qty);
            out.push(ModelEvent::Trade {
                market: a.market.to_owned(),
                maker: opp[i].id.clone(),
                taker: a.id.to_owned(),
                price: opp[i].price,
                qty: fill,
            });
            left -= fill;
            opp[i].qty -= fill;
            if opp[i].qty == 0 {
                let maker = opp.remove(i);
                Self::finish(book, &maker.id, OrderStatus::Filled);
            }
        }
        let cancelled = |reason| ModelEvent::Cancelled {
            market: a.market.to_owned(),
            id: a.id.to_owned(),
            remaining: left,
            reason,
        };
        if self_trade {
            Self::finish(book, a.id, OrderStatus::Cancelled);
            out.push(cancelled("self_trade"));
        } else if left == 0 {
            Self::finish(book, a.id, OrderStatus::Filled);
        } else if a.rests {
            let price = a.limit.expect("a resting order has a limit");
            book.side_mut(a.side).push(Resting {
                id: a.id.to_owned(),
                account: a.account.to_owned(),
                price,
                qty: left,
                arrival,
            });
        } else {
            Self::finish(book, a.id, OrderStatus::Cancelled);
            out.push(cancelled("ioc"));
        }
    }

    /// The live order `id` of `account` in `market`: (side, index).
    fn find_live(&self, market: &str, id: &str, account: &str) -> Option<(Side, usize)> {
        let book = self.markets.get(market)?;
        for side in [Side::Buy, Side::Sell] {
            if let Some(i) = book
                .side(side)
                .iter()
                .position(|o| o.id == id && o.account == account)
            {
                return Some((side, i));
            }
        }
        None
    }

    fn cancel(&mut self, c: &Cancel, out: &mut Vec<ModelEvent>) {
        let (market, id, account) = (c.market.as_str(), c.id.as_str(), c.account.as_str());
        if market.is_empty() || id.is_empty() || account.is_empty() {
            return Self::rejected(market, id, "invalid", out);
        }
        // Rule 8.
        let Some((side, i)) = self.find_live(market, id, account) else {
            return Self::rejected(market, id, "unknown_order", out);
        };
        let book = self.markets.get_mut(market).expect("found");
        let o = book.side_mut(side).remove(i);
        Self::finish(book, id, OrderStatus::Cancelled);
        out.push(ModelEvent::Cancelled {
            market: market.to_owned(),
            id: id.to_owned(),
            remaining: o.qty,
            reason: "user",
        });
    }

    fn amend(&mut self, a: &Amend, out: &mut Vec<ModelEvent>) {
        let (market, id, account) = (a.market.as_str(), a.id.as_str(), a.account.as_str());
        if market.is_empty()
            || id.is_empty()
            || account.is_empty()
            || (a.price.is_none() && a.qty.is_none())
        {
            return Self::rejected(market, id, "invalid", out);
        }
        // Rule 9: same rejections as cancel.
        let Some((side, i)) = self.find_live(market, id, account) else {
            return Self::rejected(market, id, "unknown_order", out);
        };
        let book = self.markets.get_mut(market).expect("found");
        // A based amend applies only to the state its base names.
        if a.base.is_some_and(|b| b != book.taken[id].changes) {
            return Self::rejected(market, id, "stale", out);
        }
        let old = book.side(side)[i].clone();
        let price = a.price.map_or(old.price, |p| p.units());
        let qty = a.qty.map_or(old.qty, |q| q.units());
        let post_only = book.taken[id].post_only;
        if post_only && crosses(book, side, price) {
            return Self::rejected(market, id, "post_only", out);
        }
        let t = book.taken.get_mut(id).expect("taken");
        t.price = Some(price);
        t.qty = qty;
        if a.base.is_some() {
            t.changes = t.changes.wrapping_add(1);
        }
        let amended = ModelEvent::Amended {
            market: market.to_owned(),
            id: id.to_owned(),
            price,
            qty,
        };
        if price == old.price && qty <= old.qty {
            // Keeps its place in the queue.
            book.side_mut(side)[i].qty = qty;
            out.push(amended);
            return;
        }
        // Leaves the book and re-enters as a new arrival, keeping its id.
        book.side_mut(side).remove(i);
        out.push(amended);
        let arrival = Arrival {
            market,
            id,
            account,
            side,
            limit: Some(price),
            rests: true,
            qty,
        };
        self.arrivals += 1;
        let at = self.arrivals;
        let book = self.markets.get_mut(market).expect("found");
        Self::enter(book, &arrival, at, out);
    }
}
