//! `tandem verify-log`: verifies the signature of every signed record of
//! an order log again, as an auditor or a replica would, and names the
//! first record that fails.
//!
//! A record is one command in the JSONL form; a signed one also has
//! `expiry` and `sig` members (`auth` module doc). The command is decoded
//! by the codec (exactly what the engine applied) and its signed fields
//! are rebuilt from it, so a record whose applied fields were changed no
//! longer verifies. Expiries are not checked against any clock here: the
//! node checked them against its clock at admission, and the log keeps no
//! wall-clock time. Ed25519 records are verified in batches of
//! [`BATCH`]; a batch that fails is verified again one by one to find the
//! first bad record.

use std::path::Path;

use tandem_core::Command;

use super::{parse_account, AccountKey, Credentials, Policy, SignedFields};

/// Records verified per batch.
pub const BATCH: usize = 256;

/// What a pass over a log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Records read.
    pub records: u64,
    /// Records whose signature verified.
    pub signed: u64,
    /// Records without a signature.
    pub unsigned: u64,
    /// Records that do not decode as a command (the engine rejects them
    /// and they change nothing).
    pub invalid: u64,
    /// The first record that failed: its seq and why. Reading stops there.
    pub first_bad: Option<(u64, String)>,
}

/// One record prepared for verification.
struct Pending {
    seq: u64,
    cmd: Command,
    creds: Credentials,
}

/// Verifies records given in log order as `(seq, bytes)`. With
/// `require_signed`, a valid command without a signature fails too.
pub fn verify_records<I>(records: I, policy: &Policy, require_signed: bool) -> AuditReport
where
    I: IntoIterator<Item = Result<(u64, Vec<u8>), String>>,
{
    let mut report = AuditReport::default();
    let mut pending: Vec<Pending> = Vec::with_capacity(BATCH);
    for item in records {
        let (seq, bytes) = match item {
            Ok(r) => r,
            Err(e) => {
                if let Some(bad) = check(&pending, policy) {
                    report.first_bad = Some(bad);
                    return report;
                }
                report.signed += pending.len() as u64;
                report.first_bad = Some((report.records + 1, e));
                return report;
            }
        };
        report.records += 1;
        let cmd = tandem_codec::decode_command(&bytes);
        let creds = match super::record_credentials(&bytes) {
            Ok(c) => c,
            Err(why) => {
                if matches!(cmd, Command::Invalid(_)) {
                    report.invalid += 1;
                    continue;
                }
                fail_after(&mut report, &pending, policy, seq, why);
                return report;
            }
        };
        match (creds, &cmd) {
            (_, Command::Invalid(_)) => report.invalid += 1,
            (None, _) if require_signed => {
                fail_after(
                    &mut report,
                    &pending,
                    policy,
                    seq,
                    "unsigned: the record has no sig (--require-signed)".into(),
                );
                return report;
            }
            (None, _) => report.unsigned += 1,
            (Some(creds), _) => {
                pending.push(Pending { seq, cmd, creds });
                if pending.len() == BATCH {
                    if let Some(bad) = check(&pending, policy) {
                        report.first_bad = Some(bad);
                        return report;
                    }
                    report.signed += pending.len() as u64;
                    pending.clear();
                }
            }
        }
    }
    if let Some(bad) = check(&pending, policy) {
        report.first_bad = Some(bad);
    } else {
        report.signed += pending.len() as u64;
    }
    report
}

/// Records the failure of record `seq`, unless a pending record before it
/// fails first.
fn fail_after(
    report: &mut AuditReport,
    pending: &[Pending],
    policy: &Policy,
    seq: u64,
    why: String,
) {
    match check(pending, policy) {
        Some(bad) => report.first_bad = Some(bad),
        None => {
            report.signed += pending.len() as u64;
            report.first_bad = Some((seq, why));
        }
    }
}

