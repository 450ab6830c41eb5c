//! Fuzz target: `Engine::restore` on hostile bytes.
//!
//! The input is used three ways:
//! 1. as a snapshot itself: `restore` must return `Err` or `Ok`, never panic
//!    (random bytes rarely pass the magic and checksum, hence 2 and 3);
//! 2. after a 4-byte control prefix, as a JSONL command stream: its first
//!    `split` lines build an engine whose snapshot must restore and
//!    round-trip (`restore(s).snapshot() == s`, same seq and chain), and the
//!    original and the restored engine, fed the remaining lines, must emit
//!    identical events and chains;
//! 3. that snapshot with one byte (position and XOR mask from the prefix)
//!    mutated must be refused (the checksum guards it); with a body byte
//!    mutated and the checksum recomputed, `restore` reaches the structural
//!    checks and must return `Err` or an engine that keeps its invariants,
//!    snapshots to something that itself round-trips, and applies the
//!    stream's commands without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_codec::{decode_command, is_blank, json::read_object, write_event};
use tandem_core::{Command, Config, Engine};

/// Header ("TNDMSNAP" + version) and trailer (body length + checksum).
const HEAD: usize = 12;
const TAIL: usize = 16;

/// Applies `cmds` after the engine's seq, returning the event lines.
fn feed(eng: &mut Engine, cmds: &[Command]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut events = Vec::new();
    for cmd in cmds {
        let Some(seq) = eng.seq().checked_add(1) else {
            break; // a mutated seq of u64::MAX: nothing can follow
        };
        events.clear();
        eng.apply(seq, cmd, &mut events);
        for ev in &events {
            let start = out.len();
            write_event(eng, Some(seq), ev, &mut out);
            assert!(
                read_object(&out[start..]).is_ok(),
                "event is not a JSON object: {:?}",
                String::from_utf8_lossy(&out[start..])
            );
            out.push(b'\n');
        }
    }
    if let Err(what) = eng.check_invariants() {
        panic!("invariant broken: {what}");
    }
    out
}

fn restore_roundtrip(bytes: &[u8]) -> Engine {
    let eng = match Engine::restore(bytes, Config::default()) {
        Ok(eng) => eng,
        Err(e) => panic!("own snapshot refused: {e}"),
    };
    assert!(eng.snapshot() == bytes, "snapshot does not round-trip");
    eng
}

fuzz_target!(|data: &[u8]| {
    let _ = Engine::restore(data, Config::default());

    let Some((ctl, stream)) = data.split_first_chunk::<4>() else {
        return;
    };
    let cmds: Vec<Command> = stream
        .split(|&b| b == b'\n')
        .filter(|line| !is_blank(line))
        .map(decode_command)
        .collect();
    let split = usize::from(ctl[3]) % (cmds.len() + 1);
    let (before, after) = cmds.split_at(split);

    let mut orig = Engine::new(Config::default());
    feed(&mut orig, before);
    let snap = orig.snapshot();
    let mut back = restore_roundtrip(&snap);
    assert_eq!(back.seq(), orig.seq());
    assert_eq!(back.chain(), orig.chain());
    let (a, b) = (feed(&mut orig, after), feed(&mut back, after));
    assert!(a == b, "restored engine diverges from the original");
    assert_eq!(back.chain(), orig.chain());

    // One byte mutated: the checksum (or magic, version, length) refuses it.
    let pos = usize::from(u16::from_le_bytes([ctl[0], ctl[1]])) % snap.len();
    let mask = ctl[2].max(1);
    let mut bad = snap.clone();
    bad[pos] ^= mask;
    assert!(
        Engine::restore(&bad, Config::default()).is_err(),
        "snapshot with byte {pos} ^ {mask:#x} restored"
    );

    // A body byte mutated the same way, with a valid checksum: past it,
    // into the structural checks.
    let body = snap.len() - HEAD - TAIL;
    let pos = HEAD + usize::from(u16::from_le_bytes([ctl[0], ctl[1]])) % body;
    let mut bad = snap.clone();
    bad[pos] ^= mask;
    let sum = xxhash_rust::xxh3::xxh3_64(&bad[HEAD..HEAD + body]);
    let n = bad.len();
    bad[n - 8..].copy_from_slice(&sum.to_le_bytes());
    if let Ok(mut eng) = Engine::restore(&bad, Config::default()) {
        if let Err(what) = eng.check_invariants() {
            panic!("restored engine breaks invariants: {what}");
        }
        // Varints may be non-canonical, so the bytes need not match `bad`,
        // but what the engine writes must itself round-trip.
        restore_roundtrip(&eng.snapshot());
        feed(&mut eng, &cmds);
    }
});
