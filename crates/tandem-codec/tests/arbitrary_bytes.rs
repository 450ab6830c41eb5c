//! Outside bytes never panic anything: the CI-bounded counterpart of the
//! cargo-fuzz targets in `fuzz/`.
//!
//! - arbitrary bytes and "JSON-ish" lines (mixes of braces, quotes, the
//!   contract's field names and values, escapes, numbers and UTF-8
//!   fragments) go through `decode_command` (and `decode_record`, which
//!   also reads an amend's base) + `Engine::apply`, which must
//!   emit at least one event, each a strict JSON object;
//! - streams of such lines go through `run_match`, which must return `Ok`
//!   and write UTF-8 lines that are each a JSON object, the same on a second
//!   run under another hash seed and the same as a plain single-threaded
//!   decode-apply-encode loop;
//! - arbitrary bytes and mutated real snapshots go through
//!   `Engine::restore`, which must refuse every mutation that changed a
//!   byte and round-trip every unmutated snapshot.
//!
//! `PROPTEST_CASES` sets the number of cases (CI: 256).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use tandem_codec::{
    decode_command, decode_record, is_blank, json::read_object, run_match, write_book, write_event,
};
use tandem_core::{Command, Config, Engine};

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Pieces that JSON-ish lines are made of.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\"",
    b" ",
    b"\t",
    b"\r",
    b"\\",
    b"\\\"",
    b"\\\\",
    b"\\n",
    b"\\u0000",
    b"\\u006f",
    b"\\ud83d\\ude00",
    b"\\ud800",
    b"\\udc00x",
    b"\\x",
    b"\"op\"",
    b"\"market\"",
    b"\"id\"",
    b"\"account\"",
    b"\"side\"",
    b"\"type\"",
    b"\"price\"",
    b"\"qty\"",
    b"\"tif\"",
    b"\"post_only\"",
    b"\"place\"",
    b"\"cancel\"",
    b"\"amend\"",
    b"\"buy\"",
    b"\"sell\"",
    b"\"limit\"",
    b"\"gtc\"",
    b"\"ioc\"",
    b"\"fok\"",
    b"\"M\"",
    b"\"a\"",
    b"\"x\"",
    b"\"\"",
    b"\"1\"",
    b"\"100.25\"",
    b"\"0.00000001\"",
    b"\"10000000000\"",
    b"\"10000000001\"",
    b"\"0.000000001\"",
    b"\"1e3\"",
    b"\"-1\"",
    b"\"0\"",
    b"true",
    b"false",
    b"null",
    b"tru",
    b"0",
    b"-1",
    b"1.5e+3",
    b"01",
    b"1.",
    b"NaN",
    "é".as_bytes(),
    "✓".as_bytes(),
    "😀".as_bytes(),
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xff",
    b"\x00",
    b"\x1f",
];

/// Lines that `run_match` skips (but counts).
const BLANKS: &[&[u8]] = &[b"", b" ", b"\t\r"];

/// One JSON-ish token: mostly from `TOKENS`, sometimes a random byte run.
fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => select(TOKENS).prop_map(<[u8]>::to_vec),
        1 => vec(any::<u8>(), 1..4),
        1 => (0u32..100_000).prop_map(|n| n.to_string().into_bytes()),
    ]
}

/// A line of JSON-ish tokens.
fn jsonish_line() -> impl Strategy<Value = Vec<u8>> {
    vec(token(), 0..32).prop_map(|t| t.concat())
}

/// `"key":value`, present with probability `present`; the value is
/// usually one of `good`, sometimes one of `bad`.
fn member(
    key: &'static str,
    present: f64,
    good: &'static [&'static str],
    bad: &'static [&'static str],
) -> impl Strategy<Value = Option<String>> {
    let value = prop_oneof![40 => select(good), 1 => select(bad)];
    proptest::option::weighted(present, value)
        .prop_map(move |v| v.map(|v| format!("\"{key}\":{v}")))
}

