//! Signed orders (`docs/signing.md`): an account is a public key, and a
//! place, cancel or amend carries the account's signature over the fields
//! that matter (`message`) and an expiry.
//!
//! Two schemes, told apart by the account's text:
//! - `ed25519:<64 hex digits>`: the Ed25519 public key itself; the
//!   signature (64 bytes) is over `SignedFields::ed25519_message`.
//! - `0x<40 hex digits>`: an Ethereum address; the signature (65 bytes,
//!   `r ‖ s ‖ v`) is secp256k1 over the EIP-712 digest (`eip712`), and the
//!   address recovered from it must be the account.
//!
//! Hex digits of an account are case-insensitive on the way in: the node
//! writes the account in lowercase into the command it appends (so a
//! checksummed EIP-55 address and its lowercase form are one account).
//!
//! Transport, the same for HTTP `POST`/`PATCH`/`DELETE` and gRPC metadata:
//! `x-tandem-signature` (hex) and `x-tandem-expiry` (Unix time, seconds).
//! The node checks the expiry against its wall clock at admission only
//! ([`Policy::check_expiry`]), verifies, and only then appends; the log
//! record is the command's canonical JSONL plus `"expiry"` and `"sig"`
//! members, which the codec ignores, so the engine applies exactly what
//! it applied before and an auditor can verify the record again
//! (`audit`). Nothing here reads a clock: the caller passes the time.

pub mod audit;
pub mod batch;
pub mod client;
pub mod eip712;
pub mod keys;
pub mod message;

use http::{HeaderMap, StatusCode};
use tandem_core::{Command, Sym};

pub use message::{SignedFields, SignedOp};

/// The signature header (hex; `0x` allowed).
pub const SIGNATURE_HEADER: &str = "x-tandem-signature";
/// The expiry header (Unix time in seconds, decimal).
pub const EXPIRY_HEADER: &str = "x-tandem-expiry";

/// Prefix of an Ed25519 account.
pub const ED25519_PREFIX: &str = "ed25519:";

/// A signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ed25519,
    /// secp256k1 over EIP-712 typed data (Ethereum wallets).
    Eip712,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ed25519 => "ed25519",
            Scheme::Eip712 => "eip712",
        }
    }

    /// Bytes of a signature of this scheme.
    pub fn signature_len(self) -> usize {
        match self {
            Scheme::Ed25519 => 64,
            Scheme::Eip712 => 65,
        }
    }
}

/// An account read as a public key.
#[derive(Debug, Clone)]
pub enum AccountKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    /// An Ethereum address.
    Eth([u8; 20]),
}

impl AccountKey {
    pub fn scheme(&self) -> Scheme {
        match self {
            AccountKey::Ed25519(_) => Scheme::Ed25519,
            AccountKey::Eth(_) => Scheme::Eip712,
        }
    }
}

/// Why a signed request is refused: the HTTP status, the field, the why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct AuthError {
    pub status: StatusCode,
    pub field: &'static str,
    pub message: String,
}

impl AuthError {
    fn bad(field: &'static str, message: impl Into<String>) -> AuthError {
        AuthError {
            status: StatusCode::BAD_REQUEST,
            field,
            message: message.into(),
        }
    }

    fn unauthorized(field: &'static str, message: impl Into<String>) -> AuthError {
        AuthError {
            status: StatusCode::UNAUTHORIZED,
            field,
            message: message.into(),
        }
    }
}

/// Lowercase hex of `b`.
pub fn to_hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
    s
}

/// Bytes of hex text (either case, even length), or `None`.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// The account in the node's spelling (hex digits lowercase) if it has the
/// shape of a key account (`ed25519:` + 64 hex, `0x`/`0X` + 40 hex);
/// `None` for any other account, which is left as it is.
pub fn normalise_account(account: &str) -> Option<String> {
    let (prefix, hex, len) = if let Some(h) = account.strip_prefix(ED25519_PREFIX) {
        (ED25519_PREFIX, h, 64)
    } else if let Some(h) = account
        .strip_prefix("0x")
        .or_else(|| account.strip_prefix("0X"))
    {
        ("0x", h, 40)
    } else {
        return None;
    };
    (hex.len() == len && hex.bytes().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("{prefix}{}", hex.to_ascii_lowercase()))
}

