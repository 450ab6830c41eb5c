//! Fuzz target: arbitrary bytes as the credentials of a signed order
//! (`docs/signing.md`).
//!
//! The decoders of `x-tandem-signature`, `x-tandem-expiry`, the account and
//! a log record's `sig`/`expiry` members never panic and refuse with the
//! field named; whatever they accept goes through `Policy::verify` (Ed25519
//! and EIP-712 recovery) and the expiry bounds without panicking, and a
//! line of records through `tandem verify-log`'s audit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_node::auth::{self, audit, Credentials, Policy};

fuzz_target!(|data: &[u8]| {
    let policy = Policy::new(1, 300, 5);
    let text = String::from_utf8_lossy(data);
    let sig = auth::parse_signature(&text);
    if let Err(e) = &sig {
        assert_eq!(e.field, auth::SIGNATURE_HEADER);
    }
    if let Err(e) = auth::parse_expiry(&text) {
        assert_eq!(e.field, auth::EXPIRY_HEADER);
    }
    if let Some(n) = auth::normalise_account(&text) {
        assert_eq!(auth::normalise_account(&n).as_deref(), Some(n.as_str()));
    }
    let _ = auth::parse_account(&text);
    if let Ok(Some(c)) = auth::record_credentials(data) {
        let cmd = tandem_codec::decode_command(data);
        let _ = policy.verify(&cmd, &c);
        let _ = policy.check_expiry(c.expiry, 1_767_225_600);
    }
    // Any 65 bytes as an EIP-712 signature of any digest.
    if data.len() >= 97 {
        let digest: [u8; 32] = data[..32].try_into().expect("32 bytes");
        let _ = auth::recover(&digest, &data[32..97]);
    }
    // The bytes split into a signature and a command.
    if data.len() > 64 {
        let (s, rest) = data.split_at(64);
        let cmd = tandem_codec::decode_command(rest);
        let _ = policy.verify(&cmd, &Credentials { sig: s.to_vec(), expiry: 1 });
    }
    let lines = data
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| Ok((i as u64 + 1, l.to_vec())));
    let _ = audit::verify_records(lines, &policy, false);
});
