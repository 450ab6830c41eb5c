//! The output hash chain. After each command,
//! `chain = xxh3_128(chain_prev (16 bytes LE) ‖ seq (8 bytes LE) ‖ events)`
//! where each event is encoded canonically:
//!
//! ```text
//! tag u8 | market str | fields...       str = len u32 LE ‖ bytes, absent = 0xFFFF_FFFF
//! 1 accepted  : market, id
//! 2 trade     : market, maker id, taker id, price u64, qty u64
//! 3 cancelled : market, id, remaining u64, reason u8 (user 0, ioc 1, fok 2, self_trade 3)
//! 4 amended   : market, id, price u64, qty u64
//! 5 rejected  : market?, id?, reason u8 (invalid 0, duplicate_id 1, post_only 2, unknown_order 3, limit 4)
//! ```
//! Numbers are units of 1e-8, little-endian. The encoding depends only on
//! what the JSON event says, never on internal indices, so replicas built
//! from snapshots or from the start agree byte for byte.

use xxhash_rust::xxh3::xxh3_128;

use crate::event::Event;
use crate::Engine;

fn put_str(buf: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(b) => {
            buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
            buf.extend_from_slice(b);
        }
        None => buf.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

impl Engine {
    /// Appends the canonical encoding of `ev` to `buf`.
    pub fn encode_event(&self, ev: &Event, buf: &mut Vec<u8>) {
        match ev {
            Event::Accepted { market, id } => {
                buf.push(1);
                put_str(buf, Some(self.market_name(*market).as_bytes()));
                put_str(buf, Some(self.order_id(*id).as_bytes()));
            }
            Event::Trade {
                market,
                maker,
                taker,
                price,
                qty,
            } => {
                buf.push(2);
                put_str(buf, Some(self.market_name(*market).as_bytes()));
                put_str(buf, Some(self.order_id(*maker).as_bytes()));
                put_str(buf, Some(self.order_id(*taker).as_bytes()));
                buf.extend_from_slice(&price.units().to_le_bytes());
                buf.extend_from_slice(&qty.units().to_le_bytes());
            }
            Event::Cancelled {
                market,
                id,
                remaining,
                reason,
            } => {
                buf.push(3);
                put_str(buf, Some(self.market_name(*market).as_bytes()));
                put_str(buf, Some(self.order_id(*id).as_bytes()));
                buf.extend_from_slice(&remaining.units().to_le_bytes());
                buf.push(reason.code());
            }
            Event::Amended {
                market,
                id,
                price,
                qty,
            } => {
                buf.push(4);
                put_str(buf, Some(self.market_name(*market).as_bytes()));
                put_str(buf, Some(self.order_id(*id).as_bytes()));
                buf.extend_from_slice(&price.units().to_le_bytes());
                buf.extend_from_slice(&qty.units().to_le_bytes());
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