/// A command object, usually valid, over few markets, ids, accounts and
/// prices, so that streams of them trade, cancel, amend and reject.
fn command_line() -> impl Strategy<Value = Vec<u8>> {
    (
        member(
            "op",
            0.97,
            &["\"place\"", "\"place\"", "\"cancel\"", "\"amend\""],
            &["\"nop\"", "1", "null"],
        ),
        member(
            "market",
            0.97,
            &["\"M\"", "\"M\"", "\"N\"", r#""\u00e9""#],
            &["\"\"", "null", "[]"],
        ),
        member(
            "id",
            0.97,
            &["\"a\"", "\"b\"", "\"c\"", "\"d\"", "\"e\"", r#""\u00e9""#],
            &["\"\"", "7"],
        ),
        member(
            "account",
            0.97,
            &["\"x\"", "\"y\"", "\"z\""],
            &["\"\"", "false"],
        ),
        member(
            "side",
            0.97,
            &["\"buy\"", "\"sell\""],
            &["\"hold\"", "\"BUY\""],
        ),
        member(
            "type",
            0.3,
            &["\"limit\"", "\"limit\"", "\"market\""],
            &["\"stop\""],
        ),
        member(
            "price",
            0.9,
            &[
                "\"99\"",
                "\"100\"",
                "\"100.5\"",
                "\"101\"",
                "\"100.50000000\"",
            ],
            &["\"0\"", "100", "\"1e3\"", "\"10000000001\""],
        ),
        member(
            "qty",
            0.95,
            &["\"1\"", "\"2\"", "\"0.5\"", "\"3\"", "\"10000000000\""],
            &["\"0\"", "\"0.000000001\"", "1"],
        ),
        member("tif", 0.3, &["\"gtc\"", "\"ioc\"", "\"fok\""], &["\"day\""]),
        member("post_only", 0.2, &["false", "true"], &["\"true\"", "1"]),
        // A node's amend base (`decode_record` reads it).
        member(
            "base",
            0.2,
            &["\"0\"", "\"1\"", "\"65535\""],
            &["\"65536\"", "-1", "\"x\"", "\"\""],
        ),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i, j, k, junk)| {
            let mut members: Vec<String> = [a, b, c, d, e, f, g, h, i, j, k]
                .into_iter()
                .flatten()
                .collect();
            if junk {
                members.push("\"extra\":[1,{\"k\":null}]".to_owned());
            }
            format!("{{{}}}", members.join(",")).into_bytes()
        })
}

/// A command line with one byte overwritten.
fn mutated_command_line() -> impl Strategy<Value = Vec<u8>> {
    (command_line(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut l, at, b)| {
        let i = at.index(l.len());
        l[i] = b;
        l
    })
}

/// Any kind of line a stream may hold.
fn any_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => command_line(),
        2 => mutated_command_line(),
        2 => jsonish_line(),
        1 => vec(any::<u8>(), 0..48),
        1 => select(BLANKS).prop_map(<[u8]>::to_vec),
    ]
}

/// Lines joined by `\n`, with or without a final newline; a line that
/// holds a `\n` of its own just makes more lines.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    (vec(any_line(), 0..48), any::<bool>()).prop_map(|(lines, final_newline)| {
        let mut s = lines.join(&b'\n');
        if final_newline {
            s.push(b'\n');
        }
        s
    })
}

/// Applies `cmd` at `seq`, checks that it yields events that are JSON
/// objects and that the engine stays sound, and appends the event lines.
fn apply_checked(
    eng: &mut Engine,
    seq: u64,
    cmd: &Command,
    out: &mut Vec<u8>,
) -> Result<(), TestCaseError> {
    let mut events = Vec::new();
    eng.apply(seq, cmd, &mut events);
    prop_assert!(!events.is_empty(), "no event for {:?}", cmd);
    for ev in &events {
        let start = out.len();
        write_event(eng, Some(seq), ev, out);
        prop_assert!(
            read_object(&out[start..]).is_ok(),
            "event is not a JSON object: {:?}",
            String::from_utf8_lossy(&out[start..])
        );
        out.push(b'\n');
    }
    if let Err(what) = eng.check_invariants() {
        return Err(TestCaseError::fail(format!("after {cmd:?}: {what}")));
    }
    Ok(())
}

