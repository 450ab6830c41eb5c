//! Fuzz target: arbitrary bytes as one command line.
//!
//! `decode_command` (and `decode_record`, the replica's reader of log
//! records, which also reads an amend's base) must turn any bytes into a
//! `Command` without panicking,
//! and `Engine::apply` must accept whatever it decoded: a fresh engine
//! applies it at seq 1 (and, to reach the duplicate-id, cancel and amend
//! paths, once more at seq 2), yields at least one event per command,
//! encodes every event as a strict JSON object and keeps its invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_codec::{
    decode_command, decode_record, decode_with_op, json::read_object, write_event, Op,
};
use tandem_core::{Command, Config, Engine};

fn apply_and_check(eng: &mut Engine, seq: u64, cmd: &Command) {
    let mut events = Vec::new();
    eng.apply(seq, cmd, &mut events);
    assert!(!events.is_empty(), "no event for {cmd:?}");
    for ev in &events {
        let mut line = Vec::new();
        write_event(eng, Some(seq), ev, &mut line);
        assert!(
            read_object(&line).is_ok(),
            "event is not a JSON object: {:?}",
            String::from_utf8_lossy(&line)
        );
    }
    if let Err(what) = eng.check_invariants() {
        panic!("invariant broken after {cmd:?}: {what}");
    }
}

fuzz_target!(|data: &[u8]| {
    for cmd in [decode_command(data), decode_record(data)] {
        let mut eng = Engine::new(Config::default());
        apply_and_check(&mut eng, 1, &cmd);
        apply_and_check(&mut eng, 2, &cmd);
    }

    // The HTTP API's decoder, op fixed by the route, shares the reader.
    for op in [Op::Place, Op::Cancel, Op::Amend] {
        let cmd = decode_with_op(data, op);
        let mut eng = Engine::new(Config::default());
        apply_and_check(&mut eng, 1, &cmd);
    }
});
