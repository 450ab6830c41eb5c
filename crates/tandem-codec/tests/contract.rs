//! One test per rule of `contracts/match-jsonl.md`, written as JSONL in and
//! JSONL out through `run_match`, exactly what `tandem match` does.

use tandem_codec::run_match;
use tandem_core::Config;

/// Runs `input` and returns the output lines.
fn run(input: &str) -> Vec<String> {
    let mut out = Vec::new();
    run_match(input.as_bytes(), &mut out, Config::default()).expect("in-memory run");
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Asserts the output equals `expected`, line by line (after trimming the
/// indentation of the literal).
fn check(input: &str, expected: &str) {
    let got = run(input);
    let want: Vec<String> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(got, want, "\ninput:\n{input}\ngot:\n{}\n", got.join("\n"));
}

fn place(id: &str, account: &str, side: &str, price: &str, qty: &str, extra: &str) -> String {
    format!(
        r#"{{"op":"place","market":"M","id":"{id}","account":"{account}","side":"{side}","price":"{price}","qty":"{qty}"{extra}}}"#
    )
}

#[test]
fn contract_example_flow() {
    let input = [
        r#"{"op":"place","market":"BTC-USD","id":"o1","account":"alice","side":"buy","type":"limit","price":"100.25","qty":"1.5","tif":"gtc","post_only":false}"#,
        r#"{"op":"cancel","market":"BTC-USD","id":"o1","account":"alice"}"#,
        r#"{"op":"amend","market":"BTC-USD","id":"o1","account":"alice","price":"100.30","qty":"1.0"}"#,
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"BTC-USD","id":"o1"}
           {"seq":2,"event":"cancelled","market":"BTC-USD","id":"o1","remaining":"1.5","reason":"user"}
           {"seq":3,"event":"rejected","market":"BTC-USD","id":"o1","reason":"unknown_order"}
           {"event":"book","market":"BTC-USD","bids":[],"asks":[]}"#,
    );
}

#[test]
fn price_time_priority_and_maker_price() {
    let input = [
        place("a", "s1", "sell", "101", "1", ""),
        place("b", "s2", "sell", "100", "1", ""),
        place("c", "s3", "sell", "100", "1", ""),
        place("t", "b1", "buy", "102", "2.5", ""),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"accepted","market":"M","id":"b"}
           {"seq":3,"event":"accepted","market":"M","id":"c"}
           {"seq":4,"event":"accepted","market":"M","id":"t"}
           {"seq":4,"event":"trade","market":"M","maker":"b","taker":"t","price":"100","qty":"1"}
           {"seq":4,"event":"trade","market":"M","maker":"c","taker":"t","price":"100","qty":"1"}
           {"seq":4,"event":"trade","market":"M","maker":"a","taker":"t","price":"101","qty":"0.5"}
           {"event":"book","market":"M","bids":[],"asks":[{"id":"a","price":"101","qty":"0.5"}]}"#,
    );
}

#[test]
fn limit_stops_at_its_price_and_rests() {
    let input = [
        place("a", "s1", "sell", "100", "1", ""),
        place("b", "s1", "sell", "101", "1", ""),
        place("t", "b1", "buy", "100", "3", ""),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"accepted","market":"M","id":"b"}
           {"seq":3,"event":"accepted","market":"M","id":"t"}
           {"seq":3,"event":"trade","market":"M","maker":"a","taker":"t","price":"100","qty":"1"}
           {"event":"book","market":"M","bids":[{"id":"t","price":"100","qty":"2"}],"asks":[{"id":"b","price":"101","qty":"1"}]}"#,
    );
}

#[test]
fn market_order_takes_any_price_and_cancels_rest_as_ioc() {
    let input = [
        place("a", "s1", "sell", "100", "1", ""),
        place("b", "s1", "sell", "5000", "1", ""),
        r#"{"op":"place","market":"M","id":"t","account":"b1","side":"buy","type":"market","qty":"3"}"#.to_owned(),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"accepted","market":"M","id":"b"}
           {"seq":3,"event":"accepted","market":"M","id":"t"}
           {"seq":3,"event":"trade","market":"M","maker":"a","taker":"t","price":"100","qty":"1"}
           {"seq":3,"event":"trade","market":"M","maker":"b","taker":"t","price":"5000","qty":"1"}
           {"seq":3,"event":"cancelled","market":"M","id":"t","remaining":"1","reason":"ioc"}
           {"event":"book","market":"M","bids":[],"asks":[]}"#,
    );
}

