//! Tandem's matching core: a deterministic state machine that turns
//! sequenced commands into events.
//!
//! `Engine::apply(seq, &command, &mut events)` is the only way state
//! changes. The core performs no I/O, reads no clock, draws no random
//! numbers and never lets hash-table order reach its output, so every
//! replica that applies the same log emits byte-identical events and the
//! same hash chain (`Engine::chain`). `Engine::snapshot` / `Engine::restore`
//! capture and rebuild the whole state.

mod chain;
mod command;
mod engine;
mod event;
mod hash;
mod mem;
mod num;
mod snapshot;
mod sym;
mod table;

pub use chain::chain_hex;
pub use command::{Amend, Cancel, Command, Invalid, OrderKind, Place, Side, Tif};
pub use engine::{prefetch, Config, Engine, OrderInfo, OrderStatus};
pub use event::{CancelReason, Event, IdIx, MarketIx, RejectReason};
pub use num::{parse_units, write_units, DecimalError, Price, Qty, DECIMALS, MAX_UNITS, SCALE};
pub use snapshot::SnapshotError;
pub use sym::Sym;
