//! Secret keys of the signing clients (`tandem keygen`, `tandem order`, the
//! load generator): generation, the key file, and signing a command.
//!
//! A key file is one JSON object, written with mode 0600 and never
//! overwritten: `{"scheme":"ed25519"|"eip712","secret":"<64 hex>",
//! "account":"..."}` (the account is derived again on reading and must
//! agree). Fresh keys come from `/dev/urandom`; [`SecretKey::derive`]
//! makes reproducible keys from a seed for load tests.

use std::io::Write;
use std::path::Path;

use tandem_core::Command;

use super::{eip712, to_hex, Credentials, Policy, Scheme, SignedFields, ED25519_PREFIX};

/// A secret key of either scheme.
#[derive(Clone)]
pub enum SecretKey {
    Ed25519(ed25519_dalek::SigningKey),
    Secp256k1(k256::ecdsa::SigningKey),
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({}, <redacted>)", self.account())
    }
}

impl SecretKey {
    /// The key whose secret is these 32 bytes; `None` for secp256k1 when
    /// they are not a valid scalar (zero or at least the group order: a
    /// chance of about 2^-128 for random bytes).
    pub fn from_secret(scheme: Scheme, secret: &[u8; 32]) -> Option<SecretKey> {
        Some(match scheme {
            Scheme::Ed25519 => SecretKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(secret)),
            Scheme::Eip712 => {
                SecretKey::Secp256k1(k256::ecdsa::SigningKey::from_slice(secret).ok()?)
            }
        })
    }

    /// A fresh key from the operating system's random source.
    pub fn generate(scheme: Scheme) -> std::io::Result<SecretKey> {
        use std::io::Read;
        let mut urandom = std::fs::File::open("/dev/urandom")?;
        loop {
            let mut secret = [0u8; 32];
            urandom.read_exact(&mut secret)?;
            if let Some(k) = SecretKey::from_secret(scheme, &secret) {
                return Ok(k);
            }
        }
    }

    /// Key number `index` of a reproducible set: the secret is keccak256
    /// of `"tandem-loadgen-key" ‖ seed ‖ index ‖ attempt` (attempt 0 unless
    /// that is not a valid secp256k1 scalar). Never for real funds.
    pub fn derive(scheme: Scheme, seed: u64, index: u64) -> SecretKey {
        for attempt in 0u32.. {
            let mut b = Vec::with_capacity(40);
            b.extend_from_slice(b"tandem-loadgen-key");
            b.extend_from_slice(&seed.to_be_bytes());
            b.extend_from_slice(&index.to_be_bytes());
            b.extend_from_slice(&attempt.to_be_bytes());
            if let Some(k) = SecretKey::from_secret(scheme, &eip712::keccak256(&b)) {
                return k;
            }
        }
        unreachable!("a valid scalar within 2^32 attempts")
    }

    pub fn scheme(&self) -> Scheme {
        match self {
            SecretKey::Ed25519(_) => Scheme::Ed25519,
            SecretKey::Secp256k1(_) => Scheme::Eip712,
        }
    }

    /// The account this key signs for, in the node's spelling.
    pub fn account(&self) -> String {
        match self {
            SecretKey::Ed25519(k) => {
                format!("{ED25519_PREFIX}{}", to_hex(k.verifying_key().as_bytes()))
            }
            SecretKey::Secp256k1(k) => {
                format!("0x{}", to_hex(&eip712::address_of(k.verifying_key())))
            }
        }
    }

    fn secret(&self) -> [u8; 32] {
        match self {
            SecretKey::Ed25519(k) => k.to_bytes(),
            SecretKey::Secp256k1(k) => k.to_bytes().into(),
        }
    }

    /// Signs `cmd` (whose account must be this key's) valid until
    /// `expiry` (Unix seconds) for the exchange of `policy`'s chain id.
    /// `None` for an invalid command.
    pub fn sign(&self, cmd: &Command, expiry: u64, policy: &Policy) -> Option<Credentials> {
        let fields = SignedFields::of(cmd, expiry)?;
        let sig = match self {
            SecretKey::Ed25519(k) => {
                use ed25519_dalek::Signer;
                k.sign(&fields.ed25519_message(policy.chain_id))
                    .to_bytes()
                    .to_vec()
            }
            SecretKey::Secp256k1(k) => {
                let addr = eip712::address_of(k.verifying_key());
                let digest = eip712::digest(&policy.domain, &fields, &addr);
                let (sig, id) = k.sign_prehash_recoverable(&digest).ok()?;
                let mut b = sig.to_bytes().to_vec();
                b.push(27 + id.to_byte());
                b
            }
        };
        Some(Credentials { sig, expiry })
    }

    /// The key file's text.
    pub fn to_file_text(&self) -> String {
        serde_json::json!({
            "scheme": self.scheme().as_str(),
            "secret": to_hex(&self.secret()),
            "account": self.account(),
        })
        .to_string()
            + "\n"
    }

    /// Reads a key file's text; the error names the field.
    pub fn from_file_text(text: &str) -> Result<SecretKey, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("key file: not JSON: {e}"))?;
        let scheme = match v.get("scheme").and_then(|s| s.as_str()) {
            Some("ed25519") => Scheme::Ed25519,
            Some("eip712") => Scheme::Eip712,
            _ => return Err("scheme: must be \"ed25519\" or \"eip712\"".into()),
        };
        let secret: [u8; 32] = v
            .get("secret")
            .and_then(|s| s.as_str())
            .and_then(super::from_hex)
            .and_then(|b| b.try_into().ok())
            .ok_or("secret: must be 64 hex digits")?;
        let key = SecretKey::from_secret(scheme, &secret)
            .ok_or("secret: not a valid secp256k1 secret key")?;
        if let Some(a) = v.get("account").and_then(|a| a.as_str()) {
            if super::normalise_account(a).as_deref() != Some(key.account().as_str()) {
                return Err(format!(
                    "account: {a} is not the account of this secret ({})",
                    key.account()
                ));
            }
        }
        Ok(key)
    }

    /// Writes a new key file (mode 0600); an existing file is an error.
    pub fn write_file(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(self.to_file_text().as_bytes())?;
        f.sync_all()
    }

    pub fn read_file(path: &Path) -> anyhow::Result<SecretKey> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read key file {}", path.display()))?;
        SecretKey::from_file_text(&text)
            .map_err(|e| anyhow::anyhow!("key file {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_check_the_account() {
        for scheme in [Scheme::Ed25519, Scheme::Eip712] {
            let k = SecretKey::derive(scheme, 1, 2);
            let back = SecretKey::from_file_text(&k.to_file_text()).unwrap();
            assert_eq!(back.account(), k.account());
            let mut v: serde_json::Value = serde_json::from_str(&k.to_file_text()).unwrap();
            v["account"] = SecretKey::derive(scheme, 1, 3).account().into();
            let err = SecretKey::from_file_text(&v.to_string()).unwrap_err();
            assert!(err.starts_with("account:"), "{err}");
            assert!(!format!("{k:?}").contains(&to_hex(&k.secret())));
        }
        assert_ne!(
            SecretKey::derive(Scheme::Ed25519, 1, 2).account(),
            SecretKey::derive(Scheme::Ed25519, 2, 2).account()
        );
    }
}
