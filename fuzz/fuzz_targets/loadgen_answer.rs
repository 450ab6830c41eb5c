//! The load generator's HTTP/1.1 answer decoder (`tandem_loadgen`'s
//! `h1::decode`) over arbitrary bytes as a connection's answers: it never
//! panics, no body is longer than the input, and the bytes decode to the
//! same answers whether they arrive whole or in small pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tandem_loadgen::check_answer_bytes(data);
});
