//! What a signature covers: the fields of a command that matter, in their
//! canonical text (`docs/signing.md`), and the Ed25519 message built from
//! them. The EIP-712 form of the same fields is in `eip712`.
//!
//! The values are taken from the decoded `Command`, never from the request
//! bytes, so that a client, the node and an auditor reading the log derive
//! the same message: decimals are `tandem_core::write_units`' shortest
//! exact form (`"100.25"`, `"1"`, never `"1.50"`), a field the op does not
//! have is the empty string, `post_only` is false unless set.

use tandem_core::{Command, OrderKind};

/// The op of a signed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedOp {
    Place,
    Cancel,
    Amend,
}

impl SignedOp {
    pub fn as_str(self) -> &'static str {
        match self {
            SignedOp::Place => "place",
            SignedOp::Cancel => "cancel",
            SignedOp::Amend => "amend",
        }
    }
}

/// The signed fields of one command, as canonical text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFields<'a> {
    pub op: SignedOp,
    pub market: &'a str,
    pub id: &'a str,
    pub account: &'a str,
    /// `buy`/`sell` for a place, else empty.
    pub side: &'static str,
    /// `limit`/`market` for a place, else empty.
    pub order_type: &'static str,
    /// Canonical decimal; empty for a market order, a cancel, or an amend
    /// that does not change the price.
    pub price: String,
    /// Canonical decimal; empty for a cancel or an amend that does not
    /// change the quantity.
    pub qty: String,
    /// `gtc`/`ioc`/`fok` for a place, else empty.
    pub tif: &'static str,
    pub post_only: bool,
    /// Unix time in seconds after which the node refuses the command.
    pub expiry: u64,
}

fn units(u: u64) -> String {
    let mut b = Vec::with_capacity(24);
    tandem_core::write_units(u, &mut b);
    String::from_utf8(b).expect("digits and a point")
}

