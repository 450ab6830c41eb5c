//! Fuzz target: the files a node reads back beside its snapshots, on
//! hostile bytes: the idempotency window (`tandem_node::window::decode`,
//! then `Answers::restore`) and the chain checkpoints
//! (`tandem_node::checkpoints::decode`, then `Checkpoints::restore`).
//!
//! The first byte picks the file (bit 0) and whether the input's last four
//! bytes are replaced by the right CRC-32C of the rest (bit 1): random
//! bytes rarely carry a valid checksum, and with it fixed up the decoder's
//! structural checks are reached. Checks: decoding never panics; what it
//! accepts re-encodes to exactly the bytes read (the formats have one
//! encoding); restoring it never panics; a restored window lists no more
//! entries than it was given and each at a seq it was given.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_node::answers::Answers;
use tandem_node::checkpoints::{self, Checkpoints};
use tandem_node::window;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if pick & 2 != 0 && bytes.len() >= 4 {
        let body = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
    if pick & 1 == 0 {
        let Ok(entries) = window::decode(&bytes) else {
            return;
        };
        assert_eq!(window::encode(entries.iter()), bytes, "window re-encoded");
        let seqs: std::collections::BTreeSet<u64> = entries.iter().map(|e| e.seq).collect();
        let given = entries.len();
        // Small bounds, so that restoring also forgets.
        let mut answers = Answers::new(8, 8);
        answers.restore(entries);
        let listed = answers.window().entries(u64::MAX);
        assert!(listed.len() <= given.min(16), "{} listed of {given}", listed.len());
        assert!(listed.iter().all(|e| seqs.contains(&e.seq)), "a seq not given");
    } else {
        let Ok((every, cps)) = checkpoints::decode(&bytes) else {
            return;
        };
        assert_eq!(checkpoints::encode(every, &cps), bytes, "checkpoints re-encoded");
        let last = cps.last().map_or(0, |c| c.seq);
        let mut kept = Checkpoints::new(every.max(1), 8);
        kept.restore(last, cps);
        let _ = kept.range(None, last, 100);
    }
});
