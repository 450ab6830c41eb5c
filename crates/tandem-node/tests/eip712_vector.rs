//! The EIP-712 hashing and signing of `tandem_node::auth` against vectors
//! computed independently with Python's eth-account 0.14.0 (PyPI), the
//! library behind many Ethereum wallets' tooling, on 2026-12-05, by this
//! script (`pip install eth-account`, then run it; it prints the address,
//! then per chain id and type the digest and the 65-byte signature
//! `r ‖ s ‖ v`):
//!
//! ```python
//! # Computes the EIP-712 test vectors of crates/tandem-node/tests/eip712_vector.rs
//! # with eth-account (PyPI), independently of the Rust code.
//! import json
//! from eth_account import Account
//! from eth_account.messages import encode_typed_data
//!
//! KEY = "0x" + "46" * 32
//! acct = Account.from_key(KEY)
//! domain_type = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"}, {"name": "chainId", "type": "uint256"}]
//! types = {
//!     "PlaceOrder": [("market","string"),("id","string"),("account","address"),("side","string"),("orderType","string"),("price","string"),("qty","string"),("tif","string"),("postOnly","bool"),("expiry","uint64")],
//!     "CancelOrder": [("market","string"),("id","string"),("account","address"),("expiry","uint64")],
//!     "AmendOrder": [("market","string"),("id","string"),("account","address"),("price","string"),("qty","string"),("expiry","uint64")],
//! }
//! msgs = {
//!     "PlaceOrder": {"market":"BTC-USD","id":"o1","account":acct.address,"side":"buy","orderType":"limit","price":"100.25","qty":"1.5","tif":"gtc","postOnly":False,"expiry":1767225600},
//!     "CancelOrder": {"market":"BTC-USD","id":"o1","account":acct.address,"expiry":1767225600},
//!     "AmendOrder": {"market":"BTC-USD","id":"o1","account":acct.address,"price":"","qty":"0.75","expiry":1767225600},
//! }
//! print("address", acct.address.lower())
//! for chain in (1, 31337):
//!     for t, m in msgs.items():
//!         data = {"types": {"EIP712Domain": domain_type, t: [{"name": n, "type": ty} for n, ty in types[t]]},
//!                 "primaryType": t, "domain": {"name": "Tandem", "version": "1", "chainId": chain}, "message": m}
//!         signed = Account.sign_message(encode_typed_data(full_message=data), KEY)
//!         print(chain, t, signed.message_hash.hex(), signed.signature.hex())
//! ```
//!
//! eth-account signs with RFC 6979 nonces and low `s`, as k256 does, so
//! the signatures must match byte for byte, not only verify.

use tandem_core::Command;
use tandem_node::auth::keys::SecretKey;
use tandem_node::auth::{eip712, from_hex, to_hex, Credentials, Policy, Scheme, SignedFields};

const SECRET: [u8; 32] = [0x46; 32];
const ADDRESS: &str = "0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f";
const EXPIRY: u64 = 1_767_225_600;

/// (chain id, command line, digest, signature) as the script printed them.
const VECTORS: [(u64, &str, &str, &str); 6] = [
    (1, PLACE, "e4f860bd934897dea51a7a46316e51e3ac5a553754bea5a0bcb40f13f585c3df", "8bfacf64bb0ca2a2a42fe77aef6b7583787475567e639c1f8210c493ba3fed69575676c6e1f2afcc032c45f819bd4924753ca32007b4ce749aa3acd3ca22564d1b"),
    (1, CANCEL, "d383f9bf59508f494cd0bd7e074e84abae7988a2e5c466feecbc4a5fe6473376", "53c6b16cbc078de84bfde7b8eaaf6aaf50619f75c2d8f42ab4e1b41d73e84a573d2a1d1c5fe6fd10455e3c5ca79d315d28823ebb54fe45e02638a53c433eef671b"),
    (1, AMEND, "c41b0ba8879a36e852efd9618b5cdc61f643f936c3b669207d6463abeda2fa48", "46d39d3cb2fefedee0a28e68cd332583e8247df0aac209f57adbe56b24e6a07a69fae08dafb0da6fefb83d0a5716b60d270ce4ef203440de8be018ce1c96d8321c"),
    (31337, PLACE, "3c8ae543bb41de0bd0653e73e4f515b9fd06bb4a46cb34fbd482e6f0f1390d0f", "203df00ec0d37f19ae67ff9b7bc61c112f812a3c1c2e1e1006e31705e5eabc7d3c249814f8a4296ef7db2f6599531b5b4b1dddd4837bcb5a133ea78156b2e7151b"),
    (31337, CANCEL, "26e8d9ef073a90618b0d3efefdce39774630e202945473877644f4a15fc92126", "e90bc9ddc1df8870edd658b91b1162585264763b8a0342347ab7208d9e293c2147e799063ed754cb63d48ad64fe6d22b4eaa66dcd2bd459ec212c4c91f91824d1c"),
    (31337, AMEND, "9bb66127e1e3c9522b8c9b086fadaaed0cef499ded87c2f6ba05f5fcb3c0bbd2", "71576c4d70a636ce6453a4fb0880a8bc1cbb70aafaf231b27229a45e4150b79f3e9c91d3c96507bf8ed37ababdef60affd6037264c139b106003e50850fe3e671b"),
];

