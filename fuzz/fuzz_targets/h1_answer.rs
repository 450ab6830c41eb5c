//! The HTTP/1.1 answer decoder of the clients that drive their own
//! connections (`tandem_conn::h1::decode`: the load generator's, the
//! edge's to its nodes) over arbitrary bytes as a connection's answers,
//! after a `GET` and after a `HEAD`: it never panics, no body is longer
//! than the input, and the bytes decode to the same answers whether they
//! arrive whole or in small pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tandem_conn::h1::check_answer_bytes(data);
});