/// One line through the decoder and a fresh engine, twice (the second
/// time reaches duplicate ids and live orders).
fn check_line(line: &[u8]) -> Result<(), TestCaseError> {
    // As `tandem match` reads it, and as a replica reads a log record.
    for cmd in [decode_command(line), decode_record(line)] {
        let mut eng = Engine::new(Config::default());
        let mut out = Vec::new();
        apply_checked(&mut eng, 1, &cmd, &mut out)?;
        apply_checked(&mut eng, 2, &cmd, &mut out)?;
    }
    Ok(())
}

/// `run_match` on `input`: `Ok`, UTF-8, one JSON object per line.
fn run(input: &[u8], cfg: Config) -> Result<(Engine, String), TestCaseError> {
    let mut out = Vec::new();
    let eng = match run_match(input, &mut out, cfg) {
        Ok(eng) => eng,
        Err(e) => return Err(TestCaseError::fail(format!("run_match failed: {e}"))),
    };
    let text = match String::from_utf8(out) {
        Ok(t) => t,
        Err(e) => return Err(TestCaseError::fail(format!("output is not UTF-8: {e}"))),
    };
    prop_assert!(
        text.is_empty() || text.ends_with('\n'),
        "unterminated last line"
    );
    for line in text.lines() {
        prop_assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not an object: {:?}",
            line
        );
        prop_assert!(read_object(line.as_bytes()).is_ok(), "not JSON: {:?}", line);
    }
    Ok((eng, text))
}

/// What `run_match` must write, computed one line at a time on one thread.
fn reference_output(input: &[u8]) -> Result<String, TestCaseError> {
    let mut eng = Engine::new(Config::default());
    let mut out = Vec::new();
    for (i, line) in input.split_inclusive(|&b| b == b'\n').enumerate() {
        if !is_blank(line) {
            apply_checked(&mut eng, i as u64 + 1, &decode_command(line), &mut out)?;
        }
    }
    for m in eng.markets_by_name() {
        write_book(&eng, m, &mut out);
        out.push(b'\n');
    }
    String::from_utf8(out).map_err(|e| TestCaseError::fail(e.to_string()))
}

/// Checks a whole stream through `run_match`.
fn check_stream(input: &[u8]) -> Result<(), TestCaseError> {
    let (eng, text) = run(input, Config::default())?;
    let other = Config {
        hash_seed: !Config::default().hash_seed,
        ..Config::default()
    };
    let (eng2, text2) = run(input, other)?;
    prop_assert_eq!(&text, &text2, "output depends on the hash seed");
    prop_assert_eq!(eng.chain(), eng2.chain());
    prop_assert_eq!(
        text,
        reference_output(input)?,
        "run_match differs from the plain loop"
    );
    Ok(())
}

/// The engine built by applying every line of `input`.
fn engine_of(input: &[u8]) -> Engine {
    let mut eng = Engine::new(Config::default());
    let mut events = Vec::new();
    for (i, line) in input.split_inclusive(|&b| b == b'\n').enumerate() {
        if !is_blank(line) {
            events.clear();
            eng.apply(i as u64 + 1, &decode_command(line), &mut events);
        }
    }
    eng
}

/// A change to a snapshot.
#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite a byte (a no-op when it already held that value).
    Set(prop::sample::Index, u8),
    /// Flip some bits of a byte.
    Xor(prop::sample::Index, u8),
    /// Cut the snapshot short.
    Truncate(prop::sample::Index),
    /// Insert a byte.
    Insert(prop::sample::Index, u8),
    /// Remove a byte.
    Remove(prop::sample::Index),
    /// Swap two bytes (a no-op when they are equal).
    Swap(prop::sample::Index, prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<(prop::sample::Index, u8)>().prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<prop::sample::Index>(), 1u8..).prop_map(|(i, b)| Mutation::Xor(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        any::<(prop::sample::Index, u8)>().prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
        any::<(prop::sample::Index, prop::sample::Index)>().prop_map(|(i, j)| Mutation::Swap(i, j)),
    ]
}

