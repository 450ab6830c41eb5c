//! Events: what `Engine::apply` emits. Names are held as indices into the
//! engine's append-only tables (resolved with `Engine::market_name` and
//! `Engine::order_id`), so emitting an event never copies a string.

use crate::{Price, Qty, Sym};

/// Why a live order's remainder left the book or never rested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// The owner cancelled it.
    User,
    /// The remainder of an IOC or market order.
    Ioc,
    /// A fill-or-kill that could not fill whole.
    Fok,
    /// The order reached a resting order of its own account.
    SelfTrade,
}

impl CancelReason {
    /// Contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::User => "user",
            CancelReason::Ioc => "ioc",
            CancelReason::Fok => "fok",
            CancelReason::SelfTrade => "self_trade",
        }
    }
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

/// Why a command was refused; a refused command changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Malformed: a missing field, a wrong type, a bad value.
    Invalid,
    /// The id was already taken in that market.
    DuplicateId,
    /// A post-only price crossed the best opposite price.
    PostOnly,
    /// No live order of that account with that id in that market.
    UnknownOrder,
    /// A configured capacity limit was reached.
    Limit,
    /// An amend based on an older state of the order (`Amend::base`):
    /// another based amend of it took effect since it was accepted.
    Stale,
}

impl RejectReason {
    /// Contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Invalid => "invalid",
            RejectReason::DuplicateId => "duplicate_id",
            RejectReason::PostOnly => "post_only",
            RejectReason::UnknownOrder => "unknown_order",
            RejectReason::Limit => "limit",
            RejectReason::Stale => "stale",
        }
    }
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

/// Index of a market in the engine (stable for the engine's life and
/// across snapshots).
pub type MarketIx = u32;
/// Index of a taken order id in the engine (stable, never reused).
pub type IdIx = u32;

/// One output event. The seq is the command's, held by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A place passed validation; emitted before its trades.
    Accepted { market: MarketIx, id: IdIx },
    /// A fill at the maker's price.
    Trade {
        market: MarketIx,
        maker: IdIx,
        taker: IdIx,
        price: Price,
        qty: Qty,
    },
    /// An order's remainder was cancelled.
    Cancelled {
        market: MarketIx,
        id: IdIx,
        remaining: Qty,
        reason: CancelReason,
    },
    /// A live order took a new price and remaining quantity.
    Amended {
        market: MarketIx,
        id: IdIx,
        price: Price,
        qty: Qty,
    },
    /// A command was refused.
    Rejected {
        market: Option<Sym>,
        id: Option<Sym>,
        reason: RejectReason,
    },
}
