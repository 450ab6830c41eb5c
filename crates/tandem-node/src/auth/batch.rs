//! Batch verification of the Ed25519 signatures of concurrent requests,
//! without a thread of its own (the file log's group commit, applied to
//! verification): a request queues its check, and whichever request finds
//! no one verifying becomes the verifier, takes everything queued (up to
//! `max_batch`), verifies it as one batch on its own task, answers every
//! request of the batch, and goes on while checks are queued. When requests
//! arrive one at a time a batch is one check, verified alone with
//! `verify_strict`; under load batches grow and each signature costs about
//! a third (`tandem-bench signed`, `batch64`).
//!
//! A batch that fails is verified again one by one, so one bad signature
//! refuses only its own request. The batch equation accepts a signature
//! whose R has a small-order component, which `verify_strict` refuses;
//! weak (small-order) keys are refused here as there. Only the holder of
//! the key can make such a signature (R is hashed into the challenge), so
//! a batch proves who signed as a lone check does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use http::StatusCode;

use super::{AuthError, Ed25519Check, SIGNATURE_HEADER};

type Waiter = tokio::sync::oneshot::Sender<Result<(), AuthError>>;

/// See the module doc.
#[derive(Debug)]
pub struct Ed25519Batcher {
    pending: Mutex<Vec<(Ed25519Check, Waiter)>>,
    leading: AtomicBool,
    max_batch: usize,
    /// Batches verified, and signatures in them (for the mean batch size).
    pub batches: AtomicU64,
    pub signatures: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ed25519Batcher {
    /// Batches of at most `max_batch` signatures (a verifier holds its task
    /// for about 20 µs per signature of a batch).
    pub fn new(max_batch: usize) -> Ed25519Batcher {
        Ed25519Batcher {
            pending: Mutex::new(Vec::new()),
            leading: AtomicBool::new(false),
            max_batch: max_batch.max(1),
            batches: AtomicU64::new(0),
            signatures: AtomicU64::new(0),
        }
    }

    /// Verifies `check`, alone or in a batch with concurrent ones.
    pub async fn verify(&self, check: Ed25519Check) -> Result<(), AuthError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.pending).push((check, tx));
        self.lead();
        rx.await.unwrap_or_else(|_| {
            Err(AuthError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                field: SIGNATURE_HEADER,
                message: "verification did not complete: retry".into(),
            })
        })
    }

    /// Verifies queued checks unless another caller is doing so. A check
    /// queued while the verifier is finishing is seen by the verifier's
    /// last look at the queue after it stopped leading.
    fn lead(&self) {
        loop {
            if self.leading.swap(true, Ordering::AcqRel) {
                return;
            }
            loop {
                let batch: Vec<(Ed25519Check, Waiter)> = {
                    let mut p = lock(&self.pending);
                    let n = p.len().min(self.max_batch);
                    p.drain(..n).collect()
                };
                if batch.is_empty() {
                    break;
                }
                self.run(batch);
            }
            self.leading.store(false, Ordering::Release);
            if lock(&self.pending).is_empty() {
                return;
            }
        }
    }

    fn run(&self, mut batch: Vec<(Ed25519Check, Waiter)>) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.signatures
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if batch.len() == 1 {
            let (check, tx) = batch.pop().expect("one");
            let _ = tx.send(check.verify_one());
            return;
        }
        let messages: Vec<&[u8]> = batch.iter().map(|(c, _)| c.message.as_slice()).collect();
        let signatures: Vec<ed25519_dalek::Signature> =
            batch.iter().map(|(c, _)| c.signature).collect();
        let keys: Vec<ed25519_dalek::VerifyingKey> = batch.iter().map(|(c, _)| c.key).collect();
        let all = keys.iter().all(|k| !k.is_weak())
            && super::verify_ed25519_batch(&messages, &signatures, &keys);
        for (check, tx) in batch {
            let _ = tx.send(if all { Ok(()) } else { check.verify_one() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::SecretKey;
    use crate::auth::{Checked, Policy, Scheme};
    use std::sync::Arc;

    fn check(policy: &Policy, i: usize, bad: bool) -> Ed25519Check {
        let key = SecretKey::derive(Scheme::Ed25519, 5, i as u64 % 7);
        let line = format!(
            r#"{{"op":"cancel","market":"M","id":"o{i}","account":"{}"}}"#,
            key.account()
        );
        let cmd = tandem_codec::decode_command(line.as_bytes());
        let mut creds = key.sign(&cmd, 100, policy).unwrap();
        if bad {
            creds.sig[3] ^= 1;
        }
        match policy.prepare(&cmd, &creds) {
            Ok(Checked::Ed25519(c)) => *c,
            other => panic!("{other:?}"),
        }
    }

    /// Many concurrent checks, one in ten bad: every good one passes and
    /// every bad one is refused (its own 401), whatever the batches were;
    /// and batches of more than one did form.
    #[test]
    fn concurrent_checks_are_each_answered_right() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let policy = Policy::new(1, 300, 5);
        let b = Arc::new(Ed25519Batcher::new(16));
        let results = rt.block_on(async {
            let tasks: Vec<_> = (0..400)
                .map(|i| {
                    let (b, c) = (Arc::clone(&b), check(&policy, i, i % 10 == 3));
                    tokio::spawn(async move { (i, b.verify(c).await) })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        for (i, r) in results {
            if i % 10 == 3 {
                assert_eq!(r.unwrap_err().status, StatusCode::UNAUTHORIZED, "{i}");
            } else {
                assert!(r.is_ok(), "{i}: {r:?}");
            }
        }
        let (batches, sigs) = (
            b.batches.load(Ordering::Relaxed),
            b.signatures.load(Ordering::Relaxed),
        );
        assert_eq!(sigs, 400);
        assert!(batches < 400, "no batch of more than one formed: {batches}");
    }
}