/// The public key an account names. The account must be in the node's
/// spelling ([`normalise_account`]).
pub fn parse_account(account: &str) -> Result<AccountKey, AuthError> {
    let shape = || {
        AuthError::bad(
            "account",
            format!(
                "a signed order's account is a public key: {ED25519_PREFIX}<64 hex digits> or \
                 0x<40 hex digits> (an Ethereum address), got {:?}",
                account.chars().take(80).collect::<String>()
            ),
        )
    };
    if let Some(h) = account.strip_prefix(ED25519_PREFIX) {
        let bytes: [u8; 32] = from_hex(h)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(shape)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| {
            AuthError::bad(
                "account",
                "not an Ed25519 public key (the 32 bytes are not a curve point)",
            )
        })?;
        return Ok(AccountKey::Ed25519(key));
    }
    if let Some(h) = account.strip_prefix("0x") {
        let bytes: [u8; 20] = from_hex(h)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(shape)?;
        return Ok(AccountKey::Eth(bytes));
    }
    Err(shape())
}

/// A signature and the expiry it covers, as a request or a log record
/// carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The signature bytes (64 for Ed25519, 65 for EIP-712).
    pub sig: Vec<u8>,
    /// Unix time in seconds.
    pub expiry: u64,
}

/// Longest signature text accepted (`0x` + 65 bytes of hex), so a header
/// of any size is refused before it is decoded.
const SIGNATURE_TEXT_MAX: usize = 2 + 65 * 2;

/// Reads a signature's hex text (64 or 65 bytes, `0x` allowed).
pub fn parse_signature(text: &str) -> Result<Vec<u8>, AuthError> {
    let malformed = || {
        AuthError::bad(
            SIGNATURE_HEADER,
            "expected the signature as hex: 128 digits (Ed25519) or 130 digits \
             (EIP-712 r ‖ s ‖ v), optionally after 0x",
        )
    };
    let t = text.trim();
    if t.len() > SIGNATURE_TEXT_MAX {
        return Err(malformed());
    }
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    match from_hex(hex) {
        Some(b) if b.len() == 64 || b.len() == 65 => Ok(b),
        _ => Err(malformed()),
    }
}

/// Reads an expiry: Unix time in seconds, plain decimal digits.
pub fn parse_expiry(text: &str) -> Result<u64, AuthError> {
    let t = text.trim();
    if t.is_empty() || t.len() > 20 || !t.bytes().all(|c| c.is_ascii_digit()) {
        return Err(AuthError::bad(
            EXPIRY_HEADER,
            "expected Unix time in seconds (decimal digits)",
        ));
    }
    t.parse()
        .map_err(|_| AuthError::bad(EXPIRY_HEADER, "out of range"))
}

/// The credentials a request's headers carry: `None` when it has neither
/// header; a 400 naming the header when one is missing or malformed.
pub fn credentials_from_headers(h: &HeaderMap) -> Result<Option<Credentials>, AuthError> {
    let text = |name: &'static str| -> Result<Option<&str>, AuthError> {
        match h.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(Some)
                .map_err(|_| AuthError::bad(name, "not visible ASCII")),
        }
    };
    match (text(SIGNATURE_HEADER)?, text(EXPIRY_HEADER)?) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(AuthError::bad(
            EXPIRY_HEADER,
            format!(
                "missing: a signed request carries both {SIGNATURE_HEADER} and {EXPIRY_HEADER}"
            ),
        )),
        (None, Some(_)) => Err(AuthError::bad(
            SIGNATURE_HEADER,
            format!(
                "missing: a signed request carries both {SIGNATURE_HEADER} and {EXPIRY_HEADER}"
            ),
        )),
        (Some(s), Some(e)) => Ok(Some(Credentials {
            sig: parse_signature(s)?,
            expiry: parse_expiry(e)?,
        })),
    }
}

/// Writes the account of `cmd` in the node's spelling (lowercase hex), if
/// it is a key account written otherwise.
pub fn normalise_command(cmd: &mut Command) {
    let account = match cmd {
        Command::Place(p) => &mut p.account,
        Command::Cancel(c) => &mut c.account,
        Command::Amend(a) => &mut a.account,
        Command::Invalid(_) => return,
    };
    if let Some(n) = normalise_account(account.as_str()) {
        if n != account.as_str() {
            *account = Sym::new(&n);
        }
    }
}