fn mutate(snap: &[u8], m: &Mutation) -> Vec<u8> {
    let mut v = snap.to_vec();
    let n = v.len();
    match m {
        Mutation::Set(i, b) => v[i.index(n)] = *b,
        Mutation::Xor(i, b) => v[i.index(n)] ^= *b,
        Mutation::Truncate(i) => v.truncate(i.index(n)),
        Mutation::Insert(i, b) => v.insert(i.index(n + 1), *b),
        Mutation::Remove(i) => {
            v.remove(i.index(n));
        }
        Mutation::Swap(i, j) => v.swap(i.index(n), j.index(n)),
    }
    v
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_decode_and_apply(line in vec(any::<u8>(), 0..256)) {
        check_line(&line)?;
    }

    #[test]
    fn jsonish_lines_decode_and_apply(line in prop_oneof![jsonish_line(), mutated_command_line()]) {
        check_line(&line)?;
    }

    #[test]
    fn arbitrary_bytes_through_run_match(input in vec(any::<u8>(), 0..512)) {
        check_stream(&input)?;
    }

    #[test]
    fn jsonish_streams_through_run_match(input in stream()) {
        check_stream(&input)?;
    }

    #[test]
    fn arbitrary_bytes_restore(bytes in vec(any::<u8>(), 0..256), header in any::<bool>()) {
        // With the real header the decoder gets as far as the checksum.
        let bytes = if header {
            [&b"TNDMSNAP\x01\0\0\0"[..], &bytes].concat()
        } else {
            bytes
        };
        let _ = Engine::restore(&bytes, Config::default());
    }

    #[test]
    fn mutated_snapshots_are_refused(input in stream(), m in mutation()) {
        let snap = engine_of(&input).snapshot();
        let back = Engine::restore(&snap, Config::default());
        prop_assert!(back.is_ok(), "own snapshot refused: {:?}", back.err());
        let again = back.map(|e| e.snapshot()).ok();
        prop_assert!(again.as_deref() == Some(&snap[..]), "snapshot does not round-trip");

        let bad = mutate(&snap, &m);
        let res = Engine::restore(&bad, Config::default());
        if bad == snap {
            prop_assert!(res.is_ok(), "no-op mutation {:?} refused", m);
        } else {
            prop_assert!(res.is_err(), "mutated snapshot ({:?}) restored", m);
        }
    }
}

/// Past one batch of the reader thread (1024 commands), `run_match` still
/// equals the plain loop: batching and buffer reuse change nothing.
#[test]
fn long_stream_crosses_batches() {
    let mut input = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..2600u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let op = ["place", "place", "place", "cancel", "amend"][(x % 5) as usize];
        let side = if x >> 8 & 1 == 0 { "buy" } else { "sell" };
        let price = 95 + (x >> 16) % 10;
        let id = (x >> 32) % 400;
        let acct = (x >> 40) % 7;
        let line = match (i % 97, op) {
            (0, _) => "not json".to_owned(),
            (1, _) => String::new(),
            (_, "place") => format!(
                r#"{{"op":"place","market":"M{}","id":"o{id}","account":"a{acct}","side":"{side}","price":"{price}","qty":"{}"}}"#,
                x >> 50 & 1,
                1 + (x >> 20) % 5
            ),
            (_, "amend") => format!(
                r#"{{"op":"amend","market":"M{}","id":"o{id}","account":"a{acct}","price":"{price}"}}"#,
                x >> 50 & 1
            ),
            _ => format!(
                r#"{{"op":"cancel","market":"M{}","id":"o{id}","account":"a{acct}"}}"#,
                x >> 50 & 1
            ),
        };
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    check_stream(&input).unwrap();
}