// The script's messages as commands (its price "100.25" and qty "1.5" are
// already the canonical decimals; its amend leaves the price unchanged).
const PLACE: &str = r#"{"op":"place","market":"BTC-USD","id":"o1","account":"0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f","side":"buy","type":"limit","price":"100.25","qty":"1.5","tif":"gtc"}"#;
const CANCEL: &str = r#"{"op":"cancel","market":"BTC-USD","id":"o1","account":"0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f"}"#;
const AMEND: &str = r#"{"op":"amend","market":"BTC-USD","id":"o1","account":"0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f","qty":"0.75"}"#;

fn address() -> [u8; 20] {
    from_hex(&ADDRESS[2..]).unwrap().try_into().unwrap()
}

#[test]
fn the_key_has_eth_accounts_address() {
    let key = SecretKey::from_secret(Scheme::Eip712, &SECRET).unwrap();
    assert_eq!(key.account(), ADDRESS);
}

#[test]
fn digests_match_eth_account() {
    for (chain, line, digest, _) in VECTORS {
        let cmd: Command = tandem_codec::decode_command(line.as_bytes());
        let f = SignedFields::of(&cmd, EXPIRY).unwrap();
        let got = eip712::digest(&eip712::domain_separator(chain), &f, &address());
        assert_eq!(to_hex(&got), digest, "chain {chain}: {line}");
    }
}

#[test]
fn signatures_match_eth_account_and_verify() {
    let key = SecretKey::from_secret(Scheme::Eip712, &SECRET).unwrap();
    for (chain, line, _, sig) in VECTORS {
        let policy = Policy::new(chain, 300, 5);
        let cmd: Command = tandem_codec::decode_command(line.as_bytes());
        let ours = key.sign(&cmd, EXPIRY, &policy).unwrap();
        assert_eq!(to_hex(&ours.sig), sig, "chain {chain}: {line}");
        let theirs = Credentials {
            sig: from_hex(sig).unwrap(),
            expiry: EXPIRY,
        };
        assert_eq!(policy.verify(&cmd, &theirs), Ok(Scheme::Eip712));
        // The same signature on the other chain id, or with another
        // expiry, recovers another address: refused.
        let other = Policy::new(if chain == 1 { 31337 } else { 1 }, 300, 5);
        assert_eq!(other.verify(&cmd, &theirs).unwrap_err().status, 401);
        let later = Credentials {
            expiry: EXPIRY + 1,
            ..theirs.clone()
        };
        assert_eq!(policy.verify(&cmd, &later).unwrap_err().status, 401);
        // v as 0/1 is the same signature; a high s (n - s, v flipped) too,
        // as Ethereum's ecrecover takes it.
        let mut v01 = theirs.clone();
        v01.sig[64] -= 27;
        assert_eq!(policy.verify(&cmd, &v01), Ok(Scheme::Eip712));
        let mut high = theirs.clone();
        high.sig[32..64].copy_from_slice(&negate_mod_n(&theirs.sig[32..64]));
        high.sig[64] = if theirs.sig[64] == 27 { 28 } else { 27 };
        assert_eq!(policy.verify(&cmd, &high), Ok(Scheme::Eip712));
    }
}

/// n - s for the secp256k1 group order n (big-endian, 32 bytes).
fn negate_mod_n(s: &[u8]) -> [u8; 32] {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36,
        0x41, 0x41,
    ];
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(N[i]) - i16::from(s[i]) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    out
}