/// The signing parameters of one exchange: the chain id both schemes
/// sign, the expiry bounds.
#[derive(Debug, Clone)]
pub struct Policy {
    pub chain_id: u64,
    /// `hashStruct` of the EIP-712 domain with `chain_id`.
    pub domain: [u8; 32],
    /// Latest expiry accepted, in seconds after the node's time.
    pub max_expiry_secs: u64,
    /// Allowed difference between the client's and the node's clocks, in
    /// seconds, on both bounds.
    pub clock_tolerance_secs: u64,
}

impl Policy {
    pub fn new(chain_id: u64, max_expiry_secs: u64, clock_tolerance_secs: u64) -> Policy {
        Policy {
            chain_id,
            domain: eip712::domain_separator(chain_id),
            max_expiry_secs,
            clock_tolerance_secs,
        }
    }

    /// Refuses an expiry before `now_secs - tolerance` (401, expired) or
    /// after `now_secs + max_expiry_secs + tolerance` (400).
    pub fn check_expiry(&self, expiry: u64, now_secs: u64) -> Result<(), AuthError> {
        let tol = self.clock_tolerance_secs;
        if expiry.saturating_add(tol) < now_secs {
            return Err(AuthError::unauthorized(
                EXPIRY_HEADER,
                format!(
                    "expired: {expiry} is before the node's time {now_secs} (tolerance {tol} s)"
                ),
            ));
        }
        let latest = now_secs
            .saturating_add(self.max_expiry_secs)
            .saturating_add(tol);
        if expiry > latest {
            return Err(AuthError::bad(
                EXPIRY_HEADER,
                format!(
                    "too far ahead: {expiry} is more than {} s after the node's time {now_secs} \
                     (signing.max_expiry_secs)",
                    self.max_expiry_secs + tol
                ),
            ));
        }
        Ok(())
    }

    /// Verifies `creds` for `cmd` (whose account must be in the node's
    /// spelling): the account is a key, the signature has its scheme's
    /// length and verifies over the command's signed fields. No clock:
    /// the expiry's bounds are [`Policy::check_expiry`]'s.
    pub fn verify(&self, cmd: &Command, creds: &Credentials) -> Result<Scheme, AuthError> {
        match self.prepare(cmd, creds)? {
            Checked::Done(scheme) => Ok(scheme),
            Checked::Ed25519(c) => c.verify_one().map(|()| Scheme::Ed25519),
        }
    }

    /// Everything [`Policy::verify`] checks except the Ed25519 signature
    /// equation itself, which is returned to be checked alone or in a batch
    /// (`batch`); an EIP-712 signature is checked here.
    pub fn prepare(&self, cmd: &Command, creds: &Credentials) -> Result<Checked, AuthError> {
        let Some(fields) = SignedFields::of(cmd, creds.expiry) else {
            return Err(AuthError::bad("body", "not a command"));
        };
        let key = parse_account(fields.account)?;
        let scheme = key.scheme();
        if creds.sig.len() != scheme.signature_len() {
            return Err(AuthError::bad(
                SIGNATURE_HEADER,
                format!(
                    "an {} account's signature is {} bytes ({} hex digits), got {} bytes",
                    scheme.as_str(),
                    scheme.signature_len(),
                    2 * scheme.signature_len(),
                    creds.sig.len()
                ),
            ));
        }
        let refused = || {
            AuthError::unauthorized(
                SIGNATURE_HEADER,
                format!(
                    "does not verify: not a signature by account {} over this command and expiry \
                     ({} scheme, chain id {})",
                    fields.account,
                    scheme.as_str(),
                    self.chain_id
                ),
            )
        };
        match key {
            AccountKey::Ed25519(key) => {
                let signature =
                    ed25519_dalek::Signature::from_slice(&creds.sig).map_err(|_| refused())?;
                Ok(Checked::Ed25519(Box::new(Ed25519Check {
                    message: fields.ed25519_message(self.chain_id),
                    signature,
                    key,
                    refused: refused(),
                })))
            }
            AccountKey::Eth(addr) => {
                let digest = eip712::digest(&self.domain, &fields, &addr);
                let signer = recover(&digest, &creds.sig)?;
                if signer != addr {
                    return Err(AuthError::unauthorized(
                        SIGNATURE_HEADER,
                        format!(
                            "signed by 0x{}, not by the account {} (wrong key, or another \
                             command, expiry or chain id {} than the one signed)",
                            to_hex(&signer),
                            fields.account,
                            self.chain_id
                        ),
                    ));
                }
                Ok(Checked::Done(Scheme::Eip712))
            }
        }
    }
}