impl<'a> SignedFields<'a> {
    /// The signed fields of `cmd` with `expiry`; `None` for an invalid
    /// command (never signed, never logged).
    pub fn of(cmd: &'a Command, expiry: u64) -> Option<SignedFields<'a>> {
        Some(match cmd {
            Command::Place(p) => SignedFields {
                op: SignedOp::Place,
                market: p.market.as_str(),
                id: p.id.as_str(),
                account: p.account.as_str(),
                side: p.side.as_str(),
                order_type: match p.kind {
                    OrderKind::Limit(_) => "limit",
                    OrderKind::Market => "market",
                },
                price: match p.kind {
                    OrderKind::Limit(pr) => units(pr.units()),
                    OrderKind::Market => String::new(),
                },
                qty: units(p.qty.units()),
                tif: p.tif.as_str(),
                post_only: p.post_only,
                expiry,
            },
            Command::Cancel(c) => SignedFields {
                op: SignedOp::Cancel,
                market: c.market.as_str(),
                id: c.id.as_str(),
                account: c.account.as_str(),
                side: "",
                order_type: "",
                price: String::new(),
                qty: String::new(),
                tif: "",
                post_only: false,
                expiry,
            },
            Command::Amend(a) => SignedFields {
                op: SignedOp::Amend,
                market: a.market.as_str(),
                id: a.id.as_str(),
                account: a.account.as_str(),
                side: "",
                order_type: "",
                price: a.price.map(|p| units(p.units())).unwrap_or_default(),
                qty: a.qty.map(|q| units(q.units())).unwrap_or_default(),
                tif: "",
                post_only: false,
                expiry,
            },
            Command::Invalid(_) => return None,
        })
    }

    /// The Ed25519 message: the domain tag, the chain id, then every field
    /// in a fixed order, strings as a 4-byte big-endian length and their
    /// UTF-8 bytes, `post_only` as one byte, `expiry` as 8 bytes big-endian.
    /// Length prefixes make the encoding injective whatever bytes a market
    /// or id holds.
    pub fn ed25519_message(&self, chain_id: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(
            ED25519_DOMAIN.len()
                + 8
                + 9 * 4
                + self.market.len()
                + self.id.len()
                + self.account.len()
                + 64,
        );
        m.extend_from_slice(ED25519_DOMAIN);
        m.extend_from_slice(&chain_id.to_be_bytes());
        for s in [
            self.op.as_str(),
            self.market,
            self.id,
            self.account,
            self.side,
            self.order_type,
            &self.price,
            &self.qty,
            self.tif,
        ] {
            m.extend_from_slice(&(s.len() as u32).to_be_bytes());
            m.extend_from_slice(s.as_bytes());
        }
        m.push(u8::from(self.post_only));
        m.extend_from_slice(&self.expiry.to_be_bytes());
        m
    }
}

/// First bytes of every Ed25519 order message (ends with a NUL), so that
/// a signature made for Tandem orders is never valid for anything else
/// that key signs.
pub const ED25519_DOMAIN: &[u8] = b"Tandem order v1 ed25519\0";

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        tandem_codec::decode_command(line.as_bytes())
    }

    #[test]
    fn fields_are_canonical_and_absent_ones_empty() {
        let c = cmd(
            r#"{"op":"place","market":"BTC-USD","id":"o1","account":"a","side":"buy","price":"0100.250","qty":"1.50"}"#,
        );
        let f = SignedFields::of(&c, 7).unwrap();
        assert_eq!((f.price.as_str(), f.qty.as_str()), ("100.25", "1.5"));
        assert_eq!((f.order_type, f.tif, f.post_only), ("limit", "gtc", false));
        let c = cmd(r#"{"op":"amend","market":"M","id":"o1","account":"a","qty":"2"}"#);
        let f = SignedFields::of(&c, 7).unwrap();
        assert_eq!((f.price.as_str(), f.qty.as_str(), f.side), ("", "2", ""));
        assert!(SignedFields::of(&cmd("{}"), 7).is_none());
    }

    /// Moving bytes from one field to the next changes the message.
    #[test]
    fn the_message_is_injective_across_field_boundaries() {
        let a = cmd(r#"{"op":"cancel","market":"AB","id":"C","account":"x"}"#);
        let b = cmd(r#"{"op":"cancel","market":"A","id":"BC","account":"x"}"#);
        let ma = SignedFields::of(&a, 1).unwrap().ed25519_message(1);
        let mb = SignedFields::of(&b, 1).unwrap().ed25519_message(1);
        assert_ne!(ma, mb);
        assert!(ma.starts_with(ED25519_DOMAIN));
        let other_chain = SignedFields::of(&a, 1).unwrap().ed25519_message(2);
        assert_ne!(ma, other_chain);
    }

    /// The example of `docs/signing.md`, computed from that page's byte
    /// layout independently with Python's PyNaCl 1.5 (libsodium), by:
    ///
    /// ```python
    /// # The Ed25519 example of docs/signing.md, computed from the spec with PyNaCl.
    /// import struct
    /// from nacl.signing import SigningKey
    /// key = SigningKey(bytes([7]) * 32)
    /// account = "ed25519:" + key.verify_key.encode().hex()
    /// def s(x):
    ///     b = x.encode()
    ///     return struct.pack(">I", len(b)) + b
    /// msg = b"Tandem order v1 ed25519\x00" + struct.pack(">Q", 1)
    /// for f in ["place", "BTC-USD", "o1", account, "buy", "limit", "100.25", "1.5", "gtc"]:
    ///     msg += s(f)
    /// msg += bytes([0]) + struct.pack(">Q", 1767225600)
    /// print("account", account)
    /// print("msg", msg.hex())
    /// print("sig", key.sign(msg).signature.hex())
    /// ```
    #[test]
    fn ed25519_message_and_signature_are_pinned() {
        use crate::auth::keys::SecretKey;
        use crate::auth::{to_hex, Policy, Scheme};
        let key = SecretKey::from_secret(Scheme::Ed25519, &[7u8; 32]).unwrap();
        assert_eq!(
            key.account(),
            "ed25519:ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
        );
        let c = cmd(&format!(
            r#"{{"op":"place","market":"BTC-USD","id":"o1","account":"{}","side":"buy","price":"100.25","qty":"1.5"}}"#,
            key.account()
        ));
        let f = SignedFields::of(&c, 1_767_225_600).unwrap();
        assert_eq!(
            to_hex(&f.ed25519_message(1)),
            "54616e64656d206f72646572207631206564323535313900000000000000000100000005706c61\
             6365000000074254432d555344000000026f3100000048656432353531393a656134613663363365\
             3239633532306162656635353037623133326563356639393534373736616562656265376239323432\
             316565613639313434366432326300000003627579000000056c696d6974000000063130302e3235\
             00000003312e350000000367746300000000006955b900"
        );
        let sig = key
            .sign(&c, 1_767_225_600, &Policy::new(1, 300, 5))
            .unwrap();
        assert_eq!(
            to_hex(&sig.sig),
            "7adc06a1864bdb550cf2f0d0582f61b59f0fbc5cdf2101c5e48f29765b781adff37e6c5e500453e3\
             c509e5063245360169c786dd9f6d08555e4e00c855709b0e"
        );
    }
}
