//! Fuzz target: arbitrary bytes as a whole JSON Lines command stream.
//!
//! `run_match` (the `tandem match` job) must return `Ok` for any input read
//! from memory, write only UTF-8 lines that are each a strict JSON object,
//! leave the engine's invariants intact, and be deterministic: a second
//! run, with a different hash seed (which must never reach output), writes
//! byte-identical output and ends on the same seq and hash chain.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_codec::{json::read_object, run_match};
use tandem_core::Config;

fuzz_target!(|data: &[u8]| {
    let mut first = Vec::new();
    let eng = run_match(data, &mut first, Config::default()).expect("run_match must be Ok");

    let text = std::str::from_utf8(&first).expect("output must be UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "unterminated last line"
    );
    for line in text.lines() {
        assert!(
            read_object(line.as_bytes()).is_ok(),
            "output line is not a JSON object: {line:?}"
        );
    }
    if let Err(what) = eng.check_invariants() {
        panic!("invariant broken at the end of the stream: {what}");
    }

    let other = Config {
        hash_seed: !Config::default().hash_seed,
        ..Config::default()
    };
    let mut second = Vec::new();
    let eng2 = run_match(data, &mut second, other).expect("run_match must be Ok");
    assert!(first == second, "two runs of the same input differ");
    assert_eq!(eng.seq(), eng2.seq());
    assert_eq!(eng.chain(), eng2.chain());
});