/// What [`Policy::prepare`] leaves to do.
#[derive(Debug)]
pub enum Checked {
    /// Verified.
    Done(Scheme),
    /// The Ed25519 equation is still to be checked.
    Ed25519(Box<Ed25519Check>),
}

/// One Ed25519 signature still to verify, and the refusal to give if it
/// does not.
#[derive(Debug)]
pub struct Ed25519Check {
    pub message: Vec<u8>,
    pub signature: ed25519_dalek::Signature,
    pub key: ed25519_dalek::VerifyingKey,
    pub refused: AuthError,
}

impl Ed25519Check {
    /// Alone, with `verify_strict` (no small-order key or R).
    pub fn verify_one(self) -> Result<(), AuthError> {
        self.key
            .verify_strict(&self.message, &self.signature)
            .map_err(|_| self.refused)
    }
}

/// The address that signed a 32-byte EIP-712 digest with `sig` (`r ‖ s ‖
/// v`, v 27/28 or 0/1). A high `s` is taken as its low twin (as Ethereum's
/// `ecrecover` does); signatures that cannot be recovered are 401, a bad
/// `v` is 400.
pub fn recover(digest: &[u8; 32], sig: &[u8]) -> Result<[u8; 20], AuthError> {
    use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
    let refused =
        |why: &str| AuthError::unauthorized(SIGNATURE_HEADER, format!("does not verify: {why}"));
    let v = match sig[64] {
        0 | 27 => 0u8,
        1 | 28 => 1u8,
        v => {
            return Err(AuthError::bad(
                SIGNATURE_HEADER,
                format!("v (the last byte) must be 27, 28, 0 or 1, got {v}"),
            ))
        }
    };
    let s = Signature::from_slice(&sig[..64]).map_err(|_| refused("r or s out of range"))?;
    let (s, v) = match s.normalize_s() {
        Some(low) => (low, v ^ 1),
        None => (s, v),
    };
    let id = RecoveryId::from_byte(v).ok_or_else(|| refused("bad recovery id"))?;
    let key = VerifyingKey::recover_from_prehash(digest, &s, id)
        .map_err(|_| refused("no public key recovers from it"))?;
    Ok(eip712::address_of(&key))
}

impl Policy {
    /// Verifies many Ed25519-signed commands in one batch: true only if
    /// every one is a valid Ed25519 signature of its account (about twice
    /// the speed of one by one; `audit` uses it, and on `false` finds the
    /// bad one by [`Policy::verify`]). A command whose account is not an
    /// Ed25519 key makes it false.
    pub fn verify_ed25519_batch(&self, items: &[(&Command, &Credentials)]) -> bool {
        let mut messages = Vec::with_capacity(items.len());
        let mut sigs = Vec::with_capacity(items.len());
        let mut keys = Vec::with_capacity(items.len());
        for (cmd, creds) in items {
            let Some(f) = SignedFields::of(cmd, creds.expiry) else {
                return false;
            };
            let (Ok(AccountKey::Ed25519(k)), Ok(sig)) = (
                parse_account(f.account),
                ed25519_dalek::Signature::from_slice(&creds.sig),
            ) else {
                return false;
            };
            if k.is_weak() {
                return false;
            }
            messages.push(f.ed25519_message(self.chain_id));
            sigs.push(sig);
            keys.push(k);
        }
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        verify_ed25519_batch(&refs, &sigs, &keys)
    }
}

/// Verifies many Ed25519 signatures at once (one multiscalar
/// multiplication; about twice as fast per signature as one by one, and
/// it says only whether all verify). `messages`, `signatures` and `keys`
/// are parallel.
pub fn verify_ed25519_batch(
    messages: &[&[u8]],
    signatures: &[ed25519_dalek::Signature],
    keys: &[ed25519_dalek::VerifyingKey],
) -> bool {
    ed25519_dalek::verify_batch(messages, signatures, keys).is_ok()
}

