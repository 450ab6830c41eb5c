//! The output hash chain. After each command,
//! `chain = xxh3_128(chain_prev (16 bytes LE) ‖ seq (8 bytes LE) ‖ events)`
//! where each event is encoded canonically. An order is named in full
//! once, by its `accepted` event; later events name it by its *ordinal*:
//! the number of `accepted` events (over all markets) before its own. The
//! ordinal is a fact of the output stream itself, so any implementation
//! that emits the same JSON events computes the same chain, and encoding a
//! trade reads no strings.
//!
//! ```text
//! str = len u32 LE ‖ bytes; absent str = 0xFFFF_FFFF; numbers u64 LE in units of 1e-8
//! 1 accepted  : market str, id str
//! 2 trade     : maker ordinal u64, taker ordinal u64, price, qty
//! 3 cancelled : ordinal u64, remaining, reason u8 (user 0, ioc 1, fok 2, self_trade 3)
//! 4 amended   : ordinal u64, price, qty
//! 5 rejected  : market str?, id str?, reason u8 (invalid 0, duplicate_id 1, post_only 2,
//!               unknown_order 3, limit 4)
//! ```

use xxhash_rust::xxh3::xxh3_128;

use crate::event::Event;
use crate::Engine;

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

/// Tag, then the fixed-size numeric tail of an event, written in one copy.
#[inline]
fn put_nums(buf: &mut Vec<u8>, a: u64, b: u64) {
    let mut x = [0u8; 16];
    x[..8].copy_from_slice(&a.to_le_bytes());
    x[8..].copy_from_slice(&b.to_le_bytes());
    buf.extend_from_slice(&x);
}

impl Engine {
    /// Appends the canonical encoding of `ev` to `buf`.
    #[inline]
    pub fn encode_event(&self, ev: &Event, buf: &mut Vec<u8>) {
        match ev {
            Event::Accepted { market, id } => {
                buf.push(1);
                put_str(buf, Some(self.market_name(*market).as_bytes()));
                put_str(buf, Some(self.order_id(*id).as_bytes()));
            }
            Event::Trade {
                maker,
                taker,
                price,
                qty,
                ..
            } => {
                buf.push(2);
                put_nums(buf, u64::from(*maker), u64::from(*taker));
                put_nums(buf, price.units(), qty.units());
            }
            Event::Cancelled {
                id,
                remaining,
                reason,
                ..
            } => {
                buf.push(3);
                put_nums(buf, u64::from(*id), remaining.units());
                buf.push(reason.code());
            }
            Event::Amended { id, price, qty, .. } => {
                buf.push(4);
                buf.extend_from_slice(&u64::from(*id).to_le_bytes());
                put_nums(buf, price.units(), qty.units());
            }
            Event::Rejected { market, id, reason } => {
                buf.push(5);
                put_str(buf, market.as_ref().map(|s| s.as_bytes()));
                put_str(buf, id.as_ref().map(|s| s.as_bytes()));
                buf.push(reason.code());
            }
        }
    }

    pub(crate) fn fold_chain(&mut self, seq: u64, events: &[Event]) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        // Room for the usual case up front, so the pushes below never grow.
        buf.reserve(32 + events.len() * 48);
        buf.extend_from_slice(&self.chain.to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
        for ev in events {
            self.encode_event(ev, &mut buf);
        }
        self.chain = xxh3_128(&buf);
        self.scratch = buf;
    }
}

/// Lower-case hex of a chain value, as `/v1/status` shows it.
pub fn chain_hex(chain: u128) -> String {
    format!("{chain:032x}")
}
