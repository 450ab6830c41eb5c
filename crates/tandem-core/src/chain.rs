//! The output hash chain.
//!
//! Every command appends `seq (u64 LE) ‖ its events, canonically encoded`
//! to one byte stream. The stream is folded in blocks: the state starts as
//! 16 zero bytes, and whenever at least `BLOCK` (1024) bytes are pending
//! at the end of a command,
//! `state = xxh3_128(state (16 bytes LE) ‖ pending)` and the pending bytes
//! are dropped. The chain after seq N is `xxh3_128(state ‖ pending)` at
//! that point. It is a function of the output stream up to N alone, so
//! replicas that emitted the same events agree on it at every seq, and a
//! snapshot carries `state ‖ pending` (fewer than `BLOCK` pending bytes)
//! so a restored replica continues the same stream. Folding in blocks costs
//! a fraction of a cycle per byte instead of one hash call per command;
//! small blocks keep the occasional fold off the latency tail.
//!
//! An order is named in full once, by its `accepted` event; later events
//! name it by its *ordinal*: the number of `accepted` events (over all
//! markets) before its own, a fact of the output stream that any
//! implementation emitting the same JSON computes identically.
//!
//! ```text
//! str = len u32 LE ‖ bytes; absent str = 0xFFFF_FFFF; numbers u64 LE in units of 1e-8
//! 1 accepted  : market str, id str
//! 2 trade     : maker ordinal u64, taker ordinal u64, price, qty
//! 3 cancelled : ordinal u64, remaining, reason u8 (user 0, ioc 1, fok 2, self_trade 3)
//! 4 amended   : ordinal u64, price, qty
//! 5 rejected  : market str?, id str?, reason u8 (invalid 0, duplicate_id 1, post_only 2,
//!               unknown_order 3, limit 4, stale 5)
//! ```

use xxhash_rust::xxh3::xxh3_128;

use crate::engine::{IdEntry, Market};
use crate::event::Event;
use crate::sym::INLINE;
use crate::{Engine, Sym};

#[inline]
fn put_str(buf: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(b) => {
            buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
            buf.extend_from_slice(b);
        }
        None => buf.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

/// `put_str` of a symbol. An inline symbol is copied as its whole
/// zero-padded buffer behind the length, then cut back to its length: two
/// fixed-size stores instead of a `memcpy` call of a variable length.
#[inline(always)]
fn put_sym(buf: &mut Vec<u8>, s: &Sym) {
    match s.inline_parts() {
        Some((bytes, len)) => {
            let mut x = [0u8; 4 + INLINE];
            x[..4].copy_from_slice(&u32::from(len).to_le_bytes());
            x[4..].copy_from_slice(bytes);
            let end = buf.len() + 4 + usize::from(len);
            buf.extend_from_slice(&x);
            buf.truncate(end);
        }
        None => put_str(buf, Some(s.as_bytes())),
    }
}

/// A fixed-size record: `tag`, the numbers of `nums` (u64 LE), then the
/// bytes of `tail`, built on the stack and appended in one copy (`N` is
/// the record's size).
#[inline(always)]
fn put_fixed<const N: usize>(buf: &mut Vec<u8>, tag: u8, nums: &[u64], tail: &[u8]) {
    let mut x = [0u8; N];
    x[0] = tag;
    for (i, n) in nums.iter().enumerate() {
        x[1 + 8 * i..9 + 8 * i].copy_from_slice(&n.to_le_bytes());
    }
    x[1 + 8 * nums.len()..].copy_from_slice(tail);
    buf.extend_from_slice(&x);
}

/// Appends the canonical encoding of `ev` to `buf`; names are read from
/// the engine's market and id tables.
#[inline(always)]
pub(crate) fn encode(markets: &[Market], ids: &[IdEntry], ev: &Event, buf: &mut Vec<u8>) {
    match ev {
        Event::Accepted { market, id } => {
            buf.push(1);
            put_sym(buf, &markets[*market as usize].name);
            put_sym(buf, &ids[*id as usize].id);
        }
        Event::Trade {
            maker,
            taker,
            price,
            qty,
            ..
        } => put_fixed::<33>(
            buf,
            2,
            &[
                u64::from(*maker),
                u64::from(*taker),
                price.units(),
                qty.units(),
            ],
            &[],
        ),
        Event::Cancelled {
            id,
            remaining,
            reason,
            ..
        } => put_fixed::<18>(
            buf,
            3,
            &[u64::from(*id), remaining.units()],
            &[reason.code()],
        ),
        Event::Amended { id, price, qty, .. } => {
            put_fixed::<25>(buf, 4, &[u64::from(*id), price.units(), qty.units()], &[])
        }
        Event::Rejected { market, id, reason } => {
            buf.push(5);
            match market {
                Some(s) => put_sym(buf, s),
                None => put_str(buf, None),
            }
            match id {
                Some(s) => put_sym(buf, s),
                None => put_str(buf, None),
            }
            buf.push(reason.code());
        }
    }
}

impl Engine {
    /// Appends the canonical encoding of `ev` to `buf`.
    #[inline]
    pub fn encode_event(&self, ev: &Event, buf: &mut Vec<u8>) {
        encode(&self.markets, &self.ids, ev, buf);
    }

    /// Starts command `seq`'s bytes in the chain; its events follow, each
    /// encoded by `Engine::emit` as it is made.
    #[inline]
    pub(crate) fn chain_begin(&mut self, seq: u64) {
        self.chain_buf.extend_from_slice(&seq.to_le_bytes());
    }

    /// Ends a command: folds the bytes not yet folded once they reach a
    /// block.
    #[inline]
    pub(crate) fn chain_end(&mut self) {
        let buf = &mut self.chain_buf;
        if buf.len() >= STATE + BLOCK {
            let state = xxh3_128(buf);
            buf.clear();
            buf.extend_from_slice(&state.to_le_bytes());
        }
    }
}

/// Bytes of folded state at the front of the chain buffer.
pub(crate) const STATE: usize = 16;
/// Pending bytes that trigger a fold.
pub(crate) const BLOCK: usize = 1024;

/// The chain buffer of an engine that has emitted nothing.
pub(crate) fn initial_buf() -> Vec<u8> {
    let mut v = Vec::with_capacity(STATE + BLOCK + 1024);
    v.extend_from_slice(&[0u8; STATE]);
    v
}

/// The chain value of a chain buffer.
pub(crate) fn digest(buf: &[u8]) -> u128 {
    xxh3_128(buf)
}

/// Lower-case hex of a chain value, as `/v1/status` shows it.
pub fn chain_hex(chain: u128) -> String {
    format!("{chain:032x}")
}