/// The first pending record that does not verify, if any: the Ed25519
/// ones in one batch first; if that or any EIP-712 one fails, one by one.
fn check(pending: &[Pending], policy: &Policy) -> Option<(u64, String)> {
    if pending.is_empty() {
        return None;
    }
    let mut messages = Vec::with_capacity(pending.len());
    let mut sigs = Vec::with_capacity(pending.len());
    let mut keys = Vec::with_capacity(pending.len());
    let mut others_ok = true;
    for p in pending {
        let fields = SignedFields::of(&p.cmd, p.creds.expiry).expect("a valid command");
        match parse_account(fields.account) {
            Ok(AccountKey::Ed25519(k)) if p.creds.sig.len() == 64 => {
                let Ok(sig) = ed25519_dalek::Signature::from_slice(&p.creds.sig) else {
                    others_ok = false;
                    continue;
                };
                messages.push(fields.ed25519_message(policy.chain_id));
                sigs.push(sig);
                keys.push(k);
            }
            _ => {
                if policy.verify(&p.cmd, &p.creds).is_err() {
                    others_ok = false;
                }
            }
        }
    }
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    // The batch equation is not `verify_strict` (the node's check): it
    // also passes a signature whose R has a small-order component, or a
    // small-order key (refused here separately). Only the key's holder can
    // make such a signature (R is hashed into the challenge), so a batch
    // that passes still proves who signed each record.
    let batch_ok =
        super::verify_ed25519_batch(&refs, &sigs, &keys) && keys.iter().all(|k| !k.is_weak());
    if batch_ok && others_ok {
        return None;
    }
    pending.iter().find_map(|p| {
        policy
            .verify(&p.cmd, &p.creds)
            .err()
            .map(|e| (p.seq, e.to_string()))
    })
}

/// Verifies the log at `path`: a file log directory, or a JSONL file of
/// records (one command a line, as `tandem match` reads).
pub fn verify_path(
    path: &Path,
    policy: &Policy,
    require_signed: bool,
) -> anyhow::Result<AuditReport> {
    Ok(if path.is_dir() {
        verify_records(file_log_records(path)?, policy, require_signed)
    } else {
        verify_records(jsonl_records(path)?, policy, require_signed)
    })
}

impl AuditReport {
    /// One JSON line: counts, and the first bad record if any.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "records": self.records,
            "signed": self.signed,
            "unsigned": self.unsigned,
            "invalid": self.invalid,
            "ok": self.first_bad.is_none(),
        });
        if let Some((seq, why)) = &self.first_bad {
            v["first_bad"] = serde_json::json!({"seq": seq, "error": why});
        }
        v.to_string()
    }
}

/// The records of a JSONL file: seq is the line number (blank lines are
/// skipped but counted, as `tandem match` counts them).
pub fn jsonl_records(
    path: &Path,
) -> anyhow::Result<impl Iterator<Item = Result<(u64, Vec<u8>), String>>> {
    use std::io::BufRead;
    let f =
        std::fs::File::open(path).map_err(|e| anyhow::anyhow!("open {}: {e}", path.display()))?;
    let mut lines = std::io::BufReader::new(f).split(b'\n');
    let mut n = 0u64;
    Ok(std::iter::from_fn(move || loop {
        let line = lines.next()?;
        n += 1;
        match line {
            Err(e) => return Some(Err(format!("read line {n}: {e}"))),
            Ok(l) if tandem_codec::is_blank(&l) => continue,
            Ok(l) => return Some(Ok((n, l))),
        }
    }))
}

/// The records of a file log directory, in seq order. The log is opened
/// (and so locked) for the pass: a running node's log cannot be read
/// this way; verify a copy, or a stopped node's.
pub fn file_log_records(
    dir: &Path,
) -> anyhow::Result<impl Iterator<Item = Result<(u64, Vec<u8>), String>>> {
    anyhow::ensure!(
        dir.join("log.id").exists(),
        "{} is not a file log directory (no log.id)",
        dir.display()
    );
    let log = tandem_log::FileLog::open(dir, tandem_log::FileLogConfig::default())
        .map_err(|e| anyhow::anyhow!("open log {}: {e}", dir.display()))?;
    Ok(log_records(std::sync::Arc::new(log)))
}

/// Verifies every partition of a node's log (as `node::open_logs_to_read`
/// opens them from its config: a file log, or each Kafka partition), in
/// partition order, into one report. With more than one partition, the
/// first bad record is named `partition P, seq S` in its message.
pub fn verify_logs(
    logs: Vec<std::sync::Arc<dyn tandem_log::Log>>,
    policy: &Policy,
    require_signed: bool,
) -> AuditReport {
    let many = logs.len() > 1;
    let mut total = AuditReport::default();
    for (p, log) in logs.into_iter().enumerate() {
        let r = verify_records(log_records(log), policy, require_signed);
        total.records += r.records;
        total.signed += r.signed;
        total.unsigned += r.unsigned;
        total.invalid += r.invalid;
        if let Some((seq, why)) = r.first_bad {
            let why = if many {
                format!("partition {p}, seq {seq}: {why}")
            } else {
                why
            };
            total.first_bad = Some((seq, why));
            break;
        }
    }
    total
}

