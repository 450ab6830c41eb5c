//! EIP-712 typed data for orders signed by Ethereum wallets
//! (`eth_signTypedData_v4`): the domain, one struct per op, and the digest
//! `keccak256(0x19 0x01 ‖ domainSeparator ‖ hashStruct(message))` that a
//! wallet signs with secp256k1. `docs/signing.md` gives the same
//! definitions as JSON a wallet takes.
//!
//! Domain: `EIP712Domain(string name,string version,uint256 chainId)` with
//! name `Tandem`, version `1` and the node's `signing.chain_id`. No
//! `verifyingContract`: orders are not sent to a contract.

use sha3::{Digest, Keccak256};

use super::message::{SignedFields, SignedOp};

/// The type of the domain, as EIP-712 encodes it.
pub const DOMAIN_TYPE: &str = "EIP712Domain(string name,string version,uint256 chainId)";
/// The domain's `name` and `version`.
pub const DOMAIN_NAME: &str = "Tandem";
pub const DOMAIN_VERSION: &str = "1";

/// The primary types, one per op.
pub const PLACE_TYPE: &str = "PlaceOrder(string market,string id,address account,string side,\
string orderType,string price,string qty,string tif,bool postOnly,uint64 expiry)";
pub const CANCEL_TYPE: &str = "CancelOrder(string market,string id,address account,uint64 expiry)";
pub const AMEND_TYPE: &str =
    "AmendOrder(string market,string id,address account,string price,string qty,uint64 expiry)";

pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// A `uint` or `bool` as its 32-byte big-endian word.
fn word(v: u64) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[24..].copy_from_slice(&v.to_be_bytes());
    w
}

/// `hashStruct(EIP712Domain{name: "Tandem", version: "1", chainId})`.
pub fn domain_separator(chain_id: u64) -> [u8; 32] {
    let mut enc = Vec::with_capacity(4 * 32);
    enc.extend_from_slice(&keccak256(DOMAIN_TYPE.as_bytes()));
    enc.extend_from_slice(&keccak256(DOMAIN_NAME.as_bytes()));
    enc.extend_from_slice(&keccak256(DOMAIN_VERSION.as_bytes()));
    enc.extend_from_slice(&word(chain_id));
    keccak256(&enc)
}

/// `hashStruct` of the command's struct; `account` is the 20-byte address
/// the `account` field names.
pub fn struct_hash(f: &SignedFields<'_>, account: &[u8; 20]) -> [u8; 32] {
    let mut enc = Vec::with_capacity(11 * 32);
    let ty = match f.op {
        SignedOp::Place => PLACE_TYPE,
        SignedOp::Cancel => CANCEL_TYPE,
        SignedOp::Amend => AMEND_TYPE,
    };
    enc.extend_from_slice(&keccak256(ty.as_bytes()));
    let string = |enc: &mut Vec<u8>, s: &str| enc.extend_from_slice(&keccak256(s.as_bytes()));
    string(&mut enc, f.market);
    string(&mut enc, f.id);
    let mut addr = [0u8; 32];
    addr[12..].copy_from_slice(account);
    enc.extend_from_slice(&addr);
    match f.op {
        SignedOp::Place => {
            string(&mut enc, f.side);
            string(&mut enc, f.order_type);
            string(&mut enc, &f.price);
            string(&mut enc, &f.qty);
            string(&mut enc, f.tif);
            enc.extend_from_slice(&word(u64::from(f.post_only)));
        }
        SignedOp::Amend => {
            string(&mut enc, &f.price);
            string(&mut enc, &f.qty);
        }
        SignedOp::Cancel => {}
    }
    enc.extend_from_slice(&word(f.expiry));
    keccak256(&enc)
}

/// The 32 bytes a wallet signs: `keccak256(0x19 0x01 ‖ domain ‖ struct)`.
pub fn digest(domain: &[u8; 32], f: &SignedFields<'_>, account: &[u8; 20]) -> [u8; 32] {
    let mut enc = [0u8; 66];
    enc[0] = 0x19;
    enc[1] = 0x01;
    enc[2..34].copy_from_slice(domain);
    enc[34..].copy_from_slice(&struct_hash(f, account));
    keccak256(&enc)
}

/// The Ethereum address of a secp256k1 public key: the last 20 bytes of
/// the keccak256 of its uncompressed point without the `0x04` prefix.
pub fn address_of(key: &k256::ecdsa::VerifyingKey) -> [u8; 20] {
    let point = key.to_encoded_point(false);
    let h = keccak256(&point.as_bytes()[1..]);
    let mut a = [0u8; 20];
    a.copy_from_slice(&h[12..]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// keccak256 of the empty string, as Ethereum defines it (not SHA3-256).
    #[test]
    fn keccak_is_ethereums() {
        assert_eq!(
            hex(&keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
