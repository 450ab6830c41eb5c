//! Commands: what the log carries and `Engine::apply` consumes. A command
//! that failed to decode is still a command (`Invalid`), so that it takes
//! its seq and yields a `rejected` event like any other.

use crate::{Price, Qty, Sym};

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// The side an order of this side trades against.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
    /// Contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// Time in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tif {
    /// Good till cancelled: the remainder rests.
    Gtc,
    /// Immediate or cancel: the remainder is cancelled.
    Ioc,
    /// Fill or kill: all at once or nothing.
    Fok,
}

impl Tif {
    /// Contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Tif::Gtc => "gtc",
            Tif::Ioc => "ioc",
            Tif::Fok => "fok",
        }
    }
}

/// A limit order with its price, or a market order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderKind {
    Limit(Price),
    Market,
}

/// `op: place`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Place {
    pub market: Sym,
    pub id: Sym,
    pub account: Sym,
    pub side: Side,
    pub kind: OrderKind,
    pub qty: Qty,
    pub tif: Tif,
    pub post_only: bool,
}

/// `op: cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cancel {
    pub market: Sym,
    pub id: Sym,
    pub account: Sym,
}

/// `op: amend`: a new price, a new remaining quantity, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Amend {
    pub market: Sym,
    pub id: Sym,
    pub account: Sym,
    pub price: Option<Price>,
    pub qty: Option<Qty>,
    /// The order's count of based amends (`Engine::order_changes`) as the
    /// node that accepted this one read it: set by a node in its log
    /// records (`log.retry_safe_amends`), never by `tandem match` input.
    /// An amend with a base applies only if no based amend of the order
    /// took effect since that read; otherwise it is rejected (`stale`).
    /// So a second copy of one request (a retry, a copy delayed in a
    /// node's queue) never applies twice, whatever happened between. An
    /// amend without a base applies as `contracts/match-jsonl.md` says,
    /// every time.
    pub base: Option<u16>,
}

/// A command that could not be decoded; kept for its seq and its event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Invalid {
    /// The `market` field, when the input had it as a string.
    pub market: Option<Sym>,
    /// The `id` field, when the input had it as a string.
    pub id: Option<Sym>,
    /// Which field was wrong (for the node's 4xx; not part of engine output).
    pub field: &'static str,
}

/// One entry of the order log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    Place(Place),
    Cancel(Cancel),
    Amend(Amend),
    Invalid(Invalid),
}

impl Command {
    /// The market this command names, if any.
    pub fn market(&self) -> Option<&Sym> {
        match self {
            Command::Place(p) => Some(&p.market),
            Command::Cancel(c) => Some(&c.market),
            Command::Amend(a) => Some(&a.market),
            Command::Invalid(i) => i.market.as_ref(),
        }
    }
}