/// The records of any log, from its first readable seq to the end it
/// reports (`Log::read_from` until an empty page), in seq order.
pub fn log_records(
    log: std::sync::Arc<dyn tandem_log::Log>,
) -> impl Iterator<Item = Result<(u64, Vec<u8>), String>> {
    let mut next = log.first_seq();
    let mut buf: std::collections::VecDeque<tandem_log::Record> = Default::default();
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        if buf.is_empty() {
            match log.read_from(next, 1024) {
                Ok(rs) => buf.extend(rs),
                Err(e) => {
                    failed = true;
                    return Some(Err(format!("read log at seq {next}: {e}")));
                }
            }
        }
        let r = buf.pop_front()?;
        next = r.seq + 1;
        Some(Ok((r.seq, r.payload)))
    })
}

#[cfg(test)]
mod tests {
    use super::super::keys::SecretKey;
    use super::super::{append_credentials, Scheme};
    use super::*;

    /// A log of `n` signed places alternating schemes, an unsigned one
    /// and an invalid one.
    fn log(policy: &Policy, n: usize) -> Vec<Vec<u8>> {
        let keys = [
            SecretKey::derive(Scheme::Ed25519, 9, 0),
            SecretKey::derive(Scheme::Eip712, 9, 1),
        ];
        let mut out = Vec::new();
        for i in 0..n {
            let k = &keys[i % 2];
            let line = format!(
                r#"{{"op":"place","market":"M","id":"o{i}","account":"{}","side":"buy","price":"1.5","qty":"2"}}"#,
                k.account()
            );
            let cmd = tandem_codec::decode_command(line.as_bytes());
            let mut rec = Vec::new();
            tandem_codec::write_command(&cmd, &mut rec);
            append_credentials(&mut rec, &k.sign(&cmd, 1_000 + i as u64, policy).unwrap());
            out.push(rec);
        }
        out.push(br#"{"op":"cancel","market":"M","id":"x","account":"alice"}"#.to_vec());
        out.push(b"not json".to_vec());
        out
    }

    fn run(recs: &[Vec<u8>], policy: &Policy, strict: bool) -> AuditReport {
        verify_records(
            recs.iter()
                .enumerate()
                .map(|(i, r)| Ok((i as u64 + 1, r.clone()))),
            policy,
            strict,
        )
    }

    #[test]
    fn a_signed_log_verifies_and_a_tampered_record_is_named() {
        let policy = Policy::new(7, 300, 5);
        let n = BATCH + 40;
        let recs = log(&policy, n);
        let r = run(&recs, &policy, false);
        assert_eq!(r.first_bad, None, "{r:?}");
        assert_eq!((r.signed, r.unsigned, r.invalid), (n as u64, 1, 1));
        // Strict: the unsigned record fails, named by its seq.
        let r = run(&recs, &policy, true);
        assert_eq!(r.first_bad.map(|b| b.0), Some(n as u64 + 1));
        // Another chain id: the first record fails.
        let r = run(&recs, &Policy::new(8, 300, 5), false);
        assert_eq!(r.first_bad.map(|b| b.0), Some(1));
        // A changed quantity in an Ed25519 record (even seq 2k+1) inside
        // the second batch, and one in an EIP-712 record later.
        for (i, what) in [(BATCH + 4, "ed25519"), (BATCH + 9, "eip712")] {
            let mut t = recs.clone();
            let s = String::from_utf8(t[i].clone()).unwrap();
            t[i] = s.replace("\"qty\":\"2\"", "\"qty\":\"3\"").into_bytes();
            assert_ne!(t[i], recs[i]);
            let r = run(&t, &policy, false);
            let (seq, why) = r.first_bad.clone().unwrap();
            assert_eq!(seq, i as u64 + 1, "{what}: {why}");
            assert!(why.contains("x-tandem-signature"), "{why}");
        }
        // A malformed sig member is named too.
        let mut t = recs.clone();
        let s = String::from_utf8(t[3].clone()).unwrap();
        let at = s.find("\"sig\":\"").unwrap() + 7;
        t[3] = format!("{}zz{}", &s[..at], &s[at + 2..]).into_bytes();
        let r = run(&t, &policy, false);
        assert_eq!(r.first_bad.map(|b| b.0), Some(4));
    }
}
