//! `write_record` is what a node puts in the order log: it must decode
//! back (`decode_record`) to the very command it encoded, for any valid
//! command, and equal commands must encode to equal bytes. `write_command`
//! is the contract's canonical form (no amend base), which `decode_command`
//! (`tandem match`) reads back, and reads out of a record too.

use proptest::prelude::*;
use tandem_codec::{decode_command, decode_record, write_command, write_record};
use tandem_core::{Amend, Cancel, Command, Invalid, OrderKind, Place, Price, Qty, Side, Sym, Tif};

fn sym() -> impl Strategy<Value = Sym> {
    // Quotes, backslashes, control bytes and non-ASCII must survive.
    "[a-zA-Z0-9\"\\\\\u{1}\u{e9}\u{1F600} -]{1,12}".prop_map(|s| Sym::new(&s))
}

fn units() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..1_000,
        1u64..=tandem_core::MAX_UNITS,
        Just(tandem_core::MAX_UNITS)
    ]
}

fn command() -> impl Strategy<Value = Command> {
    let place = (
        sym(),
        sym(),
        sym(),
        any::<bool>(),
        proptest::option::of(units()),
        units(),
        0u8..3,
        any::<bool>(),
    )
        .prop_map(|(market, id, account, buy, price, qty, tif, post)| {
            let kind = match price {
                Some(p) => OrderKind::Limit(Price::from_units(p).unwrap()),
                None => OrderKind::Market,
            };
            let tif = [Tif::Gtc, Tif::Ioc, Tif::Fok][tif as usize];
            Command::Place(Place {
                market,
                id,
                account,
                side: if buy { Side::Buy } else { Side::Sell },
                kind,
                qty: Qty::from_units(qty).unwrap(),
                tif,
                post_only: post && tif == Tif::Gtc && matches!(kind, OrderKind::Limit(_)),
            })
        });
    let cancel = (sym(), sym(), sym()).prop_map(|(market, id, account)| {
        Command::Cancel(Cancel {
            market,
            id,
            account,
        })
    });
    let amend = (
        sym(),
        sym(),
        sym(),
        proptest::option::of(units()),
        proptest::option::of(units()),
        proptest::option::of(any::<u16>()),
    )
        .prop_filter("amend needs a price or a qty", |t| {
            t.3.is_some() || t.4.is_some()
        })
        .prop_map(|(market, id, account, price, qty, base)| {
            Command::Amend(Amend {
                market,
                id,
                account,
                price: price.and_then(Price::from_units),
                qty: qty.and_then(Qty::from_units),
                base,
            })
        });
    prop_oneof![place, cancel, amend]
}

proptest! {
    #[test]
    fn written_commands_decode_to_themselves(cmd in command()) {
        let mut line = Vec::new();
        prop_assert!(write_record(&cmd, &mut line));
        prop_assert_eq!(decode_record(&line), cmd.clone());
        let mut again = Vec::new();
        write_record(&decode_record(&line), &mut again);
        prop_assert_eq!(&line, &again);
        let mut contract = cmd;
        if let Command::Amend(a) = &mut contract {
            a.base = None;
        }
        prop_assert_eq!(decode_command(&line), contract.clone());
        let mut canonical = Vec::new();
        prop_assert!(write_command(&contract, &mut canonical));
        prop_assert_eq!(decode_command(&canonical), contract);
    }
}

#[test]
fn an_amend_base_is_read_only_from_records_and_only_as_a_u16_string() {
    let base = |line: &str| match decode_record(line.as_bytes()) {
        Command::Amend(a) => a.base,
        other => panic!("{line}: {other:?}"),
    };
    let line = |v: &str| {
        format!(r#"{{"op":"amend","market":"M","id":"o1","account":"a","qty":"2","base":{v}}}"#)
    };
    assert_eq!(base(&line("\"7\"")), Some(7));
    assert_eq!(base(&line("\"0\"")), Some(0));
    assert_eq!(base(&line("\"65535\"")), Some(65535));
    for v in [
        "\"65536\"",
        "\"-1\"",
        "\"+1\"",
        "\"\"",
        "\" 1\"",
        "7",
        "true",
        "null",
    ] {
        assert_eq!(base(&line(v)), None, "{v}");
    }
    assert!(matches!(
        decode_command(line("\"7\"").as_bytes()),
        Command::Amend(a) if a.base.is_none()
    ));
    // On a place or cancel the field means nothing.
    let place = br#"{"op":"place","market":"M","id":"o1","account":"a","side":"buy","price":"1","qty":"1","base":"3"}"#;
    assert_eq!(decode_record(place), decode_command(place));
}

#[test]
fn invalid_commands_are_never_written() {
    let mut out = Vec::new();
    let cmd = Command::Invalid(Invalid {
        market: None,
        id: None,
        field: "body",
    });
    assert!(!write_command(&cmd, &mut out));
    assert!(out.is_empty());
}

#[test]
fn canonical_form_of_a_place() {
    let cmd = decode_command(
        br#"{"post_only":false,"qty":"1.50","price":"100.250","account":"a","id":"o1","market":"M","side":"buy","op":"place"}"#,
    );
    let mut out = Vec::new();
    write_command(&cmd, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"op":"place","market":"M","id":"o1","account":"a","side":"buy","type":"limit","price":"100.25","qty":"1.5","tif":"gtc"}"#
    );
}