#[test]
fn market_order_on_empty_book_is_cancelled_whole() {
    check(
        r#"{"op":"place","market":"M","id":"t","account":"b1","side":"sell","type":"market","qty":"3","tif":"fok"}
           {"op":"place","market":"M","id":"u","account":"b1","side":"sell","type":"market","qty":"3"}"#,
        r#"{"seq":1,"event":"accepted","market":"M","id":"t"}
           {"seq":1,"event":"cancelled","market":"M","id":"t","remaining":"3","reason":"fok"}
           {"seq":2,"event":"accepted","market":"M","id":"u"}
           {"seq":2,"event":"cancelled","market":"M","id":"u","remaining":"3","reason":"ioc"}
           {"event":"book","market":"M","bids":[],"asks":[]}"#,
    );
}

#[test]
fn ioc_remainder_is_cancelled() {
    let input = [
        place("a", "s1", "sell", "100", "1", ""),
        place("t", "b1", "buy", "100", "1.25", r#","tif":"ioc""#),
        place("u", "b1", "buy", "99", "1", r#","tif":"ioc""#),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"accepted","market":"M","id":"t"}
           {"seq":2,"event":"trade","market":"M","maker":"a","taker":"t","price":"100","qty":"1"}
           {"seq":2,"event":"cancelled","market":"M","id":"t","remaining":"0.25","reason":"ioc"}
           {"seq":3,"event":"accepted","market":"M","id":"u"}
           {"seq":3,"event":"cancelled","market":"M","id":"u","remaining":"1","reason":"ioc"}
           {"event":"book","market":"M","bids":[],"asks":[]}"#,
    );
}

#[test]
fn fok_fills_whole_or_nothing() {
    let input = [
        place("a", "s1", "sell", "100", "1", ""),
        place("b", "s2", "sell", "101", "1", ""),
        place("k", "b1", "buy", "100", "1.5", r#","tif":"fok""#),
        place("f", "b1", "buy", "101", "2", r#","tif":"fok""#),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"accepted","market":"M","id":"b"}
           {"seq":3,"event":"accepted","market":"M","id":"k"}
           {"seq":3,"event":"cancelled","market":"M","id":"k","remaining":"1.5","reason":"fok"}
           {"seq":4,"event":"accepted","market":"M","id":"f"}
           {"seq":4,"event":"trade","market":"M","maker":"a","taker":"f","price":"100","qty":"1"}
           {"seq":4,"event":"trade","market":"M","maker":"b","taker":"f","price":"101","qty":"1"}
           {"event":"book","market":"M","bids":[],"asks":[]}"#,
    );
}

#[test]
fn fok_count_stops_at_own_order() {
    // 1 available before b1's own order, 1 more behind it: not enough.
    let input = [
        place("a", "s1", "sell", "100", "1", ""),
        place("own", "b1", "sell", "100", "1", ""),
        place("c", "s2", "sell", "100", "1", ""),
        place("f", "b1", "buy", "100", "2", r#","tif":"fok""#),
        place("g", "b1", "buy", "100", "1", r#","tif":"fok""#),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"accepted","market":"M","id":"own"}
           {"seq":3,"event":"accepted","market":"M","id":"c"}
           {"seq":4,"event":"accepted","market":"M","id":"f"}
           {"seq":4,"event":"cancelled","market":"M","id":"f","remaining":"2","reason":"fok"}
           {"seq":5,"event":"accepted","market":"M","id":"g"}
           {"seq":5,"event":"trade","market":"M","maker":"a","taker":"g","price":"100","qty":"1"}
           {"event":"book","market":"M","bids":[],"asks":[{"id":"own","price":"100","qty":"1"},{"id":"c","price":"100","qty":"1"}]}"#,
    );
}

#[test]
fn post_only_rejected_when_crossing_whoever_rests() {
    let input = [
        place("a", "s1", "sell", "100", "1", ""),
        place("p", "s1", "buy", "100", "1", r#","post_only":true"#),
        place("q", "b1", "buy", "99.99999999", "1", r#","post_only":true"#),
        place("p", "b1", "buy", "99", "1", ""),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"rejected","market":"M","id":"p","reason":"post_only"}
           {"seq":3,"event":"accepted","market":"M","id":"q"}
           {"seq":4,"event":"accepted","market":"M","id":"p"}
           {"event":"book","market":"M","bids":[{"id":"q","price":"99.99999999","qty":"1"},{"id":"p","price":"99","qty":"1"}],"asks":[{"id":"a","price":"100","qty":"1"}]}"#,
    );
}

#[test]
fn post_only_only_with_limit_gtc() {
    let input = [
        place("a", "s1", "buy", "100", "1", r#","post_only":true,"tif":"ioc""#),
        r#"{"op":"place","market":"M","id":"b","account":"x","side":"buy","type":"market","qty":"1","post_only":true}"#
            .to_owned(),
        place("c", "s1", "buy", "100", "1", r#","post_only":"true""#),
        place("d", "s1", "buy", "100", "1", r#","post_only":false,"tif":"fok""#),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"rejected","market":"M","id":"a","reason":"invalid"}
           {"seq":2,"event":"rejected","market":"M","id":"b","reason":"invalid"}
           {"seq":3,"event":"rejected","market":"M","id":"c","reason":"invalid"}
           {"seq":4,"event":"accepted","market":"M","id":"d"}
           {"seq":4,"event":"cancelled","market":"M","id":"d","remaining":"1","reason":"fok"}
           {"event":"book","market":"M","bids":[],"asks":[]}"#,
    );
}

#[test]
fn self_trade_cancels_taker_and_leaves_maker() {
    let input = [
        place("a", "s2", "sell", "100", "1", ""),
        place("own", "b1", "sell", "100", "1", ""),
        place("c", "s2", "sell", "100", "1", ""),
        place("t", "b1", "buy", "100", "3", ""),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"accepted","market":"M","id":"own"}
           {"seq":3,"event":"accepted","market":"M","id":"c"}
           {"seq":4,"event":"accepted","market":"M","id":"t"}
           {"seq":4,"event":"trade","market":"M","maker":"a","taker":"t","price":"100","qty":"1"}
           {"seq":4,"event":"cancelled","market":"M","id":"t","remaining":"2","reason":"self_trade"}
           {"event":"book","market":"M","bids":[],"asks":[{"id":"own","price":"100","qty":"1"},{"id":"c","price":"100","qty":"1"}]}"#,
    );
}

#[test]
fn ids_stay_taken_per_market_and_rejected_ids_are_not_taken() {
    let input = [
        place("a", "s1", "sell", "100", "1", ""),
        place("a", "s1", "sell", "100", "1", ""),
        place("x", "s1", "sell", "0", "1", ""),
        place("x", "s1", "sell", "100", "1", ""),
        r#"{"op":"cancel","market":"M","id":"a","account":"s1"}"#.to_owned(),
        place("a", "s1", "sell", "100", "1", ""),
        r#"{"op":"place","market":"N","id":"a","account":"s1","side":"buy","price":"1","qty":"1"}"#
            .to_owned(),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"rejected","market":"M","id":"a","reason":"duplicate_id"}
           {"seq":3,"event":"rejected","market":"M","id":"x","reason":"invalid"}
           {"seq":4,"event":"accepted","market":"M","id":"x"}
           {"seq":5,"event":"cancelled","market":"M","id":"a","remaining":"1","reason":"user"}
           {"seq":6,"event":"rejected","market":"M","id":"a","reason":"duplicate_id"}
           {"seq":7,"event":"accepted","market":"N","id":"a"}
           {"event":"book","market":"M","bids":[],"asks":[{"id":"x","price":"100","qty":"1"}]}
           {"event":"book","market":"N","bids":[{"id":"a","price":"1","qty":"1"}],"asks":[]}"#,
    );
}

#[test]
fn cancel_reveals_nothing() {
    let input = [
        place("a", "s1", "sell", "100", "1", ""),
        place("t", "b1", "buy", "100", "1", ""),
        r#"{"op":"cancel","market":"M","id":"a","account":"s1"}"#.to_owned(),
        place("b", "s1", "sell", "100", "1", ""),
        r#"{"op":"cancel","market":"M","id":"b","account":"other"}"#.to_owned(),
        r#"{"op":"cancel","market":"M","id":"nope","account":"s1"}"#.to_owned(),
        r#"{"op":"cancel","market":"Z","id":"b","account":"s1"}"#.to_owned(),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"accepted","market":"M","id":"t"}
           {"seq":2,"event":"trade","market":"M","maker":"a","taker":"t","price":"100","qty":"1"}
           {"seq":3,"event":"rejected","market":"M","id":"a","reason":"unknown_order"}
           {"seq":4,"event":"accepted","market":"M","id":"b"}
           {"seq":5,"event":"rejected","market":"M","id":"b","reason":"unknown_order"}
           {"seq":6,"event":"rejected","market":"M","id":"nope","reason":"unknown_order"}
           {"seq":7,"event":"rejected","market":"Z","id":"b","reason":"unknown_order"}
           {"event":"book","market":"M","bids":[],"asks":[{"id":"b","price":"100","qty":"1"}]}"#,
    );
}

#[test]
fn amend_down_in_place_keeps_priority() {
    let input = [
        place("a", "s1", "sell", "100", "2", ""),
        place("b", "s2", "sell", "100", "1", ""),
        r#"{"op":"amend","market":"M","id":"a","account":"s1","qty":"1.5"}"#.to_owned(),
        r#"{"op":"amend","market":"M","id":"a","account":"s1","price":"100","qty":"1.5"}"#
            .to_owned(),
        place("t", "b1", "buy", "100", "1", ""),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"accepted","market":"M","id":"b"}
           {"seq":3,"event":"amended","market":"M","id":"a","price":"100","qty":"1.5"}
           {"seq":4,"event":"amended","market":"M","id":"a","price":"100","qty":"1.5"}
           {"seq":5,"event":"accepted","market":"M","id":"t"}
           {"seq":5,"event":"trade","market":"M","maker":"a","taker":"t","price":"100","qty":"1"}
           {"event":"book","market":"M","bids":[],"asks":[{"id":"a","price":"100","qty":"0.5"},{"id":"b","price":"100","qty":"1"}]}"#,
    );
}

#[test]
fn amend_up_or_new_price_loses_priority_and_can_trade() {
    let input = [
        place("a", "s1", "sell", "100", "1", ""),
        place("b", "s2", "sell", "100", "1", ""),
        r#"{"op":"amend","market":"M","id":"a","account":"s1","qty":"2"}"#.to_owned(),
        place("c", "b1", "buy", "99", "1", ""),
        r#"{"op":"amend","market":"M","id":"b","account":"s2","price":"98"}"#.to_owned(),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"accepted","market":"M","id":"b"}
           {"seq":3,"event":"amended","market":"M","id":"a","price":"100","qty":"2"}
           {"seq":4,"event":"accepted","market":"M","id":"c"}
           {"seq":5,"event":"amended","market":"M","id":"b","price":"98","qty":"1"}
           {"seq":5,"event":"trade","market":"M","maker":"c","taker":"b","price":"99","qty":"1"}
           {"event":"book","market":"M","bids":[],"asks":[{"id":"a","price":"100","qty":"2"}]}"#,
    );
}

#[test]
fn amend_reentry_obeys_self_trade_and_rests_remainder() {
    let input = [
        place("own", "s1", "buy", "99", "1", ""),
        place("m", "b2", "buy", "100", "1", ""),
        place("a", "s1", "sell", "101", "3", ""),
        r#"{"op":"amend","market":"M","id":"a","account":"s1","price":"99"}"#.to_owned(),
        place("z", "s9", "sell", "105", "1", ""),
        r#"{"op":"amend","market":"M","id":"z","account":"s9","price":"104","qty":"2"}"#.to_owned(),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"own"}
           {"seq":2,"event":"accepted","market":"M","id":"m"}
           {"seq":3,"event":"accepted","market":"M","id":"a"}
           {"seq":4,"event":"amended","market":"M","id":"a","price":"99","qty":"3"}
           {"seq":4,"event":"trade","market":"M","maker":"m","taker":"a","price":"100","qty":"1"}
           {"seq":4,"event":"cancelled","market":"M","id":"a","remaining":"2","reason":"self_trade"}
           {"seq":5,"event":"accepted","market":"M","id":"z"}
           {"seq":6,"event":"amended","market":"M","id":"z","price":"104","qty":"2"}
           {"event":"book","market":"M","bids":[{"id":"own","price":"99","qty":"1"}],"asks":[{"id":"z","price":"104","qty":"2"}]}"#,
    );
}

#[test]
fn amend_rejections() {
    let input = [
        place("p", "s1", "sell", "101", "1", r#","post_only":true"#),
        place("b", "b1", "buy", "100", "1", ""),
        r#"{"op":"amend","market":"M","id":"p","account":"s1","price":"100"}"#.to_owned(),
        r#"{"op":"amend","market":"M","id":"p","account":"s1"}"#.to_owned(),
        r#"{"op":"amend","market":"M","id":"p","account":"s1","qty":"0"}"#.to_owned(),
        r#"{"op":"amend","market":"M","id":"p","account":"s1","price":1}"#.to_owned(),
        r#"{"op":"amend","market":"M","id":"p","account":"b1","qty":"0.5"}"#.to_owned(),
        r#"{"op":"amend","market":"M","id":"p","account":"s1","price":"102","qty":"2"}"#.to_owned(),
    ]
    .join("\n");
    check(
        &input,
        r#"{"seq":1,"event":"accepted","market":"M","id":"p"}
           {"seq":2,"event":"accepted","market":"M","id":"b"}
           {"seq":3,"event":"rejected","market":"M","id":"p","reason":"post_only"}
           {"seq":4,"event":"rejected","market":"M","id":"p","reason":"invalid"}
           {"seq":5,"event":"rejected","market":"M","id":"p","reason":"invalid"}
           {"seq":6,"event":"rejected","market":"M","id":"p","reason":"invalid"}
           {"seq":7,"event":"rejected","market":"M","id":"p","reason":"unknown_order"}
           {"seq":8,"event":"amended","market":"M","id":"p","price":"102","qty":"2"}
           {"event":"book","market":"M","bids":[{"id":"b","price":"100","qty":"1"}],"asks":[{"id":"p","price":"102","qty":"2"}]}"#,
    );
}

#[test]
fn validation_rejects_each_bad_field() {
    let bad = [
        r#"{"op":"replace","market":"M","id":"i","account":"a"}"#,
        r#"{"market":"M","id":"i","account":"a","side":"buy","price":"1","qty":"1"}"#,
        r#"{"op":"place","market":"","id":"i","account":"a","side":"buy","price":"1","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"","account":"a","side":"buy","price":"1","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"","side":"buy","price":"1","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","side":"buy","price":"1","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"BUY","price":"1","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","price":"1","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","type":"stop","price":"1","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","type":"market","price":"1","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","price":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","price":"1","qty":1}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","price":"1e3","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","price":"0.123456789","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","price":"10000000000.1","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","price":"-1","qty":"1"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","price":"1","qty":"1","tif":"day"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","price":"1","qty":"1","tif":null}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","price":"1","qty":"1","post_only":1}"#,
        r#"{"op":"cancel","market":"M","id":"i"}"#,
        r#"{"op":"place","market":"M","id":"i","account":"a","side":"buy","price":"1","qty":"1" "#,
    ];
    let out = run(&bad.join("\n"));
    assert_eq!(out.len(), bad.len(), "{out:#?}");
    for (n, line) in out.iter().enumerate() {
        assert!(
            line.contains(r#""event":"rejected""#) && line.contains(r#""reason":"invalid""#),
            "{n}: {line}"
        );
        assert!(line.starts_with(&format!("{{\"seq\":{},", n + 1)), "{line}");
    }
    // `market`/`id` are echoed only when they were strings; broken JSON has neither.
    assert_eq!(
        out[1],
        r#"{"seq":2,"event":"rejected","market":"M","id":"i","reason":"invalid"}"#
    );
    assert_eq!(
        out[21],
        r#"{"seq":22,"event":"rejected","reason":"invalid"}"#
    );
}

#[test]
fn number_id_has_no_id_in_rejection_and_unknown_fields_are_ignored() {
    check(
        r#"{"op":"place","market":"M","id":7,"account":"a","side":"buy","price":"1","qty":"1"}
           {"op":"place","market":"M","id":"i","account":"a","side":"buy","price":"1","qty":"1","note":{"x":[1,2]},"client":"y"}"#,
        r#"{"seq":1,"event":"rejected","market":"M","reason":"invalid"}
           {"seq":2,"event":"accepted","market":"M","id":"i"}
           {"event":"book","market":"M","bids":[{"id":"i","price":"1","qty":"1"}],"asks":[]}"#,
    );
}

#[test]
fn blank_lines_count_and_rejected_only_markets_have_no_book() {
    let input = "\n   \n{\"op\":\"cancel\",\"market\":\"Q\",\"id\":\"i\",\"account\":\"a\"}\r\n\n"
        .to_owned()
        + &place("i", "a", "buy", "1", "1", "");
    check(
        &input,
        r#"{"seq":3,"event":"rejected","market":"Q","id":"i","reason":"unknown_order"}
           {"seq":5,"event":"accepted","market":"M","id":"i"}
           {"event":"book","market":"M","bids":[{"id":"i","price":"1","qty":"1"}],"asks":[]}"#,
    );
}

#[test]
fn books_are_listed_in_byte_order_of_market_name() {
    let input = ["b", "B", "a", "é", "A"]
        .iter()
        .enumerate()
        .map(|(n, m)| {
            format!(r#"{{"op":"place","market":"{m}","id":"i{n}","account":"a","side":"buy","price":"1","qty":"1"}}"#)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let out = run(&input);
    let books: Vec<&str> = out
        .iter()
        .filter(|l| l.contains("\"book\""))
        .map(String::as_str)
        .collect();
    let order: Vec<&str> = books
        .iter()
        .map(|l| l.split('"').nth(7).unwrap_or(""))
        .collect();
    assert_eq!(order, ["A", "B", "a", "b", "é"]);
}

#[test]
fn strings_round_trip_with_escapes() {
    check(
        r#"{"op":"place","market":"M\"1","id":"\u00e9\n","account":"a","side":"buy","price":"1","qty":"1"}"#,
        r#"{"seq":1,"event":"accepted","market":"M\"1","id":"é\n"}
           {"event":"book","market":"M\"1","bids":[{"id":"é\n","price":"1","qty":"1"}],"asks":[]}"#,
    );
}

#[test]
fn decimals_print_exactly() {
    check(
        &[
            place("a", "s", "sell", "0000100.2500000000", "0.00000001", ""),
            place(
                "b",
                "t",
                "buy",
                "10000000000",
                "10000000000",
                r#","tif":"ioc""#,
            ),
        ]
        .join("\n"),
        r#"{"seq":1,"event":"accepted","market":"M","id":"a"}
           {"seq":2,"event":"accepted","market":"M","id":"b"}
           {"seq":2,"event":"trade","market":"M","maker":"a","taker":"b","price":"100.25","qty":"0.00000001"}
           {"seq":2,"event":"cancelled","market":"M","id":"b","remaining":"9999999999.99999999","reason":"ioc"}
           {"event":"book","market":"M","bids":[],"asks":[]}"#,
    );
}