/// Appends the credentials to a canonical command record
/// (`tandem_codec::write_command`'s `{...}`), before its closing brace:
/// `,"expiry":N,"sig":"<hex>"`.
pub fn append_credentials(record: &mut Vec<u8>, creds: &Credentials) {
    debug_assert_eq!(record.last(), Some(&b'}'));
    record.pop();
    record.extend_from_slice(b",\"expiry\":");
    record.extend_from_slice(creds.expiry.to_string().as_bytes());
    record.extend_from_slice(b",\"sig\":\"");
    record.extend_from_slice(to_hex(&creds.sig).as_bytes());
    record.extend_from_slice(b"\"}");
}

/// The credentials a log record carries: `Ok(None)` for an unsigned one,
/// an error for `expiry` or `sig` members of the wrong shape.
pub fn record_credentials(record: &[u8]) -> Result<Option<Credentials>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(record).map_err(|e| format!("record: not JSON: {e}"))?;
    let (sig, expiry) = (v.get("sig"), v.get("expiry"));
    match (sig, expiry) {
        (None, None) => Ok(None),
        (Some(s), Some(e)) => {
            let sig = s
                .as_str()
                .ok_or("sig: not a string")
                .and_then(|s| parse_signature(s).map_err(|_| "sig: not 64 or 65 bytes of hex"))?;
            let expiry = e.as_u64().ok_or("expiry: not a non-negative integer")?;
            Ok(Some(Credentials { sig, expiry }))
        }
        (Some(_), None) => Err("expiry: missing beside sig".into()),
        (None, Some(_)) => Err("sig: missing beside expiry".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_normalised_to_lowercase_hex() {
        let a = "0xAbCdEf0123456789aBcDeF0123456789ABCDEF01";
        assert_eq!(
            normalise_account(a).unwrap(),
            "0xabcdef0123456789abcdef0123456789abcdef01"
        );
        assert_eq!(normalise_account("alice"), None);
        assert_eq!(normalise_account("0x12"), None);
        assert!(parse_account("alice").is_err());
        assert_eq!(
            parse_account("0xzz").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn expiry_bounds() {
        let p = Policy::new(1, 300, 5);
        assert!(p.check_expiry(1000, 1000).is_ok());
        assert!(p.check_expiry(995, 1000).is_ok());
        let e = p.check_expiry(994, 1000).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert_eq!(e.field, EXPIRY_HEADER);
        assert!(p.check_expiry(1305, 1000).is_ok());
        let e = p.check_expiry(1306, 1000).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(p.check_expiry(u64::MAX, u64::MAX).is_ok());
        assert!(p.check_expiry(0, u64::MAX).is_err());
    }

    #[test]
    fn records_carry_credentials_the_codec_ignores() {
        let cmd = tandem_codec::decode_command(
            br#"{"op":"cancel","market":"M","id":"o1","account":"a"}"#,
        );
        let mut rec = Vec::new();
        tandem_codec::write_command(&cmd, &mut rec);
        let creds = Credentials {
            sig: vec![7; 64],
            expiry: 1_700_000_000,
        };
        append_credentials(&mut rec, &creds);
        assert_eq!(tandem_codec::decode_command(&rec), cmd);
        assert_eq!(record_credentials(&rec).unwrap(), Some(creds));
        assert_eq!(record_credentials(br#"{"op":"cancel"}"#).unwrap(), None);
        assert!(record_credentials(br#"{"sig":"00"}"#).is_err());
    }

    proptest::proptest! {
        /// Header values are outside bytes: any text is parsed or refused
        /// with a 400 naming the header, never a panic.
        #[test]
        fn signature_and_expiry_decoders_never_panic(s in "\\PC{0,200}", hexes in "(0x)?[0-9a-fA-F]{0,140}") {
            for t in [&s, &hexes] {
                if let Err(e) = parse_signature(t) {
                    proptest::prop_assert_eq!(e.field, SIGNATURE_HEADER);
                    proptest::prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                }
                if let Err(e) = parse_expiry(t) {
                    proptest::prop_assert_eq!(e.field, EXPIRY_HEADER);
                }
                let _ = normalise_account(t);
                let _ = parse_account(t);
                let _ = record_credentials(t.as_bytes());
            }
        }

        /// Any 65 bytes given as an EIP-712 signature: recovered, or
        /// refused with 400/401, never a panic.
        #[test]
        fn recovery_of_any_bytes_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 65), d: [u8; 32]) {
            if let Err(e) = recover(&d, &b) {
                proptest::prop_assert!(e.status == StatusCode::BAD_REQUEST || e.status == StatusCode::UNAUTHORIZED);
            }
        }
    }
}
